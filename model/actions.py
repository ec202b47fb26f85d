"""Each environment action declared once: its name, the kernel call it stands for, and its
parameters with their domains (read from the config).

An action is the tuple ``(name, task, *args)``, the arguments in the order of `Action.params`.
What is derived from these declarations: the config's action names (`model.config`), the
explicit enumeration (`model.env.env_actions`, which adds only when a value is a step), the
symbolic model's parameters and their domain guards, decoding a z3 model into an action and
the inverse (`model.symbolic`), the text of a trace step (`model.system.format_action`), and
the argument builder of the conformance test. A new action is one entry here plus its
semantics (`model.env`) and, if the z3 engine covers it, its symbolic twin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model.flags import flags_str


@dataclass(frozen=True)
class Domain:
    """Where a parameter's values come from. `config`: the config field listing them (or
    counting them, for `range`-like domains); `sort`: how the symbolic model encodes a value
    (its bit width follows from the sort: a task, a descriptor, a path, an access mode, a
    flag set, an offset, or a boolean)."""

    doc: str
    sort: str
    config: str | None = None


DOMAINS: dict[str, Domain] = {
    "fd": Domain("an open descriptor of the acting task", "fd"),
    "fd_number": Domain("any descriptor number below max_fds", "fd"),
    "task": Domain("any live task", "task"),
    "target_fd": Domain("an open descriptor of task t2", "fd"),
    "watched_fd": Domain("a descriptor the epoll instance fd watches", "fd"),
    "paths": Domain("a regular file's path, below `paths`", "path", "paths"),
    "access_modes": Domain("an access mode of `access_modes`", "acc", "access_modes"),
    "open_flags": Domain("a status-flag set of `open_flags`", "flags", "open_flags"),
    "open_cloexec": Domain("O_CLOEXEC or not (only not, unless `open_cloexec`)", "bool",
                           "open_cloexec"),
    "setfl_flags": Domain("a flag set of `setfl_flags`", "flags", "setfl_flags"),
    "offsets": Domain("a file offset below `offsets`", "offset", "offsets"),
    "bit": Domain("0 or 1", "bool"),
}


@dataclass(frozen=True)
class Param:
    """One argument: `name` is also the symbolic model's name for it (shared between actions
    with the same meaning), `domain` a key of `DOMAINS`."""

    name: str
    domain: str

    @property
    def sort(self) -> str:
        return DOMAINS[self.domain].sort


@dataclass(frozen=True)
class Action:
    """An environment action. `per_fd`: its first parameter is a descriptor of the acting
    task, and the enumeration offers it descriptor by descriptor; `kind`: the file kind
    (`model.config.KINDS`) whose presence in a config enables it, None for every config;
    `text`: the kernel call with its arguments, for traces (default ``name(arg, ...)``)."""

    name: str
    call: str
    params: tuple[Param, ...] = ()
    per_fd: bool = False
    kind: str | None = None
    text: Callable[[dict[str, int]], str] | None = None

    def args(self, a: tuple) -> dict[str, int]:
        """The named arguments of an action tuple `(name, task, *args)`."""
        if len(a) != 2 + len(self.params):
            raise ValueError(f"{self.name}: {len(self.params)} arguments expected, not {a!r}")
        return {p.name: x for p, x in zip(self.params, a[2:], strict=True)}

    def make(self, t: int, **args: int) -> tuple:
        """The action tuple from named arguments (every parameter must be given)."""
        return (self.name, t, *(args[p.name] for p in self.params))

    def format(self, a: tuple) -> str:
        args = self.args(a)
        body = self.text(args) if self.text else (
            f"{self.name}({', '.join(str(x) for x in args.values())})")
        return f"task {a[1]}: {body}"


def _open_text(a: dict[str, int]) -> str:
    fl = flags_str(a["acc"] | a["oflags"]) + ("|O_CLOEXEC" if a["cl"] else "")
    return f"open(f{a['path']}, {fl})"


def _child_text(call: str) -> Callable[[dict[str, int]], str]:
    def text(a: dict[str, int]) -> str:
        return f"{call}, child {'into the container' if a['ch_in'] else 'outside'}"

    return text


FD, FD2 = Param("fd", "fd"), Param("fd2", "fd")

# In the order the explicit enumeration offers them (per task: open, then each descriptor's
# calls, then the rest): the order of states and so of traces depends on it.
ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("open", "open(path, acc | flags | O_CLOEXEC?)",
           (Param("path", "paths"), Param("acc", "access_modes"), Param("oflags", "open_flags"),
            Param("cl", "open_cloexec")), kind="reg", text=_open_text),
    Action("close", "close(fd)", (FD,), per_fd=True),
    Action("dup", "dup(fd)", (FD,), per_fd=True),
    Action("dup2", "dup2(fd, fd2)", (FD, Param("fd2", "fd_number")), per_fd=True),
    Action("setfl", "fcntl(fd, F_SETFL, arg)", (FD, Param("arg", "setfl_flags")), per_fd=True,
           text=lambda a: f"fcntl({a['fd']}, F_SETFL, {flags_str(a['arg'])})"),
    Action("setfd", "fcntl(fd, F_SETFD, FD_CLOEXEC or 0)", (FD, Param("cl", "bit")),
           per_fd=True,
           text=lambda a: f"fcntl({a['fd']}, F_SETFD, {'FD_CLOEXEC' if a['cl'] else 0})"),
    Action("setown", "fcntl(fd, F_SETOWN, getpid())", (FD,), per_fd=True,
           text=lambda a: f"fcntl({a['fd']}, F_SETOWN, getpid())"),
    Action("lseek", "lseek(fd, pos, SEEK_SET)", (FD, Param("pos", "offsets")), per_fd=True,
           kind="reg"),
    Action("epoll_add", "epoll_ctl(fd, EPOLL_CTL_ADD, fd2)", (FD, FD2), per_fd=True,
           kind="epoll"),
    Action("epoll_del", "epoll_ctl(fd, EPOLL_CTL_DEL, fd2)", (FD, Param("fd2", "watched_fd")),
           per_fd=True,
           kind="epoll"),
    Action("sendmsg", "sendmsg(fd, SCM_RIGHTS [fd2])", (FD, FD2), per_fd=True, kind="unix"),
    Action("recvmsg", "recvmsg(fd) of one SCM_RIGHTS message", (FD,), per_fd=True,
           kind="unix"),
    Action("reopen", "open(/proc/t2/fd/fd2, acc)",
           (Param("t2", "task"), Param("fd2", "target_fd"), Param("acc", "access_modes")),
           text=lambda a: f"open(/proc/<task {a['t2']}>/fd/{a['fd2']}, {flags_str(a['acc'])})"),
    Action("pipe", "pipe()", kind="pipe"),
    Action("openpty", "open(/dev/ptmx) and its slave", kind="pty"),
    Action("socketpair", "socketpair(AF_UNIX, SOCK_STREAM)", kind="unix"),
    Action("epoll_create", "epoll_create1(0)", kind="epoll"),
    Action("timerfd", "timerfd_create()", kind="timerfd"),
    Action("open_fifo", "open(q<path>, acc | flags) of a FIFO (may wait for a partner)",
           (Param("path", "paths"), Param("acc", "access_modes"), Param("oflags", "open_flags")),
           kind="fifo",
           text=lambda a: f"open(q{a['path']}, {flags_str(a['acc'] | a['oflags'])}) (a FIFO)"),
    Action("unlink", "unlink(f<path> or q<path>), then the name made again",
           (Param("fifo", "bit"), Param("path", "paths")), kind="unlinked",
           text=lambda a: f"unlink({'q' if a['fifo'] else 'f'}{a['path']}), then the name made "
           "again"),
    Action("fork", "fork()", (Param("ch_in", "bit"),), text=_child_text("fork()")),
    Action("clone_files", "clone(CLONE_FILES)", (Param("ch_in", "bit"),),
           text=_child_text("clone(CLONE_FILES)")),
    Action("exec", "execve() (close-on-exec descriptors closed, a shared table unshared)"),
    Action("exit", "exit()"),
)}

# One meaning per parameter name: the symbolic model makes one z3 constant of each.
PARAMS: dict[str, str] = {}
for _a in ACTIONS.values():
    for _p in _a.params:
        if PARAMS.setdefault(_p.name, _p.sort) != _p.sort:
            raise TypeError(f"{_a.name}: parameter {_p.name} is a {_p.sort} elsewhere a "
                            f"{PARAMS[_p.name]}")
