"""What is in the built image, and what is not: metadata the chart and registries rely
on, the pieces the pod needs, and nothing a diagnostics pod on every GPU node should
not carry."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.image.images import NVML_PATH, BuiltImage, Container

pytestmark = pytest.mark.image

SESSION = "\n".join(
    json.dumps(message)
    for message in (
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "image-test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "get_gpu_health", "arguments": {}},
        },
    )
)


def _config(image: BuiltImage) -> dict[str, Any]:
    inspected = json.loads(image.check("inspect", "--type", "image", image.name))
    config: dict[str, Any] = inspected["OCIv1"]["config"]
    return config


def test_labels_identify_the_agent_and_its_version(image: BuiltImage, repo_root: Path) -> None:
    labels = _config(image)["Labels"]
    version = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version == image.version
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert "GPU" in labels["org.opencontainers.image.description"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])


def test_the_pod_command_is_sleep_with_no_entrypoint(image: BuiltImage) -> None:
    config = _config(image)
    assert config["Cmd"] == ["sleep", "infinity"]
    assert not config.get("Entrypoint")
    env = dict(str(item).split("=", 1) for item in config["Env"])
    assert env["PATH"].split(":")[0] == "/opt/gpu-agent/bin"


def test_sleep_infinity_idles_until_stopped(container: Container) -> None:
    # coreutils' timeout exits 124 when it had to stop the command: sleep accepted
    # "infinity" and was still sleeping.
    done = container.run(["timeout", "1", "sleep", "infinity"])
    assert done.returncode == 124, done.stderr


def test_gpu_agent_is_on_path_for_root_and_the_non_root_user(container: Container) -> None:
    done = container.sh("command -v gpu-agent && gpu-agent --version && id -u && id -g")
    assert done.returncode == 0, done.stderr
    path, version, uid, gid = done.stdout.splitlines()
    assert path == "/opt/gpu-agent/bin/gpu-agent"
    assert version.startswith("gpu-agent ")
    assert (uid, gid) == ("0", "0")
    user = container.sh("id -un && id -u && id -g && gpu-agent --version", user="65532:65532")
    assert user.returncode == 0, user.stderr
    assert user.stdout.splitlines() == ["nonroot", "65532", "65532", version]
    assert container.sh("getent passwd 65532").stdout.startswith("nonroot:x:65532:65532:")


def test_only_the_agent_is_installed(container: Container) -> None:
    script = (
        "import importlib.util as u, sys;"
        "print(sys.version_info >= (3, 11));"
        "print(*(u.find_spec(m) is not None for m in "
        "('agent', 'pynvml', 'broker', 'mcp', 'pydantic', 'anyio', 'pip', 'setuptools')))"
    )
    done = container.run(["python3", "-c", script])
    assert done.returncode == 0, done.stderr
    modern, found = done.stdout.splitlines()
    assert modern == "True"
    assert found.split() == ["True", "True"] + ["False"] * 6
    listing = container.run(["ls", "/opt/gpu-agent/bin"]).stdout.split()
    assert "gpu-agent" in listing
    assert not {"broker", "kubectl-mcp", "pip", "pip3"} & set(listing)


def test_no_compilers_caches_or_package_lists(container: Container) -> None:
    done = container.sh(
        "for tool in gcc cc c++ make pip pip3; do command -v $tool; done;"
        "find /var/lib/apt/lists /var/cache/apt /root/.cache /tmp /src -mindepth 1 2>/dev/null;"
        "find / -xdev \\( -name '*.deb' -o -name '*.whl' -o -name '*.a' \\) -print 2>/dev/null"
    )
    assert done.stdout.split() == [], done.stdout


def test_runtime_mountpoints_are_empty_in_the_layers(image: BuiltImage) -> None:
    # The runtime mounts /proc, /sys and /dev; anything in the layers under them is a
    # copy of the build machine's (a mount left behind during the build).
    name = image.check("from", "--pull=never", image.name).strip()
    try:
        root = Path(image.check("mount", name).strip())
        leftovers = {
            d: sorted(p.name for p in (root / d).iterdir()) for d in ("proc", "sys", "dev")
        }
        assert leftovers == {"proc": [], "sys": [], "dev": []}
    finally:
        image.check("rm", name)


def test_the_image_carries_no_nvml_of_its_own(container: Container) -> None:
    # The runtime injects the driver's libnvidia-ml.so.1; a copy in the image would
    # shadow it and mismatch the node's driver.
    done = container.sh(f"ls {NVML_PATH} 2>&1; find / -xdev -name 'libnvidia-ml*' 2>/dev/null")
    assert "No such file" in done.stdout
    assert "libnvidia-ml" not in done.stdout.replace(NVML_PATH, "")


@pytest.mark.parametrize("backend", ["fake", "nvml"])
def test_every_module_the_agent_loads_has_bytecode(container: Container, backend: str) -> None:
    # In the pod the root filesystem is read-only: a module without bytecode is compiled
    # again on every exec, which the start-up budget cannot afford. (Without a library
    # to load, the nvml backend answers the tools/call with an error, after its imports.)
    done = container.run(
        ["env", "PYTHONVERBOSE=1", "gpu-agent", "--backend", backend], stdin=SESSION + "\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answered = [json.loads(line)["id"] for line in done.stdout.splitlines()]
    assert answered == [1, 2, 3]
    loaded = re.findall(r"^# code object from '?([^'\s]+)'?", done.stderr, re.MULTILINE)
    assert any("/agent/" in path for path in loaded), done.stderr[-2000:]
    assert any("pynvml" in path for path in loaded) == (backend == "nvml")
    from_source = [path for path in loaded if not path.endswith(".pyc")]
    assert from_source == []
