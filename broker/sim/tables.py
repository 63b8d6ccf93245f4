"""Server-side printing: the meta.k8s.io/v1 Table kubectl asks for (``as=Table``).

Columns and cell logic follow the API server's printers (pkg/printers/internalversion)
for every kind the sim serves, so ``kubectl get`` prints the columns (and ``-o wide``
extras) users know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _since(stamp: str | None, now: float) -> str:
    t = parse_time(stamp)
    return "<unknown>" if t is None else human_duration(now - t)


def _col(
    name: str, description: str, priority: int = 0, fmt: str = "", typ: str = "string"
) -> dict[str, Any]:
    return {
        "name": name,
        "type": typ,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


_NAME = _col("Name", "Name must be unique within a namespace.", fmt="name")
_AGE = _col(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)

NODE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _AGE,
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", 1),
    _col("External-IP", "List of addresses reachable to the node.", 1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release.", 1),
    _col("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.", 1),
    _col("Container-Runtime", "ContainerRuntime Version reported by the node.", 1),
]

POD_COLUMNS = [
    _NAME,
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted."),
    _AGE,
    _col("IP", "IP address allocated to the pod. Routable at least within the cluster.", 1),
    _col("Node", "NodeName is a request to schedule this pod onto a specific node.", 1),
    _col("Nominated Node", "Set only when this pod preempts other pods on the node.", 1),
    _col("Readiness Gates", "If specified, all readiness gates are evaluated.", 1),
]

EVENT_COLUMNS = [
    _col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    _col("Type", "Type of this event (Normal, Warning)."),
    _col("Reason", "A short, machine understandable string: why the object changed state."),
    _col("Object", "The object that this event is about."),
    _col("Subobject", "The subobject (field path) this event is about.", 1),
    _col("Source", "The component reporting this event.", 1),
    _col("Message", "A human-readable description of the status of this operation."),
    _col("First Seen", "The time at which the event was first recorded.", 1),
    _col("Count", "The number of times this event has occurred.", 1, typ="integer"),
    _col("Name", "Name must be unique within a namespace.", 1, fmt="name"),
]

NAMESPACE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the namespace"),
    _AGE,
]


def _node_cells(obj: Obj, now: float) -> list[Any]:
    status = obj.get("status", {})
    ready = "Unknown"
    for cond in status.get("conditions", []):
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if obj.get("spec", {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = obj["metadata"].get("labels", {})
    roles = sorted(
        k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")
    ) + ([labels["kubernetes.io/role"]] if "kubernetes.io/role" in labels else [])
    info = status.get("nodeInfo", {})
    addrs = status.get("addresses", [])

    def addr(kind: str) -> str:
        return next((a["address"] for a in addrs if a.get("type") == kind), "<none>")

    return [
        obj["metadata"]["name"],
        ready,
        ",".join(roles) or "<none>",
        _since(obj["metadata"].get("creationTimestamp"), now),
        info.get("kubeletVersion", ""),
        addr("InternalIP"),
        addr("ExternalIP"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def pod_status_reason(obj: Obj) -> tuple[str, int, int, int, float | None]:
    """(STATUS column, ready containers, total containers, restarts, last restart epoch)."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    reason = status.get("reason") or status.get("phase", "")
    total = len(spec.get("containers", []))
    ready = restarts = 0
    last_restart: float | None = None
    has_running = False
    for cs in reversed(status.get("containerStatuses", [])):
        restarts += int(cs.get("restartCount", 0))
        last_term = cs.get("lastState", {}).get("terminated")
        if last_term:
            t = parse_time(last_term.get("finishedAt"))
            if t is not None and (last_restart is None or t > last_restart):
                last_restart = t
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and state["terminated"].get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = (
                f"Signal:{term['signal']}"
                if term.get("signal")
                else f"ExitCode:{term.get('exitCode', 0)}"
            )
        elif cs.get("ready") and "running" in state:
            has_running = True
            ready += 1
    if reason == "Completed" and has_running:
        ready_cond = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
        reason = "Running" if ready_cond else "NotReady"
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason, ready, total, restarts, last_restart


def _pod_cells(obj: Obj, now: float) -> list[Any]:
    reason, ready, total, restarts, last_restart = pod_status_reason(obj)
    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration(now - last_restart)} ago)"
    spec, status = obj.get("spec", {}), obj.get("status", {})
    gates = spec.get("readinessGates") or []
    return [
        obj["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        restarts_cell,
        _since(obj["metadata"].get("creationTimestamp"), now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _event_cells(obj: Obj, now: float) -> list[Any]:
    inv, src = obj.get("involvedObject", {}), obj.get("source", {})
    first = obj.get("firstTimestamp") or obj["metadata"].get("creationTimestamp")
    last = obj.get("lastTimestamp") or first
    source = src.get("component", "") + (f", {src['host']}" if src.get("host") else "")
    return [
        _since(last, now),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        source,
        obj.get("message", "").strip(),
        _since(first, now),
        int(obj.get("count", 1)),
        obj["metadata"]["name"],
    ]


def _namespace_cells(obj: Obj, now: float) -> list[Any]:
    return [
        obj["metadata"]["name"],
        obj.get("status", {}).get("phase", "Active"),
        _since(obj["metadata"].get("creationTimestamp"), now),
    ]


def _int(name: str, description: str, priority: int = 0) -> dict[str, Any]:
    return _col(name, description, priority, typ="integer")


_WIDE_POD = [
    _col("Containers", "Names of each container in the template.", 1),
    _col("Images", "Images referenced by each container in the template.", 1),
    _col("Selector", "Label query over pods that should match the replicas count.", 1),
]


def _labels(labels: dict[str, str] | None) -> str:
    """labels.FormatLabels / FormatLabelSelector of matchLabels: sorted key=value."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _pod_template(obj: Obj) -> list[Any]:
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return [
        ",".join(c["name"] for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _labels(obj.get("spec", {}).get("selector", {}).get("matchLabels")),
    ]


def _age(obj: Obj, now: float) -> str:
    return _since(obj["metadata"].get("creationTimestamp"), now)


DAEMONSET_COLUMNS = [
    _NAME,
    _int("Desired", "The desired number of nodes that should run the daemon pod."),
    _int("Current", "The number of nodes running at least one daemon pod."),
    _int("Ready", "The number of nodes that should run the daemon pod and are ready."),
    _int("Up-to-date", "The number of nodes running the updated daemon pod."),
    _int("Available", "The number of nodes running an available daemon pod."),
    _col("Node Selector", "NodeSelector the daemon pod's nodes must match."),
    _AGE,
    *_WIDE_POD,
]


def _daemonset_cells(obj: Obj, now: float) -> list[Any]:
    st = obj.get("status", {})
    selector = obj["spec"]["template"]["spec"].get("nodeSelector")
    return [
        obj["metadata"]["name"],
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        _labels(selector),
        _age(obj, now),
        *_pod_template(obj),
    ]


REPLICASET_COLUMNS = [
    _NAME,
    _int("Desired", "Number of desired pods."),
    _int("Current", "Number of actual replicas."),
    _int("Ready", "The number of ready replicas for this replica set."),
    _AGE,
    *_WIDE_POD,
]


def _replicaset_cells(obj: Obj, now: float) -> list[Any]:
    st = obj.get("status", {})
    return [
        obj["metadata"]["name"],
        obj["spec"].get("replicas", 0),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        _age(obj, now),
        *_pod_template(obj),
    ]


DEPLOYMENT_COLUMNS = [
    _NAME,
    _col("Ready", "Number of the pod with ready state"),
    _int("Up-to-date", "Total number of non-terminated pods that have the desired template."),
    _int("Available", "Number of available replicas (ready for at least minReadySeconds)."),
    _AGE,
    *_WIDE_POD,
]


def _deployment_cells(obj: Obj, now: float) -> list[Any]:
    st = obj.get("status", {})
    ready = f"{st.get('readyReplicas', 0)}/{obj['spec'].get('replicas', 0)}"
    return [
        obj["metadata"]["name"],
        ready,
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(obj, now),
        *_pod_template(obj),
    ]


STATEFULSET_COLUMNS = [
    _NAME,
    _col("Ready", "Number of the pod with ready state"),
    _AGE,
    *_WIDE_POD[:2],
]


def _statefulset_cells(obj: Obj, now: float) -> list[Any]:
    st = obj.get("status", {})
    ready = f"{st.get('readyReplicas', 0)}/{obj['spec'].get('replicas', 0)}"
    return [obj["metadata"]["name"], ready, _age(obj, now), *_pod_template(obj)[:2]]


JOB_COLUMNS = [
    _NAME,
    _col("Status", "Status of the job."),
    _col("Completions", "The completion status of the job."),
    _col("Duration", "Time required to complete the job."),
    _AGE,
    *_WIDE_POD,
]


def _job_cells(obj: Obj, now: float) -> list[Any]:
    st = obj.get("status", {})
    true = {c["type"] for c in st.get("conditions", []) if c.get("status") == "True"}
    status = "Running"
    for cond, shown in (
        ("Complete", "Complete"),
        ("Failed", "Failed"),
        ("Suspended", "Suspended"),
        ("FailureTarget", "FailureTarget"),
        ("SuccessCriteriaMet", "SuccessCriteriaMet"),
    ):
        if cond in true:
            status = shown
            break
    started, done = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    took = "" if started is None else human_duration((done or now) - started)
    completions = obj["spec"].get("completions")
    shown_completions = (
        f"{st.get('succeeded', 0)}/{completions}"
        if completions
        else (f"{st.get('succeeded', 0)}/1 of {obj['spec'].get('parallelism', 1)}")
    )
    return [
        obj["metadata"]["name"],
        status,
        shown_completions,
        took,
        _age(obj, now),
        *_pod_template(obj),
    ]


CRONJOB_COLUMNS = [
    _NAME,
    _col("Schedule", "The schedule in Cron format."),
    _col("Timezone", "The time zone name for the given schedule."),
    _col("Suspend", "Whether subsequent executions are suspended.", typ="boolean"),
    _int("Active", "A list of pointers to currently running jobs."),
    _col("Last Schedule", "Information when was the last time the job was successfully scheduled."),
    _AGE,
    *_WIDE_POD,
]


def _cronjob_cells(obj: Obj, now: float) -> list[Any]:
    spec, st = obj["spec"], obj.get("status", {})
    tmpl = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return [
        obj["metadata"]["name"],
        spec["schedule"],
        spec.get("timeZone") or "<none>",
        bool(spec.get("suspend")),
        len(st.get("active", [])),
        _since(st.get("lastScheduleTime"), now) if st.get("lastScheduleTime") else "<none>",
        _age(obj, now),
        ",".join(c["name"] for c in tmpl),
        ",".join(c.get("image", "") for c in tmpl),
        "<none>",
    ]


SERVICE_COLUMNS = [
    _NAME,
    _col("Type", "Type determines how the Service is exposed."),
    _col("Cluster-IP", "The IP address of the service, usually assigned by the master."),
    _col("External-IP", "List of IP addresses for which nodes in the cluster accept traffic."),
    _col("Port(s)", "The list of ports that are exposed by this service."),
    _AGE,
    _col(
        "Selector",
        "Route service traffic to pods with label keys and values matching this selector.",
        1,
    ),
]


def _service_cells(obj: Obj, now: float) -> list[Any]:
    spec = obj["spec"]
    ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
    return [
        obj["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP", ""),
        "<none>",
        ports or "<none>",
        _age(obj, now),
        _labels(spec.get("selector")),
    ]


SECRET_COLUMNS = [
    _NAME,
    _col("Type", "The type of the secret"),
    _int("Data", "The number of items in the secret"),
    _AGE,
]
CONFIGMAP_COLUMNS = [_NAME, _int("Data", "Number of data in configmap"), _AGE]
SERVICEACCOUNT_COLUMNS = [_NAME, _int("Secrets", "Number of secrets"), _AGE]
LEASE_COLUMNS = [_NAME, _col("Holder", "The holder of the lease"), _AGE]
RUNTIMECLASS_COLUMNS = [
    _NAME,
    _col("Handler", "The underlying runtime and configuration that this RuntimeClass uses."),
    _AGE,
]


ENDPOINTS_COLUMNS = [_NAME, _col("Endpoints", "Endpoints of the service."), _AGE]
ENDPOINTSLICE_COLUMNS = [
    _NAME,
    _col("AddressType", "The IP protocol for this slice"),
    _col("Ports", "The ports of this slice"),
    _col("Endpoints", "The endpoints of this slice"),
    _AGE,
]


def _more(items: list[str]) -> str:
    """printers' formatEndpoints: at most three, then ``+ N more...``."""
    if not items:
        return "<none>"
    shown = ",".join(items[:3])
    return shown + (f" + {len(items) - 3} more..." if len(items) > 3 else "")


def _endpoints_cells(obj: Obj, now: float) -> list[Any]:
    pairs = [
        f"{a['ip']}:{p['port']}"
        for sub in obj.get("subsets", [])
        for p in sub.get("ports", [])
        for a in sub.get("addresses", [])
    ]
    return [obj["metadata"]["name"], _more(pairs), _age(obj, now)]


def _endpointslice_cells(obj: Obj, now: float) -> list[Any]:
    ports = ",".join(str(p["port"]) for p in obj.get("ports") or []) or "<unset>"
    addrs = [a for e in obj.get("endpoints") or [] for a in e.get("addresses", [])]
    return [
        obj["metadata"]["name"],
        obj.get("addressType", ""),
        ports,
        _more(addrs),
        _age(obj, now),
    ]


def _count(field: str) -> Callable[[Obj, float], list[Any]]:
    def cells(obj: Obj, now: float) -> list[Any]:
        n = len(obj.get(field) or {})
        if obj.get("kind") == "Secret":
            return [obj["metadata"]["name"], obj.get("type", "Opaque"), n, _age(obj, now)]
        return [obj["metadata"]["name"], n, _age(obj, now)]

    return cells


def _lease_cells(obj: Obj, now: float) -> list[Any]:
    return [obj["metadata"]["name"], obj["spec"].get("holderIdentity", ""), _age(obj, now)]


def _runtimeclass_cells(obj: Obj, now: float) -> list[Any]:
    return [obj["metadata"]["name"], obj.get("handler", ""), _age(obj, now)]


def _name_age(obj: Obj, now: float) -> list[Any]:
    return [obj["metadata"]["name"], _age(obj, now)]


def _new_event_cells(obj: Obj, now: float) -> list[Any]:
    """events.k8s.io/v1 Events print as core Events do (the server converts first)."""
    core = {
        "metadata": obj["metadata"],
        "involvedObject": obj.get("regarding", {}),
        "source": obj.get("deprecatedSource", {}),
        "message": obj.get("note", ""),
        "reason": obj.get("reason", ""),
        "type": obj.get("type", ""),
        "firstTimestamp": obj.get("deprecatedFirstTimestamp"),
        "lastTimestamp": obj.get("deprecatedLastTimestamp"),
        "count": obj.get("deprecatedCount", 1),
    }
    return _event_cells(core, now)


PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[Obj, float], list[Any]]]] = {
    "nodes": (NODE_COLUMNS, _node_cells),
    "pods": (POD_COLUMNS, _pod_cells),
    "events": (EVENT_COLUMNS, _event_cells),
    "events.events.k8s.io": (EVENT_COLUMNS, _new_event_cells),
    "namespaces": (NAMESPACE_COLUMNS, _namespace_cells),
    "daemonsets": (DAEMONSET_COLUMNS, _daemonset_cells),
    "replicasets": (REPLICASET_COLUMNS, _replicaset_cells),
    "deployments": (DEPLOYMENT_COLUMNS, _deployment_cells),
    "statefulsets": (STATEFULSET_COLUMNS, _statefulset_cells),
    "jobs": (JOB_COLUMNS, _job_cells),
    "cronjobs": (CRONJOB_COLUMNS, _cronjob_cells),
    "services": (SERVICE_COLUMNS, _service_cells),
    "secrets": (SECRET_COLUMNS, _count("data")),
    "configmaps": (CONFIGMAP_COLUMNS, _count("data")),
    "serviceaccounts": (SERVICEACCOUNT_COLUMNS, _count("secrets")),
    "leases": (LEASE_COLUMNS, _lease_cells),
    "runtimeclasses": (RUNTIMECLASS_COLUMNS, _runtimeclass_cells),
    "endpoints": (ENDPOINTS_COLUMNS, _endpoints_cells),
    "endpointslices": (ENDPOINTSLICE_COLUMNS, _endpointslice_cells),
    # Custom resources whose CRDs declare no printer columns: the API server prints these.
    "jobsets": ([_NAME, _AGE], _name_age),
    "pytorchjobs": ([_NAME, _AGE], _name_age),
}


def to_table(
    resource: str,
    objects: Sequence[Obj],
    now: float,
    resource_version: str,
    include_object: str = "Metadata",
) -> Obj:
    """Render *objects* of *resource* as a meta.k8s.io/v1 Table."""
    columns, cells = PRINTERS[resource]
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
