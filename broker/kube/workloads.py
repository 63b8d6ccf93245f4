"""The pods of one distributed job: a batch/v1 Job, a JobSet, a Kubeflow PyTorchJob/MPIJob
or a LeaderWorkerSet, found by the labels their controllers put on every pod and by owner
references. Read with one pod list of the job's namespace; no custom-resource access needed
(a user who can read pods can ask about their job)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.errors import NotFound
from broker.kube.reader import ClusterReader

__all__ = ["JOB_LABELS", "JobPods", "find_job_pods", "match_job_pods", "pod_rank"]

Obj = dict[str, Any]

# The controller that made the pods -> the label naming the job on each of its pods.
JOB_LABELS: tuple[tuple[str, str], ...] = (
    ("Job", "batch.kubernetes.io/job-name"),
    ("Job", "job-name"),  # before Kubernetes 1.27
    ("JobSet", "jobset.sigs.k8s.io/jobset-name"),
    ("PyTorchJob/MPIJob (Kubeflow)", "training.kubeflow.org/job-name"),
    ("LeaderWorkerSet", "leaderworkerset.sigs.k8s.io/name"),
)
# Labels that carry a pod's index within its job (its "rank" when one pod per rank).
RANK_LABELS = (
    "training.kubeflow.org/replica-index",
    "batch.kubernetes.io/job-completion-index",
    "jobset.sigs.k8s.io/job-index",
    "leaderworkerset.sigs.k8s.io/worker-index",
)


@dataclass(frozen=True)
class JobPods:
    """A job's pods, and how they were recognised."""

    namespace: str
    name: str
    kind: str
    pods: list[Obj]


async def find_job_pods(reader: ClusterReader, namespace: str, name: str) -> JobPods:
    """The pods of job ``name`` in ``namespace``. Raises NotFound (no pod belongs to a job of
    that name), RbacDenied, ApiUnavailable."""
    pods = await reader.pods(namespace)
    found = match_job_pods(pods, name)
    if found is None:
        raise NotFound(
            f"no pod in namespace {namespace} belongs to a job named {name!r} (looked for the "
            "labels of Jobs, JobSets, Kubeflow PyTorchJob/MPIJob and LeaderWorkerSets, and "
            f"owner references); list jobs with `kubectl -n {namespace} get jobs,pods "
            "--show-labels`"
        )
    kind, members = found
    return JobPods(namespace, name, kind, members)


def match_job_pods(pods: Sequence[Mapping[str, Any]], name: str) -> tuple[str, list[Obj]] | None:
    """Which of ``pods`` belong to job ``name``: (the job's kind, its pods), or None."""
    for kind, label in JOB_LABELS:
        members = [dict(p) for p in pods if _labels(p).get(label) == name]
        if members:
            return kind, members
    owned = [
        dict(p)
        for p in pods
        if any(
            ref.get("name") == name
            for ref in (p.get("metadata") or {}).get("ownerReferences") or []
        )
    ]
    if owned:
        owner = next(ref for ref in _owners(owned[0]) if ref.get("name") == name)
        return str(owner.get("kind") or "owner"), owned
    return None


def pod_rank(pod: Mapping[str, Any]) -> int | None:
    """The pod's index within its job, from the controllers' labels or annotations."""
    meta = pod.get("metadata") or {}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        for label in RANK_LABELS:
            value = source.get(label)
            if value is not None and str(value).isdigit():
                return int(value)
    return None


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _owners(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((pod.get("metadata") or {}).get("ownerReferences") or [])
