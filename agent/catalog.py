"""The agent's contract with its clients: tool names, input and output schemas,
annotations, the status vocabulary and the server instructions.

The broker imports this module (and ``agent.xid``'s catalog lookup) and no other agent
module. Data and two tiny helpers only: importing it must stay cheap (start-up budget).
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

# The one status vocabulary, best first. The broker, the health checks and every schema
# use this order; rank() compares two statuses.
STATUSES: tuple[str, ...] = ("healthy", "warning", "degraded", "critical")
_RANK = {status: n for n, status in enumerate(STATUSES)}
DEFAULT_SINCE_MINUTES = 60

AGENT_NAME = "k8s-gpu-mcp-agent"  # serverInfo.name

# An MCP extension (client capability ``extensions``) a client declares when it reads
# tool answers from ``structuredContent`` alone: the agent then sends a one-line text
# block instead of a second copy of the whole answer as JSON text. The broker declares
# it, halving the bytes every node answer costs to send, relay, parse and validate.
STRUCTURED_ONLY = "io.github.k8s-gpu-mcp/structured-only"


def rank(status: str) -> int:
    """A status's place in STATUSES (healthy 0 ... critical 3); unknown words rank as
    warning, so a status the broker does not know is never read as healthy."""
    return _RANK.get(status, 1)


def worst(*statuses: str) -> str:
    """The worst of some statuses (healthy when none)."""
    return max(statuses, key=rank, default="healthy")


ANNOTATIONS: Json = {
    "readOnlyHint": True,
    "destructiveHint": False,
    "idempotentHint": True,
    "openWorldHint": False,
}

# --- schema building blocks --------------------------------------------------------------


def _n(kind: str) -> Json:
    """A nullable scalar: null means the GPU or driver does not support the query."""
    return {"type": [kind, "null"]}


_STR_LIST: Json = {"type": "array", "items": {"type": "string"}}

NODE_SCHEMA: Json = {
    "type": "object",
    "description": "Which node and agent answered.",
    "properties": {
        "name": {"type": "string", "description": "Kubernetes node name (NODE_NAME) or hostname"},
        "hostname": {"type": "string"},
        "backend": {"type": "string", "enum": ["nvml", "fake"]},
        "driver_version": _n("string"),
        "cuda_driver_version": _n("string"),
        "agent_version": {"type": "string"},
    },
    "required": ["name", "hostname", "backend", "driver_version", "agent_version"],
}

_SINCE: Json = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 525600,
    "default": DEFAULT_SINCE_MINUTES,
    "description": "Look back this many minutes in the kernel log (default 60; max one year).",
}

_MIG_INSTANCE: Json = {
    "type": "object",
    "properties": {
        "gpu_instance_id": {"type": "integer"},
        "compute_instance_id": _n("integer"),
        "uuid": _n("string"),
        "profile": _n("string"),
        "memory_total_mib": _n("integer"),
    },
    "required": ["gpu_instance_id"],
}

_INVENTORY_GPU: Json = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "name": _n("string"),
        "uuid": _n("string"),
        "serial": _n("string"),
        "pci_bus_id": _n("string"),
        "memory_total_mib": _n("integer"),
        "memory_used_mib": _n("integer"),
        "mig_mode_current": _n("boolean"),
        "mig_mode_pending": _n("boolean"),
        "mig_instances": {"type": "array", "items": _MIG_INSTANCE},
        "persistence_mode": _n("boolean"),
        "ecc_mode_current": _n("boolean"),
        "ecc_mode_pending": _n("boolean"),
        "power_limit_w": _n("number"),
        "power_default_limit_w": _n("number"),
        "power_max_limit_w": _n("number"),
        "sm_clock_mhz": _n("integer"),
        "mem_clock_mhz": _n("integer"),
        "sm_clock_max_mhz": _n("integer"),
        "mem_clock_max_mhz": _n("integer"),
        "app_sm_clock_mhz": _n("integer"),
        "app_mem_clock_mhz": _n("integer"),
        "pcie_link_gen": _n("integer"),
        "pcie_link_gen_max": _n("integer"),
        "pcie_link_width": _n("integer"),
        "pcie_link_width_max": _n("integer"),
        "nvlink_links_up": _n("integer"),
        "nvlink_links_total": _n("integer"),
        "compute_capability": _n("string"),
        "vbios_version": _n("string"),
        "lost": {"type": "boolean"},
        "error": _n("string"),
        "unsupported": _STR_LIST,
    },
    "required": ["index", "name", "uuid", "pci_bus_id", "lost", "unsupported"],
}

_ISSUE: Json = {
    "type": "object",
    "properties": {
        "check": {"type": "string"},
        "severity": {"type": "string", "enum": [*STATUSES[1:], "info"]},
        "message": {"type": "string"},
        "action": {"type": "string"},
        "gpu_instance_ids": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "XID issues on a MIG GPU: the GPU instances the XIDs were "
            "attributed to (absent when none carried a tag)",
        },
    },
    "required": ["check", "severity", "message", "action"],
}

_HEALTH_GPU: Json = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "uuid": _n("string"),
        "name": _n("string"),
        "pci_bus_id": _n("string"),
        "status": {"type": "string", "enum": list(STATUSES)},
        "issues": {"type": "array", "items": _ISSUE},
        "metrics": {
            "type": "object",
            "description": (
                "Raw readings (null: unsupported): temperature_c, power_w, power_limit_w, "
                "sm_clock_mhz, utilization_gpu_pct, clock_slowdown_reasons (idle and "
                "configuration masked), pcie_link_gen/width (+ _max), pcie_replay_counter, "
                "nvlink error sums, ECC and memory-repair counters."
            ),
        },
        "unsupported": _STR_LIST,
    },
    "required": ["index", "uuid", "pci_bus_id", "status", "issues", "unsupported"],
}

_XID_LOG: Json = {
    "type": "object",
    "description": "Where XIDs came from and whether the kernel log could be read.",
    "properties": {
        "source": {"type": "string"},
        "readable": {"type": "boolean"},
        "disabled": {
            "type": "boolean",
            "description": "XID reading is switched off by configuration (not a node fault)",
        },
        "reason": _n("string"),
        "events_in_window": {"type": "integer"},
        "unmatched_events": {
            "type": "integer",
            "description": "XIDs in the window whose PCI bus id matched no visible GPU",
        },
    },
    "required": ["source", "readable", "reason", "events_in_window"],
}

_XID_GROUP: Json = {
    "type": "object",
    "properties": {
        "xid": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
        "immediate_action": _n("string"),
        "investigatory_action": _n("string"),
        "recommended_action": {"type": "string"},
        "gpu_index": _n("integer"),
        "gpu_uuid": _n("string"),
        "pci_bus_id": {"type": "string"},
        "count": {"type": "integer", "minimum": 1},
        "first_seen": {"type": "string", "description": "UTC ISO-8601"},
        "last_seen": {"type": "string", "description": "UTC ISO-8601"},
        "pids": {"type": "array", "items": {"type": "integer"}},
        "processes": _STR_LIST,
        "recovery_action": _n("string"),
        "last_message": {"type": "string"},
        "before_last_boot": {"type": "boolean"},
        "gpu_instance_id": {
            **_n("integer"),
            "description": "MIG: the GPU instance the driver attributed the XID to (its "
            "'GPU-I:nn' tag); null when the line carries none (MIG off, or an error of the "
            "whole GPU)",
        },
        "compute_instance_id": {**_n("integer"), "description": "MIG: the 'GPU-CI:nn' tag"},
        "mig_uuid": {
            **_n("string"),
            "description": "MIG device UUID of that GPU instance, when the inventory lists it",
        },
        "mig_profile": {**_n("string"), "description": "its MIG profile, e.g. 1g.10gb"},
    },
    "required": [
        "xid",
        "name",
        "severity",
        "recommended_action",
        "gpu_index",
        "gpu_uuid",
        "pci_bus_id",
        "count",
        "first_seen",
        "last_seen",
    ],
}

_XID_SUMMARY: Json = {
    "type": "object",
    "properties": {
        "events": {"type": "integer", "minimum": 0},
        "groups": {"type": "integer", "minimum": 0},
        "critical": {"type": "integer", "minimum": 0},
        "warning": {"type": "integer", "minimum": 0},
        "info": {"type": "integer", "minimum": 0},
        "gpus_affected": {"type": "integer", "minimum": 0},
        "worst_severity": {
            "type": ["string", "null"],
            "enum": ["info", "warning", "critical", None],
        },
    },
    "required": ["events", "groups", "critical", "warning", "info", "worst_severity"],
}

_IB_PORT: Json = {
    "type": "object",
    "properties": {
        "device": {"type": "string"},
        "port": {"type": "integer"},
        "state": _n("string"),
        "phys_state": _n("string"),
        "rate": _n("string"),
        "link_layer": _n("string"),
        "link_downed": {
            **_n("integer"),
            "description": "times the link went down since boot (null: not reported)",
        },
        "active": {"type": "boolean"},
    },
    "required": ["device", "port", "state", "active"],
}

_SOURCES: Json = {
    "type": "object",
    "description": "Which node sources the answer rests on, and which were not available.",
    "properties": {
        "kernel_log": {"type": "object"},
        "journal": {"type": ["object", "null"]},
        "sysfs": {"type": "object"},
        "fabric_manager": {"type": "string"},
    },
}

_SXID_GROUP: Json = {
    "type": "object",
    "properties": {
        "sxid": {"type": "integer"},
        "fatal": {"type": "boolean"},
        "severity": {"type": "string", "enum": ["warning", "critical"]},
        "switch": {"type": "string"},
        "pci_bus_id": {"type": "string"},
        "links": {"type": "array", "items": {"type": "integer"}},
        "count": {"type": "integer", "minimum": 1},
        "first_seen": {"type": "string"},
        "last_seen": {"type": "string"},
        "last_message": {"type": "string"},
    },
    "required": ["sxid", "fatal", "severity", "switch", "pci_bus_id", "count", "last_seen"],
}

_GPU_EVENT: Json = {
    "type": "object",
    "properties": {
        "kind": {
            "type": "string",
            "enum": [
                "reattached",
                "reset",
                "init_failed",
                "fell_off_bus",
                "pcie_aer_fatal",
                "pcie_aer_nonfatal",
            ],
        },
        "gpu_index": _n("integer"),
        "gpu_uuid": _n("string"),
        "pci_bus_id": {"type": "string"},
        "time": {"type": "string", "description": "UTC ISO-8601"},
        "message": {"type": "string"},
    },
    "required": ["kind", "pci_bus_id", "time", "message"],
}

_NVLINK: Json = {
    "type": "object",
    "properties": {
        "link": {"type": "integer"},
        "active": {"type": "boolean"},
        "remote_pci_bus_id": _n("string"),
        "replay_errors": _n("integer"),
        "recovery_errors": _n("integer"),
        "crc_flit_errors": _n("integer"),
        "crc_data_errors": _n("integer"),
    },
    "required": ["link", "active"],
}

_POD: Json = {
    "type": ["object", "null"],
    "description": "The pod the process belongs to, from its cgroup (needs --host-proc)",
    "properties": {
        "pod_uid": _n("string"),
        "container_id": _n("string"),
        "runtime": _n("string"),
        "qos_class": _n("string"),
    },
}

TOOL_DEFINITIONS: list[Json] = [
    {
        "name": "get_gpu_inventory",
        "title": "GPU inventory",
        "description": (
            "List the NVIDIA GPUs on this node and the driver: driver and CUDA driver "
            "version, and per GPU its index, model name, UUID, serial, PCI bus id, memory, "
            "VBIOS, MIG mode (and instances), ECC and persistence mode, power limits, "
            "current/application/max clocks, PCIe generation and width (current and max), "
            "NVLinks up and compute capability. Use it to learn what hardware is installed "
            "or to compare nodes' configuration; "
            "use get_gpu_health to learn whether it is working. Null fields are queries "
            "this GPU or driver does not support."
        ),
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
        "outputSchema": {
            "type": "object",
            "properties": {
                "node": NODE_SCHEMA,
                "driver": {
                    "type": "object",
                    "properties": {
                        "driver_version": _n("string"),
                        "cuda_driver_version": _n("string"),
                        "nvml_version": _n("string"),
                        "gpu_count": {"type": "integer", "minimum": 0},
                    },
                    "required": ["driver_version", "cuda_driver_version", "gpu_count"],
                },
                "gpus": {"type": "array", "items": _INVENTORY_GPU},
                "infiniband": {
                    "type": ["array", "null"],
                    "items": _IB_PORT,
                    "description": "RDMA ports (null: no InfiniBand/RoCE devices seen)",
                },
            },
            "required": ["node", "driver", "gpus"],
        },
        "annotations": {"title": "GPU inventory", **ANNOTATIONS},
    },
    {
        "name": "get_gpu_health",
        "title": "GPU health check",
        "description": (
            "Judge the health of every NVIDIA GPU on this node. Returns the node status "
            "(the worst GPU's) and per GPU a status of healthy, warning, degraded or "
            "critical with a list of issues, each with the check, a message explaining "
            "it and a recommended action. Checks: temperature against the GPU's own "
            "slowdown/shutdown thresholds, power against its limit, clock throttle reasons, "
            "ECC uncorrectable errors, retired pages and row remapping, PCIe replays, "
            "NVLink errors, GPU fallen off the bus, recent critical XIDs from the kernel "
            "log (window: since_minutes) and the recovery action the driver requests. "
            "Start here when asked whether GPUs on a node are OK."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"since_minutes": _SINCE},
            "additionalProperties": False,
        },
        "outputSchema": {
            "type": "object",
            "properties": {
                "node": NODE_SCHEMA,
                "status": {"type": "string", "enum": list(STATUSES)},
                "summary": {"type": "string"},
                "since_minutes": {"type": "number"},
                "issues": {
                    "type": "array",
                    "items": _ISSUE,
                    "description": "Node-level issues (e.g. the kernel log could not be read)",
                },
                "gpus": {"type": "array", "items": _HEALTH_GPU},
                "xid_log": _XID_LOG,
                "infiniband": {
                    "type": ["array", "null"],
                    "items": _IB_PORT,
                    "description": "RDMA ports (null: no InfiniBand/RoCE devices seen)",
                },
                "sources": _SOURCES,
            },
            "required": ["node", "status", "summary", "issues", "gpus", "xid_log"],
        },
        "annotations": {"title": "GPU health check", **ANNOTATIONS},
    },
    {
        "name": "analyze_xid_errors",
        "title": "Analyze XID errors",
        "description": (
            "Read the node's kernel log for NVIDIA XID errors (driver-reported GPU faults) "
            "in the last since_minutes minutes. Repeats of the same XID on the same GPU are "
            "grouped with a count and first/last time (UTC). Each group carries the XID's "
            "name, severity, meaning and NVIDIA's recommended action, and the GPU (index, "
            "UUID, PCI bus id) and process involved; on MIG GPUs also the GPU instance the "
            "driver attributed it to (and that MIG device's UUID and profile). Fails with the "
            "reason when the kernel log cannot be read (e.g. the container lacks CAP_SYSLOG) "
            "or XID reading is disabled by configuration, rather than reporting no errors."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"since_minutes": _SINCE},
            "additionalProperties": False,
        },
        "outputSchema": {
            "type": "object",
            "properties": {
                "node": NODE_SCHEMA,
                "source": {
                    "type": "string",
                    "description": "what was read: /dev/kmsg, syslog(2), a file path or 'scenario'",
                },
                "window": {
                    "type": "object",
                    "properties": {
                        "since_minutes": {"type": "number"},
                        "start": {"type": "string", "description": "UTC ISO-8601"},
                        "end": {"type": "string", "description": "UTC ISO-8601"},
                    },
                    "required": ["since_minutes", "start", "end"],
                },
                "summary": _XID_SUMMARY,
                "xids": {
                    "type": "array",
                    "items": _XID_GROUP,
                    "description": "Groups of the same XID on the same GPU, worst first",
                },
                "booted_at": {
                    "type": "string",
                    "description": "UTC ISO-8601 start of this boot: what came before was reset",
                },
                "sxids": {
                    "type": "array",
                    "items": _SXID_GROUP,
                    "description": "NVSwitch SXids grouped per code and switch, fatal first",
                },
                "gpu_events": {
                    "type": "array",
                    "items": _GPU_EVENT,
                    "description": "GPU resets/re-attachments, init failures, PCIe AER lines",
                },
            },
            "required": ["node", "source", "window", "summary", "xids"],
        },
        "annotations": {"title": "Analyze XID errors", **ANNOTATIONS},
    },
    {
        "name": "get_gpu_processes",
        "title": "GPU processes",
        "description": (
            "List the processes using each NVIDIA GPU on this node: pid (host pid "
            "namespace), process name, GPU memory used and kind (compute or graphics). "
            "When the agent can see the host's /proc (--host-proc), each process also "
            "carries the Kubernetes pod UID and container id from its cgroup, so you can "
            "tell which pod holds a GPU."
        ),
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
        "outputSchema": {
            "type": "object",
            "properties": {
                "node": NODE_SCHEMA,
                "pod_mapping": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "host_proc": _n("string"),
                        "note": {"type": "string"},
                        "pod_resources": {
                            "type": "object",
                            "description": "The kubelet PodResources socket, when configured",
                            "properties": {
                                "socket": {"type": "string"},
                                "present": {"type": "boolean"},
                                "used": {"type": "boolean"},
                                "note": {"type": "string"},
                            },
                            "required": ["socket", "present", "used"],
                        },
                    },
                    "required": ["enabled", "host_proc"],
                },
                "gpus": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "uuid": _n("string"),
                            "lost": {"type": "boolean"},
                            "error": _n("string"),
                            "unsupported": _STR_LIST,
                            "processes": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "pid": {"type": "integer"},
                                        "name": _n("string"),
                                        "used_memory_mib": _n("integer"),
                                        "kind": {"type": "string"},
                                        "gpu_instance_id": {
                                            **_n("integer"),
                                            "description": "MIG: the GPU instance the process "
                                            "runs in (null when MIG is off)",
                                        },
                                        "compute_instance_id": _n("integer"),
                                        "pod": _POD,
                                    },
                                    "required": ["pid", "name", "used_memory_mib", "kind", "pod"],
                                },
                            },
                        },
                        "required": ["index", "uuid", "lost", "processes"],
                    },
                },
            },
            "required": ["node", "pod_mapping", "gpus"],
        },
        "annotations": {"title": "GPU processes", **ANNOTATIONS},
    },
    {
        "name": "get_nvlink_topology",
        "title": "NVLink topology",
        "description": (
            "Show NVLink state per GPU on this node (each link active or down, the remote "
            "end's PCI bus id, replay/recovery/CRC error counters) and the peer-to-peer "
            "topology between every pair of GPUs (NVLINK, same board, PCIe switch levels, "
            "host bridge, NUMA node, system) with the number of NVLinks between them. Use "
            "it for multi-GPU communication problems (NCCL hangs, slow all-reduce)."
        ),
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
        "outputSchema": {
            "type": "object",
            "properties": {
                "node": NODE_SCHEMA,
                "gpus": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "uuid": _n("string"),
                            "links": {"type": "array", "items": _NVLINK},
                            "active_links": {"type": "integer", "minimum": 0},
                        },
                        "required": ["index", "uuid", "links", "active_links"],
                    },
                },
                "p2p": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "gpu_a": {"type": "integer"},
                            "gpu_b": {"type": "integer"},
                            "level": {"type": "string"},
                            "nvlink_count": {"type": "integer", "minimum": 0},
                        },
                        "required": ["gpu_a", "gpu_b", "level", "nvlink_count"],
                    },
                },
                "unsupported": _STR_LIST,
                "errors": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "GPUs whose links could not be read, and why",
                },
            },
            "required": ["node", "gpus", "p2p", "unsupported"],
        },
        "annotations": {"title": "NVLink topology", **ANNOTATIONS},
    },
]

TOOL_NAMES = tuple(t["name"] for t in TOOL_DEFINITIONS)

INSTRUCTIONS = (
    "This agent reports, read-only, on the NVIDIA GPUs of one Kubernetes node. Start with "
    "get_gpu_health: a status per GPU with the reason and recommended action for each issue. "
    "Then use analyze_xid_errors for driver-reported faults from the kernel log, "
    "get_gpu_processes to see which processes (and pods) hold each GPU, get_gpu_inventory "
    "for installed hardware and driver versions, and get_nvlink_topology for interconnect "
    "problems."
)
