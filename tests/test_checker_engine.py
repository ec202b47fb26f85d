"""The explicit BFS engine on toy models: shortest traces, determinism, symmetry, bounds."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest

from checker import Property, explore, invariant, reachable
from checker.examples import BuggyMutex, Counters, Grid, Procs
from checker.explicit import bytes_per_state
from checker.model import source_digest


def concrete_graph(model: Any) -> tuple[nx.DiGraph, list[Any]]:
    """The full state graph without symmetry reduction, by brute force."""
    g = nx.DiGraph()
    inits = list(model.init_states())
    todo, seen = list(inits), set(inits)
    while todo:
        s = todo.pop()
        g.add_node(s)
        for _a, t in model.successors(s):
            g.add_edge(s, t)
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return g, inits


def shortest_distance(model: Any, pred: Any) -> int | None:
    g, inits = concrete_graph(model)
    best = None
    for i in inits:
        for s, d in nx.single_source_shortest_path_length(g, i).items():
            if pred(s) and (best is None or d < best):
                best = d
    return best


def assert_genuine_run(model: Any, trace: Any) -> None:
    """Each step is an actual successor of the previous (not just up to symmetry)."""
    assert trace.concrete
    assert trace.steps[0].action is None
    assert trace.steps[0].state in list(model.init_states())
    for prev, step in zip(trace.steps, trace.steps[1:], strict=False):
        assert (step.action, step.state) in list(model.successors(prev.state))


@pytest.mark.parametrize(
    "model", [Counters(10), BuggyMutex(3), Procs(3, 4), Procs(3, 4, symmetry=False)]
)
def test_traces_are_shortest_and_genuine(model: Any) -> None:
    ex = explore(model, model.properties(), stop_when_decided=False)
    assert ex.complete
    for prop, r in zip(model.properties(), ex.results, strict=True):
        want = prop.kind == "invariant"
        target = (lambda s, p=prop: not p.predicate(s)) if want else prop.predicate
        dist = shortest_distance(model, target)
        if dist is None:
            assert r.verdict == ("holds" if want else "unreached")
            assert r.trace is None
            continue
        assert r.verdict == ("violated" if want else "reached")
        assert r.trace is not None
        assert len(r.trace.steps) - 1 == dist == r.depth
        assert_genuine_run(model, r.trace)
        assert bool(prop.predicate(r.trace.last)) is not want


def test_counts_match_brute_force() -> None:
    m = Counters(10)
    g, _ = concrete_graph(m)
    ex = explore(m, stop_when_decided=False)
    assert ex.states == g.number_of_nodes() == sum(ex.levels)
    assert ex.transitions == sum(len(m.successors(s)) for s in g.nodes)


def test_deterministic() -> None:
    m = BuggyMutex(3)
    a = explore(m, m.properties(), stop_when_decided=False)
    b = explore(BuggyMutex(3), m.properties(), stop_when_decided=False)
    assert (a.states, a.transitions, a.levels, a.coverage) == (
        b.states,
        b.transitions,
        b.levels,
        b.coverage,
    )
    for ra, rb in zip(a.results, b.results, strict=True):
        assert (ra.verdict, ra.states, ra.transitions, ra.depth) == (
            rb.verdict,
            rb.states,
            rb.transitions,
            rb.depth,
        )
        assert ra.trace == rb.trace


def test_symmetry_reduces_states_not_verdicts() -> None:
    sym = explore(Procs(4, 5), Procs().properties(), stop_when_decided=False)
    full = explore(Procs(4, 5, symmetry=False), Procs().properties(), stop_when_decided=False)
    assert full.states == 6**4
    assert sym.states == 126  # multisets of 4 values among 6
    assert [r.verdict for r in sym.results] == [r.verdict for r in full.results]
    assert [r.depth for r in sym.results] == [r.depth for r in full.results]


def test_coverage_and_never_fired() -> None:
    m = Counters(10)
    ex = explore(m, stop_when_decided=False)
    assert list(ex.coverage) == m.all_action_names()
    assert ex.coverage["reset"] == 0
    assert ex.never_fired == ["reset"]
    assert sum(ex.coverage.values()) == ex.transitions
    assert all(ex.coverage[a] > 0 for a in ("inc_a", "inc_b", "double_a", "swap"))
    # Without all_action_names: the names seen, sorted.
    ex = explore(Procs(2, 2))
    assert list(ex.coverage) == ["reset", "step"]
    assert ex.never_fired == []


def test_reachable_and_unreached() -> None:
    m = Counters(6)
    ex = explore(m, m.properties(), stop_when_decided=False)
    assert ex["both_max"].verdict == "reached"
    assert ex["both_max"].trace.last == (6, 6)
    assert ex["impossible"].verdict == "unreached"
    assert ex["impossible"].failed and not ex["impossible"].passed
    assert ex["never_negative"].verdict == "holds" and ex["never_negative"].passed


def test_stop_when_decided() -> None:
    m = BuggyMutex(3)
    early = explore(m, m.properties())
    full = explore(m, m.properties(), stop_when_decided=False)
    assert early.stopped_by == "decided" and not early.complete
    assert early.states < full.states
    for a, b in zip(early.results, full.results, strict=True):
        assert (a.verdict, a.states, a.transitions, a.trace) == (
            b.verdict,
            b.states,
            b.transitions,
            b.trace,
        )
    # No property: explore everything.
    assert explore(m).complete


def test_max_states() -> None:
    m = Counters(10)
    ex = explore(m, m.properties(), max_states=50, stop_when_decided=False)
    assert ex.stopped_by == "max_states" and not ex.complete
    assert ex.states <= 50
    r = ex["never_negative"]
    assert r.verdict == "unknown" and "max_states=50" in r.reason
    assert ex["impossible"].verdict == "unknown"
    # Decided before the bound: still decided, with the same trace as without bound.
    full = explore(m, m.properties(), stop_when_decided=False)
    assert ex["a_not_n"].trace == full["a_not_n"].trace
    # A bound equal to the space size does not make the result unknown.
    exact_fit = explore(m, m.properties(), max_states=full.states, stop_when_decided=False)
    assert exact_fit.complete and exact_fit["impossible"].verdict == "unreached"


def test_max_depth() -> None:
    m = Counters(10)
    full = explore(m, stop_when_decided=False)
    ex = explore(m, m.properties(), max_depth=3, stop_when_decided=False)
    assert ex.stopped_by == "max_depth" and not ex.complete
    assert ex.depth == 3 and ex.states == sum(full.levels[:4])
    assert ex["never_negative"].verdict == "unknown"
    assert "max_depth=3" in ex["never_negative"].reason
    # Deep enough to see everything: complete, and verdicts are final.
    ex = explore(m, m.properties(), max_depth=full.depth, stop_when_decided=False)
    assert ex.complete and ex["never_negative"].verdict == "holds"


def test_max_seconds() -> None:
    ex = explore(Grid(200, 2), [invariant("ok", lambda s: True)], max_seconds=0)
    assert ex.stopped_by == "max_seconds"
    assert ex["ok"].verdict == "unknown" and "max_seconds" in ex["ok"].reason


def test_wide_branching_widens_action_indexes() -> None:
    class Wide:
        def init_states(self) -> list[int]:
            return [0]

        def successors(self, s: int) -> list[tuple[tuple, int]]:
            if s == 0:
                return [(("go", i), i + 1) for i in range(70_000)]
            return [(("back",), 0)]

        def canonical(self, s: int) -> int:
            return s

    ex = explore(Wide(), [invariant("small", lambda s: s < 69_999)])
    r = ex["small"]
    assert r.verdict == "violated"
    assert r.trace.actions == [("go", 69_998)]
    assert explore(Wide()).states == 70_001


def test_exact_mode_matches_fingerprints() -> None:
    m = BuggyMutex(3)
    a = explore(m, m.properties(), stop_when_decided=False)
    b = explore(m, m.properties(), stop_when_decided=False, exact=True)
    assert (a.states, a.transitions, a.levels) == (b.states, b.transitions, b.levels)
    assert [r.trace for r in a.results] == [r.trace for r in b.results]
    assert b.collision_probability == 0.0 < a.collision_probability


def test_hash_collision_is_the_documented_risk() -> None:
    # hash(-1) == hash(-2): with fingerprints one of the two states is lost; exact keeps both.
    class Sentinels:
        def init_states(self) -> list[tuple[int]]:
            return [(0,)]

        def successors(self, s: tuple[int]) -> list[tuple[tuple, tuple[int]]]:
            return [(("a",), (-1,)), (("b",), (-2,))] if s == (0,) else []

        def canonical(self, s: tuple[int]) -> tuple[int]:
            return s

    assert explore(Sentinels()).states == 2
    assert explore(Sentinels(), exact=True).states == 3


def test_model_error_says_where() -> None:
    class Broken(Counters):
        def successors(self, s: tuple[int, int]) -> list[tuple[tuple, tuple[int, int]]]:
            if s == (1, 0):
                raise ValueError("boom")
            return super().successors(s)

    with pytest.raises(ValueError, match="boom") as info:
        explore(Broken(3))
    assert any("(1, 0)" in note for note in info.value.__notes__)


def test_duplicate_property_names_refused() -> None:
    p = invariant("x", lambda s: True)
    with pytest.raises(ValueError, match="duplicate"):
        explore(Counters(2), [p, p])
    with pytest.raises(ValueError, match="kind"):
        Property("y", "eventually", lambda s: True)  # type: ignore[arg-type]


def test_non_symmetric_canonical_still_gives_a_trace() -> None:
    class Lying(Procs):
        # Not a symmetry: maps states to ones that are not reachable the same way.
        def canonical(self, s: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(sorted(s, reverse=True))

    m = Lying(2, 2)
    ex = explore(m, [reachable("both", lambda s: s == (2, 2))])
    r = ex["both"]
    assert r.verdict == "reached"
    assert r.trace.last == (2, 2)


def test_memory_per_state_is_measured() -> None:
    """The measurement itself (its figures are printed by benchmarks/suite_figures.py)."""
    m = Grid(60, 2)
    mem = bytes_per_state(m)
    assert mem["states"] == 61 * 61
    assert 0 < mem["retained"] <= mem["peak"], mem


def test_not_a_model_refused() -> None:
    with pytest.raises(TypeError, match="no successors"):
        explore(type("Nothing", (), {"init_states": lambda self: [0]})())


def test_source_digest_changes_with_config() -> None:
    import checker.examples

    a = source_digest(checker.examples, {"n": 3})
    assert a == source_digest(checker.examples, {"n": 3})
    assert a != source_digest(checker.examples, {"n": 4})
    assert a != source_digest(checker.examples.Counters, {"n": 3})
