"""The symbolic state's vocabulary (twin of `model.state`): what the encoding covers, its
sizes and action domains, and the shape of one transition family."""

from __future__ import annotations

import dataclasses
import errno
from dataclasses import dataclass
from typing import Any, NamedTuple

import z3

from model.config import ENV_ACTIONS, Config
from model.flags import (
    O_ACCMODE,
    O_APPEND,
    O_ASYNC,
    O_DIRECT,
    O_LARGEFILE,
    O_NOATIME,
    O_NONBLOCK,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    SETFL_MASK,
)
from model.state import (
    CHECKED,
    COLLECTED,
    DONE,
    EPOLL,
    FAILED,
    FROZEN,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    RESTARTED,
    TIMERFD,
    UNIX,
    WRITTEN,
)

State = dict[str, Any]  # field name -> z3 term, or nested lists of them


class Transition(NamedTuple):
    """One transition family from a symbolic state (the engine's `SymStep` shape): enabled
    when `guard`, leading to `post`; `params` are the z3 constants of its arguments;
    `hints` are facts about the step that the engine proves first and then gives the solver
    (see `checker.symbolic.SymStep`); `defs` the parameters that are no argument of the
    action but a function of the pre-state (the slot a new file takes), each with the term
    the guard says it equals."""

    name: str
    guard: z3.BoolRef
    post: Any
    params: dict[str, z3.ExprRef]
    hints: tuple[z3.BoolRef, ...] = ()
    defs: tuple[tuple[z3.ExprRef, z3.ExprRef], ...] = ()


COVERED_ACTIONS: tuple[str, ...] = (
    "open", "close", "dup", "dup2", "setfl", "setfd", "setown", "lseek", "fork",
    "clone_files", "exec", "exit", "reopen", "pipe", "openpty", "epoll_create", "epoll_add",
    "epoll_del", "timerfd",
)
COVERED_KINDS: tuple[str, ...] = ("reg", "pipe", "pty", "epoll", "timerfd")
# Unix stream sockets and SCM_RIGHTS, behind `Sizes.queue` (0: left out, and every term the
# model builds is the one it builds without them): model.symbolic.sockets.
SOCKET_ACTIONS: tuple[str, ...] = ("socketpair", "sendmsg", "recvmsg")
NEW_TABLE_ACTIONS: tuple[str, ...] = ("fork", "exec")  # they copy a table into a free slot
CKPT_ACTIONS: tuple[str, ...] = ("freeze", "collect", "contained", "write", "visited",
                                 "tamper", "restart")
SPECS_ENCODED: tuple[str, ...] = (
    "leak_detection_sound", "leak_detection_sound_at_write", "pipe_peers_contained",
    "uncheckpointable_refused", "restore_preserves_fcntl_flags",
    "restore_preserves_offsets_and_sharing", "refcounts_restored", "leak_detection_complete",
    "restore_never_escalates", "hostile_images_rejected",
)
# The ghosts the write records about the restart to come (see the module docstring).
IMG_GHOSTS: tuple[str, ...] = ("img_bad", "img_err", "img_timerfd", "img_share", "img_count",
                               "img_fd", "img_rdwr")
# Each restore spec the symbolic model encodes, by the ghost that says restart would break it.
RESTORE_GHOSTS: dict[str, str] = {"img_bad": "restore_preserves_fcntl_flags",
                                  "img_share": "restore_preserves_offsets_and_sharing",
                                  "img_count": "refcounts_restored"}

STATUS_FLAGS = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME
KNOWN_FLAGS = O_ACCMODE | STATUS_FLAGS | O_LARGEFILE
SETTABLE = O_ACCMODE | SETFL_MASK | O_ASYNC  # as specs.properties.SETTABLE
VALID_KINDS = (REG, PIPE_R, PIPE_W, PTMX, PTS, EPOLL, TIMERFD, PIPE_RW)
PIPES = (PIPE_R, PIPE_W, PIPE_RW)
OBJ_KINDS_SYM = PIPES + (PTMX, PTS)
HAS_FASYNC = PIPES + (PTMX, PTS)  # model.env.HAS_FASYNC without unix
CAN_ODIRECT = PIPES + (REG,)
CAN_POLL = PIPES + (PTMX, PTS, EPOLL, TIMERFD)
REOPENABLE = PIPES + (REG, PTS, PTMX)
# with sockets on: the kinds' sets as model.env has them (UNIX has ->fasync and ->poll, no
# O_DIRECT, is not reopenable through /proc, and is on an object: its socket pair)
SOCK_VALID_KINDS = VALID_KINDS + (UNIX,)
SOCK_OBJ_KINDS = OBJ_KINDS_SYM + (UNIX,)
SOCK_HAS_FASYNC = HAS_FASYNC + (UNIX,)
SOCK_CAN_POLL = CAN_POLL + (UNIX,)
PHASES = (0, FROZEN, COLLECTED, CHECKED, WRITTEN, DONE, FAILED, RESTARTED)
EBUSY, EBADF, EINVAL = errno.EBUSY, errno.EBADF, errno.EINVAL


@dataclass(frozen=True)
class Sizes:
    """How big a symbolic state is: task slots, descriptors per table, open-file slots, and
    the in-flight SCM_RIGHTS messages a unix socket's queue holds (0: no unix sockets)."""

    inside: int
    outside: int
    fds: int
    files: int
    queue: int = 0

    @property
    def tasks(self) -> int:
        return self.inside + self.outside

    def text(self) -> str:
        socks = (f", unix sockets with up to {self.queue} in-flight files per queue"
                 if self.queue else "")
        return (f"{self.inside} inside + {self.outside} outside tasks, {self.fds} fds per "
                f"table, {self.files} open files{socks}")


@dataclass(frozen=True)
class Domains:
    """Action parameter domains and step bounds (None: unbounded, every value)."""

    paths: int = 2
    access_modes: tuple[int, ...] = (O_RDONLY, O_WRONLY, O_RDWR)
    open_flags: tuple[int, ...] | None = None  # None: every subset of STATUS_FLAGS
    open_cloexec: bool = True
    setfl_flags: tuple[int, ...] | None = None  # None: every subset of STATUS_FLAGS
    offsets: int = 4
    actions: frozenset[str] = frozenset(COVERED_ACTIONS)
    env_steps: int | None = None
    checkpoint_steps: int | None = None
    race_phases: tuple[int, ...] = (COLLECTED, CHECKED, WRITTEN)  # outside tasks act after

    @property
    def bounded(self) -> bool:
        return self.env_steps is not None


def covered_config(cfg: Config, name: str | None = None, sockets: bool = False) -> Config:
    """`cfg` restricted to what the symbolic model covers (unix sockets only if `sockets`),
    so that the explicit engine explores exactly the symbolic model's transition system."""
    covered = COVERED_KINDS + (("unix",) if sockets else ())
    actions = COVERED_ACTIONS + (SOCKET_ACTIONS if sockets else ())
    kinds = tuple(k for k in cfg.kinds if k in covered)
    disabled = tuple(a for a in ENV_ACTIONS
                     if a in cfg.disabled or a not in actions)
    return dataclasses.replace(cfg, name=name or f"{cfg.name}-sym", kinds=kinds,
                               disabled=disabled)


def domains_of(cfg: Config, bounded: bool = True) -> Domains:
    return Domains(
        paths=cfg.paths, access_modes=tuple(cfg.access_modes), open_flags=tuple(cfg.open_flags),
        open_cloexec=cfg.open_cloexec, setfl_flags=tuple(cfg.setfl_flags), offsets=cfg.offsets,
        actions=frozenset(cfg.enabled_actions()) & frozenset(COVERED_ACTIONS),
        env_steps=cfg.env_steps if bounded else None,
        checkpoint_steps=cfg.checkpoint_steps if bounded else None,
        race_phases=tuple(RACE_PHASES[p] for p in getattr(cfg, "outside_acts_after",
                                                    ("collected", "checked", "written"))),
    )


RACE_PHASES = {"collected": COLLECTED, "checked": CHECKED, "written": WRITTEN}
