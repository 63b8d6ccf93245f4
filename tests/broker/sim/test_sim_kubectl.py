"""The real kubectl (v1.33) against the simulated cluster: get, auth can-i, exec."""

from __future__ import annotations

import json

import pytest

from broker.sim import SimServer
from tests.broker.sim.helpers import Kubectl, mcp_lines

pytestmark = [pytest.mark.e2e, pytest.mark.needs_kubectl]


def test_get_nodes_prints_real_columns(run_kubectl: Kubectl) -> None:
    out = run_kubectl("get", "nodes")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert len(rows) == 14  # 12 GPU nodes + 2 CPU nodes
    assert rows["gpu-node-010"][1] == "Ready,SchedulingDisabled"
    assert rows["gpu-node-001"][4] == "v1.33.1"
    wide = run_kubectl("get", "nodes", "-o", "wide", "-l", "nvidia.com/gpu.product=NVIDIA-L4")
    assert wide.returncode == 0, wide.stderr
    header, *rest = wide.stdout.splitlines()
    assert "INTERNAL-IP" in header and "CONTAINER-RUNTIME" in header
    assert [r.split()[0] for r in rest] == ["gpu-node-006"]


def test_get_pods_all_namespaces_wide(run_kubectl: Kubectl, threaded_sim: SimServer) -> None:
    out = run_kubectl("get", "pods", "-A", "-o", "wide")
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split()[:6] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "NODE" in header and "NOMINATED" in header
    rows = {line.split()[1]: line for line in lines}
    agent = threaded_sim.agent_pod("gpu-node-002")
    assert agent is not None and agent in rows
    assert rows[agent].split()[0] == "gpu-diagnostics" and "gpu-node-002" in rows[agent]
    assert "CrashLoopBackOff" in rows["data-prep-6c9f7d8b4-h2m9x"]
    assert " Error " in rows["llama3-finetune-x7k2p"]
    assert "ContainerCreating" in rows[str(threaded_sim.agent_pod("gpu-node-005"))]
    # The server-side table round-trips through -o json as well.
    js = run_kubectl("get", "pod", "-n", "gpu-diagnostics", agent, "-o", "json")
    assert json.loads(js.stdout)["spec"]["nodeName"] == "gpu-node-002"


def test_get_errors_are_the_servers(run_kubectl: Kubectl) -> None:
    out = run_kubectl("get", "pod", "nope", "-n", "gpu-diagnostics")
    assert out.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in out.stderr
    out = run_kubectl("get", "pods", "-A", "--field-selector", "spec.bogus=1")
    assert out.returncode == 1 and "field label not supported: spec.bogus" in out.stderr
    out = run_kubectl("get", "nodes", "--context", "sim-nobody-such-context")
    assert out.returncode == 1


def test_auth_can_i_follows_rbac(run_kubectl: Kubectl) -> None:
    def can_i(context: str, *args: str) -> str:
        out = run_kubectl("auth", "can-i", *args, "-n", "gpu-diagnostics", context=context)
        assert out.returncode in (0, 1), out.stderr
        return out.stdout.strip()

    assert can_i("sim", "create", "pods/exec") == "yes"
    assert can_i("sim-cert", "create", "pods/exec") == "yes"
    assert can_i("sim-viewer", "create", "pods/exec") == "no"
    assert can_i("sim-viewer", "create", "pods", "--subresource=exec") == "no"
    # kubectl reads "pods/exec" as pods named "exec": the chart's exec role says no there,
    # and yes to the subresource, as on a real cluster.
    assert can_i("sim-sre", "create", "pods", "--subresource=exec") == "yes"
    assert can_i("sim-sre", "create", "pods/exec") == "no"
    assert can_i("sim-sre", "list", "nodes") == "yes"


def test_kubectl_exec_pipes_mcp_into_the_agent(
    run_kubectl: Kubectl, threaded_sim: SimServer
) -> None:
    pod = threaded_sim.agent_pod("gpu-node-007")
    assert pod is not None
    stdin = mcp_lines(("analyze_xid_errors", {"since_minutes": 120}), ("get_gpu_health", {}))
    out = run_kubectl("exec", "-i", "-n", "gpu-diagnostics", pod, "--", "gpu-agent", input=stdin)
    assert out.returncode == 0, out.stderr
    answers = {m["id"]: m for m in map(json.loads, out.stdout.splitlines())}
    assert sorted(answers) == [1, 2, 3]
    xids = answers[2]["result"]["structuredContent"]["xids"]
    assert {x["xid"] for x in xids} == {13}  # an application fault only
    assert answers[3]["result"]["structuredContent"]["node"]["name"] == "gpu-node-007"


def test_kubectl_exec_failures_look_like_a_cluster(
    run_kubectl: Kubectl, threaded_sim: SimServer
) -> None:
    pod = threaded_sim.agent_pod("gpu-node-001")
    assert pod is not None
    out = run_kubectl("exec", "-n", "gpu-diagnostics", pod, "--", "nvtop")
    assert out.returncode == 1
    assert 'exec: "nvtop": executable file not found in $PATH' in out.stderr
    out = run_kubectl("exec", "-n", "gpu-diagnostics", pod, "--", "sh", "-c", "nvtop")
    assert out.returncode == 127 and "sh: 1: nvtop: not found" in out.stderr
    out = run_kubectl("exec", "-n", "gpu-diagnostics", pod, "--", "gpu-agent", "--version")
    assert out.returncode == 0 and out.stdout.startswith("gpu-agent "), out.stderr
    out = run_kubectl("exec", "-i", "-n", "gpu-diagnostics", pod, "--", "gpu-agent", "--nope",
                      input="")  # fmt: skip
    assert out.returncode == 2 and "command terminated with exit code 2" in out.stderr
    out = run_kubectl("exec", "-i", "-n", "gpu-diagnostics", pod, "--", "gpu-agent",
                      input=mcp_lines(), context="sim-viewer")  # fmt: skip
    assert out.returncode == 1
    assert 'cannot create resource "pods/exec" in API group ""' in out.stderr
