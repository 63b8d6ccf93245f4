"""Read-only views of nodes, pods and events for the cluster-side tools.

Every read goes through :func:`read_core` here: one retry loop, and one
status -> error mapping (:func:`raise_for_status`). Answers are plain JSON dicts, as the
API server sends them. A 403 becomes :class:`RbacDenied` naming the verb, resource and
namespace, so callers can degrade to a partial answer that says which permission
would fill the gap (:func:`missing_from`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from broker.errors import ApiUnavailable, BrokerError, NotFound, RbacDenied, Unauthenticated
from broker.kube.config import KubeApi
from broker.kube.retry import RETRYABLE_STATUS, RetryPolicy

Obj = dict[str, Any]

# Which chart object grants what (charts/k8s-gpu-mcp/templates/{clusterrole,role}.yaml).
CLUSTER_READ_ROLE = (
    "the chart's ClusterRole <release>-k8s-gpu-mcp-<namespace>-cluster-read "
    "(get/list nodes, pods, events), bound through the chart value rbac.subjects"
)
EXEC_ROLE = (
    "the chart's Role <release>-k8s-gpu-mcp-exec in the agent namespace "
    "(create/get pods/exec), bound through the chart value rbac.subjects"
)


@dataclass(frozen=True)
class Missing:
    """A piece of the answer that could not be read, and what would give it."""

    what: str  # "events of pod ml-research/x"
    reason: str  # the error, in words
    permission: str | None = None  # "list events in namespace ml-research"
    check: str | None = None  # "kubectl auth can-i list events -n ml-research"
    grant: str | None = None  # the chart object that grants it

    def as_dict(self) -> Obj:
        return {
            "what": self.what,
            "reason": self.reason,
            "permission": self.permission,
            "check": self.check,
            "grant": self.grant,
        }


def missing_from(error: BrokerError, what: str) -> Missing:
    """Describe a failed read: for an RBAC denial, the permission and how to check it."""
    if isinstance(error, RbacDenied):
        where = f"in namespace {error.namespace}" if error.namespace else "cluster-wide"
        resource = error.resource
        if resource == "pods/exec":
            check = f"kubectl auth can-i create pods --subresource=exec -n {error.namespace}"
            grant = EXEC_ROLE
        else:
            check = error.check
            grant = CLUSTER_READ_ROLE
        return Missing(
            what=what,
            reason=str(error),
            permission=f"{error.verb} {resource} {where}",
            check=check,
            grant=grant,
        )
    return Missing(what=what, reason=str(error))


class ClusterReader:
    """Nodes, pods and events through one API client (read-only: get and list)."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    async def node(self, name: str) -> Obj:
        """One node. Raises NotFound, RbacDenied, ApiUnavailable."""
        return await self._one("read_node", (name,), "nodes", None, name)

    async def pod(self, namespace: str, name: str) -> Obj:
        """One pod. Raises NotFound, RbacDenied, ApiUnavailable."""
        return await self._one("read_namespaced_pod", (name, namespace), "pods", namespace, name)

    async def nodes(self, *, label_selector: str | None = None) -> list[Obj]:
        """Every node (optionally matching a label selector)."""
        return await self._list("list_node", (), "nodes", None, label_selector=label_selector)

    async def pods(
        self,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]:
        """Pods in one namespace, or in every namespace when ``namespace`` is None."""
        args: tuple[str, ...] = () if namespace is None else (namespace,)
        method = "list_pod_for_all_namespaces" if namespace is None else "list_namespaced_pod"
        return await self._list(
            method,
            args,
            "pods",
            namespace,
            field_selector=field_selector,
            label_selector=label_selector,
        )

    async def events(
        self, namespace: str | None = None, *, field_selector: str | None = None
    ) -> list[Obj]:
        """Events in one namespace (or all), oldest first by last occurrence."""
        args: tuple[str, ...] = () if namespace is None else (namespace,)
        method = "list_event_for_all_namespaces" if namespace is None else "list_namespaced_event"
        items = await self._list(method, args, "events", namespace, field_selector=field_selector)
        items.sort(key=event_time_key)
        return items

    async def pod_events(self, pod: Mapping[str, Any]) -> list[Obj]:
        """The events about one pod (matched by uid, so a recreated namesake is not mixed in)."""
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        selector = f"involvedObject.kind=Pod,involvedObject.name={meta.get('name')}"
        items = await self.events(namespace, field_selector=selector)
        uid = meta.get("uid")
        return [e for e in items if not uid or (e.get("involvedObject") or {}).get("uid") == uid]

    async def node_events(self, node: str) -> list[Obj]:
        """The events about one node (the kubelet's, node controllers', health monitors')."""
        selector = f"involvedObject.kind=Node,involvedObject.name={node}"
        return await self.events(None, field_selector=selector)

    # -- plumbing -----------------------------------------------------------------
    async def _one(
        self, method: str, args: tuple[str, ...], resource: str, namespace: str | None, name: str
    ) -> Obj:
        status, body = await read_core(self._api, method, *args)
        if status == 404:
            where = f" in namespace {namespace}" if namespace else ""
            listing = f"kubectl get {resource}" + (f" -n {namespace}" if namespace else "")
            raise NotFound(f"{resource[:-1]} {name!r} not found{where}; list them with `{listing}`")
        doc = raise_for_status(self._api, status, body, "get", resource, namespace)
        return doc

    async def _list(
        self,
        method: str,
        args: tuple[str, ...],
        resource: str,
        namespace: str | None,
        **query: str | None,
    ) -> list[Obj]:
        given: dict[str, Any] = {k: v for k, v in query.items() if v}
        status, body = await read_core(self._api, method, *args, **given)
        doc = raise_for_status(self._api, status, body, "list", resource, namespace)
        items = doc.get("items")
        return [i for i in items or [] if isinstance(i, dict)]


def event_time_key(event: Mapping[str, Any]) -> str:
    """Sort key: when the event last happened (RFC 3339 strings sort by time)."""
    return str(
        event.get("lastTimestamp")
        or (event.get("series") or {}).get("lastObservedTime")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def raise_for_status(
    api: KubeApi, status: int, body: bytes, verb: str, resource: str, namespace: str | None
) -> Obj:
    """The parsed JSON object of a 200 answer; otherwise the BrokerError that explains the
    status (403 names the permission, 401 the credentials)."""
    if status in (200, 201):  # 201: a created review (SelfSubjectAccessReview)
        try:
            doc = json.loads(body)
        except ValueError:
            raise ApiUnavailable(
                f"the API server sent a {resource} answer that is not JSON; "
                "check the kubeconfig points at a Kubernetes API server"
            ) from None
        if not isinstance(doc, dict):
            raise ApiUnavailable(f"the API server sent a malformed {resource} answer")
        return doc
    if status == 403:
        raise RbacDenied(verb, resource, namespace, status_message(body))
    if status == 401:
        raise Unauthenticated(api.server)
    raise ApiUnavailable(
        f"the API server answered {status} to {verb} {resource}: {status_message(body)}; "
        "check the cluster's health (kubectl get --raw /readyz)"
    )


# Calls that change nothing: reads, the version, and asking RBAC what the caller may do.
_READ_ONLY_CALLS = ("read_", "list_", "get_code", "create_self_subject_access_review")


async def read_core(
    api: KubeApi,
    method: str,
    *args: Any,
    retry: RetryPolicy | None = None,
    api_class: str = "CoreV1Api",
    **query: Any,
) -> tuple[int, bytes]:
    """One read through ``<api_class>.<method>`` (``read_node``, ``list_namespaced_event``,
    ``AppsV1Api.list_namespaced_daemon_set``...), as (HTTP status, raw JSON body): retried
    on 429/5xx/connection errors, one credential refresh on 401. Raises ApiUnavailable when
    the API server cannot be reached. All within ``read_deadline`` (the CLI's --timeout)."""
    from kubernetes_asyncio import client

    if not method.startswith(_READ_ONLY_CALLS):
        raise ValueError(f"read_core only reads: {method!r} is not a read_*/list_* call")
    call = getattr(getattr(client, api_class)(api.rest), method)
    with within_deadline(api):
        return await _read_retrying(api, call, args, retry, query)


@contextmanager
def within_deadline(api: KubeApi) -> Iterator[None]:
    """Bound the block by ``api.config.read_deadline`` (the CLI's --timeout), raising
    ApiUnavailable when it passes: an API server that accepts and never answers must not
    hold a call for request_timeout x retries."""
    limit = api.config.read_deadline
    if limit is None:
        yield
        return
    with anyio.move_on_after(limit) as scope:
        yield
    if scope.cancelled_caught:
        raise ApiUnavailable(
            f"no answer from the API server at {api.server} within {limit:g} s (--timeout); "
            "check that it is up (kubectl get --raw /readyz) and reachable (network/VPN), "
            "or allow more time with --timeout"
        )


async def _read_retrying(
    api: KubeApi, call: Any, args: tuple[str, ...], retry: RetryPolicy | None, query: Any
) -> tuple[int, bytes]:
    import aiohttp

    policy = retry or RetryPolicy()
    refreshed = False
    attempt = 0
    last_error = ""
    while True:
        attempt += 1
        status, headers, body = 0, {}, b""
        try:
            with anyio.fail_after(api.config.request_timeout):
                resp: Any = await call(*args, _preload_content=False, **query)
                async with resp:
                    status = resp.status
                    headers = dict(resp.headers.items())
                    body = await resp.read()
                # The generated client keeps its last response (and so the body: 17 MiB
                # for 5,000 nodes) in last_response until the next call; drop it.
                api.rest.last_response = None  # type: ignore[attr-defined]  # untyped attr
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if status == 401 and not refreshed and await api.refresh_credentials(force=True):
            refreshed = True
            continue
        if (status in RETRYABLE_STATUS or status == 0) and attempt < policy.attempts:
            await anyio.sleep(policy.delay(attempt, headers))
            continue
        if status == 0:
            raise ApiUnavailable(
                f"cannot reach the API server at {api.server} ({last_error}); "
                "check the kubeconfig's server address and your network/VPN"
            )
        return status, body


def status_message(body: bytes) -> str:
    """The message of an API server error body (a metav1.Status), or its first bytes."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200]
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return body.decode("utf-8", "replace")[:200]
