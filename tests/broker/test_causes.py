"""Failures shared by many nodes are said once (broker.fleet.causes), and a mistyped node
name gets "did you mean" (broker.errors.UnknownNode)."""

from __future__ import annotations

from broker.errors import UnknownNode
from broker.fleet.causes import SAMPLE_NODES, cause_key, common_causes, with_causes

NS = "gpu-diagnostics"


def no_pod(node: str) -> dict[str, str]:
    return {
        "node": node,
        "kind": "not_ready",
        "reason": f"no agent pod on this GPU node in namespace {NS} (is the DaemonSet "
        f"scheduled here? check its nodeSelector/tolerations: kubectl -n {NS} get daemonset)",
    }


def test_names_of_nodes_and_pods_do_not_split_a_cause() -> None:
    a = cause_key("n1", "not_ready", "node n1: agent pod k8s-gpu-mcp-ab12c is Pending (X)")
    b = cause_key("n2", "not_ready", "node n2: agent pod k8s-gpu-mcp-zz99q is Pending (X)")
    assert a == b == ("not_ready", "agent pod <pod> is Pending (X)")
    t1 = cause_key("n1", "timeout", "node n1: no answer within 4 s (call); retry")
    t2 = cause_key("n2", "timeout", "node n2: no answer within 30 s (call); retry")
    assert t1 == t2
    assert cause_key("n1", "not_ready", no_pod("n1")["reason"])[1].startswith(
        "no agent pod on this GPU node"  # "on" is not a pod name
    )


def test_every_node_without_an_agent_pod_is_one_setup_cause() -> None:
    nodes = [f"gpu-node-{i:04d}" for i in range(1000)]
    (cause,) = common_causes([no_pod(n) for n in nodes], total=1000, namespace=NS)
    assert cause["count"] == 1000 and cause["kind"] == "not_ready"
    assert cause["nodes"] == nodes[:SAMPLE_NODES]
    assert cause["fix"].startswith("no agent pods at all: is the chart installed")
    assert "check_setup" in cause["fix"]  # over MCP: the tool, not the CLI command
    (cli,) = common_causes([no_pod(n) for n in nodes], total=1000, namespace=NS, surface="cli")
    assert "broker doctor" in cli["fix"] and "check_setup" not in cli["fix"]


def test_causes_are_grouped_largest_first_with_their_own_fix() -> None:
    failures = [no_pod("node-a"), no_pod("node-b")]
    failures += [
        {"node": n, "kind": "rbac", "reason": f"node {n}: RBAC denied: your credentials may "
         f"not create pods/exec in namespace {NS}"}
        for n in ("node-c", "node-d", "node-e")
    ]  # fmt: skip
    causes = common_causes(failures, total=10, namespace=NS)
    assert [(c["kind"], c["count"]) for c in causes] == [("rbac", 3), ("not_ready", 2)]
    assert "rbac.subjects" in causes[0]["fix"]
    assert "nodeSelector" in causes[1]["fix"]  # some nodes only: the DaemonSet's placement


def test_with_causes_gives_each_group_of_failed_nodes_its_fix() -> None:
    group = {
        "kind": "not_ready",
        "count": 2,
        "nodes": ["n-1", "n-2"],
        "reason": "node <node>: no agent pod on this GPU node in namespace gpu-diagnostics",
    }
    answer = {"summary": {"nodes": {"total": 2}, "unreachable": [group]}}
    (fixed,) = with_causes(answer, namespace=NS)["summary"]["unreachable"]
    assert "no agent pods at all" in fixed["fix"]  # every node: a setup problem
    partial = {"summary": {"nodes": {"total": 9}, "unreachable": [dict(group)]}}
    (fixed,) = with_causes(partial, namespace=NS)["summary"]["unreachable"]
    assert "nodeSelector" in fixed["fix"]  # some nodes: the DaemonSet's placement
    clean: dict[str, object] = {"summary": {"nodes": {"total": 2}, "unreachable": []}}
    assert with_causes(clean, namespace=NS) == clean


def test_unknown_node_suggests_the_closest_name() -> None:
    known = ["gpu-node-001", "gpu-node-002", "gpu-node-003"]
    error = UnknownNode(["gpu-node-0003"], known)
    assert "Did you mean gpu-node-003?" in str(error)
    assert "`broker nodes`" in str(error)
    assert "list_gpu_nodes" in error.for_mcp() and "broker nodes" not in error.for_mcp()
    far = UnknownNode(["db-7"], known)
    assert "Did you mean" not in str(far) and "Known GPU nodes: gpu-node-001" in str(far)
