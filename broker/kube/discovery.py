"""Find the GPU nodes and their agent pods.

Every GPU node appears exactly once, ready or not: a node whose agent pod is missing,
Pending, crash-looping or not Ready is reported with the reason, never dropped, and
an agent pod on a node that is not labelled as a GPU node is still listed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from broker.errors import BrokerError, RbacDenied
from broker.kube.config import KubeApi
from broker.kube.names import AGENT_SELECTOR, GPU_PRESENT_LABEL, GPU_RESOURCE
from broker.kube.reader import raise_for_status, read_core, within_deadline
from broker.kube.retry import RetryPolicy


@dataclass(frozen=True)
class NodeTarget:
    """One GPU node as the pool sees it: where its agent pod is and whether it can be used."""

    node: str
    pod: str | None
    namespace: str
    ready: bool
    reason: str | None  # why not ready (None when ready)
    labels: dict[str, str] = field(default_factory=dict)  # the NODE's labels


def is_gpu_node(node: Mapping[str, Any]) -> bool:
    """GPU node: labelled ``nvidia.com/gpu.present=true`` or with ``nvidia.com/gpu`` capacity."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if str(labels.get(GPU_PRESENT_LABEL, "")).lower() == "true":
        return True
    capacity = (node.get("status") or {}).get("capacity") or {}
    try:
        return int(str(capacity.get(GPU_RESOURCE, "0"))) > 0
    except ValueError:
        return False


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why an agent pod cannot take an exec (None when it can): phase, readiness, waits."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = meta.get("name", "?")
    if meta.get("deletionTimestamp"):
        return f"agent pod {name} is terminating"
    phase = status.get("phase") or "Unknown"
    waiting = _container_waiting(status)
    if phase != "Running":
        detail = waiting or _condition_message(status, "PodScheduled") or status.get("reason")
        return f"agent pod {name} is {phase}" + (f" ({detail})" if detail else "")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            detail = waiting or cond.get("message") or cond.get("reason")
            return f"agent pod {name} is Running but not Ready" + (f" ({detail})" if detail else "")
    if waiting:
        return f"agent pod {name} is Running but its container is waiting ({waiting})"
    return None


def _container_waiting(status: Mapping[str, Any]) -> str | None:
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            reason = waiting.get("reason") or "waiting"
            message = waiting.get("message")
            return f"{reason}: {message}" if message else str(reason)
    return None


def _condition_message(status: Mapping[str, Any], kind: str) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") != "True":
            return str(cond.get("message") or cond.get("reason") or "") or None
    return None


def _daemonset_node(pod: Mapping[str, Any]) -> str | None:
    """The node an unscheduled DaemonSet pod is meant for (its metadata.name affinity)."""
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field_ in term.get("matchFields") or []:
            values = field_.get("values") or []
            if field_.get("key") == "metadata.name" and len(values) == 1:
                return str(values[0])
    return None


def _node_problem(node: Mapping[str, Any]) -> str | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            return f"node is NotReady ({cond.get('reason') or cond.get('status')})"
    return None


def build_targets(
    nodes: list[Mapping[str, Any]] | None,
    pods: list[Mapping[str, Any]],
    namespace: str,
) -> list[NodeTarget]:
    """Join agent pods to GPU nodes. ``nodes`` None = node list unavailable (pods only)."""
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName") or _daemonset_node(pod)
        if node_name:
            by_node.setdefault(str(node_name), []).append(pod)
    node_docs = {
        str((n.get("metadata") or {}).get("name")): n
        for n in nodes or []
        if (n.get("metadata") or {}).get("name")
    }
    names = {name for name, doc in node_docs.items() if is_gpu_node(doc)} | set(by_node)
    targets: list[NodeTarget] = []
    for name in sorted(names):
        doc = node_docs.get(name, {})
        labels = {
            str(k): str(v) for k, v in ((doc.get("metadata") or {}).get("labels") or {}).items()
        }
        candidates = by_node.get(name, [])
        if not candidates:
            reason = (
                f"no agent pod on this GPU node in namespace {namespace} (is the DaemonSet "
                f"scheduled here? check its nodeSelector/tolerations: "
                f"kubectl -n {namespace} get daemonset)"
            )
            targets.append(NodeTarget(name, None, namespace, False, reason, labels))
            continue
        # Prefer a usable pod; among equals the newest (a rolling update can leave two).
        candidates.sort(
            key=lambda p: (
                pod_problem(p) is None,
                str((p.get("metadata") or {}).get("creationTimestamp") or ""),
            ),
            reverse=True,
        )
        pod = candidates[0]
        pod_name = str((pod.get("metadata") or {}).get("name"))
        problem = pod_problem(pod) or (_node_problem(doc) if doc else None)
        targets.append(NodeTarget(name, pod_name, namespace, problem is None, problem, labels))
    return targets


class Discovery:
    """Lists agent pods and GPU nodes through the API server, cached for ``ttl_s``."""

    def __init__(self, api: KubeApi, ttl_s: float = 30.0, retry: RetryPolicy | None = None) -> None:
        self._api = api
        self.ttl_s = ttl_s
        self._retry = retry or RetryPolicy()
        self._cached: list[NodeTarget] | None = None
        self._stamp = 0.0
        self._lock = anyio.Lock()
        self.warnings: list[str] = []

    async def targets(self, refresh: bool = False) -> list[NodeTarget]:
        """The GPU nodes, from cache while fresh. When a routine (not forced) refresh
        fails and an older list exists, the older list is served and the failure noted
        in ``warnings``: node calls then report their own errors."""
        async with self._lock:
            fresh = time.monotonic() - self._stamp < self.ttl_s
            if self._cached is not None and fresh and not refresh:
                return self._cached
            try:
                with within_deadline(self._api):  # both lists together, not each
                    self._cached, self.warnings = await self._fetch()
            except BrokerError as exc:
                if refresh or self._cached is None:
                    raise
                self.warnings = [f"node list is stale: refreshing it failed: {exc}"]
                self._stamp = time.monotonic() - self.ttl_s / 2  # retry sooner than a TTL
                return self._cached
            self._stamp = time.monotonic()
            return self._cached

    async def _fetch(self) -> tuple[list[NodeTarget], list[str]]:
        await self._api.refresh_credentials()
        namespace = self._api.namespace
        pods = await self._list("pods")
        warnings: list[str] = []
        nodes: list[Mapping[str, Any]] | None
        try:
            nodes = await self._list("nodes")
        except RbacDenied as exc:
            # Still useful without node access: agent pods name their nodes.
            nodes = None
            warnings.append(
                f"{exc} Without it GPU nodes lacking an agent pod and node labels "
                "(node_selector) are unknown."
            )
        return build_targets(nodes, pods, namespace), warnings

    def invalidate(self) -> None:
        """Forget the cache (a pod vanished under an exec)."""
        self._stamp = 0.0

    async def _list(self, what: str) -> list[Mapping[str, Any]]:
        """List agent pods (``what="pods"``) or nodes, as plain JSON, in pages of
        ``PAGE`` (as kubectl does), each item cut down to what :func:`build_targets`
        reads: at 5,000 nodes a whole list parsed at once peaked at 180 MiB."""
        namespace = self._api.namespace
        scope = namespace if what == "pods" else None
        slim = _slim_pod if what == "pods" else _slim_node
        found: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:
            status, body = await self._get(what, token)
            if status == 410 and token is not None:  # the continue token expired: restart
                found, token = [], None
                continue
            doc = raise_for_status(self._api, status, body, "list", what, scope)
            del body
            found += [slim(i) for i in doc.get("items") or [] if isinstance(i, dict)]
            token = (doc.get("metadata") or {}).get("continue") or None
            if token is None:
                return found

    async def _get(self, what: str, token: str | None = None) -> tuple[int, bytes]:
        """One list call (one page), retried on 429/5xx/connection errors, one refresh
        on 401."""
        page: dict[str, Any] = {"limit": PAGE}
        if token:
            page["_continue"] = token
        if what == "pods":
            return await read_core(
                self._api,
                "list_namespaced_pod",
                self._api.namespace,
                label_selector=AGENT_SELECTOR,
                retry=self._retry,
                **page,
            )
        return await read_core(self._api, "list_node", retry=self._retry, **page)


PAGE = 500  # items per list call (kubectl's chunk size)


def _slim_node(node: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    capacity = {GPU_RESOURCE: (status.get("capacity") or {}).get(GPU_RESOURCE)}
    return {
        "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {}},
        "status": {"capacity": capacity, "conditions": ready},
    }


def _slim_pod(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    keep_meta = ("name", "creationTimestamp", "deletionTimestamp")
    keep_status = ("phase", "reason", "conditions")
    return {
        "metadata": {k: meta[k] for k in keep_meta if k in meta},
        "spec": {"nodeName": spec.get("nodeName"), "affinity": spec.get("affinity")},
        "status": {
            **{k: status[k] for k in keep_status if k in status},
            "containerStatuses": [
                {"state": cs.get("state") or {}} for cs in status.get("containerStatuses") or []
            ],
        },
    }
