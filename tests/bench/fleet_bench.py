"""Fleet-analysis figures (``make bench``): find_config_drift and find_stragglers over
1,000 warm nodes (budget ≤ 2 s each), and their answer sizes (budget ≤ 64 KiB), with the
simulated cluster in its own process. Planted outliers keep the answers non-trivial."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODES = 1000
ROUNDS = 3


def run() -> list[str]:
    return asyncio.run(_main())


def _scenario() -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"name": f"gpu-node-{i:04d}", "driver_version": "570.86.15"} for i in range(1, 31)
    ]
    nodes += [
        {"name": f"gpu-node-{i:04d}", "agent": {"faults": [{"gpu": 1, "kind": "thermal_throttle"}]}}
        for i in range(31, 41)
    ]
    return {"nodes": nodes}


async def _main() -> list[str]:
    from broker.fleet.analysis import config_drift, stragglers
    from broker.fleet.context import BrokerContext
    from broker.kube.config import ClusterConfig

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        scenario = Path(tmp) / "scenario.json"
        scenario.write_text(json.dumps(_scenario()))
        kubeconfig = Path(tmp) / "kubeconfig"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broker.sim", "--nodes", str(NODES), "--scenario",
            str(scenario), "--in-process", "--kubeconfig", str(kubeconfig),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if b"ready" not in line:
                raise RuntimeError(f"sim did not start: {line!r}")
            config = ClusterConfig(kubeconfig=str(kubeconfig))
            async with BrokerContext.open(config, call_timeout=120) as ctx:
                lines = []
                for name, fn in (
                    ("find_config_drift", config_drift),
                    ("find_stragglers", stragglers),
                ):
                    started = time.perf_counter()
                    answer = await fn(ctx, {})
                    cold = time.perf_counter() - started
                    warm = []
                    for _ in range(ROUNDS):
                        started = time.perf_counter()
                        answer = await fn(ctx, {})
                        warm.append(time.perf_counter() - started)
                    size = len(json.dumps(answer, separators=(",", ":")))
                    best = min(warm)
                    lines.append(
                        f"  {name}, {NODES} nodes: cold {cold:.2f} s, warm {best:.2f} s "
                        f"(budget <= 2 s) {'OK' if best <= 2.0 else 'OVER BUDGET'}; answer "
                        f"{size / 1024:.1f} KiB (budget <= 64 KiB)"
                    )
                return lines
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
