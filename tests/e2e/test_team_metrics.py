"""The team broker as the chart runs it (``broker serve --transport http --auth kubernetes
--metrics-port ... --log-format json``, a real process) on the simulated cluster: metrics
scraped from their own port and checked, JSON log lines with request ids."""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.sim import SimServer
from tests.e2e.session import structured
from tests.e2e.test_http import mcp_over_http, post
from tests.e2e.test_team_broker import BROKER, CHART_BROKER_RULES

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(180)
async def test_served_as_the_chart_runs_it_metrics_and_json_logs(
    demo_sim: SimServer, tmp_path: Path
) -> None:
    sim = demo_sim
    context = sim.add_user(BROKER, rules=CHART_BROKER_RULES)
    port, metrics_port = free_port(), free_port()
    argv = [sys.executable, "-m", "broker", "serve", "--transport", "http",
            "--host", "127.0.0.1", "--port", str(port), "--auth", "kubernetes",
            "--metrics-port", str(metrics_port), "--log-format", "json",
            "--kubeconfig", str(sim.kubeconfig), "--context", context,
            "--namespace", sim.namespace, "--timeout", "20"]  # fmt: skip
    stderr = tmp_path / "broker.stderr"
    with open(stderr, "wb") as err:  # noqa: ASYNC230
        process = await anyio.open_process(argv, stdout=None, stderr=err)
        try:
            async with aiohttp.ClientSession() as http:
                with anyio.fail_after(60):
                    while True:
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        assert process.returncode is None, stderr.read_text()
                        await anyio.sleep(0.1)

                async with mcp_over_http(port, sim.user_token("sre")) as session:
                    structured(await session.call_tool("get_gpu_health", {}))
                    structured(await session.call_tool("get_gpu_health", {"node": "gpu-node-001"}))
                async with mcp_over_http(port, sim.user_token("viewer")) as session:
                    structured(await session.call_tool("get_gpu_health", {}))
                assert (await post(port, {"Authorization": "Bearer forged-1"})).status == 401

                async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                    assert r.status == 200
                    found = samples(await r.text())
                async with http.get(f"http://127.0.0.1:{metrics_port}/other") as r:
                    assert r.status == 404
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    await process.wait()

    calls = "k8s_gpu_mcp_tool_calls_total"
    assert value(found, calls, tool="get_gpu_health", outcome="ok") == 3
    node = "k8s_gpu_mcp_node_call_duration_seconds_count"
    assert value(found, node, outcome="ok") >= 8  # sre: the ready nodes, then one more
    assert value(found, node, outcome="rbac") >= 1  # viewer: exec refused per node
    assert value(found, "k8s_gpu_mcp_fan_out_nodes_count") == 3
    assert value(found, "k8s_gpu_mcp_fan_out_nodes_sum") >= 11  # 10 + 1 + 10 nodes
    opens = "k8s_gpu_mcp_agent_session_opens_total"
    assert value(found, opens, result="ok") >= 1
    assert value(found, opens, result="rbac") >= 1
    assert value(found, "k8s_gpu_mcp_agent_sessions_open") == value(found, opens, result="ok")
    assert value(found, "k8s_gpu_mcp_callers_open") == 2  # sre and viewer: one context each
    reviews = "k8s_gpu_mcp_token_reviews_total"
    assert value(found, reviews, result="authenticated") == 2  # cached per token
    assert value(found, reviews, result="rejected") == 1

    lines = [json.loads(line) for line in stderr.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    tool_calls = [d for d in lines if d.get("event") == "tool_call"]
    assert len(tool_calls) == 3, stderr.read_text()
    assert {d["caller"] for d in tool_calls} == {"sre", "viewer"}
    assert len({d["request_id"] for d in tool_calls}) == 3
    assert all(d["tool"] == "get_gpu_health" and d["outcome"] == "ok" for d in tool_calls)
