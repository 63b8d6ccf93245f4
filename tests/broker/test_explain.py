"""The verdict engine (broker.diagnosis.explain): every rule, with pod and agent JSON as the API
server and the agent send them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.diagnosis.explain import Facts, explain, xid_category
from broker.diagnosis.pod_status import find_failure
from broker.kube.reader import Missing
from tests.broker import podfactory as pf

Obj = dict[str, Any]


def facts(pod: Obj | None, **kw: Any) -> Facts:
    kw.setdefault("node", pf.node())
    return Facts(namespace="ml", name="trainer-abc", pod=pod, now=pf.NOW, **kw)


def sources(result: Obj, source: str) -> list[str]:
    return [e["text"] for e in result["evidence"] if e["source"] == source]


# -- hardware ---------------------------------------------------------------------------


def test_xid79_on_a_gpu_of_a_whole_node_pod_is_hardware_with_high_confidence() -> None:
    failed = pf.pod(state=pf.terminated(finished=-600, message="CUDA error: unspecified launch"))
    r = explain(
        facts(
            failed,
            xids=pf.xids(pf.xid(79, at=-602, gpu=3, action="Drain the node and power-cycle it")),
            health=pf.health((3, "critical", "gpu_lost")),
            inventory=pf.inventory(),
        )
    )
    assert (r["verdict"], r["confidence"]) == ("hardware", "high")
    assert "XID 79" in r["summary"] and "GPU 3" in r["summary"] and "2 s before" in r["summary"]
    assert any("a GPU this pod held" in t for t in sources(r, "xid"))
    assert any("GPU 3 is critical now" in t for t in sources(r, "health"))
    assert r["gpus"]["known"] and [g["index"] for g in r["gpus"]["gpus"]] == list(range(8))
    assert r["xids"][0]["on_pod_gpu"] is True and r["xids"][0]["offset_s"] == -2.0
    assert "XID 79 on GPU 3: Drain the node and power-cycle it" in r["nvidia_actions"]
    commands = [s["command"] for s in r["next_steps"]]
    assert "kubectl cordon gpu-1" in commands
    assert "kubectl drain gpu-1 --ignore-daemonsets --delete-emptydir-data" in commands
    assert "kubectl -n ml get job trainer -o wide" in commands


def test_hardware_xid_on_a_gpu_the_pod_did_not_hold_is_not_blamed() -> None:
    # The agent maps the pod (uid) to GPU 0; the ECC error hit GPU 5.
    running_then_failed = pf.pod(
        gpus=1,
        phase="Running",
        state={"running": {"startedAt": pf.ts(-100)}},
        last_state=pf.terminated(finished=-200, message="RuntimeError: boom"),
        restarts=1,
    )
    r = explain(
        facts(
            running_then_failed,
            xids=pf.xids(pf.xid(48, at=-201, gpu=5)),
            processes=pf.processes({0: "11111111-2222-3333-4444-555555555555"}),
            health=pf.health((5, "critical", "ecc_uncorrectable")),
        )
    )
    assert r["verdict"] == "application"
    assert r["gpus"]["source"].startswith("agent:")
    assert r["xids"][0]["on_pod_gpu"] is False
    assert any("GPU this pod did not hold" in n for n in r["notes"])
    assert r["failure"]["previous"] is True and r["failure"]["kind"] == "restarted"


def test_hardware_xid_on_a_gpu_the_pod_may_have_held_is_never_high() -> None:
    # 2 of 8 GPUs, which ones unknown: even a message that agrees leaves it "likely".
    # (This test used to expect "high" for the agreeing message: overconfident, issue 12.)
    for message in ("exit", "uncorrectable ECC error"):
        r = explain(
            facts(
                pf.pod(gpus=2, state=pf.terminated(finished=-600, message=message)),
                xids=pf.xids(pf.xid(48, at=-600 - 600, gpu=5)),
            )
        )
        assert (r["verdict"], r["confidence"]) == ("hardware", "medium")
        assert r["xids"][0]["on_pod_gpu"] is None and r["xids"][0]["timing"] == "during_run"
    known = explain(
        facts(
            pf.pod(gpus=8, state=pf.terminated(finished=-600, message="exit")),
            xids=pf.xids(pf.xid(48, at=-600 - 600, gpu=5)),
        )
    )
    assert (known["verdict"], known["confidence"]) == ("hardware", "high")
    assert any("a GPU this pod held" in t for t in sources(known, "xid"))


@pytest.mark.parametrize(
    ("started", "offset"), [(-3600, -600 - 30 - 1), (-3900, -900 - 30 - 1), (-3600, 30 + 1)]
)
def test_xids_outside_the_run_do_not_count(started: float, offset: float) -> None:
    # Before the container started (less its 30 s clock-skew grace), or after it exited.
    r = explain(
        facts(
            pf.pod(
                gpus=8, state=pf.terminated(started=started, finished=-3000, message="CUDA error")
            ),
            xids=pf.xids(pf.xid(79, at=-3000 + offset, gpu=1)),
            health=pf.health(),
        )
    )
    assert r["verdict"] == "application"
    assert r["xids"] == []  # only XIDs that can be the cause are listed
    (clean,) = [t for t in sources(r, "xid") if t.startswith("no hardware or driver XID")]
    assert "container main's run, " + pf.ts(started - 30) + " to " + pf.ts(-3000 + 30) in clean
    assert "30 s for clock skew" in clean
    assert r["xid_window"]["checked"] is True and r["xid_window"]["clock_skew_grace_s"] == 30


def test_a_gpu_still_lost_explains_a_later_run_however_old_its_xid() -> None:
    restarting = pf.pod(
        phase="Running",
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        last_state=pf.terminated(started=-200, finished=-100, message="CUDA error: unknown"),
        restarts=4,
    )
    r = explain(
        facts(
            restarting,
            xids=pf.xids(pf.xid(79, at=-86400, gpu=3)),
            health=pf.health((3, "critical", "gpu_lost")),
        )
    )
    assert (r["verdict"], r["confidence"], r["rule"]) == (
        "hardware",
        "high",
        "gpu_state_still_holds",
    )
    assert "is lost (fallen off the bus) since XID 79" in r["summary"]
    assert r["xids"][0]["timing"] == "before_start" and r["xids"][0]["persists"] is True
    # The same old XID on a GPU that answers again is not the cause.
    healed = explain(
        facts(restarting, xids=pf.xids(pf.xid(79, at=-86400, gpu=3)), health=pf.health())
    )
    assert healed["verdict"] == "application" and healed["xids"] == []


def test_no_xid_statement_names_only_the_part_of_the_run_the_log_holds() -> None:
    answer = pf.xids()
    answer["window"] = {"start": pf.ts(-2000), "end": pf.ts(0)}  # the ring buffer's reach
    r = explain(
        facts(pf.pod(gpus=1, state=pf.terminated(started=-9000, finished=-600)), xids=answer)
    )
    (clean,) = [t for t in sources(r, "xid") if t.startswith("no hardware or driver XID")]
    assert "the part of container main's run the node's log still holds, " + pf.ts(-2000) in clean


def test_contained_ecc_restarts_the_app_and_uncontained_resets_the_gpu() -> None:
    failed = pf.pod(state=pf.terminated(finished=-600, message="uncorrectable ECC error"))
    contained = explain(facts(failed, xids=pf.xids(pf.xid(94, at=-610, gpu=1))))
    commands = [s["command"] for s in contained["next_steps"]]
    assert contained["verdict"] == "hardware" and not any("cordon" in c for c in commands)
    assert "kubectl mcp diagnose gpu-1" in commands
    uncontained = explain(facts(failed, xids=pf.xids(pf.xid(95, at=-610, gpu=1))))
    commands = [s["command"] for s in uncontained["next_steps"]]
    assert commands[:3] == [
        "kubectl cordon gpu-1",
        "kubectl drain gpu-1 --ignore-daemonsets --delete-emptydir-data",
        "nvidia-smi -r -i 1",
    ]


def test_driver_verdict_carries_the_reset_and_the_catalog_steps() -> None:
    r = explain(
        facts(
            pf.pod(gpus=8, state=pf.terminated(finished=-600, message="CUDA error: unknown error")),
            xids=pf.xids(pf.xid(119, at=-605, gpu=2)),
            health=pf.health((2, "critical", "recovery_action")),
            inventory=pf.inventory(),
        )
    )
    assert (r["verdict"], r["confidence"], r["rule"]) == ("driver", "medium", "driver_xid_in_run")
    assert any("RESET_GPU, then INVESTIGATE_SW" in t for t in sources(r, "xid"))
    assert any("GPU 2 is critical now" in t for t in sources(r, "health"))
    assert "NVIDIA driver 575.57.08 on the node" in sources(r, "node")
    assert "nvidia-smi -r -i 2" in [s["command"] for s in r["next_steps"]]


def test_critical_gpu_now_without_xid_is_hardware_only_for_a_gpu_the_pod_held() -> None:
    failing = pf.pod(gpus=1, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "GPU-00000002"}])
    failing["status"]["containerStatuses"][0]["state"] = pf.terminated(message="CUDA error: x")
    held = explain(
        facts(
            failing,
            xids=pf.xids(),
            health=pf.health((2, "critical", "row_remap_failure")),
            inventory=pf.inventory(),
        )
    )
    assert (held["verdict"], held["confidence"]) == ("hardware", "medium")
    assert held["gpus"]["source"] == "pod spec: NVIDIA_VISIBLE_DEVICES"
    other = explain(
        facts(failing, xids=pf.xids(), health=pf.health((6, "critical", "row_remap_failure")))
    )
    assert other["verdict"] == "application"


# -- application ------------------------------------------------------------------------


def test_oomkilled_is_host_memory_and_application_even_with_gpu_trouble_on_the_node() -> None:
    oom = pf.pod(
        gpus=1,
        phase="Running",
        memory="32Gi",
        owner=("ReplicaSet", "data-prep-6c9f7d8b4"),
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        last_state=pf.terminated(exit_code=137, reason="OOMKilled", finished=-240),
        restarts=4,
    )
    r = explain(
        facts(oom, xids=pf.xids(pf.xid(48, at=-240, gpu=6)), health=pf.health((6, "critical", "x")))
    )
    assert (r["verdict"], r["confidence"]) == ("application", "high")
    assert "host" in r["summary"] and "not GPU memory" in r["summary"]
    assert any("memory limit 32Gi" in t for t in sources(r, "pod"))
    commands = [s["command"] for s in r["next_steps"]]
    assert "kubectl -n ml logs trainer-abc -c main --previous" in commands
    assert (
        "kubectl -n ml set resources deployment/data-prep -c main "
        "--limits=memory=48Gi --requests=memory=48Gi"
    ) in commands


def test_xid13_with_illegal_memory_access_is_an_application_fault() -> None:
    failed = pf.pod(gpus=1, state=pf.terminated(message="CUDA error: an illegal memory access"))
    r = explain(facts(failed, xids=pf.xids(pf.xid(13, at=-602, gpu=1)), health=pf.health()))
    assert (r["verdict"], r["confidence"]) == ("application", "high")
    assert r["xids"][0]["category"] == "application"
    assert any("RESTART_APP" in t for t in sources(r, "xid"))
    assert any("CUDA_LAUNCH_BLOCKING=1" in s["command"] for s in r["next_steps"])


def test_gpu_out_of_memory_is_the_applications() -> None:
    failed = pf.pod(
        gpus=1, state=pf.terminated(message="torch.OutOfMemoryError: CUDA out of memory")
    )
    r = explain(facts(failed, xids=pf.xids(), health=pf.health()))
    assert (r["verdict"], r["confidence"]) == ("application", "high")
    assert "GPU memory" in r["summary"]


def test_plain_error_exit_with_clean_node_is_application_medium() -> None:
    r = explain(facts(pf.pod(gpus=1), xids=pf.xids(), health=pf.health()))
    assert (r["verdict"], r["confidence"]) == ("application", "medium")
    assert any("healthy" in t for t in sources(r, "health"))


def test_cuda_error_without_xid_data_is_unknown_not_hardware() -> None:
    failed = pf.pod(gpus=1, state=pf.terminated(message="RuntimeError: CUDA error: ECC error"))
    missing = [Missing("XIDs of node gpu-1", "RBAC denied", "create pods/exec in namespace x", "c")]
    r = explain(facts(failed, missing=missing))
    assert (r["verdict"], r["confidence"]) == ("unknown", "low")
    assert r["partial"] is True and r["missing"][0]["permission"].startswith("create pods/exec")
    assert {"command": "c", "why": "check the permission that would show XIDs of node gpu-1"} in r[
        "next_steps"
    ]


# -- driver, infrastructure ---------------------------------------------------------------


def test_driver_message_and_driver_xids_give_a_driver_verdict() -> None:
    failed = pf.pod(
        gpus=1,
        state=pf.terminated(message="Failed to initialize NVML: Driver/library version mismatch"),
    )
    r = explain(facts(failed, xids=pf.xids(), health=pf.health()))
    assert (r["verdict"], r["confidence"]) == ("driver", "medium")
    gsp = explain(facts(pf.pod(gpus=1), xids=pf.xids(pf.xid(119, at=-610, gpu=0))))
    assert gsp["verdict"] == "driver"  # GSP RPC timeout: RESET_GPU, investigate software


def test_unschedulable_pod_is_infrastructure_with_the_schedulers_words() -> None:
    message = "0/12 nodes are available: 12 Insufficient nvidia.com/gpu."
    pending = pf.pod(
        node=None,
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    )
    r = explain(facts(pending, events=[pf.event("FailedScheduling", message, count=9)]))
    assert (r["verdict"], r["confidence"]) == ("infrastructure", "high")
    assert message in r["summary"]
    assert any("FailedScheduling x9" in t for t in sources(r, "events"))
    assert r["gpus"]["known"] is False and "not scheduled" in r["gpus"]["note"]
    assert r["xid_window"] is None


def test_evicted_and_image_pull_and_sigkill_cases() -> None:
    evicted = pf.pod(
        status_reason="Evicted", status_message="The node was low on resource: memory."
    )
    assert explain(facts(evicted))["verdict"] == "infrastructure"
    pulling = pf.pod(phase="Pending", state={"waiting": {"reason": "ImagePullBackOff"}})
    assert explain(facts(pulling))["verdict"] == "infrastructure"
    killed = pf.pod(gpus=1, state=pf.terminated(exit_code=137, reason="Error"))
    probe = pf.event("Unhealthy", "Liveness probe failed: timeout", at=-610)
    assert explain(facts(killed, xids=pf.xids(), events=[probe]))["verdict"] == "application"
    lone = explain(facts(killed, xids=pf.xids(), events=[]))
    assert (lone["verdict"], lone["confidence"]) == ("unknown", "low")
    down = explain(facts(pf.pod(gpus=1), node=pf.node(ready=False), xids=pf.xids()))
    assert down["verdict"] == "infrastructure"


# -- not failed, unreadable ---------------------------------------------------------------


def test_succeeded_and_running_pods_did_not_fail() -> None:
    done = pf.pod(phase="Succeeded", state=pf.terminated(exit_code=0, reason="Completed"))
    r = explain(facts(done))
    assert (r["verdict"], r["failure"]["kind"]) == ("none", "none")
    running = pf.pod(phase="Running", state={"running": {"startedAt": pf.ts(-10)}})
    assert explain(facts(running))["failure"]["kind"] == "running"


def test_unreadable_pod_gives_a_partial_answer_naming_the_permission() -> None:
    miss = Missing(
        "pod ml/x", "denied", "get pods in namespace ml", "kubectl auth can-i get pods -n ml"
    )
    r = explain(Facts(namespace="ml", name="x", pod=None, missing=[miss], now=pf.NOW))
    assert (r["verdict"], r["partial"]) == ("unknown", True)
    assert r["next_steps"][0]["command"] == "kubectl auth can-i get pods -n ml"


def test_missing_data_caps_confidence_at_medium() -> None:
    failed = pf.pod(state=pf.terminated(finished=-600, message="CUDA error"))
    r = explain(
        facts(
            failed,
            xids=pf.xids(pf.xid(79, at=-601, gpu=3)),
            missing=[Missing("events of pod ml/trainer-abc", "denied", "list events", "k")],
        )
    )
    assert (r["verdict"], r["confidence"]) == ("hardware", "medium")


def test_timeline_is_in_time_order_and_names_the_xid() -> None:
    failed = pf.pod(state=pf.terminated(finished=-600, started=-3000))
    r = explain(
        facts(
            failed,
            xids=pf.xids(pf.xid(79, at=-602, gpu=3)),
            events=[pf.event("Started", "Started container main", at=-3000, kind="Normal")],
        )
    )
    times = [t["time"] for t in r["timeline"]]
    assert times == sorted(times)
    texts = [t["text"] for t in r["timeline"]]
    xid_at = next(i for i, t in enumerate(texts) if t.startswith("XID 79"))
    exit_at = next(i for i, t in enumerate(texts) if "terminated: exit code 1" in t)
    assert xid_at < exit_at


# -- catalog categories ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (13, "application"),
        (31, "application"),
        (43, "informational"),
        (45, "side_effect"),
        (48, "hardware"),
        (63, "informational"),
        (64, "hardware"),
        (74, "hardware"),
        (79, "hardware"),
        (94, "hardware"),
        (119, "driver"),
        (154, "recovery"),
    ],
)
def test_xid_categories_follow_nvidias_catalog(code: int, category: str) -> None:
    assert xid_category(pf.xid(code, at=0)) == category
    assert xid_category({"xid": code}) == category  # catalog fallback (old agents)


def test_find_failure_prefers_the_most_recent_termination() -> None:
    p = pf.pod(
        phase="Running",
        state=pf.terminated(exit_code=2, finished=-100),
        last_state=pf.terminated(exit_code=137, reason="OOMKilled", finished=-500),
        restarts=3,
    )
    f = find_failure(p)
    assert (f.exit_code, f.previous) == (2, False)


# -- the guarantee ------------------------------------------------------------------------

CODES = [13, 31, 43, 45, 48, 63, 64, 74, 79, 94, 119, 154]
MESSAGES = ["", "CUDA error: uncorrectable ECC error", "illegal memory access", "boom", "NCCL"]


@settings(max_examples=150, deadline=None)
@given(
    codes=st.lists(st.tuples(st.sampled_from(CODES), st.integers(-3000, 600), st.integers(0, 7))),
    message=st.sampled_from(MESSAGES),
    bad_gpu=st.none() | st.integers(0, 7),
    reason=st.sampled_from(["Error", "OOMKilled"]),
    gpus=st.integers(1, 8),
    exit_code=st.sampled_from([1, 2, 137, 139]),
)
def test_never_hardware_without_hardware_evidence(
    codes: list[tuple[int, int, int]],
    message: str,
    bad_gpu: int | None,
    reason: str,
    gpus: int,
    exit_code: int,
) -> None:
    failed = pf.pod(
        gpus=gpus, state=pf.terminated(exit_code=exit_code, reason=reason, message=message)
    )
    groups = [pf.xid(c, at=-600 + off, gpu=g) for c, off, g in codes]
    bad = () if bad_gpu is None else ((bad_gpu, "critical", "gpu_lost"),)
    r = explain(facts(failed, xids=pf.xids(*groups), health=pf.health(*bad)))
    hardware_xid = any(x["category"] == "hardware" and x["in_window"] for x in r["xids"])
    # A memory repair event (XID 63) the app's own ECC message agrees with counts too.
    hardware_xid |= "ECC" in message and any(x["xid"] == 63 for x in r["xids"])
    held_bad = gpus == 8 and bad_gpu is not None
    if r["verdict"] == "hardware":
        assert hardware_xid or held_bad
        assert reason != "OOMKilled"
    if reason == "OOMKilled":
        assert r["verdict"] == "application"


def test_a_running_pod_is_warned_about_hardware_xids_on_its_gpus() -> None:
    running = pf.pod(gpus=8, phase="Running", state={"running": {"startedAt": pf.ts(-3000)}})
    r = explain(facts(running, xids=pf.xids(pf.xid(48, at=-100, gpu=2), pf.xid(13, at=-50, gpu=1))))
    assert r["verdict"] == "none"
    assert len(r["notes"]) == 1 and "XID 48" in r["notes"][0] and "GPU 2" in r["notes"][0]
    assert {x["xid"] for x in r["xids"]} == {13, 48}  # no failure time: every XID is listed
