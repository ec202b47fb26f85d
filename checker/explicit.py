"""Explicit-state breadth-first exploration of any `Model`, checking all properties at once.

How it stores states
--------------------
Only the frontier (the BFS level being expanded and the one being built) is kept as state
values. Every state ever found is remembered as

* a *fingerprint* in one ``set``: ``hash(canonical state)`` masked to 60 bits (an int of two
  30-bit digits, 32 bytes, where a full 64-bit int takes 40);
* in per-level ``array``\\ s: the index of its parent in the previous level (4 bytes) and the
  index of the transition among the parent's successors (1 byte, widened when a state has
  more than 255 successors).

A trace is rebuilt by following parent indexes back to an initial state, replaying the
recorded transition indexes on the canonical states, and then re-running the model from the
*concrete* initial state, at each step picking the first successor whose canonical form is
the next canonical state: the trace shown is a genuine run, not a list of representatives.

Fingerprint collisions
----------------------
Two different canonical states with the same fingerprint make the second look already seen:
it and whatever only it leads to are silently skipped. For n states and ideal 60-bit hashes
the chance of any collision is about n²/2⁶¹ (1e7 states: 4e-5; 1e8: 4e-3), reported as
`Exploration.collision_probability`. CPython's ``hash()`` is not ideal: ``hash(-1) ==
hash(-2)`` so states differing only by -1 versus -2 at one position *always* collide, and
ints hash to themselves modulo 2⁶¹-1. ``exact=True`` stores the canonical states themselves
instead (no collision possible, far more memory) to validate a model on small configurations;
a model may also define ``fingerprint(s) -> int`` to replace ``hash``.

Determinism
-----------
Successors are taken in the model's order and states numbered in discovery order (lists and
arrays, never iteration over a set), so the same model gives the same counts, verdicts and
traces on every run, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import threading
import time
import tracemalloc
from array import array
from collections import _count_elements  # type: ignore[attr-defined]  # C counter loop
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from checker.model import ModelHooks, Property, hooks
from checker.progress import ProgressInfo, as_progress
from checker.result import Exploration, StopReason, coverage_by_name, property_results
from checker.snapshot import (
    SnapshotMismatch,
    check_payload,
    model_packages,
    read_snapshot,
    write_snapshot,
)
from checker.trace import Trace, replay

__all__ = ["explore", "bytes_per_state", "SnapshotMismatch", "ENGINE"]

ENGINE = "explicit-bfs"
FP_BITS = 60
FP_MASK = (1 << FP_BITS) - 1

# 4-byte parent indexes ('I' is 4 bytes on every platform CPython supports in practice).
_PAR = "I" if array("I").itemsize == 4 else "L"
_ACT_WIDER = {"B": "H", "H": "I", "I": "Q"}

_first = itemgetter(0)


class _Exact:
    """Stands for the mask in exact mode: ``state & _Exact()`` is the state itself."""

    __slots__ = ()

    def __rand__(self, other: Any) -> Any:
        return other


def _identity(s: Any) -> Any:
    return s


class _CapReached(Exception):
    """max_states would be exceeded by the next new state."""


@dataclass
class _Found:
    """Where a property was decided, and the run's figures at that moment."""

    level: int
    index: int
    states: int
    transitions: int
    seconds: float


class _Search:
    """The whole exploration state: everything a snapshot needs, plus run-time settings."""

    def __init__(self, h: ModelHooks, props: Sequence[Property], exact: bool) -> None:
        self.h = h
        self.props = list(props)
        self.exact = exact
        # Exact mode: the "fingerprint" is the state itself.
        self.mask: Any = _Exact() if exact else FP_MASK
        self.fpf: Any = _identity if exact else h.fingerprint
        self.seen: set[Any] = set()
        self.levels_par: list[array] = []
        self.levels_act: list[array] = []
        self.level = 0  # depth of `frontier`
        self.pos = 0  # next frontier index to expand; those before it are None
        self.frontier: list[Any] = []
        self.next_states: list[Any] = []  # level + 1, being built
        self.found: dict[int, _Found] = {}
        self.coverage: dict[Any, int] = {}  # action -> transitions
        self.seconds = 0.0  # spent by earlier runs (resumed snapshots)
        self.started = False
        self.done = False  # the reachable space (within max_depth) is exhausted
        self.check_every = 64  # parents between periodic checks, adapted to ~50 ms
        self.countdown = 1
        # Run-time settings (not saved).
        self.interrupted = 0  # SIGINTs and SIGTERMs received
        self.signal = 0  # the last of them
        self.max_memory: int | None = None
        self.hard_interrupt = False
        self._inits: list[Any] | None = None

    # --- helpers ------------------------------------------------------------------------

    def fp(self, c: Any) -> Any:
        return self.fpf(c) & self.mask

    def inits(self) -> list[Any]:
        if self._inits is None:
            self._inits = list(self.h.init_states())
        return self._inits

    def active(self) -> tuple[tuple[int, Any, bool], ...]:
        """Undecided properties as (index, predicate, is_invariant), in declaration order."""
        return tuple(
            (j, p.predicate, p.kind == "invariant")
            for j, p in enumerate(self.props)
            if j not in self.found
        )

    def reset(self) -> None:
        self.seen, self.found = set(), {}

    def all_decided(self) -> bool:
        return bool(self.props) and len(self.found) == len(self.props)

    def interrupt_reason(self) -> StopReason:
        return "terminate" if self.signal == signal.SIGTERM else "interrupt"

    def transitions(self) -> int:
        return sum(self.coverage.values())

    def elapsed(self) -> float:
        return self.seconds + (time.perf_counter() - self.t_run)

    def record(self, j: int, level: int, index: int) -> None:
        self.found[j] = _Found(level, index, len(self.seen), self.transitions(), self.elapsed())

    def depth(self) -> int:
        for lvl in range(len(self.levels_par) - 1, -1, -1):
            if len(self.levels_par[lvl]):
                return lvl
        return 0

    # --- initial states ---------------------------------------------------------------

    def init(self) -> None:
        canonical, mask, fpf = self.h.canonical, self.mask, self.fpf
        par, act, states = array(_PAR), array("B"), []
        active = self.active()
        for i, t in enumerate(self.inits()):
            c = canonical(t)
            f = fpf(c) & mask
            if f in self.seen:
                continue
            if len(self.seen) >= self.cap:
                raise _CapReached
            par.append(i)
            act.append(0)
            states.append(c)
            self.seen.add(f)
            for j, pred, inv in active:
                if (not pred(c)) is inv:
                    self.record(j, 0, len(states) - 1)
            active = self.active()
        self.levels_par, self.levels_act = [par], [act]
        self.frontier, self.pos, self.level = states, 0, 0
        self.started = True

    # --- the hot loop -----------------------------------------------------------------

    def expand_level(self) -> str | None:
        """Expand frontier[pos:], building the next level. Returns why it stopped, if early.

        Everything touched per state is a local; checks that need the clock run every
        `check_every` parents. On any exception the partially expanded parent is rolled back
        so that the structures are as at a parent boundary (resumable).
        """
        h = self.h
        successors, canonical, fpf, mask = h.successors, h.canonical, self.fpf, self.mask
        seen = self.seen
        seen_add = seen.add
        frontier = self.frontier
        n = len(frontier)
        lvl1 = self.level + 1
        if len(self.levels_par) == lvl1:
            self.levels_par.append(array(_PAR))
            self.levels_act.append(array("B"))
        npar, nact, nstates = self.levels_par[lvl1], self.levels_act[lvl1], self.next_states
        npar_append, nact_append, nstates_append = npar.append, nact.append, nstates.append
        cov, count, first, list_ = self.coverage, _count_elements, _first, list
        active = self.active()
        stop_when_decided = self.stop_when_decided
        nseen, cap = len(seen), self.cap
        countdown = self.countdown
        pi, s, k = self.pos, None, 0
        try:
            for pi in range(self.pos, n):
                countdown -= 1
                if not countdown:
                    self.pos = pi
                    stop = self.periodic()
                    if stop:
                        self.countdown = 1
                        return stop
                    countdown = self.check_every
                s = frontier[pi]
                frontier[pi] = None  # free the expanded state as we go
                pairs = successors(s)
                if type(pairs) is not list_:
                    pairs = list_(pairs)
                k = 0
                for _a, t in pairs:
                    c = canonical(t)
                    f = fpf(c) & mask
                    if f not in seen:
                        if nseen >= cap:
                            raise _CapReached
                        npar_append(pi)
                        nact_append(k)
                        nstates_append(c)
                        seen_add(f)  # last: see rollback()
                        nseen += 1
                        if active:
                            for j, pred, inv in active:
                                if (not pred(c)) is inv:
                                    self.record(j, lvl1, len(nstates) - 1)
                                    active = self.active()
                                    if not active and stop_when_decided:
                                        countdown = 1  # stop at the next parent boundary
                    k += 1
                count(cov, map(first, pairs))  # C loop: cannot be cut by a signal
            self.pos = n
            self.countdown = countdown
            return None
        except BaseException as e:
            return self.cut(e, pi, s, k)

    def cut(self, e: BaseException, pi: int, s: Any, k: int) -> str:
        """Parent `pi` (state `s`, at its `k`-th successor) was cut by `e`: roll it back and
        say why the level stops, or re-raise."""
        self.rollback(pi, s)
        if isinstance(e, _CapReached):
            return "max_states"
        if isinstance(e, KeyboardInterrupt):
            if self.interrupted >= 2:
                # A second Ctrl-C may land anywhere, even between two bookkeeping steps:
                # do not trust the structures enough to snapshot them.
                self.hard_interrupt = True
            return self.interrupt_reason()
        lvl1 = self.level + 1
        nact = self.levels_act[lvl1]
        if isinstance(e, OverflowError) and k >= 1 << (8 * nact.itemsize) \
                and nact.typecode in _ACT_WIDER:
            # A transition index did not fit the level's array: widen it and redo the parent.
            self.levels_act[lvl1] = array(_ACT_WIDER[nact.typecode], nact)
            return "_retry"
        e.add_note(f"checker: while expanding a state at depth {self.level}: {s!r:.2000}")
        raise e

    def rollback(self, pi: int, s: Any) -> None:
        """Undo everything parent `pi` added, even if an exception cut an append sequence.

        The children of `pi` are the tail of the next level whose parent index is `pi`; the
        arrays are appended in the order npar, nact, nstates, seen, so a cut child is at most
        one entry too long in npar/nact and its fingerprint may be missing from `seen`.
        Coverage is counted once the parent is done, so it needs no undo.
        """
        self.pos = pi
        if pi < len(self.frontier) and self.frontier[pi] is None and s is not None:
            self.frontier[pi] = s
        lvl1 = self.level + 1
        if len(self.levels_par) <= lvl1:
            return
        npar, nact, nstates = self.levels_par[lvl1], self.levels_act[lvl1], self.next_states
        mark = len(npar)
        while mark > 0 and npar[mark - 1] == pi:
            mark -= 1
        for c in nstates[mark:]:
            self.seen.discard(self.fp(c))
        del npar[mark:]
        del nact[mark:]
        del nstates[mark:]
        for j in [j for j, f in self.found.items() if f.level == lvl1 and f.index >= mark]:
            del self.found[j]

    def probe(self) -> bool:
        """At max_depth: does any state of the frontier have a successor not seen yet?"""
        h, seen = self.h, self.seen
        for s in self.frontier[self.pos :]:
            for _a, t in h.successors(s):
                if self.fp(h.canonical(t)) not in seen:
                    return True
        return False

    # --- periodic work ------------------------------------------------------------------

    def periodic(self) -> str | None:
        now = time.perf_counter()
        dt = now - self.t_check
        self.t_check = now
        # Aim at a check every 20-100 ms whatever the model's speed.
        if dt < 0.02 and self.check_every < 1 << 14:
            self.check_every *= 2
        elif dt > 0.1 and self.check_every > 1:
            self.check_every //= 2
        if self.interrupted:
            return self.interrupt_reason()
        if self.stop_when_decided and self.all_decided():
            return "decided"
        if now >= self.deadline:
            return "max_seconds"
        if self.max_memory is not None and resident_bytes() > self.max_memory:
            return "max_memory"
        if now - self.t_progress >= 0.25:
            self.report(now)
        if self.save_path is not None and now - self.t_save >= self.mid_level_save_every:
            self.save(self.save_path)
        return None

    def info(self, now: float, **kw: Any) -> ProgressInfo:
        run = now - self.t_run
        states = len(self.seen)
        return ProgressInfo(
            states=states,
            transitions=self.transitions(),
            queue=len(self.frontier) - self.pos + len(self.next_states),
            depth=self.level,
            elapsed=self.seconds + run,
            states_per_s=(states - self.states_at_start) / run if run > 0 else 0.0,
            **kw,
        )

    def report(self, now: float, **kw: Any) -> None:
        self.t_progress = now
        self.progress.update(self.info(now, **kw))

    # --- the run ------------------------------------------------------------------------

    def run(
        self,
        *,
        max_states: int | None,
        max_depth: int | None,
        max_seconds: float | None,
        progress: Any,
        save: str | os.PathLike[str] | None,
        save_every: float,
        stop_when_decided: bool,
        max_memory: int | None = None,
    ) -> StopReason | None:
        now = time.perf_counter()
        self.max_memory = max_memory
        self.t_run = self.t_check = self.t_save = now
        self.t_progress = now - 1.0
        self.cap = max_states if max_states is not None else 1 << 62
        self.deadline = now + max_seconds if max_seconds is not None else math.inf
        self.progress = progress
        self.save_path = save
        self.save_every = save_every
        self.mid_level_save_every = max(6 * save_every, 1.0)
        self.stop_when_decided = stop_when_decided
        self.states_at_start = len(self.seen)
        self.countdown = self.check_every  # some work before the first check: progress
        if not self.started:
            try:
                self.init()
            except (_CapReached, KeyboardInterrupt) as e:
                # Too many initial states, or Ctrl-C before the first level: nothing to keep.
                self.reset()
                if isinstance(e, KeyboardInterrupt):
                    return self.interrupt_reason()
                return "max_states"
        level_start = time.perf_counter()
        while not self.done:
            if stop_when_decided and self.all_decided():
                return "decided"
            if self.pos >= len(self.frontier):
                # Level boundary.
                if not self.next_states:
                    self.finish()
                    break
                self.frontier, self.next_states = self.next_states, []
                self.level += 1
                self.pos = 0
                now = time.perf_counter()
                self.report(now, level_done=True, level_seconds=now - level_start)
                level_start = now
                if self.interrupted:
                    return self.interrupt_reason()
                if now >= self.deadline:
                    return "max_seconds"
                if self.max_memory is not None and resident_bytes() > self.max_memory:
                    return "max_memory"
                if save is not None and now - self.t_save >= save_every:
                    self.save(save)
                continue
            if max_depth is not None and self.level >= max_depth:
                if self.probe():
                    return "max_depth"
                self.finish()
                break
            stop = self.expand_level()
            if stop == "_retry":
                continue
            if stop is not None:
                return stop  # type: ignore[return-value]
        return None

    def finish(self) -> None:
        """The space is exhausted: drop the frontier and any empty trailing level."""
        self.done = True
        self.frontier, self.next_states, self.pos = [], [], 0
        while len(self.levels_par) > 1 and not len(self.levels_par[-1]):
            self.levels_par.pop()
            self.levels_act.pop()

    # --- snapshots ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        write_snapshot(path, self.snapshot_header(), self.snapshot_data())
        self.t_save = time.perf_counter()

    def snapshot_header(self) -> dict[str, Any]:
        return {
            "salt": self.h.fingerprint_salt,
            "properties": [[p.name, p.kind] for p in self.props],
            "exact": self.exact,
        }

    def snapshot_data(self) -> dict[str, Any]:
        now = time.perf_counter()
        seen: Any = list(self.seen) if self.exact else array("q", self.seen)
        return {
            "init_fps": [self.fp(self.h.canonical(t)) for t in self.inits()[:16]],
            "seen": seen,
            "levels_par": self.levels_par,
            "levels_act": self.levels_act,
            "level": self.level,
            "pos": self.pos,
            "frontier": self.frontier[self.pos :],
            "next_states": self.next_states,
            "found": {j: vars(f) for j, f in self.found.items()},
            "coverage": self.coverage,
            "seconds": self.seconds + (now - self.t_run),
            "started": self.started,
            "done": self.done,
        }

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], h: ModelHooks, props: Sequence[Property], exact: bool
    ) -> _Search:
        self = cls(h, props, exact)
        self.restore(path)
        return self

    def restore(self, path: str | os.PathLike[str]) -> None:
        """Take the exploration over from snapshot `path`, refusing one of another run."""
        h = self.h
        head, doc = read_snapshot(path, h.fingerprint_salt, model_packages(h.model))
        mine = [[p.name, p.kind] for p in self.props]
        theirs = head.get("properties")
        if theirs != mine:
            names = [x[0] for x in theirs] if isinstance(theirs, list) and all(
                isinstance(x, list) and x for x in theirs) else theirs
            raise SnapshotMismatch(
                f"snapshot {path} checks properties {names!r:.300}, "
                f"not {[n for n, _ in mine]}"
            )
        if head.get("exact") != self.exact:
            raise SnapshotMismatch(f"snapshot {path} was made with exact={head.get('exact')}")
        self.check_snapshot(path, head, doc)
        if [self.fp(h.canonical(t)) for t in self.inits()[:16]] != doc["init_fps"]:
            raise SnapshotMismatch(
                f"snapshot {path}: the initial states fingerprint differently in this process "
                "(states must hash the same in every run: no str, None or Enum in states)"
            )
        self.levels_par = doc["levels_par"]
        self.levels_act = doc["levels_act"]
        self.level = doc["level"]
        self.pos = doc["pos"]
        self.frontier = [None] * self.pos + doc["frontier"]
        self.next_states = doc["next_states"]
        self.seconds = doc["seconds"]
        self.started = doc["started"]
        self.done = doc["done"]
        self.restore_found(doc)

    def check_snapshot(self, path: str | os.PathLike[str], head: dict[str, Any],
                       doc: dict[str, Any]) -> None:
        check_payload(path, doc, len(self.props), self.exact)

    def restore_found(self, doc: dict[str, Any]) -> None:
        self.seen = set(doc["seen"])
        self.found = {j: _Found(**f) for j, f in doc["found"].items()}
        self.coverage = doc["coverage"]

    # --- traces -------------------------------------------------------------------------

    def trace_to(
        self, level: int, index: int, prop: Property | None = None, h: ModelHooks | None = None
    ) -> Trace:
        """The run to state `index` of `level`, made concrete (see the module doc), replayed
        with `h` (a family's member; the model itself by default)."""
        h = h if h is not None else self.h
        path: list[int] = []
        i = index
        for lvl in range(level, 0, -1):
            path.append(self.levels_act[lvl][i])
            i = self.levels_par[lvl][i]
        path.reverse()
        return replay(h, self.inits()[self.levels_par[0][i]], path, prop)

    # --- results ------------------------------------------------------------------------

    def exploration(self, stopped_by: StopReason | None, max_depth: int | None) -> Exploration:
        complete = self.done
        if stopped_by is None and not complete:
            stopped_by = "interrupt"  # unreachable, defensive
        return self.build(
            self.h, self.found, self.coverage.items(), complete=complete,
            stopped_by=None if complete else stopped_by, max_depth=max_depth,
            states=len(self.seen), transitions=self.transitions(), depth=self.depth(),
            levels=[len(p) for p in self.levels_par],
        )

    def build(
        self,
        h: ModelHooks,
        found: dict[int, _Found],
        coverage: Iterable[tuple[Any, int]],
        *,
        complete: bool,
        stopped_by: StopReason | None,
        max_depth: int | None,
        states: int,
        transitions: int,
        depth: int,
        levels: list[int],
    ) -> Exploration:
        """The Exploration of model `h`, whose properties `found` decided (index -> where)."""
        seconds = self.seconds + (time.perf_counter() - self.t_run)
        reason = "" if complete else self.reason(stopped_by, max_depth)
        results = property_results(
            self.props, found, lambda f, p: self.trace_to(f.level, f.index, p, h),
            complete=complete, reason=reason, max_depth=max_depth, states=states,
            transitions=transitions, depth=depth, seconds=seconds, engine=ENGINE)
        by_name, never = coverage_by_name(coverage, h.action_name, h.all_action_names)
        return Exploration(
            results=results,
            coverage=by_name,
            never_fired=never,
            states=states,
            transitions=transitions,
            depth=depth,
            seconds=seconds,
            complete=complete,
            stopped_by=stopped_by,
            levels=levels,
            engine=ENGINE,
            collision_probability=0.0
            if self.exact
            else min(1.0, states * (states - 1) / 2 / 2**FP_BITS),
        )

    def reason(self, stopped_by: StopReason | None, max_depth: int | None) -> str:
        # While level L is expanded every state of depth <= L has been found and checked.
        within = f"every state up to depth {self.level} checked"
        if not self.started:
            within = "not even the initial states"
        if stopped_by == "max_states":
            return f"max_states={self.cap} reached; {within}"
        if stopped_by == "max_depth":
            return f"max_depth={max_depth} reached: deeper states exist and were not explored"
        if stopped_by == "max_seconds":
            return f"max_seconds reached; {within}"
        if stopped_by == "interrupt":
            return f"interrupted; {within}"
        if stopped_by == "terminate":
            return f"terminated (SIGTERM); {within}"
        if stopped_by == "max_memory":
            return f"max_memory={self.max_memory:,} bytes reached; {within}"
        if stopped_by == "decided":
            return "exploration stopped once every property was decided"
        return ""

    # --- graph --------------------------------------------------------------------------

    def graph(self) -> Any:
        """The explored states and every transition between them, as a networkx DiGraph.

        Rebuilt by replaying the recorded transitions level by level (states are not kept
        during the exploration); node ids are discovery numbers.
        """
        import networkx as nx

        h = self.h
        g = nx.DiGraph()
        ids: dict[Any, int] = {}
        levels: list[list[Any]] = []
        inits = self.inits()
        prev: list[Any] = [h.canonical(inits[i]) for i in self.levels_par[0]]
        nid = 0
        for lvl in range(len(self.levels_par)):
            if lvl > 0:
                prev_succ: dict[int, list[Any]] = {}
                cur = []
                for pi, k in zip(self.levels_par[lvl], self.levels_act[lvl], strict=True):
                    succ = prev_succ.get(pi)
                    if succ is None:
                        succ = prev_succ[pi] = list(h.successors(levels[-1][pi]))
                    cur.append(h.canonical(succ[k][1]))
                prev = cur
            levels.append(prev)
            for s in prev:
                f = self.fp(s)
                ids[f] = nid
                g.add_node(
                    nid,
                    depth=lvl,
                    fingerprint=format(f, "015x") if not self.exact else str(nid),
                    label=_label(h, s),
                    state=s,
                    initial=lvl == 0,
                )
                nid += 1
        for states in levels:
            for s in states:
                src = ids[self.fp(s)]
                for a, t in h.successors(s):
                    dst = ids.get(self.fp(h.canonical(t)))
                    if dst is None:  # beyond a bound: not explored
                        continue
                    text = h.format_action(a)
                    if g.has_edge(src, dst):
                        e = g.edges[src, dst]
                        e["label"] += "; " + text
                        e["count"] += 1
                    else:
                        g.add_edge(src, dst, action=text, label=text, count=1)
        return g


def _label(h: ModelHooks, s: Any, lines: int = 24) -> str:
    """A node label: the model's describe(), one entry per line."""
    items = [f"{k}={v}" for k, v in h.describe(s).items()]
    if len(items) > lines:
        items = items[: lines - 1] + [f"... ({len(items) - lines + 1} more)"]
    return "\n".join(items)


class _SigintFlag:
    """First Ctrl-C or SIGTERM: ask the engine to stop at the next check (with a snapshot
    when saving); a second: KeyboardInterrupt, which cuts the model itself."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, search: _Search) -> None:
        self.search = search
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                try:
                    self.previous[sig] = signal.signal(sig, self.handler)
                except (ValueError, OSError):  # not allowed here (embedded interpreter...)
                    pass
        return self

    def handler(self, signum: int, frame: Any) -> None:
        self.search.interrupted += 1
        self.search.signal = signum
        if self.search.interrupted >= 2:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev)


@contextlib.contextmanager
def _rare_young_collections() -> Any:
    """A search allocates millions of small tuples that form no cycles and mostly live until
    their level is done; with CPython's default threshold (a young-generation pass every 700
    allocations) those passes took a fifth to a quarter of a run's time. One pass every
    100,000 allocations still collects any cycles a model makes, at a small cost."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 100_000), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def resident_bytes() -> int:
    """This process's resident set size (one small read of /proc/self/statm)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _check_properties(properties: Iterable[Property]) -> list[Property]:
    props = list(properties)
    names = [p.name for p in props]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate property names: {dup}")
    return props


def new_search(
    model: Any,
    properties: Iterable[Property],
    *,
    resume: str | os.PathLike[str] | None,
    exact: bool,
) -> _Search:
    """A breadth-first search of `model` checking `properties`, not yet run (its `run`
    explores; `graph` returns what it explored): `explore` and `checker.graph` drive it."""
    h = hooks(model)
    for required in ("init_states", "successors"):
        if not callable(getattr(h, required)):
            raise TypeError(f"{type(model).__name__} is not a model: it has no {required}()")
    props = _check_properties(properties)
    if resume is not None:
        return _Search.load(resume, h, props, exact)
    return _Search(h, props, exact)


def explore(
    model: Any,
    properties: Iterable[Property] = (),
    *,
    max_states: int | None = None,
    max_depth: int | None = None,
    max_seconds: float | None = None,
    progress: Any = None,
    save: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop_when_decided: bool = True,
    keep_graph: bool = False,
    exact: bool = False,
    save_every: float = 10.0,
    max_memory: int | None = None,
) -> Exploration:
    """Explore `model` breadth-first over canonical states, checking every property.

    Stops when the space is exhausted, when every property is decided (`stop_when_decided`,
    at the next parent boundary), at a bound (`max_states` distinct states, states deeper than
    `max_depth`, `max_seconds` of this run, `max_memory` bytes resident) or at Ctrl-C or
    SIGTERM (a second one interrupts the model
    itself). Bounded and interrupted runs give ``unknown`` for undecided properties.

    `save`: snapshot path, written at level boundaries at most every `save_every` seconds,
    within long levels every 6 x `save_every`, and at the end however the run stopped.
    `resume`: continue from a snapshot (the same path as `save` is fine); a snapshot of another
    model configuration, checker version or property list raises `SnapshotMismatch`.
    `progress`: see `checker.progress` (None: silent). `exact`: store states, not
    fingerprints (see the module doc). `keep_graph`: also return the explored graph (small
    spaces: it replays the exploration).
    """
    search = new_search(model, properties, resume=resume, exact=exact)
    bounds = {"max_states": max_states, "max_depth": max_depth, "max_seconds": max_seconds,
              "max_memory": max_memory}
    return drive(search, bounds, progress=progress, save=save, save_every=save_every,
                 stop_when_decided=stop_when_decided, keep_graph=keep_graph)


def drive(
    search: _Search,
    bounds: dict[str, Any],
    *,
    progress: Any,
    save: str | os.PathLike[str] | None,
    save_every: float,
    stop_when_decided: bool,
    keep_graph: bool = False,
) -> Any:
    """Run `search` with Ctrl-C and SIGTERM handled, snapshot at the end, and build its
    exploration (a list of them for a family search)."""
    prog = as_progress(progress)
    stopped_by: StopReason | None = None
    try:
        with _SigintFlag(search), _rare_young_collections():
            try:
                stopped_by = search.run(
                    **bounds,
                    progress=prog,
                    save=save,
                    save_every=save_every,
                    stop_when_decided=stop_when_decided,
                )
            except KeyboardInterrupt:
                # Outside the hot loop (in a progress display, a level boundary...).
                search.hard_interrupt = True
                stopped_by = search.interrupt_reason()
        written = None
        if save is not None and not search.hard_interrupt and search.started:
            search.save(save)
            written = str(save)
        ex = search.exploration(stopped_by, bounds["max_depth"])
        for e in ex if isinstance(ex, list) else [ex]:
            e.snapshot = written
        if keep_graph:
            ex.graph = search.graph()
    finally:
        # Always: a live display left running would garble the terminal.
        close = getattr(prog, "close", None)
        if close is not None and hasattr(search, "t_run"):
            close(search.info(time.perf_counter(), final=True, stopping=stopped_by))
    return ex


def bytes_per_state(
    model: Any, properties: Iterable[Property] = (), **kwargs: Any
) -> dict[str, float]:
    """Measure the memory of an exploration with tracemalloc (slow: small models only).

    ``retained``: bytes per state still held once the space is exhausted (the seen set and
    the per-level arrays: what grows with the number of states); if `max_states` stops the
    run first, the unexpanded frontier states are still held and counted too. ``peak``: the
    peak during the run divided by the states, which also counts the two frontier levels.
    """
    search = new_search(model, properties, resume=None, exact=kwargs.pop("exact", False))
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        search.run(
            max_states=kwargs.get("max_states"),
            max_depth=kwargs.get("max_depth"),
            max_seconds=None,
            progress=as_progress(None),
            save=None,
            save_every=math.inf,
            stop_when_decided=False,
        )
        search._inits = None  # not part of the per-state cost
        current, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    n = max(len(search.seen), 1)
    return {
        "states": float(len(search.seen)),
        "retained": (current - base) / n,
        "peak": (peak - base) / n,
    }
