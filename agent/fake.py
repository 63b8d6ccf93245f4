"""A scenario-driven GPU backend: GPUs, faults and kernel-log lines from a JSON document.

``--backend fake`` uses it for demos, tests and the simulated cluster. Every key is
optional and ``{}`` is a healthy 8x H100 node. Top-level keys (``_TOP_KEYS``): node,
driver_version, cuda_driver_version, uptime_s, product (``PRESETS``), gpu_count;
``gpus`` (per-GPU overrides of any field, null = unsupported), ``faults`` (``FAULT_KINDS``:
each ``{"gpu": N, "kind": ..., params}``; ``xid`` and ``fell_off_bus`` on a MIG GPU may
name ``gpu_instance``, logged as the driver's ``GPU-I:nn`` tag), ``processes`` (a process
on a MIG GPU may name the ``gpu_instance`` it runs in),
``unsupported``, ``kmsg`` and ``journal`` (``{"ago_s", "line"}``; journal lines may
predate the boot), ``mig``, ``infiniband`` (RDMA ports), ``disabled_tools``. Errors name
the key and what is wanted.
Standard library only and cheap to import (it is on the agent's start-up path): no
hashlib (its OpenSSL import alone costs ~4 ms), identities come from zlib.crc32.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zlib
from dataclasses import fields, replace
from typing import Any, NamedTuple, NoReturn

from agent.backend import (
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_HW_SLOWDOWN,
    CLOCK_EVENT_HW_THERMAL_SLOWDOWN,
    CLOCK_EVENT_SW_POWER_CAP,
    CLOCK_EVENT_SW_THERMAL_SLOWDOWN,
    FABRIC_STATES,
    AerCounts,
    DriverInfo,
    GpuHealthData,
    GpuInventory,
    GpuProcess,
    GpuProcesses,
    HostFacts,
    IbPort,
    KmsgRecord,
    MigInstance,
    NvLinkState,
    NvLinkTopology,
    P2PLink,
    RemappedRows,
)
from agent.errors import ScenarioError

DEFAULT_SCENARIO_PATH = os.path.join(os.path.dirname(__file__), "data", "default-scenario.json")


class Preset(NamedTuple):
    """What every GPU of one product looks like when healthy."""

    name: str  # as NVML's nvmlDeviceGetName reports it
    memory_total_mib: int
    power_limit_w: float
    idle_power_w: float
    temp_slowdown_c: int
    temp_shutdown_c: int
    sm_clock_max_mhz: int
    sm_clock_idle_mhz: int
    mem_clock_max_mhz: int
    mem_clock_idle_mhz: int
    compute_capability: str
    vbios_version: str
    serial_prefix: str
    pci_buses: tuple[int, ...]  # a typical 8-GPU server's layout, GPU 0 first
    pcie_gen_max: int
    nvlinks: int = 0
    nvswitch_buses: tuple[int, ...] = ()  # links are spread over these NVSwitches, in blocks
    mig: bool = False
    row_remapping: bool = True  # Ampere and later remap rows; Turing and older retire pages


# Thresholds are what `nvidia-smi -q -d TEMPERATURE` prints as "GPU Slowdown Temp" and
# "GPU Shutdown Temp" on these parts (H100/A100 SXM: 89/92 C; L4 and T4 as seen on
# cloud instances). PCI layouts: DGX H100 (HGX 8-GPU) and DGX A100 bus numbers.
PRESETS: dict[str, Preset] = {
    "H100-80GB": Preset(
        name="NVIDIA H100 80GB HBM3",
        memory_total_mib=81559,
        power_limit_w=700.0,
        idle_power_w=71.0,
        temp_slowdown_c=89,
        temp_shutdown_c=92,
        sm_clock_max_mhz=1980,
        sm_clock_idle_mhz=345,
        mem_clock_max_mhz=2619,
        mem_clock_idle_mhz=2619,
        compute_capability="9.0",
        vbios_version="96.00.99.00.01",
        serial_prefix="1654",
        pci_buses=(0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB),
        pcie_gen_max=5,
        nvlinks=18,
        nvswitch_buses=(0x05, 0x06, 0x07, 0x08),
        mig=True,
    ),
    "A100-80GB": Preset(
        name="NVIDIA A100-SXM4-80GB",
        memory_total_mib=81920,
        power_limit_w=400.0,
        idle_power_w=61.0,
        temp_slowdown_c=89,
        temp_shutdown_c=92,
        sm_clock_max_mhz=1410,
        sm_clock_idle_mhz=210,
        mem_clock_max_mhz=1593,
        mem_clock_idle_mhz=1593,
        compute_capability="8.0",
        vbios_version="92.00.45.00.06",
        serial_prefix="1562",
        pci_buses=(0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD),
        pcie_gen_max=4,
        nvlinks=12,
        nvswitch_buses=(0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9),
        mig=True,
    ),
    "L4": Preset(
        name="NVIDIA L4",
        memory_total_mib=23034,
        power_limit_w=72.0,
        idle_power_w=16.0,
        temp_slowdown_c=92,
        temp_shutdown_c=95,
        sm_clock_max_mhz=2040,
        sm_clock_idle_mhz=210,
        mem_clock_max_mhz=6251,
        mem_clock_idle_mhz=405,
        compute_capability="8.9",
        vbios_version="95.04.29.00.06",
        serial_prefix="1321",
        pci_buses=(0x01, 0x02, 0x41, 0x42, 0x81, 0x82, 0xC1, 0xC2),
        pcie_gen_max=4,
    ),
    "T4": Preset(
        name="Tesla T4",
        memory_total_mib=15360,
        power_limit_w=70.0,
        idle_power_w=10.0,
        temp_slowdown_c=93,
        temp_shutdown_c=96,
        sm_clock_max_mhz=1590,
        sm_clock_idle_mhz=300,
        mem_clock_max_mhz=5001,
        mem_clock_idle_mhz=405,
        compute_capability="7.5",
        vbios_version="90.04.96.00.02",
        serial_prefix="1324",
        pci_buses=(0x1A, 0x1B, 0x3D, 0x3E, 0x88, 0x89, 0xB1, 0xB2),
        pcie_gen_max=3,
        row_remapping=False,
    ),
}


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Fault kind -> the parameters it accepts besides "gpu" and "kind".
FAULT_KINDS: dict[str, frozenset[str]] = {
    "fell_off_bus": frozenset({"ago_s", "recovery_action", "gpu_instance"}),
    "row_remap_failure": frozenset({"ago_s", "pid", "process", "uncorrected_rows"}),
    "thermal_throttle": frozenset({"temperature_c"}),
    "xid": frozenset(
        {"xid", "ago_s", "pid", "process", "message", "gpu_instance", "compute_instance"}
    ),
    "nvlink_errors": frozenset(
        {"link", "crc_flit", "crc_data", "replay", "recovery", "down", "ago_s"}
    ),
    "pcie_replay": frozenset({"count"}),
    "pcie_link_degraded": frozenset({"gen", "width"}),
    "power_cap": frozenset({"limit_w", "power_w"}),
    "ecc_uncorrectable": frozenset({"volatile", "aggregate", "xid", "ago_s", "pid", "process"}),
    "retired_pages_pending": frozenset({"dbe", "sbe", "xid", "ago_s"}),
    "recovery_action": frozenset({"action", "xid", "ago_s"}),
    "slow_nvml": frozenset({"seconds"}),
    "gpu_hang": frozenset({"seconds"}),
    "sxid": frozenset({"sxid", "fatal", "link", "switch", "ago_s", "count"}),
    "pcie_aer": frozenset({"correctable", "nonfatal", "fatal"}),
    "fabric_manager": frozenset({"state", "status"}),
    "gpu_reset": frozenset({"ago_s"}),
}

_TOP_KEYS = _names(
    "node driver_version cuda_driver_version uptime_s product gpu_count gpus faults "
    "processes unsupported kmsg mig disabled_tools infiniband journal"
)

_INVENTORY_FIELDS = tuple(f.name for f in fields(GpuInventory))
_HEALTH_FIELDS = tuple(f.name for f in fields(GpuHealthData))
_IDENTITY = frozenset({"index", "uuid", "name", "serial", "pci_bus_id", "lost", "error"})
# Per-GPU overrides by JSON type (null means "the GPU does not support this query").
_INT_FIELDS = _names(
    "memory_total_mib memory_used_mib sm_clock_mhz mem_clock_mhz sm_clock_max_mhz "
    "mem_clock_max_mhz app_sm_clock_mhz app_mem_clock_mhz pcie_link_gen pcie_link_gen_max "
    "pcie_link_width pcie_link_width_max utilization_gpu_pct utilization_memory_pct "
    "fabric_clique_id temperature_c temp_slowdown_c temp_shutdown_c "
    "clock_event_reasons ecc_volatile_uncorrected ecc_aggregate_uncorrected "
    "ecc_volatile_corrected retired_pages_dbe retired_pages_sbe pcie_replay_counter "
    "recovery_action"
)
_FLOAT_FIELDS = _names("power_w power_limit_w power_default_limit_w power_max_limit_w")
_BOOL_FIELDS = _names(
    "mig_mode_current mig_mode_pending persistence_mode ecc_enabled ecc_mode_pending "
    "retired_pages_pending lost fabric_degraded_bandwidth"
)
# Inventory fields computed from others: ECC's current mode is the health query's
# ecc_enabled; NVLink counts come from the links (unsupported with "nvlinks").
_DERIVED = frozenset({"ecc_mode_current", "nvlink_links_up", "nvlink_links_total"})
_STR_FIELDS = _names(
    "name uuid serial pci_bus_id compute_capability vbios_version error fabric_state fabric_status"
)
# Names a scenario may list under "unsupported": the query-backed fields, plus processes.
QUERIES = (
    frozenset(_INVENTORY_FIELDS + _HEALTH_FIELDS)
    - _IDENTITY
    - {"unsupported", "mig_instances", "memory_used_mib", "pcie_aer"}
    - _DERIVED
) | {"processes"}
_GPU_OVERRIDE_KEYS = _INT_FIELDS | _FLOAT_FIELDS | _BOOL_FIELDS | _STR_FIELDS
_GPU_OVERRIDE_KEYS |= {"remapped_rows", "nvlinks", "unsupported", "index"}

_RECOVERY_LABELS = {
    0: "None",
    1: "GPU Reset Required",
    2: "Node Reboot Required",
    3: "Drain P2P",
    4: "Drain and Reset",
}

# Typical driver text after "pid=..., name=..., " for common Xids (R535-R575 wording).
_XID_TEXT = {
    13: "Graphics SM Warp Exception on (GPC 1, TPC 0, SM 1): Out Of Range Address",
    31: (
        "Ch 00000010, intr 00000000. MMU Fault: ENGINE GRAPHICS GPC1 GPCCLIENT_T1_3 faulted "
        "@ 0x7f3a_5c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ"
    ),
    43: "Ch 00000018",
    45: "Ch 00000018",
    48: (
        "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer "
        "at physAddr 0x3c81f2040 partition 3, subpartition 1."
    ),
    63: "Row Remapper: New row (0x00000000000a71f0) marked for remapping, reset gpu to activate.",
    64: "Row Remapper: Failed to remap row (0x00000000000a7dc8), no spare rows left in bank.",
    74: "NVLink: fatal error detected on link {link}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate detected",
    94: "Contained: CE User Channel (0x2). RST: No, D-RST: No",
    95: "Uncontained: LTC TAG (0x2,0x0). RST: Yes, D-RST: No",
    119: (
        "Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 "
        "(GSP_RM_CONTROL) (0x20801348 0x4)."
    ),
}

_KMSG_ERR = 3  # NVRM Xid reports
_KMSG_WARN = 4
_KMSG_INFO = 6
_PROFILE = re.compile(r"^([1-7])g\.([0-9]+)gb(\+me)?$")
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MAX_GPUS = 64


def load_scenario(path: str | None) -> FakeBackend:
    """Read a scenario file (None: the packaged default scenario) and build its backend."""
    source = path or DEFAULT_SCENARIO_PATH
    try:
        if path:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        else:
            # The module's loader reads beside it on disk and inside a zipapp alike.
            text = __loader__.get_data(source).decode("utf-8")  # type: ignore[name-defined]
    except OSError as e:
        raise ScenarioError(
            f"cannot read scenario file {source}: {e.strerror or e}; "
            "pass --scenario with a readable JSON file"
        ) from e
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{source}: not UTF-8 text ({e.reason}); write it as UTF-8 JSON") from e
    try:
        scenario = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(
            f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e
    return FakeBackend(scenario, source=source)


def _fail(source: str, where: str, what: str) -> NoReturn:
    raise ScenarioError(f"{source}: {where}: {what}")


class _Reader:
    """Typed access to one JSON object of the scenario, with located error messages."""

    def __init__(self, source: str, where: str, obj: Any, allowed: frozenset[str]) -> None:
        if not isinstance(obj, dict):
            _fail(source, where, f"expected a JSON object, got {_json_type(obj)}")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            _fail(
                source,
                where,
                f"unknown key {unknown[0]!r}; expected one of: {', '.join(sorted(allowed))}",
            )
        self.source, self.where, self.obj = source, where, obj

    def fail(self, key: str, what: str) -> NoReturn:
        _fail(self.source, f"{self.where}.{key}" if self.where else key, what)

    def int_(self, key: str, default: int, lo: int = 0, hi: int = 2**62) -> int:
        value = self.obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_json_type(value)}")
        if not lo <= value <= hi:
            self.fail(key, f"{value} is out of range ({lo}..{hi})")
        return value

    def number_(self, key: str, default: float, lo: float = 0.0, hi: float = 1e12) -> float:
        value = self.obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_json_type(value)}")
        if not lo <= value <= hi:
            self.fail(key, f"{value} is out of range ({lo:g}..{hi:g})")
        return float(value)

    def str_(self, key: str, default: str) -> str:
        value = self.obj.get(key, default)
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {_json_type(value)}")
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.obj.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_json_type(value)}")
        return value

    def list_(self, key: str) -> list[Any]:
        value = self.obj.get(key, [])
        if not isinstance(value, list):
            self.fail(key, f"expected a JSON array, got {_json_type(value)}")
        return value

    def gpu(self, key: str, gpu_count: int) -> int:
        if key not in self.obj:
            self.fail(key, "missing; say which GPU (its index)")
        value = self.obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected a GPU index (integer), got {_json_type(value)}")
        if not 0 <= value < gpu_count:
            self.fail(key, f"bad gpu index {value}: this node has GPUs 0..{gpu_count - 1}")
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"[:60]
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _h32(node: str, index: int, salt: str) -> int:
    return zlib.crc32(f"{node}\x00{index}\x00{salt}".encode())


def _uuid(node: str, index: int, prefix: str, salt: str) -> str:
    h = "".join(f"{_h32(node, index, f'{salt}{k}'):08x}" for k in range(4))
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _buses(preset: Preset, count: int) -> list[int]:
    """The preset's layout, then free bus numbers in order for nodes with more GPUs."""
    layout = list(preset.pci_buses[:count])
    bus = 0x10
    while len(layout) < count:
        if bus not in layout and bus not in preset.nvswitch_buses:
            layout.append(bus)
        bus += 1
    return layout


def _nvml_pci(bus: int) -> str:
    return f"00000000:{bus:02X}:00.0"


def _xid_pci(nvml_pci: str) -> str:
    """NVML "00000000:2A:00.0" -> the kernel log's "0000:2a:00"."""
    domain, bus, devfn = nvml_pci.split(":")
    return f"{domain[-4:]}:{bus}:{devfn.split('.')[0]}".lower()


class FakeBackend:
    """A Backend whose facts come from a scenario dict (see the module docstring)."""

    name = "fake"

    def __init__(
        self, scenario: Any, *, source: str = "scenario", now: float | None = None
    ) -> None:
        top = _Reader(source, "", scenario, _TOP_KEYS)
        self.source = source
        self.node = top.str_("node", "gpu-node")
        self.driver_version = top.str_("driver_version", "575.57.08")
        self.cuda_driver_version = top.str_("cuda_driver_version", "12.9")
        self.uptime_s = top.number_("uptime_s", 86400.0, 1.0, 10 * 365 * 86400.0)
        product = top.str_("product", "H100-80GB")
        if product not in PRESETS:
            top.fail("product", f"unknown product {product!r}; presets: {', '.join(PRESETS)}")
        self.preset = PRESETS[product]
        count = top.int_("gpu_count", 8, 0, _MAX_GPUS)
        self.gpu_count = count
        self.boot_time = (time.time() if now is None else now) - self.uptime_s
        self.disabled_tools = frozenset(self._tool_names(top))
        self._closed = threading.Event()
        self._slow_s = 0.0
        self._hang_s = 0.0  # one GPU hangs: calls wait this long, then report it hung
        self._kmsg: list[tuple[float, int, str]] = []  # (ago_s, priority, line)
        self._aer: dict[int, AerCounts] = {}
        self._procs: dict[int, list[GpuProcess]] = {i: [] for i in range(count)}

        placed = [
            self._add_process(_Reader(source, f"processes[{i}]", item, _PROC_KEYS), count)
            for i, item in enumerate(top.list_("processes"))
        ]
        explicit = self._explicit_unsupported(top, count)
        self._gpus = [self._base_gpu(i, bus) for i, bus in enumerate(_buses(self.preset, count))]
        self._implicit = [self._preset_unsupported() for _ in range(count)]
        self._explicit = explicit
        self._apply_mig(top, count)
        for r, gpu in placed:  # a process's gpu_instance is one of the MIG instances
            self._place_in_instance(r, gpu)
        for i, item in enumerate(top.list_("faults")):
            self._apply_fault(f"faults[{i}]", item, count)
        self._apply_overrides(top, count)
        for i, item in enumerate(top.list_("kmsg")):
            self._add_kmsg_line(_Reader(source, f"kmsg[{i}]", item, _KMSG_KEYS))
        self._infiniband = self._ib_ports(top)
        self._journal = self._journal_lines(top)
        self._finish()

    # ---- Backend protocol ----------------------------------------------------------

    def driver(self) -> DriverInfo:
        major = self.cuda_driver_version.split(".")[0]
        return DriverInfo(
            driver_version=self.driver_version,
            cuda_driver_version=self.cuda_driver_version,
            nvml_version=f"{major}.{self.driver_version}",
            gpu_count=self.gpu_count,
        )

    def inventory(self) -> list[GpuInventory]:
        self._block()
        out = []
        for g, unsupported in zip(self._gpus, self._unsupported, strict=True):
            kw = {k: g[k] for k in _INVENTORY_FIELDS if k not in _DERIVED and k != "unsupported"}
            kw["mig_instances"] = list(g["mig_instances"])
            derived = []
            kw["ecc_mode_current"] = g["ecc_enabled"]
            if "ecc_enabled" in unsupported:
                derived.append("ecc_mode_current")
            if "nvlinks" in unsupported:
                derived += ["nvlink_links_total", "nvlink_links_up"]
            elif not g["lost"]:
                kw["nvlink_links_total"] = len(g["nvlinks"])
                kw["nvlink_links_up"] = sum(1 for link in g["nvlinks"] if link.active)
            kw["unsupported"] = sorted([q for q in _INVENTORY_FIELDS if q in unsupported] + derived)
            out.append(GpuInventory(**kw))
        return out

    def host(self) -> HostFacts:
        """The simulated node's sysfs facts (AER counters, RDMA ports) from the scenario:
        never the real /sys of the machine the fake runs on."""
        aer = {
            g["pci_bus_id"]: self._aer[g["index"]] for g in self._gpus if g["index"] in self._aer
        }
        ports = None if self._infiniband is None else list(self._infiniband)
        return HostFacts(aer=aer, infiniband=ports, source="scenario")

    def health(self) -> list[GpuHealthData]:
        self._block()
        out = []
        for g, unsupported in zip(self._gpus, self._unsupported, strict=True):
            kw = {k: g[k] for k in _HEALTH_FIELDS if k not in ("unsupported", "pcie_aer")}
            kw["nvlinks"] = list(g["nvlinks"])
            kw["unsupported"] = [q for q in _HEALTH_FIELDS if q in unsupported]
            out.append(GpuHealthData(**kw))
        return out

    def processes(self) -> list[GpuProcesses]:
        self._block()
        out = []
        for g, unsupported in zip(self._gpus, self._unsupported, strict=True):
            i = g["index"]
            if g["lost"]:
                out.append(GpuProcesses(i, g["uuid"], lost=True, error=g["error"]))
            elif "processes" in unsupported:
                out.append(GpuProcesses(i, g["uuid"], unsupported=["processes"]))
            else:
                out.append(GpuProcesses(i, g["uuid"], list(self._procs[i])))
        return out

    def nvlink(self) -> NvLinkTopology:
        self._block()
        gpus = [(g["index"], g["uuid"], list(g["nvlinks"])) for g in self._gpus]
        unsupported = ["nvlinks"] if any("nvlinks" in u for u in self._unsupported) else []
        p2p = []
        alive = [g for g in self._gpus if not g["lost"]]
        half = max(1, self.gpu_count // 2)
        for a_pos, a in enumerate(alive):
            for b in alive[a_pos + 1 :]:
                ia, ib = a["index"], b["index"]
                active = min(
                    sum(1 for link in a["nvlinks"] if link.active),
                    sum(1 for link in b["nvlinks"] if link.active),
                )
                if active:
                    p2p.append(P2PLink(ia, ib, "NVLINK", active))
                elif ia // 2 == ib // 2:
                    p2p.append(P2PLink(ia, ib, "SINGLE_SWITCH"))
                elif ia // half == ib // half:
                    p2p.append(P2PLink(ia, ib, "NUMA_NODE"))
                else:
                    p2p.append(P2PLink(ia, ib, "SYSTEM"))
        # As NVML does: a GPU that cannot be read is named in errors, not silently idle.
        errors = [
            f"GPU {g['index']}: {g['error'] or 'GPU is lost'}" for g in self._gpus if g["lost"]
        ]
        return NvLinkTopology(gpus=gpus, p2p=p2p, unsupported=unsupported, errors=errors)

    def kmsg(self) -> tuple[float, list[KmsgRecord]]:
        """The scenario's kernel log: its own lines plus those its faults imply."""
        records = []
        ordered = sorted(self._kmsg, key=lambda r: -r[0])  # oldest first; stable for ties
        for seq, (ago, prio, line) in enumerate(ordered, start=1021):
            usec = int(round((self.uptime_s - ago) * 1_000_000))
            records.append(
                KmsgRecord(priority=prio, sequence=seq, usec_since_boot=usec, message=line)
            )
        return self.boot_time, records

    def close(self) -> None:
        self._closed.set()  # wakes any call blocked by a slow_nvml fault

    # ---- building the node ---------------------------------------------------------

    def _tool_names(self, top: _Reader) -> list[str]:
        names = top.list_("disabled_tools")
        for i, name in enumerate(names):
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                top.fail(f"disabled_tools[{i}]", f"expected a tool name, got {_json_type(name)}")
        return names

    def _add_process(self, r: _Reader, count: int) -> tuple[_Reader, int]:
        gpu = r.gpu("gpu", count)
        if "pid" not in r.obj:
            r.fail("pid", "missing; give the process id")
        pid = r.int_("pid", 0, 1, 2**22)
        mem = r.int_("used_memory_mib", 1024, 0, self.preset.memory_total_mib)
        kind = r.str_("kind", "compute")
        if kind not in ("compute", "graphics"):
            r.fail("kind", f"expected 'compute' or 'graphics', got {kind!r}")
        name = r.str_("name", "python3") if "name" in r.obj else None
        if any(p.pid == pid for p in self._procs[gpu]):
            r.fail("pid", f"pid {pid} is listed twice on GPU {gpu}")
        self._procs[gpu].append(GpuProcess(pid=pid, used_memory_mib=mem, kind=kind, name=name))
        return r, gpu

    def _place_in_instance(self, r: _Reader, gpu: int) -> None:
        """A process's ``gpu_instance``: the MIG instance of its GPU it runs in."""
        if "gpu_instance" not in r.obj:
            return
        wanted = r.int_("gpu_instance", 0, 0, 99)
        instances: list[MigInstance] = self._gpus[gpu]["mig_instances"]
        if not instances:
            r.fail("gpu_instance", f"GPU {gpu} has no MIG instances (give it a 'mig' entry)")
        for instance in instances:
            if instance.gpu_instance_id == wanted:
                procs = self._procs[gpu]
                at = next(k for k, p in enumerate(procs) if p.pid == r.obj["pid"])
                procs[at] = replace(
                    procs[at],
                    gpu_instance_id=instance.gpu_instance_id,
                    compute_instance_id=instance.compute_instance_id,
                )
                return
        r.fail(
            "gpu_instance",
            f"GPU {gpu} has no GPU instance {wanted}; its MIG GPU instances are "
            + ", ".join(str(m.gpu_instance_id) for m in instances),
        )

    def _explicit_unsupported(self, top: _Reader, count: int) -> list[set[str]]:
        names = set()
        for i, q in enumerate(top.list_("unsupported")):
            if not isinstance(q, str) or q not in QUERIES:
                top.fail(
                    f"unsupported[{i}]",
                    f"unknown query {q!r}; expected one of: {', '.join(sorted(QUERIES))}",
                )
            names.add(q)
        return [set(names) for _ in range(count)]

    def _preset_unsupported(self) -> set[str]:
        p, out = self.preset, set()
        if not p.mig:
            out |= {"mig_mode_current", "mig_mode_pending"}
        if p.row_remapping:  # NVML reports page retirement N/A where rows are remapped
            out |= {"retired_pages_pending", "retired_pages_dbe", "retired_pages_sbe"}
        else:
            out.add("remapped_rows")
        if not p.nvlinks:
            out.add("nvlinks")
        if not p.nvswitch_buses or p.compute_capability < "9":  # fabric info: Hopper HGX+
            out |= {"fabric_state", "fabric_status", "fabric_clique_id"}
            out.add("fabric_degraded_bandwidth")
        major = self.driver_version.split(".")[0]
        if major.isdigit() and int(major) < 565:
            out.add("recovery_action")  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION came with R565
        return out

    def _base_gpu(self, index: int, bus: int) -> dict[str, Any]:
        p = self.preset
        procs = self._procs[index]
        busy = bool(procs)
        # Deterministic small per-GPU variation so eight GPUs do not look cloned.
        jitter = _h32(self.node, index, "jitter") % 7
        nvlinks = []
        per_switch = -(-p.nvlinks // max(1, len(p.nvswitch_buses)))
        for link in range(p.nvlinks):
            switch = p.nvswitch_buses[link // per_switch] if p.nvswitch_buses else None
            nvlinks.append(
                NvLinkState(
                    link=link,
                    active=True,
                    remote_pci_bus_id=_nvml_pci(switch) if switch is not None else None,
                    replay_errors=0,
                    recovery_errors=0,
                    crc_flit_errors=0,
                    crc_data_errors=0,
                )
            )
        return {
            "index": index,
            "name": p.name,
            "uuid": _uuid(self.node, index, "GPU", "uuid"),
            "serial": p.serial_prefix + f"{_h32(self.node, index, 'serial') % 10**9:09d}",
            "pci_bus_id": _nvml_pci(bus),
            "memory_total_mib": p.memory_total_mib,
            "memory_used_mib": sum(pr.used_memory_mib or 0 for pr in procs),
            "mig_mode_current": False,
            "mig_mode_pending": False,
            "mig_instances": [],
            "persistence_mode": True,
            "ecc_mode_pending": True,
            "power_limit_w": p.power_limit_w,
            "power_default_limit_w": p.power_limit_w,
            "power_max_limit_w": p.power_limit_w,
            "sm_clock_mhz": p.sm_clock_max_mhz if busy else p.sm_clock_idle_mhz,
            "mem_clock_mhz": p.mem_clock_max_mhz if busy else p.mem_clock_idle_mhz,
            "sm_clock_max_mhz": p.sm_clock_max_mhz,
            "mem_clock_max_mhz": p.mem_clock_max_mhz,
            "app_sm_clock_mhz": p.sm_clock_max_mhz,
            "app_mem_clock_mhz": p.mem_clock_max_mhz,
            # Real links train down at idle; the fake keeps them up so drift stays simple.
            "pcie_link_gen": p.pcie_gen_max,
            "pcie_link_gen_max": p.pcie_gen_max,
            "pcie_link_width": 16,
            "pcie_link_width_max": 16,
            "utilization_gpu_pct": 95 + jitter % 5 if busy else 0,
            "utilization_memory_pct": 38 + jitter * 3 if busy else 0,
            "compute_capability": p.compute_capability,
            "vbios_version": p.vbios_version,
            "lost": False,
            "error": None,
            "temperature_c": (52 if busy else 31) + jitter,
            "temp_slowdown_c": p.temp_slowdown_c,
            "temp_shutdown_c": p.temp_shutdown_c,
            "power_w": round(
                p.power_limit_w * 0.68 + jitter * 4.3 if busy else p.idle_power_w + jitter * 0.7,
                2,
            ),
            "clock_event_reasons": 0 if busy else CLOCK_EVENT_GPU_IDLE,
            "ecc_enabled": True,
            "ecc_volatile_uncorrected": 0,
            "ecc_aggregate_uncorrected": 0,
            "ecc_volatile_corrected": 0,
            "retired_pages_pending": False,
            "retired_pages_dbe": 0,
            "retired_pages_sbe": 0,
            "remapped_rows": RemappedRows(corrected=0, uncorrected=0, pending=False, failure=False),
            "pcie_replay_counter": 0,
            "nvlinks": nvlinks,
            "recovery_action": 0,
            "fabric_state": "completed",
            "fabric_status": "success",
            "fabric_clique_id": 1,
            "fabric_degraded_bandwidth": False,
        }

    def _apply_mig(self, top: _Reader, count: int) -> None:
        raw = top.obj.get("mig")
        if raw is None:
            return
        items = raw if isinstance(raw, list) else [raw]
        for n, item in enumerate(items):
            where = f"mig[{n}]" if isinstance(raw, list) else "mig"
            r = _Reader(self.source, where, item, frozenset({"gpu", "profiles"}))
            gpu = r.gpu("gpu", count)
            if not self.preset.mig:
                r.fail("gpu", f"{self.preset.name} does not support MIG")
            g = self._gpus[gpu]
            if g["mig_mode_current"]:
                r.fail("gpu", f"GPU {gpu} already has MIG instances")
            slices = 0
            instances = []
            for k, profile in enumerate(r.list_("profiles")):
                m = _PROFILE.match(profile) if isinstance(profile, str) else None
                if m is None:
                    r.fail(
                        f"profiles[{k}]",
                        f"expected a MIG profile like '3g.40gb', got {_json_type(profile)}",
                    )
                slices += int(m.group(1))
                gb = int(m.group(2))
                instances.append(
                    MigInstance(
                        gpu_instance_id=k + 1,
                        compute_instance_id=0,
                        uuid=_uuid(self.node, gpu, "MIG", f"mig{k}"),
                        profile=profile,
                        memory_total_mib=_MIG_MIB.get(gb, gb * 1024),
                    )
                )
            if slices > 7:
                r.fail("profiles", f"the profiles need {slices} compute slices; a GPU has 7")
            g.update(mig_mode_current=True, mig_mode_pending=True, mig_instances=instances)

    def _needs(self, r: _Reader, gpu: int, *queries: str) -> None:
        """A fault sets these queries: they must not be declared unsupported."""
        for q in queries:
            if q in self._explicit[gpu]:
                r.fail("kind", f"needs {q!r} on GPU {gpu}, which the scenario lists as unsupported")
            self._implicit[gpu].discard(q)

    def _apply_fault(self, where: str, item: Any, count: int) -> None:
        kind = item.get("kind") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in FAULT_KINDS:
            kinds = ", ".join(sorted(FAULT_KINDS))
            if not isinstance(item, dict):
                _fail(self.source, where, f"expected a JSON object, got {_json_type(item)}")
            _fail(
                self.source,
                f"{where}.kind",
                f"unknown fault kind {kind!r}; expected one of: {kinds}",
            )
        r = _Reader(self.source, where, item, FAULT_KINDS[kind] | {"gpu", "kind"})
        gpu = r.gpu("gpu", count)
        getattr(self, f"_fault_{kind}")(r, gpu)

    def _ago(self, r: _Reader, default: float) -> float:
        if "ago_s" in r.obj:
            return r.number_("ago_s", 0.0, 0.0, self.uptime_s)
        return min(default, self.uptime_s)

    def _log(self, ago: float, line: str, priority: int = _KMSG_ERR) -> None:
        self._kmsg.append((max(0.0, min(ago, self.uptime_s)), priority, line))

    def _xid_line(
        self,
        gpu: int,
        xid: int,
        text: str,
        pid: int | None = None,
        process: str | None = None,
        tag: str = "",
    ) -> str:
        pci = _xid_pci(self._gpus[gpu]["pci_bus_id"])
        who = (
            f"pid={pid}, name={process or 'python3'}" if pid else "pid='<unknown>', name=<unknown>"
        )
        return f"NVRM: Xid (PCI:{pci}{tag}): {xid}, {who}, {text}"

    def _instance_tag(self, r: _Reader, gpu: int) -> str:
        """The driver's MIG attribution for a fault's Xid line: " GPU-I:05" (and
        " GPU-CI:00") when the fault names a ``gpu_instance`` of the GPU's MIG instances."""
        if "gpu_instance" not in r.obj:
            if "compute_instance" in r.obj:
                r.fail("compute_instance", "needs gpu_instance (the GPU instance it belongs to)")
            return ""
        instance = r.int_("gpu_instance", 0, 0, 99)
        known = [m.gpu_instance_id for m in self._gpus[gpu]["mig_instances"]]
        if not known:
            r.fail("gpu_instance", f"GPU {gpu} has no MIG instances (give it a 'mig' entry)")
        if instance not in known:
            r.fail(
                "gpu_instance",
                f"GPU {gpu} has no GPU instance {instance}; its MIG GPU instances are "
                + ", ".join(map(str, known)),
            )
        tag = f" GPU-I:{instance:02d}"
        if "compute_instance" in r.obj:
            tag += f" GPU-CI:{r.int_('compute_instance', 0, 0, 99):02d}"
        return tag

    def _recovery_line(self, gpu: int, action: int) -> str:
        pci = _xid_pci(self._gpus[gpu]["pci_bus_id"])
        return (
            f"NVRM: Xid (PCI:{pci}): 154, GPU recovery action changed from 0x0 (None) to "
            f"0x{action:x} ({_RECOVERY_LABELS[action]})"
        )

    def _pid(self, r: _Reader, gpu: int) -> tuple[int | None, str | None]:
        """The pid/name an Xid line names: the fault's, else the GPU's first process."""
        if "pid" in r.obj:
            return r.int_("pid", 0, 1, 2**22), r.str_("process", "python3")
        procs = self._procs[gpu]
        return (procs[0].pid, procs[0].name) if procs else (None, None)

    def _fault_fell_off_bus(self, r: _Reader, gpu: int) -> None:
        ago = self._ago(r, 780.0)
        g = self._gpus[gpu]
        g["lost"] = True
        g["error"] = (
            "GPU is lost (NVML_ERROR_GPU_IS_LOST): it has fallen off the bus and does not "
            "answer; see Xid 79 in the kernel log"
        )
        pci = g["pci_bus_id"]
        tag = self._instance_tag(r, gpu)
        self._log(ago, f"NVRM: GPU at PCI:{_xid_pci(pci)}: {g['uuid']}", _KMSG_WARN)
        self._log(ago, self._xid_line(gpu, 79, _XID_TEXT[79], tag=tag))
        self._log(ago, f"NVRM: GPU {pci[4:].lower()}: GPU has fallen off the bus.", _KMSG_WARN)
        self._log(ago, f"NVRM: GPU Board Serial Number: {g['serial']}", _KMSG_WARN)
        action = r.obj.get("recovery_action", 2)
        if action is not None:
            action = r.int_("recovery_action", 2, 0, 4)
            self._log(ago - 0.6, self._recovery_line(gpu, action))

    def _fault_row_remap_failure(self, r: _Reader, gpu: int) -> None:
        ago = self._ago(r, 1320.0)
        rows = r.int_("uncorrected_rows", 7, 1, 512)
        self._needs(
            r, gpu, "remapped_rows", "ecc_volatile_uncorrected", "ecc_aggregate_uncorrected"
        )
        g = self._gpus[gpu]
        g["remapped_rows"] = RemappedRows(
            corrected=0, uncorrected=rows, pending=False, failure=True
        )
        g["ecc_volatile_uncorrected"] = 2
        g["ecc_aggregate_uncorrected"] = max(g["ecc_aggregate_uncorrected"] or 0, rows + 2)
        pid, name = self._pid(r, gpu)
        # The story a real log tells: a DBE, its row marked for remapping, later a second
        # DBE in a bank with no spare rows left, and the remap failure.
        self._log(ago + 1800, self._xid_line(gpu, 48, _XID_TEXT[48], pid, name))
        self._log(ago + 1800, self._xid_line(gpu, 63, _XID_TEXT[63]))
        self._log(ago + 2, self._xid_line(gpu, 48, _XID_TEXT[48], pid, name))
        self._log(ago, self._xid_line(gpu, 64, _XID_TEXT[64]))

    def _fault_thermal_throttle(self, r: _Reader, gpu: int) -> None:
        g = self._gpus[gpu]
        slowdown = g["temp_slowdown_c"] or self.preset.temp_slowdown_c
        self._needs(r, gpu, "temperature_c", "clock_event_reasons")
        g["temperature_c"] = r.int_("temperature_c", slowdown + 1, -40, 150)
        g["clock_event_reasons"] = (
            CLOCK_EVENT_HW_SLOWDOWN
            | CLOCK_EVENT_SW_THERMAL_SLOWDOWN
            | CLOCK_EVENT_HW_THERMAL_SLOWDOWN
        )
        g["sm_clock_mhz"] = int(self.preset.sm_clock_max_mhz * 0.55)
        g["power_w"] = round(self.preset.power_limit_w * 0.52, 2)

    def _fault_xid(self, r: _Reader, gpu: int) -> None:
        if "xid" not in r.obj:
            r.fail("xid", "missing; say which Xid code to log")
        xid = r.int_("xid", 0, 1, 999)
        ago = self._ago(r, 600.0)
        pid, name = self._pid(r, gpu)
        if xid == 154:  # the driver prints no pid/name on recovery-action reports
            line = self._recovery_line(gpu, 1)
            if "message" in r.obj:
                line = line.split(", ", 1)[0] + ", " + r.str_("message", "")
            self._log(ago, line)
            return
        text = r.str_("message", _XID_TEXT.get(xid, "Ch 00000010").format(link=0))
        self._log(ago, self._xid_line(gpu, xid, text, pid, name, self._instance_tag(r, gpu)))

    def _fault_nvlink_errors(self, r: _Reader, gpu: int) -> None:
        g = self._gpus[gpu]
        links = self.preset.nvlinks
        if not links:
            r.fail("kind", f"{self.preset.name} has no NVLink")
        self._needs(r, gpu, "nvlinks")
        link = r.int_("link", 3 % links, 0, links - 1)
        down = r.bool_("down", False)
        state = g["nvlinks"][link]
        g["nvlinks"][link] = NvLinkState(
            link=link,
            active=not down,
            remote_pci_bus_id=state.remote_pci_bus_id,
            replay_errors=r.int_("replay", 112),
            recovery_errors=r.int_("recovery", 2),
            crc_flit_errors=r.int_("crc_flit", 1620),
            crc_data_errors=r.int_("crc_data", 3),
        )
        if down:
            text = _XID_TEXT[74].format(link=link)
            self._log(self._ago(r, 600.0), self._xid_line(gpu, 74, text))

    def _fault_pcie_replay(self, r: _Reader, gpu: int) -> None:
        self._needs(r, gpu, "pcie_replay_counter")
        self._gpus[gpu]["pcie_replay_counter"] = r.int_("count", 2400)

    def _fault_pcie_link_degraded(self, r: _Reader, gpu: int) -> None:
        """The link trained below what the GPU and slot can do (riser, retimer, seating)."""
        self._needs(r, gpu, "pcie_link_gen", "pcie_link_width")
        g = self._gpus[gpu]
        gen_max, width_max = g["pcie_link_gen_max"] or 5, g["pcie_link_width_max"] or 16
        g["pcie_link_gen"] = r.int_("gen", max(1, gen_max - 1), 1, gen_max)
        g["pcie_link_width"] = r.int_("width", width_max // 2, 1, width_max)

    def _fault_sxid(self, r: _Reader, gpu: int) -> None:
        """An NVSwitch error on a switch this GPU's links go through."""
        if not self.preset.nvswitch_buses:
            r.fail("kind", f"{self.preset.name} nodes have no NVSwitch")
        if "sxid" not in r.obj:
            r.fail("sxid", "missing; say which SXid code to log (e.g. 12028 non-fatal)")
        code = r.int_("sxid", 0, 1, 99999)
        fatal = r.bool_("fatal", False)
        switch = r.int_("switch", 0, 0, len(self.preset.nvswitch_buses) - 1)
        link = r.int_("link", 4 * gpu + 1, 0, 63)
        bus = self.preset.nvswitch_buses[switch]
        text = (
            "Fatal, Link {link} sourcetrack timeout error"
            if fatal
            else ("Non-fatal, Link {link} egress non-posted PRIV error (First)")
        )
        ago = self._ago(r, 420.0)
        for n in range(r.int_("count", 1, 1, 1000)):
            self._log(
                ago + n,
                f"nvidia-nvswitch{switch}: SXid (PCI:0000:{bus:02x}:00.0): {code}, "
                + text.format(link=link),
            )

    def _fault_pcie_aer(self, r: _Reader, gpu: int) -> None:
        """PCIe Advanced Error Reporting counters in sysfs (since boot)."""
        correctable = r.int_("correctable", 0)
        nonfatal, fatal = r.int_("nonfatal", 0), r.int_("fatal", 0)
        details = {k: v for k, v in (("BadTLP", correctable), ("CmpltTO", nonfatal)) if v}
        self._aer[gpu] = AerCounts(correctable, nonfatal, fatal, details)

    def _fault_fabric_manager(self, r: _Reader, gpu: int) -> None:
        """The GPU is not (yet) registered with Fabric Manager (nvidia-fabricmanager down)."""
        self._needs(r, gpu, "fabric_state", "fabric_status")
        state = r.str_("state", "not_started")
        if state not in FABRIC_STATES:
            r.fail("state", f"expected one of {', '.join(FABRIC_STATES)}, got {state!r}")
        g = self._gpus[gpu]
        g["fabric_state"] = state
        g["fabric_status"] = r.str_("status", "success")

    def _fault_gpu_reset(self, r: _Reader, gpu: int) -> None:
        """The GPU was reset (nvidia-smi -r or a driver recovery): the driver attaches it
        again, which the kernel log shows as a second "GPU at PCI" line."""
        g = self._gpus[gpu]
        ago = self._ago(r, 1200.0)
        pci = _xid_pci(g["pci_bus_id"])
        self._log(self.uptime_s, f"NVRM: GPU at PCI:{pci}: {g['uuid']}", _KMSG_INFO)
        self._log(ago, f"nvidia {pci}.0: GPU reset requested by nvidia-smi", _KMSG_INFO)
        self._log(ago - 1, f"NVRM: GPU at PCI:{pci}: {g['uuid']}", _KMSG_INFO)

    def _fault_power_cap(self, r: _Reader, gpu: int) -> None:
        """The enforced limit was lowered (BMC/DCGM power capping, `nvidia-smi -pl`)."""
        g = self._gpus[gpu]
        self._needs(r, gpu, "power_w", "power_limit_w", "clock_event_reasons")
        default = g["power_default_limit_w"] or self.preset.power_limit_w
        limit = r.number_("limit_w", round(default / 2), 1.0, default)
        g["power_limit_w"] = limit
        g["power_w"] = r.number_("power_w", round(limit * 0.99, 2), 0.0, 10 * default)
        g["clock_event_reasons"] = CLOCK_EVENT_SW_POWER_CAP
        g["sm_clock_mhz"] = int(self.preset.sm_clock_max_mhz * 0.7)

    def _fault_ecc_uncorrectable(self, r: _Reader, gpu: int) -> None:
        self._needs(r, gpu, "ecc_volatile_uncorrected", "ecc_aggregate_uncorrected")
        volatile = r.int_("volatile", 1, 0, 10**6)
        aggregate = r.int_("aggregate", volatile, volatile, 10**9)
        g = self._gpus[gpu]
        g["ecc_volatile_uncorrected"] = volatile
        g["ecc_aggregate_uncorrected"] = aggregate
        if volatile and r.bool_("xid", True):
            pid, name = self._pid(r, gpu)
            self._log(self._ago(r, 900.0), self._xid_line(gpu, 48, _XID_TEXT[48], pid, name))

    def _fault_retired_pages_pending(self, r: _Reader, gpu: int) -> None:
        self._needs(r, gpu, "retired_pages_pending", "retired_pages_dbe", "retired_pages_sbe")
        g = self._gpus[gpu]
        g["retired_pages_pending"] = True
        g["retired_pages_dbe"] = r.int_("dbe", 1, 0, 512)
        g["retired_pages_sbe"] = r.int_("sbe", 0, 0, 512)
        if r.bool_("xid", True):
            text = "Dynamic Page Retirement: New page retired, reboot to activate (0x3c81f2)."
            self._log(self._ago(r, 900.0), self._xid_line(gpu, 63, text))

    def _fault_recovery_action(self, r: _Reader, gpu: int) -> None:
        self._needs(r, gpu, "recovery_action")
        if "action" not in r.obj:
            r.fail("action", "missing; give the NVML recovery action 0..4")
        action = r.int_("action", 0, 0, 4)
        self._gpus[gpu]["recovery_action"] = action
        if action and r.bool_("xid", True):
            self._log(self._ago(r, 300.0), self._recovery_line(gpu, action))

    def _fault_gpu_hang(self, r: _Reader, gpu: int) -> None:
        """One GPU stops answering NVML while the others work: what the NVML backend
        reports after its per-GPU bound (the GPU listed as lost, "appears hung")."""
        seconds = r.number_("seconds", 1.0, 0.0, 60.0)
        self._hang_s = max(self._hang_s, seconds)
        g = self._gpus[gpu]
        g["lost"] = True
        g["error"] = (
            f"NVML has not answered a query on this GPU for {seconds:.1f} s: the GPU or its "
            "driver appears hung (check the kernel log for XIDs)"
        )

    def _fault_slow_nvml(self, r: _Reader, gpu: int) -> None:
        self._slow_s = max(self._slow_s, r.number_("seconds", 30.0, 0.0, 3600.0))

    def _apply_overrides(self, top: _Reader, count: int) -> None:
        seen: set[int] = set()
        for n, item in enumerate(top.list_("gpus")):
            r = _Reader(self.source, f"gpus[{n}]", item, _GPU_OVERRIDE_KEYS)
            gpu = r.gpu("index", count)
            if gpu in seen:
                r.fail("index", f"GPU {gpu} is listed twice")
            seen.add(gpu)
            g = self._gpus[gpu]
            for q in r.list_("unsupported"):
                if not isinstance(q, str) or q not in QUERIES:
                    r.fail("unsupported", f"unknown query {q!r}")
                self._explicit[gpu].add(q)
            for key, value in item.items():
                if key in ("index", "unsupported"):
                    continue
                if value is None:
                    if key not in QUERIES:
                        r.fail(key, "cannot be null")
                    self._explicit[gpu].add(key)
                    continue
                if key in self._explicit[gpu]:
                    r.fail(key, "has a value but the scenario lists it as unsupported")
                g[key] = self._override_value(r, key, value)
                self._implicit[gpu].discard(key)

    def _override_value(self, r: _Reader, key: str, value: Any) -> Any:
        if key in _INT_FIELDS:
            return r.int_(key, 0, -273 if key == "temperature_c" else 0)
        if key in _FLOAT_FIELDS:
            return r.number_(key, 0.0)
        if key in _BOOL_FIELDS:
            return r.bool_(key, False)
        if key in _STR_FIELDS:
            return r.str_(key, "")
        if key == "remapped_rows":
            rr = _Reader(r.source, f"{r.where}.{key}", value, _REMAP_KEYS)
            return RemappedRows(
                corrected=rr.int_("corrected", 0),
                uncorrected=rr.int_("uncorrected", 0),
                pending=rr.bool_("pending", False),
                failure=rr.bool_("failure", False),
            )
        links = []
        if not isinstance(value, list):
            r.fail(key, f"expected a JSON array of links, got {_json_type(value)}")
        for n, raw in enumerate(value):
            lr = _Reader(r.source, f"{r.where}.nvlinks[{n}]", raw, _LINK_KEYS)
            remote = lr.str_("remote_pci_bus_id", "-") if "remote_pci_bus_id" in raw else None
            links.append(
                NvLinkState(
                    link=lr.int_("link", n, 0, 63),
                    active=lr.bool_("active", True),
                    remote_pci_bus_id=remote,
                    replay_errors=lr.int_("replay_errors", 0),
                    recovery_errors=lr.int_("recovery_errors", 0),
                    crc_flit_errors=lr.int_("crc_flit_errors", 0),
                    crc_data_errors=lr.int_("crc_data_errors", 0),
                )
            )
        return links

    def _add_kmsg_line(self, r: _Reader) -> None:
        if "line" not in r.obj:
            r.fail("line", "missing; give the kernel log message text")
        line = r.str_("line", "")
        if "\n" in line:
            r.fail("line", "one record per entry: split multi-line messages")
        ago = r.number_("ago_s", 0.0, 0.0, self.uptime_s)
        self._log(ago, line, r.int_("priority", _KMSG_INFO, 0, 7))

    def _finish(self) -> None:
        """Blank what each GPU does not support, and everything of a lost GPU."""
        self._unsupported: list[frozenset[str]] = []
        for g, implicit, explicit in zip(self._gpus, self._implicit, self._explicit, strict=True):
            if g["lost"]:
                for k in QUERIES - {"processes"}:
                    if k in g:
                        g[k] = [] if k == "nvlinks" else None
                g.update(mig_instances=[], memory_used_mib=None, error=g["error"] or "GPU is lost")
                self._unsupported.append(frozenset())
                continue
            gone = implicit | explicit
            for k in gone:
                if k in g:
                    g[k] = [] if k == "nvlinks" else None
            if "mig_mode_current" in gone:
                g["mig_instances"] = []
            self._unsupported.append(frozenset(gone))

    def journal(self) -> list[KmsgRecord] | None:
        """The scenario's persistent log (journald), lines from before this boot included
        (negative times: ``ago_s`` beyond the uptime); None when it has none."""
        if self._journal is None:
            return None
        return [
            KmsgRecord(
                priority=prio,
                sequence=n,
                usec_since_boot=int((self.uptime_s - ago) * 1e6),
                message=line,
            )
            for n, (ago, prio, line) in enumerate(sorted(self._journal, key=lambda r: -r[0]))
        ]

    def _journal_lines(self, top: _Reader) -> list[tuple[float, int, str]] | None:
        if "journal" not in top.obj:
            return None
        lines = []
        for n, raw in enumerate(top.list_("journal")):
            r = _Reader(self.source, f"journal[{n}]", raw, _KMSG_KEYS)
            if "line" not in r.obj:
                r.fail("line", "missing; give the kernel log message text")
            ago = r.number_("ago_s", 0.0, 0.0, 10 * 365 * 86400.0)
            lines.append((ago, r.int_("priority", _KMSG_ERR, 0, 7), r.str_("line", "")))
        # This boot's lines are in the ring buffer too, as on a real node.
        for ago, prio, line in lines:
            if ago <= self.uptime_s:
                self._log(ago, line, prio)
        return lines

    def _ib_ports(self, top: _Reader) -> list[IbPort] | None:
        if "infiniband" not in top.obj:
            return None  # no RDMA devices on this node
        ports = []
        for n, raw in enumerate(top.list_("infiniband")):
            r = _Reader(self.source, f"infiniband[{n}]", raw, _IB_KEYS)
            ports.append(
                IbPort(
                    device=r.str_("device", f"mlx5_{n}"),
                    port=r.int_("port", 1, 1, 255),
                    state=r.str_("state", "ACTIVE"),
                    phys_state=r.str_("phys_state", "LinkUp"),
                    rate=r.str_("rate", "400 Gb/sec (4X NDR)"),
                    link_layer=r.str_("link_layer", "InfiniBand"),
                    link_downed=r.int_("link_downed", 0) if "link_downed" in r.obj else None,
                )
            )
        return ports

    def _block(self) -> None:
        """A slow_nvml fault: stall like a hung NVML call (until the timeout or close())."""
        if self._slow_s:
            self._closed.wait(self._slow_s)
        elif self._hang_s:
            self._closed.wait(self._hang_s)


_PROC_KEYS = frozenset({"gpu", "pid", "name", "used_memory_mib", "kind", "gpu_instance"})
_KMSG_KEYS = frozenset({"ago_s", "line", "priority"})
_IB_KEYS = _names("device port state phys_state rate link_layer link_downed")
_REMAP_KEYS = frozenset({"corrected", "uncorrected", "pending", "failure"})
_LINK_KEYS = _names(
    "link active remote_pci_bus_id replay_errors recovery_errors crc_flit_errors crc_data_errors"
)
# MIG instance memory (MiB) by the profile's nominal GB, as 80 GB parts report it.
_MIG_MIB = {10: 9984, 20: 20096, 40: 40320, 80: 81024}
