"""Open a ``pods/exec`` websocket through the API server (kubernetes_asyncio + aiohttp).

Only the opening lives here, with the mapping of refusals to errors; the channel framing
on the open socket is :mod:`broker.transport.channels` and :mod:`broker.transport.exec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from broker.errors import ApiUnavailable, NodeNotReady, RbacDenied, Unauthenticated
from broker.kube.config import KubeApi
from broker.kube.discovery import NodeTarget
from broker.kube.retry import RETRYABLE_STATUS, RetryPolicy

__all__ = ["open_exec_socket"]


async def open_exec_socket(
    api: KubeApi,
    target: NodeTarget,
    command: Sequence[str],
    container: str | None,
    retry: RetryPolicy,
    *,
    offer: Sequence[str],
    fallback: Sequence[str],
) -> tuple[Any, str]:
    """Open the exec websocket (aiohttp) offering the subprotocols ``offer``; returns
    ``(ws, the Sec-WebSocket-Protocol the server chose)``. When the server refuses the
    offer outright (400/403), ask once more with ``fallback``. Raises the BrokerError that
    explains a refusal (RBAC, credentials, pod gone, throttling, unreachable)."""
    import aiohttp
    from kubernetes_asyncio.client import CoreV1Api

    assert target.pod is not None
    core = CoreV1Api(api.ws)
    asked = tuple(offer)
    refreshed = False
    attempt = 0
    await api.refresh_credentials()
    while True:
        attempt += 1
        kwargs: dict[str, Any] = {
            "command": list(command),
            "stdin": True,
            "stdout": True,
            "stderr": True,
            "tty": False,
            "_preload_content": False,
            "_headers": {"sec-websocket-protocol": ",".join(asked)},
        }
        if container:
            kwargs["container"] = container
        status = 0
        headers: dict[str, str] = {}
        detail = ""
        try:
            request: Any = await core.connect_get_namespaced_pod_exec(
                target.pod, target.namespace, **kwargs
            )
            ws = await request
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
            headers = dict(exc.headers.items()) if exc.headers else {}
            detail = exc.message
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            chosen = ws._response.headers.get("Sec-WebSocket-Protocol", "").strip()
            return ws, chosen
        if status in (400, 403) and fallback and asked != tuple(fallback):
            # A server that predates v5 refuses an offer of v5 alone (the Go websocket
            # server answers 403, some proxies 400): ask again for v4 before anything else.
            asked = tuple(fallback)
            continue
        if status == 403:
            who = api.config.impersonate  # the team broker: say whose RBAC refused
            detail = f"checked as user {who.user!r}" if who is not None else ""
            raise RbacDenied("create", "pods/exec", target.namespace, detail)
        if status == 401:
            if not refreshed and await api.refresh_credentials(force=True):
                refreshed = True
                continue
            raise Unauthenticated(api.server)
        if status == 404:
            raise NodeNotReady(
                target.node,
                f"agent pod {target.pod} no longer exists (deleted or replaced); "
                "the next call finds its successor (list_gpu_nodes or `broker nodes` shows it)",
            )
        if status == 400:
            raise NodeNotReady(
                target.node,
                f"the API server refused to exec in pod {target.pod} (400: container not "
                "running or not found?); check `kubectl -n "
                f"{target.namespace} describe pod {target.pod}`",
            )
        retryable = status == 0 or status in RETRYABLE_STATUS
        if retryable and attempt < retry.attempts:
            await anyio.sleep(retry.delay(attempt, headers))
            continue
        if status == 0:
            raise ApiUnavailable(
                f"node {target.node}: cannot reach the API server at {api.server} ({detail}); "
                "check the kubeconfig's server address and your network"
            )
        what = (
            "throttled the exec request (429 Too Many Requests)"
            if status == 429
            else (f"answered {status} to the exec request")
        )
        advised = headers.get("Retry-After")
        raise ApiUnavailable(
            f"node {target.node}: the API server {what} {attempt} times"
            + (f" (Retry-After: {advised})" if advised else "")
            + "; try again later or lower the fan-out concurrency"
        )
