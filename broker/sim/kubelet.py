"""``nodes/proxy``: what each node's kubelet answers through the API server.

``stats/summary`` (the Summary API: node and per-pod CPU, memory, filesystem, network),
``pods``, ``healthz``, ``logs/`` (a /var/log listing; ``kern.log`` carries the node's
NVRM Xid lines exactly as the agent's scenario implies them) and the node log query
``logs/?query=kubelet`` (1.27+). A NotReady node's kubelet cannot be reached, as on a
real cluster. Figures are deterministic per node (no metrics-server is simulated).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .objects import node_ip
from .scheduling import memory_bytes
from .status import bad_request, internal_error, not_found

Obj = dict[str, Any]
_GIB = 1024**3
_FILES = ("kern.log", "syslog")


def _n(seed: str, lo: int, hi: int) -> int:
    return lo + zlib.crc32(seed.encode()) % max(1, hi - lo)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu(seed: str, now: float, cores_milli: int) -> Obj:
    nano = cores_milli * 1_000_000
    return {
        "time": _stamp(now),
        "usageNanoCores": nano,
        "usageCoreNanoSeconds": nano * _n(seed + "up", 3600, 86400),
    }


def _memory(seed: str, now: float, used: int, limit: int | None) -> Obj:
    mem: Obj = {"time": _stamp(now)}
    if limit:
        mem["availableBytes"] = max(0, limit - used)
    mem.update(
        usageBytes=used + used // 8,
        workingSetBytes=used,
        rssBytes=used * 9 // 10,
        pageFaults=_n(seed + "pf", 10_000, 9_000_000),
        majorPageFaults=_n(seed + "mpf", 0, 400),
    )
    return mem


def _fs(seed: str, now: float, capacity: int, used: int) -> Obj:
    return {
        "time": _stamp(now),
        "availableBytes": capacity - used,
        "capacityBytes": capacity,
        "usedBytes": used,
        "inodesFree": 240_000_000 - used // 65536,
        "inodes": 240_000_000,
        "inodesUsed": used // 65536,
    }


def stats_summary(node: Obj, pods: list[Obj], now: float) -> Obj:
    """The kubelet Summary API (``/stats/summary``) for *node* running *pods*."""
    name = node["metadata"]["name"]
    capacity = node["status"]["capacity"]
    mem_total = memory_bytes(capacity["memory"])
    boot = node["metadata"]["creationTimestamp"]
    pod_stats = []
    total_cpu = total_mem = 0
    for pod in pods:
        meta = pod["metadata"]
        seed = meta["namespace"] + "/" + meta["name"]
        running = [s for s in pod["status"].get("containerStatuses", []) if "running" in s["state"]]
        if not running:
            continue
        containers = []
        pod_cpu = pod_mem = 0
        for cs in running:
            limit = next(
                (
                    c.get("resources", {}).get("limits", {}).get("memory")
                    for c in pod["spec"]["containers"]
                    if c["name"] == cs["name"]
                ),
                None,
            )
            limit_b = memory_bytes(limit) if limit else None
            mem = _n(seed + cs["name"], 20, 60) * (limit_b // 100 if limit_b else 1 << 20)
            cpu = _n(seed + cs["name"] + "cpu", 1, 8000)
            pod_cpu, pod_mem = pod_cpu + cpu, pod_mem + mem
            started = cs["state"]["running"].get("startedAt")
            containers.append(
                {
                    "name": cs["name"],
                    "startTime": started,
                    "cpu": _cpu(seed + cs["name"], now, cpu),
                    "memory": _memory(seed + cs["name"], now, mem, limit_b),
                    "rootfs": _fs(seed + "rootfs", now, 3_700 * _GIB, 40_960),
                    "logs": _fs(seed + "logs", now, 3_700 * _GIB, 8_192),
                }
            )
        total_cpu, total_mem = total_cpu + pod_cpu, total_mem + pod_mem
        pod_stats.append(
            {
                "podRef": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "startTime": pod["status"].get("startTime"),
                "containers": containers,
                "cpu": _cpu(seed, now, pod_cpu),
                "memory": _memory(seed, now, pod_mem, None),
                "network": _network(seed, now),
                "volume": [],
                "ephemeral-storage": _fs(seed + "eph", now, 3_700 * _GIB, 49_152),
                "process_stats": {"process_count": len(containers) * _n(seed + "procs", 1, 40)},
            }
        )
    system = _n(name + "sys", 300, 1500)
    node_stats = {
        "nodeName": name,
        "systemContainers": [
            {
                "name": "kubelet",
                "startTime": boot,
                "cpu": _cpu(name + "kubelet", now, _n(name + "k", 20, 90)),
                "memory": _memory(name + "kubelet", now, _n(name + "km", 60, 140) << 20, None),
            },
            {
                "name": "runtime",
                "startTime": boot,
                "cpu": _cpu(name + "runtime", now, _n(name + "r", 10, 60)),
                "memory": _memory(name + "runtime", now, _n(name + "rm", 80, 300) << 20, None),
            },
            {
                "name": "pods",
                "startTime": boot,
                "cpu": _cpu(name + "pods", now, total_cpu),
                "memory": _memory(name + "pods", now, total_mem, mem_total),
            },
        ],
        "startTime": boot,
        "cpu": _cpu(name, now, total_cpu + system),
        "memory": _memory(name, now, total_mem + (system << 21), mem_total),
        "network": _network(name, now),
        "fs": _fs(name + "fs", now, 3_840 * _GIB, _n(name + "fsu", 200, 900) * _GIB),
        "runtime": {
            "imageFs": _fs(name + "img", now, 3_840 * _GIB, _n(name + "i", 40, 180) * _GIB),
            "containerFs": _fs(name + "img", now, 3_840 * _GIB, _n(name + "i", 40, 180) * _GIB),
        },
        "rlimit": {"time": _stamp(now), "maxpid": 4194304, "curproc": _n(name + "p", 600, 2400)},
    }
    return {"node": node_stats, "pods": pod_stats}


def _network(seed: str, now: float) -> Obj:
    iface = {
        "name": "eth0",
        "rxBytes": _n(seed + "rx", 1 << 20, 1 << 40),
        "rxErrors": 0,
        "txBytes": _n(seed + "tx", 1 << 20, 1 << 40),
        "txErrors": 0,
    }
    return {"time": _stamp(now), **iface, "interfaces": [iface]}


# Logs -------------------------------------------------------------------------------------


def _syslog_time(t: float) -> str:
    """rsyslog's traditional format (Ubuntu 22.04): ``Dec  3 06:40:01``."""
    d = datetime.fromtimestamp(t, UTC)
    return f"{d.strftime('%b')} {d.day:>2} {d.strftime('%H:%M:%S')}"


def kernel_lines(node: str, scenario: Obj) -> list[tuple[float, str]]:
    """(wall time, kern.log line) for what the node's kernel logged: the same NVRM records
    the agent's fake backend reads from /dev/kmsg for this node."""
    from agent.fake import FakeBackend  # the agent's own view of the node, loaded on demand

    boot, records = FakeBackend(scenario, source=f"node {node}").kmsg()
    out = []
    for rec in records:
        since = rec.usec_since_boot / 1e6
        t = boot + since
        out.append((t, f"{_syslog_time(t)} {node} kernel: [{since:12.6f}] {rec.message}"))
    return out


def kubelet_lines(node: str, events: list[Obj], boot: float) -> list[tuple[float, str]]:
    """(wall time, journal line) for the kubelet: its start, then what it reported as
    events about this node's pods."""
    pid = _n(node + "pid", 900, 4000)

    def line(t: float, text: str, level: str = "I") -> tuple[float, str]:
        d = datetime.fromtimestamp(t, UTC)
        klog = f"{level}{d.strftime('%m%d %H:%M:%S')}.{d.microsecond:06d} {pid:>7}"
        return t, f"{d.strftime('%b %d %H:%M:%S')} {node} kubelet[{pid}]: {klog} {text}"

    out = [
        line(boot + 41, 'server.go:1343] "Started kubelet"'),
        line(boot + 42, f'kubelet_node_status.go:75] "Attempting to register node" node="{node}"'),
        line(boot + 43, f'kubelet_node_status.go:78] "Successfully registered node" node="{node}"'),
    ]
    for ev in events:
        src = ev.get("source", {})
        if src.get("host") != node:
            continue
        inv = ev.get("involvedObject", {})
        t = _parse(ev.get("lastTimestamp")) or boot
        level = "W" if ev.get("type") == "Warning" else "I"
        text = (
            f'event.go:389] "Event occurred" object="{inv.get("namespace", "")}/'
            f'{inv.get("name", "")}" kind="{inv.get("kind", "")}" '
            f'type="{ev.get("type", "")}" reason="{ev.get("reason", "")}" '
            f"message={json.dumps(ev.get('message', ''))}"
        )
        out.append(line(t, text, level))
    out.sort(key=lambda x: x[0])
    return out


def _parse(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _filter(lines: list[tuple[float, str]], query: Any) -> str:
    since = _parse(query.get("sinceTime"))
    until = _parse(query.get("untilTime"))
    pattern = query.get("pattern")
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise bad_request(f"pattern: invalid regular expression: {exc}") from None
    kept = [
        text
        for t, text in lines
        if (since is None or t >= since)
        and (until is None or t <= until)
        and (regex is None or regex.search(text))
    ]
    tail = query.get("tailLines")
    if tail is not None:
        if not tail.isdigit():
            raise bad_request(f"tailLines: invalid value {tail!r}: must be a non-negative integer")
        kept = kept[-int(tail) :] if int(tail) else []
    return "".join(line + "\n" for line in kept)


def _listing() -> str:
    """Go's http.FileServer directory page for /var/log (what the kubelet serves)."""
    rows = "".join(f'<a href="{n}">{n}</a>\n' for n in ("containers/", *_FILES, "pods/"))
    head = '<!doctype html>\n<meta name="viewport" content="width=device-width">\n'
    return f"{head}<pre>\n{rows}</pre>\n"


# Handler ----------------------------------------------------------------------------------


def answer(cluster: Any, name: str, path: str, query: Any) -> web.Response:
    """What *name*'s kubelet answers for ``GET PATH?QUERY`` (the caller authorised it)."""
    node = cluster.node(name)
    if node is None:
        raise not_found("nodes", name)
    if not cluster.specs[name].ready:
        raise internal_error(
            f"error trying to reach service: dial tcp {node_ip(cluster.node_index(name))}:10250: "
            "i/o timeout"
        )
    now = time.time()
    path = path.rstrip("/") if path not in ("logs/",) else path
    if path == "healthz":
        return web.Response(text="ok", content_type="text/plain")
    if path == "stats/summary":
        pods = [p for p in cluster.pods() if p["spec"].get("nodeName") == name]
        body = json.dumps(stats_summary(node, pods, now), separators=(",", ":"))
        return web.Response(text=body, content_type="application/json")
    if path == "pods":
        pods = [p for p in cluster.pods() if p["spec"].get("nodeName") == name]
        body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
        return web.Response(text=body, content_type="application/json")
    if path in ("logs", "logs/"):
        queries = query.getall("query", [])
        if not queries:
            return web.Response(text=_listing(), content_type="text/html")
        lines: list[tuple[float, str]] = []
        for q in queries:
            lines.extend(_log_source(cluster, name, q.lstrip("/")))
        lines.sort(key=lambda x: x[0])
        return web.Response(
            text=_filter(lines, query) or "-- No entries --\n", content_type="text/plain"
        )
    if path.startswith("logs/") and path[5:] in _FILES:
        text = _filter(_log_source(cluster, name, path[5:]), query)
        return web.Response(text=text, content_type="text/plain")
    return web.Response(status=404, text="404 page not found\n", content_type="text/plain")


def _log_source(cluster: Any, node: str, what: str) -> list[tuple[float, str]]:
    spec = cluster.specs[node]
    boot = cluster.start - spec.uptime_s
    if what in _FILES:
        return kernel_lines(node, cluster.agent_scenario(node)) if spec.gpu else []
    if what == "kubelet":
        return kubelet_lines(node, cluster.events(), boot)
    return []  # another unit: journalctl finds no entries for it
