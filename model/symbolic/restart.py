"""Restart and tampering with the image as symbolic transitions (twin of `model.restart`
and `model.image.tamper`): the flags restore gives a written file, and whether restart fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

import z3

from model.flags import (
    CKPT_SETFL_MASK,
    FMODE_READ,
    FMODE_WRITE,
    O_ACCMODE,
    O_LARGEFILE,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
)
from model.image import OPEN_ONLY_FLAGS, T_BAD_NFDS, T_FMODE_DOWN, T_WRONG_TYPE
from model.state import (
    DONE,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    RESTARTED,
    TIMERFD,
)
from model.symbolic.env import setfl_term
from model.symbolic.state import HAS_FASYNC, VALID_KINDS, State, Transition
from model.symbolic.terms import FW, PW, TRUE, bv, fmode_of, in_, is_
from model.variants import Variant

if TYPE_CHECKING:  # the model builds these terms; it is not imported here
    from model.symbolic.system import CrSymModel


def restore_term(v: Variant, kind: z3.BitVecRef, fl: z3.BitVecRef,
                 kinds: tuple[int, ...] = VALID_KINDS, fasync: tuple[int, ...] = HAS_FASYNC
                 ) -> tuple[z3.BoolRef, z3.BitVecRef]:
    """model.restart._Restorer.restore_file for an image record (kind, f_flags): (restart
    fails with EINVAL?, the flags F_GETFL shows after restore). `kinds`: the valid kinds
    (a unix socket is made O_RDWR, as epoll and timerfd are); `fasync`: those with
    ->fasync."""
    acc = z3.Extract(1, 0, fl)
    acc20 = fl & O_ACCMODE
    lf = bv(O_LARGEFILE, FW)
    start = z3.If(is_(kind, REG), (fl & ~bv(OPEN_ONLY_FLAGS, FW)) | lf,
            z3.If(is_(kind, PIPE_R), bv(O_RDONLY, FW),
            z3.If(is_(kind, PIPE_W), bv(O_WRONLY, FW),
            z3.If(is_(kind, PIPE_RW), bv(O_RDWR, FW),
            z3.If(in_(kind, (PTMX, PTS)), acc20 | lf, bv(O_RDWR, FW))))))
    err = z3.Or((fl & OPEN_ONLY_FLAGS) != 0, is_(acc, 3), is_(kind, TIMERFD),
                z3.Not(in_(kind, kinds)))
    flags = start
    if v.setfl == "mask":
        e2, flags = setfl_term(kind, start, fl & CKPT_SETFL_MASK, fasync)
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


def tamper(m: CrSymModel, s: State, k: z3.BitVecRef) -> Transition:
    """model.image.tamper: one mutation of the image, once, where it applies (a table
    record is always there: the container's tasks are frozen, so they exist)."""
    post = dict(s)
    post["tamper"] = k
    applies = z3.Or(z3.And(z3.UGE(k, 1), z3.ULE(k, T_BAD_NFDS - 1), s["img_fd"]),
                    is_(k, T_BAD_NFDS), z3.And(is_(k, T_FMODE_DOWN), s["img_rdwr"]))
    g = z3.And(is_(s["phase"], DONE), is_(s["tamper"], 0), applies)
    return Transition("tamper", g, post, {"k": k})


def restart(m: CrSymModel, s: State) -> Transition:
    """The untampered image fails as the write recorded (img_err); a malformed one always
    fails, except an fd record naming an object of the wrong type where restart does not
    check types (it skips the descriptor); a lowered f_mode fails nothing."""
    var = m.v
    post = dict(s)
    k = s["tamper"]
    as_written = z3.Or(is_(k, 0), is_(k, T_FMODE_DOWN),
                       z3.And(z3.BoolVal(not var.type_check), is_(k, T_WRONG_TYPE)))
    post["rst_err"] = z3.If(as_written, s["img_err"], TRUE)
    post["phase"] = bv(RESTARTED, PW)
    return Transition("restart", is_(s["phase"], DONE), post, {})
