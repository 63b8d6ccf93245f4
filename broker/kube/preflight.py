"""The reads ``broker doctor`` needs beyond nodes and pods: the server version, what RBAC
lets the caller do (SelfSubjectAccessReview), the chart's DaemonSets, RuntimeClasses and
a namespace's labels.

A kind the API server does not serve (404 on a list: an old cluster, or a simulated one)
comes back as ``None`` rather than an error, so a check can say "not served" and carry on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.kube.config import KubeApi
from broker.kube.reader import Obj, raise_for_status, read_core

__all__ = [
    "AccessAnswer",
    "can_i",
    "daemonsets",
    "namespace",
    "runtime_classes",
    "server_version",
]


@dataclass(frozen=True)
class AccessAnswer:
    """What a SelfSubjectAccessReview said about one request."""

    verb: str
    resource: str  # "pods/exec" for a subresource
    namespace: str | None
    allowed: bool
    reason: str = ""

    @property
    def request(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else " cluster-wide"
        return f"{self.verb} {self.resource}{where}"


async def server_version(api: KubeApi) -> str | None:
    """The API server's ``gitVersion`` (e.g. v1.33.1); None when it does not serve
    ``/version/``. Raises ApiUnavailable when the server cannot be reached."""
    status, body = await read_core(api, "get_code", api_class="VersionApi")
    if status == 404:
        return None
    doc = raise_for_status(api, status, body, "get", "version", None)
    return str(doc.get("gitVersion") or "unknown")


async def can_i(api: KubeApi, verb: str, resource: str, namespace: str | None) -> AccessAnswer:
    """Ask the API server whether the caller may ``verb resource`` (``pods/exec`` style for
    a subresource) — the question ``kubectl auth can-i`` asks."""
    base, _, sub = resource.partition("/")
    attributes: dict[str, str] = {"verb": verb, "resource": base, "group": ""}
    if sub:
        attributes["subresource"] = sub
    if namespace:
        attributes["namespace"] = namespace
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    status, raw = await read_core(
        api, "create_self_subject_access_review", body, api_class="AuthorizationV1Api"
    )
    doc = raise_for_status(api, status, raw, "create", "selfsubjectaccessreviews", None)
    result = doc.get("status") or {}
    return AccessAnswer(
        verb,
        resource,
        namespace,
        bool(result.get("allowed")),
        str(result.get("reason") or result.get("evaluationError") or ""),
    )


async def daemonsets(api: KubeApi, namespace: str | None, label_selector: str) -> list[Obj] | None:
    """DaemonSets matching ``label_selector`` in ``namespace`` (None: every namespace);
    None when the API server does not serve apps/v1 DaemonSets."""
    args: tuple[str, ...] = (namespace,) if namespace else ()
    method = "list_namespaced_daemon_set" if namespace else "list_daemon_set_for_all_namespaces"
    return await _list_or_none(
        api, "AppsV1Api", method, args, "daemonsets", namespace, label_selector=label_selector
    )


async def runtime_classes(api: KubeApi) -> list[Obj] | None:
    """Every RuntimeClass (node.k8s.io/v1); None when the kind is not served."""
    return await _list_or_none(api, "NodeV1Api", "list_runtime_class", (), "runtimeclasses", None)


async def namespace(api: KubeApi, name: str) -> Obj | None:
    """One namespace (None when it does not exist). Raises RbacDenied, ApiUnavailable."""
    status, body = await read_core(api, "read_namespace", name)
    if status == 404:
        return None
    return raise_for_status(api, status, body, "get", "namespaces", None)


async def _list_or_none(
    api: KubeApi,
    api_class: str,
    method: str,
    args: tuple[str, ...],
    resource: str,
    namespace: str | None,
    **query: Any,
) -> list[Obj] | None:
    status, body = await read_core(api, method, *args, api_class=api_class, **query)
    if status == 404:  # a list never 404s for a served kind: the kind is not served
        return None
    doc = raise_for_status(api, status, body, "list", resource, namespace)
    return [i for i in doc.get("items") or [] if isinstance(i, dict)]
