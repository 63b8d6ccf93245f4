"""NvmlBackend through nvidia-ml-py's real ctypes layer, over the fake libnvidia-ml.so.1.

pynvml dlopens ``libnvidia-ml.so.1`` once per process and the loader reads
LD_LIBRARY_PATH only at start-up, so every case runs the backend in a fresh Python
subprocess with the fake library (and its FAKE_NVML_CONFIG) in place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.agent.fakenvml import build as fakenvml

ROOT = Path(__file__).resolve().parents[2]

# Runs in the subprocess: build the backend, make the calls, print the results as JSON.
DRIVER = r"""
import dataclasses, json, os, sys, time
from agent.errors import AgentError

request = json.loads(sys.argv[1])
try:
    from agent.nvml import NvmlBackend
    backend = NvmlBackend(**request["kwargs"])
except AgentError as exc:
    print(json.dumps({"unavailable": str(exc), "type": type(exc).__name__}))
    sys.exit(0)
steps = []
for call in request["calls"]:
    if isinstance(call, dict):  # replace the (live) config file mid-session
        path = os.environ["FAKE_NVML_CONFIG"]
        with open(path + ".new", "w") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in call.items()))
        os.replace(path + ".new", path)
        continue
    started = time.monotonic()
    value = getattr(backend, call)()
    seconds = time.monotonic() - started
    if isinstance(value, list):
        value = [dataclasses.asdict(v) for v in value]
    else:
        value = dataclasses.asdict(value)
    steps.append({"call": call, "seconds": seconds, "result": value})
backend.close()
print(json.dumps({"steps": steps}))
sys.stdout.flush()
os._exit(0)  # don't wait for a thread left blocked in a hung fake NVML call
"""

Config = Mapping[str, object]


@pytest.fixture
def nvml(fake_nvml_lib: Path, tmp_path: Path) -> Callable[..., Any]:
    """``nvml(config, "health", ...)`` -> the results of those backend calls, in order.

    A call may be a dict: it replaces the config file (with ``live = 1`` the fake
    re-reads it). ``library`` picks another build; ``kwargs`` go to NvmlBackend.
    """
    count = 0

    def run(
        config: Config | None,
        *calls: str | Config,
        library: Path | None = None,
        kwargs: Mapping[str, Any] | None = None,
        env_extra: Mapping[str, str] | None = None,
    ) -> Any:
        nonlocal count
        count += 1
        path = None
        if config is not None:
            path = fakenvml.write_config(tmp_path / f"nvml-{count}.conf", config)
        env = fakenvml.fake_env(library or fake_nvml_lib, path)
        env.update(env_extra or {})
        request = json.dumps({"calls": list(calls), "kwargs": dict(kwargs or {})})
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, request],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        if "unavailable" in answer:
            return answer
        steps = answer["steps"]
        results = [step["result"] for step in steps]
        run.seconds = [step["seconds"] for step in steps]  # type: ignore[attr-defined]
        return results[0] if len(results) == 1 else results

    return run


def by_index(gpus: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {gpu["index"]: gpu for gpu in gpus}


# ---- inventory -----------------------------------------------------------------------


def test_inventory_of_the_default_node(nvml: Callable[..., Any]) -> None:
    driver, gpus = nvml(None, "driver", "inventory")
    assert driver == {
        "driver_version": "575.57.08",
        "cuda_driver_version": "12.9",
        "nvml_version": "12.575.57.08",
        "gpu_count": 8,
    }
    assert [g["index"] for g in gpus] == list(range(8))
    assert {g["name"] for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    uuids = [g["uuid"] for g in gpus]
    assert len(set(uuids)) == 8 and all(u.startswith("GPU-") and len(u) == 40 for u in uuids)
    assert len({g["serial"] for g in gpus}) == 8
    assert gpus[0]["pci_bus_id"] == "00000000:1B:00.0"
    assert gpus[7]["pci_bus_id"] == "00000000:DF:00.0"
    gpu = gpus[3]
    assert gpu["memory_total_mib"] == 81559
    assert gpu["compute_capability"] == "9.0"
    assert gpu["power_limit_w"] == 700.0
    assert (gpu["sm_clock_max_mhz"], gpu["mem_clock_max_mhz"]) == (1980, 2619)
    assert gpu["persistence_mode"] is True
    assert gpu["mig_mode_current"] is False and gpu["mig_instances"] == []
    assert gpu["vbios_version"] == "96.00.99.00.01"
    assert not any(g["lost"] or g["error"] or g["unsupported"] for g in gpus)


def test_inventory_values_come_from_the_driver(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu_count": 2,
        "name": "NVIDIA A100-SXM4-80GB",
        "driver_version": "550.54.15",
        "cuda_version": 12040,
        "compute_capability": "8.0",
        "gpu.1.uuid": "GPU-11111111-2222-3333-4444-555555555555",
        "gpu.1.pci_bus": "0x3b",
        "gpu.1.memory_used_mib": 1234,
        "gpu.1.power_limit_w": 400,
        "gpu.1.persistence_mode": 0,
        "gpu.1.sm_clock": 1410,
    }
    driver, gpus = nvml(config, "driver", "inventory")
    assert (driver["driver_version"], driver["cuda_driver_version"]) == ("550.54.15", "12.4")
    assert driver["gpu_count"] == len(gpus) == 2
    gpu = gpus[1]
    assert gpu["name"] == "NVIDIA A100-SXM4-80GB"
    assert gpu["uuid"] == "GPU-11111111-2222-3333-4444-555555555555"
    assert gpu["pci_bus_id"] == "00000000:3B:00.0"
    assert (gpu["memory_used_mib"], gpu["power_limit_w"]) == (1234, 400.0)
    assert (gpu["persistence_mode"], gpu["sm_clock_mhz"]) == (False, 1410)
    assert gpu["compute_capability"] == "8.0"


def test_mig_instances(nvml: Callable[..., Any]) -> None:
    gpus = nvml({"gpu.4.mig": "3g.40gb,2g.20gb,1g.10gb"}, "inventory")
    gpu = gpus[4]
    assert (gpu["mig_mode_current"], gpu["mig_mode_pending"]) == (True, True)
    instances = gpu["mig_instances"]
    assert [m["profile"] for m in instances] == ["3g.40gb", "2g.20gb", "1g.10gb"]
    assert [m["gpu_instance_id"] for m in instances] == [1, 2, 3]
    assert [m["memory_total_mib"] for m in instances] == [40960, 20480, 10240]
    assert all(m["uuid"].startswith("MIG-") and m["compute_instance_id"] == 0 for m in instances)
    assert gpus[3]["mig_mode_current"] is False and gpus[3]["mig_instances"] == []


def test_inventory_has_every_drift_input(nvml: Callable[..., Any]) -> None:
    """What issue 15's drift compares: VBIOS, ECC (current/pending), persistence, MIG,
    power limits, application and max clocks, PCIe gen/width current vs max, NVLinks up."""
    config = {
        "gpu.1.vbios_version": "96.00.74.00.1C",
        "gpu.1.ecc_pending": 0,
        "gpu.1.power_limit_w": 500,
        "gpu.1.app_sm_clock": 1755,
        "gpu.1.pcie_gen": 4,
        "gpu.1.pcie_width": 8,
        "gpu.1.nvlink_down": "2,9",
    }
    gpus = nvml(config, "inventory")
    same, odd = gpus[0], gpus[1]
    assert same["vbios_version"] == "96.00.99.00.01" and odd["vbios_version"] == "96.00.74.00.1C"
    assert (same["ecc_mode_current"], same["ecc_mode_pending"]) == (True, True)
    assert (odd["ecc_mode_current"], odd["ecc_mode_pending"]) == (True, False)
    assert (odd["power_limit_w"], odd["power_default_limit_w"], odd["power_max_limit_w"]) == (
        500.0,
        700.0,
        700.0,
    )
    assert (same["app_sm_clock_mhz"], same["app_mem_clock_mhz"]) == (1980, 2619)
    assert odd["app_sm_clock_mhz"] == 1755
    assert (same["pcie_link_gen"], same["pcie_link_gen_max"]) == (5, 5)
    assert (odd["pcie_link_gen"], odd["pcie_link_width"], odd["pcie_link_width_max"]) == (4, 8, 16)
    assert (same["nvlink_links_up"], same["nvlink_links_total"]) == (18, 18)
    assert (odd["nvlink_links_up"], odd["nvlink_links_total"]) == (16, 18)
    assert not any(g["unsupported"] or g["error"] for g in gpus)


def test_live_readings_for_stragglers(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu.2.sm_clock": 1200,
        "gpu.2.util_gpu": 99,
        "gpu.2.util_memory": 61,
        "gpu.2.clock_event_reasons": "0x4",
        "gpu.2.pcie_gen": 3,
    }
    gpu = nvml(config, "health")[2]
    assert (gpu["sm_clock_mhz"], gpu["sm_clock_max_mhz"]) == (1200, 1980)
    assert (gpu["utilization_gpu_pct"], gpu["utilization_memory_pct"]) == (99, 61)
    assert (gpu["pcie_link_gen"], gpu["pcie_link_gen_max"]) == (3, 5)
    assert (gpu["pcie_link_width"], gpu["pcie_link_width_max"]) == (16, 16)


def test_drift_and_reading_queries_a_driver_lacks_are_unsupported(
    nvml: Callable[..., Any], fake_nvml_lib: Path
) -> None:
    missing = [
        "nvmlDeviceGetApplicationsClock",
        "nvmlDeviceGetCurrPcieLinkGeneration",
        "nvmlDeviceGetMaxPcieLinkWidth",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceGetUtilizationRates",
    ]
    library = fakenvml.build(fake_nvml_lib.parent.parent, omit=missing)
    inventory, health = nvml(None, "inventory", "health", library=library)
    inv, gpu = inventory[0], health[0]
    assert {
        "app_sm_clock_mhz",
        "app_mem_clock_mhz",
        "pcie_link_gen",
        "pcie_link_width_max",
        "power_max_limit_w",
    } <= set(inv["unsupported"])
    assert inv["pcie_link_width"] == 16 and inv["app_sm_clock_mhz"] is None
    assert {"utilization_gpu_pct", "utilization_memory_pct", "pcie_link_gen"} <= set(
        gpu["unsupported"]
    )
    assert not inv["lost"] and inv["error"] is None and gpu["error"] is None


def test_fabric_manager_state(nvml: Callable[..., Any], fake_nvml_lib: Path) -> None:
    config = {
        "gpu.1.fabric_state": 1,
        "gpu.2.fabric_state": 3,
        "gpu.2.fabric_status": 999,
        "gpu.3.fabric_health_mask": 1,
        "gpu.4.fabric_state": 0,
    }
    gpus = nvml(config, "health")
    assert (gpus[0]["fabric_state"], gpus[0]["fabric_status"]) == ("completed", "success")
    assert gpus[0]["fabric_clique_id"] == 1 and gpus[0]["fabric_degraded_bandwidth"] is False
    assert gpus[1]["fabric_state"] == "not_started"
    assert gpus[2]["fabric_status"] == "Unknown Error"
    assert gpus[3]["fabric_degraded_bandwidth"] is True
    assert gpus[4]["fabric_state"] is None and "fabric_state" in gpus[4]["unsupported"]
    # A driver without the versioned call: the older one gives the state (no health mask).
    library = fakenvml.build(fake_nvml_lib.parent.parent, omit=["nvmlDeviceGetGpuFabricInfoV"])
    old = nvml(config, "health", library=library)
    assert old[1]["fabric_state"] == "not_started" and old[0]["fabric_state"] == "completed"
    assert old[3]["fabric_degraded_bandwidth"] is None


# ---- health --------------------------------------------------------------------------


def test_health_reads_every_value(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu.6.temperature": 91,
        "gpu.6.clock_event_reasons": "0x60",
        "gpu.5.remap_failure": 1,
        "gpu.5.remap_uncorrected": 3,
        "gpu.5.remap_corrected": 2,
        "gpu.5.ecc_volatile_uncorrected": 4,
        "gpu.5.ecc_aggregate_uncorrected": 12,
        "gpu.5.ecc_volatile_corrected": 7,
        "gpu.3.ecc_mode": 0,
        "gpu.0.power_w": 612.25,
        "gpu.4.power_limit_w": 350,
        "gpu.0.pcie_replay": 321,
        "gpu.0.recovery_action": 2,
        "gpu.0.nvlink.3.crc_flit": 12,
        "gpu.0.nvlink.4.replay": 5,
        "gpu.0.nvlink_down": "17",
        "unsupported": "",  # page retirement on too (pre-Ampere style), for GPU 1's pages
        "gpu.1.retired_pending": 1,
        "gpu.1.retired_dbe": 2,
        "gpu.1.retired_sbe": 3,
    }
    gpus = by_index(nvml(config, "health"))
    hot = gpus[6]
    assert (hot["temperature_c"], hot["temp_slowdown_c"], hot["temp_shutdown_c"]) == (91, 89, 92)
    assert hot["clock_event_reasons"] == 0x60
    bad = gpus[5]
    assert bad["remapped_rows"] == {
        "corrected": 2,
        "uncorrected": 3,
        "pending": False,
        "failure": True,
    }
    assert (bad["ecc_volatile_uncorrected"], bad["ecc_aggregate_uncorrected"]) == (4, 12)
    assert bad["ecc_volatile_corrected"] == 7 and bad["ecc_enabled"] is True
    g0 = gpus[0]
    assert (g0["power_w"], g0["power_limit_w"]) == (612.25, 700.0)
    assert (gpus[4]["power_limit_w"], gpus[4]["power_default_limit_w"]) == (350.0, 700.0)
    assert (g0["pcie_replay_counter"], g0["recovery_action"]) == (321, 2)
    links = g0["nvlinks"]
    assert [link["link"] for link in links] == list(range(18))
    assert links[3]["crc_flit_errors"] == 12 and links[4]["replay_errors"] == 5
    assert links[0]["crc_data_errors"] == 0 and links[0]["recovery_errors"] == 0
    assert links[17]["active"] is False and links[17]["replay_errors"] is None
    assert sum(link["active"] for link in links) == 17
    no_ecc = gpus[3]
    assert no_ecc["ecc_enabled"] is False and no_ecc["ecc_volatile_uncorrected"] is None
    retiring = gpus[1]
    assert retiring["retired_pages_pending"] is True
    assert (retiring["retired_pages_dbe"], retiring["retired_pages_sbe"]) == (2, 3)
    calm = gpus[7]
    assert (calm["temperature_c"], calm["clock_event_reasons"], calm["power_w"]) == (33, 1, 71.5)
    assert calm["remapped_rows"]["failure"] is False and calm["recovery_action"] == 0
    for gpu in gpus.values():
        assert not gpu["lost"] and gpu["error"] is None and gpu["unsupported"] == []
        assert gpu["uuid"].startswith("GPU-") and gpu["pci_bus_id"]


def test_health_rereads_readings_and_keeps_identity(nvml: Callable[..., Any]) -> None:
    first = {"live": 1, "gpu.2.temperature": 40, "gpu.2.pcie_replay": 0}
    second = {**first, "gpu.2.temperature": 85, "gpu.2.pcie_replay": 9, "name": "renamed"}
    before, after = nvml(first, "health", second, "health")
    assert (before[2]["temperature_c"], after[2]["temperature_c"]) == (40, 85)
    assert (before[2]["pcie_replay_counter"], after[2]["pcie_replay_counter"]) == (0, 9)
    # Static facts are read once per session: the name is the one first seen.
    assert after[2]["name"] == before[2]["name"] == "NVIDIA H100 80GB HBM3"


def test_unsupported_queries_are_listed_not_errors(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu.1.unsupported": "nvmlDeviceGetPcieReplayCounter,nvmlDeviceGetRemappedRows,"
        "nvmlDeviceGetTemperatureThreshold,nvmlDeviceGetEccMode,NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,"
        "nvmlDeviceGetCurrentClocksEventReasons,nvmlDeviceGetPowerManagementDefaultLimit",
        "gpu.1.nvlink_count": 0,
    }
    inventory, health = nvml(config, "inventory", "health")
    gpu = health[1]
    assert not gpu["lost"] and gpu["error"] is None
    assert set(gpu["unsupported"]) == {
        "pcie_replay_counter",
        "remapped_rows",
        "temp_slowdown_c",
        "temp_shutdown_c",
        "power_default_limit_w",
        "ecc_enabled",
        "ecc_volatile_uncorrected",
        "ecc_aggregate_uncorrected",
        "ecc_volatile_corrected",
        "recovery_action",
        "clock_event_reasons",
        "nvlinks",
        # H100 retires rows, not pages: the fake's default, as the real driver says
        "retired_pages_pending",
        "retired_pages_sbe",
        "retired_pages_dbe",
    }
    for name in ("pcie_replay_counter", "remapped_rows", "temp_slowdown_c", "recovery_action"):
        assert gpu[name] is None
    assert gpu["nvlinks"] == []
    assert gpu["temperature_c"] == 33 and gpu["power_w"] == 71.5  # the rest still read
    assert health[0]["pcie_replay_counter"] == 0 and "remapped_rows" not in health[0]["unsupported"]
    # Thresholds are health facts only; the rest shows in the inventory too.
    assert set(inventory[1]["unsupported"]) == {
        "power_default_limit_w",
        "ecc_mode_current",
        "ecc_mode_pending",
        "nvlink_links_up",
        "nvlink_links_total",
    }
    assert inventory[1]["error"] is None and inventory[1]["ecc_mode_current"] is None


def test_missing_symbols_fall_back_or_are_unsupported(
    nvml: Callable[..., Any], fake_nvml_lib: Path
) -> None:
    library = fakenvml.build(
        fake_nvml_lib.parent.parent,
        omit=[
            "nvmlDeviceGetTemperatureV",
            "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetPcieReplayCounter",
        ],
    )
    assert library != fake_nvml_lib
    config = {"gpu.3.temperature": 77, "gpu.3.clock_event_reasons": "0x88"}
    gpus = nvml(config, "health", "health", library=library)
    for health in gpus:
        gpu = health[3]
        # The current APIs missing (older driver): the deprecated calls give the readings.
        assert gpu["temperature_c"] == 77
        assert gpu["clock_event_reasons"] == 0x88
        assert gpu["pcie_replay_counter"] is None
        assert "pcie_replay_counter" in gpu["unsupported"]
        assert "temperature_c" not in gpu["unsupported"]
        assert not gpu["lost"] and gpu["error"] is None


# ---- faults ---------------------------------------------------------------------------


def test_lost_gpu_is_reported_and_the_others_still_answer(nvml: Callable[..., Any]) -> None:
    inventory, health, processes, topology = nvml(
        {"gpu.2.lost": 1}, "inventory", "health", "processes", "nvlink"
    )
    for gpus in (inventory, health, processes):
        lost = [g for g in gpus if g["lost"]]
        assert [g["index"] for g in lost] == [2]
        assert "GPU is lost" in lost[0]["error"]
        assert all(g["error"] is None for g in gpus if g["index"] != 2)
    assert health[2]["temperature_c"] is None and health[2]["unsupported"] == []
    assert health[3]["temperature_c"] == 33
    assert any(text.startswith("GPU 2:") and "GPU is lost" in text for text in topology["errors"])
    pairs = {(p["gpu_a"], p["gpu_b"]) for p in topology["p2p"]}
    assert (0, 1) in pairs and not any(2 in pair for pair in pairs)
    assert len(pairs) == 21  # C(7, 2): every pair of the seven live GPUs


def test_gpu_lost_mid_session_keeps_its_identity(nvml: Callable[..., Any]) -> None:
    first = {"live": 1}
    before, after = nvml(first, "health", {**first, "gpu.5.lost": 1}, "health")
    assert not before[5]["lost"]
    assert after[5]["lost"] and "GPU is lost" in after[5]["error"]
    # A GPU that falls off the bus is still named, so its XIDs can be matched to it.
    assert (after[5]["uuid"], after[5]["pci_bus_id"]) == (
        before[5]["uuid"],
        before[5]["pci_bus_id"],
    )


def test_unknown_error_and_unopenable_gpu_are_lost(nvml: Callable[..., Any]) -> None:
    config = {"gpu.3.handle_error": 999, "gpu.6.fail": "nvmlDeviceGetPowerUsage:999"}
    health = nvml(config, "health")
    assert health[3]["lost"] and "cannot open" in health[3]["error"]
    assert "Unknown Error" in health[3]["error"]
    # A GPU that answered its identity and then says "Unknown Error" has gone away.
    assert health[6]["lost"] and "Unknown Error" in health[6]["error"]
    assert health[6]["uuid"] and health[6]["temperature_c"] == 33


def test_other_errors_lose_one_field_only(nvml: Callable[..., Any]) -> None:
    health = nvml({"gpu.4.fail": "nvmlDeviceGetPowerUsage:4"}, "health")
    gpu = health[4]
    assert not gpu["lost"] and gpu["power_w"] is None
    assert gpu["error"] == "power_w: Insufficient Permissions"
    assert "power_w" not in gpu["unsupported"]
    assert gpu["temperature_c"] == 33 and gpu["power_limit_w"] == 700.0


def test_hung_gpu_is_bounded(nvml: Callable[..., Any]) -> None:
    config = {"gpu.3.sleep_s": 30, "gpu.3.sleep_on": "nvmlDeviceGetPowerUsage"}
    started = time.monotonic()
    first, second = nvml(config, "health", "health", kwargs={"gpu_timeout_s": 0.5})
    assert time.monotonic() - started < 15
    for health in (first, second):
        hung = health[3]
        assert hung["lost"] and "appears hung" in hung["error"]
        assert hung["uuid"]  # read before the stuck query
        assert all(not g["lost"] and g["temperature_c"] == 33 for g in health if g["index"] != 3)
    first_s, second_s = nvml.seconds  # type: ignore[attr-defined]
    # The stuck GPU gets its share of the bound (half of it here), not the whole call.
    assert 0.2 < first_s < 5
    # The stuck GPU is known: the next call doesn't wait for it again.
    assert second_s < 0.4


def test_several_hung_gpus_do_not_hide_the_rest(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu.2.sleep_s": 30,
        "gpu.2.sleep_on": "nvmlDeviceGetPowerUsage",
        "gpu.5.sleep_s": 30,
        "gpu.5.sleep_on": "nvmlDeviceGetPowerUsage",
    }
    health = nvml(config, "health", kwargs={"gpu_timeout_s": 2.0})
    assert [g["index"] for g in health if g["lost"]] == [2, 5]
    assert all(g["temperature_c"] == 33 for g in health if g["index"] not in (2, 5))
    (seconds,) = nvml.seconds  # type: ignore[attr-defined]
    assert seconds < 2.5  # within the one bound, though two GPUs never answered


def test_processes(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu.0.processes": "4242:python:40000,4343:torchrun:1024",
        "gpu.0.graphics_processes": "4242:python:40000,777:Xorg:12",
        "gpu.1.unsupported": "nvmlDeviceGetGraphicsRunningProcesses_v3",
    }
    gpus = nvml(config, "processes")
    procs = gpus[0]["processes"]
    assert [(p["pid"], p["name"], p["used_memory_mib"], p["kind"]) for p in procs] == [
        (4242, "python", 40000, "compute"),
        (4343, "torchrun", 1024, "compute"),
        (777, "Xorg", 12, "graphics"),
    ]
    assert gpus[0]["uuid"].startswith("GPU-") and gpus[0]["unsupported"] == []
    assert gpus[1]["processes"] == [] and gpus[1]["unsupported"] == ["graphics_processes"]
    assert all(p["gpu_instance_id"] is None for p in procs)  # NVML's 0xFFFFFFFF: not MIG
    assert all(p["compute_instance_id"] is None for p in procs)


def test_processes_on_mig_slices_carry_their_instances(nvml: Callable[..., Any]) -> None:
    config = {
        "gpu.4.mig": "3g.40gb,2g.20gb",
        "gpu.4.processes": "4242:python:9000:2,4343:python:100:1:0,4444:nvidia-smi:5",
    }
    procs = nvml(config, "processes")[4]["processes"]
    assert [(p["pid"], p["gpu_instance_id"], p["compute_instance_id"]) for p in procs] == [
        (4242, 2, 0),
        (4343, 1, 0),
        (4444, None, None),
    ]
    assert [p["used_memory_mib"] for p in procs] == [9000, 100, 5]


# ---- NVLink ---------------------------------------------------------------------------


def test_nvlink_topology_through_nvswitch(nvml: Callable[..., Any]) -> None:
    config = {"gpu.1.nvlink_down": "0,1", "gpu.0.nvlink.2.crc_data": 4}
    topology = nvml(config, "nvlink")
    assert [index for index, _, _ in topology["gpus"]] == list(range(8))
    index, uuid, links = topology["gpus"][0]
    assert uuid.startswith("GPU-") and len(links) == 18
    assert links[2]["crc_data_errors"] == 4
    assert links[0]["remote_pci_bus_id"] == "00000000:05:00.0"
    p2p = {(p["gpu_a"], p["gpu_b"]): p for p in topology["p2p"]}
    assert len(p2p) == 28
    assert {p["level"] for p in p2p.values()} == {"NVLINK"}
    assert p2p[(0, 2)]["nvlink_count"] == 18
    assert p2p[(0, 1)]["nvlink_count"] == 16  # two of GPU 1's links are down
    assert topology["unsupported"] == [] and topology["errors"] == []


def test_pcie_topology_with_nvlink_bridges(nvml: Callable[..., Any]) -> None:
    config = {"nvlink_remote": "bridge", "nvlink_count": 4, "gpu_count": 8}
    topology = nvml(config, "nvlink")
    p2p = {(p["gpu_a"], p["gpu_b"]): p for p in topology["p2p"]}
    assert (p2p[(0, 1)]["level"], p2p[(0, 1)]["nvlink_count"]) == ("NVLINK", 4)
    assert (p2p[(0, 2)]["level"], p2p[(0, 2)]["nvlink_count"]) == ("NUMA_NODE", 0)
    assert p2p[(0, 5)]["level"] == "SYSTEM"
    _, _, links = topology["gpus"][2]
    bus_3 = nvml(config, "inventory")[3]["pci_bus_id"]
    assert {link["remote_pci_bus_id"] for link in links} == {bus_3}


def test_gpus_without_nvlink(nvml: Callable[..., Any]) -> None:
    topology = nvml({"nvlink_count": 0, "gpu_count": 2}, "nvlink")
    assert topology["gpus"][0][2] == [] and "GPU 0: nvlinks" in topology["unsupported"]
    assert topology["p2p"] == [{"gpu_a": 0, "gpu_b": 1, "level": "NUMA_NODE", "nvlink_count": 0}]


# ---- start-up failures ------------------------------------------------------------------


def test_no_library_says_what_to_check(nvml: Callable[..., Any], tmp_path: Path) -> None:
    # An unloadable libnvidia-ml.so.1 first on the search path: dlopen fails here even
    # on a host that has the real library installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / fakenvml.LIBRARY_NAME).write_bytes(b"")
    answer = nvml(None, "driver", env_extra={"LD_LIBRARY_PATH": str(shadow)})
    assert answer["type"] == "BackendUnavailable"
    message = answer["unavailable"]
    assert "libnvidia-ml.so.1" in message
    assert "runtimeClassName: nvidia" in message and "NVIDIA_DRIVER_CAPABILITIES" in message


@pytest.mark.parametrize(
    ("code", "hint"),
    [(9, "driver is not loaded"), (4, "/dev/nvidia"), (18, "does not match the loaded kernel")],
)
def test_init_failure_says_what_to_check(nvml: Callable[..., Any], code: int, hint: str) -> None:
    answer = nvml({"init_error": code}, "driver")
    assert answer["type"] == "BackendUnavailable"
    assert hint in answer["unavailable"]


# ---- the real agent process ---------------------------------------------------------------


def test_agent_process_over_fake_nvml(fake_nvml_lib: Path, tmp_path: Path) -> None:
    """``python -m agent --backend nvml`` on the fake library, plain JSON-RPC on stdio."""
    config = fakenvml.write_config(
        tmp_path / "node.conf",
        {
            "gpu.2.lost": 1,
            "gpu.6.temperature": 95,
            "gpu.1.unsupported": "nvmlDeviceGetPcieReplayCounter",
        },
    )
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    env = fakenvml.fake_env(fake_nvml_lib, config)
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_gpu_health"}},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "get_gpu_inventory"},
        },
    ]
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--backend", "nvml", "--kmsg", str(kmsg)],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = {m["id"]: m for m in map(json.loads, done.stdout.splitlines())}
    assert answers[1]["result"]["protocolVersion"] == "2025-06-18"
    health = answers[2]["result"]
    assert health.get("isError") is not True, health
    report = health["structuredContent"]
    assert json.loads(health["content"][0]["text"]) == report
    gpus = by_index(report["gpus"])
    assert len(gpus) == 8 and report["status"] == "critical"
    assert gpus[2]["status"] == "critical"
    assert gpus[6]["status"] == "critical"  # 95 °C is past the 92 °C shutdown threshold
    assert gpus[0]["status"] == "healthy"
    assert "pcie_replay_counter" in gpus[1]["unsupported"]
    inventory = answers[3]["result"]["structuredContent"]
    assert inventory["driver"]["driver_version"] == "575.57.08"
    live = [g for g in inventory["gpus"] if not g["lost"]]
    assert [g["index"] for g in live] == [0, 1, 3, 4, 5, 6, 7]
    assert all(g["uuid"] == gpus[g["index"]]["uuid"] for g in live)


def test_build_is_cached_by_source(fake_nvml_lib: Path) -> None:
    again = fakenvml.build(fake_nvml_lib.parent.parent)
    assert again == fake_nvml_lib
    assert again.stat().st_mtime_ns == fake_nvml_lib.stat().st_mtime_ns
    env = fakenvml.fake_env(
        again, None, base={"LD_LIBRARY_PATH": "/opt/x", "FAKE_NVML_CONFIG": "y"}
    )
    assert env["LD_LIBRARY_PATH"] == f"{again.parent}:/opt/x"
    assert "FAKE_NVML_CONFIG" not in env
    assert os.access(again, os.R_OK)
