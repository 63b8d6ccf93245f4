"""``broker explain`` for humans: the explain_failure answer as a rich report (verdict,
evidence, NVIDIA's actions, timeline, next steps, what could not be read). Pure
rendering of the JSON; nothing here talks to the cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["VERDICT_STYLE", "render_explanation"]

Json = Mapping[str, Any]

VERDICT_STYLE = {
    "hardware": "bold white on red",
    "driver": "bold magenta",
    "application": "bold yellow",
    "infrastructure": "bold cyan",
    "unknown": "bold",
    "none": "bold green",
}
_TIMELINE_SHOWN = 20


def _plain(value: Any) -> Text:
    """Literal text: no markup, no emoji codes (PCI ids like 00000000:AB:00.0)."""
    return Text(str(value))


def _list(title: str, lines: list[Text]) -> RenderableType:
    body = Text("\n").join(lines) if lines else Text("—", style="dim")
    return Group(Text(title, style="bold underline"), body, Text(""))


def render_explanation(result: Json) -> RenderableType:
    """The whole report for one explain_failure answer."""
    pod = result.get("pod") or {}
    verdict = str(result.get("verdict") or "unknown")
    confidence = str(result.get("confidence") or "low")
    head = Text()
    head.append(f" {verdict.upper()} ", style=VERDICT_STYLE.get(verdict, "bold"))
    head.append(f"  confidence {confidence}", style="bold" if confidence == "high" else "")
    if result.get("partial"):
        head.append("  (partial answer: see Missing)", style="yellow")
    head.append("\n")
    head.append(str(result.get("summary") or ""))
    where = f"{pod.get('namespace')}/{pod.get('name')}"
    if pod.get("node"):
        where += f" on {pod['node']}"
    if pod.get("owner"):
        where += f" ({pod['owner']})"
    parts: list[RenderableType] = [Panel(head, title=where, title_align="left", box=box.ROUNDED)]

    parts.append(
        _list(
            "Evidence",
            [
                Text.assemble((f"[{e.get('source')}] ", "dim"), str(e.get("text")))
                for e in result.get("evidence") or []
            ],
        )
    )
    notes = [_plain(n) for n in result.get("notes") or []]
    if notes:
        parts.append(_list("Notes", notes))
    gpus = result.get("gpus") or {}
    if gpus.get("requests"):
        held = gpus.get("gpus")
        line = ", ".join(f"{n} {r}" for r, n in gpus["requests"].items())
        if held:
            line += " — GPU " + ", ".join(str(g.get("index")) for g in held)
            line += f" ({gpus.get('source')})"
        elif gpus.get("note"):
            line += f" — {gpus['note']}"
        parts.append(_list("GPUs", [_plain(line)]))
    node_lines = node_signal_lines(result.get("node_signals"))
    if node_lines:
        parts.append(_list("The rest of the node", node_lines))
    actions = [_plain(a) for a in result.get("nvidia_actions") or []]
    if actions:
        parts.append(_list("NVIDIA's recommended action", actions))

    timeline = list(result.get("timeline") or [])
    if timeline:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("TIME (UTC)", no_wrap=True)
        table.add_column("SOURCE", no_wrap=True)
        table.add_column("WHAT", overflow="fold")
        for item in timeline[-_TIMELINE_SHOWN:]:
            style = "red" if item.get("source") in ("xid", "sxid", "gpu_event") else ""
            table.add_row(
                _plain(item.get("time")),
                Text(str(item.get("source")), style=style),
                _plain(item.get("text")),
            )
        parts.append(Group(Text("Timeline", style="bold underline"), table, Text("")))

    steps = [
        Text.assemble(
            ("$ ", "dim"), (str(s.get("command")), "bold"), ("  # " + str(s.get("why")), "dim")
        )
        for s in result.get("next_steps") or []
    ]
    parts.append(_list("Next steps", steps))
    missing = result.get("missing") or []
    if missing:
        lines: list[Text] = []
        for m in missing:
            entry = Text(f"{m.get('what')}: ", style="yellow")
            entry.append(str(m.get("permission") or m.get("reason")))
            if m.get("check"):
                entry.append(f"  (check: {m['check']})", style="dim")
            lines.append(entry)
        parts.append(_list("Missing", lines))
    return Group(*parts)


def _when(row: Json) -> str:
    timing, offset = row.get("timing"), row.get("offset_s")
    if timing == "during_run" and isinstance(offset, (int, float)):
        return f"during the run, {abs(offset):.0f} s {'before' if offset < 0 else 'after'} the exit"
    return {"before_start": "before the container started", "after_exit": "after the exit"}.get(
        str(timing), "time not placed"
    )


def node_signal_lines(signals: Json | None) -> list[Text]:
    """SXids, GPU resets / AER lines, PCIe links, Fabric Manager and RDMA ports, one line
    each, and the sources that were not available."""
    if not signals:
        return []
    lines: list[Text] = []
    for s in signals.get("sxids") or []:
        kind = "fatal" if s.get("fatal") else "non-fatal"
        links = f" link {', '.join(str(k) for k in s.get('links') or [])}" if s.get("links") else ""
        lines.append(
            Text.assemble(
                ("SXid ", "bold"),
                f"{s.get('sxid')} ({kind}) on {s.get('switch')}{links} x{s.get('count')}, "
                f"{_when(s)}",
            )
        )
    for e in signals.get("gpu_events") or []:
        held = {True: " (held by the pod)", False: ""}.get(e.get("on_pod_gpu"), " (maybe held)")
        lines.append(
            Text.assemble(
                ("GPU event ", "bold"),
                f"{e.get('kind')} on GPU {e.get('gpu_index')}{held}, {_when(e)}",
            )
        )
    for p in signals.get("pcie") or []:
        aer = p.get("aer") or {}
        counts = ", ".join(f"{k} {v}" for k, v in aer.items() if v)
        text = f"GPU {p.get('gpu_index')}: {p.get('link') or 'link width/speed not reported'}"
        if p.get("degraded"):
            text += " (below its maximum)"
        if p.get("replays"):
            text += f", {p['replays']} replays"
        if counts:
            text += f", AER {counts}"
        lines.append(Text.assemble(("PCIe ", "bold"), text))
    fabric: dict[str, list[str]] = {}
    for f in signals.get("fabric") or []:
        if not f.get("ready"):
            status = f" ({f['status']})" if f.get("status") not in (None, "success") else ""
            fabric.setdefault(f"{f.get('state')}{status}", []).append(str(f.get("gpu_index")))
    for state, gpus in fabric.items():
        which = ("GPUs " if len(gpus) > 1 else "GPU ") + ", ".join(gpus)
        lines.append(Text.assemble(("Fabric Manager ", "bold"), f"{which}: {state}"))
    ports = signals.get("ib_ports")
    if ports:
        down = [p for p in ports if not p.get("active")]
        text = f"{len(ports) - len(down)} of {len(ports)} port(s) active"
        flapped = [p for p in ports if p.get("active") and p.get("link_downed")]
        if flapped:
            text += "; went down since boot: " + ", ".join(
                f"{p.get('device')}/{p.get('port')} x{p.get('link_downed')}" for p in flapped
            )
        if down:
            text += "; down: " + ", ".join(
                f"{p.get('device')}/{p.get('port')} {p.get('state')}/{p.get('phys_state')}"
                for p in down
            )
        lines.append(Text.assemble(("RDMA ", "bold"), text))
    for why in signals.get("unavailable") or []:
        lines.append(Text.assemble(("not available ", "yellow"), str(why)))
    return lines
