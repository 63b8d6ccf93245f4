"""Kubernetes objects (as the API server serialises them) built from the scenario:
GPU nodes with NVIDIA feature-discovery labels, the chart's agent pods, workload pods
holding GPUs, and core/v1 events."""

from __future__ import annotations

import functools
import hashlib
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .products import product
from .scenario import EventSpec, NodeSpec, WorkloadSpec

Obj = dict[str, Any]

RELEASE = "k8s-gpu-mcp"  # helm release (and DaemonSet) name; the chart's fullname
AGENT_CONTAINER = "agent"
HOST_PROC_MOUNT = "/host/proc"  # where the chart mounts the host's /proc (hostProc.enabled)
# The apiVersion of each kind that may own a workload pod (the rest are apps/v1).
OWNER_API_VERSIONS = {
    "Job": "batch/v1",
    "JobSet": "jobset.x-k8s.io/v1alpha2",
    "PyTorchJob": "kubeflow.org/v1",
}
# The chart's default (agent.source=zipapp): a stock Python image running the agent zipapp
# that a ConfigMap mounts at /usr/local/bin/gpu-agent.
AGENT_IMAGE = "docker.io/library/python:3.13-slim-trixie"
AGENT_ZIPAPP = (
    Path(__file__).resolve().parents[2] / "charts" / "k8s-gpu-mcp" / "files" / "gpu-agent.pyz"
)


@functools.cache
def agent_zipapp_sha256() -> str:
    """The chart's pod annotation: the zipapp's digest (from a source checkout; an installed
    broker has no chart beside it, and the sim then shows the digest of nothing)."""
    try:
        return hashlib.sha256(AGENT_ZIPAPP.read_bytes()).hexdigest()
    except OSError:
        return hashlib.sha256(b"").hexdigest()


AGENT_LABELS = {
    "app.kubernetes.io/name": "k8s-gpu-mcp",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "agent",
    "app.kubernetes.io/part-of": "k8s-gpu-mcp",
}
CHART_VERSION = "0.1.0"
# The chart's own objects (DaemonSet, ServiceAccount) also carry the chart version; its pod
# template does not (a chart upgrade must not restart every agent).
CHART_LABELS = {
    **AGENT_LABELS,
    "app.kubernetes.io/version": CHART_VERSION,
    "app.kubernetes.io/managed-by": "Helm",
    "helm.sh/chart": f"k8s-gpu-mcp-{CHART_VERSION}",
}
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName


def iso(t: float) -> str:
    """RFC 3339 with second precision, as metav1.Time marshals."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "k8s-gpu-mcp-sim/" + "/".join(parts)))


def suffix(seed: str, length: int = 5) -> str:
    """A stable generateName-style suffix for *seed*."""
    n = zlib.crc32(seed.encode())
    out = ""
    for _ in range(length):
        n, r = divmod(n, len(_SUFFIX_ALPHABET))
        out += _SUFFIX_ALPHABET[r]
        n = n * 7919 + 17
    return out


def hexid(seed: str, length: int = 64) -> str:
    out = ""
    k = 0
    while len(out) < length:
        out += f"{zlib.crc32(f'{seed}/{k}'.encode()):08x}"
        k += 1
    return out[:length]


def node_ip(index: int) -> str:
    return f"10.0.{index // 250}.{index % 250 + 10}"


def pod_ip(node_index: int, slot: int) -> str:
    return f"10.244.{node_index % 250}.{slot % 250 + 2}"


# Nodes ---------------------------------------------------------------------------------


def _gfd_labels(spec: NodeSpec) -> dict[str, str]:
    p = product(spec.product)
    major, minor, *rest = (spec.driver_version.split(".") + ["", ""])[:3]
    rev = rest[0] if rest else ""
    cuda_major, cuda_minor = (spec.cuda_version.split(".") + ["0"])[:2]
    mig = spec.mig or {}
    strategy = mig.get("strategy", "mixed") if mig else "none"
    labels = {
        "feature.node.kubernetes.io/pci-10de.present": "true",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.deploy.device-plugin": "true",
        "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
        "nvidia.com/gpu.product": p.gfd_product,
        "nvidia.com/gpu.count": str(spec.gpu_count),
        "nvidia.com/gpu.memory": str(p.memory_mib),
        "nvidia.com/gpu.family": p.family,
        "nvidia.com/gpu.compute.major": str(p.compute[0]),
        "nvidia.com/gpu.compute.minor": str(p.compute[1]),
        "nvidia.com/gpu.mode": "compute",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.machine": p.instance_type,
        "nvidia.com/cuda.driver.major": major,
        "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
        "nvidia.com/cuda.driver-version.full": spec.driver_version,
        "nvidia.com/cuda.driver-version.major": major,
        "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": rev,
        "nvidia.com/cuda.runtime.major": cuda_major,
        "nvidia.com/cuda.runtime.minor": cuda_minor,
        "nvidia.com/cuda.runtime-version.full": spec.cuda_version,
        "nvidia.com/cuda.runtime-version.major": cuda_major,
        "nvidia.com/cuda.runtime-version.minor": cuda_minor,
        "nvidia.com/mig.capable": str(p.mig_capable).lower(),
        "nvidia.com/mig.strategy": strategy,
    }
    if mig:
        labels["nvidia.com/mig.config"] = "custom"
        labels["nvidia.com/mig.config.state"] = "success"
        for profile, count in _mig_counts(spec).items():
            labels[f"nvidia.com/mig-{profile}.count"] = str(count)
            gb = int(profile.split(".")[1].rstrip("gb").split("+")[0])
            labels[f"nvidia.com/mig-{profile}.memory"] = str(gb * 1024)
            labels[f"nvidia.com/mig-{profile}.product"] = f"{p.gfd_product}-MIG-{profile}"
    return labels


def _mig_counts(spec: NodeSpec) -> dict[str, int]:
    counts: dict[str, int] = {}
    for profile in (spec.mig or {}).get("profiles", []):
        counts[str(profile)] = counts.get(str(profile), 0) + 1
    return counts


def gpu_resources(spec: NodeSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) extended resources the NVIDIA device plugin advertises."""
    if not spec.gpu:
        return {}, {}
    whole = spec.gpu_count - (1 if spec.mig else 0)
    cap = {"nvidia.com/gpu": str(whole)}
    alloc = {"nvidia.com/gpu": str(max(0, whole - spec.unhealthy_gpus))}
    for profile, count in _mig_counts(spec).items():
        cap[f"nvidia.com/mig-{profile}"] = alloc[f"nvidia.com/mig-{profile}"] = str(count)
    return cap, alloc


def node_labels(spec: NodeSpec, index: int) -> dict[str, str]:
    """Every label the node carries (cloud, kubelet, GPU feature discovery, scenario)."""
    p = product(spec.product)
    zone = "us-east-1" + "abc"[index % 3]
    instance = p.instance_type if spec.gpu else "m6i.4xlarge"
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/instance-type": instance,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance,
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": zone,
    }
    if spec.gpu:
        labels.update(_gfd_labels(spec))
    labels.update(spec.labels)
    return labels


def node_object(spec: NodeSpec, index: int, start: float, version: str, rv: str) -> Obj:
    p = product(spec.product)
    zone = "us-east-1" + "abc"[index % 3]
    cpus, mem_gib = (p.cpus, p.memory_gib) if spec.gpu else (16, 64)
    labels = node_labels(spec, index)
    created = start - spec.age_s
    boot = start - spec.uptime_s
    cap_gpu, alloc_gpu = gpu_resources(spec)
    capacity = {
        "cpu": str(cpus),
        "ephemeral-storage": "3749557236Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{mem_gib * 1024 * 1024}Ki",
        "pods": "110",
        **cap_gpu,
    }
    allocatable = {
        "cpu": f"{cpus * 1000 - 190}m",
        "ephemeral-storage": "3455554189326",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{mem_gib * 1024 * 1024 - 1882112}Ki",
        "pods": "110",
        **alloc_gpu,
    }
    taints = [dict(t) for t in spec.taints]
    if spec.unschedulable:
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                       "timeAdded": iso(start - 600)})  # fmt: skip
    if not spec.ready:
        for effect in ("NoSchedule", "NoExecute"):
            taints.append({"key": "node.kubernetes.io/unreachable", "effect": effect,
                           "timeAdded": iso(start - 300)})  # fmt: skip
    for t in taints:
        t.setdefault("effect", "NoSchedule")
    booted = iso(boot + 45)

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": iso(start - 20),
            "lastTransitionTime": booted,
            "reason": reason,
            "message": message,
        }

    if spec.ready:
        ready = cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
    else:
        ready = cond(
            "Ready", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
        )
        ready["lastTransitionTime"] = iso(start - 300)
    ip = node_ip(index)
    obj: Obj = {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": spec.name,
            "uid": uid("node", spec.name),
            "resourceVersion": rv,
            "creationTimestamp": iso(created),
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                **spec.annotations,
            },
        },
        "spec": {
            "podCIDR": f"10.244.{index % 250}.0/24",
            "podCIDRs": [f"10.244.{index % 250}.0/24"],
            "providerID": f"aws:///{zone}/i-0{hexid(spec.name, 16)}",
        },
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                ready,
            ],  # fmt: skip
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "InternalDNS", "address": f"ip-{ip.replace('.', '-')}.ec2.internal"},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hexid(spec.name + "machine", 32),
                "systemUUID": uid("system", spec.name).upper(),
                "bootID": uid("boot", spec.name),
                "kernelVersion": "6.8.0-1031-aws",
                "osImage": "Ubuntu 22.04.5 LTS",
                "containerRuntimeVersion": "containerd://1.7.27",
                "kubeletVersion": version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }
    if taints:
        obj["spec"]["taints"] = taints
    if spec.unschedulable:
        obj["spec"]["unschedulable"] = True
    for extra in spec.conditions:  # NVSentinel / node-problem-detector / pressure
        c = cond(str(extra.get("type")), str(extra.get("status", "True")),
                 str(extra.get("reason", "")), str(extra.get("message", "")))  # fmt: skip
        c["lastTransitionTime"] = iso(start - float(extra.get("ago_s", 600)))
        kept = [k for k in obj["status"]["conditions"] if k["type"] != c["type"]]
        obj["status"]["conditions"] = [*kept, c]
    return obj


# Pods ----------------------------------------------------------------------------------


def _container_status(
    name: str, image: str, seed: str, state: Obj, ready: bool, restarts: int, last: Obj
) -> Obj:
    running = "running" in state
    status: Obj = {
        "name": name,
        "state": state,
        "lastState": last,
        "ready": ready,
        "restartCount": restarts,
        "image": image,
        "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{hexid(image)}",
        "started": running,
    }
    if running or "terminated" in state or last:
        status["containerID"] = f"containerd://{hexid(seed)}"
    return status


def _pod_conditions(
    start_ts: str | None, scheduled_ts: str, ready: bool, initialized: bool = True
) -> list[Obj]:
    def c(kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> Obj:
        out: Obj = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": start_ts or scheduled_ts,
        }
        if reason:
            out["reason"] = reason
        if message:
            out["message"] = message
        return out

    return [
        c("PodReadyToStartContainers", start_ts is not None),
        c("Initialized", initialized),
        c("Ready", ready, None if ready else "ContainersNotReady"),
        c("ContainersReady", ready, None if ready else "ContainersNotReady"),
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
         "lastTransitionTime": scheduled_ts},
    ]  # fmt: skip


_DS_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def agent_pod_name(node: str) -> str:
    return f"{RELEASE}-{suffix(node)}"


def agent_pod(
    node: NodeSpec,
    index: int,
    namespace: str,
    state: str,
    since: float,
    start: float,
    rv: str,
    *,
    host_proc: bool = False,
) -> Obj:
    """The chart's DaemonSet pod on *node* in *state* (ready/not_ready/pending/crashloop);
    *host_proc*: the chart's hostProc.enabled (the host's /proc at /host/proc)."""
    name = agent_pod_name(node.name)
    created = start - min(node.age_s, 7 * 86400.0)
    started = created + 4
    ts_created, ts_started = iso(created), iso(started)
    waiting: Obj | None = None
    last: Obj = {}
    restarts = 0
    phase = "Running"
    if state in ("ready", "not_ready"):
        cstate: Obj = {"running": {"startedAt": ts_started}}
    elif state == "pending":
        phase = "Pending"
        waiting = {"reason": "ContainerCreating"}
        cstate = {"waiting": waiting}
    else:  # crashloop
        restarts = 7
        waiting = {
            "reason": "CrashLoopBackOff",
            "message": f"back-off 5m0s restarting failed container={AGENT_CONTAINER} "
            f"pod={name}_{namespace}({uid('pod', namespace, name)})",
        }
        cstate = {"waiting": waiting}
        last = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": iso(since - 40),
                "finishedAt": iso(since - 39),
                "containerID": f"containerd://{hexid(name + 'last')}",
            }
        }
    ready = state == "ready"
    status: Obj = {
        "phase": phase,
        "conditions": _pod_conditions(
            None if state == "pending" else ts_started, ts_created, ready
        ),
        "hostIP": node_ip(index),
        "hostIPs": [{"ip": node_ip(index)}],
        "startTime": ts_created,
        "qosClass": "Burstable",
    }
    if state != "pending":
        status["podIP"] = pod_ip(index, 2)
        status["podIPs"] = [{"ip": pod_ip(index, 2)}]
    status["containerStatuses"] = [
        _container_status(AGENT_CONTAINER, AGENT_IMAGE, name, cstate, ready, restarts, last)
    ]
    pod: Obj = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "generateName": f"{RELEASE}-",
            "namespace": namespace,
            "uid": uid("pod", namespace, name),
            "resourceVersion": rv,
            "creationTimestamp": ts_created,
            "labels": {
                **AGENT_LABELS,
                "controller-revision-hash": "7d9c6f8b54",
                "pod-template-generation": "1",
            },
            "annotations": {
                "k8s-gpu-mcp.io/gpu-mode": "runtimeClass",
                "k8s-gpu-mcp.io/xid-source": "auto",
                "k8s-gpu-mcp.io/pod-security-level": "privileged",
                "k8s-gpu-mcp.io/agent-sha256": agent_zipapp_sha256(),
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": RELEASE,
                    "uid": uid("daemonset", namespace, RELEASE),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": AGENT_CONTAINER,
                    "image": AGENT_IMAGE,
                    "command": ["sleep", "infinity"],
                    "env": [
                        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
                        {
                            "name": "NODE_NAME",
                            "valueFrom": {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}
                            },
                        },
                        {"name": "GPU_AGENT_KMSG", "value": "auto"},
                        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                        {"name": "GPU_AGENT_PYCACHE", "value": "/tmp/gpu-agent-pycache"},
                    ],  # fmt: skip
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "128Mi"},
                        "requests": {"cpu": "1m", "memory": "16Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"add": ["SYSLOG"], "drop": ["ALL"]},
                        "privileged": False,
                        "readOnlyRootFilesystem": True,
                        "runAsGroup": 0,
                        "runAsNonRoot": False,
                        "runAsUser": 0,
                    },
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {
                            "name": "agent-zipapp",
                            "mountPath": "/usr/local/bin/gpu-agent",
                            "subPath": "gpu-agent",
                            "readOnly": True,
                        },
                    ],  # fmt: skip
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                {
                    "name": "agent-zipapp",
                    "configMap": {"name": f"{RELEASE}-agent", "defaultMode": 0o555},
                },
            ],  # fmt: skip
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": RELEASE,
            "serviceAccount": RELEASE,
            "automountServiceAccountToken": False,
            "nodeName": node.name,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {
                                        "key": "metadata.name",
                                        "operator": "In",
                                        "values": [node.name],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },  # fmt: skip
            "schedulerName": "default-scheduler",
            "tolerations": _DS_TOLERATIONS,
            "priority": 0,
            "enableServiceLinks": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "runtimeClassName": "nvidia",
        },
        "status": status,
    }
    if host_proc:  # as the chart renders hostProc.enabled
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        container["env"].append({"name": "GPU_AGENT_HOST_PROC", "value": HOST_PROC_MOUNT})
        container["volumeMounts"].append(
            {"name": "host-proc", "mountPath": HOST_PROC_MOUNT, "readOnly": True}
        )
        spec["volumes"].append(
            {"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}}
        )
    return pod


def agent_pod_events(pod: Obj, node: str, state: str, since: float, rv: str) -> list[Obj]:
    """What the kubelet reports about an agent pod in a bad state."""
    if state == "pending":
        spec = EventSpec(
            type="Warning",
            reason="FailedCreatePodSandBox",
            message="Failed to create pod sandbox: rpc error: code = Unknown desc = failed to "
            'get sandbox runtime: no runtime for "nvidia" is configured',
            ago_s=0,
            first_ago_s=1800,
            count=84,
        )
    elif state == "crashloop":
        meta = pod["metadata"]
        spec = EventSpec(
            type="Warning",
            reason="BackOff",
            message=f"Back-off restarting failed container {AGENT_CONTAINER} in pod "
            f"{meta['name']}_{meta['namespace']}({meta['uid']})",
            ago_s=0,
            first_ago_s=1200,
            count=31,
            field_path=f"spec.containers{{{AGENT_CONTAINER}}}",
        )
    else:
        return []
    return [event_object(spec, pod, node, since, rv)]


def system_pods(node: NodeSpec, index: int, start: float, rv: str) -> list[Obj]:
    """The NVIDIA device plugin's DaemonSet pod (GPU Operator), as on real GPU nodes."""
    if not node.gpu:
        return []
    ns, ds = "gpu-operator", "nvidia-device-plugin-daemonset"
    name = f"{ds}-{suffix(node.name + ds)}"
    created = iso(start - min(node.age_s, 20 * 86400.0))
    image = "nvcr.io/nvidia/k8s-device-plugin:v0.17.2"
    return [
        {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "generateName": f"{ds}-",
                "namespace": ns,
                "uid": uid("pod", ns, name),
                "resourceVersion": rv,
                "creationTimestamp": created,
                "labels": {"app": ds, "pod-template-generation": "1"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": ds,
                        "uid": uid("daemonset", ns, ds),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],  # fmt: skip
            },
            "spec": {
                "containers": [
                    {
                        "name": "nvidia-device-plugin",
                        "image": image,
                        "command": ["nvidia-device-plugin"],
                    }
                ],  # fmt: skip
                "nodeName": node.name,
                "restartPolicy": "Always",
                "priorityClassName": "system-node-critical",
                "priority": 2000001000,
                "runtimeClassName": "nvidia",
                "tolerations": _DS_TOLERATIONS,
                "schedulerName": "default-scheduler",
            },
            "status": {
                "phase": "Running",
                "conditions": _pod_conditions(created, created, True),
                "hostIP": node_ip(index),
                "podIP": pod_ip(index, 3),
                "startTime": created,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    _container_status(
                        "nvidia-device-plugin",
                        image,
                        name,
                        {"running": {"startedAt": created}},
                        True,
                        0,
                        {},
                    )
                ],  # fmt: skip
            },
        }
    ]


def workload_pod(
    w: WorkloadSpec,
    node_index: int | None,
    start: float,
    rv: str,
    unschedulable: str = "",
    gpu_uuids: Sequence[str] = (),
) -> Obj:
    """A workload's pod; *unschedulable* is the scheduler's message for an unplaced one;
    *gpu_uuids* are its node's GPU UUIDs by index (for ``visible_gpus``)."""
    created = start - w.created_ago_s
    started_at = start - (w.started_ago_s if w.started_ago_s is not None else w.created_ago_s - 9)
    ts_created = iso(created)
    if w.state == "running":
        cstate: Obj = {"running": {"startedAt": iso(started_at)}}
    elif w.state == "waiting":
        cstate = {"waiting": {"reason": w.reason or "ContainerCreating"}}
        if w.message:
            cstate["waiting"]["message"] = w.message
        elif w.reason == "CrashLoopBackOff":
            cstate["waiting"]["message"] = (
                f"back-off 2m40s restarting failed container={w.container} "
                f"pod={w.name}_{w.namespace}({uid('pod', w.namespace, w.name)})"
            )
    else:
        finished = start - (w.finished_ago_s if w.finished_ago_s is not None else 0)
        term: Obj = {
            "exitCode": w.exit_code,
            "reason": w.reason or ("Completed" if w.exit_code == 0 else "Error"),
            # A container that never started (StartError): the kubelet reports the zero
            # time, which the API shows as the Unix epoch.
            "startedAt": iso(0) if w.reason == "StartError" else iso(started_at),
            "finishedAt": iso(finished),
            "containerID": f"containerd://{hexid(w.namespace + w.name)}",
        }
        if w.signal is not None:
            term["signal"] = w.signal
        if w.message:
            term["message"] = w.message
        cstate = {"terminated": term}
    last: Obj = {}
    if w.last_exit_code is not None:
        last_fin = start - (w.last_finished_ago_s or 0)
        last_start = start - (w.last_started_ago_s or (w.last_finished_ago_s or 0) + 60)
        last = {
            "terminated": {
                "exitCode": w.last_exit_code,
                "reason": w.last_reason or ("Completed" if w.last_exit_code == 0 else "Error"),
                "startedAt": iso(last_start),
                "finishedAt": iso(last_fin),
                "containerID": f"containerd://{hexid(w.namespace + w.name + 'last')}",
            }
        }
        if w.last_message:
            last["terminated"]["message"] = w.last_message
    ready = w.ready if w.ready is not None else w.state == "running"
    resources: Obj = {
        "limits": {"cpu": w.cpu, "memory": w.memory},
        "requests": {"cpu": w.cpu, "memory": w.memory},
    }
    if w.gpus:
        resources["limits"][w.gpu_resource] = str(w.gpus)
        resources["requests"][w.gpu_resource] = str(w.gpus)
    labels = dict(w.labels)
    meta: Obj = {
        "name": w.name,
        "namespace": w.namespace,
        "uid": uid("pod", w.namespace, w.name),
        "resourceVersion": rv,
        "creationTimestamp": ts_created,
        "labels": labels,
    }
    if w.owner_kind:
        owner = w.owner_name or w.name.rsplit("-", 1)[0]
        meta["generateName"] = f"{owner}-"
        meta["ownerReferences"] = [
            {
                "apiVersion": OWNER_API_VERSIONS.get(w.owner_kind, "apps/v1"),
                "kind": w.owner_kind,
                "name": owner,
                "uid": uid(w.owner_kind, w.namespace, owner),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        if w.owner_kind == "Job":  # what the Job controller stamps on its pods
            job_uid = uid("Job", w.namespace, owner)
            labels.setdefault("batch.kubernetes.io/controller-uid", job_uid)
            labels.setdefault("batch.kubernetes.io/job-name", owner)
            labels.setdefault("controller-uid", job_uid)
            labels.setdefault("job-name", owner)
        elif w.owner_kind == "StatefulSet":
            labels.setdefault("statefulset.kubernetes.io/pod-name", w.name)
        elif w.owner_kind == "PyTorchJob":  # the Kubeflow training operator's labels
            labels.setdefault("training.kubeflow.org/job-name", owner)
            labels.setdefault("training.kubeflow.org/operator-name", "pytorchjob-controller")
            labels.setdefault("training.kubeflow.org/replica-type", "worker")
        elif w.owner_kind == "JobSet":  # the JobSet controller's labels
            labels.setdefault("jobset.sigs.k8s.io/jobset-name", owner)
            labels.setdefault("jobset.sigs.k8s.io/replicatedjob-name", "workers")
    spec: Obj = {
        "containers": [
            {
                "name": w.container,
                "image": w.image,
                "command": w.command,
                "resources": resources,
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "restartPolicy": w.restart_policy,
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],  # fmt: skip
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if w.node_selector:
        spec["nodeSelector"] = dict(w.node_selector)
    status: Obj = {"phase": w.phase, "qosClass": "Guaranteed"}
    if w.status_reason:
        status["reason"] = w.status_reason
        status["message"] = w.status_message or ""
    if w.node is None:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": ts_created,
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    else:
        spec["nodeName"] = w.node
        assert node_index is not None
        status["conditions"] = _pod_conditions(iso(started_at), ts_created, ready)
        for extra in w.conditions:
            status["conditions"].append(
                {"lastProbeTime": None, "lastTransitionTime": iso(start - 60), **extra}
            )
        status["hostIP"] = node_ip(node_index)
        status["hostIPs"] = [{"ip": node_ip(node_index)}]
        status["startTime"] = ts_created
        if w.phase in ("Running", "Pending") or w.state == "running":
            slot = 10 + zlib.crc32(w.name.encode()) % 200
            status["podIP"] = pod_ip(node_index, slot)
            status["podIPs"] = [{"ip": pod_ip(node_index, slot)}]
        status["containerStatuses"] = [
            _container_status(
                w.container, w.image, w.namespace + w.name, cstate, ready, w.restarts, last
            )
        ]
    env = dict(w.env)
    if w.visible_gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpu_uuids[i] for i in w.visible_gpus)
    if env:
        spec["containers"][0]["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if w.init_containers:
        spec["initContainers"] = [
            {"name": str(i.get("name")), "image": str(i.get("image", "busybox:1.36"))}
            for i in w.init_containers
        ]
        if w.node is not None:
            status["initContainerStatuses"] = [_init_status(i, w, start) for i in w.init_containers]
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}


def _init_status(i: dict[str, Any], w: WorkloadSpec, start: float) -> Obj:
    """One init container's status from its scenario entry."""
    name, image = str(i.get("name")), str(i.get("image", "busybox:1.36"))
    began = iso(start - float(i.get("started_ago_s", w.created_ago_s - 5)))
    kind = str(i.get("state", "terminated"))
    state: Obj
    if kind == "running":
        state = {"running": {"startedAt": began}}
    elif kind == "waiting":
        state = {"waiting": {"reason": str(i.get("reason", "PodInitializing"))}}
        if i.get("message"):
            state["waiting"]["message"] = str(i["message"])
    else:
        code = int(i.get("exit_code", 0))
        term: Obj = {
            "exitCode": code,
            "reason": str(i.get("reason") or ("Completed" if code == 0 else "Error")),
            "startedAt": began,
            "finishedAt": iso(start - float(i.get("finished_ago_s", 0))),
            "containerID": f"containerd://{hexid(w.namespace + w.name + name)}",
        }
        if i.get("message"):
            term["message"] = str(i["message"])
        state = {"terminated": term}
    done = kind == "terminated" and int(i.get("exit_code", 0)) == 0
    return _container_status(name, image, w.namespace + w.name + name, state, done, 0, {})


def lifecycle_events(w: WorkloadSpec, pod: Obj, start: float, rv: str) -> list[Obj]:
    """Scheduled/Pulled/Created/Started, as the scheduler and kubelet record them."""
    if w.node is None:
        return [
            event_object(
                EventSpec(
                    type="Warning",
                    reason="FailedScheduling",
                    message=pod["status"]["conditions"][0]["message"],
                    ago_s=30,
                    first_ago_s=w.created_ago_s,
                    count=max(1, int(w.created_ago_s // 300)),
                    component="default-scheduler",
                ),
                pod,
                "",
                start,
                rv,
            )
        ]
    if not w.lifecycle_events or w.created_ago_s > 3600:
        return []  # events live one hour in a real cluster
    started = w.started_ago_s if w.started_ago_s is not None else w.created_ago_s - 9
    path = f"spec.containers{{{w.container}}}"
    count = w.restarts + 1
    specs = [
        EventSpec(
            reason="Scheduled",
            message=f"Successfully assigned {w.namespace}/{w.name} to {w.node}",
            ago_s=w.created_ago_s,
            component="default-scheduler",
        ),
        EventSpec(
            reason="Pulled",
            message=f'Container image "{w.image}" already present on machine',
            ago_s=started + 1,
            count=count,
            field_path=path,
        ),
        EventSpec(
            reason="Created",
            message=f"Created container: {w.container}",
            ago_s=started + 1,
            count=count,
            field_path=path,
        ),
        EventSpec(
            reason="Started",
            message=f"Started container {w.container}",
            ago_s=started,
            count=count,
            field_path=path,
        ),
    ]
    if w.restarts:  # restarts: the kubelet's latest Pulled/Created/Started are recent
        for s in specs[1:]:
            s.first_ago_s = s.ago_s
            s.ago_s = (w.last_finished_ago_s or 60) - 1
    if w.state == "waiting" and w.reason == "CrashLoopBackOff":
        meta = pod["metadata"]
        specs.append(
            EventSpec(
                type="Warning",
                reason="BackOff",
                message=f"Back-off restarting failed container {w.container} in pod "
                f"{w.name}_{w.namespace}({meta['uid']})",
                ago_s=20,
                first_ago_s=(w.last_finished_ago_s or 60) + 120 * max(0, w.restarts - 1),
                count=4 * w.restarts + 1,
                field_path=path,
            )
        )
    return [event_object(s, pod, w.node or "", start, rv) for s in specs]


def event_object(spec: EventSpec, about: Obj, host: str, start: float, rv: str) -> Obj:
    """A core/v1 Event about *about* (a pod or node object)."""
    meta = about["metadata"]
    kind = about["kind"]
    last = start - spec.ago_s
    first = start - (spec.first_ago_s if spec.first_ago_s is not None else spec.ago_s)
    ns = meta.get("namespace") or "default"
    name = f"{meta['name']}.{int(first * 1e9) + zlib.crc32(spec.reason.encode()):x}"
    involved: Obj = {
        "kind": kind,
        "name": meta["name"],
        "uid": meta["name"] if kind == "Node" else meta["uid"],
        "apiVersion": "v1",
    }
    if kind != "Node":
        involved["namespace"] = ns
        involved["resourceVersion"] = meta.get("resourceVersion", "")
    if spec.field_path:
        involved["fieldPath"] = spec.field_path
    source: Obj = {"component": spec.component}
    if host and spec.component == "kubelet":
        source["host"] = host
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid("event", ns, name),
            "resourceVersion": rv,
            "creationTimestamp": iso(first),
        },
        "involvedObject": involved,
        "reason": spec.reason,
        "message": spec.message,
        "source": source,
        "firstTimestamp": iso(first),
        "lastTimestamp": iso(last),
        "count": spec.count,
        "type": spec.type,
        "eventTime": None,
        "reportingComponent": spec.component,
        "reportingInstance": host if spec.component == "kubelet" else "",
    }


def namespace_object(name: str, created: float, rv: str) -> Obj:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid("namespace", name),
            "resourceVersion": rv,
            "creationTimestamp": iso(created),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node_lease(node: Obj, ready: bool, now: float, start: float) -> Obj:
    """The kubelet's heartbeat Lease in kube-node-lease (renewed every 10 s when up)."""
    name = node["metadata"]["name"]
    renewed = now - (now % 10) if ready else start - 300
    micro = datetime.fromtimestamp(renewed, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "uid": uid("lease", name),
            "resourceVersion": node["metadata"]["resourceVersion"],
            "creationTimestamp": node["metadata"]["creationTimestamp"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            ],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro},
    }
