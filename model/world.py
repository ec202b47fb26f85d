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
    return file_counts(w)[f]


def file_counts(w: World, in_flight: bool = True) -> list[int]:
    """`f_count` of every file, in one pass over the references (without the in-flight
    SCM_RIGHTS ones if not `in_flight`)."""
    n = [0] * len(w.files)
    tables = w.tables
    for table in live_tables(w):
        for s in tables[table]:
            if s != EMPTY:
                n[s >> 1] += 1  # slot_file(s), inline: this loop runs at every contained check
    for g in w.files if in_flight else ():
        if g.rcvq and g.kind == UNIX:
            for x in g.rcvq:
                n[x] += 1
    for e in objhash_entries(w):
        if e.objtype == OBJ_FILE:
            n[e.ptr] += 1
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
    n = 0
    for t in w.tasks:
        if t.table == table:
            n += 1
    for e in objhash_entries(w):
        if e.ptr == table and e.objtype == OBJ_FILE_TABLE:
            n += 1
    return n


def sock_refcnt(w: World, f: int) -> int:
    """`sk_refcnt` of the socket behind unix file `f`: its file, its connected peer (unix_peer
    holds sock_hold), and the objhash's grab."""
    n = 1
    obj = w.files[f].obj
    for i, g in enumerate(w.files):
        if g.obj == obj and g.kind == UNIX and i != f:
            n += 1
            break
    for e in objhash_entries(w):
        if e.ptr == f and e.objtype == OBJ_SOCK:
            n += 1
    return n


def tty_kref(w: World, obj: int, slave: int) -> int:
    """kref of one side of a pty pair: each file open on that side, the objhash's grab, and,
    for the slave, the master's link to it (a reading: the master owns the pair, so a fully
    contained pair balances; see the README)."""
    kind = PTS if slave else PTMX
    n = 0
    master = False
    for g in w.files:
        if g.obj == obj:
            if g.kind == kind:
                n += 1
            if g.kind == PTMX:
                master = True
    if slave and master:
        n += 1
    ptr = obj * 2 + slave
    for e in objhash_entries(w):
        if e.ptr == ptr and e.objtype == OBJ_TTY:
            n += 1
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
        typ, ptr = e.objtype, e.ptr
        if typ == OBJ_FILE or typ == OBJ_SOCK:
            new = fmap[ptr]
        elif typ == OBJ_FILE_TABLE:
            new = tmap[ptr]
        elif typ == OBJ_INODE:
            new = omap[ptr]
        else:  # TTY
            new = omap[ptr >> 1] * 2 + (ptr & 1)
        entries.append(e if new == ptr else e._replace(ptr=new))
    ghost = []
    for typ, ptr in cr.ghost:  # ghost entries hold no reference: drop the dead
        if typ == OBJ_FILE or typ == OBJ_SOCK:
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
    ghost.sort()
    return cr._replace(objhash=tuple(entries), ghost=tuple(ghost))


_IDS = [list(range(n)) for n in range(33)]


def _is_identity(order: list[int]) -> bool:
    """`order` is 0, 1, ..., len - 1: no id moves."""
    n = len(order)
    return order == (_IDS[n] if n < len(_IDS) else list(range(n)))


def _rename(
    w: World,
    tasks: tuple[Task, ...],
    table_order: list[int],
    file_order: list[int],
    obj_order: list[int],
) -> World:
    """Rebuild `w` with `tasks` (its own, perhaps reordered), keeping only the listed
    tables/files/objs, numbered in the given order."""
    same_t = len(table_order) == len(w.tables) and _is_identity(table_order)
    same_f = len(file_order) == len(w.files) and _is_identity(file_order)
    same_o = _is_identity(obj_order)
    if same_t and same_f and same_o:  # the common case: nothing released, nothing moved
        if tasks == w.tasks:
            return w
        return World(tasks, w.tables, w.files, w.steps, w.cr)
    tmap = {old: new for new, old in enumerate(table_order)}
    fmap = {old: new for new, old in enumerate(file_order)}
    omap = {old: new for new, old in enumerate(obj_order)}
    omap[-1] = -1
    tables, files = w.tables, w.files
    if same_t:  # only files moved (or went): tasks and the tables' order stay
        new_tasks = tasks
    else:
        new_tasks = tuple([Task(t.inside, t.frozen, tmap[t.table]) for t in tasks])
    if not same_f:
        new_tables = tuple([
            tuple([s if s == EMPTY else slot(fmap[slot_file(s)], slot_cloexec(s))
                   for s in tables[old]])
            for old in table_order
        ])
    elif not same_t:
        new_tables = tuple([tables[old] for old in table_order])
    else:
        new_tables = tables
    if same_f and same_o:
        new_files = files
    else:
        out = []
        for old in file_order:
            f = files[old]
            if not same_f and (f.epitems or f.rcvq):
                f = f._replace(
                    epitems=tuple(sorted([(fmap[t], fd) for t, fd in f.epitems if t in fmap])),
                    rcvq=tuple([fmap[x] for x in f.rcvq]),
                )
            if not same_o and f.obj != -1 and omap[f.obj] != f.obj:
                f = f._replace(obj=omap[f.obj])
            out.append(f)
        new_files = tuple(out)
    cr = w.cr
    if cr:
        cr = _remap_cr(cr, fmap, tmap, omap)
    return World(new_tasks, new_tables, new_files, w.steps, cr)


def _reachable(
    w: World, tasks: tuple[Task, ...]
) -> tuple[list[int], list[int], list[int]]:
    """Live tables, files and objects in first-encounter order: tables from `tasks` (w's own,
    perhaps reordered; in that order) then the objhash; files from table slots (ascending
    fd), then the objhash's, then in-flight files of live sockets; objects by their files,
    then the objhash's. (Lists, not sets: they hold a handful of ids.)"""
    tables: list[int] = []
    for t in tasks:
        if t.table not in tables:
            tables.append(t.table)
    cr = w.cr
    entries = cr.objhash if cr else ()
    for e in entries:
        if e.objtype == OBJ_FILE_TABLE and e.ptr not in tables:
            tables.append(e.ptr)
    files: list[int] = []
    wt = w.tables
    for tb in tables:
        for s in wt[tb]:
            if s != EMPTY and slot_file(s) not in files:
                files.append(slot_file(s))
    for e in entries:
        if (e.objtype == OBJ_FILE or e.objtype == OBJ_SOCK) and e.ptr not in files:
            files.append(e.ptr)
    # In-flight files are alive while the socket whose queue holds them is (a cycle of
    # sockets holding only each other is collected, as unix_gc would eventually do).
    wf = w.files
    objs: list[int] = []
    for fi in files:  # grows as in-flight files are found: they are visited too
        f = wf[fi]
        for x in f.rcvq:
            if x not in files:
                files.append(x)
        o = f.obj
        if o != -1 and o not in objs:
            objs.append(o)
    for e in entries:  # a pipe inode or tty grabbed by the objhash outlives its files
        if e.objtype == OBJ_INODE:
            if e.ptr not in objs:
                objs.append(e.ptr)
        elif e.objtype == OBJ_TTY and (e.ptr >> 1) not in objs:
            objs.append(e.ptr >> 1)
    return tables, files, objs


def live_files(w: World) -> list[int]:
    """The files something still references (what `normalize` keeps), first encounter first."""
    return _reachable(w, w.tasks)[1]


def normalize(w: World) -> World:
    """Release what nothing references any more (fput of the last reference, epoll items of
    released targets, tables no task holds) and number the rest by first encounter."""
    if _in_order(w, w.tasks):
        return w
    tables, files, objs = _reachable(w, w.tasks)
    return _rename(w, w.tasks, tables, files, objs)


def _file_sig(f: File) -> tuple:
    return (f.kind, f.path, f.f_flags, f.f_mode, f.f_pos, f.owner, len(f.epitems), len(f.rcvq))


def _sig_less(a: Task, b: Task, tables: tuple, files: tuple[File, ...]) -> bool:
    """Whether `a`'s id-free signature sorts before `b`'s: (inside, frozen, then per slot
    (0,) when empty, else (1, close-on-exec, the file's signature)). Compared slot by slot,
    building a file's signature only where two slots name different files."""
    if a.inside != b.inside:
        return a.inside < b.inside
    if a.frozen != b.frozen:
        return a.frozen < b.frozen
    if a.table == b.table:
        return False
    ta, tb = tables[a.table], tables[b.table]
    for sa, sb in zip(ta, tb, strict=False):
        if sa == sb:
            continue
        if sa == EMPTY or sb == EMPTY:
            return sa == EMPTY
        if slot_cloexec(sa) != slot_cloexec(sb):
            return slot_cloexec(sa) < slot_cloexec(sb)
        ka, kb = _file_sig(files[slot_file(sa)]), _file_sig(files[slot_file(sb)])
        if ka != kb:
            return ka < kb
    return len(ta) < len(tb)


def _task_order(w: World) -> tuple[Task, ...]:
    """The tasks sorted, stably, by their id-free signature (`_sig_less`); `w.tasks` itself
    when already in order. Insertion sort: there are a handful of tasks."""
    tasks = w.tasks
    if len(tasks) < 2:
        return tasks
    tables, files = w.tables, w.files
    order = list(tasks)
    moved = False
    for i in range(1, len(order)):
        t = order[i]
        j = i
        while j and _sig_less(t, order[j - 1], tables, files):
            order[j] = order[j - 1]
            j -= 1
        if j != i:
            order[j] = t
            moved = True
    return tuple(order) if moved else tasks


def _in_order(w: World, tasks: tuple[Task, ...]) -> bool:
    """Whether numbering by first encounter from `tasks` (as `_reachable`) keeps every table,
    file and object where it is: nothing released, nothing moved. While that holds, the ids
    seen so far are exactly 0..n-1, so counting replaces the lists."""
    nt = 0
    for t in tasks:
        if t.table == nt:
            nt += 1
        elif t.table > nt:
            return False
    cr = w.cr
    entries = cr.objhash if cr else ()
    if entries:
        for e in entries:
            if e.objtype == OBJ_FILE_TABLE:
                if e.ptr == nt:
                    nt += 1
                elif e.ptr > nt:
                    return False
    tables = w.tables
    if nt != len(tables):
        return False
    nf = 0
    for table in tables:
        for s in table:
            # slot encoding inline (the hottest loop of the search): slots below
            # slot(nf, 0) are EMPTY or name a file met before
            if s >= nf << 1:
                if s >> 1 != nf:
                    return False
                nf += 1
    if entries:
        for e in entries:
            if e.objtype == OBJ_FILE or e.objtype == OBJ_SOCK:
                if e.ptr == nf:
                    nf += 1
                elif e.ptr > nf:
                    return False
    files = w.files
    no = 0
    if nf == len(files):  # every file met: in-flight ones are among them
        for f in files:
            if f.obj >= no:
                if f.obj != no:
                    return False
                no += 1
    else:
        i = 0
        while i < nf:  # nf grows as in-flight files are found
            if nf > len(files):
                return False
            f = files[i]
            for x in f.rcvq:
                if x == nf:
                    nf += 1
                elif x > nf:
                    return False
            if f.obj >= no:
                if f.obj != no:
                    return False
                no += 1
            i += 1
        if nf != len(files):
            return False
    for e in entries:
        o = e.ptr if e.objtype == OBJ_INODE else e.ptr >> 1 if e.objtype == OBJ_TTY else -1
        if o >= no:
            if o != no:
                return False
            no += 1
    return True


def canonical(w: World) -> World:
    """The representative of `w`'s class under renaming of tasks, tables, files and objects.

    Tasks are ordered by an id-free signature (ties keep their order, which can only cost
    reduction, never soundness); everything else is numbered by first encounter from there.
    Most successors of a representative are one already: that is checked by counting, and
    only a state where some id moves is renamed."""
    tasks = _task_order(w)
    if _in_order(w, tasks):
        return w if tasks is w.tasks else World(tasks, w.tables, w.files, w.steps, w.cr)
    tables_o, files_o, objs_o = _reachable(w, tasks)
    return _rename(w, tasks, tables_o, files_o, objs_o)


# ---------------------------------------------------------------------------------------------
# Observable projection (what the live kernel shows; see crmodel/live/driver.py)


def _partition(groups: dict) -> list[list[list[int]]]:
    return sorted(sorted(g) for g in groups.values())


def project(w: World) -> dict:
    """Descriptors with F_GETFL, FD_CLOEXEC and offset per task; which descriptors share an
    open file; which tasks share a table; pipe/pty/socket pairing; epoll watch sets; kinds;
    per descriptor the READ/WRITE bits of f_mode, which path a regular file is, whether the
    file has an F_SETOWN owner (the driver keeps exited tasks as zombies, so F_GETOWN still
    reads the owner), how many messages a unix socket has in its queue and which files are
    in flight there, in order: each named by its first descriptor ("task:fd"), or "~k" for
    the k-th file met that is in flight only (sockets in (task, fd) order, then
    breadth-first through the queues of sockets in flight), whose kind is in `adrift`."""
    tasks = []
    fgroups: dict[int, list] = {}
    ogroups: dict[int, list] = {}
    tgroups: dict[int, list] = {}
    epoll: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    fmode: dict[str, int] = {}
    paths: dict[str, int] = {}
    inq: dict[str, int] = {}
    owner: dict[str, int] = {}
    first: dict[int, str] = {}  # file -> the key of its first descriptor
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
            # a file whose name was unlinked: /proc/PID/fd/N reads "... (deleted)"
            kinds[key] = KIND_NAMES[f.kind] + (" (deleted)" if f.path < -1 else "")
            fmode[key] = f.f_mode & 3  # FMODE_READ | FMODE_WRITE
            first.setdefault(slot_file(s), key)
            if f.owner:
                owner[key] = 1
            if f.kind == REG:
                paths[key] = f.path
            elif f.kind == UNIX:
                inq[key] = len(f.rcvq)  # one byte per message
        tasks.append({"fds": fds})
    flight, adrift = _flight(w, first)
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
        "owner": owner,
        "flight": flight,
        "adrift": adrift,
    }


def _flight(w: World, first: dict[int, str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """`project`'s in-flight files: per unix socket descriptor, then per socket in flight
    only, the names of the files in its queue; and the kinds of the files in flight only."""
    names = dict(first)
    todo: list[int] = []

    def name(x: int) -> str:
        if x not in names:
            names[x] = f"~{len(todo)}"
            todo.append(x)
        return names[x]

    flight: dict[str, list[str]] = {}
    for ti, t in enumerate(w.tasks):
        for fd, s in enumerate(w.tables[t.table]):
            if s != EMPTY and w.files[slot_file(s)].kind == UNIX:
                flight[f"{ti}:{fd}"] = [name(x) for x in w.files[slot_file(s)].rcvq]
    adrift: dict[str, str] = {}
    j = 0
    while j < len(todo):
        f = w.files[todo[j]]
        adrift[f"~{j}"] = KIND_NAMES[f.kind] + (" (deleted)" if f.path < -1 else "")
        if f.kind == UNIX:
            flight[f"~{j}"] = [name(x) for x in f.rcvq]
        j += 1
    return flight, adrift


# ---------------------------------------------------------------------------------------------
# Observation: the id-free, hashable view of some tasks that restore must reproduce


def observed_files(w: World, task_ids: list[int]) -> list[int]:
    """The files an observation of these tasks covers, first encounter first: their
    descriptors (tasks in order, ascending fd), then the files in flight in the queues of
    those sockets (breadth-first, as a dump that saves SCM_RIGHTS messages meets them)."""
    order: dict[int, None] = {}
    for ti in task_ids:
        for s in w.tables[w.tasks[ti].table]:
            if s != EMPTY:
                order.setdefault(slot_file(s), None)
    files = list(order)
    i = 0
    while i < len(files):
        for x in w.files[files[i]].rcvq:
            if x not in order:
                order[x] = None
                files.append(x)
        i += 1
    return files


def observe(w: World, task_ids: list[int]) -> tuple:
    """`(tasks, files)` for the given tasks, every internal id replaced by its first-encounter
    number: tasks = ((table_group, ((fd, cloexec, file_group), ...)), ...) and
    files = ((kind, f_flags, f_mode, f_pos, path, obj_group, epitems, owner, rcvq), ...) where
    epitems are (target file_group or -1 for a file outside these tasks, fd) and rcvq the
    file_groups in flight in a socket's queue (`observed_files` gives the group order)."""
    tmap: dict[int, int] = {}
    fmap = {f: g for g, f in enumerate(observed_files(w, task_ids))}
    tasks = []
    for ti in task_ids:
        t = w.tasks[ti]
        tg = tmap.setdefault(t.table, len(tmap))
        fds = []
        for fd, s in enumerate(w.tables[t.table]):
            if s != EMPTY:
                fds.append((fd, slot_cloexec(s), fmap[slot_file(s)]))
        tasks.append((tg, tuple(fds)))
    omap: dict[int, int] = {}
    files = []
    for fi in fmap:  # insertion order = first encounter
        f = w.files[fi]
        og = -1 if f.obj == -1 else omap.setdefault(f.obj, len(omap))
        items = tuple(sorted((fmap.get(tf, -1), fd) for tf, fd in f.epitems))
        rcvq = tuple(fmap[x] for x in f.rcvq)
        files.append((f.kind, f.f_flags, f.f_mode, f.f_pos, f.path, og, items, f.owner, rcvq))
    return (tuple(tasks), tuple(files))


def held_files(w: World, inside: int) -> set[int]:
    """Files the inside (or outside) tasks hold: through their tables, and in flight in the
    queues of sockets they hold."""
    out: set[int] = set()
    tables = w.tables
    for t in w.tasks:
        if t.inside == inside:
            for s in tables[t.table]:
                if s != EMPTY:
                    out.add(slot_file(s))
    files = w.files
    todo = [f for f in out if files[f].rcvq]
    while todo:
        for x in files[todo.pop()].rcvq:
            if x not in out:
                out.add(x)
                todo.append(x)
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
