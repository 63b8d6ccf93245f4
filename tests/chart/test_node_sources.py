"""The node sources beyond NVML (issue 12): the host journal (hostJournal) and the sysfs
device tree (hostSys). Off by default; when on, read-only hostPath volumes that never
create anything on the host, the GPU_AGENT_* variable the agent reads, the Pod Security
level that follows, and a non-root agent that reads its XIDs from the journal."""

from __future__ import annotations

from typing import Any

import pytest

from agent.app import ENV_HOST_SYS, ENV_JOURNAL, ENV_KMSG
from tests.chart.helmchart import CI_FILES, Chart, agent_container, env_of, kube_version_of, one
from tests.chart.helmchart import pod_spec as pod_spec_of
from tests.chart.pod_security import strictest_level

pytestmark = pytest.mark.needs_helm

CI = {p.name: p for p in CI_FILES}
SYS_DIRS = ("bus", "class", "devices")
NODE_SOURCE_VOLUMES = {"host-journal", *(f"host-sys-{d}" for d in SYS_DIRS)}


def host_mounts(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """volume name -> (its hostPath, the agent's mount of it), for the node-source volumes."""
    volumes = {v["name"]: v for v in pod_spec_of(docs).get("volumes", [])}
    mounts = {m["name"]: m for m in agent_container(docs).get("volumeMounts", [])}
    assert set(mounts) <= set(volumes)
    return {
        name: (volumes[name]["hostPath"], mounts[name])
        for name in volumes
        if name in NODE_SOURCE_VOLUMES
    }


def level_of(docs: list[dict[str, Any]]) -> str:
    annotations = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    level: str = annotations["k8s-gpu-mcp.io/pod-security-level"]
    return level


def test_off_by_default_nothing_mounted_nothing_set(chart: Chart) -> None:
    docs = chart.template()
    assert host_mounts(docs) == {}
    env = env_of(agent_container(docs))
    assert ENV_JOURNAL not in env and ENV_HOST_SYS not in env
    assert "supplementalGroups" not in pod_spec_of(docs)["securityContext"]


def test_the_journal_is_mounted_read_only_and_named_to_the_agent(chart: Chart) -> None:
    docs = chart.template("hostJournal.enabled=true")
    mounted = host_mounts(docs)
    assert set(mounted) == {"host-journal"}
    host, mount = mounted["host-journal"]
    # Directory, never DirectoryOrCreate: creating /var/log/journal on a node would switch
    # its journald (Storage=auto) to persistent logging.
    assert host == {"path": "/var/log/journal", "type": "Directory"}
    assert mount == {"name": "host-journal", "mountPath": "/host/journal", "readOnly": True}
    env = env_of(agent_container(docs))
    assert env[ENV_JOURNAL] == mount["mountPath"]
    assert ENV_HOST_SYS not in env
    assert env[ENV_KMSG] == "auto"


def test_a_volatile_journal_path_can_be_chosen(chart: Chart) -> None:
    docs = chart.template("hostJournal.enabled=true", "hostJournal.hostPath=/run/log/journal")
    assert host_mounts(docs)["host-journal"][0]["path"] == "/run/log/journal"


def test_sysfs_is_mounted_as_three_read_only_directories(chart: Chart) -> None:
    """bus/, class/, devices/ (no mounts below them), never /sys itself: a recursive bind
    of /sys would bring cgroupfs, debugfs, securityfs... along, and readOnly would cover
    only the top mount."""
    docs = chart.template("hostSys.enabled=true", "hostSys.hostPath=/host-root/sys/")
    mounted = host_mounts(docs)
    assert set(mounted) == {f"host-sys-{d}" for d in SYS_DIRS}
    for d in SYS_DIRS:
        host, mount = mounted[f"host-sys-{d}"]
        assert host == {"path": f"/host-root/sys/{d}", "type": "Directory"}
        assert mount == {"name": f"host-sys-{d}", "mountPath": f"/host/sys/{d}", "readOnly": True}
    env = env_of(agent_container(docs))
    assert env[ENV_HOST_SYS] == "/host/sys"
    assert ENV_JOURNAL not in env
    # Every env path the agent reads lies under a read-only mount of the host's tree.
    assert all(m["mountPath"].startswith(env[ENV_HOST_SYS] + "/") for _, m in mounted.values())


@pytest.mark.parametrize("name", sorted(CI), ids=str)
def test_every_host_mount_of_every_ci_file_is_read_only_and_never_created(
    chart: Chart, name: str
) -> None:
    docs = chart.template(values=[CI[name]], kube=kube_version_of(CI[name]))
    volumes = {v["name"]: v for v in pod_spec_of(docs).get("volumes", [])}
    for mount in agent_container(docs).get("volumeMounts", []):
        host = volumes[mount["name"]].get("hostPath")
        if host is not None:
            assert mount.get("readOnly") is True, mount
            assert host["type"] in ("Directory", "File", "CharDevice", "Socket"), host


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("hostSys.enabled=true",), "privileged"),
        (("xid.enabled=false", "hostSys.enabled=true"), "privileged"),  # baseline without it
        (("agent.nonRoot.enabled=true", "hostSys.enabled=true"), "privileged"),  # restricted
        (("agent.nonRoot.enabled=true", "hostJournal.enabled=true"), "privileged"),
        (("xid.enabled=false",), "baseline"),
        (("agent.nonRoot.enabled=true",), "restricted"),
    ],
)
def test_the_pod_security_level_follows_the_mounts(
    chart: Chart, sets: tuple[str, ...], expected: str
) -> None:
    docs = chart.template(*sets)
    assert strictest_level(pod_spec_of(docs)) == expected
    assert level_of(docs) == expected


def test_supplemental_groups_apply_only_with_the_journal(chart: Chart) -> None:
    docs = chart.template(values=[CI["node-sources-values.yaml"]])
    assert pod_spec_of(docs)["securityContext"]["supplementalGroups"] == [4]
    without = chart.template("hostJournal.enabled=false", values=[CI["node-sources-values.yaml"]])
    assert "supplementalGroups" not in pod_spec_of(without)["securityContext"]


def test_a_non_root_agent_reads_its_xids_from_the_journal(chart: Chart) -> None:
    """No CAP_SYSLOG for non-root (unusable without ambient capabilities), but
    GPU_AGENT_KMSG stays auto: the ring buffer is closed to it, so the agent falls back to
    the journal; without the journal a non-root agent has XIDs off."""
    docs = chart.template(values=[CI["node-sources-values.yaml"]])
    container = agent_container(docs)
    env = env_of(container)
    assert env[ENV_KMSG] == "auto" and env[ENV_JOURNAL] == "/host/journal"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["runAsNonRoot"] is True
    annotations = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["k8s-gpu-mcp.io/xid-source"] == "auto"
    plain = env_of(agent_container(chart.template("agent.nonRoot.enabled=true")))
    assert plain[ENV_KMSG] == "off"


def test_the_journal_with_xids_off_is_refused(chart: Chart) -> None:
    error = chart.template_error("xid.enabled=false", "hostJournal.enabled=true")
    assert "hostJournal.enabled=true but xid.enabled=false" in error
    assert "Set xid.enabled=true, or hostJournal.enabled=false" in error


def test_notes_say_which_sources_are_on_and_how_to_turn_them_on(chart: Chart) -> None:
    notes = chart.notes()
    assert "persistent journal  OFF" in notes and "--set hostJournal.enabled=true" in notes
    assert "host sysfs          OFF" in notes and "--set hostSys.enabled=true" in notes
    assert "host /proc          OFF" in notes
    assert "Whoever may exec into the agent pods can read the host's whole journal" not in notes
    on = chart.notes("hostJournal.enabled=true", "hostSys.enabled=true")
    assert "persistent journal  ON: /var/log/journal read-only at /host/journal" in on
    assert "host sysfs          ON: /sys/{bus,class,devices} read-only at /host/sys" in on
    assert "--set hostJournal.enabled=true" not in on
    assert "Whoever may exec into the agent pods can read the host's whole journal" in on
    # Turning one on costs the baseline level: said where the pod meets baseline today.
    cost = 'makes the pod need the "privileged" Pod Security level'
    assert cost in chart.notes("xid.enabled=false")
    assert "--set hostJournal.enabled=true" not in chart.notes("xid.enabled=false")


def test_notes_tell_a_non_root_agent_which_group_reads_the_journal(chart: Chart) -> None:
    grouped = chart.notes(values=[CI["node-sources-values.yaml"]])
    assert "XIDs come from the host journal alone" in grouped
    assert "XID analysis from the kernel log is OFF" not in grouped
    assert "supplementalGroups is empty" not in grouped
    bare = chart.notes("agent.nonRoot.enabled=true", "hostJournal.enabled=true")
    assert "hostJournal.supplementalGroups is empty" in bare
    assert "getent group systemd-journal" in bare
