"""The checkpoint image: plain records (ints only), which tests and fuzzers can build or
mutate. Every record starts with its type tag so that records of different types never
compare equal. Objrefs count from 1 and are unique across object types."""

from __future__ import annotations

from typing import NamedTuple

from model.flags import O_RDWR

R_TASK, R_TABLE, R_FD, R_FILE, R_EPITEM, R_QUEUE = 1, 2, 3, 4, 5, 6

O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC = 0o100, 0o200, 0o400, 0o1000
OPEN_ONLY_FLAGS = O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC


class TaskRec(NamedTuple):
    """A task: the objref of its fd table (`files_objref`)."""

    rec: int
    files_ref: int


class TableRec(NamedTuple):
    """FILE_TABLE{nfds}, written by the first task holding the table; nfds fd records follow."""

    rec: int
    objref: int
    nfds: int


class FdRec(NamedTuple):
    rec: int
    fd: int
    file_ref: int
    cloexec: int


class FileRec(NamedTuple):
    """A file's state, written before the first fd record naming it. `obj_ref` names the
    object it is on (pipe INODE, its TTY side, its SOCK); `peer_ref` the partner (the other
    TTY side, the peer SOCK) or 0."""

    rec: int
    objref: int
    f_type: int
    f_flags: int
    f_mode: int
    f_pos: int
    path: int
    obj_ref: int
    peer_ref: int
    owner: int = 0  # CRIU saves the F_SETOWN owner (a fown entry); Linux-CR refuses one


class EpRec(NamedTuple):
    """An epoll item, written by the deferred queue after all tasks."""

    rec: int
    ep_ref: int
    target_ref: int
    fd: int


class QueueRec(NamedTuple):
    """One SCM_RIGHTS message in flight on a socket's receive queue (CRIU only), written after
    the tasks, in queue order; a file only in flight has its record just before."""

    rec: int
    sock_ref: int
    file_ref: int


# Image mutations a test or the model checker applies before restart ("hostile images").
T_BAD_OBJREF = 1  # an fd record names objref 0
T_UNKNOWN_OBJREF = 2  # an fd record names an objref nothing defines
T_DUP_OBJREF = 3  # a file record reuses an objref already defined
T_WRONG_TYPE = 4  # an fd record names the fd table's objref
T_BAD_FTYPE = 5  # a file record's f_type is out of range
T_CREAT_FLAGS = 6  # a file record's f_flags carry O_TRUNC
T_BAD_NFDS = 7  # a table record's nfds is negative
T_FMODE_DOWN = 8  # a read-write file's f_mode says read-only (well-formed: tests escalation)
TAMPERS = {
    T_BAD_OBJREF: "bad_objref",
    T_UNKNOWN_OBJREF: "unknown_objref",
    T_DUP_OBJREF: "dup_objref",
    T_WRONG_TYPE: "wrong_type",
    T_BAD_FTYPE: "bad_ftype",
    T_CREAT_FLAGS: "creat_flags",
    T_BAD_NFDS: "bad_nfds",
    T_FMODE_DOWN: "fmode_down",
}
MALFORMED = frozenset(range(T_BAD_OBJREF, T_BAD_NFDS + 1))


def _first(image: tuple, rec: int) -> int:
    return next((i for i, r in enumerate(image) if r[0] == rec), -1)


def tamper(image: tuple, kind: int) -> tuple | None:
    """The image with mutation `kind` applied, or None where it does not apply."""
    recs = list(image)
    if kind in (T_BAD_OBJREF, T_UNKNOWN_OBJREF, T_WRONG_TYPE):
        i = _first(image, R_FD)
        if i < 0:
            return None
        if kind == T_BAD_OBJREF:
            ref = 0
        elif kind == T_UNKNOWN_OBJREF:
            # past every objref the image defines, the objects files are on included (a
            # pipe's inode objref is defined by its first file record, not a record of its own)
            ref = 1 + max(max(r[1], r.obj_ref, r.peer_ref) if r[0] == R_FILE else r[1]
                          for r in image if r[0] in (R_TABLE, R_FILE))
        else:
            ref = image[_first(image, R_TABLE)].objref
        recs[i] = image[i]._replace(file_ref=ref)
    elif kind == T_DUP_OBJREF:
        i = _first(image, R_FILE)
        if i < 0:
            return None
        table = image[_first(image, R_TABLE)]
        recs[i] = image[i]._replace(objref=table.objref)
    elif kind in (T_BAD_FTYPE, T_CREAT_FLAGS):
        i = _first(image, R_FILE)
        if i < 0:
            return None
        f = image[i]
        recs[i] = f._replace(f_type=99) if kind == T_BAD_FTYPE else f._replace(
            f_flags=f.f_flags | O_TRUNC
        )
    elif kind == T_BAD_NFDS:
        i = _first(image, R_TABLE)
        if i < 0:
            return None
        recs[i] = image[i]._replace(nfds=-1)
    elif kind == T_FMODE_DOWN:
        i = next(
            (i for i, r in enumerate(image) if r[0] == R_FILE and r.f_flags & 3 == O_RDWR), -1
        )
        if i < 0:
            return None
        recs[i] = image[i]._replace(f_mode=image[i].f_mode & ~2)
    else:
        raise ValueError(f"unknown tamper {kind}")
    return tuple(recs)
