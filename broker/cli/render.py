"""Rich renderings of the broker's answers for humans: node table, sweep table, the
single-node report. Input is the JSON the MCP tools return (``broker.fleet.operations``);
nothing here talks to the cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.catalog import STATUSES
from broker.kube.discovery import NodeTarget
from broker.kube.names import COUNT_LABEL, PRODUCT_LABEL

__all__ = [
    "STATUS_STYLE",
    "diagnose_report",
    "doctor_report",
    "nodes_table",
    "status_text",
    "sweep_summary",
    "sweep_table",
]

Json = Mapping[str, Any]

STATUS_STYLE = {
    "critical": "bold white on red",
    "degraded": "bold red",
    "warning": "yellow",
    "healthy": "green",
    "unreachable": "magenta",
    "info": "dim",
}
_HEALTHY_NAMES_SHOWN = 6
_COLLAPSE_AT = 3  # this many nodes failing the same way print as one row


def _add(table: Table, *cells: Any) -> None:
    """Add a row whose plain strings stay literal (no markup, no :emoji: codes: PCI bus
    ids such as 00000000:AB:00.0 would otherwise turn into emoji)."""
    table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in cells))


def status_text(status: str) -> Text:
    text = status.upper() if status == "critical" else status
    return Text(text, style=STATUS_STYLE.get(status, ""))


def _gpus(labels: Mapping[str, str]) -> str:
    product = labels.get(PRODUCT_LABEL)
    count = labels.get(COUNT_LABEL)
    if not product:
        return "?"
    return f"{count}× {product}" if count else product


# -- broker nodes --------------------------------------------------------------------------
def nodes_table(
    targets: Sequence[NodeTarget], *, wide: bool = False, causes: Sequence[Json] = ()
) -> RenderableType:
    """One row per GPU node: agent pod, whether it can be diagnosed, GPUs, and why not.
    Nodes sharing a cause (``causes``) are one row with the count, unless ``wide``."""
    table = Table(box=box.SIMPLE_HEAD, title=f"{len(targets)} GPU node(s)", title_justify="left")
    table.add_column("NODE", no_wrap=True)
    table.add_column("AGENT POD", no_wrap=True)
    table.add_column("READY")
    table.add_column("GPUS")
    if wide:
        table.add_column("NAMESPACE", no_wrap=True)
    table.add_column("REASON", overflow="fold")
    failures = [
        {"node": t.node, "kind": "not_ready", "reason": t.reason or "not ready"}
        for t in targets
        if not t.ready
    ]
    collapsed = set() if wide else _collapsed(causes, failures)
    for t in targets:
        if t.node in collapsed:
            continue
        ready = Text("yes", style="green") if t.ready else Text("no", style="magenta")
        extra = (t.namespace,) if wide else ()
        _add(table, t.node, t.pod or "—", ready, _gpus(t.labels), *extra, t.reason or "")
    for cause in _big(causes) if not wide else ():
        no = Text("no", style="magenta")
        extra = ("",) if wide else ()
        _add(table, f"{cause['count']} nodes", "—", no, "", *extra, _cause_cell(cause))
    return Group(table, *_cause_fixes(causes))


def _big(causes: Sequence[Json]) -> list[Json]:
    return [c for c in causes if c["count"] >= _COLLAPSE_AT]


def _collapsed(causes: Sequence[Json], failures: Sequence[Json]) -> set[str]:
    """The failed nodes that belong to a big cause: printed in its row, not one by one
    (the cause lists only a sample of its nodes, so match by cause key)."""
    from broker.fleet.causes import cause_key

    big = {(c["kind"], c["reason"]) for c in _big(causes)}
    return {
        str(f["node"])
        for f in failures
        if cause_key(str(f["node"]), str(f["kind"]), str(f["reason"])) in big
    }


def _cause_cell(cause: Json) -> str:
    shown = ", ".join(cause["nodes"])
    more = cause["count"] - len(cause["nodes"])
    return f"{cause['reason']} [{shown}{f', … +{more} more' if more > 0 else ''}]"


def _cause_fixes(causes: Sequence[Json]) -> list[Text]:
    """One 'what to do' line per cause shared by several nodes."""
    lines = []
    for c in causes:
        if c["count"] >= 2:
            line = Text(f"{c['count']} nodes ({c['kind']}): ", style="magenta")
            line.append(str(c["fix"]), style="")
            lines.append(line)
    return lines


# -- broker sweep --------------------------------------------------------------------------
def sweep_summary(answer: Json) -> Text:
    """One line: how many nodes in each state, and how long it took."""
    summary = answer.get("summary") or {}
    nodes = summary.get("nodes") or {}
    counts = summary.get("status") or {}
    text = Text(f"{nodes.get('total', 0)} GPU node(s): ")
    parts: list[Text] = []
    for status in reversed(STATUSES):  # worst first
        if counts.get(status):
            parts.append(Text(f"{counts[status]} {status}", style=STATUS_STYLE[status]))
    if nodes.get("failed"):
        parts.append(Text(f"{nodes['failed']} not checked", style=STATUS_STYLE["unreachable"]))
    text.append(Text(", ").join(parts) if parts else Text("none"))
    text.append(f"  ({summary.get('elapsed_s', 0):.2f} s)", style="dim")
    return text


def _headline(tool: str, entry: Json) -> tuple[str, str]:
    """The most important finding of a node entry and its recommended action."""
    findings = entry.get("findings")
    result = entry.get("result")
    if findings is None and result is not None:
        from broker.fleet.aggregate import findings as digest

        findings = digest(tool, result)
    findings = findings or {}
    issues = findings.get("issues")
    if issues:
        first = issues[0]
        more = f"  (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        return f"{first.get('message', '')}{more}", str(first.get("action") or "")
    xids = findings.get("xids")
    if xids:
        x = xids[0]
        text = f"Xid {x.get('xid')} {x.get('name')} ×{x.get('count')} on GPU {x.get('gpu_index')}"
        return text, str(x.get("recommended_action") or "")
    links = findings.get("links_with_errors")
    if links:
        return f"{len(links)} NVLink link(s) with errors (GPU {links[0].get('gpu')})", ""
    gpus = findings.get("gpus_with_errors")
    if gpus:
        return f"GPU {gpus[0].get('gpu')}: {gpus[0].get('error') or 'lost'}", ""
    return str(findings.get("summary") or ""), ""


def sweep_table(answer: Json, *, wide: bool = False) -> RenderableType:
    """Every node worst first: not-healthy nodes with their main finding, nodes that
    could not be checked with why and what to do (one row per shared reason), then the
    healthy ones collapsed into one row (each on its own row when ``wide``)."""
    tool = str(answer.get("tool", ""))
    table = Table(box=box.SIMPLE_HEAD, title=sweep_summary(answer), title_justify="left")
    table.add_column("NODE", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("FINDING", overflow="fold", ratio=3)
    table.add_column("WHAT TO DO", overflow="fold", ratio=2)
    for entry in answer.get("nodes") or []:
        finding, action = _headline(tool, entry)
        _add(table, entry["node"], status_text(str(entry["status"])), finding, action)
    for more in answer.get("more") or []:
        status = status_text(str(more["status"]))
        _add(table, more["node"], status, "(details omitted: over --limit)", "")
    summary = answer.get("summary") or {}
    for u in summary.get("unreachable") or []:  # grouped by reason, with the fix
        kind = Text(str(u["kind"]), style=STATUS_STYLE["unreachable"])
        names = list(u.get("nodes") or [])
        count = int(u.get("count", 1))
        label = names[0] if count == 1 and names else f"{count} nodes"
        reason = str(u["reason"])
        if count > 1:
            shown = ", ".join(names) + (", …" if count > len(names) else "")
            reason = f"{reason} ({shown})"
        _add(table, label, kind, reason, str(u.get("fix") or ""))
    healthy = list(answer.get("healthy") or [])
    if wide:
        for name in healthy:
            _add(table, name, status_text("healthy"), "", "")
    elif healthy:
        shown = ", ".join(healthy[:_HEALTHY_NAMES_SHOWN])
        count = max(len(healthy), int((summary.get("status") or {}).get("healthy") or 0))
        if count > _HEALTHY_NAMES_SHOWN:
            shown += f", … (+{count - _HEALTHY_NAMES_SHOWN} more)"
        label = healthy[0] if count == 1 else f"{count} nodes"
        _add(table, label, status_text("healthy"), shown, "")
    return table


# -- broker doctor -------------------------------------------------------------------------
_CHECK_STYLE = {
    "ok": ("✓", "green"),
    "warn": ("!", "yellow"),
    "fail": ("✗", "bold red"),
    "skip": ("-", "dim"),
}


def doctor_report(report: Json, *, wide: bool = False) -> RenderableType:
    """One row per check (✓ ok, ! warning, ✗ failed, - skipped), then what to do first."""
    where = f"context {report.get('context') or '(current)'}, namespace {report.get('namespace')}"
    table = Table(
        box=box.SIMPLE_HEAD, title=f"broker doctor: {where}", title_justify="left", expand=False
    )
    table.add_column("", no_wrap=True)
    table.add_column("CHECK", no_wrap=True)
    table.add_column("FINDING", overflow="fold")
    if wide:
        table.add_column("WHAT TO DO", overflow="fold")
    for check in report.get("checks") or []:
        mark, style = _CHECK_STYLE.get(str(check["status"]), ("?", ""))
        row: list[Any] = [Text(mark, style=style), check.get("title") or check["check"]]
        row.append(check["summary"])
        if wide:
            row.append(check.get("fix") or "")
        _add(table, *row)
    first = report.get("first_problem")
    if first is None:
        verdict = Text("Ready: every check passed.", style="bold green")
    else:
        label = "First fix" if first["status"] == "fail" else "To improve"
        verdict = Text(
            f"{label} ({first['check']}): ",
            style="bold red" if label == "First fix" else "bold yellow",
        )
        verdict.append(str(first.get("fix") or first["summary"]), style="")
    return Group(table, verdict)


# -- broker diagnose NODE ------------------------------------------------------------------
def diagnose_report(doc: Json) -> RenderableType:
    """A readable report of one node: verdict, issues with actions, XIDs, processes,
    NVLink errors, hardware; and which parts could not be read, with why."""
    results: Mapping[str, Any] = doc.get("results") or {}
    errors: Mapping[str, Any] = doc.get("errors") or {}
    target: Mapping[str, Any] = doc.get("target") or {}
    parts: list[RenderableType] = [_header(doc, results, target)]
    health = results.get("get_gpu_health")
    if health is not None:
        parts.append(_health_section(health))
    xids = results.get("analyze_xid_errors")
    if xids is not None:
        parts.append(_xid_section(xids))
    procs = results.get("get_gpu_processes")
    if procs is not None:
        parts.append(_process_section(procs))
    nvlink = results.get("get_nvlink_topology")
    if nvlink is not None:
        parts.append(_nvlink_section(nvlink))
    inventory = results.get("get_gpu_inventory")
    if inventory is not None:
        parts.append(_inventory_section(inventory))
    if errors:
        table = Table(box=box.SIMPLE_HEAD, title="Could not read", title_justify="left")
        table.add_column("TOOL", no_wrap=True)
        table.add_column("KIND", no_wrap=True)
        table.add_column("REASON", overflow="fold")
        for tool, err in sorted(errors.items()):
            _add(table, tool, Text(str(err["kind"]), style="magenta"), str(err["reason"]))
        parts.append(table)
    return Group(*parts)


def _header(doc: Json, results: Mapping[str, Any], target: Mapping[str, Any]) -> Panel:
    status = str(doc.get("status", "unreachable"))
    health = results.get("get_gpu_health") or {}
    inventory = results.get("get_gpu_inventory") or {}
    driver = inventory.get("driver") or (health.get("node") or {})
    lines = Text()
    lines.append("Status: ")
    lines.append_text(status_text(status))
    if health.get("summary"):
        lines.append(f"  {health['summary']}")
    lines.append("\n")
    gpus = (
        f"{target.get('gpu_count')}× {target.get('gpu_product')}"
        if target.get("gpu_product")
        else "unknown"
    )
    lines.append(f"GPUs: {gpus}\n")
    if driver.get("driver_version"):
        lines.append(
            f"Driver: {driver.get('driver_version')}  CUDA: {driver.get('cuda_driver_version')}\n"
        )
    pod = target.get("pod") or "none"
    lines.append(f"Agent pod: {target.get('namespace')}/{pod}")
    if not target.get("ready"):
        lines.append(f"  (not ready: {target.get('reason')})", style="magenta")
    title = Text(f"GPU node {doc.get('node')}", style="bold")
    return Panel(lines, title=title, title_align="left", expand=False)


def _health_section(health: Json) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="Health", title_justify="left")
    table.add_column("GPU", no_wrap=True)
    table.add_column("SEVERITY", no_wrap=True)
    table.add_column("FINDING", overflow="fold", ratio=3)
    table.add_column("WHAT TO DO", overflow="fold", ratio=2)
    rows = 0
    for issue in health.get("issues") or []:
        _add(
            table,
            "node",
            status_text(str(issue.get("severity"))),
            issue["message"],
            issue["action"],
        )
        rows += 1
    for gpu in health.get("gpus") or []:
        for issue in gpu.get("issues") or []:
            sev = str(issue.get("severity"))
            _add(table, str(gpu.get("index")), status_text(sev), issue["message"], issue["action"])
            rows += 1
    if not rows:
        return Text(f"Health: every GPU healthy ({health.get('summary', '')})", style="green")
    return table


def _xid_section(xids: Json) -> RenderableType:
    groups = xids.get("xids") or []
    window = (xids.get("window") or {}).get("since_minutes")
    if not groups:
        return Text(f"XID errors: none in the last {window:g} minutes", style="green")
    table = Table(
        box=box.SIMPLE_HEAD, title=f"XID errors (last {window:g} min)", title_justify="left"
    )
    for col in ("XID", "NAME", "SEVERITY", "GPU", "COUNT", "LAST SEEN (UTC)"):
        table.add_column(col, no_wrap=col != "NAME")
    table.add_column("RECOMMENDED ACTION", overflow="fold")
    for x in groups:
        _add(
            table,
            str(x.get("xid")),
            str(x.get("name")),
            status_text(str(x.get("severity"))),
            str(x.get("gpu_index")),
            str(x.get("count")),
            str(x.get("last_seen")),
            str(x.get("recommended_action")),
        )
    return table


def _process_section(procs: Json) -> RenderableType:
    rows: list[tuple[str, ...]] = []
    for gpu in procs.get("gpus") or []:
        for p in gpu.get("processes") or []:
            pod = p.get("pod") or {}
            rows.append(
                (
                    str(gpu.get("index")),
                    str(p.get("pid")),
                    str(p.get("name")),
                    f"{p.get('used_memory_mib')} MiB" if p.get("used_memory_mib") else "?",
                    str(pod.get("pod_uid") or "—"),
                )
            )
    if not rows:
        return Text("Processes: no process is using a GPU", style="dim")
    table = Table(box=box.SIMPLE_HEAD, title="GPU processes", title_justify="left")
    for col in ("GPU", "PID", "PROCESS", "GPU MEMORY", "POD UID"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        _add(table, *row)
    return table


def _nvlink_section(nvlink: Json) -> RenderableType:
    from broker.fleet.aggregate import findings

    bad = findings("get_nvlink_topology", nvlink)["links_with_errors"]
    if not bad:
        active = sum(int(g.get("active_links") or 0) for g in nvlink.get("gpus") or [])
        return Text(f"NVLink: {active} active link(s), no errors", style="green")
    table = Table(box=box.SIMPLE_HEAD, title="NVLink links with errors", title_justify="left")
    for col in ("GPU", "LINK", "REPLAY", "RECOVERY", "CRC FLIT", "CRC DATA"):
        table.add_column(col, no_wrap=True)
    for b in bad:
        _add(
            table,
            *(
                str(b.get(k, 0))
                for k in (
                    "gpu",
                    "link",
                    "replay_errors",
                    "recovery_errors",
                    "crc_flit_errors",
                    "crc_data_errors",
                )
            ),
        )
    return table


def _inventory_section(inventory: Json) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="Hardware", title_justify="left")
    for col in ("GPU", "MODEL", "MEMORY", "MIG", "POWER LIMIT", "PCI BUS ID", "SERIAL"):
        table.add_column(col, no_wrap=True)
    for g in inventory.get("gpus") or []:
        mem = g.get("memory_total_mib")
        power = g.get("power_limit_w")
        _add(
            table,
            str(g.get("index")),
            Text("LOST", style="bold red") if g.get("lost") else Text(str(g.get("name"))),
            f"{mem} MiB" if mem else "?",
            "on" if g.get("mig_mode_current") else "off",
            f"{power:g} W" if power else "?",
            str(g.get("pci_bus_id")),
            str(g.get("serial")),
        )
    return table
