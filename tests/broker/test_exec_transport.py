"""MCP over pods/exec against the simulated cluster: protocol negotiation, framing,
status frames, stdin half-close, API-server errors, and every injected fault."""

from __future__ import annotations

import base64
import stat
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml
from mcp.client.session import ClientSession
from mcp.shared.message import SessionMessage

from agent.catalog import STRUCTURED_ONLY
from broker.errors import ApiUnavailable, RbacDenied
from broker.fleet.pool import NodePool
from broker.kube.config import ClusterConfig, KubeApi
from broker.kube.discovery import Discovery, NodeTarget
from broker.sim import Rule, SimServer
from broker.transport import channels
from broker.transport.exec import ExecChannel, open_exec_streams
from tests.broker.agents import cluster_pool, sim_config

pytestmark = pytest.mark.e2e

AGENT = ["gpu-agent"]


@asynccontextmanager
async def exec_streams(
    sim: SimServer, node: str | None = None, **options: Any
) -> AsyncIterator[tuple[Any, Any]]:
    """``open_exec_streams`` into *node*'s agent pod (the first node by default)."""
    api = await KubeApi.open(sim_config(sim), {})
    try:
        node = node or sim.nodes[0]
        target = NodeTarget(node, sim.agent_pod(node), sim.namespace, True, None, {})
        async with open_exec_streams(api, target, AGENT, **options) as streams:
            yield streams
    finally:
        await api.aclose()


@pytest.mark.parametrize("offer", [channels.SUPPORTED, (channels.V4,)])
async def test_mcp_session_over_exec(sim: SimServer, offer: tuple[str, ...]) -> None:
    opened: list[ExecChannel] = []
    async with (
        exec_streams(sim, protocols=offer, on_open=opened.append) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool("get_gpu_inventory", {})
    (chan,) = opened
    assert chan.protocol == offer[0]  # v5 when offered first, v4 when only v4 is offered
    assert init.server_info.name == "k8s-gpu-mcp-agent"
    assert {t.name for t in tools.tools} >= {"get_gpu_health", "get_gpu_inventory"}
    assert not result.is_error and result.structured_content is not None
    assert len(result.structured_content["gpus"]) == 8
    if chan.protocol == channels.V5:
        # v5: stdin half-closed, the agent exited 0 and the status frame said so.
        assert chan.status is not None and chan.status.success and chan.failure is None


async def test_v4_is_negotiated_when_the_server_lacks_v5(
    sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.sim.exec as sim_exec

    monkeypatch.setattr(
        sim_exec, "SUPPORTED", tuple(p for p in sim_exec.SUPPORTED if p != sim_exec.V5)
    )
    for offer in (channels.SUPPORTED, (channels.V5,)):  # listed, or refused outright (403)
        opened: list[ExecChannel] = []
        async with (
            exec_streams(sim, protocols=offer, on_open=opened.append) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert not (await session.call_tool("get_gpu_inventory", {})).is_error
        assert opened[0].protocol == channels.V4


async def test_stdin_is_half_closed_only_after_every_answer(sim: SimServer) -> None:
    """Requests written, then the write side closed at once: all answers still arrive."""
    opened: list[ExecChannel] = []
    answers: list[Any] = []
    async with exec_streams(sim, on_open=opened.append) as (read, write):
        await write.send(SessionMessage(INIT))
        await write.send(
            SessionMessage(
                types.JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
            )
        )
        for i in (2, 3, 4):
            call = types.JSONRPCRequest(
                jsonrpc="2.0",
                id=i,
                method="tools/call",
                params={"name": "get_gpu_health", "arguments": {}},
            )
            await write.send(SessionMessage(call))
        await write.aclose()  # EOF now; the agent must still answer all four
        with anyio.fail_after(10):
            async for item in read:
                answers.append(item)
    ids = [a.message.id for a in answers if isinstance(a, SessionMessage)]
    assert sorted(ids) == [1, 2, 3, 4]
    assert not any(isinstance(a, Exception) for a in answers)
    (chan,) = opened
    assert chan.answers_at_half_close == 4  # stdin was closed only once all were in
    assert chan.status is not None and chan.status.success


INIT = types.JSONRPCRequest(
    jsonrpc="2.0",
    id=1,
    method="initialize",
    params={
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
)


async def test_missing_status_frame_is_an_error_not_a_clean_end(sim: SimServer) -> None:
    node = sim.nodes[0]
    sim.faults(node).exec_drop_after = 1  # cut the connection after the first stdout line
    items: list[Any] = []
    async with exec_streams(sim, node) as (read, write):
        await write.send(SessionMessage(INIT))
        with anyio.fail_after(10):
            async for item in read:
                items.append(item)
    assert isinstance(items[0], SessionMessage) and items[0].message.id == 1
    assert len(items) == 2 and isinstance(items[1], ApiUnavailable)
    assert "without a status frame" in str(items[1]) or "broke" in str(items[1])


async def test_non_agent_command_is_refused_like_a_container_without_it(sim: SimServer) -> None:
    async with cluster_pool(
        sim_config(sim), agent_command=["not-the-agent"], call_timeout=10
    ) as pool:
        result = await pool.call(sim.nodes[0], "get_gpu_inventory", {})
    assert result.error_kind == "agent_error"
    assert result.error is not None and "not in the pod's image" in result.error
    assert "executable file not found" in result.error


async def test_rbac_denial_names_the_missing_permission(sim: SimServer) -> None:
    context = sim.add_user(
        "viewer",
        [Rule(verbs=("get", "list"), resources=("pods", "nodes"), api_groups=("",))],
    )
    async with cluster_pool(sim_config(sim, context), call_timeout=10) as pool:
        targets = await pool.discover()  # listing is allowed
        result = await pool.call(targets[0].node, "get_gpu_health", {})
    assert result.error_kind == "rbac"
    assert result.error is not None
    assert "create pods/exec" in result.error
    assert "kubectl auth can-i create pods --subresource=exec -n gpu-diagnostics" in result.error


async def test_rbac_denial_of_pod_listing_is_raised_by_discovery(sim: SimServer) -> None:
    context = sim.add_user("nobody", [])
    async with cluster_pool(sim_config(sim, context), call_timeout=10) as pool:
        with pytest.raises(RbacDenied, match="kubectl auth can-i list pods -n gpu-diagnostics"):
            await pool.discover()


async def test_429_is_retried_honouring_retry_after(sim: SimServer) -> None:
    node = sim.nodes[1]
    faults = sim.faults(node)
    faults.api_429, faults.retry_after_s = 2, 1
    async with cluster_pool(sim_config(sim), call_timeout=15) as pool:
        started = time.monotonic()
        result = await pool.call(node, "get_gpu_inventory", {})
        elapsed = time.monotonic() - started
    assert result.ok, result
    assert elapsed >= 2.0  # waited the advised second twice
    assert faults.api_429 == 0
    statuses = [s for m, path, s in sim.requests if "/exec" in path]
    assert statuses.count(429) == 2


async def test_persistent_429_and_500_give_up_with_the_status(sim: SimServer) -> None:
    throttled, broken = sim.nodes[0], sim.nodes[1]
    sim.faults(throttled).api_429 = -1
    sim.faults(throttled).retry_after_s = 0
    sim.faults(broken).api_500 = -1
    async with cluster_pool(sim_config(sim), call_timeout=15) as pool:
        started = time.monotonic()
        r429, r500 = await pool.fan_out(
            await pool.resolve([throttled, broken]), "get_gpu_inventory", {}
        )
        assert time.monotonic() - started < 10
        assert r429.error_kind == "unreachable" and r429.error is not None
        assert "429" in r429.error and "4 times" in r429.error
        assert r500.error_kind == "unreachable" and r500.error is not None and "500" in r500.error
        sim.faults(throttled).api_429 = 0
        sim.faults(broken).api_500 = 1  # one more 500, then fine: retried transparently
        again = await pool.fan_out(await pool.resolve([throttled, broken]), "get_gpu_inventory", {})
    assert all(r.ok for r in again)


async def test_agent_killed_mid_call_then_recovers(sim: SimServer) -> None:
    node = sim.nodes[2]
    sim.faults(node).exec_kill_after = 1
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        killed = await pool.call(node, "get_gpu_health", {})
        sim.faults(node).exec_kill_after = None
        after = await pool.call(node, "get_gpu_health", {})
    assert killed.error_kind == "agent_error"
    assert killed.error is not None and "killed (exit 137" in killed.error
    assert after.ok


async def test_dropped_websocket_is_an_error_then_recovers(sim: SimServer) -> None:
    node = sim.nodes[3]
    sim.faults(node).exec_drop_after = 1  # cut after the initialize answer
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        dropped = await pool.call(node, "get_gpu_inventory", {})
        sim.faults(node).exec_drop_after = None
        after = await pool.call(node, "get_gpu_inventory", {})
    assert dropped.error_kind == "unreachable"
    assert dropped.error is not None
    assert "without a status frame" in dropped.error or "broke" in dropped.error
    assert after.ok


async def test_warm_session_cut_under_us_is_noticed_without_a_call(sim: SimServer) -> None:
    node = sim.nodes[3]
    sim.faults(node).exec_drop_after = 2  # initialize, the first call's answer, the cut
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        assert (await pool.call(node, "get_gpu_inventory", {})).ok
        with anyio.fail_after(5):
            while pool.stats()["open_sessions"]:  # noqa: ASYNC110 - polling a counter
                await anyio.sleep(0.02)
        assert pool.stats()["closed_broken"] == 1
        sim.faults(node).exec_drop_after = None
        assert (await pool.call(node, "get_gpu_inventory", {})).ok
        assert pool.stats()["opened"] == 2


async def test_hung_agent_times_out_and_the_next_call_recovers(sim: SimServer) -> None:
    node = sim.nodes[0]
    sim.faults(node).exec_hang = "tools/call"
    async with cluster_pool(sim_config(sim), call_timeout=1.5) as pool:
        started = time.monotonic()
        hung = await pool.call(node, "get_gpu_health", {})
        assert time.monotonic() - started < 2.5
        sim.faults(node).exec_hang = None
        after = await pool.call(node, "get_gpu_health", {})
    assert hung.error_kind == "timeout"
    assert after.ok


@pytest.mark.parametrize("mode", ["prefix", "only"])
async def test_garbage_on_stdout_is_a_protocol_error(sim: SimServer, mode: str) -> None:
    node = sim.nodes[1]
    sim.faults(node).exec_garbage = mode
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        started = time.monotonic()
        result = await pool.call(node, "get_gpu_health", {})
        assert time.monotonic() - started < 5
        sim.faults(node).exec_garbage = None
        after = await pool.call(node, "get_gpu_health", {})
    assert result.error_kind == "protocol"
    assert result.error is not None and "not an MCP message" in result.error
    assert after.ok


async def test_version_skew_names_the_tool(sim: SimServer) -> None:
    node = sim.nodes[2]
    sim.update_agent(node, disabled_tools=["get_nvlink_topology"])
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        skew = await pool.call(node, "get_nvlink_topology", {})
        other = await pool.call(sim.nodes[0], "get_nvlink_topology", {})
    assert skew.error_kind == "tool_missing"
    assert (
        skew.error is not None and "'get_nvlink_topology'" in skew.error and "version" in skew.error
    )
    assert other.ok


async def test_not_ready_and_missing_agent_pods(sim: SimServer) -> None:
    sim.set_agent_pod(sim.nodes[0], "not_ready")
    sim.set_agent_pod(sim.nodes[1], "missing")
    sim.set_agent_pod(sim.nodes[2], "crashloop")
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        results = await pool.fan_out(await pool.resolve(sim.nodes), "get_gpu_inventory", {})
    kinds = [r.error_kind for r in results]
    assert kinds == ["not_ready", "not_ready", "not_ready", None]
    assert results[0].error is not None and "not Ready" in results[0].error
    assert results[1].error is not None and "no agent pod" in results[1].error
    assert results[2].error is not None and "CrashLoopBackOff" in results[2].error


async def test_client_certificate_credentials(sim: SimServer) -> None:
    async with cluster_pool(sim_config(sim, "sim-cert"), call_timeout=10) as pool:
        result = await pool.call(sim.nodes[0], "get_gpu_inventory", {})
    assert result.ok


def _plugin_kubeconfig(sim: SimServer, tmp_path: Path, status: dict[str, str]) -> Path:
    """The sim's kubeconfig plus a context ``plugin`` whose user runs an exec plugin
    that prints ``status`` as its ExecCredential (and logs each run)."""
    log = tmp_path / "plugin-runs"
    script = tmp_path / "mint-credential"
    script.write_text(
        f"#!{sys.executable}\nimport json\n"
        f"open({str(log)!r}, 'a').write('run\\n')\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        f"'kind': 'ExecCredential', 'status': {status!r}}}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    doc = yaml.safe_load(sim.kubeconfig.read_text())
    exec_stanza = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}
    doc["users"].append({"name": "plugin-user", "user": {"exec": exec_stanza}})
    cluster = doc["contexts"][0]["context"]["cluster"]
    doc["contexts"].append(
        {"name": "plugin", "context": {"cluster": cluster, "user": "plugin-user"}}
    )
    path = tmp_path / "kubeconfig-plugin"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_exec_credential_plugin_token_is_accepted(sim: SimServer, tmp_path: Path) -> None:
    path = _plugin_kubeconfig(sim, tmp_path, {"token": sim.token})
    async with cluster_pool(
        ClusterConfig(kubeconfig=str(path), context="plugin"), call_timeout=10
    ) as pool:
        result = await pool.call(sim.nodes[0], "get_gpu_inventory", {})
    assert result.ok
    assert (tmp_path / "plugin-runs").read_text().count("run") == 1


async def test_rejected_plugin_token_is_unauthenticated(sim: SimServer, tmp_path: Path) -> None:
    path = _plugin_kubeconfig(sim, tmp_path, {"token": "wrong-token"})
    async with cluster_pool(
        ClusterConfig(kubeconfig=str(path), context="plugin"), call_timeout=10
    ) as pool:
        with pytest.raises(Exception, match="401 Unauthorized"):
            await pool.discover()
    # 401 re-runs the plugin once (maybe a fresh token helps), then gives up.
    assert (tmp_path / "plugin-runs").read_text().count("run") == 2


async def test_fifty_node_mixed_fault_sweep_then_recovery(tmp_path: Path) -> None:
    """Every fault at once across 50 nodes: the sweep meets its deadline with each healthy
    node's result and a precise error per broken node; the next sweep recovers."""
    from broker.sim import start_sim

    deadline = 3.0
    async with start_sim(nodes=50, scenario={}, in_process=True, workdir=tmp_path / "s") as sim:
        nodes = sim.nodes
        expect: dict[str, tuple[str, str]] = {}  # node -> (error_kind, text in the error)

        def fault(i: int, kind: str, text: str, **faults: Any) -> str:
            node = nodes[i]
            for key, value in faults.items():
                setattr(sim.faults(node), key, value)
            expect[node] = (kind, text)
            return node

        fault(0, "unreachable", "429", api_429=-1, retry_after_s=0)
        fault(1, "unreachable", "500", api_500=-1)
        fault(2, "unreachable", "status frame", exec_drop_after=1)
        fault(3, "agent_error", "exit 137", exec_kill_after=1)
        fault(4, "timeout", "tool call", exec_hang="tools/call")
        fault(5, "timeout", "opening the session", exec_hang="*")
        fault(6, "protocol", "not an MCP message", exec_garbage="prefix")
        fault(7, "protocol", "not an MCP message", exec_garbage="only")
        sim.update_agent(nodes[8], disabled_tools=["get_gpu_health"])
        expect[nodes[8]] = ("tool_missing", "'get_gpu_health'")
        pod_states = [
            (9, "not_ready", "not Ready"),
            (10, "missing", "no agent pod"),
            (11, "pending", "Pending"),
            (12, "crashloop", "CrashLoopBackOff"),
        ]
        for i, state, text in pod_states:
            sim.set_agent_pod(nodes[i], state)
            expect[nodes[i]] = ("not_ready", text)
        # RBAC: exec allowed into every agent pod but two.
        denied = {nodes[13], nodes[14]}
        allowed = tuple(p for n in nodes if n not in denied and (p := sim.agent_pod(n)))
        context = sim.add_user(
            "sre",
            [
                Rule(verbs=("get", "list"), resources=("pods", "nodes"), api_groups=("",)),
                Rule(verbs=("create",), resources=("pods/exec",), resource_names=allowed),
            ],
        )
        for node in denied:
            expect[node] = (
                "rbac",
                "kubectl auth can-i create pods --subresource=exec -n gpu-diagnostics",
            )
        # Transient faults are absorbed by retries: these nodes must come back healthy.
        sim.faults(nodes[15]).api_429, sim.faults(nodes[15]).retry_after_s = 1, 1
        sim.faults(nodes[16]).api_500 = 1

        async with cluster_pool(sim_config(sim, context), call_timeout=deadline) as pool:
            started = time.monotonic()
            results = await pool.fan_out(await pool.resolve(nodes), "get_gpu_health", {})
            elapsed = time.monotonic() - started
            assert elapsed < deadline + 1.0
            by_node = {r.node: r for r in results}
            assert len(results) == 50
            for node, result in by_node.items():
                if node in expect:
                    kind, text = expect[node]
                    assert not result.ok, node
                    assert (result.error_kind, node) == (kind, node), result.error
                    assert result.error is not None and text in result.error, result.error
                else:
                    assert result.ok, (node, result.error)
                    assert result.result is not None and "status" in result.result

            # Clear every fault: the broker recovers on the next sweep.
            for node in nodes:
                faults = sim.faults(node)
                faults.api_429 = faults.api_500 = 0
                faults.exec_drop_after = faults.exec_kill_after = None
                faults.exec_hang = faults.exec_garbage = None
                sim.set_agent_pod(node, "ready")
            sim.update_agent(nodes[8], disabled_tools=[])
            sim.cluster.auth.users["sre"].rules.append(
                Rule(verbs=("create",), resources=("pods/exec",))
            )
            await pool.discover(refresh=True)
            again = await pool.fan_out(await pool.resolve(nodes), "get_gpu_health", {})
        assert [r.node for r in again if not r.ok] == []


async def test_pool_sessions_get_structured_only_answers(sim: SimServer) -> None:
    """Through the API server the agent honours the extension the pool declares, so a
    node answer crosses the wire once (structuredContent), not twice."""
    node = sim.nodes[0]
    async with cluster_pool(sim_config(sim), call_timeout=10) as pool:
        result = await pool.call(node, "get_gpu_health", {})
        client = pool._sessions[node].client  # the pool's own SDK session
        assert client is not None and client.server_capabilities is not None
        assert client.server_capabilities.extensions == {STRUCTURED_ONLY: {}}
    assert result.ok and result.result is not None and result.result["gpus"]


async def test_closing_the_pool_ends_every_agent_cleanly(sim: SimServer) -> None:
    opened: list[ExecChannel] = []
    api = await KubeApi.open(sim_config(sim), {})

    def connect(target: NodeTarget) -> Any:
        return open_exec_streams(api, target, AGENT, on_open=opened.append)

    try:
        async with NodePool(
            connect=connect, discover=Discovery(api).targets, call_timeout=10
        ) as pool:
            results = await pool.fan_out(await pool.resolve(sim.nodes), "get_gpu_inventory", {})
            assert all(r.ok for r in results)
            assert sim.running_agents == len(sim.nodes)
    finally:
        await api.aclose()
    # Each stdin was half-closed after the last answer; each agent exited 0 and said so.
    assert len(opened) == len(sim.nodes)
    assert all(c.status is not None and c.status.success for c in opened)
    assert all(c.failure is None for c in opened)
    assert sim.running_agents == 0


async def test_exec_credential_plugin_client_certificate(sim: SimServer, tmp_path: Path) -> None:
    context = sim.add_user("cert-user", [Rule(verbs=("*",), resources=("*",))], cert=True)
    doc = yaml.safe_load(sim.kubeconfig.read_text())
    user = next(u["user"] for u in doc["users"] if u["name"] == context)
    status = {
        "clientCertificateData": base64.b64decode(user["client-certificate-data"]).decode(),
        "clientKeyData": base64.b64decode(user["client-key-data"]).decode(),
    }
    path = _plugin_kubeconfig(sim, tmp_path, status)
    async with cluster_pool(
        ClusterConfig(kubeconfig=str(path), context="plugin"), call_timeout=10
    ) as pool:
        result = await pool.call(sim.nodes[0], "get_gpu_inventory", {})
    assert result.ok, result.error
