"""One release, one version: pyproject, the chart, the image tag the chart deploys and the
release workflow pushes, the packages' __version__, and the chart's zipapp agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from agent import __version__ as agent_version
from broker import __version__ as broker_version
from tests.release.scripts import ROOT, versions

WORKFLOWS = ROOT / ".github" / "workflows"
CHART = ROOT / "charts" / "k8s-gpu-mcp"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_every_version_agrees() -> None:
    version, wrong = versions.problems()
    assert not wrong, wrong
    assert version == agent_version == broker_version
    chart = _yaml(CHART / "Chart.yaml")
    assert chart["version"] == chart["appVersion"] == version


def test_a_wrong_tag_is_refused_with_what_to_do() -> None:
    script = ROOT / ".ci" / "versions.py"
    good = subprocess.run(
        [sys.executable, script, "--tag", f"v{agent_version}"], capture_output=True, text=True
    )
    assert good.returncode == 0 and good.stdout.strip() == agent_version
    bad = subprocess.run(
        [sys.executable, script, "--tag", "v9.9.9"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert f"git tag v9.9.9 (expected v{agent_version})" in bad.stderr
    assert "tag the commit v<version>" in bad.stderr


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return steps


def _uses(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    return next(s for s in _steps(workflow, job) if s.get("uses", "").startswith(action + "@"))


def test_release_pushes_the_image_the_chart_deploys() -> None:
    release = _yaml(WORKFLOWS / "release.yml")
    values = _yaml(CHART / "values.yaml")
    # The chart's agent.source=image default: image.repository at tag "" = appVersion.
    assert values["image"]["tag"] == ""
    assert release["env"]["IMAGE"] == values["image"]["repository"]
    verify = " ".join(s.get("run", "") for s in _steps(release, "verify"))
    assert '.ci/versions.py --tag "$GITHUB_REF_NAME"' in verify and "make test" in verify
    build = _uses(release, "image", "docker/build-push-action")["with"]
    assert build["tags"] == "${{ env.IMAGE }}:${{ needs.verify.outputs.version }}"
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["push"] is True
    assert build["file"] == "Containerfile"
    assert release["jobs"]["image"]["permissions"]["packages"] == "write"


def test_release_pushes_the_chart_and_publishes_to_pypi_without_a_token() -> None:
    release = _yaml(WORKFLOWS / "release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as true
    chart_run = " ".join(s.get("run", "") for s in _steps(release, "chart"))
    assert "helm package charts/k8s-gpu-mcp" in chart_run
    assert 'helm push "dist/k8s-gpu-mcp-${VERSION}.tgz" "$CHART_REPOSITORY"' in chart_run
    assert release["env"]["CHART_REPOSITORY"].startswith("oci://ghcr.io/")
    pypi = release["jobs"]["pypi"]
    assert pypi["permissions"] == {"id-token": "write"}  # trusted publishing, nothing else
    assert _uses(release, "pypi", "pypa/gh-action-pypi-publish")
    assert "password" not in str(pypi)
    dist_run = " ".join(s.get("run", "") for s in _steps(release, "dist"))
    assert "python -m build" in dist_run and "twine check --strict" in dist_run


def test_ci_runs_make_test() -> None:
    ci = _yaml(WORKFLOWS / "ci.yml")
    assert any(s.get("run") == "make test" for s in _steps(ci, "test"))
