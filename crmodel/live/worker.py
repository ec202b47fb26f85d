"""Worker process of the live-kernel driver (see ``driver.py``).

This module is started as ``python -I -S -c "import sys; sys.path.insert(0, DIR); import worker;
worker.main()" MODE ...`` (imported rather than run as a script so that its bytecode is cached)
and must only use the standard library. A worker is a thin syscall executor: it receives one
``marshal``-encoded command per SOCK_SEQPACKET record on its control socket, performs the raw
system call(s) and sends back ``("ok", value)``, ``("err", ERRNO_NAME)`` or ``("fatal",
traceback)``.

Modes (``sys.argv[1:]``):

``root RCTL CTL``
    The anchor process spawned by the driver.  It becomes a child subreaper, closes every
    descriptor except its two control sockets, and forks task 0 (which puts itself in a new
    process group and serves commands on ``CTL``).  The anchor then blocks on ``RCTL``; on
    EOF it kills task 0's process group, reaps every process of it and exits.  No worker
    reaps a child before then: an exited task stays a zombie, so that the pid an F_SETOWN
    named still has its task and F_GETOWN keeps reading it (it reads 0 once the owner is
    reaped), and no pid is reused within a sequence.
``exec CTL EXPECTED``
    A worker started by the ``exec`` action.  ``EXPECTED`` is the comma-separated list of
    descriptors in 0..63 that must have survived the exec; the worker checks that Python's
    start-up neither added nor removed any and reports a mismatch in its hello message.

Descriptors 0..63 belong to the model.  The worker never keeps a descriptor of its own in
that range: descriptors it must create for itself (a received control socket) are moved to
their reserved high number at once.  Python's ``sys.std*`` objects may wrap model
descriptors 0..2, so they are kept referenced forever (never garbage collected, hence never
closed) and replaced by a sink; workers always leave through ``os._exit``.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (slow start-up)
import ctypes
import errno
import marshal
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MODEL_FDS = 64  # descriptors 0..63 belong to the model
CHAN_BASE = 500  # control socket of the k-th task ever created is CHAN_BASE + k

F_DUPFD = 0
F_GETFD = 1
F_SETFD = 2
F_GETFL = 3
F_SETFL = 4
F_GETOWN = 9
F_DUPFD_CLOEXEC = 1030
FD_CLOEXEC = 1
SOL_SOCKET = 1
SCM_RIGHTS = 1
MSG_CTRUNC = 0x8
MSG_DONTWAIT = 0x40
MSG_NOSIGNAL = 0x4000
MSG_CMSG_CLOEXEC = 0x40000000
AF_UNIX = 1
SOCK_STREAM = 1
CLOCK_MONOTONIC = 1
SYS_CLONE = 56
CLONE_FILES = 0x400
PR_SET_CHILD_SUBREAPER = 36
SYS_PIDFD_GETFD = 438
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
RECV_FDS = 4  # room for this many descriptors in the model's recvmsg
# how an exec'd worker starts: imported as a module (cached bytecode), not run as a script
_HERE = os.path.dirname(os.path.abspath(__file__))
EXEC_BOOT = f"import sys; sys.path.insert(0, {_HERE!r}); import worker; worker.main()"

libc = ctypes.CDLL(None, use_errno=True)
libc.lseek.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int]
libc.lseek.restype = ctypes.c_int64
libc.syscall.restype = ctypes.c_long
libc.sendmsg.restype = ctypes.c_ssize_t
libc.recvmsg.restype = ctypes.c_ssize_t


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class EpollEvent(ctypes.Structure):
    _pack_ = 1  # struct epoll_event is packed on x86_64
    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


CMSG_HDR = 16  # sizeof(struct cmsghdr) on x86_64


def cmsg_space(n: int) -> int:
    return CMSG_HDR + ((n + 7) & ~7)


class _Sink:
    """Replacement for sys.stdout/sys.stderr: model descriptors must never be written."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        return None


_KEEP: list[Any] = []


def neutralize_stdio() -> None:
    _KEEP.extend([sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__])
    _KEEP.append(sys.__stderr__)
    sink = _Sink()
    sys.stdout = sink  # type: ignore[assignment]
    sys.stderr = sink  # type: ignore[assignment]


def ignore_signals() -> None:
    # exited children stay zombies until the anchor reaps them at the end (see above)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in (
        signal.SIGIO,  # O_ASYNC + F_SETOWN may target a worker
        signal.SIGURG,
        signal.SIGHUP,  # pty hangups
        signal.SIGPIPE,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGINT,  # Ctrl-C on pytest: the driver cleans up, not the terminal
    ):
        signal.signal(sig, signal.SIG_IGN)


def check(r: int) -> int:
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
    return check(libc.fcntl(fd, cmd, ctypes.c_long(arg)))


def probe(call: Any, fd: int) -> bool:
    """False when a 0-byte read (write) fails with EBADF: the file lacks FMODE_READ (WRITE)."""
    r = call(fd, None, 0)
    return r >= 0 or ctypes.get_errno() != errno.EBADF


def is_open(fd: int) -> bool:
    return libc.fcntl(fd, F_GETFD, ctypes.c_long(0)) >= 0


def open_model_fds() -> list[int]:
    return [fd for fd in range(MODEL_FDS) if is_open(fd)]


def close_range(lo: int, hi: int) -> None:
    """Close [lo, hi] (inclusive) with close_range(2)."""
    if lo <= hi:
        check(libc.syscall(ctypes.c_long(436), ctypes.c_long(lo), ctypes.c_long(hi),
                           ctypes.c_long(0)))


def send(ctl: int, obj: object) -> None:
    os.write(ctl, marshal.dumps(obj))


def recv_cmd(ctl: int) -> tuple[Any, list[int]] | None:
    """Receive one command record (and descriptors, close-on-exec); None on EOF."""
    buf = ctypes.create_string_buffer(1 << 16)
    cbuf = ctypes.create_string_buffer(cmsg_space(4 * 4))
    iov = IoVec(ctypes.cast(buf, ctypes.c_void_p), len(buf))
    while True:
        msg = MsgHdr(None, 0, ctypes.pointer(iov), 1, ctypes.cast(cbuf, ctypes.c_void_p),
                     len(cbuf), 0)
        n = libc.recvmsg(ctl, ctypes.byref(msg), MSG_CMSG_CLOEXEC)
        if n < 0 and ctypes.get_errno() == errno.EINTR:
            continue
        check(n)
        break
    if n == 0:
        return None
    fds = parse_rights(cbuf.raw, msg.msg_controllen)
    return marshal.loads(buf.raw[:n]), fds


def parse_rights(cbuf: bytes, clen: int) -> list[int]:
    fds: list[int] = []
    off = 0
    while off + CMSG_HDR <= clen:
        ln = int.from_bytes(cbuf[off:off + 8], "little")
        level = int.from_bytes(cbuf[off + 8:off + 12], "little", signed=True)
        typ = int.from_bytes(cbuf[off + 12:off + 16], "little", signed=True)
        if ln < CMSG_HDR:
            break
        if level == SOL_SOCKET and typ == SCM_RIGHTS:
            for i in range((ln - CMSG_HDR) // 4):
                p = off + CMSG_HDR + 4 * i
                fds.append(int.from_bytes(cbuf[p:p + 4], "little", signed=True))
        off += (ln + 7) & ~7
    return fds


class Worker:
    def __init__(self, ctl: int) -> None:
        self.ctl = ctl

    # -- helpers -------------------------------------------------------------------------

    def adopt_channel(self, fds: list[int], target: int) -> int:
        """Move a received control socket to its reserved high number (close-on-exec)."""
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise RuntimeError(f"expected one channel descriptor, got {fds}")
        try:
            new = fcntl(fds[0], F_DUPFD_CLOEXEC, target)
        finally:
            os.close(fds[0])
        if new != target:
            os.close(new)
            raise RuntimeError(f"channel landed on {new}, wanted {target}")
        return new

    def become_child(self, chan: int, forked: bool) -> None:
        if forked:  # private table: drop the other tasks' channels (all >= CHAN_BASE)
            close_range(CHAN_BASE, chan - 1)
            close_range(chan + 1, 0x7FFFFFFF)
        self.ctl = chan
        send(chan, ("hello", os.getpid(), []))

    # -- commands --------------------------------------------------------------------------

    def handle(self, cmd: tuple[Any, ...], fds: list[int]) -> object | None:
        name = cmd[0]
        args = cmd[1:]
        if name in ("fork", "clone"):
            chan = self.adopt_channel(fds, args[0])
            try:
                if name == "fork":
                    pid = os.fork()
                else:
                    pid = check(libc.syscall(ctypes.c_long(SYS_CLONE),
                                             ctypes.c_long(CLONE_FILES | signal.SIGCHLD),
                                             ctypes.c_long(0), ctypes.c_long(0),
                                             ctypes.c_long(0), ctypes.c_long(0)))
            except OSError:
                os.close(chan)
                raise
            if pid == 0:
                self.become_child(chan, forked=(name == "fork"))
                return None
            if name == "fork":
                os.close(chan)  # the parent's copy of the child's channel
            return ("ok", pid)
        for fd in fds:  # no other command carries descriptors
            os.close(fd)
        if name == "open":
            path, flags = args
            return ("ok", check(libc.open(os.fsencode(path), flags, 0o644)))
        if name == "close":
            return ("ok", check(libc.close(args[0])))
        if name == "dup":
            return ("ok", check(libc.dup(args[0])))
        if name == "dup2":
            return ("ok", check(libc.dup2(args[0], args[1])))
        if name == "fcntl":
            return ("ok", fcntl(*args))
        if name == "lseek":
            return ("ok", check(libc.lseek(args[0], args[1], 0)))
        if name == "pipe2":
            arr = (ctypes.c_int * 2)()
            check(libc.pipe2(arr, 0))
            return ("ok", (arr[0], arr[1]))
        if name == "socketpair":
            arr = (ctypes.c_int * 2)()
            check(libc.socketpair(AF_UNIX, SOCK_STREAM, 0, arr))
            return ("ok", (arr[0], arr[1]))
        if name == "openpty":
            return ("ok", self.openpty())
        if name == "epoll_create1":
            return ("ok", check(libc.epoll_create1(0)))
        if name == "epoll_ctl":
            epfd, op, fd, events = args
            ev = EpollEvent(events, fd & 0xFFFFFFFF)
            return ("ok", check(libc.epoll_ctl(epfd, op, fd, ctypes.byref(ev))))
        if name == "timerfd":
            return ("ok", check(libc.timerfd_create(CLOCK_MONOTONIC, 0)))
        if name == "sendmsg":
            return ("ok", self.sendmsg(*args))
        if name == "recvmsg":
            return ("ok", self.recvmsg(args[0]))
        if name == "reopen":
            return self.reopen(*args)
        if name == "getfd":  # the restorer: a copy of another task's open file
            pidfd = os.pidfd_open(args[0])
            try:
                return ("ok", check(libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD),
                                                 ctypes.c_long(pidfd), ctypes.c_long(args[1]),
                                                 ctypes.c_long(0))))
            finally:
                os.close(pidfd)
        if name == "ptsnum":  # unlockpt + ptsname's number, of a master from /dev/ptmx
            n = ctypes.c_int(0)
            check(libc.ioctl(args[0], ctypes.c_ulong(TIOCSPTLCK), ctypes.byref(n)))
            check(libc.ioctl(args[0], ctypes.c_ulong(TIOCGPTN), ctypes.byref(n)))
            return ("ok", n.value)
        if name == "ptpeer":  # the slave of a master, opened as glibc's openpty does
            return ("ok", check(libc.ioctl(args[0], ctypes.c_ulong(TIOCGPTPEER),
                                           ctypes.c_int(args[1]))))
        if name == "close_range":
            close_range(args[0], args[1])
            return ("ok", 0)
        if name == "obs":
            out = []
            for fd in range(MODEL_FDS):
                d = libc.fcntl(fd, F_GETFD, ctypes.c_long(0))
                if d >= 0:
                    out.append((fd, libc.fcntl(fd, F_GETFL, ctypes.c_long(0)), d,
                                probe(libc.read, fd), probe(libc.write, fd),
                                libc.fcntl(fd, F_GETOWN, ctypes.c_long(0))))
            return ("ok", out)
        if name == "park":  # `replay --criu`: leave the driver, so a dump meets no channel
            send(self.ctl, ("ok", 0))
            os.close(self.ctl)
            park()
        if name == "exec":
            return self.exec_()
        if name == "exit":
            os._exit(0)
        if name == "sleep":  # test hook: simulates a hung worker
            time.sleep(args[0])
            return ("ok", 0)
        raise RuntimeError(f"unknown command {name!r}")

    def openpty(self) -> tuple[int, int]:
        if hasattr(libc, "openpty"):  # glibc >= 2.34 exports openpty from libc itself
            m = ctypes.c_int()
            s = ctypes.c_int()
            check(libc.openpty(ctypes.byref(m), ctypes.byref(s), None, None, None))
            return (m.value, s.value)
        m2, s2 = os.openpty()  # Python sets close-on-exec; the C call does not
        fcntl(m2, F_SETFD, 0)
        fcntl(s2, F_SETFD, 0)
        return (m2, s2)

    def sendmsg(self, sock: int, fd: int) -> int:
        data = ctypes.create_string_buffer(b"x", 1)
        iov = IoVec(ctypes.cast(data, ctypes.c_void_p), 1)
        cbuf = ctypes.create_string_buffer(cmsg_space(4))
        hdr = (CMSG_HDR + 4).to_bytes(8, "little") + SOL_SOCKET.to_bytes(4, "little")
        hdr += SCM_RIGHTS.to_bytes(4, "little") + fd.to_bytes(4, "little", signed=True)
        ctypes.memmove(cbuf, hdr, len(hdr))
        msg = MsgHdr(None, 0, ctypes.pointer(iov), 1, ctypes.cast(cbuf, ctypes.c_void_p),
                     len(cbuf), 0)
        return check(libc.sendmsg(sock, ctypes.byref(msg), MSG_DONTWAIT | MSG_NOSIGNAL))

    def recvmsg(self, sock: int) -> tuple[Any, ...]:
        data = ctypes.create_string_buffer(1)
        iov = IoVec(ctypes.cast(data, ctypes.c_void_p), 1)
        cbuf = ctypes.create_string_buffer(cmsg_space(4 * RECV_FDS))
        msg = MsgHdr(None, 0, ctypes.pointer(iov), 1, ctypes.cast(cbuf, ctypes.c_void_p),
                     len(cbuf), 0)
        n = check(libc.recvmsg(sock, ctypes.byref(msg), MSG_DONTWAIT))
        fds = tuple(parse_rights(cbuf.raw, msg.msg_controllen))
        if msg.msg_flags & MSG_CTRUNC:
            return ("ctrunc",) + fds
        if n == 0:
            return ("eof",) + fds
        return fds

    def reopen(self, path: str, flags: int, guard: float) -> object:
        """open() that may block (FIFO semantics): interrupted by SIGALRM after `guard` s."""
        fired: list[bool] = []
        old = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
        signal.setitimer(signal.ITIMER_REAL, guard)
        try:
            r = libc.open(os.fsencode(path), flags, 0)
            e = ctypes.get_errno()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        if r >= 0:
            return ("ok", r)
        if e == errno.EINTR and fired:
            return ("err", "BLOCKS")
        return ("err", errno.errorcode.get(e, str(e)))

    def exec_(self) -> object:
        expected = [fd for fd in range(MODEL_FDS) if is_open(fd)
                    and not libc.fcntl(fd, F_GETFD, ctypes.c_long(0)) & FD_CLOEXEC]
        fcntl(self.ctl, F_SETFD, 0)
        argv = [sys.executable, "-I", "-S", "-c", EXEC_BOOT, "exec", str(self.ctl),
                ",".join(map(str, expected))]
        try:
            os.execv(sys.executable, argv)
        except OSError as e:
            fcntl(self.ctl, F_SETFD, FD_CLOEXEC)
            return ("err", errno.errorcode.get(e.errno or 0, str(e.errno)))
        raise AssertionError("unreachable")

    # -- main loop -------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            got = recv_cmd(self.ctl)
            if got is None:  # the driver went away
                os._exit(0)
            cmd, fds = got
            try:
                reply = self.handle(cmd, fds)
            except OSError as e:
                reply = ("err", errno.errorcode.get(e.errno or 0, str(e.errno)))
            except Exception:  # reported to the driver, which raises
                import traceback

                reply = ("fatal", traceback.format_exc())
            if reply is not None:
                send(self.ctl, reply)


def main_root(rctl: int, ctl: int) -> None:
    ignore_signals()
    neutralize_stdio()
    check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
    lo, hi = sorted((rctl, ctl))
    close_range(0, lo - 1)
    close_range(lo + 1, hi - 1)
    close_range(hi + 1, 0x7FFFFFFF)
    fcntl(rctl, F_SETFD, FD_CLOEXEC)
    fcntl(ctl, F_SETFD, FD_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.close(rctl)
        w = Worker(ctl)
        send(ctl, ("hello", os.getpid(), []))
        w.serve()
        os._exit(0)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child already did it (or is gone)
    os.close(ctl)
    try:
        while os.read(rctl, 64):  # a byte from the driver: reap the orphans that came to us
            reap()
    except OSError:
        pass
    # The driver went away: kill task 0's process group and reap it (orphans of killed
    # workers come to us, the subreaper); a group of zombies still takes signals, so the
    # group is gone only once every member is reaped.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            break
        reap()
        time.sleep(0.001)
    reap()
    os._exit(0)


def park() -> None:
    """Serve nobody from now on: reap children as they exit (so that the pids of a dumped and
    killed tree come free for its restore), forever."""
    while True:
        try:
            os.waitpid(-1, 0)
        except OSError:  # ECHILD: none (yet)
            time.sleep(0.05)


def reap() -> None:
    """Reap every child that has exited, without waiting."""
    while True:
        try:
            got, _ = os.waitpid(-1, os.WNOHANG)
        except OSError:  # ECHILD: none left
            return
        if got == 0:
            return


def main_exec(ctl: int, expected: list[int]) -> None:
    ignore_signals()
    neutralize_stdio()
    fcntl(ctl, F_SETFD, FD_CLOEXEC)
    now = open_model_fds()
    extra = sorted(set(now) - set(expected))
    missing = sorted(set(expected) - set(now))
    w = Worker(ctl)
    send(ctl, ("hello", os.getpid(), [extra, missing]))
    w.serve()


def main() -> None:
    mode = sys.argv[1]
    if mode == "root":
        main_root(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "exec":
        exp = [int(x) for x in sys.argv[3].split(",") if x]
        main_exec(int(sys.argv[2]), exp)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    os._exit(0)


if __name__ == "__main__":
    main()
