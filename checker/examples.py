"""Toy models: how to write a model, and what the checker's tests and benchmarks run on.

None of them is about files: the checker is generic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from checker.model import Property, invariant, reachable


class Counters:
    """Two counters 0..n; `inc_a`, `inc_b`, `double_a` (a := 2a) and `swap`. No symmetry."""

    def __init__(self, n: int = 10) -> None:
        self.n = n

    def init_states(self) -> list[tuple[int, int]]:
        return [(0, 0)]

    def successors(self, s: tuple[int, int]) -> list[tuple[tuple, tuple[int, int]]]:
        a, b = s
        n = self.n
        out: list[tuple[tuple, tuple[int, int]]] = []
        if a < n:
            out.append((("inc_a",), (a + 1, b)))
        if b < n:
            out.append((("inc_b",), (a, b + 1)))
        if 0 < a and 2 * a <= n:
            out.append((("double_a",), (2 * a, b)))
        if a != b:
            out.append((("swap",), (b, a)))
        return out

    def canonical(self, s: tuple[int, int]) -> tuple[int, int]:
        return s

    def all_action_names(self) -> list[str]:
        return ["inc_a", "inc_b", "double_a", "swap", "reset"]  # reset: never enabled

    def fingerprint_salt(self) -> str:
        return f"Counters(n={self.n})"

    def properties(self) -> list[Property]:
        n = self.n
        return [
            invariant("sum_small", lambda s: s[0] + s[1] < n + n // 2),
            invariant("a_not_n", lambda s: s[0] != n),
            invariant("never_negative", lambda s: s[0] >= 0 and s[1] >= 0),
            reachable("both_max", lambda s: s == (n, n)),
            reachable("impossible", lambda s: s[0] > n),
        ]


class Procs:
    """n identical processes, each a counter 0..k: `step` i increments, `reset` i zeroes.

    The processes are interchangeable: `canonical` sorts them.
    """

    def __init__(self, n: int = 3, k: int = 3, symmetry: bool = True) -> None:
        self.n, self.k, self.symmetry = n, k, symmetry

    def init_states(self) -> list[tuple[int, ...]]:
        return [(0,) * self.n]

    def successors(self, s: tuple[int, ...]) -> Iterator[tuple[tuple, tuple[int, ...]]]:
        # A generator on purpose: the engine must accept any iterable.
        for i, c in enumerate(s):
            if c < self.k:
                yield ("step", i), s[:i] + (c + 1,) + s[i + 1 :]
            if c > 0:
                yield ("reset", i), s[:i] + (0,) + s[i + 1 :]

    def canonical(self, s: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(s)) if self.symmetry else s

    def fingerprint_salt(self) -> str:
        return f"Procs(n={self.n},k={self.k},symmetry={self.symmetry})"

    def properties(self) -> list[Property]:
        k = self.k
        return [
            invariant("not_all_max", lambda s: not all(c == k for c in s)),
            reachable("two_at_max", lambda s: sum(c == k for c in s) >= 2),
        ]


IDLE, WAITING, ENTERING, CRITICAL = 0, 1, 2, 3


class Mutex(NamedTuple):
    pcs: tuple[int, ...]  # per process
    locked: bool


class BuggyMutex:
    """A lock taken by test-then-set in two steps: two processes can both enter."""

    def __init__(self, n: int = 3) -> None:
        self.n = n

    def init_states(self) -> list[Mutex]:
        return [Mutex((IDLE,) * self.n, False)]

    def successors(self, s: Mutex) -> list[tuple[tuple, Mutex]]:
        out: list[tuple[tuple, Mutex]] = []
        pcs = s.pcs
        for i, pc in enumerate(pcs):

            def at(v: int, i: int = i) -> tuple[int, ...]:
                return pcs[:i] + (v,) + pcs[i + 1 :]

            if pc == IDLE:
                out.append((("want", i), s._replace(pcs=at(WAITING))))
            elif pc == WAITING and not s.locked:
                out.append((("see_free", i), s._replace(pcs=at(ENTERING))))  # the bug: no set
            elif pc == ENTERING:
                out.append((("take", i), Mutex(at(CRITICAL), True)))
            elif pc == CRITICAL:
                out.append((("leave", i), Mutex(at(IDLE), False)))
        return out

    def canonical(self, s: Mutex) -> Mutex:
        return s._replace(pcs=tuple(sorted(s.pcs)))

    def all_action_names(self) -> list[str]:
        return ["want", "see_free", "take", "leave", "recover"]

    def describe(self, s: Mutex) -> dict[str, str]:
        names = ("idle", "waiting", "entering", "critical")
        d = {f"proc[{i}]": names[pc] for i, pc in enumerate(s.pcs)}
        d["locked"] = "yes" if s.locked else "no"
        return d

    def format_action(self, a: tuple) -> str:
        return f"process {a[1]}: {a[0]}"

    def fingerprint_salt(self) -> str:
        return f"BuggyMutex(n={self.n})"

    def properties(self) -> list[Property]:
        return [
            invariant("mutual_exclusion", lambda s: sum(pc == CRITICAL for pc in s.pcs) <= 1),
            reachable("someone_critical", lambda s: CRITICAL in s.pcs),
        ]


class Grid:
    """A k-dimensional grid 0..n per axis with `up`/`down` moves: a cheap model to time the
    engine itself (its successors cost almost nothing)."""

    def __init__(self, n: int = 100, dims: int = 2) -> None:
        self.n, self.dims = n, dims

    def init_states(self) -> list[tuple[int, ...]]:
        return [(0,) * self.dims]

    def successors(self, s: tuple[int, ...]) -> list[tuple[tuple, tuple[int, ...]]]:
        out: list[tuple[tuple, tuple[int, ...]]] = []
        n = self.n
        for i, x in enumerate(s):
            if x < n:
                out.append((("up", i), s[:i] + (x + 1,) + s[i + 1 :]))
            if x > 0:
                out.append((("down", i), s[:i] + (x - 1,) + s[i + 1 :]))
        return out

    def canonical(self, s: tuple[int, ...]) -> tuple[int, ...]:
        return s

    def fingerprint_salt(self) -> str:
        return f"Grid(n={self.n},dims={self.dims})"
