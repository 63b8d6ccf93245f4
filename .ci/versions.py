"""Check that every place naming the release version agrees, and print that version.

One release is one version: the PyPI package (pyproject), the chart (Chart.yaml version),
the agent image tag (Chart.yaml appVersion, which the chart deploys and the release
workflow pushes), agent/ and broker/ ``__version__``, the Containerfile's VERSION label
and the version recorded in the chart's zipapp. Standard library only (the release
workflow runs it before anything is installed).

    python .ci/versions.py                # prints 0.1.0, or lists what disagrees (exit 1)
    python .ci/versions.py --tag v0.1.0   # also: the git tag names that version
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "k8s-gpu-mcp"


def _match(path: Path, pattern: str) -> str | None:
    found = re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE)
    return found.group(1) if found else None


def _zipapp_version() -> str | None:
    try:
        with zipfile.ZipFile(CHART / "files" / "gpu-agent.pyz") as zf:
            return str(json.loads(zf.read("ZIPAPP-INFO.json"))["agent"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def versions() -> dict[str, str | None]:
    """Where -> the version it names (None: not found)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]["version"]
    return {
        "pyproject.toml [project] version": project,
        "Chart.yaml version": _match(CHART / "Chart.yaml", r'^version:\s*"?([^"\s]+)"?\s*$'),
        "Chart.yaml appVersion (agent image tag)": _match(
            CHART / "Chart.yaml", r'^appVersion:\s*"?([^"\s]+)"?\s*$'
        ),
        "agent/__init__.py __version__": _match(
            ROOT / "agent" / "__init__.py", r'^__version__ = "([^"]+)"'
        ),
        "broker/__init__.py __version__": _match(
            ROOT / "broker" / "__init__.py", r'^__version__ = "([^"]+)"'
        ),
        "Containerfile ARG VERSION": _match(ROOT / "Containerfile", r"^ARG VERSION=(\S+)"),
        "chart zipapp (ZIPAPP-INFO.json)": _zipapp_version(),
    }


def problems(tag: str | None = None) -> tuple[str | None, list[str]]:
    """(the version when all agree, what disagrees)."""
    found = versions()
    expected = found["pyproject.toml [project] version"]
    wrong = [
        f"{where}: {value or 'not found'}" for where, value in found.items() if value != expected
    ]
    if tag is not None and tag != f"v{expected}":
        wrong.append(f"git tag {tag} (expected v{expected})")
    return (expected if not wrong else None), wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", help="the git tag being released, e.g. v0.1.0")
    args = parser.parse_args(argv)
    version, wrong = problems(args.tag)
    if wrong:
        expected = versions()["pyproject.toml [project] version"]
        print(
            f"versions disagree with pyproject.toml ({expected}):\n  "
            + "\n  ".join(wrong)
            + "\nSet them all to one version (then `make zipapp` for the chart's agent) "
            "and tag the commit v<version>.",
            file=sys.stderr,
        )
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
