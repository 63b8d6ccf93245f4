"""Broker pool figures against the budgets in ARCHITECTURE.md (``make bench``).

- warm proxied call, added latency p50: ``pool.call`` to a warm session through the
  simulated API server's exec websocket, vs the same in-process agent called directly,
  in the same process (budget ≤ 3 ms);
- warm sweep of 200 nodes vs real ``kubectl exec -i POD -- gpu-agent`` once per node,
  8 in parallel, against the same simulated cluster (budget ≥ 30× faster); cold sweep;
- memory per open node session at 1,000 nodes, measured with tracemalloc in the broker
  process while the sim (with in-process agents) runs in its own process (≤ 256 KiB);
- at the limit: cold and warm sweeps at 1,000 and 5,000 nodes (``BENCH_NODES``, default
  ``1000,5000``; e.g. ``BENCH_NODES=1000`` for a quick run) with the sim in its own process:
  healthy nodes lost, broker CPU per node, RSS and memory per session, answer size.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
TOOL = "get_gpu_health"
SWEEP_NODES = 200
MEMORY_NODES = 1000
LATENCY_CALLS = 300


def run() -> list[str]:
    """Every figure, one line each. Each scale step runs in a fresh process, so that its
    RSS is its own and not what earlier sections left behind."""
    lines = asyncio.run(_main())
    for nodes in _scale_sizes():
        done = subprocess.run(
            [sys.executable, "-m", "tests.bench.broker_bench", "scale", str(nodes)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        lines += done.stdout.splitlines()
        if done.returncode:
            lines.append(f"  {nodes}-node step failed: {done.stderr.strip()[-600:]}")
    return lines


async def _scale_alone(nodes: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="broker-bench-") as tmp:
        return await _at_scale(Path(tmp), nodes)


async def _main() -> list[str]:
    lines: list[str] = []
    lines += await _latency()
    with tempfile.TemporaryDirectory(prefix="broker-bench-") as tmp:
        lines += await _sweeps(Path(tmp))
        lines += await _memory(Path(tmp))
    return lines


@asynccontextmanager
async def _pool(kubeconfig: Path, **options: Any) -> AsyncIterator[Any]:
    """A NodePool on the cluster, wired by its one owner (BrokerContext)."""
    async with _context(kubeconfig, **options) as ctx:
        yield ctx.pool


def _context(kubeconfig: Path, **options: Any) -> Any:
    from broker.fleet.context import BrokerContext
    from broker.kube.config import ClusterConfig

    return BrokerContext.open(ClusterConfig(kubeconfig=str(kubeconfig)), **options)


# -- added latency ---------------------------------------------------------------------
class _DirectAgent:
    """The agent's protocol core called directly (what the sim's in-process exec runs)."""

    def __init__(self, scenario: Path) -> None:
        from agent.app import create_session

        self._loop = asyncio.get_running_loop()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._session = create_session(
            ["--backend", "fake", "--scenario", str(scenario)], self._write
        )
        self._next = 0

    def _write(self, data: bytes) -> None:  # maybe from an agent worker thread
        message = json.loads(data)
        future = self._waiting.pop(message.get("id"), None)
        if future is not None:
            self._loop.call_soon_threadsafe(future.set_result, message)

    async def call(self, tool: str) -> dict[str, Any]:
        self._next += 1
        future = self._loop.create_future()
        self._waiting[self._next] = future
        request = {"jsonrpc": "2.0", "id": self._next, "method": "tools/call",
                   "params": {"name": tool, "arguments": {}}}  # fmt: skip
        self._session.feed(json.dumps(request).encode())
        return await future

    def close(self) -> None:
        self._session.close()


async def _latency() -> list[str]:
    from broker.sim import start_sim

    async with start_sim(nodes=1, scenario={}, in_process=True) as sim:
        node = sim.nodes[0]
        scenario = sim.kubeconfig.parent / "direct-agent.json"
        scenario.write_text(json.dumps(sim.cluster.agent_scenario(node)))
        direct = _DirectAgent(scenario)
        try:
            async with _pool(sim.kubeconfig) as pool:
                await pool.call(node, TOOL, {})
                await direct.call(TOOL)
                ours: list[float] = []
                theirs: list[float] = []
                for _ in range(LATENCY_CALLS):  # interleaved, so both see the same noise
                    started = time.perf_counter()
                    answer = await direct.call(TOOL)
                    theirs.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    result = await pool.call(node, TOOL, {})
                    ours.append(time.perf_counter() - started)
                    assert result.ok and "result" in answer, result.error
        finally:
            direct.close()
    p50_pool, p50_direct = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    added = p50_pool - p50_direct
    return [
        f"  warm proxied call ({TOOL}, {LATENCY_CALLS} calls): pool p50 {p50_pool:.2f} ms, "
        f"direct agent p50 {p50_direct:.2f} ms",
        f"  added latency p50: {added:.2f} ms (budget <= 3 ms) "
        f"{'OK' if added <= 3.0 else 'OVER BUDGET'}",
    ]


# -- sweeps ----------------------------------------------------------------------------
@asynccontextmanager
async def _sim_process(tmp: Path, nodes: int) -> AsyncIterator[tuple[Path, int]]:
    """The sim in its own process (agents in-process there); yields (kubeconfig, pid)."""
    scenario = tmp / "healthy.json"
    scenario.write_text("{}")
    kubeconfig = tmp / f"kubeconfig-{nodes}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.sim", "--nodes", str(nodes), "--scenario", str(scenario),
        "--in-process", "--kubeconfig", str(kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if b"ready" not in line:
            err = await proc.stderr.read()
            raise RuntimeError(f"sim did not start: {line!r} {err[-500:]!r}")
        yield kubeconfig, proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _exec_input() -> bytes:
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "kubectl-bench", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": TOOL, "arguments": {}}},
    ]  # fmt: skip
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


async def _kubectl_sweep(kubeconfig: Path, pods: list[str], namespace: str) -> tuple[float, int]:
    """``kubectl exec -i POD -- gpu-agent`` per pod, 8 at once: (seconds, answered)."""
    gate = asyncio.Semaphore(8)
    payload = _exec_input()

    async def one(pod: str) -> bool:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                str(KUBECTL), "--kubeconfig", str(kubeconfig), "exec", "-i", "-n", namespace,
                pod, "--", "gpu-agent",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate(payload)
            return any(json.loads(ln).get("id") == 2 for ln in out.splitlines() if ln.strip())

    started = time.perf_counter()
    answered = await asyncio.gather(*(one(p) for p in pods))
    return time.perf_counter() - started, sum(answered)


async def _sweeps(tmp: Path) -> list[str]:
    lines: list[str] = []
    async with _sim_process(tmp, SWEEP_NODES) as (kubeconfig, sim_pid), _pool(kubeconfig) as pool:
        targets = await pool.discover()
        nodes = [t.node for t in targets]
        started = time.perf_counter()
        cold = await pool.fan_out(targets, TOOL, {})
        cold_s = time.perf_counter() - started
        bad = [r for r in cold if not r.ok]
        if bad:
            raise RuntimeError(f"cold sweep: {len(bad)} nodes failed, e.g. {bad[0].error}")
        warm: list[float] = []
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(5):
            gc.collect()  # a full collection belongs to no single sweep
            sim_cpu, cpu = _cpu_s(sim_pid), time.process_time()
            started = time.perf_counter()
            results = await pool.fan_out(targets, TOOL, {})
            warm.append(time.perf_counter() - started)
            ours.append(time.process_time() - cpu)
            theirs.append(_cpu_s(sim_pid) - sim_cpu)
            assert all(r.ok for r in results)
        warm_s = statistics.median(warm)
        lines.append(f"  cold sweep of {len(nodes)} nodes (open + call): {cold_s:.2f} s")
        lines.append(
            f"  warm sweep of {len(nodes)} nodes: median {warm_s * 1e3:.0f} ms "
            f"(min {min(warm) * 1e3:.0f}, max {max(warm) * 1e3:.0f}, 5 runs); CPU per sweep: "
            f"broker {statistics.median(ours) * 1e3:.0f} ms "
            f"({statistics.median(ours) / len(nodes) * 1e3:.2f} ms/node), "
            f"sim + its in-process agents {statistics.median(theirs) * 1e3:.0f} ms"
        )
        if not KUBECTL.exists():
            lines.append(f"  kubectl comparison skipped: {KUBECTL} missing (run `make tools`)")
            return lines
        pods = [t.pod for t in targets if t.pod]
        kubectl_s, answered = await _kubectl_sweep(kubeconfig, pods, targets[0].namespace)
        ratio = kubectl_s / warm_s
        lines.append(
            f"  kubectl exec per node, 8 in parallel: {kubectl_s:.2f} s "
            f"({answered}/{len(pods)} answered)"
        )
        lines.append(
            f"  warm sweep vs kubectl: {ratio:.0f}x faster (budget >= 30x) "
            f"{'OK' if ratio >= 30 else 'UNDER BUDGET'}"
        )
    return lines


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- memory ----------------------------------------------------------------------------
def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


async def _memory(tmp: Path) -> list[str]:
    async with _sim_process(tmp, MEMORY_NODES) as (kubeconfig, _), _pool(kubeconfig) as pool:
        nodes = await pool.discover()
        # Warm-up: imports, the interned tool catalog and first-use caches are not
        # per-session costs.
        first = await pool.fan_out(nodes[:2], TOOL, {})
        assert all(r.ok for r in first), first
        gc.collect()
        rss_before = _rss_kib()
        tracemalloc.start()
        started = time.perf_counter()
        results = await pool.fan_out(nodes[2:], TOOL, {})
        opened_s = time.perf_counter() - started
        del results
        gc.collect()
        traced, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = _rss_kib()
        sessions = pool.stats()["open_sessions"] - 2
    if sessions < len(nodes) - 2:
        raise RuntimeError(f"only {sessions} of {len(nodes) - 2} sessions stayed open")
    per_session = traced / sessions / 1024
    rss_per = (rss_after - rss_before) / sessions
    return [
        f"  {sessions + 2} open sessions (opened and called in {opened_s:.1f} s under tracemalloc)",
        f"  memory per open session: {per_session:.0f} KiB traced by tracemalloc "
        f"(budget <= 256 KiB) {'OK' if per_session <= 256 else 'OVER BUDGET'}; "
        f"RSS growth {rss_per:.0f} KiB/session",
    ]


# -- at the limit -----------------------------------------------------------------------
def _scale_sizes() -> list[int]:
    """Node counts for the scale runs: ``BENCH_NODES`` (comma-separated), else 1000,5000."""
    raw = os.environ.get("BENCH_NODES", "1000,5000")
    return [int(n) for n in raw.replace(" ", "").split(",") if n and int(n) > 0]


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


async def _at_scale(tmp: Path, n: int) -> list[str]:
    """Cold then warm sweeps of ``n`` healthy nodes through run_tool (aggregate included)."""
    from broker.fleet.operations import run_tool

    lines = [f"  -- {n} nodes (sim in its own process; load average {_loadavg()}) --"]
    gc.collect()
    rss_start = _rss_kib()
    async with _sim_process(tmp, n) as (kubeconfig, sim_pid), _context(kubeconfig) as ctx:
        targets = await ctx.targets()
        assert len(targets) == n, f"the sim lists {len(targets)} GPU nodes, not {n}"
        rss_listed = _rss_kib()
        runs: list[tuple[float, float, float, Json]] = []
        for _ in range(4):
            gc.collect()
            sim_cpu, cpu = _cpu_s(sim_pid), time.process_time()
            started = time.perf_counter()
            answer = await run_tool(ctx, TOOL, {})
            wall = time.perf_counter() - started
            runs.append((wall, time.process_time() - cpu, _cpu_s(sim_pid) - sim_cpu, answer))
        stats = ctx.pool.stats()
        rss_open = _rss_kib()
    cold_s, cold_cpu, cold_sim, cold = runs[0]
    warm = runs[1:]
    warm_s = statistics.median(r[0] for r in warm)
    warm_cpu = statistics.median(r[1] for r in warm)
    warm_sim = statistics.median(r[2] for r in warm)
    lost_first = cold["summary"]["nodes"]["failed"]
    lost_later = max(r[3]["summary"]["nodes"]["failed"] for r in warm)
    size = max(len(json.dumps(r[3])) for r in runs)
    sessions = max(1, stats["open_sessions"])
    per_session = (rss_open - rss_listed) / sessions
    cold_budget, warm_budget = (40.0, 5.0) if n >= 5000 else (None, 1.0 if n >= 1000 else None)

    def verdict(value: float, budget: float | None) -> str:
        if budget is None:
            return ""
        return f" (budget <= {budget:g} s) {'OK' if value <= budget else 'OVER BUDGET'}"

    groups = [f"{u['count']} {u['kind']}" for u in cold["summary"]["unreachable"]]
    lines += [
        f"  cold sweep: {cold_s:.1f} s{verdict(cold_s, cold_budget)}; healthy nodes lost "
        f"{lost_first} (budget 0) {'OK' if not lost_first else 'LOST: ' + ', '.join(groups)}; "
        f"broker CPU {cold_cpu:.1f} s ({cold_cpu / n * 1e3:.2f} ms/node), sim {cold_sim:.1f} s",
        f"  warm sweep: median {warm_s:.2f} s (min {min(r[0] for r in warm):.2f}, max "
        f"{max(r[0] for r in warm):.2f}, {len(warm)} runs){verdict(warm_s, warm_budget)}; "
        f"lost {lost_later}; broker CPU {warm_cpu:.2f} s ({warm_cpu / n * 1e3:.2f} ms/node), "
        f"sim {warm_sim:.2f} s",
        f"  open limit: peak {stats['open_limit_peak']}, now {stats['open_limit']}, "
        f"{stats['open_limit_cuts']} cut(s); {stats['opened']} opened, "
        f"{stats['open_failures']} failed, {stats['evicted']} evicted",
        f"  broker RSS with {stats['open_sessions']} sessions open: {rss_open / 1024:.0f} MiB"
        + (
            f" (budget <= 600 MiB) {'OK' if rss_open <= 600 * 1024 else 'OVER BUDGET'}"
            if n >= 5000
            else ""
        )
        + f"; {per_session:.0f} KiB RSS per session (start {rss_start / 1024:.0f} MiB, "
        f"after listing {rss_listed / 1024:.0f} MiB)",
        f"  answer size: {size / 1024:.1f} KiB (budget <= 64 KiB) "
        f"{'OK' if size <= 64 * 1024 else 'OVER BUDGET'}",
    ]
    return lines


Json = dict[str, Any]


if __name__ == "__main__":
    if sys.argv[1:2] == ["scale"]:  # one scale step, in a process of its own
        for line in asyncio.run(_scale_alone(int(sys.argv[2]))):
            print(line, flush=True)
    else:
        for line in run():
            print(line)
