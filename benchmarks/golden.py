"""The golden reference: what the explicit engine answers for each variant, recorded so that a
change meant to make the checker faster (or to explore the variants as a family) can be shown
to change no answer.

    python benchmarks/golden.py compare            # every recorded run against this checkout
    python benchmarks/golden.py compare --only tiny:linuxcr race:fixed
    python benchmarks/golden.py record             # rewrite tests/data/golden.json

A run is recorded as its distinct states, transitions, depth, states per BFS level, coverage
per action, and per spec the verdict with every action of its counterexample or witness trace.
`tests/test_golden.py` compares the tiny runs the suite explores anyway."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOLDEN = ROOT / "tests" / "data" / "golden.json"
# (config, variants): every variant on tiny; on race, the two whose answers depend on the
# outside tasks acting inside the checkpoint's window.
RUNS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("tiny", None),
    ("race", ("fixed", "mut-stale-counts")),
)


def summary(ex: Any) -> dict[str, Any]:
    """The answers of one exploration (`checker.result.Exploration`) that must not change:
    JSON-able, no timings."""
    results = {}
    for r in ex.results:
        trace = None if r.trace is None else [list(a) for a in r.trace.actions]
        results[r.property] = {"verdict": r.verdict, "trace": trace}
    return {
        "states": ex.states,
        "transitions": ex.transitions,
        "depth": ex.depth,
        "levels": list(ex.levels),
        "coverage": dict(sorted(ex.coverage.items())),
        "results": results,
    }


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What differs between two summaries, one line each (empty: the same answers)."""
    out = [f"{k}: {want[k]} != {got[k]}" for k in ("states", "transitions", "depth", "levels",
                                                     "coverage") if want[k] != got[k]]
    for spec in sorted(set(want["results"]) | set(got["results"])):
        a, b = want["results"].get(spec), got["results"].get(spec)
        if a != b:
            out.append(f"{spec}: {a} != {b}")
    return out


def load() -> dict[str, dict[str, Any]]:
    """`config:variant` -> summary."""
    return json.loads(GOLDEN.read_text())["runs"]


def explore(config: str, variant: str) -> dict[str, Any]:
    import checker
    from crmodel import api

    m = api.model(config, variant)
    ex = checker.explore(m, api.properties(list(api.SPECS)), stop_when_decided=False)
    return summary(ex)


def keys() -> list[str]:
    from model.variants import VARIANTS

    return [f"{c}:{v}" for c, vs in RUNS for v in (vs or tuple(VARIANTS))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("record", "compare"))
    ap.add_argument("--only", nargs="+", metavar="CONFIG:VARIANT",
                    help="these runs only (default: every recorded one)")
    args = ap.parse_args()
    todo = args.only or keys()
    golden = load() if GOLDEN.exists() else {}
    bad = 0
    for key in todo:
        config, variant = key.split(":")
        t0 = time.perf_counter()
        got = explore(config, variant)
        secs = time.perf_counter() - t0
        if args.what == "record":
            golden[key] = got
            print(f"{key}: {got['states']:,} states ({secs:.1f} s)", flush=True)
            continue
        diff = differences(golden[key], got) if key in golden else ["not recorded"]
        bad += bool(diff)
        print(f"{key}: {'same' if not diff else 'DIFFERENT'} ({got['states']:,} states, "
              f"{secs:.1f} s)", flush=True)
        for line in diff:
            print(f"  {line}")
    if args.what == "record":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        runs = {k: golden[k] for k in sorted(golden)}
        text = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                          for k, v in runs.items())
        GOLDEN.write_text('{"runs": {\n' + text + "\n}}\n")
        return 0
    print("all the same" if not bad else f"{bad} of {len(todo)} runs differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
