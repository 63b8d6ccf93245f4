"""Agent budgets (ARCHITECTURE.md): process start -> first ``tools/call get_gpu_health``
answered, in CPU-seconds and peak RSS, for the fake backend and for the NVML backend over
the fake libnvidia-ml.so.1; plus warm ``get_gpu_health`` latency for 8 GPUs. A
``python -c pass`` baseline is measured in the same run.

CPU and RSS come from ``os.wait4`` on the child after it answered and its stdin closed,
so they include interpreter start and exit (a slight over-count, never an under-count).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT = (sys.executable, "-m", "agent")
RUNS = 7  # cold starts per configuration (median reported)
WARM_CALLS = 50  # warm get_gpu_health calls (median and p90 reported)
KMSG = ROOT / "tests" / "agent" / "data" / "kmsg-xid.txt"  # fixed input: reproducible

BUDGET_CPU = {"fake": 0.10, "nvml": 0.12}
BUDGET_RSS_MIB = 25.0

FIRST_CALL = b"".join(
    json.dumps(m).encode() + b"\n"
    for m in (
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_gpu_health"}},
    )
)


class Cold:
    """One cold start: CPU-seconds, peak RSS (MiB), wall seconds to the answer."""

    def __init__(self, cpu: float, rss_mib: float, wall: float) -> None:
        self.cpu, self.rss_mib, self.wall = cpu, rss_mib, wall


def _cold(args: Sequence[str], stdin: bytes, env: Mapping[str, str] | None = None) -> Cold:
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=None if env is None else dict(env),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    wall = 0.0
    try:
        proc.stdin.write(stdin)
        proc.stdin.flush()
        if stdin:
            # Time to the tools/call answer; stdin stays open so the agent cannot
            # finish early (as a broker keeps its session open).
            while True:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"agent exited early: {proc.stderr.read().decode()}")
                if json.loads(line).get("id") == 2:
                    wall = time.perf_counter() - started
                    answer = json.loads(line)["result"]
                    if answer.get("isError"):
                        raise RuntimeError(answer["content"][0]["text"])
                    break
        proc.stdin.close()
        proc.stdout.read()
        proc.stderr.read()
    finally:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        proc.stderr.close()
    if not stdin:
        wall = time.perf_counter() - started
    return Cold(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, wall)


def _median(runs: list[Cold]) -> Cold:
    return Cold(
        statistics.median(r.cpu for r in runs),
        statistics.median(r.rss_mib for r in runs),
        statistics.median(r.wall for r in runs),
    )


def _warm(args: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(median, p90) seconds of get_gpu_health round trips on one warm session."""
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=None if env is None else dict(env),
    )
    assert proc.stdin is not None and proc.stdout is not None
    times: list[float] = []
    try:
        proc.stdin.write(FIRST_CALL)
        proc.stdin.flush()
        for _ in range(2):  # initialize + the first (cold) call
            proc.stdout.readline()
        for i in range(WARM_CALLS):
            request = {
                "jsonrpc": "2.0",
                "id": 100 + i,
                "method": "tools/call",
                "params": {"name": "get_gpu_health"},
            }
            started = time.perf_counter()
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            times.append(time.perf_counter() - started)
            if answer.get("id") != 100 + i or answer["result"].get("isError"):
                raise RuntimeError(f"unexpected answer: {str(answer)[:300]}")
    finally:
        proc.stdin.close()
        proc.stdout.read()
        proc.wait(timeout=30)
        proc.stdout.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def _verdict(value: float, budget: float) -> str:
    return "PASS" if value <= budget else "OVER"


def _nvml_env() -> tuple[dict[str, str] | None, str]:
    """Environment that makes pynvml load the fake library, or (None, why not)."""
    try:
        from tests.agent.fakenvml import build as fakenvml
    except ImportError as exc:
        return None, f"the fake NVML build helper is missing ({exc})"
    if fakenvml.gcc() is None:
        return None, "gcc not found (needed to build the fake libnvidia-ml.so.1)"
    try:
        library = fakenvml.build(ROOT / "build" / "fakenvml")
    except Exception as exc:  # a broken build must not hide the other figures
        return None, f"building the fake libnvidia-ml.so.1 failed: {exc}"
    return fakenvml.fake_env(library, None), ""


def run() -> list[str]:
    """Measure and return the lines `make bench` prints."""
    out: list[str] = []
    base = _median([_cold([sys.executable, "-c", "pass"], b"") for _ in range(RUNS)])
    out.append(
        f"  baseline `python -c pass`: {base.cpu:.3f} CPU-s, {base.rss_mib:.1f} MiB peak RSS, "
        f"{base.wall * 1000:.0f} ms wall  (median of {RUNS})"
    )
    configs: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("fake", [*AGENT, "--backend", "fake"], None)
    ]
    env, why = _nvml_env()
    nvml_args = [*AGENT, "--backend", "nvml", "--kmsg", str(KMSG)]
    if env is None:
        out.append(f"  nvml: skipped: {why}")
    else:
        configs.append(("nvml", nvml_args, env))

    for name, args, cfg_env in configs:
        cold = _median([_cold(args, FIRST_CALL, cfg_env) for _ in range(RUNS)])
        cpu_budget = BUDGET_CPU[name]
        out.append(
            f"  {name:4}: start -> first get_gpu_health answered: {cold.cpu:.3f} CPU-s "
            f"({cold.cpu / base.cpu:.1f}x baseline, budget {cpu_budget:.2f}: "
            f"{_verdict(cold.cpu, cpu_budget)}), peak RSS {cold.rss_mib:.1f} MiB "
            f"({cold.rss_mib / base.rss_mib:.1f}x, budget {BUDGET_RSS_MIB:.0f}: "
            f"{_verdict(cold.rss_mib, BUDGET_RSS_MIB)}), {cold.wall * 1000:.0f} ms wall"
        )
    out += _zipapp(nvml_env=env)
    for name, args, cfg_env in configs:
        median, p90 = _warm(args, cfg_env)
        out.append(
            f"  {name:4}: warm get_gpu_health, 8 GPUs: median {median * 1000:.2f} ms, "
            f"p90 {p90 * 1000:.2f} ms  ({WARM_CALLS} calls)"
        )
    oneshot = _median(
        [_cold([*AGENT, "--backend", "fake", "call", "get_gpu_health"], b"") for _ in range(RUNS)]
    )
    out.append(
        f"  one-shot `gpu-agent --backend fake call get_gpu_health`: {oneshot.cpu:.3f} CPU-s, "
        f"{oneshot.rss_mib:.1f} MiB peak RSS, {oneshot.wall * 1000:.0f} ms wall"
    )
    out.append(_journal_scan())
    return out


def _zipapp(nvml_env: dict[str, str] | None) -> list[str]:
    """The chart's gpu-agent.pyz under Python 3.13 (its image's), as in a pod: the zipapp
    keeps standard-library bytecode in GPU_AGENT_PYCACHE (the pod's /tmp), so the first
    exec in a pod compiles it (stock images ship none) and later execs reuse it."""
    from tests.release.scripts import PYZ, builder

    try:
        python = builder.find_python()
    except builder.BuildError as exc:
        return [f"  zipapp: skipped: {exc}"]
    out: list[str] = []
    configs = [("fake", ["--backend", "fake"], dict(os.environ))]
    if nvml_env is not None:
        configs.append(("nvml", ["--backend", "nvml", "--kmsg", str(KMSG)], nvml_env))
    for name, args, base_env in configs:
        with tempfile.TemporaryDirectory() as tmp:
            firsts = []
            for i in range(3):  # each in a fresh cache: a new pod's first exec
                env = {**base_env, "GPU_AGENT_PYCACHE": f"{tmp}/first-{i}"}
                firsts.append(_cold([python, str(PYZ), *args], FIRST_CALL, env))
            env = {**base_env, "GPU_AGENT_PYCACHE": f"{tmp}/first-0"}  # warm now
            later = _median(
                [_cold([python, str(PYZ), *args], FIRST_CALL, env) for _ in range(RUNS)]
            )
        first = _median(firsts)
        budget = BUDGET_CPU[name]
        out.append(
            f"  zipapp {name}: start -> first get_gpu_health answered: {later.cpu:.3f} CPU-s "
            f"(budget {budget:.2f}: {_verdict(later.cpu, budget)}), peak RSS "
            f"{later.rss_mib:.1f} MiB (budget {BUDGET_RSS_MIB:.0f}: "
            f"{_verdict(later.rss_mib, BUDGET_RSS_MIB)}), {later.wall * 1000:.0f} ms wall; "
            f"first exec in a pod {first.cpu:.3f} CPU-s, {first.rss_mib:.1f} MiB"
        )
    return out


def _journal_scan(entries: int = 200_000) -> str:
    """How fast --journal finds kernel Xid lines in a large journald file."""
    import tempfile

    from agent.journal import read_journal
    from tests.agent.journalfile import write_journal

    base = 1_764_000_000_000_000
    xid = "NVRM: Xid (PCI:0000:18:00): 13, pid={n}, name=python3, Graphics SM Warp Exception"
    rows = [
        (
            base + n * 1000,
            {
                "MESSAGE": xid.format(n=n) if n % 1000 == 0 else f"usb 1-1: event {n} on port 3",
                "_TRANSPORT": "kernel",
                "PRIORITY": "6",
            },
        )
        for n in range(entries)
    ]
    with tempfile.TemporaryDirectory() as where:
        path = write_journal(Path(where) / "system.journal", rows)
        size = path.stat().st_size
        started = time.process_time()
        _, records = read_journal(str(path), base / 1e6)
        cpu = time.process_time() - started
    return (
        f"  journal scan: {size / 2**20:.0f} MiB, {entries} entries, {len(records)} Xid lines "
        f"found in {cpu:.2f} CPU-s ({size / 2**20 / max(cpu, 1e-6):.0f} MiB/CPU-s)"
    )


if __name__ == "__main__":
    for line in run():
        print(line)
