"""The agent inside the built image, driven by the real MCP SDK client over the
container process's stdin/stdout: the fake backend as root and as the non-root user,
and the NVML backend against a fake libnvidia-ml.so.1 mounted where the NVIDIA
container toolkit injects the real one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.agent.fakenvml.build import CONFIG_ENV, write_config
from tests.image.images import (
    AGENT_TOOLS,
    NVML_PATH,
    AgentSession,
    Container,
    agent_session,
    structured,
)

pytestmark = pytest.mark.image


async def _call_every_tool(session: AgentSession) -> dict[str, dict[str, Any]]:
    """List the tools, call each with no arguments, check each result against its
    outputSchema; return the structured results by tool name."""
    listing = await session.client.list_tools()
    assert {tool.name for tool in listing.tools} == AGENT_TOOLS
    results: dict[str, dict[str, Any]] = {}
    for tool in listing.tools:
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.output_schema is not None, tool.name
        content = structured(await session.client.call_tool(tool.name, {}))
        jsonschema.validate(content, tool.output_schema)
        results[tool.name] = dict(content)
    return results


@pytest.mark.parametrize("user", [None, "65532:65532"], ids=["root", "non-root"])
async def test_fake_backend_answers_every_tool(
    container: Container, tmp_path: Path, user: str | None
) -> None:
    async with agent_session(
        container, ["--backend", "fake"], tmp_path / "stderr", user
    ) as session:
        first = structured(await session.client.call_tool("get_gpu_health", {}))
        cold_start = time.perf_counter() - session.started
        results = await _call_every_tool(session)
    # Same scenario, same judgement, whichever call came first.
    assert first["status"] == results["get_gpu_health"]["status"]
    inventory = results["get_gpu_inventory"]
    assert inventory["gpus"], inventory
    # Spawning the container, starting Python and answering: seconds, not minutes.
    assert cold_start < 30, f"first tools/call answered after {cold_start:.1f}s"


def _saved_kernel_log(path: Path) -> Path:
    """A kmsg-format log with one Xid 79 on PCI bus 0x1B (the fake NVML's GPU 0),
    stamped a minute ago: kmsg counts microseconds since boot."""
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    stamp_us = int((uptime_s - 60) * 1_000_000)
    path.write_text(
        f"3,4100,{stamp_us},-;NVRM: Xid (PCI:0000:1b:00): 79, pid='<unknown>', "
        "name=<unknown>, GPU has fallen off the bus.\n"
    )
    return path


async def test_nvml_backend_reads_the_injected_library(
    fresh_container: Container, fake_nvml_library: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "fake-nvml.conf",
        {"gpu_count": 2, "name": "NVIDIA H200", "driver_version": "580.65.06"},
    )
    container = fresh_container
    container.mount(fake_nvml_library, NVML_PATH)
    container.mount(config, "/run/fake-nvml.conf")
    container.env[CONFIG_ENV] = "/run/fake-nvml.conf"
    # /dev/kmsg needs CAP_SYSLOG, which `buildah run` does not grant; the chart does.
    container.mount(_saved_kernel_log(tmp_path / "kmsg.log"), "/run/kmsg.log")
    args = ["--backend", "nvml", "--kmsg", "/run/kmsg.log"]
    async with agent_session(container, args, tmp_path / "stderr") as session:
        results = await _call_every_tool(session)
    inventory = results["get_gpu_inventory"]
    assert inventory["driver"]["driver_version"] == "580.65.06"
    gpus = inventory["gpus"]
    assert [gpu["name"] for gpu in gpus] == ["NVIDIA H200", "NVIDIA H200"]
    assert results["get_gpu_health"]["node"]["backend"] == "nvml"
    xids = results["analyze_xid_errors"]["xids"]
    assert [(x["xid"], x["gpu_index"], x["gpu_uuid"]) for x in xids] == [(79, 0, gpus[0]["uuid"])]


async def test_nvml_backend_without_the_library_says_what_is_missing(
    container: Container, tmp_path: Path
) -> None:
    # No runtime injection (e.g. the pod lacks the nvidia RuntimeClass): the agent still
    # answers, with an error that names the library.
    async with agent_session(container, ["--backend", "nvml"], tmp_path / "stderr") as session:
        result = await session.client.call_tool("get_gpu_inventory", {})
    assert result.is_error
    text = " ".join(getattr(item, "text", "") for item in result.content)
    assert "libnvidia-ml.so.1" in text, text
