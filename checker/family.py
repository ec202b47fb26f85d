"""Explore a family of models (design variants) at once, with every member's answers exactly
those of its own exploration.

A *family model* offers, besides ``init_states`` and ``canonical`` (the same for every
member), ``members()`` (the member models, for traces, names and coverage; bit ``i`` of a
mask is member ``i``) and ``successors_family(s, mask)``: for the members in `mask`, the
successors of `s` as ``(members, index, action, state)``, where member ``i``'s successors
are the entries with bit ``i``, in order, ``index`` being the position in its own
``successors(s)``. A successor the members compute alike is one entry for all of them.

Exact per-member breadth-first order
------------------------------------
The search is level-synchronous. ``seen`` maps a fingerprint to the mask of the members that
have found that state. A successor generated for members M is new for ``M & ~seen``; it is
appended to the next level as its own entry *(state, those members)*, even when the same state
is already there for other members: it is never merged into the earlier entry. So the next
level restricted to one member (the entries with its bit, in order) is exactly the level its
own run builds, in the same order, by induction from the initial states: the same states are
found at the same depths, in the same discovery order, and each entry keeps its parent and
the transition's index in that member's own successor list. A member's traces are rebuilt
exactly as its own run's, and the first violation it meets is its own run's first.

What is shared: a state reached by several members from the same parent at the same index is
one entry (one canonical form, one fingerprint, one predicate call per property); a state
reached at different times is expanded once per discovery, for those members only.

Properties and stopping
-----------------------
Every member checks the same properties. A predicate is evaluated once per entry, for the
entry's members still undecided on it. With ``stop_when_decided`` a member whose properties
are all decided leaves every mask at the next parent boundary (as its own run would stop
there), and the family stops when none is left.

Bounds: ``max_depth`` is per level, exactly as for one member (each member says whether it had
deeper states). ``max_states`` bounds the *family's* distinct states (its memory: the seen
map); ``max_seconds`` the whole run. When one of these two stops the family, every member
still running reports ``unknown`` for what it had not decided; what it had decided is exactly
what its own run finds, since a member's order does not depend on the others.
"""

from __future__ import annotations

import os
from array import array
from collections import _count_elements  # type: ignore[attr-defined]  # C counter loop
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from checker.explicit import (
    _PAR,
    _CapReached,
    _check_properties,
    _first,
    _Found,
    _Search,
    drive,
)
from checker.model import ModelHooks, Property, hooks
from checker.progress import ProgressInfo
from checker.result import Exploration, StopReason
from checker.snapshot import SnapshotMismatch, check_payload

__all__ = ["ENGINE", "ModelFamily", "explore_family"]

ENGINE = "explicit-bfs-family"

_members_action = itemgetter(0, 2)


def _nat(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _bits(m: int) -> Iterable[int]:
    while m:
        low = m & -m
        yield low.bit_length() - 1
        m ^= low


class _FamilySearch(_Search):
    """`_Search` over (state, members) entries; everything a snapshot needs."""

    def __init__(
        self, fam: Any, props: Sequence[Property], exact: bool, merge: bool = False
    ) -> None:
        super().__init__(hooks(fam), props, exact)
        # Deliberately inexact (tests only): a state found again within the level being
        # built joins its earlier entry, which moves it in the later members' order.
        self.merge = merge
        self.where: dict[Any, int] = {}  # merge: fingerprint -> entry of the next level
        self.fam = fam
        self.members: list[ModelHooks] = [hooks(m) for m in fam.members()]
        self.n = len(self.members)
        self.all = (1 << self.n) - 1
        # Masks per level entry: 8 bytes each while they fit, Python ints beyond 64 members.
        self.wide = self.n > 64
        self.seen: dict[Any, int] = {}  # type: ignore[assignment]
        self.levels_mask: list[Any] = []
        self.undecided = [self.all] * len(self.props)  # per property: members not decided
        self.live = self.all  # members still explored (all but those done deciding)
        self.live_next = self.all
        self.found: dict[tuple[int, int], _Found] = {}  # type: ignore[assignment]
        self.coverage: dict[tuple[int, Any], int] = {}  # (members, action) -> transitions
        self.tmask: dict[int, int] = {}  # members -> transitions
        self.deeper = 0  # members with states beyond max_depth (set by probe)

    def masks(self, it: Iterable[int] = ()) -> Any:
        return list(it) if self.wide else array("Q", it)

    # --- bookkeeping ------------------------------------------------------------------

    def pending(self) -> int:
        """Members with a property still undecided."""
        out = 0
        for u in self.undecided:
            out |= u
        return out

    def all_decided(self) -> bool:
        return bool(self.props) and not self.pending()

    def transitions(self) -> int:
        return sum(self.tmask.values())

    def member_transitions(self, m: int) -> int:
        return sum(c for cm, c in self.tmask.items() if cm >> m & 1)

    def check(self, c: Any, new: int, level: int, index: int) -> None:
        """Evaluate each property on entry (c, new) for its undecided members."""
        for j, p in enumerate(self.props):
            und = self.undecided[j] & new
            if und and (not p.predicate(c)) is (p.kind == "invariant"):
                self.undecided[j] &= ~und
                now = self.elapsed()
                for m in _bits(und):
                    # states: filled in from the level masks when results are built
                    self.found[(m, j)] = _Found(level, index, -1, self.member_transitions(m),
                                                now)
        if self.stop_when_decided and self.props:
            self.live_next = self.live & self.pending()

    # --- initial states ---------------------------------------------------------------

    def init(self) -> None:
        canonical, mask, fpf = self.h.canonical, self.mask, self.fpf
        par, act, masks, states = array(_PAR), array("B"), self.masks(), []
        for i, t in enumerate(self.inits()):
            c = canonical(t)
            f = fpf(c) & mask
            old = self.seen.get(f, 0)
            new = self.live & ~old
            if not new:
                continue
            if not old and len(self.seen) >= self.cap:
                raise _CapReached
            par.append(i)
            act.append(0)
            masks.append(new)
            states.append(c)
            self.seen[f] = old | new
            self.check(c, new, 0, len(states) - 1)
        self.live = self.live_next
        self.levels_par, self.levels_act, self.levels_mask = [par], [act], [masks]
        self.frontier, self.pos, self.level = states, 0, 0
        self.started = True

    # --- the hot loop -----------------------------------------------------------------

    def expand_level(self) -> str | None:
        """As `_Search.expand_level`, over entries (see the module doc)."""
        succ, canonical = self.fam.successors_family, self.h.canonical
        fpf, mask = self.fpf, self.mask
        seen = self.seen
        seen_get = seen.get
        frontier = self.frontier
        fmasks = self.levels_mask[self.level]
        n = len(frontier)
        lvl1 = self.level + 1
        if len(self.levels_par) == lvl1:
            self.levels_par.append(array(_PAR))
            self.levels_act.append(array("B"))
            self.levels_mask.append(self.masks())
            self.where = {}
        npar, nact = self.levels_par[lvl1], self.levels_act[lvl1]
        nmask, nstates = self.levels_mask[lvl1], self.next_states
        npar_append, nact_append = npar.append, nact.append
        nmask_append, nstates_append = nmask.append, nstates.append
        cov, tm, count, key, first = self.coverage, self.tmask, _count_elements, \
            _members_action, _first
        live = self.live
        pending = self.pending()
        merge, where = self.merge, self.where
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
                members = fmasks[pi] & live
                if not members:
                    continue
                items = succ(s, members)
                k = 0
                for cm, k, _a, t in items:
                    c = canonical(t)
                    f = fpf(c) & mask
                    old = seen_get(f, 0)
                    new = cm & ~old
                    if new:
                        if merge and f in where:
                            nmask[where[f]] |= new
                            seen[f] = old | new
                            if new & pending:
                                self.check(c, new, lvl1, where[f])
                                pending = self.pending()
                            continue
                        if not old:
                            if nseen >= cap:
                                raise _CapReached
                            nseen += 1
                        npar_append(pi)
                        nact_append(k)
                        nmask_append(new)
                        nstates_append(c)
                        seen[f] = old | new  # last: see rollback()
                        if merge:
                            where[f] = len(nstates) - 1
                        if new & pending:
                            self.check(c, new, lvl1, len(nstates) - 1)
                            pending = self.pending()
                count(cov, map(key, items))  # C loops: cannot be cut by a signal
                count(tm, map(first, items))
                if self.live_next != live:  # members done deciding leave here
                    live = self.live = self.live_next
                    if not live:
                        self.pos = pi + 1
                        self.countdown = 1
                        return "decided"
            self.pos = n
            self.countdown = countdown
            return None
        except BaseException as e:
            return self.cut(e, pi, s, k)

    def rollback(self, pi: int, s: Any) -> None:
        """Undo everything parent `pi` added (see `_Search.rollback`); the arrays are appended
        in the order npar, nact, nmask, nstates, seen."""
        self.pos = pi
        self.live_next = self.live
        if pi < len(self.frontier) and self.frontier[pi] is None and s is not None:
            self.frontier[pi] = s
        lvl1 = self.level + 1
        if len(self.levels_par) <= lvl1:
            return
        npar, nact = self.levels_par[lvl1], self.levels_act[lvl1]
        nmask, nstates = self.levels_mask[lvl1], self.next_states
        mark = len(npar)
        while mark > 0 and npar[mark - 1] == pi:
            mark -= 1
        for c, m in zip(nstates[mark:], nmask[mark:], strict=False):
            f = self.fp(c)
            left = self.seen.get(f, 0) & ~m
            if left:
                self.seen[f] = left
            else:
                self.seen.pop(f, None)
        del npar[mark:]
        del nact[mark:]
        del nmask[mark:]
        del nstates[mark:]
        for (m, j), f in list(self.found.items()):
            if f.level == lvl1 and f.index >= mark:
                del self.found[(m, j)]
                self.undecided[j] |= 1 << m

    def probe(self) -> bool:
        """At max_depth: which members have a successor they have not seen yet?"""
        h, seen, live = self.h, self.seen, self.live
        deeper = 0
        fmasks = self.levels_mask[self.level]
        for pi in range(self.pos, len(self.frontier)):
            members = fmasks[pi] & live & ~deeper
            if not members:
                continue
            for cm, _k, _a, t in self.fam.successors_family(self.frontier[pi], members):
                deeper |= cm & ~seen.get(self.fp(h.canonical(t)), 0)
            if deeper == live:
                break
        self.deeper = deeper
        return bool(deeper)

    def reset(self) -> None:
        self.seen, self.found = {}, {}
        self.undecided = [self.all] * len(self.props)
        self.live = self.live_next = self.all

    def finish(self) -> None:
        super().finish()
        del self.levels_mask[len(self.levels_par):]

    def info(self, now: float, **kw: Any) -> ProgressInfo:
        return super().info(now, variants=self.n, undecided=self.pending().bit_count(), **kw)

    # --- snapshots ----------------------------------------------------------------------

    def snapshot_header(self) -> dict[str, Any]:
        return {**super().snapshot_header(), "members": self.n}

    def snapshot_data(self) -> dict[str, Any]:
        d = super().snapshot_data()
        d.update(
            seen_masks=self.masks(self.seen.values()),
            levels_mask=self.levels_mask,
            found=[[m, j, f.level, f.index, f.transitions, f.seconds]
                   for (m, j), f in self.found.items()],
            undecided=self.undecided,
            live=self.live,
            coverage=[[cm, a, c] for (cm, a), c in self.coverage.items()],
            tmask=[[cm, c] for cm, c in self.tmask.items()],
        )
        return d

    def check_snapshot(self, path: str | os.PathLike[str], head: dict[str, Any],
                       doc: dict[str, Any]) -> None:
        """The family's record is well formed (see `checker.snapshot.check_payload`)."""

        def bad(what: str) -> SnapshotMismatch:
            return SnapshotMismatch(f"snapshot {path}: malformed family payload ({what})")

        if head.get("members") != self.n:
            raise SnapshotMismatch(f"snapshot {path} is not of a family of {self.n} members")
        extra = {"seen_masks", "levels_mask", "undecided", "live", "tmask"}
        if not extra <= set(doc):
            raise bad("keys")
        common = {k: v for k, v in doc.items() if k not in extra}
        check_payload(path, {**common, "found": {}, "coverage": {}}, len(self.props),
                      self.exact)
        masks_type = list if self.wide else array

        def mask(x: Any) -> bool:
            return _nat(x) and x <= self.all

        pars, lms = doc["levels_par"], doc["levels_mask"]
        if not (isinstance(doc["seen_masks"], masks_type)
                and len(doc["seen_masks"]) == len(doc["seen"])
                and all(mask(x) for x in doc["seen_masks"])):
            raise bad("seen_masks")
        if not (isinstance(lms, list) and len(lms) == len(pars)
                and all(isinstance(m, masks_type) and len(m) == len(p)
                        for m, p in zip(lms, pars, strict=True))
                and all(mask(x) for m in lms for x in m)):
            raise bad("levels_mask")
        if not (isinstance(doc["undecided"], list) and len(doc["undecided"]) == len(self.props)
                and all(mask(x) for x in doc["undecided"]) and mask(doc["live"])):
            raise bad("undecided/live")
        found = doc["found"]
        if not (isinstance(found, list) and all(
                isinstance(f, list) and len(f) == 6 and all(_nat(x) for x in f[:5])
                and isinstance(f[5], int | float) and f[0] < self.n and f[1] < len(self.props)
                and f[2] < len(pars) and f[3] < len(pars[f[2]]) for f in found)):
            raise bad("found")
        cov, tm = doc["coverage"], doc["tmask"]
        if not (isinstance(cov, list) and all(
                isinstance(c, list) and len(c) == 3 and mask(c[0]) and _nat(c[2]) for c in cov)
                and isinstance(tm, list) and all(
                isinstance(c, list) and len(c) == 2 and mask(c[0]) and _nat(c[1]) for c in tm)):
            raise bad("coverage")

    @classmethod
    def load_family(
        cls, path: str | os.PathLike[str], fam: Any, props: Sequence[Property], exact: bool
    ) -> _FamilySearch:
        self = cls(fam, props, exact)
        self.restore(path)
        return self

    def restore_found(self, doc: dict[str, Any]) -> None:
        self.seen = dict(zip(doc["seen"], doc["seen_masks"], strict=True))
        self.levels_mask = doc["levels_mask"]
        self.found = {(m, j): _Found(lvl, i, -1, t, sec)
                      for m, j, lvl, i, t, sec in doc["found"]}
        self.undecided = list(doc["undecided"])
        self.live = self.live_next = doc["live"]
        self.coverage = {(cm, tuple(a) if isinstance(a, list) else a): c
                         for cm, a, c in doc["coverage"]}
        self.tmask = {cm: c for cm, c in doc["tmask"]}

    # --- results ------------------------------------------------------------------------

    def exploration(  # type: ignore[override]
        self, stopped_by: StopReason | None, max_depth: int | None
    ) -> list[Exploration]:
        """One Exploration per member, each what its own run gives (see the module doc)."""
        per_level = []  # per level: members -> entries
        for lm in self.levels_mask:
            cnt: dict[int, int] = {}
            count = _count_elements
            count(cnt, lm)
            per_level.append(cnt)
        prefix: dict[tuple[int, int], dict[int, int]] = {}  # (level, index) -> members -> entries
        for level, index in {(f.level, f.index) for f in self.found.values()}:
            cnt = {}
            _count_elements(cnt, self.levels_mask[level][: index + 1])
            prefix[(level, index)] = cnt
        out = []
        for m, h in enumerate(self.members):
            bit = 1 << m
            levels = [sum(c for cm, c in lc.items() if cm & bit) for lc in per_level]
            while len(levels) > 1 and not levels[-1]:
                levels.pop()
            found = {j: f for (mm, j), f in self.found.items() if mm == m}
            for f in found.values():
                upto = prefix[(f.level, f.index)]
                f.states = sum(levels[: f.level]) + sum(c for cm, c in upto.items() if cm & bit)
            if not bit & self.live:  # left once decided, as its own run stops
                complete, why = False, "decided"
            elif self.done or (stopped_by == "max_depth" and not bit & self.deeper):
                complete, why = True, None
            else:
                complete, why = False, stopped_by or "interrupt"
            ex = self.build(
                h, found,
                ((a, c) for (cm, a), c in self.coverage.items() if cm & bit),
                complete=complete, stopped_by=why, max_depth=max_depth,
                states=sum(levels), transitions=self.member_transitions(m),
                depth=max(len(levels) - 1, 0), levels=levels,
            )
            ex.engine = ENGINE
            out.append(ex)
        return out

    def graph(self) -> Any:
        raise NotImplementedError("the state graph of a family: explore a member instead")


class ModelFamily:
    """A family of plain models sharing initial states and canonical form (the first
    member's): each member's successors are computed apart, and the equal ones (same index,
    action and state) are one successor for all. For models without knowledge of which
    members agree on a step; a model that knows computes each step once per class."""

    def __init__(self, models: Sequence[Any]) -> None:
        self.models = list(models)
        self.hooks = [hooks(m) for m in self.models]
        h = self.hooks[0]
        self.init_states, self.canonical, self.fingerprint = (
            h.init_states, h.canonical, h.fingerprint)

    def members(self) -> list[Any]:
        return self.models

    def fingerprint_salt(self) -> str:
        return "family|" + "|".join(h.fingerprint_salt for h in self.hooks)

    def successors_family(self, s: Any, mask: int) -> list[tuple[int, int, Any, Any]]:
        at: dict[tuple[int, Any, Any], list] = {}
        for m in _bits(mask):
            for k, (a, t) in enumerate(self.hooks[m].successors(s)):
                e = at.get((k, a, t))
                if e is None:
                    at[(k, a, t)] = [1 << m, k, a, t]
                else:
                    e[0] |= 1 << m
        # Sorted by index (stable): each member's entries in its own order.
        return sorted((tuple(e) for e in at.values()), key=_first_index)  # type: ignore[misc]


def _first_index(e: tuple) -> int:
    return e[1]


def explore_family(
    family: Any,
    properties: Iterable[Property] = (),
    *,
    max_states: int | None = None,
    max_depth: int | None = None,
    max_seconds: float | None = None,
    progress: Any = None,
    save: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop_when_decided: bool = True,
    exact: bool = False,
    save_every: float = 10.0,
    max_memory: int | None = None,
    merge_rediscoveries: bool = False,
) -> list[Exploration]:
    """Explore every member of `family` at once (see the module doc); one Exploration per
    member, in member order, equal to `explore(member, ...)` but for the seconds (and,
    under `max_states`/`max_seconds`, how far an undecided member got).

    `merge_rediscoveries` is deliberately wrong, for tests only: a state found again for
    other members while its level is built joins its first entry, which changes those
    members' order (and so, somewhere, a counterexample)."""
    for required in ("init_states", "successors_family", "members"):
        if not callable(getattr(family, required, None)):
            raise TypeError(f"{type(family).__name__} is not a family model: no {required}()")
    props = _check_properties(properties)
    if resume is not None:
        search = _FamilySearch.load_family(resume, family, props, exact)
    else:
        search = _FamilySearch(family, props, exact, merge=merge_rediscoveries)
    bounds = {"max_states": max_states, "max_depth": max_depth, "max_seconds": max_seconds,
              "max_memory": max_memory}
    return drive(search, bounds, progress=progress, save=save, save_every=save_every,
                 stop_when_decided=stop_when_decided)
