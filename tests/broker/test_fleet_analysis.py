"""broker.fleet.drift and broker.fleet.stragglers: the pure judgements over agent answers."""

from __future__ import annotations

import random
from typing import Any

from broker.fleet.drift import find_drift, node_config
from broker.fleet.stragglers import find_stragglers, node_readings

H100 = "NVIDIA H100 80GB HBM3"


def inventory(driver: str = "575.57.08", gpus: int = 8, **gpu: Any) -> dict[str, Any]:
    base = {
        "name": H100,
        "vbios_version": "96.00.99.00.01",
        "persistence_mode": True,
        "mig_mode_current": False,
        "ecc_mode_current": True,
        "power_limit_w": 700.0,
        "sm_clock_max_mhz": 1980,
        "pcie_link_gen_max": 5,
        "pcie_link_width": 16,
        "nvlink_links_up": 18,
    }
    return {
        "driver": {"driver_version": driver, "cuda_driver_version": "12.9", "gpu_count": gpus},
        "gpus": [{"index": i, **base, **gpu} for i in range(gpus)],
    }


def health(sm: float = 1980, temp: float = 60, power: float = 650, reasons: Any = (), gpu: int = 3,
           n: int = 8) -> dict[str, Any]:  # fmt: skip
    gpus = []
    for i in range(n):
        metrics = {"sm_clock_mhz": 1980, "temperature_c": 60, "power_w": 650,
                   "clock_event_reasons_active": [], "pcie_replay_counter": 0,
                   "nvlink": {"links": 18, "active": 18, "replay_errors": 0}}  # fmt: skip
        if i == gpu:
            metrics.update(sm_clock_mhz=sm, temperature_c=temp, power_w=power,
                           clock_event_reasons_active=list(reasons))  # fmt: skip
        gpus.append({"index": i, "name": H100, "metrics": metrics})
    return {"gpus": gpus}


def test_uniform_fleet_has_no_drift() -> None:
    configs = [node_config(f"n{i}", inventory()) for i in range(50)]
    answer = find_drift(configs)
    assert answer["findings"] == [] and answer["summary"]["nodes_compared"] == 50


def test_driver_outlier_named_with_majority_and_why() -> None:
    configs = [node_config(f"n{i:02}", inventory()) for i in range(20)]
    configs.append(node_config("odd", inventory(driver="570.86.15")))
    (finding,) = find_drift(configs)["findings"]
    assert finding["setting"] == "driver_version"
    assert finding["majority"] == "575.57.08" and finding["majority_count"] == 20
    assert finding["outliers"] == [{"value": "570.86.15", "count": 1, "nodes": ["odd"]}]
    assert "driver" in finding["why"]


def test_power_cap_and_missing_gpu_and_nvlink() -> None:
    configs = [node_config(f"n{i}", inventory(), expected_gpus=8) for i in range(10)]
    configs.append(node_config("capped", inventory(power_limit_w=400.0), expected_gpus=8))
    configs.append(node_config("short", inventory(gpus=7), expected_gpus=8))
    found = {f["setting"]: f for f in find_drift(configs)["findings"]}
    assert found["power_limit_w"]["outliers"][0]["nodes"] == ["capped"]
    assert found["gpu_count_vs_capacity"]["outliers"][0] == {
        "value": "7 seen of 8",
        "count": 1,
        "nodes": ["short"],
    }
    assert found["gpu_count_seen"]["majority"] == 8


def test_products_are_compared_only_with_themselves() -> None:
    configs = [node_config(f"h{i}", inventory()) for i in range(5)]
    t4 = inventory(driver="550.1")
    for g in t4["gpus"]:
        g["name"] = "Tesla T4"
    configs += [node_config(f"t{i}", t4) for i in range(5)]
    assert find_drift(configs)["findings"] == []


def test_names_are_bounded_but_counts_exact() -> None:
    configs = [node_config(f"n{i:03}", inventory()) for i in range(300)]
    configs += [node_config(f"o{i:03}", inventory(driver="1.0")) for i in range(40)]
    (finding,) = find_drift(configs, names_shown=5)["findings"]
    assert finding["outliers"][0]["count"] == 40 and len(finding["outliers"][0]["nodes"]) == 5
    assert finding["outliers"][0]["more"] == 35


def test_no_false_stragglers_on_a_noisy_uniform_fleet() -> None:
    rng = random.Random(7)
    nodes = [
        node_readings(
            f"n{i}",
            health(
                sm=1980 - rng.randint(0, 30),
                temp=60 + rng.randint(0, 4),
                power=650 + rng.randint(-20, 20),
            ),
        )  # fmt: skip
        for i in range(200)
    ]
    assert find_stragglers(nodes)["stragglers"] == []


def test_thermal_straggler_ranked_with_its_reading() -> None:
    nodes = [node_readings(f"n{i}", health()) for i in range(63)]
    nodes.append(node_readings("hot", health(sm=1410, temp=91,
                                             reasons=["hw_thermal_slowdown"])))  # fmt: skip
    nodes.append(node_readings("capped", health(power=400, sm=1700, reasons=["sw_power_cap"])))
    answer = find_stragglers(nodes)
    ranked = [s["node"] for s in answer["stragglers"]]
    assert ranked[0] == "hot" and set(ranked) == {"hot", "capped"}
    hot = answer["stragglers"][0]
    readings = {w["reading"]: w for w in hot["why"]}
    assert readings["sm_clock_mhz"]["gpu"] == 3 and readings["sm_clock_mhz"]["peer_median"] == 1980
    assert readings["throttle_reason"]["value"] == "hw_thermal_slowdown"


def test_a_fleet_wide_power_cap_is_not_a_straggler() -> None:
    nodes = [node_readings(f"n{i}", health(reasons=["sw_power_cap"])) for i in range(10)]
    assert find_stragglers(nodes)["stragglers"] == []


def test_idle_and_lost_gpus_are_not_evidence() -> None:
    doc = health(reasons=["gpu_idle"])
    doc["gpus"].append({"index": 8, "lost": True, "metrics": {"sm_clock_mhz": 0}})
    readings = node_readings("n", doc)
    assert readings.reasons == {} and readings.values["sm_clock_mhz"] == 1980


def test_a_warm_node_is_not_a_straggler_by_temperature_alone() -> None:
    nodes = [node_readings(f"n{i}", health()) for i in range(20)]
    nodes.append(node_readings("warm", health(temp=75)))
    assert find_stragglers(nodes)["stragglers"] == []


def test_idle_gpus_are_not_compared_on_clock_and_power() -> None:
    nodes = [node_readings(f"n{i}", health()) for i in range(20)]
    nodes.append(node_readings("idle", health(sm=345, power=70, reasons=["gpu_idle"])))
    assert find_stragglers(nodes)["stragglers"] == []


def test_pcie_link_below_the_peers_is_named() -> None:
    configs = [node_config(f"n{i}", inventory()) for i in range(10)]
    configs.append(node_config("x8gen4", inventory(pcie_link_gen_max=4, pcie_link_width=8)))
    found = {f["setting"]: f for f in find_drift(configs)["findings"]}
    assert found["pcie_link_gen_max"]["majority"] == 5
    assert found["pcie_link_gen_max"]["outliers"][0]["nodes"] == ["x8gen4"]
    assert found["pcie_link_width"]["outliers"][0]["value"] == 8
