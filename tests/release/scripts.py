"""The release scripts in .ci (zipapp builder, version check) as modules, for tests and
`make bench`.

Standard library only: the bench measures child processes' peak RSS, which on Linux
includes what the parent had mapped when it forked them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    # .ci is not a package (and must not become one): load the script by path.
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


builder = _load("build_zipapp")
versions = _load("versions")
PYZ: Path = builder.OUT
