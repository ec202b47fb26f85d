"""Read real processes' fd tables from /proc into a model state, and say what each design's
checkpoint would do with them.

The given processes are the container; every other process that shares one of their open
files, fd tables, pipes, ptys or socket peers is outside. Descriptors come from
`/proc/PID/fd` (links, `stat`), `/proc/PID/fdinfo` (flags with O_CLOEXEC for the
descriptor, pos, epoll `tfd:` lines, a pty master's `tty-index:`); which descriptors share an
open file and which tasks share a table come from kcmp; unix socket peers, types and queue
lengths from sock_diag; the F_SETOWN owner from F_GETOWN on a copy taken with pidfd_getfd;
the files in flight in a unix socket's queue by recvmsg(MSG_PEEK) on such a copy
(`_read_queues`), which leaves the queue as it was.
`f_mode` is not shown by the kernel: it is derived from the access mode as open() sets it.

A named pipe's ends are pipe ends with a name (the model's FIFO), and a regular file or FIFO
whose name was unlinked while it was open (`/proc/PID/fd/N` reads "... (deleted)") is the
model's unlinked file, nameless, its old name kept. What the model cannot express (other file
kinds, files off disk filesystems, unread socket data, memory-mapped descriptors, ...) is
named, and no verdict is guessed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat as st_mod
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from crmodel.live import driver
from model import checkpoint
from model.flags import FMODE_LSEEK, O_ACCMODE, O_CLOEXEC, O_DIRECT, acc_fmode, flags_str
from model.state import (
    DONE,
    EMPTY,
    EPOLL,
    KIND_NAMES,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_NAMES,
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
    slot_file,
    unlinked,
)
from model.variants import VARIANTS, Variant

DEFAULT_VARIANTS = ("linuxcr", "criu", "fixed")
# Filesystems whose files Linux-CR saves by path (generic_file_checkpoint): disk filesystems.
DISK_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs",
                     "vfat", "msdos", "exfat", "hfsplus", "nilfs2"})
KCMP_EPOLL_TFD = 7
SYS_PIDFD_GETFD = 438
F_GETOWN = 9
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
SOCK_STREAM = 1
TCP_ESTABLISHED = 1
SOCK_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ScanError(Exception):
    """Bad input: no such process, not permitted, nothing to scan (one line, exit 2)."""


class _Slot(ctypes.Structure):
    _fields_ = [("efd", ctypes.c_uint32), ("tfd", ctypes.c_uint32), ("toff", ctypes.c_uint32)]


def _kcmp(pid1: int, pid2: int, typ: int, idx1: int, idx2: Any) -> int:
    r = _libc.syscall(ctypes.c_long(312), ctypes.c_long(pid1), ctypes.c_long(pid2),
                      ctypes.c_long(typ), ctypes.c_long(idx1), idx2)
    if r < 0:
        return -1  # the process or descriptor went away meanwhile: not the same
    return int(r)


PEEKED = -1  # the "pid" of a descriptor this scan peeked out of a queue (it is in this process)


def _pid(p: int) -> int:
    return os.getpid() if p == PEEKED else p


def _same_file(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return _kcmp(_pid(a[0]), _pid(b[0]), driver.KCMP_FILE, a[1], ctypes.c_long(b[1])) == 0


def _same_table(p1: int, p2: int) -> bool:
    return _kcmp(p1, p2, driver.KCMP_FILES, 0, ctypes.c_long(0)) == 0


def _epoll_target_is(holder: tuple[int, int], ep: tuple[int, int], tfd: int) -> bool:
    """kcmp(KCMP_EPOLL_TFD): is the file `holder` holds the one `ep` watches as `tfd`?"""
    slot = _Slot(ep[1], tfd, 0)
    return _kcmp(_pid(holder[0]), _pid(ep[0]), KCMP_EPOLL_TFD, holder[1],
                 ctypes.cast(ctypes.pointer(slot), ctypes.c_void_p)) == 0


def _owner(pid: int, fd: int) -> int | None:
    """F_GETOWN of the open file behind pid's fd, on a copy taken with pidfd_getfd; None
    when the copy cannot be taken (not permitted, or gone)."""
    try:
        pidfd = os.pidfd_open(_pid(pid))
    except OSError:
        return None
    try:
        mine = _libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd),
                             ctypes.c_long(fd), ctypes.c_long(0))
        if mine < 0:
            return None
        try:
            return _libc.fcntl(int(mine), F_GETOWN, ctypes.c_long(0))
        finally:
            os.close(int(mine))
    finally:
        os.close(pidfd)


# ---------------------------------------------------------------------------------------------
# Reading /proc


@dataclass
class Desc:
    """One descriptor as /proc shows it."""

    pid: int
    fd: int
    link: str
    key: tuple[int, int]  # (st_dev, st_ino) of the file it is open on
    mode: int
    rdev: int
    flags: int  # F_GETFL (fdinfo flags without O_CLOEXEC)
    cloexec: int
    pos: int
    mnt_id: int
    tty_index: int | None
    tfds: list[tuple[int, int, int]]  # epoll: (tfd, target ino, target st_dev)


def _read_fdinfo(pid: int, fd: int) -> dict[str, Any]:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        text = f.read()
    out: dict[str, Any] = {"pos": 0, "flags": 0, "mnt_id": -1, "tty": None, "tfds": []}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "pos:":
            out["pos"] = int(parts[1])
        elif parts[0] == "flags:":
            out["flags"] = int(parts[1], 8)
        elif parts[0] == "mnt_id:":
            out["mnt_id"] = int(parts[1])
        elif parts[0] == "tty-index:":
            out["tty"] = int(parts[1])
        elif parts[0] == "tfd:":
            fields = dict(p.split(":", 1) for p in parts[3:] if ":" in p)
            sdev = int(fields.get("sdev", "0"), 16)
            # the kernel's dev_t (major << 20 | minor) as st_dev encodes it
            dev = os.makedev(sdev >> 20, sdev & 0xFFFFF)
            out["tfds"].append((int(parts[1]), int(fields.get("ino", "0"), 16), dev))
    return out


def _list_fds(pid: int, fd_limit: int | None) -> list[int]:
    fds = sorted(int(x) for x in os.listdir(f"/proc/{pid}/fd"))
    return [fd for fd in fds if fd_limit is None or fd < fd_limit]


def _read_desc(pid: int, fd: int) -> Desc | None:
    """The descriptor, or None if it was closed meanwhile."""
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
        st = os.stat(f"/proc/{pid}/fd/{fd}")
        info = _read_fdinfo(pid, fd)
    except FileNotFoundError:
        return None
    flags = info["flags"]
    return Desc(pid, fd, link, (st.st_dev, st.st_ino), st.st_mode, st.st_rdev,
                flags & ~O_CLOEXEC, 1 if flags & O_CLOEXEC else 0, info["pos"],
                info["mnt_id"], info["tty"], info["tfds"])


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _threads(pid: int) -> int:
    """Tasks of the process that share its fd table (threads, as the freezer sees them)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return 1
    return max(1, sum(1 for t in tids if t == pid or _same_table(pid, t)))


def _fstypes(pid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                out[int(left.split()[0])] = right.split()[0]
    except OSError:
        pass
    return out


def _mapped_inodes(pid: int) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                p = line.split()
                if len(p) >= 5 and p[4] != "0":
                    major, minor = (int(x, 16) for x in p[3].split(":"))
                    out.add((os.makedev(major, minor), int(p[4])))
    except OSError:
        pass
    return out


class _Diag:
    """sock_diag for AF_UNIX sockets: (type, state, peer inode, unread bytes) or None."""

    def __init__(self) -> None:
        self.nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, driver.NETLINK_SOCK_DIAG)
        self.nl.settimeout(5.0)

    def close(self) -> None:
        self.nl.close()

    def unix(self, ino: int) -> tuple[int, int, int, int] | None:
        try:
            return self._unix(ino)
        except OSError:  # no answer (timeout): treated as no unix socket, so named
            return None

    def _unix(self, ino: int) -> tuple[int, int, int, int] | None:
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ino,
                          driver.UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)
        self.nl.send(struct.pack("=IHHII", 16 + len(req), driver.SOCK_DIAG_BY_FAMILY,
                                 driver.NLM_F_REQUEST, ino, 0) + req)
        data = self.nl.recv(1 << 16)
        ln, typ, _fl, _seq, _pid = struct.unpack_from("=IHHII", data)
        if typ == driver.NLMSG_ERROR:
            return None  # not AF_UNIX (or gone)
        _fam, stype, state, _pad, _ino = struct.unpack_from("=BBBBI", data, 16)
        peer = rq = 0
        off, end = 16 + 16, min(len(data), ln)
        while off + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4:
                break
            if atype == driver.UNIX_DIAG_PEER:
                peer = struct.unpack_from("=I", data, off + 4)[0]
            elif atype == UNIX_DIAG_RQLEN:
                rq = struct.unpack_from("=I", data, off + 4)[0]
            off += (alen + 3) & ~3
        return stype, state, peer, rq


# ---------------------------------------------------------------------------------------------
# The scan


@dataclass
class Scan:
    """A real process tree read into a model state.

    `world` is None when something is not expressible (`unexpressible` says what). Tasks are
    numbered container first (in the order given, each process once per thread), then the
    outside processes by pid; `task_pids[i]` is task i's process. Files are numbered by first
    encounter; `holders[f]` lists every (pid, fd) that holds file f."""

    inside: list[int]
    outside: list[int]
    task_pids: list[int] = field(default_factory=list)
    world: World | None = None
    holders: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # file -> what it is, in words
    paths: list[str] = field(default_factory=list)  # model path index -> real path
    fifo_paths: list[str] = field(default_factory=list)  # the same, of named pipes
    unexpressible: list[str] = field(default_factory=list)
    comms: dict[int, str] = field(default_factory=dict)
    descs: dict[tuple[int, int], Desc] = field(default_factory=dict)  # (pid, fd) -> as read
    kinds: dict[tuple[int, int], tuple[int, Any, str]] = field(default_factory=dict)
    # files in flight: each socket's (pid, fd) -> a descriptor of each message's file, peeked
    # into this process (`_read_queues`), as (this pid, fd); those held until `close`
    flight: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)

    def close(self) -> None:
        """Close the descriptors of files in flight this scan peeked."""
        for fd in self.held:
            try:
                os.close(fd)
            except OSError:
                pass
        self.held = []

    def who(self, pid: int, fd: int | None = None) -> str:
        where = "inside" if pid in self.inside else "outside"
        text = f"pid {pid} ({self.comms.get(pid, '?')})"
        return text + (f" fd {fd}" if fd is not None else "") + f" {where}"


def _check_pid(pid: int) -> None:
    if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
        raise ScanError(f"no such process: {pid}")
    try:
        os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        raise ScanError(f"not permitted to read the descriptors of pid {pid}") from None
    except FileNotFoundError:
        raise ScanError(f"no such process: {pid}") from None
    try:
        pidfd = os.pidfd_open(pid)
        os.close(pidfd)
    except OSError as e:
        raise ScanError(f"pid {pid}: {os.strerror(e.errno or 0)}") from None
    if _kcmp(pid, pid, driver.KCMP_FILES, 0, ctypes.c_long(0)) < 0:
        raise ScanError(f"not permitted to compare the files of pid {pid} (kcmp)")


def _classify(d: Desc, diag: _Diag, fstypes: dict[int, str]) -> tuple[int, Any, str]:
    """(model kind or -1, object key or None, why not expressible or a description)."""
    mode = d.mode
    if d.link.startswith("pipe:") or st_mod.S_ISFIFO(mode):  # a pipe, or a named one (FIFO)
        kind = {0: PIPE_R, 1: PIPE_W}.get(d.flags & O_ACCMODE, PIPE_RW)
        return kind, ("pipe", d.key), d.link if d.link.startswith("pipe:") else \
            f"{d.link} (fifo)"
    if d.link.startswith("socket:"):
        u = diag.unix(d.key[1])
        if u is None:
            return -1, None, f"{d.link}: a socket other than AF_UNIX"
        stype, state, peer, _rq = u
        if stype != SOCK_STREAM:
            return -1, None, f"{d.link}: an AF_UNIX {SOCK_TYPES.get(stype, stype)} socket " \
                             "(the model has unix stream socket pairs)"
        if state != TCP_ESTABLISHED or not peer:
            return -1, None, f"{d.link}: an unconnected or listening unix stream socket"
        return UNIX, ("unix", min(d.key[1], peer), max(d.key[1], peer)), d.link
    if d.link == "anon_inode:[eventpoll]":
        return EPOLL, None, "epoll"
    if d.link == "anon_inode:[timerfd]":
        return TIMERFD, None, "timerfd"
    if st_mod.S_ISCHR(mode):
        major, minor = os.major(d.rdev), os.minor(d.rdev)
        if (major, minor) == driver.PTMX_RDEV and d.tty_index is not None:
            return PTMX, ("pty", d.tty_index), f"{d.link} (pty {d.tty_index} master)"
        if major in driver.PTS_MAJORS:
            idx = (major - driver.PTS_MAJORS[0]) * 256 + minor
            return PTS, ("pty", idx), d.link
        return -1, None, f"{d.link}: a character device other than a pty"
    if st_mod.S_ISREG(mode):
        fs = fstypes.get(d.mnt_id, "?")
        if fs not in DISK_FS:
            return -1, None, (f"{d.link}: a regular file on {fs} (the model's files are on "
                              "a disk filesystem, saved by path)")
        return REG, None, d.link
    what = d.link if d.link.startswith("anon_inode:") else f"{d.link} ({_ftype(mode)})"
    return -1, None, f"{what}: a kind of file the model does not have"


def _ftype(mode: int) -> str:
    for test, name in ((st_mod.S_ISDIR, "directory"), (st_mod.S_ISFIFO, "fifo"),
                       (st_mod.S_ISBLK, "block device"), (st_mod.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "other"


def scan(inside: Sequence[int], *, outside: Sequence[int] | None = None,
         fd_limit: int | None = None, max_fds: int | None = None,
         path_of: Callable[[str], int] | None = None) -> Scan:
    """Read `inside` (the container) and the processes outside that share something with it
    (found in /proc, or exactly `outside` if given) into a model state.

    `fd_limit` ignores descriptors at or above it (the driver's own channels); `max_fds` is
    the model's table size (default: one past the highest descriptor read); `path_of` names a
    regular file's model path index (default: numbered by first encounter)."""
    inside = list(dict.fromkeys(inside))
    if not inside:
        raise ScanError("nothing to scan: give at least one pid")
    for pid in inside + list(outside or []):
        _check_pid(pid)
    diag = _Diag()
    sc: Scan | None = None
    try:
        sc = _scan(inside, outside, fd_limit, diag)
        _build(sc, max_fds, path_of)
    finally:
        diag.close()
        if sc is not None:
            sc.close()
    return sc


def _scan(inside: list[int], outside_given: Sequence[int] | None, fd_limit: int | None,
          diag: _Diag) -> Scan:
    sc = Scan(inside=inside, outside=[])
    descs = sc.descs
    kinds = sc.kinds
    fstypes: dict[int, dict[int, str]] = {}

    def read(pid: int, fds: list[int] | None = None) -> None:
        fstypes.setdefault(pid, _fstypes(pid))
        for fd in fds if fds is not None else _list_fds(pid, fd_limit):
            d = _read_desc(pid, fd)
            if d is not None:
                descs[(pid, fd)] = d
                kinds[(pid, fd)] = _classify(d, diag, fstypes[pid])

    for pid in inside:
        read(pid)
    for (pid, fd), (kind, _o, why) in kinds.items():
        if kind < 0:
            sc.unexpressible.append(f"pid {pid} fd {fd}: {why}")
    _read_queues(sc, diag, fstypes, list(descs))

    # Outside: processes sharing a table, a file or an object with the container (its
    # files in flight included).
    inner = list(descs.values())
    keys = {d.key for d in inner}
    objs = {kinds[(d.pid, d.fd)][1] for d in inner} - {None}
    peer_inos = {i for o in objs if o[0] == "unix" for i in o[1:]}
    pty_idx = {o[1] for o in objs if o[0] == "pty"}
    targets = {(dev, ino) for d in inner for (_t, ino, dev) in d.tfds}
    if outside_given is not None:
        candidates = list(outside_given)
    else:
        candidates = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        candidates = [p for p in candidates if p not in inside and p != os.getpid()]
    mine = {(pid, fd) for pid, fd in descs}
    for pid in candidates:
        try:
            fds = _list_fds(pid, fd_limit)
        except OSError:
            continue  # gone, or a kernel thread
        shares_table = any(_same_table(pid, p) for p in inside)
        relevant: list[int] = []
        for fd in fds:
            if shares_table or outside_given is not None:
                relevant.append(fd)
                continue
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            hit = False
            if link.startswith("pipe:") and ("pipe", key) in objs:
                hit = True
            elif link.startswith("socket:") and st.st_ino in peer_inos:
                hit = True
            elif st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in driver.PTS_MAJORS:
                hit = (os.major(st.st_rdev) - 136) * 256 + os.minor(st.st_rdev) in pty_idx
            elif st_mod.S_ISCHR(st.st_mode) and (os.major(st.st_rdev),
                                                 os.minor(st.st_rdev)) == driver.PTMX_RDEV:
                try:
                    hit = _read_fdinfo(pid, fd)["tty"] in pty_idx
                except OSError:
                    hit = False
            if not hit and (key in keys or key in targets):
                hit = any(_same_file((pid, fd), (d.pid, d.fd)) for d in inner if d.key == key)
                hit = hit or any(_epoll_target_is((pid, fd), (d.pid, d.fd), t)
                                 for d in inner for (t, ino, dev) in d.tfds
                                 if (dev, ino) == key)
            if hit:
                relevant.append(fd)
        if relevant or outside_given is not None:
            sc.outside.append(pid)
            read(pid, relevant)
    for (pid, fd), (kind, _o, why) in kinds.items():
        if kind < 0 and (pid, fd) not in mine and pid != PEEKED:
            sc.unexpressible.append(f"pid {pid} fd {fd} (outside): {why}")
    _read_queues(sc, diag, fstypes, [pd for pd in descs if pd not in mine and pd[0] != PEEKED])

    everyone = inside + sc.outside
    sc.comms = {p: _comm(p) for p in everyone}
    # memory maps of files the container holds open: a mapping may hold the open file
    for pid in inside:
        mapped = _mapped_inodes(pid)
        for d in inner:
            if d.pid == PEEKED:
                continue
            if kinds[(d.pid, d.fd)][0] == REG and d.key in mapped:
                sc.unexpressible.append(
                    f"pid {d.pid} fd {d.fd}: {d.link} is also memory-mapped by pid {pid} "
                    "(a mapping's vm_file may hold this open file; the model has no memory)")
    return sc


def _read_queues(sc: Scan, diag: _Diag, fstypes: dict[int, dict[int, str]],
                 sockets: list[tuple[int, int]]) -> None:
    """Read which files are in flight in the queues of these unix sockets (and, breadth
    first, of the sockets in flight there): recvmsg(MSG_PEEK) on a copy of the socket
    (pidfd_getfd) with SO_PEEK_OFF stepping over the messages, which are left queued; the
    peeked descriptors stay open in this process until the scan ends (`Scan.close`), their
    files read like any descriptor's. A queue that is not one-byte messages each carrying
    one descriptor (the model's shape) is named not expressible."""
    me = os.getpid()
    todo = [pd for pd in sockets if sc.kinds[pd][0] == UNIX]
    done = list(sc.flight)
    while todo:
        pid, fd = todo.pop(0)
        key = sc.descs[(pid, fd)].key
        if any(sc.descs[q].key == key and _same_file((pid, fd), q) for q in done):
            continue  # this socket's queue is read already (through another descriptor)
        done.append((pid, fd))
        u = diag.unix(key[1])
        if u is None or not u[3]:
            continue
        where = f"pid {pid} fd {fd}" if pid != PEEKED else "a socket in flight"
        got = _peek_queue(sc, pid, fd, u[3])
        if isinstance(got, str):
            sc.unexpressible.append(f"{where}: {got}")
            continue
        sc.flight[(pid, fd)] = []
        fstypes.setdefault(me, _fstypes(me))
        for x in got:
            d = _read_desc(me, x)
            if d is None:
                continue
            d = replace(d, pid=PEEKED)
            kind = _classify(d, diag, fstypes[me])
            sc.descs[(PEEKED, x)], sc.kinds[(PEEKED, x)] = d, kind
            sc.flight[(pid, fd)].append((PEEKED, x))
            if kind[0] < 0:
                sc.unexpressible.append(f"{where}: in flight in its queue: {kind[2]}")
            elif kind[0] == UNIX:
                todo.append((PEEKED, x))


def _peek_queue(sc: Scan, pid: int, fd: int, rq: int) -> list[int] | str:
    """This process's descriptors of the files in flight in the socket's queue, one per
    message, in order; or why the queue is not the model's."""
    try:
        copy = driver._getfd(_pid(pid), fd)
    except driver.DriverError:
        return "its queue cannot be read (pidfd_getfd refused)"
    fds: list[int] = []
    why = ""
    try:
        msgs = driver.peek_queue(copy, rq)
    except OSError as e:
        return f"its queue cannot be read ({e.strerror})"
    finally:
        os.close(copy)
    for nbytes, got, truncated in msgs:
        sc.held.extend(got)
        if nbytes != 1 or len(got) != 1 or truncated:
            why = (f"{rq} unread bytes in its queue that are not one-byte messages each "
                   "carrying one descriptor (the model's queue holds SCM_RIGHTS messages only)")
        elif not why:
            fds.append(got[0])
    return why or fds


def _build(sc: Scan, max_fds: int | None, path_of: Callable[[str], int] | None) -> None:
    descs, kinds = sc.descs, sc.kinds
    everyone = sc.inside + sc.outside
    # fd tables (kcmp KCMP_FILES), one model task per thread sharing the table
    table_of: dict[int, int] = {}
    reps: list[int] = []
    for pid in everyone:
        for i, r in enumerate(reps):
            if _same_table(pid, r):
                table_of[pid] = i
                break
        else:
            table_of[pid] = len(reps)
            reps.append(pid)
        sc.task_pids += [pid] * _threads(pid)
    # open files (kcmp KCMP_FILE among descriptors on the same inode)
    file_of: dict[tuple[int, int], int] = {}
    reps_f: list[tuple[int, int]] = []
    by_key: dict[tuple[int, int], list[int]] = {}
    for pid in everyone:
        for (p, fd), d in descs.items():
            if p != pid or table_of[pid] != table_of[p]:
                continue
            if (p, fd) in file_of:
                continue
            for f in by_key.get(d.key, []):
                if _same_file((p, fd), reps_f[f]):
                    file_of[(p, fd)] = f
                    break
            else:
                file_of[(p, fd)] = len(reps_f)
                by_key.setdefault(d.key, []).append(len(reps_f))
                reps_f.append((p, fd))
    # files in flight: the file a descriptor holds, or one in flight only (an open file of
    # its own, read through the descriptor this scan peeked)
    for msgs in sc.flight.values():
        for m in msgs:
            if m in file_of:
                continue
            key = descs[m].key
            for f in by_key.get(key, []):
                if _same_file(m, reps_f[f]):
                    file_of[m] = f
                    break
            else:
                file_of[m] = len(reps_f)
                by_key.setdefault(key, []).append(len(reps_f))
                reps_f.append(m)
    for pd, f in file_of.items():
        if pd[0] != PEEKED:
            sc.holders.setdefault(f, []).append(pd)
    for f, (p, fd) in enumerate(reps_f):
        sc.names[f] = kinds[(p, fd)][2] + (" (in flight)" if p == PEEKED else "")
    if sc.unexpressible:
        return
    obj_ids: dict[Any, int] = {}
    paths = _paths(sc, reps_f, path_of)
    files: list[File] = []
    for p, fd in reps_f:
        d = descs[(p, fd)]
        kind, okey, _ = kinds[(p, fd)]
        obj = -1 if okey is None else obj_ids.setdefault(okey, len(obj_ids))
        path = paths.get((p, fd), -1)
        fmode = acc_fmode(d.flags & O_ACCMODE) | (FMODE_LSEEK if kind == REG else 0)
        owner = _owner(p, fd)
        if owner is None:
            sc.unexpressible.append(f"pid {p} fd {fd}: its F_SETOWN owner cannot be read "
                                    "(pidfd_getfd refused)")
        files.append(File(kind, path, obj, d.flags, fmode, d.pos, 1 if owner else 0))
    # epoll items: (target file, fd), the target found by kcmp(KCMP_EPOLL_TFD)
    for f, (p, fd) in enumerate(reps_f):
        d = descs[(p, fd)]
        if kinds[(p, fd)][0] != EPOLL:
            continue
        items = []
        for tfd, ino, dev in d.tfds:
            hit = next((g for pd, g in file_of.items() if descs[pd].key == (dev, ino)
                        and _epoll_target_is(pd, (p, fd), tfd)), None)
            if hit is None:
                sc.unexpressible.append(
                    f"pid {p} fd {fd}: epoll watches fd {tfd} (inode {ino}), a file no "
                    "descriptor read here holds (in flight, or in a process not scanned)")
                continue
            items.append((hit, tfd))
        files[f] = files[f]._replace(epitems=tuple(sorted(items)))
    if sc.unexpressible:
        return
    for (p, fd), msgs in sc.flight.items():  # SCM_RIGHTS messages, one file each, in order
        f = file_of[(p, fd)]
        files[f] = files[f]._replace(rcvq=tuple(file_of[m] for m in msgs))
    highest = max((fd for p, fd in descs if p != PEEKED), default=-1)
    n = max(max_fds or 0, highest + 1, 1)
    if max_fds is not None and highest >= max_fds:
        sc.unexpressible.append(f"descriptor {highest} is beyond the model's {max_fds}")
        return
    tables = [[EMPTY] * n for _ in reps]
    for (p, fd), f in file_of.items():
        if p != PEEKED:
            tables[table_of[p]][fd] = slot(f, descs[(p, fd)].cloexec)
    tasks = tuple(Task(1 if pid in sc.inside else 0, 0, table_of[pid]) for pid in sc.task_pids)
    sc.world = World(tasks, tuple(tuple(t) for t in tables), tuple(files), 0)


def _paths(sc: Scan, reps_f: list[tuple[int, int]],
           path_of: Callable[[str], int] | None) -> dict[tuple[int, int], int]:
    """The model's name (`File.path`) of each regular file and FIFO end: an index per name
    (files and FIFOs apart, as `f<p>` and `q<p>` are), by `path_of` if given, else by first
    encounter of the inode; an unlinked one gets `unlinked(p)` of the name it had, the index
    of a file now under that name if there is one."""
    out: dict[tuple[int, int], int] = {}
    ids: dict[tuple[str, Any], int] = {}  # (namespace, inode or old name) -> index
    later = []
    for pd in reps_f:
        d = sc.descs[pd]
        kind = sc.kinds[pd][0]
        if kind != REG and not (kind in PIPE_KINDS and not d.link.startswith("pipe:")):
            continue
        ns = "reg" if kind == REG else "fifo"
        gone = d.link.endswith(" (deleted)")
        name = d.link[: -len(" (deleted)")] if gone else d.link
        if gone:
            later.append((pd, ns, name))
        elif path_of is not None:
            out[pd] = path_of(name)
        else:
            out[pd] = ids.setdefault((ns, d.key), len([k for k in ids if k[0] == ns]))
            names = sc.paths if ns == "reg" else sc.fifo_paths
            if out[pd] == len(names):
                names.append(name)
    for pd, ns, name in later:
        if path_of is not None:
            p = path_of(name)
        else:
            names = sc.paths if ns == "reg" else sc.fifo_paths
            if name not in names:
                names.append(name)
            p = names.index(name)
        out[pd] = unlinked(p) if p >= 0 else -1
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass
class Verdict:
    variant: str
    verdict: str  # "succeeds", "leaks", "refuses", "not expressible"
    errno: str = ""
    phase: str = ""
    objref: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "succeeds"

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "verdict": self.verdict, "errno": self.errno,
                "phase": self.phase, "objref": self.objref, "reasons": self.reasons}


def _obj_words(sc: Scan, w: World, objtype: int, ptr: int) -> str:
    if objtype == OBJ_FILE:
        return f"{KIND_NAMES[w.files[ptr].kind]} {sc.names.get(ptr, '')}".strip()
    if objtype == OBJ_FILE_TABLE:
        pids = sorted({sc.task_pids[i] for i, t in enumerate(w.tasks) if t.table == ptr})
        return "fd table of " + ", ".join(f"pid {p}" for p in pids)
    if objtype == OBJ_SOCK:
        return f"socket {sc.names.get(ptr, '')}"
    if objtype == OBJ_TTY:
        side = "slave" if ptr & 1 else "master"
        return f"pty {side} tty"
    return "pipe inode"


def _outside_holders(sc: Scan, w: World, objtype: int, ptr: int) -> list[str]:
    """Who outside holds the object, in words."""
    out: list[str] = []

    def files_where(pred) -> list[int]:
        return [f for f, g in enumerate(w.files) if pred(g, f)]

    if objtype == OBJ_FILE_TABLE:
        return [sc.who(sc.task_pids[i]) + " shares it" for i, t in enumerate(w.tasks)
                if t.table == ptr and not t.inside]
    if objtype == OBJ_FILE:
        fs = [ptr]
    elif objtype == OBJ_SOCK:
        me = w.files[ptr]
        fs = files_where(lambda g, f: g.kind == UNIX and g.obj == me.obj)
    elif objtype == OBJ_TTY:
        fs = files_where(lambda g, f: g.kind in (PTMX, PTS) and g.obj == ptr >> 1)
    else:
        fs = files_where(lambda g, f: g.kind in PIPE_KINDS and g.obj == ptr)
    for f in fs:
        for pid, fd in sc.holders.get(f, []):
            if pid not in sc.inside:
                out.append(f"{sc.who(pid, fd)} holds {KIND_NAMES[w.files[f].kind]}")
    return out


def _entry_words(sc: Scan, w: World, objref: int, objtype: int, ptr: int) -> str:
    return f"{OBJ_NAMES[objtype]} objref {objref} ({_obj_words(sc, w, objtype, ptr)})"


def _leak_reasons(sc: Scan, w: World, v: Variant) -> tuple[int, list[str]]:
    """The contained check's mismatches, in words; (first objref, reasons)."""
    reasons: list[str] = []
    first = 0
    for ref, e, kernel in checkpoint.leaks(w, v):
        first = first or ref
        what = _entry_words(sc, w, ref, e.objtype, e.ptr)
        text = f"{what}: users {e.users}, kernel count {kernel}"
        holders = _outside_holders(sc, w, e.objtype, e.ptr)
        if holders:
            text += ": " + "; ".join(holders)
        elif e.users > kernel:
            text += ": counted a reference the kernel does not hold (no one outside holds it)"
        reasons.append(text)
    return first, reasons


def _write_reasons(sc: Scan, w: World, v: Variant) -> tuple[int, list[str]]:
    """Why the write step refused, in words, walking the files as the write does."""
    seen: set[int] = set()
    outside_files = {slot_file(s) for t in w.tasks if not t.inside
                     for s in w.tables[t.table] if s != EMPTY}
    for t in w.tasks:
        if not t.inside:
            continue
        for fd, s in enumerate(w.tables[t.table]):
            f = slot_file(s)
            if s == EMPTY or f in seen:
                continue
            seen.add(f)
            file = w.files[f]
            where = f"fd {fd} of {sc.who(sc.task_pids[w.tasks.index(t)])}"
            if file.kind == TIMERFD and not v.timerfd_dumped:
                return 0, [f"{where}: timerfd: f_op lacks checkpoint"]
            if file.owner and not v.owner_dumped:
                return 0, [f"{where}: {sc.names.get(f)} has an F_SETOWN owner"]
            if file.path <= -2 and not v.unlinked_dumped:
                return 0, [f"{where}: {sc.names.get(f)}: unlinked, no name to save "
                           "(checkpoint_fname)"]
            if v.refuse_pipe_direct and file.kind in PIPE_KINDS and file.f_flags & O_DIRECT:
                return 0, [f"{where}: {sc.names.get(f)}: a pipe in packet mode (O_DIRECT)"]
            if file.kind == UNIX and v.refuse_external_unix:
                peers = [g for g, x in enumerate(w.files)
                         if g != f and x.kind == UNIX and x.obj == file.obj]
                if any(p in outside_files for p in peers):
                    holders = [sc.who(p2, fd2) for g in peers
                               for p2, fd2 in sc.holders.get(g, []) if p2 not in sc.inside]
                    return 0, [f"{where}: external unix socket: its peer is held by "
                               + ", ".join(holders)]
    hashed = {(e.objtype, e.ptr) for e in w.cr.objhash}
    for f in sorted(seen):
        file = w.files[f]
        for tf, tfd in file.epitems:
            if tf not in seen and (OBJ_FILE, tf) not in hashed:
                return 0, [f"epoll {sc.names.get(f)} watches fd {tfd}, a file the container "
                           "does not hold: epoll target with no objref"]
    if v.check_at_write:
        return 0, ["the counts compared as the image was written differ"]
    return 0, ["an object first met while writing (reverse added late)"]


def _leak_words(sc: Scan, w_checked: World, refs: tuple[tuple[int, int], ...],
                v: Variant) -> list[str]:
    """Objects written although outside held them, in words (with why no check saw them)."""
    out = []
    entries = w_checked.cr.objhash
    for ref, objtype in refs:
        e = entries[ref - 1] if ref - 1 < len(entries) else None
        if e is None:
            out.append(f"{OBJ_NAMES[objtype]} objref {ref} written though shared with outside")
            continue
        text = _entry_words(sc, w_checked, ref, e.objtype, e.ptr) + " written, though "
        text += "; ".join(_outside_holders(sc, w_checked, e.objtype, e.ptr)) or "shared"
        if not v.full_container:
            text += ": this variant has no leak check"
        elif checkpoint.kernel_count(w_checked, v, e.objtype, e.ptr) is None:
            text += ": pipe inode not compared: no ref_users"
        out.append(text)
    return out


def verdicts(sc: Scan, names: Sequence[str] = DEFAULT_VARIANTS) -> list[Verdict]:
    """Each variant's checkpoint, run by the model's own steps on the scanned state."""
    out = []
    for name in names:
        v = VARIANTS[name]
        if sc.world is None:
            n = len(sc.unexpressible)
            more = f" (and {n - 1} more)" if n > 1 else ""
            out.append(Verdict(name, "not expressible", reasons=[sc.unexpressible[0] + more]))
            continue
        out.append(run_checkpoint(sc, sc.world, v))
    return out


def run_checkpoint(sc: Scan, w: World, v: Variant) -> Verdict:
    """freeze, [collect, contained,] write, visited; the first refusal ends it."""
    w = checkpoint.freeze(w, v)
    last = w
    steps = ([("collect", checkpoint.collect), ("contained", checkpoint.contained)]
             if v.full_container else [])
    steps += [("write", checkpoint.write), ("visited", checkpoint.visited)]
    for phase, step in steps:
        before = w
        w = step(w, v)
        if w.cr.error:
            code = errno.errorcode.get(w.cr.error, str(w.cr.error))
            ref, reasons = 0, []
            if phase == "collect":  # the fd tables' counts, compared as collect ends
                probe = checkpoint.collect(before, replace(v, tables_checked_at_collect=False))
                ref, reasons = _leak_reasons(sc, probe, v)
            elif phase == "contained":
                ref, reasons = _leak_reasons(sc, before, v)
            elif phase == "visited":
                if v.visited_check:
                    ref, reasons = _unvisited(sc, before)
                if not reasons:
                    ref, reasons = _leak_reasons(sc, before, v)
            else:
                ref, reasons = _write_reasons(sc, before, v)
            return Verdict(v.name, "refuses", code, phase, ref,
                           reasons or [f"the model's {phase} step refused"])
        if phase == "write":
            last = w  # the objhash with every written object
    assert w.cr.phase == DONE
    leaked = tuple(sorted(set(w.cr.leak_check) | set(w.cr.leak_write)))
    if leaked:
        return Verdict(v.name, "leaks", reasons=_leak_words(sc, last, leaked, v))
    return Verdict(v.name, "succeeds")


def _unvisited(sc: Scan, w: World) -> tuple[int, list[str]]:
    for i, e in enumerate(w.cr.objhash):
        if not e.visited:
            return i + 1, [_entry_words(sc, w, i + 1, e.objtype, e.ptr)
                           + ": collected but never written (leak: not visited)"]
    return 0, []


def exit_code(vs: list[Verdict]) -> int:
    return 0 if all(v.ok for v in vs) else 1


def describe(sc: Scan) -> list[str]:
    """The container's descriptors as the model sees them, one line each."""
    lines = []
    where = {pd: f for f, hs in sc.holders.items() for pd in hs}
    for pid in sc.inside:
        for (p, fd), f in sorted(where.items()):
            if p != pid:
                continue
            if sc.world is None:
                lines.append(f"pid {pid} fd {fd}: {sc.names.get(f, '?')}")
                continue
            file = sc.world.files[f]
            others = [sc.who(p2, fd2) for p2, fd2 in sc.holders[f] if p2 not in sc.inside]
            text = (f"pid {pid} fd {fd}: file {f} {KIND_NAMES[file.kind]} "
                    f"{flags_str(file.f_flags)} pos={file.f_pos} {sc.names.get(f, '')}")
            if others:
                text += "; also held by " + ", ".join(others)
            lines.append(text)
            if file.rcvq:  # SCM_RIGHTS messages waiting to be received, in order
                lines.append(f"pid {pid} fd {fd}: in its queue: " + ", ".join(
                    f"file {x} {KIND_NAMES[sc.world.files[x].kind]} {sc.names.get(x, '')}"
                    for x in file.rcvq))
    return lines


def verdict_lines(vs: list[Verdict]) -> list[str]:
    """Each variant's verdict on a scan as text lines (its reasons indented), for the scan
    and replay commands."""
    lines = []
    for v in vs:
        head = f"{v.variant}: {v.verdict}"
        if v.verdict == "refuses":
            head += f" -{v.errno} at {v.phase}" + (f", objref {v.objref}" if v.objref else "")
        lines.append(head)
        lines += [f"    {r}" for r in v.reasons]
    return lines
