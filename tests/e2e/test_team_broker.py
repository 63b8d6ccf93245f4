"""The team broker (``--auth kubernetes``) end to end on the simulated cluster: callers
send their own Kubernetes tokens, the broker checks them with a TokenReview and acts as
each caller (impersonation), so the API server applies the caller's own RBAC and its
record names the caller on every exec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import httpx2
import pytest

from broker.errors import ConfigError
from broker.kube.config import ClusterConfig
from broker.server import HttpSettings, ServeOptions, serve
from broker.server.http import http_app
from broker.server.limits import CallerLimits
from broker.server.team import TeamOptions, team_app
from broker.sim import Rule, SimServer
from tests.e2e.session import serve_http, structured
from tests.e2e.test_http import INIT, JSON_HEADERS, mcp_over_http, post

pytestmark = pytest.mark.e2e

BROKER = "system:serviceaccount:gpu-diagnostics:gpu-mcp-broker"
# Exactly the chart's broker ClusterRole (templates/broker-rbac.yaml), nothing more.
CHART_BROKER_RULES = [
    Rule(verbs=("create",), resources=("tokenreviews",), api_groups=("authentication.k8s.io",)),
    Rule(verbs=("impersonate",), resources=("users",), api_groups=("",)),
    Rule(verbs=("impersonate",), resources=("groups",), api_groups=("",)),
    Rule(verbs=("impersonate",), resources=("serviceaccounts",), api_groups=("",)),
]


@asynccontextmanager
async def team_broker(sim: SimServer, team: TeamOptions | None = None) -> AsyncIterator[int]:
    """The broker as the chart runs it (its own account: TokenReview + impersonate only),
    serving HTTP on a free loopback port; yields the port."""
    context = sim.add_user(BROKER, rules=CHART_BROKER_RULES)
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig), context=context)
    settings = HttpSettings(host="127.0.0.1", auth="kubernetes")
    async with (
        team_app(config, call_timeout=20, team=team) as app,
        serve_http(app, settings) as port,
    ):
        yield port


@pytest.mark.timeout(180)
async def test_each_caller_acts_as_themselves(demo_sim: SimServer) -> None:
    sim = demo_sim
    async with team_broker(sim) as port:
        # The allowed user (the chart's diagnosis roles): answers from every node.
        async with mcp_over_http(port, sim.user_token("sre")) as session:
            answer = structured(await session.call_tool("get_gpu_health", {}))
            summary = answer["summary"]
            assert summary["nodes"]["total"] == 10
            assert not [u for u in summary["unreachable"] if u["kind"] == "rbac"], summary
            nodes = structured(await session.call_tool("list_gpu_nodes", {}))
            assert nodes

        # A user who may read but not exec: the same clear RBAC error as on a laptop.
        async with mcp_over_http(port, sim.user_token("viewer")) as session:
            answer = structured(await session.call_tool("get_gpu_health", {}))
            unreachable = answer["summary"]["unreachable"]
            # Every node with a ready agent pod refuses the exec (the rest are not ready).
            assert {u["kind"] for u in unreachable} == {"rbac", "not_ready"}
            denied = [u for u in unreachable if u["kind"] == "rbac"]
            assert denied and sum(u["count"] for u in unreachable) == 10  # grouped by reason
            reason = denied[0]["reason"]
            assert "may not create pods/exec in namespace gpu-diagnostics" in reason
            assert "kubectl auth can-i create pods --subresource=exec" in reason
            assert "checked as user 'viewer'" in reason
            assert structured(await session.call_tool("list_gpu_nodes", {}))  # reads: allowed

        # An invalid token, and none at all: 401 saying what to send.
        forged = await post(port, {"Authorization": "Bearer not-a-kubernetes-token"})
        assert forged.status == 401
        assert forged.headers["WWW-Authenticate"].startswith("Bearer")
        anonymous = await post(port, {})
        assert anonymous.status == 401

        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/mcp",
                json={},
                headers={"Authorization": "Bearer forged-token-xyz"},
            ) as resp:
                body = await resp.json()
                assert "did not accept your token" in body["message"]
                assert "kubectl create token" in body["message"]
            # Probes: no auth and no Host check (kubelet sends Host: <podIP>:<port>).
            for path in ("/healthz", "/readyz"):
                async with http.get(
                    f"http://127.0.0.1:{port}{path}", headers={"Host": f"10.1.2.3:{port}"}
                ) as resp:
                    assert resp.status == 200, path

    execs = [e for e in sim.audit if "/exec" in e.path]
    assert execs, "no exec reached the API server"
    assert {e.impersonated_by for e in execs} == {BROKER}, "an exec ran as the broker itself"
    assert {e.user for e in execs} == {"sre", "viewer"}
    assert {e.status for e in execs if e.user == "viewer"} == {403}
    assert {e.status for e in execs if e.user == "sre"} == {101}
    sre_groups = {e.groups for e in execs if e.user == "sre"}
    assert sre_groups == {("system:authenticated",)}
    # The broker's own requests are TokenReviews only: everything else is the callers'.
    own = [e for e in sim.audit if e.user == BROKER]
    assert own and all(e.path.endswith("/tokenreviews") for e in own), own
    # Tokens are reviewed once per TTL, not per request.
    assert len(own) <= 4, [e.path for e in own]


async def test_groups_from_the_token_review_reach_the_api_server(demo_sim: SimServer) -> None:
    """A user with no rules of their own, allowed through a group binding: every group the
    TokenReview names is passed on (one Impersonate-Group header each)."""
    sim = demo_sim
    sim.add_user("carol", groups=["staff", "gpu-sre"])
    sim.bind_group("gpu-sre", [
        Rule(verbs=("get", "list", "watch"), resources=("nodes", "pods", "events"),
             api_groups=("",)),
        Rule(verbs=("create", "get"), resources=("pods/exec",), api_groups=("",),
             namespaces=(sim.namespace,)),
    ])  # fmt: skip
    async with team_broker(sim) as port, mcp_over_http(port, sim.user_token("carol")) as session:
        answer = structured(await session.call_tool("get_gpu_health", {"node": "gpu-node-001"}))
        assert answer["summary"]["unreachable"] == []
    execs = [e for e in sim.audit if "/exec" in e.path]
    assert execs and {e.user for e in execs} == {"carol"}
    assert {e.groups for e in execs} == {("staff", "gpu-sre", "system:authenticated")}


async def test_callers_are_rate_limited_and_big_requests_refused(demo_sim: SimServer) -> None:
    sim = demo_sim
    team = TeamOptions(limits=CallerLimits(rate_per_s=0.01, burst=2, max_request_bytes=4096))
    async with team_broker(sim, team) as port:
        async with mcp_over_http(port, sim.user_token("sre")) as session:
            for _ in range(2):
                structured(await session.call_tool("list_gpu_nodes", {}))
            limited = await session.call_tool("list_gpu_nodes", {})
            assert limited.is_error
            text = limited.content[0].text  # type: ignore[union-attr]
            assert "rate limit reached (0.01 calls/s per caller, bursts of 2)" in text
            assert "retry in" in text
        # Another caller has their own budget.
        async with mcp_over_http(port, sim.user_token("viewer")) as session:
            structured(await session.call_tool("list_gpu_nodes", {}))
        big = {**INIT, "params": {**INIT["params"], "padding": "x" * 5000}}
        refused = await post(port, {"Authorization": f"Bearer {sim.user_token('sre')}"}, big)
        assert refused.status == 413


async def test_a_broker_that_cannot_review_tokens_says_so(demo_sim: SimServer) -> None:
    """Without `create tokenreviews` the broker answers 503 naming the missing grant (the
    caller's token is not blamed)."""
    sim = demo_sim
    sim.add_user(BROKER, rules=CHART_BROKER_RULES[1:])
    context = f"sim-{BROKER}"
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig), context=context)
    settings = HttpSettings(host="127.0.0.1", auth="kubernetes")
    async with team_app(config) as app:
        asgi = http_app(app, settings)
        transport = httpx2.ASGITransport(app=asgi)
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            headers = {"Authorization": f"Bearer {sim.user_token('sre')}", **JSON_HEADERS}
            response = await http.post("/mcp", json=INIT, headers=headers)
    assert response.status_code == 503
    message = response.json()["message"]
    assert "may not create TokenReviews" in message
    assert "create tokenreviews.authentication.k8s.io" in message


async def test_pinned_mode_is_for_one_ide_not_a_team() -> None:
    options = ServeOptions(
        node="gpu-node-001", transport="http", http=HttpSettings(auth="kubernetes")
    )
    with pytest.raises(ConfigError, match="cannot be combined with --auth kubernetes"):
        await serve(options)


async def test_an_mcp_session_belongs_to_the_caller_who_opened_it(demo_sim: SimServer) -> None:
    sim = demo_sim
    async with team_broker(sim) as port:
        sre = {"Authorization": f"Bearer {sim.user_token('sre')}"}
        opened = await post(port, sre)
        assert opened.status == 200
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await post(port, {**sre, **session}, ready)).status == 202
        viewer = {"Authorization": f"Bearer {sim.user_token('viewer')}"}
        stolen = await post(port, {**viewer, **session}, listing)
        assert stolen.status == 404
        assert (await post(port, {**sre, **session}, listing)).status == 200
