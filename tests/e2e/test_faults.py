"""Every fault the simulated cluster can inject, mixed across a 50-node sweep through the
real ``broker serve`` (stdio) with the real agent: the sweep returns within its deadline
with every healthy node's answer and a precise error for each broken node, the broker
stays up, and the next call recovers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from broker.sim import Rule, SimServer, start_sim
from tests.e2e.session import broker_session, structured

pytestmark = pytest.mark.e2e

DEADLINE_S = 4.0
RBAC_DENIED_NODE = "gpu-node-012"

# node -> (scenario entry, expected error kind or None for a node that must answer)
FAULTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "gpu-node-001": ({"faults": {"exec_hang": "tools/call"}}, "timeout"),
    "gpu-node-002": ({"faults": {"exec_hang": "*"}}, "timeout"),
    "gpu-node-003": ({"faults": {"exec_drop_after": 1}}, "unreachable"),
    "gpu-node-004": ({"faults": {"exec_kill_after": 1}}, "agent_error"),
    "gpu-node-005": ({"faults": {"exec_garbage": "only"}}, "protocol"),
    "gpu-node-006": ({"faults": {"exec_garbage": "prefix"}}, "protocol"),
    "gpu-node-007": ({"faults": {"api_500": -1}}, "unreachable"),
    "gpu-node-008": ({"faults": {"api_429": 1, "retry_after_s": 0}}, None),  # retried
    "gpu-node-009": ({"faults": {"api_latency_s": 0.5}}, None),  # slow but in time
    "gpu-node-010": ({"agent_pod": "crashloop"}, "not_ready"),
    "gpu-node-011": ({"agent_pod": "missing"}, "not_ready"),
    RBAC_DENIED_NODE: ({}, "rbac"),
    "gpu-node-013": ({"agent": {"disabled_tools": ["get_gpu_health"]}}, "tool_missing"),
    "gpu-node-014": ({"agent_pod": "pending"}, "not_ready"),
    "gpu-node-015": (
        {"agent": {"faults": [{"gpu": 1, "kind": "fell_off_bus", "ago_s": 120}]}},
        None,
    ),
}


def scenario() -> dict[str, Any]:
    return {
        "cpu_nodes": 0,
        "defaults": {"gpu_count": 2},
        "nodes": [{"name": name, **entry} for name, (entry, _) in FAULTS.items()],
    }


@pytest.fixture
async def sim(tmp_path: Path) -> Any:
    async with start_sim(
        nodes=50, scenario=scenario(), in_process=True, workdir=tmp_path / "sim"
    ) as server:
        yield server


def ops_context(sim: SimServer) -> str:
    """A user like the chart's: may read everything and exec into every agent pod but one."""
    pods = tuple(
        p for n in sim.nodes if n != RBAC_DENIED_NODE and (p := sim.agent_pod(n)) is not None
    )
    return sim.add_user(
        "ops",
        [
            Rule(verbs=("get", "list", "watch"), resources=("*",)),
            Rule(
                verbs=("create", "get"),
                resources=("pods/exec",),
                namespaces=(sim.namespace,),
                resource_names=pods,
            ),
        ],
    )


def answered_status(answer: dict[str, Any], node: str) -> str | None:
    if node in answer["healthy"]:
        return "healthy"
    return next((e["status"] for e in answer["nodes"] if e["node"] == node), None)


def heal(sim: SimServer) -> None:
    for name, (entry, _) in FAULTS.items():
        faults = sim.faults(name)
        faults.exec_hang = faults.exec_garbage = None
        faults.exec_drop_after = faults.exec_kill_after = None
        faults.api_500 = 0
        if "agent_pod" in entry:
            sim.set_agent_pod(name, "ready")
    sim.update_agent("gpu-node-013", disabled_tools=[])


async def test_fifty_node_sweep_with_every_fault(sim: SimServer, tmp_path: Path) -> None:
    context = ops_context(sim)
    args = ["--kubeconfig", str(sim.kubeconfig), "--context", context]
    async with broker_session(tmp_path, *args, "--timeout", str(DEADLINE_S)) as session:
        started = time.monotonic()
        answer = structured(await session.call_tool("get_gpu_health", {"limit": 100}))
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE_S + 4.0, f"the sweep took {elapsed:.1f} s"

        summary = answer["summary"]
        assert summary["nodes"]["total"] == 50
        failed = {n: u for u in summary["unreachable"] for n in u["nodes"]}  # by reason
        expected = {n: kind for n, (_, kind) in FAULTS.items() if kind is not None}
        assert {n: u["kind"] for n, u in failed.items()} == expected
        assert summary["nodes"]["ok"] == 50 - len(expected)
        answered = {e["node"]: e["status"] for e in answer["nodes"]}
        answered.update(dict.fromkeys(answer["healthy"], "healthy"))
        assert answered["gpu-node-015"] == "critical"
        assert answered["gpu-node-008"] == answered["gpu-node-009"] == "healthy"

        reasons = {n: u["reason"] for n, u in failed.items()}
        assert f"no answer within {DEADLINE_S:g} s" in reasons["gpu-node-001"]
        assert "pods/exec" in reasons[RBAC_DENIED_NODE]  # names the missing permission
        assert "get_gpu_health" in reasons["gpu-node-013"]  # names the missing tool
        assert "137" in reasons["gpu-node-004"] or "kill" in reasons["gpu-node-004"].lower()
        assert "CrashLoopBackOff" in reasons["gpu-node-010"]
        assert "no agent pod" in reasons["gpu-node-011"]
        assert "500" in reasons["gpu-node-007"] or "InternalError" in reasons["gpu-node-007"]
        assert "not an MCP message" in reasons["gpu-node-006"]

        # The broker stays up; once the faults are gone, the next sweep recovers.
        heal(sim)
        # Session opens still waiting on the hung agents give up at their own deadline,
        # which ends with the sweep's; let them, so that the next sweep opens afresh.
        await anyio.sleep(1.0)
        again = structured(await session.call_tool("get_gpu_health", {"limit": 100}))
        still = {n: u["kind"] for u in again["summary"]["unreachable"] for n in u["nodes"]}
        # gpu-node-011's new agent pod is not among the names the user may exec into.
        assert still == {RBAC_DENIED_NODE: "rbac", "gpu-node-011": "rbac"}
        assert again["summary"]["nodes"]["ok"] == 48
        assert answered_status(again, "gpu-node-015") == "critical"
