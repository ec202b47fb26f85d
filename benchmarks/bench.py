"""Benchmark the explicit engine: per-state figures, the family exploration against one
exploration per variant, and `make check` itself.

    python benchmarks/bench.py [--sections states profile family make-check]
                               [--presets tiny default]
                               [--write docs/benchmarks.md]

Each section prints its table as it is measured (Markdown); `--write` also writes every table,
under the machine they ran on (architecture, cores, Python, date), to a page. Figures are
printed, never asserted: a slow machine must not fail a build. Every measurement runs in a
fresh process, so that peak RSS is its own; figures measured while other jobs share the
machine are noisy, which is why each section compares runs made back to back.

Sections:
- `states`: one variant (`--variant`): distinct states, states per second in one process
  (per wall second and per CPU second), peak memory, bytes per stored state, the reduction
  symmetry gives.
- `profile`: one variant on tiny: the parts of a search (successors, canonical form,
  fingerprint, properties) timed alone, and cProfile's top functions by own time.
- `family`: all variants, each explored on its own (in turn, one process) against one family
  exploration (one process): states, seconds, ratio.
- `make-check`: `crmodel check --config default` with all variants as `make check` runs it
  (two processes), with `--per-variant` and without: wall seconds, ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def child(kind: str, *args: str) -> dict:
    """Run one measurement in a fresh process; its last stdout line is a JSON object."""
    cmd = [sys.executable, __file__, "--one", kind, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- measurements (run in the child process) ---------------------------------------------------


def one_states(preset: str, variant: str, symmetry: str, memory: str) -> dict:
    import checker
    from checker.explicit import bytes_per_state
    from crmodel import api
    from model.system import CrModel

    m = CrModel(api.config(preset), api.VARIANTS[variant])
    if symmetry != "1":
        # States as the transitions build them: ids in creation order, tasks unsorted.
        m.canonical = lambda s: s  # type: ignore[method-assign]
    props = api.properties(list(api.SPECS))
    t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF)
    ex = checker.explore(m, props, stop_when_decided=False)
    secs, cpu_s = time.perf_counter() - t0, cpu(resource.RUSAGE_SELF) - c0
    out = {
        "preset": preset,
        "variant": variant,
        "symmetry": symmetry == "1",
        "states": ex.states,
        "transitions": ex.transitions,
        "depth": ex.depth,
        "seconds": round(secs, 2),
        "states_per_s": round(ex.states / secs),
        # CPU time: on a shared machine, wall time also counts the other jobs' turns
        "cpu_seconds": round(cpu_s, 2),
        "states_per_cpu_s": round(ex.states / cpu_s),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if memory == "1":
        b = bytes_per_state(m, props)
        out["bytes_per_state_retained"] = round(b["retained"], 1)
        out["bytes_per_state_peak"] = round(b["peak"], 1)
    return out


def one_profile(preset: str, variant: str) -> dict:
    """Where one variant's time goes: the parts of a search timed alone (CPU time, on the
    states the search expanded, recorded first), then cProfile's functions by own time."""
    import cProfile
    import gc
    import pstats

    import checker
    from crmodel import api
    from model.system import CrModel

    m = CrModel(api.config(preset), api.VARIANTS[variant])
    props = api.properties(list(api.SPECS))
    expanded: list = []
    successors = m.successors

    def recording(s):  # type: ignore[no-untyped-def]
        expanded.append(s)
        return successors(s)

    m.successors = recording  # type: ignore[method-assign]
    ex = checker.explore(m, props, stop_when_decided=False)
    m.successors = successors  # type: ignore[method-assign]
    del expanded[ex.states:]  # the search expands each state once; the rest are trace replays
    gc.disable()  # the parts hold every successor at once: no collector passes over them
    clock = time.process_time
    t = clock()
    succ = [t2 for s in expanded for _, t2 in successors(s)]
    parts = {"successors": clock() - t}
    t = clock()
    canon = [m.canonical(t2) for t2 in succ]
    parts["canonical form"] = clock() - t
    t = clock()
    fps = [hash(c) for c in canon]
    parts["fingerprint (hash)"] = clock() - t
    first: dict = {}
    for f, c in zip(fps, canon, strict=True):
        first.setdefault(f, c)  # each state once, as the search checks it
    new = list(first.values())
    transitions = len(succ)
    preds = [p.predicate for p in props]
    t = clock()
    for c in new:
        for pred in preds:
            pred(c)
    parts["properties (all, every new state)"] = clock() - t
    gc.enable()
    del succ, canon, fps, new
    prof = cProfile.Profile()
    prof.enable()
    checker.explore(m, props, stop_when_decided=False)
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:12]  # type: ignore[attr-defined]
    def label(f: str, name: str) -> str:  # builtins carry an address: drop it
        return f"{Path(f).stem}.{name}" if f != "~" else name.split(" at 0x")[0].rstrip(">") + ">"

    top = [{"function": label(f, name), "calls": calls, "own_pct": round(100 * own / total, 1),
            "total_pct": round(100 * cum / total, 1)}
           for (f, _, name), (_, calls, own, cum, _) in rows]
    return {"preset": preset, "variant": variant, "expanded": len(expanded),
            "transitions": transitions,
            "parts": {k: round(v, 3) for k, v in parts.items()}, "top": top}


def one_family(preset: str, mode: str) -> dict:
    """All variants: `solo` explores each in turn, `family` all at once (one process)."""
    import checker
    from checker.family import explore_family
    from crmodel import api
    from model.system import CrFamily, CrModel

    cfg = api.config(preset)
    variants = list(api.VARIANTS.values())
    props = api.properties(list(api.SPECS))
    t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF)
    if mode == "solo":
        exs = [checker.explore(CrModel(cfg, v), props, stop_when_decided=False)
               for v in variants]
        stored = expanded = sum(e.states for e in exs)
    else:
        import checker.family as fam_engine

        sizes: dict[str, int] = {}
        build = fam_engine._FamilySearch.exploration

        def measure(search, *args):  # type: ignore[no-untyped-def]
            sizes["stored"] = len(search.seen)
            sizes["expanded"] = sum(len(m) for m in search.levels_mask)
            return build(search, *args)

        fam_engine._FamilySearch.exploration = measure  # type: ignore[method-assign]
        exs = explore_family(CrFamily(cfg, variants), props, stop_when_decided=False)
        stored, expanded = sizes["stored"], sizes["expanded"]
    secs = time.perf_counter() - t0
    return {
        "preset": preset,
        "mode": mode,
        "variants": len(variants),
        "variant_states": sum(e.states for e in exs),  # the same in both modes
        "stored": stored,  # distinct (state) entries kept in the seen set/map
        "expanded": expanded,  # states expanded: entries of the family's levels
        "seconds": round(secs, 2),
        "cpu_seconds": round(cpu(resource.RUSAGE_SELF) - c0, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def one_make_check(mode: str) -> dict:
    """`crmodel check --config default` as `make check` runs it (jobs: two processes)."""
    cmd = [sys.executable, "-m", "crmodel", "check", "--config", "default", "--json",
           "--jobs", "2"] + (["--per-variant"] if mode == "per-variant" else [])
    t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_CHILDREN)
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    rows = json.loads(res.stdout)["results"]
    ok = all(r["verdict"] == r["expected"] or r["out_of_reach"] for r in rows)
    return {"mode": mode, "seconds": round(secs, 1),
            "cpu_seconds": round(cpu(resource.RUSAGE_CHILDREN) - c0, 1), "verdicts": len(rows),
            "as_expected": ok, "exit": res.returncode}


ONE: dict[str, Callable[..., dict]] = {
    "states": one_states, "profile": one_profile, "family": one_family,
    "make-check": one_make_check,
}


# --- sections (run in the parent, each returns its Markdown lines) ------------------------------


def section_states(args: argparse.Namespace) -> list[str]:
    rows = []
    for p in args.presets:
        runs = [(p, "1", "1" if p == "tiny" else "0")]
        if not args.no_symmetry_check and p == "tiny":
            runs.append((p, "0", "0"))
        for preset, sym, mem in runs:
            row = child("states", preset, args.variant, sym, mem)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    out = [f"### One variant ({args.variant}), one process", "",
           "| preset | symmetry | states | states/s | seconds | states/CPU-s | CPU s | "
           "peak MiB | bytes/state |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        bps = r.get("bytes_per_state_retained", "")
        out.append(f"| {r['preset']} | {r['symmetry']} | {r['states']:,} | "
                   f"{r['states_per_s']:,} | {r['seconds']} | {r['states_per_cpu_s']:,} | "
                   f"{r['cpu_seconds']} | {r['peak_rss_mib']} | {bps} |")
    out += ["", "bytes/state: memory the search keeps per distinct state (its fingerprint, "
            "parent index and transition index), measured with tracemalloc in a separate run."]
    by = {(r["preset"], r["symmetry"]): r for r in rows}
    for p in args.presets:
        if (p, True) in by and (p, False) in by:
            ratio = by[(p, False)]["states"] / by[(p, True)]["states"]
            out += ["", f"Symmetry reduction on {p}: {ratio:.2f}x fewer states "
                    f"({by[(p, False)]['states']:,} -> {by[(p, True)]['states']:,})."]
    return out


def section_profile(args: argparse.Namespace) -> list[str]:
    r = child("profile", "tiny", args.variant)
    print(json.dumps(r), file=sys.stderr, flush=True)
    parts, n = r["parts"], r["transitions"]
    whole = sum(parts.values())
    out = [f"### Where the time goes: {args.variant} on tiny, one process", "",
           f"Each part alone, on the {r['expanded']:,} states the search expanded and their "
           f"{n:,} successors (CPU time, collector off):", "",
           "| part | seconds | share | µs per transition |", "|---|---:|---:|---:|"]
    for k, v in parts.items():
        out.append(f"| {k} | {v:.2f} | {100 * v / whole:.0f}% | {1e6 * v / n:.2f} |")
    out += ["", "The search itself under cProfile, functions by their own time (the profiler "
            "inflates functions called often, and a collector pause counts for whichever "
            "function allocated when it began):", "",
            "| function | calls | own time | with callees |", "|---|---:|---:|---:|"]
    for t in r["top"]:
        out.append(f"| `{t['function']}` | {t['calls']:,} | {t['own_pct']}% | "
                   f"{t['total_pct']}% |")
    return out


def section_family(args: argparse.Namespace) -> list[str]:
    out = ["### All variants: one exploration per variant vs one family (one process each)", "",
           "| preset | mode | variants' states | states expanded | stored | seconds | "
           "CPU seconds | peak MiB | speed-up (seconds) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in args.presets:
        solo = child("family", p, "solo")
        print(json.dumps(solo), file=sys.stderr, flush=True)
        fam = child("family", p, "family")
        print(json.dumps(fam), file=sys.stderr, flush=True)
        for r in (solo, fam):
            ratio = (f"{solo['seconds'] / r['seconds']:.1f}x (CPU "
                     f"{solo['cpu_seconds'] / r['cpu_seconds']:.1f}x)") if r is fam else ""
            out.append(f"| {p} | {'per variant' if r is solo else 'family'} | "
                       f"{r['variant_states']:,} | {r['expanded']:,} | {r['stored']:,} | "
                       f"{r['seconds']} | {r['cpu_seconds']} | {r['peak_rss_mib']} | {ratio} |")
    out += ["", "variants' states: the sum over variants of each one's distinct states (equal "
            "in both modes); states expanded: per variant, each variant's states; in the "
            "family, its entries (a state reached for several variants at different times is "
            "expanded once per discovery); stored: fingerprints kept (per variant: summed)."]
    return out


def section_make_check(args: argparse.Namespace) -> list[str]:
    rows = [child("make-check", m) for m in args.make_check]
    for r in rows:
        print(json.dumps(r), file=sys.stderr, flush=True)
    out = ["### `make check` (default preset, all variants, two processes), back to back", "",
           "| mode | wall seconds | CPU seconds | verdicts | all as expected |",
           "|---|---:|---:|---:|---|",
           *(f"| {r['mode']} | {r['seconds']} | {r['cpu_seconds']} | {r['verdicts']} | "
             f"{r['as_expected']} |" for r in rows)]
    if len(rows) == 2:
        before, after = rows
        out += ["", f"Speed-up of the family: {before['seconds'] / after['seconds']:.1f}x in "
                f"wall time, {before['cpu_seconds'] / after['cpu_seconds']:.1f}x in CPU time."]
    return out


SECTIONS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "states": section_states, "profile": section_profile, "family": section_family,
    "make-check": section_make_check,
}


def machine() -> str:
    cores = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Machine: {platform.machine()}, {cores} cores, Python "
            f"{platform.python_version()}, {datetime.date.today().isoformat()}; load average "
            f"at the start {load} (a shared machine makes every figure noisy; ratios come "
            "from runs made back to back).")


def write_page(path: Path, done: dict[str, list[str]]) -> None:
    """Put each section just measured on the page, each under the machine it ran on; the
    sections of earlier runs that were not run again stay as they were."""
    old: dict[str, list[str]] = {}
    if path.exists():
        name = None
        for line in path.read_text().splitlines():
            if line.startswith("<!-- section: "):
                name = line.removeprefix("<!-- section: ").removesuffix(" -->")
                old[name] = []
            elif name is not None:
                old[name].append(line)
    page = ["# Benchmarks", "", "Written by `python benchmarks/bench.py --write "
            "docs/benchmarks.md` from its own output, one part per section; a run rewrites "
            "the sections it measured.", ""]
    for name in SECTIONS:
        lines = done.get(name, old.get(name))
        if lines is not None:
            page += [f"<!-- section: {name} -->", *lines]
    path.write_text("\n".join(page).rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--presets", nargs="+", default=["tiny", "default"])
    ap.add_argument("--variant", default="linuxcr")
    ap.add_argument("--no-symmetry-check", action="store_true",
                    help="skip the run without symmetry reduction (slow on big presets)")
    ap.add_argument("--make-check", nargs="+", default=["per-variant", "family"],
                    choices=["per-variant", "family"], metavar="MODE",
                    help="the make-check section's modes (per-variant, family)")
    ap.add_argument("--write", metavar="PAGE", help="also write the tables to this page")
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.one:
        print(json.dumps(ONE[args.one[0]](*args.one[1:])))
        return
    done: dict[str, list[str]] = {}
    for name in args.sections:
        where = machine()
        print(where, flush=True)
        lines = SECTIONS[name](args)
        print("\n".join(["", *lines]), flush=True)
        done[name] = [where, "", *lines, ""]
    if args.write:
        write_page(Path(args.write), done)


if __name__ == "__main__":
    main()
