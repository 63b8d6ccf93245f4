"""The controllers the sim's pods point to (ownerReferences that resolve): the agent's
and the device plugin's DaemonSets, and the Jobs, CronJobs, ReplicaSets, Deployments
and StatefulSets of the scenario's workloads, with the status their controllers would
write from those pods.

The agent DaemonSet's status is counted from the agent pod states (one pass over the
GPU nodes, cached by the cluster until a state changes), never per pod per node.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from .objects import AGENT_LABELS, CHART_LABELS, RELEASE, event_object, iso, uid
from .scenario import EventSpec, WorkloadSpec

Obj = dict[str, Any]
_CRON_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<stamp>\d{8,})$")  # CronJob-made Job names
_SELECTOR_SKIP = (
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-revision-hash",
)
DEVICE_PLUGIN = ("gpu-operator", "nvidia-device-plugin-daemonset")
AGENT_SELECTOR = {
    k: AGENT_LABELS[k]
    for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
}


def _meta(kind: str, namespace: str, name: str, created: str, rv: str, labels: Obj) -> Obj:
    return {
        "name": name,
        "namespace": namespace,
        "uid": uid(kind, namespace, name),
        "resourceVersion": rv,
        "generation": 1,
        "creationTimestamp": created,
        "labels": labels,
    }


def _owner(api_version: str, kind: str, namespace: str, name: str) -> list[Obj]:
    return [
        {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "uid": uid(kind if kind != "DaemonSet" else "daemonset", namespace, name),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _template(pod: Obj, drop: Iterable[str] = ()) -> Obj:
    """A pod template from a pod: its labels, annotations and spec without node binding."""
    spec = copy.deepcopy(pod["spec"])
    for key in ("nodeName", "affinity", *drop):
        spec.pop(key, None)
    meta: Obj = {"labels": dict(pod["metadata"].get("labels", {}))}
    if pod["metadata"].get("annotations"):
        meta["annotations"] = dict(pod["metadata"]["annotations"])
    return {"metadata": meta, "spec": spec}


# DaemonSets -------------------------------------------------------------------------------


def agent_daemonset(namespace: str, template_pod: Obj, created: str, rv: str) -> Obj:
    """The chart's DaemonSet; ``status`` is filled by :func:`daemonset_status`."""
    labels = dict(CHART_LABELS)
    template = _template(template_pod)
    for key in ("controller-revision-hash", "pod-template-generation"):
        template["metadata"]["labels"].pop(key, None)
    template["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
                        ]
                    }
                ]
            }
        }
    }
    return {
        "kind": "DaemonSet",
        "apiVersion": "apps/v1",
        "metadata": {
            **_meta("daemonset", namespace, RELEASE, created, rv, labels),
            "annotations": {
                "deprecated.daemonset.template.generation": "1",
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": namespace,
            },
        },
        "spec": {
            "selector": {"matchLabels": dict(AGENT_SELECTOR)},
            "template": template,
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "20%", "maxSurge": 0},
            },
            "revisionHistoryLimit": 5,
        },
        "status": {},
    }


def device_plugin_daemonset(template_pod: Obj, created: str, rv: str) -> Obj:
    ns, name = DEVICE_PLUGIN
    template = _template(template_pod)
    template["metadata"]["labels"].pop("pod-template-generation", None)
    template["spec"]["nodeSelector"] = {"nvidia.com/gpu.deploy.device-plugin": "true"}
    return {
        "kind": "DaemonSet",
        "apiVersion": "apps/v1",
        "metadata": {
            **_meta("daemonset", ns, name, created, rv, {"app": name}),
            "annotations": {"deprecated.daemonset.template.generation": "1"},
        },
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": template,
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "revisionHistoryLimit": 10,
        },
        "status": {},
    }


def daemonset_status(desired: int, scheduled: int, ready: int) -> Obj:
    """What the DaemonSet controller writes: *desired* nodes that should run a pod,
    *scheduled* of them that have one, *ready* of those Ready."""
    status: Obj = {
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": desired,
        "numberReady": ready,
        "observedGeneration": 1,
        "updatedNumberScheduled": scheduled,
        "numberAvailable": ready,
    }
    if desired - ready:
        status["numberUnavailable"] = desired - ready
    if not ready:
        del status["numberAvailable"]  # omitempty, as the API server serialises it
    return status


# Workload controllers ---------------------------------------------------------------------


def _selector_labels(pod: Obj) -> Obj:
    return {k: v for k, v in pod["metadata"].get("labels", {}).items() if k not in _SELECTOR_SKIP}


def _replica_status(pods: list[Obj]) -> Obj:
    ready = sum(
        1
        for p in pods
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in p["status"].get("conditions", [])
        )
    )
    status: Obj = {"replicas": len(pods), "observedGeneration": 1}
    if ready:  # omitempty, as the API server serialises them
        status["readyReplicas"] = ready
        status["availableReplicas"] = ready
    return status


def _job(w: WorkloadSpec, name: str, pods: list[Obj], rv: str, start: float) -> Obj:
    pod = pods[0]
    created = pod["metadata"]["creationTimestamp"]
    job_uid = uid("Job", w.namespace, name)
    meta = _meta(
        "Job",
        w.namespace,
        name,
        created,
        rv,
        {
            "batch.kubernetes.io/controller-uid": job_uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": job_uid,
            "job-name": name,
            **w.labels,
        },
    )
    cron = _CRON_SUFFIX.match(name)
    if cron:
        meta["ownerReferences"] = _owner("batch/v1", "CronJob", w.namespace, cron["base"])
    template = _template(pod)
    status: Obj = {"startTime": created}
    done_at = iso(start - (w.finished_ago_s or 0))
    conditions: list[Obj] = []
    if w.phase == "Failed":
        status["failed"] = len(pods)
        for kind in ("FailureTarget", "Failed"):
            conditions.append(
                {
                    "type": kind,
                    "status": "True",
                    "lastProbeTime": done_at,
                    "lastTransitionTime": done_at,
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            )
    elif w.phase == "Succeeded":
        status["succeeded"] = len(pods)
        status["completionTime"] = done_at
        for kind, reason in (("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "")):
            cond: Obj = {
                "type": kind,
                "status": "True",
                "lastProbeTime": done_at,
                "lastTransitionTime": done_at,
            }
            if reason:
                cond["reason"], cond["message"] = (
                    reason,
                    "Reached expected number of succeeded pods",
                )
            conditions.append(cond)
    else:
        status["active"] = len(pods)
        ready = _replica_status(pods).get("readyReplicas", 0)
        status["ready"] = ready
    status.setdefault("ready", 0)
    status["terminating"] = 0
    status["uncountedTerminatedPods"] = {}
    if conditions:
        status["conditions"] = conditions
    return {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": meta,
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "completionMode": "NonIndexed",
            "suspend": False,
            "podReplacementPolicy": "TerminatingOrFailed",
            "manualSelector": False,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": job_uid}},
            "template": template,
        },
        "status": status,
    }


def _cronjob(namespace: str, name: str, job: Obj, rv: str) -> Obj:
    template = copy.deepcopy(job["spec"]["template"])
    for key in (
        "batch.kubernetes.io/controller-uid",
        "controller-uid",
        "batch.kubernetes.io/job-name",
        "job-name",
    ):
        template["metadata"]["labels"].pop(key, None)
    return {
        "kind": "CronJob",
        "apiVersion": "batch/v1",
        "metadata": _meta("CronJob", namespace, name, job["metadata"]["creationTimestamp"], rv, {}),
        "spec": {
            "schedule": "0 2 * * *",
            "concurrencyPolicy": "Forbid",
            "suspend": False,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {}, "spec": {"backoffLimit": 0, "template": template}},
        },
        "status": {"lastScheduleTime": job["metadata"]["creationTimestamp"]},
    }


def _replicaset(w: WorkloadSpec, name: str, pods: list[Obj], rv: str) -> list[Obj]:
    pod = pods[0]
    labels = _selector_labels(pod)
    created = pod["metadata"]["creationTimestamp"]
    rs: Obj = {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {
            **_meta("ReplicaSet", w.namespace, name, created, rv, labels),
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": str(len(pods)),
                "deployment.kubernetes.io/max-replicas": str(len(pods) + 1),
                "deployment.kubernetes.io/revision": "1",
            },
        },
        "spec": {
            "replicas": len(pods),
            "selector": {"matchLabels": labels},
            "template": _template(pod),
        },
        "status": _replica_status(pods),
    }
    rs["status"]["fullyLabeledReplicas"] = len(pods)
    out = [rs]
    hash_ = labels.get("pod-template-hash")
    if hash_ and name.endswith(f"-{hash_}"):
        deploy = name[: -len(hash_) - 1]
        rs["metadata"]["ownerReferences"] = _owner("apps/v1", "Deployment", w.namespace, deploy)
        dep_labels = {k: v for k, v in labels.items() if k != "pod-template-hash"}
        template = _template(pod)
        template["metadata"]["labels"].pop("pod-template-hash", None)
        status = _replica_status(pods)
        status["updatedReplicas"] = len(pods)
        unavailable = len(pods) - status.get("availableReplicas", 0)
        if unavailable:
            status["unavailableReplicas"] = unavailable
        available = "True" if not unavailable else "False"
        status["conditions"] = [
            {
                "type": "Available",
                "status": available,
                "lastUpdateTime": created,
                "lastTransitionTime": created,
                "reason": "MinimumReplicasAvailable"
                if not unavailable
                else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if not unavailable
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "lastUpdateTime": created,
                "lastTransitionTime": created,
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}" has successfully progressed.',
            },
        ]
        out.append(
            {
                "kind": "Deployment",
                "apiVersion": "apps/v1",
                "metadata": {
                    **_meta("Deployment", w.namespace, deploy, created, rv, dep_labels),
                    "annotations": {"deployment.kubernetes.io/revision": "1"},
                },
                "spec": {
                    "replicas": len(pods),
                    "selector": {"matchLabels": dep_labels},
                    "template": template,
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                    },
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 600,
                },
                "status": status,
            }
        )
    return out


def _statefulset(w: WorkloadSpec, name: str, pods: list[Obj], rv: str) -> Obj:
    pod = pods[0]
    labels = _selector_labels(pod)
    status = _replica_status(pods)
    status.update(
        currentReplicas=len(pods),
        updatedReplicas=len(pods),
        currentRevision=f"{name}-7b9d5c6f48",
        updateRevision=f"{name}-7b9d5c6f48",
        collisionCount=0,
    )
    return {
        "kind": "StatefulSet",
        "apiVersion": "apps/v1",
        "metadata": _meta(
            "StatefulSet", w.namespace, name, pod["metadata"]["creationTimestamp"], rv, labels
        ),
        "spec": {
            "replicas": len(pods),
            "selector": {"matchLabels": labels},
            "template": _template(pod),
            "serviceName": name,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
        },
        "status": status,
    }


def _job_events(w: WorkloadSpec, job: Obj, pods: list[Obj], start: float, rv: str) -> list[Obj]:
    """The Job controller's events, while the 1 h event TTL keeps them."""
    if w.created_ago_s > 3600:
        return []
    specs = [
        EventSpec(
            reason="SuccessfulCreate",
            message=f"Created pod: {pods[0]['metadata']['name']}",
            ago_s=w.created_ago_s,
            component="job-controller",
        )
    ]
    if w.phase == "Failed":
        specs.append(
            EventSpec(
                type="Warning",
                reason="BackoffLimitExceeded",
                message="Job has reached the specified backoff limit",
                ago_s=w.finished_ago_s or 0,
                component="job-controller",
            )
        )
    elif w.phase == "Succeeded":
        specs.append(
            EventSpec(
                reason="Completed",
                message="Job completed",
                ago_s=w.finished_ago_s or 0,
                component="job-controller",
            )
        )
    return [event_object(s, job, "", start, rv) for s in specs]


def _training_job(
    kind: str, w: WorkloadSpec, name: str, pods: list[Obj], rv: str, start: float
) -> Obj:
    """A JobSet or Kubeflow PyTorchJob owning the pods, with the status its operator writes."""
    created = min(p["metadata"]["creationTimestamp"] for p in pods)
    phases = [p["status"].get("phase") for p in pods]
    failed, succeeded = phases.count("Failed"), phases.count("Succeeded")
    active = len(pods) - failed - succeeded
    done_at = iso(start - (w.finished_ago_s or 0))
    if kind == "PyTorchJob":
        conditions: list[Obj] = [
            {"type": "Created", "status": "True", "reason": "PyTorchJobCreated",
             "message": f"PyTorchJob {name} is created.", "lastTransitionTime": created},
        ]  # fmt: skip
        if failed:
            conditions.append(
                {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed",
                 "message": f"PyTorchJob {name} is failed because {failed} Worker replica(s) "
                 "failed.", "lastTransitionTime": done_at}
            )  # fmt: skip
        elif active:
            conditions.append(
                {"type": "Running", "status": "True", "reason": "PyTorchJobRunning",
                 "message": f"PyTorchJob {name} is running.", "lastTransitionTime": created}
            )  # fmt: skip
        status: Obj = {
            "conditions": conditions,
            "replicaStatuses": {"Worker": {"active": active, "failed": failed,
                                           "succeeded": succeeded}},
            "startTime": created,
        }  # fmt: skip
        spec: Obj = {
            "pytorchReplicaSpecs": {
                "Worker": {"replicas": len(pods), "restartPolicy": "Never",
                           "template": _template(pods[0])},
            },
            "runPolicy": {"backoffLimit": 0},
        }  # fmt: skip
        api_version = "kubeflow.org/v1"
    else:
        conditions = []
        if failed:
            conditions.append(
                {"type": "Failed", "status": "True", "reason": "FailedJobs",
                 "message": "jobset failed due to one or more job failures",
                 "lastTransitionTime": done_at}
            )  # fmt: skip
        elif not active:
            conditions.append(
                {"type": "Completed", "status": "True", "reason": "AllJobsCompleted",
                 "message": "jobset completed successfully", "lastTransitionTime": done_at}
            )  # fmt: skip
        status = {
            "conditions": conditions,
            "replicatedJobsStatus": [{"name": "workers", "ready": active, "active": active,
                                      "failed": failed, "succeeded": succeeded,
                                      "suspended": 0}],
            "restarts": 0,
        }  # fmt: skip
        spec = {
            "replicatedJobs": [
                {"name": "workers", "replicas": len(pods),
                 "template": {"spec": {"parallelism": 1, "completions": 1,
                                       "template": _template(pods[0])}}},
            ],
            "failurePolicy": {"maxRestarts": 0},
        }  # fmt: skip
        api_version = "jobset.x-k8s.io/v1alpha2"
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": _meta(kind, w.namespace, name, created, rv, {}),
        "spec": spec,
        "status": status,
    }


def workload_controllers(
    workloads: list[tuple[WorkloadSpec, Obj]], start: float, rv: str
) -> tuple[list[Obj], list[Obj]]:
    """(controllers, their events) for the scenario's (workload, pod) pairs."""
    groups: dict[tuple[str, str, str], list[tuple[WorkloadSpec, Obj]]] = {}
    for w, pod in workloads:
        for ref in pod["metadata"].get("ownerReferences", []):
            groups.setdefault((w.namespace, ref["kind"], ref["name"]), []).append((w, pod))
    objects: list[Obj] = []
    events: list[Obj] = []
    for (ns, kind, name), members in groups.items():
        w, pods = members[0][0], [p for _, p in members]
        if kind == "Job":
            job = _job(w, name, pods, rv, start)
            objects.append(job)
            events.extend(_job_events(w, job, pods, start, rv))
            cron = job["metadata"].get("ownerReferences")
            if cron:
                objects.append(_cronjob(ns, cron[0]["name"], job, rv))
        elif kind in ("JobSet", "PyTorchJob"):
            objects.append(_training_job(kind, w, name, pods, rv, start))
        elif kind == "ReplicaSet":
            objects.extend(_replicaset(w, name, pods, rv))
        elif kind == "StatefulSet":
            objects.append(_statefulset(w, name, pods, rv))
    return objects, events
