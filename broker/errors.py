"""The broker's exceptions. ``str(error)`` is a message for the user: what went wrong
and what to do next. ``kind`` is the short machine-readable class a fan-out result
carries (``NodeResult.error_kind``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError


def clip(value: object, limit: int = 120) -> str:
    """``str(value)`` cut to ``limit`` characters (with how much was cut), for echoing
    caller input in an error message: a 1 MB selector must not become a 3 MB error."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class BrokerError(Exception):
    """Base class of every error the broker raises on purpose."""

    kind: str = "unreachable"

    def for_mcp(self) -> str:
        """The message as an MCP client should read it (naming MCP tools, not commands)."""
        return str(self)


class ConfigError(BrokerError):
    """No usable cluster configuration (kubeconfig, context, credentials)."""

    kind = "unreachable"


class UnknownNode(BrokerError):
    """A node name that discovery does not know (input error, nothing was contacted)."""

    kind = "not_ready"

    def __init__(self, nodes: Sequence[str], known: Sequence[str] = ()) -> None:
        self.nodes = list(nodes)
        self.known = list(known)
        super().__init__(self._message("Run `broker nodes` to list the GPU nodes"))

    def _message(self, listing: str) -> str:
        import difflib  # only when a name is wrong

        names = clip(", ".join(self.nodes), 300)
        hint = ""
        guesses = [
            g for n in self.nodes for g in difflib.get_close_matches(n, self.known, n=1, cutoff=0.6)
        ]
        if guesses:
            hint = f" Did you mean {', '.join(dict.fromkeys(guesses))}?"
        elif self.known:
            sample = clip(", ".join(sorted(self.known)[:5]), 300)
            more = f" (and {len(self.known) - 5} more)" if len(self.known) > 5 else ""
            hint = f" Known GPU nodes: {sample}{more}."
        return f"unknown GPU node(s): {names}.{hint} {listing} and their agent pods."

    def for_mcp(self) -> str:
        return self._message("Call list_gpu_nodes to list the GPU nodes")


class NodeNotReady(BrokerError):
    """The node's agent pod is missing, not Running, not Ready, or went away."""

    kind = "not_ready"

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"node {node}: {reason}")


class RbacDenied(BrokerError):
    """The API server refused the request (403): a missing RBAC permission."""

    kind = "rbac"

    def __init__(self, verb: str, resource: str, namespace: str | None, detail: str = "") -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        scope = f" -n {namespace}" if namespace else ""
        where = f"in namespace {namespace}" if namespace else "at cluster scope"
        # `can-i create pods/exec` would ask about a pod *named* exec: subresources
        # need --subresource to match what the API server checks.
        base, _, sub = resource.partition("/")
        target = f"{base} --subresource={sub}" if sub else base
        self.check = f"kubectl auth can-i {verb} {target}{scope}"
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"RBAC denied: your credentials may not {verb} {resource} {where}{extra}. "
            f"Check with `{self.check}`; grant it with the chart's broker Role/RoleBinding "
            "or ask your cluster admin."
        )


class NotFound(BrokerError):
    """The API server has no such object (404): a pod or node name that does not exist."""

    kind = "not_found"


class Unauthenticated(BrokerError):
    """The API server rejected the credentials (401)."""

    kind = "rbac"

    def __init__(self, server: str) -> None:
        super().__init__(
            f"the API server at {server} rejected the credentials (401 Unauthorized). "
            "Refresh them (log in again / re-run your credential plugin) and check with "
            "`kubectl get pods -n <namespace>`."
        )


class ApiUnavailable(BrokerError):
    """The API server could not be reached, or kept answering 429/5xx, or the stream broke."""

    kind = "unreachable"


class ExecFailed(BrokerError):
    """The agent process ended with a failure status (non-zero exit, not found, killed)."""

    kind = "agent_error"

    def __init__(
        self,
        node: str,
        message: str,
        exit_code: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.node = node
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        text = f"node {node}: {message}"
        if stderr_tail:
            text += f"; agent stderr (last lines): {stderr_tail}"
        super().__init__(text)


class AgentProtocolError(BrokerError):
    """The agent broke the MCP protocol (garbage on stdout, malformed answers)."""

    kind = "protocol"


class ToolMissing(BrokerError):
    """Version skew: the node's agent build does not offer the requested tool."""

    kind = "tool_missing"

    def __init__(self, node: str, tool: str, agent_version: str | None) -> None:
        self.node = node
        self.tool = tool
        self.agent_version = agent_version
        version = agent_version or "unknown"
        super().__init__(
            f"node {node}: the agent (version {version}) does not offer tool {tool!r}; "
            "upgrade the agent DaemonSet image on this node (helm upgrade) so every node "
            "runs the same version."
        )


class NodeTimeout(BrokerError):
    """A node call did not finish within its deadline."""

    kind = "timeout"

    def __init__(self, node: str, seconds: float, phase: str = "call") -> None:
        self.node = node
        self.seconds = seconds
        self.phase = phase
        super().__init__(
            f"node {node}: no answer within {seconds:g} s ({phase}); the agent may be hung "
            "(e.g. stuck in the driver) or the API server slow. Retry (a hung session is "
            "re-opened), or allow more time with a longer timeout."
        )


class NodeSkipped(BrokerError):
    """The node's circuit breaker is open: it kept failing, so it is not called for a
    while (one trial call at a time once the pause is over)."""

    kind = "circuit_open"

    def __init__(self, node: str, failures: int, retry_in_s: float, last: str) -> None:
        self.node = node
        self.retry_in_s = retry_in_s
        when = f"in {retry_in_s:.0f} s" if retry_in_s > 0 else "once the trial call in flight ends"
        super().__init__(
            f"node {node}: skipped, it failed {failures} times in a row (last: {last}); "
            f"the broker tries it again {when}. Check the node and its agent pod "
            "(`broker doctor`, `kubectl describe node`)."
        )


class CallLimited(BrokerError):
    """A caller went over their share (rate or concurrent calls): retry later."""

    kind = "rate_limited"


class NotReached(BrokerError):
    """The sweep's overall deadline ran out while the node still waited its turn."""

    kind = "queued"

    def __init__(self, node: str, sweep_s: float) -> None:
        self.node = node
        self.sweep_s = sweep_s
        super().__init__(
            f"node {node}: not reached within the sweep's {sweep_s:g} s deadline (it was "
            "still queued behind other nodes' session opens; the node itself did not fail). "
            "Call again (opened sessions stay warm, so the next sweep is faster), target "
            "fewer nodes, or allow a longer sweep timeout."
        )


class CallCancelled(BrokerError):
    """The call was cancelled (the pool shut down, or the caller went away)."""

    kind = "cancelled"


class AgentCallError(BrokerError):
    """The agent answered the tool call with an error (JSON-RPC error or ``isError``)."""

    kind = "agent_error"


class ToolInputError(BrokerError):
    """The caller's arguments are wrong (nothing was sent to any node)."""

    kind = "input"


# -- mapping what a node call raises to the error that explains it -----------------------
def as_broker_error(exc: BaseException, node: str) -> BrokerError:
    """Map anything a node call can raise to the :class:`BrokerError` that explains it."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        for leaf in leaves:
            if isinstance(leaf, BrokerError):
                return leaf
        return as_broker_error(leaves[0], node) if leaves else ApiUnavailable(str(exc))
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, MCPError):
        if exc.error.code == types.CONNECTION_CLOSED:
            return ApiUnavailable(
                f"node {node}: the connection to the agent closed; it will be re-opened on "
                "the next call"
            )
        return AgentCallError(f"node {node}: the agent answered error {exc.error.code}: {exc}")
    if isinstance(exc, ValidationError):
        return AgentProtocolError(f"node {node}: the agent sent a malformed MCP message: {exc}")
    if isinstance(exc, TimeoutError):
        return ApiUnavailable(f"node {node}: the connection timed out ({exc or 'no detail'})")
    if isinstance(exc, OSError):
        return ApiUnavailable(f"node {node}: cannot start the agent transport: {exc}")
    return AgentProtocolError(f"node {node}: unexpected {type(exc).__name__}: {exc}")


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside (possibly nested) single-member groups, if that is all."""
    current: BaseException = group
    while isinstance(current, BaseExceptionGroup):
        if len(current.exceptions) != 1:
            return None
        current = current.exceptions[0]
    return current
