"""The cluster-side tools (broker.server.cluster_tools) and their reads (broker.kube.reader): tool
definitions, the API reads and their errors against the simulated cluster, answers
that match their output schemas, and the ``broker explain`` renderer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from broker.cli.render_explain import render_explanation
from broker.diagnosis.gather import explain_pod
from broker.errors import NotFound, RbacDenied
from broker.fleet.context import BrokerContext
from broker.kube.config import ClusterConfig, KubeApi
from broker.kube.reader import ClusterReader, missing_from
from broker.server.app import BrokerApp
from broker.server.cluster_schemas import DEFINITIONS
from broker.server.cluster_tools import register_cluster_tools
from broker.sim import Rule, SimServer, start_sim

SCENARIO: dict[str, Any] = {
    "cpu_nodes": 1,
    "nodes": [
        {
            "name": "gpu-a",
            "agent": {
                "faults": [
                    {
                        "gpu": 2,
                        "kind": "xid",
                        "xid": 31,
                        "ago_s": 300,
                        "pid": 7,
                        "process": "python3",
                    }
                ]
            },
        },
        {"name": "gpu-b", "agent_pod": "missing"},
    ],
    "workloads": [
        {
            "name": "job-x",
            "namespace": "team",
            "node": "gpu-a",
            "gpus": 8,
            "owner_kind": "Job",
            "owner_name": "job",
            "phase": "Failed",
            "state": "terminated",
            "exit_code": 1,
            "reason": "Error",
            "created_ago_s": 900,
            "started_ago_s": 890,
            "finished_ago_s": 299,
            "message": "RuntimeError: CUDA error: an illegal memory access was encountered",
        },
        {
            "name": "web-5d-x1",
            "namespace": "team",
            "node": "gpu-b",
            "gpus": 1,
            "owner_kind": "ReplicaSet",
            "owner_name": "web-5d",
            "restart_policy": "Always",
            "created_ago_s": 500,
        },
    ],
}


@pytest.fixture
async def small_sim(tmp_path: Path) -> AsyncIterator[SimServer]:
    async with start_sim(scenario=SCENARIO, in_process=True, workdir=tmp_path / "sim") as sim:
        yield sim


def broker(sim: SimServer) -> AbstractAsyncContextManager[BrokerContext]:
    """The broker's context on the sim (entered in the test's own task: the pool's task
    group must be left by the task that entered it)."""
    return BrokerContext.open(ClusterConfig(kubeconfig=str(sim.kubeconfig)), call_timeout=20)


@pytest.fixture
async def api(small_sim: SimServer) -> AsyncIterator[KubeApi]:
    opened = await KubeApi.open(ClusterConfig(kubeconfig=str(small_sim.kubeconfig)))
    try:
        yield opened
    finally:
        await opened.aclose()


def test_definitions_are_valid_read_only_tools() -> None:
    validator = jsonschema.Draft202012Validator
    names = [d["name"] for d in DEFINITIONS]
    assert names == ["describe_gpu_node", "get_pod_gpu_allocation", "explain_failure"]
    for d in DEFINITIONS:
        validator.check_schema(d["inputSchema"])
        validator.check_schema(d["outputSchema"])
        assert d["inputSchema"]["additionalProperties"] is False
        assert d["annotations"]["readOnlyHint"] is True
        assert d["annotations"]["destructiveHint"] is False
        assert len(d["description"]) > 200  # an LLM picks tools by these
    explain = next(d for d in DEFINITIONS if d["name"] == "explain_failure")
    assert explain["outputSchema"]["properties"]["verdict"]["enum"] == [
        "hardware",
        "driver",
        "application",
        "infrastructure",
        "unknown",
        "none",
    ]


async def test_reader_reads_and_names_what_is_missing(api: KubeApi, small_sim: SimServer) -> None:
    reader = ClusterReader(api)
    node = await reader.node("gpu-a")
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    pod = await reader.pod("team", "job-x")
    assert pod["status"]["phase"] == "Failed"
    on_b = await reader.pods(None, field_selector="spec.nodeName=gpu-b")
    assert {p["metadata"]["name"] for p in on_b} >= {"web-5d-x1"}
    events = await reader.pod_events(pod)
    assert events and all(e["involvedObject"]["uid"] == pod["metadata"]["uid"] for e in events)
    stamps = [e["lastTimestamp"] for e in events]
    assert stamps == sorted(stamps)
    with pytest.raises(NotFound, match=r"pod 'nope' not found in namespace team.*kubectl get"):
        await reader.pod("team", "nope")
    with pytest.raises(NotFound, match="node 'gpu-z' not found"):
        await reader.node("gpu-z")


async def test_rbac_denials_carry_the_permission_and_the_chart_role(
    small_sim: SimServer,
) -> None:
    context = small_sim.add_user("podsonly", [Rule(verbs=("get",), resources=("pods",))])
    opened = await KubeApi.open(
        ClusterConfig(kubeconfig=str(small_sim.kubeconfig), context=context)
    )
    try:
        reader = ClusterReader(opened)
        await reader.pod("team", "job-x")  # allowed
        with pytest.raises(RbacDenied) as denied:
            await reader.events("team")
    finally:
        await opened.aclose()
    m = missing_from(denied.value, "events of pod team/job-x")
    assert m.permission == "list events in namespace team"
    assert m.check == "kubectl auth can-i list events -n team"
    assert m.grant is not None and "cluster-read" in m.grant
    exec_denied = missing_from(RbacDenied("create", "pods/exec", "gpu-diagnostics"), "XIDs")
    assert exec_denied.check == (
        "kubectl auth can-i create pods --subresource=exec -n gpu-diagnostics"
    )
    assert exec_denied.grant is not None and "-exec" in exec_denied.grant


async def test_tools_registered_on_the_broker_app_answer_to_their_schemas(
    small_sim: SimServer,
) -> None:
    app = BrokerApp()
    async with broker(small_sim) as ctx:
        register_cluster_tools(app, ctx)
        await _check_tools(app)


async def _check_tools(app: BrokerApp) -> None:
    tools = {t.name: t for t in await app.list_tools()}
    assert set(tools) == {"describe_gpu_node", "get_pod_gpu_allocation", "explain_failure"}
    assert all(t.annotations and t.annotations.read_only_hint for t in tools.values())

    calls = {
        "explain_failure": {"pod": "job-x", "namespace": "team"},
        "describe_gpu_node": {"node": "gpu-b"},
        "get_pod_gpu_allocation": {"namespace": "team"},
    }
    answers = {}
    for name, arguments in calls.items():
        result = await app.call_tool(name, arguments)
        assert not getattr(result, "is_error", False), result
        structured = result.structured_content  # type: ignore[union-attr]
        jsonschema.validate(structured, tools[name].output_schema)
        assert json.loads(result.content[0].text) == structured  # type: ignore[union-attr]
        answers[name] = structured

    explained = answers["explain_failure"]
    assert (explained["verdict"], explained["confidence"]) == ("application", "high")
    assert explained["xids"][0]["xid"] == 31 and explained["xids"][0]["on_pod_gpu"] is True

    described = answers["describe_gpu_node"]
    assert described["status"] == "unknown" and described["agent"]["ready"] is False
    assert "no agent pod" in described["agent"]["reason"]
    assert described["partial"] and "no agent pod" in described["missing"][0]["reason"]
    assert [p["name"] for p in described["pods"]] == ["web-5d-x1"]

    allocation = answers["get_pod_gpu_allocation"]
    assert allocation["summary"]["pods"] == 2
    assert {(p["name"], p["state"]) for p in allocation["pods"]} == {
        ("job-x", "released"),
        ("web-5d-x1", "holding"),
    }
    assert allocation["summary"]["gpus_held"] == {"nvidia.com/gpu": 1}
    # Namespace scope does not see every pod of the node: no node totals.
    assert all(r["allocated"] is None for n in allocation["nodes"] for r in n["resources"].values())


async def test_bad_input_is_a_clear_error_and_nothing_is_guessed(small_sim: SimServer) -> None:
    app = BrokerApp()
    async with broker(small_sim) as ctx:
        register_cluster_tools(app, ctx)
        await _check_bad_input(app)


async def _check_bad_input(app: BrokerApp) -> None:
    missing = await app.call_tool("explain_failure", {"pod": "ghost", "namespace": "team"})
    assert missing.is_error  # type: ignore[union-attr]
    assert "not found in namespace team" in missing.content[0].text  # type: ignore[union-attr]
    bad = await app.call_tool("describe_gpu_node", {"node": "GPU_A"})
    assert bad.is_error and "does not match" in bad.content[0].text  # type: ignore[union-attr]
    unknown = await app.call_tool("describe_gpu_node", {"node": "gpu-zz"})
    assert unknown.is_error and "not found" in unknown.content[0].text  # type: ignore[union-attr]
    extra = await app.call_tool("get_pod_gpu_allocation", {"nodes": ["gpu-a"]})
    assert extra.is_error  # type: ignore[union-attr]


async def test_explain_without_a_namespace_finds_the_pod(small_sim: SimServer) -> None:
    async with broker(small_sim) as ctx:
        found = await explain_pod(ctx, "job-x", None)
    assert found["pod"]["namespace"] == "team" and found["verdict"] == "application"


def test_renderer_shows_verdict_evidence_steps_and_missing() -> None:
    result = {
        "pod": {"namespace": "ml", "name": "p", "node": "gpu-1", "owner": "Job/j"},
        "verdict": "hardware",
        "confidence": "high",
        "summary": "Hardware: XID 79 on GPU 3 (00000000:5D:00.0).",
        "partial": True,
        "evidence": [{"source": "xid", "text": "XID 79 on GPU 3 at 00000000:5D:00.0"}],
        "notes": ["a note"],
        "gpus": {"requests": {"nvidia.com/gpu": 8}, "gpus": [{"index": 3}], "source": "arith"},
        "nvidia_actions": ["XID 79 on GPU 3: Drain the node and power-cycle it."],
        "timeline": [{"time": "2026-11-28T03:33:06Z", "source": "xid", "text": "XID 79"}],
        "next_steps": [{"command": "kubectl cordon gpu-1", "why": "keep pods off"}],
        "missing": [
            {
                "what": "events of pod ml/p",
                "reason": "denied",
                "permission": "list events in namespace ml",
                "check": "kubectl auth can-i list events -n ml",
                "grant": None,
            }
        ],
    }
    console = Console(record=True, width=140, color_system=None)
    console.print(render_explanation(result))
    text = console.export_text()
    for expected in (
        "HARDWARE",
        "confidence high",
        "ml/p on gpu-1 (Job/j)",
        "00000000:5D:00.0",  # literal, not an emoji code
        "$ kubectl cordon gpu-1",
        "Drain the node and power-cycle it",
        "list events in namespace ml",
        "partial answer",
    ):
        assert expected in text, expected
