"""The broker's streamable-HTTP transport: ``/mcp`` plus ``GET /healthz``, bearer-token
authentication and Host/Origin checks against DNS rebinding.

Authentication (``--auth``): ``token`` (default) wants a bearer token; on loopback, when
none is given, one is generated per run, printed once to stderr and written to a 0600
file (:func:`token_path`), as Jupyter does, so other local users cannot drive the broker
with your kube credentials. ``none`` is loopback-only and explicit. ``kubernetes``
(TokenReview + impersonation) is reserved for a later release.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import __version__
from broker.errors import ConfigError
from broker.server.app import BrokerApp

__all__ = [
    "AUTH_MODES",
    "BearerAuth",
    "HttpSettings",
    "check_http_settings",
    "generate_token",
    "http_app",
    "http_server",
    "is_loopback",
    "run_http",
    "token_path",
    "transport_security",
]

AUTH_MODES = ("token", "none", "kubernetes")


@dataclass(frozen=True)
class HttpSettings:
    """Where and how the streamable-HTTP transport listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    # token | none (loopback only) | kubernetes (each caller's token: TokenReview +
    # impersonation, broker.server.team)
    auth: str = "token"
    token: str | None = None  # None with auth=token: generated at start (loopback only)
    allowed_hosts: tuple[str, ...] = ()  # extra Host header values (e.g. a Service DNS name)
    allowed_origins: tuple[str, ...] = ()
    max_connections: int | None = None  # None: a share of the descriptor limit (<= 256)
    read_timeout: float = 10.0  # seconds to send one whole request (headers and body)
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection is closed after this
    max_sessions: int = 100  # open MCP sessions (each ~40 KiB); the next one gets a 503
    session_idle_s: float = 600.0  # a session with no request in flight this long is closed
    token_generated: bool = False  # set by generate_token: announce it at start


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def check_http_settings(settings: HttpSettings, *, generated_ok: bool = True) -> None:
    """Refuse insecure or impossible combinations before binding anything.

    ``generated_ok``: a missing token is fine (it will be generated on loopback).
    Raises ConfigError.
    """
    if settings.auth not in AUTH_MODES:
        raise ConfigError(f"unknown --auth {settings.auth!r}: use token, none or kubernetes")
    if settings.auth == "kubernetes":
        if settings.token:
            raise ConfigError(
                "--auth kubernetes checks each caller's own Kubernetes token: drop the static "
                "bearer token (--auth-token or K8S_GPU_MCP_TOKEN), or use --auth token"
            )
        return  # every caller's own token, checked by TokenReview (broker.server.auth)
    loopback = is_loopback(settings.host)
    if settings.auth == "none":
        if not loopback:
            raise ConfigError(
                f"--auth none is refused on {settings.host}: only a loopback address may "
                "serve without authentication; use --auth token with K8S_GPU_MCP_TOKEN"
            )
        if settings.token:
            raise ConfigError(
                "--auth none contradicts the bearer token given (--auth-token or "
                "K8S_GPU_MCP_TOKEN): drop one of them"
            )
        return
    if not settings.token:
        if not loopback:
            raise ConfigError(
                f"refusing to listen on {settings.host} without authentication: a non-loopback "
                "address needs a bearer token (--auth-token or K8S_GPU_MCP_TOKEN); clients "
                "then send `Authorization: Bearer <token>`"
            )
        if not generated_ok:
            raise ConfigError("--auth token needs a token: call generate_token() first")
        return
    if not settings.token.isascii() or not settings.token.isprintable() or " " in settings.token:
        raise ConfigError(
            "the bearer token must be printable ASCII without spaces (an HTTP header cannot "
            "carry anything else, so no client could ever match it); generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if len(settings.token) < 16:
        raise ConfigError("the bearer token is too short: use at least 16 random characters")


def generate_token(settings: HttpSettings) -> HttpSettings:
    """``settings`` with a fresh random token when auth=token and none was given."""
    if settings.auth != "token" or settings.token:
        return settings
    return replace(settings, token=secrets.token_urlsafe(32), token_generated=True)


def token_path(port: int, environ: Mapping[str, str] | None = None) -> Path:
    """Where a generated token is written: ``$XDG_RUNTIME_DIR/k8s-gpu-mcp/`` (per-user,
    tmpfs, cleared at logout), else ``~/.config/k8s-gpu-mcp/``; one file per port."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(env.get("HOME") or Path.home()) / ".config"
    return base / "k8s-gpu-mcp" / f"broker-{port}.token"


def _write_token(path: Path, token: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)


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

    def __init__(
        self, app: ASGIApp, token: str, open_paths: Sequence[str] = ("/healthz", "/readyz")
    ):
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
    check_http_settings(settings, generated_ok=False)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "server": app.name, "version": __version__})

    async def readyz(request: Request) -> Response:
        problem = await app.readiness() if app.readiness is not None else None
        if problem:
            return JSONResponse({"status": "not ready", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    app.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)
    app.custom_route("/readyz", methods=["GET"], include_in_schema=False)(readyz)
    starlette = app.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=transport_security(settings),
        host=settings.host,
        session_idle_timeout=settings.session_idle_s,
        max_sessions=settings.max_sessions,
    )
    for wrap in app.http_middleware:  # e.g. --auth kubernetes (broker.server.auth)
        starlette = wrap(starlette)
    if settings.auth in ("none", "kubernetes"):
        return starlette
    assert settings.token is not None  # check_http_settings
    return BearerAuth(starlette, settings.token)


def http_server(
    app: BrokerApp, settings: HttpSettings, on_shutdown: Callable[[], None] | None = None
) -> Any:
    """A uvicorn Server for ``app`` (``await server.serve()``; ``server.should_exit = True``
    stops it), with the connection limits of :mod:`broker.server.http_limits`.
    ``on_shutdown`` runs as the server stops, also on SIGTERM (uvicorn re-raises the
    signal once ``serve`` returns, so a ``finally`` around it would not run)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            try:
                await super().shutdown(sockets)
            finally:
                if on_shutdown is not None:
                    on_shutdown()

    from broker.server.http_limits import connection_cap, guarded_h11, raise_fd_limit

    cap = connection_cap(settings.max_connections, raise_fd_limit())
    config = uvicorn.Config(
        http_app(app, settings),
        host=settings.host,
        port=settings.port,
        http=guarded_h11(cap, settings.read_timeout),
        ws="none",
        log_level="warning",
        lifespan="on",
        server_header=False,
        timeout_keep_alive=int(max(1, settings.keep_alive_timeout)),
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers
        # asyncio accepts up to `backlog` sockets per wake-up before any refusal closes
        # one: a small batch keeps a flood from exhausting descriptors in one go.
        backlog=min(128, cap),
    )
    return Server(config)


async def run_http(app: BrokerApp, settings: HttpSettings) -> None:
    """Serve ``app`` over streamable HTTP until interrupted (uvicorn in this event loop)."""
    import asyncio

    from broker.server.http_limits import install_loop_guard

    install_loop_guard(asyncio.get_running_loop())
    where = f"http://{settings.host}:{settings.port}/mcp"
    path: Path | None = None
    if settings.auth == "kubernetes":
        auth = "each caller's Kubernetes token, checked by TokenReview; calls run as the caller"
    elif settings.auth == "none":
        auth = "NO authentication (--auth none; loopback only)"
    elif settings.token_generated and settings.token:
        path = token_path(settings.port)
        try:
            _write_token(path, settings.token)
            saved = f"saved in {path} (mode 0600)"
        except OSError as exc:
            path, saved = None, f"not saved ({exc.strerror or exc})"
        auth = "bearer token required"
        print(
            f"broker: generated a bearer token for this run ({saved}); clients send "
            f"`Authorization: Bearer {settings.token}`. Set K8S_GPU_MCP_TOKEN to choose one, "
            "or --auth none to serve loopback without one.",
            file=sys.stderr,
        )
    else:
        auth = "bearer token required"
    print(f"broker: serving MCP at {where} ({auth}); health at /healthz", file=sys.stderr)

    def forget_token() -> None:
        if path is not None:
            path.unlink(missing_ok=True)

    try:
        await http_server(app, settings, forget_token).serve()
    finally:
        forget_token()
