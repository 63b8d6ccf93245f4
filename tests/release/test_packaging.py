"""The Python distributions and the Helm chart package as a release makes them."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from agent import __version__
from tests.chart.helmchart import Chart
from tests.release.scripts import PYZ, ROOT


@pytest.mark.slow
def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = dist / f"k8s_gpu_mcp-{__version__}-py3-none-any.whl"
    sdist = dist / f"k8s_gpu_mcp-{__version__}.tar.gz"
    assert wheel.exists() and sdist.exists(), sorted(p.name for p in dist.iterdir())
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"agent/data/xid-catalog.tsv", "agent/data/default-scenario.json"} <= names
    assert "broker/sim/data/default-scenario.yaml" in names
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = zipfile.ZipFile(wheel).read(
        f"k8s_gpu_mcp-{__version__}.dist-info/entry_points.txt"
    )
    for script in (b"gpu-agent = agent.__main__:main", b"broker = broker.cli:main"):
        assert script in entry_points


@pytest.mark.needs_helm
def test_helm_package_carries_the_zipapp(chart: Chart, tmp_path: Path) -> None:
    done = chart.run(
        "package", str(ROOT / "charts" / "k8s-gpu-mcp"), "--destination", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    package = tmp_path / f"k8s-gpu-mcp-{__version__}.tgz"
    with tarfile.open(package) as tar:
        member = tar.extractfile("k8s-gpu-mcp/files/gpu-agent.pyz")
        assert member is not None and member.read() == PYZ.read_bytes()
    rendered = chart.run("template", "gpu-mcp", str(package), "--namespace", "gpu-diagnostics")
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: ConfigMap" in rendered.stdout
