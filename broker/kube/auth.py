"""Callers' identities for the in-cluster broker (``--auth kubernetes``).

:func:`review_token` asks the API server who a bearer token belongs to (a
``TokenReview``, made with the broker's own credentials). :func:`impersonate` makes an
API client act as that caller (:mod:`broker.kube.identity`), so the API server applies
the caller's RBAC and its audit log names the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from broker.errors import ApiUnavailable, ConfigError, Unauthenticated
from broker.kube.identity import Identity, impersonate_clients
from broker.kube.reader import status_message
from broker.kube.retry import RETRYABLE_STATUS, RetryPolicy

if TYPE_CHECKING:
    from broker.kube.config import KubeApi

__all__ = ["Identity", "TokenRejected", "impersonate", "review_token"]


class TokenRejected(Exception):
    """The TokenReview did not authenticate the token (``reason``: the API server's)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def impersonate(api: KubeApi, who: Identity) -> None:
    """Make every request of ``api`` (REST and exec websockets) act as ``who``."""
    impersonate_clients((api.rest, api.ws), who)


async def review_token(
    api: KubeApi,
    token: str,
    audiences: Sequence[str] = (),
    retry: RetryPolicy | None = None,
) -> Identity:
    """Who ``token`` belongs to, by a TokenReview with ``api``'s own credentials.

    Raises TokenRejected (not a valid token), ConfigError (the broker may not create
    TokenReviews), Unauthenticated or ApiUnavailable (the broker cannot ask)."""
    import aiohttp
    from kubernetes_asyncio.client import AuthenticationV1Api

    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = list(audiences)
    body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
    call = AuthenticationV1Api(api.rest).create_token_review
    policy = retry or RetryPolicy()
    attempt = 0
    refreshed = False
    while True:
        attempt += 1
        status, headers, raw, detail = 0, {}, b"", ""
        try:
            with anyio.fail_after(api.config.request_timeout):
                resp: Any = await call(body, _preload_content=False)
                async with resp:
                    status = resp.status
                    headers = dict(resp.headers.items())
                    raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if status == 401 and not refreshed and await api.refresh_credentials(force=True):
            refreshed = True
            continue
        if (status == 0 or status in RETRYABLE_STATUS) and attempt < policy.attempts:
            await anyio.sleep(policy.delay(attempt, headers))
            continue
        break
    if status in (200, 201):
        return _identity(raw)
    if status == 403:
        raise ConfigError(
            "the broker's own credentials may not create TokenReviews (403: "
            f"{status_message(raw)}); grant `create tokenreviews.authentication.k8s.io` to its "
            "ServiceAccount (the chart's broker ClusterRole does, with broker.auth.mode="
            "kubernetes)"
        )
    if status == 401:
        raise Unauthenticated(api.server)
    if status == 0:
        raise ApiUnavailable(
            f"cannot reach the API server at {api.server} to check a caller's token "
            f"({detail}); check the broker's network path to the API server"
        )
    raise ApiUnavailable(
        f"the API server answered {status} to a TokenReview ({status_message(raw)}); "
        "check the cluster's health (kubectl get --raw /readyz)"
    )


def _identity(raw: bytes) -> Identity:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ApiUnavailable("the API server's TokenReview answer is not JSON") from None
    result = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(result, dict):
        raise ApiUnavailable("the API server's TokenReview answer has no status")
    user = result.get("user") or {}
    name = user.get("username") if isinstance(user, dict) else None
    if not result.get("authenticated") or not isinstance(name, str) or not name:
        raise TokenRejected(str(result.get("error") or "the token is not valid"))
    groups = user.get("groups") or []
    return Identity(name, tuple(str(g) for g in groups if isinstance(g, str)))
