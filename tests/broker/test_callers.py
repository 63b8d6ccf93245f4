"""Per-caller access for the team broker against the simulated cluster: TokenReview with
the broker's own credentials, impersonation headers (every group), and one context per
caller (never shared, closed when idle, least recently used closed at the cap)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from broker.errors import ConfigError
from broker.fleet.identities import CallerContexts, caller_context
from broker.kube.auth import Identity, TokenRejected, review_token
from broker.kube.config import ClusterConfig, KubeApi
from broker.kube.reader import ClusterReader
from broker.sim import Rule, SimServer
from tests.broker.agents import sim_config

BROKER = "system:serviceaccount:gpu-diagnostics:gpu-mcp-broker"
BROKER_RULES = [
    Rule(verbs=("create",), resources=("tokenreviews",), api_groups=("authentication.k8s.io",)),
    Rule(verbs=("impersonate",), resources=("users", "groups"), api_groups=("",)),
]


async def until(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    with anyio.fail_after(limit_s):
        for _ in range(100_000):
            if condition():
                return
            await anyio.sleep(0.01)


READER = [Rule(verbs=("get", "list"), resources=("nodes", "pods"), api_groups=("",))]


async def test_token_review_with_the_brokers_own_credentials(sim: SimServer) -> None:
    sim.add_user("alice", groups=["gpu-sre"])
    api = await KubeApi.open(sim_config(sim, sim.add_user(BROKER, rules=BROKER_RULES)))
    try:
        who = await review_token(api, sim.user_token("alice"))
        assert who == Identity("alice", ("gpu-sre", "system:authenticated"))
        with pytest.raises(TokenRejected, match="invalid bearer token"):
            await review_token(api, "forged")
    finally:
        await api.aclose()

    api = await KubeApi.open(sim_config(sim, sim.add_user("unprivileged", rules=[])))
    try:
        with pytest.raises(ConfigError) as caught:
            await review_token(api, sim.user_token("alice"))
        message = str(caught.value)
        assert "may not create TokenReviews" in message
        assert "create tokenreviews.authentication.k8s.io" in message
    finally:
        await api.aclose()


async def test_impersonation_sends_the_user_and_every_group(sim: SimServer) -> None:
    sim.add_user("carol")
    sim.bind_group("readers", READER)
    config = sim_config(sim, sim.add_user(BROKER, rules=BROKER_RULES))
    who = Identity("carol", ("staff", "readers", "system:authenticated"))
    api = await KubeApi.open(replace(config, impersonate=who))
    try:
        nodes = await ClusterReader(api).nodes()  # allowed only through the group
        assert nodes
    finally:
        await api.aclose()
    last = [e for e in sim.audit if e.path.startswith("/api/v1/nodes")][-1]
    assert (last.user, last.impersonated_by) == ("carol", BROKER)
    assert last.groups == ("staff", "readers", "system:authenticated")


async def test_one_context_per_caller_never_shared(sim: SimServer) -> None:
    for name in ("alice", "bob"):
        sim.add_user(name, rules=READER)
    config = sim_config(sim, sim.add_user(BROKER, rules=BROKER_RULES))
    alice, bob = Identity("alice"), Identity("bob")
    proxy = caller_context()
    async with CallerContexts(config, call_timeout=10) as callers:
        async with callers.use(alice) as a1, callers.use(alice) as a2:
            assert a1 is a2
            assert proxy.pool is a1.pool  # handlers see the current caller's context
            async with callers.use(bob) as b:
                assert b is not a1 and b.pool is not a1.pool
                assert proxy.pool is b.pool
                targets = await proxy.targets()
                assert len(targets) == 4
            assert proxy.pool is a1.pool
        assert callers.opened == 2 and callers.open_callers == 2
    listed = [e for e in sim.audit if e.path.startswith("/api/v1/nodes")]
    assert listed and {e.user for e in listed} == {"bob"}
    with pytest.raises(RuntimeError, match="outside a caller's call"):
        _ = proxy.pool


async def test_idle_contexts_close_and_the_cap_evicts_the_least_recent(sim: SimServer) -> None:
    config = sim_config(sim, sim.add_user(BROKER, rules=BROKER_RULES))
    async with CallerContexts(config, max_callers=2, idle_s=0.3) as callers:
        for name in ("a", "b"):
            async with callers.use(Identity(name)):
                pass
        async with callers.use(Identity("a")):
            pass  # a is now more recent than b
        async with callers.use(Identity("c")):
            await until(lambda: callers.open_callers <= 2)
            assert {i.user for i in callers.identities} == {"a", "c"}
        assert callers.opened == 3
        await until(lambda: callers.open_callers == 0)  # idle for 0.3 s: all closed
        async with callers.use(Identity("a")):
            assert callers.opened == 4  # re-opened on the next call


async def test_a_context_that_cannot_open_fails_the_call_with_the_reason(tmp_path: Path) -> None:
    config = ClusterConfig(kubeconfig=str(tmp_path / "missing-kubeconfig"))
    async with CallerContexts(config) as callers:
        with pytest.raises(ConfigError, match="missing-kubeconfig"):
            async with callers.use(Identity("alice")):
                pass
        assert callers.open_callers == 0
