"""Cluster configuration found the way kubectl finds it, and the credentials it yields."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.errors import ConfigError
from broker.kube import config as config_mod
from broker.kube.config import ClusterConfig, KubeApi
from broker.sim.tls import CertificateAuthority

SERVER = "http://127.0.0.1:6443"


def kubeconfig(
    path: Path,
    user: dict[str, Any],
    *,
    context: str = "ctx",
    cluster: str = "c1",
    server: str = SERVER,
    current: str | None = "ctx",
) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server}}],
        "users": [{"name": f"{context}-user", "user": user}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": f"{context}-user"}}],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def plugin(tmp: Path, body: str) -> Path:
    """A small exec credential plugin script (Python, run by path)."""
    script = tmp / "mint-token"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def open_api(cfg: ClusterConfig, environ: dict[str, str]) -> KubeApi:
    return await KubeApi.open(cfg, environ)


async def test_bearer_token_from_explicit_kubeconfig(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", {"token": "s3cret"})
    api = await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})
    try:
        assert api.server == SERVER
        assert api.configuration.api_key["BearerToken"] == "Bearer s3cret"
        assert api.namespace == "gpu-diagnostics"
        assert api.context == "ctx"
        assert "context ctx" in config_mod.describe(api)
    finally:
        await api.aclose()


async def test_kubeconfig_env_list_is_merged_first_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", {"token": "tok-a"}, context="a", cluster="ca", current="a")
    second = kubeconfig(
        tmp_path / "b", {"token": "tok-b"}, context="b", cluster="cb", current="b",
        server="http://127.0.0.1:7443",
    )  # fmt: skip
    env = {"KUBECONFIG": f"{first}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{second}"}
    api = await open_api(ClusterConfig.from_options(), env)
    try:
        assert api.context == "a"  # the first file's current-context wins, as in kubectl
        assert api.configuration.api_key["BearerToken"] == "Bearer tok-a"
    finally:
        await api.aclose()
    api = await open_api(ClusterConfig.from_options(context="b", namespace="diag"), env)
    try:
        assert api.server == "http://127.0.0.1:7443"
        assert api.configuration.api_key["BearerToken"] == "Bearer tok-b"
        assert api.namespace == "diag"
    finally:
        await api.aclose()


async def test_default_kubeconfig_is_under_home(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", {"token": "home"})
    api = await open_api(ClusterConfig(), {"HOME": str(tmp_path)})
    try:
        assert api.configuration.api_key["BearerToken"] == "Bearer home"
    finally:
        await api.aclose()


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        ({"kubeconfig": "/nonexistent/kc"}, {}, "no such file"),
        ({}, {"KUBECONFIG": "/nonexistent/a:/nonexistent/b"}, "names no existing file"),
        ({}, {"HOME": "/nonexistent"}, "no Kubernetes configuration found"),
    ],
)
async def test_missing_configuration_says_what_to_do(
    options: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await open_api(ClusterConfig.from_options(**options), environ)


async def test_unknown_context_lists_the_known_ones(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", {"token": "t"})
    with pytest.raises(ConfigError, match=r"context 'prod' is not in the kubeconfig \(have: ctx\)"):
        await open_api(ClusterConfig.from_options(kubeconfig=str(path), context="prod"), {})


async def test_no_current_context_asks_for_one(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", {"token": "t"}, current=None)
    with pytest.raises(ConfigError, match="pass --context"):
        await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})


async def test_in_cluster_when_no_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_bytes(CertificateAuthority().cert_pem)
    monkeypatch.setattr(config_mod, "SERVICE_ACCOUNT_DIR", str(sa))
    env = {
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    api = await open_api(ClusterConfig(), env)
    try:
        assert api.server == "https://10.0.0.1:443"
        assert api.configuration.api_key["BearerToken"] == "Bearer pod-token"
        assert api.context is None and "in-cluster" in config_mod.describe(api)
    finally:
        await api.aclose()


async def test_in_cluster_without_a_token_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_mod, "SERVICE_ACCOUNT_DIR", str(tmp_path / "none"))
    env = {
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    with pytest.raises(ConfigError, match="automountServiceAccountToken"):
        await open_api(ClusterConfig(), env)


async def test_client_certificate_paths_resolve_against_the_kubeconfig(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    pair = ca.client_pair("alice")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "certs" / "me.crt").write_bytes(pair.cert_pem)
    (tmp_path / "certs" / "me.key").write_bytes(pair.key_pem)
    user = {"client-certificate": "certs/me.crt", "client-key": "certs/me.key"}
    path = kubeconfig(tmp_path / "kc", user, server="https://127.0.0.1:6443")
    doc = yaml.safe_load(path.read_text())
    doc["clusters"][0]["cluster"]["certificate-authority"] = "certs/ca.crt"
    path.write_text(yaml.safe_dump(doc))
    api = await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})
    try:
        assert api.configuration.cert_file == str(tmp_path / "certs" / "me.crt")
        assert api.configuration.key_file == str(tmp_path / "certs" / "me.key")
        assert api.configuration.ssl_ca_cert == str(tmp_path / "certs" / "ca.crt")
        assert "BearerToken" not in api.configuration.api_key
    finally:
        await api.aclose()


async def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "me.crt").write_text("not a certificate")
    (tmp_path / "me.key").write_text("not a key")
    user = {"client-certificate": "me.crt", "client-key": "me.key"}
    path = kubeconfig(tmp_path / "kc", user, server="https://127.0.0.1:6443")
    with pytest.raises(ConfigError, match=r"client certificate \(me.crt\) that is not a PEM"):
        await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})


async def test_exec_plugin_mints_the_token_without_stdin(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    body = f"""
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
info["stdin"] = sys.stdin.read()
info["extra"] = os.environ.get("EXTRA")
json.dump(info, open({str(seen)!r}, "w"))
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": "minted-" + sys.argv[1]}}}}))
"""
    script = plugin(tmp_path, body)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": f"./{script.name}",  # relative: resolved against the kubeconfig's folder
            "args": ["42"],
            "env": [{"name": "EXTRA", "value": "yes"}],
            "provideClusterInfo": True,
            "interactiveMode": "Never",
        }
    }
    path = kubeconfig(tmp_path / "kc", user)
    api = await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})
    try:
        assert api.configuration.api_key["BearerToken"] == "Bearer minted-42"
    finally:
        await api.aclose()
    info = json.loads(seen.read_text())
    assert info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == SERVER
    assert info["stdin"] == ""  # the broker's stdin (maybe an MCP stream) is not shared
    assert info["extra"] == "yes"


async def test_exec_plugin_token_is_refreshed_when_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_mod, "_RERUN_FLOOR_S", 0.0)  # the floor has its own test
    counter = tmp_path / "count"
    body = f"""
n = int(open({str(counter)!r}).read()) + 1 if os.path.exists({str(counter)!r}) else 1
open({str(counter)!r}, "w").write(str(n))
status = {{"token": f"t{{n}}", "expirationTimestamp": "2000-01-01T00:00:00Z"}}
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": status}}))
"""
    script = plugin(tmp_path, body)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(script)}}
    api = await open_api(
        ClusterConfig.from_options(kubeconfig=str(kubeconfig(tmp_path / "kc", user))), {}
    )
    try:
        assert api.configuration.api_key["BearerToken"] == "Bearer t1"
        assert await api.refresh_credentials() is True  # expired: re-run
        assert api.configuration.api_key["BearerToken"] == "Bearer t2"
    finally:
        await api.aclose()


async def test_exec_plugin_with_a_lasting_token_is_not_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_mod, "_FORCED_RERUN_FLOOR_S", 0.0)
    body = """status = {"token": "t", "expirationTimestamp": "2999-01-01T00:00:00Z"}
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
                  "kind": "ExecCredential", "status": status}))"""
    script = plugin(tmp_path, body)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}}
    api = await open_api(
        ClusterConfig.from_options(kubeconfig=str(kubeconfig(tmp_path / "kc", user))), {}
    )
    try:
        assert await api.refresh_credentials() is False
        assert await api.refresh_credentials(force=True) is True
    finally:
        await api.aclose()


V1 = "client.authentication.k8s.io/v1"
PLUGIN_FAILURES = [
    (
        "sys.stderr.write('please run gcloud auth login'); sys.exit(3)",
        "exited with code 3: please run gcloud auth login",
    ),
    ("print('hello')", "not an ExecCredential JSON"),
    (
        f"print(json.dumps({{'apiVersion': '{V1}', 'kind': 'ExecCredential', 'status': {{}}}}))",
        "neither a token nor a client certificate",
    ),
    (
        "print(json.dumps({'apiVersion': 'other/v1', 'kind': 'ExecCredential',"
        " 'status': {'token': 'x'}}))",
        "answered apiVersion 'other/v1'",
    ),
    ("import time; time.sleep(30)", "did not finish within 0.5 s"),
]


@pytest.mark.parametrize(("body", "message"), PLUGIN_FAILURES)
async def test_exec_plugin_failures_are_explained(tmp_path: Path, body: str, message: str) -> None:
    script = plugin(tmp_path, body)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}}
    cfg = ClusterConfig(kubeconfig=str(kubeconfig(tmp_path / "kc", user)), credential_timeout=0.5)
    with pytest.raises(ConfigError, match=message):
        await open_api(cfg, {})


async def test_missing_exec_plugin_shows_the_install_hint(tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "gke-gcloud-auth-plugin-not-installed",
            "installHint": "Install gke-gcloud-auth-plugin with gcloud components install.",
        }
    }
    path = kubeconfig(tmp_path / "kc", user)
    with pytest.raises(ConfigError, match="gcloud components install"):
        await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})


async def test_exec_plugin_that_needs_a_terminal_is_refused(tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "true",
            "interactiveMode": "Always",
        }
    }
    path = kubeconfig(tmp_path / "kc", user)
    with pytest.raises(ConfigError, match="interactive terminal"):
        await open_api(ClusterConfig.from_options(kubeconfig=str(path)), {})
