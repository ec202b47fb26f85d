"""The model's state: tasks, fd tables, open files and what they reference.

A `World` is an immutable, hashable value built only from ints and tuples (no None, no str),
so that `hash()` is the same on every run and states can be fingerprinted.

Identities the kernel does not expose are internal names: a task is its position in
`World.tasks`, an fd table its position in `World.tables`, an open file (`struct file`) its
position in `World.files`, and a referenced object (pipe inode, pty pair, unix socket pair) a
small int in `File.obj`. States equal up to renaming these are the same state
(see `model.canon`). Descriptor numbers, flags and offsets are observable and never renamed.

Reference counts are never stored: `f_count`, `files->count` (`ref_users` of a table) and the
others are derived from the references themselves (`model.refs`).
"""

from __future__ import annotations

from typing import NamedTuple

# File kinds (struct file_operations they stand for).
REG = 0  # regular file on a disk filesystem (generic_file_checkpoint)
PIPE_R = 1  # pipe read end
PIPE_W = 2  # pipe write end
PTMX = 3  # pty master (/dev/ptmx)
PTS = 4  # pty slave (/dev/pts/N)
EPOLL = 5  # eventpoll
UNIX = 6  # AF_UNIX stream socket
TIMERFD = 7  # timerfd: a kind whose f_op has no ->checkpoint in Linux-CR v20
PIPE_RW = 8  # a pipe opened read-write through /proc/PID/fd/N (fifo_open with O_RDWR)

KIND_NAMES = {
    REG: "reg",
    PIPE_R: "pipe_r",
    PIPE_W: "pipe_w",
    PTMX: "ptmx",
    PTS: "pts",
    EPOLL: "epoll",
    UNIX: "unix",
    TIMERFD: "timerfd",
    PIPE_RW: "pipe_rw",
}
PIPE_KINDS = frozenset({PIPE_R, PIPE_W, PIPE_RW})
PTY_KINDS = frozenset({PTMX, PTS})
# Kinds whose file references a shared object (File.obj is set).
OBJ_KINDS = PIPE_KINDS | PTY_KINDS | {UNIX}

EMPTY = -1  # an unused descriptor slot


def unlinked(path: int) -> int:
    """`File.path` of a file whose name was unlinked while it was open (its inode lives on,
    nameless): -2 - p for name p, so -1 still means "no name" and the old name is kept."""
    return -2 - path


class File(NamedTuple):
    """An open file description (`struct file`)."""

    kind: int
    path: int  # name index: f<p> for REG, q<p> for a named pipe (FIFO); -1 none; `unlinked(p)`
    obj: int  # referenced object (pipe inode / pty pair / socket pair), -1 for none
    f_flags: int  # as F_GETFL reports: access mode | status flags | O_LARGEFILE
    f_mode: int  # FMODE_READ | FMODE_WRITE | FMODE_LSEEK
    f_pos: int
    owner: int  # 1 once F_SETOWN gave it an owner
    epitems: tuple[tuple[int, int], ...] = ()  # eventpoll only: (target file, fd), sorted
    rcvq: tuple[int, ...] = ()  # unix only: in-flight files, one SCM_RIGHTS message each
    sk_err: int = 0  # unix only: 1 while ECONNRESET is pending (peer released with unread data)


class Task(NamedTuple):
    inside: int  # 1: in the container being checkpointed
    frozen: int  # 1: stopped by the freezer cgroup
    table: int  # index of its fd table (files_struct)


def slot(file: int, cloexec: int) -> int:
    """Encode an fd table slot: the open file and the close-on-exec bit."""
    return file * 2 + cloexec


def slot_file(s: int) -> int:
    return s >> 1


def slot_cloexec(s: int) -> int:
    return s & 1


class World(NamedTuple):
    """One state of the model."""

    tasks: tuple[Task, ...]
    tables: tuple[tuple[int, ...], ...]  # slot per descriptor number: EMPTY or slot(file, cloexec)
    files: tuple[File, ...]
    steps: int  # environment steps taken (bounded by the config)
    cr: tuple = ()  # checkpoint/restart progress, see model.checkpoint; () before any


# --- checkpoint/restart progress (model.checkpoint, model.restart) ---------------------------

# objhash object types (include/linux/checkpoint_hdr.h CKPT_OBJ_*), the ones files need.
OBJ_FILE_TABLE = 1
OBJ_FILE = 2
OBJ_INODE = 3  # a pipe's inode: no ref_users
OBJ_TTY = 4
OBJ_SOCK = 5
OBJ_NAMES = {
    OBJ_FILE_TABLE: "FILE_TABLE",
    OBJ_FILE: "FILE",
    OBJ_INODE: "INODE",
    OBJ_TTY: "TTY",
    OBJ_SOCK: "SOCK",
}


class ObjEntry(NamedTuple):
    """One objhash entry; its objref is its position + 1 (objrefs count from 1)."""

    objtype: int
    ptr: int  # FILE/SOCK: file index; FILE_TABLE: table index; INODE: obj; TTY: obj*2+is_slave
    users: int  # references found from inside, plus the objhash's own
    visited: int  # 1 once written to the image (VISITED)


# Checkpoint phases (Cr.phase).
FROZEN = 1  # inside tasks stopped by the freezer
COLLECTED = 2  # objhash built by collect (full-container mode)
CHECKED = 3  # contained check passed
WRITTEN = 4  # image written, visited check pending
DONE = 5  # checkpoint finished with an image
FAILED = 6  # checkpoint finished with an error
RESTARTED = 7  # restart ran from the image (Cr.rst_error says how it ended)
PHASE_NAMES = {
    FROZEN: "frozen",
    COLLECTED: "collected",
    CHECKED: "checked",
    WRITTEN: "written",
    DONE: "done",
    FAILED: "failed",
    RESTARTED: "restarted",
}


class Cr(NamedTuple):
    """A checkpoint (and then restart) in progress. Only `objhash` and `ghost` name world ids;
    the image, the snapshot and the restored observation are plain data."""

    phase: int
    error: int = 0  # errno the checkpoint failed with (positive), 0 for none
    objhash: tuple[ObjEntry, ...] = ()
    ghost: tuple[tuple[int, int], ...] = ()  # (objtype, ptr) shared with outside at the check
    clean: int = 1  # 1 while nothing the container uses is shared with outside or unsupported
    leak_check: tuple[tuple[int, int], ...] = ()  # (objref, objtype) written, shared at check
    leak_write: tuple[tuple[int, int], ...] = ()  # (objref, objtype) written, shared at write
    image: tuple = ()  # records, see model.image
    snapshot: tuple = ()  # observation of the inside tasks when the image was written
    ext_steps: int = 0  # outside-task steps taken since the freeze
    tampered: int = 0  # image mutation applied before restart (model.image.TAMPERS)
    rst_error: int = 0  # errno restart failed with, 0 for success
    restored: tuple = ()  # observation of the restored tasks (empty if none survive)
    rst_files: tuple = ()  # per restored file group: (f_count, f_mode of its image record)


# --- a faster `_replace` ---------------------------------------------------------------------
# NamedTuple._replace goes through a dict pop per field and `_make`; the checker calls it
# millions of times, so each state type gets a generated keyword-only version (same meaning).

_MISSING = object()


def _fast_replace(cls: type) -> None:
    names = cls._fields
    params = ", ".join(f"{n}=_M" for n in names)
    values = ", ".join(f"self[{i}] if {n} is _M else {n}" for i, n in enumerate(names))
    src = f"def _replace(self, *, {params}):\n    return _new(_cls, ({values},))\n"
    env = {"_M": _MISSING, "_new": tuple.__new__, "_cls": cls}
    exec(src, env)  # noqa: S102  (generated from the field names above, nothing else)
    fn = env["_replace"]
    fn.__doc__ = f"Return a new {cls.__name__} with the given fields replaced."
    cls._replace = fn


for _cls in (File, Task, World, ObjEntry, Cr):
    _fast_replace(_cls)
