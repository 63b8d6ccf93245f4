"""Run every benchmark section and print its figures (`make bench`)."""

from __future__ import annotations

import importlib
import os
import sys
import time

SECTIONS = ("tests.bench.agent_bench", "tests.bench.broker_bench", "tests.bench.fleet_bench")


def reference_loop_s() -> float:
    """Seconds one core takes for ten million Python additions: the machine's speed, so
    figures from different machines (budgets were set on one) can be compared."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def main() -> int:
    failed = 0
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; reference loop "
        f"{reference_loop_s():.2f} s (10M Python additions on one core)\n",
        flush=True,
    )
    for name in SECTIONS:
        print(f"== {name.rsplit('.', 1)[-1]} ==", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            for line in module.run():
                print(line, flush=True)
        except Exception as exc:  # a broken section must not hide the others' figures
            failed += 1
            print(f"  section failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"  ({time.perf_counter() - started:.1f} s)\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
