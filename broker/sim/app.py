"""The simulated API server: an aiohttp application over a SimCluster.

Nodes, pods, core events and namespaces have their own handlers; every other kind in
``kinds.KINDS`` is listed, got and watched through the generic ones. Request path:
authentication (401) -> injected faults (latency, 429, 500) -> RBAC (403) -> handler,
the order a real API server applies its filters in. Errors are
metav1.Status bodies with the codes and reasons a real server sends.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import discovery, kubelet, protobuf
from .agent_runner import (
    AgentRun,
    InProcessRun,
    SubprocessRun,
    write_host_proc,
    write_scenario,
)
from .auth import (
    Attributes,
    Identity,
    Impersonation,
    ImpersonationDenied,
    ImpersonationInvalid,
)
from .cluster import SimCluster
from .exec import serve_exec
from .kinds import GROUP_VERSIONS, GROUPS, Kind, lookup
from .selectors import SelectorError, fields_for, parse_field_selector, parse_label_selector
from .status import (
    StatusError,
    bad_request,
    forbidden,
    internal_error,
    json_response,
    method_not_allowed,
    not_acceptable,
    not_found,
    path_not_found,
    status,
    too_many_requests,
    unauthorized,
)
from .tables import to_table
from .tls import peer_identity

Obj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WATCH_MAX_S = 1800.0
_PUBLIC = frozenset({"/healthz", "/livez", "/readyz"})
_SPECIFIC = frozenset({"nodes", "pods", "events", "namespaces"})  # core kinds with own handlers


@dataclass
class SimContext:
    """What handlers share: the cluster, where agent scenarios go, running agents."""

    cluster: SimCluster
    workdir: Path
    in_process: bool = False
    server_address: str = "127.0.0.1:6443"
    runs: set[AgentRun] = field(default_factory=set)
    requests: collections.deque[tuple[str, str, int]] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )  # (method, path?query, status): what clients asked, for tests and debugging
    audit: collections.deque[AuditEntry] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )  # who asked what (and as whom), recorded when the request is authenticated


@dataclass
class AuditEntry:
    """One request as the audit log would name it: the user it ran as and, when that is
    an impersonation, who impersonated. ``status`` is 0 while it runs (an exec stream)."""

    user: str
    groups: tuple[str, ...]
    impersonated_by: str | None
    method: str
    path: str
    status: int = 0


CTX: web.AppKey[SimContext] = web.AppKey("sim", SimContext)
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)


def _ctx(request: web.Request) -> SimContext:
    return request.app[CTX]


def _identity(request: web.Request) -> Identity:
    return request[IDENTITY]


# Authentication --------------------------------------------------------------------------


def _authenticate(request: web.Request, ctx: SimContext) -> Identity | None:
    auth = ctx.cluster.auth
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return auth.by_token(token.strip())
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        prefix = "base64url.bearer.authorization.k8s.io."
        if proto.startswith(prefix):
            raw = proto[len(prefix) :]
            try:
                token = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            except ValueError:
                return None
            return auth.by_token(token)
    transport = request.transport
    if transport is not None:
        found = peer_identity(transport.get_extra_info("peercert"))
        if found is not None:
            return auth.by_certificate(*found)
    return None


def _impersonation(request: web.Request) -> Impersonation:
    headers = request.headers
    extra: dict[str, list[str]] = {}
    for key, value in headers.items():
        if key.lower().startswith("impersonate-extra-"):
            extra.setdefault(key[len("impersonate-extra-") :].lower(), []).append(value)
    return Impersonation(
        user=headers.get("Impersonate-User"),
        groups=tuple(headers.getall("Impersonate-Group", ())),
        uid=headers.get("Impersonate-Uid"),
        extra=tuple((k, tuple(v)) for k, v in extra.items()),
    )


def _act_as(request: web.Request, ctx: SimContext, who: Identity) -> Identity:
    """*who*, or whom their Impersonate-* headers name once RBAC allows it (403/500)."""
    try:
        return ctx.cluster.auth.impersonate(who, _impersonation(request))
    except ImpersonationDenied as exc:
        a = exc.attrs
        raise forbidden(str(exc), a.resource, a.name or None, a.api_group) from None
    except ImpersonationInvalid as exc:
        raise internal_error(str(exc)) from None


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = _ctx(request)
    response: web.StreamResponse
    entry: AuditEntry | None = None
    try:
        if request.path not in _PUBLIC:
            who = _authenticate(request, ctx)
            if who is None:
                raise unauthorized()
            acting = _act_as(request, ctx, who)
            request[IDENTITY] = acting
            by = who.name if acting is not who else None
            entry = AuditEntry(acting.name, acting.groups, by, request.method, request.path_qs)
            ctx.audit.append(entry)
        response = await handler(request)
    except StatusError as exc:
        response = exc.response()
    except web.HTTPMethodNotAllowed:
        response = method_not_allowed(request.path.rstrip("/").rsplit("/", 1)[-1]).response()
    except web.HTTPNotFound:
        response = path_not_found().response()
    if entry is not None:
        entry.status = response.status
    ctx.requests.append((request.method, request.path_qs, response.status))
    return response


# Shared request logic ---------------------------------------------------------------------


async def gate(request: web.Request, attrs: Attributes, node: str | None) -> None:
    """Injected faults for *node* (or cluster-wide), then the RBAC decision."""
    ctx = _ctx(request)
    cluster = ctx.cluster
    faults = cluster.faults(node) if node in cluster.specs else cluster.cluster_faults
    if faults.api_latency_s > 0:
        await asyncio.sleep(faults.api_latency_s)
    if faults.take("api_429"):
        raise too_many_requests(faults.retry_after_s)
    if faults.take("api_500"):
        raise internal_error("sim: injected API server failure (faults.api_500)")
    who = _identity(request)
    allowed, _ = cluster.auth.decide(who, attrs)
    if not allowed:
        raise forbidden(
            attrs.forbidden_message(who.name), attrs.resource, attrs.name or None, attrs.api_group
        )


def _accept(request: web.Request) -> tuple[bool, bool]:
    """(wants a Table, accepts JSON) from the Accept header."""
    accept = request.headers.get("Accept", "")
    if not accept:
        return False, True
    table = False
    json_ok = False
    for part in accept.split(","):
        media = part.strip()
        if "as=Table" in media and "json" in media:
            table = True
        if media.startswith(("application/json", "*/*", "application/*")) or media == "":
            json_ok = True
    return table, json_ok or table


def _strip(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _selected_node(resource: str, field_selector: str | None) -> str | None:
    """A node a list is pinned to (``spec.nodeName=X`` / ``metadata.name=X``): its
    faults apply, as the request is about that node."""
    if not field_selector:
        return None
    key = "spec.nodeName" if resource == "pods" else "metadata.name"
    for part in field_selector.split(","):
        name, eq, value = part.partition("=")
        if eq and name.rstrip("=") == key and not name.endswith("!"):
            return value.lstrip("=")
    return None


def _page(request: web.Request, items: list[Obj]) -> tuple[list[Obj], Obj]:
    meta: Obj = {}
    offset = 0
    token = request.query.get("continue")
    if token:
        try:
            offset = int(json.loads(base64.b64decode(token))["offset"])
        except (ValueError, KeyError, TypeError):
            raise StatusError(
                status(410, "Expired", "The provided continue parameter is too old to display a "
                       "consistent list result. You can start a new list without the continue "
                       "parameter.")
            ) from None  # fmt: skip
    limit = request.query.get("limit")
    try:
        n = int(limit) if limit else 0
    except ValueError:
        raise bad_request(f'strconv.ParseInt: parsing "{limit}": invalid syntax') from None
    items = items[offset:]
    if n > 0 and len(items) > n:
        meta["continue"] = base64.b64encode(json.dumps({"offset": offset + n}).encode()).decode()
        meta["remainingItemCount"] = len(items) - n
        items = items[:n]
    return items, meta


def _kind(resource: str | Kind) -> Kind:
    if isinstance(resource, Kind):
        return resource
    kind = lookup("", "v1", resource)
    assert kind is not None, resource
    return kind


def _printer(kind: Kind) -> str:
    return kind.plural if not kind.group or kind.plural != "events" else "events.events.k8s.io"


async def _list(
    request: web.Request, resource: str | Kind, objects: list[Obj], namespace: str = ""
) -> web.StreamResponse:
    kind = _kind(resource)
    q = request.query
    watching = q.get("watch", "").lower() in ("1", "true")
    attrs = Attributes(
        "watch" if watching else "list", kind.plural, api_group=kind.group, namespace=namespace
    )
    await gate(request, attrs, _selected_node(kind.plural, q.get("fieldSelector")))
    fields, getter = fields_for(kind.plural, kind.group)
    try:
        labels = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"), fields)
    except SelectorError as exc:
        raise bad_request(str(exc)) from None
    items = [
        o
        for o in objects
        if labels.matches(o["metadata"].get("labels")) and fsel.matches(getter(o))
    ]
    table, json_ok = _accept(request)
    if not json_ok:
        raise not_acceptable("only the following media types are accepted: application/json")
    rv = _ctx(request).cluster.rv()
    if watching:
        return await _watch(request, _printer(kind), items, table, rv)
    items, page = _page(request, items)
    include = q.get("includeObject", "Metadata")
    if table:
        body = to_table(_printer(kind), items, time.time(), rv, include)
        body["metadata"].update(page)
        return json_response(body)
    return json_response(
        {
            "kind": kind.list_kind,
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": rv, **page},
            "items": [_strip(o) for o in items],
        }
    )


async def _watch(
    request: web.Request, resource: str, items: list[Obj], table: bool, rv: str
) -> web.StreamResponse:
    """ADDED for what exists now (unless the client resumes from a resourceVersion),
    then hold the stream open until timeoutSeconds or the client leaves."""
    try:
        timeout = min(float(request.query.get("timeoutSeconds") or _WATCH_MAX_S), _WATCH_MAX_S)
    except ValueError:
        raise bad_request("timeoutSeconds: must be an integer") from None
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    if request.query.get("resourceVersion", "0") in ("", "0"):
        for obj in items:
            body = to_table(resource, [obj], time.time(), rv) if table else obj
            line = json.dumps({"type": "ADDED", "object": body}, separators=(",", ":"))
            await resp.write(line.encode() + b"\n")
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionError):
        # aiohttp does not cancel a handler whose client left: notice it, so an abandoned
        # watch (kubectl -w ended) does not hold a task for up to 30 minutes.
        while (left := deadline - time.monotonic()) > 0:
            transport = request.transport
            if transport is None or transport.is_closing():
                return resp
            await asyncio.sleep(min(1.0, left))
        await resp.write_eof()
    return resp


async def _get(
    request: web.Request,
    resource: str | Kind,
    obj: Obj | None,
    name: str,
    namespace: str = "",
    node: str | None = None,
) -> web.StreamResponse:
    kind = _kind(resource)
    if obj is not None and kind.plural == "pods" and not kind.group:
        node = obj["spec"].get("nodeName")
    elif kind.plural == "nodes":
        node = name
    attrs = Attributes("get", kind.plural, api_group=kind.group, namespace=namespace, name=name)
    await gate(request, attrs, node)
    if obj is None:
        raise not_found(kind.plural, name, kind.group)
    table, json_ok = _accept(request)
    if not json_ok:
        raise not_acceptable("only the following media types are accepted: application/json")
    if table:
        rv = obj["metadata"].get("resourceVersion", "")
        include = request.query.get("includeObject", "Metadata")
        return json_response(to_table(_printer(kind), [obj], time.time(), rv, include))
    return json_response(obj)


# Handlers ---------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def version(request: web.Request) -> web.StreamResponse:
    return json_response(discovery.version_info(_ctx(request).cluster.version))


async def api(request: web.Request) -> web.StreamResponse:
    return json_response(discovery.api_versions(_ctx(request).server_address))


async def api_v1(request: web.Request) -> web.StreamResponse:
    return json_response(discovery.resource_list(""))


async def apis(request: web.Request) -> web.StreamResponse:
    return json_response(discovery.api_groups())


async def group(request: web.Request) -> web.StreamResponse:
    name = request.match_info["group"]
    if name not in GROUPS:
        raise path_not_found()
    return json_response(discovery.group_document(name))


async def group_version(request: web.Request) -> web.StreamResponse:
    name, version = request.match_info["group"], request.match_info["version"]
    if name not in GROUPS or version != GROUP_VERSIONS[name]:
        raise path_not_found()
    return json_response(discovery.resource_list(name))


def _generic_kind(request: web.Request) -> Kind:
    info = request.match_info
    kind = lookup(info.get("group", ""), info.get("version", "v1"), info["plural"])
    if kind is None or "create" in kind.verbs or (not kind.group and kind.plural in _SPECIFIC):
        raise path_not_found()
    if ("ns" in info) != kind.namespaced and not ("ns" not in info and "name" not in info):
        raise path_not_found()  # a namespaced path to a cluster-scoped kind, or the reverse
    return kind


def _warn(kind: Kind, response: web.StreamResponse) -> web.StreamResponse:
    if kind.deprecated and not response.prepared:
        response.headers["Warning"] = f'299 - "{kind.deprecated}"'
    return response


async def list_generic(request: web.Request) -> web.StreamResponse:
    """List (or watch) any kind in kinds.KINDS served from SimCluster.objects."""
    kind = _generic_kind(request)
    ns = request.match_info.get("ns", "")
    objects = _ctx(request).cluster.objects(kind.plural, kind.group, ns or None)
    return _warn(kind, await _list(request, kind, objects, ns))


async def get_generic(request: web.Request) -> web.StreamResponse:
    kind = _generic_kind(request)
    ns, name = request.match_info.get("ns", ""), request.match_info["name"]
    cluster = _ctx(request).cluster
    obj = cluster.object(kind.plural, kind.group, ns, name)
    node = name if kind.plural == "leases" and name in cluster.specs else None
    return _warn(kind, await _get(request, kind, obj, name, ns, node))


async def list_nodes(request: web.Request) -> web.StreamResponse:
    return await _list(request, "nodes", _ctx(request).cluster.nodes())


async def get_node(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    return await _get(request, "nodes", _ctx(request).cluster.node(name), name)


async def node_proxy(request: web.Request) -> web.StreamResponse:
    """``nodes/proxy``: the kubelet's answers (authorised as ``get nodes/proxy``)."""
    cluster = _ctx(request).cluster
    name = request.match_info["name"]
    known = name if cluster.node(name) is not None else None
    await gate(request, Attributes("get", "nodes", "proxy", name=name), known)
    return kubelet.answer(cluster, name, request.match_info["path"], request.query)


async def list_namespaces(request: web.Request) -> web.StreamResponse:
    return await _list(request, "namespaces", _ctx(request).cluster.namespaces())


async def get_namespace(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    cluster = _ctx(request).cluster
    return await _get(request, "namespaces", cluster.namespace_object(name), name)


async def list_pods(request: web.Request) -> web.StreamResponse:
    ns = request.match_info.get("ns", "")
    return await _list(request, "pods", _ctx(request).cluster.pods(ns or None), ns)


async def get_pod(request: web.Request) -> web.StreamResponse:
    ns, name = request.match_info["ns"], request.match_info["name"]
    return await _get(request, "pods", _ctx(request).cluster.pod(ns, name), name, ns)


async def list_events(request: web.Request) -> web.StreamResponse:
    ns = request.match_info.get("ns", "")
    return await _list(request, "events", _ctx(request).cluster.events(ns or None), ns)


async def get_event(request: web.Request) -> web.StreamResponse:
    ns, name = request.match_info["ns"], request.match_info["name"]
    found = next(
        (e for e in _ctx(request).cluster.events(ns) if e["metadata"]["name"] == name), None
    )
    return await _get(request, "events", found, name, ns)


async def pod_log(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    ns, name = request.match_info["ns"], request.match_info["name"]
    pod = ctx.cluster.pod(ns, name)
    node = pod["spec"].get("nodeName") if pod else None
    await gate(request, Attributes("get", "pods", "log", namespace=ns, name=name), node)
    if pod is None:
        raise not_found("pods", name)
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = request.query.get("container") or containers[0]
    if container not in containers:
        raise bad_request(f"container {container} is not valid for pod {name}")
    cs = next(
        (s for s in pod["status"].get("containerStatuses", []) if s["name"] == container), None
    )
    previous = request.query.get("previous", "").lower() in ("1", "true")
    if previous and not (cs and cs.get("lastState", {}).get("terminated")):
        raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
    if not previous and (cs is None or "waiting" in cs.get("state", {})):
        reason = (cs or {}).get("state", {}).get("waiting", {}).get("reason", "PodInitializing")
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    text = ctx.cluster.logs(ns, name, previous)
    tail = request.query.get("tailLines")
    if tail and tail.isdigit():
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-int(tail) :]) if int(tail) else ""
    return web.Response(text=text, content_type="text/plain")


async def pod_exec(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    ns, name = request.match_info["ns"], request.match_info["name"]
    cluster = ctx.cluster
    pod = cluster.pod(ns, name)
    node = pod["spec"].get("nodeName") if pod else None
    await gate(request, Attributes("create", "pods", "exec", namespace=ns, name=name), node)
    if pod is None:
        raise not_found("pods", name)
    container = request.query.get("container") or pod["spec"]["containers"][0]["name"]
    statuses: list[Obj] = pod["status"].get("containerStatuses", [])
    cs: Obj = next((s for s in statuses if s["name"] == container), {})
    runnable = "running" in cs.get("state", {})
    is_agent = node is not None and cluster.agent_pod_name(node) == name
    started: list[AgentRun] = []

    async def make_run(args: list[str]) -> AgentRun:
        assert node is not None
        path = write_scenario(ctx.workdir, node, cluster.agent_scenario(node))
        env = {}
        if cluster.scenario.host_proc:  # the chart's /host/proc mount is this directory
            proc = write_host_proc(ctx.workdir, node, cluster.host_proc(node))
            env["GPU_AGENT_HOST_PROC"] = str(proc)
        # In-process serves the MCP loop only; any other mode (--version, a one-shot
        # call) is the real command line in a subprocess.
        run: AgentRun = (
            InProcessRun(args, path, env)
            if ctx.in_process and not args
            else SubprocessRun(args, path, ctx.workdir, node, env)
        )
        started.append(run)
        ctx.runs.add(run)
        return run

    faults = cluster.faults(node) if node in cluster.specs else cluster.cluster_faults
    try:
        # Only agent pods have the agent; what else runs is decided in commands.py.
        return await serve_exec(request, pod, faults, make_run, runnable, agent_image=is_agent)
    finally:
        for run in started:
            ctx.runs.discard(run)


def _review_attrs(spec: Obj) -> Attributes | None:
    ra = spec.get("resourceAttributes")
    if not isinstance(ra, dict):
        return None
    return Attributes(
        verb=str(ra.get("verb", "")),
        resource=str(ra.get("resource", "")),
        subresource=str(ra.get("subresource", "")),
        api_group=str(ra.get("group", "")),
        namespace=str(ra.get("namespace", "")),
        name=str(ra.get("name", "")),
    )


async def _review_body(request: web.Request, kind: str) -> Obj:
    """A review request's body as a dict, from JSON or from kubectl's protobuf."""
    raw = await request.read()
    if request.content_type == "application/vnd.kubernetes.protobuf":
        try:
            _, sent_kind, obj = protobuf.unwrap(raw)
            if sent_kind and sent_kind != kind:
                raise protobuf.ProtobufError(f"expected a {kind}, got a {sent_kind}")
            return {"spec": protobuf.review_spec(kind, obj)}
        except protobuf.ProtobufError as exc:
            raise bad_request(f"the body of the request was in an unknown format: {exc}") from None
    if request.content_type not in ("application/json", ""):
        raise StatusError(
            status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json, application/vnd.kubernetes.protobuf",
            )
        )
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body of the request was in an unknown format: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body of the request was in an unknown format")
    return body


async def self_subject_access_review(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    await gate(
        request, Attributes("create", "selfsubjectaccessreviews", api_group="authorization.k8s.io"),
        None,
    )  # fmt: skip
    body = await _review_body(request, "SelfSubjectAccessReview")
    spec = body.get("spec") or {}
    attrs = _review_attrs(spec)
    nra = spec.get("nonResourceAttributes")
    if (attrs is None) == (not isinstance(nra, dict)):
        raise StatusError(
            status(
                422,
                "Invalid",
                'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: '
                'spec.resourceAttributes: Invalid value: "null": exactly one of '
                "nonResourceAttributes or resourceAttributes must be specified",
                {"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview"},
            )
        )
    if attrs is not None:
        allowed, reason = ctx.cluster.auth.decide(_identity(request), attrs)
    else:  # every authenticated user may read discovery and health paths
        allowed = str(nra.get("verb", "")) == "get"  # type: ignore[union-attr]
        reason = 'RBAC: allowed by ClusterRoleBinding "system:discovery"' if allowed else ""
    result: Obj = {"allowed": allowed}
    if reason:
        result["reason"] = reason
    return json_response(
        {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": result,
        },
        status=201,
    )


async def self_subject_rules_review(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    await gate(
        request, Attributes("create", "selfsubjectrulesreviews", api_group="authorization.k8s.io"),
        None,
    )  # fmt: skip
    body = await _review_body(request, "SelfSubjectRulesReview")
    spec = body.get("spec") or {}
    namespace = str(spec.get("namespace", ""))
    rules = [
        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
    ]  # fmt: skip
    for rule in ctx.cluster.auth.rules_for(_identity(request), namespace):
        entry: Obj = {
            "verbs": list(rule.verbs),
            "apiGroups": list(rule.api_groups),
            "resources": list(rule.resources),
        }
        if rule.resource_names:
            entry["resourceNames"] = list(rule.resource_names)
        rules.append(entry)
    paths = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
             "/openapi/*", "/readyz", "/version", "/version/"]  # fmt: skip
    return json_response(
        {
            "kind": "SelfSubjectRulesReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": {
                "resourceRules": rules,
                "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": paths}],
                "incomplete": False,
            },
        },
        status=201,
    )


async def _review_json(request: web.Request, kind: str) -> Obj:
    """A JSON review body (TokenReview, SubjectAccessReview) or the API server's 415/400."""
    if request.content_type not in ("application/json", ""):
        raise StatusError(
            status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json, application/yaml, "
                "application/vnd.kubernetes.protobuf",
            )
        )
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body of the request was in an unknown format: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("spec") or {}, dict):
        raise bad_request(f"the body of the request was not a {kind}")
    return body


def _invalid(kind: str, group: str, field_path: str, value: str, detail: str) -> StatusError:
    message = f'{kind}.{group} "" is invalid: {field_path}: Invalid value: "{value}": {detail}'
    return StatusError(status(422, "Invalid", message, {"group": group, "kind": kind}))


_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"]


async def token_review(request: web.Request) -> web.StreamResponse:
    """``TokenReview``: who a bearer token belongs to (authenticated or not; never 401)."""
    group = "authentication.k8s.io"
    await gate(request, Attributes("create", "tokenreviews", api_group=group), None)
    body = await _review_json(request, "TokenReview")
    spec = body.get("spec") or {}
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise _invalid("TokenReview", group, "spec.token", "", "token must be specified")
    audiences = [str(a) for a in spec.get("audiences") or []] or list(_AUDIENCES)
    who = _ctx(request).cluster.auth.by_token(token)
    result: Obj
    if who is None or not set(audiences) & set(_AUDIENCES):
        # What a real API server answers for an unknown token: 201, not authenticated.
        result = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
    else:
        user: Obj = {"username": who.name, "uid": f"sim-uid-{who.name}"}
        user["groups"] = list(who.groups)
        result = {"authenticated": True, "user": user, "audiences": audiences}
    return json_response(
        {
            "kind": "TokenReview",
            "apiVersion": f"{group}/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": result,
        },
        status=201,
    )


async def subject_access_review(request: web.Request) -> web.StreamResponse:
    """``SubjectAccessReview``: may this user (and groups) do that?"""
    group = "authorization.k8s.io"
    ctx = _ctx(request)
    await gate(request, Attributes("create", "subjectaccessreviews", api_group=group), None)
    body = await _review_json(request, "SubjectAccessReview")
    spec = body.get("spec") or {}
    attrs = _review_attrs(spec)
    nra = spec.get("nonResourceAttributes")
    if (attrs is None) == (not isinstance(nra, dict)):
        raise _invalid("SubjectAccessReview", group, "spec.resourceAttributes", "null",
                       "exactly one of nonResourceAttributes or resourceAttributes must be "
                       "specified")  # fmt: skip
    user = str(spec.get("user") or "")
    groups = tuple(str(g) for g in spec.get("groups") or [])
    if not user and not groups:
        raise _invalid("SubjectAccessReview", group, "spec.user", "",
                       "at least one of user or group must be specified")  # fmt: skip
    if attrs is not None:
        allowed, reason = ctx.cluster.auth.decide(Identity(user, groups), attrs)
    else:
        allowed = str(nra.get("verb", "")) == "get" and (  # type: ignore[union-attr]
            "system:authenticated" in groups
        )
        reason = 'RBAC: allowed by ClusterRoleBinding "system:discovery"' if allowed else ""
    result: Obj = {"allowed": allowed}
    if reason:
        result["reason"] = reason
    return json_response(
        {
            "kind": "SubjectAccessReview",
            "apiVersion": f"{group}/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": result,
        },
        status=201,
    )


async def not_found_path(request: web.Request) -> web.StreamResponse:
    raise path_not_found()


def create_app(ctx: SimContext) -> web.Application:
    """The aiohttp application serving *ctx*'s cluster."""
    app = web.Application(middlewares=[api_middleware], client_max_size=1 << 20)
    app[CTX] = ctx
    r = app.router
    for path in _PUBLIC:
        r.add_get(path, healthz)
    r.add_get("/version", version)
    r.add_get("/version/", version)  # what kubernetes_asyncio (and client-go) request
    r.add_get("/api", api)
    r.add_get("/api/v1", api_v1)
    r.add_get("/apis", apis)
    r.add_get("/apis/{group}", group)
    r.add_get("/apis/{group}/{version}", group_version)
    # No OpenAPI documents: clients treat 404 as "not served" and carry on.
    r.add_get("/openapi/{tail:.*}", not_found_path)
    r.add_get("/api/v1/nodes", list_nodes)
    r.add_get("/api/v1/nodes/{name}", get_node)
    r.add_get("/api/v1/nodes/{name}/proxy/{path:.*}", node_proxy)
    r.add_get("/api/v1/namespaces", list_namespaces)
    r.add_get("/api/v1/namespaces/{name}", get_namespace)
    r.add_get("/api/v1/pods", list_pods)
    r.add_get("/api/v1/namespaces/{ns}/pods", list_pods)
    r.add_get("/api/v1/namespaces/{ns}/pods/{name}", get_pod)
    r.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", pod_log)
    r.add_route("GET", "/api/v1/namespaces/{ns}/pods/{name}/exec", pod_exec)
    r.add_route("POST", "/api/v1/namespaces/{ns}/pods/{name}/exec", pod_exec)
    r.add_get("/api/v1/events", list_events)
    r.add_get("/api/v1/namespaces/{ns}/events", list_events)
    r.add_get("/api/v1/namespaces/{ns}/events/{name}", get_event)
    # Every other kind in kinds.KINDS, core and grouped, through the generic handlers.
    for prefix in ("/api/{version:v1}", "/apis/{group}/{version}"):
        r.add_get(prefix + "/{plural}", list_generic)
        r.add_get(prefix + "/{plural}/{name}", get_generic)
        r.add_get(prefix + "/namespaces/{ns}/{plural}", list_generic)
        r.add_get(prefix + "/namespaces/{ns}/{plural}/{name}", get_generic)
    authz = "/apis/authorization.k8s.io/v1"
    r.add_post(f"{authz}/selfsubjectaccessreviews", self_subject_access_review)
    r.add_post(f"{authz}/selfsubjectrulesreviews", self_subject_rules_review)
    r.add_post(f"{authz}/subjectaccessreviews", subject_access_review)
    r.add_post("/apis/authentication.k8s.io/v1/tokenreviews", token_review)
    return app
