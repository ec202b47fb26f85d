"""Speed-up of 2 local Ray workers over 1, for both engines, measured back to back in one run.

    python benchmarks/cluster_bench.py [--preset deep] [--variant fixed] [--max-depth 7]
                                       [--family-preset tiny]
                                       [--proof-size 2,2,4,4] [--proof-variant fixed]
                                       [--proof-spec leak_detection_sound]
                                       [--only explicit|family|z3] [--write]

Explicit: the partitioned search (`checker.distributed`) of `--variant` on `--preset` to
`--max-depth`, all specs, on a private Ray of 1 CPU with 1 worker, then of 2 CPUs with 2
workers; the single-process engine on the same bounds as the reference (its answers must be
equal: the script says if they are not). The CPU time of the workers is theirs during the
search; bytes exchanged are the offers, answers and given states sent from one worker to
another, per distinct state. Family: every variant on `--family-preset` as one family
(`crmodel check` with several variants), the same way, against the single-process family
search. z3: the proof of `--proof-spec` for `--proof-variant` at `--proof-size`, every
obligation a Ray task, on 1 CPU then on 2, nothing cached. Each Ray is started and shut down
around its run (its start-up is not timed). Figures are printed, never asserted; the load
average before and after each part says how busy the machine was. `--write` puts each
part's table in docs/cluster.md between its markers, with the machine and the date. The
whole run takes about 15 minutes on this 2-core machine."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "cluster.md"
PARTS = ("explicit", "family", "z3")


def markers(part: str) -> tuple[str, str]:
    return f"<!-- cluster_bench {part}: begin -->", f"<!-- cluster_bench {part}: end -->"


def explicit_runs(preset: str, variant: str, max_depth: int | None) -> list[dict]:
    import checker
    from checker.cluster import session
    from checker.distributed import explore_cluster
    from crmodel import api

    m = api.model(preset, variant)
    props = api.properties(list(api.SPECS))
    rows = []
    for n in (1, 2):
        with session("auto", n) as ray:
            t0 = time.perf_counter()
            ex = explore_cluster(ray, m, props, workers=n, max_depth=max_depth)
            rows.append({"engine": "explicit", "workers": n, "seconds": time.perf_counter() - t0,
                         "states": ex.states, "bytes": ex.bytes_exchanged, "ex": ex,
                         "cpu": ex.worker_cpu_seconds, "moved": ex.states_moved})
            print(f"explicit {preset}/{variant}, {n} worker(s): {ex.states:,} states, "
                  f"{rows[-1]['seconds']:.1f}s, workers' CPU {ex.worker_cpu_seconds:.1f}s",
                  file=sys.stderr, flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    one = checker.explore(m, props, stop_when_decided=False, max_depth=max_depth)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"explicit {preset}/{variant}, one process: {secs:.1f}s, CPU {cpu:.1f}s",
          file=sys.stderr)
    for r in rows:
        ex = r.pop("ex")
        r["same"] = (ex.states, ex.transitions, ex.levels, ex.coverage, ex.complete,
                     ex.stopped_by) == (one.states, one.transitions, one.levels, one.coverage,
                                        one.complete, one.stopped_by) and all(
            (a.verdict, a.states, a.transitions, a.depth, a.trace)
            == (b.verdict, b.states, b.transitions, b.depth, b.trace)
            for a, b in zip(one.results, ex.results, strict=True))
    rows.append({"engine": "explicit", "workers": 0, "seconds": secs, "states": one.states,
                 "bytes": 0, "same": True, "cpu": cpu})
    return rows


def family_runs(preset: str) -> list[dict]:
    from checker.cluster import session
    from checker.distributed import explore_cluster_family
    from checker.family import explore_family
    from crmodel import api
    from model.system import CrFamily
    from model.variants import VARIANTS

    fam = CrFamily(api.config(preset), list(VARIANTS.values()))
    props = api.properties(list(api.SPECS))
    rows, runs = [], []
    for n in (1, 2):
        with session("auto", n) as ray:
            t0 = time.perf_counter()
            exs = explore_cluster_family(ray, fam, props, workers=n)
            secs = time.perf_counter() - t0
        runs.append(exs)
        rows.append({"workers": n, "seconds": secs, "cpu": exs[0].worker_cpu_seconds,
                     "bytes": exs[0].bytes_exchanged, "moved": exs[0].states_moved})
        print(f"family {preset}, {n} worker(s): {secs:.1f}s, workers' CPU "
              f"{exs[0].worker_cpu_seconds:.1f}s", file=sys.stderr, flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    one = explore_family(fam, props, stop_when_decided=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"family {preset}, one process: {secs:.1f}s, CPU {cpu:.1f}s", file=sys.stderr)

    def answers(e: Any) -> tuple:
        return (e.states, e.transitions, e.levels, e.coverage, [
            (r.verdict, r.states, r.transitions, r.depth, r.trace) for r in e.results])

    for r, exs in zip(rows, runs, strict=True):
        r["same"] = [answers(e) for e in exs] == [answers(e) for e in one]
        r["variants"], r["states"] = len(one), sum(e.states for e in one)
    rows.append({"workers": 0, "seconds": secs, "cpu": cpu, "same": True})
    return rows


def z3_runs(size_text: str, variant: str, spec: str) -> list[dict]:
    from checker import symbolic
    from checker.cluster import prove_cluster, session
    from crmodel import z3run
    from model.variants import VARIANTS
    from specs.lemmas import proof_model

    size = z3run.parse_size(size_text)
    symbolic.use_cache(None)  # every query solved
    rows, answers = [], []
    for n in (1, 2):
        with session("auto", n) as ray:
            t0 = time.perf_counter()
            ok, obs = prove_cluster(ray, proof_model, (size, VARIANTS[variant]), spec,
                                    z3run.TIMEOUT)
            secs = time.perf_counter() - t0
        slow = max(obs, key=lambda o: o.seconds)
        answers.append([(o.obligation.id, o.status) for o in obs])
        rows.append({"engine": "z3", "workers": n, "seconds": secs, "proved": ok,
                     "obligations": len(obs), "slowest": f"{slow.obligation.id} "
                     f"{slow.seconds:.1f}s"})
        print(f"z3 {variant}/{spec} at {size.text()}, {n} worker(s): "
              f"{'proved' if ok else 'not proved'} in {secs:.1f}s (slowest {rows[-1]['slowest']})",
              file=sys.stderr, flush=True)
    for r in rows:
        r["same"] = answers[0] == answers[1]
    return rows


HEAD = ["| engine | what | 1 worker | 2 workers | speed-up | answers equal |",
        "|---|---|---:|---:|---:|---|"]


def speed(one: dict, two: dict) -> str:
    return (f"{one['seconds']:.1f} s | {two['seconds']:.1f} s | "
            f"{one['seconds'] / two['seconds']:.2f}x")


def cpu_line(one: dict, two: dict, single: dict) -> str:
    return (f"CPU time of the workers in the search: {one['cpu']:.1f} s with 1, "
            f"{two['cpu']:.1f} s with 2 (partitioning costs {two['cpu'] / one['cpu']:.2f}x "
            f"the work of one partition), one process {single['cpu']:.1f} s.")


def table(part: str, a: argparse.Namespace, rows: list[dict]) -> str:
    if part == "explicit":
        one, two, single = rows
        depth = f", to depth {a.max_depth}" if a.max_depth is not None else ""
        return "\n".join([*HEAD, (
            f"| explicit | `{a.preset}`, `{a.variant}`, all specs{depth}: "
            f"{one['states']:,} states | {speed(one, two)} | "
            f"{'yes' if one['same'] and two['same'] else 'NO'} (to one process, "
            f"{single['seconds']:.1f} s) |"), "", (
            f"{cpu_line(one, two, single)} Exchanged between the 2 workers (offers, answers, "
            f"states given to even out the frontiers): {two['bytes']:,} bytes, "
            f"{two['bytes'] / two['states']:.0f} per distinct state; {two['moved']:,} states "
            f"given ({100 * two['moved'] / two['states']:.1f}% of them).")])
    if part == "family":
        one, two, single = rows
        return "\n".join([*HEAD, (
            f"| explicit, family | `{a.family_preset}`, all {one['variants']} variants as one "
            f"family, all specs: {one['states']:,} states over the variants | "
            f"{speed(one, two)} | {'yes' if one['same'] and two['same'] else 'NO'} (to the "
            f"single-process family, {single['seconds']:.1f} s) |"), "", (
            f"{cpu_line(one, two, single)} Exchanged between the 2 workers: "
            f"{two['bytes']:,} bytes; {two['moved']:,} entries given.")])
    one, two = rows
    return "\n".join([*HEAD, (
        f"| z3 | `{a.proof_spec}` for `{a.proof_variant}` at {a.proof_size}: "
        f"{one['obligations']} obligations | {one['seconds']:.1f} s (slowest "
        f"{one['slowest']}) | {two['seconds']:.1f} s (slowest {two['slowest']}) | "
        f"{one['seconds'] / two['seconds']:.2f}x | {'yes' if two['same'] else 'NO'} |")])


def write_doc(part: str, text: str, load0: tuple, load1: tuple) -> None:
    """This run's table for `part` (explicit, z3) in docs/cluster.md, between its markers."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fmt = ", ".join
    # a 1-minute load of 1 or more before the start: a CPU-bound process was already running
    shared = ("other work shared the machine" if load0[0] >= 1.0
              else "no other work running at the start")
    head = (f"Written by `python benchmarks/cluster_bench.py --write` ({part}) on {when}: "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"load average {fmt(f'{x:.1f}' for x in load0)} before the run and "
            f"{fmt(f'{x:.1f}' for x in load1)} after ({shared}).")
    begin, end = markers(part)
    doc = DOC.read_text()
    i, j = doc.index(begin) + len(begin), doc.index(end)
    DOC.write_text(doc[:i] + "\n" + head + "\n\n" + text + "\n" + doc[j:])
    print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="deep")
    ap.add_argument("--variant", default="fixed")
    ap.add_argument("--max-depth", type=int, default=7,
                    help="explicit: levels explored (deep to 7: about 1.6 million states; "
                    "-1: all)")
    ap.add_argument("--family-preset", default="tiny")
    ap.add_argument("--proof-size", default="2,2,4,4")
    ap.add_argument("--proof-variant", default="fixed")
    ap.add_argument("--proof-spec", default="leak_detection_sound")
    ap.add_argument("--only", choices=PARTS, help="one part (default: all, in this order)")
    ap.add_argument("--write", action="store_true",
                    help=f"write each part's table to {DOC.name}")
    a = ap.parse_args()
    if a.max_depth is not None and a.max_depth < 0:
        a.max_depth = None
    runs = {"explicit": lambda: explicit_runs(a.preset, a.variant, a.max_depth),
            "family": lambda: family_runs(a.family_preset),
            "z3": lambda: z3_runs(a.proof_size, a.proof_variant, a.proof_spec)}
    for part in [a.only] if a.only else PARTS:
        load0 = os.getloadavg()
        text = table(part, a, runs[part]())
        print(text, flush=True)
        if a.write:
            write_doc(part, text, load0, os.getloadavg())


if __name__ == "__main__":
    main()
