"""`crmodel check --engine z3`: inductive proofs at a size explicit search cannot reach, and
bounded model checking for concrete counterexamples where a proof fails.

For each (variant, spec) the engine first tries to prove the spec, conjoined with its lemmas
(`specs/lemmas.py`), inductive for every state of the proof size, reachable or not, with no
bound on the number of steps (`checker.symbolic.prove`). If every obligation is valid the
verdict is `proved` and its reason names the size. Otherwise it runs BMC on the configuration's
bounds, to the longest run they allow, so a `holds` there is exhaustive for those bounds; a
counterexample is replayed on the explicit model and reported as `violated` with the same
trace as the explicit engine's. Where the spec declares a violation that needs more room
(`specs.registry.Bounded`), BMC also tries the preset it names. A failed proof with no
concrete counterexample is `unknown`, with the counterexample to induction as its trace: a
failure, never a pass. So is every z3 `unknown` or timeout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checker import cluster, symbolic
from checker.result import Result
from checker.symbolic import bmc, prove_parallel
from crmodel.report import Report, Row, exact_expectations, write_trace
from crmodel.validate import UsageError
from model.config import PRESETS, Config
from model.symbolic import SPECS_ENCODED, Sizes, covered_config
from model.system import CrModel
from model.variants import CRIU_RULES, LINUXCR, VARIANTS, Variant
from specs import SPECS
from specs.lemmas import proof_model

# The size proofs cover by default: 4 tasks (2 inside, 2 outside), 8 descriptors per fd
# table, 8 open files; every access mode, status-flag set, close-on-exec value, 2 paths and
# 4 offsets; any number of steps.
PROOF_SIZE = Sizes(inside=2, outside=2, fds=8, files=8)
TIMEOUT = 600.0  # seconds per z3 query
CACHE_DIR = ".crmodel-cache/z3"  # unsat answers by formula (checker.symbolic.ProofCache)


# CRIU's own rules, which the symbolic model does not encode: the z3 engine refuses a variant
# that sets any of them rather than prove something about another design.
UNENCODED_KNOBS = CRIU_RULES


def encodes(v: Variant) -> bool:
    """Whether the symbolic model can express variant `v`."""
    return not any(getattr(v, k) != getattr(LINUXCR, k) for k in UNENCODED_KNOBS)


def parse_size(text: str) -> Sizes:
    """`INSIDE,OUTSIDE,FDS,FILES[,QUEUE]` -> Sizes (a usage error if malformed); QUEUE > 0
    puts unix sockets in the proofs, each queue holding up to QUEUE in-flight files."""
    try:
        parts = [int(x) for x in text.split(",")]
        if len(parts) not in (4, 5):
            raise ValueError
        size = Sizes(*parts)
    except ValueError:
        raise UsageError(f"--proof-size wants INSIDE,OUTSIDE,FDS,FILES[,QUEUE] (four or five "
                         f"integers), not {text!r:.60}") from None
    if size.inside < 1 or size.outside < 1 or size.fds < 1 or size.files < 1:
        raise UsageError("--proof-size: every figure must be at least 1 (QUEUE at least 0)")
    if size.tasks > 8 or size.fds > 16 or size.files > 16:
        raise UsageError("--proof-size: at most 8 tasks, 16 descriptors and 16 files")
    if size.queue < 0 or size.queue > 8:
        raise UsageError("--proof-size: QUEUE must be 0 (no unix sockets) to 8")
    if size.queue and size.files < 3:
        raise UsageError("--proof-size: with unix sockets (QUEUE > 0) FILES must be at least "
                         "3 (a socket pair and a file to send)")
    return size


def run_length(cfg: Config) -> int:
    """The longest run `cfg` allows: its environment steps, the outside steps during a
    checkpoint, and the checkpoint's own seven (freeze, collect, contained, write, visited,
    one tampering with the image, restart). BMC to this depth is exhaustive for the config."""
    return cfg.env_steps + cfg.checkpoint_steps + 7


@dataclass(frozen=True)
class Job:
    cfg: Config
    variant: str
    spec: str
    size: Sizes
    timeout: float
    jobs: int = 1  # processes sharing the proof's obligations
    progress: bool = False  # a line on stderr per obligation decided
    ray: Any = None  # a connected Ray (checker.cluster.session): obligations as its tasks


def _queue(job: Job, cfg: Config) -> int:
    """The symbolic queue length BMC on `cfg` uses: the proof size's, where `cfg` has unix
    sockets (none in a proof without them)."""
    return job.size.queue if "unix" in cfg.kinds else 0


def _bmc_configs(job: Job) -> list[Config]:
    out = [covered_config(job.cfg, job.cfg.name, sockets=_queue(job, job.cfg) > 0)]
    b = SPECS[job.spec].bounded.get(job.variant)
    if b is not None and not b.reached(job.cfg):
        demo = PRESETS[b.demo]
        out.append(covered_config(demo, b.demo, sockets=_queue(job, demo) > 0))
    return out


def run_job(job: Job) -> tuple[Result, Config]:
    """Prove, else refute: the Result and the config its trace belongs to."""
    t0 = time.monotonic()
    v = VARIANTS[job.variant]
    sym = proof_model(job.size, v)
    cache = symbolic.CACHE
    before = (cache.hits, cache.misses) if cache is not None else (0, 0)
    def report(r: symbolic.ObligationResult, done: int, total: int) -> None:
        print(f"z3: {job.variant} / {job.spec}: {symbolic.progress_text(r, done, total)}",
              file=sys.stderr, flush=True)

    on_result = report if job.progress else None
    if job.ray is not None:
        ok, obs = cluster.prove_cluster(job.ray, proof_model, (job.size, v), job.spec,
                                        job.timeout, on_result=on_result)
    else:
        ok, obs = prove_parallel(proof_model, (job.size, v), job.spec, job.timeout,
                                 job.jobs, on_result=on_result)
    if ok:
        lemmas = [lem.name for lem in sym.lemmas(job.spec)]
        slow = max(obs, key=lambda o: o.seconds)
        cached = ""
        if cache is not None and cache.hits > before[0]:
            hits, total = cache.hits - before[0], cache.hits + cache.misses - sum(before)
            cached = (f"; {hits} of {total} queries were formulas already proved unsat, "
                      "answered from the cache")
        return Result(job.spec, "proved", seconds=time.monotonic() - t0, engine="z3",
                      reason=f"inductive for every state of {job.size.text()}, reachable or "
                      f"not, any number of steps ({len(obs)} obligations, slowest "
                      f"{slow.obligation.id} {slow.seconds:.1f}s; lemmas: "
                      f"{', '.join(lemmas) or 'none'}{cached})"), job.cfg
    bad = obs[-1]
    why = (f"not proved at {job.size.text()}: obligation {bad.obligation.id} {bad.status}"
           + (f" ({bad.detail})" if bad.detail else ""))
    return _refute(job, t0, why, bad.cti)


def _refute(job: Job, t0: float, why: str, cti: Any = None) -> tuple[Result, Config]:
    """BMC on the job's configs after a failed proof: `violated` with the first trace
    found, else `unknown` with the counterexample to induction `cti`."""
    v = VARIANTS[job.variant]
    tried = []
    for cfg in _bmc_configs(job):
        depth = run_length(cfg)
        [r] = bmc(proof_model(cfg, v, queue=_queue(job, cfg)), [job.spec], depth, job.timeout)
        if r.verdict == "violated":
            r.seconds = time.monotonic() - t0
            r.reason = f"{why}; on {cfg.name}: {r.reason}"
            return r, cfg
        tried.append(f"BMC on {cfg.name} to depth {depth} (exhaustive there): {r.verdict}"
                     + (f" ({r.reason})" if r.verdict == "unknown" else ""))
    return Result(job.spec, "unknown",
                  seconds=time.monotonic() - t0, engine="z3", trace=cti,
                  reason=f"{why}; {'; '.join(tried)}"), job.cfg


def check(cfg: Config, vnames: Sequence[str], snames: Sequence[str] | None, *,
          traces_dir: str | Path | None = None, size: Sizes = PROOF_SIZE,
          timeout: float = TIMEOUT, jobs: int = 1, progress: bool = False,
          cache_dir: str | Path | None = CACHE_DIR, cluster_address: str | None = None,
          workers: int | None = None) -> Report:
    """Every (variant, spec) pair through `run_job`; rows as the explicit engine gives them.
    `snames` None means every spec the symbolic model encodes; `cache_dir` None solves every
    query afresh. `cluster_address` (``auto`` or a Ray head's HOST:PORT) sends each proof
    obligation to a Ray task instead of `jobs` local processes (`workers`: the CPUs of an
    ``auto`` cluster)."""
    symbolic.use_cache(cache_dir)
    try:
        if cluster_address is None:
            return _check(cfg, vnames, snames, traces_dir, size, timeout, jobs, progress)
        with cluster.session(cluster_address, workers) as ray:
            return _check(cfg, vnames, snames, traces_dir, size, timeout, jobs, progress, ray)
    finally:
        symbolic.use_cache(None)  # no cache left behind for other callers of the engine


def _check(cfg: Config, vnames: Sequence[str], snames: Sequence[str] | None,
           traces_dir: str | Path | None, size: Sizes, timeout: float, jobs: int,
           progress: bool, ray: Any = None) -> Report:
    if snames is None:
        snames = list(SPECS_ENCODED)
    missing = [s for s in snames if s not in SPECS_ENCODED]
    if missing:
        raise UsageError(f"the z3 engine does not encode {missing[0]!r}; it checks: "
                         f"{', '.join(SPECS_ENCODED)} (use --engine explicit for the rest)")
    for name in vnames:
        if not encodes(VARIANTS[name]):
            raise UsageError(f"the z3 engine does not encode variant {name!r} (CRIU's own rules:"
                             " owners, in-flight files, timerfd, peers dumped); use --engine "
                             "explicit for it")
    todo = [Job(cfg, v, s, size, timeout, jobs, progress, ray) for v in vnames for s in snames]
    done: dict[tuple[str, str], tuple[Result, Config]] = {}
    for job in todo:  # one pair at a time, its proof obligations over `jobs` processes
        r, c = run_job(job)
        done[(job.variant, job.spec)] = (r, c)
        if progress:
            print(f"z3: {job.variant} / {job.spec}: {r.verdict} in {r.seconds:.1f}s",
                  file=sys.stderr, flush=True)
    rows = []
    for job in todo:
        r, c = done[(job.variant, job.spec)]
        m = CrModel(covered_config(c, c.name, sockets=_queue(job, c) > 0), VARIANTS[job.variant])
        if r.trace is not None:
            r.trace.model = m
        # A proof covers any number of steps: the expectation is the unbounded one.
        row = Row(job.variant, job.spec, "invariant", "z3", r.verdict,
                  SPECS[job.spec].expected(job.variant), 0, 0, r.depth, r.seconds, r.reason,
                  r.trace, None, m, exact=exact_expectations(cfg))
        if traces_dir is not None and r.trace is not None:
            row.trace_path = write_trace(row, Path(traces_dir))
        rows.append(row)
    return Report(cfg, rows, {})
