"""Fixtures for the image tests (helpers: tests/image/images.py)."""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.fakenvml.build import build as build_fake_nvml
from tests.image.images import BUILD_ENV, ROOT, BuiltImage, Container


@pytest.fixture(scope="session")
def image() -> BuiltImage:
    """The image `make image` built (the `make image-test` target builds it first)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the image is built for x86-64; this machine is {platform.machine()}")
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed: run `make image-test`, which installs and builds")
    if not BUILD_ENV.exists():
        pytest.fail(f"{BUILD_ENV} is missing: run `make image` (or `make image-test`) first")
    values = dict(line.split("=", 1) for line in BUILD_ENV.read_text().splitlines() if "=" in line)
    built = BuiltImage(
        name=values["IMAGE"],
        version=values["VERSION"],
        base=values["BASE_IMAGE"],
        archive=Path(values["OCI_ARCHIVE"]),
        global_options=(
            "--root",
            values["STORAGE_ROOT"],
            "--runroot",
            values["STORAGE_RUNROOT"],
            "--storage-driver",
            values["STORAGE_DRIVER"],
        ),
    )
    built.check("inspect", "--type", "image", built.name)  # fails clearly if it is gone
    return built


def _working_container(image: BuiltImage) -> Iterator[Container]:
    name = f"k8s-gpu-mcp-test-{os.getpid()}-{time.monotonic_ns()}"
    image.check("from", "--pull=never", "--name", name, image.name)
    try:
        yield Container(image, name)
    finally:
        image.check("rm", name)


@pytest.fixture(scope="session")
def container(image: BuiltImage) -> Iterator[Container]:
    """A working container of the image shared by tests that mount nothing and write
    nothing (with vfs each container is a full copy: seconds to make)."""
    yield from _working_container(image)


@pytest.fixture
def fresh_container(image: BuiltImage) -> Iterator[Container]:
    """A working container of its own, for a test that mounts files into it."""
    yield from _working_container(image)


@pytest.fixture(scope="session")
def fake_nvml_library() -> Path:
    """The fake libnvidia-ml.so.1, compiled with gcc (cached under build/)."""
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("gcc not found: it compiles the fake libnvidia-ml.so.1")
    return build_fake_nvml(ROOT / "build" / "fakenvml")
