"""Build the fake ``libnvidia-ml.so.1`` (fake_nvml.c) with gcc, cached by source hash.

Use::

    lib = build(repo_root / "build" / "fakenvml")        # .../<hash>/libnvidia-ml.so.1
    env = fake_env(lib, config_path)                      # LD_LIBRARY_PATH + FAKE_NVML_CONFIG
    subprocess.run([sys.executable, "-m", "agent", "--backend", "nvml"], env=env, ...)

pynvml dlopens ``libnvidia-ml.so.1`` by name, and the loader reads LD_LIBRARY_PATH
only at process start, so the fake must be put in place *before* the Python process
that imports pynvml starts (a subprocess).

Config (``FAKE_NVML_CONFIG`` = path of a text file, re-read at every nvmlInit): one
``key = value`` per line, ``#`` comments; ``gpu.N.key`` applies to GPU N only and wins
over the plain ``key`` (all GPUs), which wins over the built-in default (8x H100 SXM).

- node: ``gpu_count`` (8), ``name``, ``driver_version`` (575.57.08), ``nvml_version``,
  ``cuda_version`` (12090), ``init_error`` (an NVML return code nvmlInit gives, e.g. 9
  = driver not loaded), ``uuid_seed``.
- identity: ``uuid``, ``serial``, ``pci_bus`` (hex), ``pci_device_id``, ``vbios_version``,
  ``compute_capability`` (9.0), ``memory_total_mib`` (81559), ``memory_used_mib``.
- readings: ``temperature`` (33), ``temp_slowdown`` (89), ``temp_shutdown`` (92),
  ``power_w`` (71.5), ``power_limit_w`` (700, enforced), ``power_default_limit_w`` (700),
  ``power_min_limit_w``/``power_max_limit_w`` (200/700), ``clock_event_reasons`` (0x1 = idle),
  ``app_sm_clock``/``app_mem_clock`` (1980/2619), ``util_gpu``/``util_memory`` (0),
  ``pcie_gen``/``pcie_gen_max`` (5), ``pcie_width``/``pcie_width_max`` (16),
  ``ecc_pending`` (default: ``ecc_mode``), ``fabric_state`` (3 = completed; 0 = not
  supported), ``fabric_status`` (NVML code), ``fabric_clique``, ``fabric_health_mask`` (2),
  ``sm_clock``/``mem_clock``/``sm_clock_max``/``mem_clock_max``, ``persistence_mode``,
  ``ecc_mode``, ``ecc_{volatile,aggregate}_{corrected,uncorrected}``,
  ``retired_sbe``/``retired_dbe``/``retired_pending``,
  ``remap_{corrected,uncorrected,pending,failure}``, ``pcie_replay``, ``recovery_action``.
- NVLink: ``nvlink_count`` (18; 0 = no NVLink), ``nvlink_down`` (link list),
  ``nvlink.L.{replay,recovery,crc_flit,crc_data}``, ``nvlink_remote`` (switch | bridge).
- MIG: ``mig = 3g.40gb,3g.40gb`` (enables MIG with those instances), ``mig_pending``.
- processes: ``processes`` / ``graphics_processes`` = ``pid:name:MiB,pid:name:MiB``.
- faults: ``lost = 1`` (every query on the GPU returns GPU_IS_LOST), ``handle_error =
  CODE`` (nvmlDeviceGetHandleByIndex_v2 fails), ``unsupported = sym,sym`` (those C
  functions return NOT_SUPPORTED; default: the two retired-page queries, as on H100;
  the name NVML_FI_DEV_GET_GPU_RECOVERY_ACTION makes that field unsupported),
  ``fail = sym:CODE,...`` (a function returns CODE), ``sleep_s = S`` with optional
  ``sleep_on = sym,...`` (queries block S seconds: a hung GPU).
- ``live = 1``: re-read the file whenever it is replaced (change readings, or lose a
  GPU, in the middle of a session; replace the file atomically).
- A symbol absent from the library (FunctionNotFound): ``build(dest, omit=[sym])``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
CONFIG_ENV = "FAKE_NVML_CONFIG"
_FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-std=c11")


class FakeNvmlBuildError(RuntimeError):
    """gcc is missing or failed to compile the fake library."""


def gcc() -> str | None:
    """Path of gcc, or None (tests skip with a reason then)."""
    return shutil.which(os.environ.get("CC", "gcc"))


def build(dest_dir: str | os.PathLike[str], omit: Iterable[str] = ()) -> Path:
    """Compile fake_nvml.c into ``dest_dir/<hash>/libnvidia-ml.so.1`` and return that path.

    ``omit`` names exported functions to hide (pynvml then raises FunctionNotFound).
    The result is reused while the source, the omitted names and the flags are unchanged;
    concurrent builders are safe (compile to a temporary name, then rename).
    """
    compiler = gcc()
    if compiler is None:
        raise FakeNvmlBuildError("gcc not found: install gcc to build the fake libnvidia-ml.so.1")
    hidden = sorted(set(omit))
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(repr((hidden, _FLAGS)).encode())
    out_dir = Path(dest_dir) / digest.hexdigest()[:16]
    target = out_dir / LIBRARY_NAME
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".build-", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    script = tmp.with_suffix(".map")
    try:
        command = [compiler, *_FLAGS, f"-Wl,-soname,{LIBRARY_NAME}", "-o", str(tmp)]
        if hidden:
            # Explicit names in a version script beat the wildcard: these stay local.
            script.write_text("{ global: *; local: " + " ".join(f"{s};" for s in hidden) + " };\n")
            command.append(f"-Wl,--version-script={script}")
        command += [str(SOURCE), "-lpthread"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise FakeNvmlBuildError(f"gcc failed ({result.returncode}):\n{result.stderr}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        script.unlink(missing_ok=True)
    return target


def write_config(path: str | os.PathLike[str], settings: Mapping[str, object]) -> Path:
    """Write ``settings`` as a FAKE_NVML_CONFIG file and return its path."""
    lines = [f"{key} = {value}" for key, value in settings.items()]
    out = Path(path)
    out.write_text("\n".join(lines) + "\n")
    return out


def fake_env(
    library: Path,
    config: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a subprocess whose pynvml should load ``library``."""
    env = dict(os.environ if base is None else base)
    previous = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = str(library.parent) + (f":{previous}" if previous else "")
    if config is None:
        env.pop(CONFIG_ENV, None)
    else:
        env[CONFIG_ENV] = str(config)
    return env


def main(argv: list[str]) -> int:
    """``python -m tests.agent.fakenvml.build DEST [SYMBOL...]``: print the library path."""
    if not argv:
        print("usage: python -m tests.agent.fakenvml.build DEST_DIR [OMITTED_SYMBOL...]")
        return 2
    print(build(argv[0], omit=argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
