"""Small z3 term builders the symbolic model is written with, and the bit widths of
its fields: no crmodel semantics here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import z3

from model.flags import (
    FMODE_LSEEK,
    FMODE_READ,
    FMODE_WRITE,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
)
from model.state import (
    REG,
)
from model.symbolic.state import KNOWN_FLAGS

KW, FW, PW, EW = 4, 20, 4, 8  # widths: kind, f_flags, phase, errno
assert KNOWN_FLAGS < 1 << FW


def bits(n: int) -> int:
    """Bit-vector width for indexes 0..n-1."""
    return max(1, (n - 1).bit_length())


def subsets(mask: int) -> tuple[int, ...]:
    bl = [b for b in range(FW) if mask >> b & 1]
    return tuple(sum(1 << bl[i] for i in range(len(bl)) if n >> i & 1)
                 for n in range(1 << len(bl)))


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
    if set(values) == set(subsets(mask)):
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
