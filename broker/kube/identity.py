"""Who the broker acts as (``--auth kubernetes``), and the headers that say so.

Impersonation is ``Impersonate-User`` plus one ``Impersonate-Group`` header per group on
every request and exec websocket; the API server then applies that user's RBAC and its
audit log names them. Nothing else is impersonated: the chart grants impersonate on
users, groups and serviceaccounts only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["GROUP_HEADER", "USER_HEADER", "Identity", "impersonate_clients"]

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"


@dataclass(frozen=True)
class Identity:
    """A caller as the API server knows them: user name and groups."""

    user: str
    groups: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.user


def impersonate_clients(clients: Iterable[Any], who: Identity) -> None:
    """Make every request of these kubernetes_asyncio ApiClients act as ``who``.

    kubernetes_asyncio's default headers are a dict (one value per name); aiohttp's
    session headers are a multidict sent on every request and websocket upgrade, so each
    group gets its own ``Impersonate-Group`` header, as ``kubectl --as-group`` sends.
    """
    if not who.user:
        raise ValueError("impersonation needs a user name")
    for client in clients:
        headers = client.rest_client.pool_manager.headers
        for name in (USER_HEADER, GROUP_HEADER):
            headers.popall(name, None)
        headers[USER_HEADER] = who.user
        for group in who.groups:
            headers.add(GROUP_HEADER, group)
