"""The crmodel world and Linux-CR checkpoint/restart as z3 terms (for `checker.symbolic`).

A symbolic state is a dict of fixed-size arrays of z3 terms (pure values: no solver here).
Transitions are hand-written twins of `model.env` / `model.checkpoint` / `model.restart`;
`tests/test_z3_agreement.py` checks them against the explicit model transition by transition
on random states, and verdict by verdict (with counterexample lengths) on small configs.

Sizes: ``NT = inside + outside`` task slots (also the fd-table slots), ``ND`` descriptors per
table, ``NF`` open-file slots (also the ids of pipe inodes / pty pairs). A transition that
would need a slot beyond these is disabled: a proof at a size covers every state of that size
and every transition that stays within it.

What is covered (same semantics as the explicit model):

* tasks (alive, inside, frozen, table), fd tables (per slot: used, file, FD_CLOEXEC), open
  files (kind, path, obj, f_flags, f_pos, owner, epoll items as bits (epoll, target, fd));
  f_mode is a function of kind and access mode (as it is in every state the explicit model
  builds); liveness of files, tables and objects is derived from the references (never
  stored), and release clears epoll items of dead targets and ghost entries of dead objects,
  as `model.world.normalize` does;
* environment actions: open, close, dup, dup2, fcntl F_SETFL / F_SETFD / F_SETOWN, lseek,
  fork, clone(CLONE_FILES), exec, exit, open of /proc/PID/fd/N (reopen), pipe, openpty,
  epoll_create, epoll_ctl ADD (with the exact ELOOP check) / DEL, timerfd; the same guards as
  `model.env.env_actions` plus "the call succeeds and changes the state"; task order is kept
  as the explicit model keeps it (exit compacts, fork appends), so task numbers in decoded
  actions are the explicit ones;
* file kinds reg, pipe (read, write, read-write end), pty master/slave, eventpoll, timerfd;
* the checkpoint: freeze, collect (objhash ``users`` as closed-form sums: first encounter
  `users_start`, `collect_every`, `epoll_counts_targets`, `pipe_ref_users`, skipped
  uncheckpointable files), the contained check (`ref_users` from the derived counts:
  f_count, files->count, tty kref, pipe files + 1), write (reverse-added-late, EBADF for no
  ->checkpoint, EBUSY for an owner, the deferred epoll queue; the first error in write order
  wins), the visited check and the re-check after the write; subtree mode; outside-task
  steps between the phases (bounded by `checkpoint_steps` in BMC, unbounded in proofs);
* restart, as far as the covered specs read it: per written file the flags restart gives
  (open/reconstruct, F_SETFL with CKPT_SETFL_MASK or none, O_LARGEFILE as saved, the f_mode
  rule, CRIU's re-read), close-on-exec per descriptor or per file;
* tampering with the image (`model.image.tamper`, each of its eight mutations where it
  applies, once, before restart) and what restart makes of it: a malformed image fails
  (unless the type check is off and an fd record names the table), a lowered f_mode fails
  nothing; a partial restart keeps the tasks built before the error;
* the completeness ghost `Cr.clean` (`model.checkpoint.is_clean`), taken at the freeze, at
  the contained check and when the checkpoint fails.

What is abstracted:

* the image is not materialised: the write step records ghost booleans computed from the
  state it reads (which the explicit restart would read back from the image): ``leak``
  (a written object was referenced from outside at the check: `Cr.leak_check` non-empty),
  ``leak_w`` (at the write), ``leak_pipe`` (a written pipe inode or tty was, at the check),
  ``img_bad`` (some restored descriptor would differ in F_GETFL & SETTABLE or FD_CLOEXEC, or
  be missing), ``img_err`` (restart would fail), ``img_timerfd`` (the snapshot holds a
  timerfd), ``img_share`` / ``img_count`` (restart would break the sharing and offsets / the
  reference counts), ``img_fd`` / ``img_rdwr`` (the image has an fd record / a read-write
  file record: what tampering needs); ``restart`` copies ``img_err`` to ``rst_err`` for an
  untampered image. The objref order, image records,
  snapshot and restored observation are therefore not decoded (BMC traces get them from the
  explicit replay, see `concretize`);
* the ghost record of outside references (`Cr.ghost`) is one bit per object;
* not covered: unix sockets (socketpair, SCM_RIGHTS sendmsg/recvmsg), CRIU's external-unix
  refusal (no sockets), and the specs `restore_preserves_all_flags` and `restart_succeeds`.

Specs encoded: `SPECS_ENCODED`.
"""

from __future__ import annotations

import dataclasses
import errno
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import z3

from model.config import ENV_ACTIONS, Config
from model.flags import (
    CKPT_SETFL_MASK,
    FMODE_LSEEK,
    FMODE_READ,
    FMODE_WRITE,
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
    acc_fmode,
)
from model.image import MALFORMED, OPEN_ONLY_FLAGS, T_BAD_NFDS, T_FMODE_DOWN, T_WRONG_TYPE
from model.state import (
    CHECKED,
    COLLECTED,
    DONE,
    EMPTY,
    EPOLL,
    FAILED,
    FROZEN,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_TTY,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    RESTARTED,
    TIMERFD,
    WRITTEN,
    Cr,
    File,
    ObjEntry,
    Task,
    World,
    slot_cloexec,
    slot_file,
)
from model.variants import Variant


class Transition(NamedTuple):
    """One transition family from a symbolic state (the engine's `SymStep` shape): enabled
    when `guard`, leading to `post`; `params` are the z3 constants of its arguments;
    `hints` are facts about the step that the engine proves first and then gives the solver
    (see `checker.symbolic.SymStep`)."""

    name: str
    guard: z3.BoolRef
    post: Any
    params: dict[str, z3.ExprRef]
    hints: tuple[z3.BoolRef, ...] = ()


COVERED_ACTIONS: tuple[str, ...] = (
    "open", "close", "dup", "dup2", "setfl", "setfd", "setown", "lseek", "fork",
    "clone_files", "exec", "exit", "reopen", "pipe", "openpty", "epoll_create", "epoll_add",
    "epoll_del", "timerfd",
)
COVERED_KINDS: tuple[str, ...] = ("reg", "pipe", "pty", "epoll", "timerfd")
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
PHASES = (0, FROZEN, COLLECTED, CHECKED, WRITTEN, DONE, FAILED, RESTARTED)
EBUSY, EBADF, EINVAL = errno.EBUSY, errno.EBADF, errno.EINVAL

KW, FW, PW, EW = 4, 20, 4, 8  # widths: kind, f_flags, phase, errno
assert KNOWN_FLAGS < 1 << FW


def bits(n: int) -> int:
    """Bit-vector width for indexes 0..n-1."""
    return max(1, (n - 1).bit_length())


# --- sizes and domains -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big a symbolic state is: task slots, descriptors per table, open-file slots."""

    inside: int
    outside: int
    fds: int
    files: int

    @property
    def tasks(self) -> int:
        return self.inside + self.outside

    def text(self) -> str:
        return (f"{self.inside} inside + {self.outside} outside tasks, {self.fds} fds per "
                f"table, {self.files} open files")


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


def covered_config(cfg: Config, name: str | None = None) -> Config:
    """`cfg` restricted to what the symbolic model covers (no unix sockets), so that the
    explicit engine explores exactly the symbolic model's transition system."""
    kinds = tuple(k for k in cfg.kinds if k in COVERED_KINDS)
    disabled = tuple(a for a in ENV_ACTIONS
                     if a in cfg.disabled or a not in COVERED_ACTIONS)
    return dataclasses.replace(cfg, name=name or f"{cfg.name}-sym", kinds=kinds,
                               disabled=disabled)


def domains_of(cfg: Config, bounded: bool = True) -> Domains:
    return Domains(
        paths=cfg.paths, access_modes=tuple(cfg.access_modes), open_flags=tuple(cfg.open_flags),
        open_cloexec=cfg.open_cloexec, setfl_flags=tuple(cfg.setfl_flags), offsets=cfg.offsets,
        actions=frozenset(cfg.enabled_actions()) & frozenset(COVERED_ACTIONS),
        env_steps=cfg.env_steps if bounded else None,
        checkpoint_steps=cfg.checkpoint_steps if bounded else None,
        race_phases=tuple(_RACE[p] for p in getattr(cfg, "outside_acts_after",
                                                    ("collected", "checked", "written"))),
    )


_RACE = {"collected": COLLECTED, "checked": CHECKED, "written": WRITTEN}


def _subsets(mask: int) -> tuple[int, ...]:
    bl = [b for b in range(FW) if mask >> b & 1]
    return tuple(sum(1 << bl[i] for i in range(len(bl)) if n >> i & 1)
                 for n in range(1 << len(bl)))


# --- small z3 helpers --------------------------------------------------------------------------

TRUE, FALSE = z3.BoolVal(True), z3.BoolVal(False)


def bv(v: int, w: int) -> z3.BitVecRef:
    return z3.BitVecVal(v, w)


def is_(t: z3.BitVecRef | int, i: int) -> z3.BoolRef:
    if isinstance(t, int):
        return TRUE if t == i else FALSE
    return t == z3.BitVecVal(i, t.size())


def lt(t: z3.BitVecRef, n: int) -> z3.BoolRef:
    """t < n, trivially true when n covers the whole width."""
    return TRUE if n >= 1 << t.size() else z3.ULT(t, n)


def member(t: z3.BitVecRef, values: Sequence[int]) -> z3.BoolRef:
    """t is one of `values`; a mask test when they are all subsets of one mask."""
    mask = 0
    for v in values:
        mask |= v
    if set(values) == set(_subsets(mask)):
        return (t & ~bv(mask, t.size())) == 0
    return in_(t, values)


def in_(t: z3.BitVecRef, values: Iterable[int]) -> z3.BoolRef:
    return any_(is_(t, v) for v in values)


def any_(xs: Iterable[z3.BoolRef]) -> z3.BoolRef:
    xs = list(xs)
    return z3.Or(xs) if len(xs) > 1 else (xs[0] if xs else FALSE)


def all_(xs: Iterable[z3.BoolRef]) -> z3.BoolRef:
    xs = list(xs)
    return z3.And(xs) if len(xs) > 1 else (xs[0] if xs else TRUE)


def sel(idx: z3.BitVecRef | int, items: Sequence[Any]) -> Any:
    """items[idx] as an If-chain (the last item for an out-of-range idx)."""
    if isinstance(idx, int):
        return items[idx]
    out = items[-1]
    for i in range(len(items) - 2, -1, -1):
        out = z3.If(is_(idx, i), items[i], out)
    return out


def num(v: int, w: int) -> z3.ExprRef:
    """A count constant: a bit-vector of width w, or an integer when w == 0."""
    return z3.IntVal(v) if w == 0 else z3.BitVecVal(v, w)


def gt(a: z3.ExprRef, b: z3.ExprRef) -> z3.BoolRef:
    return z3.UGT(a, b) if z3.is_bv(a) else a > b


def cnt(conds: Iterable[z3.BoolRef], w: int) -> z3.ExprRef:
    """How many of `conds` hold (width w bit-vector, or integer when w == 0)."""
    one, zero = num(1, w), num(0, w)
    terms = [z3.If(c, one, zero) for c in conds]
    if not terms:
        return zero
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def lowest(free: Sequence[z3.BoolRef], w: int) -> tuple[z3.BoolRef, z3.BitVecRef]:
    """(some slot is free, the lowest free slot)."""
    idx: z3.BitVecRef = bv(len(free) - 1, w)
    for i in range(len(free) - 2, -1, -1):
        idx = z3.If(free[i], bv(i, w), idx)
    return any_(free), idx


def second(free: Sequence[z3.BoolRef]) -> list[z3.BoolRef]:
    """free2[i]: slot i is free and some lower slot is too (the second free is the lowest)."""
    return [z3.And(free[i], any_(free[:i])) if i else FALSE for i in range(len(free))]


def accf(acc: z3.BitVecRef) -> z3.BitVecRef:
    """acc_fmode as a term (3 bits); the invalid access mode 3 gives 0."""
    return z3.If(is_(acc, O_RDONLY), bv(FMODE_READ, 3),
                 z3.If(is_(acc, O_WRONLY), bv(FMODE_WRITE, 3),
                       z3.If(is_(acc, O_RDWR), bv(FMODE_READ | FMODE_WRITE, 3), bv(0, 3))))


def fmode_of(kind: z3.BitVecRef, acc: z3.BitVecRef) -> z3.BitVecRef:
    """f_mode of an open file: READ/WRITE from the access mode, LSEEK for regular files."""
    return z3.If(is_(kind, REG), accf(acc) | bv(FMODE_LSEEK, 3), accf(acc))


State = dict[str, Any]


class View:
    """Derived terms of one symbolic state (reference counts, liveness, outside refs)."""

    def __init__(self, m: CrSymModel, s: State) -> None:
        self.m, self.s = m, s
        self._counts: dict[tuple, z3.ExprRef] = {}

    # tasks and tables
    @cached_property
    def t_in(self) -> list[z3.BoolRef]:
        return [z3.And(self.s["alive"][t], self.s["inside"][t]) for t in range(self.m.NT)]

    @cached_property
    def t_out(self) -> list[z3.BoolRef]:
        return [z3.And(self.s["alive"][t], z3.Not(self.s["inside"][t]))
                for t in range(self.m.NT)]

    def holds(self, t: int, x: int) -> z3.BoolRef:
        return z3.And(self.s["alive"][t], is_(self.s["table"][t], x))

    @cached_property
    def ins_table(self) -> list[z3.BoolRef]:
        """Tables held by an inside task."""
        s, m = self.s, self.m
        return [any_(z3.And(self.t_in[t], is_(s["table"][t], x)) for t in range(m.NT))
                for x in range(m.NT)]

    @cached_property
    def out_table(self) -> list[z3.BoolRef]:
        s, m = self.s, self.m
        return [any_(z3.And(self.t_out[t], is_(s["table"][t], x)) for t in range(m.NT))
                for x in range(m.NT)]

    @cached_property
    def live_table(self) -> list[z3.BoolRef]:
        """Held by a task or by the objhash (model.world.live_tables)."""
        return [z3.Or(self.ins_table[x], self.out_table[x], self.s["h_tab"][x])
                for x in range(self.m.NT)]

    @cached_property
    def n_in_holders(self) -> list[z3.BitVecRef]:
        s, m = self.s, self.m
        return [cnt((z3.And(self.t_in[t], is_(s["table"][t], x)) for t in range(m.NT)), m.CW)
                for x in range(m.NT)]

    @cached_property
    def table_users(self) -> list[z3.BitVecRef]:
        """files->count: tasks holding the table plus the objhash's grab."""
        s, m = self.s, self.m
        return [cnt([self.holds(t, x) for t in range(m.NT)] + [s["h_tab"][x]], m.CW)
                for x in range(m.NT)]

    # slots and files
    @cached_property
    def slot_is(self) -> list[list[list[z3.BoolRef]]]:
        """slot_is[x][d][f]: descriptor d of table x refers to file f."""
        s, m = self.s, self.m
        return [[[z3.And(s["used"][x][d], is_(s["sfile"][x][d], f)) for f in range(m.NF)]
                 for d in range(m.ND)] for x in range(m.NT)]

    @cached_property
    def alive_f(self) -> list[z3.BoolRef]:
        """A file is alive while a live table refers to it or the objhash holds it."""
        s, m = self.s, self.m
        return [z3.Or(any_(z3.And(self.live_table[x], self.slot_is[x][d][f])
                           for x in range(m.NT) for d in range(m.ND)), s["h_file"][f])
                for f in range(m.NF)]

    def skipped(self, f: int) -> z3.BoolRef | None:
        """The skip mutant's scan_fds passes over this file (None: no such mutant)."""
        return is_(self.s["kind"][f], TIMERFD) if self.m.v.skip_uncheckpointable else None

    @cached_property
    def tin_all(self) -> list[z3.ExprRef]:
        """Per file: the descriptors of inside tables that refer to it."""
        m = self.m
        return [cnt([z3.And(self.ins_table[x], self.slot_is[x][d][f])
                     for x in range(m.NT) for d in range(m.ND)], m.CW) for f in range(m.NF)]

    @cached_property
    def tin(self) -> list[z3.ExprRef]:
        """Per file: the descriptors of inside tables the collect counts (one term, shared
        by collect, f_count and the lemmas so that z3 sees them cancel). The skip mutant's
        test is on the file, so it stands outside the count: a step that gives a free slot
        a kind then leaves every other file's count the same term (inside the count, z3
        had to see it slot by slot: over 25 minutes for one case of open at 8 and 8)."""
        m = self.m
        out = []
        for f in range(m.NF):
            sk = self.skipped(f)
            out.append(self.tin_all[f] if sk is None
                       else z3.If(sk, num(0, m.CW), self.tin_all[f]))
        return out

    @cached_property
    def f_count(self) -> list[z3.ExprRef]:
        """file->f_count: descriptors in live tables plus the objhash's grab, written as
        the inside ones (`tin_all`, which is `tin` but in the skip mutant) + the rest."""
        s, m = self.s, self.m
        out = []
        for f in range(m.NF):
            rest = [z3.And(z3.Not(self.ins_table[x]), self.live_table[x], self.slot_is[x][d][f])
                    for x in range(m.NT) for d in range(m.ND)]
            out.append(self.tin_all[f] + cnt(rest + [s["h_file"][f]], m.CW))
        return out

    def hashed_on(self, o: int, kinds: tuple[int, ...]) -> z3.ExprRef:
        """How many hashed files of `kinds` are on object o (cached: one term)."""
        key = ("h", o, kinds)
        if key not in self._counts:
            s = self.s
            self._counts[key] = cnt([z3.And(s["h_file"][f], in_(s["kind"][f], kinds),
                                            is_(s["obj"][f], o)) for f in range(self.m.NF)],
                                    self.m.CW)
        return self._counts[key]

    def unhashed_on(self, o: int, kinds: tuple[int, ...]) -> z3.ExprRef:
        """How many live files of `kinds` the objhash does not hold are on object o."""
        key = ("u", o, kinds)
        if key not in self._counts:
            s = self.s
            self._counts[key] = cnt([z3.And(z3.Not(s["h_file"][f]), self.alive_f[f],
                                            in_(s["kind"][f], kinds), is_(s["obj"][f], o))
                                     for f in range(self.m.NF)], self.m.CW)
        return self._counts[key]

    @cached_property
    def out_file(self) -> list[z3.BoolRef]:
        """Files an outside task holds (no in-flight messages: no unix sockets)."""
        m = self.m
        return [any_(z3.And(self.out_table[x], self.slot_is[x][d][f])
                     for x in range(m.NT) for d in range(m.ND)) for f in range(m.NF)]

    def kind_in(self, f: int, kinds: Iterable[int]) -> z3.BoolRef:
        return in_(self.s["kind"][f], kinds)

    def on(self, f: int, o: int) -> z3.BoolRef:
        """File f is on object o (a pipe inode or pty pair)."""
        return z3.And(self.kind_in(f, OBJ_KINDS_SYM), is_(self.s["obj"][f], o))

    @cached_property
    def obj_alive(self) -> list[z3.BoolRef]:
        s, m = self.s, self.m
        return [z3.Or(any_(z3.And(self.alive_f[f], self.on(f, o)) for f in range(m.NF)),
                      s["h_ino"][o], s["h_tty"][o][0], s["h_tty"][o][1])
                for o in range(m.NF)]

    @cached_property
    def master(self) -> list[z3.BoolRef]:
        """A pty master is open on pair o."""
        s, m = self.s, self.m
        return [any_(z3.And(self.alive_f[f], is_(s["kind"][f], PTMX), is_(s["obj"][f], o))
                     for f in range(m.NF)) for o in range(m.NF)]

    def files_on(self, o: int, kinds: Iterable[int], extra: Callable[[int], z3.BoolRef]
                 ) -> list[z3.BoolRef]:
        s = self.s
        kinds = tuple(kinds)
        return [z3.And(extra(f), in_(s["kind"][f], kinds), is_(s["obj"][f], o))
                for f in range(self.m.NF)]

    # outside references (model.world.outside_refs)
    @cached_property
    def outside_refs(self) -> dict[str, Any]:
        m = self.m
        ino = [any_(self.files_on(o, PIPES, lambda f: self.out_file[f])) for o in range(m.NF)]
        tty = [any_(self.files_on(o, (PTMX, PTS), lambda f: self.out_file[f]))
               for o in range(m.NF)]
        return {"tab": list(self.out_table), "file": list(self.out_file), "ino": ino,
                "tty": [[tty[o], tty[o]] for o in range(m.NF)]}

    @cached_property
    def held_in(self) -> list[z3.BoolRef]:
        """Per file: some descriptor of an inside task's table refers to it."""
        m = self.m
        return [any_(z3.And(self.ins_table[x], self.slot_is[x][d][f])
                     for x in range(m.NT) for d in range(m.ND)) for f in range(m.NF)]

    @cached_property
    def is_clean(self) -> z3.BoolRef:
        """model.checkpoint.is_clean: nothing the container uses (its tables, the files it
        holds and their epolls' targets, the objects they are on) is referenced from outside,
        and no file it holds is unsupported (a timerfd, or one with an owner)."""
        s, m = self.s, self.m
        held = self.held_in
        used = [z3.Or(held[f], any_(z3.And(held[e], is_(s["kind"][e], EPOLL), s["ep"][e][f][d])
                                    for e in range(m.NF) for d in range(m.ND)))
                for f in range(m.NF)]
        r = self.outside_refs
        shared = [z3.And(self.ins_table[x], r["tab"][x]) for x in range(m.NT)]
        for f in range(m.NF):
            obj_out = z3.Or(z3.And(self.kind_in(f, PIPES), sel(s["obj"][f], r["ino"])),
                            z3.And(self.kind_in(f, (PTMX, PTS)),
                                   sel(s["obj"][f], [t[0] for t in r["tty"]])))
            shared.append(z3.And(used[f], z3.Or(r["file"][f], obj_out)))
        unsupported = [z3.And(held[f], z3.Or(is_(s["kind"][f], TIMERFD), s["owner"][f]))
                       for f in range(m.NF)]
        return z3.Not(any_(shared + unsupported))

    # the contained check (model.checkpoint._leaks)
    def ref_users(self) -> dict[str, Any]:
        """ref_users of each object (live files on an object counted as hashed + unhashed:
        the objhash only holds live files)."""
        s, m = self.s, self.m
        one, zero = num(1, m.CW), num(0, m.CW)
        ino = [self.hashed_on(o, PIPES) + self.unhashed_on(o, PIPES) + one
               for o in range(m.NF)]
        tty = []
        for o in range(m.NF):
            hm = z3.If(s["h_tty"][o][0], one, zero)
            hs = z3.If(s["h_tty"][o][1], one, zero)
            link = z3.If(self.master[o], one, zero)
            tty.append([self.hashed_on(o, (PTMX,)) + self.unhashed_on(o, (PTMX,)) + hm,
                        self.hashed_on(o, (PTS,)) + self.unhashed_on(o, (PTS,)) + link + hs])
        return {"tab": self.table_users, "file": self.f_count, "ino": ino, "tty": tty}

    @cached_property
    def leaks(self) -> z3.BoolRef:
        """Some hashed object whose type has ref_users has ref_users != users."""
        s, m = self.s, self.m
        r = self.ref_users()
        out = [z3.And(s["h_tab"][x], r["tab"][x] != s["u_tab"][x]) for x in range(m.NT)]
        out += [z3.And(s["h_file"][f], r["file"][f] != s["u_file"][f]) for f in range(m.NF)]
        if m.v.pipe_ref_users:
            out += [z3.And(s["h_ino"][o], r["ino"][o] != s["u_ino"][o]) for o in range(m.NF)]
        out += [z3.And(s["h_tty"][o][i], r["tty"][o][i] != s["u_tty"][o][i])
                for o in range(m.NF) for i in (0, 1)]
        return any_(out)

    # what a task sees through its table
    def task_slots(self, t: z3.BitVecRef) -> tuple[list, list, list]:
        s, m = self.s, self.m
        x = sel(t, s["table"])
        used = [sel(x, [s["used"][xx][d] for xx in range(m.NT)]) for d in range(m.ND)]
        files = [sel(x, [s["sfile"][xx][d] for xx in range(m.NT)]) for d in range(m.ND)]
        clo = [sel(x, [s["cloexec"][xx][d] for xx in range(m.NT)]) for d in range(m.ND)]
        return used, files, clo

    @cached_property
    def n_inside(self) -> z3.BitVecRef:
        return cnt(self.t_in, 8)

    @cached_property
    def n_outside(self) -> z3.BitVecRef:
        return cnt(self.t_out, 8)


# --- the model ---------------------------------------------------------------------------------


class CrSymModel:
    """Symbolic crmodel under one design variant, at one size (see the module docstring)."""

    def __init__(self, sizes: Sizes, variant: Variant, dom: Domains | None = None,
                 cfg: Config | None = None, counts: str = "bv",
                 lemmas: Callable[[str], list[Any]] | None = None,
                 predicates: Mapping[str, Callable[[World], bool]] | None = None) -> None:
        """`lemmas(name)`: the strengthening lemmas of a property's proof (none if not
        given); `predicates`: the explicit predicate of each property, by name, with which
        `concretize` checks a replayed counterexample (both come from `specs`)."""
        self.sizes, self.v = sizes, variant
        self._lemmas, self._predicates = lemmas, predicates or {}
        self.dom = dom or Domains()
        self.NT, self.ND, self.NF = sizes.tasks, sizes.fds, sizes.files
        self.NI, self.NO = sizes.inside, sizes.outside
        self.wT, self.wD, self.wF = bits(self.NT), bits(self.ND), bits(self.NF)
        self.wP, self.wO = bits(self.dom.paths), bits(self.dom.offsets)
        # counts (users, refcounts): 8-bit vectors (12 under collect_every, whose sums are
        # products) keep everything in QF_BV, fastest for BMC; integers make the counting
        # arguments of the proofs linear arithmetic, which SAT on adders is bad at
        if counts not in ("bv", "int"):
            raise ValueError("counts must be 'bv' or 'int'")
        self.CW = 0 if counts == "int" else 12 if variant.collect_every else 8
        self.logic = "QF_BV" if self.CW else None  # the solver the engine should use
        self.name = f"crmodel-z3[{variant.name}]"
        self._views: dict[int, tuple[State, View]] = {}
        self._cfg = cfg
        if self.NT < 1 or self.ND < 1 or self.NF < 1 or self.NO < 1:
            raise ValueError("sizes: need at least one outside task, one fd and one file")
        self.open_flags = (self.dom.open_flags if self.dom.open_flags is not None
                           else _subsets(STATUS_FLAGS))
        self.setfl_flags = (self.dom.setfl_flags if self.dom.setfl_flags is not None
                            else _subsets(STATUS_FLAGS))

    # --- shapes ----------------------------------------------------------------------------

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str, int]]:
        """name -> (dims, 'bool' | 'bv', width)."""
        NT, ND, NF, CW = self.NT, self.ND, self.NF, self.CW
        sh: dict[str, tuple[tuple[int, ...], str, int]] = {
            "alive": ((NT,), "bool", 0), "inside": ((NT,), "bool", 0),
            "frozen": ((NT,), "bool", 0), "table": ((NT,), "bv", self.wT),
            "used": ((NT, ND), "bool", 0), "sfile": ((NT, ND), "bv", self.wF),
            "cloexec": ((NT, ND), "bool", 0),
            "kind": ((NF,), "bv", KW), "path": ((NF,), "bv", self.wP),
            "obj": ((NF,), "bv", self.wF), "flags": ((NF,), "bv", FW),
            "pos": ((NF,), "bv", self.wO), "owner": ((NF,), "bool", 0),
            "ep": ((NF, NF, ND), "bool", 0),
            "phase": ((), "bv", PW), "error": ((), "bv", EW),
            "h_tab": ((NT,), "bool", 0), "u_tab": ((NT,), "bv", CW),
            "v_tab": ((NT,), "bool", 0), "g_tab": ((NT,), "bool", 0),
            "h_file": ((NF,), "bool", 0), "u_file": ((NF,), "bv", CW),
            "v_file": ((NF,), "bool", 0), "g_file": ((NF,), "bool", 0),
            "h_ino": ((NF,), "bool", 0), "u_ino": ((NF,), "bv", CW),
            "v_ino": ((NF,), "bool", 0), "g_ino": ((NF,), "bool", 0),
            "h_tty": ((NF, 2), "bool", 0), "u_tty": ((NF, 2), "bv", CW),
            "v_tty": ((NF, 2), "bool", 0), "g_tty": ((NF, 2), "bool", 0),
            "leak": ((), "bool", 0), "leak_w": ((), "bool", 0), "leak_pipe": ((), "bool", 0),
            "img_bad": ((), "bool", 0), "img_err": ((), "bool", 0),
            "img_timerfd": ((), "bool", 0), "img_share": ((), "bool", 0),
            "img_count": ((), "bool", 0), "rst_err": ((), "bool", 0),
            "img_fd": ((), "bool", 0), "img_rdwr": ((), "bool", 0),
            "tamper": ((), "bv", 4), "clean": ((), "bool", 0),
        }
        if self.dom.bounded:
            sh["steps"] = ((), "bv", 8)
            sh["ext"] = ((), "bv", 8)
        return sh

    # --- the engine's interface -------------------------------------------------------------

    def size_text(self) -> str:
        acts = sorted(self.dom.actions)
        off = sorted(set(COVERED_ACTIONS) - set(acts))
        bound = ("" if not self.dom.bounded else
                 f", at most {self.dom.env_steps} env steps and {self.dom.checkpoint_steps} "
                 "outside steps during a checkpoint")
        return (self.sizes.text() + bound
                + (f"; actions left out: {', '.join(off)}" if off else ""))

    def fresh(self, tag: str) -> State:
        def make(name: str, dims: tuple[int, ...], kind: str, w: int, idx: tuple) -> Any:
            if dims:
                return [make(name, dims[1:], kind, w, idx + (i,)) for i in range(dims[0])]
            n = f"{tag}.{name}" + "".join(f"[{i}]" for i in idx)
            if kind == "bool":
                return z3.Bool(n)
            return z3.Int(n) if w == 0 else z3.BitVec(n, w)

        return {n: make(n, d, k, w, ()) for n, (d, k, w) in self.shapes().items()}

    def leaves(self, s: State) -> list[z3.ExprRef]:
        out: list[z3.ExprRef] = []

        def walk(x: Any) -> None:
            if isinstance(x, list):
                for y in x:
                    walk(y)
            else:
                out.append(x)

        for n in self.shapes():
            walk(s[n])
        return out

    def view(self, s: State) -> View:
        hit = self._views.get(id(s))
        if hit is not None and hit[0] is s:
            return hit[1]
        v = View(self, s)
        self._views[id(s)] = (s, v)  # keeps `s` alive, so its id is not reused
        return v

    def init(self, s: State) -> z3.BoolRef:
        """model.env.initial_world: one outside task with an empty table; every other slot
        zero (a dead task, an unused descriptor, a dead file REG O_RDONLY)."""
        alive0 = s["alive"][0]
        cs = [alive0]
        for x in self.leaves(s):
            if x.eq(alive0):
                continue
            cs.append(z3.Not(x) if z3.is_bool(x) else x == 0)
        return z3.And(cs)

    def domain(self, s: State) -> z3.BoolRef:
        """Any state of this size: indexes in range, valid kinds and phases, at most NI
        inside and NO outside tasks alive (dead slots and unused descriptors unconstrained)."""
        cs = [lt(x, self.NT) for x in s["table"]]
        cs += [lt(f, self.NF) for row in s["sfile"] for f in row]
        for f in range(self.NF):
            cs += [in_(s["kind"][f], VALID_KINDS), lt(s["obj"][f], self.NF),
                   lt(s["path"][f], self.dom.paths), lt(s["pos"][f], self.dom.offsets)]
        cs.append(in_(s["phase"], PHASES))
        v = self.view(s)
        cs.append(z3.ULE(v.n_inside, self.NI))
        cs.append(z3.ULE(v.n_outside, self.NO))
        if self.dom.bounded:
            cs.append(z3.ULE(s["steps"], self.dom.env_steps))
            cs.append(z3.ULE(s["ext"], self.dom.checkpoint_steps))
        return all_(cs)

    def property(self, name: str) -> Callable[[State], z3.BoolRef] | None:
        def succeeded(s: State) -> z3.BoolRef:
            return in_(s["phase"], (DONE, RESTARTED))

        if name == "leak_detection_sound":
            return lambda s: z3.Not(z3.And(succeeded(s), s["leak"]))
        if name == "leak_detection_sound_at_write":
            return lambda s: z3.Not(z3.And(succeeded(s), s["leak_w"]))
        if name == "pipe_peers_contained":
            return lambda s: z3.Not(z3.And(succeeded(s), s["leak_pipe"]))
        if name == "leak_detection_complete":
            return lambda s: z3.Not(z3.And(is_(s["phase"], FAILED), s["clean"]))
        if name == "uncheckpointable_refused":
            return lambda s: z3.Not(z3.And(succeeded(s), s["img_timerfd"]))
        def restarted(s: State) -> z3.BoolRef:
            return is_(s["phase"], RESTARTED)

        if name == "restore_never_escalates":  # only a tampered f_mode can ask for less
            esc = z3.BoolVal(not self.v.fmode_check)
            return lambda s: z3.Not(z3.And(restarted(s), z3.Not(s["rst_err"]),
                                           is_(s["tamper"], T_FMODE_DOWN), esc))
        if name == "hostile_images_rejected":
            # with partial_restore a failed restart leaves the tasks built before the error:
            # every malformed record but the first table's nfds comes after the first task
            partial = z3.BoolVal(self.v.partial_restore)
            return lambda s: z3.Not(z3.And(
                restarted(s), in_(s["tamper"], sorted(MALFORMED)),
                z3.Or(z3.Not(s["rst_err"]), z3.And(partial, z3.Not(is_(s["tamper"],
                                                                          T_BAD_NFDS))))))
        g = next((g for g, spec in RESTORE_GHOSTS.items() if spec == name), None)
        if g is not None:  # on an untampered image (tampered ones: the two specs above)
            return lambda s: z3.Not(z3.And(restarted(s), z3.Not(s["rst_err"]),
                                           is_(s["tamper"], 0), s[g]))
        return None

    def lemmas(self, name: str) -> list[Any]:
        return self._lemmas(name) if self._lemmas is not None else []

    # --- transitions -----------------------------------------------------------------------

    def transitions(self, s: State, tag: str) -> list[Transition]:
        """Every transition family from `s`, parameters shared between families."""
        p = self._params(tag)
        fams: list[Transition] = []
        env = _Env(self, s, p)
        for name in COVERED_ACTIONS:
            if name in self.dom.actions:
                fams.append(getattr(env, name)())
        ck = _Ckpt(self, s)
        fams += [ck.freeze()]
        if self.v.full_container:
            fams += [ck.collect(), ck.contained()]
        fams += [ck.write(), ck.visited(), ck.tamper(p["k"]), ck.restart()]
        return fams

    def transition(self, s: State, tag: str, name: str, case: Any = None) -> Transition:
        """One transition family (what `transitions` would list under `name`), restricted
        to proof case `case` (from `cases`) if given."""
        if name in COVERED_ACTIONS:
            table, phase, new = (tuple(case) + (None,))[:3] if case is not None else (
                None, None, None)
            return getattr(_Env(self, s, self._params(tag), table, phase, new), name)()
        if name == "tamper":
            return _Ckpt(self, s).tamper(self._params(tag)["k"])
        return getattr(_Ckpt(self, s), name)()

    def cases(self, name: str) -> list[Any]:
        """Proof cases of a family, covering all its transitions: an environment action by
        a task holding table x, in phase p (before a checkpoint or between its phases).
        Building each with x and p constant keeps the terms of the other tables as they are,
        which is what lets z3 see that counts over them do not change."""
        if name not in COVERED_ACTIONS:
            return [None]
        cases = [(x, p) for p in (0,) + self.dom.race_phases for x in range(self.NT)]
        if name in NEW_TABLE_ACTIONS:  # and the slot the new table takes, likewise
            return [(x, p, y) for x, p in cases for y in range(self.NT)]
        return cases

    def family_names(self) -> list[str]:
        names = [a for a in COVERED_ACTIONS if a in self.dom.actions] + ["freeze"]
        if self.v.full_container:
            names += ["collect", "contained"]
        return names + ["write", "visited", "tamper", "restart"]

    def _params(self, tag: str) -> dict[str, z3.ExprRef]:
        return {
            "t": z3.BitVec(f"{tag}.t", self.wT), "t2": z3.BitVec(f"{tag}.t2", self.wT),
            "fd": z3.BitVec(f"{tag}.fd", self.wD), "fd2": z3.BitVec(f"{tag}.fd2", self.wD),
            "path": z3.BitVec(f"{tag}.path", self.wP), "acc": z3.BitVec(f"{tag}.acc", 2),
            "oflags": z3.BitVec(f"{tag}.oflags", FW), "arg": z3.BitVec(f"{tag}.arg", FW),
            "pos": z3.BitVec(f"{tag}.pos", self.wO), "cl": z3.Bool(f"{tag}.cl"),
            "ch_in": z3.Bool(f"{tag}.ch_in"), "k": z3.BitVec(f"{tag}.k", 4),
        }

    # --- decoding --------------------------------------------------------------------------

    def decode_action(self, ev: Callable[[z3.ExprRef], Any], step: Transition) -> tuple:
        n, p = step.name, step.params
        if n == "tamper":
            return (n, ev(p["k"]))
        if n in CKPT_ACTIONS:
            return (n,)
        t = ev(p["t"])
        if n == "open":
            return (n, t, ev(p["path"]), ev(p["acc"]), ev(p["oflags"]), int(ev(p["cl"])))
        if n in ("close", "dup", "setown"):
            return (n, t, ev(p["fd"]))
        if n in ("dup2", "epoll_add", "epoll_del"):
            return (n, t, ev(p["fd"]), ev(p["fd2"]))
        if n == "setfl":
            return (n, t, ev(p["fd"]), ev(p["arg"]))
        if n == "setfd":
            return (n, t, ev(p["fd"]), int(ev(p["cl"])))
        if n == "lseek":
            return (n, t, ev(p["fd"]), ev(p["pos"]))
        if n in ("fork", "clone_files"):
            return (n, t, int(ev(p["ch_in"])))
        if n == "reopen":
            return (n, t, ev(p["t2"]), ev(p["fd2"]), ev(p["acc"]))
        return (n, t)

    def decode_state(self, ev: Callable[[z3.ExprRef], Any], s: State) -> World:
        """The explicit World a symbolic state stands for (normalized: dead slots dropped).
        Symbolic-only ghosts appear as: `leak_check` non-empty iff `leak` (with objref 0)."""
        return decode_values(self, {n: _evtree(ev, s[n]) for n in self.shapes()})

    def describe_extra(self, ev: Callable[[z3.ExprRef], Any], s: State) -> dict[str, str]:
        vals = {n: _evtree(ev, s[n]) for n in ("leak", "leak_w", "leak_pipe", *IMG_GHOSTS,
                                                 "rst_err", "clean")}
        return {k: str(int(v)) for k, v in vals.items()}

    # --- concrete side ---------------------------------------------------------------------

    @cached_property
    def concrete_config(self) -> Config:
        """The explicit config whose transition system this symbolic model is."""
        if self._cfg is not None:
            return self._cfg
        d = self.dom
        return Config(
            name=f"sym-{self.NI}-{self.NO}-{self.ND}-{self.NF}", inside_tasks=self.NI,
            outside_tasks=self.NO, max_fds=self.ND, paths=d.paths,
            access_modes=d.access_modes, open_flags=self.open_flags,
            open_cloexec=d.open_cloexec, setfl_flags=self.setfl_flags, offsets=d.offsets,
            kinds=COVERED_KINDS, disabled=tuple(a for a in ENV_ACTIONS if a not in d.actions),
            env_steps=d.env_steps if d.env_steps is not None else 10**6,
            checkpoint_steps=d.checkpoint_steps if d.checkpoint_steps is not None else 10**6,
            outside_acts_after=tuple(n for n, p in _RACE.items() if p in d.race_phases),
        )

    @cached_property
    def concrete_model(self) -> Any:
        from model.system import CrModel

        return CrModel(self.concrete_config, self.v)

    def concretize(self, states: list[World], actions: list[tuple], prop: str = ""
                   ) -> tuple[list[tuple[Any, World]], str]:
        """Replay the decoded actions on the explicit model, so the trace is a genuine run
        of `CrModel`: every state must agree with the decoded symbolic one (`summary`), and
        the last must violate `prop` (the spec's own predicate). Returns the (action, state)
        pairs and a problem text ('' when all agree)."""
        cm = self.concrete_model
        steps_on = self.dom.bounded
        w = cm.init_states()[0]
        out: list[tuple[Any, World]] = [(None, w)]
        if summary(w, steps_on) != summary(states[0], steps_on):
            return out, "initial states differ"
        for i, a in enumerate(actions):
            nxt = [w2 for a2, w2 in cm.successors(w) if a2 == a]
            if not nxt:
                return out, f"step {i + 1}: {a} is not a transition of the explicit model"
            w = nxt[0]
            out.append((a, w))
            if summary(w, steps_on) != summary(states[i + 1], steps_on):
                return out, (f"step {i + 1} ({a}): states differ: explicit "
                             f"{summary(w, steps_on)} vs symbolic "
                             f"{summary(states[i + 1], steps_on)}")
        if prop in self._predicates and self._predicates[prop](w):
            return out, f"the replayed last state does not violate {prop}"
        return out, ""


def _evtree(ev: Callable[[z3.ExprRef], Any], x: Any) -> Any:
    return [_evtree(ev, y) for y in x] if isinstance(x, list) else ev(x)


# --- environment transitions ---------------------------------------------------------------


class _Env:
    """The environment actions from one state, sharing the parameters and derived terms."""

    def __init__(self, m: CrSymModel, s: State, p: dict[str, z3.ExprRef],
                 table: int | None = None, phase: int | None = None,
                 new_table: int | None = None) -> None:
        """`table`/`phase`/`new_table` fix the acting task's fd table / the phase / the slot
        a new table takes (a proof case): the terms are then built with them as constants."""
        self.m, self.s, self.p = m, s, p
        self.new_table = new_table
        self.v = m.view(s)
        NT, ND = m.NT, m.ND
        t = p["t"]
        self.case = TRUE
        if table is None:
            self.X: z3.BitVecRef | int = sel(t, s["table"])
            self.U, self.Fi, self.C = self.v.task_slots(t)
        else:
            self.X = table
            self.case = is_(sel(t, s["table"]), table)
            self.U, self.Fi, self.C = s["used"][table], s["sfile"][table], s["cloexec"][table]
        if phase is not None:
            self.case = z3.And(self.case, is_(s["phase"], phase))
        fd, fd2 = p["fd"], p["fd2"]
        self.uF, self.fF, self.cF = sel(fd, self.U), sel(fd, self.Fi), sel(fd, self.C)
        self.u2, self.f2, self.c2 = sel(fd2, self.U), sel(fd2, self.Fi), sel(fd2, self.C)
        self.free = [z3.Not(u) for u in self.U]
        self.has_free, self.nfd = lowest(self.free, m.wD)
        self.has_free2, self.nfd2 = lowest(second(self.free), m.wD)
        ffree = [z3.Not(a) for a in self.v.alive_f]
        self.has_file, self.nf = lowest(ffree, m.wF)
        self.has_file2, self.nf2 = lowest(second(ffree), m.wF)
        self.has_obj, self.no = lowest([z3.Not(a) for a in self.v.obj_alive], m.wF)
        ph = s["phase"]
        self.ph0 = is_(ph, 0)
        ckx = in_(ph, m.dom.race_phases)
        if m.dom.bounded:
            self.ph0 = z3.And(self.ph0, z3.ULT(s["steps"], m.dom.env_steps))
            ckx = z3.And(ckx, z3.ULT(s["ext"], m.dom.checkpoint_steps))
        inside_t, alive_t, frozen_t = (sel(t, s["inside"]), sel(t, s["alive"]),
                                       sel(t, s["frozen"]))
        self.inside_t = inside_t
        t_ok = lt(t, NT)
        self.can = z3.And(t_ok, alive_t, z3.Not(frozen_t),
                          z3.Or(self.ph0, z3.And(ckx, z3.Not(inside_t))))
        self.fd_ok, self.fd2_ok = lt(fd, ND), lt(fd2, ND)

    # helpers building the post-state
    def base(self) -> State:
        post = dict(self.s)
        if self.m.dom.bounded:
            one = bv(1, 8)
            post["steps"] = z3.If(self.ph0, self.s["steps"] + one, self.s["steps"])
            post["ext"] = z3.If(self.ph0, self.s["ext"], self.s["ext"] + one)
        return post

    def fam(self, name: str, guard: z3.BoolRef, post: State, release: bool = False) -> Transition:
        if release:
            post = cleanup(self.m, self.s, post)
        return Transition(name, z3.And(self.case, self.can, guard), post, self.p)

    def set_slots(self, post: State, X: z3.BitVecRef | int, updates: list[tuple]) -> None:
        """updates: (fd term, used, file, cloexec) written into table X in order."""
        m = self.m
        used = [list(r) for r in post["used"]]
        sf = [list(r) for r in post["sfile"]]
        cl = [list(r) for r in post["cloexec"]]
        for x in range(m.NT):
            for d in range(m.ND):
                for fd, u, f, c in updates:
                    # fold what is known in Python, so untouched slots keep their terms
                    if (isinstance(fd, int) and fd != d) or (isinstance(X, int) and X != x):
                        continue
                    hits = ([] if isinstance(X, int) else [is_(X, x)]) + (
                        [] if isinstance(fd, int) else [is_(fd, d)])
                    if not hits:
                        used[x][d], sf[x][d], cl[x][d] = u, f, c
                        continue
                    hit = all_(hits)
                    used[x][d] = z3.If(hit, u, used[x][d])
                    sf[x][d] = z3.If(hit, f, sf[x][d])
                    cl[x][d] = z3.If(hit, c, cl[x][d])
        post["used"], post["sfile"], post["cloexec"] = used, sf, cl

    def set_file(self, post: State, f: z3.BitVecRef, **attrs: Any) -> None:
        for name, val in attrs.items():
            post[name] = [z3.If(is_(f, i), val, post[name][i]) for i in range(self.m.NF)]

    def new_file(self, post: State, f: z3.BitVecRef, kind: int, flags: Any, path: Any = None,
                 obj: Any = None) -> None:
        m = self.m
        self.set_file(post, f, kind=bv(kind, KW), flags=flags if not isinstance(flags, int)
                      else bv(flags, FW), path=path if path is not None else bv(0, m.wP),
                      obj=obj if obj is not None else bv(0, m.wF), pos=bv(0, m.wO),
                      owner=FALSE)

    def fattr(self, name: str, f: z3.BitVecRef) -> Any:
        return sel(f, self.s[name])

    # --- descriptors -----------------------------------------------------------------------

    def open(self) -> Transition:
        m, p = self.m, self.p
        acc, fl = p["acc"], p["oflags"]
        acc20 = z3.ZeroExt(FW - 2, acc)
        dom = z3.And(in_(acc, m.dom.access_modes), member(fl, m.open_flags),
                     TRUE if m.dom.open_cloexec else z3.Not(p["cl"]), lt(p["path"], m.dom.paths))
        post = self.base()
        self.new_file(post, self.nf, REG, acc20 | fl | bv(O_LARGEFILE, FW), path=p["path"])
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, p["cl"])])
        return self.fam("open", z3.And(dom, self.has_free, self.has_file), post)

    def close(self) -> Transition:
        post = self.base()
        self.set_slots(post, self.X, [(self.p["fd"], FALSE, bv(0, self.m.wF), FALSE)])
        return self.fam("close", z3.And(self.fd_ok, self.uF), post, release=True)

    def dup(self) -> Transition:
        post = self.base()
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.fF, FALSE)])
        return self.fam("dup", z3.And(self.fd_ok, self.uF, self.has_free), post)

    def dup2(self) -> Transition:
        p = self.p
        same = z3.And(self.u2, self.f2 == self.fF, z3.Not(self.c2))  # nothing would change
        post = self.base()
        self.set_slots(post, self.X, [(p["fd2"], TRUE, self.fF, FALSE)])
        g = z3.And(self.fd_ok, self.fd2_ok, self.uF, p["fd"] != p["fd2"], z3.Not(same))
        return self.fam("dup2", g, post, release=True)

    def setfl(self) -> Transition:
        m, p = self.m, self.p
        f, arg = self.fF, p["arg"]
        kind, old = self.fattr("kind", f), self.fattr("flags", f)
        code, new = setfl_term(kind, old, arg)
        post = self.base()
        self.set_file(post, f, flags=new)
        # tty_fasync() on a hung-up pty slave (no master left): ENOTTY
        enotty = z3.And(is_(kind, PTS), ((arg ^ old) & O_ASYNC) != 0,
                        z3.Not(sel(self.fattr("obj", f), self.v.master)))
        g = z3.And(self.fd_ok, self.uF, member(arg, m.setfl_flags), z3.Not(code),
                   z3.Not(enotty), new != old)
        return self.fam("setfl", g, post)

    def setfd(self) -> Transition:
        p = self.p
        post = self.base()
        self.set_slots(post, self.X, [(p["fd"], TRUE, self.fF, p["cl"])])
        return self.fam("setfd", z3.And(self.fd_ok, self.uF, p["cl"] != self.cF), post)

    def setown(self) -> Transition:
        post = self.base()
        self.set_file(post, self.fF, owner=TRUE)
        g = z3.And(self.fd_ok, self.uF, z3.Not(self.fattr("owner", self.fF)))
        return self.fam("setown", g, post)

    def lseek(self) -> Transition:
        m, p = self.m, self.p
        f = self.fF
        post = self.base()
        self.set_file(post, f, pos=p["pos"])
        pos_ok = lt(p["pos"], m.dom.offsets)
        g = z3.And(self.fd_ok, self.uF, is_(self.fattr("kind", f), REG), pos_ok,
                   p["pos"] != self.fattr("pos", f))
        return self.fam("lseek", g, post)

    # --- tasks -----------------------------------------------------------------------------

    def _child_ok(self) -> z3.BoolRef:
        m, ch = self.m, self.p["ch_in"]
        n_in, n_out = self.v.n_inside, self.v.n_outside
        room_in = z3.ULT(n_in, m.NI)
        room_out = z3.ULT(n_out, m.NO)
        # inside tasks make inside children; nothing enters the container once frozen
        return z3.And(z3.Or(self.ph0, z3.Not(ch)),
                      z3.If(self.inside_t, z3.And(ch, room_in),
                            z3.If(ch, room_in, room_out)))

    def _new_task(self, post: State, table: z3.BitVecRef) -> z3.BoolRef:
        m, s = self.m, self.s
        ok, nt = lowest([z3.Not(a) for a in s["alive"]], m.wT)
        post["alive"] = [z3.If(is_(nt, i), TRUE, s["alive"][i]) for i in range(m.NT)]
        post["inside"] = [z3.If(is_(nt, i), self.p["ch_in"], s["inside"][i])
                          for i in range(m.NT)]
        post["frozen"] = [z3.If(is_(nt, i), FALSE, s["frozen"][i]) for i in range(m.NT)]
        post["table"] = [z3.If(is_(nt, i), table, s["table"][i]) for i in range(m.NT)]
        return ok

    def _copy_table(self, post: State, clear_cloexec: bool) -> tuple[z3.BoolRef, z3.BitVecRef]:
        """A new table slot holding a copy of the task's table (close-on-exec descriptors
        dropped for exec)."""
        m = self.m
        ok, nx = lowest([z3.Not(a) for a in self.v.live_table], m.wT)
        self.copy_case = TRUE
        if self.new_table is not None:  # a proof case: the lowest free slot is this one
            self.copy_case = z3.And(ok, is_(nx, self.new_table))
            nx = bv(self.new_table, m.wT)
        used = [list(r) for r in post["used"]]
        sf = [list(r) for r in post["sfile"]]
        cl = [list(r) for r in post["cloexec"]]
        for x in range(m.NT):
            if self.new_table is not None and x != self.new_table:
                continue
            hit = is_(nx, x) if self.new_table is None else TRUE
            for d in range(m.ND):
                u = z3.And(self.U[d], z3.Not(self.C[d])) if clear_cloexec else self.U[d]
                used[x][d] = z3.If(hit, u, used[x][d])
                sf[x][d] = z3.If(hit, z3.If(u, self.Fi[d], bv(0, m.wF)), sf[x][d])
                cl[x][d] = z3.If(hit, z3.And(u, self.C[d]), cl[x][d])
        post["used"], post["sfile"], post["cloexec"] = used, sf, cl
        return ok, nx

    def frame_hints(self, post: State, child_in: z3.BoolRef) -> tuple[z3.BoolRef, ...]:
        """When neither the acting task nor a new task is inside, every fd table is held by
        the same inside tasks after the step as before: said per table, so that the solver
        sees, by congruence, that the counts summed over inside tables are unchanged (the
        sums of the leak lemmas are otherwise a hard arithmetic problem: minutes a query
        at 8 descriptors and 8 files)."""
        v0, v1 = self.v, self.m.view(post)
        quiet = z3.And(z3.Not(self.inside_t), z3.Not(child_in))
        return tuple(z3.Implies(quiet, z3.And(v1.ins_table[x] == v0.ins_table[x],
                                              v1.n_in_holders[x] == v0.n_in_holders[x]))
                     for x in range(self.m.NT))

    def fork(self) -> Transition:
        post = self.base()
        ok_x, nx = self._copy_table(post, clear_cloexec=False)
        self.case = z3.And(self.case, self.copy_case)  # ok_x holds in every fork
        ok_t = self._new_task(post, nx)
        tr = self.fam("fork", z3.And(self._child_ok(), ok_x, ok_t), post)
        return tr._replace(hints=self.frame_hints(tr.post, self.p["ch_in"]))

    def clone_files(self) -> Transition:
        post = self.base()
        ok_t = self._new_task(post, self.X)
        tr = self.fam("clone_files", z3.And(self._child_ok(), ok_t), post)
        return tr._replace(hints=self.frame_hints(tr.post, self.p["ch_in"]))

    def exec(self) -> Transition:
        m, s, t = self.m, self.s, self.p["t"]
        shared = gt(sel(self.X, self.v.table_users), num(1, m.CW))
        any_cl = any_(z3.And(self.U[d], self.C[d]) for d in range(m.ND))
        post = self.base()
        ok_x, nx = self._copy_table(post, clear_cloexec=True)  # used if shared
        # the new-table cases split only the shared exec; every case has the unshared one
        self.case = z3.And(self.case, z3.Or(z3.Not(shared), self.copy_case))
        unshared = self.base()
        self.set_slots(unshared, self.X, [(d, z3.And(self.U[d], z3.Not(self.C[d])),
                                           z3.If(z3.And(self.U[d], z3.Not(self.C[d])),
                                                 self.Fi[d], bv(0, m.wF)), FALSE)
                                          for d in range(m.ND)])
        out = self.base()
        for k in ("used", "sfile", "cloexec"):
            out[k] = [[z3.If(shared, post[k][x][d], unshared[k][x][d]) for d in range(m.ND)]
                      for x in range(m.NT)]
        out["table"] = [z3.If(z3.And(shared, is_(t, i)), nx, s["table"][i])
                        for i in range(m.NT)]
        g = z3.And(z3.Or(shared, any_cl), z3.Or(z3.Not(shared), ok_x))
        tr = self.fam("exec", g, out, release=True)
        return tr._replace(hints=self.frame_hints(tr.post, FALSE))

    def exit(self) -> Transition:
        m, s, t = self.m, self.s, self.p["t"]
        post = self.base()
        for k in ("alive", "inside", "frozen", "table"):
            old = s[k]
            # compaction: tasks after t move down one slot (the explicit model's order)
            nxt = [old[i + 1] for i in range(m.NT - 1)] + [FALSE if k != "table"
                                                           else bv(0, m.wT)]
            post[k] = [z3.If(z3.UGT(t, i), old[i], nxt[i]) for i in range(m.NT)]
        tr = self.fam("exit", TRUE, post, release=True)
        return tr._replace(hints=self.frame_hints(tr.post, FALSE))

    # --- objects ---------------------------------------------------------------------------

    def reopen(self) -> Transition:
        m, s, p = self.m, self.s, self.p
        t2, fd2, acc = p["t2"], p["fd2"], p["acc"]
        U2, F2, _ = self.v.task_slots(t2)
        used2, g = sel(fd2, U2), sel(fd2, F2)
        gk, gobj = self.fattr("kind", g), self.fattr("obj", g)
        acc20 = z3.ZeroExt(FW - 2, acc)
        flags = acc20 | bv(O_LARGEFILE, FW)
        pipe_kind = z3.If(is_(acc, O_RDONLY), bv(PIPE_R, KW),
                          z3.If(is_(acc, O_WRONLY), bv(PIPE_W, KW), bv(PIPE_RW, KW)))
        is_pipe = in_(gk, PIPES)
        kind = z3.If(is_pipe, pipe_kind, gk)
        obj = z3.If(is_(gk, PTMX), self.no, gobj)
        path = z3.If(is_(gk, REG), self.fattr("path", g), bv(0, m.wP))
        post = self.base()
        self.set_file(post, self.nf, kind=kind, flags=flags, path=path, obj=obj,
                      pos=bv(0, m.wO), owner=FALSE)
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, FALSE)])
        t2_ok = lt(t2, m.NT)
        master = sel(gobj, self.v.master)
        guard = z3.And(t2_ok, sel(t2, s["alive"]), self.fd2_ok, used2, in_(gk, REOPENABLE),
                       in_(acc, m.dom.access_modes), self.has_free, self.has_file,
                       z3.Implies(is_(gk, PTS), master),  # a hung-up slave: EIO
                       z3.Implies(is_(gk, PTMX), self.has_obj))
        return self.fam("reopen", guard, post)

    def _pair(self, name: str, k1: int, fl1: int, k2: int, fl2: int, with_obj: bool
              ) -> Transition:
        post = self.base()
        obj = self.no if with_obj else None
        self.new_file(post, self.nf, k1, fl1, obj=obj)
        self.new_file(post, self.nf2, k2, fl2, obj=obj)
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, FALSE),
                                      (self.nfd2, TRUE, self.nf2, FALSE)])
        g = z3.And(self.has_free2, self.has_file2, self.has_obj if with_obj else TRUE)
        return self.fam(name, g, post)

    def pipe(self) -> Transition:
        return self._pair("pipe", PIPE_R, O_RDONLY, PIPE_W, O_WRONLY, True)

    def openpty(self) -> Transition:
        return self._pair("openpty", PTMX, O_RDWR | O_LARGEFILE, PTS, O_RDWR, True)

    def _single(self, name: str, kind: int) -> Transition:
        m = self.m
        post = self.base()
        self.new_file(post, self.nf, kind, O_RDWR)
        if kind == EPOLL:  # a fresh interest list
            post["ep"] = [[[z3.And(z3.Not(is_(self.nf, e)), post["ep"][e][tf][d])
                            for d in range(m.ND)] for tf in range(m.NF)] for e in range(m.NF)]
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, FALSE)])
        return self.fam(name, z3.And(self.has_free, self.has_file), post)

    def epoll_create(self) -> Transition:
        return self._single("epoll_create", EPOLL)

    def timerfd(self) -> Transition:
        return self._single("timerfd", TIMERFD)

    def _ep_item(self) -> tuple[z3.BitVecRef, z3.BitVecRef, z3.BoolRef]:
        e, tf = self.fF, self.f2
        item = sel(e, [sel(tf, [sel(self.p["fd2"], self.s["ep"][ee][tt])
                                for tt in range(self.m.NF)]) for ee in range(self.m.NF)])
        return e, tf, item

    def _set_item(self, post: State, e: z3.BitVecRef, tf: z3.BitVecRef, val: z3.BoolRef
                  ) -> None:
        m, fd2 = self.m, self.p["fd2"]
        post["ep"] = [[[z3.If(z3.And(is_(e, ee), is_(tf, tt), is_(fd2, d)), val,
                              post["ep"][ee][tt][d]) for d in range(m.ND)]
                       for tt in range(m.NF)] for ee in range(m.NF)]

    def epoll_add(self) -> Transition:
        e, tf, item = self._ep_item()
        ek, tk = self.fattr("kind", e), self.fattr("kind", tf)
        loop = z3.And(is_(tk, EPOLL), sel(tf, [sel(e, row) for row in self.m_watch()]))
        post = self.base()
        self._set_item(post, e, tf, TRUE)
        g = z3.And(self.fd_ok, self.fd2_ok, self.uF, self.u2, self.p["fd"] != self.p["fd2"],
                   is_(ek, EPOLL), in_(tk, CAN_POLL), e != tf, z3.Not(item), z3.Not(loop))
        return self.fam("epoll_add", g, post)

    def m_watch(self) -> list[list[z3.BoolRef]]:
        """watch[i][j]: epoll file i watches file j, directly or through nested epolls
        (model.env._watches), as a transitive closure by repeated squaring."""
        m, s = self.m, self.s
        n = m.NF
        r = [[z3.And(is_(s["kind"][i], EPOLL), any_(s["ep"][i][j][d] for d in range(m.ND)))
              for j in range(n)] for i in range(n)]
        length = 1
        while length < n:
            r = [[z3.Or(r[i][j], any_(z3.And(r[i][k], r[k][j]) for k in range(n)))
                  for j in range(n)] for i in range(n)]
            length *= 2
        return r

    def epoll_del(self) -> Transition:
        e, tf, item = self._ep_item()
        post = self.base()
        self._set_item(post, e, tf, FALSE)
        g = z3.And(self.fd_ok, self.fd2_ok, self.uF, self.u2, is_(self.fattr("kind", e), EPOLL),
                   in_(self.fattr("kind", tf), CAN_POLL), e != tf, item)
        return self.fam("epoll_del", g, post)


def setfl_term(kind: z3.BitVecRef, flags: z3.BitVecRef, arg: z3.BitVecRef
               ) -> tuple[z3.BoolRef, z3.BitVecRef]:
    """model.env.setfl_file: (EINVAL?, flags after)."""
    einval = z3.And((arg & O_DIRECT) != 0, z3.Not(in_(kind, CAN_ODIRECT)))
    toggle = z3.And(((arg ^ flags) & O_ASYNC) != 0, in_(kind, HAS_FASYNC))
    f1 = z3.If(toggle, flags ^ O_ASYNC, flags)
    return einval, (arg & SETFL_MASK) | (f1 & ~bv(SETFL_MASK, FW))


def cleanup(m: CrSymModel, pre: State, post: State) -> State:
    """After a release (model.env._release): epoll items of dead targets and ghost entries
    of dead objects go (model.world.normalize drops them when it renumbers), and the release
    of a pty master hangs up its slave, which clears O_ASYNC on every file open on it."""
    v, v0 = m.view(post), m.view(pre)
    out = dict(post)
    died = [any_(z3.And(v0.alive_f[f], z3.Not(v.alive_f[f]), is_(pre["kind"][f], PTMX),
                        is_(pre["obj"][f], o)) for f in range(m.NF)) for o in range(m.NF)]
    out["flags"] = [z3.If(z3.And(is_(post["kind"][g], PTS), sel(post["obj"][g], died)),
                          post["flags"][g] & ~bv(O_ASYNC, FW), post["flags"][g])
                    for g in range(m.NF)]
    out["ep"] = [[[z3.And(post["ep"][e][tf][d], v.alive_f[tf]) for d in range(m.ND)]
                  for tf in range(m.NF)] for e in range(m.NF)]
    out["g_tab"] = [z3.And(post["g_tab"][x], v.live_table[x]) for x in range(m.NT)]
    out["g_file"] = [z3.And(post["g_file"][f], v.alive_f[f]) for f in range(m.NF)]
    out["g_ino"] = [z3.And(post["g_ino"][o], v.obj_alive[o]) for o in range(m.NF)]
    out["g_tty"] = [[z3.And(post["g_tty"][o][i], v.obj_alive[o]) for i in (0, 1)]
                    for o in range(m.NF)]
    return out


# --- checkpoint and restart ------------------------------------------------------------------


def restore_term(v: Variant, kind: z3.BitVecRef, fl: z3.BitVecRef
                 ) -> tuple[z3.BoolRef, z3.BitVecRef]:
    """model.restart._Restorer.restore_file for an image record (kind, f_flags): (restart
    fails with EINVAL?, the flags F_GETFL shows after restore)."""
    acc = z3.Extract(1, 0, fl)
    acc20 = fl & O_ACCMODE
    lf = bv(O_LARGEFILE, FW)
    start = z3.If(is_(kind, REG), (fl & ~bv(OPEN_ONLY_FLAGS, FW)) | lf,
            z3.If(is_(kind, PIPE_R), bv(O_RDONLY, FW),
            z3.If(is_(kind, PIPE_W), bv(O_WRONLY, FW),
            z3.If(is_(kind, PIPE_RW), bv(O_RDWR, FW),
            z3.If(in_(kind, (PTMX, PTS)), acc20 | lf, bv(O_RDWR, FW))))))
    err = z3.Or((fl & OPEN_ONLY_FLAGS) != 0, is_(acc, 3), is_(kind, TIMERFD),
                z3.Not(in_(kind, VALID_KINDS)))
    flags = start
    if v.setfl == "mask":
        e2, flags = setfl_term(kind, start, fl & CKPT_SETFL_MASK)
        err = z3.Or(err, e2)
    if v.fmode_check:
        start_acc = z3.Extract(1, 0, start)
        mode = fmode_of(kind, start_acc)
        saved = fmode_of(kind, acc)
        w, r = bv(FMODE_WRITE, 3), bv(FMODE_READ, 3)
        mode = z3.If(z3.And((mode & w) != 0, (saved & w) == 0), mode & ~w, mode)
        mode = z3.If(z3.And((mode & r) == 0, (saved & r) != 0), mode | r, mode)
        err = z3.Or(err, (mode & 3) != (saved & 3))
    if v.restore_largefile:
        flags = (flags & ~lf) | (fl & lf)
    if v.flags_reread:
        err = z3.Or(err, (fl & CKPT_SETFL_MASK & ~flags) != 0)
    return err, flags


class _Ckpt:
    """The checkpoint's phases and restart from one state."""

    def __init__(self, m: CrSymModel, s: State) -> None:
        self.m, self.s, self.v = m, s, m.view(s)

    def _set(self, post: State, phase: int | z3.BitVecRef, error: Any = None) -> None:
        post["phase"] = bv(phase, PW) if isinstance(phase, int) else phase
        if error is not None:
            post["error"] = bv(error, EW) if isinstance(error, int) else error

    def freeze(self) -> Transition:
        m, s, v = self.m, self.s, self.v
        post = dict(s)
        post["frozen"] = [z3.Or(s["frozen"][t], s["inside"][t]) for t in range(m.NT)]
        self._set(post, FROZEN, 0)
        for k in ("h_tab", "v_tab", "g_tab", "h_file", "v_file", "g_file", "h_ino", "v_ino",
                  "g_ino"):
            post[k] = [FALSE] * len(s[k])
        for k in ("h_tty", "v_tty", "g_tty"):
            post[k] = [[FALSE, FALSE] for _ in range(m.NF)]
        for k in ("leak", "leak_w", "leak_pipe", *IMG_GHOSTS, "rst_err"):
            post[k] = FALSE
        if m.dom.bounded:
            post["ext"] = bv(0, 8)
        post["clean"] = v.is_clean
        post["tamper"] = bv(0, 4)
        if not m.v.full_container:  # subtree: the ghost record is taken at the freeze
            r = v.outside_refs
            post["g_tab"], post["g_file"], post["g_ino"] = r["tab"], r["file"], r["ino"]
            post["g_tty"] = r["tty"]
        g = z3.And(is_(s["phase"], 0), any_(v.t_in))
        return Transition("freeze", g, post, {})

    def collect_terms(self) -> dict[str, Any]:
        """The objhash `collect` builds from this state (model.checkpoint.collect)."""
        m, s, v, var = self.m, self.s, self.v, self.m.v
        CW = m.CW
        one, zero = num(1, CW), num(0, CW)
        start1 = num(var.users_start - 1, CW)
        # table encounters: each inside table scanned once, each used slot
        T = v.tin
        is_ep = [is_(s["kind"][f], EPOLL) for f in range(m.NF)]
        if var.collect_every:
            runs_ep = [z3.If(is_ep[e], T[e], zero) for e in range(m.NF)]
        else:
            runs_ep = [z3.If(z3.And(is_ep[e], T[e] != 0), one, zero) for e in range(m.NF)]
        items = [[cnt(s["ep"][e][f], CW) for f in range(m.NF)] for e in range(m.NF)]
        P = []
        for f in range(m.NF):
            terms = [runs_ep[e] * items[e][f] if var.collect_every
                     else z3.If(runs_ep[e] != 0, items[e][f], zero)
                     for e in range(m.NF)]
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            # eventpoll skips epoll targets; items only ever watch live files (release
            # drops the others), which the guard says outright so no lemma must
            P.append(z3.If(z3.Or(is_ep[f], z3.Not(v.alive_f[f])), zero, total))
        seen = [T[f] + P[f] for f in range(m.NF)]
        h_file = [seen[f] != 0 for f in range(m.NF)]
        u_file = [start1 + T[f] + (P[f] if var.epoll_counts_targets else zero)
                  for f in range(m.NF)]
        if var.collect_every:
            runs = seen
        else:
            runs = [z3.If(h_file[f], one, zero) for f in range(m.NF)]

        def on_sum(o: int, kinds: tuple[int, ...]) -> z3.BitVecRef:
            total = zero
            for f in range(m.NF):
                total = total + z3.If(z3.And(in_(s["kind"][f], kinds), is_(s["obj"][f], o)),
                                      runs[f], zero)
            return total

        ino = [on_sum(o, PIPES) if var.pipe_ref_users else zero for o in range(m.NF)]
        ttm = [on_sum(o, (PTMX,)) for o in range(m.NF)]
        tts = [on_sum(o, (PTMX, PTS)) for o in range(m.NF)]
        return {
            "h_tab": list(v.ins_table),
            "u_tab": [start1 + v.n_in_holders[x] for x in range(m.NT)],
            "h_file": h_file, "u_file": u_file,
            "h_ino": [c != 0 for c in ino], "u_ino": [start1 + c for c in ino],
            "h_tty": [[ttm[o] != 0, tts[o] != 0] for o in range(m.NF)],
            "u_tty": [[start1 + ttm[o], start1 + tts[o]] for o in range(m.NF)],
        }

    def collect(self) -> Transition:
        m, s = self.m, self.s
        post = dict(s)
        post.update(self.collect_terms())
        post["v_tab"] = [FALSE] * m.NT
        post["v_file"] = [FALSE] * m.NF
        post["v_ino"] = [FALSE] * m.NF
        post["v_tty"] = [[FALSE, FALSE] for _ in range(m.NF)]
        if m.v.tables_checked_at_collect:  # an fd table also held outside: EBUSY at once
            v = self.v  # files->count: the holders and now the objhash's grab
            r = [cnt([v.holds(t, x) for t in range(m.NT)] + [post["h_tab"][x]], m.CW)
                 for x in range(m.NT)]
            fail = any_(z3.And(post["h_tab"][x], r[x] != post["u_tab"][x]) for x in range(m.NT))
            post["clean"] = z3.And(s["clean"], z3.Or(z3.Not(fail), v.is_clean))
            self._set(post, z3.If(fail, bv(FAILED, PW), bv(COLLECTED, PW)),
                      z3.If(fail, bv(EBUSY, EW), s["error"]))
        else:
            self._set(post, COLLECTED)
        return Transition("collect", is_(s["phase"], FROZEN), post, {})

    def contained(self) -> Transition:
        m, s, v = self.m, self.s, self.v
        post = dict(s)
        r = v.outside_refs
        post["g_tab"], post["g_file"], post["g_ino"] = r["tab"], r["file"], r["ino"]
        post["g_tty"] = r["tty"]
        fail = v.leaks if m.v.contained_check else FALSE
        post["clean"] = z3.And(s["clean"], v.is_clean)
        self._set(post, z3.If(fail, bv(FAILED, PW), bv(CHECKED, PW)),
                  z3.If(fail, bv(EBUSY, EW), s["error"]))
        return Transition("contained", is_(s["phase"], COLLECTED), post, {})

    def write(self) -> Transition:
        m, s, v, var = self.m, self.s, self.v, self.m.v
        NT, ND, NF = m.NT, m.ND, m.NF
        full = var.full_container
        skip = [is_(s["kind"][f], TIMERFD) if var.skip_uncheckpointable else FALSE
                for f in range(NF)]
        wt = v.t_in  # inside tasks, in task order
        first_holder = [z3.And(wt[t], z3.Not(any_(z3.And(wt[u], s["table"][u] == s["table"][t])
                                                   for u in range(t))))
                        for t in range(NT)]
        TU, TF, TC = [], [], []
        for t in range(NT):
            x = s["table"][t]
            TU.append([sel(x, [s["used"][xx][d] for xx in range(NT)]) for d in range(ND)])
            TF.append([sel(x, [s["sfile"][xx][d] for xx in range(NT)]) for d in range(ND)])
            TC.append([sel(x, [s["cloexec"][xx][d] for xx in range(NT)]) for d in range(ND)])
        positions = [(t, d) for t in range(NT) for d in range(ND)]
        pw = {(t, d): z3.And(first_holder[t], TU[t][d], z3.Not(sel(TF[t][d], skip)))
              for t, d in positions}
        first = {}
        for i, (t, d) in enumerate(positions):
            earlier = [z3.And(pw[q], TF[q[0]][q[1]] == TF[t][d]) for q in positions[:i]]
            first[(t, d)] = z3.And(pw[(t, d)], z3.Not(any_(earlier)))
        written_f = [any_(z3.And(pw[q], is_(TF[q[0]][q[1]], f)) for q in positions)
                     for f in range(NF)]
        # per-file record errors (model.checkpoint._file_record), full mode "late" adds
        kind, obj = s["kind"], s["obj"]
        late_tty = []
        for f in range(NF):
            hm = sel(obj[f], [s["h_tty"][o][0] for o in range(NF)])
            hs = sel(obj[f], [s["h_tty"][o][1] for o in range(NF)])
            mst = sel(obj[f], v.master)
            late = z3.Or(z3.And(is_(kind[f], PTMX), z3.Or(z3.Not(hm), z3.Not(hs))),
                         z3.And(is_(kind[f], PTS), z3.Or(z3.Not(hs), z3.And(mst, z3.Not(hm)))))
            late_tty.append(late if full else FALSE)
        rec_err = [z3.Or(is_(kind[f], TIMERFD), s["owner"][f], late_tty[f]) for f in range(NF)]
        rec_code = [z3.If(is_(kind[f], TIMERFD), bv(EBADF, EW), bv(EBUSY, EW))
                    for f in range(NF)]
        late_file = [z3.Not(s["h_file"][f]) if full else FALSE for f in range(NF)]
        # deferred epoll queue: every item's target needs an objref
        has_ref = [z3.Or(s["h_file"][f], written_f[f]) for f in range(NF)]
        def_err = any_(z3.And(written_f[e], is_(kind[e], EPOLL), s["ep"][e][tf][d],
                              z3.Not(has_ref[tf]))
                       for e in range(NF) for tf in range(NF) for d in range(ND))
        code: z3.BitVecRef = z3.If(def_err, bv(EBUSY, EW), bv(0, EW))
        conds = [def_err]
        for t in reversed(range(NT)):
            for d in reversed(range(ND)):
                q = (t, d)
                f = TF[t][d]
                lf, re, rc = sel(f, late_file), sel(f, rec_err), sel(f, rec_code)
                cond = z3.And(pw[q], z3.Or(lf, z3.And(first[q], re)))
                code = z3.If(cond, z3.If(lf, bv(EBUSY, EW), rc), code)
                conds.append(cond)
            if full:
                late_tab = z3.And(wt[t], z3.Not(sel(s["table"][t], s["h_tab"])))
                code = z3.If(late_tab, bv(EBUSY, EW), code)
                conds.append(late_tab)
        # the first error in write order gives the errno; that there is one is simply the
        # disjunction (every errno above is non-zero), which is far easier for the solver
        fail = any_(conds)
        # success: what is visited, the leak ghosts, what restart will give
        vis_tab = list(v.ins_table)
        vis_file = written_f
        vis_ino = [any_(z3.And(written_f[f], v.on(f, o), in_(kind[f], PIPES))
                        for f in range(NF)) for o in range(NF)]
        wm = [any_(z3.And(written_f[f], is_(kind[f], PTMX), is_(obj[f], o)) for f in range(NF))
              for o in range(NF)]
        ws = [any_(z3.And(written_f[f], is_(kind[f], PTS), is_(obj[f], o)) for f in range(NF))
              for o in range(NF)]
        vis_tty = [[z3.Or(wm[o], z3.And(ws[o], v.master[o])), z3.Or(wm[o], ws[o])]
                   for o in range(NF)]
        ept = [any_(z3.And(written_f[e], is_(kind[e], EPOLL), s["ep"][e][tf][d])
                    for e in range(NF) for d in range(ND)) for tf in range(NF)]
        # nothing is visited before the write (collect and freeze clear the marks)
        new = {"tab": vis_tab, "file": vis_file, "ino": vis_ino, "tty": vis_tty}
        now = v.outside_refs

        def hits(ghost: dict[str, Any], types: tuple[str, ...]) -> z3.BoolRef:
            out = []
            if "tab" in types:
                out += [z3.And(new["tab"][x], ghost["tab"][x]) for x in range(NT)]
            if "file" in types:
                out += [z3.And(z3.Or(new["file"][f], ept[f]), ghost["file"][f])
                        for f in range(NF)]
            if "ino" in types:
                out += [z3.And(new["ino"][o], ghost["ino"][o]) for o in range(NF)]
            if "tty" in types:
                out += [z3.And(new["tty"][o][i], ghost["tty"][o][i])
                        for o in range(NF) for i in (0, 1)]
            return any_(out)

        ghost = {"tab": s["g_tab"], "file": s["g_file"], "ino": s["g_ino"], "tty": s["g_tty"]}
        alltypes = ("tab", "file", "ino", "tty")
        # restart, as the specs read it
        rerr, rflags = zip(*(restore_term(var, kind[f], s["flags"][f]) for f in range(NF)),
                           strict=True)
        bad_f = [(rflags[f] & SETTABLE) != (s["flags"][f] & SETTABLE) for f in range(NF)]
        bad = []
        for q in positions:
            t, d = q
            f = TF[t][d]
            b = sel(f, bad_f)
            if var.cloexec_per_file:
                b = z3.Or(b, any_(z3.And(pw[r], TF[r[0]][r[1]] == f, TC[r[0]][r[1]] != TC[t][d])
                                  for r in positions if r != q))
            bad.append(z3.And(pw[q], b))
        in_slots = [z3.And(v.ins_table[x], s["used"][x][d]) for x in range(NT) for d in range(ND)]
        timer_in = any_(z3.And(c, is_(sel(s["sfile"][x][d], kind), TIMERFD))
                        for c, (x, d) in zip(in_slots, [(x, d) for x in range(NT)
                                                        for d in range(ND)], strict=True))
        if var.skip_uncheckpointable:
            bad.append(timer_in)  # the left-out descriptor is missing after restart
        post = dict(s)
        post["v_tab"], post["v_file"], post["v_ino"], post["v_tty"] = (
            new["tab"], new["file"], new["ino"], new["tty"])
        post["h_tab"] = [z3.Or(s["h_tab"][x], new["tab"][x]) for x in range(NT)]
        post["h_file"] = [z3.Or(s["h_file"][f], new["file"][f]) for f in range(NF)]
        post["h_ino"] = [z3.Or(s["h_ino"][o], new["ino"][o]) for o in range(NF)]
        post["h_tty"] = [[z3.Or(s["h_tty"][o][i], new["tty"][o][i]) for i in (0, 1)]
                         for o in range(NF)]
        start = num(var.users_start, m.CW)
        post["u_tab"] = [z3.If(s["h_tab"][x], s["u_tab"][x], start) for x in range(NT)]
        post["u_file"] = [z3.If(s["h_file"][f], s["u_file"][f], start) for f in range(NF)]
        post["u_ino"] = [z3.If(s["h_ino"][o], s["u_ino"][o], start) for o in range(NF)]
        post["u_tty"] = [[z3.If(s["h_tty"][o][i], s["u_tty"][o][i], start) for i in (0, 1)]
                         for o in range(NF)]
        post["leak"] = hits(ghost, alltypes)
        post["leak_w"] = hits(now, alltypes)
        post["leak_pipe"] = hits(ghost, ("ino", "tty"))
        post["img_bad"] = any_(bad)
        # restart fails on a record it cannot restore, or on an epoll item whose target has
        # an objref (hashed at collect) but no file record (possible without the visited check)
        dangling = any_(z3.And(written_f[e], is_(kind[e], EPOLL), s["ep"][e][tf][d],
                               z3.Not(written_f[tf]))
                        for e in range(NF) for tf in range(NF) for d in range(ND))
        post["img_err"] = z3.Or(any_(z3.And(written_f[f], rerr[f]) for f in range(NF)),
                                dangling)
        post["img_timerfd"] = timer_in
        # sharing and counts after restart (restore_preserves_offsets_and_sharing,
        # refcounts_restored): correct restart rebuilds one file per objref and one table
        # per table objref, so only the restart knobs can break them
        # (built only under the knob that reads them: dup_rec alone is O(positions^2) terms)
        share_bad, count_bad = [], []
        if var.new_file_per_fd:  # a file with two fd records comes back as two files
            dup_rec = any_(z3.And(pw[q], pw[r], TF[q[0]][q[1]] == TF[r[0]][r[1]])
                           for i, q in enumerate(positions) for r in positions[i + 1:])
            share_bad.append(dup_rec)
            count_bad.append(dup_rec)
        if not var.restore_pos:  # a seekable file comes back at offset 0
            share_bad.append(any_(z3.And(written_f[f], is_(kind[f], REG), s["pos"][f] != 0)
                                  for f in range(NF)))
        if not var.share_tables:  # a later task gets a copy: its own table, counted again
            shared_tab = [any_(z3.And(wt[t], wt[u], s["table"][t] == s["table"][u])
                               for u in range(t + 1, NT)) for t in range(NT)]
            share_bad.append(any_(shared_tab))
            count_bad.append(any_(z3.And(shared_tab[t], first_holder[t], pw[(t, d)])
                                  for t in range(NT) for d in range(ND)))
        if var.restart_keeps_ref:  # every restored file one reference too many
            count_bad.append(any_(pw.values()))
        if var.skip_uncheckpointable:  # the left-out descriptor and file are missing
            share_bad.append(timer_in)
            count_bad.append(timer_in)
        post["img_share"] = any_(share_bad)
        post["img_count"] = any_(count_bad)
        # what a hostile image can be made from (model.image.tamper): an fd record (and so
        # a file record), and a read-write file record whose f_mode can be lowered
        post["img_fd"] = any_(pw.values())
        post["img_rdwr"] = any_(z3.And(written_f[f], (s["flags"][f] & 3) == O_RDWR)
                                for f in range(NF))
        post["g_tab"], post["g_file"] = [FALSE] * NT, [FALSE] * NF
        post["g_ino"], post["g_tty"] = [FALSE] * NF, [[FALSE, FALSE] for _ in range(NF)]
        if var.check_at_write:  # counts compared in the same step, with the write's objhash
            late_leak = m.view(post).leaks
            code = z3.If(fail, code, bv(EBUSY, EW))
            fail = z3.Or(fail, late_leak)
        # on failure the rest is moot: the explicit model drops everything but the errno
        # (and the completeness ghost, which _fail takes from the state the write read)
        post["clean"] = z3.And(s["clean"], z3.Or(z3.Not(fail), v.is_clean))
        out = post
        self._set(out, z3.If(fail, bv(FAILED, PW), bv(WRITTEN, PW)),
                  z3.If(fail, code, s["error"]))
        start_phase = CHECKED if full else FROZEN
        return Transition("write", is_(s["phase"], start_phase), out, {})

    def visited(self) -> Transition:
        m, s, v, var = self.m, self.s, self.v, self.m.v
        unvisited = any_(
            [z3.And(s["h_tab"][x], z3.Not(s["v_tab"][x])) for x in range(m.NT)]
            + [z3.And(s["h_file"][f], z3.Not(s["v_file"][f])) for f in range(m.NF)]
            + [z3.And(s["h_ino"][o], z3.Not(s["v_ino"][o])) for o in range(m.NF)]
            + [z3.And(s["h_tty"][o][i], z3.Not(s["v_tty"][o][i]))
               for o in range(m.NF) for i in (0, 1)])
        fail = z3.Or(unvisited if var.visited_check else FALSE,
                     v.leaks if var.recheck_after_write else FALSE)
        post = dict(s)
        post["clean"] = z3.And(s["clean"], z3.Or(z3.Not(fail), v.is_clean))
        self._set(post, z3.If(fail, bv(FAILED, PW), bv(DONE, PW)),
                  z3.If(fail, bv(EBUSY, EW), s["error"]))
        return Transition("visited", is_(s["phase"], WRITTEN), post, {})

    def tamper(self, k: z3.BitVecRef) -> Transition:
        """model.image.tamper: one mutation of the image, once, where it applies (a table
        record is always there: the container's tasks are frozen, so they exist)."""
        s = self.s
        post = dict(s)
        post["tamper"] = k
        applies = z3.Or(z3.And(z3.UGE(k, 1), z3.ULE(k, T_BAD_NFDS - 1), s["img_fd"]),
                        is_(k, T_BAD_NFDS), z3.And(is_(k, T_FMODE_DOWN), s["img_rdwr"]))
        g = z3.And(is_(s["phase"], DONE), is_(s["tamper"], 0), applies)
        return Transition("tamper", g, post, {"k": k})

    def restart(self) -> Transition:
        """The untampered image fails as the write recorded (img_err); a malformed one always
        fails, except an fd record naming an object of the wrong type where restart does not
        check types (it skips the descriptor); a lowered f_mode fails nothing."""
        s, var = self.s, self.m.v
        post = dict(s)
        k = s["tamper"]
        as_written = z3.Or(is_(k, 0), is_(k, T_FMODE_DOWN),
                           z3.And(z3.BoolVal(not var.type_check), is_(k, T_WRONG_TYPE)))
        post["rst_err"] = z3.If(as_written, s["img_err"], TRUE)
        self._set(post, RESTARTED)
        return Transition("restart", is_(s["phase"], DONE), post, {})



# --- decoding and comparing ----------------------------------------------------------------


def decode_values(m: CrSymModel, val: dict[str, Any]) -> World:
    """A World from the values of a symbolic state (`fresh` layout, Python ints/bools)."""
    phase = val["phase"]
    NT, ND, NF = m.NT, m.ND, m.NF
    error = val["error"]
    if phase in (DONE, FAILED, RESTARTED):  # the explicit model drops the running system
        cr = Cr(phase, error=error if phase == FAILED else 0,
                leak_check=((0, OBJ_FILE),) if val["leak"] and phase != FAILED else (),
                leak_write=((0, OBJ_FILE),) if val["leak_w"] and phase != FAILED else (),
                rst_error=EINVAL if phase == RESTARTED and val["rst_err"] else 0,
                clean=int(val["clean"]), tampered=val["tamper"])
        return World((), (), (), 0, cr)
    tasks = tuple(Task(int(val["inside"][t]), int(val["frozen"][t]), val["table"][t])
                  for t in range(NT) if val["alive"][t])
    tables = tuple(tuple(val["sfile"][x][d] * 2 + int(val["cloexec"][x][d])
                         if val["used"][x][d] else EMPTY for d in range(ND)) for x in range(NT))
    files = []
    for f in range(NF):
        k = val["kind"][f]
        if k not in VALID_KINDS:
            k = REG
        fl = val["flags"][f]
        acc = fl & 3
        fmode = (acc_fmode(acc) if acc != 3 else 0) | (FMODE_LSEEK if k == REG else 0)
        items = tuple(sorted((tf, d) for tf in range(NF) for d in range(ND)
                             if val["ep"][f][tf][d])) if k == EPOLL else ()
        files.append(File(k, val["path"][f] if k == REG else -1,
                          val["obj"][f] if k in OBJ_KINDS_SYM else -1, fl, fmode,
                          val["pos"][f], int(val["owner"][f]), items))
    steps = val["steps"] if "steps" in val else 0
    if phase == 0:
        from model.world import normalize

        return normalize(World(tasks, tables, tuple(files), steps))
    entries = []
    for x in range(NT):
        if val["h_tab"][x]:
            entries.append(ObjEntry(OBJ_FILE_TABLE, x, val["u_tab"][x], int(val["v_tab"][x])))
    for f in range(NF):
        if val["h_file"][f]:
            entries.append(ObjEntry(OBJ_FILE, f, val["u_file"][f], int(val["v_file"][f])))
    for o in range(NF):
        if val["h_ino"][o]:
            entries.append(ObjEntry(OBJ_INODE, o, val["u_ino"][o], int(val["v_ino"][o])))
        for i in (0, 1):
            if val["h_tty"][o][i]:
                entries.append(ObjEntry(OBJ_TTY, o * 2 + i, val["u_tty"][o][i],
                                        int(val["v_tty"][o][i])))
    ghost = ([(OBJ_FILE_TABLE, x) for x in range(NT) if val["g_tab"][x]]
             + [(OBJ_FILE, f) for f in range(NF) if val["g_file"][f]]
             + [(OBJ_INODE, o) for o in range(NF) if val["g_ino"][o]]
             + [(OBJ_TTY, o * 2 + i) for o in range(NF) for i in (0, 1) if val["g_tty"][o][i]])
    cr = Cr(phase, error=0, objhash=tuple(entries), ghost=tuple(sorted(ghost)),
            leak_check=((0, OBJ_FILE),) if phase == WRITTEN and val["leak"] else (),
            leak_write=((0, OBJ_FILE),) if phase == WRITTEN and val["leak_w"] else (),
            ext_steps=val["ext"] if "ext" in val else 0, clean=int(val["clean"]))
    from model.world import normalize

    return normalize(World(tasks, tables, tuple(files), steps, cr))


def encode_world(m: CrSymModel, w: World) -> dict[str, Any] | None:
    """Values of the symbolic state standing for an explicit World at phase 0 or during a
    checkpoint up to WRITTEN (None if it does not fit the sizes). Task i -> slot i, table j
    -> slot j, file k -> slot k, object ids as they are."""
    NT, ND, NF = m.NT, m.ND, m.NF
    if len(w.tasks) > NT or len(w.tables) > NT or len(w.files) > NF:
        return None
    if any(len(tb) != ND for tb in w.tables):
        return None
    if any(f.obj >= NF for f in w.files):
        return None
    cr = w.cr
    if cr and cr.phase not in (FROZEN, COLLECTED, CHECKED, WRITTEN):
        return None
    val: dict[str, Any] = {}
    val["alive"] = [t < len(w.tasks) for t in range(NT)]
    val["inside"] = [bool(w.tasks[t].inside) if t < len(w.tasks) else False for t in range(NT)]
    val["frozen"] = [bool(w.tasks[t].frozen) if t < len(w.tasks) else False for t in range(NT)]
    val["table"] = [w.tasks[t].table if t < len(w.tasks) else 0 for t in range(NT)]
    val["used"] = [[x < len(w.tables) and w.tables[x][d] != EMPTY for d in range(ND)]
                   for x in range(NT)]
    val["sfile"] = [[slot_file(w.tables[x][d]) if val["used"][x][d] else 0 for d in range(ND)]
                    for x in range(NT)]
    val["cloexec"] = [[bool(slot_cloexec(w.tables[x][d])) if val["used"][x][d] else False
                       for d in range(ND)] for x in range(NT)]

    def fget(f: int, attr: str, default: Any) -> Any:
        return getattr(w.files[f], attr) if f < len(w.files) else default

    val["kind"] = [fget(f, "kind", REG) for f in range(NF)]
    val["path"] = [max(0, fget(f, "path", 0)) for f in range(NF)]
    val["obj"] = [max(0, fget(f, "obj", 0)) for f in range(NF)]
    val["flags"] = [fget(f, "f_flags", 0) for f in range(NF)]
    val["pos"] = [fget(f, "f_pos", 0) for f in range(NF)]
    val["owner"] = [bool(fget(f, "owner", 0)) for f in range(NF)]
    val["ep"] = [[[f < len(w.files) and (tf, d) in w.files[f].epitems for d in range(ND)]
                  for tf in range(NF)] for f in range(NF)]
    val["phase"] = cr.phase if cr else 0
    val["error"] = 0
    z = {"tab": NT, "file": NF, "ino": NF}
    for pre in ("h", "v", "g"):
        for k, n in z.items():
            val[f"{pre}_{k}"] = [False] * n
        val[f"{pre}_tty"] = [[False, False] for _ in range(NF)]
    for k, n in z.items():
        val[f"u_{k}"] = [0] * n
    val["u_tty"] = [[0, 0] for _ in range(NF)]
    key = {OBJ_FILE_TABLE: "tab", OBJ_FILE: "file", OBJ_INODE: "ino"}
    if cr:
        for e in cr.objhash:
            if e.objtype == OBJ_TTY:
                val["h_tty"][e.ptr >> 1][e.ptr & 1] = True
                val["u_tty"][e.ptr >> 1][e.ptr & 1] = e.users
                val["v_tty"][e.ptr >> 1][e.ptr & 1] = bool(e.visited)
            elif e.objtype in key:
                k = key[e.objtype]
                val[f"h_{k}"][e.ptr] = True
                val[f"u_{k}"][e.ptr] = e.users
                val[f"v_{k}"][e.ptr] = bool(e.visited)
            else:
                return None
        for typ, ptr in cr.ghost:
            if typ == OBJ_TTY:
                val["g_tty"][ptr >> 1][ptr & 1] = True
            elif typ in key:
                val[f"g_{key[typ]}"][ptr] = True
    val["leak"] = bool(cr and cr.leak_check)
    val["leak_w"] = bool(cr and cr.leak_write)
    val["leak_pipe"] = bool(cr and any(t in (OBJ_INODE, OBJ_TTY) for _, t in cr.leak_check))
    for k in (*IMG_GHOSTS, "rst_err"):
        val[k] = False
    val["clean"] = bool(cr and cr.clean)
    val["tamper"] = 0
    if m.dom.bounded:
        val["steps"] = w.steps
        val["ext"] = cr.ext_steps if cr else 0
    return val


def constrain(m: CrSymModel, s: State, val: dict[str, Any]) -> z3.BoolRef:
    """The symbolic state `s` equals the values `val` (only the keys given)."""
    cs = []

    def walk(x: Any, y: Any) -> None:
        if isinstance(x, list):
            for a, b in zip(x, y, strict=True):
                walk(a, b)
        elif z3.is_bool(x):
            cs.append(x if y else z3.Not(x))
        else:
            cs.append(x == y)

    for k, y in val.items():
        walk(s[k], y)
    return z3.And(cs)


def summary(w: World, steps: bool = True) -> tuple:
    """A renaming-invariant view of a World for comparing the two engines: the observable
    projection (model.world.project) plus the epoll targets, owners and paths, and the
    checkpoint's phase, errno, objhash (users, visited) and ghost record with every object
    named by the descriptors that reach it. Objref order, the image and the snapshot are
    left out (the symbolic model does not keep them)."""
    from model.world import project

    cr = w.cr
    if cr and cr.phase == FAILED:  # what else the failed checkpoint recorded is moot
        return ("ended", cr.phase, cr.error, cr.clean)
    if cr and cr.phase in (DONE, RESTARTED):
        return ("ended", cr.phase, bool(cr.leak_check), bool(cr.leak_write),
                cr.rst_error != 0, cr.tampered)
    proj = project(w)
    fnames: dict[int, tuple] = {}
    for ti, t in enumerate(w.tasks):
        for fd, s in enumerate(w.tables[t.table]):
            if s != EMPTY:
                fnames.setdefault(slot_file(s), ())
                fnames[slot_file(s)] += ((ti, fd),)

    def fname(f: int) -> tuple:
        if f in fnames:
            return ("fds", fnames[f])
        x = w.files[f]
        return ("orphan", x.kind, x.f_flags, x.f_pos, x.path, len(x.epitems))

    def oname(o: int, kinds: Iterable[int]) -> tuple:
        ks = tuple(kinds)
        return tuple(sorted(fname(f) for f, x in enumerate(w.files) if x.obj == o
                            and x.kind in ks))

    def tname(x: int) -> tuple:
        return tuple(i for i, t in enumerate(w.tasks) if t.table == x) or ("orphan-table",)

    def name(typ: int, ptr: int) -> tuple:
        if typ == OBJ_FILE_TABLE:
            return (typ, tname(ptr))
        if typ == OBJ_FILE:
            return (typ, fname(ptr))
        if typ == OBJ_INODE:
            return (typ, oname(ptr, PIPES))
        return (typ, ptr & 1, oname(ptr >> 1, (PTMX, PTS)))

    extra = []
    for f, x in enumerate(w.files):
        extra.append((fname(f), x.owner, x.path, x.kind,
                      tuple(sorted((fname(tf), d) for tf, d in x.epitems))))
    base = (proj, tuple(sorted(extra)), w.steps if steps else 0)
    if not cr:
        return base
    objhash = tuple(sorted((name(e.objtype, e.ptr), e.users, e.visited) for e in cr.objhash))
    ghost = tuple(sorted(name(t, p) for t, p in cr.ghost))
    return base + (cr.phase, cr.error, objhash, ghost, bool(cr.leak_check),
                   bool(cr.leak_write), cr.ext_steps if steps else 0, cr.clean)


# --- constructors --------------------------------------------------------------------------


def symbolic_model(cfg_or_sizes: Config | Sizes, variant: Variant, *, files: int | None = None,
                   bounded: bool = True, actions: Iterable[str] | None = None,
                   domains: Domains | None = None, counts: str | None = None,
                   lemmas: Callable[[str], list[Any]] | None = None,
                   predicates: Mapping[str, Callable[[World], bool]] | None = None
                   ) -> CrSymModel:
    """The symbolic model for a config (its bounds and domains; `files` open-file slots,
    default one per descriptor of every task) or for explicit `Sizes` (wide domains: every
    access mode, every status-flag set for open and F_SETFL, O_CLOEXEC, 2 paths, 4 offsets;
    no step bounds). `actions` restricts the environment actions (e.g. without exec).
    `counts`: 'bv' (default for a config: BMC) or 'int' (default for Sizes: proofs).
    `lemmas`, `predicates`: see `CrSymModel` (`specs.lemmas.proof_model` passes the specs')."""
    extra = {"lemmas": lemmas, "predicates": predicates}
    if isinstance(cfg_or_sizes, Config):
        cfg = cfg_or_sizes
        nf = files if files is not None else (cfg.inside_tasks + cfg.outside_tasks) * cfg.max_fds
        sizes = Sizes(cfg.inside_tasks, cfg.outside_tasks, cfg.max_fds, nf)
        dom = domains or domains_of(cfg, bounded)
        if actions is not None:
            dom = dataclasses.replace(dom, actions=frozenset(actions) & dom.actions)
        return CrSymModel(sizes, variant, dom, cfg=covered_config(cfg) if bounded and
                          actions is None and domains is None else None,
                          counts=counts or "bv", **extra)
    dom = domains or Domains()
    if actions is not None:
        dom = dataclasses.replace(dom, actions=frozenset(actions) & frozenset(COVERED_ACTIONS))
    return CrSymModel(cfg_or_sizes, variant, dom, counts=counts or "int", **extra)


# --- concrete evaluation (agreement with the explicit model) --------------------------------

# The parameters each family reads (the others are free and irrelevant).
RELEVANT: dict[str, tuple[str, ...]] = {
    "open": ("t", "path", "acc", "oflags", "cl"), "close": ("t", "fd"), "dup": ("t", "fd"),
    "dup2": ("t", "fd", "fd2"), "setfl": ("t", "fd", "arg"), "setfd": ("t", "fd", "cl"),
    "setown": ("t", "fd"), "lseek": ("t", "fd", "pos"), "fork": ("t", "ch_in"),
    "clone_files": ("t", "ch_in"), "exec": ("t",), "exit": ("t",),
    "reopen": ("t", "t2", "fd2", "acc"), "pipe": ("t",), "openpty": ("t",),
    "epoll_create": ("t",), "epoll_add": ("t", "fd", "fd2"), "epoll_del": ("t", "fd", "fd2"),
    "timerfd": ("t",), "tamper": ("k",),
}


def action_values(a: tuple) -> dict[str, Any]:
    """The parameter values of an explicit action tuple (inverse of `decode_action`)."""
    n = a[0]
    if n == "tamper":
        return {"k": a[1]}
    if n in CKPT_ACTIONS:
        return {}
    keys = {"open": ("path", "acc", "oflags", "cl"), "dup2": ("fd", "fd2"),
            "epoll_add": ("fd", "fd2"), "epoll_del": ("fd", "fd2"), "setfl": ("fd", "arg"),
            "setfd": ("fd", "cl"), "lseek": ("fd", "pos"), "fork": ("ch_in",),
            "clone_files": ("ch_in",), "reopen": ("t2", "fd2", "acc")}.get(
        n, ("fd",) if n in ("close", "dup", "setown") else ())
    out: dict[str, Any] = {"t": a[1]}
    for k, x in zip(keys, a[2:], strict=True):
        out[k] = bool(x) if k in ("cl", "ch_in") else x
    return out


def _const(x: Any, like: z3.ExprRef) -> z3.ExprRef:
    if z3.is_bool(like):
        return z3.BoolVal(bool(x))
    return z3.IntVal(x) if z3.is_int(like) else z3.BitVecVal(x, like.size())


def constant_state(m: CrSymModel, val: dict[str, Any]) -> State:
    """A symbolic state whose terms are the constants `val` (layout of `fresh`)."""
    shape = m.fresh("c")

    def conv(x: Any, like: Any) -> Any:
        if isinstance(like, list):
            return [conv(a, b) for a, b in zip(x, like, strict=True)]
        return _const(x, like)

    return {k: conv(val[k], shape[k]) for k in shape}


class _Families:
    """Every transition family of a model, built once on one symbolic state (building is
    the slow part: seconds for the write at 9 file slots), to be evaluated on many."""

    def __init__(self, m: CrSymModel) -> None:
        self.m = m
        self.s = m.fresh("e")
        self.leaves = m.leaves(self.s)
        self.fams: dict[str, Transition] = {}

    def get(self, name: str) -> Transition:
        if name not in self.fams:
            self.fams[name] = self.m.transition(self.s, "e", name)
        return self.fams[name]


_FAMILIES: weakref.WeakKeyDictionary[CrSymModel, _Families] = weakref.WeakKeyDictionary()


def _fold_all(terms: list[z3.ExprRef], subst: list[tuple[z3.ExprRef, z3.ExprRef]]
              ) -> list[Any]:
    """The values of `terms` under `subst` (which must fix every constant in them), in one
    substitution and one simplification of their concatenation: shared subterms are
    folded once, not once per term."""
    if not terms:
        return []
    bits = [z3.If(t, z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)) if z3.is_bool(t) else t
            for t in terms]
    whole = bits[0] if len(bits) == 1 else z3.Concat(*bits)
    value = _pyval(z3.simplify(z3.substitute(whole, *subst)))
    out: list[Any] = []
    for t, b in zip(reversed(terms), reversed(bits), strict=True):  # Concat: last is lowest
        w = b.size()
        x, value = value & ((1 << w) - 1), value >> w
        out.append(bool(x) if z3.is_bool(t) else x)
    return out[::-1]


class StepEvaluator:
    """The symbolic transitions from one concrete state: the model's families (built once
    per model, on a symbolic state) with that state's values substituted in."""

    def __init__(self, m: CrSymModel, val: dict[str, Any]) -> None:
        self.m = m
        if m not in _FAMILIES:
            _FAMILIES[m] = _Families(m)
        self._fams = _FAMILIES[m]
        self.pre_values = m.leaves(val)  # type: ignore[arg-type]
        self.subst = [(x, _const(v, x)) for x, v in
                      zip(self._fams.leaves, self.pre_values, strict=True)]

    def family(self, name: str) -> Transition:
        """The family `name` from the symbolic state (its leaves: `self._fams.leaves`)."""
        return self._fams.get(name)

    def step(self, a: tuple) -> tuple[bool, dict[str, Any] | None]:
        """(enabled, the values of the successor or None), by constant folding."""
        m, fam = self.m, self.family(a[0])
        subst = self.subst + [(fam.params[k], _const(v, fam.params[k]))
                              for k, v in action_values(a).items()]
        post = m.leaves(fam.post)
        changed = [i for i, (pre, x) in enumerate(zip(self._fams.leaves, post, strict=True))
                   if not x.eq(pre)]
        enabled, *vals = _fold_all([fam.guard] + [post[i] for i in changed], subst)
        if not enabled:
            return False, None
        out_flat = list(self.pre_values)
        for i, x in zip(changed, vals, strict=True):
            out_flat[i] = x
        return True, _unflatten(m, out_flat)

    def extra(self, name: str, known: list[tuple], timeout: float = 30.0) -> tuple | None:
        """An action of family `name` enabled here other than the `known` ones, or None:
        the symbolic transitions are no more than the explicit ones."""
        fam = self.family(name)
        rel = RELEVANT.get(name, ())
        so = z3.SolverFor("QF_BV")
        so.set("timeout", int(timeout * 1000))
        so.add(z3.substitute(fam.guard, *self.subst))
        for a in known:
            vals = action_values(a)
            so.add(z3.Not(all_(fam.params[k] == _const(vals[k], fam.params[k]) for k in rel)))
        r = so.check()
        if r == z3.unknown:
            raise TimeoutError(f"z3 unknown on extra {name}")
        if r == z3.unsat:
            return None
        mod = so.model()

        def ev(t: z3.ExprRef) -> Any:
            return _pyval(mod.eval(t, model_completion=True))

        return self.m.decode_action(ev, fam)


def _pyval(x: z3.ExprRef) -> Any:
    """A z3 value as a Python bool or int (ValueError for a term that is not a value)."""
    if z3.is_true(x):
        return True
    if z3.is_false(x):
        return False
    if z3.is_bv_value(x) or z3.is_int_value(x):
        return x.as_long()
    raise ValueError(f"not a value: {x}")


def _unflatten(m: CrSymModel, flat: list[Any]) -> dict[str, Any]:
    it = iter(flat)
    shape = m.fresh("u")

    def take(like: Any) -> Any:
        return [take(y) for y in like] if isinstance(like, list) else next(it)

    return {k: take(shape[k]) for k in m.shapes()}


def solve_step(m: CrSymModel, val: dict[str, Any], a: tuple, timeout: float = 30.0
               ) -> tuple[bool, dict[str, Any] | None]:
    """The same with a solver: fix the pre-state and the parameters, solve for the
    post-state (fresh constants equal to the post terms); also checks it is unique."""
    s = m.fresh("pre")
    fam = m.transition(s, "x", a[0])
    post = m.fresh("post")
    vals = action_values(a)
    so = z3.SolverFor("QF_BV")
    so.set("timeout", int(timeout * 1000))
    so.add(constrain(m, s, val))
    for k, v in vals.items():
        so.add(fam.params[k] == _const(v, fam.params[k]))
    so.add(fam.guard)
    so.add(z3.And([x == y for x, y in zip(m.leaves(post), m.leaves(fam.post), strict=True)]))
    r = so.check()
    if r == z3.unknown:
        raise TimeoutError(f"z3 unknown on {a}")
    if r == z3.unsat:
        return False, None
    mod = so.model()

    got = {k: _evtree(lambda t: _pyval(mod.eval(t, model_completion=True)), post[k])
           for k in m.shapes()}
    so.add(z3.Not(constrain(m, post, got)))
    if so.check() != z3.unsat:
        raise ValueError(f"the successor of {a} is not unique")
    return True, got
