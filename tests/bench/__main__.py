"""Run every benchmark section and print its figures (`make bench`)."""

from __future__ import annotations

import importlib
import sys
import time

SECTIONS = ("tests.bench.agent_bench", "tests.bench.broker_bench", "tests.bench.fleet_bench")


def main() -> int:
    failed = 0
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
