"""broker.fleet.limiter: the open limit grows while opens are fast, halves when they are
slow or throttled (once per burst), and stays within its floor and ceiling."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from broker.fleet.limiter import AdaptiveLimit


async def test_grows_one_per_fast_open_until_the_first_cut() -> None:
    limit = AdaptiveLimit(100, start=8)
    for _ in range(20):
        limit.observe(0.05)
    assert limit.limit == 28


async def test_a_slow_burst_halves_once_then_growth_is_additive() -> None:
    limit = AdaptiveLimit(256, start=64, cooldown_s=60)
    limit.observe(0.05)  # sets the bar: slow is > max(1 s, 4 x 0.05 s)
    for _ in range(10):  # one congested burst: ten slow opens, one cut
        limit.observe(2.0)
    assert (limit.limit, limit.cuts) == (32, 1)
    for _ in range(32):  # after the cut: about +1 per limit's worth of fast opens
        limit.observe(0.05)
    assert limit.limit == 33


async def test_throttling_cuts_and_the_floor_and_ceiling_hold() -> None:
    limit = AdaptiveLimit(16, floor=4, start=16, cooldown_s=0)
    for _ in range(10):
        limit.observe(None, throttled=True)
    assert limit.limit == 4
    for _ in range(1000):
        limit.observe(0.01)
    assert limit.limit == 16 and limit.peak == 16


async def test_waiters_are_served_first_in_first_out() -> None:
    limit = AdaptiveLimit(1, start=1)
    order: list[int] = []

    async def take(i: int) -> None:
        await limit.acquire(i)
        order.append(i)
        await anyio.sleep(0.01)
        limit.release(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(take, i)
            await anyio.lowlevel.checkpoint()  # queue in this order
    assert order == [0, 1, 2, 3, 4]


def test_refuses_a_ceiling_below_one() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(0)
