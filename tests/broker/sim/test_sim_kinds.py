"""The kinds the sim's pods point to, through the real kubectl (v1.33) and helm: get,
-o wide, describe, logs, auth can-i, owner references, nodes/proxy, Helm's release."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from broker.sim import SimServer
from tests.broker.sim.helpers import Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.needs_kubectl]


def _rows(out: subprocess.CompletedProcess[str]) -> tuple[list[str], dict[str, list[str]]]:
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    return header.split(), {line.split()[1]: line.split() for line in lines}


def test_daemonsets_count_their_pods(run_kubectl: Kubectl) -> None:
    header, rows = _rows(run_kubectl("get", "ds", "-A", "-o", "wide"))
    assert header[:8] == [
        "NAMESPACE",
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE",
    ]
    assert header[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    # 12 GPU nodes; gpu-node-006's taint keeps the agent off; gpu-node-005's is Pending.
    assert rows["k8s-gpu-mcp"][2:7] == ["11", "11", "10", "11", "10"]
    assert rows["k8s-gpu-mcp"][-1] == (
        "app.kubernetes.io/component=agent,app.kubernetes.io/instance=k8s-gpu-mcp,"
        "app.kubernetes.io/name=k8s-gpu-mcp"
    )
    assert rows["nvidia-device-plugin-daemonset"][2:5] == ["12", "12", "12"]
    out = run_kubectl("describe", "ds", "k8s-gpu-mcp", "-n", "gpu-diagnostics")
    assert out.returncode == 0, out.stderr
    assert "Pods Status:  10 Running / 1 Waiting / 0 Succeeded / 0 Failed" in out.stdout
    assert "Desired Number of Nodes Scheduled: 11" in out.stdout


def test_daemonset_status_follows_agent_pods(run_kubectl: Kubectl, threaded_sim: SimServer) -> None:
    threaded_sim.set_agent_pod("gpu-node-011", "crashloop")
    try:
        _, rows = _rows(run_kubectl("get", "ds", "-n", "gpu-diagnostics", "-A"))
        assert rows["k8s-gpu-mcp"][2:5] == ["11", "11", "9"]
    finally:
        threaded_sim.set_agent_pod("gpu-node-011", "ready")


def test_jobs_carry_their_pods_outcome(run_kubectl: Kubectl) -> None:
    header, rows = _rows(run_kubectl("get", "jobs", "-A"))
    assert header == ["NAMESPACE", "NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert rows["llama3-finetune"][2:4] == ["Failed", "0/1"]
    assert rows["eval-nightly-29409120"][2:4] == ["Complete", "1/1"]
    assert rows["llm-pretrain-big-0"][2] == "Running"  # its pod is Pending: active
    out = run_kubectl("describe", "job", "llama3-finetune", "-n", "ml-research")
    assert out.returncode == 0, out.stderr
    assert "Pods Statuses:    0 Active (0 Ready) / 0 Succeeded / 1 Failed" in out.stdout
    assert "BackoffLimitExceeded" in out.stdout and "Job has reached the specified backoff" in (
        out.stdout
    )
    logs = run_kubectl("logs", "job/llama3-finetune", "-n", "ml-research", "--tail", "1")
    assert logs.returncode == 0 and "failed (exitcode: 1)" in logs.stdout, logs.stderr
    _, crons = _rows(run_kubectl("get", "cronjobs", "-A", "-o", "wide"))
    assert crons["eval-nightly"][2:4] == ["0", "2"]  # SCHEDULE "0 2 * * *" splits


def test_every_owner_reference_resolves(run_kubectl: Kubectl) -> None:
    pods = json.loads(run_kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    out = run_kubectl("get", "ds,jobs,cronjobs,rs,deploy,sts", "-A", "-o", "json")
    assert out.returncode == 0, out.stderr
    owners = {
        (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in json.loads(out.stdout)["items"]
    }
    refs = [
        (o, r) for o in [*pods, *owners.values()] for r in o["metadata"].get("ownerReferences", [])
    ]
    assert len(refs) > len(pods) - 5  # nearly every pod has an owner, owners have theirs
    for obj, ref in refs:
        owner = owners.get((ref["kind"], obj["metadata"]["namespace"], ref["name"]))
        assert owner is not None, (obj["metadata"]["name"], ref)
        assert owner["metadata"]["uid"] == ref["uid"]


def test_the_other_kinds_print_real_columns(run_kubectl: Kubectl) -> None:
    header, rows = _rows(run_kubectl("get", "deploy", "-A"))
    assert header == ["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows["triton-llm"][2] == "1/1" and rows["data-prep"][2] == "0/1"
    header, rows = _rows(run_kubectl("get", "rs", "-A", "-o", "wide"))
    assert header[2:5] == ["DESIRED", "CURRENT", "READY"] and header[-1] == "SELECTOR"
    assert rows["triton-llm-7d9c8b6f5"][-1] == "app=triton-llm,pod-template-hash=7d9c8b6f5"
    header, rows = _rows(run_kubectl("get", "sts", "-A"))
    assert header == ["NAMESPACE", "NAME", "READY", "AGE"]
    assert rows["llm-pretrain-worker"][2] == "1/1"
    header, rows = _rows(run_kubectl("get", "svc", "-A", "-o", "wide"))
    assert header == [
        "NAMESPACE",
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
        "SELECTOR",
    ]
    assert rows["kubernetes"][5] == "443/TCP"
    assert rows["triton-llm"][-1] == "app=triton-llm"
    out = run_kubectl("describe", "svc", "triton-llm", "-n", "inference")
    assert out.returncode == 0 and "Endpoints:                10.244." in out.stdout, out.stderr
    header, rows = _rows(run_kubectl("get", "endpoints", "-n", "inference", "-A"))
    assert header == ["NAMESPACE", "NAME", "ENDPOINTS", "AGE"]
    assert rows["triton-llm"][2].endswith(":8002") and rows["triton-llm"][2].count(",") == 2
    out = run_kubectl("get", "endpoints", "-n", "inference")
    assert "Warning: v1 Endpoints is deprecated in v1.33+" in out.stderr  # as 1.33 warns
    header, rows = _rows(run_kubectl("get", "endpointslices", "-A"))
    assert header == ["NAMESPACE", "NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    header, rows = _rows(run_kubectl("get", "leases", "-n", "kube-node-lease", "-A"))
    assert header == ["NAMESPACE", "NAME", "HOLDER", "AGE"] and len(rows) == 14
    out = run_kubectl("describe", "lease", "gpu-node-002", "-n", "kube-node-lease")
    assert out.returncode == 0 and "Holder Identity:         gpu-node-002" in out.stdout
    header, rows = _rows(run_kubectl("get", "secrets", "-A"))
    assert header == ["NAMESPACE", "NAME", "TYPE", "DATA", "AGE"]
    assert rows["sh.helm.release.v1.k8s-gpu-mcp.v1"][2:4] == ["helm.sh/release.v1", "1"]
    out = run_kubectl("get", "runtimeclass", "nvidia", "-o", "jsonpath={.handler}")
    assert out.stdout == "nvidia"
    out = run_kubectl(
        "get",
        "events.events.k8s.io",
        "-n",
        "ml-research",
        "--field-selector",
        "metadata.namespace=ml-research",
    )
    assert out.returncode == 0 and "BackoffLimitExceeded" in out.stdout, out.stderr
    out = run_kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert out.returncode == 1 and "NotFound" in out.stderr  # no metrics-server


def test_auth_can_i_for_the_new_kinds(run_kubectl: Kubectl) -> None:
    def can(*args: str, context: str) -> str:
        return run_kubectl("auth", "can-i", *args, context=context).stdout.strip()

    assert can("list", "daemonsets.apps", "-n", "gpu-diagnostics", context="sim-viewer") == "yes"
    assert (
        can("get", "leases.coordination.k8s.io", "-n", "kube-node-lease", context="sim-viewer")
        == "yes"
    )
    assert can("get", "nodes", "--subresource=proxy", context="sim-sre") == "no"
    assert can("list", "jobs.batch", "-n", "ml-research", context="sim-sre") == "no"
    assert can("get", "nodes", "--subresource=proxy", context="sim") == "yes"


def test_nodes_proxy_serves_the_kubelet(run_kubectl: Kubectl) -> None:
    raw = run_kubectl("get", "--raw", "/api/v1/nodes/gpu-node-001/proxy/stats/summary")
    assert raw.returncode == 0, raw.stderr
    summary = json.loads(raw.stdout)
    assert summary["node"]["nodeName"] == "gpu-node-001"
    names = {p["podRef"]["name"] for p in summary["pods"]}
    assert "llm-pretrain-worker-0" in names
    kern = run_kubectl("get", "--raw", "/api/v1/nodes/gpu-node-002/proxy/logs/kern.log")
    assert kern.returncode == 0 and "NVRM: Xid (PCI:0000:" in kern.stdout
    assert "): 79, " in kern.stdout and "gpu-node-002 kernel: [" in kern.stdout
    journal = run_kubectl(
        "get", "--raw", "/api/v1/nodes/gpu-node-002/proxy/logs/?query=kubelet&tailLines=2"
    )
    assert journal.returncode == 0 and len(journal.stdout.splitlines()) == 2
    assert all(" gpu-node-002 kubelet[" in line for line in journal.stdout.splitlines())
    denied = run_kubectl(
        "get", "--raw", "/api/v1/nodes/gpu-node-001/proxy/stats/summary", context="sim-sre"
    )
    assert denied.returncode == 1 and 'cannot get resource "nodes/proxy"' in denied.stderr


@pytest.mark.needs_helm
def test_helm_lists_the_charts_release(threaded_sim: SimServer, tmp_path: Path, helm: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "KUBECONFIG": str(threaded_sim.kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "c"),
        "HELM_CONFIG_HOME": str(tmp_path / "f"),
        "HELM_DATA_HOME": str(tmp_path / "d"),
    }
    out = subprocess.run(
        [str(helm), "list", "-A", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (release,) = json.loads(out.stdout)
    assert (release["name"], release["namespace"], release["status"]) == (
        "k8s-gpu-mcp",
        "gpu-diagnostics",
        "deployed",
    )
    assert release["chart"] == "k8s-gpu-mcp-0.1.0"


def test_training_operator_resources_own_their_pods(kubectl: Path, tmp_path: Path) -> None:
    """A JobSet and a Kubeflow PyTorchJob, as their CRDs serve them: listed by the real
    kubectl, with the status their operators write, and owning their pods."""
    from broker.sim import sim_in_thread

    def worker(owner_kind: str, owner: str, rank: int, phase: str) -> dict[str, object]:
        return {"name": f"{owner}-{rank}", "namespace": "ml", "node": f"gpu-node-00{rank + 1}",
                "gpus": 8, "owner_kind": owner_kind, "owner_name": owner, "phase": phase,
                "state": "terminated" if phase == "Failed" else "running",
                "exit_code": 1, "started_ago_s": 600, "finished_ago_s": 60}  # fmt: skip

    scenario = {
        "nodes": [{"name": f"gpu-node-00{i}"} for i in (1, 2, 3)],
        "workloads": [worker("PyTorchJob", "bert", 0, "Failed"), worker("PyTorchJob", "bert", 1,
                      "Failed"), worker("JobSet", "llm", 2, "Running")],
    }  # fmt: skip
    with sim_in_thread(nodes=3, scenario=scenario, in_process=True, workdir=tmp_path) as sim:
        run = Kubectl(kubectl, sim, tmp_path)
        for plural, name in (("pytorchjobs", "bert"), ("jobsets", "llm")):
            header, rows = _rows(run("get", plural, "-A"))
            assert header == ["NAMESPACE", "NAME", "AGE"] and name in rows
        out = run("get", "pytorchjob", "bert", "-n", "ml", "-o", "json")
        job = json.loads(out.stdout)
        assert job["status"]["conditions"][-1]["type"] == "Failed"
        assert job["status"]["replicaStatuses"]["Worker"]["failed"] == 2
        pods = json.loads(run("get", "pods", "-n", "ml", "-o", "json").stdout)["items"]
        owners = {(p["metadata"]["ownerReferences"][0]["kind"],
                   p["metadata"]["ownerReferences"][0]["uid"]) for p in pods}  # fmt: skip
        jobset = json.loads(run("get", "jobset", "llm", "-n", "ml", "-o", "json").stdout)
        assert owners == {("PyTorchJob", job["metadata"]["uid"]),
                          ("JobSet", jobset["metadata"]["uid"])}  # fmt: skip
        labels = {p["metadata"]["name"]: p["metadata"]["labels"] for p in pods}
        assert labels["bert-0"]["training.kubeflow.org/job-name"] == "bert"
        assert labels["llm-2"]["jobset.sigs.k8s.io/jobset-name"] == "llm"
