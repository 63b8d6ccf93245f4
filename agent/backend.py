"""The backend interface every GPU source implements, and the snapshots it returns.

A backend reads raw facts; it never judges them (``health.py`` does) and never
formats them for the wire (``tools.py`` does). Any field that is ``None`` means the
GPU or driver does not support that query; the backend records the query's name in
``unsupported`` so a report can say so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# NVML clock-event (throttle) reason bits, as in nvml.h. Kept here so the health
# judge and the fake backend need not import pynvml.
CLOCK_EVENT_GPU_IDLE = 0x1
CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING = 0x2
CLOCK_EVENT_SW_POWER_CAP = 0x4
CLOCK_EVENT_HW_SLOWDOWN = 0x8
CLOCK_EVENT_SYNC_BOOST = 0x10
CLOCK_EVENT_SW_THERMAL_SLOWDOWN = 0x20
CLOCK_EVENT_HW_THERMAL_SLOWDOWN = 0x40
CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN = 0x80
CLOCK_EVENT_DISPLAY_CLOCK_SETTING = 0x100

# nvmlGpuFabricState_t, by value.
FABRIC_STATES = ("not_supported", "not_started", "in_progress", "completed")

# NVML_FI_DEV_GET_GPU_RECOVERY_ACTION values (nvmlDeviceGpuRecoveryAction_t).
RECOVERY_ACTION_NONE = 0
RECOVERY_ACTION_GPU_RESET = 1
RECOVERY_ACTION_NODE_REBOOT = 2
RECOVERY_ACTION_DRAIN_P2P = 3
RECOVERY_ACTION_DRAIN_AND_RESET = 4


@dataclass(frozen=True)
class DriverInfo:
    """Node-wide driver facts."""

    driver_version: str | None
    cuda_driver_version: str | None  # "12.9", from nvmlSystemGetCudaDriverVersion_v2
    nvml_version: str | None
    gpu_count: int


@dataclass(frozen=True)
class MigInstance:
    """One MIG GPU instance (with its first compute instance) on a MIG-enabled GPU."""

    gpu_instance_id: int
    compute_instance_id: int | None
    uuid: str | None
    profile: str | None  # e.g. "1g.10gb"
    memory_total_mib: int | None


@dataclass
class GpuInventory:
    """What a GPU is. Returned by ``Backend.inventory``."""

    index: int
    name: str | None = None
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None  # NVML form "00000000:3B:00.0"
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    mig_mode_current: bool | None = None
    mig_mode_pending: bool | None = None
    mig_instances: list[MigInstance] = field(default_factory=list)
    persistence_mode: bool | None = None
    ecc_mode_current: bool | None = None  # nvmlDeviceGetEccMode
    ecc_mode_pending: bool | None = None  # what it will be after the next reset
    power_limit_w: float | None = None  # enforced
    power_default_limit_w: float | None = None
    power_max_limit_w: float | None = None  # nvmlDeviceGetPowerManagementLimitConstraints
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    app_sm_clock_mhz: int | None = None  # applications clocks (nvmlDeviceGetApplicationsClock)
    app_mem_clock_mhz: int | None = None
    pcie_link_gen: int | None = None  # current; drops at idle to save power
    pcie_link_gen_max: int | None = None  # what this GPU in this slot can reach
    pcie_link_width: int | None = None
    pcie_link_width_max: int | None = None
    nvlink_links_up: int | None = None
    nvlink_links_total: int | None = None
    compute_capability: str | None = None  # "9.0"
    vbios_version: str | None = None
    lost: bool = False  # NVML says the GPU is gone (GPU_IS_LOST) or it cannot be opened
    error: str | None = None  # why it is lost / could not be read
    unsupported: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RemappedRows:
    """nvmlDeviceGetRemappedRows: (corrected, uncorrected, pending, failure)."""

    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


@dataclass(frozen=True)
class NvLinkState:
    """One NVLink of one GPU."""

    link: int
    active: bool
    remote_pci_bus_id: str | None = None
    replay_errors: int | None = None
    recovery_errors: int | None = None
    crc_flit_errors: int | None = None
    crc_data_errors: int | None = None


@dataclass
class GpuHealthData:
    """Raw health facts for one GPU. Returned by ``Backend.health``; judged by health.py."""

    index: int
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    lost: bool = False
    error: str | None = None
    temperature_c: int | None = None
    temp_slowdown_c: int | None = None  # NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    temp_shutdown_c: int | None = None  # NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
    power_w: float | None = None
    power_limit_w: float | None = None  # enforced limit
    power_default_limit_w: float | None = None  # nvmlDeviceGetPowerManagementDefaultLimit
    clock_event_reasons: int | None = None  # bitmask, CLOCK_EVENT_* above
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    utilization_gpu_pct: int | None = None  # nvmlDeviceGetUtilizationRates, last sample period
    utilization_memory_pct: int | None = None
    pcie_link_gen: int | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width: int | None = None
    pcie_link_width_max: int | None = None
    ecc_enabled: bool | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_uncorrected: int | None = None
    ecc_volatile_corrected: int | None = None
    retired_pages_pending: bool | None = None
    retired_pages_dbe: int | None = None
    retired_pages_sbe: int | None = None
    remapped_rows: RemappedRows | None = None
    pcie_replay_counter: int | None = None
    nvlinks: list[NvLinkState] = field(default_factory=list)
    recovery_action: int | None = None  # RECOVERY_ACTION_* (drivers that have the field)
    # NVLink fabric registration with Fabric Manager (nvmlDeviceGetGpuFabricInfoV, Hopper+
    # on NVSwitch systems): FABRIC_STATES below; status "success" or NVML's error text.
    fabric_state: str | None = None
    fabric_status: str | None = None
    fabric_clique_id: int | None = None
    fabric_degraded_bandwidth: bool | None = None
    # PCIe AER counters from sysfs (set by the tools layer, not the backend: not NVML).
    pcie_aer: AerCounts | None = None
    unsupported: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GpuProcess:
    """A process using a GPU, as NVML reports it."""

    pid: int
    used_memory_mib: int | None
    kind: str  # "compute" | "graphics"
    name: str | None = None
    # MIG: the GPU/compute instance the process runs in (None when MIG is off).
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass
class GpuProcesses:
    """The processes on one GPU. Returned by ``Backend.processes``."""

    index: int
    uuid: str | None
    processes: list[GpuProcess] = field(default_factory=list)
    lost: bool = False
    error: str | None = None
    unsupported: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class P2PLink:
    """Topology between two GPUs (nvmlDeviceGetTopologyCommonAncestor level name)."""

    gpu_a: int
    gpu_b: int
    # "NVLINK" | "SAME_BOARD" | "SINGLE_SWITCH" | "MULTIPLE_SWITCH" | "HOST_BRIDGE"
    # | "NUMA_NODE" | "SYSTEM"
    level: str
    nvlink_count: int = 0


@dataclass
class NvLinkTopology:
    """NVLink state per GPU and P2P levels between GPUs. Returned by ``Backend.nvlink``."""

    gpus: list[tuple[int, str | None, list[NvLinkState]]]  # (index, uuid, links)
    p2p: list[P2PLink] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "GPU 2: ..." for GPUs that could not be read


@dataclass(frozen=True)
class AerCounts:
    """A GPU's PCIe Advanced Error Reporting totals since boot, with the nonzero detail
    counters (e.g. {"BadTLP": 3})."""

    correctable: int | None
    nonfatal: int | None
    fatal: int | None
    details: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IbPort:
    """One InfiniBand or RoCE port."""

    device: str  # mlx5_0
    port: int
    state: str | None  # ACTIVE, DOWN, INIT, ARMED
    phys_state: str | None  # LinkUp, Polling, Disabled, ...
    rate: str | None  # "400 Gb/sec (4X NDR)"
    link_layer: str | None  # InfiniBand | Ethernet
    link_downed: int | None = None  # times the link went down since boot (counters/link_downed)

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE" and self.phys_state in (None, "LinkUp")


@dataclass
class HostFacts:
    """What the host's sysfs says beyond NVML (agent.sysfs reads it; the fake backend's
    scenario supplies it). None: not available on this node or not readable."""

    aer: dict[str, AerCounts]  # NVML PCI bus id -> counters (GPUs with AER only)
    infiniband: list[IbPort] | None
    source: str  # the sysfs root read, or "scenario"


@dataclass(frozen=True)
class KmsgRecord:
    """One /dev/kmsg record: microseconds since boot and the message text."""

    priority: int
    sequence: int
    usec_since_boot: int
    message: str
    # Microseconds since the boot that logged it, when that differs from this boot (the
    # persistent log's older boots): tells boots apart.
    monotonic_usec: int | None = None


class Backend(Protocol):
    """A source of GPU facts. Methods are synchronous and may block (NVML); the
    protocol layer runs them off its reader thread with a deadline."""

    name: str

    def driver(self) -> DriverInfo: ...

    def inventory(self) -> list[GpuInventory]: ...

    def health(self) -> list[GpuHealthData]: ...

    def processes(self) -> list[GpuProcesses]: ...

    def nvlink(self) -> NvLinkTopology: ...

    def kmsg(self) -> tuple[float, Sequence[KmsgRecord]] | None:
        """Kernel log records this backend supplies itself, with the boot time
        (epoch seconds), or None to read the real ``--kmsg`` path."""
        ...

    def close(self) -> None: ...
