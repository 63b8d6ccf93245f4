"""The rest of the node as diagnosis facts (broker/diagnosis/node_facts.py): events placed
against the run, links and fabric read from the health answer, the sources said to be
unavailable, and how the CLI report shows them."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from broker.cli.render_explain import node_signal_lines, render_explanation
from broker.diagnosis.allocation import gpu_assignment
from broker.diagnosis.causal import run_window
from broker.diagnosis.explain import explain
from broker.diagnosis.node_facts import NodeFacts, node_facts, view
from broker.diagnosis.pod_status import find_failure
from tests.broker import node_signals
from tests.broker import podfactory as pf
from tests.broker.explain_cases import CASES, facts_for

Obj = dict[str, Any]
BY_ID = {c.id: c for c in CASES}


def _facts(case: Obj) -> NodeFacts:
    pod = pf.pod()
    xids = pf.xids()
    health = pf.health()
    node_signals.log_answer(case, xids)
    node_signals.health_answer(case, health)
    f = find_failure(pod)
    facts = facts_for(CASES[0])
    facts.pod, facts.xids, facts.health = pod, xids, health
    return node_facts(facts, run_window(f), gpu_assignment(pod, pf.node()))


def test_events_are_placed_against_the_run() -> None:
    nf = _facts(
        {
            "sxids": [
                {"sxid": 24007, "at": -605, "fatal": True, "links": [12]},
                {"sxid": 24007, "at": -300, "fatal": True, "switch": 1},
                {"sxid": 12028, "at": -7200},
            ],
            "resets": [{"gpu": 2, "at": -640}],
            "aer": {3: {"nonfatal": 1, "at": -603}},
        }
    )
    assert nf.sxids is not None and nf.gpu_events is not None
    timings = [(s.sxid, s.at.timing, s.at.offset_s) for s in nf.sxids]
    assert timings == [
        (24007, "during_run", -5.0),
        (24007, "after_exit", 300.0),
        (12028, "before_start", -6600.0),
    ]
    assert nf.sxids[0].label() == "SXid 24007 (fatal) on nvidia-nvswitch0 link 12"
    reset, aer = nf.gpu_events
    assert (reset.kind, reset.gpu_index, reset.on_pod_gpu, reset.at.near_exit) == (
        "reset",
        2,
        True,
        True,
    )
    assert aer.kind == "pcie_aer_nonfatal" and aer.at.offset_s == -3.0


def test_links_fabric_and_ports_come_from_health() -> None:
    nf = _facts(
        {
            "link": {5: {"width": 8}},
            "aer": {2: {"correctable": 40}},
            "fabric": {"state": "not_started", "gpus": [0]},
            "ib_ports": [{"device": "mlx5_0", "state": "DOWN", "phys_state": "Polling"}],
        }
    )
    links = {p.gpu_index: p for p in nf.pcie or []}
    assert links[5].degraded and links[5].link_text() == "Gen5 x8 (max Gen5 x16)"
    assert not links[2].degraded and links[2].aer_text() == "40 correctable AER error(s) since boot"
    assert [(f.gpu_index, f.state, f.ready) for f in nf.fabric or []] == [(0, "not_started", False)]
    ports = nf.ib_ports or []
    assert [(p.label(), p.active) for p in ports] == [
        ("InfiniBand port mlx5_0/1 DOWN/Polling", False)
    ]
    assert set(nf.unavailable) == set()  # AER, RDMA, fabric and kernel log all reported


def test_unavailable_sources_are_named() -> None:
    nf = _facts({"sources": {"sysfs": {"pcie_aer_gpus": 0, "root": "/host/sys"}}})
    assert set(nf.unavailable) == {"aer", "rdma", "fabric_manager"}
    assert "/host/sys" in nf.unavailable["aer"] and "/host/sys" in nf.unavailable["rdma"]
    old = _facts({"sources": None})
    assert "sources" in old.unavailable and "rdma" in old.unavailable
    facts = facts_for(CASES[0])
    facts.xids = facts.health = None
    blind = node_facts(facts, None, {"known": False})
    assert set(blind.unavailable) == {"kernel_log", "health"}
    assert blind.sxids is None and blind.pcie is None and blind.ib_ports is None
    assert view(blind)["sxids"] is None and len(view(blind)["unavailable"]) == 2


def test_an_unread_source_lowers_never_raises() -> None:
    """The same NET/IB failure: with the ports unread the application verdict drops a
    level and says why; with every port active the answer stays unknown, low."""
    case = BY_ID["nccl-network-error-rdma-not-reported"]
    answer = explain(facts_for(case))
    assert (answer["verdict"], answer["confidence"]) == ("application", "low")
    assert any("not ruled out" in n and "InfiniBand/RoCE" in n for n in answer["notes"])
    assert answer["node_signals"]["ib_ports"] is None


def test_the_answer_carries_node_signals_and_timeline() -> None:
    answer = explain(facts_for(BY_ID["sxid-fatal-during-multi-gpu-nccl-run"]))
    signals = answer["node_signals"]
    assert signals["sxids"][0]["timing"] == "during_run"
    assert any(t["source"] == "sxid" for t in answer["timeline"])
    times = [t["time"] for t in answer["timeline"]]
    assert times == sorted(times)


def test_the_report_shows_the_rest_of_the_node() -> None:
    answer = explain(facts_for(BY_ID["ib-port-polling-nccl-net-ib-error"]))
    console = Console(record=True, width=160, color_system=None)
    console.print(render_explanation(answer))
    text = console.export_text()
    for expected in (
        "INFRASTRUCTURE",
        "The rest of the node",
        "RDMA 1 of 2 port(s) active; down: mlx5_0/1 DOWN/Polling",
        "$ ibstat",
    ):
        assert expected in text, expected
    lines = [
        str(t)
        for t in node_signal_lines(
            explain(facts_for(BY_ID["aer-nonfatal-line-on-held-gpu-at-exit"]))["node_signals"]
        )
    ]
    assert (
        "GPU event pcie_aer_nonfatal on GPU 3 (held by the pod), during the run, "
        "3 s before the exit" in lines
    )
    fabric = node_signal_lines(
        explain(facts_for(BY_ID["fabric-manager-not-started-error-802"]))["node_signals"]
    )
    assert [str(t) for t in fabric if "Fabric" in str(t)] == [
        "Fabric Manager GPUs 0, 1, 2, 3, 4, 5, 6, 7: not_started"
    ]
    assert node_signal_lines(None) == []
