"""Check a kubeconfig before kubernetes_asyncio loads it, so that a broken one gives one
clear :class:`ConfigError` (what is wrong, where, what to do) instead of a traceback
from deep inside the loader: unreadable, empty, binary or malformed files, sections of
the wrong shape, a context naming a missing user or cluster, base64 fields that are not
base64, files it names that do not exist, and an expired client certificate."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

from broker.errors import ConfigError, clip

__all__ = ["check_documents", "check_selection"]

_SECTIONS = {"clusters": "cluster", "contexts": "context", "users": "user"}
_VIEW = "check it with `kubectl config view --kubeconfig {path}`"


def check_documents(paths: list[str]) -> list[str]:
    """The kubeconfig files worth merging (an empty file adds nothing, as for kubectl).
    Raises ConfigError for a file that cannot be a kubeconfig, or when all are empty."""
    import yaml

    usable: list[str] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                raw = f.read(16 * 1024 * 1024 + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
        if len(raw) > 16 * 1024 * 1024:
            raise ConfigError(f"kubeconfig {path} is over 16 MiB: that is not a kubeconfig")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(
                f"kubeconfig {path} is not a text file (not UTF-8: binary?); point "
                "--kubeconfig or KUBECONFIG at the YAML kubeconfig"
            ) from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(
                f"kubeconfig {path} is not valid YAML{where} ({problem}); fix it, or "
                + _VIEW.format(path=path)
            ) from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(
                f"kubeconfig {path} is a YAML {type(doc).__name__}, not a mapping with "
                "clusters, contexts and users; " + _VIEW.format(path=path)
            )
        _check_sections(doc, path)
        usable.append(path)
    if not usable:
        raise ConfigError(
            f"kubeconfig {os.pathsep.join(paths)} is empty; write a kubeconfig there (e.g. "
            "with your cloud CLI's get-credentials command) or pass another with --kubeconfig"
        )
    return usable


def _check_sections(doc: Mapping[str, Any], path: str) -> None:
    for section, key in _SECTIONS.items():
        entries = doc.get(section)
        if entries is None:
            continue
        shape = f"a list of {{name, {key}}} entries"
        if not isinstance(entries, list):
            raise ConfigError(
                f"kubeconfig {path}: `{section}` must be {shape}, not a "
                f"{type(entries).__name__}; " + _VIEW.format(path=path)
            )
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ConfigError(
                    f"kubeconfig {path}: {section}[{i}] has no name (must be {shape}); "
                    + _VIEW.format(path=path)
                )
            body = entry.get(key)
            if body is not None and not isinstance(body, dict):
                raise ConfigError(
                    f"kubeconfig {path}: {section} entry {clip(entry['name'])!r} has a "
                    f"`{key}` that is a {type(body).__name__}, not a mapping; "
                    + _VIEW.format(path=path)
                )


def check_selection(
    context: str,
    ctx: Mapping[str, Any],
    cluster: Mapping[str, Any],
    cluster_file: str,
    user: Mapping[str, Any] | None,
    user_file: str,
    user_names: list[str],
) -> None:
    """Check what the chosen context uses: its user exists, base64 fields decode, named
    files exist, a client certificate has not expired. Raises ConfigError."""
    user_name = ctx.get("user")
    if user_name and user is None:
        known = ", ".join(clip(n, 40) for n in user_names[:10]) or "none"
        raise ConfigError(
            f"context {clip(context)!r} names user {clip(str(user_name))!r}, which is not "
            f"defined in the kubeconfig (users: {known}); fix the context's user or pick "
            "another context with --context"
        )
    _base64(cluster, "certificate-authority-data", f"cluster of context {context!r}")
    _exists(cluster, "certificate-authority", cluster_file, f"cluster of context {context!r}")
    if user is None:
        return
    who = f"user {clip(str(user_name))!r}"
    cert = _base64(user, "client-certificate-data", who)
    _base64(user, "client-key-data", who)
    for key in ("client-certificate", "client-key", "tokenFile"):
        _exists(user, key, user_file, who)
    if cert is not None:
        check_certificate_dates(cert, who)
    elif isinstance(user.get("client-certificate"), str):
        try:
            with open(_resolve(user["client-certificate"], user_file), "rb") as f:
                cert = f.read(1024 * 1024)
        except OSError:
            return
        check_certificate_dates(cert, who, f" ({clip(user['client-certificate'], 200)})")


def _base64(doc: Mapping[str, Any], key: str, who: str) -> bytes | None:
    value = doc.get(key)
    if value is None:
        return None
    try:
        # Line breaks are tolerated (as Go's decoder does); anything else must be base64.
        return base64.b64decode("".join(str(value).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"the {who} has a `{key}` that is not base64; re-encode the PEM with "
            f"`base64 -w0 FILE`, or use `{key.removesuffix('-data')}` with a file path"
        ) from None


def _resolve(value: str, kubeconfig: str) -> str:
    path = os.path.expanduser(value)
    if not os.path.isabs(path):  # as kubectl: relative to the kubeconfig's folder
        path = os.path.join(os.path.dirname(os.path.abspath(kubeconfig)), path)
    return path


def _exists(doc: Mapping[str, Any], key: str, kubeconfig: str, who: str) -> None:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        return
    path = _resolve(value, kubeconfig)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        problem = "does not exist" if not os.path.exists(path) else "cannot be read"
        raise ConfigError(
            f"the {who} has `{key}: {clip(value, 200)}`, which {problem} ({path}); fix the "
            "path in the kubeconfig or recreate the file (e.g. log in again)"
        )


def check_certificate_dates(pem_or_der: bytes, who: str, source: str = "") -> None:
    """Raise ConfigError when a client certificate has expired or is not valid yet."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - installed with the broker (mcp -> pyjwt[crypto])
        return
    try:
        if b"-----BEGIN" in pem_or_der:
            cert = x509.load_pem_x509_certificate(pem_or_der)
        else:
            cert = x509.load_der_x509_certificate(pem_or_der)
    except ValueError:
        raise ConfigError(
            f"the {who} has a client certificate{source} that is not a PEM certificate; "
            "re-issue the credentials (log in again)"
        ) from None
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        raise ConfigError(
            f"the client certificate of the {who} expired at "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it (log in again, or ask "
            "your cluster admin for a new one): the API server refuses expired certificates"
        )
    if cert.not_valid_before_utc > now + dt.timedelta(minutes=5):
        raise ConfigError(
            f"the client certificate of the {who} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this machine's clock"
        )
