"""Breadth-first search of any `Model` over Ray workers: hash-partitioned, level-synchronous.

Each worker (a Ray actor, `_Partition`) owns the canonical states whose *stable fingerprint*
falls in its partition (`fingerprint % workers`). The fingerprint is a BLAKE2b digest of a
canonical serialisation of the state (`stable_fingerprint`: sets sorted, every value tagged by
its type), the same on every machine and Python process; `hash()` is not (it is salted for
strings and depends on the build). One BFS level is one round:

1. every worker expands the states of the level it owns and sorts their successors' canonical
   forms by owner; to each owner it *offers* their fingerprints, each with its *discovery
   key* ``(parent's global number, transition index)`` (arrays of integers, no states);
2. each owner *selects* among the offers the states it has not seen, each with the smallest
   key it was offered with, and asks each sender for those states only, which the senders
   *ship* (pickled); the owner checks the properties on its new states;
3. the driver merges the owners' sorted keys: a new state's global number in the next level
   is its rank by key. That is exactly the order in which the single-process search
   (`checker.explicit`) discovers the level, expanding parents in order and each parent's
   successors in order, so counts, verdicts, the first violating state of each property and
   therefore the traces are the same.

Parent pointers are kept where a state lives, as (worker, position in that worker's level) with
the transition index, and a trace is rebuilt at the driver by asking each owner in turn, then
replayed on the model like the single-process trace (`checker.trace.replay`).

What differs from `checker.explicit`: bounds (`max_states`, `max_seconds`) and Ctrl-C are
honoured at level boundaries only, so a bounded run's figures are those of whole levels
(`max_states` stops after the level that crosses it); `stop_when_decided` is not offered (the
search runs to the end, as `crmodel check` asks). Snapshots (`save`, `resume`) are taken at
level boundaries, in the data-only format of `checker.snapshot`, and resume only with the same
number of workers: states sit in partitions by fingerprint modulo the workers, and parent
pointers name (worker, position). A worker lost mid-level stops the run: undecided properties
are ``unknown``, `stopped_by` is ``worker_lost`` and the reason names the worker and the
figures of the levels completed; the last snapshot, if saving, is kept for `resume`. Variants
are explored one after the other, each with all its workers.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from array import array
from collections import Counter, _count_elements  # type: ignore[attr-defined]  # C loop
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from checker.model import ModelHooks, Property, hooks
from checker.progress import ProgressInfo, as_progress
from checker.result import Exploration, StopReason, coverage_by_name, property_results
from checker.snapshot import (
    SnapshotMismatch,
    check_header,
    check_overwritable,
    model_packages,
    read_header,
    read_snapshot,
    write_snapshot,
)
from checker.trace import Trace, replay

__all__ = ["explore_cluster", "stable_fingerprint", "ENGINE", "WorkerLost"]

ENGINE = "distributed-bfs"
FP_BYTES = 8
KEY_SHIFT = 24  # a discovery key is parent number << 24 | transition index
INIT = 0xFFFF  # parent worker of an initial state (its parent position: the init index)


class WorkerLost(Exception):
    """A worker died mid-level; the run stops with the figures of the levels completed."""


# --- the stable fingerprint -------------------------------------------------------------------


_MEMO_DEPTH = 3  # tuples this near the root are memoised: successors share most of them


def _encode(v: Any, out: list[bytes], memo: dict[Any, bytes], depth: int) -> None:
    t = type(v)
    if t is int or t is bool:  # True == 1 in Python, so in the seen set: the same bytes
        out.append(b"i%d;" % v)
    elif isinstance(v, tuple):  # NamedTuples too: they compare as tuples, so they encode so
        b = memo.get(v) if depth < _MEMO_DEPTH else None
        if b is None:
            o = [b"("]
            for x in v:
                _encode(x, o, memo, depth + 1)
            o.append(b")")
            b = b"".join(o)
            if depth < _MEMO_DEPTH:
                memo[v] = b
        out.append(b)
    elif isinstance(v, int):  # IntEnum and other int subclasses: their value
        out.append(b"i%d;" % int(v))
    elif isinstance(v, frozenset | set):
        parts = []
        for x in v:
            o: list[bytes] = []
            _encode(x, o, memo, _MEMO_DEPTH)
            parts.append(b"".join(o))
        parts.sort()  # iteration order depends on hashes and history; sorted bytes do not
        out.append(b"{" + b"".join(parts) + b"}")
    elif isinstance(v, str):
        e = v.encode()
        out.append(b"s%d:" % len(e) + e)
    elif v is None:
        out.append(b"N")
    else:
        raise TypeError(f"stable_fingerprint: cannot serialise a {t.__name__} ({v!r:.80})")


def stable_fingerprint(state: Any, memo: dict[Any, bytes] | None = None) -> int:
    """A 64-bit fingerprint of `state`, equal for equal states in every process and on every
    machine: BLAKE2b of a canonical serialisation (ints and bools by value, tuples and
    NamedTuples as tuples, frozensets sorted, str as UTF-8), so states Python finds equal
    fingerprint alike. `memo` (any dict, kept by the caller) remembers the serialisation of
    the tuples near the root, which successors of one state mostly share."""
    out: list[bytes] = []
    _encode(state, out, {} if memo is None else memo, 0)
    return int.from_bytes(hashlib.blake2b(b"".join(out), digest_size=FP_BYTES).digest(),
                          "little")


# --- a worker ---------------------------------------------------------------------------------


def _returns(values: list[Any]) -> Any:
    """A method's values, one per worker, as Ray's num_returns=len(values) wants them (a
    single value is returned as itself, not as a list of one)."""
    return values if len(values) > 1 else values[0]


class _Partition:
    """The states one worker owns: seen fingerprints, each level's parent pointers, and the
    frontier (the level being expanded) with each state's global number."""

    def __init__(self, index: int, workers: int, model: Any,
                 properties: Sequence[Property]) -> None:
        self.index, self.workers = index, workers
        self.h = hooks(model)
        self.props = list(properties)
        self.seen: set[int] = set()
        self.par_w: list[array] = []  # per level, per owned state: parent's worker
        self.par_p: list[array] = []  # ... parent's position in that worker's level
        self.act: list[array] = []  # ... transition index among the parent's successors
        self.frontier: list[Any] = []
        self.frontier_g = array("q")  # their global numbers (increasing)
        self.nsucc = array("I")  # successors of each frontier state (transitions)
        self.coverage: Counter = Counter()
        self.pending: list[tuple[int, int, Any, int, int]] = []  # key, fp, state, worker, pos
        self.boxes: list[tuple[list, array, array, array]] = []  # this level's successors
        self.chosen: list[tuple[int, int, int, int, int]] = []  # key, fp, sender, index, pos
        self.own_states: list[Any] = []
        self.bytes_out = 0
        # Per owner, the fingerprints this worker ever sent it: a cache (the owner has seen
        # them), so each state crosses from one worker to another at most once.
        self.sent: list[set[int]] = [set() for _ in range(workers)]

    def start(self, states: list[Any], fps: list[int], inits: list[int],
              globals_: list[int]) -> None:
        """Level 0: the initial states this worker owns."""
        self.seen.update(fps)
        self.par_w.append(array("H", [INIT] * len(states)))
        self.par_p.append(array("I", inits))
        self.act.append(array("I", [0] * len(states)))
        self.frontier, self.frontier_g = list(states), array("q", globals_)

    def expand(self, probe: bool = False) -> list[Any]:
        """Expand the frontier. Per owner, an *offer*: the fingerprints, discovery keys and
        parent positions of the successors it owns (arrays, as bytes; None for this worker
        itself); the states wait here until their owner asks for them (`ship`). Then the
        transitions expanded. `probe`: only to learn whether deeper states exist (at
        max_depth): the coverage is left as it was, as the single-process engine does."""
        h, n, me, seen = self.h, self.workers, self.index, self.seen
        successors, canonical, fpf = h.successors, h.canonical, stable_fingerprint
        boxes: list[tuple[list, array, array, array]] = [
            ([], array("Q"), array("q"), array("I")) for _ in range(n)]
        sent = self.sent
        memo: dict[Any, int] = {}  # canonical state -> fingerprint, within this level
        parts_memo: dict[Any, bytes] = {}  # see stable_fingerprint
        sent_here: set[int] = set()  # this level's states for this worker itself
        sent[me] = sent_here
        self.nsucc = array("I")
        cov, transitions, count, first = self.coverage, 0, _count_elements, itemgetter(0)
        for p, s in enumerate(self.frontier):
            key0 = self.frontier_g[p] << KEY_SHIFT
            pairs = list(successors(s))
            self.nsucc.append(len(pairs))
            transitions += len(pairs)
            if not probe:
                count(cov, map(first, pairs))
            for k, (_a, t) in enumerate(pairs):
                c = canonical(t)
                f = memo.get(c)
                if f is None:
                    f = memo[c] = fpf(c, parts_memo)
                o = f % n
                # The first time a sender meets a state in a level is its smallest key from
                # this sender; a state offered in an earlier level is known to its owner.
                if f in sent[o] or (o == me and f in seen):
                    continue
                if o != me:
                    sent[o].add(f)
                else:
                    sent_here.add(f)
                states, fps, keys, pos = boxes[o]
                states.append(c)
                fps.append(f)
                keys.append(key0 | k)
                pos.append(p)
        self.boxes = boxes  # the frontier stays until commit: a snapshot may need it
        offers: list[Any] = [None if i == me else (b[1].tobytes(), b[2].tobytes(), b[3].tobytes())
                             for i, b in enumerate(boxes)]
        self.bytes_out += sum(sum(map(len, o)) for o in offers if o is not None)
        return [*offers, transitions]

    def select(self, *offers: tuple[bytes, bytes, bytes] | None) -> Any:
        """At the owner: of the offers, one per sender (None: its own), the states not seen
        yet, each with its smallest key. Returns, per sender, the offer positions to ship."""
        seen = self.seen
        best: dict[int, tuple[int, int, int, int]] = {}  # fp -> key, sender, index, pos
        for sender, offer in enumerate(offers):
            if offer is None:
                _, fps, keys, pos = self.boxes[self.index]
            else:
                fps, keys, pos = array("Q"), array("q"), array("I")
                for a, b in zip((fps, keys, pos), offer, strict=True):
                    a.frombytes(b)
            for i, (f, key, p) in enumerate(zip(fps, keys, pos, strict=True)):
                if f in seen:
                    continue
                old = best.get(f)
                if old is None or key < old[0]:
                    best[f] = (key, sender, i, p)
        self.chosen = sorted(((key, f, w, i, p) for f, (key, w, i, p) in best.items()),
                             key=itemgetter(0))
        asks = [array("I") for _ in offers]
        for e in self.chosen:
            asks[e[2]].append(e[3])
        out: list[bytes | None] = [None if w == self.index else a.tobytes()
                                   for w, a in enumerate(asks)]
        self.bytes_out += sum(len(b) for b in out if b is not None)
        return _returns(out)

    def ship(self, *asks: bytes | None) -> Any:
        """At a sender: the states each owner asked for (pickled; None for this worker)."""
        out: list[bytes | None] = []
        for owner, ask in enumerate(asks):
            if ask is None:
                out.append(None)
                continue
            idx = array("I")
            idx.frombytes(ask)
            states = self.boxes[owner][0]
            out.append(pickle.dumps([states[i] for i in idx], protocol=pickle.HIGHEST_PROTOCOL))
        self.bytes_out += sum(len(b) for b in out if b is not None)
        self.own_states = self.boxes[self.index][0]
        self.boxes = []
        return _returns(out)

    def merge(self, active: list[int], *shipped: bytes | None) -> tuple[bytes, dict[int, int]]:
        """At the owner: the states shipped for its choice (`select`) become the pending
        next level, in key order. Returns their keys and, per property violated (or
        witnessed) among them, the position of the first (`active`: those undecided)."""
        me = self.index
        states = [self.own_states if b is None else pickle.loads(b) for b in shipped]
        nxt = [0] * len(shipped)
        pending = []
        for key, f, w, i, p in self.chosen:
            c = states[w][i] if w == me else states[w][nxt[w]]
            nxt[w] += 1
            pending.append((key, f, c, w, p))
        self.pending, self.chosen, self.own_states = pending, [], []
        found: dict[int, int] = {}
        for j in active:
            prop = self.props[j]
            inv = prop.kind == "invariant"
            for i, e in enumerate(pending):
                if (not prop.predicate(e[2])) is inv:
                    found[j] = i
                    break
        return array("q", (e[0] for e in pending)).tobytes(), found

    def transitions_before(self, g: int) -> int:
        """Transitions of the expanded level's parents numbered below `g`."""
        return sum(m for gi, m in zip(self.frontier_g, self.nsucc, strict=True) if gi < g)

    def commit(self, globals_: bytes) -> None:
        """The pending states become this worker's part of the next level."""
        pend, self.pending = self.pending, []
        self.seen.update(e[1] for e in pend)
        self.par_w.append(array("H", (e[3] for e in pend)))
        self.par_p.append(array("I", (e[4] for e in pend)))
        self.act.append(array("I", (e[0] & ((1 << KEY_SHIFT) - 1) for e in pend)))
        self.frontier = [e[2] for e in pend]
        g = array("q")
        g.frombytes(globals_)
        self.frontier_g = g

    def dump(self) -> dict[str, Any]:
        """This partition at a level boundary, as snapshot data (see `_check_part`)."""
        return {"seen": array("Q", self.seen), "par_w": self.par_w, "par_p": self.par_p,
                "act": self.act, "frontier": self.frontier, "frontier_g": self.frontier_g,
                "coverage": list(self.coverage.items()), "bytes_out": self.bytes_out}

    def restore(self, d: dict[str, Any]) -> None:
        self.seen = set(d["seen"])
        self.par_w, self.par_p, self.act = d["par_w"], d["par_p"], d["act"]
        self.frontier, self.frontier_g = d["frontier"], d["frontier_g"]
        self.coverage = Counter(dict(d["coverage"]))
        self.bytes_out = d["bytes_out"]

    def pid(self) -> int:
        return os.getpid()

    def parent(self, level: int, pos: int) -> tuple[int, int, int]:
        return self.par_w[level][pos], self.par_p[level][pos], self.act[level][pos]

    def totals(self) -> tuple[dict[Any, int], int, float]:
        return dict(self.coverage), self.bytes_out, time.process_time()


# --- snapshots --------------------------------------------------------------------------------


def _read(path: str | os.PathLike[str], h: ModelHooks, props: list[Property],
          workers: int) -> dict[str, Any]:
    """A snapshot's data, refused (`SnapshotMismatch`, one line) unless made by this engine
    for this model, these properties and this many workers, and well formed."""
    head = read_header(path)
    if head.get("engine") != ENGINE:
        raise SnapshotMismatch(f"snapshot {path} was made by the single-process engine: "
                               "resume it without --cluster")
    check_header(path, head, h.fingerprint_salt)
    if head.get("workers") != workers:
        raise SnapshotMismatch(
            f"snapshot {path} was made with {str(head.get('workers')):.12} workers, not "
            f"{workers}: states are partitioned by fingerprint modulo the workers and parent "
            "pointers name (worker, position), so resume with the same --workers")
    if head.get("properties") != [[p.name, p.kind] for p in props]:
        raise SnapshotMismatch(f"snapshot {path} checks other properties")
    _, data = read_snapshot(path, h.fingerprint_salt, model_packages(h.model))
    _check(path, data, len(props), workers)
    inits = len(list(h.init_states()))
    if any(i >= inits for p in data["parts"] for i in p["par_p"][0]):
        raise SnapshotMismatch(f"snapshot {path}: malformed payload (initial states)")
    return data


def _nat(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check(path: str | os.PathLike[str], d: dict[str, Any], nprops: int, n: int) -> None:
    """The decoded record is well formed: keys, types, sizes, and every parent pointer
    inside the level before (a trace follows them)."""

    def bad(what: str) -> SnapshotMismatch:
        return SnapshotMismatch(f"snapshot {path}: malformed payload ({what})")

    if set(d) != {"level", "levels", "states", "transitions", "seconds", "done", "found",
                  "parts"}:
        raise bad("keys")
    levels, parts = d["levels"], d["parts"]
    if not (all(_nat(d[k]) for k in ("level", "states", "transitions"))
            and isinstance(d["seconds"], float) and isinstance(d["done"], bool)
            and isinstance(levels, list) and all(_nat(c) for c in levels)
            and len(levels) == d["level"] + 1 and sum(levels) == d["states"]
            and isinstance(parts, list) and len(parts) == n):
        raise bad("figures")
    keys = {"seen", "par_w", "par_p", "act", "frontier", "frontier_g", "coverage",
            "bytes_out"}
    sizes = [[0] * n for _ in levels]
    for w, p in enumerate(parts):
        if not (isinstance(p, dict) and set(p) == keys and _nat(p["bytes_out"])
                and all(isinstance(p[k], list) and len(p[k]) == len(levels)
                        and all(isinstance(a, array) for a in p[k])
                        for k in ("par_w", "par_p", "act"))
                and isinstance(p["seen"], array) and isinstance(p["frontier"], list)
                and isinstance(p["frontier_g"], array) and isinstance(p["coverage"], list)):
            raise bad(f"worker {w}")
        for lvl in range(len(levels)):
            sizes[lvl][w] = len(p["par_w"][lvl])
            if not len(p["par_p"][lvl]) == len(p["act"][lvl]) == sizes[lvl][w]:
                raise bad(f"worker {w}, level {lvl}")
        if not len(p["frontier"]) == len(p["frontier_g"]) == sizes[-1][w]:
            raise bad(f"worker {w}, frontier")
        if any(not (isinstance(c, list | tuple) and len(c) == 2 and _nat(c[1]))
               for c in p["coverage"]):
            raise bad(f"worker {w}, coverage")
    if [sum(s) for s in sizes] != levels or sum(len(p["seen"]) for p in parts) != d["states"]:
        raise bad("sizes")
    for w, p in enumerate(parts):
        for lvl in range(1, len(levels)):
            for pw, pp in zip(p["par_w"][lvl], p["par_p"][lvl], strict=True):
                if pw >= n or pp >= sizes[lvl - 1][pw]:
                    raise bad(f"worker {w}, level {lvl}: parent out of range")
        if any(pw != INIT for pw in p["par_w"][0]):
            raise bad(f"worker {w}: initial states")
    found = d["found"]
    if not (isinstance(found, list) and all(
            isinstance(f, list) and len(f) == 7 and all(_nat(x) for x in f[:6])
            and isinstance(f[6], float) and f[0] < nprops and f[1] < len(levels)
            and f[2] < n and f[3] < sizes[f[1]][f[2]] for f in found)):
        raise bad("found")


# --- the driver -------------------------------------------------------------------------------


class _Found:
    def __init__(self, level: int, worker: int, pos: int, states: int, transitions: int,
                 seconds: float) -> None:
        self.level, self.worker, self.pos = level, worker, pos
        self.states, self.transitions, self.seconds = states, transitions, seconds


def _ranks(keys: list[array], n: int) -> list[array]:
    """Global numbers of each owner's new states: their ranks among all owners' keys (keys
    are unique: one transition of one parent makes one state)."""
    tagged = sorted(k * n + j for j, ks in enumerate(keys) for k in ks)
    out = [array("q") for _ in range(n)]
    for g, t in enumerate(tagged):
        out[t % n].append(g)
    return out


def explore_cluster(
    ray: Any,
    model: Any,
    properties: Iterable[Property] = (),
    *,
    workers: int = 2,
    max_states: int | None = None,
    max_depth: int | None = None,
    max_seconds: float | None = None,
    progress: Any = None,
    on_level: Callable[[int, list[Any]], None] | None = None,
    save: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    save_every: float = 10.0,
) -> Exploration:
    """`checker.explore` on a connected Ray (`checker.cluster.session`) with `workers`
    partitions: the same states, verdicts and traces (see the module doc for the bounds).
    `on_level(level, actors)` is called before each level is expanded (tests use it to kill
    a worker). `save`: a snapshot at level boundaries, at most every `save_every` seconds
    and at the end (not after a worker was lost: the last one stays); `resume`: continue
    from one, made with the same number of workers (`SnapshotMismatch` otherwise)."""
    h = hooks(model)
    props = list(properties)
    names = [p.name for p in props]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate property names: {names}")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < workers:
        from checker.cluster import ClusterError

        raise ClusterError(f"{workers} workers asked, the cluster has {cpus} CPUs")
    snap = _read(resume, h, props, workers) if resume is not None else None
    if save is not None:
        check_overwritable(save, h.fingerprint_salt)
    actor = ray.remote(_Partition).options(num_cpus=1, max_restarts=0)
    parts = [actor.remote(i, workers, model, props) for i in range(workers)]
    try:
        d = _Driver(ray, h, props, parts, workers)
        d.save_path, d.save_every = save, save_every
        if snap is not None:
            d.restore(snap)
        return d.run(max_states, max_depth, max_seconds, as_progress(progress), on_level)
    finally:
        for a in parts:
            ray.kill(a)


class _Driver:
    def __init__(self, ray: Any, h: ModelHooks, props: list[Property], parts: list[Any],
                 n: int) -> None:
        self.ray, self.h, self.props, self.parts, self.n = ray, h, props, parts, n
        self.found: dict[int, _Found] = {}
        self.levels: list[int] = []
        self.states = self.transitions = 0
        self.level = 0
        self.t0 = time.perf_counter()
        self.lost = ""
        self.seconds0 = 0.0  # spent by the runs a snapshot continues
        self.done = False  # a resumed snapshot of a finished search
        self.started = False
        self.save_path: str | os.PathLike[str] | None = None
        self.save_every = 10.0
        self.t_save = self.t0

    def get(self, refs: Any) -> Any:
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as e:
            dead = []
            for i, a in enumerate(self.parts):
                try:
                    self.ray.get(a.totals.remote(), timeout=10)
                except Exception:
                    dead.append(i)
            who = ", ".join(f"worker {i}" for i in dead) or "a worker"
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise WorkerLost(f"{who} lost while depth {self.level} was expanded "
                             f"({type(e).__name__}: {first})") from None

    def run(self, max_states: int | None, max_depth: int | None, max_seconds: float | None,
            progress: Any, on_level: Callable[[int, list[Any]], None] | None) -> Exploration:
        parts = self.parts
        stopped: StopReason | None = None
        complete = False
        cap = max_states if max_states is not None else 1 << 62
        deadline = self.t0 + max_seconds if max_seconds is not None else float("inf")
        try:
            if not self.started:
                self.start()
            complete = self.done
            while not complete:
                if max_depth is not None and self.level >= max_depth:
                    keys = self.next_level(commit=False)
                    if any(len(k) for k in keys):
                        stopped = "max_depth"
                    else:
                        complete = True
                    break
                if on_level is not None:
                    on_level(self.level, parts)
                if not any(len(k) for k in self.next_level(commit=True)):
                    complete = True
                    break
                now = time.perf_counter()
                progress.update(self.info(now, level_done=True))
                if self.save_path is not None and now - self.t_save >= self.save_every:
                    self.save(complete=False)
                if self.states >= cap:
                    stopped = "max_states"
                    break
                if now >= deadline:
                    stopped = "max_seconds"
                    break
        except WorkerLost as e:
            self.lost, stopped = str(e), "worker_lost"
        except KeyboardInterrupt:
            stopped = "interrupt"
        if self.save_path is not None and stopped != "worker_lost" and self.started:
            self.save(complete=complete and max_depth is None)
        ex = self.exploration(stopped, complete, max_depth)
        close = getattr(progress, "close", None)
        if close is not None:
            close(self.info(time.perf_counter(), final=True, stopping=stopped))
        if ex.stopped_by != "worker_lost":
            cov, sent, cpu = zip(*self.get([p.totals.remote() for p in parts]), strict=True)
            ex.coverage, ex.never_fired = self.coverage(cov)
            ex.bytes_exchanged = sum(sent)
            ex.worker_cpu_seconds = sum(cpu)
        return ex

    def info(self, now: float, **kw: Any) -> ProgressInfo:
        run = now - self.t0
        return ProgressInfo(states=self.states, transitions=self.transitions,
                            queue=self.levels[-1] if self.levels else 0, depth=self.level,
                            elapsed=run, states_per_s=self.states / run if run > 0 else 0.0,
                            **kw)

    def start(self) -> None:
        """Level 0, at the driver: the initial states, numbered as the single process does."""
        h, n = self.h, self.n
        inits = list(h.init_states())
        kept: list[tuple[int, Any, int]] = []
        fps: set[int] = set()
        for i, t in enumerate(inits):
            c = h.canonical(t)
            f = stable_fingerprint(c)
            if f not in fps:
                fps.add(f)
                kept.append((i, c, f))
        self.inits = inits
        where: list[tuple[int, int]] = []  # global number -> (worker, position)
        per: list[tuple[list, list, list, list]] = [([], [], [], []) for _ in range(n)]
        for g, (i, c, f) in enumerate(kept):
            o = f % n
            where.append((o, len(per[o][0])))
            for box, v in zip(per[o], (c, f, i, g), strict=True):
                box.append(v)
        self.states = len(kept)
        for j, p in enumerate(self.props):
            for g, (_i, c, _f) in enumerate(kept):
                if (not p.predicate(c)) is (p.kind == "invariant"):
                    w, pos = where[g]
                    self.found[j] = _Found(0, w, pos, g + 1, 0, self.elapsed())
                    break
        self.get([part.start.remote(*per[j]) for j, part in enumerate(self.parts)])
        self.levels.append(len(kept))
        self.started = True

    def elapsed(self) -> float:
        return self.seconds0 + time.perf_counter() - self.t0

    def next_level(self, commit: bool) -> list[array]:
        """One round (see the module doc); the new states' keys per owner."""
        n, parts = self.n, self.parts

        def each(refs: Any) -> list[Any]:  # num_returns=1 gives one ref, not a list
            return refs if n > 1 else [refs]

        outs = [p.expand.options(num_returns=n + 1).remote(not commit) for p in parts]
        asks = [each(parts[j].select.options(num_returns=n).remote(
            *[outs[i][j] for i in range(n)])) for j in range(n)]
        ships = [each(parts[i].ship.options(num_returns=n).remote(
            *[asks[j][i] for j in range(n)])) for i in range(n)]
        active = [j for j in range(len(self.props)) if j not in self.found]
        merged = [parts[j].merge.remote(active, *[ships[i][j] for i in range(n)])
                  for j in range(n)]
        stats = self.get([o[n] for o in outs])
        got = self.get(merged)
        keys: list[array] = []
        for blob, _ in got:
            a = array("q")
            a.frombytes(blob)
            keys.append(a)
        if not commit or not any(len(k) for k in keys):
            return keys
        ranks = _ranks(keys, n)
        level_transitions = sum(stats)
        for j in range(len(self.props)):
            if j in self.found:
                continue
            hits = [(ranks[w][pos], w, pos) for w, (_, f) in enumerate(got)
                    if (pos := f.get(j)) is not None]
            if hits:
                g, w, pos = min(hits)
                parent = keys[w][pos] >> KEY_SHIFT
                before = sum(self.get([p.transitions_before.remote(parent) for p in parts]))
                self.found[j] = _Found(self.level + 1, w, pos, self.states + g + 1,
                                       self.transitions + before, self.elapsed())
        self.get([p.commit.remote(ranks[j].tobytes()) for j, p in enumerate(parts)])
        new = sum(len(k) for k in keys)
        self.levels.append(new)
        self.states += new
        self.transitions += level_transitions
        self.level += 1
        return keys

    def save(self, complete: bool) -> None:
        """A snapshot at this level boundary: the driver's figures and every partition."""
        parts = self.get([p.dump.remote() for p in self.parts])
        header = {"salt": self.h.fingerprint_salt, "engine": ENGINE, "workers": self.n,
                  "properties": [[p.name, p.kind] for p in self.props]}
        data = {"level": self.level, "levels": self.levels, "states": self.states,
                "transitions": self.transitions, "seconds": self.elapsed(), "done": complete,
                "found": [[j, f.level, f.worker, f.pos, f.states, f.transitions, f.seconds]
                          for j, f in self.found.items()], "parts": parts}
        write_snapshot(self.save_path, header, data)  # type: ignore[arg-type]
        self.t_save = time.perf_counter()

    def restore(self, data: dict[str, Any]) -> None:
        self.level, self.levels = data["level"], data["levels"]
        self.states, self.transitions = data["states"], data["transitions"]
        self.seconds0, self.done = data["seconds"], data["done"]
        self.found = {f[0]: _Found(*f[1:]) for f in data["found"]}
        self.inits = list(self.h.init_states())
        self.get([p.restore.remote(d) for p, d in zip(self.parts, data["parts"], strict=True)])
        self.started = True

    def trace(self, f: _Found, prop: Property) -> Trace:
        path: list[int] = []
        w, pos = f.worker, f.pos
        for lvl in range(f.level, 0, -1):
            w, pos, k = self.get(self.parts[w].parent.remote(lvl, pos))
            path.append(k)
        _, init, _ = self.get(self.parts[w].parent.remote(0, pos))
        path.reverse()
        return replay(self.h, self.inits[init], path, prop)

    def coverage(self, per_worker: Sequence[dict[Any, int]]) -> tuple[dict[str, int], list[str]]:
        return coverage_by_name((kv for cov in per_worker for kv in cov.items()),
                                self.h.action_name, self.h.all_action_names)

    def exploration(self, stopped: StopReason | None, complete: bool,
                    max_depth: int | None) -> Exploration:
        seconds = self.elapsed()
        depth = max((i for i, c in enumerate(self.levels) if c), default=0)
        # No trace can be rebuilt through a lost worker's parent pointers.
        found = {} if stopped == "worker_lost" else self.found
        results = property_results(
            self.props, found, self.trace, complete=complete,
            reason="" if complete else self.reason(stopped, max_depth), max_depth=max_depth,
            states=self.states, transitions=self.transitions, depth=depth, seconds=seconds,
            engine=ENGINE)
        return Exploration(
            results=results, coverage={}, never_fired=[], states=self.states,
            transitions=self.transitions, depth=depth, seconds=seconds, complete=complete,
            stopped_by=None if complete else stopped, levels=list(self.levels), engine=ENGINE,
            collision_probability=min(1.0, self.states * (self.states - 1) / 2
                                      / 2 ** (8 * FP_BYTES)))

    def reason(self, stopped: StopReason | None, max_depth: int | None) -> str:
        within = f"every state up to depth {self.level} checked"
        if stopped == "worker_lost":
            return (f"{self.lost} ({self.states:,} states, {self.transitions:,} transitions "
                    f"in the levels completed); {within}")
        if stopped == "max_states":
            return f"max_states reached at the end of a level; {within}"
        if stopped == "max_depth":
            return f"max_depth={max_depth} reached: deeper states exist and were not explored"
        if stopped == "max_seconds":
            return f"max_seconds reached at the end of a level; {within}"
        if stopped == "interrupt":
            return f"interrupted; {within}"
        return ""
