"""The broker's streamable-HTTP transport: ``/mcp`` plus ``GET /healthz``, bearer-token
authentication (mandatory off loopback) and Host/Origin checks against DNS rebinding."""

from __future__ import annotations

import hmac
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import __version__
from broker.errors import ConfigError
from broker.server.app import BrokerApp

__all__ = [
    "BearerAuth",
    "HttpSettings",
    "check_http_settings",
    "http_app",
    "http_server",
    "is_loopback",
    "run_http",
    "transport_security",
]


@dataclass(frozen=True)
class HttpSettings:
    """Where and how the streamable-HTTP transport listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    auth: str = "token"  # token | kubernetes (TokenReview + impersonation, broker.server.team)
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
    if settings.auth == "kubernetes":
        return  # every caller's own token, checked by TokenReview (broker.server.auth)
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
    check_http_settings(settings)

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
    )
    for wrap in app.http_middleware:  # e.g. --auth kubernetes (broker.server.auth)
        starlette = wrap(starlette)
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
    if settings.auth == "kubernetes":
        auth = "each caller's Kubernetes token, checked by TokenReview; calls run as the caller"
    print(f"broker: serving MCP at {where} ({auth}); health at /healthz", file=sys.stderr)
    await server.serve()
