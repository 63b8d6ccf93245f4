"""Build the agent as one reproducible zipapp: ``gpu-agent.pyz`` (``make zipapp``).

The agent is the standard library plus ``pynvml`` (one pure-Python module), so one zip
file runs it. The Helm chart carries the file in a ConfigMap and mounts it at
/usr/local/bin/gpu-agent in a stock Python image, so a cluster needs no registry push
(values ``agent.source: zipapp``).

Contents: ``__main__.py`` (source: it checks the Python version), ``agent/**.pyc`` and
``agent/data/*``, ``pynvml.pyc`` from the installed nvidia-ml-py with its licence in
``LICENSES/``, and ``ZIPAPP-INFO.json`` (versions, for people and tests).

Why bytecode and not sources: a zip is never written to, so from sources every exec
compiles ~550 KB (0.21 CPU-s and 37 MiB for the NVML backend, twice the budget), and a
chart carrying sources and bytecode nears Helm's 1 MiB release limit (the release Secret
holds the file twice: in the chart and in the rendered ConfigMap). The bytecode is
unchecked-hash ``.pyc`` (each records its source's hash: the stale check verifies them
against agent/ with any Python) compiled by Python 3.13, the chart's image; another
Python gets a clear error from ``__main__.py``.

Reproducible: entries sorted, timestamps fixed at 1980-01-01, modes fixed, archive
names (not build paths) in the bytecode; the same inputs and interpreter give the same
bytes.

    python .ci/build_zipapp.py [--out PATH] [--python PYTHON3.13]
    python .ci/build_zipapp.py --check      # exit 1 when the committed file is stale
"""

from __future__ import annotations

import _imp
import argparse
import base64
import glob
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "charts" / "k8s-gpu-mcp" / "files" / "gpu-agent.pyz"
SHEBANG = b"#!/usr/bin/env python3\n"
TARGET_PYTHON = (3, 13)  # the chart's zipapp image: docker.io/library/python:3.13-slim
INFO_NAME = "ZIPAPP-INFO.json"
LICENSE_NAME = "LICENSES/nvidia-ml-py.txt"
EPOCH = (1980, 1, 1, 0, 0, 0)
UNCHECKED_HASH_PYC = 0b01  # pyc header flags: hash-based, source not checked at import
MAIN = Path(__file__).with_name("zipapp_main.py")

# Runs under the target interpreter: compile each (name, path) to unchecked-hash pyc
# bytes. co_filename is the archive name, so no build path leaks into the file. optimize=2
# drops docstrings (a third of the bytes; nothing reads __doc__, and the agent has no
# assert): Helm stores the file twice in a release Secret of at most 1 MiB.
_COMPILE = """
import base64, importlib.util, json, sys
from importlib._bootstrap_external import _code_to_hash_pyc
out = {}
for name, path in json.load(sys.stdin):
    with open(path, "rb") as f:
        source = f.read()
    code = compile(source, name, "exec", dont_inherit=True, optimize=2)
    pyc = _code_to_hash_pyc(code, importlib.util.source_hash(source), False)
    out[name] = base64.b64encode(bytes(pyc)).decode()
json.dump(out, sys.stdout)
"""


class BuildError(RuntimeError):
    """The zipapp cannot be built; the message says what to install or set."""


def sources() -> dict[str, bytes]:
    """Archive name of each module's source (``agent/app.py``, ``pynvml.py``) -> bytes."""
    files: dict[str, bytes] = {}
    for path in sorted((ROOT / "agent").rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    files["pynvml.py"] = Path(_pynvml_path()).read_bytes()
    return files


def plain_files() -> dict[str, bytes]:
    """Archive name -> bytes of what the zipapp carries as is (no bytecode)."""
    files = {"__main__.py": MAIN.read_bytes()}
    for path in sorted((ROOT / "agent" / "data").iterdir()):
        if path.is_file():
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    files[LICENSE_NAME] = _pynvml_license(Path(_pynvml_path()).read_text(encoding="utf-8"))
    files[INFO_NAME] = (json.dumps(info(), indent=2, sort_keys=True) + "\n").encode()
    return files


def _pynvml_path() -> str:
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        raise BuildError(
            "pynvml is not installed in this Python: run `make venv` (or "
            "`pip install 'nvidia-ml-py>=13,<14'`) and build with .venv/bin/python"
        )
    return spec.origin


def _pynvml_license(source: str) -> bytes:
    """The BSD licence block at the top of pynvml.py (binary redistribution must carry it)."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").removeprefix(" ").rstrip())
    text = "\n".join(lines).strip("\n")
    if "Redistribution" not in text:
        raise BuildError(
            "pynvml.py no longer starts with its licence block: update _pynvml_license"
        )
    return (text + "\n").encode()


def info() -> dict[str, str]:
    """What ZIPAPP-INFO.json records (versions of what went in)."""
    init = (ROOT / "agent" / "__init__.py").read_text(encoding="utf-8")
    version = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    if version is None:
        raise BuildError('agent/__init__.py has no __version__ = "..." line')
    return {
        "agent": version.group(1),
        "nvidia-ml-py": importlib.metadata.version("nvidia-ml-py"),
        "bytecode": "cpython-{}{}".format(*TARGET_PYTHON),
        "entry": "agent.__main__:main",
    }


def find_python() -> str:
    """An interpreter of the target version: $ZIPAPP_PYTHON, python3.X on PATH, pyenv."""
    want = "python{}.{}".format(*TARGET_PYTHON)
    candidates = [os.environ.get("ZIPAPP_PYTHON", ""), shutil.which(want) or ""]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/*/bin/{want}")))
    for candidate in filter(None, candidates):
        if _version_of(candidate) == TARGET_PYTHON:
            return candidate
    raise BuildError(
        f"no {want} found: the zipapp's bytecode is compiled for the chart's "
        f"python:{TARGET_PYTHON[0]}.{TARGET_PYTHON[1]}-slim image. Install {want} "
        f"(apt, pyenv, actions/setup-python) or set ZIPAPP_PYTHON=/path/to/{want}"
    )


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if done.returncode == 0 and len(parts) == 2 else None


def compile_all(python: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """Archive name of each .pyc -> its bytes, compiled by ``python``."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for name, data in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            jobs.append((name, str(path)))
        done = subprocess.run(
            [python, "-I", "-c", _COMPILE],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise BuildError(f"compiling with {python} failed:\n{done.stderr}")
    return {name + "c": base64.b64decode(b64) for name, b64 in json.loads(done.stdout).items()}


def pack(members: dict[str, bytes]) -> bytes:
    """The zipapp's bytes: shebang, then a zip with sorted, fixed-time, fixed-mode entries."""
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(members):
            entry = zipfile.ZipInfo(name, date_time=EPOCH)
            entry.create_system = 3  # Unix, whatever builds it
            entry.external_attr = 0o100644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, members[name], compresslevel=9)
    return buf.getvalue()


def build(python: str | None = None) -> bytes:
    """Build the zipapp and return its bytes."""
    members = plain_files()
    members.update(compile_all(python or find_python(), sources()))
    return pack(members)


def stale_members(pyz: Path) -> list[str]:
    """Members of ``pyz`` that do not match this checkout, checked with any Python: plain
    files by content, bytecode by the source hash it records. pynvml counts as stale only
    when nvidia-ml-py's major version changed, so a new 13.x on PyPI does not fail CI."""
    with zipfile.ZipFile(pyz) as zf:
        have = {n: zf.read(n) for n in zf.namelist()}
    recorded = json.loads(have.get(INFO_NAME, b"{}"))
    want = plain_files()
    stale = [
        n
        for n in sorted(set(want) | {n for n in have if not n.endswith(".pyc")})
        if n not in (INFO_NAME, LICENSE_NAME) and have.get(n) != want.get(n)
    ]
    if recorded.get("agent") != info()["agent"] or recorded.get("bytecode") != info()["bytecode"]:
        stale.append(INFO_NAME)
    srcs = sources()
    same_nvml = recorded.get("nvidia-ml-py") == info()["nvidia-ml-py"]
    if not same_nvml:
        srcs.pop("pynvml.py")
        if str(recorded.get("nvidia-ml-py")).split(".")[0] != info()["nvidia-ml-py"].split(".")[0]:
            stale.append("pynvml.pyc")
    for name, source in srcs.items():
        if not _pyc_matches(have.get(name + "c"), source):
            stale.append(name + "c")
    expected = {n + "c" for n in sources()}
    stale += sorted(n for n in have if n.endswith(".pyc") and n not in expected)
    return stale


def _pyc_matches(pyc: bytes | None, source: bytes) -> bool:
    """Whether ``pyc`` is unchecked-hash bytecode of ``source`` (the hash is keyed by the
    pyc's own magic number, so any Python can verify bytecode of any version)."""
    if pyc is None or len(pyc) < 16:
        return False
    flags = int.from_bytes(pyc[4:8], "little")
    key = int.from_bytes(pyc[:4], "little")
    return flags == UNCHECKED_HASH_PYC and pyc[8:16] == _imp.source_hash(key, source)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT.relative_to(ROOT)}")
    parser.add_argument("--python", help="interpreter for the bytecode (default: find python3.13)")
    parser.add_argument("--check", action="store_true", help="only report whether --out is stale")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.check:
            stale = stale_members(args.out)
            if stale:
                print(
                    f"{args.out} is stale ({', '.join(stale)}): run `make zipapp`", file=sys.stderr
                )
            return 1 if stale else 0
        data = build(args.python)
    except BuildError as e:
        print(f"build_zipapp: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    args.out.chmod(0o755)
    print(f"{args.out}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
