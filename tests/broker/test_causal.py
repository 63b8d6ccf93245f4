"""Causal time (broker.diagnosis.causal) and the cluster's own signals
(broker.diagnosis.signals): where an XID falls against a container's run, which GPU states
still hold, and what node conditions, taints and DisruptionTarget say."""

from __future__ import annotations

import pytest

from broker.diagnosis.causal import (
    CLOCK_SKEW_S,
    NEAR_EXIT_S,
    RunWindow,
    gpu_states,
    pcie_replays,
    place,
    run_window,
)
from broker.diagnosis.pod_status import Failure
from broker.diagnosis.signals import disruption, node_ready, node_signals
from tests.broker import podfactory as pf

RUN = RunWindow("main", start=1000.0, end=5000.0)


@pytest.mark.parametrize(
    ("first", "last", "timing", "offset", "near"),
    [
        (900.0, 960.0, "before_start", 960.0 - 5000.0, False),  # ended 40 s before start
        (975.0, 975.0, "during_run", 975.0 - 5000.0, False),  # inside the start's grace
        (4990.0, 4990.0, "during_run", -10.0, True),
        (5020.0, 5020.0, "during_run", 20.0, True),  # inside the exit's grace
        (5031.0, 5040.0, "after_exit", 31.0, False),
        (2000.0, 6000.0, "during_run", -3000.0, False),  # first inside, last after
        (500.0, 4999.0, "during_run", -1.0, True),  # first before, last inside
        (500.0, 9000.0, "during_run", 4000.0, False),  # spans the run: no known occurrence in it
    ],
)
def test_place(first: float, last: float, timing: str, offset: float, near: bool) -> None:
    assert place(first, last, RUN) == (timing, offset, near)


def test_near_means_within_the_last_quarter_hour_of_the_run() -> None:
    edge = RUN.end - NEAR_EXIT_S - CLOCK_SKEW_S
    assert place(edge, edge, RUN)[2] is True
    assert place(edge - 1, edge - 1, RUN)[2] is False


def test_run_window_needs_an_exit_and_a_sane_start() -> None:
    assert run_window(Failure(kind="running")) is None
    assert run_window(Failure(kind="terminated", finished=None)) is None
    w = run_window(Failure(kind="restarted", container="c", started=9.0e9, finished=5000.0))
    assert w is not None and w.start is None  # a start after the exit is not believed
    assert w.lo == 5000.0 - 900.0 - CLOCK_SKEW_S
    assert "its start is not recorded" in w.describe()


def test_gpu_states_keep_only_what_holds_until_a_reset() -> None:
    health = pf.health((1, "critical", "gpu_lost"), (2, "warning", "thermal"), (3, "degraded",
                       "row_remap_pending"))  # fmt: skip
    assert {i: [c for c, _ in s] for i, s in gpu_states(health).items()} == {
        1: ["gpu_lost"],
        3: ["row_remap_pending"],
    }
    assert gpu_states(None) == {}


def test_pcie_replays_from_metrics_or_a_flag() -> None:
    health = pf.health((4, "warning", "pcie_replay"), (5, "warning", "pcie_aer"))
    health["gpus"][4]["metrics"] = {"pcie_replay_counter": 5000}
    assert pcie_replays(health, 4) == 5000
    assert pcie_replays(health, 5) == -1  # flagged by a PCIe check, no count
    assert pcie_replays(health, 6) is None


def test_node_signals_put_gpu_health_first_and_skip_the_gpu_pool_taint() -> None:
    node = pf.node(
        ready=False,
        allocatable=7,
        taints=[
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu-health", "value": "unhealthy", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        ],
    )
    node["status"]["conditions"] += [
        {"type": "GpuXidError", "status": "True", "reason": "XID79", "message": "Xid 79"},
        {"type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock"},
        {"type": "MemoryPressure", "status": "True", "reason": "KubeletHasInsufficientMemory"},
    ]
    node["metadata"]["annotations"] = {"quarantineHealthEvent": '{"errorCode":"79"}'}
    signals = node_signals(node)
    kinds = [(s.kind, s.gpu) for s in signals]
    assert kinds == [
        ("condition", True),
        ("taint", True),
        ("annotation", True),
        ("withdrawn", True),
        ("not_ready", False),
        ("pressure", False),
        ("taint", False),
    ]
    assert not any("gpu=present" in s.text for s in signals)
    assert node_ready(node)[0] is False and node_ready(None) == (None, None)


def test_disruption_target() -> None:
    cond = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
    assert disruption(pf.pod(conditions=[cond])) == ("PreemptionByScheduler", "")
    assert disruption(pf.pod(conditions=[{**cond, "status": "False"}])) is None
