"""CRIU's own open-file tests (test/zdtm/static/*.c in checkpoint-restore/criu) written as
model scenarios: the test's set-up as environment actions, then a checkpoint of the container
and a restart. Plain data, read by `tests/test_zdtm.py` (which runs them) and by
`crmodel/docs.py` (which tabulates them).

Task 0 is outside the container (zdtm's runner); the first action forks task 1 into it (the
test's process), whose own forks and clones stay inside. Descriptor numbers are the test's
where they fit in the model's tables, smaller otherwise. The model's unix sockets are stream
sockets: a test on datagram sockets is written with stream ones where the difference does
not matter to what it checks, and says so.

`expect` gives each variant's outcome: "ok" (checkpoint and restart succeed) or the errno
name the checkpoint fails with. `checks` are the aspects the test compares after restore
(`model.system.ASPECTS`); where a variant restores, each must come back equal, except those
listed in `differs` for it. For `criu` the expectation is what the zdtm test expects of CRIU;
for `linuxcr` and `fixed` it is the design's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.flags import O_APPEND, O_ASYNC, O_DIRECT, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY

VARIANTS = ("linuxcr", "criu", "fixed")


@dataclass(frozen=True)
class Scenario:
    name: str
    zdtm: str  # the zdtm/static test it follows, "" for a rule CRIU's tests do not cover
    doc: str  # what the test sets up, in one sentence
    actions: tuple[tuple, ...]
    expect: dict[str, str]  # variant -> "ok" or the checkpoint's errno name
    checks: tuple[str, ...] = ()  # aspects the test compares after restore
    differs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # expected to differ
    why: dict[str, str] = field(default_factory=dict)  # variant -> the rule that decides
    max_fds: int = 8
    kinds: tuple[str, ...] = ()  # config kinds beyond the presets' that it needs


IN = ("fork", 0, 1)  # task 0 (outside) forks task 1 into the container
_PTY_LF = {"linuxcr": "the slave from openpty() lacks O_LARGEFILE, reopened by name it has it "
           "(the test does not check it)", "criu": "the same: CRIU 4.2 showed it on this kernel",
           "fixed": "restart sets O_LARGEFILE as saved"}

_PIPE_LF = {"linuxcr": "the ends reopened through /proc have O_LARGEFILE, the rebuilt pipe "
            "has not (the test checks O_NONBLOCK only)",
            "criu": "pipes.c reopens them through /proc/self/fd: the bit stays"}
_UNLINKED = {"linuxcr": "checkpoint_fname refuses a file whose name is gone", "fixed":
             "as linuxcr", "criu": "files-reg.c saves it as a link-remap or ghost file and "
             "restores it nameless"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "fd", "fd", "a child closes every descriptor it inherited; after restore it has none",
        (IN, ("open", 1, 0, O_RDWR, 0, 0), ("pipe", 1), ("fork", 1, 1),
         ("close", 2, 0), ("close", 2, 1), ("close", 2, 2)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "sharing"),
    ),
    Scenario(
        "fdt_shared", "fdt_shared",
        "two CLONE_FILES children share the test's table; a file opened and dup2'd later is "
        "seen by all three",
        (IN, ("pipe", 1), ("clone_files", 1, 1), ("clone_files", 1, 1),
         ("open", 1, 0, O_RDWR, 0, 0), ("dup2", 1, 2, 5), ("lseek", 1, 5, 1)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "sharing", "offsets"),
    ),
    Scenario(
        "file_shared", "file_shared",
        "a file, its dup and a second open of the path, inherited by a child; the parent "
        "sets FD_CLOEXEC on the dup and moves both offsets",
        (IN, ("open", 1, 0, O_RDWR, 0, 0), ("dup", 1, 0), ("open", 1, 0, O_RDWR, 0, 0),
         ("fork", 1, 1), ("setfd", 1, 1, 1), ("lseek", 1, 0, 3), ("lseek", 1, 2, 5)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "sharing", "offsets", "cloexec"),
    ),
    Scenario(
        "file_cloexec", "file_cloexec",
        "O_CLOEXEC on open, a dup of it (clear), a second open and its F_DUPFD_CLOEXEC copy "
        "(dup, then F_SETFD)",
        (IN, ("open", 1, 0, O_RDONLY, 0, 1), ("open", 1, 0, O_RDONLY, 0, 0), ("dup", 1, 0),
         ("dup", 1, 1), ("setfd", 1, 3, 1)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "cloexec", "sharing"),
    ),
    Scenario(
        "file_append", "file_append", "one open with O_APPEND and one without, on one file",
        (IN, ("open", 1, 0, O_RDWR, O_APPEND, 0), ("open", 1, 0, O_RDWR, 0, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "flags", "sharing"),
    ),
    Scenario(
        "file_fown", "file_fown",
        "both ends of a pipe with an owner (F_SETOWN) and O_ASYNC, inherited by a child",
        (IN, ("pipe", 1), ("setown", 1, 0), ("setown", 1, 1), ("setfl", 1, 0, O_ASYNC),
         ("setfl", 1, 1, O_ASYNC), ("fork", 1, 1)),
        {"linuxcr": "EBUSY", "criu": "ok", "fixed": "EBUSY"},
        checks=("fds", "flags", "owner", "peers"),
        why={"linuxcr": "a file with an owner is refused", "fixed": "as linuxcr",
             "criu": "files.c saves a fown entry and restores it"},
    ),
    Scenario(
        "pipe00", "pipe00",
        "two pipes between parent and child, each end dup2'd to a fixed number and the "
        "originals closed",
        (IN, ("pipe", 1), ("pipe", 1), ("fork", 1, 1),
         ("dup2", 1, 1, 5), ("dup2", 1, 2, 6), ("close", 1, 0), ("close", 1, 1),
         ("close", 1, 2), ("close", 1, 3),
         ("dup2", 2, 0, 6), ("dup2", 2, 3, 5), ("close", 2, 0), ("close", 2, 1),
         ("close", 2, 2), ("close", 2, 3)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "peers", "kinds"),
    ),
    Scenario(
        "pipe01", "pipe01",
        "a pipe, a dup of each end and each end opened again through /proc/self/fd; "
        "O_NONBLOCK set on the write end",
        (IN, ("pipe", 1), ("dup", 1, 0), ("dup", 1, 1), ("reopen", 1, 1, 0, O_RDONLY),
         ("reopen", 1, 1, 1, O_WRONLY), ("setfl", 1, 1, O_NONBLOCK)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "sharing", "peers"),
        why=_PIPE_LF,
    ),
    Scenario(
        "pipe02", "pipe02",
        "the read end of a pipe opened again through /proc/self/fd, O_NONBLOCK on the new one "
        "only",
        (IN, ("pipe", 1), ("reopen", 1, 1, 0, O_RDONLY), ("setfl", 1, 2, O_NONBLOCK)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "sharing", "peers"),
        why=_PIPE_LF,
    ),
    Scenario(
        "pipe_largefile", "",
        "a pipe end opened through /proc/self/fd has O_LARGEFILE (open adds it); the pipe "
        "rebuilt by pipe() does not",
        (IN, ("pipe", 1), ("reopen", 1, 1, 0, O_RDONLY), ("close", 1, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "O_LARGEFILE", "peers"),
        differs={"linuxcr": ("O_LARGEFILE",)},
        why={"linuxcr": "restart rebuilds the pipe with pipe(): O_LARGEFILE lost",
             "criu": "pipes.c reopens the end through /proc/self/fd with its saved flags",
             "fixed": "restart sets O_LARGEFILE as saved"},
    ),
    Scenario(
        "pipe_packet", "",
        "a pipe in packet mode: O_DIRECT set on its write end",
        (IN, ("pipe", 1), ("setfl", 1, 1, O_DIRECT)),
        {"linuxcr": "ok", "criu": "ENOTSUP", "fixed": "ok"},
        checks=("fds", "flags", "peers"),
        why={"criu": "pipes.c: \"The packetized mode for pipes is not supported yet\"",
             "linuxcr": "F_SETFL restores O_DIRECT (in CKPT_SETFL_MASK)", "fixed": "as linuxcr"},
    ),
    Scenario(
        "pipe_outside", "",
        "the inhfd/pipe case without --inherit-fd: the test holds a pipe's read end, the "
        "runner outside its write end",
        (("pipe", 0), IN, ("close", 1, 1), ("close", 0, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "EBUSY"}, checks=("fds", "kinds"),
        why={"linuxcr": "a pipe inode has no ref_users: the leak is not seen",
             "criu": "an external pipe is dumped silently; restore makes a new, unconnected pipe",
             "fixed": "pipes are leak-checked"},
    ),
    Scenario(
        "epoll", "epoll",
        "an epoll watching the read ends of two pipes, one dup2'd to a fixed number",
        (IN, ("epoll_create", 1), ("pipe", 1), ("pipe", 1), ("dup2", 1, 1, 7),
         ("epoll_add", 1, 0, 7), ("epoll_add", 1, 0, 3)),
        {"linuxcr": "EBUSY", "criu": "ok", "fixed": "ok"},
        checks=("fds", "epoll", "peers", "sharing"),
        why={"linuxcr": "eventpoll's ->collect counts a `users` for each target, which "
             "holds no f_count: a false leak", "fixed": "targets collected without a count",
             "criu": "eventpoll.c dumps the targets by descriptor"},
    ),
    Scenario(
        "epoll01", "epoll01",
        "one epoll watching the same pipe end under three descriptors (dup'd), then two of "
        "those closed",
        (IN, ("epoll_create", 1), ("pipe", 1), ("dup", 1, 1), ("dup", 1, 1),
         ("epoll_add", 1, 0, 1), ("epoll_add", 1, 0, 3), ("epoll_add", 1, 0, 4),
         ("close", 1, 3), ("close", 1, 4)),
        {"linuxcr": "EBUSY", "criu": "ok", "fixed": "ok"},
        checks=("fds", "epoll", "peers"),
        why={"linuxcr": "the epoll over-count: a false leak", "fixed": "no over-count",
             "criu": "items whose descriptor is closed are gone from the interest list"},
    ),
    Scenario(
        "pty00", "pty00",
        "a pty pair whose master and slave are dup2'd to fixed numbers and the originals "
        "closed",
        (IN, ("openpty", 1), ("dup2", 1, 0, 7), ("dup2", 1, 1, 6), ("close", 1, 0),
         ("close", 1, 1)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "peers", "kinds"),
        why=_PTY_LF,
    ),
    Scenario(
        "pty01", "pty01",
        "one master, two slaves opened by name (/proc/self/fd of the slave)",
        (IN, ("openpty", 1), ("reopen", 1, 1, 1, O_RDWR), ("reopen", 1, 1, 1, O_RDWR),
         ("close", 1, 1)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "peers", "kinds", "flags", "O_LARGEFILE"),
    ),
    Scenario(
        "pty02", "pty02",
        "a pty master inherited by a child, which dups it",
        (IN, ("openpty", 1), ("fork", 1, 1), ("dup", 2, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "peers", "sharing"), why=_PTY_LF,
    ),
    Scenario(
        "pty04", "pty04",
        "two slaves whose master was closed (hung up): CRIU restores them with a fake master",
        (IN, ("openpty", 1), ("reopen", 1, 1, 1, O_RDWR), ("close", 1, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "kinds"),
        why={**_PTY_LF,
             "criu": "tty.c: a hung-up slave is no active pair, no master needed; the one "
             "from openpty() comes back with O_LARGEFILE"},
    ),
    Scenario(
        "pty_master_outside", "",
        "the test holds a pty slave whose master the runner outside holds (zdtm runs such "
        "tests with --shell-job)",
        (("openpty", 0), IN, ("close", 1, 0), ("close", 0, 1)),
        {"linuxcr": "EBUSY", "criu": "EBUSY", "fixed": "EBUSY"}, checks=("fds",),
        why={"criu": "tty.c: \"Found slave peer index N without correspond master peer\"",
             "linuxcr": "the tty's kref counts the outside master's link: a usage leak",
             "fixed": "as linuxcr"},
    ),
    Scenario(
        "scm00", "scm00",
        "both ends of a pipe sent in flight over a socketpair (datagram in the test) and "
        "closed; received after restore",
        (IN, ("socketpair", 1), ("pipe", 1), ("sendmsg", 1, 0, 2), ("sendmsg", 1, 0, 3),
         ("close", 1, 2), ("close", 1, 3)),
        {"linuxcr": "EBUSY", "criu": "ok", "fixed": "EBUSY"},
        checks=("fds", "queue", "peers", "kinds"),
        why={"linuxcr": "in-flight SCM_RIGHTS refused (\"af_unix: pass fd\")",
             "fixed": "as linuxcr", "criu": "sk-queue.c dumps the files in flight"},
    ),
    Scenario(
        "scm05", "scm05",
        "an epoll sent twice in flight and closed; received back after restore",
        (IN, ("socketpair", 1), ("epoll_create", 1), ("sendmsg", 1, 0, 2),
         ("sendmsg", 1, 0, 2), ("close", 1, 2)),
        {"linuxcr": "EBUSY", "criu": "ok", "fixed": "EBUSY"},
        checks=("fds", "queue", "kinds"),
        why={"linuxcr": "in-flight SCM_RIGHTS refused", "fixed": "as linuxcr",
             "criu": "one file, in flight twice, dumped once"},
    ),
    Scenario(
        "sockets_spair", "sockets_spair", "a unix stream socketpair, both ends in the test",
        (IN, ("socketpair", 1)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"}, checks=("fds", "peers", "kinds"),
    ),
    Scenario(
        "socket-ext", "socket-ext",
        "the test's socket is connected to a peer the runner outside holds (stream here; the "
        "test's datagram case with --ext-unix-sk is not expressible)",
        (("socketpair", 0), IN, ("close", 1, 1), ("close", 0, 0)),
        {"linuxcr": "EBUSY", "criu": "EBUSY", "fixed": "EBUSY"}, checks=("fds",),
        why={"criu": "sk-unix.c: \"External socket is used\"; with --ext-unix-sk a stream "
             "peer is still refused (\"Can't dump half of stream unix connection\")",
             "linuxcr": "the socket's sk_refcnt counts its outside peer", "fixed": "as linuxcr"},
    ),
    Scenario(
        "socket_pair_held_outside", "",
        "both ends of a socketpair in the test; the runner outside also holds one end",
        (("socketpair", 0), IN, ("close", 0, 1)),
        {"linuxcr": "EBUSY", "criu": "ok", "fixed": "EBUSY"}, checks=("fds", "peers"),
        why={"criu": "sk-unix.c only asks whether the peer was dumped: it was",
             "linuxcr": "the file's f_count counts the outside descriptor", "fixed": "as linuxcr"},
    ),
    Scenario(
        "socket_peer_in_flight_outside", "",
        "the test holds a socket whose peer is in flight in a queue the runner outside holds",
        (("socketpair", 0), ("socketpair", 0), IN, ("close", 1, 1), ("close", 1, 2),
         ("close", 1, 3), ("sendmsg", 0, 2, 1), ("close", 0, 0), ("close", 0, 1)),
        {"linuxcr": "EBUSY", "criu": "EBUSY", "fixed": "EBUSY"}, checks=("fds",),
        why={"criu": "sk-unix.c: the peer was not dumped, \"External socket is used\"",
             "linuxcr": "the peer's sk_refcnt counts its in-flight file", "fixed": "as linuxcr"},
    ),
    Scenario(
        "fifo", "fifo", "a named pipe opened read-write",
        (IN, ("open_fifo", 1, 0, O_RDWR, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "kinds", "paths"), kinds=("fifo",),
    ),
    Scenario(
        "fifo_ro", "fifo_ro",
        "a named pipe opened read-write and read-only, then the read-write one closed",
        (IN, ("open_fifo", 1, 0, O_RDWR, 0), ("open_fifo", 1, 0, O_RDONLY, 0), ("close", 1, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "kinds", "paths"), kinds=("fifo",),
        why={"linuxcr": "fifo_file_restore opens it read-write (never waits), then narrows "
             "the access mode"},
    ),
    Scenario(
        "fifo_wronly", "fifo_wronly",
        "a child opens a named pipe for reading, the test for writing, then the child closes "
        "its end (the child's open is non-blocking here: the model does not wait)",
        (IN, ("fork", 1, 1), ("open_fifo", 2, 0, O_RDONLY, O_NONBLOCK),
         ("open_fifo", 1, 0, O_WRONLY, 0), ("close", 2, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "kinds", "paths"), kinds=("fifo",),
    ),
    Scenario(
        "fifo-rowo-pair", "fifo-rowo-pair",
        "two named pipes: one read-write, inherited and dup2'd by a child; the other read by "
        "the test and written by the child",
        (IN, ("open_fifo", 1, 1, O_RDWR, 0), ("fork", 1, 1),
         ("open_fifo", 1, 0, O_RDONLY, O_NONBLOCK), ("open_fifo", 2, 0, O_WRONLY, 0),
         ("dup2", 2, 0, 5), ("close", 2, 0)),
        {"linuxcr": "ok", "criu": "ok", "fixed": "ok"},
        checks=("fds", "flags", "kinds", "paths", "peers", "sharing"), kinds=("fifo",),
    ),
    Scenario(
        "fifo-ghost", "fifo-ghost",
        "a named pipe opened read-write and read-only, unlinked, the read-write end closed",
        (IN, ("open_fifo", 1, 0, O_RDWR, 0), ("open_fifo", 1, 0, O_RDONLY, 0),
         ("unlink", 1, 1, 0), ("close", 1, 0)),
        {"linuxcr": "EBADF", "criu": "ok", "fixed": "EBADF"},
        checks=("fds", "flags", "kinds", "paths"), kinds=("fifo", "unlinked"),
        why=_UNLINKED,
    ),
    Scenario(
        "unlink_fifo", "unlink_fifo", "a named pipe opened read-write, then unlinked",
        (IN, ("open_fifo", 1, 0, O_RDWR, 0), ("unlink", 1, 1, 0)),
        {"linuxcr": "EBADF", "criu": "ok", "fixed": "EBADF"},
        checks=("fds", "kinds", "paths"), kinds=("fifo", "unlinked"), why=_UNLINKED,
    ),
    Scenario(
        "unlink_fifo_wronly", "unlink_fifo_wronly",
        "a named pipe opened for reading (non-blocking) and for writing, then unlinked",
        (IN, ("open_fifo", 1, 0, O_RDONLY, O_NONBLOCK), ("open_fifo", 1, 0, O_WRONLY, 0),
         ("unlink", 1, 1, 0)),
        {"linuxcr": "EBADF", "criu": "ok", "fixed": "EBADF"},
        checks=("fds", "flags", "kinds", "paths", "peers"), kinds=("fifo", "unlinked"),
        why=_UNLINKED,
    ),
    Scenario(
        "unlink_fstat00", "unlink_fstat00",
        "a regular file opened, unlinked and seeked (the file's size is not modelled)",
        (IN, ("open", 1, 0, O_RDWR, 0, 0), ("unlink", 1, 0, 0), ("lseek", 1, 0, 3)),
        {"linuxcr": "EBADF", "criu": "ok", "fixed": "EBADF"},
        checks=("fds", "offsets", "paths"), kinds=("unlinked",), why=_UNLINKED,
    ),
    Scenario(
        "timerfd", "timerfd", "a timerfd in the test",
        (IN, ("timerfd", 1)),
        {"linuxcr": "EBADF", "criu": "ok", "fixed": "EBADF"}, checks=("fds", "kinds"),
        why={"linuxcr": "timerfd's f_op has no ->checkpoint", "fixed": "as linuxcr",
             "criu": "timerfd.c dumps and restores it"},
    ),
)
