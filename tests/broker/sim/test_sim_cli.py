"""``python -m broker.sim``: one ready line, a working kubeconfig, a clean Ctrl-C that
takes running agents down with it, and a clear error for a bad scenario."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.stream import WsApiClient


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
async def test_cli_runs_until_interrupted_and_stops_its_agents(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.sim", "--nodes", "3", "--kubeconfig", str(kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("sim ready: 10 GPU nodes + 2 CPU nodes at https://127.0.0.1:")
        assert f"kubeconfig {kubeconfig} (context sim)" in line
        doc = yaml.safe_load(kubeconfig.read_text())
        assert doc["current-context"] == "sim"
        assert {c["name"] for c in doc["contexts"]} >= {"sim", "sim-cert", "sim-viewer", "sim-sre"}
        assert kubeconfig.stat().st_mode & 0o077 == 0

        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as plain:
            pods = await client.CoreV1Api(api_client=plain).list_namespaced_pod(
                "gpu-diagnostics", field_selector="spec.nodeName=gpu-node-001"
            )
            pod = pods.items[0].metadata.name
        async with WsApiClient(configuration=cfg) as api:
            core = client.CoreV1Api(api_client=api)
            cm = await core.connect_get_namespaced_pod_exec(
                pod, "gpu-diagnostics", command=["gpu-agent"], stdin=True, stdout=True,
                stderr=True, tty=False, _preload_content=False,
                _headers={"sec-websocket-protocol": "v5.channel.k8s.io"},
            )  # fmt: skip
            async with cm as ws:
                ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                await ws.send_bytes(b"\x00" + json.dumps(ping).encode() + b"\n")
                async for msg in ws:  # the agent answers: it is running
                    if msg.data[:1] == b"\x01" and b'"id":1' in msg.data:
                        break
                agents = _children(proc.pid)
                assert agents, "the exec should have started an agent subprocess"
                proc.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(proc.wait(), 20) == 0
        for pid in agents:
            for _ in range(50):
                if not _alive(pid):
                    break
                await asyncio.sleep(0.1)
            assert not _alive(pid), f"agent {pid} outlived the sim"
    finally:
        if proc.returncode is None:  # a failed assertion: stop it cleanly (temp dir removed)
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def test_cli_rejects_a_bad_scenario(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - name: n1\n    gpus: 8\n")
    out = subprocess.run(
        [sys.executable, "-m", "broker.sim", "--scenario", str(bad)],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    assert out.returncode == 2
    assert "broker sim: error:" in out.stderr and "unknown key 'gpus'" in out.stderr
    assert out.stdout == ""
