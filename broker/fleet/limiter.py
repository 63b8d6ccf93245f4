"""How many node sessions may be opening at once: a limit that adapts to the API server.

Additive increase, multiplicative decrease (as TCP congestion control): every open that
finishes fast earns a little more room, an open that is slow (queued behind the
apiserver, the kubelet or a busy CPU) or throttled (429) halves it. Until the first cut
the limit grows by one per fast open (doubling per round, TCP's slow start), so a large
cold sweep finds its rate in a few rounds. Waiters are served first in, first out.
"""

from __future__ import annotations

import time

import anyio

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    """An AIMD-sized :class:`anyio.CapacityLimiter` for session opens.

    An open is *slow* when it takes longer than ``max(slow_s, slow_factor × the fastest
    open of the last window or two)``. Cuts are at most one per ``cooldown_s``, so one
    congested burst cuts once, not once per open caught in it.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 4,
        start: int = 32,
        slow_s: float = 1.0,
        slow_factor: float = 4.0,
        cooldown_s: float = 1.0,
        window_s: float = 10.0,
    ) -> None:
        if ceiling < 1:
            raise ValueError("the concurrency ceiling must be at least 1")
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.slow_s = slow_s
        self.slow_factor = slow_factor
        self.cooldown_s = cooldown_s
        self._limiter = anyio.CapacityLimiter(max(self.floor, min(start, ceiling)))
        self._credit = 0.0
        self._slow_start = True
        self.window_s = window_s
        self._window_start = time.monotonic()
        self._window_min = float("inf")
        self._previous_min = float("inf")
        self._cut_at = 0.0
        self.cuts = 0
        self.peak = int(self._limiter.total_tokens)

    @property
    def limit(self) -> int:
        """Opens allowed at once now."""
        return int(self._limiter.total_tokens)

    @property
    def waiting(self) -> int:
        """Opens waiting for a slot."""
        return int(self._limiter.statistics().tasks_waiting)

    async def acquire(self, borrower: object) -> None:
        await self._limiter.acquire_on_behalf_of(borrower)

    def release(self, borrower: object) -> None:
        self._limiter.release_on_behalf_of(borrower)

    def observe(self, elapsed_s: float | None, *, throttled: bool = False) -> None:
        """Feed one finished open: its duration (None when it failed) and whether the API
        server throttled it."""
        if throttled:
            self._cut()
            return
        if elapsed_s is None:
            return
        if elapsed_s > max(self.slow_s, self.slow_factor * self._baseline(elapsed_s)):
            self._cut()
        elif self._slow_start:
            self._set(self.limit + 1)
        else:
            self._credit += 1.0 / self.limit
            if self._credit >= 1.0:
                self._credit = 0.0
                self._set(self.limit + 1)

    def _baseline(self, elapsed_s: float) -> float:
        """The fastest open of the last one or two windows: a busier machine raises the
        bar within a window or two, while one lucky early open does not set it forever."""
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._previous_min, self._window_min = self._window_min, float("inf")
            self._window_start = now
        self._window_min = min(self._window_min, elapsed_s)
        return min(self._previous_min, self._window_min)

    def _cut(self) -> None:
        now = time.monotonic()
        self._slow_start = False
        if now - self._cut_at < self.cooldown_s:
            return
        self._cut_at = now
        self.cuts += 1
        self._set(self.limit // 2)

    def _set(self, value: int) -> None:
        value = max(self.floor, min(self.ceiling, value))
        if value != self.limit:
            self._limiter.total_tokens = value
            self.peak = max(self.peak, value)
