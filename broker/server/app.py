"""The MCP server class of the broker: tools registered with explicit JSON Schemas, and
the result helpers every tool module uses.

The agent's JSON Schemas go out exactly as the agent defines them, so tools are
registered with explicit schemas (:meth:`BrokerApp.add_schema_tool`) rather than
derived from Python signatures. Every tool is read-only; no tool takes a command.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer

from broker import __version__
from broker.errors import BrokerError, clip
from broker.server.compact import compact_definition

__all__ = [
    "READ_ONLY",
    "BrokerApp",
    "CallGuard",
    "SchemaHandler",
    "error_result",
    "json_result",
]

logger = logging.getLogger(__name__)

Json = dict[str, Any]
SchemaHandler = Callable[[Json, Context[Any, Any]], Awaitable[Json | types.CallToolResult]]
# Wraps every schema-tool call (tool name, MCP context): per-caller context, limits,
# metrics. A BrokerError it raises is the call's isError answer.
CallGuard = Callable[[str, Context[Any, Any]], AbstractAsyncContextManager[Any]]

READ_ONLY = {
    "readOnlyHint": True,
    "destructiveHint": False,
    "idempotentHint": True,
    "openWorldHint": False,
}

INSTRUCTIONS = (
    "Read-only diagnostics for the NVIDIA GPUs of a Kubernetes cluster. Every GPU tool "
    "runs across the cluster's GPU nodes at once. Start with get_gpu_health and no "
    "arguments: `summary` counts nodes per status and lists every node that could not be "
    "reached, with why (`causes` says a reason shared by many nodes once, with the fix); "
    "`nodes` holds the unhealthy nodes worst first with findings and recommended actions; "
    "`healthy` names the rest. Then drill down with node=<name> (that node's full result), "
    "or narrow with nodes=[...] or node_selector (a label selector on node labels, e.g. "
    'nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3). For "why did my job/pod die?" call '
    "explain_failure with the pod (it joins exit codes, events, the node's XIDs and GPU "
    "health into a verdict). describe_gpu_node covers one node from Kubernetes and its "
    "agent; get_pod_gpu_allocation shows which pods hold which GPUs; analyze_xid_errors, "
    "get_gpu_processes, get_gpu_inventory and get_nvlink_topology go deeper; "
    "list_gpu_nodes lists the nodes. When nodes are unreachable, not_ready or rbac, or no "
    "agent pods are found, call check_setup: it says what to fix first."
)


class BrokerApp(MCPServer[Any]):
    """MCPServer plus tools registered with explicit JSON Schemas.

    ``add_schema_tool`` keeps a tool's ``inputSchema``/``outputSchema``/annotations
    byte-for-byte; arguments are validated against the input schema before the handler
    runs (a mismatch is an ``isError`` result naming the argument, and nothing is sent to
    any node). Tools added the usual way (``app.tool()``) work alongside.
    """

    def __init__(
        self,
        name: str = "k8s-gpu-mcp",
        instructions: str = INSTRUCTIONS,
        *,
        compact_outputs: bool = False,
    ) -> None:
        self.compact_outputs = compact_outputs  # output schemas without prose (compact.py)
        super().__init__(
            name=name,
            title="Kubernetes GPU diagnostics",
            instructions=instructions,
            version=__version__,
            log_level="WARNING",
        )
        self._schema_tools: dict[str, tuple[types.Tool, SchemaHandler, Any]] = {}
        self.call_guards: list[CallGuard] = []  # entered in order around each handler
        self.http_middleware: list[Callable[[Any], Any]] = []  # ASGI wrappers, inner first
        # GET /readyz: None = ready, else why not (e.g. the API server is unreachable).
        self.readiness: Callable[[], Awaitable[str | None]] | None = None

    def add_schema_tool(self, definition: Mapping[str, Any], handler: SchemaHandler) -> None:
        """Register a tool from its MCP definition (name, title, description, inputSchema,
        outputSchema, annotations). ``handler(arguments, ctx)`` returns the structured
        result (sent as structuredContent and as JSON text) or a full CallToolResult.
        Raise :class:`ToolInputError` (or any BrokerError) for a clear isError answer."""
        validators: Any = importlib.import_module("jsonschema.validators")
        if self.compact_outputs:
            definition = compact_definition(definition)
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
            if self._tool_manager.get_tool(name) is None:  # the SDK would echo it whole
                return error_result(f"unknown tool {clip(name)!r}; list them with tools/list")
            return await super().call_tool(name, arguments, context)
        _tool, handler, validator = entry
        problem = _first_error(validator, arguments)
        if problem is not None:
            return error_result(f"invalid arguments for {name}: {problem}")
        if context is None:
            context = Context(mcp_server=self)
        try:
            async with AsyncExitStack() as guards:
                for guard in self.call_guards:
                    await guards.enter_async_context(guard(name, context))
                out = await handler(arguments, context)
        except BrokerError as exc:
            logger.info("tool %s: %s", name, exc)
            return error_result(exc.for_mcp())
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
    # The message may quote the argument: clip it (a 1 MB value, a 1 MB error otherwise).
    return clip(error.message, 300) + (f" (argument {clip(where, 100)})" if where else "")


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
