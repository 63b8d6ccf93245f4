"""Broken kubeconfigs and misbehaving credential plugins, through the real CLI: one clear
line on stderr and exit code 1, never a traceback; plugins that leave a child holding
their stdout, or hand out expired tokens, against the simulated cluster."""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from broker.cli.app import app
from broker.sim import SimServer, sim_in_thread

SERVER = "https://127.0.0.1:1"  # never contacted: every case fails before any request


def _doc(
    user: dict[str, Any] | list[Any] | str,
    cluster: dict[str, Any] | None = None,
    user_ref: str = "u",
) -> str:
    users: Any = [{"name": "u", "user": user}] if isinstance(user, dict) else user
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": SERVER}}],
        "users": users,
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": user_ref}}],
        "current-context": "x",
    }
    return yaml.safe_dump(doc)


def _expired_cert_pem() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-admin")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=35))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


CERT, KEY = _expired_cert_pem()
BROKEN: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "is empty"),
    "whitespace": (b"\n\n   \n", "is empty"),
    "binary": (bytes(range(256)) * 8, "is not a text file"),
    "malformed-yaml": (
        b"apiVersion: v1\nclusters: [\n  - name: c\n  cluster: {x\n",
        "not valid YAML at line",
    ),
    "a-list": (b"- 1\n- 2\n", "not a mapping"),
    "users-as-string": (_doc("oops").encode(), "`users` must be a list"),
    "user-entry-without-name": (
        _doc([{"user": {"token": "t"}}]).encode(),
        "users[0] has no name",
    ),
    "context-names-missing-user": (
        _doc({"token": "t"}, user_ref="nobody").encode(),
        "names user 'nobody'",
    ),
    "ca-not-base64": (
        _doc(
            {"token": "t"}, {"server": SERVER, "certificate-authority-data": "not base64!"}
        ).encode(),
        "`certificate-authority-data` that is not base64",
    ),
    "client-key-not-base64": (
        _doc({"client-certificate-data": _b64(CERT), "client-key-data": "%%%"}).encode(),
        "`client-key-data` that is not base64",
    ),
    "missing-token-file": (
        _doc({"tokenFile": "/nonexistent/token"}).encode(),
        "`tokenFile: /nonexistent/token`, which does not exist",
    ),
    "missing-ca-file": (
        _doc({"token": "t"}, {"server": SERVER, "certificate-authority": "no-ca.crt"}).encode(),
        "`certificate-authority: no-ca.crt`, which does not exist",
    ),
    "expired-client-certificate": (
        _doc({"client-certificate-data": _b64(CERT), "client-key-data": _b64(KEY)}).encode(),
        "expired at",
    ),
}


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def _one_clear_line(result: Any, message: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert len(lines[0]) < 600


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_kubeconfig_is_one_line_and_exit_1(case: str, tmp_path: Path) -> None:
    body, message = BROKEN[case]
    path = tmp_path / "kubeconfig"
    path.write_bytes(body)
    _one_clear_line(run("nodes", "--kubeconfig", str(path)), message)


@pytest.mark.parametrize("case", ["binary", "users-as-string", "expired-client-certificate"])
def test_serve_reports_a_broken_kubeconfig_the_same_way(case: str, tmp_path: Path) -> None:
    body, message = BROKEN[case]
    path = tmp_path / "kubeconfig"
    path.write_bytes(body)
    _one_clear_line(run("serve", "--kubeconfig", str(path)), message)


def test_kubeconfig_list_skips_empty_files_as_kubectl_does(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    broken = tmp_path / "broken"
    broken.write_bytes(BROKEN["users-as-string"][0])
    result = CliRunner().invoke(
        app, ["nodes"], env={"KUBECONFIG": f"{empty}{os.pathsep}{broken}", "COLUMNS": "400"}
    )
    _one_clear_line(result, "`users` must be a list")  # the empty file is not the problem


# -- credential plugins against the simulated cluster --------------------------------------
@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with sim_in_thread(nodes=3, scenario={}, in_process=True) as server:
        yield server


def _plugin_kubeconfig(sim: SimServer, tmp: Path, body: str) -> Path:
    """A kubeconfig for the sim whose user is an exec plugin running ``body`` (Python)."""
    doc = yaml.safe_load(Path(sim.kubeconfig).read_text())
    token = next(u for u in doc["users"] if u["name"] == "sim")["user"]["token"]
    script = tmp / "plugin"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, subprocess, sys\nTOKEN = {token!r}\n{body}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    stanza = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}
    doc["users"] = [{"name": "sim", "user": {"exec": stanza}}]
    doc["contexts"] = [c for c in doc["contexts"] if c["name"] == "sim"]
    doc["current-context"] = "sim"
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


CREDENTIAL = (
    'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": '
    '"ExecCredential", "status": STATUS}), flush=True)'
)


@pytest.mark.e2e
def test_a_plugin_leaving_a_child_on_stdout_is_not_a_hang(sim: SimServer, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    body = f"""
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # inherits stdout
open({str(pid_file)!r}, "w").write(str(child.pid))
STATUS = {{"token": TOKEN}}
{CREDENTIAL}
"""
    path = _plugin_kubeconfig(sim, tmp_path, body)
    try:
        started = time.monotonic()
        result = run("nodes", "-o", "json", "--kubeconfig", str(path))
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 15  # was: "did not finish within 30 s"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.e2e
def test_an_expired_plugin_token_is_not_rerun_per_node(
    sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = tmp_path / "runs"
    body = f"""
with open({str(runs)!r}, "a") as f:
    f.write("run\\n")
STATUS = {{"token": TOKEN, "expirationTimestamp": "2000-01-01T00:00:00Z"}}
{CREDENTIAL}
"""
    path = _plugin_kubeconfig(sim, tmp_path, body)
    result = run("sweep", "-o", "json", "--kubeconfig", str(path), "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert runs.read_text().count("run") == 1  # was: 10 runs in one 3-node sweep
    said = [r for r in caplog.records if "returned a token that expires at 2000-01-01" in r.message]
    assert len(said) == 1 and said[0].levelname == "WARNING"  # said once
