"""The generic z3 engine (checker.symbolic) on a toy symbolic model that knows no files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import z3

from checker.result import Result
from checker.symbolic import (
    Lemma,
    SymStep,
    benchmark,
    bmc,
    check_obligation,
    check_symbolic,
    obligations,
    prove,
    prove_parallel,
    split_conjuncts,
)
from checker.trace import Trace


@dataclass
class Counter:
    """Two 6-bit counters: `inc` bumps x while x < 20 and keeps y == 2x, `reset` zeroes both.
    Properties: `bounded` (x <= 20, inductive), `even` (y even: needs the lemma y == 2x),
    `not7` (x != 7: violated in 7 steps), `hard` (a factoring question z3 cannot settle in a
    millisecond)."""

    name: str = "counter"
    width: int = 6

    def size_text(self) -> str:
        return f"{self.width}-bit counters"

    def fresh(self, tag: str) -> dict[str, z3.BitVecRef]:
        return {"x": z3.BitVec(f"{tag}.x", self.width), "y": z3.BitVec(f"{tag}.y", self.width)}

    def leaves(self, s: dict[str, Any]) -> list[z3.ExprRef]:
        return [s["x"], s["y"]]

    def init(self, s: dict[str, Any]) -> z3.BoolRef:
        return z3.And(s["x"] == 0, s["y"] == 0)

    def domain(self, s: dict[str, Any]) -> z3.BoolRef:
        return z3.BoolVal(True)

    def family_names(self) -> list[str]:
        return ["inc", "reset"]

    def transitions(self, s: dict[str, Any], tag: str) -> list[SymStep]:
        inc = SymStep("inc", z3.ULT(s["x"], 20), {"x": s["x"] + 1, "y": s["y"] + 2})
        reset = SymStep("reset", z3.BoolVal(True), {"x": s["x"] * 0, "y": s["y"] * 0})
        return [inc, reset]

    def property(self, name: str) -> Any:
        def hard(s: dict[str, Any]) -> z3.BoolRef:  # 64-bit factoring of a semiprime
            a, b = z3.BitVec("fa", 64), z3.BitVec("fb", 64)
            n = 18446744030759878681  # 4294967279 * 4294967291 (primes)
            return z3.Not(z3.And(a * b == n, z3.UGT(a, 1), z3.UGT(b, 1),
                                 z3.ULT(a, 2**32), z3.ULT(b, 2**32), s["x"] == s["x"]))

        return {
            "bounded": lambda s: z3.ULE(s["x"], 20),
            "even": lambda s: (s["y"] & 1) == 0,
            "not7": lambda s: s["x"] != 7,
            "hard": hard,
        }.get(name)

    def lemmas(self, name: str) -> list[Lemma]:
        if name == "even":
            return [Lemma("y_is_2x", "y is twice x.", lambda m, s: s["y"] == s["x"] * 2)]
        return []

    def decode_state(self, ev: Any, s: dict[str, Any]) -> tuple[int, int]:
        return (ev(s["x"]), ev(s["y"]))

    def decode_action(self, ev: Any, step: SymStep) -> tuple:
        return (step.name,)


@dataclass
class NoLemma(Counter):
    """`bounded_y` (y <= 40) holds in every reachable state (y == 2x, x <= 20) but is not
    inductive alone: from y == 40 with x == 3, inc reaches y == 42."""

    def property(self, name: str) -> Any:
        if name == "bounded_y":
            return lambda s: z3.ULE(s["y"], 40)
        return super().property(name)


def test_bmc_finds_a_shortest_trace() -> None:
    [r] = bmc(Counter(), ["not7"], depth=10)
    assert r.verdict == "violated" and r.engine == "z3"
    assert r.depth == 7 and len(r.trace.steps) == 8
    assert r.trace.actions == [("inc",)] * 7
    assert r.trace.last == (7, 14)


def test_bmc_holds_is_bounded() -> None:
    [r] = bmc(Counter(), ["bounded"], depth=3)
    assert r.verdict == "holds" and "bounded" in r.reason and "not a proof" in r.reason


def test_induction_proves_and_says_what_it_covers() -> None:
    [r] = check_symbolic(Counter(), ["bounded"], mode="induction", depth=0)
    assert r.verdict == "proved" and "6-bit counters" in r.reason


def test_lemma_makes_it_inductive() -> None:
    ok, results = prove(Counter(), "even")
    assert ok and all(x.status == "valid" for x in results)
    kinds = [x.obligation.kind for x in results]
    assert kinds.count("initial") == 2 and kinds.count("step") == 2 and kinds[-1] == "property"


def test_cti_is_a_readable_state_pair() -> None:
    m = NoLemma()
    ok, results = prove(m, "bounded_y")
    assert not ok
    bad = results[-1]
    assert bad.status == "failed" and bad.obligation.id == "step:inc"
    assert isinstance(bad.cti, Trace) and len(bad.cti.steps) == 2 and not bad.cti.concrete
    (x0, y0), (x1, y1) = bad.cti.steps[0].state, bad.cti.steps[1].state
    assert y0 <= 40 < y1 and x1 == x0 + 1
    text = bad.cti.to_text(m)
    assert "counterexample to induction" in text and "inc" in text


def test_failed_proof_without_real_counterexample_is_unknown() -> None:
    [r] = check_symbolic(NoLemma(), ["bounded_y"], mode="induction", depth=5)
    assert r.verdict == "unknown" and r.trace is not None and "not proved" in r.reason


def test_failed_proof_with_real_counterexample_is_violated() -> None:
    [r] = check_symbolic(Counter(), ["not7"], mode="induction", depth=10)
    assert r.verdict == "violated" and r.depth == 7


@pytest.mark.parametrize("mode", ["bmc", "induction"])
def test_timeout_is_unknown_never_a_pass(mode: str) -> None:
    [r] = check_symbolic(Counter(), ["hard"], mode=mode, depth=1, timeout=0.001)
    assert r.verdict == "unknown" and not r.passed
    assert "unknown" in r.reason


def test_unencoded_property_is_unknown() -> None:
    [r] = check_symbolic(Counter(), ["nosuch"], mode="bmc", depth=1)
    assert r.verdict == "unknown" and "not encoded" in r.reason


def test_each_obligation_on_its_own() -> None:
    m = Counter()
    obs = obligations(m, "even")
    assert [o.id for o in obs] == ["initial:even", "initial:y_is_2x", "step:inc", "step:reset",
                                   "property:even"]
    for o in obs:
        assert check_obligation(m, "even", o).status == "valid"


def test_parallel_proof_reports_each_obligation_and_keeps_their_order() -> None:
    """Two processes: every obligation is reported once as it is decided (done counts 1..n),
    and the results are the serial proof's, the failed obligation last."""
    serial = prove(NoLemma(), "bounded_y", timeout=10, stop_at_failure=False)[1]
    seen: list[tuple[str, int, int]] = []
    ok, got = prove_parallel(NoLemma, (), "bounded_y", timeout=10, jobs=2,
                             on_result=lambda r, done, total: seen.append(
                                 (r.obligation.id, done, total)))
    n = len(serial)
    assert not ok
    assert sorted(x[0] for x in seen) == sorted(r.obligation.id for r in serial)
    assert [x[1:] for x in seen] == [(i, n) for i in range(1, n + 1)]
    want = ([r for r in serial if r.status == "valid"]
            + [r for r in serial if r.status != "valid"])
    assert [(r.obligation.id, r.status) for r in got] == \
        [(r.obligation.id, r.status) for r in want]
    assert got[-1].obligation.id == "step:inc" and got[-1].cti is not None


def test_benchmark_rows_and_progress() -> None:
    """A row per (size, property) with the verdict, and a progress line per obligation."""
    lines: list[str] = []
    progress: list[str] = []
    rows = benchmark(lambda w: Counter(width=w), [6, 8], ["even", "bounded"], timeout=10,
                     out=lines.append, progress=progress.append)
    assert [(r["size"], r["property"], r["verdict"], r["obligations"]) for r in rows] == [
        ("6-bit counters", "even", "proved", 5), ("6-bit counters", "bounded", "proved", 4),
        ("8-bit counters", "even", "proved", 5), ("8-bit counters", "bounded", "proved", 4)]
    assert len(lines) == 4 and len(progress) == 18
    assert progress[0].startswith("  even: 1/5 obligations, initial:even valid in ")
    bad = benchmark(lambda w: NoLemma(width=w), [6], ["bounded_y"], timeout=10,
                    out=lines.append)
    assert bad[0]["verdict"] == "not proved (step:inc failed)"


def test_traces_render_and_export() -> None:
    [r] = bmc(Counter(), ["not7"], depth=7)
    assert isinstance(r, Result)
    text = r.trace.to_text(Counter())
    assert "step 7: inc()" in text
    doc = r.trace.to_itf(Counter())
    assert len(doc["states"]) == 8
    json.dumps(doc)
    assert r.to_dict()["trace_length"] == 7  # actions, as in the CLI's JSON


def test_split_conjuncts() -> None:
    a, b, c = z3.Bools("a b c")
    parts = split_conjuncts(z3.Implies(a, z3.And(b, z3.Not(z3.Or(c, a)))))
    assert len(parts) == 3
    s = z3.Solver()
    s.add(z3.Implies(a, z3.And(b, z3.Not(z3.Or(c, a)))) != z3.And(parts))
    assert s.check() == z3.unsat


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        check_symbolic(Counter(), ["bounded"], mode="dfs")  # type: ignore[arg-type]


def test_cache_answers_only_identical_unsat_queries(tmp_path) -> None:
    from checker import symbolic

    symbolic.use_cache(tmp_path)
    try:
        ok, _ = prove(Counter(), "even")
        first = (symbolic.CACHE.hits, symbolic.CACHE.misses)
        assert ok and first[0] == 0 and first[1] > 0
        ok, _ = prove(Counter(), "even")  # the same formulas: every query from the cache
        assert ok and symbolic.CACHE.hits > 0 and symbolic.CACHE.misses == first[1]
        # a different model (wider counters) shares no formula, and a failing proof is
        # still found failing: sat answers are never cached
        ok, obs = prove(NoLemma(width=7), "bounded_y")
        assert not ok and obs[-1].status == "failed"
        ok, obs = prove(NoLemma(width=7), "bounded_y")
        assert not ok and obs[-1].status == "failed" and obs[-1].cti is not None
    finally:
        symbolic.use_cache(None)


@dataclass
class Cased(Counter):
    """Counter whose `inc` the proof splits into two cases, x even and x odd."""

    def cases(self, name: str, prop: str = "") -> list[Any]:
        return [0, 1] if name == "inc" else [None]

    def transition(self, s: dict[str, Any], tag: str, name: str, case: Any = None) -> SymStep:
        fam = next(f for f in self.transitions(s, tag) if f.name == name)
        if case is not None:
            fam = SymStep(fam.name, z3.And(fam.guard, z3.Extract(0, 0, s["x"]) == case),
                          fam.post)
        return fam


def _first_query_times_out(monkeypatch, about: str = "") -> list[str]:
    """Make z3 answer `unknown` to the first query whose description starts with `about` (as
    a whole family or goal does at the default size within its quick try); returns the
    list of the queries solved."""
    from checker import symbolic

    solved: list[str] = []
    real = symbolic._checked

    def checked(solver: z3.Solver, what: str, *assumptions: z3.BoolRef) -> bool:
        solved.append(what)
        if [w for w in solved if w.startswith(about)] == [what] and what.startswith(about):
            raise symbolic._Unknown("forced timeout")
        return real(solver, what, *assumptions)

    monkeypatch.setattr(symbolic, "_checked", checked)
    return solved


def test_a_family_proved_case_by_case_is_answered_whole_next_time(tmp_path, monkeypatch
                                                                   ) -> None:
    from checker import symbolic

    solved = _first_query_times_out(monkeypatch, "step:inc")
    symbolic.use_cache(tmp_path)
    try:
        ok, _ = prove(Cased(), "even")
        assert ok and any("case 1" in w for w in solved)
        n = len(solved)
        ok, _ = prove(Cased(), "even")  # no query solved: not even the one that timed out
        assert ok and len(solved) == n
    finally:
        symbolic.use_cache(None)


def test_a_goal_proved_part_by_part_is_answered_whole_next_time(tmp_path, monkeypatch
                                                                ) -> None:
    from checker import symbolic

    solved = _first_query_times_out(monkeypatch)
    symbolic.use_cache(tmp_path)
    try:
        m = Counter()
        s = m.fresh("pre")
        goal = z3.And(z3.ULE(s["x"], 63), s["y"] == s["y"])
        t = z3.BoolVal(True)
        assert symbolic._refute(m, s, t, t, goal, 5.0, "goal") is None
        assert len(solved) == 3  # the whole (timed out), then each part
        assert symbolic._refute(m, s, t, t, goal, 5.0, "goal") is None
        assert len(solved) == 3
        # a goal with a false part is not answered from the parts of another
        bad = z3.And(z3.ULE(s["x"], 62), s["y"] == s["y"])
        assert symbolic._refute(m, s, t, t, bad, 5.0, "goal") is not None
    finally:
        symbolic.use_cache(None)


@dataclass
class Hinted(NoLemma):
    """NoLemma whose `inc` offers two hints: one true (x + 1 > x below 20) and one false
    (y stays below 40, which would make the failing step obligation pass if trusted)."""

    def transitions(self, s: dict[str, Any], tag: str) -> list[SymStep]:
        inc, reset = super().transitions(s, tag)
        inc.hints = (z3.UGT(inc.post["x"], s["x"]), z3.ULE(inc.post["y"], 40))
        return [inc, reset]


def test_a_false_hint_is_never_trusted() -> None:
    ok, results = prove(Hinted(), "bounded_y")
    assert not ok and results[-1].obligation.id == "step:inc"
    assert results[-1].status == "failed"


def test_a_false_pinning_hint_rewrites_nothing() -> None:
    """A hint that pins a term (here: y stays as it was, so y <= 40 would carry over) would
    rewrite the query if trusted; unproven, it is neither a fact nor a rewriting."""

    @dataclass
    class Pinned(NoLemma):
        def transitions(self, s: dict[str, Any], tag: str) -> list[SymStep]:
            inc, reset = super().transitions(s, tag)
            inc.hints = (inc.post["y"] == s["y"], z3.Not(s["y"] == 40))
            return [inc, reset]

    ok, results = prove(Pinned(), "bounded_y")
    assert not ok and results[-1].obligation.id == "step:inc"
    assert results[-1].status == "failed" and results[-1].cti is not None


def test_rewriter_replaces_pinned_terms_and_keeps_formulas_apart() -> None:
    from checker.symbolic import rewriter

    x, y, b = z3.Int("x"), z3.Int("y"), z3.Bool("b")
    rw = rewriter([x == y, y == 3, z3.Not(b)])
    assert z3.is_true(rw(z3.Or(b, x + 1 == 4)))  # x := y, then y := 3 and b := false
    assert z3.is_false(rw(z3.And(b, y > 0)))
    c, k3 = z3.BitVec("c", 3), z3.BitVec("k3", 3)
    pin = z3.BitVecVal(2, 3) == c  # as z3 may write `c == 2`
    assert z3.is_bv_value(pin.arg(0))
    rw3 = rewriter([pin])
    assert z3.is_true(rw3(c + 1 == 3))  # c := 2, never the value 2 := c
    assert rw3(k3 == 2).eq(k3 == 2)
    for k in range(50):  # a formula never gets another's rewriting (ids freed and reused)
        assert rw(x + k == 3 + k).eq(z3.BoolVal(True))
        assert rw(z3.Int(f"z{k}") == k).eq(z3.Int(f"z{k}") == k)


def test_true_hints_keep_a_valid_proof_valid() -> None:
    @dataclass
    class HintedEven(Counter):
        def transitions(self, s: dict[str, Any], tag: str) -> list[SymStep]:
            inc, reset = super().transitions(s, tag)
            inc.hints = (inc.post["y"] == s["y"] + 2,)
            return [inc, reset]

    ok, _ = prove(HintedEven(), "even")
    assert ok


@dataclass
class Switched(NoLemma):
    """NoLemma with a switch b that no step changes, and the property b => y <= 40 (not
    inductive: from y == 40 with b, inc breaks it). The proof splits inc by b; each case's
    guard pins b, and says so in a hint (one that is a conjunct of the guard)."""

    def fresh(self, tag: str) -> dict[str, Any]:
        return super().fresh(tag) | {"b": z3.Bool(f"{tag}.b")}

    def leaves(self, s: dict[str, Any]) -> list[z3.ExprRef]:
        return super().leaves(s) + [s["b"]]

    def transitions(self, s: dict[str, Any], tag: str) -> list[SymStep]:
        fams = super().transitions(s, tag)
        for f in fams:
            f.post = f.post | {"b": s["b"]}
        return fams

    def property(self, name: str) -> Any:
        if name == "bounded_y_if_b":
            return lambda s: z3.Implies(s["b"], z3.ULE(s["y"], 40))
        return super().property(name)

    def cases(self, name: str, prop: str = "") -> list[Any]:
        return [False, True] if name == "inc" else [None]

    def transition(self, s: dict[str, Any], tag: str, name: str, case: Any = None) -> SymStep:
        fam = next(f for f in self.transitions(s, tag) if f.name == name)
        if case is None:
            return fam
        pin = s["b"] == z3.BoolVal(case)
        return SymStep(fam.name, z3.And(fam.guard, pin), fam.post, hints=(pin,))


def test_a_case_its_guard_settles_asks_no_solver_and_the_other_still_fails(monkeypatch
                                                                            ) -> None:
    """With b pinned false, the goal rewrites to true: that case needs no query, nor even
    its hypotheses rewritten (the cost of a case at 8 fds and 8 files). The pin is a
    conjunct of the case's guard, so this is sound; the case with b true still finds the
    counterexample to induction."""
    from checker import symbolic

    solved = _first_query_times_out(monkeypatch, "no query is made to time out")
    guards: list[z3.BoolRef] = []
    real = symbolic._hyps

    def hyps(sym: Any, s: Any, inv: Any, guard: z3.BoolRef, rw: Any) -> Any:
        guards.append(guard)
        return real(sym, s, inv, guard, rw)

    monkeypatch.setattr(symbolic, "_hyps", hyps)
    ok, results = prove(Switched(), "bounded_y_if_b")
    assert not ok and results[-1].obligation.id == "step:inc"
    assert results[-1].status == "failed" and "case True" in results[-1].detail
    assert results[-1].cti is not None
    assert [w for w in solved if "case True" in w]
    assert not [w for w in solved if "case False" in w]
    def pinned(v: bool) -> list[z3.BoolRef]:  # the guards that pin b to v
        pin = z3.Bool("pre.b") == z3.BoolVal(v)
        return [g for g in guards if any(c.eq(pin) for c in symbolic._conjuncts(g))]

    assert pinned(True) and not pinned(False)
