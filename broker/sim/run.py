"""Run the sim in the foreground: print one ready line, serve until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from .errors import SimError
from .server import start_sim


async def _serve(
    nodes: int,
    scenario: Path | None,
    port: int,
    kubeconfig: Path | None,
    in_process: bool,
    host: str,
    tls: bool,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with start_sim(
            nodes,
            scenario,
            port=port,
            host=host,
            kubeconfig=kubeconfig,
            in_process=in_process,
            tls=tls,
        ) as sim:
            cpu = len(sim.cluster.specs) - len(sim.nodes)
            mode = "in-process agents" if in_process else "agent subprocesses"
            print(
                f"sim ready: {len(sim.nodes)} GPU nodes + {cpu} CPU nodes at {sim.url} "
                f"({mode}); kubeconfig {sim.kubeconfig} (context sim); Ctrl-C stops",
                flush=True,
            )
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve_forever(
    *,
    nodes: int,
    scenario: Path | None,
    port: int,
    kubeconfig: Path | None,
    in_process: bool,
    host: str = "127.0.0.1",
    tls: bool = True,
) -> int:
    """Exit status: 0 after a clean stop, 2 for a bad scenario or a failed start."""
    try:
        asyncio.run(_serve(nodes, scenario, port, kubeconfig, in_process, host, tls))
    except SimError as exc:
        print(f"broker sim: error: {exc}", file=sys.stderr)
        return 2
    return 0
