"""What `helm template` renders in each GPU-access mode, asserted on the parsed objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.helmchart import (
    CHART,
    CI_FILES,
    NAMESPACE,
    Chart,
    agent_container,
    by_kind,
    env_of,
    kube_version_of,
    one,
    pod_spec,
    quantity,
)
from tests.chart.pod_security import baseline_violations, strictest_level

pytestmark = pytest.mark.needs_helm

CI = {p.name: p for p in CI_FILES}
AGENT_SELECTOR = {
    "app.kubernetes.io/name": "k8s-gpu-mcp",
    "app.kubernetes.io/component": "agent",
}
SELECTOR = {**AGENT_SELECTOR, "app.kubernetes.io/instance": "gpu-mcp"}
MiB = 2**20


def render_ci(chart: Chart, name: str, *sets: str) -> list[dict[str, Any]]:
    path = CI[name]
    return chart.template(*sets, values=[path], kube=kube_version_of(path))


def requests_any_gpu(docs: list[dict[str, Any]]) -> bool:
    resources = agent_container(docs).get("resources", {})
    names = [*resources.get("limits", {}), *resources.get("requests", {})]
    return any(n.startswith("nvidia.com/") for n in names) or "claims" in resources


def mounts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in agent_container(docs).get("volumeMounts", [])}


def volumes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(docs).get("volumes", [])}


# --- the default (runtimeClass) mode ------------------------------------------------


def test_default_is_runtime_class_without_gpu_request(chart: Chart) -> None:
    docs = chart.template()
    pod = pod_spec(docs)
    assert pod["runtimeClassName"] == "nvidia"
    assert not requests_any_gpu(docs), "the default mode must never take a GPU"
    assert "resourceClaims" not in pod
    assert not by_kind(docs, "ResourceClaimTemplate")


def test_default_security_context_is_hardened(chart: Chart) -> None:
    docs = chart.template()
    pod = pod_spec(docs)
    sc = agent_container(docs)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for host_ns in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod[host_ns] is False


def test_agent_pod_idles_and_listens_nowhere(chart: Chart) -> None:
    docs = chart.template()
    container = agent_container(docs)
    assert container["command"] == ["sleep", "infinity"]
    assert "ports" not in container and "args" not in container
    assert not by_kind(docs, "Service") and not by_kind(docs, "Ingress")
    # The chart's own agent (zipapp) in a stock image by default: no registry push needed.
    assert container["image"] == "docker.io/library/python:3.13-slim-trixie"
    image_docs = chart.template("agent.source=image")
    assert agent_container(image_docs)["image"] == "ghcr.io/k8s-gpu-mcp/agent:0.1.0"  # appVersion


def test_nvidia_environment_reaches_exec_sessions(chart: Chart) -> None:
    env = env_of(agent_container(chart.template()))
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "GPU_AGENT_HOST_PROC" not in env and "LD_LIBRARY_PATH" not in env


# --- XIDs from the kernel log: CAP_SYSLOG + syslog(2), /dev/kmsg mount opt-in ----------


def xid_setup(docs: list[dict[str, Any]]) -> tuple[str, list[str], bool, str]:
    """(GPU_AGENT_KMSG, added capabilities, /dev/kmsg mounted?, xid-source annotation)."""
    container = agent_container(docs)
    added = container["securityContext"].get("capabilities", {}).get("add", [])
    kmsg_mounted = any(m["mountPath"] == "/dev/kmsg" for m in container.get("volumeMounts", []))
    annotations = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    return (
        env_of(container)["GPU_AGENT_KMSG"],
        added,
        kmsg_mounted,
        annotations["k8s-gpu-mcp.io/xid-source"],
    )


def test_default_reads_xids_through_syslog_without_any_host_mount(chart: Chart) -> None:
    docs = chart.template()
    # auto: the agent tries /dev/kmsg, then syslog(2), which needs only CAP_SYSLOG.
    assert xid_setup(docs) == ("auto", ["SYSLOG"], False, "auto")
    assert not [n for n, v in volumes(docs).items() if "hostPath" in v]
    assert list(mounts(docs)) == ["tmp", "agent-zipapp"]  # the zipapp: a ConfigMap, no host path


@pytest.mark.parametrize(
    "sets",
    [
        ("xid.enabled=false",),
        ("xid.enabled=false", "xid.mountDevKmsg=true"),
        ("agent.nonRoot.enabled=true",),
        # Non-root wins over an explicit request: an added capability is useless to it.
        ("agent.nonRoot.enabled=true", "xid.enabled=true", "xid.mountDevKmsg=true"),
    ],
)
def test_xid_off_or_non_root_means_kmsg_off_and_no_syslog(
    chart: Chart, sets: tuple[str, ...]
) -> None:
    docs = chart.template(*sets)
    assert xid_setup(docs) == ("off", [], False, "off")
    assert "kmsg" not in volumes(docs)


def test_dev_kmsg_mount_is_opt_in_read_only_char_device(chart: Chart) -> None:
    docs = chart.template("xid.mountDevKmsg=true", "xid.kmsgHostPath=/host/dev/kmsg")
    # Still auto: where the runtime's device cgroup refuses the open, syslog(2) is used.
    assert xid_setup(docs) == ("auto", ["SYSLOG"], True, "auto")
    assert mounts(docs)["kmsg"] == {"name": "kmsg", "mountPath": "/dev/kmsg", "readOnly": True}
    assert volumes(docs)["kmsg"]["hostPath"] == {"path": "/host/dev/kmsg", "type": "CharDevice"}
    host = [n for n, v in volumes(docs).items() if "hostPath" in v]
    assert host == ["kmsg"]
    assert all(m.get("readOnly") for n, m in mounts(docs).items() if n != "tmp")


def test_privileged_mode_reads_xids_without_adding_a_capability(chart: Chart) -> None:
    docs = render_ci(chart, "privileged-values.yaml")
    env, added, kmsg_mounted, source = xid_setup(docs)
    # A privileged container has every capability and the host's devices already.
    assert (env, added, kmsg_mounted, source) == ("auto", [], False, "auto")
    assert "capabilities" not in agent_container(docs)["securityContext"]


def test_schedules_on_gpu_nodes_and_tolerates_the_gpu_taint(chart: Chart) -> None:
    pod = pod_spec(chart.template())
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expr = terms["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expr == {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in pod["tolerations"]
    assert "priorityClassName" not in pod


def test_scheduling_and_image_are_overridable(chart: Chart) -> None:
    docs = chart.template(
        "affinity=null",
        "nodeSelector.gpu=yes",
        "priorityClassName=system-node-critical",
        "image.tag=9.9.9",
        "agent.source=image",
        "gpu.runtimeClass.name=nvidia-cdi",
        "rollingUpdate.maxUnavailable=3",
    )
    pod = pod_spec(docs)
    assert "affinity" not in pod and pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["runtimeClassName"] == "nvidia-cdi"
    assert agent_container(docs)["image"] == "ghcr.io/k8s-gpu-mcp/agent:9.9.9"
    strategy = one(docs, "DaemonSet")["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 3}}


def test_image_digest_wins_over_tag(chart: Chart) -> None:
    digest = "sha256:" + "ab" * 32
    docs = chart.template("image.tag=1.0", f"image.digest={digest}", "agent.source=image")
    assert agent_container(docs)["image"] == f"ghcr.io/k8s-gpu-mcp/agent@{digest}"


def test_resources_fit_an_exec_agent_but_reserve_almost_nothing(chart: Chart) -> None:
    resources = agent_container(chart.template())["resources"]
    # Requests: the idle pod must not reserve capacity on GPU nodes.
    assert quantity(resources["requests"]["cpu"]) <= 0.01
    assert quantity(resources["requests"]["memory"]) <= 32 * MiB
    # Limits: two concurrent agents (<= 25 MiB each, plus real NVML) and `sleep`.
    assert quantity(resources["limits"]["memory"]) >= 2 * (25 + 20) * MiB
    assert quantity(resources["limits"]["memory"]) <= 256 * MiB
    # 0.1 CPU-s cold start must take well under a second.
    assert quantity(resources["limits"]["cpu"]) >= 0.25


def test_labels_the_broker_discovers_by(chart: Chart) -> None:
    daemonset = one(chart.template(), "DaemonSet")
    selector = daemonset["spec"]["selector"]["matchLabels"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert AGENT_SELECTOR.items() <= selector.items()
    assert selector.items() <= labels.items()
    assert daemonset["metadata"]["namespace"] == NAMESPACE


def test_name_label_survives_fullname_override(chart: Chart) -> None:
    daemonset = one(chart.template("fullnameOverride=diag"), "DaemonSet")
    assert daemonset["metadata"]["name"] == "diag"
    assert AGENT_SELECTOR.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


def test_service_account_has_no_token(chart: Chart) -> None:
    docs = chart.template()
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod_spec(docs)["serviceAccountName"] == account["metadata"]["name"]
    existing = chart.template("serviceAccount.create=false", "serviceAccount.name=agent")
    assert not by_kind(existing, "ServiceAccount")
    assert pod_spec(existing)["serviceAccountName"] == "agent"


# --- NetworkPolicy ------------------------------------------------------------------


def test_network_policy_denies_all_traffic_to_and_from_agent_pods(chart: Chart) -> None:
    docs = chart.template()
    policy = one(docs, "NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy and "egress" not in policy  # no rule = deny all
    pod_labels = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert not by_kind(chart.template("networkPolicy.enabled=false"), "NetworkPolicy")


@pytest.mark.parametrize("name", sorted(CI), ids=str)
def test_every_mode_keeps_the_network_policy_and_no_ports(chart: Chart, name: str) -> None:
    docs = render_ci(chart, name)
    policies = by_kind(docs, "NetworkPolicy")
    agent = [p for p in policies if p["spec"]["podSelector"]["matchLabels"] == SELECTOR]
    assert len(agent) == 1 and agent[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ports" not in agent_container(docs)
    assert pod_spec(docs)["hostNetwork"] is False


# --- devicePlugin -------------------------------------------------------------------


def test_device_plugin_mode_requests_the_configured_resource(chart: Chart) -> None:
    docs = render_ci(chart, "deviceplugin-values.yaml")
    limits = agent_container(docs)["resources"]["limits"]
    assert limits["nvidia.com/gpu.shared"] == 1
    assert quantity(limits["memory"]) == 128 * MiB  # merged with, not replacing, the limits
    assert "runtimeClassName" not in pod_spec(docs)
    plain = chart.template("gpu.mode=devicePlugin", "gpu.devicePlugin.count=2")
    assert agent_container(plain)["resources"]["limits"]["nvidia.com/gpu"] == 2


# --- dra ----------------------------------------------------------------------------


def test_dra_mode_claims_every_gpu_with_admin_access(chart: Chart) -> None:
    docs = render_ci(chart, "dra-values.yaml")
    template = one(docs, "ResourceClaimTemplate")
    assert template["apiVersion"] == "resource.k8s.io/v1"
    assert template["metadata"]["namespace"] == NAMESPACE
    [request] = template["spec"]["spec"]["devices"]["requests"]
    assert request == {
        "name": "gpus",
        "exactly": {
            "deviceClassName": "gpu.nvidia.com",
            "allocationMode": "All",
            "adminAccess": True,
        },
    }
    pod = pod_spec(docs)
    assert pod["resourceClaims"] == [
        {"name": "gpus", "resourceClaimTemplateName": template["metadata"]["name"]}
    ]
    resources = agent_container(docs)["resources"]
    assert resources["claims"] == [{"name": "gpus"}]
    assert not any(n.startswith("nvidia.com/") for n in resources["limits"])
    assert "runtimeClassName" not in pod


def test_dra_v1beta1_puts_the_request_fields_inline(chart: Chart) -> None:
    docs = render_ci(chart, "dra-v1beta1-values.yaml")
    template = one(docs, "ResourceClaimTemplate")
    assert template["apiVersion"] == "resource.k8s.io/v1beta1"
    [request] = template["spec"]["spec"]["devices"]["requests"]
    assert request == {
        "name": "gpus",
        "deviceClassName": "gpu.nvidia.com",
        "allocationMode": "ExactCount",
        "count": 1,
    }


def test_dra_api_version_defaults_to_the_newest_served(chart: Chart) -> None:
    # Offline, helm's built-in API list serves every resource.k8s.io version.
    template = one(chart.template("gpu.mode=dra"), "ResourceClaimTemplate")
    assert template["apiVersion"] == "resource.k8s.io/v1"


def test_dra_refuses_to_take_every_gpu_without_admin_access(chart: Chart) -> None:
    error = chart.template_error("gpu.mode=dra", "gpu.dra.adminAccess=false")
    assert "would allocate every GPU on every node" in error
    assert "gpu.dra.allocationMode=ExactCount" in error


def test_dra_refuses_clusters_older_than_1_32(chart: Chart) -> None:
    error = chart.template_error("gpu.mode=dra", kube="1.31.0")
    assert "needs Kubernetes 1.32 or newer" in error and "v1.31.0" in error


# --- privileged ---------------------------------------------------------------------


def test_privileged_mode_refuses_to_render_without_acknowledgement(chart: Chart) -> None:
    error = chart.template_error("gpu.mode=privileged")
    assert "root on its GPU node" in error
    assert "gpu.privileged.acknowledgeHostRootAccess=true" in error


def test_privileged_mode_with_acknowledgement(chart: Chart) -> None:
    docs = render_ci(chart, "privileged-values.yaml")
    container = agent_container(docs)
    sc = container["securityContext"]
    assert sc["privileged"] is True
    # The API rejects allowPrivilegeEscalation=false next to privileged=true.
    assert "allowPrivilegeEscalation" not in sc
    assert sc["readOnlyRootFilesystem"] is True
    assert "runtimeClassName" not in pod_spec(docs)
    assert volumes(docs)["nvml-library"]["hostPath"] == {
        "path": "/usr/lib64/libnvidia-ml.so.1",
        "type": "File",
    }
    lib = mounts(docs)["nvml-library"]
    assert lib["readOnly"] is True
    assert env_of(container)["LD_LIBRARY_PATH"] == str(Path(lib["mountPath"]).parent)
    assert not requests_any_gpu(docs)


def test_only_privileged_mode_is_privileged(chart: Chart) -> None:
    for name in CI:
        sc = agent_container(render_ci(chart, name))["securityContext"]
        assert sc["privileged"] is (name == "privileged-values.yaml"), name


# --- non-root, XID and host mounts ---------------------------------------------------


def test_non_root_turns_kmsg_off_and_says_so(chart: Chart) -> None:
    docs = render_ci(chart, "nonroot-values.yaml")
    container = agent_container(docs)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert (sc["runAsUser"], sc["runAsGroup"]) == (65532, 65532)
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert xid_setup(docs) == ("off", [], False, "off")


def test_xid_off_as_root_adds_no_capability(chart: Chart) -> None:
    docs = chart.template("xid.enabled=false")
    sc = agent_container(docs)["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] == 0
    assert not baseline_violations(pod_spec(docs))


def test_only_cap_syslog_keeps_the_default_out_of_baseline(chart: Chart) -> None:
    """The default pod mounts nothing from the host; its one baseline violation is SYSLOG,
    which is not in the Pod Security baseline's list of addable capabilities."""
    assert baseline_violations(pod_spec(chart.template())) == ["agent: adds ['SYSLOG']"]
    with_mount = baseline_violations(pod_spec(chart.template("xid.mountDevKmsg=true")))
    assert with_mount == ["hostPath volume kmsg", "agent: adds ['SYSLOG']"]


def test_host_proc_and_pod_resources_are_opt_in_and_read_only(chart: Chart) -> None:
    docs = render_ci(chart, "full-values.yaml")
    vols, mnts = volumes(docs), mounts(docs)
    assert vols["host-proc"]["hostPath"] == {"path": "/proc", "type": "Directory"}
    assert mnts["host-proc"] == {"name": "host-proc", "mountPath": "/host/proc", "readOnly": True}
    assert vols["pod-resources"]["hostPath"] == {
        "path": "/var/lib/kubelet/pod-resources",
        "type": "Directory",
    }
    assert mnts["pod-resources"]["readOnly"] is True
    env = env_of(agent_container(docs))
    assert env["GPU_AGENT_HOST_PROC"] == "/host/proc"
    assert env["GPU_AGENT_POD_RESOURCES_SOCKET"] == (
        mnts["pod-resources"]["mountPath"] + "/kubelet.sock"
    )
    assert env["GPU_AGENT_LOG_LEVEL"] == "debug"  # extraEnv
    assert pod_spec(docs)["imagePullSecrets"] == [{"name": "regcred"}]


# --- Pod Security level -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), "privileged"),  # CAP_SYSLOG alone (no host mount)
        (("xid.mountDevKmsg=true",), "privileged"),  # CAP_SYSLOG + kmsg hostPath
        (("xid.enabled=false",), "baseline"),  # root, nothing from the host
        (("xid.enabled=false", "xid.mountDevKmsg=true"), "baseline"),  # no XIDs, no mount
        (("agent.nonRoot.enabled=true",), "restricted"),
        (("agent.nonRoot.enabled=true", "xid.mountDevKmsg=true"), "restricted"),
        (("agent.nonRoot.enabled=true", "hostProc.enabled=true"), "privileged"),
        (("gpu.mode=dra", "agent.nonRoot.enabled=true"), "restricted"),
        (("gpu.mode=devicePlugin", "xid.enabled=false"), "baseline"),
    ],
)
def test_pod_security_level_is_the_strictest_the_pod_meets(
    chart: Chart, sets: tuple[str, ...], expected: str
) -> None:
    docs = chart.template(*sets)
    annotations = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert strictest_level(pod_spec(docs)) == expected
    assert annotations["k8s-gpu-mcp.io/pod-security-level"] == expected


@pytest.mark.parametrize("name", sorted(CI), ids=str)
def test_declared_pod_security_level_matches_every_ci_file(chart: Chart, name: str) -> None:
    docs = render_ci(chart, name)
    annotations = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["k8s-gpu-mcp.io/pod-security-level"] == strictest_level(pod_spec(docs))
    assert annotations["k8s-gpu-mcp.io/gpu-mode"] in CHART.joinpath("values.yaml").read_text()
