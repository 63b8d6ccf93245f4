"""What the fleet reports as it works, for whoever listens (the Prometheus metrics of
:mod:`broker.server.metrics`). Listeners are process-wide; with none, reporting is a
loop over an empty list."""

from __future__ import annotations

from typing import Protocol

__all__ = ["FleetObserver", "fan_out", "node_call", "session_closed", "session_failed",
           "session_opened", "subscribe", "unsubscribe"]  # fmt: skip


class FleetObserver(Protocol):
    def node_call(self, node: str, kind: str | None, elapsed_s: float) -> None: ...
    def fan_out(self, nodes: int) -> None: ...
    def session_opened(self) -> None: ...
    def session_failed(self, kind: str) -> None: ...
    def session_closed(self) -> None: ...


_observers: list[FleetObserver] = []


def subscribe(observer: FleetObserver) -> None:
    _observers.append(observer)


def unsubscribe(observer: FleetObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)


def node_call(node: str, kind: str | None, elapsed_s: float) -> None:
    """One node call ended: ``kind`` None on success, else the error kind."""
    for o in _observers:
        o.node_call(node, kind, elapsed_s)


def fan_out(nodes: int) -> None:
    for o in _observers:
        o.fan_out(nodes)


def session_opened() -> None:
    for o in _observers:
        o.session_opened()


def session_failed(kind: str) -> None:
    for o in _observers:
        o.session_failed(kind)


def session_closed() -> None:
    for o in _observers:
        o.session_closed()
