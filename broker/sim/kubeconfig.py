"""Write the kubeconfig that points kubectl and the broker at the simulated cluster."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Credential:
    """One kubeconfig user (and the context of the same name)."""

    context: str
    token: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    namespace: str | None = None


@dataclass
class KubeconfigSpec:
    server: str
    ca_pem: bytes | None
    credentials: list[Credential] = field(default_factory=list)
    current: str = "sim"
    cluster: str = "sim"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render(spec: KubeconfigSpec) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": spec.server}
    if spec.ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(spec.ca_pem)
    users, contexts = [], []
    for cred in spec.credentials:
        user: dict[str, Any] = {}
        if cred.token is not None:
            user["token"] = cred.token
        if cred.cert_pem is not None and cred.key_pem is not None:
            user["client-certificate-data"] = _b64(cred.cert_pem)
            user["client-key-data"] = _b64(cred.key_pem)
        users.append({"name": cred.context, "user": user})
        ctx: dict[str, Any] = {"cluster": spec.cluster, "user": cred.context}
        if cred.namespace:
            ctx["namespace"] = cred.namespace
        contexts.append({"name": cred.context, "context": ctx})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": spec.cluster, "cluster": cluster}],
        "users": users,
        "contexts": contexts,
        "current-context": spec.current,
    }


def write(path: Path, spec: KubeconfigSpec) -> None:
    """Write atomically, readable only by the owner (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(render(spec), f, sort_keys=False)
    os.replace(tmp, path)
