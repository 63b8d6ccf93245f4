"""The MCP server an IDE or LLM agent talks to (``broker serve``).

Cluster mode: ``list_gpu_nodes`` and every agent tool, fanned out across the GPU nodes
with targeting (``node``, ``nodes``, ``node_selector``) and an aggregated answer
(``broker.aggregate``), progress notifications while the fan-out runs, and the
cluster-side diagnosis tools and prompts when those modules are installed. Pinned mode
(``--node``): one node's agent tools, as the agent lists them, results passed through.

The agent's JSON Schemas go out exactly as the agent defines them, so tools are
registered with explicit schemas (:meth:`BrokerApp.add_schema_tool`) rather than
derived from Python signatures. Every tool is read-only; no tool takes a command.

Transports: stdio, or streamable HTTP at ``/mcp`` plus ``GET /healthz``. Off loopback a
bearer token is mandatory; Host/Origin are checked against DNS rebinding.
"""

from __future__ import annotations

import hmac
import importlib
import importlib.util
import ipaddress
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import __version__
from broker.aggregate import aggregate_output_schema
from broker.config import ClusterConfig
from broker.context import BrokerContext
from broker.errors import BrokerError, ConfigError, UnknownNode
from broker.operations import (
    AGENT_TOOLS,
    NODES_OUTPUT_SCHEMA,
    TARGETING_PROPERTIES,
    ToolInputError,
    list_nodes,
    nodes_answer,
    run_tool,
)
from broker.pool import NodeResult

__all__ = [
    "BrokerApp",
    "HttpSettings",
    "ServeOptions",
    "ToolInputError",
    "build_node_server",
    "build_server",
    "http_app",
    "serve",
]

logger = logging.getLogger(__name__)

Json = dict[str, Any]
SchemaHandler = Callable[[Json, Context[Any, Any]], Awaitable[Json | types.CallToolResult]]

READ_ONLY = {
    "readOnlyHint": True,
    "destructiveHint": False,
    "idempotentHint": True,
    "openWorldHint": False,
}

INSTRUCTIONS = (
    "Read-only diagnostics for the NVIDIA GPUs of a Kubernetes cluster. Start with "
    "get_gpu_health (no arguments = every GPU node): the answer has a summary (nodes per "
    "status, nodes that could not be reached and why), the unhealthy nodes worst first "
    "with their findings and recommended actions, and healthy nodes by name only. Then "
    "drill down with node=<name> for one node's full result, or narrow with nodes=[...] "
    "or node_selector (a Kubernetes label selector on node labels, e.g. "
    "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3). analyze_xid_errors explains driver "
    "faults, get_gpu_processes shows what holds each GPU, get_gpu_inventory the hardware "
    "and drivers, get_nvlink_topology interconnect errors; list_gpu_nodes lists the nodes."
)

_TARGETING_NOTE = (
    "\n\nCluster-wide: runs on every GPU node concurrently, or on those chosen with node, "
    "nodes or node_selector. Returns `summary` (nodes per status; `unreachable`: every node "
    "that could not answer, with the reason), `nodes` (nodes that are not healthy, worst "
    "first, with compact findings), `healthy` (names only) and `fleet` (a roll-up where "
    "useful). Give node=<name> for that node's complete result."
)
_PROGRESS_EVERY_S = 0.1  # throttle for large fan-outs; small ones report every node


class BrokerApp(MCPServer[Any]):
    """MCPServer plus tools registered with explicit JSON Schemas.

    ``add_schema_tool`` keeps a tool's ``inputSchema``/``outputSchema``/annotations
    byte-for-byte; arguments are validated against the input schema before the handler
    runs (a mismatch is an ``isError`` result naming the argument, and nothing is sent to
    any node). Tools added the usual way (``app.tool()``) work alongside.
    """

    def __init__(self, name: str = "k8s-gpu-mcp", instructions: str = INSTRUCTIONS) -> None:
        super().__init__(
            name=name,
            title="Kubernetes GPU diagnostics",
            instructions=instructions,
            version=__version__,
            log_level="WARNING",
        )
        self._schema_tools: dict[str, tuple[types.Tool, SchemaHandler, Any]] = {}

    def add_schema_tool(self, definition: Mapping[str, Any], handler: SchemaHandler) -> None:
        """Register a tool from its MCP definition (name, title, description, inputSchema,
        outputSchema, annotations). ``handler(arguments, ctx)`` returns the structured
        result (sent as structuredContent and as JSON text) or a full CallToolResult.
        Raise :class:`ToolInputError` (or any BrokerError) for a clear isError answer."""
        validators: Any = importlib.import_module("jsonschema.validators")
        tool = types.Tool.model_validate(dict(definition))
        if tool.name in self._schema_tools or self._tool_manager.get_tool(tool.name):
            raise ValueError(f"tool {tool.name!r} is already registered")
        schema = tool.input_schema
        validator_cls = validators.validator_for(schema)
        validator_cls.check_schema(schema)
        self._schema_tools[tool.name] = (tool, handler, validator_cls(schema))

    async def list_tools(self) -> list[types.Tool]:
        return [t for t, _, _ in self._schema_tools.values()] + await super().list_tools()

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        entry = self._schema_tools.get(name)
        return entry[0].input_schema if entry else super()._tool_input_schema(name)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> types.CallToolResult | types.InputRequiredResult:
        entry = self._schema_tools.get(name)
        if entry is None:
            return await super().call_tool(name, arguments, context)
        _tool, handler, validator = entry
        problem = _first_error(validator, arguments)
        if problem is not None:
            return error_result(f"invalid arguments for {name}: {problem}")
        if context is None:
            context = Context(mcp_server=self)
        try:
            out = await handler(arguments, context)
        except BrokerError as exc:
            logger.info("tool %s: %s", name, exc)
            return error_result(str(exc))
        except Exception as exc:  # a bug: say so, keep the server up, log the traceback
            logger.exception("tool %s failed", name)
            return error_result(
                f"{name} failed inside the broker ({type(exc).__name__}: {exc}); this is a "
                "bug: the broker's log (stderr) has the traceback"
            )
        if isinstance(out, types.CallToolResult):
            return out
        return json_result(out)


def _first_error(validator: Any, arguments: Mapping[str, Any]) -> str | None:
    exceptions: Any = importlib.import_module("jsonschema.exceptions")
    error = exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (argument {where})" if where else "")


def json_result(structured: Json) -> types.CallToolResult:
    """structuredContent plus the same JSON as text, for clients that read only text."""
    text = json.dumps(structured, separators=(",", ":"), ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def error_result(message: str, structured: Json | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        structured_content=structured,
        is_error=True,
    )


# -- cluster mode --------------------------------------------------------------------------
def fanned_definition(agent_tool: Mapping[str, Any]) -> Json:
    """The broker's definition of an agent tool: the agent's arguments plus targeting."""
    agent_input = agent_tool.get("inputSchema") or {}
    properties = {**(agent_input.get("properties") or {}), **TARGETING_PROPERTIES}
    annotations = {**(agent_tool.get("annotations") or {}), **READ_ONLY}
    title = agent_tool.get("title") or agent_tool["name"]
    annotations["title"] = f"{title} (cluster)"
    return {
        "name": agent_tool["name"],
        "title": annotations["title"],
        "description": str(agent_tool.get("description", "")) + _TARGETING_NOTE,
        "inputSchema": {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        },
        "outputSchema": aggregate_output_schema(agent_tool.get("outputSchema")),
        "annotations": annotations,
    }


LIST_NODES_DEFINITION: Json = {
    "name": "list_gpu_nodes",
    "title": "List GPU nodes",
    "description": (
        "List the cluster's GPU nodes: the ones whose diagnostics agent can be reached, "
        "grouped by GPU model and count, and the ones that cannot be diagnosed now (agent "
        "pod missing, pending, crash-looping, node NotReady) with the reason. Optional "
        "node_selector filters by node labels. Contacts no node."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {"node_selector": TARGETING_PROPERTIES["node_selector"]},
        "additionalProperties": False,
    },
    "outputSchema": NODES_OUTPUT_SCHEMA,
    "annotations": {"title": "List GPU nodes", **READ_ONLY},
}


def progress_reporter(
    mctx: Context[Any, Any],
) -> Callable[[int, int, NodeResult], Awaitable[None]]:
    """A fan-out progress callback sending ``notifications/progress`` (throttled)."""
    last = 0.0

    async def report(done: int, total: int, result: NodeResult) -> None:
        nonlocal last
        now = time.monotonic()
        if total > 100 and done < total and now - last < _PROGRESS_EVERY_S:
            return
        last = now
        what = "answered" if result.ok else f"failed ({result.error_kind})"
        await mctx.report_progress(done, total, f"{done}/{total} nodes; {result.node} {what}")

    return report


def build_server(ctx: BrokerContext) -> BrokerApp:
    """The cluster-wide server: list_gpu_nodes, every agent tool fanned out, plus the
    cluster-diagnosis tools and prompts where those modules exist."""
    app = BrokerApp()

    async def list_gpu_nodes(arguments: Json, mctx: Context[Any, Any]) -> Json:
        selector = arguments.get("node_selector")
        targets = await list_nodes(ctx, selector)
        targeted = f"node_selector {selector!r}" if selector else "every GPU node"
        return nodes_answer(targets, targeted=targeted, warnings=ctx.pool.warnings)

    app.add_schema_tool(LIST_NODES_DEFINITION, list_gpu_nodes)
    for definition in AGENT_TOOLS.values():
        app.add_schema_tool(fanned_definition(definition), _fanned_handler(ctx, definition["name"]))
    register_extensions(app, ctx)
    return app


def _fanned_handler(ctx: BrokerContext, tool: str) -> SchemaHandler:
    async def handler(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await run_tool(ctx, tool, arguments, progress_reporter(mctx))

    return handler


def register_extensions(app: BrokerApp, ctx: BrokerContext) -> None:
    """Hook for the cluster-diagnosis modules (separate issue): call their registration
    functions when the modules exist. A module that exists but fails to import is a bug
    and propagates."""
    if importlib.util.find_spec("broker.cluster_tools") is not None:
        cluster_tools: Any = importlib.import_module("broker.cluster_tools")
        cluster_tools.register_cluster_tools(app, ctx)
    if importlib.util.find_spec("broker.prompts") is not None:
        prompts: Any = importlib.import_module("broker.prompts")
        prompts.register_prompts(app)


# -- pinned mode (--node) ------------------------------------------------------------------
async def build_node_server(ctx: BrokerContext, node: str) -> BrokerApp:
    """One node's agent tools exactly as its agent lists them (falling back to the
    catalog this broker was built with when the agent cannot be reached now; each call
    then reports the node's error). Raises UnknownNode."""
    try:
        tools = await ctx.pool.list_tools(node)
    except UnknownNode:
        raise
    except BrokerError as exc:
        logger.warning("node %s: %s; serving the built-in tool catalog", node, exc)
        tools = list(AGENT_TOOLS.values())
    app = BrokerApp(
        name=f"k8s-gpu-mcp-{node}",
        instructions=f"Read-only diagnostics for the NVIDIA GPUs of Kubernetes node {node}. "
        "Start with get_gpu_health.",
    )
    for definition in tools:
        annotations = {**(definition.get("annotations") or {}), **READ_ONLY}
        app.add_schema_tool(
            {**definition, "annotations": annotations},
            _pinned_handler(ctx, node, definition["name"]),
        )
    return app


def _pinned_handler(ctx: BrokerContext, node: str, tool: str) -> SchemaHandler:
    async def handler(arguments: Json, mctx: Context[Any, Any]) -> types.CallToolResult:
        result = await ctx.pool.call(node, tool, arguments)
        if result.ok and result.result is not None:
            return json_result(result.result)
        return error_result(result.error or f"node {node}: no answer", result.result)

    return handler


# -- HTTP ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpSettings:
    """Where and how the streamable-HTTP transport listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()  # extra Host header values (e.g. a Service DNS name)
    allowed_origins: tuple[str, ...] = ()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def check_http_settings(settings: HttpSettings) -> None:
    """Refuse insecure combinations before binding anything. Raises ConfigError."""
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"refusing to listen on {settings.host} without authentication: a non-loopback "
            "address needs a bearer token (--auth-token or K8S_GPU_MCP_TOKEN); clients then "
            "send `Authorization: Bearer <token>`"
        )
    if settings.token is not None and len(settings.token) < 16:
        raise ConfigError("the bearer token is too short: use at least 16 random characters")


def transport_security(settings: HttpSettings) -> TransportSecuritySettings:
    """Host/Origin allow-lists against DNS rebinding: loopback names, the bound address,
    and whatever the user added. A wildcard bind with no --allowed-host cannot know its
    names: Host/Origin checks are then off and the (mandatory) token is the guard."""
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    hosts = list(loopback)
    if not is_loopback(settings.host) and not _is_wildcard(settings.host):
        bound = settings.host
        hosts.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
    hosts += list(settings.allowed_hosts)
    if _is_wildcard(settings.host) and not settings.allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    allowed_hosts = [h for host in hosts for h in (host, f"{host}:*")]
    origins = [f"{scheme}://{h}" for h in allowed_hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=origins + list(settings.allowed_origins),
    )


class BearerAuth:
    """ASGI middleware: every HTTP request except ``GET /healthz`` needs the token."""

    def __init__(self, app: ASGIApp, token: str, open_paths: Sequence[str] = ("/healthz",)):
        self.app = app
        self._token = token.encode()
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._open:
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers") or ():
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, presented = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self._token
        ):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "unauthorized", "message": "send `Authorization: Bearer <token>`"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="k8s-gpu-mcp"'},
        )
        await response(scope, receive, send)


def http_app(app: BrokerApp, settings: HttpSettings) -> ASGIApp:
    """The ASGI application: streamable HTTP at /mcp, GET /healthz, auth and Host checks."""
    check_http_settings(settings)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "server": app.name, "version": __version__})

    app.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)
    starlette = app.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=transport_security(settings),
        host=settings.host,
    )
    if settings.token:
        return BearerAuth(starlette, settings.token)
    return starlette


def http_server(app: BrokerApp, settings: HttpSettings) -> Any:
    """A uvicorn Server for ``app`` (``await server.serve()``; ``server.should_exit = True``
    stops it)."""
    import uvicorn

    config = uvicorn.Config(
        http_app(app, settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        server_header=False,
    )
    return uvicorn.Server(config)


async def run_http(app: BrokerApp, settings: HttpSettings) -> None:
    """Serve ``app`` over streamable HTTP until interrupted (uvicorn in this event loop)."""
    server = http_server(app, settings)
    where = f"http://{settings.host}:{settings.port}/mcp"
    auth = "bearer token required" if settings.token else "no token (loopback only)"
    print(f"broker: serving MCP at {where} ({auth}); health at /healthz", file=sys.stderr)
    await server.serve()


# -- entry point ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeOptions:
    """What ``broker serve`` was asked for."""

    config: ClusterConfig = field(default_factory=ClusterConfig)
    node: str | None = None
    transport: str = "stdio"  # stdio | http
    http: HttpSettings = field(default_factory=HttpSettings)
    call_timeout: float = 30.0
    max_concurrency: int = 64


async def serve(options: ServeOptions) -> None:
    """Run the broker's MCP server until the client goes away (stdio) or cancelled."""
    if options.transport not in ("stdio", "http"):
        raise ConfigError(f"unknown transport {options.transport!r}: use stdio or http")
    if options.transport == "http":
        check_http_settings(options.http)
    async with BrokerContext.open(
        options.config,
        call_timeout=options.call_timeout,
        max_concurrency=options.max_concurrency,
    ) as ctx:
        if options.node:
            app = await build_node_server(ctx, options.node)
        else:
            app = build_server(ctx)
        if options.transport == "stdio":
            await app.run_stdio_async()
        else:
            await run_http(app, options.http)
