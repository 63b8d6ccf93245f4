"""The failure case sets (tests/data/explain_cases.yaml, and the blind set
tests/data/explain_cases_blind.yaml written before reading the rules) as Facts for the verdict
engine, and the scoring of answers against them (accuracy, calibration per confidence level)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from broker.diagnosis.explain import Facts
from broker.kube.reader import Missing
from tests.broker import node_signals
from tests.broker import podfactory as pf

Obj = dict[str, Any]
CASES_FILE = Path(__file__).resolve().parents[1] / "data" / "explain_cases.yaml"
BLIND_CASES_FILE = CASES_FILE.with_name("explain_cases_blind.yaml")


@dataclass(frozen=True)
class Case:
    id: str
    why: str
    data: Obj

    @property
    def expect(self) -> Obj:
        return dict(self.data["expect"])


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    doc = yaml.safe_load(path.read_text())
    cases = [Case(c["id"], c["why"], c) for c in doc["cases"]]
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


def _state(spec: Obj | None) -> Obj | None:
    """``{terminated: {...}}`` / ``{running: {started}}`` / ``{waiting: {...}}`` -> pod JSON."""
    if spec is None:
        return None
    if "terminated" in spec:
        t = dict(spec["terminated"] or {})
        signal = t.pop("signal", None)
        out = pf.terminated(**t)
        if signal is not None:
            out["terminated"]["signal"] = signal
        return out
    if "running" in spec:
        return {"running": {"startedAt": pf.ts(spec["running"].get("started", -3000))}}
    return {"waiting": dict(spec["waiting"])}


def _pod(spec: Obj) -> Obj:
    spec = dict(spec)
    init = spec.pop("init", None)
    policy = spec.pop("restart_policy", "Never")
    env = spec.pop("env", None)
    state = _state(spec.pop("state", None))
    last = _state(spec.pop("last_state", None))
    kwargs: Obj = dict(spec)
    if env is not None:
        kwargs["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if state is not None:
        kwargs["state"] = state
    if last is not None:
        kwargs["last_state"] = last
    pod = pf.pod(**kwargs)
    pod["spec"]["restartPolicy"] = policy
    if init is not None:
        pod["spec"]["initContainers"] = [{"name": init["name"], "image": "busybox"}]
        pod["status"]["initContainerStatuses"] = [
            {
                "name": init["name"],
                "state": _state(init["state"]),
                "lastState": {},
                "restartCount": 0,
                "ready": False,
            }
        ]
    return pod


def _node(spec: Obj | None) -> Obj:
    spec = dict(spec or {})
    conditions = spec.pop("conditions", [])
    since = spec.pop("ready_since", None)
    annotations = spec.pop("annotations", None)
    node = pf.node(**spec)
    ready = node["status"]["conditions"][0]
    if since is not None:
        ready["lastTransitionTime"] = pf.ts(since)
    for c in conditions:
        c = dict(c)
        at = c.pop("since", -3600)
        node["status"]["conditions"].append({**c, "lastTransitionTime": pf.ts(at)})
    if annotations:
        node["metadata"]["annotations"] = dict(annotations)
    return node


def _inventory(spec: Obj | None) -> Obj:
    spec = dict(spec or {})
    lost = spec.pop("lost", []) + spec.pop("mig_unknown_lost", [])
    inv = pf.inventory(**spec)
    for g in inv["gpus"]:
        if g["index"] in lost:
            g.update(lost=True, mig_mode_current=None, mig_instances=[])
    return inv


def _health(case: Obj) -> Obj | None:
    bad = case.get("health", [])
    if bad is None:
        return None
    h = pf.health(*(tuple(b) for b in bad), gpus=case.get("health_gpus", 8))
    for index, count in (case.get("replays") or {}).items():
        g = h["gpus"][int(index)]
        g.setdefault("metrics", {})["pcie_replay_counter"] = count
        for issue in g["issues"]:
            if issue["check"] == "pcie_replay":
                issue["message"] = f"GPU {index} has {count} PCIe replays since the driver loaded"
    return h


def facts_for(case: Case) -> Facts:
    """The Facts the broker would gather for this case."""
    c = case.data
    pod = _pod(c.get("pod") or {})
    missing: list[Missing] = []
    xids = None
    if c.get("xids", []) is not None:
        xids = pf.xids(*(pf.xid(x.pop("xid"), **x) for x in (dict(x) for x in c.get("xids", []))))
    else:
        missing.append(Missing("XIDs, GPU health of node gpu-1", "the agent did not answer"))
    processes = None
    if c.get("processes"):
        spec = {int(k): v if isinstance(v, dict) else {"uid": v} for k, v in c["processes"].items()}
        processes = pf.processes({k: v.get("uid", pf.POD_UID) for k, v in spec.items()})
        for k, v in spec.items():  # on MIG: the GPU instance the process runs in
            if "gi" in v:
                processes["gpus"][k]["processes"][0].update(
                    gpu_instance_id=v["gi"], compute_instance_id=0
                )
    events = [pf.event(**e) for e in c.get("events", [])]
    health = _health(c)
    if xids is not None:
        node_signals.log_answer(c, xids)
    if health is not None:
        node_signals.health_answer(c, health)
        if xids is None and health.get("sources"):
            health["sources"]["kernel_log"]["readable"] = False
    return Facts(
        namespace="ml",
        name="trainer-abc",
        pod=pod,
        events=events,
        node=_node(c.get("node")) if pod["spec"].get("nodeName") else None,
        xids=xids,
        health=health,
        inventory=None if c.get("inventory", {}) is None else _inventory(c.get("inventory")),
        processes=processes,
        missing=missing,
        now=pf.NOW,
    )


def check(case: Case, answer: Obj) -> list[str]:
    """What is wrong with ``answer`` for ``case`` (empty: right)."""
    want = case.expect
    problems = []
    if answer["verdict"] != want["verdict"]:
        problems.append(f"verdict {answer['verdict']}, expected {want['verdict']}")
    if answer["confidence"] != want["confidence"]:
        problems.append(f"confidence {answer['confidence']}, expected {want['confidence']}")
    for text in want.get("summary", []):
        if text.lower() not in answer["summary"].lower():
            problems.append(f"summary lacks {text!r}: {answer['summary']}")
    commands = " | ".join(s["command"] for s in answer["next_steps"])
    for text in want.get("steps", []):
        if text not in commands:
            problems.append(f"next steps lack {text!r}: {commands}")
    for text in want.get("no_steps", []):
        if text in commands:
            problems.append(f"next steps should not have {text!r}: {commands}")
    return problems


def calibration(results: list[tuple[Case, Obj]]) -> Obj:
    """Right verdicts overall and per stated confidence level."""
    levels: dict[str, list[int]] = {}
    right = 0
    for case, answer in results:
        ok = answer["verdict"] == case.expect["verdict"]
        right += ok
        bucket = levels.setdefault(answer["confidence"], [0, 0])
        bucket[0] += ok
        bucket[1] += 1
    return {
        "cases": len(results),
        "verdicts_right": right,
        "by_confidence": {k: f"{v[0]}/{v[1]}" for k, v in sorted(levels.items())},
    }


CASES = load_cases()
BLIND_CASES = load_cases(BLIND_CASES_FILE)
