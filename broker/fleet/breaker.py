"""Per-node circuit breaker: a node that keeps failing is skipped for a while.

After ``failures`` consecutive failures that say the node cannot be reached (unreachable,
timeout, protocol), calls to it fail at once with :class:`NodeSkipped` (kind
``circuit_open``) for ``open_s``; then one trial call at a time goes through (half-open):
success closes the breaker, failure opens it again for twice as long (up to
``max_open_s``). RBAC refusals, bad input, tool errors and cancellations say nothing
about the node and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.errors import NodeSkipped

__all__ = ["TRIPPING_KINDS", "CircuitBreaker"]

# Error kinds that mean "this node cannot answer now".
TRIPPING_KINDS = frozenset({"unreachable", "timeout", "protocol"})


@dataclass
class _Node:
    failures: int = 0
    open_until: float = 0.0
    open_s: float = 0.0
    trial: bool = False  # a half-open trial call is in flight
    last: str = ""


class CircuitBreaker:
    """Breaker state for every node of one pool."""

    def __init__(
        self,
        failures: int = 5,
        open_s: float = 30.0,
        max_open_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or open_s <= 0 or max_open_s < open_s:
            raise ValueError("failures >= 1 and 0 < open_s <= max_open_s")
        self.failures = failures
        self.open_s = open_s
        self.max_open_s = max_open_s
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self.skipped = 0  # calls refused so far (metrics, tests)

    def acquire(self, node: str) -> NodeSkipped | None:
        """None: call the node (and, when half-open, this call is the trial; report it
        with :meth:`record`). Otherwise the error to answer with instead."""
        state = self._nodes.get(node)
        if state is None or state.failures < self.failures:
            return None
        now = self._clock()
        if now < state.open_until:
            self.skipped += 1
            return NodeSkipped(node, state.failures, state.open_until - now, state.last)
        if state.trial:
            self.skipped += 1
            return NodeSkipped(node, state.failures, 0.0, state.last)
        state.trial = True
        return None

    def record(self, node: str, kind: str | None, error: str | None = None) -> None:
        """The outcome of a call :meth:`acquire` let through: ``kind`` None = success."""
        state = self._nodes.get(node)
        if kind is None:
            self._nodes.pop(node, None)
            return
        if kind not in TRIPPING_KINDS:
            if state is not None:
                state.trial = False  # says nothing about the node: let another trial in
            return
        if state is None:
            state = self._nodes[node] = _Node()
        state.failures += 1
        state.last = (error or kind)[:200]
        if state.failures >= self.failures:
            was_trial = state.trial
            state.trial = False
            doubled = min(self.max_open_s, max(self.open_s, state.open_s * 2))
            state.open_s = doubled if was_trial else self.open_s
            state.open_until = self._clock() + state.open_s

    def is_open(self, node: str) -> bool:
        state = self._nodes.get(node)
        return state is not None and state.failures >= self.failures

    def open_nodes(self) -> list[str]:
        return sorted(n for n in self._nodes if self.is_open(n))
