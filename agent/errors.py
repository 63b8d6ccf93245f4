"""The agent's exceptions. ``str(error)`` is a message for the user: what went wrong
and what to do next."""

from __future__ import annotations

ECHO_LIMIT = 200  # characters of a client's input an error message may repeat


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` for an error message: a client's input is repeated at most ``limit``
    characters, then "…(N bytes)" says how long it really was."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]}…({size} bytes)"


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class BackendUnavailable(AgentError):
    """NVML could not be initialised (libnvidia-ml.so.1 missing, driver not loaded...)."""


class ScenarioError(AgentError):
    """The fake backend's scenario file is unreadable or malformed."""


class KmsgUnavailable(AgentError):
    """The kernel log cannot be read; the message says why (e.g. needs CAP_SYSLOG)."""


class ToolArgumentError(AgentError):
    """A tool was called with arguments its inputSchema rejects (JSON-RPC -32602)."""


class NvmlTimeout(AgentError):
    """A bounded NVML call did not return in time."""


class UsageError(AgentError):
    """Bad command-line arguments (the message includes the usage hint)."""


class KmsgDisabled(KmsgUnavailable):
    """Reading the kernel log is switched off by configuration (``--kmsg off`` or the
    chart's ``GPU_AGENT_KMSG=off``): not a fault of the node."""
