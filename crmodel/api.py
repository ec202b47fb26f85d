"""The Python API behind the CLI and the notebooks: pick a config, variants and specs, run an
engine, get rows of verdicts with their traces.

    from crmodel import api
    report = api.check("tiny", variants=["linuxcr"], specs=["leak_detection_sound"])
    row = report.rows[0]; print(row.verdict, row.expected); print(row.trace_text())
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import checker
from checker.family import explore_family
from checker.model import Property, hooks
from checker.progress import auto_progress
from checker.result import Exploration, Result
from checker.snapshot import SnapshotMismatch, check_overwritable
from crmodel import validate
from crmodel.report import Report, Row, exact_expectations, write_trace
from crmodel.validate import SnapshotError, UsageError
from model.config import PRESETS, Config
from model.system import CrFamily, CrModel, checkpoint_knobs
from model.variants import VARIANTS, Variant
from specs import SPECS, Spec

ENGINES = ("explicit", "z3")


def config(spec: str | Config) -> Config:
    """A preset name, a TOML file or a `Config`, validated (a UsageError if bad)."""
    return validate.config(spec)


def _pick(names: Sequence[str] | None, known: dict, what: str) -> list[str]:
    return validate.names(names, list(known), what)


def properties(spec_names: Sequence[str]) -> list[Property]:
    """The checker's view of specs: invariants and reachability witnesses."""
    out = []
    for n in spec_names:
        s = SPECS[n]
        make = checker.invariant if s.kind == "invariant" else checker.reachable
        out.append(make(n, s.predicate, s.statement))
    return out


def model(cfg: str | Config = "tiny", variant: str | Variant = "linuxcr") -> CrModel:
    v = variant if isinstance(variant, Variant) else VARIANTS[_pick([variant], VARIANTS,
                                                                     "variant")[0]]
    return CrModel(config(cfg), v)


def verdict(r: Result) -> str:
    """The checker's verdict in the CLI's vocabulary: a witness reached `holds`, never
    reached `violated`."""
    return {"reached": "holds", "unreached": "violated"}.get(r.verdict, r.verdict)


def _explore_one(args: tuple) -> tuple[str, Exploration, float]:
    cfg, vname, spec_names, bounds, show, save, resume, live, save_every, mem = args
    m = CrModel(cfg, VARIANTS[vname])
    progress = auto_progress(sys.stderr, title=vname, live=live) if show else None
    t0 = time.perf_counter()
    ex = checker.explore(
        m, properties(spec_names), progress=progress, save=save, resume=resume,
        stop_when_decided=False, save_every=save_every, max_memory=mem, **bounds,
    )
    return vname, ex, time.perf_counter() - t0


def _explore_cluster(cfg: Config, vnames: Sequence[str], spec_names: Sequence[str],
                     bounds: dict[str, Any], show: bool, address: str, workers: int | None,
                     snap: dict[str, Any], family: bool) -> Iterator[tuple[str, Exploration]]:
    """The variants as one family, or each in turn, the states partitioned among the
    cluster's workers."""
    from checker.cluster import cluster_cpus, session
    from checker.distributed import explore_cluster, explore_cluster_family

    with session(address, workers) as ray:
        n = workers or cluster_cpus(ray)
        if family:
            fam = CrFamily(cfg, [VARIANTS[v] for v in vnames])
            progress = auto_progress(sys.stderr, title=f"{len(vnames)} variants on {n} "
                                     "workers") if show else None
            yield from zip(vnames, explore_cluster_family(
                ray, fam, properties(spec_names), workers=n, progress=progress, **bounds),
                strict=True)
            return
        for vname in vnames:
            m = CrModel(cfg, VARIANTS[vname])
            progress = auto_progress(sys.stderr, title=f"{vname} on {n} workers") if show \
                else None
            yield vname, explore_cluster(ray, m, properties(spec_names), workers=n,
                                         progress=progress, **bounds, **snap)


def _explore_one_pair(args: tuple) -> list[tuple[str, Exploration]]:
    vname, ex, _ = _explore_one(args)
    return [(vname, ex)]


def _explore_family(args: tuple) -> list[tuple[str, Exploration]]:
    cfg, vnames, spec_names, bounds, show, save, resume, live, save_every, mem = args
    fam = CrFamily(cfg, [VARIANTS[v] for v in vnames])
    title = f"{len(vnames)} variants"
    progress = auto_progress(sys.stderr, title=title, live=live) if show else None
    exs = explore_family(
        fam, properties(spec_names), progress=progress, save=save, resume=resume,
        stop_when_decided=False, save_every=save_every, max_memory=mem, **bounds,
    )
    return list(zip(vnames, exs, strict=True))


def split_family(vnames: Sequence[str], jobs: int) -> list[list[str]]:
    """The variants in at most `jobs` groups, each explored as a family in its own process.
    Variants equal in every knob a checkpoint step reads share every state up to the
    restart, so they stay together; classes differing in fewer knobs share more states (a
    step whose knobs differ often gives the same result), so the closest classes are merged
    first (average linkage on the number of differing knobs) until `jobs` groups remain."""
    classes: dict[tuple, list[str]] = {}
    for v in vnames:
        classes.setdefault(checkpoint_knobs(VARIANTS[v]), []).append(v)
    groups = [[k] for k in classes]

    def distance(a: list[tuple], b: list[tuple]) -> float:
        return sum(sum(x != y for x, y in zip(p, q, strict=True)) for p in a for q in b) / (
            len(a) * len(b))

    while len(groups) > max(1, jobs):
        _, i, j = min((distance(a, b), i, j) for i, a in enumerate(groups)
                      for j, b in enumerate(groups) if i < j)
        groups[i] += groups.pop(j)
    order = {v: i for i, v in enumerate(vnames)}
    return [sorted((v for k in g for v in classes[k]), key=order.__getitem__) for g in groups]


def check(
    cfg: str | Config = "tiny",
    variants: Sequence[str] | None = None,
    specs: Sequence[str] | None = None,
    *,
    engine: str = "explicit",
    max_states: int | None = None,
    max_depth: int | None = None,
    max_seconds: float | None = None,
    traces_dir: str | Path | None = None,
    progress: bool = False,
    save: str | None = None,
    resume: str | None = None,
    jobs: int = 1,
    on_variant: Callable[[str, Exploration], None] | None = None,
    save_every: float = 10.0,
    proof_size: str | None = None,
    z3_timeout: float | None = None,
    z3_cache: bool = True,
    max_memory: int | str | None = None,
    cluster: str | None = None,
    workers: int | None = None,
    per_variant: bool = False,
) -> Report:
    """Explore the variants (all chosen specs in one pass) and compare every verdict with the
    spec's expectation. Several variants are explored as one family (`checker.family`:
    the same answers as one exploration per variant, which `per_variant` asks for).
    `progress` shows each run's progress on stderr (a live line on a terminal); `jobs` > 1
    runs variants, or groups of them (`split_family`), in parallel processes (same
    results). `save`/`resume` snapshot the family (then in one process) or the one variant.
    `cluster` (``auto`` or a Ray head's HOST:PORT) runs on Ray instead (same results): the
    z3 engine's proof obligations as tasks, the explicit search (several variants as one
    family, or each in turn with `per_variant`) partitioned among `workers` actors
    (default: the cluster's CPUs)."""
    cfg = config(cfg)
    if workers is not None and cluster is None:
        raise UsageError("--workers needs --cluster")
    workers = validate.count("--workers", workers, 1, 4096)
    if cluster is not None:
        from checker.cluster import parse_address

        if not isinstance(cluster, str):
            raise UsageError(f"--cluster = {cluster!r:.60}: must be text, auto or HOST:PORT")
        cluster = parse_address(cluster)  # ClusterError: one line, exit 2
    vnames = _pick(variants, VARIANTS, "variant")
    snames = _pick(specs, SPECS, "spec")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r:.60}; known: {', '.join(ENGINES)}")
    max_states = validate.count("--max-states", max_states, 1)
    max_depth = validate.count("--max-depth", max_depth, 0)
    max_seconds = validate.seconds("--max-seconds", max_seconds)
    save_every = validate.seconds("--save-every", save_every, zero=True, infinite=True)
    z3_timeout = validate.seconds("--z3-timeout", z3_timeout)
    jobs = validate.count("--jobs", jobs, 1, 256)
    mem = validate.memory("--max-memory", max_memory)
    if mem is not None and (engine == "z3" or cluster is not None):
        raise UsageError("--max-memory bounds the explicit engine in this process, not "
                         "--engine z3 or --cluster")
    if mem is None:
        mem = validate.default_memory()
    if proof_size is not None and not isinstance(proof_size, str):
        raise UsageError(f"--proof-size = {proof_size!r:.60}: must be text "
                         "IN,OUT,FDS,FILES[,QUEUE]")
    if engine == "z3":
        from crmodel import z3run  # heavy import only when asked

        if save or resume or max_states or max_depth or max_seconds:
            raise UsageError("--save/--resume/--max-* belong to the explicit engine; the z3 "
                             "engine is bounded by --proof-size and --z3-timeout")
        if not variants:  # all variants: those the symbolic model encodes
            vnames = [v for v in vnames if z3run.encodes(VARIANTS[v])]
        size = z3run.parse_size(proof_size) if proof_size is not None else z3run.PROOF_SIZE
        validate.output_dir(traces_dir, "--traces")
        return z3run.check(cfg, vnames, snames if specs else None, traces_dir=traces_dir,
                           size=size, timeout=z3_timeout or z3run.TIMEOUT, jobs=jobs,
                           progress=progress, cache_dir=z3run.CACHE_DIR if z3_cache else None,
                           cluster_address=cluster, workers=workers)
    if proof_size is not None or z3_timeout is not None:
        raise UsageError("--proof-size and --z3-timeout belong to --engine z3")
    family = len(vnames) > 1 and not per_variant
    if (save or resume) and cluster is not None and family:
        raise UsageError("--save/--resume with --cluster need exactly one --variant (the "
                         "family search on a cluster keeps no snapshot)")
    if (save or resume) and len(vnames) > 1 and not family:
        raise UsageError("--save/--resume need exactly one --variant with --per-variant")
    # Every output checked before the exploration: a bad path found at the end loses it.
    validate.output_dir(traces_dir, "--traces")
    validate.output_file(save, "--save")
    if save is not None:
        salt = hooks(CrFamily(cfg, [VARIANTS[v] for v in vnames]) if family
                     else CrModel(cfg, VARIANTS[vnames[0]])).fingerprint_salt
        try:
            check_overwritable(save, salt)
        except SnapshotMismatch as e:
            raise SnapshotError(validate.one_line(str(e))) from None
    if resume is not None:
        validate.input_file(resume, "--resume")
    bounds = {"max_states": max_states, "max_depth": max_depth, "max_seconds": max_seconds}
    if family:
        # One snapshot holds one family: with --save/--resume it is explored in one process.
        groups = split_family(vnames, 1 if save or resume else jobs)
        run: Callable[[tuple], list[tuple[str, Exploration]]] = _explore_family
    else:
        groups = [[v] for v in vnames]
        run = _explore_one_pair
    parallel = len(groups) > 1 and jobs > 1
    jobs_args = [
        (cfg, g if family else g[0], snames, bounds, progress, save, resume, not parallel,
         save_every, mem) for g in groups
    ]
    explorations: dict[str, Exploration] = {}
    if cluster is not None:
        snap = {"save": save, "resume": resume, "save_every": save_every}
        try:
            for vname, ex in _explore_cluster(cfg, vnames, snames, bounds, progress, cluster,
                                              workers, snap, family):
                explorations[vname] = ex
                if on_variant:
                    on_variant(vname, ex)
        except SnapshotMismatch as e:
            raise SnapshotError(validate.one_line(str(e))) from None
    elif parallel:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(jobs, len(groups))) as pool, _ForwardSignals():
            for pairs in pool.imap(run, jobs_args):
                for vname, ex in pairs:
                    explorations[vname] = ex
                    if on_variant:
                        on_variant(vname, ex)
    else:
        for a in jobs_args:
            try:
                pairs = run(a)
            except SnapshotMismatch as e:
                raise SnapshotError(validate.one_line(str(e))) from None
            for vname, ex in pairs:
                explorations[vname] = ex
                if on_variant:
                    on_variant(vname, ex)
    rows = []
    for vname in vnames:
        ex = explorations[vname]
        m = CrModel(cfg, VARIANTS[vname])
        for r in ex.results:
            spec: Spec = SPECS[r.property]
            row = Row(
                vname, r.property, spec.kind, "explicit", verdict(r), spec.expected(vname, cfg),
                r.states, r.transitions, r.depth, r.seconds, r.reason, r.trace, None, m,
                exact=exact_expectations(cfg),
            )
            if traces_dir is not None and r.trace is not None:
                row.trace_path = write_trace(row, Path(traces_dir))
            rows.append(row)
    return Report(cfg, rows, explorations)


class _ForwardSignals:
    """While variants run in worker processes: Ctrl-C or SIGTERM sent to this process is
    passed on to the workers, which stop at their next check and return their figures (as a
    single-process run does); a second one ends the run at once, workers killed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _ForwardSignals:
        self.previous: dict[int, Any] = {}
        self.seen: set[int] = set()
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handler)
        return self

    def handler(self, signum: int, frame: Any) -> None:
        again = signum in self.seen
        self.seen.add(signum)
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                # A second signal ends the workers at once: one that caught it would finish
                # its exploration and then wait for work forever.
                os.kill(child.pid, signal.SIGKILL if again else signum)  # type: ignore[arg-type]
        if again:
            # And this process too, without leaving the pool: a worker killed while holding
            # the pool's queue lock would deadlock Pool.terminate().
            what = "terminated" if signum == signal.SIGTERM else "interrupted"
            os.write(2, f"crmodel: {what}\n".encode())
            os._exit(128 + signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev)


def spec_list() -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "doc": s.statement,
            "applies": s.applies,
            "violated_by": dict(s.deviations),
        }
        for s in SPECS.values()
    ]


def variant_list() -> list[dict[str, Any]]:
    from model.variants import knobs

    return [{"name": v.name, "kind": v.kind, "doc": v.doc, "knobs": knobs(v)}
            for v in VARIANTS.values()]


def config_list() -> list[dict[str, Any]]:
    return [{"name": c.name, "doc": c.doc, **c.to_dict()} for c in PRESETS.values()]
