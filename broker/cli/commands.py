"""What each CLI command does (``broker.cli.app`` only parses options and calls these).

Each ``run_*`` function runs the command to completion and returns its exit code:
0 fine, 1 the command itself failed (configuration, API server, bad input: the message
says what to do), 2 a GPU node is critical, 3 some node could not be checked (and none is
critical). Tables go to stdout, progress and errors to stderr; ``--output json`` prints
exactly the JSON the MCP tools return.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from broker.cli.render_explain import render_explanation
from broker.diagnosis.gather import explain_pod
from broker.errors import BrokerError
from broker.fleet.aggregate import EXIT_CRITICAL, EXIT_OK, EXIT_UNREACHABLE, exit_code
from broker.fleet.context import BrokerContext
from broker.fleet.operations import diagnose, list_nodes, nodes_answer, run_tool
from broker.fleet.pool import NodeResult
from broker.kube.config import ClusterConfig

__all__ = [
    "EXIT_FAILED",
    "CommonOptions",
    "run_diagnose",
    "run_explain",
    "run_nodes",
    "run_serve",
    "run_sweep",
]

EXIT_FAILED = 1
T = TypeVar("T")


@dataclass(frozen=True)
class CommonOptions:
    """Options every command takes (kubectl's names)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    timeout: float = 30.0
    concurrency: int = 64

    @property
    def config(self) -> ClusterConfig:
        return ClusterConfig.from_options(self.kubeconfig, self.context, self.namespace)


@dataclass
class Consoles:
    """Where output goes (replaceable in tests)."""

    out: Console = field(default_factory=lambda: Console(emoji=False, highlight=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, emoji=False))


def _run(consoles: Consoles, main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` in an event loop; BrokerError becomes a message and exit code 1."""
    try:
        return anyio.run(main)
    except BrokerError as exc:
        consoles.err.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        consoles.err.print("interrupted", style="dim")
        return 130


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def run_nodes(
    opts: CommonOptions, selector: str | None, output: str, consoles: Consoles | None = None
) -> int:
    """``broker nodes``: every GPU node, its agent pod and whether it can be diagnosed."""
    from broker.cli.render import nodes_table

    cons = consoles or Consoles()

    async def main() -> int:
        async with BrokerContext.open(opts.config, call_timeout=opts.timeout) as ctx:
            targets = await list_nodes(ctx, selector)
            warnings = ctx.warnings
        if output == "json":
            targeted = f"node_selector {selector!r}" if selector else "every GPU node"
            _print_json(nodes_answer(targets, targeted=targeted, warnings=warnings, names_cap=None))
        else:
            cons.out.print(nodes_table(targets))
            for w in warnings:
                cons.err.print(
                    f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True
                )
        return EXIT_OK if all(t.ready for t in targets) else EXIT_UNREACHABLE

    return _run(cons, main)


def run_sweep(
    opts: CommonOptions,
    *,
    selector: str | None = None,
    nodes: list[str] | None = None,
    since_minutes: float | None = None,
    limit: int = 50,
    output: str = "table",
    consoles: Consoles | None = None,
    contexts: list[str] | None = None,
) -> int:
    """``broker sweep``: GPU health on every (selected) node, worst first; with
    ``contexts`` (``["*"]``: all) across several clusters."""
    from broker.cli.render import sweep_table

    cons = consoles or Consoles()
    arguments: dict[str, Any] = {"limit": limit}
    if selector:
        arguments["node_selector"] = selector
    if nodes:
        arguments["nodes"] = nodes
    if since_minutes is not None:
        arguments["since_minutes"] = since_minutes
    if contexts:
        arguments["contexts"] = contexts

    async def main() -> int:
        async with BrokerContext.open(
            opts.config, call_timeout=opts.timeout, max_concurrency=opts.concurrency
        ) as ctx:
            answer = await _with_progress(
                cons,
                "Checking GPU health",
                lambda report: run_tool(ctx, "get_gpu_health", arguments, report),
            )
        if output == "json":
            _print_json(answer)
        else:
            cons.out.print(sweep_table(answer))
            clusters = answer.get("clusters") or []
            failed = [
                f"context {c['context']}: {c['error']['reason']}" for c in clusters if "error" in c
            ]
            for w in [*failed, *(answer.get("warnings") or [])]:
                cons.err.print(
                    f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True
                )
        return exit_code(answer)

    return _run(cons, main)


async def _with_progress(
    cons: Consoles,
    what: str,
    work: Callable[[Callable[[int, int, NodeResult], Awaitable[None]]], Awaitable[T]],
) -> T:
    """Run a fan-out with a progress bar on stderr (only when stderr is a terminal)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=cons.err,
        transient=True,
        disable=not cons.err.is_terminal,
    ) as progress:
        task = progress.add_task(what, total=None)

        async def report(done: int, total: int, result: NodeResult) -> None:
            progress.update(task, completed=done, total=total)

        return await work(report)


def run_diagnose(
    opts: CommonOptions,
    node: str,
    *,
    since_minutes: float | None = None,
    output: str = "table",
    consoles: Consoles | None = None,
) -> int:
    """``broker diagnose NODE``: every agent tool on one node, as a readable report."""
    from broker.cli.render import diagnose_report

    cons = consoles or Consoles()

    async def main() -> int:
        async with BrokerContext.open(opts.config, call_timeout=opts.timeout) as ctx:
            doc = await diagnose(ctx, node, since_minutes)
        if output == "json":
            _print_json(doc)
        else:
            cons.out.print(diagnose_report(doc))
        if doc["status"] == "critical":
            return EXIT_CRITICAL
        return EXIT_UNREACHABLE if doc["status"] == "unreachable" else EXIT_OK

    return _run(cons, main)


# -- explain -------------------------------------------------------------------------------
def run_explain(
    opts: CommonOptions,
    pod: str,
    namespace: str | None,
    *,
    output: str = "table",
    consoles: Consoles | None = None,
) -> int:
    """``broker explain POD -n NS``: why a pod failed, with evidence."""
    cons = consoles or Consoles()

    async def main() -> int:
        async with BrokerContext.open(opts.config, call_timeout=opts.timeout) as ctx:
            result = await explain_pod(ctx, pod, namespace or None)
        if output == "json":
            _print_json(result)
        else:
            cons.out.print(render_explanation(result))
        return EXIT_OK

    return _run(cons, main)


# -- serve ---------------------------------------------------------------------------------
def run_serve(options: Any, consoles: Consoles | None = None) -> int:
    """``broker serve``: the MCP server (``options`` is a broker.server.ServeOptions)."""
    from broker.server import serve

    cons = consoles or Consoles()

    async def main() -> int:
        await serve(options)
        return EXIT_OK

    return _run(cons, main)
