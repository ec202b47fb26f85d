"""Benchmark the explicit engine on the presets: distinct states, states per second (one
core), peak memory, bytes per stored state, and the reduction symmetry gives.

    python benchmarks/bench.py [--presets tiny default deep] [--variant linuxcr]

Figures are printed, never asserted: a slow machine must not fail a build. Each preset runs
in a fresh process so that peak RSS is its own."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_one(preset: str, variant: str, symmetry: bool, memory: bool) -> dict:
    import checker
    from checker.explicit import bytes_per_state
    from crmodel import api
    from model.system import CrModel

    m = CrModel(api.config(preset), api.VARIANTS[variant])
    if not symmetry:
        # States as the transitions build them: ids in creation order, tasks unsorted.
        m.canonical = lambda s: s  # type: ignore[method-assign]
    props = api.properties(list(api.SPECS))
    t0 = time.perf_counter()
    ex = checker.explore(m, props, stop_when_decided=False)
    secs = time.perf_counter() - t0
    out = {
        "preset": preset,
        "variant": variant,
        "symmetry": symmetry,
        "states": ex.states,
        "transitions": ex.transitions,
        "depth": ex.depth,
        "seconds": round(secs, 2),
        "states_per_s": round(ex.states / secs),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if memory:
        b = bytes_per_state(m, props)
        out["bytes_per_state_retained"] = round(b["retained"], 1)
        out["bytes_per_state_peak"] = round(b["peak"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "default"])
    ap.add_argument("--variant", default="linuxcr")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: preset:symmetry:memory
    ap.add_argument("--no-symmetry-check", action="store_true",
                    help="skip the run without symmetry reduction (slow on big presets)")
    args = ap.parse_args()
    if args.one:
        preset, sym, mem = args.one.split(":")
        print(json.dumps(run_one(preset, args.variant, sym == "1", mem == "1")))
        return
    rows = []
    for p in args.presets:
        runs = [(p, "1", "1" if p == "tiny" else "0")]
        if not args.no_symmetry_check and p == "tiny":
            runs.append((p, "0", "0"))
        for preset, sym, mem in runs:
            cmd = [sys.executable, __file__, "--variant", args.variant, "--one",
                   f"{preset}:{sym}:{mem}"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'preset':8} {'symmetry':8} {'states':>10} {'states/s':>9} {'seconds':>8} "
          f"{'peak MiB':>9} {'B/state':>8}")
    for r in rows:
        bps = r.get("bytes_per_state_retained", "")
        print(f"{r['preset']:8} {str(r['symmetry']):8} {r['states']:>10,} "
              f"{r['states_per_s']:>9,} {r['seconds']:>8} {r['peak_rss_mib']:>9} {bps:>8}")
    by = {(r["preset"], r["symmetry"]): r for r in rows}
    for p in args.presets:
        if (p, True) in by and (p, False) in by:
            ratio = by[(p, False)]["states"] / by[(p, True)]["states"]
            print(f"symmetry reduction on {p}: {ratio:.2f}x fewer states "
                  f"({by[(p, False)]['states']:,} -> {by[(p, True)]['states']:,})")


if __name__ == "__main__":
    main()
