"""An executable restorer: rebuild a model image's fd tables in fresh real processes with the
design's own restart steps, then read them back.

Per file record: open by path (a regular file, a pty slave `/dev/pts/N`, the master
`/dev/ptmx`) or recreate the object (pipe2, socketpair, epoll_create1), the partner end kept
aside for the record that names it; `F_SETFL(f_flags & CKPT_SETFL_MASK)`; the f_mode rule
(a mode may be downgraded, never upgraded); lseek when the file can seek. Per fd record:
install at the saved number (dup2 from where the file was made, pidfd_getfd when another
task made it) and `F_SETFD` as the record says. A task whose table objref is known shares it
(clone with CLONE_FILES); a new table is a fork whose descriptors are all closed first.
Epoll items are added under their saved fd number by a short-lived fork of the epoll's holder
(an item is keyed by file and number, and outlives the fork's copy of the descriptors).

A message in flight (CRIU's queue record) is sent again from the socket's peer with the file
it carries. A named pipe is opened by its name (a read-write opener first, so that no end waits); a
regular file or FIFO that was unlinked is made anew under its old name, opened and unlinked
at once, so it comes back nameless.

Where the variant restores O_LARGEFILE as saved (`restore_largefile`, done in-kernel by the
design), user space has two ways to open a pty slave: by path, which adds O_LARGEFILE, and
ioctl(TIOCGPTPEER), which does not; a pipe end that was reopened through /proc (and so has
O_LARGEFILE) is reopened the same way. Files are made at descriptors 100 and up ("parked"),
outside the model's range 0..63, and stay there until the processes go.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from crmodel.live import driver
from crmodel.live import scan as live_scan
from model.flags import (
    CKPT_SETFL_MASK,
    FMODE_LSEEK,
    FMODE_READ,
    FMODE_WRITE,
    O_ACCMODE,
    O_LARGEFILE,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    acc_fmode,
)
from model.image import OPEN_ONLY_FLAGS, R_EPITEM, R_FD, R_FILE, R_QUEUE, R_TABLE, R_TASK
from model.state import EPOLL, PIPE_KINDS, PIPE_R, PIPE_RW, PIPE_W, PTMX, PTS, REG, TIMERFD, UNIX
from model.variants import Variant
from model.world import observe

PARK = 100  # files are made at descriptors from here (beyond the model's 0..63)
F_DUPFD = 0
F_GETFL = 3
F_SETFL = 4
F_SETFD = 2
O_NOCTTY = 0o400
EPOLL_CTL_ADD = 1
EPOLLIN = 0x1
FILE_SIZE = 8


class RestoreError(Exception):
    """Restart refused, with the errno the design gives (or the system call's)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


@dataclass
class _Held:
    task: int  # driver task index holding the descriptor
    fd: int


@dataclass
class Restored:
    """The outcome: errno (0 for success) and, on success, the read-back observation in the
    form `model.world.observe` gives, beside what went wrong in words."""

    code: int
    obs: tuple = ()
    why: str = ""


class _Restorer:
    def __init__(self, sess, v: Variant, max_fds: int) -> None:
        self.sess = sess
        self.v = v
        self.max_fds = max_fds
        self.files: dict[int, _Held] = {}  # file objref -> where it was made
        self.tables: dict[int, int] = {}  # table objref -> a driver task holding it
        self.objs: dict[int, dict] = {}  # object objref -> the shared object's handles
        self.peers: dict[int, _Held] = {}  # a socket's file objref -> where its peer was made
        self.next_park = PARK

    # -- calls -------------------------------------------------------------------------------

    def call(self, task: int, *cmd) -> int | tuple:
        out = self.sess.call(self.sess.task(task), *cmd)
        if out[0] != "ok":
            code = getattr(errno, out[1], errno.EIO)
            raise RestoreError(code, f"{cmd[0]}{cmd[1:]!r} in task {task}: {out[1]}")
        return out[1]

    def park(self, task: int, fd: int) -> int:
        """Move a new descriptor to the next parking number."""
        new = self.call(task, "fcntl", fd, F_DUPFD, self.next_park)
        self.next_park = int(new) + 1
        self.call(task, "close", fd)
        return int(new)

    def here(self, task: int, held: _Held) -> int:
        """A descriptor for `held`'s file in `task` (a copy if another table holds it)."""
        if self.sess.tasks[held.task].pid == self.sess.tasks[task].pid or self._same_table(
                task, held.task):
            return held.fd
        tmp = int(self.call(task, "getfd", self.sess.tasks[held.task].pid, held.fd))
        return self.park(task, tmp)

    def _same_table(self, a: int, b: int) -> bool:
        pa, pb = self.sess.tasks[a].pid, self.sess.tasks[b].pid
        return live_scan._same_table(pa, pb)

    # -- records -----------------------------------------------------------------------------

    def path(self, index: int) -> str:
        return os.path.join(self.sess.tmp, f"f{index}")

    def open_named(self, task: int, ns: str, path: int, flags: int) -> int:
        """Open the regular file (`ns` "f") or FIFO ("q") of a record by its name; for an
        unlinked one (path `unlinked(p)`), a new file made under the name p had, opened and
        unlinked at once while the file now under that name waits aside: open, then
        nameless, as the model's restart gives it back."""
        if path >= 0:
            name = os.path.join(self.sess.tmp, f"{ns}{path}")
            return self.park(task, int(self.call(task, "open", name, flags)))
        name = os.path.join(self.sess.tmp, f"{ns}{-2 - path}")
        aside = name + ".aside"
        os.rename(name, aside)
        try:
            if ns == "q":
                os.mkfifo(name, 0o644)
            else:
                with open(name, "wb") as f:
                    f.write(bytes(FILE_SIZE))
            fd = self.park(task, int(self.call(task, "open", name, flags)))
            os.unlink(name)
        finally:
            os.rename(aside, name)
        return fd

    def make_file(self, task: int, r) -> int:
        """Open or reconstruct the file of record `r` in `task`; its (parked) descriptor."""
        acc = r.f_flags & O_ACCMODE
        kind = r.f_type
        keep_lf = self.v.restore_largefile
        if kind == REG:
            return self.open_named(task, "f", r.path, r.f_flags & ~OPEN_ONLY_FLAGS)
        if kind in PIPE_KINDS and r.path != -1:
            # a FIFO, by its name (Linux-CR fifo_file_restore, CRIU fifo.c): a read-write
            # opener first (kept parked), so that no end waits for a partner; each end is
            # then that FIFO opened through /proc with its own access mode
            fifo = self.objs.get(r.obj_ref)
            if fifo is None:
                fifo = {"rw": _Held(task, self.open_named(task, "q", r.path, O_RDWR))}
                self.objs[r.obj_ref] = fifo
            rw = fifo["rw"]
            pid = self.sess.tasks[rw.task].pid
            return self.park(task, int(self.call(
                task, "open", f"/proc/{pid}/fd/{rw.fd}",
                {PIPE_R: O_RDONLY, PIPE_W: O_WRONLY}.get(kind, O_RDWR))))
        if kind in PIPE_KINDS:
            pipe = self.objs.get(r.obj_ref)
            if pipe is None:
                rd, wr = self.call(task, "pipe2")  # type: ignore[misc]
                pipe = {"r": _Held(task, self.park(task, rd)),
                        "w": _Held(task, self.park(task, wr))}
                self.objs[r.obj_ref] = pipe
            end = pipe["w" if kind == PIPE_W else "r"]
            # CRIU (pipes.c) reopens an end that has O_LARGEFILE through /proc/self/fd
            reopen_lf = keep_lf or self.v.pipe_reopen_flags
            if kind == PIPE_RW or (reopen_lf and r.f_flags & O_LARGEFILE):
                # reopened through /proc, as the saved file was: a new file on the same pipe
                pid = self.sess.tasks[end.task].pid
                return self.park(task, int(self.call(
                    task, "open", f"/proc/{pid}/fd/{end.fd}", {PIPE_R: O_RDONLY,
                                                               PIPE_W: O_WRONLY}.get(kind, acc))))
            return self.here(task, end)
        if kind in (PTMX, PTS):
            pty = self.objs.get(r.obj_ref)
            if pty is None:
                m = self.park(task, int(self.call(task, "open", "/dev/ptmx",
                                                  (acc if kind == PTMX else O_RDWR) | O_NOCTTY)))
                n = int(self.call(task, "ptsnum", m))
                pty = {"master": _Held(task, m), "n": n}
                self.objs[r.obj_ref] = pty
                if r.peer_ref:
                    self.objs[r.peer_ref] = pty
            if kind == PTMX:
                return self.here(task, pty["master"])
            if keep_lf and not r.f_flags & O_LARGEFILE:  # as openpty made it
                m = self.here(task, pty["master"])
                return self.park(task, int(self.call(task, "ptpeer", m, acc | O_NOCTTY)))
            return self.park(task, int(self.call(task, "open", f"/dev/pts/{pty['n']}",
                                                 acc | O_NOCTTY)))
        if kind == UNIX:
            pair = self.objs.get(r.obj_ref)
            if pair is None:
                a, b = self.call(task, "socketpair")  # type: ignore[misc]
                ha, hb = _Held(task, self.park(task, a)), _Held(task, self.park(task, b))
                self.objs[r.obj_ref] = {"me": ha}
                if r.peer_ref:
                    self.objs[r.peer_ref] = {"me": hb}
                else:  # no peer saved: the other end only sends the queue's messages
                    self.peers[r.objref] = hb
                pair = self.objs[r.obj_ref]
            if r.peer_ref in self.objs:
                self.peers[r.objref] = self.objs[r.peer_ref]["me"]
            return self.here(task, pair["me"])
        if kind == EPOLL:
            return self.park(task, int(self.call(task, "epoll_create1")))
        if kind == TIMERFD and self.v.timerfd_dumped:  # CRIU: timerfd.c
            return self.park(task, int(self.call(task, "timerfd")))
        raise RestoreError(errno.EINVAL, f"f_type {kind}: no restore method")

    def restore_file(self, task: int, r) -> None:
        if r.f_flags & OPEN_ONLY_FLAGS:
            raise RestoreError(errno.EINVAL, "open-only flags in f_flags")
        fd = self.make_file(task, r)
        if self.v.setfl == "mask":
            self.call(task, "fcntl", fd, F_SETFL, r.f_flags & CKPT_SETFL_MASK)
        flags = int(self.call(task, "fcntl", fd, F_GETFL, 0))
        # the f_mode rule: the reopened file's mode may be downgraded, never upgraded; user
        # space cannot drop a mode bit of an open file, so a downgrade is refused here
        mode = acc_fmode(flags & O_ACCMODE) | (FMODE_LSEEK if r.f_type == REG else 0)
        rw = FMODE_READ | FMODE_WRITE
        if self.v.fmode_check and (mode & rw) != (r.f_mode & rw):
            raise RestoreError(errno.EINVAL, "f_mode differs from the reopened file's")
        if self.v.restore_pos and mode & FMODE_LSEEK:
            self.call(task, "lseek", fd, r.f_pos)
        if self.v.flags_reread and (r.f_flags & CKPT_SETFL_MASK) & ~flags:
            raise RestoreError(errno.EINVAL, "a flag was dropped (CRIU re-reads F_GETFL)")
        self.files[r.objref] = _Held(task, fd)

    def install(self, task: int, r) -> None:
        if not 0 <= r.fd < self.max_fds:
            raise RestoreError(errno.EBADF if r.fd >= 0 else errno.EINVAL, "fd out of range")
        held = self.files.get(r.file_ref)
        if held is None:
            raise RestoreError(errno.EINVAL, f"unknown objref {r.file_ref}")
        src = self.here(task, held)
        self.call(task, "dup2", src, r.fd)
        self.call(task, "fcntl", r.fd, F_SETFD, 1 if r.cloexec else 0)

    def new_task(self, first: bool, shares: int | None) -> int:
        if first:
            return 0
        if shares is not None:
            out = self.sess.spawn_child(self.sess.task(shares), "clone")
        else:
            out = self.sess.spawn_child(self.sess.task(0), "fork")
        if out[0] != "ok":
            raise RestoreError(getattr(errno, out[1], errno.EIO), f"fork: {out[1]}")
        t = int(out[1])
        if shares is None:
            self.call(t, "close_range", 0, driver.MODEL_FDS - 1)  # a fresh table
        return t

    def epoll_item(self, r) -> None:
        ep, target = self.files.get(r.ep_ref), self.files.get(r.target_ref)
        if ep is None or target is None:
            raise RestoreError(errno.EINVAL, "epoll item names an unknown objref")
        out = self.sess.spawn_child(self.sess.task(ep.task), "fork")
        if out[0] != "ok":
            raise RestoreError(errno.EIO, f"fork: {out[1]}")
        child = int(out[1])
        try:
            src = self.here(child, target)
            if src != r.fd:
                self.call(child, "dup2", src, r.fd)
            self.call(child, "epoll_ctl", ep.fd, EPOLL_CTL_ADD, r.fd, EPOLLIN)
        finally:
            self.sess.do_exit(child)

    def queue(self, r) -> None:
        """CRIU (sk-queue.c): a message in flight is sent again, from the socket's peer, with
        the file it carries."""
        sock, x = self.files.get(r.sock_ref), self.files.get(r.file_ref)
        peer = self.peers.get(r.sock_ref)
        if sock is None or x is None or peer is None:
            raise RestoreError(errno.EINVAL, "queue record names an unknown objref")
        self.call(peer.task, "sendmsg", peer.fd, self.here(peer.task, x))

    def run(self, image: tuple) -> list[int]:
        """Replay the records; the driver tasks restored, in image order."""
        tasks: list[int] = []
        current = -1
        for r in image:
            if r[0] == R_TASK:
                known = self.tables.get(r.files_ref)
                current = self.new_task(not tasks, known)
                tasks.append(current)
                self.tables.setdefault(r.files_ref, current)
            elif r[0] == R_TABLE:
                if r.nfds < 0 or r.nfds > self.max_fds:
                    raise RestoreError(errno.EMFILE, "nfds out of range")
            elif r[0] == R_FILE:
                self.restore_file(current, r)
            elif r[0] == R_FD:
                self.install(current, r)
            elif r[0] == R_EPITEM:
                self.epoll_item(r)
            elif r[0] == R_QUEUE and self.v.scm_dumped:
                self.queue(r)
            else:
                raise RestoreError(errno.EINVAL, f"record type {r[0]}")
        return tasks


def restore(image: tuple, v: Variant, max_fds: int, npaths: int,
            timeout: float = 10.0) -> Restored:
    """Rebuild `image` in fresh processes and read them back (`model.world.observe` form)."""
    if max_fds > driver.MODEL_FDS:
        raise ValueError(f"max_fds {max_fds} beyond the driver's {driver.MODEL_FDS}")
    unsupported = [k for k in ("new_file_per_fd", "partial_restore", "restart_keeps_ref")
                   if getattr(v, k)] + ([] if v.share_tables and v.type_check else ["tables"])
    if unsupported:
        raise ValueError(f"{v.name}: restart knobs the restorer does not follow: {unsupported}")
    sess = driver._Session(timeout=timeout)
    try:
        sess.start(npaths, FILE_SIZE)
        rs = _Restorer(sess, v, max_fds)
        try:
            tasks = rs.run(image)
        except RestoreError as e:
            return Restored(e.code, (), str(e))
        pids = [sess.tasks[t].pid for t in tasks]
        sc = live_scan.scan(list(dict.fromkeys(pids)), outside=[], fd_limit=driver.MODEL_FDS,
                            max_fds=max_fds, path_of=sess.name_index)
        if sc.world is None:
            return Restored(0, (), "; ".join(sc.unexpressible))
        order = [sc.task_pids.index(p) for p in pids]
        return Restored(0, observe(sc.world, order))
    finally:
        sess.close()
