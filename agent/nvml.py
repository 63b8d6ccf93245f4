"""The NVML backend: GPU facts from the NVIDIA driver through nvidia-ml-py (pynvml).

The only module that imports pynvml; the app imports it lazily, for ``--backend nvml``.
Every query is caught on its own: a query the GPU or driver lacks leaves its field
``None`` and its name in ``unsupported``; a GPU that NVML says is gone is reported
``lost`` with the reason; nothing here raises past the backend except
``BackendUnavailable`` from the constructor.

A broker keeps one agent session open for a long time, so facts that cannot change
without a reboot or reset (name, uuid, PCI id, thresholds, link count) are read once
and cached; readings are re-read on every call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pynvml

from agent.backend import (
    FABRIC_STATES,
    DriverInfo,
    GpuHealthData,
    GpuInventory,
    GpuProcess,
    GpuProcesses,
    KmsgRecord,
    MigInstance,
    NvLinkState,
    NvLinkTopology,
    P2PLink,
    RemappedRows,
)
from agent.errors import BackendUnavailable

T = TypeVar("T")

# The GPU or driver does not offer this query: report it, never treat it as a fault.
_UNSUPPORTED: tuple[type[BaseException], ...] = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_FunctionNotFound,
)
# NVML gave up on the GPU: fell off the bus, needs a reset, or answers only
# "Unknown Error" (what drivers return for a GPU that was fine and is now gone).
_GONE: tuple[type[BaseException], ...] = (
    pynvml.NVMLError_GpuIsLost,
    pynvml.NVMLError_Unknown,
    pynvml.NVMLError_GpuNotFound,
    pynvml.NVMLError_ResetRequired,
)
_RECOVERY_ACTION_FIELD: int = getattr(pynvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", 230)
_MAX_LINKS: int = getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)
_LINK_COUNTERS = (
    ("replay_errors", pynvml.NVML_NVLINK_ERROR_DL_REPLAY),
    ("recovery_errors", pynvml.NVML_NVLINK_ERROR_DL_RECOVERY),
    ("crc_flit_errors", pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT),
    ("crc_data_errors", pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA),
)
_TOPOLOGY_LEVELS = {
    0: "SAME_BOARD",  # NVML_TOPOLOGY_INTERNAL
    10: "SINGLE_SWITCH",
    20: "MULTIPLE_SWITCH",
    30: "HOST_BRIDGE",
    40: "NUMA_NODE",
    50: "SYSTEM",
}
_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
# Cached facts that health() reports; inventory() reports all but the thresholds.
_HEALTH_STATIC = frozenset(
    {
        "temp_slowdown_c",
        "temp_shutdown_c",
        "power_default_limit_w",
        "sm_clock_max_mhz",
        "pcie_link_gen_max",
        "pcie_link_width_max",
    }
)
_HEALTH_ONLY = frozenset({"temp_slowdown_c", "temp_shutdown_c"})
_NVLINK_DEVICE_TYPE_SWITCH = 2
_P2P_CAPS_INDEX_NVLINK = 2
_P2P_STATUS_OK = 0
# Without a per-GPU deadline, how long a call waits for another call's query on the
# same GPU before calling that GPU hung.
_DEFAULT_BUSY_WAIT_S = 5.0
# The least time a GPU may take before a bounded read calls it hung and moves on.
_MIN_STALL_S = 0.5

_INIT_ADVICE = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
        "libnvidia-ml.so.1 was not found, so NVML cannot start. In Kubernetes the agent pod "
        "must run with the NVIDIA container runtime: runtimeClassName: nvidia (or CDI "
        "injection), NVIDIA_VISIBLE_DEVICES=all and NVIDIA_DRIVER_CAPABILITIES including "
        "'utility'. On a host, check the driver is installed (ldconfig -p | grep libnvidia-ml)."
    ),
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (
        "the NVIDIA kernel driver is not loaded on this node. Check `lsmod | grep nvidia` and "
        "the kernel log for NVRM errors, and that the driver (or the GPU Operator's driver "
        "pod) is running."
    ),
    pynvml.NVML_ERROR_NO_PERMISSION: (
        "NVML was denied access to the GPU device nodes (/dev/nvidia*). The container needs "
        "them injected by the NVIDIA runtime or CDI (NVIDIA_VISIBLE_DEVICES=all), and a "
        "device cgroup that allows them."
    ),
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "libnvidia-ml.so.1 does not match the loaded kernel driver (typically a driver "
        "upgrade without a reboot). Reboot the node or reload the driver."
    ),
}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, pynvml.NVMLError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Reads:
    """What one GPU's queries could not return during one call."""

    backend: NvmlBackend
    index: int
    unsupported: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    gone: str | None = None

    def get(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or None with the reason recorded under ``name``."""
        if self.gone is not None:
            return None
        known = self.backend._unsupported.setdefault(self.index, set())
        if name in known:
            self.unsupported.append(name)
            return None
        try:
            return fn(*args)
        except _UNSUPPORTED:
            known.add(name)  # a property of the GPU and driver: don't ask again
            self.unsupported.append(name)
        except _GONE as exc:
            self.gone = f"NVML reports '{exc}' for this GPU (while reading {name})"
        except Exception as exc:  # any other NVML or ctypes failure: this field only
            self.errors.append(f"{name}: {_error_text(exc)}")
        return None

    def note(self, name: str) -> None:
        """Record ``name`` as unsupported because a query it depends on is."""
        self.unsupported.append(name)


@dataclass
class _Static:
    """Facts that do not change while the driver stays loaded."""

    name: str | None = None
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    compute_capability: str | None = None
    vbios_version: str | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    temp_slowdown_c: int | None = None
    temp_shutdown_c: int | None = None
    power_default_limit_w: float | None = None
    power_max_limit_w: float | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width_max: int | None = None
    unsupported: list[str] = field(default_factory=list)


@dataclass
class _LinkReport:
    """One GPU's part of ``nvlink()``."""

    index: int
    uuid: str | None
    links: list[NvLinkState]
    reads: _Reads
    via_switch: bool = False


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _watts(milliwatts: Any) -> float | None:
    return None if milliwatts is None else int(milliwatts) / 1000.0


def _mib(nbytes: Any) -> int | None:
    return None if nbytes is None else int(nbytes) >> 20


class NvmlBackend:
    """GPU facts from NVML. ``gpu_timeout_s`` bounds each GPU's reads in a call: a GPU
    whose queries do not return in time is reported as hung while the others answer."""

    name = "nvml"

    def __init__(self, gpu_timeout_s: float | None = None) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            advice = _INIT_ADVICE.get(
                getattr(exc, "value", None),
                "check the driver on the node with `nvidia-smi`.",
            )
            raise BackendUnavailable(f"NVML could not start ({exc}): {advice}") from exc
        self._open = True
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise BackendUnavailable(
                f"NVML started but could not count the GPUs ({exc}): check the driver on "
                "the node with `nvidia-smi`."
            ) from exc
        self._count = count
        self._driver = self._read_driver(count)
        self._timeout = gpu_timeout_s
        self._handles: dict[int, Any] = {}
        self._static: dict[int, _Static] = {}  # complete static facts
        self._known: dict[int, _Static] = {}  # identity of GPUs whose facts are incomplete
        self._unsupported: dict[int, set[str]] = {}
        self._links: dict[int, int] = {}  # GPU -> number of NVLinks it has
        self._via_switch: dict[int, bool] = {}  # GPU -> its NVLinks end at NVSwitches
        self._ancestors: dict[tuple[int, int], int] = {}
        self._locks = [threading.Lock() for _ in range(count)]
        self._busy_since: dict[int, float] = {}
        self._legacy: set[str] = set()  # current APIs this driver lacks (use the old ones)

    # ---- Backend protocol ----

    def driver(self) -> DriverInfo:
        return self._driver

    def inventory(self) -> list[GpuInventory]:
        return self._per_gpu(self._inventory_one, self._hung_inventory)

    def health(self) -> list[GpuHealthData]:
        return self._per_gpu(self._health_one, self._hung_health)

    def processes(self) -> list[GpuProcesses]:
        return self._per_gpu(self._processes_one, self._hung_processes)

    def nvlink(self) -> NvLinkTopology:
        reports = self._per_gpu(self._links_one, self._hung_links)
        topology = NvLinkTopology(gpus=[(g.index, g.uuid, g.links) for g in reports])
        for g in reports:
            names = sorted(set(g.reads.unsupported))
            topology.unsupported.extend(f"GPU {g.index}: {name}" for name in names)
            if g.reads.gone is not None:
                topology.errors.append(f"GPU {g.index}: {g.reads.gone}")
            topology.errors.extend(f"GPU {g.index}: {text}" for text in g.reads.errors)
        reachable = [g for g in reports if g.reads.gone is None]
        for pos, a in enumerate(reachable):
            for b in reachable[pos + 1 :]:
                link = self._p2p(a, b)
                if link is not None:
                    topology.p2p.append(link)
                elif "p2p_topology" not in topology.unsupported:
                    topology.unsupported.append("p2p_topology")
        return topology

    def kmsg(self) -> tuple[float, list[KmsgRecord]] | None:
        return None  # the real kernel log (--kmsg) holds the XIDs

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if any(lock.locked() for lock in self._locks):
            return  # a query is stuck in the driver; nvmlShutdown would wait on it
        _ask(pynvml.nvmlShutdown)

    # ---- driver, handles, cached facts ----

    @staticmethod
    def _read_driver(count: int) -> DriverInfo:
        def ask(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception:  # any of these may be missing on old drivers
                return None

        cuda = _int(
            ask(pynvml.nvmlSystemGetCudaDriverVersion_v2)
            or ask(pynvml.nvmlSystemGetCudaDriverVersion)
        )
        return DriverInfo(
            driver_version=_text(ask(pynvml.nvmlSystemGetDriverVersion)),
            cuda_driver_version=None if not cuda else f"{cuda // 1000}.{cuda % 1000 // 10}",
            nvml_version=_text(ask(pynvml.nvmlSystemGetNVMLVersion)),
            gpu_count=count,
        )

    def _handle(self, r: _Reads) -> Any:
        handle = self._handles.get(r.index)
        if handle is None:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(r.index)
            except Exception as exc:
                r.gone = f"NVML cannot open this GPU: {_error_text(exc)}"
                return None
            self._handles[r.index] = handle
        return handle

    def _facts(self, r: _Reads, handle: Any) -> _Static:
        """The cached static facts, read on first use. Each is read even after the GPU
        is found gone, so a lost GPU still shows the identity NVML can give."""
        cached = self._static.get(r.index)
        if cached is not None:
            return cached
        s = _Static()
        probe = _Reads(self, r.index)

        def read(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            probe.gone = None
            value = probe.get(name, fn, *args)
            if probe.gone is not None and r.gone is None:
                r.gone = probe.gone
            return value

        s.name = _text(read("name", pynvml.nvmlDeviceGetName, handle))
        s.uuid = _text(read("uuid", pynvml.nvmlDeviceGetUUID, handle))
        pci = read("pci_bus_id", pynvml.nvmlDeviceGetPciInfo, handle)
        s.pci_bus_id = None if pci is None else _text(pci.busId)
        s.serial = _text(read("serial", pynvml.nvmlDeviceGetSerial, handle))
        s.vbios_version = _text(read("vbios_version", pynvml.nvmlDeviceGetVbiosVersion, handle))
        cc = read("compute_capability", pynvml.nvmlDeviceGetCudaComputeCapability, handle)
        s.compute_capability = None if cc is None else f"{cc[0]}.{cc[1]}"
        s.sm_clock_max_mhz = _int(
            read("sm_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM)
        )
        s.mem_clock_max_mhz = _int(
            read(
                "mem_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_MEM
            )
        )
        threshold = pynvml.nvmlDeviceGetTemperatureThreshold
        s.temp_slowdown_c = _int(
            read("temp_slowdown_c", threshold, handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        )
        s.temp_shutdown_c = _int(
            read("temp_shutdown_c", threshold, handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
        )
        s.power_default_limit_w = _watts(
            read("power_default_limit_w", pynvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)
        )
        limits = read(
            "power_max_limit_w", pynvml.nvmlDeviceGetPowerManagementLimitConstraints, handle
        )
        s.power_max_limit_w = None if limits is None else _watts(limits[1])
        s.pcie_link_gen_max = _int(
            read("pcie_link_gen_max", pynvml.nvmlDeviceGetMaxPcieLinkGeneration, handle)
        )
        s.pcie_link_width_max = _int(
            read("pcie_link_width_max", pynvml.nvmlDeviceGetMaxPcieLinkWidth, handle)
        )
        s.unsupported = probe.unsupported
        r.errors.extend(probe.errors)
        if r.gone is None and not probe.errors:
            self._static[r.index] = s  # complete: never read again
            self._known.pop(r.index, None)
        elif s.uuid is not None or s.pci_bus_id is not None:
            # Remember who a GPU that went away was; retry the rest next time.
            self._known[r.index] = _Static(name=s.name, uuid=s.uuid, pci_bus_id=s.pci_bus_id)
        return s

    def _lost(self, index: int) -> None:
        """Forget the handle of a GPU that went away: the next call opens it again."""
        self._handles.pop(index, None)

    # ---- per-GPU reads, bounded ----

    def _per_gpu(self, read: Callable[[int], T], hung: Callable[[int, str], T]) -> list[T]:
        wait = self._timeout if self._timeout is not None else _DEFAULT_BUSY_WAIT_S
        if self._timeout is None:
            return [self._guarded(i, read, hung, wait) for i in range(self._count)]
        # One worker reads the GPUs in turn (a thread per GPU costs ~4x the wall time:
        # ctypes calls from 8 threads fight over the GIL). A GPU that stalls past its
        # share of the bound is reported hung and a fresh worker carries on after it, so
        # one hung GPU never hides the others.
        count = self._count
        deadline = time.monotonic() + self._timeout
        stall = min(max(_MIN_STALL_S, self._timeout / max(count, 1)), self._timeout / 2)
        results: list[T | None] = [None] * count
        finished = [threading.Event() for _ in range(count)]
        generation = [0]

        def work(first: int, mine: int) -> None:
            for i in range(first, count):
                if generation[0] != mine:
                    return  # the caller gave up on this worker and started another
                results[i] = self._guarded(i, read, hung, wait)
                finished[i].set()

        def launch(first: int) -> None:
            threading.Thread(
                target=work, args=(first, generation[0]), name="nvml-read", daemon=True
            ).start()

        launch(0)
        answers: list[T] = []
        for i in range(count):
            remaining = deadline - time.monotonic()
            result = results[i] if finished[i].wait(max(0.0, min(stall, remaining))) else None
            if result is not None:
                answers.append(result)
                continue
            answers.append(hung(i, self._hung_message(i)))
            generation[0] += 1
            if i + 1 < count and deadline > time.monotonic():
                launch(i + 1)
        return answers

    def _guarded(
        self, i: int, read: Callable[[int], T], hung: Callable[[int, str], T], wait: float
    ) -> T:
        # One query at a time per GPU: a call never piles onto a GPU whose earlier
        # query is stuck in the driver, it reports the GPU as hung instead.
        lock = self._locks[i]
        since = self._busy_since.get(i)
        if since is not None:  # known stuck past the bound: don't wait for it again
            wait = max(0.0, wait - (time.monotonic() - since))
        if not lock.acquire(timeout=wait):
            return hung(i, self._hung_message(i))
        self._busy_since[i] = time.monotonic()
        try:
            return read(i)
        finally:
            self._busy_since.pop(i, None)
            lock.release()

    def _hung_message(self, i: int) -> str:
        since = self._busy_since.get(i)
        waited = f" for {time.monotonic() - since:.1f} s" if since is not None else ""
        return (
            f"NVML has not answered a query on this GPU{waited}: the GPU or its driver "
            "appears hung (check the kernel log for XIDs)"
        )

    def _identity(self, i: int) -> _Static:
        return self._static.get(i) or self._known.get(i) or _Static()

    def _hung_inventory(self, i: int, message: str) -> GpuInventory:
        s = self._identity(i)
        return GpuInventory(
            index=i, name=s.name, uuid=s.uuid, pci_bus_id=s.pci_bus_id, lost=True, error=message
        )

    def _hung_health(self, i: int, message: str) -> GpuHealthData:
        s = self._identity(i)
        return GpuHealthData(
            index=i, uuid=s.uuid, name=s.name, pci_bus_id=s.pci_bus_id, lost=True, error=message
        )

    def _hung_processes(self, i: int, message: str) -> GpuProcesses:
        return GpuProcesses(index=i, uuid=self._identity(i).uuid, lost=True, error=message)

    def _hung_links(self, i: int, message: str) -> _LinkReport:
        r = _Reads(self, i)
        r.gone = message
        return _LinkReport(i, self._identity(i).uuid, [], r)

    # ---- inventory ----

    def _inventory_one(self, i: int) -> GpuInventory:
        r = _Reads(self, i)
        gpu = GpuInventory(index=i)
        handle = self._handle(r)
        if handle is not None:
            s = self._facts(r, handle)
            gpu.name, gpu.uuid, gpu.serial = s.name, s.uuid, s.serial
            gpu.pci_bus_id, gpu.vbios_version = s.pci_bus_id, s.vbios_version
            gpu.compute_capability = s.compute_capability
            gpu.sm_clock_max_mhz, gpu.mem_clock_max_mhz = s.sm_clock_max_mhz, s.mem_clock_max_mhz
            gpu.power_default_limit_w, gpu.power_max_limit_w = (
                s.power_default_limit_w,
                s.power_max_limit_w,
            )
            gpu.pcie_link_gen_max, gpu.pcie_link_width_max = (
                s.pcie_link_gen_max,
                s.pcie_link_width_max,
            )
            r.unsupported.extend(n for n in s.unsupported if n not in _HEALTH_ONLY)
            memory = r.get("memory_total_mib", pynvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                gpu.memory_total_mib, gpu.memory_used_mib = _mib(memory.total), _mib(memory.used)
            elif "memory_total_mib" in r.unsupported:
                r.note("memory_used_mib")
            mode = r.get("persistence_mode", pynvml.nvmlDeviceGetPersistenceMode, handle)
            gpu.persistence_mode = None if mode is None else bool(mode)
            gpu.power_limit_w = _watts(
                r.get("power_limit_w", pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            )
            clock = pynvml.nvmlDeviceGetClockInfo
            gpu.sm_clock_mhz = _int(r.get("sm_clock_mhz", clock, handle, pynvml.NVML_CLOCK_SM))
            gpu.mem_clock_mhz = _int(r.get("mem_clock_mhz", clock, handle, pynvml.NVML_CLOCK_MEM))
            mig = r.get("mig_mode_current", pynvml.nvmlDeviceGetMigMode, handle)
            if mig is not None:
                gpu.mig_mode_current, gpu.mig_mode_pending = bool(mig[0]), bool(mig[1])
                if gpu.mig_mode_current:
                    gpu.mig_instances = self._mig_instances(r, handle)
            elif "mig_mode_current" in r.unsupported:
                r.note("mig_mode_pending")
            self._read_config(r, handle, gpu)
        self._finish(r, gpu)
        return gpu

    def _read_config(self, r: _Reads, handle: Any, gpu: GpuInventory) -> None:
        """The settings nodes of one product should share (compared for drift)."""
        ecc = r.get("ecc_mode_current", pynvml.nvmlDeviceGetEccMode, handle)
        if ecc is not None:
            gpu.ecc_mode_current, gpu.ecc_mode_pending = bool(ecc[0]), bool(ecc[1])
        elif "ecc_mode_current" in r.unsupported:
            r.note("ecc_mode_pending")
        app = pynvml.nvmlDeviceGetApplicationsClock
        gpu.app_sm_clock_mhz = _int(r.get("app_sm_clock_mhz", app, handle, pynvml.NVML_CLOCK_SM))
        gpu.app_mem_clock_mhz = _int(r.get("app_mem_clock_mhz", app, handle, pynvml.NVML_CLOCK_MEM))
        gpu.pcie_link_gen, gpu.pcie_link_width = self._pcie_link(r, handle)
        if r.gone is not None:
            return
        if "nvlinks" in self._unsupported.get(r.index, ()):
            r.note("nvlink_links_up")
            r.note("nvlink_links_total")
            return
        total = self._link_count(r, handle)
        if "nvlinks" in self._unsupported.get(r.index, ()):
            r.note("nvlink_links_up")
            r.note("nvlink_links_total")
            return
        states = [
            r.get("nvlink_links_up", pynvml.nvmlDeviceGetNvLinkState, handle, link)
            for link in range(total)
        ]
        gpu.nvlink_links_total = total
        if all(state is not None for state in states):
            gpu.nvlink_links_up = sum(1 for state in states if state)

    @staticmethod
    def _pcie_link(r: _Reads, handle: Any) -> tuple[int | None, int | None]:
        gen = r.get("pcie_link_gen", pynvml.nvmlDeviceGetCurrPcieLinkGeneration, handle)
        width = r.get("pcie_link_width", pynvml.nvmlDeviceGetCurrPcieLinkWidth, handle)
        return _int(gen), _int(width)

    def _mig_instances(self, r: _Reads, handle: Any) -> list[MigInstance]:
        slots = _int(r.get("mig_instances", pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)) or 0
        instances = []
        for slot in range(slots):
            mig = r.get("mig_instances", _mig_handle, handle, slot)
            if mig is None:
                continue
            name = _text(r.get("mig_name", pynvml.nvmlDeviceGetName, mig))
            memory = r.get("mig_memory", pynvml.nvmlDeviceGetMemoryInfo, mig)
            instances.append(
                MigInstance(
                    gpu_instance_id=_int(r.get("mig_gi", pynvml.nvmlDeviceGetGpuInstanceId, mig))
                    or 0,
                    compute_instance_id=_int(
                        r.get("mig_ci", pynvml.nvmlDeviceGetComputeInstanceId, mig)
                    ),
                    uuid=_text(r.get("mig_uuid", pynvml.nvmlDeviceGetUUID, mig)),
                    # NVML names MIG devices "<GPU name> MIG 3g.40gb"
                    profile=name.rsplit(" MIG ", 1)[1] if name and " MIG " in name else None,
                    memory_total_mib=None if memory is None else _mib(memory.total),
                )
            )
        return instances

    def _finish(self, r: _Reads, record: GpuInventory | GpuHealthData) -> None:
        record.unsupported = sorted(set(r.unsupported))
        if r.gone is not None:
            record.lost = True
            record.error = r.gone
            self._lost(r.index)
        elif r.errors:
            record.error = "; ".join(r.errors)

    # ---- health ----

    def _health_one(self, i: int) -> GpuHealthData:
        r = _Reads(self, i)
        gpu = GpuHealthData(index=i)
        handle = self._handle(r)
        if handle is not None:
            s = self._facts(r, handle)
            gpu.uuid, gpu.name, gpu.pci_bus_id = s.uuid, s.name, s.pci_bus_id
            gpu.temp_slowdown_c, gpu.temp_shutdown_c = s.temp_slowdown_c, s.temp_shutdown_c
            gpu.power_default_limit_w = s.power_default_limit_w
            gpu.sm_clock_max_mhz = s.sm_clock_max_mhz
            gpu.pcie_link_gen_max, gpu.pcie_link_width_max = (
                s.pcie_link_gen_max,
                s.pcie_link_width_max,
            )
            r.unsupported.extend(n for n in s.unsupported if n in _HEALTH_STATIC)
            self._read_health(r, handle, gpu)
        self._finish(r, gpu)
        return gpu

    def _read_health(self, r: _Reads, handle: Any, gpu: GpuHealthData) -> None:
        gpu.temperature_c = _int(r.get("temperature_c", self._temperature, handle))
        gpu.power_w = _watts(r.get("power_w", pynvml.nvmlDeviceGetPowerUsage, handle))
        gpu.power_limit_w = _watts(
            r.get("power_limit_w", pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        )
        gpu.clock_event_reasons = _int(
            r.get("clock_event_reasons", self._clock_event_reasons, handle)
        )
        gpu.sm_clock_mhz = _int(
            r.get("sm_clock_mhz", pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)
        )
        util = r.get("utilization_gpu_pct", pynvml.nvmlDeviceGetUtilizationRates, handle)
        if util is not None:
            gpu.utilization_gpu_pct, gpu.utilization_memory_pct = int(util.gpu), int(util.memory)
        elif "utilization_gpu_pct" in r.unsupported:
            r.note("utilization_memory_pct")
        gpu.pcie_link_gen, gpu.pcie_link_width = self._pcie_link(r, handle)
        ecc = r.get("ecc_enabled", pynvml.nvmlDeviceGetEccMode, handle)
        gpu.ecc_enabled = None if ecc is None else bool(ecc[0])
        counts = (
            ("ecc_volatile_uncorrected", _UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
            ("ecc_aggregate_uncorrected", _UNCORRECTED, pynvml.NVML_AGGREGATE_ECC),
            ("ecc_volatile_corrected", _CORRECTED, pynvml.NVML_VOLATILE_ECC),
        )
        for name, kind, counter in counts:
            if gpu.ecc_enabled:
                value = r.get(name, pynvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
                setattr(gpu, name, _int(value))
            elif gpu.ecc_enabled is None and "ecc_enabled" in r.unsupported:
                r.note(name)
        pending = r.get(
            "retired_pages_pending", pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle
        )
        gpu.retired_pages_pending = None if pending is None else bool(pending)
        retired = pynvml.nvmlDeviceGetRetiredPages
        sbe = r.get(
            "retired_pages_sbe",
            retired,
            handle,
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
        )
        dbe = r.get(
            "retired_pages_dbe",
            retired,
            handle,
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        )
        gpu.retired_pages_sbe = None if sbe is None else len(sbe)
        gpu.retired_pages_dbe = None if dbe is None else len(dbe)
        rows = r.get("remapped_rows", pynvml.nvmlDeviceGetRemappedRows, handle)
        if rows is not None:
            corrected, uncorrected, pending_rows, failure = rows
            gpu.remapped_rows = RemappedRows(
                int(corrected), int(uncorrected), bool(pending_rows), bool(failure)
            )
        gpu.pcie_replay_counter = _int(
            r.get("pcie_replay_counter", pynvml.nvmlDeviceGetPcieReplayCounter, handle)
        )
        gpu.nvlinks = self._read_links(r, handle, remote=False)
        gpu.recovery_action = _int(r.get("recovery_action", _recovery_action, handle))
        fabric = r.get("fabric_state", self._fabric_info, handle)
        if fabric is not None:
            state, status, clique, health_mask = fabric
            gpu.fabric_state = FABRIC_STATES[state] if 0 <= state < 4 else f"unknown ({state})"
            gpu.fabric_status = "success" if status == pynvml.NVML_SUCCESS else _nvml_text(status)
            gpu.fabric_clique_id = clique
            degraded = health_mask & 0x3  # NVML_GPU_FABRIC_HEALTH_MASK_*_DEGRADED_BW
            gpu.fabric_degraded_bandwidth = None if degraded == 0 else degraded == 1
        for name in ("fabric_status", "fabric_clique_id", "fabric_degraded_bandwidth"):
            if "fabric_state" in r.unsupported:
                r.note(name)

    def _fabric_info(self, handle: Any) -> tuple[int, int, int, int]:
        """(state, status, clique id, health mask); NotSupported where the GPU has no
        fabric (no NVSwitch, or before Hopper)."""
        if "nvmlDeviceGetGpuFabricInfoV" not in self._legacy:
            info = pynvml.c_nvmlGpuFabricInfoV_t()
            try:
                pynvml.nvmlDeviceGetGpuFabricInfoV(handle, pynvml.byref(info))
            except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
                self._legacy.add("nvmlDeviceGetGpuFabricInfoV")
            else:
                return _fabric_tuple(info, int(info.healthMask))
        old = pynvml.c_nvmlGpuFabricInfo_t()
        pynvml.nvmlDeviceGetGpuFabricInfo(handle, pynvml.byref(old))
        return _fabric_tuple(old, 0)

    def _current_or_legacy(self, current: str, legacy: str, handle: Any, *args: Any) -> Any:
        """Call pynvml's ``current`` function; on a driver (or pynvml) that lacks it, the
        deprecated ``legacy`` one, and remember the choice."""
        if current not in self._legacy:
            fn = getattr(pynvml, current, None)
            if fn is not None:
                try:
                    return fn(handle, *args)
                except (
                    pynvml.NVMLError_FunctionNotFound,
                    pynvml.NVMLError_ArgumentVersionMismatch,
                ):
                    pass
            self._legacy.add(current)
        return getattr(pynvml, legacy)(handle, *args)

    def _temperature(self, handle: Any) -> Any:
        return self._current_or_legacy(
            "nvmlDeviceGetTemperatureV",
            "nvmlDeviceGetTemperature",
            handle,
            pynvml.NVML_TEMPERATURE_GPU,
        )

    def _clock_event_reasons(self, handle: Any) -> Any:
        return self._current_or_legacy(
            "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetCurrentClocksThrottleReasons",  # drivers before R535
            handle,
        )

    # ---- NVLink ----

    def _link_count(self, r: _Reads, handle: Any) -> int:
        """How many NVLinks the GPU has (cached): probe until NVML says no such link."""
        count = self._links.get(r.index)
        if count is not None:
            return count
        count = 0
        for link in range(_MAX_LINKS):
            try:
                pynvml.nvmlDeviceGetNvLinkState(handle, link)
            except _UNSUPPORTED:
                if link == 0:
                    self._unsupported.setdefault(r.index, set()).add("nvlinks")
                break
            except (pynvml.NVMLError_InvalidArgument, pynvml.NVMLError_NotFound):
                break
            except _GONE as exc:
                r.gone = f"NVML reports '{exc}' for this GPU (while reading nvlinks)"
                return 0
            except Exception as exc:
                r.errors.append(f"nvlinks: {_error_text(exc)}")
                return 0
            count += 1
        self._links[r.index] = count
        return count

    def _read_links(self, r: _Reads, handle: Any, remote: bool) -> list[NvLinkState]:
        if r.gone is not None:
            return []
        if "nvlinks" in self._unsupported.get(r.index, ()):
            r.note("nvlinks")
            return []
        links = []
        for link in range(self._link_count(r, handle)):
            active = r.get("nvlink_state", pynvml.nvmlDeviceGetNvLinkState, handle, link)
            if active is None:
                continue
            state = NvLinkState(link=link, active=bool(active))
            if state.active:
                counters: dict[str, int | None] = {}
                for name, counter in _LINK_COUNTERS:
                    value = r.get(
                        f"nvlink_{name}",
                        pynvml.nvmlDeviceGetNvLinkErrorCounter,
                        handle,
                        link,
                        counter,
                    )
                    counters[name] = _int(value)
                remote_bus = None
                if remote:
                    pci = r.get(
                        "nvlink_remote_pci", pynvml.nvmlDeviceGetNvLinkRemotePciInfo, handle, link
                    )
                    remote_bus = None if pci is None else _text(pci.busId)
                state = NvLinkState(
                    link=link, active=True, remote_pci_bus_id=remote_bus, **counters
                )
            links.append(state)
        if "nvlinks" in self._unsupported.get(r.index, ()):
            r.note("nvlinks")
        return links

    def _links_one(self, i: int) -> _LinkReport:
        r = _Reads(self, i)
        report = _LinkReport(i, None, [], r)
        handle = self._handle(r)
        if handle is not None:
            report.uuid = self._facts(r, handle).uuid
            report.links = self._read_links(r, handle, remote=True)
            report.via_switch = self._switched(r, handle, report.links)
        if r.gone is not None:
            self._lost(i)
        return report

    def _switched(self, r: _Reads, handle: Any, links: list[NvLinkState]) -> bool:
        """Do this GPU's NVLinks end at NVSwitches (HGX) rather than at GPUs (bridges)?"""
        cached = self._via_switch.get(r.index)
        if cached is not None:
            return cached
        first = next((link.link for link in links if link.active), None)
        if first is None:
            return False
        kind = r.get(
            "nvlink_remote_type", pynvml.nvmlDeviceGetNvLinkRemoteDeviceType, handle, first
        )
        switched = _int(kind) == _NVLINK_DEVICE_TYPE_SWITCH
        if kind is not None:
            self._via_switch[r.index] = switched
        return switched

    def _p2p(self, a: _LinkReport, b: _LinkReport) -> P2PLink | None:
        """How GPUs a and b reach each other, or None if NVML cannot say."""
        ha, hb = self._handles.get(a.index), self._handles.get(b.index)
        if ha is None or hb is None:
            return None
        status = _ask(pynvml.nvmlDeviceGetP2PStatus, ha, hb, _P2P_CAPS_INDEX_NVLINK)
        if status == _P2P_STATUS_OK:
            return P2PLink(a.index, b.index, "NVLINK", self._nvlink_count(a, b))
        key = (a.index, b.index)
        level = self._ancestors.get(key)
        if level is None:
            answer = _ask(pynvml.nvmlDeviceGetTopologyCommonAncestor, ha, hb)
            if answer is None:
                return None
            level = self._ancestors[key] = int(answer)
        return P2PLink(a.index, b.index, _TOPOLOGY_LEVELS.get(level, "SYSTEM"))

    def _nvlink_count(self, a: _LinkReport, b: _LinkReport) -> int:
        bus_b = self._identity(b.index).pci_bus_id
        direct = sum(1 for link in a.links if link.active and link.remote_pci_bus_id == bus_b)
        if direct or not (a.via_switch and b.via_switch):
            return direct
        # Through NVSwitches every active link of a GPU reaches every other GPU.
        return min(sum(1 for link in g.links if link.active) for g in (a, b))

    # ---- processes ----

    def _processes_one(self, i: int) -> GpuProcesses:
        r = _Reads(self, i)
        result = GpuProcesses(index=i, uuid=None)
        handle = self._handle(r)
        if handle is not None:
            result.uuid = self._facts(r, handle).uuid
            seen: set[int] = set()
            for kind, fn in (
                ("compute", pynvml.nvmlDeviceGetComputeRunningProcesses),
                ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses),
            ):
                for proc in r.get(f"{kind}_processes", fn, handle) or []:
                    pid = int(proc.pid)
                    if pid in seen:  # a C+G process: listed once, as compute
                        continue
                    seen.add(pid)
                    name = _text(_ask(pynvml.nvmlSystemGetProcessName, pid))
                    result.processes.append(
                        GpuProcess(
                            pid=pid,
                            used_memory_mib=_mib(proc.usedGpuMemory),
                            kind=kind,
                            name=name,
                            gpu_instance_id=_instance(proc, "gpuInstanceId"),
                            compute_instance_id=_instance(proc, "computeInstanceId"),
                        )
                    )
        result.unsupported = sorted(set(r.unsupported))
        if r.gone is not None:
            result.lost, result.error = True, r.gone
            self._lost(i)
        elif r.errors:
            result.error = "; ".join(r.errors)
        return result


def _instance(proc: Any, field: str) -> int | None:
    """A process's MIG instance id, or None: MIG off (0xFFFFFFFF), or an older
    ``nvmlProcessInfo`` struct without the field."""
    value = getattr(proc, field, None)
    if value is None or int(value) == 0xFFFFFFFF:
        return None
    return int(value)


def _fabric_tuple(info: Any, health_mask: int) -> tuple[int, int, int, int]:
    state = int(info.state)
    if state == 0:  # NVML_GPU_FABRIC_STATE_NOT_SUPPORTED
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return state, int(info.status), int(info.cliqueId), health_mask


def _nvml_text(code: int) -> str:
    try:
        return str(pynvml.NVMLError(code))
    except Exception:  # an unknown code
        return f"NVML error {code}"


def _ask(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` or None on any NVML failure (for optional extras)."""
    try:
        return fn(*args)
    except Exception:
        return None


def _mig_handle(handle: Any, slot: int) -> Any:
    try:
        return pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
    except pynvml.NVMLError_NotFound:
        return None  # an empty slot


def _recovery_action(handle: Any) -> int:
    value = pynvml.nvmlDeviceGetFieldValues(handle, [_RECOVERY_ACTION_FIELD])[0]
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(value.nvmlReturn)
    return _field_int(value)


def _field_int(value: Any) -> int:
    kind = value.valueType
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
        return int(value.value.uiVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG:
        return int(value.value.ulVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
        return int(value.value.ullVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
        return int(value.value.sllVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_INT:
        return int(value.value.siVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT:
        return int(value.value.usVal)
    return int(value.value.dVal)
