"""The fast paths of `model.world` (and the counts the checkpoint reads) give exactly what
their plain definitions give.

The plain definitions below are the specification: straightforward code, one scan per
question. The model's own versions skip work (task signatures only where two tasks could
tie, no renaming when no id moves, one pass for all counts); the representative of a state
must not change by a single value, since the explored states, counts and traces all follow
from it. States come from seeded random runs of the whole model (environment, checkpoint
phases, restart) on several presets and variants, and from the same states with their tasks
and files renumbered."""

from __future__ import annotations

import random

import pytest

from model.checkpoint import is_clean, unsupported
from model.config import PRESETS
from model.state import (
    EMPTY,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_SOCK,
    OBJ_TTY,
    PTMX,
    PTS,
    TIMERFD,
    UNIX,
    File,
    Task,
    World,
)
from model.system import CrModel
from model.variants import VARIANTS, Variant
from model.world import (
    canonical,
    file_counts,
    held_files,
    live_files,
    normalize,
    outside_refs,
    ref_users,
)

# --- the plain definitions ---------------------------------------------------------------------


def plain_reachable(w: World) -> tuple[list[int], list[int], list[int]]:
    """Live tables, files and objects in first-encounter order."""
    entries = w.cr.objhash if w.cr else ()
    tables: list[int] = []
    for t in w.tasks:
        if t.table not in tables:
            tables.append(t.table)
    tables += [e.ptr for e in entries if e.objtype == OBJ_FILE_TABLE and e.ptr not in tables]
    files: list[int] = []
    for tb in tables:
        for s in w.tables[tb]:
            if s != EMPTY and s >> 1 not in files:
                files.append(s >> 1)
    for e in entries:
        if e.objtype in (OBJ_FILE, OBJ_SOCK) and e.ptr not in files:
            files.append(e.ptr)
    i = 0
    while i < len(files):
        files += [x for x in dict.fromkeys(w.files[files[i]].rcvq) if x not in files]
        i += 1
    objs: list[int] = []
    for fi in files:
        o = w.files[fi].obj
        if o != -1 and o not in objs:
            objs.append(o)
    for e in entries:
        o = e.ptr if e.objtype == OBJ_INODE else e.ptr >> 1 if e.objtype == OBJ_TTY else -1
        if o != -1 and o not in objs:
            objs.append(o)
    return tables, files, objs


def plain_rename(w: World, tables: list[int], files: list[int], objs: list[int]) -> World:
    """Keep only the listed ids, numbered in the given order."""
    tmap = {old: new for new, old in enumerate(tables)}
    fmap = {old: new for new, old in enumerate(files)}
    omap = {old: new for new, old in enumerate(objs)}
    omap[-1] = -1

    def ptr(typ: int, p: int) -> int:
        if typ in (OBJ_FILE, OBJ_SOCK):
            return fmap.get(p, -1)
        if typ == OBJ_FILE_TABLE:
            return tmap.get(p, -1)
        if typ == OBJ_INODE:
            return omap.get(p, -1)
        o = omap.get(p >> 1, -1)
        return -1 if o == -1 else o * 2 + (p & 1)

    cr = w.cr
    if cr:
        ghost = tuple(sorted((t, ptr(t, p)) for t, p in cr.ghost if ptr(t, p) != -1))
        cr = cr._replace(objhash=tuple(e._replace(ptr=ptr(e.objtype, e.ptr))
                                       for e in cr.objhash), ghost=ghost)
    return World(
        tuple(Task(t.inside, t.frozen, tmap[t.table]) for t in w.tasks),
        tuple(tuple(s if s == EMPTY else fmap[s >> 1] * 2 + (s & 1) for s in w.tables[old])
              for old in tables),
        tuple(
            w.files[old]._replace(
                obj=omap[w.files[old].obj],
                epitems=tuple(sorted((fmap[t], fd) for t, fd in w.files[old].epitems
                                     if t in fmap)),
                rcvq=tuple(fmap[x] for x in w.files[old].rcvq),
            )
            for old in files
        ),
        w.steps,
        cr,
    )


def plain_normalize(w: World) -> World:
    return plain_rename(w, *plain_reachable(w))


def plain_canonical(w: World) -> World:
    """Tasks sorted (stably) by (inside, frozen, what each slot of its table holds), then
    every id numbered by first encounter."""

    def sig(t: Task) -> tuple:
        return (t.inside, t.frozen, tuple(
            (0,) if s == EMPTY else (1, s & 1, (
                (f := w.files[s >> 1]).kind, f.path, f.f_flags, f.f_mode, f.f_pos, f.owner,
                len(f.epitems), len(f.rcvq)))
            for s in w.tables[t.table]))

    return plain_normalize(w._replace(tasks=tuple(sorted(w.tasks, key=sig))))


def plain_ref_users(w: World, objtype: int, ptr: int) -> int | None:
    """The kernel's count of an objhash object, each reference counted where it is."""
    entries = w.cr.objhash if w.cr else ()
    grabs = sum(1 for e in entries if (e.objtype, e.ptr) == (objtype, ptr))
    if objtype == OBJ_FILE:
        live = {t.table for t in w.tasks} | {e.ptr for e in entries
                                              if e.objtype == OBJ_FILE_TABLE}
        slots = sum(1 for tb in live for s in w.tables[tb] if s != EMPTY and s >> 1 == ptr)
        flight = sum(g.rcvq.count(ptr) for g in w.files if g.kind == UNIX)
        return slots + flight + grabs
    if objtype == OBJ_FILE_TABLE:
        return sum(1 for t in w.tasks if t.table == ptr) + grabs
    if objtype == OBJ_SOCK:
        me = w.files[ptr]
        peer = any(g.kind == UNIX and g.obj == me.obj and i != ptr
                   for i, g in enumerate(w.files))
        return 1 + peer + grabs
    if objtype == OBJ_TTY:
        obj, slave = ptr >> 1, ptr & 1
        n = sum(1 for g in w.files if g.obj == obj and g.kind == (PTS if slave else PTMX))
        return n + (slave and any(g.obj == obj and g.kind == PTMX for g in w.files)) + grabs
    return None


def plain_held_files(w: World, inside: int) -> set[int]:
    """What the inside (or outside) tasks' tables hold, and what is in flight in the queues
    of the sockets among those, transitively."""
    out = {s >> 1 for t in w.tasks if t.inside == inside for s in w.tables[t.table]
           if s != EMPTY}
    while True:
        more = {x for f in out for x in w.files[f].rcvq} - out
        if not more:
            return out
        out |= more


def plain_is_clean(w: World, v: Variant = VARIANTS["linuxcr"]) -> int:
    """Nothing the inside tasks use (tables, held files, their epolls' targets, what those are
    on) is referenced from outside, and every held file is one the design supports (Linux-CR:
    in a table, checkpointable, with no owner and nothing in flight)."""
    inside = plain_held_files(w, 1)
    used = set(inside) | {tf for f in inside for tf, _ in w.files[f].epitems}
    mine = {(OBJ_FILE_TABLE, t.table) for t in w.tasks if t.inside}
    for f in used:
        file = w.files[f]
        mine.add((OBJ_FILE, f))
        if file.kind == UNIX:
            mine.add((OBJ_SOCK, f))
        elif file.kind in (PTMX, PTS):
            mine |= {(OBJ_TTY, file.obj * 2), (OBJ_TTY, file.obj * 2 + 1)}
        elif file.obj != -1:
            mine.add((OBJ_INODE, file.obj))
    direct = {s >> 1 for t in w.tasks if t.inside for s in w.tables[t.table] if s != EMPTY}
    bad = any(unsupported(w, v, f, f in direct) for f in inside) if v.name == "criu" else any(
        f not in direct or w.files[f].kind == TIMERFD or w.files[f].owner or w.files[f].rcvq
        for f in inside)
    return 0 if mine & outside_refs(w) or bad else 1


# --- states to compare them on -----------------------------------------------------------------


def shuffled(w: World, rng: random.Random) -> World:
    """`w` with its tasks in another order and, when no checkpoint names ids, its tables and
    files renumbered: the same state under other internal names."""
    tasks = list(w.tasks)
    rng.shuffle(tasks)
    w = w._replace(tasks=tuple(tasks))
    if w.cr:
        return w
    tperm = list(range(len(w.tables)))
    fperm = list(range(len(w.files)))
    rng.shuffle(tperm)
    rng.shuffle(fperm)
    tables = [()] * len(w.tables)
    for old, new in enumerate(tperm):
        tables[new] = tuple(s if s == EMPTY else fperm[s >> 1] * 2 + (s & 1)
                            for s in w.tables[old])
    files: list[File | None] = [None] * len(w.files)
    for old, new in enumerate(fperm):
        f = w.files[old]
        files[new] = f._replace(epitems=tuple(sorted((fperm[t], fd) for t, fd in f.epitems)),
                                rcvq=tuple(fperm[x] for x in f.rcvq))
    return World(tuple(Task(t.inside, t.frozen, tperm[t.table]) for t in w.tasks),
                 tuple(tables), tuple(files), w.steps, w.cr)  # type: ignore[arg-type]


def random_states(preset: str, variant: str, runs: int, seed: int = 17) -> list[World]:
    """Every successor met along `runs` seeded random runs to the end (raw, as the model
    builds them), plus each renumbered."""
    m = CrModel(PRESETS[preset], VARIANTS[variant])
    rng = random.Random(seed)
    out: list[World] = []
    for _ in range(runs):
        w = m.init_states()[0]
        while True:
            succ = [t for _, t in m.successors(w)]
            if not succ:
                break
            out += succ
            out += [shuffled(t, rng) for t in succ]
            w = rng.choice(succ)
    return out


CASES = [("tiny", "linuxcr"), ("default", "fixed"), ("default", "subtree"),
         ("race", "mut-stale-counts"), ("deep", "criu")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}:{v}" for p, v in CASES])
def states(request: pytest.FixtureRequest) -> list[World]:
    return random_states(*request.param, runs=60)


def test_the_states_are_varied(states: list[World]) -> None:
    """The sample reaches what the fast paths skip: several tasks to order, released files to
    renumber, checkpoints whose objhash names ids."""
    assert any(len(w.tasks) >= 2 for w in states)
    assert any(w.cr and w.cr.objhash for w in states)
    assert any(w != normalize(w) for w in states)
    assert any(w.tasks != canonical(w).tasks for w in states)


def test_canonical_is_the_plain_definition(states: list[World]) -> None:
    for w in states:
        assert canonical(w) == plain_canonical(w), w


def test_counts_are_the_plain_definition(states: list[World],
                                         request: pytest.FixtureRequest) -> None:
    v = VARIANTS[request.node.callspec.params["states"][1]]
    for w in states:
        counts = file_counts(w)
        assert counts == [plain_ref_users(w, OBJ_FILE, f) for f in range(len(w.files))], w
        for e in w.cr.objhash if w.cr else ():
            assert ref_users(w, e.objtype, e.ptr) == plain_ref_users(w, e.objtype, e.ptr), w
        for side in (0, 1):
            assert held_files(w, side) == plain_held_files(w, side), w
        if any(t.inside for t in w.tasks):
            assert is_clean(w, v) == plain_is_clean(w, v), w
            assert is_clean(w, v, outside_refs(w)) == plain_is_clean(w, v), w


def test_normalize_is_the_plain_definition(states: list[World]) -> None:
    for w in states:
        assert normalize(w) == plain_normalize(w), w
        assert live_files(w) == plain_reachable(w)[1], w
