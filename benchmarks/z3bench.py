"""How far each engine reaches: z3 proof times by size beside the largest configuration the
explicit engine explores exhaustively within a time budget.

    python benchmarks/z3bench.py [--sizes 2,2,4,4 2,2,8,8] [--variant fixed]
                                 [--specs SPEC ...] [--explicit tiny default race]
                                 [--explicit-seconds 600] [--jobs 2]

Proofs are of the three headline properties (restore_preserves_fcntl_flags,
leak_detection_sound, leak_detection_complete) unless `--specs` names others, for
`--variant`, at each size (default 2 + 2 tasks with 8 descriptors and 8 files, the
engine's default and CI's size); a proof's size is
tasks inside + outside, descriptors per table and open files, over every flag set and any
number of steps. The explicit runs are bounded configurations (steps, flag sets, paths),
each given `--explicit-seconds`; one stopped by the budget is reported as such. A proof's
obligations are shared among `--jobs` processes (as `crmodel check --engine z3 --jobs`), the
explicit runs use one. Nothing is cached. Each proof's wall time is printed with its CPU
time (summed over the processes, each obligation's measured in the process that decided it:
on a loaded machine the wall time grows, the CPU time much less). Figures are printed, never
asserted; each
obligation decided is reported on stderr as it comes. `--write` also writes the tables to
docs/z3-benchmarks.md (with the machine and the date), from this run's own figures."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROPS = ("restore_preserves_fcntl_flags", "leak_detection_sound", "leak_detection_complete")


def main() -> None:
    from checker.explicit import explore
    from checker.symbolic import benchmark
    from crmodel import api, z3run
    from model.symbolic import SPECS_ENCODED
    from model.system import CrModel
    from model.variants import VARIANTS
    from specs.lemmas import proof_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--sizes", nargs="+", default=["2,2,8,8"])
    ap.add_argument("--variant", default="fixed")
    ap.add_argument("--specs", nargs="+", default=list(PROPS), metavar="SPEC")
    ap.add_argument("--explicit", nargs="*", default=["tiny", "default", "race"])
    ap.add_argument("--explicit-seconds", type=float, default=600.0)
    ap.add_argument("--timeout", type=float, default=z3run.TIMEOUT, help="per z3 query")
    ap.add_argument("--jobs", type=int, default=2, help="processes per proof")
    ap.add_argument("--write", action="store_true",
                    help="write the tables to docs/z3-benchmarks.md")
    a = ap.parse_args()
    if a.variant not in VARIANTS:
        ap.error(f"unknown variant {a.variant!r}; one of: {', '.join(VARIANTS)}")
    try:
        sizes = [z3run.parse_size(t) for t in a.sizes]
    except api.UsageError as e:
        ap.error(str(e).replace("--proof-size", "--sizes"))
    unknown = [s for s in a.specs if s not in SPECS_ENCODED]
    if unknown:
        ap.error(f"the z3 engine does not encode {unknown[0]!r}; one of: "
                 f"{', '.join(SPECS_ENCODED)}")
    v = VARIANTS[a.variant]
    print(f"z3 proofs ({a.variant}; per-query timeout {a.timeout:.0f}s, {a.jobs} processes "
          "per proof)", flush=True)
    proofs = benchmark(proof_model, sizes, a.specs, a.timeout,
                       out=lambda line: print(line, flush=True), args=(v,), jobs=a.jobs,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    explicit: list[dict] = []
    print(f"\nexplicit engine ({a.variant}, all specs; budget {a.explicit_seconds:.0f}s each)")
    print(f"{'config':<10} {'in+out tasks':>12} {'fds':>4} {'states':>12} {'seconds':>8}  "
          "exhaustive")
    for name in a.explicit:
        cfg = api.config(name)
        props = api.properties(list(api.SPECS))
        t0 = time.perf_counter()
        ex = explore(CrModel(cfg, v), props, stop_when_decided=False,
                     max_seconds=a.explicit_seconds)
        secs = time.perf_counter() - t0
        explicit.append({"config": cfg.name, "tasks": f"{cfg.inside_tasks} + {cfg.outside_tasks}",
                         "fds": cfg.max_fds, "states": ex.states, "seconds": secs,
                         "complete": ex.complete, "steps": f"{cfg.env_steps} env steps, "
                         f"{cfg.checkpoint_steps} during a checkpoint"})
        print(f"{cfg.name:<10} {cfg.inside_tasks:>5} + {cfg.outside_tasks:<4} "
              f"{cfg.max_fds:>4} {ex.states:>12,} {secs:8.1f}  "
              f"{'yes' if ex.complete else 'no, stopped by ' + str(ex.stopped_by)}"
              f" ({cfg.env_steps} env steps, {cfg.checkpoint_steps} during a checkpoint)",
              flush=True)
    full = [e for e in explicit if e["complete"]]
    largest = max(full, key=lambda e: e["states"]) if full else None
    if largest:
        print(f"\nratio of each proof's wall time to the largest exhaustive explicit run "
              f"({largest['config']}, {largest['seconds']:.1f}s):")
        for r in proofs:
            print(f"  {r['property']} at {r['size']}: {r['seconds'] / largest['seconds']:.2f}x")
    if a.write:
        write_doc(a, proofs, explicit, largest)


def write_doc(a: argparse.Namespace, proofs: list[dict], explicit: list[dict],
              largest: dict | None) -> None:
    """docs/z3-benchmarks.md from this run's own rows."""
    when = datetime.date.today().isoformat()
    avg = os.getloadavg()
    load = ", ".join(f"{x:.1f}" for x in avg)
    busy = (" (above the core count: other work shared the machine)"
            if avg[0] > (os.cpu_count() or 1) else "")
    lines = [
        "# z3 engine: proof times",
        "",
        f"Written by `python benchmarks/z3bench.py --write` on {when}: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; variant `{a.variant}`, "
        f"obligations over {a.jobs} processes, per-query timeout {a.timeout:.0f} s, nothing "
        f"cached; load average at the end {load}{busy}. Figures vary from run to run on a "
        "shared machine: compare ratios within one run.",
        "",
        "| proof | size (tasks in + out, fds, files) | verdict | obligations | wall time "
        "| CPU time | slowest obligation | ratio to largest exhaustive explicit run |",
        "|---|---|---|---:|---:|---:|---|---:|",
    ]
    table = proof_table(proofs, largest)
    lines += table
    if explicit:
        lines += ["", f"Explicit engine, same run (`{a.variant}`, all specs, budget "
                  f"{a.explicit_seconds:.0f} s each):", "",
                  "| config | tasks in + out | fds | distinct states | seconds | exhaustive |",
                  "|---|---|---:|---:|---:|---|"]
        for e in explicit:
            lines.append(f"| `{e['config']}` | {e['tasks']} | {e['fds']} | {e['states']:,} | "
                         f"{e['seconds']:.1f} | {'yes' if e['complete'] else 'no'} "
                         f"({e['steps']}) |")
    (ROOT / "docs" / "z3-benchmarks.md").write_text("\n".join(lines) + "\n")
    print("wrote docs/z3-benchmarks.md", file=sys.stderr)
    write_readme(lines[4:6] + table)


def proof_table(proofs: list[dict], largest: dict | None) -> list[str]:
    """One row per proof: verdict, obligations, wall and CPU time, slowest obligation, and
    the ratio of its wall time to the largest exhaustive explicit run."""
    out = []
    for r in proofs:
        ratio = f"{r['seconds'] / largest['seconds']:.2f}x" if largest else "n/a"
        out.append(f"| `{r['property']}` | {r['size']} | {r['verdict']} | "
                   f"{r['obligations']} | {r['seconds']:.1f} s | {r['cpu']:.1f} s | "
                   f"{r['slowest']} | {ratio} |")
    return out


README_BEGIN, README_END = "<!-- z3bench: begin -->", "<!-- z3bench: end -->"


def write_readme(table: list[str]) -> None:
    """The README's proof table, between its markers, is this run's table."""
    path = ROOT / "README.md"
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        print("README.md has no z3bench markers: its table not written", file=sys.stderr)
        return
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + README_BEGIN + "\n" + "\n".join(table) + "\n" + README_END + tail)
    print("wrote README.md's proof table", file=sys.stderr)


if __name__ == "__main__":
    main()
