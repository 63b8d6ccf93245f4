"""``--auth kubernetes``: callers authenticate with their own Kubernetes bearer token.

:class:`KubernetesAuth` (ASGI middleware) checks the token with a TokenReview, caches the
answer briefly by the token's hash (never the token itself), and puts the caller's
:class:`Identity` on the request (``request.state.identity``); a token the API server
does not accept gets a 401 that says how to get a valid one. An MCP session belongs to
the caller who opened it: another caller presenting its id gets a 404, as for an unknown
session. :func:`caller_guard` then
runs each tool call in that caller's own context (impersonating API clients, own pool),
reading the identity from the HTTP request of the MCP message being answered.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.errors import BrokerError
from broker.fleet.identities import CallerContexts
from broker.kube.auth import Identity, TokenRejected
from broker.server.app import CallGuard

__all__ = ["KubernetesAuth", "NoCaller", "caller_guard", "request_identity"]

logger = logging.getLogger(__name__)

Review = Callable[[str], Awaitable[Identity]]

_HOW = (
    "send `Authorization: Bearer <your Kubernetes token>`: the token kubectl uses for this "
    "cluster (an OIDC id-token, or `kubectl create token <serviceaccount> -n <namespace>`)"
)


class NoCaller(BrokerError):
    """A tool call arrived without an authenticated caller (a wiring error)."""

    kind = "rbac"


class KubernetesAuth:
    """ASGI middleware: bearer token -> TokenReview -> ``request.state.identity``.

    Accepted tokens are remembered for ``ttl_s``, rejected ones for ``rejected_ttl_s``
    (a client retrying a bad token must not turn into a TokenReview flood); at most
    ``max_cached`` entries, oldest dropped first.
    """

    def __init__(
        self,
        app: ASGIApp,
        review: Review,
        *,
        open_paths: Sequence[str] = ("/healthz", "/readyz"),
        ttl_s: float = 60.0,
        rejected_ttl_s: float = 10.0,
        max_cached: int = 10_000,
        on_review: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self._on_review = on_review  # called with authenticated|rejected|error per review
        self._review = review
        self._open = frozenset(open_paths)
        self._ttl = ttl_s
        self._rejected_ttl = rejected_ttl_s
        self._max = max_cached
        self._cache: dict[bytes, tuple[float, Identity | str]] = {}
        # MCP session id -> the caller who opened it: a session is used by its owner only.
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self.reviews = 0  # TokenReviews sent (tests, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._open:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if not token:
            await _unauthorized(f"no bearer token: {_HOW}")(scope, receive, send)
            return
        try:
            found = await self.identify(token)
        except BrokerError as exc:  # the broker could not ask: not the caller's fault
            logger.warning("TokenReview failed: %s", exc)
            response = JSONResponse(
                {"error": "unavailable", "message": f"cannot check your token now: {exc}"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
            await response(scope, receive, send)
            return
        if isinstance(found, str):
            message = f"the Kubernetes API server did not accept your token ({found}); {_HOW}"
            await _unauthorized(message)(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = found
        session = _header(scope, b"mcp-session-id")
        if session:
            owner = self._sessions.get(session)
            if owner is not None and owner != found.user:
                # As for an unknown session (no hint that it exists): the client re-initialises.
                await JSONResponse(
                    {"error": "not_found", "message": "session not found: initialise a new one"},
                    status_code=404,
                )(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        async def remember_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                for key, value in message.get("headers") or ():
                    if key.lower() == b"mcp-session-id":
                        self._own_session(value.decode("latin-1"), found.user)
            await send(message)

        await self.app(scope, receive, remember_session)

    def _own_session(self, session: str, user: str) -> None:
        self._sessions[session] = user
        self._sessions.move_to_end(session)
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)

    async def identify(self, token: str) -> Identity | str:
        """The token's Identity, or why it was rejected (cached)."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        self.reviews += 1
        outcome = "error"
        try:
            result: Identity | str = await self._review(token)
            ttl, outcome = self._ttl, "authenticated"
        except TokenRejected as exc:
            result, ttl, outcome = exc.reason, self._rejected_ttl, "rejected"
        finally:
            if self._on_review is not None:
                self._on_review(outcome)
        self._remember(key, now + ttl, result)
        return result

    def _remember(self, key: bytes, expires: float, value: Identity | str) -> None:
        if len(self._cache) >= self._max:
            now = time.monotonic()
            for k in [k for k, (t, _) in self._cache.items() if t <= now]:
                del self._cache[k]
            while len(self._cache) >= self._max:
                del self._cache[next(iter(self._cache))]
        self._cache.pop(key, None)
        self._cache[key] = (expires, value)


def _bearer(scope: Scope) -> str:
    scheme, _, token = _header(scope, b"authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": "unauthorized", "message": message},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="k8s-gpu-mcp"'},
    )


def request_identity(mctx: Context[Any, Any]) -> Identity | None:
    """The caller of the MCP message being answered (None off HTTP or unauthenticated)."""
    try:
        request = mctx.request_context.request
    except ValueError:  # no request context (called outside a request)
        return None
    state = getattr(request, "state", None)
    identity = getattr(state, "identity", None) if state is not None else None
    return identity if isinstance(identity, Identity) else None


def caller_guard(contexts: CallerContexts) -> CallGuard:
    """A BrokerApp call guard: run the call in its caller's context."""

    @asynccontextmanager
    async def guard(tool: str, mctx: Context[Any, Any]) -> AsyncIterator[None]:
        identity = request_identity(mctx)
        if identity is None:
            raise NoCaller(f"{tool}: the request carries no authenticated caller; {_HOW}")
        async with contexts.use(identity):
            yield

    return guard
