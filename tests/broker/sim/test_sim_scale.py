"""A 1,000-GPU-node sim with in-process agents: it starts fast and serves every node."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker.sim import start_sim
from tests.broker.sim.helpers import Api, client_ssl, mcp_lines, ws_exec


@pytest.mark.e2e
async def test_thousand_nodes_in_process(tmp_path: Path) -> None:
    import aiohttp

    t0 = time.monotonic()
    async with start_sim(nodes=1000, in_process=True, workdir=tmp_path / "s") as sim:
        assert time.monotonic() - t0 < 10
        assert len(sim.nodes) == 1000 and sim.nodes[-1] == "gpu-node-0990"
        connector = aiohttp.TCPConnector(ssl=client_ssl(sim))
        async with aiohttp.ClientSession(connector=connector) as session:
            api = Api(sim, session)
            _, nodes, _ = await api.get(
                "/api/v1/nodes", params={"labelSelector": "nvidia.com/gpu.present=true"}
            )
            assert len(nodes["items"]) == 1000
            _, pods, _ = await api.get(
                "/api/v1/namespaces/gpu-diagnostics/pods",
                params={"labelSelector": "app.kubernetes.io/component=agent"},
            )
            assert len(pods["items"]) == 999  # every GPU node but the one without an agent
        picked = [sim.nodes[0], sim.nodes[500], sim.nodes[-1]]
        results = await asyncio.gather(
            *(ws_exec(sim, node, mcp_lines(("get_gpu_inventory", {}))) for node in picked)
        )
        for node, res in zip(picked, results, strict=True):
            inventory = res.answers()[2]["result"]["structuredContent"]
            assert inventory["node"]["name"] == node
