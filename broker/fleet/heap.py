"""Keep Python's cyclic garbage collector off the pool's long-lived sessions.

A thousand open sessions are about half a million long-lived objects, and every full
collection walks them all: 0.1-1.5 s each at 1,000 sessions on this machine (measured),
and one warm sweep's results trigger one or two, which made up most of a warm sweep.
``gc.freeze()`` moves what is alive now into the permanent generation, which
collections skip, and a large pool raises the first collection threshold: a sweep's
results (about 150 objects per node, alive until the answer is built) would otherwise be
promoted and rescanned by full collections dozens of times per sweep. The price: a
frozen session that later closes keeps its reference cycles until the next settle
(unfreeze, one full collection, freeze again), which runs once enough sessions have come
and gone. Small pools (tests, a few nodes) never freeze.
"""

from __future__ import annotations

import gc

__all__ = ["HeapKeeper"]


class HeapKeeper:
    """Freezes the heap as sessions open; settles it when enough have come and gone."""

    YOUNG_THRESHOLD = 50_000  # allocations between young collections, once frozen

    def __init__(self, every: int = 256) -> None:
        self.every = every
        self._opened = 0  # since the last freeze
        self._churn = 0  # sessions opened or closed since the last settle
        self._frozen = False
        self.settles = 0

    def opened(self) -> None:
        self._opened += 1
        self._churn += 1
        if self._opened >= self.every:
            self._opened = 0
            if not self._frozen:
                young, middle, old = gc.get_threshold()
                gc.set_threshold(max(young, self.YOUNG_THRESHOLD), middle, old)
            self._frozen = True
            gc.freeze()

    def closed(self, live: int) -> None:
        self._churn += 1
        if self._frozen and self._churn >= max(self.every, live // 4):
            self.settle()

    def settle_if_due(self, live: int) -> None:
        """After a sweep: settle when at least ``every`` sessions (and a quarter of the
        live ones) came or went since the last settle."""
        if self._frozen and self._churn >= max(self.every, live // 4):
            self.settle()

    def settle(self) -> None:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._churn = self._opened = 0
        self.settles += 1
