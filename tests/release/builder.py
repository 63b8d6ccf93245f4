"""The zipapp builder (.ci/build_zipapp.py) as a module, for tests and `make bench`.

Standard library only: the bench measures child processes' peak RSS, which on Linux
includes what the parent had mapped when it forked them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    # .ci is not a package (and must not become one): load the script by path.
    spec = importlib.util.spec_from_file_location("build_zipapp", ROOT / ".ci" / "build_zipapp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_zipapp", module)
    spec.loader.exec_module(module)
    return module


builder = _load()
PYZ: Path = builder.OUT
