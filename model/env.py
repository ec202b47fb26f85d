"""Environment transitions: the syscalls tasks make (inside and outside the container alike).

Each `sys_*` is a pure function `(World, args...) -> (outcome, World)`; the outcome is what the
process would see: `("ok", value)` or `("err", "EBADF")`. A failing call returns the world
unchanged, except recvmsg's ECONNRESET, which consumes the pending error. `apply` dispatches
an action tuple `(name, task, *args)`; `env_actions` enumerates the actions a config enables
in a state. Semantics follow fs/fcntl.c, fs/file.c, fs/exec.c,
fs/eventpoll.c and net/unix as checked against the live kernel (tests/test_conformance.py).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from itertools import product
from typing import NamedTuple

from model.actions import ACTIONS
from model.config import Config
from model.flags import (
    FMODE_LSEEK,
    FMODE_READ,
    FMODE_WRITE,
    O_ASYNC,
    O_DIRECT,
    O_LARGEFILE,
    O_NONBLOCK,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    SETFL_MASK,
    acc_fmode,
)
from model.state import (
    EMPTY,
    EPOLL,
    PIPE_KINDS,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    TIMERFD,
    UNIX,
    File,
    Task,
    World,
    slot,
    slot_cloexec,
    slot_file,
    unlinked,
)
from model.world import live_files, normalize, table_users

Outcome = tuple
OK0: Outcome = ("ok", 0)

# ->fasync exists (F_SETFL can toggle O_ASYNC): pipes, ttys, sockets; not regular files on
# disk filesystems, eventpoll or timerfd.
HAS_FASYNC = frozenset(PIPE_KINDS | {PTMX, PTS, UNIX})
# FMODE_CAN_ODIRECT: F_SETFL O_DIRECT succeeds (ext4 regular files, and pipes: packet mode).
CAN_ODIRECT = frozenset(PIPE_KINDS | {REG})
# ->poll exists: epoll_ctl ADD accepts the file as a target (regular files: EPERM).
CAN_POLL = frozenset(PIPE_KINDS | {PTMX, PTS, UNIX, EPOLL, TIMERFD})


def err(name: str, w: World) -> tuple[Outcome, World]:
    return ("err", name), w


def _fd_file(w: World, t: int, fd: int) -> int:
    """The open file behind descriptor `fd` of task `t`, or -1 (EBADF)."""
    table = w.tables[w.tasks[t].table]
    if not 0 <= fd < len(table):
        return -1
    s = table[fd]
    return -1 if s == EMPTY else slot_file(s)


def _free_fds(table: tuple[int, ...], n: int) -> list[int]:
    """The `n` lowest free descriptors (fewer if the table is full)."""
    return [fd for fd, s in enumerate(table) if s == EMPTY][:n]


def _set_slots(w: World, t: int, updates: dict[int, int]) -> World:
    ti = w.tasks[t].table
    table = list(w.tables[ti])
    for fd, s in updates.items():
        table[fd] = s
    tables = w.tables[:ti] + (tuple(table),) + w.tables[ti + 1 :]
    return w._replace(tables=tables)


def _set_file(w: World, f: int, new: File) -> World:
    return w._replace(files=w.files[:f] + (new,) + w.files[f + 1 :])


def _hung_up(w: World, obj: int) -> bool:
    """A pty whose master is gone: pty_close() of the master's last file hung up the slave."""
    return not any(g.kind == PTMX and g.obj == obj for g in w.files)


def _release(w: World) -> World:
    """`normalize` (fput of what lost its last reference), with what the release of two kinds
    does to the files that survive it (both seen on 6.18 by tests/test_conformance.py):

    - a pty master: pty_close() -> tty_vhangup(slave) -> __tty_hangup() runs
      __tty_fasync(-1, filp, 0) on every file open on the slave (in a table or in flight),
      and fasync_remove_entry() clears FASYNC from its f_flags;
    - a unix stream socket with unread messages: unix_release_sock() sets
      `sk_err = ECONNRESET` on its peer, which the peer's next recvmsg on an empty queue
      returns (once)."""
    if not any(f.kind == PTMX or f.rcvq for f in w.files):
        return normalize(w)  # the common case: nothing whose release touches other files
    live = live_files(w)
    if len(live) == len(w.files):
        return normalize(w)  # nothing released (tables may still go)
    gone = set(range(len(w.files))) - set(live)
    files = list(w.files)
    for x in gone:
        f = w.files[x]
        if f.kind == PTMX:
            for i in live:
                g = files[i]
                if g.kind == PTS and g.obj == f.obj and g.f_flags & O_ASYNC:
                    files[i] = g._replace(f_flags=g.f_flags & ~O_ASYNC)
        elif f.kind == UNIX and f.rcvq:
            for i in live:
                g = files[i]
                if g.kind == UNIX and g.obj == f.obj and not g.sk_err:
                    files[i] = g._replace(sk_err=1)
    return normalize(w._replace(files=tuple(files)))


def _new_obj(w: World) -> int:
    return max((f.obj for f in w.files), default=-1) + 1


def _install_new(w: World, t: int, new_files: list[File]) -> tuple[Outcome, World]:
    """Create open files and install them at the lowest free descriptors, close-on-exec clear
    (the C calls without O_CLOEXEC); EMFILE, changing nothing, when they do not all fit."""
    table = w.tables[w.tasks[t].table]
    fds = _free_fds(table, len(new_files))
    if len(fds) < len(new_files):
        return err("EMFILE", w)
    base = len(w.files)
    w = w._replace(files=w.files + tuple(new_files))
    w = _set_slots(w, t, {fd: (base + i) * 2 for i, fd in enumerate(fds)})
    return ("ok", fds[0] if len(fds) == 1 else tuple(fds)), w


# --- descriptors ---------------------------------------------------------------------------


def sys_open(
    w: World, t: int, path: int, acc: int, flags: int, cloexec: int
) -> tuple[Outcome, World]:
    """open(path, acc | flags): a new open file at the lowest free descriptor. The kernel forces
    O_LARGEFILE on 64-bit; status flags are kept as given (even O_ASYNC, with no fasync)."""
    fmode = acc_fmode(acc) | FMODE_LSEEK
    f = File(REG, path, -1, acc | flags | O_LARGEFILE, fmode, 0, 0)
    out, w2 = _install_new(w, t, [f])
    if out[0] == "ok" and cloexec:
        w2 = _set_slots(w2, t, {out[1]: w2.tables[w2.tasks[t].table][out[1]] | 1})
    return out, w2


def sys_close(w: World, t: int, fd: int) -> tuple[Outcome, World]:
    if _fd_file(w, t, fd) < 0:
        return err("EBADF", w)
    return OK0, _release(_set_slots(w, t, {fd: EMPTY}))


def sys_dup(w: World, t: int, fd: int) -> tuple[Outcome, World]:
    """dup: the lowest free descriptor shares the open file; FD_CLOEXEC clear on it."""
    f = _fd_file(w, t, fd)
    if f < 0:
        return err("EBADF", w)
    free = _free_fds(w.tables[w.tasks[t].table], 1)
    if not free:
        return err("EMFILE", w)
    return ("ok", free[0]), _set_slots(w, t, {free[0]: f * 2})


def sys_dup2(w: World, t: int, fd: int, newfd: int) -> tuple[Outcome, World]:
    """dup2: onto itself returns newfd and changes nothing; else closes newfd and shares."""
    f = _fd_file(w, t, fd)
    table = w.tables[w.tasks[t].table]
    if f < 0 or not 0 <= newfd < len(table):
        return err("EBADF", w)
    if fd == newfd:
        return ("ok", newfd), w
    return ("ok", newfd), _release(_set_slots(w, t, {newfd: f * 2}))


def setfl_file(f: File, arg: int) -> tuple[int, File]:
    """fs/fcntl.c setfl() on one open file: (errno or 0, the file after)."""
    if arg & O_DIRECT and f.kind not in CAN_ODIRECT:
        return errno.EINVAL, f
    flags = f.f_flags
    if (arg ^ flags) & O_ASYNC and f.kind in HAS_FASYNC:
        flags ^= O_ASYNC
    flags = (arg & SETFL_MASK) | (flags & ~SETFL_MASK)
    return 0, (f if flags == f.f_flags else f._replace(f_flags=flags))


def sys_setfl(w: World, t: int, fd: int, arg: int) -> tuple[Outcome, World]:
    """fcntl F_SETFL: only O_APPEND|O_NONBLOCK|O_DIRECT|O_NOATIME change directly; O_ASYNC
    only through ->fasync, which fails with ENOTTY on a hung-up pty slave and, turning
    O_ASYNC on for a pty end, gives the file an owner; the access mode and every other bit
    are ignored."""
    fi = _fd_file(w, t, fd)
    if fi < 0:
        return err("EBADF", w)
    code, f = setfl_file(w.files[fi], arg)
    old = w.files[fi]
    if not code and old.kind == PTS and (arg ^ old.f_flags) & O_ASYNC and _hung_up(w, old.obj):
        code = errno.ENOTTY  # tty_fasync() on a hung-up tty (after the O_DIRECT check)
    if code:
        return err(errno.errorcode[code], w)
    if old.kind in (PTMX, PTS) and f.f_flags & ~old.f_flags & O_ASYNC and not f.owner:
        f = f._replace(owner=1)  # tty_fasync(on) makes the caller the owner (__f_setown)
    if f is w.files[fi]:
        return OK0, w
    return OK0, _set_file(w, fi, f)


def sys_setfd(w: World, t: int, fd: int, cloexec: int) -> tuple[Outcome, World]:
    """fcntl F_SETFD: close-on-exec is a bit of the descriptor, not of the open file."""
    fi = _fd_file(w, t, fd)
    if fi < 0:
        return err("EBADF", w)
    return OK0, _set_slots(w, t, {fd: slot(fi, 1 if cloexec else 0)})


def sys_setown(w: World, t: int, fd: int) -> tuple[Outcome, World]:
    fi = _fd_file(w, t, fd)
    if fi < 0:
        return err("EBADF", w)
    f = w.files[fi]
    return OK0, (w if f.owner else _set_file(w, fi, f._replace(owner=1)))


def sys_lseek(w: World, t: int, fd: int, pos: int) -> tuple[Outcome, World]:
    fi = _fd_file(w, t, fd)
    if fi < 0:
        return err("EBADF", w)
    f = w.files[fi]
    if not f.f_mode & FMODE_LSEEK:
        if f.kind in (TIMERFD, EPOLL):  # noop_llseek: succeeds, the offset stays
            return ("ok", f.f_pos), w
        return err("ESPIPE", w)
    return ("ok", pos), _set_file(w, fi, f._replace(f_pos=pos))


# --- tasks ---------------------------------------------------------------------------------


def sys_fork(w: World, t: int, inside: int) -> tuple[Outcome, World]:
    """fork: the child gets a copy of the table (every open file gains a reference, the
    close-on-exec bits are copied). `inside` says whether the child is in the container."""
    parent = w.tasks[t]
    tables = w.tables + (w.tables[parent.table],)
    child = Task(inside, 0, len(w.tables))
    return ("ok", len(w.tasks)), w._replace(tasks=w.tasks + (child,), tables=tables)


def sys_clone_files(w: World, t: int, inside: int) -> tuple[Outcome, World]:
    """clone(CLONE_FILES): the child shares the parent's table (files->count + 1)."""
    child = Task(inside, 0, w.tasks[t].table)
    return ("ok", len(w.tasks)), w._replace(tasks=w.tasks + (child,))


def sys_exec(w: World, t: int) -> tuple[Outcome, World]:
    """execve: unshare the table if anyone else holds it (files->count > 1), then close the
    close-on-exec descriptors of the (now private) table."""
    task = w.tasks[t]
    table = w.tables[task.table]
    if table_users(w, task.table) > 1:
        w = w._replace(
            tables=w.tables + (table,),
            tasks=w.tasks[:t] + (task._replace(table=len(w.tables)),) + w.tasks[t + 1 :],
        )
    closed = {fd: EMPTY for fd, s in enumerate(table) if s != EMPTY and slot_cloexec(s)}
    return OK0, _release(_set_slots(w, t, closed))


def sys_exit(w: World, t: int) -> tuple[Outcome, World]:
    return OK0, _release(w._replace(tasks=w.tasks[:t] + w.tasks[t + 1 :]))


# --- objects -------------------------------------------------------------------------------


def sys_pipe(w: World, t: int) -> tuple[Outcome, World]:
    o = _new_obj(w)
    r = File(PIPE_R, -1, o, O_RDONLY, FMODE_READ, 0, 0)
    wr = File(PIPE_W, -1, o, O_WRONLY, FMODE_WRITE, 0, 0)
    return _install_new(w, t, [r, wr])


def sys_openpty(w: World, t: int) -> tuple[Outcome, World]:
    """openpty: the master from open("/dev/ptmx") has O_LARGEFILE; glibc opens the slave with
    ioctl(TIOCGPTPEER), which does not add it."""
    o = _new_obj(w)
    rw = FMODE_READ | FMODE_WRITE
    m = File(PTMX, -1, o, O_RDWR | O_LARGEFILE, rw, 0, 0)
    s = File(PTS, -1, o, O_RDWR, rw, 0, 0)
    return _install_new(w, t, [m, s])


def sys_socketpair(w: World, t: int) -> tuple[Outcome, World]:
    o = _new_obj(w)
    rw = FMODE_READ | FMODE_WRITE
    return _install_new(w, t, [File(UNIX, -1, o, O_RDWR, rw, 0, 0)] * 2)


def sys_epoll_create(w: World, t: int) -> tuple[Outcome, World]:
    return _install_new(w, t, [File(EPOLL, -1, -1, O_RDWR, FMODE_READ | FMODE_WRITE, 0, 0)])


def sys_timerfd(w: World, t: int) -> tuple[Outcome, World]:
    return _install_new(w, t, [File(TIMERFD, -1, -1, O_RDWR, FMODE_READ | FMODE_WRITE, 0, 0)])


def _watches(w: World, ep: int, target: int) -> bool:
    """Whether epoll file `ep` watches `target`, directly or through nested epolls."""
    todo, seen = [ep], set()
    while todo:
        e = todo.pop()
        if e in seen:
            continue
        seen.add(e)
        for tf, _ in w.files[e].epitems:
            if tf == target:
                return True
            if w.files[tf].kind == EPOLL:
                todo.append(tf)
    return False


def sys_epoll_add(w: World, t: int, epfd: int, fd: int) -> tuple[Outcome, World]:
    """epoll_ctl ADD: an item keyed by (file, fd); it holds no reference on the file."""
    ep, tf = _fd_file(w, t, epfd), _fd_file(w, t, fd)
    if ep < 0 or tf < 0:
        return err("EBADF", w)
    if w.files[tf].kind not in CAN_POLL:
        return err("EPERM", w)
    if w.files[ep].kind != EPOLL or ep == tf:
        return err("EINVAL", w)
    e = w.files[ep]
    if (tf, fd) in e.epitems:
        return err("EEXIST", w)
    if w.files[tf].kind == EPOLL and _watches(w, tf, ep):
        return err("ELOOP", w)
    return OK0, _set_file(w, ep, e._replace(epitems=tuple(sorted(e.epitems + ((tf, fd),)))))


def sys_epoll_del(w: World, t: int, epfd: int, fd: int) -> tuple[Outcome, World]:
    """epoll_ctl DEL: do_epoll_ctl checks the target's ->poll (EPERM) before the op, as ADD."""
    ep, tf = _fd_file(w, t, epfd), _fd_file(w, t, fd)
    if ep < 0 or tf < 0:
        return err("EBADF", w)
    if w.files[tf].kind not in CAN_POLL:
        return err("EPERM", w)
    if w.files[ep].kind != EPOLL or ep == tf:
        return err("EINVAL", w)
    e = w.files[ep]
    if (tf, fd) not in e.epitems:
        return err("ENOENT", w)
    return OK0, _set_file(w, ep, e._replace(epitems=tuple(i for i in e.epitems if i != (tf, fd))))


def _peer(w: World, f: int) -> int:
    o = w.files[f].obj
    for i, g in enumerate(w.files):
        if i != f and g.kind == UNIX and g.obj == o:
            return i
    return -1


def sys_sendmsg(w: World, t: int, sockfd: int, fd: int) -> tuple[Outcome, World]:
    """sendmsg with SCM_RIGHTS [fd]: the file, with a reference, joins the peer's queue."""
    s, f = _fd_file(w, t, sockfd), _fd_file(w, t, fd)
    if s < 0:
        return err("EBADF", w)
    if w.files[s].kind != UNIX:
        return err("ENOTSOCK", w)
    if f < 0:
        return err("EBADF", w)
    p = _peer(w, s)
    if p < 0:
        return err("EPIPE", w)
    peer = w.files[p]
    return ("ok", 1), _set_file(w, p, peer._replace(rcvq=peer.rcvq + (f,)))


def sys_recvmsg(w: World, t: int, sockfd: int) -> tuple[Outcome, World]:
    """recvmsg: the first queued message's file is installed at the lowest free descriptor
    (close-on-exec clear); with a full table it is dropped and MSG_CTRUNC set. On an empty
    queue: a pending ECONNRESET (see `_release`), else end of stream if the peer is gone,
    else EAGAIN."""
    s = _fd_file(w, t, sockfd)
    if s < 0:
        return err("EBADF", w)
    sock = w.files[s]
    if sock.kind != UNIX:
        return err("ENOTSOCK", w)
    if not sock.rcvq:
        if sock.sk_err:  # sock_error() comes first and clears it: a failing call that changes
            return ("err", "ECONNRESET"), _set_file(w, s, sock._replace(sk_err=0))
        return (("ok", ("eof",)), w) if _peer(w, s) < 0 else err("EAGAIN", w)
    f, rest = sock.rcvq[0], sock.rcvq[1:]
    w = _set_file(w, s, sock._replace(rcvq=rest))
    free = _free_fds(w.tables[w.tasks[t].table], 1)
    if not free:
        return ("ok", ("ctrunc",)), _release(w)
    return ("ok", (free[0],)), _set_slots(w, t, {free[0]: f * 2})


# --- names: FIFOs and unlink ----------------------------------------------------------------

PIPE_OF_ACC = {O_RDONLY: PIPE_R, O_WRONLY: PIPE_W, O_RDWR: PIPE_RW}


def _fifo_obj(w: World, k: int) -> int:
    """The pipe of FIFO q<k> while a file is open on it (the inode's pipe_inode_info goes
    with its last file), else -1."""
    return next((f.obj for f in w.files if f.kind in PIPE_KINDS and f.path == k), -1)


def _fifo_wait(w: World, obj: int, acc: int, nonblock: int) -> str:
    """fs/pipe.c fifo_open on a FIFO: "" when the open succeeds at once; "ENXIO" for a
    non-blocking writer with no reader; "BLOCKS" when it would wait for a partner (a reader
    without writers, a writer without readers, both blocking)."""
    ends = [f.kind for f in w.files if obj >= 0 and f.obj == obj]
    readers = any(k in (PIPE_R, PIPE_RW) for k in ends)
    writers = any(k in (PIPE_W, PIPE_RW) for k in ends)
    if acc == O_RDONLY and not writers and not nonblock:
        return "BLOCKS"
    if acc == O_WRONLY and not readers:
        return "ENXIO" if nonblock else "BLOCKS"
    return ""


def sys_open_fifo(w: World, t: int, k: int, acc: int, flags: int) -> tuple[Outcome, World]:
    """open("q<k>", acc | flags) of a named pipe: a pipe end with the name, on the FIFO's
    pipe (a new one when no file is open on it); O_LARGEFILE added as for any open."""
    o = _fifo_obj(w, k)
    why = _fifo_wait(w, o, acc, flags & O_NONBLOCK)
    if why:
        return err(why, w)
    f = File(PIPE_OF_ACC[acc], k, o if o >= 0 else _new_obj(w), acc | flags | O_LARGEFILE,
             acc_fmode(acc), 0, 0)
    return _install_new(w, t, [f])


def sys_unlink(w: World, t: int, fifo: int, p: int) -> tuple[Outcome, World]:
    """unlink("f<p>") (`fifo` 0) or unlink("q<p>") (1), then the name made again (an empty
    file, a new FIFO): the files open on the old inode keep it, nameless (`unlinked`)."""
    def on_name(f: File) -> bool:
        return f.path == p and (f.kind in PIPE_KINDS if fifo else f.kind == REG)

    if not any(on_name(f) for f in w.files):
        return OK0, w
    gone = unlinked(p)
    return OK0, w._replace(files=tuple(f._replace(path=gone) if on_name(f) else f
                                       for f in w.files))


def sys_reopen(w: World, t: int, target: int, fd: int, acc: int) -> tuple[Outcome, World]:
    """open("/proc/<target>/fd/<fd>", acc): a NEW open file on the same object (offset 0, flags
    from this open, O_LARGEFILE added); how sharing with an outsider arises without fork."""
    f = _fd_file(w, target, fd)
    if f < 0:
        return err("ENOENT", w)
    src = w.files[f]
    fmode = acc_fmode(acc)
    if src.kind == REG:
        new = File(REG, src.path, -1, acc | O_LARGEFILE, fmode | FMODE_LSEEK, 0, 0)
    elif src.kind in PIPE_KINDS:
        # a FIFO's inode (named, or unlinked) opens as a FIFO: it may wait for a partner;
        # a pipefs pipe's never does
        why = _fifo_wait(w, src.obj, acc, 0) if src.path != -1 else ""
        if why:
            return err(why, w)
        new = File(PIPE_OF_ACC[acc], src.path, src.obj, acc | O_LARGEFILE, fmode, 0, 0)
    elif src.kind == PTS:
        if not any(g.kind == PTMX and g.obj == src.obj for g in w.files):
            return err("EIO", w)  # the master is closed: the pty is hung up
        new = File(PTS, -1, src.obj, acc | O_LARGEFILE, fmode, 0, 0)
    elif src.kind == PTMX:  # the path is /dev/ptmx: opening it makes a NEW pty
        new = File(PTMX, -1, _new_obj(w), acc | O_LARGEFILE, fmode, 0, 0)
    else:  # anon inodes (epoll, timerfd) and sockets cannot be opened through /proc
        return err("ENXIO", w)
    return _install_new(w, t, [new])


REOPENABLE = frozenset(PIPE_KINDS | {REG, PTS, PTMX})

SYSCALLS = {
    "open": sys_open,
    "close": sys_close,
    "dup": sys_dup,
    "dup2": sys_dup2,
    "setfl": sys_setfl,
    "setfd": sys_setfd,
    "setown": sys_setown,
    "lseek": sys_lseek,
    "fork": sys_fork,
    "clone_files": sys_clone_files,
    "exec": sys_exec,
    "exit": sys_exit,
    "reopen": sys_reopen,
    "pipe": sys_pipe,
    "openpty": sys_openpty,
    "epoll_create": sys_epoll_create,
    "epoll_add": sys_epoll_add,
    "epoll_del": sys_epoll_del,
    "socketpair": sys_socketpair,
    "sendmsg": sys_sendmsg,
    "recvmsg": sys_recvmsg,
    "timerfd": sys_timerfd,
    "open_fifo": sys_open_fifo,
    "unlink": sys_unlink,
}


def apply(w: World, action: tuple) -> tuple[Outcome, World]:
    """Perform an environment action `(name, task, *args)`."""
    name, t, *args = action
    if not 0 <= t < len(w.tasks):
        raise ValueError(f"{name}: no task {t}")
    return SYSCALLS[name](w, t, *args)


class _Offer:
    """What the enumeration reads of one task in one state (and, per descriptor, of its
    file): computed once per task, shared by every action."""

    __slots__ = ("w", "cfg", "t", "task", "table", "fds", "nfree", "files", "fd", "s", "f",
                 "inside", "outside")

    def __init__(self, w: World, cfg: Config, t: int) -> None:
        self.w, self.cfg, self.t = w, cfg, t
        self.task = w.tasks[t]
        self.table = w.tables[self.task.table]
        self.fds = [fd for fd, s in enumerate(self.table) if s != EMPTY]
        self.nfree = len(self.table) - len(self.fds)
        self.files = w.files
        self.inside = sum(1 for x in w.tasks if x.inside)
        self.outside = len(w.tasks) - self.inside

    def at(self, fd: int) -> None:
        self.fd, self.s = fd, self.table[fd]
        self.f = self.files[slot_file(self.s)]


def _target_fds(o: _Offer, args: tuple) -> list[int]:
    """The open descriptors of task args[0] (reopen's t2)."""
    return [fd for fd, s in enumerate(o.w.tables[o.w.tasks[args[0]].table]) if s != EMPTY]


def _watched_fds(o: _Offer, args: tuple) -> list[int]:
    """The epoll's items whose descriptor still refers to the item's file, in item order."""
    table = o.table
    return [fd2 for tf, fd2 in o.f.epitems
            if fd2 < len(table) and table[fd2] != EMPTY and slot_file(table[fd2]) == tf]


# The values of each parameter domain (model.actions.DOMAINS) in a state, given the arguments
# chosen before it.
_VALUES: dict[str, Callable[[_Offer, tuple], Sequence[int]]] = {
    "fd": lambda o, args: o.fds,
    "fd_number": lambda o, args: range(len(o.table)),
    "task": lambda o, args: range(len(o.w.tasks)),
    "target_fd": _target_fds,
    "watched_fd": _watched_fds,
    "paths": lambda o, args: range(o.cfg.paths),
    "access_modes": lambda o, args: o.cfg.access_modes,
    "open_flags": lambda o, args: o.cfg.open_flags,
    "open_cloexec": lambda o, args: (0, 1) if o.cfg.open_cloexec else (0,),
    "setfl_flags": lambda o, args: o.cfg.setfl_flags,
    "offsets": lambda o, args: range(o.cfg.offsets),
    "bit": lambda o, args: (0, 1),
}
_DEPENDENT = {"target_fd"}  # domains that read an earlier argument


# When an action may change the state (a call that can only fail is no step): a test on the
# acting task (and for a per-descriptor action on the descriptor's file) and, where values of
# its domains cannot be steps, a test on the arguments.
_WHEN: dict[str, Callable[[_Offer], bool]] = {
    "open": lambda o: o.nfree > 0,
    "dup": lambda o: o.nfree > 0,
    "setown": lambda o: not o.f.owner,
    "lseek": lambda o: bool(o.f.f_mode & FMODE_LSEEK),
    "epoll_add": lambda o: o.f.kind == EPOLL,
    "epoll_del": lambda o: o.f.kind == EPOLL,
    "sendmsg": lambda o: o.f.kind == UNIX,
    "recvmsg": lambda o: o.f.kind == UNIX and bool(o.f.rcvq or o.f.sk_err),
    "reopen": lambda o: o.nfree > 0,
    "pipe": lambda o: o.nfree >= 2,
    "openpty": lambda o: o.nfree >= 2,
    "socketpair": lambda o: o.nfree >= 2,
    "epoll_create": lambda o: o.nfree > 0,
    "timerfd": lambda o: o.nfree > 0,
    "open_fifo": lambda o: o.nfree > 0,
}


def _room(o: _Offer, ch_in: int) -> bool:
    """A child inside needs room inside; outside, room outside, and an outside parent
    (inside tasks make inside children)."""
    if ch_in:
        return o.inside < o.cfg.inside_tasks
    return not o.task.inside and o.outside < o.cfg.outside_tasks


_KEEP: dict[str, Callable[[_Offer, tuple], bool]] = {
    "dup2": lambda o, a: a[1] != a[0],
    "setfd": lambda o, a: a[1] != slot_cloexec(o.s),
    "lseek": lambda o, a: a[1] != o.f.f_pos,
    "epoll_add": lambda o, a: a[1] != a[0]
    and o.files[slot_file(o.table[a[1]])].kind in CAN_POLL,
    "reopen": lambda o, a: o.files[_fd_file(o.w, a[0], a[1])].kind in REOPENABLE,
    "fork": lambda o, a: _room(o, a[0]),
    "clone_files": lambda o, a: _room(o, a[0]),
    "unlink": lambda o, a: any(f.path == a[1] and (f.kind in PIPE_KINDS if a[0] else f.kind == REG)
                               for f in o.files),
}


class _Rule(NamedTuple):
    """One declared action as the enumeration runs it (built once per set of enabled
    actions): its tests, and the domains of the parameters after the descriptor."""

    name: str
    when: Callable[[_Offer], bool] | None
    keep: Callable[[_Offer, tuple], bool] | None
    rest: tuple[Callable[[_Offer, tuple], Sequence[int]], ...]  # the later parameters' values
    independent: bool  # no domain depends on an earlier argument: a plain product


def _choices(o: _Offer, vals: tuple[Callable[[_Offer, tuple], Sequence[int]], ...],
             args: tuple) -> Iterator[tuple]:
    if not vals:
        yield args
        return
    for x in vals[0](o, args):
        yield from _choices(o, vals[1:], args + (x,))


def _offers(o: _Offer, r: _Rule, first: tuple) -> Iterator[tuple]:
    """The action's tuples with `first` as their leading arguments, in domain order."""
    combos = (product(*[v(o, first) for v in r.rest]) if r.independent
              else (c[len(first):] for c in _choices(o, r.rest, first)))
    keep, head = r.keep, (r.name, o.t) + first
    for combo in combos:
        if keep is None or keep(o, first + combo):
            yield head + combo


@lru_cache(maxsize=64)
def _plan(on: frozenset[str]) -> tuple[tuple[bool, tuple[_Rule, ...]], ...]:
    """The enabled declarations in enumeration order, consecutive per-descriptor actions
    grouped: those are offered descriptor by descriptor."""
    groups: list[tuple[bool, tuple[_Rule, ...]]] = []
    for a in ACTIONS.values():
        if a.name not in on:
            continue
        rest = tuple(p.domain for p in a.params[1 if a.per_fd else 0:])
        r = _Rule(a.name, _WHEN.get(a.name), _KEEP.get(a.name),
                  tuple(_VALUES[d] for d in rest), not set(rest) & _DEPENDENT)
        if groups and groups[-1][0] == a.per_fd:
            groups[-1] = (a.per_fd, groups[-1][1] + (r,))
        else:
            groups.append((a.per_fd, (r,)))
    return tuple(groups)


def env_actions(w: World, cfg: Config, t: int, on: frozenset[str]) -> Iterator[tuple]:
    """The actions task `t` can take that may change the state (calls that can only fail
    are left out: they are not steps), in the order of their declarations
    (`model.actions.ACTIONS`), descriptor by descriptor for the per-descriptor ones. `on` is
    the set of enabled action names."""
    o = _Offer(w, cfg, t)
    for per_fd, rules in _plan(on):
        for fd in o.fds if per_fd else (None,):
            first: tuple = ()
            if fd is not None:
                o.at(fd)
                first = (fd,)
            for r in rules:
                if r.when is not None and not r.when(o):
                    continue
                keep = r.keep
                if not r.rest:
                    if keep is None or keep(o, first):
                        yield (r.name, t, *first)
                elif len(r.rest) == 1:  # most actions: inline, no generator of its own
                    head = (r.name, t, *first)
                    for x in r.rest[0](o, first):
                        if keep is None or keep(o, (*first, x)):
                            yield (*head, x)
                else:
                    yield from _offers(o, r, first)


def initial_world(max_fds: int) -> World:
    """One outside task with an empty fd table: the container is made by it forking or
    cloning a task into it, which is also how sharing across the boundary arises."""
    return World((Task(0, 0, 0),), ((EMPTY,) * max_fds,), (), 0)
