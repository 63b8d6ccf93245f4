"""The simulated cluster's scenario: nodes (GPUs, faults, agent pod state), workload
pods and their events, and users with RBAC rules. Loaded from YAML or JSON (see
README.md); every key is optional and checked, so a typo is an error, not a no-op.
"""

from __future__ import annotations

import copy
import json
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from .errors import SimScenarioError
from .products import PRODUCTS

AGENT_POD_STATES = ("ready", "not_ready", "pending", "crashloop", "missing")
GARBAGE_MODES = ("prefix", "only")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class NodeFaults:
    """Faults injected for requests about one node. Tests may change any field at runtime.

    Counters (``api_429``, ``api_500``) answer the next N requests and count down; -1 means
    every request.
    """

    api_latency_s: float = 0.0  # added before answering any request about this node
    api_429: int = 0  # 429 TooManyRequests with Retry-After
    retry_after_s: int = 1
    api_500: int = 0  # 500 InternalError
    exec_drop_after: int | None = None  # cut the exec TCP connection after N stdout lines
    exec_kill_after: int | None = None  # SIGKILL the agent when the Nth tools/call arrives
    exec_hang: str | None = None  # swallow requests: "*" all, or one method ("tools/call")
    exec_garbage: str | None = None  # "prefix": junk lines then the answers; "only": junk only

    def take(self, kind: str) -> bool:
        """Consume one injected *kind* ("api_429"/"api_500") answer if any is pending."""
        left = int(getattr(self, kind))
        if left == 0:
            return False
        if left > 0:
            setattr(self, kind, left - 1)
        return True


@dataclass
class EventSpec:
    """A core/v1 Event about a pod or node; times are seconds before the sim started."""

    reason: str
    message: str
    type: str = "Normal"
    ago_s: float = 60.0  # lastTimestamp
    first_ago_s: float | None = None  # firstTimestamp (defaults to ago_s)
    count: int = 1
    component: str = "kubelet"
    field_path: str = ""


@dataclass
class NodeSpec:
    name: str
    gpu: bool = True
    product: str = "H100-80GB"
    gpu_count: int = 8
    driver_version: str = "575.57.08"
    cuda_version: str = "12.9"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    unschedulable: bool = False
    ready: bool = True
    unhealthy_gpus: int = 0  # device plugin withdrew them: allocatable = capacity - this
    mig: dict[str, Any] | None = None  # {gpu: 4, profiles: [3g.40gb, ...], strategy: mixed}
    agent_pod: str = "ready"  # ready | not_ready | pending | crashloop | missing
    agent: dict[str, Any] = field(default_factory=dict)  # extra agent fake-scenario keys
    faults: NodeFaults = field(default_factory=NodeFaults)
    events: list[EventSpec] = field(default_factory=list)
    # Extra node conditions (NVSentinel, node-problem-detector, pressure):
    # {type, status, reason, message, ago_s}; a type the kubelet sets replaces its own.
    conditions: list[dict[str, Any]] = field(default_factory=list)
    age_s: float = 40 * 86400.0
    uptime_s: float = 12 * 86400.0


@dataclass
class WorkloadSpec:
    """A pod holding (or having held) GPUs, with one main container."""

    name: str
    node: str | None = None  # None: Pending, unschedulable
    namespace: str = "default"
    gpus: int = 1
    gpu_resource: str = "nvidia.com/gpu"  # or a MIG resource: nvidia.com/mig-1g.10gb
    image: str = "nvcr.io/nvidia/pytorch:25.01-py3"
    container: str = "trainer"
    command: list[str] = field(default_factory=lambda: ["python", "train.py"])
    restart_policy: str = "Never"
    owner_kind: str | None = "Job"
    owner_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)  # spec.nodeSelector
    service_ports: list[int] = field(default_factory=list)  # a Service named by label "app"
    cpu: str = "16"
    memory: str = "128Gi"
    created_ago_s: float = 3600.0
    started_ago_s: float | None = None
    phase: str = "Running"  # Pending | Running | Succeeded | Failed
    state: str = "running"  # running | terminated | waiting
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None  # terminated reason (Error, OOMKilled, Completed) or waiting reason
    message: str | None = None  # termination message (what the container wrote)
    finished_ago_s: float | None = None
    restarts: int = 0
    last_exit_code: int | None = None  # lastState.terminated (a restarted container)
    last_reason: str | None = None
    last_started_ago_s: float | None = None
    last_finished_ago_s: float | None = None
    ready: bool | None = None
    status_reason: str | None = None  # pod status.reason (Evicted, Terminated, ...)
    status_message: str | None = None
    # Extra pod conditions, e.g. {type: DisruptionTarget, status: "True", reason: ...}
    conditions: list[dict[str, Any]] = field(default_factory=list)
    last_message: str | None = None  # lastState.terminated.message
    env: dict[str, str] = field(default_factory=dict)  # e.g. NVIDIA_VISIBLE_DEVICES
    # NVIDIA_VISIBLE_DEVICES pinned in the spec by GPU index: the sim writes those GPUs'
    # UUIDs (as the node's agent reports them), as a user who pins devices would.
    visible_gpus: list[int] = field(default_factory=list)
    # GPUs this pod's processes run on while its container runs (one process each): the
    # node's agent lists them (on the MIG GPU, in ``mig_instance``), and maps them to the
    # pod when ``host_proc`` is on.
    gpu_processes: list[int] = field(default_factory=list)
    # The MIG GPU instance the device plugin gave it (gpus: 1 of a nvidia.com/mig-* resource):
    # its container gets NVIDIA_VISIBLE_DEVICES=MIG-<uuid> of that instance (devices.py).
    mig_instance: int | None = None
    # Init containers, each {name, state: terminated|waiting|running, exit_code, reason,
    # message, started_ago_s, finished_ago_s}
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventSpec] = field(default_factory=list)
    lifecycle_events: bool = True  # Scheduled/Pulled/Created/Started, if within the event TTL
    logs: str = ""
    previous_logs: str = ""


@dataclass
class UserSpec:
    name: str
    token: str | None = None
    groups: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GroupSpec:
    """RBAC rules bound to a group (a RoleBinding whose subject is a Group)."""

    name: str
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Scenario:
    nodes: list[NodeSpec] = field(default_factory=list)
    workloads: list[WorkloadSpec] = field(default_factory=list)
    users: list[UserSpec] = field(default_factory=list)
    groups: list[GroupSpec] = field(default_factory=list)  # rules for every member
    defaults: dict[str, Any] = field(default_factory=dict)  # for every GPU node
    cpu_nodes: int = 0
    namespace: str = "gpu-diagnostics"
    kubernetes_version: str = "v1.33.1"
    cluster_faults: NodeFaults = field(default_factory=NodeFaults)  # requests about no node
    chart_installed: bool = True  # false: no DaemonSet, agent pods, release or ServiceAccount
    runtime_classes: list[str] = field(default_factory=lambda: ["nvidia"])  # RuntimeClass names
    # The chart's hostProc.enabled: agent pods mount the host's /proc at /host/proc and map
    # GPU processes to pods through their cgroups (the sim writes that /proc per node).
    host_proc: bool = False


# Generic checked construction ------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except SimScenarioError as exc:
                errors.append(str(exc))
        raise SimScenarioError(errors[0] if errors else f"{where}: must not be null")
    if is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise SimScenarioError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SimScenarioError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, vt = get_args(tp)
        return {str(k): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SimScenarioError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SimScenarioError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SimScenarioError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SimScenarioError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise SimScenarioError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


_T = typing.TypeVar("_T")


def build(cls: type[_T], data: Any, where: str) -> _T:
    """Construct dataclass *cls* from *data*, rejecting unknown keys and bad types."""
    if not isinstance(data, dict):
        raise SimScenarioError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SimScenarioError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SimScenarioError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


# Validation ---------------------------------------------------------------------------


def _check_faults(f: NodeFaults, where: str) -> None:
    if f.exec_hang is not None and not f.exec_hang:
        raise SimScenarioError(f"{where}.exec_hang: use '*' or a JSON-RPC method name")
    if f.exec_garbage is not None and f.exec_garbage not in GARBAGE_MODES:
        raise SimScenarioError(f"{where}.exec_garbage: one of {', '.join(GARBAGE_MODES)}")
    for name in ("api_429", "api_500"):
        if getattr(f, name) < -1:
            raise SimScenarioError(f"{where}.{name}: a count >= 0, or -1 for every request")
    if f.api_latency_s < 0 or f.retry_after_s < 0:
        raise SimScenarioError(f"{where}: latencies and Retry-After must not be negative")


def _check_node(node: NodeSpec, where: str) -> None:
    if not _DNS1123.match(node.name) or len(node.name) > 253:
        raise SimScenarioError(f"{where}.name: {node.name!r} is not a valid node name (RFC 1123)")
    if node.product not in PRODUCTS:
        raise SimScenarioError(
            f"{where}.product: {node.product!r} unknown; known: {', '.join(PRODUCTS)}"
        )
    if node.gpu and not 1 <= node.gpu_count <= 16:
        raise SimScenarioError(f"{where}.gpu_count: between 1 and 16")
    if node.agent_pod not in AGENT_POD_STATES:
        raise SimScenarioError(f"{where}.agent_pod: one of {', '.join(AGENT_POD_STATES)}")
    if not 0 <= node.unhealthy_gpus <= node.gpu_count:
        raise SimScenarioError(f"{where}.unhealthy_gpus: between 0 and gpu_count")
    for i, taint in enumerate(node.taints):
        if "key" not in taint or taint.get("effect") not in (
            "NoSchedule",
            "PreferNoSchedule",
            "NoExecute",
        ):
            raise SimScenarioError(
                f"{where}.taints[{i}]: needs 'key' and 'effect' (NoSchedule, PreferNoSchedule, "
                "NoExecute)"
            )
    if node.mig is not None:
        mig = node.mig
        if not isinstance(mig.get("gpu"), int) or not isinstance(mig.get("profiles"), list):
            raise SimScenarioError(f"{where}.mig: needs 'gpu' (index) and 'profiles' (list)")
        if mig.get("strategy", "mixed") not in ("single", "mixed"):
            raise SimScenarioError(f"{where}.mig.strategy: 'single' or 'mixed'")
    _check_faults(node.faults, f"{where}.faults")


def _check_devices(w: WorkloadSpec, node: NodeSpec | None, where: str) -> None:
    """``visible_gpus`` / ``gpu_processes``: GPU indexes of the pod's node."""
    for key in ("visible_gpus", "gpu_processes"):
        indexes: list[int] = getattr(w, key)
        if not indexes:
            continue
        if node is None:
            raise SimScenarioError(f"{where}.{key}: the pod has no node, so no GPUs")
        bad = [i for i in indexes if not 0 <= i < node.gpu_count]
        if bad or len(set(indexes)) != len(indexes):
            raise SimScenarioError(
                f"{where}.{key}: distinct GPU indexes of node {node.name} "
                f"(0..{node.gpu_count - 1}), got {indexes}"
            )
        if len(indexes) > w.gpus:
            raise SimScenarioError(f"{where}.{key}: more GPUs than the pod's {w.gpus}")
    if w.visible_gpus and "NVIDIA_VISIBLE_DEVICES" in w.env:
        raise SimScenarioError(f"{where}.visible_gpus: env already sets NVIDIA_VISIBLE_DEVICES")


def _check(sc: Scenario) -> None:
    names: dict[str, NodeSpec] = {}
    for i, node in enumerate(sc.nodes):
        _check_node(node, f"nodes[{i}]")
        if node.name in names:
            raise SimScenarioError(f"nodes[{i}].name: duplicate node {node.name!r}")
        names[node.name] = node
    pods: set[tuple[str, str]] = set()
    for i, w in enumerate(sc.workloads):
        where = f"workloads[{i}]"
        if w.node is not None and w.node not in names:
            raise SimScenarioError(f"{where}.node: no node named {w.node!r} in the scenario")
        if (w.namespace, w.name) in pods:
            raise SimScenarioError(f"{where}: duplicate pod {w.namespace}/{w.name}")
        pods.add((w.namespace, w.name))
        if w.phase not in ("Pending", "Running", "Succeeded", "Failed"):
            raise SimScenarioError(f"{where}.phase: Pending, Running, Succeeded or Failed")
        if w.state not in ("running", "terminated", "waiting"):
            raise SimScenarioError(f"{where}.state: running, terminated or waiting")
        if w.state == "terminated" and w.exit_code is None:
            raise SimScenarioError(f"{where}.exit_code: required when state is terminated")
        if w.restart_policy not in ("Always", "OnFailure", "Never"):
            raise SimScenarioError(f"{where}.restart_policy: Always, OnFailure or Never")
        if w.service_ports and "app" not in w.labels:
            raise SimScenarioError(f"{where}.service_ports: needs labels.app (the selector)")
        _check_devices(w, names.get(w.node) if w.node else None, where)
    from .auth import Rule  # local: auth has no scenario dependency

    rule_sets = [("users", i, u.rules) for i, u in enumerate(sc.users)]
    rule_sets += [("groups", i, g.rules) for i, g in enumerate(sc.groups)]
    for key, i, rules in rule_sets:
        for j, rule in enumerate(rules):
            try:
                Rule.from_dict(rule)
            except ValueError as exc:
                raise SimScenarioError(f"{key}[{i}].rules[{j}]: {exc}") from None
    if sc.cpu_nodes < 0:
        raise SimScenarioError("cpu_nodes: must not be negative")
    _check_faults(sc.cluster_faults, "cluster_faults")


# Loading ------------------------------------------------------------------------------


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Build a Scenario from a parsed YAML/JSON document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SimScenarioError(f"{source}: the top level must be a mapping")
    data = copy.deepcopy(data)
    defaults = data.get("defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise SimScenarioError(f"{source}: defaults must be a mapping")
    nodes = data.get("nodes", []) or []
    if not isinstance(nodes, list):
        raise SimScenarioError(f"{source}: nodes must be a list")
    merged = []
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise SimScenarioError(f"{source}: nodes[{i}] must be a mapping")
        merged.append({**copy.deepcopy(defaults), **node})
    data["nodes"] = merged
    sc = build(Scenario, data, source)
    # Defaults must make a valid node on their own: generated nodes are made of them.
    template = build(NodeSpec, {**defaults, "name": "gpu-node-0"}, f"{source}.defaults")
    _check_node(template, f"{source}.defaults")
    _check(sc)
    return sc


def read_scenario_file(path: Path) -> Any:
    """Parse a YAML (or JSON) scenario file; errors name the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SimScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SimScenarioError(f"{path}: invalid JSON: {exc}") from None
    import yaml  # the broker extra ships pyyaml; imported only when a YAML file is read

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SimScenarioError(f"{path}: invalid YAML: {exc}") from None


def default_scenario_data() -> Any:
    import yaml

    text = resources.files("broker.sim").joinpath("data/default-scenario.yaml").read_text()
    return yaml.safe_load(text)


def load_scenario(source: Path | str | dict[str, Any] | Scenario | None) -> Scenario:
    """A Scenario from a file path, a parsed dict, a Scenario, or None (the demo scenario)."""
    if isinstance(source, Scenario):
        return copy.deepcopy(source)
    if source is None:
        return parse_scenario(default_scenario_data(), "default scenario")
    if isinstance(source, dict):
        return parse_scenario(source)
    path = Path(source)
    return parse_scenario(read_scenario_file(path), str(path))


def expand_nodes(sc: Scenario, total_gpu_nodes: int) -> list[NodeSpec]:
    """The scenario's named nodes, padded with healthy generated GPU nodes to
    *total_gpu_nodes* GPU nodes, then ``cpu_nodes`` CPU-only nodes."""
    nodes = list(sc.nodes)
    names = {n.name for n in nodes}
    have = sum(1 for n in nodes if n.gpu)
    width = max(3, len(str(total_gpu_nodes)))
    i = 0
    while have < total_gpu_nodes:
        i += 1
        name = f"gpu-node-{i:0{width}d}"
        if name in names:
            continue
        nodes.append(build(NodeSpec, {**copy.deepcopy(sc.defaults), "name": name}, "defaults"))
        names.add(name)
        have += 1
    for j in range(1, sc.cpu_nodes + 1):
        name = f"cpu-node-{j}"
        if name not in names:
            nodes.append(NodeSpec(name=name, gpu=False, gpu_count=0))
            names.add(name)
    return nodes
