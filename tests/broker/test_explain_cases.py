"""The independent failure case set (tests/data/explain_cases.yaml) through the pure verdict
engine: every case's verdict, confidence, summary and next steps, and the calibration
(right verdicts per confidence level) measured on the whole set."""

from __future__ import annotations

import copy

import pytest

from broker.diagnosis.explain import explain
from tests.broker.explain_cases import CASES, Case, calibration, check, facts_for

CASE_IDS = [c.id for c in CASES]


def test_the_set_is_large_and_covers_every_verdict() -> None:
    assert len(CASES) >= 40
    verdicts = {c.expect["verdict"] for c in CASES}
    assert verdicts == {"hardware", "driver", "application", "infrastructure", "unknown", "none"}
    assert all(c.why and c.expect.get("confidence") for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_case(case: Case) -> None:
    answer = explain(facts_for(case))
    assert check(case, answer) == [], (
        f"{case.id}: {case.why}\nrule {answer['rule']}: {answer['summary']}"
    )


def test_calibration_high_is_never_wrong() -> None:
    results = [(c, explain(facts_for(c))) for c in CASES]
    report = calibration(results)
    held_out = calibration([(c, a) for c, a in results if c.data.get("held_out")])
    print(report, "held out:", held_out)  # the figures the issue asks for (pytest -s)
    right, total = (int(n) for n in report["by_confidence"]["high"].split("/"))
    assert right == total
    assert report["verdicts_right"] == report["cases"]


def test_a_process_in_a_mig_instance_is_named_as_how_the_slice_is_known() -> None:
    (case,) = [c for c in CASES if c.id == "mig-process-pins-the-slice-xid94-on-the-other-1g"]
    texts = [e["text"] for e in explain(facts_for(case))["evidence"]]
    assert any("pid 100 (python3) runs in GPU 0's MIG 1g.10gb GPU instance 1" in t for t in texts)
    # Without the process the 1g.10gb slice is one of two: the XID may be the pod's.
    blind = copy.deepcopy(case)
    blind.data.pop("processes")
    assert explain(facts_for(blind))["verdict"] == "hardware"
