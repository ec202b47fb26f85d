"""Figures the test suite used to assert as timings, printed instead: bytes per stored state
of the explicit engine, the live-kernel driver's speed, how fast a hung worker is killed, and
how long each notebook takes.

    python benchmarks/suite_figures.py [--notebooks]

Printed, never asserted: a loaded machine must not fail a build. Compare figures taken in
one run (ratios), not across machines."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from checker.examples import Grid  # noqa: E402
from checker.explicit import bytes_per_state  # noqa: E402
from crmodel.live.driver import run_sequence  # noqa: E402
from model.flags import O_APPEND, O_RDONLY, O_RDWR  # noqa: E402

TWELVE = [("open", 0, 0, O_RDONLY, 0, 0), ("open", 0, 1, O_RDWR, O_APPEND, 1), ("dup", 0, 0),
          ("fork", 0, 0), ("pipe", 1), ("openpty", 0), ("epoll_create", 0),
          ("epoll_add", 0, 5, 3), ("socketpair", 1), ("sendmsg", 1, 5, 0), ("recvmsg", 1, 6),
          ("timerfd", 0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", action="store_true", help="also time each notebook")
    args = ap.parse_args()
    mem = bytes_per_state(Grid(250, 2))  # 63,001 states: past CPython's small-set growth
    print(f"explicit engine, Grid(250, 2), {mem['states']:,.0f} states: "
          f"{mem['retained']:.1f} bytes/state retained, {mem['peak']:.1f} peak "
          "(the design aims at under 100 retained)")
    times = []
    for _ in range(5):
        t = time.perf_counter()
        run_sequence(TWELVE)
        times.append(time.perf_counter() - t)
    print(f"live driver, a twelve-action sequence: median {statistics.median(times):.3f} s "
          f"over 5 runs (min {min(times):.3f}, max {max(times):.3f})")
    t = time.perf_counter()
    try:
        run_sequence([("fork", 0, 0), ("pipe", 1), ("_sleep", 1, 60)], timeout=0.5)
    except TimeoutError:
        pass
    print(f"live driver, a worker hung for 60 s with a 0.5 s timeout: killed and cleaned up "
          f"after {time.perf_counter() - t:.2f} s")
    if args.notebooks:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_notebooks import NOTEBOOKS, run_notebook

        for p in NOTEBOOKS:
            t = time.perf_counter()
            run_notebook(p)
            print(f"notebook {p.name}: {time.perf_counter() - t:.1f} s (kernel start included)")


if __name__ == "__main__":
    main()
