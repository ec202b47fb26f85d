"""Live-kernel driver: run a sequence of fd-table actions with real syscalls.

``run_sequence(actions, *, npaths=2, file_size=8, timeout=10.0) -> list[Step]`` creates a fresh
temporary directory (``tempfile.mkdtemp``; ext4 on the development machine, which matters for
O_DIRECT) holding ``f0 .. f{npaths-1}`` of ``file_size`` bytes, starts one task (task 0) whose
descriptor table is empty in the model range 0..63, performs every action with real system
calls and returns one ``Step(result, obs)`` per action.  ``result`` is ``("ok", value)`` or
``("err", "ENAME")``; failing actions are outcomes, never exceptions.  Invalid actions (unknown
name, wrong arity, non-int argument, task index out of range, descriptor argument outside
0..63, path index out of range) raise ``ValueError``; a failing driver raises ``DriverError`` or
``TimeoutError`` (``timeout`` bounds every wait on a worker).  Every process is killed and
reaped and the directory removed in all cases.

Processes
---------
The driver spawns an *anchor* (worker.py in mode ``root``): a child subreaper that forks
task 0, which makes itself a process-group leader (not a session leader, so
opening a tty never acquires a controlling terminal). Every task is a real process running
``worker.py`` (a thin syscall executor using ctypes, so descriptors get exactly the C calls'
semantics: ``open`` without Python's implicit O_CLOEXEC, ``dup`` without F_DUPFD_CLOEXEC ...).
No worker reaps a child: a task that exits stays a zombie until the session ends, when the
anchor reaps them all (so the pid an F_SETOWN named keeps its task, and no pid is reused
within a sequence). All workers ignore SIGIO/SIGURG (O_ASYNC plus
F_SETOWN may target them), SIGHUP, SIGPIPE, SIGTTIN, SIGTTOU and SIGINT. The control socket
(SOCK_SEQPACKET, marshal records) of the k-th task ever created is descriptor ``500 + k``
(close-on-exec except during the task's own exec; 499 is the anchor's); fds received for the
driver's own use land transiently on the lowest free descriptor and are moved up at once, which
leaves the model range unchanged. ``fork`` is ``os.fork``, ``clone_files`` is
``syscall(SYS_clone, CLONE_FILES|SIGCHLD, 0, 0, 0, 0)``, ``exec`` is ``os.execv`` of a fresh
``python -I -S -c "...import worker..." exec ...`` (the new worker checks that the set of open
descriptors in 0..63 is exactly the pre-exec set minus the close-on-exec ones; Python's start-up
was never seen to add or drop one; it wraps 0..2 in ``sys.std*`` objects, which the worker keeps
alive forever and never uses), ``exit`` is ``os._exit(0)`` (the driver waits on the pidfd). Task
indexes are positions among the live tasks in creation order.

Actions -> calls
----------------
open: ``open(dir/f{path}, acc|flags|(O_CLOEXEC if cloexec), 0644)``; close; dup; dup2; setfl:
``F_SETFL`` with the int as given; setfd: ``F_SETFD`` FD_CLOEXEC or 0; setown: ``F_SETOWN`` with
the task's pid; lseek: SEEK_SET; pipe: ``pipe2(0)``; openpty: glibc ``openpty`` (no
close-on-exec); epoll_create: ``epoll_create1(0)``; epoll_add/del: ``epoll_ctl`` ADD (EPOLLIN) /
DEL; socketpair: ``AF_UNIX, SOCK_STREAM``; sendmsg: one byte ``b"x"`` + SCM_RIGHTS [fd],
MSG_DONTWAIT|MSG_NOSIGNAL -> ``("ok", 1)``; recvmsg: one byte, room for 4 fds, MSG_DONTWAIT ->
``("ok", fds)`` (a tuple, empty if the byte carried none), ``("ok", ("ctrunc", *fds))`` if
MSG_CTRUNC, ``("ok", ("eof",))`` on end of stream (peer closed, queue empty), or
``("err", "EAGAIN")``; reopen: ``open("/proc/<pid>/fd/<fd>", acc)`` *without* O_NONBLOCK, under a
SIGALRM guard of min(2 s, timeout/4) that would turn a blocking open into ``("err", "BLOCKS")``
(never seen: the pipes here are pipefs pipes, whose open never waits for a partner, unlike a
FIFO's); timerfd: ``timerfd_create(CLOCK_MONOTONIC, 0)``.  fork / clone_files give
``("ok", new_task_index)``; close, setfl, setfd, setown, epoll_add/del, exec, exit give
``("ok", 0)``.

The restorer (``restore.py``) also uses four worker commands that are no model action:
``getfd`` (pidfd_getfd of another task's descriptor), ``ptsnum`` (unlock a master from
``/dev/ptmx`` and return its pty number), ``ptpeer`` (ioctl TIOCGPTPEER: the slave as glibc's
openpty opens it) and ``close_range``.  ``replay --criu`` (``criu.py``) uses ``park``: the worker
answers, closes its control channel (a dump must meet no socket to the driver) and from then
on only reaps its children; a byte on the anchor's channel makes it reap the orphans that
came to it (the pids of a dumped, killed tree must come free for its restore).

Observation (after every action)
--------------------------------
``tasks``: per live task ``{"fds": {fd: {"flags": F_GETFL, "cloexec": 0|1, "pos": fdinfo pos}}}``
(fds 0..63 ascending, int keys); ``files``: partition of all ``[task, fd]`` by open file
description (kcmp KCMP_FILE); ``tables``: partition of task indexes by fd table (kcmp
KCMP_FILES); ``objects``: partition of the ``[task, fd]`` that are pipes (pipefs inode), ptys
(master: fdinfo ``tty-index``; slave: index from st_rdev, majors 136..143) or unix sockets
(pairs joined through sock_diag UNIX_DIAG_PEER); ``epoll``: ``{"t:fd": sorted tfd numbers of
its fdinfo}``; ``kinds``: ``{"t:fd": kind}`` with kinds reg, pipe_r, pipe_w, pipe_rw (a pipe
reopened O_RDWR through /proc), ptmx, pts, epoll, unix, timerfd, other; ``fmode``:
``{"t:fd": FMODE_READ|FMODE_WRITE bits}``, probed by a read and a write of 0 bytes (only
EBADF says the mode lacks the bit; a 0-byte read or write changes nothing, on these kinds);
``paths``: ``{"t:fd": i}`` for regular
files, i the index of the file ``f{i}`` with the descriptor's (st_dev, st_ino), -2 - i for the
inode ``f{i}`` named before an ``unlink``, -1 for none;
``inq``: ``{"t:fd": bytes}`` for unix sockets, the receive queue's unread bytes (sock_diag
UNIX_DIAG_RQLEN: one per message here); ``flight``: ``{"t:fd": [name, ...]}`` per unix
socket, the files in flight in its queue in order, each named by its first descriptor
``"t:fd"`` or, for a file in flight only, ``"~k"`` (numbered as met: sockets in (task, fd)
order, then breadth-first through the queues of sockets in flight, which get a ``"~k"`` entry
of their own), and ``adrift``: ``{"~k": kind}``. They are read with recvmsg(MSG_PEEK) on a
copy of the socket taken with pidfd_getfd and SO_PEEK_OFF set, so that successive peeks step
over the messages (a plain peek stops at the first that carries descriptors); the peeked
descriptors land in the driver only, are matched with kcmp and closed, and SO_PEEK_OFF is
unset again (see ``_flight``). ``owner``: ``{"t:fd": 1}`` for files with an F_SETOWN owner
(F_GETOWN not 0). F_GETOWN reads 0 once the owner's task is reaped (``pid_task`` finds
none); the kernel still holds the owner (``f_owner.pid``), which is what Linux-CR refuses,
so exited tasks are kept as zombies until the end of the sequence and the owner stays
visible. The owner's identity is not compared: the model keeps only whether one was set.
Turning O_ASYNC on for a pty end sets an owner too (tty_fasync -> __f_setown; found by this
comparison). FMODE_LSEEK is not observed (a failing lseek is the lseek action's own outcome).
``epoll`` and the ``"t:fd"`` maps are ordered by (task, fd); all lists are sorted.

Observed F_GETFL values (Linux 6.18 x86_64, glibc 2.36; octal)
-------------------------------------------------------------
=============================================  ===============================================
descriptor                                     F_GETFL
=============================================  ===============================================
regular file from open(acc|flags)              acc | 0o100000 (O_LARGEFILE) | flags kept:
                                               O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME,
                                               O_ASYNC (!), O_SYNC/O_DSYNC; never O_CLOEXEC,
                                               O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC
pipe read end (pipe2(0))                       0o0
pipe write end (pipe2(0))                      0o1
ptmx master (openpty)                          0o100002
pts slave (openpty: glibc uses TIOCGPTPEER)    0o2          (no O_LARGEFILE)
epoll (epoll_create1(0))                       0o2
unix socket (socketpair), both ends            0o2
timerfd (timerfd_create(.., 0))                0o2
reopened /proc/PID/fd/N of a regular file      acc | 0o100000
reopened pipe (either end, any acc)            acc | 0o100000  (same pipe; O_RDWR allowed)
reopened ptmx                                  acc | 0o100000  of a NEW pty (new tty-index)
reopened pts slave                             acc | 0o100000  (same pty)
reopened epoll / unix socket / timerfd         ("err", "ENXIO")
reopened pts whose master is closed            ("err", "EIO")
descriptor received by recvmsg                 the sender's open file description, unchanged
=============================================  ===============================================

F_SETFL changes only O_APPEND, O_NONBLOCK, O_DIRECT and O_NOATIME, plus O_ASYNC (0o20000) on
files with a ``->fasync`` method (pipes, ptmx, pts, unix sockets) but not on regular files,
epoll or timerfd (the call succeeds, the bit stays as it was); the access mode and every other
bit are ignored.  O_DIRECT on ptmx, pts, epoll, sockets and timerfd fails with EINVAL and then
nothing changes (it succeeds on regular files of ext4 and on pipes, where it means packet
mode).  Surprise: a regular file opened *with* O_ASYNC shows 0o20000 in F_GETFL forever, since
F_SETFL cannot clear it (nor set it on a regular file opened without it).

lseek(SEEK_SET): regular files move (negative offset: EINVAL); pipes, ptmx, pts and sockets
give ESPIPE; epoll and timerfd give ``("ok", 0)`` whatever the offset and the position stays
0 (noop_llseek).

Epoll items are keyed by (file, fd number): the ``tfd`` listed is the number used at
``epoll_ctl`` time, and stays listed after that fd is closed while another descriptor (a dup,
another task's copy, an SCM_RIGHTS message in flight) keeps the file open; it disappears when
the last reference goes.  A file kept alive only by a garbage cycle of in-flight SCM_RIGHTS
messages (a socket sent into its own queue, then all descriptors closed) stays alive, and its
epoll item stays listed, until the unix garbage collector runs, which did not happen within
the sequences tried (it is asynchronous: a possible source of nondeterminism).

Limits: descriptors >= 64 (a table full in 0..63) are returned as results but not observed;
a file alive only in flight (SCM_RIGHTS) appears in no observation except through epoll
``tfd`` lists and ``flight``; the pipe/pty/socket ``objects`` grouping covers only
descriptors in tables.  If
the driver process itself is SIGKILLed, the workers and the anchor exit on EOF of their
control sockets, but the anchor then stays a zombie of whatever reaps orphans (PID 1).

Cost (2-CPU VM): about 15 ms to start a sequence when the machine is idle (the anchor's Python
start-up), about 1 ms per action including the observation, 2-3 ms per fork, about 10 ms per
exec; a typical 12-action sequence takes 30-45 ms (up to ~100 ms on a loaded machine).
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from model.actions import ACTIONS

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Import the worker as a module (its bytecode is cached, unlike a script's): saves ~4 ms/start.
WORKER_ARGV = [sys.executable, "-I", "-S", "-c",
               f"import sys; sys.path.insert(0, {os.path.dirname(WORKER)!r}); "
               "import worker; worker.main()"]

MODEL_FDS = 64
CHAN_BASE = 500  # control socket of the k-th task ever created: CHAN_BASE + k
ROOT_CHAN = 499  # the anchor process's control socket

O_CLOEXEC = 0o2000000
O_ACCMODE = 0o3
O_LARGEFILE = 0o100000  # the kernel's value (Python's os.O_LARGEFILE is 0 on x86_64)
F_SETFL = 4
F_SETFD = 2
F_SETOWN = 8
FD_CLOEXEC = 1
EPOLLIN = 0x1
EPOLL_CTL_ADD = 1
EPOLL_CTL_DEL = 2
SYS_KCMP = 312
SYS_PIDFD_GETFD = 438
SO_PEEK_OFF = 42
KCMP_FILE = 0
KCMP_FILES = 2
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
UDIAG_SHOW_PEER = 0x4
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
FMODE_READ = 0x1
FMODE_WRITE = 0x2
UNIX_DIAG_PEER = 2
PTMX_RDEV = (5, 2)
PTS_MAJORS = range(136, 144)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Step(NamedTuple):
    """Outcome of one action: ``("ok", value)`` / ``("err", "EBADF")`` and the observation."""

    result: tuple[str, Any]
    obs: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Action validation
# --------------------------------------------------------------------------------------------

# name -> (arguments after the name, positions among them of the descriptors of the model
# range), from the declarations (model.actions)
_ARITY: dict[str, tuple[int, tuple[int, ...]]] = {
    a.name: (1 + len(a.params), tuple(i + 1 for i, p in enumerate(a.params) if p.sort == "fd"))
    for a in ACTIONS.values()
}
_ARITY["_sleep"] = (2, ())  # test hook: the worker sleeps (simulates a hung worker)


def _validate_static(action: tuple[Any, ...], npaths: int) -> None:
    if not isinstance(action, tuple) or not action or action[0] not in _ARITY:
        raise ValueError(f"unknown action {action!r}")
    nargs, fdpos = _ARITY[action[0]]
    args = action[1:]
    if len(args) != nargs:
        raise ValueError(f"{action[0]} takes {nargs} arguments: {action!r}")
    if action[0] != "_sleep" and not all(isinstance(a, int) for a in args):
        raise ValueError(f"arguments must be ints: {action!r}")
    for p in fdpos:
        if not 0 <= args[p] < MODEL_FDS:
            raise ValueError(f"descriptor outside 0..{MODEL_FDS - 1}: {action!r}")
    if action[0] in ("open", "open_fifo") and not 0 <= args[1] < npaths:
        raise ValueError(f"path index out of range: {action!r}")
    if action[0] == "unlink" and not (args[1] in (0, 1) and 0 <= args[2] < npaths):
        raise ValueError(f"unlink wants (task, fifo 0|1, path index): {action!r}")


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class DriverError(RuntimeError):
    """The driver itself failed (a worker died, hung or reported an internal error)."""


@dataclass
class _Task:
    pid: int
    sock: socket.socket
    pidfd: int
    chan: int


@dataclass
class _Session:
    timeout: float
    tmp: str = ""
    root_pid: int = 0
    root_pidfd: int = -1
    root_sock: socket.socket | None = None
    pgid: int = 0
    tasks: list[_Task] = field(default_factory=list)
    dead: list[_Task] = field(default_factory=list)
    created: int = 0
    nl: socket.socket | None = None
    unix_diag: bool = True
    paths: dict[tuple[int, int], int] = field(default_factory=dict)  # (st_dev, st_ino) -> i

    # -- control channel -----------------------------------------------------------------

    def _recv(self, task: _Task) -> Any:
        try:
            data = task.sock.recv(1 << 20)
        except TimeoutError:
            raise TimeoutError(f"worker pid {task.pid} did not answer within "
                               f"{self.timeout} s") from None
        if not data:
            raise DriverError(f"worker pid {task.pid} closed its control channel")
        reply = marshal.loads(data)
        if reply[0] == "fatal":
            raise DriverError(f"worker pid {task.pid} failed:\n{reply[1]}")
        return reply

    def _send(self, task: _Task, cmd: tuple[Any, ...], fds: Sequence[int] = ()) -> None:
        data = marshal.dumps(cmd)
        if fds:
            task.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        struct.pack(f"{len(fds)}i", *fds))])
        else:
            task.sock.send(data)

    def call(self, task: _Task, *cmd: Any) -> tuple[str, Any]:
        self._send(task, cmd)
        reply = self._recv(task)
        return (reply[0], reply[1])

    def _new_task(self, sock: socket.socket, chan: int) -> _Task:
        sock.settimeout(self.timeout)
        tmp = _Task(pid=0, sock=sock, pidfd=-1, chan=chan)
        hello = self._recv(tmp)
        if hello[0] != "hello":
            raise DriverError(f"unexpected greeting {hello!r}")
        tmp.pid = hello[1]
        tmp.pidfd = os.pidfd_open(tmp.pid)
        return tmp

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, npaths: int, file_size: int) -> None:
        self.tmp = tempfile.mkdtemp(prefix="crmodel-kdriver-")
        self.file_size = file_size
        for i in range(npaths):
            self._make_name(0, i)
            self._make_name(1, i)
        rc, rw = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.root_sock = rc  # closed by close()
        tc, tw = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                if {rw.fileno(), tw.fileno()} & {ROOT_CHAN, CHAN_BASE}:
                    raise DriverError("the driver process itself uses descriptors 499/500")
                self.root_pid = os.posix_spawn(
                    sys.executable,
                    [*WORKER_ARGV, "root", str(ROOT_CHAN), str(CHAN_BASE)],
                    {},
                    file_actions=[(os.POSIX_SPAWN_DUP2, rw.fileno(), ROOT_CHAN),
                                  (os.POSIX_SPAWN_DUP2, tw.fileno(), CHAN_BASE)],
                )
                self.root_pidfd = os.pidfd_open(self.root_pid)
            finally:
                rw.close()
                tw.close()
            self.created = 1
            task0 = self._new_task(tc, CHAN_BASE)
        except BaseException:
            tc.close()
            raise
        self.tasks.append(task0)
        self.pgid = task0.pid

    def _make_name(self, fifo: int, i: int) -> None:
        """Regular file f<i> (with `file_size` bytes) or FIFO q<i> in the scratch folder."""
        if fifo:
            os.mkfifo(os.path.join(self.tmp, f"q{i}"), 0o644)
            return
        name = os.path.join(self.tmp, f"f{i}")
        old = next((k for k, v in self.paths.items() if v == i), None)
        if old is not None:  # unlinked: files still open on the old inode are nameless
            self.paths[old] = -2 - i
        with open(name, "wb") as f:
            f.write(bytes((97 + i + j) % 256 for j in range(self.file_size)))
        st = os.stat(name)
        self.paths[(st.st_dev, st.st_ino)] = i

    def name_index(self, link: str) -> int:
        """The model's name index of a path in the scratch folder (`f<i>` or `q<i>`), else -1
        (the scanner's `path_of`)."""
        head, tail = os.path.split(link)
        if head != self.tmp or tail[:1] not in ("f", "q") or not tail[1:].isdigit():
            return -1
        return int(tail[1:])

    def _wait_exit(self, pidfd: int, deadline: float) -> bool:
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if p.poll(left * 1000):
                return True

    def close(self) -> None:
        """Kill and reap every process of the session, remove the temporary directory.

        Known tasks are killed through their pidfds; then EOF on the anchor's channel makes
        it kill task 0's process group (unknown descendants too: a fork whose reply was
        lost) and reap all of it, exited tasks kept as zombies included, before it exits;
        the anchor itself is the driver's child and is reaped with waitpid.  If the anchor
        does not exit in time it is killed, its orphans go to PID 1, and the driver kills
        what is left of the group.  Never raises for a process that is already gone.
        """
        deadline = time.monotonic() + 5.0
        everyone = self.tasks + self.dead
        self.tasks, self.dead = [], []
        for t in everyone:
            _quiet(signal.pidfd_send_signal, t.pidfd, signal.SIGKILL)
        if self.root_sock is not None:
            self.root_sock.close()  # EOF: the anchor kills task 0's group, reaps it, exits
            self.root_sock = None
        for t in everyone:
            self._wait_exit(t.pidfd, deadline)  # a zombie counts as exited
            _quiet(os.close, t.pidfd)
            t.sock.close()
        if self.root_pid:
            if not self._wait_exit(self.root_pidfd, deadline):
                _quiet(signal.pidfd_send_signal, self.root_pidfd, signal.SIGKILL)
                self._wait_exit(self.root_pidfd, time.monotonic() + 5.0)
                while self.pgid and time.monotonic() < deadline + 5.0:
                    try:
                        os.killpg(self.pgid, signal.SIGKILL)
                    except OSError:  # ESRCH: the group is empty
                        break
                    time.sleep(0.0005)
            _quiet(os.waitpid, self.root_pid, 0)
            _quiet(os.close, self.root_pidfd)
            self.root_pid = 0
        if self.nl is not None:
            self.nl.close()
            self.nl = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = ""

    # -- actions ---------------------------------------------------------------------------

    def task(self, idx: int) -> _Task:
        if not 0 <= idx < len(self.tasks):
            raise ValueError(f"task index {idx} out of range (live tasks: {len(self.tasks)})")
        return self.tasks[idx]

    def spawn_child(self, parent: _Task, kind: str) -> tuple[str, Any]:
        chan = CHAN_BASE + self.created
        self.created += 1
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._send(parent, (kind, chan), [theirs.fileno()])
        finally:
            theirs.close()
        try:
            reply = self._recv(parent)
            if reply[0] != "ok":
                mine.close()
                return (reply[0], reply[1])
            child = self._new_task(mine, chan)
        except BaseException:
            mine.close()
            raise
        if child.pid != reply[1]:
            self.dead.append(child)
            raise DriverError(f"child pid mismatch {child.pid} != {reply[1]}")
        self.tasks.append(child)
        return ("ok", len(self.tasks) - 1)

    def do_exec(self, t: _Task) -> tuple[str, Any]:
        self._send(t, ("exec",))
        reply = self._recv(t)
        if reply[0] != "hello":
            return (reply[0], reply[1])
        if reply[1] != t.pid:
            raise DriverError(f"exec'd worker has pid {reply[1]}, expected {t.pid}")
        extra, missing = reply[2]
        if extra or missing:
            raise DriverError(f"exec changed descriptors beyond the kernel's doing: "
                              f"new {extra}, lost {missing}")
        return ("ok", 0)

    def do_exit(self, idx: int) -> tuple[str, Any]:
        t = self.tasks.pop(idx)
        self.dead.append(t)
        self._send(t, ("exit",))
        if not self._wait_exit(t.pidfd, time.monotonic() + self.timeout):
            raise TimeoutError(f"worker pid {t.pid} did not exit")
        self.dead.remove(t)
        os.close(t.pidfd)
        t.sock.close()
        return ("ok", 0)

    def perform(self, action: tuple[Any, ...]) -> tuple[str, Any]:
        name = action[0]
        t = self.task(action[1])
        a = action[2:]
        if name == "open":
            path, acc, flags, cloexec = a
            fl = acc | flags | (O_CLOEXEC if cloexec else 0)
            return self.call(t, "open", os.path.join(self.tmp, f"f{path}"), fl)
        if name in ("close", "dup"):
            return self.call(t, name, a[0])
        if name == "dup2":
            return self.call(t, "dup2", a[0], a[1])
        if name == "setfl":
            return self.call(t, "fcntl", a[0], F_SETFL, a[1])
        if name == "setfd":
            return self.call(t, "fcntl", a[0], F_SETFD, FD_CLOEXEC if a[1] else 0)
        if name == "setown":
            return self.call(t, "fcntl", a[0], F_SETOWN, t.pid)
        if name == "lseek":
            return self.call(t, "lseek", a[0], a[1])
        if name == "fork":
            return self.spawn_child(t, "fork")
        if name == "clone_files":
            return self.spawn_child(t, "clone")
        if name == "exec":
            return self.do_exec(t)
        if name == "exit":
            return self.do_exit(action[1])
        if name == "pipe":
            return self.call(t, "pipe2")
        if name == "openpty":
            return self.call(t, "openpty")
        if name == "epoll_create":
            return self.call(t, "epoll_create1")
        if name == "epoll_add":
            return self.call(t, "epoll_ctl", a[0], EPOLL_CTL_ADD, a[1], EPOLLIN)
        if name == "epoll_del":
            return self.call(t, "epoll_ctl", a[0], EPOLL_CTL_DEL, a[1], 0)
        if name == "socketpair":
            return self.call(t, "socketpair")
        if name == "sendmsg":
            return self.call(t, "sendmsg", a[0], a[1])
        if name == "recvmsg":
            return self.call(t, "recvmsg", a[0])
        if name == "reopen":
            target, fd, acc = a
            path = f"/proc/{self.task(target).pid}/fd/{fd}"
            return self.call(t, "reopen", path, acc, min(2.0, self.timeout / 4))
        if name == "timerfd":
            return self.call(t, "timerfd")
        if name == "open_fifo":  # may wait for a partner: the guarded open
            path, acc, flags = a
            return self.call(t, "reopen", os.path.join(self.tmp, f"q{path}"), acc | flags,
                             min(2.0, self.timeout / 4))
        if name == "unlink":  # a name, not a descriptor: the driver does it for the task
            fifo, path = a
            os.unlink(os.path.join(self.tmp, f"{'q' if fifo else 'f'}{path}"))
            self._make_name(fifo, path)
            return ("ok", 0)
        if name == "_sleep":
            return self.call(t, "sleep", a[0])
        raise ValueError(f"unknown action {action!r}")

    # -- observation -----------------------------------------------------------------------

    def _unix_peer(self, ino: int) -> tuple[bool, int, int]:
        """(is a unix socket, peer inode or 0, bytes in its receive queue) via sock_diag."""
        if self.nl is None:
            self.nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self.nl.settimeout(self.timeout)
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, ino,
                          UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)
        self.nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST,
                                 ino, 0) + req)
        data = self.nl.recv(1 << 16)
        _ln, typ, _fl, _seq, _pid = struct.unpack_from("=IHHII", data)
        if typ == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, 16)[0]
            if err in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                self.unix_diag = False  # no unix_diag in this kernel
            return (False, 0, 0)
        off = 16 + 16  # nlmsghdr + unix_diag_msg
        end = min(len(data), _ln)
        peer = rq = 0
        while off + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4:
                break
            if atype == UNIX_DIAG_PEER:
                peer = struct.unpack_from("=I", data, off + 4)[0]
            elif atype == UNIX_DIAG_RQLEN:  # {rqueue, wqueue}: bytes unread, for a stream
                rq = struct.unpack_from("=I", data, off + 4)[0]
            off += (alen + 3) & ~3
        return (True, peer, rq)

    def observe(self) -> dict[str, Any]:
        tasks = self.tasks
        n = len(tasks)
        # fd tables: partition of task indexes
        table_of = list(range(n))
        for i in range(n):
            for j in range(i):
                if table_of[j] == j and not _kcmp(tasks[i].pid, tasks[j].pid, KCMP_FILES, 0, 0):
                    table_of[i] = j
                    break
        reps = [i for i in range(n) if table_of[i] == i]
        for r in reps:
            self._send(tasks[r], ("obs",))
        listing: dict[int, list[tuple[int, int, int]]] = {}
        for r in reps:
            reply = self._recv(tasks[r])
            listing[r] = reply[1]

        # per table: static information about each descriptor
        info: dict[tuple[int, int], dict[str, Any]] = {}
        for r in reps:
            pid = tasks[r].pid
            for fd, fl, fdfl, can_read, can_write, owner in listing[r]:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    fdinfo = f.read()
                pos = 0
                tfds: list[int] = []
                tty_index = None
                for line in fdinfo.splitlines():
                    if line.startswith("pos:"):
                        pos = int(line.split()[1])
                    elif line.startswith("tfd:"):
                        tfds.append(int(line.split()[1]))
                    elif line.startswith("tty-index:"):
                        tty_index = int(line.split()[1])
                kind, obj = self._classify(link, st, fl, tty_index, (r, fd))
                info[(r, fd)] = {
                    "flags": fl, "cloexec": 1 if fdfl & FD_CLOEXEC else 0, "pos": pos,
                    "kind": kind, "obj": obj, "key": (st.st_dev, st.st_ino),
                    "epoll": sorted(tfds) if kind == "epoll" else None,
                    "fmode": (FMODE_READ if can_read else 0) | (FMODE_WRITE if can_write else 0),
                    "path": self.paths.get((st.st_dev, st.st_ino), -1),
                    "owner": owner,
                }

        # open file descriptions among table representatives (kcmp KCMP_FILE)
        buckets: dict[tuple[int, int], list[list[tuple[int, int]]]] = {}
        for (r, fd), d in info.items():
            groups = buckets.setdefault(d["key"], [])
            for g in groups:
                r2, fd2 = g[0]
                if _kcmp(tasks[r].pid, tasks[r2].pid, KCMP_FILE, fd, fd2) == 0:
                    g.append((r, fd))
                    break
            else:
                groups.append([(r, fd)])

        # unix socket peers
        objs: dict[Any, Any] = {}
        for d in info.values():
            if d["kind"] == "socket":
                ino = d["obj"][1]
                is_unix, peer, rq = self._unix_peer(ino) if self.unix_diag else (True, 0, -1)
                d["kind"] = "unix" if is_unix else "other"
                d["inq"] = rq
                if is_unix:
                    objs[ino] = peer
                d["obj"] = ("unix", ino) if is_unix else None
        parent: dict[Any, Any] = {}

        def find(x: Any) -> Any:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for ino, peer in objs.items():
            find(("unix", ino))
            if peer and peer in objs:
                parent[find(("unix", ino))] = find(("unix", peer))

        members = {r: [i for i in range(n) if table_of[i] == r] for r in reps}
        tasks_obs: list[dict[str, Any]] = []
        kinds: dict[str, str] = {}
        epoll: dict[str, list[int]] = {}
        object_groups: dict[Any, list[list[int]]] = {}
        fmode: dict[str, int] = {}
        paths: dict[str, int] = {}
        inq: dict[str, int] = {}
        owners: dict[str, int] = {}
        first: dict[int, str] = {}  # id of a file's group -> its first descriptor's key
        group_of: dict[tuple[int, int], list[tuple[int, int]]] = {
            m: g for gs in buckets.values() for g in gs for m in g}
        for i in range(n):
            r = table_of[i]
            fds: dict[int, dict[str, int]] = {}
            for fd, *_ in listing[r]:
                d = info[(r, fd)]
                key = f"{i}:{fd}"
                fds[fd] = {"flags": d["flags"], "cloexec": d["cloexec"], "pos": d["pos"]}
                kinds[key] = d["kind"]
                fmode[key] = d["fmode"]
                first.setdefault(id(group_of[(r, fd)]), key)
                if d["owner"]:  # F_GETOWN: the owner's pid (its task lives, or is a zombie)
                    owners[key] = 1
                if d["kind"] in ("reg", "reg (deleted)"):
                    paths[key] = d["path"]
                if d["kind"] == "unix":
                    inq[key] = d["inq"]
                if d["epoll"] is not None:
                    epoll[f"{i}:{fd}"] = d["epoll"]
                if d["obj"] is not None:
                    o = find(d["obj"]) if d["obj"][0] == "unix" else d["obj"]
                    object_groups.setdefault(o, []).append([i, fd])
            tasks_obs.append({"fds": fds})
        flight, adrift = self._flight(listing, table_of, info, buckets, first)
        files: list[list[list[int]]] = []
        for groups in buckets.values():
            for g in groups:
                files.append(sorted([i, fd] for (r, fd) in g for i in members[r]))
        return {
            "tasks": tasks_obs,
            "files": sorted(files),
            "tables": sorted(sorted(members[r]) for r in reps),
            "objects": sorted(sorted(g) for g in object_groups.values()),
            "epoll": epoll,  # built in (task, fd) order
            "kinds": kinds,
            "fmode": fmode,
            "paths": paths,
            "inq": inq,
            "owner": owners,
            "flight": flight,
            "adrift": adrift,
        }

    def _flight(self, listing: dict[int, list[tuple[int, ...]]], table_of: list[int],
                info: dict[tuple[int, int], dict[str, Any]],
                buckets: dict[tuple[int, int], list[list[tuple[int, int]]]],
                first: dict[int, str]) -> tuple[dict[str, list[Any]], dict[str, str]]:
        """Which open files are in flight in each unix socket's queue, in order.

        Each message is read with recvmsg(MSG_PEEK) on a copy of the socket (pidfd_getfd),
        with SO_PEEK_OFF set so that successive peeks step over the messages instead of
        stopping at the first that carries descriptors; the peeked descriptors (new
        references, installed in the driver only) are matched with kcmp against the tasks'
        descriptors, then closed, and SO_PEEK_OFF is unset: the queue, the files and every
        count are as they were.  Peeking stops at the queued byte count (sock_diag), so it
        never reaches an empty queue, where a pending ECONNRESET would be consumed.  A file
        is named by its first descriptor ("task:fd"), a file in flight only by "~k" in the
        order met (sockets in (task, fd) order, then breadth-first through the queues of
        sockets in flight), with its kind in ``adrift`` and, for a socket, its queue."""
        me = os.getpid()
        held: list[int] = []
        named: list[tuple[int, tuple[int, int]]] = []  # in flight only: (driver fd, key)
        adrift: dict[str, str] = {}
        flight: dict[str, list[Any]] = {}
        todo: list[int] = []

        def name(mine: int) -> str:
            st = os.fstat(mine)
            key = (st.st_dev, st.st_ino)
            for g in buckets.get(key, ()):
                r, fd = g[0]
                if _kcmp(me, self.tasks[r].pid, KCMP_FILE, mine, fd) == 0:
                    return first[id(g)]
            for k, (other, okey) in enumerate(named):
                if okey == key and _kcmp(me, me, KCMP_FILE, mine, other) == 0:
                    return f"~{k}"
            named.append((mine, key))
            todo.append(mine)
            return f"~{len(named) - 1}"

        def queue(mine: int, rq: int) -> list[Any]:
            msgs = [fds for _n, fds, _t in peek_queue(mine, rq)]
            for fds in msgs:
                held.extend(fds)
            return [name(fds[0]) if len(fds) == 1 else [name(x) for x in fds] for fds in msgs]

        try:
            peeked: dict[tuple[int, int], list[Any]] = {}
            for i in range(len(self.tasks)):
                r = table_of[i]
                for fd, *_ in listing[r]:
                    d = info[(r, fd)]
                    if d["kind"] != "unix":
                        continue
                    if (r, fd) not in peeked:
                        peeked[(r, fd)] = []
                        if d["inq"] > 0:
                            mine = _getfd(self.tasks[r].pid, fd)
                            held.append(mine)
                            peeked[(r, fd)] = queue(mine, d["inq"])
                    flight[f"{i}:{fd}"] = peeked[(r, fd)]
            j = 0
            while j < len(todo):
                mine = todo[j]
                k = f"~{j}"
                st = os.fstat(mine)
                link = os.readlink(f"/proc/self/fd/{mine}")
                kind, _ = self._classify(link, st, _getfl(mine), None, (-1, mine))
                if kind == "socket":
                    is_unix, _peer, rq = self._unix_peer(st.st_ino)
                    kind = "unix" if is_unix else "other"
                    if is_unix:
                        flight[k] = queue(mine, rq) if rq > 0 else []
                adrift[k] = kind
                j += 1
        finally:
            for x in held:
                _quiet(os.close, x)
        return flight, adrift

    @staticmethod
    def _classify(link: str, st: os.stat_result, flags: int, tty_index: int | None,
                  where: tuple[int, int]) -> tuple[str, Any]:
        import stat as st_mod

        mode = st.st_mode
        # a regular file or FIFO whose name was unlinked while it was open (a hung-up pty
        # slave's /dev/pts node goes too, but the model tells those apart by the tty)
        if link.endswith(" (deleted)") and (st_mod.S_ISREG(mode) or st_mod.S_ISFIFO(mode)):
            kind, obj = _Session._classify(link[: -len(" (deleted)")], st, flags, tty_index,
                                           where)
            return kind + " (deleted)", obj
        if link.startswith("pipe:") or st_mod.S_ISFIFO(mode):
            acc = flags & O_ACCMODE
            kind = {0: "pipe_r", 1: "pipe_w"}.get(acc, "pipe_rw")
            return kind, ("pipe", st.st_dev, st.st_ino)
        if link.startswith("socket:"):
            return "socket", ("socket", st.st_ino)
        if link == "anon_inode:[eventpoll]":
            return "epoll", None
        if link == "anon_inode:[timerfd]":
            return "timerfd", None
        if st_mod.S_ISCHR(mode):
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            if (major, minor) == PTMX_RDEV:
                # fdinfo "tty-index:" (pty_show_fdinfo) names the pty of a master; without it
                # the master is reported as an object of its own
                obj = ("pty", tty_index) if tty_index is not None else ("ptmx?", where)
                return "ptmx", obj
            if major in PTS_MAJORS:
                return "pts", ("pty", (major - PTS_MAJORS[0]) * 256 + minor)
            return "other", None
        if st_mod.S_ISREG(mode):
            return "reg", None
        return "other", None


def _quiet(fn: Any, *args: Any) -> None:
    """Call ``fn(*args)`` ignoring OSError (the process or descriptor is already gone)."""
    try:
        fn(*args)
    except OSError:
        pass


def peek_queue(sock: int, nbytes: int) -> list[tuple[int, list[int], bool]]:
    """The messages queued on a unix stream socket (`sock`, a descriptor of this process) as
    (bytes, descriptors, truncated), first to last, without taking them off the queue.

    recvmsg(MSG_PEEK) alone stops at the first message that carries descriptors; with
    SO_PEEK_OFF set, each peek starts where the last one ended. Peeking stops at `nbytes`
    (the queue's length, from sock_diag), so it never meets an empty queue, where a pending
    error (ECONNRESET) would be consumed. The descriptors are new ones in this process: the
    caller closes them. SO_PEEK_OFF is set back as it was."""
    s = socket.socket(fileno=os.dup(sock))
    out: list[tuple[int, list[int], bool]] = []
    try:
        old = s.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
        s.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
        try:
            seen = 0
            while seen < nbytes:
                data, anc, fl, _addr = s.recvmsg(nbytes - seen, socket.CMSG_SPACE(4 * 8),
                                                 socket.MSG_PEEK | socket.MSG_DONTWAIT)
                fds = [x for level, typ, raw in anc
                       if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS
                       for x in struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) // 4 * 4])]
                out.append((len(data), fds, bool(fl & socket.MSG_CTRUNC)))
                if not data:
                    break
                seen += len(data)
        finally:
            s.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, old)
    finally:
        s.close()
    return out


def _getfd(pid: int, fd: int) -> int:
    """A new descriptor, in this process, of the open file behind `pid`'s `fd`."""
    pidfd = os.pidfd_open(pid)
    try:
        r = _libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd),
                          ctypes.c_long(fd), ctypes.c_long(0))
    finally:
        os.close(pidfd)
    if r < 0:
        e = ctypes.get_errno()
        raise DriverError(f"pidfd_getfd({pid}, {fd}): {os.strerror(e)}")
    return int(r)


def _getfl(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _kcmp(pid1: int, pid2: int, typ: int, idx1: int, idx2: int) -> int:
    r = _libc.syscall(ctypes.c_long(SYS_KCMP), ctypes.c_long(pid1), ctypes.c_long(pid2),
                      ctypes.c_long(typ), ctypes.c_long(idx1), ctypes.c_long(idx2))
    if r < 0:
        e = ctypes.get_errno()
        raise DriverError(f"kcmp({pid1}, {pid2}, {typ}, {idx1}, {idx2}): {os.strerror(e)}")
    return int(r)


def run_sequence(actions: Sequence[tuple[Any, ...]], *, npaths: int = 2, file_size: int = 8,
                 timeout: float = 10.0) -> list[Step]:
    """Run ``actions`` with real syscalls; return one :class:`Step` per action.

    Errors of the actions are outcomes (``("err", NAME)``).  Invalid actions (unknown name,
    wrong arity, task index out of range, descriptor argument outside 0..63) raise
    ``ValueError``; a failing driver raises ``DriverError`` or ``TimeoutError`` (``timeout``
    bounds every wait on a worker).  All processes are killed and reaped and the temporary
    directory removed in every case.
    """
    for action in actions:
        _validate_static(action, npaths)
    sess = _Session(timeout=timeout)
    try:
        sess.start(npaths, file_size)
        steps: list[Step] = []
        for action in actions:
            result = sess.perform(action)
            steps.append(Step(result, sess.observe()))
        return steps
    finally:
        sess.close()
