"""broker.fleet.aggregate: status per tool, compact findings, ordering, the answer's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.catalog import TOOL_DEFINITIONS
from broker.fleet.aggregate import (
    ANSWER_BUDGET,
    EXIT_CRITICAL,
    EXIT_OK,
    EXIT_UNREACHABLE,
    aggregate,
    aggregate_output_schema,
    exit_code,
    findings,
    judge,
    slim,
)
from broker.fleet.pool import NodeResult

SCHEMAS = {t["name"]: t["outputSchema"] for t in TOOL_DEFINITIONS}


def issue(check: str, severity: str, message: str = "m", action: str = "a") -> dict[str, Any]:
    return {"check": check, "severity": severity, "message": message, "action": action}


def health(
    status: str, gpu_issues: dict[int, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    gpu_issues = gpu_issues or {}
    gpus = [
        {
            "index": i,
            "status": "healthy" if i not in gpu_issues else gpu_issues[i][0]["severity"],
            "issues": gpu_issues.get(i, []),
        }
        for i in range(8)
    ]
    return {"status": status, "summary": f"8 GPU(s): {status}", "issues": [], "gpus": gpus}


def ok(node: str, result: dict[str, Any], elapsed: float = 0.01) -> NodeResult:
    return NodeResult(node, True, result, None, None, elapsed)


def failed(node: str, kind: str, error: str) -> NodeResult:
    return NodeResult(node, False, None, error, kind, 0.5)


def sample() -> list[NodeResult]:
    return [
        ok("n-healthy-b", health("healthy")),
        ok("n-warn", health("warning", {1: [issue("pcie_replay", "warning")]})),
        ok("n-crit-1", health("critical", {3: [issue("gpu_lost", "critical")]})),
        ok(
            "n-crit-2",
            health(
                "critical",
                {
                    5: [issue("row_remap_failure", "critical"), issue("ecc", "degraded")],
                    6: [issue("info_only", "info")],
                },
            ),
        ),
        failed("n-pending", "not_ready", "node n-pending: agent pod x is Pending"),
        ok("n-degraded", health("degraded", {2: [issue("thermal", "degraded")]})),
        failed("n-rbac", "rbac", "RBAC denied: your credentials may not create pods/exec"),
        ok("n-healthy-a", health("healthy")),
    ]


def test_answer_is_worst_first_and_every_node_appears_once() -> None:
    answer = aggregate("get_gpu_health", sample(), elapsed_s=1.23456)
    summary = answer["summary"]
    assert summary["nodes"] == {"total": 8, "ok": 6, "failed": 2}
    assert summary["status"] == {"critical": 2, "degraded": 1, "warning": 1, "healthy": 2}
    assert summary["elapsed_s"] == 1.235
    # Worst first; within a status, the node with more to say first.
    assert [e["node"] for e in answer["nodes"]] == ["n-crit-2", "n-crit-1", "n-degraded", "n-warn"]
    assert answer["healthy"] == ["n-healthy-a", "n-healthy-b"]
    assert [(u["nodes"], u["kind"], u["count"]) for u in summary["unreachable"]] == [
        (["n-pending"], "not_ready", 1),
        (["n-rbac"], "rbac", 1),
    ]
    assert "pods/exec" in summary["unreachable"][1]["reason"]
    assert "truncated" not in answer
    seen = (
        [e["node"] for e in answer["nodes"]]
        + answer["healthy"]
        + [n for u in summary["unreachable"] for n in u["nodes"]]
    )
    assert sorted(seen) == sorted(r.node for r in sample())


def test_findings_are_compact_and_drop_info() -> None:
    answer = aggregate("get_gpu_health", sample())
    crit2 = answer["nodes"][0]
    assert "result" not in crit2
    issues = crit2["findings"]["issues"]
    assert [(i["gpu"], i["check"]) for i in issues] == [(5, "row_remap_failure"), (5, "ecc")]
    assert all(set(i) == {"gpu", "check", "severity", "message", "action"} for i in issues)


def test_single_node_and_full_detail_carry_the_whole_result() -> None:
    one = aggregate("get_gpu_health", [ok("n1", health("healthy"))])
    assert one["nodes"][0]["result"]["summary"] == "8 GPU(s): healthy"
    assert one["healthy"] == []  # the node has its entry instead
    full = aggregate("get_gpu_health", sample(), detail="full")
    assert {e["node"] for e in full["nodes"]} == {
        "n-crit-1",
        "n-crit-2",
        "n-degraded",
        "n-warn",
        "n-healthy-a",
        "n-healthy-b",
    }
    assert all("result" in e for e in full["nodes"])
    forced = aggregate("get_gpu_health", [ok("n1", health("critical"))], detail="findings")
    assert "findings" in forced["nodes"][0] and "result" not in forced["nodes"][0]


def test_limit_moves_the_rest_to_names_only() -> None:
    answer = aggregate("get_gpu_health", sample(), limit=2)
    assert [e["node"] for e in answer["nodes"]] == ["n-crit-2", "n-crit-1"]
    assert answer["more"] == [
        {"node": "n-degraded", "status": "degraded"},
        {"node": "n-warn", "status": "warning"},
    ]


@pytest.mark.parametrize(
    ("tool", "result", "status"),
    [
        ("analyze_xid_errors", {"summary": {"worst_severity": "critical"}, "xids": []}, "critical"),
        ("analyze_xid_errors", {"summary": {"worst_severity": "info"}, "xids": []}, "healthy"),
        ("analyze_xid_errors", {"summary": {"worst_severity": None}, "xids": []}, "healthy"),
        ("get_gpu_inventory", {"gpus": [{"index": 0, "lost": True}]}, "critical"),
        ("get_gpu_processes", {"gpus": [{"index": 0, "lost": False, "error": "x"}]}, "warning"),
        ("get_gpu_processes", {"gpus": [{"index": 0, "lost": False, "processes": []}]}, "healthy"),
        (
            "get_nvlink_topology",
            {"gpus": [{"index": 4, "links": [{"link": 3, "replay_errors": 2}]}]},
            "warning",
        ),
        ("get_nvlink_topology", {"gpus": [{"index": 4, "links": [{"link": 3}]}]}, "healthy"),
        ("get_gpu_health", {"status": "bogus"}, "warning"),
    ],
)
def test_judge_per_tool(tool: str, result: dict[str, Any], status: str) -> None:
    assert judge(tool, result) == status


def test_tool_findings_and_fleet_rollups() -> None:
    links = {"gpus": [{"index": 4, "links": [{"link": 3, "replay_errors": 112, "active": True}]}]}
    assert findings("get_nvlink_topology", links) == {
        "links_with_errors": [{"gpu": 4, "link": 3, "replay_errors": 112}]
    }
    inv = [
        ok(
            "a",
            {
                "driver": {"driver_version": "575", "cuda_driver_version": "12.9"},
                "gpus": [{"index": 0, "name": "H100"}, {"index": 1, "name": "H100"}],
            },
        ),
        ok(
            "b",
            {
                "driver": {"driver_version": "575", "cuda_driver_version": "12.9"},
                "gpus": [{"index": 0, "name": "H100"}, {"index": 1, "name": "H100"}],
            },
        ),
        ok(
            "c",
            {
                "driver": {"driver_version": "550", "cuda_driver_version": "12.4"},
                "gpus": [{"index": 0, "name": "T4"}],
            },
        ),
    ]
    fleet = aggregate("get_gpu_inventory", inv)["fleet"]
    assert fleet["gpus"] == 5
    assert [(c["gpu_model"], c["nodes"]) for c in fleet["configurations"]] == [
        ("H100", ["a", "b"]),
        ("T4", ["c"]),
    ]
    procs = [
        ok(
            "a",
            {
                "gpus": [
                    {"index": 0, "processes": [{"pid": 1, "used_memory_mib": 100}]},
                    {"index": 1, "processes": []},
                ]
            },
        ),
    ]
    assert aggregate("get_gpu_processes", procs)["fleet"] == {
        "gpus_busy": 1,
        "gpus_idle": 1,
        "processes": 1,
        "used_memory_mib": 100,
    }
    xids = [
        ok(
            "a",
            {
                "summary": {"worst_severity": "critical"},
                "xids": [{"xid": 79, "count": 2, "severity": "critical"}],
            },
        )
    ]
    answer = aggregate("analyze_xid_errors", xids, detail="findings")
    assert answer["fleet"] == {"xid_counts": {"79": 2}}
    assert answer["nodes"][0]["findings"]["xids"][0]["xid"] == 79


def test_answer_validates_against_its_output_schema() -> None:
    schema = aggregate_output_schema(SCHEMAS["get_gpu_health"])
    jsonschema.Draft202012Validator.check_schema(schema)
    answer = aggregate("get_gpu_health", sample(), warnings=["stale"])
    jsonschema.validate(json.loads(json.dumps(answer)), schema)
    broken = {**answer, "summary": {**answer["summary"], "status": {"critical": 1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_exit_codes() -> None:
    assert exit_code(aggregate("get_gpu_health", sample())) == EXIT_CRITICAL
    no_crit = [r for r in sample() if not r.node.startswith("n-crit")]
    assert exit_code(aggregate("get_gpu_health", no_crit)) == EXIT_UNREACHABLE
    fine = [r for r in no_crit if r.ok]
    assert exit_code(aggregate("get_gpu_health", fine)) == EXIT_OK
    assert exit_code(aggregate("get_gpu_health", [])) == EXIT_OK


def fleet_of(n: int) -> list[NodeResult]:
    """``n`` nodes: most healthy, a tenth critical with findings, a tenth timing out, a
    tenth not ready each with its own pod name in the reason."""
    results: list[NodeResult] = []
    for i in range(n):
        node = f"gpu-node-{i:05d}"
        if i % 10 == 1:
            gpu_issue = issue("row_remap_failure", "critical", "GPU 3: row remap failed " * 4)
            results.append(ok(node, health("critical", {3: [gpu_issue]})))
        elif i % 10 == 2:
            results.append(failed(node, "timeout", f"node {node}: no answer within 30 s (call)"))
        elif i % 10 == 3:
            reason = f"node {node}: agent pod k8s-gpu-mcp-agent-{i:x} is Pending (Unschedulable)"
            results.append(failed(node, "not_ready", reason))
        else:
            results.append(ok(node, health("healthy")))
    return results


@pytest.mark.parametrize("n", [1000, 5000])
def test_answer_stays_within_budget_at_any_node_count(n: int) -> None:
    results = fleet_of(n)
    answer = aggregate("get_gpu_health", results, deadline_s=120)
    size = len(json.dumps(answer))
    assert size <= ANSWER_BUDGET, size
    jsonschema.validate(answer, aggregate_output_schema(SCHEMAS["get_gpu_health"]))
    summary = answer["summary"]
    assert summary["deadline_s"] == 120
    # One group per cause, the node's own name and pod generalised; counts add up.
    groups = {(u["kind"], u["reason"]): u for u in summary["unreachable"]}
    assert set(groups) == {
        ("timeout", "node <node>: no answer within 30 s (call)"),
        ("not_ready", "node <node>: agent pod <pod> is Pending (Unschedulable)"),
    }
    assert all(u["count"] == n // 10 and len(u["nodes"]) == 5 for u in groups.values())
    assert summary["status"]["healthy"] == n - 3 * n // 10
    # What was cut is said, with how to get it.
    cut = answer["truncated"]
    assert cut["healthy"] == summary["status"]["healthy"] - len(answer["healthy"])
    assert "status=" in cut["hint"] and "offset" in cut["hint"]


def test_status_filter_pages_through_every_unreachable_node_once() -> None:
    results = fleet_of(2000)
    seen: list[str] = []
    offset = 0
    while True:
        page = aggregate(
            "get_gpu_health", results, statuses=["unreachable"], limit=150, offset=offset
        )
        assert len(json.dumps(page)) <= ANSWER_BUDGET
        entries = page["nodes"]
        assert all(e["status"] == "unreachable" and e["kind"] and e["reason"] for e in entries)
        seen += [e["node"] for e in entries]
        if "truncated" not in page:
            break
        offset += len(entries)
    expected = [r.node for r in results if not r.ok]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert page["healthy"] == [] and page["more"] == []  # a filtered view lists the filter


def test_fleet_configurations_name_a_few_nodes_and_count_them_all() -> None:
    inventory = {"driver": {"driver_version": "580"}, "gpus": [{"index": 0, "name": "H100"}]}
    answer = aggregate("get_gpu_inventory", [ok(f"n{i}", inventory) for i in range(3000)])
    (config,) = answer["fleet"]["configurations"]
    assert config["node_count"] == 3000 and len(config["nodes"]) == 5
    assert len(json.dumps(answer)) <= ANSWER_BUDGET


SCENARIOS = [
    {"gpu_count": 8},
    {
        "gpu_count": 8,
        "faults": [
            {"gpu": 1, "kind": "fell_off_bus", "ago_s": 60},
            {"gpu": 2, "kind": "nvlink_errors", "link": 3, "crc_flit": 12, "replay": 4},
            {"gpu": 3, "kind": "xid", "xid": 79, "ago_s": 30},
            {"gpu": 4, "kind": "thermal_throttle", "temperature_c": 92},
        ],
        "processes": [{"gpu": 0, "pid": 4242, "used_memory_mib": 30000, "name": "python"}],
    },
    {"gpu_count": 4, "faults": [{"gpu": 0, "kind": "retired_pages_pending"}]},
]


def agent_answers(tool: str, tmp: Path) -> list[NodeResult]:
    """Real answers of the agent's fake backend (in-process) for each scenario."""
    import threading

    from agent.app import create_session

    results: list[NodeResult] = []
    for i, scenario in enumerate(SCENARIOS):
        got: list[dict[str, Any]] = []
        done = threading.Event()

        def write(
            data: bytes, got: list[dict[str, Any]] = got, done: threading.Event = done
        ) -> None:
            got.append(json.loads(data))
            done.set()

        path = tmp / f"scenario-{i}.json"
        path.write_text(json.dumps(scenario))
        session = create_session(["--backend", "fake", "--scenario", str(path)], write)
        try:
            call = {"name": tool, "arguments": {}}
            request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
            session.feed(json.dumps(request).encode())
            assert done.wait(10)
        finally:
            session.close()
        results.append(ok(f"n{i}", got[0]["result"]["structuredContent"]))
    return results


@pytest.mark.parametrize("tool", sorted(SCHEMAS))
def test_slim_answers_aggregate_exactly_like_full_ones(tool: str, tmp_path: Path) -> None:
    full = agent_answers(tool, tmp_path)
    slimmed = [ok(r.node, slim(tool, r.result or {})) for r in full]
    assert aggregate(tool, slimmed, detail="findings") == aggregate(tool, full, detail="findings")
    assert len(json.dumps([r.result for r in slimmed])) < len(json.dumps([r.result for r in full]))


def test_node_list_stays_small_at_5000_nodes() -> None:
    from broker.fleet.operations import NODES_OUTPUT_SCHEMA, nodes_answer
    from broker.kube.discovery import NodeTarget

    labels = [{"nvidia.com/gpu.product": p, "nvidia.com/gpu.count": "8"} for p in ("H100", "A100")]
    targets = [
        NodeTarget(f"gpu-node-{i:05d}", f"p{i}", "ns", i % 20 != 0, None if i % 20 else
                   f"agent pod k8s-gpu-mcp-{i:x} is Pending (Unschedulable: 0/5000 nodes)",
                   labels[i % 2])
        for i in range(5000)
    ]  # fmt: skip
    answer = nodes_answer(targets)
    jsonschema.validate(answer, NODES_OUTPUT_SCHEMA)
    assert len(json.dumps(answer)) <= ANSWER_BUDGET
    assert answer["summary"] == {"total": 5000, "ready": 4750, "not_ready": 250}
    assert sum(g["count"] for g in answer["ready"]) == 4750
    cut = answer["truncated"]
    assert cut["ready"] == 4750 - sum(len(g["nodes"]) for g in answer["ready"])
    assert cut["not_ready"] == 250 - len(answer["not_ready"]) and "node_selector" in cut["hint"]
    assert len(nodes_answer(targets, names_cap=None)["not_ready"]) == 250  # the CLI's JSON
