"""Test helpers for the broker tests: agents run as local processes behind the pool's
``connect`` hook (no Kubernetes), and a ClusterConfig for the simulated cluster."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.message import SessionMessage

from broker.fleet.context import BrokerContext
from broker.fleet.pool import NodePool
from broker.kube.config import ClusterConfig
from broker.kube.discovery import NodeTarget
from broker.sim import SimServer
from broker.transport import TransportStreams

NAMESPACE = "gpu-diagnostics"


class LocalAgents:
    """A fake cluster of agent subprocesses: one scenario (or command) per node.

    ``connect`` is a NodePool transport factory; ``discover`` its discovery. Each
    connect starts a fresh ``python -m agent --backend fake`` (or the node's custom
    command, for misbehaving agents) and counts it.
    """

    def __init__(self, tmp: Path, errlog: TextIO) -> None:
        self.tmp = tmp
        self.errlog = errlog
        self.targets: dict[str, NodeTarget] = {}
        self.commands: dict[str, list[str]] = {}
        self.connects: dict[str, int] = {}
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.frozen: set[str] = set()
        self._reads: dict[str, Any] = {}

    def add(
        self,
        node: str,
        scenario: dict[str, Any] | None = None,
        *,
        command: list[str] | None = None,
        ready: bool = True,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
        agent_args: tuple[str, ...] = (),
    ) -> NodeTarget:
        if command is None:
            path = self.tmp / f"{node}.json"
            path.write_text(json.dumps({"gpu_count": 2, **(scenario or {})}))
            command = [sys.executable, "-m", "agent", "--backend", "fake", "--scenario", str(path)]
            command += agent_args
        self.commands[node] = command
        pod = f"k8s-gpu-mcp-agent-{node}" if ready or reason is None else None
        target = NodeTarget(node, pod, NAMESPACE, ready, reason, labels or {})
        self.targets[node] = target
        return target

    async def discover(self, refresh: bool = False) -> list[NodeTarget]:
        return list(self.targets.values())

    @asynccontextmanager
    async def connect(self, target: NodeTarget) -> AsyncIterator[TransportStreams]:
        node = target.node
        self.connects[node] = self.connects.get(node, 0) + 1
        self.frozen.discard(node)
        argv = self.commands[node]
        params = StdioServerParameters(command=argv[0], args=argv[1:])
        async with stdio_client(params, errlog=self.errlog) as (read, write):
            self._reads[node] = read
            yield read, _Recorder(write, self.sent.setdefault(node, []), node, self.frozen)

    async def cut(self, node: str) -> None:
        """End the node's stream under the session, as a dropped websocket would."""
        await self._reads[node].aclose()

    def freeze(self, node: str) -> None:
        """Swallow everything sent to the node from now on (a half-open connection)."""
        self.frozen.add(node)


class _Recorder:
    """A write stream that records each message sent, and can black-hole them."""

    def __init__(self, inner: Any, log: list[dict[str, Any]], node: str, frozen: set[str]) -> None:
        self._inner = inner
        self._log = log
        self._node = node
        self._frozen = frozen

    async def send(self, item: SessionMessage) -> None:
        self._log.append(item.message.model_dump(by_alias=True, exclude_unset=True))
        if self._node not in self._frozen:
            await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Recorder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def sim_config(server: SimServer, context: str | None = None) -> ClusterConfig:
    return ClusterConfig(kubeconfig=str(server.kubeconfig), context=context)


@asynccontextmanager
async def cluster_pool(config: ClusterConfig, **options: Any) -> AsyncIterator[NodePool]:
    """A NodePool on a real (simulated) cluster, wired by its one owner, BrokerContext."""
    async with BrokerContext.open(config, **options) as ctx:
        yield ctx.pool
