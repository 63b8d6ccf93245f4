"""MCP definitions (descriptions, input and output JSON Schemas, annotations) of the
cluster-side tools: describe_gpu_node, get_pod_gpu_allocation, explain_failure."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

READ_ONLY: Json = {
    "readOnlyHint": True,
    "destructiveHint": False,
    "idempotentHint": True,
    "openWorldHint": False,
}
# Kubernetes object names: DNS-1123 subdomains (nodes, pods) and labels (namespaces).
_NAME: Json = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
}
_NAMESPACE: Json = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
}


def _n(kind: str | list[str]) -> Json:
    kinds = kind if isinstance(kind, list) else [kind]
    return {"type": [*kinds, "null"]}


_STR_MAP: Json = {"type": "object", "additionalProperties": {"type": "string"}}
_INT_MAP: Json = {"type": "object", "additionalProperties": {"type": "integer"}}

MISSING: Json = {
    "type": "array",
    "description": "What could not be read (RBAC denial, unreachable agent...) and, for a "
    "permission, which one would give it and how to check it. Empty = complete answer.",
    "items": {
        "type": "object",
        "properties": {
            "what": {"type": "string"},
            "reason": {"type": "string"},
            "permission": _n("string"),
            "check": _n("string"),
            "grant": _n("string"),
        },
        "required": ["what", "reason", "permission", "check", "grant"],
    },
}

GPU_REF: Json = {
    "type": "object",
    "properties": {
        "index": _n("integer"),
        "uuid": _n("string"),
        "mig_uuid": {"type": "string"},
        "mig_profile": {"type": "string"},
        "gpu_instance_id": {"type": "integer", "description": "the MIG slice's GPU instance"},
    },
    "required": ["index", "uuid"],
}

ASSIGNMENT: Json = {
    "type": "object",
    "description": "Which GPUs the pod holds (or held), where that can be known.",
    "properties": {
        "known": {"type": "boolean"},
        "gpus": {"type": ["array", "null"], "items": GPU_REF},
        "source": _n("string"),
        "note": {"type": "string", "description": "Why unknown, and what would tell"},
    },
    "required": ["known", "gpus", "source", "note"],
}

RESOURCE_COUNTS: Json = {
    "type": "object",
    "description": "Per NVIDIA extended resource (nvidia.com/gpu, nvidia.com/mig-*).",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "capacity": {"type": "integer"},
            "allocatable": {"type": "integer"},
            "allocated": _n("integer"),
            "free": _n("integer"),
            "withdrawn": {"type": "integer", "description": "capacity - allocatable"},
        },
        "required": ["capacity", "allocatable", "allocated", "free", "withdrawn"],
    },
}

POD_ALLOCATION: Json = {
    "type": "object",
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "uid": _n("string"),
        "node": _n("string"),
        "phase": _n("string"),
        "state": {"type": "string", "enum": ["holding", "waiting", "released"]},
        "owner": _n("string"),
        "requests": _INT_MAP,
        "containers": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "init": {"type": "boolean"},
                    "resources": _INT_MAP,
                },
                "required": ["name", "init", "resources"],
            },
        },
        "gpus": ASSIGNMENT,
    },
    "required": ["namespace", "name", "node", "phase", "state", "requests", "containers", "gpus"],
}

_ISSUE: Json = {
    "type": "object",
    "properties": {
        "check": {"type": "string"},
        "severity": {"type": "string"},
        "message": {"type": "string"},
    },
}

DESCRIBE_NODE: Json = {
    "name": "describe_gpu_node",
    "title": "Describe a GPU node",
    "description": (
        "One GPU node of the cluster in full, in one answer: GPU feature-discovery labels "
        "(product, count, memory, driver and CUDA versions, MIG strategy), capacity / "
        "allocatable / allocated nvidia.com/gpu and MIG resources (allocatable below "
        "capacity = GPUs withdrawn by the device plugin), conditions, taints (GPU-health "
        "taints flagged), cordon, the pods holding GPUs there, the agent pod's state, and "
        "the node agent's GPU inventory and health, with a one-line verdict. Use it first "
        "when asked about one node; it reads the Kubernetes API and the node's agent."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {"node": {**_NAME, "description": "Kubernetes node name"}},
        "required": ["node"],
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "node": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["healthy", "warning", "degraded", "critical", "unknown"],
            },
            "verdict": {"type": "string", "description": "One line: the node's state and why"},
            "gpu": {
                "type": ["object", "null"],
                "properties": {
                    "product": _n("string"),
                    "count": _n("string"),
                    "memory_mib": _n("string"),
                    "family": _n("string"),
                    "driver_version": _n("string"),
                    "cuda_runtime_version": _n("string"),
                    "compute_capability": _n("string"),
                    "mig_strategy": _n("string"),
                    "sharing_strategy": _n("string"),
                    "mig_devices": _INT_MAP,
                },
            },
            "nvidia_labels": _STR_MAP,
            "resources": RESOURCE_COUNTS,
            "ready": _n("boolean"),
            "schedulable": _n("boolean"),
            "conditions": {"type": "array", "items": {"type": "object"}},
            "taints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string"},
                        "value": _n("string"),
                        "effect": _n("string"),
                        "gpu_health": {"type": "boolean"},
                    },
                    "required": ["key", "effect", "gpu_health"],
                },
            },
            "pods": {"type": ["array", "null"], "items": POD_ALLOCATION},
            "agent": {
                "type": "object",
                "properties": {
                    "pod": _n("string"),
                    "namespace": _n("string"),
                    "ready": {"type": "boolean"},
                    "reason": _n("string"),
                },
                "required": ["pod", "ready", "reason"],
            },
            "inventory": {"type": ["object", "null"]},
            "health": {
                "type": ["object", "null"],
                "properties": {
                    "status": {"type": "string"},
                    "summary": {"type": "string"},
                    "issues": {"type": "array", "items": _ISSUE},
                    "gpus": {"type": "array", "items": {"type": "object"}},
                },
            },
            "events": {"type": ["array", "null"], "items": {"type": "object"}},
            "missing": MISSING,
            "partial": {"type": "boolean"},
        },
        "required": [
            "node",
            "status",
            "verdict",
            "resources",
            "ready",
            "taints",
            "pods",
            "agent",
            "inventory",
            "health",
            "missing",
            "partial",
        ],
    },
    "annotations": {"title": "Describe a GPU node", **READ_ONLY},
}

POD_ALLOCATION_TOOL: Json = {
    "name": "get_pod_gpu_allocation",
    "title": "Pod GPU allocation",
    "description": (
        "Across the cluster: which pods request or hold NVIDIA GPUs (nvidia.com/gpu, MIG "
        "profiles), how many, in "
        "which containers, and the GPU indexes/UUIDs each holds where that can be known (the "
        "agent's process-to-pod mapping when the chart mounts the host's /proc, "
        "NVIDIA_VISIBLE_DEVICES in the pod spec, or a pod that takes every GPU of its "
        "node); otherwise it says why not and which chart value would tell. Scope it with "
        "node, namespace or pod (pod with namespace, or alone to search every namespace); "
        "no argument = the whole cluster. With a node (or no scope) it also gives each "
        "node's capacity, allocatable, allocated and free GPUs."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "node": {**_NAME, "description": "Only pods on this node"},
            "namespace": {**_NAMESPACE, "description": "Only pods in this namespace"},
            "pod": {**_NAME, "description": "One pod (give namespace too when you know it)"},
        },
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "scope": {
                "type": "object",
                "properties": {
                    "node": _n("string"),
                    "namespace": _n("string"),
                    "pod": _n("string"),
                },
            },
            "summary": {
                "type": "object",
                "properties": {
                    "pods": {"type": "integer"},
                    "holding": {"type": "integer"},
                    "waiting": {"type": "integer"},
                    "released": {"type": "integer"},
                    "gpus_held": _INT_MAP,
                    "device_ids_known": {"type": "integer"},
                },
                "required": ["pods", "holding", "waiting", "released", "gpus_held"],
            },
            "pods": {"type": "array", "items": POD_ALLOCATION},
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"node": {"type": "string"}, "resources": RESOURCE_COUNTS},
                    "required": ["node", "resources"],
                },
            },
            "pod_mapping": {
                "type": "object",
                "description": "Per node asked: whether its agent maps GPU processes to pods",
                "additionalProperties": {"type": "boolean"},
            },
            "missing": MISSING,
            "partial": {"type": "boolean"},
        },
        "required": ["scope", "summary", "pods", "nodes", "pod_mapping", "missing", "partial"],
    },
    "annotations": {"title": "Pod GPU allocation", **READ_ONLY},
}

_EVIDENCE: Json = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "source": {
                "type": "string",
                "description": "pod | events | node | xid | health | allocation",
            },
            "text": {"type": "string"},
        },
        "required": ["source", "text"],
    },
}

EXPLAIN_FAILURE: Json = {
    "name": "explain_failure",
    "title": "Explain a pod failure",
    "description": (
        "Why did my job's pod die or fail: hardware, driver, application or infrastructure? "
        "Give the pod (and namespace). Joins the "
        "pod's phase, container states (exit codes, reasons, OOMKilled = host memory, not "
        "GPU memory), restarts, conditions and events with its node's state, the node's XIDs "
        "during the container's run (or older, while their GPU is still lost or awaiting a "
        "reset), the rest of the node (NVSwitch SXids, Fabric Manager, PCIe AER and link, "
        "RDMA ports, GPU resets), the GPUs' health now and NVIDIA's recommended action. "
        "Returns a verdict (hardware | driver | application | infrastructure | unknown, or "
        "none when the pod did not fail) with a confidence, the evidence lines behind it, a "
        "timeline, and next steps as commands. It never blames the hardware without "
        "hardware evidence. Missing permissions give a partial answer that names them."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "pod": {**_NAME, "description": "Pod name"},
            "namespace": {
                **_NAMESPACE,
                "description": "Pod namespace (omit to search every namespace for the name)",
            },
        },
        "required": ["pod"],
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "pod": {
                "type": "object",
                "properties": {
                    "namespace": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": _n("string"),
                    "phase": _n("string"),
                    "node": _n("string"),
                    "owner": _n("string"),
                },
                "required": ["namespace", "name"],
            },
            "verdict": {
                "type": "string",
                "enum": ["hardware", "driver", "application", "infrastructure", "unknown", "none"],
            },
            "confidence": {"type": "string", "enum": ["high", "medium", "low"]},
            "summary": {"type": "string"},
            "failure": {
                "type": ["object", "null"],
                "properties": {
                    "kind": {
                        "type": "string",
                        "enum": [
                            "none",
                            "running",
                            "terminated",
                            "restarted",
                            "waiting",
                            "unschedulable",
                            "pending",
                            "evicted",
                        ],
                    },
                    "container": _n("string"),
                    "exit_code": _n("integer"),
                    "signal": _n("integer"),
                    "reason": _n("string"),
                    "message": _n("string"),
                    "started_at": _n("string"),
                    "finished_at": _n("string"),
                    "restarts": {"type": "integer"},
                    "previous": {"type": "boolean"},
                },
                "required": ["kind", "container", "exit_code", "reason", "finished_at"],
            },
            "containers": {"type": "array", "items": {"type": "object"}},
            "gpus": {
                "type": ["object", "null"],
                "properties": {"requests": _INT_MAP, **ASSIGNMENT["properties"]},
            },
            "node": {"type": ["object", "null"]},
            "xid_window": {
                "type": ["object", "null"],
                "properties": {
                    "failure_time": {"type": "string"},
                    "start": {"type": "string"},
                    "end": {"type": "string"},
                    "checked": {"type": "boolean"},
                },
                "required": ["failure_time", "start", "end", "checked"],
            },
            "xids": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "xid": {"type": "integer"},
                        "name": _n("string"),
                        "severity": _n("string"),
                        "category": {
                            "type": "string",
                            "enum": [
                                "hardware",
                                "driver",
                                "application",
                                "recovery",
                                "side_effect",
                                "informational",
                                "unknown",
                            ],
                        },
                        "gpu_index": _n("integer"),
                        "gpu_uuid": _n("string"),
                        "offset_s": _n("number"),
                        "on_pod_gpu": _n("boolean"),
                        "recommended_action": _n("string"),
                        "gpu_instance_id": _n("integer"),
                        "mig_uuid": _n("string"),
                        "mig_profile": _n("string"),
                        "slice": {
                            "type": ["string", "null"],
                            "enum": ["own", "other", "whole", "unknown", None],
                            "description": "MIG: the XID hit the pod's slice (own), another "
                            "slice (other: contained there), every slice (whole), or an "
                            "unknown one; null when MIG does not enter into it",
                        },
                    },
                    "required": ["xid", "category", "gpu_index", "offset_s", "on_pod_gpu"],
                },
            },
            "gpu_health": {"type": ["object", "null"]},
            "node_signals": {
                "type": ["object", "null"],
                "description": "The rest of the node: SXids, GPU resets/AER lines (placed "
                "against the run), PCIe links, Fabric Manager, RDMA ports; unavailable sources",
            },
            "evidence": _EVIDENCE,
            "notes": {"type": "array", "items": {"type": "string"}},
            "timeline": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "time": {"type": "string"},
                        "source": {"type": "string"},
                        "text": {"type": "string"},
                    },
                    "required": ["time", "source", "text"],
                },
            },
            "next_steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}, "why": {"type": "string"}},
                    "required": ["command", "why"],
                },
            },
            "nvidia_actions": {
                "type": "array",
                "items": {"type": "string"},
                "description": "NVIDIA's recommended action for each XID found in the window",
            },
            "missing": MISSING,
            "partial": {"type": "boolean"},
        },
        "required": [
            "pod",
            "verdict",
            "confidence",
            "summary",
            "failure",
            "evidence",
            "timeline",
            "next_steps",
            "nvidia_actions",
            "missing",
            "partial",
        ],
    },
    "annotations": {"title": "Explain a pod failure", **READ_ONLY},
}

DEFINITIONS: list[Json] = [DESCRIBE_NODE, POD_ALLOCATION_TOOL, EXPLAIN_FAILURE]
