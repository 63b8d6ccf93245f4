"""End to end: the chart's agent pod, as rendered, reads the host journal and sysfs.

The gpu-agent the ConfigMap carries runs under Python 3.13 with exactly the environment
the DaemonSet gives its container, over a container filesystem built from the pod spec's
own mounts (tests/chart/hostfs.py), and the real MCP SDK client asks it for health and
XIDs. So the variable names the chart sets are the ones the agent reads, the mounted paths
are where those variables point, and three sysfs directories are enough for the agent's
symlinked reads. Only the GPUs are fake (--backend fake: no NVML here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.chart.helmchart import Chart
from tests.chart.hostfs import NOT_MOUNTED, PORTS, ContainerView, container_view, write_host

pytestmark = pytest.mark.needs_helm

SOURCES = ("hostJournal.enabled=true", "hostSys.enabled=true")
AGENT = "/usr/local/bin/gpu-agent"  # where the chart mounts the zipapp
YEAR_MIN = 525600


def _log_file(path: Path) -> TextIO:
    return open(path, "w")  # noqa: SIM115  (closed by the caller's exit stack)


@asynccontextmanager
async def pod_agent(python: str, view: ContainerView) -> AsyncIterator[ClientSession]:
    """`gpu-agent --backend fake` as the broker's exec starts it in the pod: the
    container's environment only (-I: no PYTHON* variables, no site-packages)."""
    params = StdioServerParameters(
        command=python,
        args=["-I", "-S", str(view.path(AGENT)), "--backend", "fake"],
        env=view.env,
        cwd=str(view.root),
    )
    async with AsyncExitStack() as stack:
        errlog = stack.enter_context(_log_file(view.root.parent / "agent.stderr"))
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def ask(session: ClientSession, tool: str) -> dict[str, Any]:
    result = await session.call_tool(tool, {"since_minutes": YEAR_MIN})
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_the_rendered_pod_reads_the_host_journal_and_sysfs(
    chart: Chart, target_python: str, tmp_path: Path
) -> None:
    host = write_host(tmp_path / "host")
    view = container_view(chart.template(*SOURCES), host, tmp_path / "container")
    assert view.host_mounts == {
        "/host/journal": "/var/log/journal",
        "/host/sys/bus": "/sys/bus",
        "/host/sys/class": "/sys/class",
        "/host/sys/devices": "/sys/devices",
    }
    for path in NOT_MOUNTED:  # cgroupfs and debugfs stay on the host
        assert not view.path("/host/" + path).exists()
    async with pod_agent(target_python, view) as session:
        health = await ask(session, "get_gpu_health")
        xids = await ask(session, "analyze_xid_errors")
    sources = health["sources"]
    sys_root = str(view.path("/host/sys"))
    assert sources["sysfs"] == {
        "root": sys_root,
        "pcie_aer_gpus": 1,
        "infiniband_ports": len(PORTS),
    }
    journal = sources["journal"]
    assert journal["readable"] is True, journal
    assert journal["source"].startswith(f"journal {view.path('/host/journal')} (1 file")
    assert journal["before_this_boot"] == 1  # the Xid (the journal's other line is no NVRM)
    gpu0 = health["gpus"][0]
    assert gpu0["metrics"]["pcie_aer"] == {"correctable": 180, "nonfatal": 2, "fatal": 0}
    assert [(p["device"], p["active"]) for p in health["infiniband"]] == [
        ("mlx5_0", True),
        ("mlx5_1", False),
    ]
    lost = [x for x in xids["xids"] if x["xid"] == 79 and x["gpu_index"] == 0]
    assert lost and lost[0]["before_last_boot"] is True, xids["xids"]
    assert "journal" in xids["source"]
    assert (tmp_path / "agent.stderr").read_text() == ""


async def test_without_the_mounts_the_pod_says_the_sources_were_not_there(
    chart: Chart, target_python: str, tmp_path: Path
) -> None:
    """The control: the default pod over the same host sees neither, and says so."""
    host = write_host(tmp_path / "host")
    view = container_view(chart.template(), host, tmp_path / "container")
    assert view.host_mounts == {}
    async with pod_agent(target_python, view) as session:
        health = await ask(session, "get_gpu_health")
    journal = health["sources"]["journal"]
    assert journal["source"] is None and journal["readable"] is False
    assert "GPU_AGENT_JOURNAL" in journal["reason"]
    assert health["sources"]["sysfs"]["root"] == "scenario"  # the fake node's own, not /host
