"""Checkpoint as transitions, after Linux-CR v20 (checkpoint/objhash.c, checkpoint/files.c).

`freeze` stops the inside tasks; in full-container mode `collect` builds the objhash (tasks ->
fd tables -> files -> f_op->collect) and `contained` compares each object's `users` with its
kernel reference count; `write` produces the image; `visited` checks every hashed object was
written. Outside tasks keep acting between these steps. Each step is a pure function
`(World, Variant) -> World`; an error ends the checkpoint in phase FAILED with its errno.
"""

from __future__ import annotations

import errno

from model.flags import O_DIRECT
from model.image import R_FILE, R_QUEUE, EpRec, FdRec, FileRec, QueueRec, TableRec, TaskRec
from model.state import (
    CHECKED,
    COLLECTED,
    DONE,
    EMPTY,
    EPOLL,
    FAILED,
    FROZEN,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_SOCK,
    OBJ_TTY,
    PIPE_KINDS,
    PTMX,
    PTS,
    TIMERFD,
    UNIX,
    WRITTEN,
    Cr,
    ObjEntry,
    World,
    slot_cloexec,
    slot_file,
)
from model.variants import Variant
from model.world import file_counts, held_files, observe, outside_refs, ref_users

EBUSY, EBADF, EOPNOTSUPP = errno.EBUSY, errno.EBADF, errno.EOPNOTSUPP


def inside_tasks(w: World) -> list[int]:
    return [i for i, t in enumerate(w.tasks) if t.inside]


def _fail(w: World, v: Variant, code: int, clean: int | None = None) -> World:
    """End the checkpoint: the objhash drops its references (ckpt_obj_hash_free). `clean`:
    the ghost flag, when the caller has just computed it for this system."""
    if clean is None:
        clean = w.cr.clean and is_clean(w, v)
    cr = w.cr._replace(phase=FAILED, error=code, objhash=(), ghost=(), clean=clean)
    return _finished(cr)


def _finished(cr: Cr) -> World:
    """The state once a checkpoint has ended. Nothing after this point (restart, tampering,
    the specs) reads the running system, only `cr`, so the system is dropped: states that
    differ only in what outside tasks did meanwhile are one state."""
    return World((), (), (), 0, cr._replace(ext_steps=0))


def unsupported(w: World, v: Variant, f: int, direct: bool = True) -> bool:
    """Whether the design refuses file `f` whatever outside tasks hold: no ->checkpoint, an
    owner, no name (unlinked), in-flight SCM_RIGHTS (in its queue, or itself only in flight:
    `direct` False), or, in CRIU, a pipe in packet mode."""
    file = w.files[f]
    if file.kind == TIMERFD and not v.timerfd_dumped:
        return True
    if file.owner and not v.owner_dumped:
        return True
    if file.path <= -2 and not v.unlinked_dumped:
        return True
    if (file.rcvq or not direct) and not v.scm_dumped:
        return True
    return v.refuse_pipe_direct and file.kind in PIPE_KINDS and bool(file.f_flags & O_DIRECT)


def is_clean(w: World, v: Variant, outside: set[tuple[int, int]] | None = None) -> int:
    """Ghost bookkeeping for the completeness spec: 1 when no object the container uses (its
    tables, the files it holds or its epolls watch, what they are on) is referenced from
    outside, and every such file is one the design supports (`unsupported`). `outside`:
    `outside_refs(w)`, if the caller has it."""
    files = w.files
    direct = {slot_file(s) for t in w.tasks if t.inside for s in w.tables[t.table] if s != EMPTY}
    # Where files in flight are refused, a socket holding some is unsupported, so the tables'
    # files are all the container holds; where they are dumped, they count as held too.
    held = held_files(w, 1) if v.scm_dumped else direct
    used = set(held)
    for f in held:
        if unsupported(w, v, f, f in direct):
            return 0
        for tf, _ in files[f].epitems:
            used.add(tf)
    mine: set[tuple[int, int]] = {(OBJ_FILE_TABLE, t.table) for t in w.tasks if t.inside}
    for f in used:
        file = files[f]
        mine.add((OBJ_FILE, f))
        if file.kind == UNIX:
            mine.add((OBJ_SOCK, f))
        elif file.kind in (PTMX, PTS):
            mine.add((OBJ_TTY, file.obj * 2))
            mine.add((OBJ_TTY, file.obj * 2 + 1))
        elif file.obj != -1:
            mine.add((OBJ_INODE, file.obj))
    return 0 if mine & (outside_refs(w) if outside is None else outside) else 1


def _peer(w: World, f: int) -> int:
    o = w.files[f].obj
    return next((i for i, g in enumerate(w.files) if i != f and g.kind == UNIX and g.obj == o), -1)


def kernel_count(w: World, v: Variant, objtype: int, ptr: int) -> int | None:
    """The count the contained check compares an object's `users` with under `v`, or None
    for a type it never compares (a pipe's INODE, unless the variant gives it ref_users)."""
    if objtype == OBJ_FILE and not v.inflight_counted:
        return file_counts(w, False)[ptr]
    if objtype == OBJ_INODE:
        if not v.pipe_ref_users:
            return None  # INODE has no ref_users: never compared
        # fixed: pipe->files (open files on the pipe) plus the objhash's grab
        return sum(1 for g in w.files if g.obj == ptr and g.kind in PIPE_KINDS) + 1
    return ref_users(w, objtype, ptr)


def freeze(w: World, v: Variant) -> World:
    """User space freezes the container's tasks (freezer cgroup); outside tasks run on.
    In subtree mode there is no contained check: the ghost record of what was shared with
    outside is taken here, when the checkpoint began."""
    tasks = tuple(t._replace(frozen=1) if t.inside else t for t in w.tasks)
    w = w._replace(tasks=tasks)
    if v.full_container:
        return w._replace(cr=Cr(FROZEN, clean=is_clean(w, v)))
    out = outside_refs(w)
    return w._replace(cr=Cr(FROZEN, clean=is_clean(w, v, out), ghost=tuple(sorted(out))))


class _ObjHash:
    """A mutable working copy of the objhash during one step."""

    def __init__(self, entries: tuple[ObjEntry, ...], users_start: int) -> None:
        self.entries = list(entries)
        self.index = {(e.objtype, e.ptr): i for i, e in enumerate(entries)}
        self.users_start = users_start

    def collect(self, objtype: int, ptr: int, count: bool = True) -> bool:
        """ckpt_obj_collect: True when new (users = users_start), else users += 1."""
        i = self.index.get((objtype, ptr))
        if i is None:
            self.index[(objtype, ptr)] = len(self.entries)
            start = self.users_start if count else self.users_start - 1
            self.entries.append(ObjEntry(objtype, ptr, start, 0))
            return True
        if count:
            e = self.entries[i]
            self.entries[i] = e._replace(users=e.users + 1)
        return False

    def objref(self, objtype: int, ptr: int) -> int:
        i = self.index.get((objtype, ptr))
        return 0 if i is None else i + 1

    def lookup_add(self, objtype: int, ptr: int) -> tuple[int, bool]:
        """Objref of an object met while writing, adding it if new; marks it VISITED."""
        i = self.index.get((objtype, ptr))
        new = i is None
        if new:
            i = len(self.entries)
            self.index[(objtype, ptr)] = i
            self.entries.append(ObjEntry(objtype, ptr, self.users_start, 1))
        else:
            e = self.entries[i]
            if not e.visited:
                self.entries[i] = e._replace(visited=1)
        return i + 1, new


def _collect_file(w: World, v: Variant, h: _ObjHash, f: int, count: bool = True) -> None:
    """ckpt_collect_file: f_op->collect runs only on the first encounter."""
    new = h.collect(OBJ_FILE, f, count)
    if not (new or v.collect_every):
        return
    file = w.files[f]
    if file.kind == EPOLL:
        for tf, _ in file.epitems:
            if w.files[tf].kind != EPOLL:  # eventpoll skips targets that are epoll files
                _collect_file(w, v, h, tf, count=v.epoll_counts_targets)
    elif file.kind == PTMX:
        h.collect(OBJ_TTY, file.obj * 2)
        h.collect(OBJ_TTY, file.obj * 2 + 1)  # the linked slave
    elif file.kind == PTS:
        h.collect(OBJ_TTY, file.obj * 2 + 1)
    elif file.kind == UNIX:
        h.collect(OBJ_SOCK, f)
        p = _peer(w, f)
        if p >= 0:
            h.collect(OBJ_SOCK, p)
    elif file.kind in PIPE_KINDS and v.pipe_ref_users:
        h.collect(OBJ_INODE, file.obj)


def collect(w: World, v: Variant) -> World:
    """Walk inside tasks -> fd tables (scan_fds, ascending) -> files -> ->collect."""
    h = _ObjHash(w.cr.objhash, v.users_start)
    for ti in inside_tasks(w):
        table = w.tasks[ti].table
        if h.collect(OBJ_FILE_TABLE, table):
            for s in w.tables[table]:
                if s != EMPTY and not _skipped(w, v, slot_file(s)):
                    _collect_file(w, v, h, slot_file(s))
    w = w._replace(cr=w.cr._replace(phase=COLLECTED, objhash=tuple(h.entries)))
    # The counts the contained check compares later are only as good as the references they
    # were taken from: an fd table an unfrozen task also holds can change after this step.
    if v.tables_checked_at_collect and any(e.objtype == OBJ_FILE_TABLE for e in _leaks(w, v)):
        return _fail(w, v, EBUSY)
    return w


def _skipped(w: World, v: Variant, f: int) -> bool:
    """The skip mutant's scan_fds passes over files without ->checkpoint."""
    return v.skip_uncheckpointable and w.files[f].kind == TIMERFD


def _leaks(w: World, v: Variant) -> list[ObjEntry]:
    """The objhash entries whose kernel count differs from the `users` collect counted."""
    out = []
    counts = None  # every file's f_count, counted once if a file is hashed
    for e in w.cr.objhash:
        if e.objtype == OBJ_FILE:
            if counts is None:
                counts = file_counts(w, v.inflight_counted)
            r: int | None = counts[e.ptr]
        else:
            r = kernel_count(w, v, e.objtype, e.ptr)
        if r is not None and r != e.users:
            out.append(e)
    return out


def contained(w: World, v: Variant) -> World:
    """ckpt_obj_contained: any object with ref_users != users is a leak: -EBUSY. The ghost
    record (ground truth of what outside tasks reference now) is taken for the specs."""
    out = outside_refs(w)
    cr = w.cr
    clean = cr.clean and is_clean(w, v, out)
    if v.contained_check and _leaks(w, v):
        return _fail(w, v, EBUSY, clean)
    return w._replace(cr=cr._replace(phase=CHECKED, ghost=tuple(sorted(out)), clean=clean))


def write(w: World, v: Variant) -> World:
    """Write the image: per inside task its table objref; the first task holding a table
    writes FILE_TABLE and its fd records, each file's record on first encounter; then the
    deferred epoll items."""
    h = _ObjHash(w.cr.objhash, v.users_start)
    late = v.full_container  # "reverse added late" applies in full-container mode only
    image: list = []
    written_tables: set[int] = set()
    written_files: dict[int, int] = {}  # file -> cloexec of its first descriptor
    epolls: list[int] = []

    def add(objtype: int, ptr: int) -> int:
        ref, new = h.lookup_add(objtype, ptr)
        if new and late and objtype != OBJ_INODE:
            raise _CkptError(EBUSY)  # reverse added late: appeared after the collect
        return ref

    inside = inside_tasks(w)
    try:
        for ti in inside:
            table = w.tasks[ti].table
            tref = add(OBJ_FILE_TABLE, table)
            image.append(TaskRec(1, tref))
            if table in written_tables:
                continue
            written_tables.add(table)
            slots = [(fd, s) for fd, s in enumerate(w.tables[table])
                     if s != EMPTY and not _skipped(w, v, slot_file(s))]
            image.append(TableRec(2, tref, len(slots)))
            for fd, s in slots:
                f = slot_file(s)
                fref = add(OBJ_FILE, f)
                if f not in written_files:
                    written_files[f] = slot_cloexec(s)
                    image.append(_file_record(w, v, f, fref, add))
                    if w.files[f].kind == EPOLL:
                        epolls.append(f)
                cloexec = written_files[f] if v.cloexec_per_file else slot_cloexec(s)
                image.append(FdRec(3, fd, fref, cloexec))
        if v.scm_dumped:  # an epoll only in flight has its items written too
            epolls += _write_queues(w, v, image, written_files, add)
        for ep in epolls:  # the deferred queue
            for tf, fd in w.files[ep].epitems:
                tref = h.objref(OBJ_FILE, tf)
                if not tref:
                    raise _CkptError(EBUSY)  # epoll target with no objref
                image.append(EpRec(5, h.objref(OBJ_FILE, ep), tref, fd))
        _criu_pairs(w, v, written_files)
    except _CkptError as e:
        return _fail(w._replace(cr=w.cr._replace(objhash=tuple(h.entries))), v, e.code)
    # A reference taken after the contained check and dropped before the re-check after the
    # write is seen by neither: only a comparison made as the objects are written sees it.
    if v.check_at_write:
        hashed = w._replace(cr=w.cr._replace(objhash=tuple(h.entries)))
        if _leaks(hashed, v):
            return _fail(hashed, v, EBUSY)

    # Ghost bookkeeping for the specs: which written objects outside tasks referenced at the
    # check (or the freeze, in subtree mode) and which they reference now.
    written = {(e.objtype, e.ptr): i + 1 for i, e in enumerate(h.entries) if e.visited}
    if epolls:
        for r in image:
            if r[0] == 5:  # epoll targets are written by reference
                e = h.entries[r.target_ref - 1]
                written[(e.objtype, e.ptr)] = r.target_ref
    ghost = set(w.cr.ghost)
    now = outside_refs(w)
    leak_check = tuple(sorted((ref, key[0]) for key, ref in written.items() if key in ghost))
    leak_write = tuple(sorted((ref, key[0]) for key, ref in written.items() if key in now))
    snapshot = observe(w, inside)
    cr = w.cr._replace(
        phase=WRITTEN,
        objhash=tuple(h.entries),
        image=tuple(image),
        snapshot=snapshot,
        leak_check=leak_check,
        leak_write=leak_write,
        ghost=(),
    )
    return w._replace(cr=cr)


def _write_queues(w: World, v: Variant, image: list, written_files: dict[int, int],
                  add) -> list[int]:
    """CRIU (sk-queue.c, dump_scm_rights): each message in flight on a dumped socket is saved
    with the files it carries, which are dumped like any other (so a socket in flight has its
    own queue saved in turn)."""
    todo = [f for f in written_files if w.files[f].kind == UNIX]
    epolls: list[int] = []
    while todo:
        s = todo.pop(0)
        for x in w.files[s].rcvq:
            xref = add(OBJ_FILE, x)
            if x not in written_files:
                written_files[x] = 0
                image.append(_file_record(w, v, x, xref, add))
                if w.files[x].kind == UNIX:
                    todo.append(x)
                elif w.files[x].kind == EPOLL:
                    epolls.append(x)
            image.append(QueueRec(R_QUEUE, add(OBJ_FILE, s), xref))
    return epolls


def _criu_pairs(w: World, v: Variant, written_files: dict[int, int]) -> None:
    """CRIU's checks once every file is dumped: a unix socket whose peer was not dumped is
    "External socket is used" (sk-unix.c; other holders of a dumped pair are not looked at);
    a pty slave whose master is open but was not dumped is "slave peer ... without
    correspond master peer" (tty.c; a hung-up slave, master closed, is dumped)."""
    dumped = set(written_files)
    for f in written_files:
        file = w.files[f]
        if v.refuse_external_unix and file.kind == UNIX:
            p = _peer(w, f)
            if p >= 0 and p not in dumped:
                raise _CkptError(EBUSY)
        if v.refuse_unpaired_slave and file.kind == PTS:
            masters = {g for g, m in enumerate(w.files) if m.kind == PTMX and m.obj == file.obj}
            if masters and not masters & dumped:
                raise _CkptError(EBUSY)


class _CkptError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _file_record(w: World, v: Variant, f: int, fref: int, add) -> FileRec:
    """f_op->checkpoint of one file; raises _CkptError where the design refuses it."""
    file = w.files[f]
    if file.kind == TIMERFD and not v.timerfd_dumped:  # CRIU: timerfd.c dumps it
        raise _CkptError(EBADF)  # f_op lacks checkpoint
    if file.owner and not v.owner_dumped:  # CRIU: files.c saves a fown entry
        raise _CkptError(EBUSY)  # F_SETOWN owner
    if file.path <= -2 and not v.unlinked_dumped:  # CRIU: files-reg.c link-remap, ghost file
        raise _CkptError(EBADF)  # checkpoint_fname: the file is unlinked
    if v.refuse_pipe_direct and file.kind in PIPE_KINDS and file.f_flags & O_DIRECT:
        raise _CkptError(EOPNOTSUPP)  # CRIU pipes.c: "packetized mode ... not supported"
    obj_ref = peer_ref = 0
    if file.kind in PIPE_KINDS:
        obj_ref = add(OBJ_INODE, file.obj)
    elif file.kind == PTMX:
        obj_ref = add(OBJ_TTY, file.obj * 2)
        peer_ref = add(OBJ_TTY, file.obj * 2 + 1)
    elif file.kind == PTS:
        obj_ref = add(OBJ_TTY, file.obj * 2 + 1)
        # the link to the master tty, while a master is open (a hung-up slave has none)
        if any(g.kind == PTMX and g.obj == file.obj for g in w.files):
            peer_ref = add(OBJ_TTY, file.obj * 2)
    elif file.kind == UNIX:
        if file.rcvq and not v.scm_dumped:
            raise _CkptError(EBUSY)  # af_unix: pass fd (in-flight SCM_RIGHTS)
        p = _peer(w, f)
        obj_ref = add(OBJ_SOCK, f)
        peer_ref = add(OBJ_SOCK, p) if p >= 0 else 0
    return FileRec(
        R_FILE, fref, file.kind, file.f_flags, file.f_mode, file.f_pos, file.path, obj_ref,
        peer_ref, file.owner if v.owner_dumped else 0,
    )


def visited(w: World, v: Variant) -> World:
    """ckpt_obj_visited: every hashed object must have been written, else -EBUSY. The fixed
    variant also runs the contained check again, closing the window after the first one."""
    if v.visited_check and any(not e.visited for e in w.cr.objhash):
        return _fail(w, v, EBUSY)
    if v.recheck_after_write and _leaks(w, v):
        return _fail(w, v, EBUSY)
    return _finished(w.cr._replace(phase=DONE, objhash=()))


def leaks(w: World, v: Variant) -> list[tuple[int, ObjEntry, int]]:
    """What the contained check would refuse now: (objref, entry, kernel count) for every
    hashed object whose `users` differ from the kernel's count."""
    return [(w.cr.objhash.index(e) + 1, e, kernel_count(w, v, e.objtype, e.ptr) or 0)
            for e in _leaks(w, v)]


# The Variant knobs each step reads (helpers included): variants that agree on them get the
# same result from the step on every state, so a family of variants computes it once per
# class (model.system.CrFamily). tests/test_family.py checks these against the reads made.
# `unsupported` (and so `is_clean`, which the freeze, the check and every failing step run)
_CLEAN_READS = frozenset({"timerfd_dumped", "owner_dumped", "unlinked_dumped", "scm_dumped",
                          "refuse_pipe_direct"})
READS: dict[str, frozenset[str]] = {
    "freeze": frozenset({"full_container"}) | _CLEAN_READS,
    "collect": frozenset({"users_start", "collect_every", "epoll_counts_targets",
                          "pipe_ref_users", "skip_uncheckpointable",
                          "tables_checked_at_collect", "inflight_counted"}) | _CLEAN_READS,
    "contained": frozenset({"contained_check", "pipe_ref_users", "inflight_counted"})
    | _CLEAN_READS,
    "write": frozenset({"users_start", "full_container", "skip_uncheckpointable",
                        "cloexec_per_file", "refuse_external_unix", "check_at_write",
                        "pipe_ref_users", "refuse_unpaired_slave", "inflight_counted"})
    | _CLEAN_READS,
    "visited": frozenset({"visited_check", "recheck_after_write", "pipe_ref_users",
                          "inflight_counted"}) | _CLEAN_READS,
}
