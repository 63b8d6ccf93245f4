"""broker.diagnosis.job: ordering a job's failures and telling the cascade from the cause."""

from __future__ import annotations

from typing import Any

from broker.diagnosis.job import SECONDARY_PATTERN, _confidence, order_failures
from broker.kube.workloads import match_job_pods, pod_rank


def pod(
    name: str,
    *,
    finished: str | None,
    code: int = 1,
    message: str = "",
    rank: int = 0,
    labels: dict[str, str] | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {
            "terminated": {
                "exitCode": code,
                "reason": "Error",
                "message": message,
                "startedAt": "2026-12-01T10:00:00Z",
                "finishedAt": finished,
            }
        }  # fmt: skip
        if finished
        else {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
    )
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "labels": {"training.kubeflow.org/replica-index": str(rank), **(labels or {})},
    }
    if owner:
        meta["ownerReferences"] = [{"kind": "PyTorchJob", "name": owner, "controller": True}]
    return {
        "metadata": meta,
        "spec": {"nodeName": f"node-{rank}", "restartPolicy": "Never"},
        "status": {
            "phase": "Failed" if finished else "Running",
            "containerStatuses": [{"name": "main", "restartCount": 0, "state": state}],
        },
    }


NCCL = "Watchdog caught collective operation timeout: WorkNCCL(OpType=ALLREDUCE)"


def test_failures_ordered_by_when_they_happened() -> None:
    pods = [
        pod("w-0", finished="2026-12-01T11:00:50Z", message=NCCL, rank=0),
        pod("w-1", finished="2026-12-01T11:00:10Z", message="CUDA error: illegal address", rank=1),
        pod("w-2", finished=None, rank=2),
    ]  # fmt: skip
    ordered = order_failures(pods)
    assert [e["pod"] for e in ordered] == ["w-1", "w-0", "w-2"]
    assert [e["failed"] for e in ordered] == [True, True, False]
    assert [e["secondary"] for e in ordered] == [False, True, False]
    assert ordered[0]["rank"] == 1 and ordered[0]["node"] == "node-1"


def test_a_clean_exit_is_not_a_failure() -> None:
    (entry,) = order_failures([pod("done", finished="2026-12-01T11:00:00Z", code=0)])
    assert entry["failed"] is False


def test_near_simultaneous_primary_failures_lower_confidence() -> None:
    pods = [pod("a", finished="2026-12-01T11:00:00Z"), pod("b", finished="2026-12-01T11:00:02Z")]
    failed = order_failures(pods)
    assert _confidence({"confidence": "high"}, failed) == "medium"
    pods[1] = pod("b", finished="2026-12-01T11:00:02Z", message=NCCL)
    assert _confidence({"confidence": "high"}, order_failures(pods)) == "high"


def test_collective_timeouts_recognised() -> None:
    for text in (
        NCCL,
        "torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError",
        "ncclRemoteError: remote process exited",
        "Gloo connectFullMesh failed",
    ):
        assert SECONDARY_PATTERN.search(text), text
    assert not SECONDARY_PATTERN.search("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_job_pods_by_label_then_owner() -> None:
    pods = [pod("x-0", finished=None, labels={"jobset.sigs.k8s.io/jobset-name": "x"}),
            pod("y-0", finished=None, owner="y"),
            pod("z-0", finished=None)]  # fmt: skip
    assert match_job_pods(pods, "x") == ("JobSet", [pods[0]])
    assert match_job_pods(pods, "y") == ("PyTorchJob", [pods[1]])
    assert match_job_pods(pods, "nope") is None
    assert pod_rank(pods[0]) == 0
