"""From the symbolic model back to the explicit one: a World from a z3 model's values, and
the renaming-invariant summary by which the two engines' states are compared."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import z3

from model.flags import (
    FMODE_LSEEK,
    acc_fmode,
)
from model.state import (
    DONE,
    EMPTY,
    EPOLL,
    FAILED,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_SOCK,
    OBJ_TTY,
    PTMX,
    PTS,
    REG,
    RESTARTED,
    UNIX,
    WRITTEN,
    Cr,
    File,
    ObjEntry,
    Task,
    World,
    slot,
    slot_file,
)
from model.symbolic.sockets import decode_queue
from model.symbolic.state import EINVAL, PIPES

if TYPE_CHECKING:  # the model builds these terms; it is not imported here
    from model.symbolic.system import CrSymModel


def evtree(ev: Callable[[z3.ExprRef], Any], x: Any) -> Any:
    return [evtree(ev, y) for y in x] if isinstance(x, list) else ev(x)


def decode_values(m: CrSymModel, val: dict[str, Any]) -> World:
    """A World from the values of a symbolic state (`fresh` layout, Python ints/bools)."""
    phase = val["phase"]
    NT, ND, NF = m.NT, m.ND, m.NF
    error = val["error"]
    if phase in (DONE, FAILED, RESTARTED):  # the explicit model drops the running system
        cr = Cr(phase, error=error if phase == FAILED else 0,
                leak_check=((0, OBJ_FILE),) if val["leak"] and phase != FAILED else (),
                leak_write=((0, OBJ_FILE),) if val["leak_w"] and phase != FAILED else (),
                rst_error=EINVAL if phase == RESTARTED and val["rst_err"] else 0,
                clean=int(val["clean"]), tampered=val["tamper"])
        return World((), (), (), 0, cr)
    tasks = tuple(Task(int(val["inside"][t]), int(val["frozen"][t]), val["table"][t])
                  for t in range(NT) if val["alive"][t])
    tables = tuple(tuple(slot(val["sfile"][x][d], int(val["cloexec"][x][d]))
                         if val["used"][x][d] else EMPTY for d in range(ND)) for x in range(NT))
    files = []
    for f in range(NF):
        k = val["kind"][f]
        if k not in m.valid_kinds:
            k = REG
        fl = val["flags"][f]
        acc = fl & 3
        fmode = (acc_fmode(acc) if acc != 3 else 0) | (FMODE_LSEEK if k == REG else 0)
        items = tuple(sorted((tf, d) for tf in range(NF) for d in range(ND)
                             if val["ep"][f][tf][d])) if k == EPOLL else ()
        rcvq, sk_err = decode_queue(val, f) if k == UNIX else ((), 0)
        files.append(File(k, val["path"][f] if k == REG else -1,
                          val["obj"][f] if k in m.obj_kinds else -1, fl, fmode,
                          val["pos"][f], int(val["owner"][f]), items, rcvq, sk_err))
    steps = val["steps"] if "steps" in val else 0
    if phase == 0:
        from model.world import normalize

        return normalize(World(tasks, tables, tuple(files), steps))
    entries = []
    for x in range(NT):
        if val["h_tab"][x]:
            entries.append(ObjEntry(OBJ_FILE_TABLE, x, val["u_tab"][x], int(val["v_tab"][x])))
    for f in range(NF):
        if val["h_file"][f]:
            entries.append(ObjEntry(OBJ_FILE, f, val["u_file"][f], int(val["v_file"][f])))
    for o in range(NF):
        if val["h_ino"][o]:
            entries.append(ObjEntry(OBJ_INODE, o, val["u_ino"][o], int(val["v_ino"][o])))
        for i in (0, 1):
            if val["h_tty"][o][i]:
                entries.append(ObjEntry(OBJ_TTY, o * 2 + i, val["u_tty"][o][i],
                                        int(val["v_tty"][o][i])))
    if m.Q:
        entries += [ObjEntry(OBJ_SOCK, f, val["u_sock"][f], int(val["v_sock"][f]))
                    for f in range(NF) if val["h_sock"][f]]
    ghost = ([(OBJ_FILE_TABLE, x) for x in range(NT) if val["g_tab"][x]]
             + [(OBJ_FILE, f) for f in range(NF) if val["g_file"][f]]
             + [(OBJ_INODE, o) for o in range(NF) if val["g_ino"][o]]
             + [(OBJ_TTY, o * 2 + i) for o in range(NF) for i in (0, 1) if val["g_tty"][o][i]]
             + ([(OBJ_SOCK, f) for f in range(NF) if val["g_sock"][f]] if m.Q else []))
    cr = Cr(phase, error=0, objhash=tuple(entries), ghost=tuple(sorted(ghost)),
            leak_check=((0, OBJ_FILE),) if phase == WRITTEN and val["leak"] else (),
            leak_write=((0, OBJ_FILE),) if phase == WRITTEN and val["leak_w"] else (),
            ext_steps=val["ext"] if "ext" in val else 0, clean=int(val["clean"]))
    from model.world import normalize

    return normalize(World(tasks, tables, tuple(files), steps, cr))


def summary(w: World, steps: bool = True) -> tuple:
    """A renaming-invariant view of a World for comparing the two engines: the observable
    projection (model.world.project) plus the epoll targets, owners and paths, and the
    checkpoint's phase, errno, objhash (users, visited) and ghost record with every object
    named by the descriptors that reach it. Objref order, the image and the snapshot are
    left out (the symbolic model does not keep them)."""
    from model.world import project

    cr = w.cr
    if cr and cr.phase == FAILED:  # what else the failed checkpoint recorded is moot
        return ("ended", cr.phase, cr.error, cr.clean)
    if cr and cr.phase in (DONE, RESTARTED):
        return ("ended", cr.phase, bool(cr.leak_check), bool(cr.leak_write),
                cr.rst_error != 0, cr.tampered)
    proj = project(w)
    fnames: dict[int, tuple] = {}
    for ti, t in enumerate(w.tasks):
        for fd, s in enumerate(w.tables[t.table]):
            if s != EMPTY:
                fnames.setdefault(slot_file(s), ())
                fnames[slot_file(s)] += ((ti, fd),)

    def fname(f: int) -> tuple:
        if f in fnames:
            return ("fds", fnames[f])
        x = w.files[f]
        return ("orphan", x.kind, x.f_flags, x.f_pos, x.path, len(x.epitems))

    def oname(o: int, kinds: Iterable[int]) -> tuple:
        ks = tuple(kinds)
        return tuple(sorted(fname(f) for f, x in enumerate(w.files) if x.obj == o
                            and x.kind in ks))

    def tname(x: int) -> tuple:
        return tuple(i for i, t in enumerate(w.tasks) if t.table == x) or ("orphan-table",)

    def name(typ: int, ptr: int) -> tuple:
        if typ == OBJ_FILE_TABLE:
            return (typ, tname(ptr))
        if typ == OBJ_FILE:
            return (typ, fname(ptr))
        if typ == OBJ_INODE:
            return (typ, oname(ptr, PIPES))
        if typ == OBJ_SOCK:
            return (typ, fname(ptr))
        return (typ, ptr & 1, oname(ptr >> 1, (PTMX, PTS)))

    extra = []
    for f, x in enumerate(w.files):
        row = (fname(f), x.owner, x.path, x.kind,
               tuple(sorted((fname(tf), d) for tf, d in x.epitems)))
        if x.kind == UNIX:  # its peer, and what is in flight in its queue, in order
            row += (oname(x.obj, (UNIX,)), tuple(fname(y) for y in x.rcvq), x.sk_err)
        extra.append(row)
    base = (proj, tuple(sorted(extra)), w.steps if steps else 0)
    if not cr:
        return base
    objhash = tuple(sorted((name(e.objtype, e.ptr), e.users, e.visited) for e in cr.objhash))
    ghost = tuple(sorted(name(t, p) for t, p in cr.ghost))
    return base + (cr.phase, cr.error, objhash, ghost, bool(cr.leak_check),
                   bool(cr.leak_write), cr.ext_steps if steps else 0, cr.clean)
