"""The per-node circuit breaker: a node that keeps failing is skipped for a while and
reported as such, one trial call at a time once the pause is over."""

from __future__ import annotations

import sys

import pytest

from broker.errors import NodeSkipped
from broker.fleet.breaker import CircuitBreaker
from broker.fleet.pool import NodePool
from tests.broker.agents import LocalAgents


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_one_trial_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=10, max_open_s=40, clock=clock)
    for _ in range(2):
        assert breaker.acquire("n1") is None
        breaker.record("n1", "timeout", "no answer within 5 s")
    assert breaker.acquire("n1") is None
    breaker.record("n1", "rbac")  # says nothing about the node
    assert breaker.acquire("n1") is None
    breaker.record("n1", "unreachable", "connection refused")
    skipped = breaker.acquire("n1")
    assert isinstance(skipped, NodeSkipped) and skipped.kind == "circuit_open"
    assert "failed 3 times in a row (last: connection refused)" in str(skipped)
    assert "again in 10 s" in str(skipped)
    assert breaker.acquire("n2") is None  # other nodes are unaffected

    clock.now += 10
    assert breaker.acquire("n1") is None  # the trial
    assert isinstance(breaker.acquire("n1"), NodeSkipped)  # only one at a time
    breaker.record("n1", "timeout")  # the trial failed: open twice as long
    clock.now += 19
    assert isinstance(breaker.acquire("n1"), NodeSkipped)
    clock.now += 1
    assert breaker.acquire("n1") is None
    breaker.record("n1", "cancelled")  # a cancelled trial lets the next one in
    assert breaker.acquire("n1") is None
    breaker.record("n1", None)  # success closes it
    assert not breaker.is_open("n1") and breaker.acquire("n1") is None
    assert breaker.skipped == 3


@pytest.mark.timeout(60)
async def test_the_pool_skips_a_failing_node_and_keeps_serving_the_rest(
    local_agents: LocalAgents,
) -> None:
    local_agents.add("good")
    # An "agent" that exits at once: every session open fails.
    local_agents.add("bad", command=[sys.executable, "-c", "pass"])
    breaker = CircuitBreaker(failures=2, open_s=60)
    async with NodePool(
        connect=local_agents.connect,
        discover=local_agents.discover,
        call_timeout=10,
        breaker=breaker,
    ) as pool:
        targets = await pool.resolve(["good", "bad"])
        for _ in range(2):
            results = await pool.fan_out(targets, "get_gpu_health", {})
            assert results[0].ok and results[1].error_kind != "circuit_open"
        connects = local_agents.connects["bad"]
        results = await pool.fan_out(targets, "get_gpu_health", {})
        assert results[0].ok
        assert results[1].error_kind == "circuit_open"
        assert "skipped, it failed 2 times in a row" in (results[1].error or "")
        assert local_agents.connects["bad"] == connects  # not even tried
        assert breaker.open_nodes() == ["bad"]
