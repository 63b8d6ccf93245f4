"""Several clusters from one broker: the kubeconfig's contexts, which of them answer, and
which contexts a call names (``context``, ``contexts``, ``"*"`` for all of them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from broker.errors import BrokerError, ToolInputError
from broker.fleet.context import BrokerContext
from broker.kube.config import kubeconfig_contexts

__all__ = ["ALL_CONTEXTS", "CONTEXTS_OUTPUT_SCHEMA", "context_names", "list_contexts"]

Json = dict[str, Any]

ALL_CONTEXTS = "*"
PROBE_TIMEOUT_S = 10.0


def context_names(ctx: BrokerContext, context: str | None, contexts: Sequence[str]) -> list[str]:
    """The kubeconfig contexts a call targets, in order; ``[]`` means this broker's own.

    Raises ToolInputError for both arguments at once, or a name not in the kubeconfig.
    """
    if context and contexts:
        raise ToolInputError("give context (one cluster) or contexts (several), not both")
    wanted = [context] if context else list(dict.fromkeys(contexts))
    if not wanted:
        return []
    known, _current = kubeconfig_contexts(ctx.config)
    if ALL_CONTEXTS in wanted:
        if not known:
            raise ToolInputError(
                "contexts=['*'] needs a kubeconfig with contexts; this broker runs in-cluster"
            )
        return known
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ToolInputError(
            f"context(s) {', '.join(unknown)} not in the kubeconfig (have: "
            f"{', '.join(known) or 'none'}); call list_contexts to see them"
        )
    return wanted


async def list_contexts(ctx: BrokerContext, timeout_s: float = PROBE_TIMEOUT_S) -> Json:
    """Every kubeconfig context, probed concurrently: reachable (with its GPU node
    counts) or why not. Contacts each API server, never a node."""
    names, current = kubeconfig_contexts(ctx.config)
    own = ctx.context_name or current
    entries: dict[str, Json] = {}

    async def probe(name: str) -> None:
        entry: Json = {"context": name, "current": name == own}
        try:
            with anyio.fail_after(timeout_s):
                sub = await ctx.in_context(None if name == own else name)
                targets = await sub.targets(refresh=True)
                api = await sub.api()
            ready = sum(1 for t in targets if t.ready)
            entry |= {"reachable": True, "server": api.server, "namespace": sub.namespace}
            entry |= {"gpu_nodes": len(targets), "ready": ready}
        except TimeoutError:
            reason = f"the API server did not answer within {timeout_s:g} s"
            entry |= {"reachable": False, "kind": "timeout", "reason": reason}
        except BrokerError as exc:
            entry |= {"reachable": False, "kind": exc.kind, "reason": str(exc)}
        entries[name] = entry

    async with anyio.create_task_group() as tg:
        for name in names or [own or "in-cluster"]:
            tg.start_soon(probe, name)
    listed = [entries[n] for n in names or [own or "in-cluster"]]
    return {
        "current": own,
        "contexts": listed,
        "summary": {
            "total": len(listed),
            "reachable": sum(1 for e in listed if e.get("reachable")),
        },
    }


CONTEXTS_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {
        "current": {"type": ["string", "null"]},
        "contexts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "context": {"type": "string"},
                    "current": {"type": "boolean"},
                    "reachable": {"type": "boolean"},
                    "server": {"type": "string"},
                    "namespace": {"type": "string"},
                    "gpu_nodes": {"type": "integer", "minimum": 0},
                    "ready": {"type": "integer", "minimum": 0},
                    "kind": {"type": "string"},
                    "reason": {"type": "string"},
                },
                "required": ["context", "current", "reachable"],
            },
        },
        "summary": {
            "type": "object",
            "properties": {
                "total": {"type": "integer", "minimum": 0},
                "reachable": {"type": "integer", "minimum": 0},
            },
            "required": ["total", "reachable"],
        },
    },
    "required": ["current", "contexts", "summary"],
}
