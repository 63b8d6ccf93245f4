"""The agent's MCP tool handlers (their definitions live in ``agent.catalog``).

Handlers turn backend snapshots into JSON, judge health (``agent.health``), read and
explain XIDs (``agent.xid``) and map processes to pods (``agent.procs``). Those modules
are imported on first use so ``tools/list`` and the start-up path stay cheap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from agent import __version__
from agent.catalog import (
    DEFAULT_SINCE_MINUTES,
    INSTRUCTIONS,
    STATUSES,
    TOOL_DEFINITIONS,
    TOOL_NAMES,
    worst,
)
from agent.errors import BackendUnavailable, KmsgDisabled, KmsgUnavailable

if TYPE_CHECKING:
    from agent.backend import Backend, HostFacts, IbPort, KmsgRecord
    from agent.sxid import GpuEvent, SxidEvent
    from agent.xid import XidEvent

Json = dict[str, Any]

# Names older code imported from here; the catalog is their home now.
__all__ = ["INSTRUCTIONS", "TOOL_DEFINITIONS", "TOOL_NAMES", "Toolbox"]

KMSG_AUTO = "auto"  # the scenario's records (fake backend), else /dev/kmsg, else syslog(2)
KMSG_OFF = "off"

TIMEOUT_HINT = (
    "An NVML query is probably hung: a GPU may have fallen off the bus or the driver is "
    "stuck. Check the kernel log for Xid 79/119/154 (analyze_xid_errors does not need NVML) "
    "and nvidia-smi on the node; a GPU reset or node reboot is usually needed."
)

NVML_HINT = (
    "The agent needs the NVIDIA driver's libnvidia-ml.so.1: run it in a pod with "
    "runtimeClassName: nvidia (or CDI injection from the NVIDIA container toolkit) on a "
    "node whose driver is loaded. The agent keeps running; every GPU tool fails until NVML "
    "is reachable. `gpu-agent --backend fake` runs without a GPU."
)


def _plain(value: Any) -> Any:
    """Backend dataclasses -> JSON-ready values (cheaper than dataclasses.asdict)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


class Toolbox:
    """The tool handlers over one backend. Implements ``agent.protocol.ToolProvider``.

    ``factory`` builds the backend. The fake backend is built eagerly (a bad scenario is
    a start-up error); NVML is built on the first tool call, inside the call's deadline,
    and retried on later calls while it keeps failing.
    """

    timeout_hint = TIMEOUT_HINT

    def __init__(
        self,
        factory: Callable[[], Backend],
        *,
        backend_name: str,
        kmsg_path: str | None = None,
        host_proc: str | None = None,
        host_sys: str | None = None,
        journal: str | None = None,
        node_name: str | None = None,
        eager: bool = False,
        kmsg_origin: str = "flag",
        host_proc_note: str | None = None,
        pod_resources_socket: str | None = None,
    ) -> None:
        self._factory = factory
        self.backend_name = backend_name
        # "auto" (None): the backend's own records, else /dev/kmsg, else syslog(2);
        # "off": disabled by configuration; "syslog" or a path: exactly that.
        self.kmsg_path = kmsg_path or KMSG_AUTO
        self.kmsg_origin = kmsg_origin  # "flag" or "env": who set --kmsg (for messages)
        self.host_proc = host_proc
        self.host_sys = host_sys  # None: the backend's own facts, else /sys
        self.journal = journal  # the persistent kernel log (journald dir/file or kern.log)
        self.host_proc_note = host_proc_note  # why pod mapping is off despite configuration
        self.pod_resources_socket = pod_resources_socket
        self.hostname = os.uname().nodename
        # The pod's NODE_NAME (downward API, passed in by agent.app) names the Kubernetes
        # node; without it the fake backend's scenario node, then the hostname.
        self._node_name = node_name or None
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self._driver: tuple[str | None, str | None] | None = None
        self._definitions = TOOL_DEFINITIONS
        self._handlers: dict[str, Callable[[Json], Json]] = {
            "get_gpu_inventory": self.get_gpu_inventory,
            "get_gpu_health": self.get_gpu_health,
            "analyze_xid_errors": self.analyze_xid_errors,
            "get_gpu_processes": self.get_gpu_processes,
            "get_nvlink_topology": self.get_nvlink_topology,
        }
        if eager:
            self.backend()

    # --- ToolProvider ------------------------------------------------------------------

    def definitions(self) -> list[Json]:
        return self._definitions

    def call(self, name: str, arguments: Json) -> Json:
        return self._handlers[name](arguments)

    def close(self) -> None:
        with self._backend_lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    # --- plumbing --------------------------------------------------------------------------

    def backend(self) -> Backend:
        """The backend, built on first use (NVML init happens here, under a deadline)."""
        with self._backend_lock:
            if self._backend is None:
                try:
                    backend = self._factory()
                except BackendUnavailable as exc:
                    text = str(exc)
                    raise BackendUnavailable(
                        text if "runtimeClassName" in text else f"{text}. {NVML_HINT}"
                    ) from exc
                disabled: frozenset[str] = getattr(backend, "disabled_tools", frozenset())
                if disabled:
                    self._definitions = [t for t in TOOL_DEFINITIONS if t["name"] not in disabled]
                self._backend = backend
            return self._backend

    def node(self, backend: Backend) -> Json:
        """Who answered: node name, hostname, backend and driver (cached after one read)."""
        if self._driver is None:
            info = backend.driver()
            self._driver = (info.driver_version, info.cuda_driver_version)
        name = self._node_name or getattr(backend, "node", None)
        return {
            "name": name if isinstance(name, str) and name else self.hostname,
            "hostname": self.hostname,
            "backend": self.backend_name,
            "driver_version": self._driver[0],
            "cuda_driver_version": self._driver[1],
            "agent_version": __version__,
        }

    def kernel_log(self, backend: Backend) -> tuple[str, float, Sequence[KmsgRecord]]:
        """(source, boot time, records). An explicit --kmsg path wins over backend
        records; raises KmsgDisabled for --kmsg off and KmsgUnavailable with the reason
        when the log cannot be read."""
        spec = self.kmsg_path
        if spec == KMSG_OFF:
            raise KmsgDisabled(self.disabled_message())
        if spec == KMSG_AUTO:
            supplied = backend.kmsg()
            if supplied is not None:
                return "scenario", supplied[0], supplied[1]
        from agent.kmsg import read_kernel_log

        return read_kernel_log(spec)

    def disabled_message(self) -> str:
        """What a tool says when XID reading is switched off."""
        if self.kmsg_origin == "env":
            return (
                "XID analysis disabled by the chart (xid.enabled=false / securityContext "
                "non-root): GPU_AGENT_KMSG=off, so the kernel log is not read and XIDs are "
                "not part of any verdict."
            )
        return (
            "XID analysis disabled by configuration (--kmsg off): the kernel log is not read "
            "and XIDs are not part of any verdict."
        )

    def disabled_action(self) -> str:
        if self.kmsg_origin == "env":
            return (
                "To include XIDs, install the chart with xid.enabled=true: the agent then gets "
                "CAP_SYSLOG and reads the kernel log with syslog(2)."
            )
        return "To include XIDs, start the agent with --kmsg auto (the default)."

    def xid_events(
        self, backend: Backend, gpus: Sequence[tuple[int, str | None, str | None]]
    ) -> tuple[str, list[XidEvent]]:
        log = self.log_events(backend, gpus)
        return log.source, log.xids

    def log_events(
        self, backend: Backend, gpus: Sequence[tuple[int, str | None, str | None]]
    ) -> LogEvents:
        """Xids, SXids and GPU events from one read of the kernel log (KmsgUnavailable /
        KmsgDisabled when it cannot or must not be read)."""
        from agent.sxid import parse_gpu_events, parse_sxids
        from agent.xid import parse_xids

        failure: KmsgUnavailable | None = None
        try:
            source, boot, records = self.kernel_log(backend)
        except KmsgDisabled:
            raise
        except KmsgUnavailable as exc:
            if self.journal is None and getattr(backend, "journal", None) is None:
                raise
            from agent.kmsg import boot_time

            failure, source, boot, records = exc, "", boot_time(), []
        journal, older = self.journal_records(backend, boot)
        status = journal or {}
        if older is not None:
            if failure is None:  # the ring buffer has this boot; the journal what came before
                records = [r for r in older if r.usec_since_boot < 0] + list(records)
                source = f"{source} + {status.get('source')}"
            else:
                records, source = older, str(status.get("source"))
        elif failure is not None:
            why = status.get("reason") or "none configured"
            raise KmsgUnavailable(f"{failure} The persistent log failed too: {why}")
        return LogEvents(
            source,
            parse_xids(records, boot, gpus),
            parse_sxids(records, boot),
            parse_gpu_events(records, boot, gpus),
            journal,
            boot if older is not None else None,
            boot,
        )

    def journal_records(
        self, backend: Backend, boot: float
    ) -> tuple[Json | None, list[KmsgRecord] | None]:
        """(status for "sources", records) of the persistent log: --journal (an explicit
        path wins), else the backend's own (the fake scenario's), else none."""
        supplied = getattr(backend, "journal", None)
        if self.journal is None:
            records = supplied() if supplied is not None else None
            if records is None:
                return None, None
            status: Json = {"source": "scenario journal", "readable": True, "reason": None}
        else:
            from agent.journal import read_journal

            try:
                what, records = read_journal(self.journal, boot)
            except KmsgUnavailable as exc:
                return {"source": self.journal, "readable": False, "reason": str(exc)}, None
            status = {"source": what, "readable": True, "reason": None}
        status["before_this_boot"] = sum(1 for r in records if r.usec_since_boot < 0)
        status["limits"] = (
            "journal DATA objects stored compressed are skipped; newest files first, up to 512 MiB"
        )
        return status, records

    def host_facts(self, backend: Backend, bus_ids: list[str]) -> HostFacts:
        """AER counters and RDMA ports: an explicit --host-sys wins over the backend's
        own (the fake backend's scenario); else the real /sys."""
        supplied = getattr(backend, "host", None)
        if self.host_sys is None and supplied is not None:
            facts: HostFacts = supplied()
            return facts
        from agent.sysfs import DEFAULT_ROOT, read_host

        return read_host(self.host_sys or DEFAULT_ROOT, bus_ids)

    # --- handlers --------------------------------------------------------------------------

    def get_gpu_inventory(self, arguments: Json) -> Json:
        backend = self.backend()
        info = backend.driver()
        gpus = backend.inventory()
        # RDMA ports are part of what a node is (drift compares the active count).
        host = self.host_facts(backend, [])
        return {
            "node": self.node(backend),
            "driver": _plain(info),
            "gpus": _plain(gpus),
            "infiniband": ib_rows(host.infiniband),
        }

    def get_gpu_health(self, arguments: Json) -> Json:
        from agent.health import judge_gpu, judge_node

        since = float(arguments.get("since_minutes", DEFAULT_SINCE_MINUTES))
        backend = self.backend()
        node = self.node(backend)
        data = backend.health()
        issues: list[Json] = []
        recent: list[XidEvent] = []
        reason: str | None = None
        disabled = False
        unmatched = 0
        log: LogEvents | None = None
        try:
            log = self.log_events(backend, [(d.index, d.uuid, d.pci_bus_id) for d in data])
            source = log.source
        except KmsgDisabled as exc:
            # A choice made on purpose: said plainly, but no mark against the node.
            source, reason, disabled = KMSG_OFF, str(exc), True
            issues.append(
                {
                    "check": "kernel_log",
                    "severity": "info",
                    "message": reason,
                    "action": self.disabled_action(),
                }
            )
        except KmsgUnavailable as exc:
            source = self.kmsg_path
            reason = str(exc)
            issues.append(
                {
                    "check": "kernel_log",
                    "severity": "warning",
                    "message": f"XID history could not be checked: {reason}",
                    "action": (
                        "Grant the agent container CAP_SYSLOG (or set kernel.dmesg_restrict=0) "
                        "so XIDs are part of the verdict; until then GPUs may look healthier "
                        "than they are."
                    ),
                }
            )
        cutoff = time.time() - since * 60
        if log is not None:
            recent = [e for e in log.xids if e.timestamp >= cutoff]
            known = {d.pci_bus_id for d in data}
            unmatched = sum(1 for e in recent if e.gpu_index is None and e.pci_bus_id not in known)
        host = self.host_facts(backend, [d.pci_bus_id for d in data if d.pci_bus_id])
        for d in data:
            d.pcie_aer = host.aer.get(d.pci_bus_id) if d.pci_bus_id else None
        issues.extend(self.node_issues(log, host, cutoff))
        boot = log.boot_time if log is not None else None
        gpus = [judge_gpu(d, recent, node=node["name"], boot_time=boot) for d in data]
        status = judge_node(gpus)
        for issue in issues:
            if issue["severity"] in STATUSES:
                status = worst(status, issue["severity"])
        counts = {s: sum(1 for g in gpus if g["status"] == s) for s in STATUSES}
        summary = f"{len(gpus)} GPU(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        node_level = [
            f"{i['check']} {i['severity']}"
            for i in issues
            if i["severity"] in STATUSES and i["check"] != "kernel_log"
        ]
        if node_level:
            summary += "; node: " + ", ".join(node_level)
        if disabled:
            summary += "; XID analysis disabled by configuration"
        elif reason is not None:
            summary += "; kernel log unreadable, XIDs not checked"
        return {
            "node": node,
            "status": status,
            "summary": summary,
            "since_minutes": since,
            "issues": issues,
            "gpus": gpus,
            "xid_log": {
                "source": source,
                "readable": reason is None,
                "disabled": disabled,
                "reason": reason,
                "events_in_window": len(recent),
                "unmatched_events": unmatched,
            },
            "infiniband": ib_rows(host.infiniband),
            "sources": self.sources(source, reason, host, data, log),
        }

    @staticmethod
    def node_issues(log: LogEvents | None, host: HostFacts, cutoff: float) -> list[Json]:
        from agent.node_checks import judge_gpu_events, judge_infiniband, judge_sxids

        issues = judge_infiniband(host.infiniband)
        if log is not None:
            # Faults before a reboot were reset by it: analyze_xid_errors lists them.
            since = max(cutoff, log.boot_time) if log.boot_time is not None else cutoff
            issues += judge_sxids([e for e in log.sxids if e.timestamp >= since])
            issues += judge_gpu_events([e for e in log.gpu_events if e.timestamp >= since])
        return issues

    def sources(
        self,
        kernel_log: str,
        reason: str | None,
        host: HostFacts,
        data: Sequence[Any],
        log: LogEvents | None,
    ) -> Json:
        """Which node sources this answer rests on (and which were not available)."""
        fabric = [d.fabric_state for d in data if not d.lost]
        journal = log.journal if log is not None else None
        if journal is None and self.journal is None:
            journal = {
                "source": None,
                "readable": False,
                "reason": "no persistent log configured (--journal / GPU_AGENT_JOURNAL): "
                "XIDs from before the last reboot are not visible",
            }
        return {
            "kernel_log": {"source": kernel_log, "readable": reason is None},
            "journal": journal,
            "sysfs": {
                "root": host.source,
                "pcie_aer_gpus": len(host.aer),
                "infiniband_ports": None if host.infiniband is None else len(host.infiniband),
            },
            "fabric_manager": (
                "reported by NVML"
                if any(s not in (None, "not_supported") for s in fabric)
                else "not reported (no NVSwitch fabric, or a GPU/driver before Hopper)"
            ),
        }

    def analyze_xid_errors(self, arguments: Json) -> Json:
        from agent.sxid import event_rows, sxid_groups
        from agent.xid import analyze, iso_utc

        since = float(arguments.get("since_minutes", DEFAULT_SINCE_MINUTES))
        backend = self.backend()
        node = self.node(backend)
        inventory = backend.inventory()
        gpus = [(g.index, g.uuid, g.pci_bus_id) for g in inventory]
        log = self.log_events(backend, gpus)  # KmsgUnavailable -> isError result
        cutoff = time.time() - since * 60
        instances = {g.index: g.mig_instances for g in inventory if g.mig_instances}
        result = {
            "node": node,
            "source": log.source,
            **analyze(log.xids, since, instances=instances),
            "sxids": sxid_groups([e for e in log.sxids if e.timestamp >= cutoff]),
            "gpu_events": event_rows([e for e in log.gpu_events if e.timestamp >= cutoff]),
        }
        if log.booted_at is not None:
            booted = iso_utc(log.booted_at)
            result["booted_at"] = booted
            for row in result["xids"]:  # the persistent log reaches past the last reboot
                row["before_last_boot"] = row["last_seen"] < booted
        return result

    def get_gpu_processes(self, arguments: Json) -> Json:
        backend = self.backend()
        node = self.node(backend)
        host_proc = self.host_proc
        pod_for_pid: Callable[[str, int], Json | None] | None = None
        process_name: Callable[[str | None, int], str | None] | None = None
        if host_proc is not None:
            from agent.procs import pod_for_pid, process_name
        gpus = []
        for entry in backend.processes():
            procs = []
            for p in entry.processes:
                name = p.name
                if name is None and process_name is not None:
                    name = process_name(host_proc, p.pid)
                pod = pod_for_pid(host_proc, p.pid) if pod_for_pid and host_proc else None
                procs.append(
                    {
                        "pid": p.pid,
                        "name": name,
                        "used_memory_mib": p.used_memory_mib,
                        "kind": p.kind,
                        "gpu_instance_id": p.gpu_instance_id,
                        "compute_instance_id": p.compute_instance_id,
                        "pod": pod,
                    }
                )
            gpus.append(
                {
                    "index": entry.index,
                    "uuid": entry.uuid,
                    "lost": entry.lost,
                    "error": entry.error,
                    "unsupported": list(entry.unsupported),
                    "processes": procs,
                }
            )
        mapping: Json = {"enabled": host_proc is not None, "host_proc": host_proc}
        if self.host_proc_note is not None:
            mapping["note"] = self.host_proc_note
        elif host_proc is None:
            mapping["note"] = (
                "Pod mapping is off: start the agent with --host-proc pointing at the host's "
                "/proc (hostPID or a read-only hostPath mount) to see which pod owns each pid."
            )
        if self.pod_resources_socket is not None:
            mapping["pod_resources"] = pod_resources_status(self.pod_resources_socket)
        return {"node": node, "pod_mapping": mapping, "gpus": gpus}

    def get_nvlink_topology(self, arguments: Json) -> Json:
        backend = self.backend()
        node = self.node(backend)
        topo = backend.nvlink()
        gpus = [
            {
                "index": index,
                "uuid": uuid,
                "links": _plain(links),
                "active_links": sum(1 for link in links if link.active),
            }
            for index, uuid, links in topo.gpus
        ]
        return {
            "node": node,
            "gpus": gpus,
            "p2p": _plain(topo.p2p),
            "unsupported": list(topo.unsupported),
            "errors": list(topo.errors),
        }


class LogEvents(NamedTuple):
    """What one read of the kernel log gave."""

    source: str
    xids: list[XidEvent]
    sxids: list[SxidEvent]
    gpu_events: list[GpuEvent]
    journal: Json | None = None  # the persistent log's status, when one is configured
    boot_time: float | None = None  # set when records from before this boot were read
    booted_at: float | None = None  # this boot's start (epoch seconds), as the log says


def ib_rows(ports: Sequence[IbPort] | None) -> list[Json] | None:
    if ports is None:
        return None
    return [
        {
            "device": p.device,
            "port": p.port,
            "state": p.state,
            "phys_state": p.phys_state,
            "rate": p.rate,
            "link_layer": p.link_layer,
            "link_downed": p.link_downed,
            "active": p.active,
        }
        for p in ports
    ]


def pod_resources_status(socket_path: str) -> Json:
    """Whether the kubelet PodResources socket is there. The agent does not call it yet:
    its API is gRPC, and a gRPC stack would cost more than the agent's start-up budget."""
    import stat

    try:
        present = stat.S_ISSOCK(os.stat(socket_path).st_mode)
    except OSError:
        present = False
    if present:
        note = (
            "The kubelet PodResources socket is available but not yet used by this agent: "
            "pods are found from each process's cgroup (needs --host-proc)."
        )
    else:
        note = (
            f"{socket_path} is not a socket in this container: mount the kubelet's "
            "/var/lib/kubelet/pod-resources directory there (not used yet by this agent)."
        )
    return {"socket": socket_path, "present": present, "used": False, "note": note}
