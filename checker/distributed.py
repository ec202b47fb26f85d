"""Breadth-first search of any `Model` or family of models over Ray workers: hash-partitioned,
level-synchronous.

Each worker (a Ray actor, `_Partition`) *owns* the canonical states whose *stable fingerprint*
falls in its partition (`fingerprint % workers`): it alone decides whether they are new. The
fingerprint is a BLAKE2b digest of a canonical serialisation of the state
(`stable_fingerprint`: sets sorted, every value tagged by its type), the same on every machine
and Python process; `hash()` is not (it is salted for strings and depends on the build). A
worker also *holds* states: those it expands. One BFS level is one round:

1. every worker expands the states it holds and sorts their successors' canonical forms by
   owner; to each owner it *offers* their fingerprints, each with its *discovery key*
   ``(parent's global number, successor's position)`` (arrays of integers, no states), and,
   for a family, its members; a successor already offered to its owner is not offered again;
2. each owner *selects* among the offers the states it has not seen, each with the smallest
   key it was offered with, and tells each sender which of its offers won;
3. each sender *keeps* its winning successors: they are its part of the next level, and the
   states themselves never travel. Only when one worker would hold more than its share (by
   `BALANCE_SLACK`) does it *give* its surplus to the others (pickled), so that no worker waits
   for another at the end of the level; each worker checks the properties on its new states;
4. the driver merges the holders' sorted keys: a new state's global number in the next level
   is its rank by key. That is exactly the order in which the single-process search
   (`checker.explicit`) discovers the level, expanding parents in order and each parent's
   successors in order, so counts, verdicts, the first violating state of each property and
   therefore the traces are the same.

A family (`explore_cluster_family`, see `checker.family`) is explored the same way with each
entry carrying its members' mask: the owner processes a fingerprint's offers in key order and a
successor offered for members M is new for those of M that neither its seen set nor a smaller
key gave it, exactly the single-process family's rule, so each member's entries come in its own
run's order.

Parent pointers are kept where a state is held, as (worker, position in that worker's level)
with the transition index, and a trace is rebuilt at the driver by asking each holder in turn,
then replayed on the model like the single-process trace (`checker.trace.replay`).

What differs from `checker.explicit`: bounds (`max_states`, `max_seconds`) and Ctrl-C are
honoured at level boundaries only, so a bounded run's figures are those of whole levels
(`max_states` stops after the level that crosses it; for a family it counts entries);
`stop_when_decided` is not offered (the search runs to the end, as `crmodel check` asks).
Snapshots (`save`, `resume`, one model, not a family) are taken at level boundaries, in the
data-only format of `checker.snapshot`, and resume only with the same number of workers:
fingerprints sit in partitions modulo the workers, and parent pointers name (worker,
position). A worker lost mid-level, when saving, is replaced: new workers go on from the last
snapshot (up to `RETRIES` times). Otherwise the run stops: undecided properties are
``unknown``, `stopped_by` is ``worker_lost`` and the reason names the worker and the figures
of the levels completed.
"""

from __future__ import annotations

import gc
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

__all__ = ["explore_cluster", "explore_cluster_family", "stable_fingerprint", "ENGINE",
           "WorkerLost", "balance"]

ENGINE = "distributed-bfs"
FP_BYTES = 8
KEY_SHIFT = 24  # a discovery key is parent number << 24 | transition index
INIT = 0xFFFF  # parent worker of an initial state (its parent position: the init index)
# A holder keeps up to this fraction of an even share more than its share before states are
# given to another: moving a state costs about a fifth of expanding it.
BALANCE_SLACK = 0.02
RETRIES = 2  # searches with new workers after one was lost, from the last snapshot


class WorkerLost(Exception):
    """A worker died mid-level; the run stops with the figures of the levels completed."""


class _Redo(Exception):
    """A worker died, and a snapshot lets the search go on with new workers."""


# --- the stable fingerprint -------------------------------------------------------------------


# Tuples this near the root (but not the root: a state's own bytes are asked for once) are
# memoised: successors share most of them.
_MEMO_DEPTH = 3


def _encode(v: Any, out: list[bytes], memo: dict[Any, bytes], depth: int) -> None:
    t = type(v)
    if t is int or t is bool:  # True == 1 in Python, so in the seen set: the same bytes
        out.append(b"i%d;" % v)
    elif isinstance(v, tuple):  # NamedTuples too: they compare as tuples, so they encode so
        keep = 0 < depth < _MEMO_DEPTH
        b = memo.get(v) if keep else None
        if b is None:
            o = [b"("]
            for x in v:
                _encode(x, o, memo, depth + 1)
            o.append(b")")
            b = b"".join(o)
            if keep:
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


def _one_member(successors: Callable[[Any], Iterable[tuple[Any, Any]]]
                ) -> Callable[[Any, int], list[tuple[int, int, Any, Any]]]:
    """A plain model's successors as a family of one member's: ``(1, index, action, state)``."""

    def succ(s: Any, _mask: int) -> list[tuple[int, int, Any, Any]]:
        return [(1, k, a, t) for k, (a, t) in enumerate(successors(s))]

    return succ


def _bits(m: int) -> Iterable[int]:
    while m:
        low = m & -m
        yield low.bit_length() - 1
        m ^= low


_first = itemgetter(0)
_members_action = itemgetter(0, 2)


class _Partition:
    """One worker. As *owner* it keeps the fingerprints of its partition (`seen`: each with
    the mask of the members that found it; 1 for a plain model). As *holder* it keeps the
    states it expands: each level's parent pointers and its frontier, with each state's
    global number and members. A new state is held by the worker that found it (the owner
    only says which offer won), so states cross between workers only to even out the
    frontiers (`give`)."""

    def __init__(self, index: int, workers: int, model: Any,
                 properties: Sequence[Property], family: bool = False) -> None:
        gc.set_threshold(100_000, *gc.get_threshold()[1:])  # see checker.explicit
        self.cpu0 = time.process_time()  # the worker process's start is not this search's
        self.index, self.workers, self.family = index, workers, family
        self.h = hooks(model)
        self.succ = model.successors_family if family else _one_member(self.h.successors)
        self.props = list(properties)
        self.seen: dict[int, int] = {}  # owned fingerprint -> members that found it
        self.par_w: list[array] = []  # per level, per held state: parent's worker
        self.par_p: list[array] = []  # ... parent's position in that worker's level
        self.act: list[array] = []  # ... transition index among the parent's successors
        self.masks: list[array] = []  # ... its members (a family only)
        self.frontier: list[Any] = []
        self.frontier_g = array("q")  # their global numbers (increasing)
        self.frontier_m = array("Q")  # their members
        self.nsucc = array("I")  # successors of each frontier state (transitions)
        self.succ_m = array("Q")  # a family: the members of each of them, in order
        self.coverage: Counter = Counter()  # (members, action) -> transitions
        # (key, state, parent worker, parent position, transition index, members)
        self.pending: list[tuple[int, Any, int, int, int, int]] = []
        self.boxes: list[tuple[list, array, array, array, array, array]] = []
        self.won: dict[int, int] = {}  # owner: this level's new fingerprints -> members
        self.wins_here: tuple[array, array] = (array("I"), array("Q"))
        self.bytes_out = 0
        # Per owner, the fingerprints (and members) this worker ever offered it: the owner
        # knows them, so a state is offered to its owner at most once per member.
        self.sent: list[dict[int, int]] = [{} for _ in range(workers)]

    def start(self, states: list[Any], fps: list[int], inits: list[int],
              globals_: list[int], members: int) -> None:
        """Level 0: the initial states this worker owns (and holds)."""
        self.seen.update(dict.fromkeys(fps, members))
        self.par_w.append(array("H", [INIT] * len(states)))
        self.par_p.append(array("I", inits))
        self.act.append(array("I", [0] * len(states)))
        self.frontier, self.frontier_g = list(states), array("q", globals_)
        self.frontier_m = array("Q", [members] * len(states))
        if self.family:
            self.masks.append(array("Q", self.frontier_m))

    def expand(self, probe: bool = False) -> list[Any]:
        """Expand the frontier. Per owner, an *offer*: the fingerprints and discovery keys
        of the successors it owns, with their members for a family (arrays, as bytes; None
        for this worker itself); the states stay here. Then the level's transitions per
        members mask. `probe`: only to learn whether deeper states exist (at max_depth):
        the coverage is left as it was, as the single-process engine does, and a parent is
        skipped once this worker found, among the states it owns, new ones for each of its
        members; the members with such states come last instead of the transitions."""
        n, me, seen, family = self.workers, self.index, self.seen, self.family
        succ, canonical, fpf = self.succ, self.h.canonical, stable_fingerprint
        boxes: list[tuple[list, array, array, array, array, array]] = [
            ([], array("Q"), array("q"), array("I"), array("I"), array("Q"))
            for _ in range(n)]
        sent = self.sent
        memo: dict[Any, int] = {}  # canonical state -> fingerprint, within this level
        parts_memo: dict[Any, bytes] = {}  # see stable_fingerprint
        here: dict[int, int] = {}  # this level's offers to this worker itself
        sent[me] = here
        self.nsucc, self.succ_m = array("I"), array("Q")
        nsucc_append, succ_m_extend = self.nsucc.append, self.succ_m.extend
        tm: dict[int, int] = {}  # members -> transitions, this level
        cov, count = self.coverage, _count_elements
        fg, fm = self.frontier_g, self.frontier_m
        deeper = 0  # probe: members with a new state this worker owns
        for p, s in enumerate(self.frontier):
            if probe and deeper == fm[p] | deeper:
                continue  # no member left to learn about from this parent
            key0 = fg[p] << KEY_SHIFT
            items = succ(s, fm[p])
            nsucc_append(len(items))
            count(tm, map(_first, items))
            if family:
                succ_m_extend(map(_first, items))
            if not probe:
                count(cov, map(_members_action, items))
            for e, (cm, k, _a, t) in enumerate(items):
                c = canonical(t)
                f = memo.get(c)
                if f is None:
                    f = memo[c] = fpf(c, parts_memo)
                o = f % n
                offered = sent[o]
                have = offered.get(f, 0)
                if o == me:
                    have |= seen.get(f, 0)
                new = cm & ~have
                if not new:  # its owner knows it for these members already
                    continue
                offered[f] = have | new
                if probe and o == me:
                    deeper |= cm & ~seen.get(f, 0)
                states, fps, keys, pos, acts, ms = boxes[o]
                states.append(c)
                fps.append(f)
                keys.append(key0 | e)
                pos.append(p)
                acts.append(k)
                ms.append(new)
        self.boxes = boxes
        offers: list[Any] = [
            None if i == me else (b[1].tobytes(), b[2].tobytes(),
                                  b[5].tobytes() if family else b"")
            for i, b in enumerate(boxes)]
        self.bytes_out += sum(sum(map(len, o)) for o in offers if o is not None)
        return [*offers, deeper if probe else tm]

    def select(self, *offers: tuple[bytes, bytes, bytes] | None) -> Any:
        """At the owner: of the offers, one per sender (None: its own), which are new, and
        for which members: a state offered for members M with key K is new for the members
        of M that neither this worker's seen set nor a smaller key of this level gave it.
        Returns, per sender, the offer positions that won with their members (as bytes;
        None for this worker), then the members that found anything new."""
        me, seen_get = self.index, self.seen.get
        by: dict[int, Any] = {}  # fp -> (key, members, sender, position), or a list of them
        for sender, offer in enumerate(offers):
            if offer is None:
                _, fps, keys, _, _, ms = self.boxes[me]
            else:
                fps, keys, ms = array("Q"), array("q"), array("Q")
                fps.frombytes(offer[0])
                keys.frombytes(offer[1])
                if offer[2]:
                    ms.frombytes(offer[2])
                else:
                    ms = array("Q", [1]) * len(fps)
            for i, (f, key, m) in enumerate(zip(fps, keys, ms, strict=True)):
                old = by.get(f)
                if old is None:
                    by[f] = (key, m, sender, i)
                elif type(old) is list:
                    old.append((key, m, sender, i))
                else:
                    by[f] = [old, (key, m, sender, i)]
        wins = [(array("I"), array("Q")) for _ in offers]
        won: dict[int, int] = {}
        anynew = 0
        for f, o in by.items():
            acc = had = seen_get(f, 0)
            for _key, m, sender, i in sorted(o) if type(o) is list else (o,):
                new = m & ~acc
                if new:
                    w = wins[sender]
                    w[0].append(i)
                    w[1].append(new)
                    acc |= new
            if acc != had:
                won[f] = acc
                anynew |= acc & ~had
        self.won = won
        self.wins_here = wins[me]
        out: list[Any] = [None if w == me else (a.tobytes(), b.tobytes() if self.family else b"")
                          for w, (a, b) in enumerate(wins)]
        self.bytes_out += sum(len(a) + len(b) for a, b in (x for x in out if x is not None))
        return [*out, anynew]

    def keep(self, *wins: tuple[bytes, bytes] | None) -> int:
        """At the holder: the offers of its that won (one answer per owner, None: its own)
        become its pending part of the next level, in key order. Returns how many."""
        me = self.index
        pending = []
        for owner, w in enumerate(wins):
            if w is None:
                idx, ms = self.wins_here
            else:
                idx, ms = array("I"), array("Q")
                idx.frombytes(w[0])
                if w[1]:
                    ms.frombytes(w[1])
                else:
                    ms = array("Q", [1]) * len(idx)
            states, _, keys, pos, acts, _ = self.boxes[owner]
            pending += [(keys[i], states[i], me, pos[i], acts[i], m)
                        for i, m in zip(idx, ms, strict=True)]
        pending.sort(key=_first)
        self.pending, self.boxes, self.wins_here = pending, [], (array("I"), array("Q"))
        return len(pending)

    def give(self, count: int) -> bytes:
        """The last `count` pending states (in key order), for another holder: a frontier
        larger than the others' would make everyone wait for it."""
        out, self.pending[-count:] = self.pending[-count:], []
        b = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        self.bytes_out += len(b)
        return b

    def settle(self, undecided: list[int], *given: bytes) -> tuple[bytes, bytes, list]:
        """The pending states, with those given by other holders, in key order; the
        properties checked on them. Returns their keys, their members (a family), and per
        (property, member) still undecided (`undecided`: a mask per property) the position
        of the first state that decides it."""
        pending = self.pending
        if given:
            for b in given:
                pending += pickle.loads(b)
            pending.sort(key=_first)
        found = []
        for j, und in enumerate(undecided):
            if not und:
                continue
            prop = self.props[j]
            inv = prop.kind == "invariant"
            for i, e in enumerate(pending):
                hit = und & e[5]
                if hit and (not prop.predicate(e[1])) is inv:
                    found += [[j, m, i] for m in _bits(hit)]
                    und &= ~hit
                    if not und:
                        break
        keys = array("q", map(_first, pending)).tobytes()
        ms = array("Q", (e[5] for e in pending)).tobytes() if self.family else b""
        return keys, ms, found

    def transitions_before(self, g: int, member: int) -> int:
        """Transitions of `member` from the expanded level's parents numbered below `g`."""
        if not self.family:
            return sum(m for gi, m in zip(self.frontier_g, self.nsucc, strict=True) if gi < g)
        bit, out, at = 1 << member, 0, 0
        for gi, m in zip(self.frontier_g, self.nsucc, strict=True):
            if gi < g:
                out += sum(1 for x in self.succ_m[at:at + m] if x & bit)
            at += m
        return out

    def commit(self, globals_: bytes) -> None:
        """The pending states become this worker's part of the next level; as owner, this
        level's new fingerprints join the seen set."""
        self.seen.update(self.won)
        self.won = {}
        pend, self.pending = self.pending, []
        self.par_w.append(array("H", (e[2] for e in pend)))
        self.par_p.append(array("I", (e[3] for e in pend)))
        self.act.append(array("I", (e[4] for e in pend)))
        self.frontier = [e[1] for e in pend]
        self.frontier_m = array("Q", (e[5] for e in pend))
        if self.family:
            self.masks.append(self.frontier_m)
        g = array("q")
        g.frombytes(globals_)
        self.frontier_g = g

    def dump(self) -> dict[str, Any]:
        """This partition at a level boundary, as snapshot data (see `_check_part`)."""
        return {"seen": array("Q", self.seen), "par_w": self.par_w, "par_p": self.par_p,
                "act": self.act, "frontier": self.frontier, "frontier_g": self.frontier_g,
                "coverage": [[a, c] for (_, a), c in self.coverage.items()],
                "bytes_out": self.bytes_out}

    def restore(self, d: dict[str, Any]) -> None:
        self.seen = dict.fromkeys(d["seen"], 1)
        self.par_w, self.par_p, self.act = d["par_w"], d["par_p"], d["act"]
        self.frontier, self.frontier_g = d["frontier"], d["frontier_g"]
        self.frontier_m = array("Q", [1]) * len(self.frontier)
        self.coverage = Counter({(1, a): c for a, c in d["coverage"]})
        self.bytes_out = d["bytes_out"]

    def pid(self) -> int:
        return os.getpid()

    def parent(self, level: int, pos: int) -> tuple[int, int, int]:
        return self.par_w[level][pos], self.par_p[level][pos], self.act[level][pos]

    def totals(self) -> tuple[dict[Any, int], int, float]:
        return dict(self.coverage), self.bytes_out, time.process_time() - self.cpu0


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
    """Global numbers of each holder's new states: their ranks among all holders' keys (keys
    are unique: one successor of one parent makes one entry)."""
    tagged = sorted(k * n + j for j, ks in enumerate(keys) for k in ks)
    out = [array("q") for _ in range(n)]
    for g, t in enumerate(tagged):
        out[t % n].append(g)
    return out


def balance(counts: Sequence[int], slack: float = BALANCE_SLACK) -> list[tuple[int, int, int]]:
    """Moves ``(giver, taker, states)`` that even out the holders' next frontiers, none when
    the largest is within `slack` of an even share (a few states more cost less than
    moving them). Greedy in worker order, so the same counts give the same moves."""
    n, total = len(counts), sum(counts)
    share = [total // n + (i < total % n) for i in range(n)]
    if max(c - s for c, s in zip(counts, share, strict=True)) <= slack * total / n:
        return []
    give = [[i, c - s] for i, (c, s) in enumerate(zip(counts, share, strict=True)) if c > s]
    take = [[i, s - c] for i, (c, s) in enumerate(zip(counts, share, strict=True)) if c < s]
    moves = []
    while give and take:
        m = min(give[0][1], take[0][1])
        moves.append((give[0][0], take[0][0], m))
        for box in (give, take):
            box[0][1] -= m
            if not box[0][1]:
                box.pop(0)
    return moves


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
    [ex] = _explore(ray, model, properties, False, workers, max_states, max_depth,
                    max_seconds, progress, on_level, save, resume, save_every)
    return ex


def explore_cluster_family(
    ray: Any,
    family: Any,
    properties: Iterable[Property] = (),
    *,
    workers: int = 2,
    max_states: int | None = None,
    max_depth: int | None = None,
    max_seconds: float | None = None,
    progress: Any = None,
    on_level: Callable[[int, list[Any]], None] | None = None,
) -> list[Exploration]:
    """`checker.family.explore_family` (every property to the end, ``stop_when_decided``
    off) with the family's entries partitioned among `workers`: one Exploration per
    member, with its own run's states, verdicts and traces. No snapshots."""
    for required in ("init_states", "successors_family", "members"):
        if not callable(getattr(family, required, None)):
            raise TypeError(f"{type(family).__name__} is not a family model: no {required}()")
    return _explore(ray, family, properties, True, workers, max_states, max_depth,
                    max_seconds, progress, on_level, None, None, 10.0)


def _explore(ray: Any, model: Any, properties: Iterable[Property], family: bool, workers: int,
             max_states: int | None, max_depth: int | None, max_seconds: float | None,
             progress: Any, on_level: Callable[[int, list[Any]], None] | None,
             save: str | os.PathLike[str] | None, resume: str | os.PathLike[str] | None,
             save_every: float) -> list[Exploration]:
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
    progress = as_progress(progress)
    saved = False  # a snapshot of this search is on disk, to go on from if a worker is lost
    for attempt in range(RETRIES + 1):
        parts = [actor.remote(i, workers, model, props, family) for i in range(workers)]
        try:
            d = _Driver(ray, h, props, parts, workers, model.members() if family else None)
            d.save_path, d.save_every = save, save_every
            d.saved, d.redo = saved, save is not None and attempt < RETRIES
            if snap is not None:
                d.restore(snap)
            return d.run(max_states, max_depth, max_seconds, progress, on_level)
        except _Redo:
            saved = True
        finally:
            for a in parts:
                ray.kill(a)
        # New workers, from the last snapshot: the lost worker's partition is there.
        snap = _read(save, h, props, workers)  # type: ignore[arg-type]
    raise AssertionError("unreachable: the last attempt does not redo")


class _Driver:
    def __init__(self, ray: Any, h: ModelHooks, props: list[Property], parts: list[Any],
                 n: int, members: list[Any] | None) -> None:
        self.ray, self.h, self.props, self.parts, self.n = ray, h, props, parts, n
        self.family = members is not None
        self.members = [hooks(m) for m in members] if members is not None else [h]
        self.all = (1 << len(self.members)) - 1
        self.found: dict[tuple[int, int], _Found] = {}  # (property, member) -> where
        self.undecided = [self.all] * len(props)  # per property: members not decided
        self.levels: list[int] = []  # entries per level (a plain model: states)
        self.member_levels: list[list[int]] = []  # per level, per member: states
        self.tmask: dict[int, int] = {}  # members -> transitions
        self.deeper = self.all  # at max_depth: the members with deeper states
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
        self.saved = False  # a snapshot of this search is on disk
        self.redo = False  # a lost worker: go on with new ones from that snapshot
        self.moved = 0  # states given from one holder to another

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
            progress: Any, on_level: Callable[[int, list[Any]], None] | None
            ) -> list[Exploration]:
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
                    self.deeper = self.next_level(commit=False)
                    if self.deeper:
                        stopped = "max_depth"
                    else:
                        complete = True
                    break
                if on_level is not None:
                    on_level(self.level, parts)
                if not self.next_level(commit=True):
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
            if self.redo and self.saved:
                raise _Redo from None
            self.lost, stopped = str(e), "worker_lost"
        except KeyboardInterrupt:
            stopped = "interrupt"
        if self.save_path is not None and stopped != "worker_lost" and self.started:
            self.save(complete=complete and max_depth is None)
        exs = self.explorations(stopped, complete, max_depth)
        close = getattr(progress, "close", None)
        if close is not None:
            close(self.info(time.perf_counter(), final=True, stopping=stopped))
        if stopped != "worker_lost":
            cov, sent, cpu = zip(*self.get([p.totals.remote() for p in parts]), strict=True)
            for m, ex in enumerate(exs):
                bit = 1 << m
                ex.coverage, ex.never_fired = coverage_by_name(
                    ((a, c) for per in cov for (cm, a), c in per.items() if cm & bit),
                    self.members[m].action_name, self.members[m].all_action_names)
                ex.bytes_exchanged = sum(sent)
                ex.worker_cpu_seconds = sum(cpu)
                ex.states_moved = self.moved
        return exs

    def info(self, now: float, **kw: Any) -> ProgressInfo:
        run = now - self.t0
        pending = 0  # members with a property undecided
        for u in self.undecided:
            pending |= u
        extra = {"variants": len(self.members), "undecided": pending.bit_count()
                 } if self.family else {}
        return ProgressInfo(states=self.states, transitions=self.transitions,
                            queue=self.levels[-1] if self.levels else 0, depth=self.level,
                            elapsed=run, states_per_s=self.states / run if run > 0 else 0.0,
                            **extra, **kw)

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
                    for m in range(len(self.members)):
                        self.found[(j, m)] = _Found(0, w, pos, g + 1, 0, self.elapsed())
                    self.undecided[j] = 0
                    break
        self.get([part.start.remote(*per[j], self.all) for j, part in enumerate(self.parts)])
        self.levels.append(len(kept))
        self.member_levels.append([len(kept)] * len(self.members))
        self.started = True

    def elapsed(self) -> float:
        return self.seconds0 + time.perf_counter() - self.t0

    def member_transitions(self, m: int) -> int:
        return sum(c for cm, c in self.tmask.items() if cm >> m & 1)

    def next_level(self, commit: bool) -> int:
        """One round (see the module doc). Returns the members with new states (for a
        plain model: 1 if there are any, else 0)."""
        n, parts = self.n, self.parts

        outs = [p.expand.options(num_returns=n + 1).remote(not commit) for p in parts]
        asks = [parts[j].select.options(num_returns=n + 1).remote(
            *[outs[i][j] for i in range(n)]) for j in range(n)]
        if not commit:
            news = 0
            for a in self.get([a[n] for a in asks] + [o[n] for o in outs]):
                news |= a
            return news
        counts = self.get([parts[i].keep.remote(*[asks[j][i] for j in range(n)])
                           for i in range(n)])
        tms = self.get([o[n] for o in outs])
        given: list[list[Any]] = [[] for _ in range(n)]
        for giver, taker, m in balance(counts):
            given[taker].append(parts[giver].give.remote(m))
            self.moved += m
        got = self.get([p.settle.remote(self.undecided, *given[j])
                        for j, p in enumerate(parts)])
        keys: list[array] = []
        for blob, _, _ in got:
            a = array("q")
            a.frombytes(blob)
            keys.append(a)
        new = sum(len(k) for k in keys)
        if not new:
            return 0
        ranks = _ranks(keys, n)
        masks: list[int] = [1] * new  # members of each new entry, in global order
        if self.family:
            for (_, mblob, _), rk in zip(got, ranks, strict=True):
                ms = array("Q")
                ms.frombytes(mblob)
                for g, m in zip(rk, ms, strict=True):
                    masks[g] = m
        per_member: dict[int, int] = {}
        _count_elements(per_member, masks)
        before = [self.member_transitions(m) for m in range(len(self.members))]
        hits: dict[tuple[int, int], tuple[int, int, int]] = {}  # (prop, member) -> g, w, pos
        for w, (_, _, found) in enumerate(got):
            for j, m, pos in found:
                g = ranks[w][pos]
                if (j, m) not in hits or g < hits[(j, m)][0]:
                    hits[(j, m)] = (g, w, pos)
        for (j, m), (g, w, pos) in sorted(hits.items()):
            bit = 1 << m
            prior = sum(lv[m] for lv in self.member_levels)
            upto = sum(1 for x in masks[:g + 1] if x & bit) if self.family else g + 1
            parent = keys[w][pos] >> KEY_SHIFT
            tb = sum(self.get([p.transitions_before.remote(parent, m) for p in parts]))
            self.found[(j, m)] = _Found(self.level + 1, w, pos, prior + upto, before[m] + tb,
                                        self.elapsed())
            self.undecided[j] &= ~bit
        self.get([p.commit.remote(ranks[j].tobytes()) for j, p in enumerate(parts)])
        for tm in tms:
            for cm, c in tm.items():
                self.tmask[cm] = self.tmask.get(cm, 0) + c
                self.transitions += c
        self.levels.append(new)
        self.member_levels.append([sum(c for cm, c in per_member.items() if cm >> m & 1)
                                   for m in range(len(self.members))])
        self.states += new
        self.level += 1
        got_any = 0
        for cm in per_member:
            got_any |= cm
        return got_any

    def save(self, complete: bool) -> None:
        """A snapshot at this level boundary: the driver's figures and every partition."""
        parts = self.get([p.dump.remote() for p in self.parts])
        header = {"salt": self.h.fingerprint_salt, "engine": ENGINE, "workers": self.n,
                  "properties": [[p.name, p.kind] for p in self.props]}
        data = {"level": self.level, "levels": self.levels, "states": self.states,
                "transitions": self.transitions, "seconds": self.elapsed(), "done": complete,
                "found": [[j, f.level, f.worker, f.pos, f.states, f.transitions, f.seconds]
                          for (j, _), f in self.found.items()], "parts": parts}
        write_snapshot(self.save_path, header, data)  # type: ignore[arg-type]
        self.t_save = time.perf_counter()
        self.saved = True

    def restore(self, data: dict[str, Any]) -> None:
        self.level, self.levels = data["level"], data["levels"]
        self.member_levels = [[c] for c in self.levels]
        self.states, self.transitions = data["states"], data["transitions"]
        self.tmask = {1: self.transitions}
        self.seconds0, self.done = data["seconds"], data["done"]
        self.found = {(f[0], 0): _Found(*f[1:]) for f in data["found"]}
        for j, _ in self.found:
            self.undecided[j] = 0
        self.inits = list(self.h.init_states())
        self.get([p.restore.remote(d) for p, d in zip(self.parts, data["parts"], strict=True)])
        self.started = True

    def trace(self, f: _Found, prop: Property, h: ModelHooks) -> Trace:
        path: list[int] = []
        w, pos = f.worker, f.pos
        for lvl in range(f.level, 0, -1):
            w, pos, k = self.get(self.parts[w].parent.remote(lvl, pos))
            path.append(k)
        _, init, _ = self.get(self.parts[w].parent.remote(0, pos))
        path.reverse()
        return replay(h, self.inits[init], path, prop)

    def explorations(self, stopped: StopReason | None, complete: bool,
                     max_depth: int | None) -> list[Exploration]:
        """One per member (a plain model: one), each what its own run gives."""
        seconds = self.elapsed()
        out = []
        for m, h in enumerate(self.members):
            levels = [lv[m] for lv in self.member_levels]
            while len(levels) > 1 and not levels[-1]:
                levels.pop()
            states = sum(levels)
            depth = max((i for i, c in enumerate(levels) if c), default=0)
            done = complete or (stopped == "max_depth" and not self.deeper >> m & 1)
            why = None if done else stopped
            # No trace can be rebuilt through a lost worker's parent pointers.
            found = {} if stopped == "worker_lost" else {
                j: f for (j, mm), f in self.found.items() if mm == m}
            transitions = self.member_transitions(m)
            results = property_results(
                self.props, found, lambda f, p, h=h: self.trace(f, p, h), complete=done,
                reason="" if done else self.reason(why, max_depth), max_depth=max_depth,
                states=states, transitions=transitions, depth=depth, seconds=seconds,
                engine=ENGINE)
            out.append(Exploration(
                results=results, coverage={}, never_fired=[], states=states,
                transitions=transitions, depth=depth, seconds=seconds, complete=done,
                stopped_by=why, levels=levels, engine=ENGINE,
                collision_probability=min(1.0, states * (states - 1) / 2
                                          / 2 ** (8 * FP_BYTES))))
        return out

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
