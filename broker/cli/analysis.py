"""``broker drift`` and ``broker stragglers``: the fleet-analysis tools from a terminal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rich.table import Table

from broker.cli.commands import CommonOptions, Consoles, _machine, _print_json, _run
from broker.diagnosis.job import explain_job
from broker.fleet.aggregate import EXIT_OK
from broker.fleet.analysis import config_drift, stragglers
from broker.fleet.context import BrokerContext

__all__ = ["EXIT_FOUND", "run_drift", "run_explain_job", "run_stragglers"]

EXIT_FOUND = 2  # drift or stragglers found: scripts can gate on it


Gather = Callable[[BrokerContext, dict[str, Any]], Awaitable[dict[str, Any]]]


def _run_analysis(
    opts: CommonOptions,
    gather: Gather,
    arguments: dict[str, Any],
    output: str,
    table: Callable[[dict[str, Any]], Table],
    found: str,
    consoles: Consoles | None,
) -> int:
    """Gather one analysis, print it (table, or -o json|yaml), exit 2 when ``found`` is
    not empty."""
    cons = consoles or Consoles()

    async def main() -> int:
        async with BrokerContext.open(opts.config, call_timeout=opts.timeout) as ctx:
            answer = await gather(ctx, arguments)
        if _machine(output):
            _print_json(answer, output)
        else:
            cons.out.print(table(answer))
            _print_unreachable(cons, answer)
        return EXIT_FOUND if answer[found] else EXIT_OK

    return _run(cons, main)


def run_drift(
    opts: CommonOptions, arguments: dict[str, Any], output: str, consoles: Consoles | None = None
) -> int:
    """``broker drift``: settings where GPU nodes differ from their product's majority."""
    return _run_analysis(opts, config_drift, arguments, output, drift_table, "findings", consoles)


def run_stragglers(
    opts: CommonOptions, arguments: dict[str, Any], output: str, consoles: Consoles | None = None
) -> int:
    """``broker stragglers``: the nodes lagging their peers, ranked, with the reading why."""
    return _run_analysis(
        opts, stragglers, arguments, output, stragglers_table, "stragglers", consoles
    )


def run_explain_job(
    opts: CommonOptions, job: str, namespace: str, output: str, consoles: Consoles | None = None
) -> int:
    """``broker explain --job NAME -n NS``: why a multi-node job died."""
    cons = consoles or Consoles()

    async def main() -> int:
        async with BrokerContext.open(opts.config, call_timeout=opts.timeout) as ctx:
            answer = await explain_job(ctx, job, namespace)
        if _machine(output):
            _print_json(answer, output)
            return EXIT_OK
        cons.out.print(f"{answer['verdict'].upper()} ({answer['confidence']} confidence)",
                       style="bold", highlight=False)  # fmt: skip
        for line in answer["chain"]:
            cons.out.print(f"- {line}", highlight=False, markup=False, soft_wrap=True)
        steps = ((answer.get("first_failure") or {}).get("explanation") or {}).get("next_steps")
        for step in steps or []:
            cons.out.print(f"$ {step['command']}    # {step['why']}", markup=False, soft_wrap=True)
        return EXIT_OK

    return _run(cons, main)


def drift_table(answer: dict[str, Any]) -> Table:
    summary = answer["summary"]
    table = Table(
        title=f"Configuration drift: {summary['nodes_compared']} node(s) compared, "
        f"{summary['findings']} finding(s)",
        title_justify="left",
    )
    for column in ("PRODUCT", "SETTING", "MAJORITY", "OUTLIER VALUE", "NODES"):
        table.add_column(column, overflow="fold")
    for f in answer["findings"]:
        majority = "-" if f["majority"] is None else f"{f['majority']} ({f['majority_count']})"
        for o in f["outliers"]:
            more = f" +{o['more']} more" if o.get("more") else ""
            table.add_row(
                f["product"], f["setting"], majority, str(o["value"]), ", ".join(o["nodes"]) + more
            )
    if not answer["findings"]:
        table.add_row("-", "no drift", "-", "-", "-")
    return table


def stragglers_table(answer: dict[str, Any]) -> Table:
    summary = answer["summary"]
    table = Table(
        title=f"Stragglers: {summary['nodes_compared']} node(s) compared "
        f"({answer.get('targeted', '')}), {summary['stragglers']} outlier(s)",
        title_justify="left",
    )
    for column in ("RANK", "NODE", "READING", "VALUE", "PEERS", "WHY"):
        table.add_column(column, overflow="fold")
    for rank, s in enumerate(answer["stragglers"], 1):
        for w in s["why"]:
            peers = w.get("peer_median")
            table.add_row(
                str(rank),
                s["node"],
                w["reading"],
                f"{w['value']} {w.get('unit', '')}".strip(),
                "-" if peers is None else f"{peers:g} {w.get('unit', '')}".strip(),
                w["meaning"] + (f" (GPU {w['gpu']})" if w.get("gpu") is not None else ""),
            )
    if not answer["stragglers"]:
        table.add_row("-", "none", "-", "-", "-", "no node lags its peers")
    return table


def _print_unreachable(cons: Consoles, answer: dict[str, Any]) -> None:
    for group in answer.get("unreachable") or []:
        names = ", ".join(group["nodes"])
        more = group["count"] - len(group["nodes"])
        cons.err.print(
            f"{group['count']} node(s) not compared ({group['kind']}): {group['reason']} "
            f"[{names}{f' +{more} more' if more > 0 else ''}]",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
