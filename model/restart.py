"""Restart from an image, after Linux-CR v20 (checkpoint/restart.c, checkpoint/files.c).

`restart(image, variant, max_fds)` is one pure function: it validates and replays the records,
recreating each object once per objref (so sharing comes back), restoring each file with
`F_SETFL(f_flags & CKPT_SETFL_MASK)`, the f_mode rule (downgrade only) and lseek, installing
descriptors with their close-on-exec bit. A malformed image is refused with the design's
errno and, as the restarting tasks are killed, leaves no task behind.
"""

from __future__ import annotations

import errno

from model.env import setfl_file
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
from model.state import (
    EMPTY,
    EPOLL,
    KIND_NAMES,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_SOCK,
    OBJ_TTY,
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
)
from model.variants import Variant
from model.world import f_count, normalize, observe, observed_files

EINVAL, EMFILE, ENOMSG, EBADF = errno.EINVAL, errno.EMFILE, errno.ENOMSG, errno.EBADF
PIPE_ACC = {PIPE_R: O_RDONLY, PIPE_W: O_WRONLY, PIPE_RW: O_RDWR}


class RestartError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Restorer:
    def __init__(self, v: Variant, max_fds: int) -> None:
        self.v = v
        self.max_fds = max_fds
        self.tasks: list[Task] = []
        self.tables: list[list[int]] = []
        self.files: list[File] = []
        self.objs: dict[int, tuple[int, int]] = {}  # objref -> (objtype, index or object id)
        self.next_obj = 0
        self.image_fmode: list[int] = []  # per restored file: the f_mode its record gave

    def define(self, objref: int, objtype: int, value: int) -> None:
        if objref <= 0:
            raise RestartError(EINVAL)
        if objref in self.objs:
            raise RestartError(EINVAL)  # duplicate objref
        self.objs[objref] = (objtype, value)

    def fetch(self, objref: int, objtype: int) -> int | None:
        """ckpt_obj_fetch: unknown objref -EINVAL, wrong type -ENOMSG (without the type check
        the mutant gets None and goes on)."""
        if objref <= 0 or objref not in self.objs:
            raise RestartError(EINVAL)
        typ, value = self.objs[objref]
        if typ != objtype:
            if self.v.type_check:
                raise RestartError(ENOMSG)
            return None
        return value

    def shared_obj(self, objtype: int, obj_ref: int, peer_ref: int) -> int:
        """The object a file is on: found by its objref, or made new (registering the peer's
        objref too, so the partner finds the same pair)."""
        if obj_ref in self.objs:
            got = self.fetch(obj_ref, objtype)
            if got is not None:
                return got
        o = self.next_obj
        self.next_obj += 1
        self.define(obj_ref, objtype, o)
        if peer_ref and peer_ref not in self.objs:
            self.define(peer_ref, objtype, o)
        return o

    def restore_file(self, r) -> None:
        v = self.v
        if r.f_type not in KIND_NAMES:
            raise RestartError(EINVAL)
        if r.f_flags & OPEN_ONLY_FLAGS:
            raise RestartError(EINVAL)
        acc = r.f_flags & O_ACCMODE
        if acc not in (O_RDONLY, O_WRONLY, O_RDWR):
            raise RestartError(EINVAL)
        kind = r.f_type
        # open / reconstruct; the f_flags the new file starts with
        if kind == REG:  # reopened by name with the saved flags; open adds O_LARGEFILE
            f = File(REG, r.path, -1, (r.f_flags & ~OPEN_ONLY_FLAGS) | O_LARGEFILE,
                     acc_fmode(acc) | FMODE_LSEEK, 0, 0)
        elif kind in PIPE_KINDS:  # do_pipe_flags: a new pipe, or the other end of one
            o = self.shared_obj(OBJ_INODE, r.obj_ref, 0)
            pacc = PIPE_ACC[kind]
            # CRIU (pipes.c): an end with O_LARGEFILE came from /proc and is reopened through
            # /proc/self/fd with its saved flags, so it keeps the bit. A FIFO is opened by its
            # name (Linux-CR fifo_file_restore; CRIU fifo.c), and open() adds the bit.
            large = r.f_flags & O_LARGEFILE if v.pipe_reopen_flags else 0
            if r.path != -1:
                large = O_LARGEFILE
            f = File(kind, r.path, o, pacc | large, acc_fmode(pacc), 0, 0)
        elif kind == PTMX:
            o = self.shared_obj(OBJ_TTY, r.obj_ref, r.peer_ref)
            f = File(PTMX, -1, o, acc | O_LARGEFILE, acc_fmode(acc), 0, 0)
        elif kind == PTS:  # reopened by name (/dev/pts/N) unless by TIOCGPTPEER
            o = self.shared_obj(OBJ_TTY, r.obj_ref, r.peer_ref)
            f = File(PTS, -1, o, acc | O_LARGEFILE, acc_fmode(acc), 0, 0)
        elif kind == UNIX:
            o = self.shared_obj(OBJ_SOCK, r.obj_ref, r.peer_ref)
            f = File(UNIX, -1, o, O_RDWR, FMODE_READ | FMODE_WRITE, 0, 0)
        elif kind == EPOLL:
            f = File(EPOLL, -1, -1, O_RDWR, FMODE_READ | FMODE_WRITE, 0, 0)
        else:  # TIMERFD: a valid f_type with no restore method in Linux-CR
            assert kind == TIMERFD
            if not v.timerfd_dumped:
                raise RestartError(EINVAL)
            f = File(TIMERFD, -1, -1, O_RDWR, FMODE_READ | FMODE_WRITE, 0, 0)  # timerfd.c
        # restore_file_common: F_SETFL, then the f_mode rule, then lseek
        if v.setfl == "mask":
            code, f = setfl_file(f, r.f_flags & CKPT_SETFL_MASK)
            if code:
                raise RestartError(code)
        if v.fmode_check:
            mode = f.f_mode
            if mode & FMODE_WRITE and not r.f_mode & FMODE_WRITE:
                mode &= ~FMODE_WRITE
            if not mode & FMODE_READ and r.f_mode & FMODE_READ:
                mode |= FMODE_READ
            rw = FMODE_READ | FMODE_WRITE
            if (mode & rw) != (r.f_mode & rw):
                raise RestartError(EINVAL)
            f = f._replace(f_mode=mode)
        if v.restore_largefile:  # in-kernel restart can set it as open() would, or clear it
            f = f._replace(f_flags=(f.f_flags & ~O_LARGEFILE) | (r.f_flags & O_LARGEFILE))
        if v.restore_pos and f.f_mode & FMODE_LSEEK:
            f = f._replace(f_pos=r.f_pos)
        if v.flags_reread and (r.f_flags & CKPT_SETFL_MASK) & ~f.f_flags:
            raise RestartError(EINVAL)  # CRIU: a flag was dropped
        if v.owner_dumped and r.owner:
            f = f._replace(owner=1)  # CRIU files.c: rst_file_params -> restore_fown
        self.define(r.objref, OBJ_FILE, len(self.files))
        self.files.append(f)
        self.image_fmode.append(r.f_mode)

    def run(self, image: tuple) -> None:
        i, n = 0, len(image)
        installed: set[int] = set()  # files already given a descriptor
        while i < n:
            r = image[i]
            i += 1
            if r[0] == R_TASK:
                if r.files_ref <= 0:
                    raise RestartError(EINVAL)
                if r.files_ref in self.objs:
                    table = self.fetch(r.files_ref, OBJ_FILE_TABLE)
                    if table is None:
                        continue
                    if not self.v.share_tables:
                        self.tables.append(list(self.tables[table]))
                        table = len(self.tables) - 1
                    self.tasks.append(Task(1, 0, table))
                    continue
                if i >= n or image[i][0] != R_TABLE or image[i].objref != r.files_ref:
                    raise RestartError(EINVAL)  # a new table must follow
                t = image[i]
                i += 1
                if t.nfds < 0 or t.nfds > self.max_fds:
                    raise RestartError(EMFILE)
                self.define(t.objref, OBJ_FILE_TABLE, len(self.tables))
                self.tables.append([EMPTY] * self.max_fds)
                self.tasks.append(Task(1, 0, len(self.tables) - 1))
                left = t.nfds
                while left:
                    if i >= n or image[i][0] not in (R_FD, R_FILE):
                        raise RestartError(EINVAL)  # fewer fd records than nfds
                    r = image[i]
                    i += 1
                    if r[0] == R_FILE:
                        self.restore_file(r)
                        continue
                    left -= 1
                    self.install(r, installed)
            elif r[0] == R_EPITEM:
                pair = self.fetch_on(r.ep_ref, EPOLL, r.target_ref)
                if pair:
                    e, target = pair
                    self.files[e] = self.files[e]._replace(
                        epitems=tuple(sorted(self.files[e].epitems + ((target, r.fd),))))
            elif r[0] == R_FILE and self.v.scm_dumped:
                self.restore_file(r)  # a file only in flight (CRIU)
            elif r[0] == R_QUEUE and self.v.scm_dumped:
                # CRIU sk-queue.c: the message is sent again, so the socket's queue holds it
                pair = self.fetch_on(r.sock_ref, UNIX, r.file_ref)
                if pair:
                    s, x = pair
                    self.files[s] = self.files[s]._replace(rcvq=self.files[s].rcvq + (x,))
            else:
                raise RestartError(EINVAL)  # a record where none of its type may stand

    def fetch_on(self, holder_ref: int, kind: int, file_ref: int) -> tuple[int, int] | None:
        """The files of a record that puts one file on another (an epoll item, a message in
        a queue): the holder must be of `kind` (-EINVAL); None where the type check is off
        and an objref named something else."""
        holder = self.fetch(holder_ref, OBJ_FILE)
        x = self.fetch(file_ref, OBJ_FILE)
        if holder is None or x is None:
            return None
        if self.files[holder].kind != kind:
            raise RestartError(EINVAL)
        return holder, x

    def install(self, r, installed: set[int]) -> None:
        """Install the file at its descriptor (lowest free, then dup2 to the saved number)
        and set close-on-exec from the record, always."""
        if r.fd < 0:
            raise RestartError(EINVAL)
        if r.fd >= self.max_fds:
            raise RestartError(EBADF)
        f = self.fetch(r.file_ref, OBJ_FILE)
        if f is None:
            return
        if self.v.new_file_per_fd and f in installed:
            self.files.append(self.files[f])
            self.image_fmode.append(self.image_fmode[f])
            f = len(self.files) - 1
        installed.add(f)
        self.tables[self.tasks[-1].table][r.fd] = slot(f, 1 if r.cloexec else 0)


def restart(image: tuple, v: Variant, max_fds: int) -> tuple[int, tuple, tuple]:
    """(errno or 0, observation of the restored tasks, per restored file in observation order
    its (f_count, f_mode of its image record))."""
    rs = _Restorer(v, max_fds)
    code = 0
    try:
        rs.run(image)
    except RestartError as e:
        code = e.code
    if code and not v.partial_restore:
        return code, (), ()  # the restarting tasks are killed: nothing half-restored
    # Tag each file with its image f_mode through `path` of a scratch copy, so that it
    # survives normalize's renumbering.
    w = World(tuple(rs.tasks), tuple(tuple(t) for t in rs.tables), tuple(rs.files), 0)
    tagged = normalize(w._replace(files=tuple(
        f._replace(path=i) for i, f in enumerate(w.files))))
    w = normalize(w)
    obs = observe(w, list(range(len(w.tasks))))
    extra = 1 if v.restart_keeps_ref else 0
    files = tuple(
        (f_count(w, f) + extra, rs.image_fmode[tagged.files[f].path])
        for f in observed_files(w, list(range(len(w.tasks))))
    )
    return code, obs, files


# The Variant knobs `restart` reads (see model.checkpoint.READS).
READS: frozenset[str] = frozenset({
    "setfl", "fmode_check", "restore_largefile", "restore_pos", "flags_reread", "type_check",
    "share_tables", "new_file_per_fd", "partial_restore", "restart_keeps_ref",
    "owner_dumped", "scm_dumped", "timerfd_dumped", "pipe_reopen_flags",
})
