"""Pure functions over a `World`: derived reference counts, garbage collection of released
objects, renaming of internal ids, the canonical form, and the observable projection."""

from __future__ import annotations

from model.state import (
    EMPTY,
    EPOLL,
    KIND_NAMES,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_KINDS,
    OBJ_SOCK,
    OBJ_TTY,
    PTMX,
    PTS,
    REG,
    UNIX,
    File,
    ObjEntry,
    Task,
    World,
    slot,
    slot_cloexec,
    slot_file,
)

# ---------------------------------------------------------------------------------------------
# Derived reference counts


def objhash_entries(w: World) -> tuple[ObjEntry, ...]:
    """The objhash of a checkpoint in progress (empty when none)."""
    cr = w.cr
    return cr.objhash if cr else ()


def f_count(w: World, f: int) -> int:
    """`file->f_count`: descriptors, in-flight SCM_RIGHTS messages, and the objhash's grab.

    Epoll items hold no reference (eventpoll keeps a weak link, removed at release)."""
    n = 0
    for table in live_tables(w):
        for s in w.tables[table]:
            if s != EMPTY and slot_file(s) == f:
                n += 1
    for g in w.files:
        if g.kind == UNIX:
            n += g.rcvq.count(f)
    for e in objhash_entries(w):
        if e.objtype == OBJ_FILE and e.ptr == f:
            n += 1
    return n


def live_tables(w: World) -> list[int]:
    """Tables held by a task or by the objhash (get_files_struct)."""
    held = {t.table for t in w.tasks}
    for e in objhash_entries(w):
        if e.objtype == OBJ_FILE_TABLE:
            held.add(e.ptr)
    return sorted(held)


def table_users(w: World, table: int) -> int:
    """`files->count`: the tasks that hold the table, plus the objhash's grab."""
    n = sum(1 for t in w.tasks if t.table == table)
    n += sum(1 for e in objhash_entries(w) if e.objtype == OBJ_FILE_TABLE and e.ptr == table)
    return n


def sock_refcnt(w: World, f: int) -> int:
    """`sk_refcnt` of the socket behind unix file `f`: its file, its connected peer (unix_peer
    holds sock_hold), and the objhash's grab."""
    n = 1
    me = w.files[f]
    if any(g.kind == UNIX and g.obj == me.obj and i != f for i, g in enumerate(w.files)):
        n += 1
    n += sum(1 for e in objhash_entries(w) if e.objtype == OBJ_SOCK and e.ptr == f)
    return n


def tty_kref(w: World, obj: int, slave: int) -> int:
    """kref of one side of a pty pair: each file open on that side, the objhash's grab, and,
    for the slave, the master's link to it (a reading: the master owns the pair, so a fully
    contained pair balances; see the README)."""
    kind = PTS if slave else PTMX
    n = sum(1 for g in w.files if g.obj == obj and g.kind == kind)
    if slave and any(g.obj == obj and g.kind == PTMX for g in w.files):
        n += 1
    n += sum(1 for e in objhash_entries(w) if e.objtype == OBJ_TTY and e.ptr == obj * 2 + slave)
    return n


def ref_users(w: World, objtype: int, ptr: int) -> int | None:
    """The kernel's reference count of an objhash object, or None for types without
    `ref_users` (INODE), which the contained check never compares."""
    if objtype == OBJ_FILE:
        return f_count(w, ptr)
    if objtype == OBJ_FILE_TABLE:
        return table_users(w, ptr)
    if objtype == OBJ_SOCK:
        return sock_refcnt(w, ptr)
    if objtype == OBJ_TTY:
        return tty_kref(w, ptr >> 1, ptr & 1)
    if objtype == OBJ_INODE:
        return None
    raise ValueError(objtype)


# ---------------------------------------------------------------------------------------------
# Garbage collection and renaming


def _remap_cr(cr, fmap: dict[int, int], tmap: dict[int, int], omap: dict[int, int]):
    if not cr:
        return cr
    entries = []
    for e in cr.objhash:
        if e.objtype in (OBJ_FILE, OBJ_SOCK):
            ptr = fmap[e.ptr]
        elif e.objtype == OBJ_FILE_TABLE:
            ptr = tmap[e.ptr]
        elif e.objtype == OBJ_INODE:
            ptr = omap[e.ptr]
        else:  # TTY
            ptr = omap[e.ptr >> 1] * 2 + (e.ptr & 1)
        entries.append(e._replace(ptr=ptr))
    ghost = []
    for typ, ptr in cr.ghost:  # ghost entries hold no reference: drop the dead
        if typ in (OBJ_FILE, OBJ_SOCK):
            new = fmap.get(ptr, -1)
        elif typ == OBJ_FILE_TABLE:
            new = tmap.get(ptr, -1)
        elif typ == OBJ_INODE:
            new = omap.get(ptr, -1)
        else:
            o = omap.get(ptr >> 1, -1)
            new = -1 if o == -1 else o * 2 + (ptr & 1)
        if new != -1:
            ghost.append((typ, new))
    return cr._replace(objhash=tuple(entries), ghost=tuple(sorted(ghost)))


def _rename(
    w: World,
    tasks: list[Task],
    table_order: list[int],
    file_order: list[int],
    obj_order: list[int],
) -> World:
    """Rebuild `w` keeping only the listed tables/files/objs, numbered in the given order."""
    n_t, n_f = len(table_order), len(file_order)
    same_t = n_t == len(w.tables) and all(i == x for i, x in enumerate(table_order))
    same_f = n_f == len(w.files) and all(i == x for i, x in enumerate(file_order))
    same_o = all(i == x for i, x in enumerate(obj_order))
    if same_t and same_f and same_o:  # the common case: nothing released, nothing moved
        if all(a is b for a, b in zip(tasks, w.tasks, strict=True)):
            return w
        return World(tuple(tasks), w.tables, w.files, w.steps, w.cr)
    tmap = {old: new for new, old in enumerate(table_order)}
    fmap = {old: new for new, old in enumerate(file_order)}
    omap = {old: new for new, old in enumerate(obj_order)}
    omap[-1] = -1
    new_tasks = tuple(Task(t.inside, t.frozen, tmap[t.table]) for t in tasks)
    if same_f:
        new_tables = tuple(w.tables[old] for old in table_order)
    else:
        new_tables = tuple(
            tuple(s if s == EMPTY else slot(fmap[slot_file(s)], slot_cloexec(s))
                  for s in w.tables[old])
            for old in table_order
        )
    files = []
    for old in file_order:
        f = w.files[old]
        kind, path, obj, f_flags, f_mode, f_pos, owner, epitems, rcvq, sk_err = f
        if epitems and not same_f:
            epitems = tuple(sorted((fmap[t], fd) for t, fd in epitems if t in fmap))
        if rcvq and not same_f:
            rcvq = tuple([fmap[x] for x in rcvq])
        if obj != -1 and not same_o:
            obj = omap[obj]
        if obj is f.obj and epitems is f.epitems and rcvq is f.rcvq:
            files.append(f)
        else:
            files.append(
                File(kind, path, obj, f_flags, f_mode, f_pos, owner, epitems, rcvq, sk_err)
            )
    cr = w.cr
    if cr:
        cr = _remap_cr(cr, fmap, tmap, omap)
    return World(new_tasks, new_tables, tuple(files), w.steps, cr)


def _reachable(w: World) -> tuple[list[int], list[int], list[int]]:
    """Live tables, files and objects in first-encounter order: tables from tasks (in task
    order) then the objhash; files from table slots (ascending fd), then in-flight files of
    live sockets, then the objhash's; objects by their files."""
    tables: list[int] = []
    seen_t: set[int] = set()
    for t in w.tasks:
        if t.table not in seen_t:
            seen_t.add(t.table)
            tables.append(t.table)
    entries = objhash_entries(w)
    for e in entries:
        if e.objtype == OBJ_FILE_TABLE and e.ptr not in seen_t:
            seen_t.add(e.ptr)
            tables.append(e.ptr)
    files: list[int] = []
    seen_f: set[int] = set()
    for tb in tables:
        for s in w.tables[tb]:
            if s != EMPTY and slot_file(s) not in seen_f:
                seen_f.add(slot_file(s))
                files.append(slot_file(s))
    for e in entries:
        if e.objtype in (OBJ_FILE, OBJ_SOCK) and e.ptr not in seen_f:
            seen_f.add(e.ptr)
            files.append(e.ptr)
    # In-flight files are alive while the socket whose queue holds them is (a cycle of
    # sockets holding only each other is collected, as unix_gc would eventually do).
    i = 0
    while i < len(files):
        f = w.files[files[i]]
        for x in f.rcvq:
            if x not in seen_f:
                seen_f.add(x)
                files.append(x)
        i += 1
    objs: list[int] = []
    seen_o: set[int] = set()
    for fi in files:
        o = w.files[fi].obj
        if o != -1 and o not in seen_o:
            seen_o.add(o)
            objs.append(o)
    for e in entries:  # a pipe inode or tty grabbed by the objhash outlives its files
        if e.objtype == OBJ_INODE and e.ptr not in seen_o:
            seen_o.add(e.ptr)
            objs.append(e.ptr)
        elif e.objtype == OBJ_TTY and (e.ptr >> 1) not in seen_o:
            seen_o.add(e.ptr >> 1)
            objs.append(e.ptr >> 1)
    return tables, files, objs


def live_files(w: World) -> list[int]:
    """The files something still references (what `normalize` keeps), first encounter first."""
    return _reachable(w)[1]


def normalize(w: World) -> World:
    """Release what nothing references any more (fput of the last reference, epoll items of
    released targets, tables no task holds) and number the rest by first encounter."""
    tables, files, objs = _reachable(w)
    return _rename(w, list(w.tasks), tables, files, objs)


def _file_sig(f: File) -> tuple:
    return (f.kind, f.path, f.f_flags, f.f_mode, f.f_pos, f.owner, len(f.epitems), len(f.rcvq))


def canonical(w: World) -> World:
    """The representative of `w`'s class under renaming of tasks, tables, files and objects.

    Tasks are ordered by an id-free signature (ties keep their order, which can only cost
    reduction, never soundness); everything else is numbered by first encounter from there."""
    files = w.files
    tables = w.tables

    def sig(t: Task) -> tuple:
        slots = tables[t.table]
        return (
            t.inside,
            t.frozen,
            tuple((0,) if s == EMPTY else (1, slot_cloexec(s), _file_sig(files[slot_file(s)]))
                  for s in slots),
        )

    tasks = sorted(w.tasks, key=sig)
    w2 = World(tuple(tasks), w.tables, w.files, w.steps, w.cr)
    tables_o, files_o, objs_o = _reachable(w2)
    return _rename(w2, tasks, tables_o, files_o, objs_o)


# ---------------------------------------------------------------------------------------------
# Observable projection (what the live kernel shows; see crmodel/live/driver.py)


def _partition(groups: dict) -> list[list[list[int]]]:
    return sorted(sorted(g) for g in groups.values())


def project(w: World) -> dict:
    """Descriptors with F_GETFL, FD_CLOEXEC and offset per task; which descriptors share an
    open file; which tasks share a table; pipe/pty/socket pairing; epoll watch sets; kinds;
    per descriptor the READ/WRITE bits of f_mode, which path a regular file is, and how many
    messages a unix socket has in its queue. Not the F_SETOWN owner: F_GETOWN shows it only
    while the owner process lives, and the model keeps only whether one was set."""
    tasks = []
    fgroups: dict[int, list] = {}
    ogroups: dict[int, list] = {}
    tgroups: dict[int, list] = {}
    epoll: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    fmode: dict[str, int] = {}
    paths: dict[str, int] = {}
    inq: dict[str, int] = {}
    for ti, t in enumerate(w.tasks):
        tgroups.setdefault(t.table, []).append(ti)
        fds = {}
        for fd, s in enumerate(w.tables[t.table]):
            if s == EMPTY:
                continue
            f = w.files[slot_file(s)]
            fds[fd] = {"flags": f.f_flags, "cloexec": slot_cloexec(s), "pos": f.f_pos}
            fgroups.setdefault(slot_file(s), []).append([ti, fd])
            if f.kind in OBJ_KINDS:
                ogroups.setdefault(f.obj, []).append([ti, fd])
            if f.kind == EPOLL:
                epoll[f"{ti}:{fd}"] = sorted(fd2 for _, fd2 in f.epitems)
            key = f"{ti}:{fd}"
            kinds[key] = KIND_NAMES[f.kind]
            fmode[key] = f.f_mode & 3  # FMODE_READ | FMODE_WRITE
            if f.kind == REG:
                paths[key] = f.path
            elif f.kind == UNIX:
                inq[key] = len(f.rcvq)  # one byte per message
        tasks.append({"fds": fds})
    return {
        "tasks": tasks,
        "files": _partition(fgroups),
        "tables": sorted(sorted(g) for g in tgroups.values()),
        "objects": _partition(ogroups),
        "epoll": epoll,
        "kinds": kinds,
        "fmode": fmode,
        "paths": paths,
        "inq": inq,
    }


# ---------------------------------------------------------------------------------------------
# Observation: the id-free, hashable view of some tasks that restore must reproduce


def observe(w: World, task_ids: list[int]) -> tuple:
    """`(tasks, files)` for the given tasks, every internal id replaced by its first-encounter
    number: tasks = ((table_group, ((fd, cloexec, file_group), ...)), ...) and
    files = ((kind, f_flags, f_mode, f_pos, path, obj_group, epitems), ...) where epitems are
    (target file_group or -1 for a file outside these tasks, fd)."""
    tmap: dict[int, int] = {}
    fmap: dict[int, int] = {}
    tasks = []
    for ti in task_ids:
        t = w.tasks[ti]
        tg = tmap.setdefault(t.table, len(tmap))
        fds = []
        for fd, s in enumerate(w.tables[t.table]):
            if s != EMPTY:
                fds.append((fd, slot_cloexec(s), fmap.setdefault(slot_file(s), len(fmap))))
        tasks.append((tg, tuple(fds)))
    omap: dict[int, int] = {}
    files = []
    for fi in fmap:  # insertion order = first encounter
        f = w.files[fi]
        og = -1 if f.obj == -1 else omap.setdefault(f.obj, len(omap))
        items = tuple(sorted((fmap.get(tf, -1), fd) for tf, fd in f.epitems))
        files.append((f.kind, f.f_flags, f.f_mode, f.f_pos, f.path, og, items))
    return (tuple(tasks), tuple(files))


def held_files(w: World, inside: int) -> set[int]:
    """Files the inside (or outside) tasks hold: through their tables, and in flight in the
    queues of sockets they hold."""
    out: set[int] = set()
    todo = [
        slot_file(s)
        for t in w.tasks
        if t.inside == inside
        for s in w.tables[t.table]
        if s != EMPTY
    ]
    while todo:
        f = todo.pop()
        if f in out:
            continue
        out.add(f)
        todo.extend(w.files[f].rcvq)
    return out


def outside_refs(w: World) -> set[tuple[int, int]]:
    """Ground truth: the objhash objects `(objtype, ptr)` an outside task references — its
    tables, the files it holds, the sockets they are or are connected to, the pipe inodes
    and pty pairs they are on."""
    refs: set[tuple[int, int]] = {(OBJ_FILE_TABLE, t.table) for t in w.tasks if not t.inside}
    for f in held_files(w, 0):
        file = w.files[f]
        refs.add((OBJ_FILE, f))
        if file.kind == UNIX:
            refs.add((OBJ_SOCK, f))
            for i, g in enumerate(w.files):
                if i != f and g.kind == UNIX and g.obj == file.obj:
                    refs.add((OBJ_SOCK, i))
        elif file.kind in (PTMX, PTS):
            refs.add((OBJ_TTY, file.obj * 2))
            refs.add((OBJ_TTY, file.obj * 2 + 1))
        elif file.obj != -1:
            refs.add((OBJ_INODE, file.obj))
    return refs
