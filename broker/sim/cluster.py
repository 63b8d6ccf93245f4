"""The simulated cluster's state: nodes, pods, events, namespaces, users, faults.

Objects are built once from the scenario and cached; the runtime controls below
(agent pod state, agent scenario keys, faults, users) change them while the sim runs,
from the event loop or from a test's thread.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
import time
import zlib
from typing import Any

from . import infra, scheduling
from .auth import ADMIN_RULES, MASTERS, Authorizer, Rule, User
from .controllers import (
    agent_daemonset,
    daemonset_status,
    device_plugin_daemonset,
    workload_controllers,
)
from .devices import mig_devices
from .errors import SimError
from .objects import (
    agent_pod,
    agent_pod_events,
    agent_pod_name,
    event_object,
    hexid,
    iso,
    lifecycle_events,
    namespace_object,
    node_lease,
    node_object,
    system_pods,
    uid,
    workload_pod,
)
from .scenario import (
    AGENT_POD_STATES,
    NodeFaults,
    NodeSpec,
    Scenario,
    WorkloadSpec,
    expand_nodes,
)

Obj = dict[str, Any]
ADMIN = "sim-admin"
_PLURALS = {
    "CronJob": "cronjobs",
    "Deployment": "deployments",
    "Job": "jobs",
    "JobSet": "jobsets",
    "PyTorchJob": "pytorchjobs",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
}


def _plural(kind: str) -> str:
    return _PLURALS[kind]


class SimCluster:
    """Everything the simulated API server serves, and the knobs tests turn."""

    def __init__(
        self,
        scenario: Scenario,
        gpu_nodes: int = 0,
        *,
        start: float | None = None,
        admin_token: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.start = time.time() if start is None else start
        self.namespace = scenario.namespace
        self.version = scenario.kubernetes_version
        specs = expand_nodes(scenario, gpu_nodes)
        self.specs: dict[str, NodeSpec] = {s.name: s for s in specs}
        self._index = {s.name: i for i, s in enumerate(specs)}
        self.cluster_faults: NodeFaults = scenario.cluster_faults
        self._lock = threading.RLock()
        self._rv = itertools.count(4711)
        self.chart_installed = scenario.chart_installed
        self._agent_state = {
            s.name: s.agent_pod if self.chart_installed else "missing" for s in specs if s.gpu
        }
        self._agent_since = {name: self.start - 1800 for name in self._agent_state}
        # Agent pod name -> node: an exec names the pod, and a scan of every node's
        # generated name per exec made a 5,000-node sweep quadratic.
        self._agent_by_pod = {agent_pod_name(n): n for n in self._agent_state}
        self._agent_extra: dict[str, dict[str, Any]] = {}
        self._agent_cache: dict[str, tuple[Obj | None, list[Obj]]] = {}
        self._pods_sorted: list[Obj] | None = None
        self._events_sorted: list[Obj] | None = None
        self._agent_ds: Obj | None = None
        self.ca_pem = ""  # the server's CA, published in every kube-root-ca.crt ConfigMap
        self.auth = Authorizer()
        self.admin = self.auth.add(User(ADMIN, [MASTERS], list(ADMIN_RULES)))
        if admin_token:
            self.admin.token = admin_token
        for u in scenario.users:
            user = User(u.name, list(u.groups), [Rule.from_dict(r) for r in u.rules])
            if u.token:
                user.token = u.token
            self.auth.add(user)
        for g in scenario.groups:
            self.auth.add_group(g.name, [Rule.from_dict(r) for r in g.rules])
        self._build()

    # Construction ------------------------------------------------------------------

    def rv(self) -> str:
        """A fresh resourceVersion."""
        return str(next(self._rv))

    def _build(self) -> None:
        start = self.start
        self._nodes: dict[str, Obj] = {
            name: node_object(spec, self._index[name], start, self.version, self.rv())
            for name, spec in self.specs.items()
        }
        self._static_pods: list[Obj] = []
        if self.scenario.workloads or self.specs:
            for name, spec in self.specs.items():
                self._static_pods.extend(system_pods(spec, self._index[name], start, self.rv()))
        self._static_events: list[Obj] = []
        self._workload_specs = {}
        owned: list[tuple[Any, Obj]] = []
        unschedulable = scheduling.plan(self.scenario, list(self.specs.values()))
        devices = mig_devices(self.scenario.workloads, self.agent_scenario)
        for w in self.scenario.workloads:
            if (w.namespace, w.name) in devices:  # what the device plugin gave the container
                env = {**w.env, "NVIDIA_VISIBLE_DEVICES": devices[(w.namespace, w.name)]}
                w = dataclasses.replace(w, env=env)
            index = self._index.get(w.node) if w.node else None
            message = unschedulable.get((w.namespace, w.name), "")
            uuids = self.gpu_uuids(w.node) if w.node and w.visible_gpus else []
            pod = workload_pod(w, index, start, self.rv(), message, uuids)
            self._static_pods.append(pod)
            owned.append((w, pod))
            self._workload_specs[(w.namespace, w.name)] = w
            self._static_events.extend(lifecycle_events(w, pod, start, self.rv()))
            for ev in w.events:
                self._static_events.append(event_object(ev, pod, w.node or "", start, self.rv()))
        for name, spec in self.specs.items():
            for ev in spec.events:
                self._static_events.append(
                    event_object(ev, self._nodes[name], name, start, self.rv())
                )
        names = {"default", "kube-system", "kube-public", "kube-node-lease", "gpu-operator"}
        names |= {self.namespace} | {w.namespace for w in self.scenario.workloads}
        oldest = max((s.age_s for s in self.specs.values()), default=86400.0)
        born = start - oldest - 600
        self._namespaces = {n: namespace_object(n, born, self.rv()) for n in sorted(names)}
        self._build_controllers(born, owned)

    def _build_controllers(self, born: float, owned: list[tuple[Any, Obj]]) -> None:
        """Owners of the pods (DaemonSets, Jobs, ...), and the cluster's fixed objects."""
        start, rv = self.start, self.rv()
        controllers, events = workload_controllers(owned, start, rv)
        self._static_events.extend(events)
        extra: dict[str, list[Obj]] = {}
        for obj in controllers:
            extra.setdefault(_plural(obj["kind"]), []).append(obj)
        plugin_pods = [p for p in self._static_pods if p["metadata"]["namespace"] == "gpu-operator"]
        if plugin_pods:
            ds = device_plugin_daemonset(
                plugin_pods[0], plugin_pods[0]["metadata"]["creationTimestamp"], rv
            )
            ds["status"] = daemonset_status(len(plugin_pods), len(plugin_pods), len(plugin_pods))
            extra.setdefault("daemonsets", []).append(ds)
        apps = {
            (w.namespace, w.labels["app"]): list(w.service_ports)
            for w in self.scenario.workloads
            if w.service_ports
        }
        extra["services"] = infra.services(apps, born, rv)
        chart_ns = self.namespace if self.chart_installed else None
        extra["serviceaccounts"] = infra.service_accounts(
            list(self._namespaces), chart_ns, born, rv
        )
        installed = start - 7 * 86400.0
        extra["secrets"] = (
            [infra.helm_release_secret(self.namespace, installed, rv)] if chart_ns else []
        )
        extra["runtimeclasses"] = [
            infra.runtime_class(name, born, rv) for name in self.scenario.runtime_classes
        ]
        for items in extra.values():
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        self._extra = extra
        self._ds_created = installed

    def _agent(self, node: str) -> tuple[Obj | None, list[Obj]]:
        with self._lock:
            cached = self._agent_cache.get(node)
            if cached is not None:
                return cached
            state = self._agent_state[node]
            if state == "missing":
                built: tuple[Obj | None, list[Obj]] = (None, [])
            else:
                since = self._agent_since[node]
                pod = agent_pod(
                    self.specs[node],
                    self._index[node],
                    self.namespace,
                    state,
                    since,
                    self.start,
                    self.rv(),
                    host_proc=self.scenario.host_proc,
                )
                built = (pod, agent_pod_events(pod, node, state, since, self.rv()))
            self._agent_cache[node] = built
            return built

    # Queries -----------------------------------------------------------------------

    @property
    def gpu_nodes(self) -> list[str]:
        return [n for n, s in self.specs.items() if s.gpu]

    def node_index(self, name: str) -> int:
        return self._index[name]

    def nodes(self) -> list[Obj]:
        return [self._nodes[n] for n in sorted(self._nodes)]

    def node(self, name: str) -> Obj | None:
        return self._nodes.get(name)

    def pods(self, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            if self._pods_sorted is None:
                pods = list(self._static_pods)
                for node in self._agent_state:
                    pod, _ = self._agent(node)
                    if pod is not None:
                        pods.append(pod)
                pods.sort(key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
                self._pods_sorted = pods
            pods = self._pods_sorted
        if namespace:
            return [p for p in pods if p["metadata"]["namespace"] == namespace]
        return pods

    def pod(self, namespace: str, name: str) -> Obj | None:
        if namespace == self.namespace:
            node = self._agent_by_pod.get(name)
            if node is not None:
                return self._agent(node)[0]
        for pod in self._static_pods:
            meta = pod["metadata"]
            if meta["name"] == name and meta["namespace"] == namespace:
                return pod
        return None

    def events(self, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            if self._events_sorted is None:
                events = list(self._static_events)
                for node in self._agent_state:
                    events.extend(self._agent(node)[1])
                events.sort(key=lambda e: (e["metadata"]["namespace"], e["metadata"]["name"]))
                self._events_sorted = events
            events = self._events_sorted
        if namespace:
            return [e for e in events if e["metadata"]["namespace"] == namespace]
        return events

    def objects(self, plural: str, group: str, namespace: str | None = None) -> list[Obj]:
        """Every object of a kind served by the generic handlers (not nodes, pods, core
        events or namespaces), in one namespace or all."""
        if group == "events.k8s.io":
            return [infra.new_event(e) for e in self.events(namespace)]
        if plural == "leases":
            if namespace not in (None, "kube-node-lease"):
                return []
            now = time.time()
            return [
                node_lease(self._nodes[n], self.specs[n].ready, now, self.start)
                for n in sorted(self._nodes)
            ]
        if plural == "configmaps":
            names = [namespace] if namespace else list(self._namespaces)
            return infra.root_ca_configmaps(
                [n for n in names if n in self._namespaces],
                self.ca_pem,
                self.start - 86400,
                "1",
            )
        if plural in ("endpoints", "endpointslices"):
            which = 0 if plural == "endpoints" else 1
            out = []
            for svc in self._extra["services"]:
                ns = svc["metadata"]["namespace"]
                if namespace in (None, ns):
                    out.append(infra.endpoints(svc, self.pods(ns))[which])
            return out
        items = list(self._extra.get(plural, []))
        if plural == "daemonsets":
            if self.chart_installed:
                items.append(self.agent_daemonset())
            items.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
        if namespace:
            return [o for o in items if o["metadata"].get("namespace") == namespace]
        return items

    def object(self, plural: str, group: str, namespace: str, name: str) -> Obj | None:
        if plural == "leases":
            node = self._nodes.get(name) if namespace == "kube-node-lease" else None
            if node is None:
                return None
            return node_lease(node, self.specs[name].ready, time.time(), self.start)
        for obj in self.objects(plural, group, namespace or None):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def agent_daemonset(self) -> Obj:
        """The chart's DaemonSet with status counted from the agent pods (cached until an
        agent pod changes state)."""
        with self._lock:
            if self._agent_ds is not None:
                return self._agent_ds
            scheduled = ready = 0
            for state in self._agent_state.values():
                if state != "missing":
                    scheduled += 1
                    ready += state == "ready"
            template = agent_pod(
                NodeSpec(name="template"),
                0,
                self.namespace,
                "ready",
                self.start,
                self.start,
                "0",
                host_proc=self.scenario.host_proc,
            )
            ds = agent_daemonset(self.namespace, template, iso(self._ds_created), self.rv())
            ds["status"] = daemonset_status(scheduled, scheduled, ready)
            self._agent_ds = ds
            return ds

    def namespaces(self) -> list[Obj]:
        return list(self._namespaces.values())

    def namespace_object(self, name: str) -> Obj | None:
        return self._namespaces.get(name)

    def logs(self, namespace: str, name: str, previous: bool) -> str:
        spec = self._workload_specs.get((namespace, name))
        if spec is None:
            return ""
        return spec.previous_logs if previous else spec.logs

    def agent_pod_name(self, node: str) -> str | None:
        """The agent pod's name on *node*, or None (not a GPU node, or no agent pod)."""
        if self._agent_state.get(node, "missing") == "missing":
            return None
        return agent_pod_name(node)

    def agent_pod_state(self, node: str) -> str:
        return self._agent_state.get(node, "missing")

    def agent_scenario(self, node: str, now: float | None = None) -> dict[str, Any]:
        """The agent fake-backend scenario for *node*, with ``ago_s`` times re-based on
        *now* so XIDs keep the wall-clock times the pods' events and statuses show."""
        spec = self.specs[node]
        now = time.time() if now is None else now
        elapsed = max(0.0, now - self.start)
        with self._lock:
            sc: dict[str, Any] = copy.deepcopy(spec.agent)
            sc.update(copy.deepcopy(self._agent_extra.get(node, {})))
        sc.setdefault("node", node)
        sc.setdefault("product", spec.product)
        sc.setdefault("gpu_count", spec.gpu_count)
        sc.setdefault("driver_version", spec.driver_version)
        sc.setdefault("cuda_driver_version", spec.cuda_version)
        sc["uptime_s"] = float(sc.get("uptime_s", spec.uptime_s)) + elapsed
        if spec.mig and "mig" not in sc:
            sc["mig"] = {"gpu": spec.mig["gpu"], "profiles": list(spec.mig["profiles"])}
        for key in ("faults", "kmsg"):
            for item in sc.get(key, []):
                if isinstance(item, dict) and isinstance(item.get("ago_s"), int | float):
                    item["ago_s"] = float(item["ago_s"]) + elapsed
        procs = self.gpu_processes(node)
        if procs:
            mig_gpu = (sc.get("mig") or {}).get("gpu") if isinstance(sc.get("mig"), dict) else None
            sc["processes"] = [*sc.get("processes", []),
                               *({"gpu": gpu, "pid": pid, "name": "python3",
                                  # NVML lists a process on a MIG GPU in its GPU instance
                                  **({"gpu_instance": w.mig_instance}
                                     if w.mig_instance is not None and gpu == mig_gpu else {})}
                                 for pid, gpu, w in procs)]  # fmt: skip
        return sc

    def gpu_uuids(self, node: str) -> list[str]:
        """*node*'s GPU UUIDs by index, as its agent reports them."""
        from agent.fake import FakeBackend  # the agent's own view of the node

        backend = FakeBackend(self.agent_scenario(node), source=f"node {node}")
        return [str(g.uuid) for g in backend.inventory()]

    def gpu_processes(self, node: str) -> list[tuple[int, int, WorkloadSpec]]:
        """(pid, GPU index, workload) for the processes of *node*'s running workload pods
        (``gpu_processes``): what the node's NVML lists and its /proc explains."""
        out: list[tuple[int, int, WorkloadSpec]] = []
        for w in self.scenario.workloads:
            if w.node == node and w.state == "running" and w.gpu_processes:
                base = 1000 + zlib.crc32(f"{w.namespace}/{w.name}".encode()) % 3_000_000
                out.extend((base + k, gpu, w) for k, gpu in enumerate(w.gpu_processes))
        return out

    def host_proc(self, node: str) -> dict[int, dict[str, str]]:
        """*node*'s /proc as the agent reads it for pod mapping: pid -> {file: text}
        (``cgroup`` under the systemd driver and containerd, as the kubelet names them;
        ``comm``)."""
        out = {}
        for pid, _, w in self.gpu_processes(node):
            pod = uid("pod", w.namespace, w.name).replace("-", "_")
            container = hexid(w.namespace + w.name)  # the pod status's containerID
            slice_ = f"/kubepods.slice/kubepods-pod{pod}.slice"
            cgroup = f"0::{slice_}/cri-containerd-{container}.scope\n"
            out[pid] = {"cgroup": cgroup, "comm": "python3\n"}
        return out

    def pod_node(self, namespace: str, name: str) -> str | None:
        pod = self.pod(namespace, name)
        return None if pod is None else pod["spec"].get("nodeName")

    # Runtime controls ----------------------------------------------------------------

    def _spec(self, node: str) -> NodeSpec:
        try:
            return self.specs[node]
        except KeyError:
            raise SimError(f"no node named {node!r} in the simulated cluster") from None

    def faults(self, node: str | None = None) -> NodeFaults:
        """The mutable fault settings for *node* (None: requests about no single node)."""
        return self.cluster_faults if node is None else self._spec(node).faults

    def set_agent_pod(self, node: str, state: str) -> None:
        """Put *node*'s agent pod in *state*: ready, not_ready, pending, crashloop, missing."""
        if state not in AGENT_POD_STATES:
            raise SimError(f"agent pod state must be one of {', '.join(AGENT_POD_STATES)}")
        if not self._spec(node).gpu:
            raise SimError(f"{node} is not a GPU node: the agent DaemonSet does not run there")
        with self._lock:
            self._agent_state[node] = state
            self._agent_since[node] = time.time()
            self._agent_cache.pop(node, None)
            self._pods_sorted = self._events_sorted = None
            self._agent_ds = None

    def update_agent(self, node: str, **keys: Any) -> None:
        """Set agent scenario keys for *node* (e.g. ``disabled_tools=[...]``, ``faults=[...]``);
        the next exec on that node starts an agent that sees them."""
        self._spec(node)
        with self._lock:
            self._agent_extra.setdefault(node, {}).update(copy.deepcopy(keys))

    def add_user(
        self,
        name: str,
        rules: list[Rule] | None = None,
        groups: list[str] | None = None,
        token: str | None = None,
    ) -> User:
        """Add (or replace) a bearer-token user with RBAC *rules*."""
        user = User(name, list(groups or []), list(rules or []))
        if token:
            user.token = token
        return self.auth.add(user)
