"""Render the chart with the real helm binary and pick the rendered objects apart."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "k8s-gpu-mcp"
CI_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "gpu-mcp"
NAMESPACE = "gpu-diagnostics"
DEFAULT_KUBE_VERSION = "1.33.0"
_KUBE_VERSION_RE = re.compile(r"^#\s*kube-version:\s*(\d+\.\d+\.\d+)", re.MULTILINE)


def kube_version_of(values_file: Path) -> str:
    """The Kubernetes release a ci values file targets (`# kube-version: X.Y.Z`)."""
    found = _KUBE_VERSION_RE.search(values_file.read_text())
    return found.group(1) if found else DEFAULT_KUBE_VERSION


class RenderError(Exception):
    """helm refused to render; the message is helm's stderr."""


@dataclass
class Chart:
    """Runs the real helm against charts/k8s-gpu-mcp with private helm home dirs."""

    helm: Path
    env: dict[str, str]
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.helm), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @staticmethod
    def _value_args(values: Sequence[Path], sets: Sequence[str], kube: str | None) -> list[str]:
        args: list[str] = []
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        if kube:
            args += ["--kube-version", kube]
        return args

    def template(
        self,
        *sets: str,
        values: Sequence[Path] = (),
        kube: str | None = None,
        namespace: str = NAMESPACE,
        extra: Sequence[str] = (),
        release: str = RELEASE,
        chart_dir: Path = CHART,
    ) -> list[dict[str, Any]]:
        """Render with `helm template`; the manifests parsed, in order. Cached."""
        args = (
            "template",
            release,
            str(chart_dir),
            "--namespace",
            namespace,
            *self._value_args(values, sets, kube),
            *extra,
        )
        if args not in self._cache:
            done = self.run(*args)
            if done.returncode != 0:
                self._cache[args] = RenderError(done.stderr.strip())
            else:
                self._cache[args] = [d for d in yaml.safe_load_all(done.stdout) if d]
        result = self._cache[args]
        if isinstance(result, RenderError):
            raise result
        return list(result)

    def template_error(
        self, *sets: str, values: Sequence[Path] = (), kube: str | None = None
    ) -> str:
        """Render expecting failure; returns helm's error text."""
        with pytest.raises(RenderError) as caught:
            self.template(*sets, values=values, kube=kube)
        return str(caught.value)

    def notes(self, *sets: str, values: Sequence[Path] = ()) -> str:
        """NOTES.txt as `helm install --dry-run=client` prints it (no cluster needed)."""
        done = self.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            *self._value_args(values, sets, None),
        )
        assert done.returncode == 0, done.stderr
        _, _, notes = done.stdout.partition("NOTES:\n")
        assert notes, f"no NOTES in helm output:\n{done.stdout[-2000:]}"
        return notes


def by_kind(docs: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def agent_container(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    container: dict[str, Any] = containers[0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
_DECIMAL = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (bytes for memory, cores for CPU)."""
    text = str(value)
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|m|k|M|G|)", text)
    assert match, f"unparsable quantity {text!r}"
    number, suffix = float(match.group(1)), match.group(2)
    return number * (_BINARY.get(suffix) or _DECIMAL[suffix])
