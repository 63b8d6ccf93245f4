"""What each CLI command does (``broker.cli.app`` only parses options and calls these).

Each ``run_*`` function runs the command to completion and returns its exit code:
0 fine, 1 the command itself failed (configuration, API server, bad input: the message
says what to do), 2 a GPU node is critical, 3 some node could not be checked (and none is
critical). Tables go to stdout, progress and errors to stderr; ``--output json`` (or
``yaml``) prints exactly the JSON the MCP tools return. ``broker doctor``: 0 ready, 1 a
check failed. Output that is not a terminal is never wrapped or truncated.
"""

from __future__ import annotations

import json
import os
import signal
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
from broker.fleet.causes import nodes_with_causes, with_causes
from broker.fleet.context import BrokerContext
from broker.fleet.operations import diagnose, list_nodes, nodes_answer, run_tool
from broker.fleet.pool import NodeResult
from broker.kube.config import ClusterConfig

__all__ = [
    "EXIT_FAILED",
    "CommonOptions",
    "Consoles",
    "run_diagnose",
    "run_doctor",
    "run_explain",
    "run_nodes",
    "run_serve",
    "run_sweep",
]

EXIT_FAILED = 1
T = TypeVar("T")
# Wide enough that rich never wraps or folds a line when the output is a pipe or a file.
_UNBOUNDED_WIDTH = 1 << 16


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
        return ClusterConfig.from_options(
            self.kubeconfig, self.context, self.namespace, timeout=self.timeout
        )


def console(stderr: bool = False) -> Console:
    """A rich Console; when it is not a terminal (a pipe, a file), lines are never wrapped,
    folded or truncated, whatever COLUMNS says, so `| grep NODE` shows whole lines."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    width = None if tty else _UNBOUNDED_WIDTH
    return Console(stderr=stderr, emoji=False, highlight=False, width=width, soft_wrap=not tty)


@dataclass
class Consoles:
    """Where output goes (replaceable in tests)."""

    out: Console = field(default_factory=console)
    err: Console = field(default_factory=lambda: console(stderr=True))


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


def _print_json(doc: Any, output: str = "json") -> None:
    """The answer as JSON, or as YAML for ``-o yaml`` (never line-wrapped)."""
    if output == "yaml":
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=_UNBOUNDED_WIDTH)
    else:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()


def _machine(output: str) -> bool:
    return output in ("json", "yaml")


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
        targeted = f"node_selector {selector!r}" if selector else "every GPU node"
        answer = nodes_with_causes(
            nodes_answer(targets, targeted=targeted, warnings=warnings, names_cap=None),
            targets,
            namespace=ctx.namespace,
            surface="cli",
        )
        if _machine(output):
            _print_json(answer, output)
        else:
            causes = answer.get("causes") or []
            cons.out.print(nodes_table(targets, wide=output == "wide", causes=causes))
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
            answer = with_causes(answer, namespace=ctx.namespace, surface="cli")
        if _machine(output):
            _print_json(answer, output)
        else:
            cons.out.print(sweep_table(answer, wide=output == "wide"))
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
        if _machine(output):
            _print_json(doc, output)
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
        if _machine(output):
            _print_json(result, output)
        else:
            cons.out.print(render_explanation(result))
        return EXIT_OK

    return _run(cons, main)


# -- doctor --------------------------------------------------------------------------------
def run_doctor(
    opts: CommonOptions, *, output: str = "table", consoles: Consoles | None = None
) -> int:
    """``broker doctor``: every preflight check; the first failure's fix printed last."""
    from broker.cli.render import doctor_report
    from broker.diagnosis.preflight import EXIT_FAILED as CHECK_FAILED
    from broker.diagnosis.preflight import EXIT_OK as READY
    from broker.diagnosis.preflight import preflight_for

    cons = consoles or Consoles()

    async def main() -> int:
        report = await preflight_for(opts.config, call_timeout=opts.timeout, surface="cli")
        if _machine(output):
            _print_json(report, output)
        else:
            cons.out.print(doctor_report(report, wide=output == "wide"))
        return READY if report["ok"] else CHECK_FAILED

    return _run(cons, main)


# -- serve ---------------------------------------------------------------------------------
def run_serve(options: Any, consoles: Consoles | None = None) -> int:
    """``broker serve``: the MCP server (``options`` is a broker.server.ServeOptions).

    Started by hand on a terminal, it says on stderr what it is and how to connect an IDE
    (stdout belongs to the MCP protocol), and the first Ctrl-C ends it at once."""
    from broker.server import serve

    cons = consoles or Consoles()
    # Over HTTP the server itself says where it listens and how to authenticate, once its
    # settings are known to be valid; stdio says it here when a person started it.
    if options.transport == "stdio" and sys.stdin.isatty():
        cons.err.print(serve_banner(options), highlight=False, soft_wrap=True)

    async def main() -> int:
        await serve(options)
        return EXIT_OK

    if options.transport == "stdio":
        # asyncio's own first-Ctrl-C handling cancels the server and then waits for the
        # thread blocked reading stdin, i.e. for the next line: leave at once instead.
        signal.signal(signal.SIGINT, _exit_on_interrupt)
    return _run(cons, main)


def _exit_on_interrupt(signum: int, frame: Any) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def serve_banner(options: Any) -> str:
    """One line: what this stdio server is and how to connect an IDE to it."""
    where = f"context {options.config.context}" if options.config.context else "current context"
    scope = f"{where}, agent namespace {options.config.namespace}"
    pinned = f", pinned to node {options.node}" if options.node else ""
    return (
        f"broker serve: MCP server on stdio for the GPUs of {scope}{pinned}. An IDE starts "
        'it itself: add {"command": "broker", "args": ["serve"]} to its MCP servers '
        "configuration (see README). Ctrl-C stops."
    )
