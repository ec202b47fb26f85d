"""Family exploration: every variant gets exactly the answers of its own exploration (verdicts,
state counts, coverage, the counterexample and witness steps themselves), and a step computed
once per class of variants gives each of them what it gives alone."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from checker import explore, invariant, reachable
from checker.examples import Counters
from checker.family import ENGINE as FAMILY_ENGINE
from checker.family import ModelFamily, explore_family
from checker.result import Exploration
from crmodel import api
from model.system import STEPS, CrFamily, CrModel, step_reads
from model.variants import VARIANTS
from specs import SPECS

ALL = list(VARIANTS)


def answers(ex: Exploration) -> dict[str, Any]:
    """Everything an exploration answers but its timings."""
    return {
        "states": ex.states, "transitions": ex.transitions, "depth": ex.depth,
        "levels": ex.levels, "complete": ex.complete, "stopped_by": ex.stopped_by,
        "coverage": ex.coverage, "never_fired": ex.never_fired,
        "results": [
            (r.property, r.verdict, r.states, r.transitions, r.depth, r.reason,
             None if r.trace is None else [(s.action, s.state) for s in r.trace.steps])
            for r in ex.results
        ],
    }


# --- crmodel: tiny (all variants, all specs) and race (the mutant that needs it) ----------


@pytest.mark.variants(ALL)
def test_the_sessions_tiny_runs_are_one_family(tiny_exploration) -> None:
    """tests/test_golden.py compares the session's tiny explorations, variant by variant, with
    the answers recorded from one exploration per variant (states, transitions, levels,
    coverage, verdicts and every action of every trace): with several variants collected,
    those explorations are one family's."""
    assert {tiny_exploration(v).engine for v in ALL} == {FAMILY_ENGINE}


RACE = sorted({v for s in SPECS.values() for v, b in s.bounded.items() if b.demo == "race"}
              | {VARIANTS[v].base for s in SPECS.values() for v in s.bounded})


def test_family_equals_per_variant_on_race() -> None:
    fam = api.check("race", variants=RACE, jobs=1)
    solo = api.check("race", variants=RACE, per_variant=True, jobs=1)
    for v in RACE:
        assert answers(fam.explorations[v]) == answers(solo.explorations[v]), v
    # the comparison covers a real counterexample: the one race is there for
    assert any(r.verdict == "violated" and r.trace is not None and len(r.trace) > 3
               for r in fam.rows if r.variant == "mut-stale-counts")


def test_stop_when_decided_per_member() -> None:
    """Members leave the family once decided, each at the point its own run stops."""
    cfg = api.config("race")
    vs = [VARIANTS[v] for v in ("linuxcr", "subtree", "mut-stale-counts")]
    props = api.properties(["leak_detection_sound", "restore_preserves_fcntl_flags"])
    fam = explore_family(CrFamily(cfg, vs), props)
    for v, ex in zip(vs, fam, strict=True):
        assert answers(ex) == answers(explore(CrModel(cfg, v), props)), v.name


# --- the model's family interface ----------------------------------------------------------


def _states(preset: str, walks: int, seed: int = 17) -> list[Any]:
    """States from seeded random runs of every variant, biased to the checkpoint's steps."""
    rng = random.Random(seed)
    fam = CrFamily(api.config(preset), list(VARIANTS.values()))
    out = []
    for _ in range(walks):
        w = fam.init_states()[0]
        for _ in range(30):
            out.append(w)
            moves = [(shared, x) for shared, _, x in fam.members()[0].moves(w)]
            if not moves:
                break
            steps = [x for shared, x in moves if not shared]
            if steps and rng.random() < 0.35:
                w = rng.choice(steps)(rng.choice(list(VARIANTS.values())))[1]
            else:
                shared = [x for sh, x in moves if sh]
                w = rng.choice(shared) if shared else steps[0](VARIANTS["linuxcr"])[1]
    return out


class _Recorder:
    """A Variant that records which knobs are read."""

    def __init__(self, v: Any) -> None:
        self._v, self.read = v, set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._v, name)


def test_steps_read_only_declared_knobs() -> None:
    states = _states("default", 150)
    seen = set()
    model = CrModel(api.config("default"), VARIANTS["linuxcr"])
    for w in states:
        for shared, step, x in model.moves(w):
            if shared:
                continue
            seen.add(step)
            for v in VARIANTS.values():
                r = _Recorder(v)
                x(r)
                extra = r.read - step_reads(step)
                assert not extra, f"{step} reads {sorted(extra)}, not declared"
    assert seen == set(STEPS), f"steps never tried: {set(STEPS) - seen}"


def test_family_successors_are_each_members() -> None:
    cfg = api.config("default")
    fam = CrFamily(cfg, list(VARIANTS.values()))
    solo = fam.members()
    full = (1 << len(solo)) - 1
    for w in _states("default", 60, seed=3):
        items = fam.successors_family(w, full)
        for i, m in enumerate(solo):
            mine = [(k, a, t) for cm, k, a, t in items if cm >> i & 1]
            assert [k for k, _, _ in mine] == list(range(len(mine)))
            assert [(a, t) for _, a, t in mine] == list(m.successors(w))


def test_a_wrong_declaration_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teeth: with restart declared to read no knob, restart-only mutants share fixed's
    restart and the per-member successors differ."""
    import model.system as system

    monkeypatch.setattr(system, "RESTART_READS", frozenset())
    fam = CrFamily(api.config("default"), list(VARIANTS.values()))
    solo = fam.members()
    full = (1 << len(solo)) - 1
    differ = False
    for w in _states("default", 60, seed=3):
        items = fam.successors_family(w, full)
        for i, m in enumerate(solo):
            differ |= [(a, t) for cm, _, a, t in items if cm >> i & 1] != list(m.successors(w))
    assert differ


# --- the engine on toy models ---------------------------------------------------------------


class Graph:
    """A fixed graph: state -> successors, actions named after their target."""

    def __init__(self, edges: dict[int, list[int]], name: str) -> None:
        self.edges, self.name = edges, name

    def init_states(self) -> list[int]:
        return [0]

    def successors(self, s: int) -> list[tuple[tuple, int]]:
        return [(("go", t), t) for t in self.edges.get(s, [])]

    def fingerprint_salt(self) -> str:
        return self.name


# A reaches 3 from 1; B reaches it only from 2, after 4: B's first violation is 8, via 4.
GRAPH_A = Graph({0: [1, 2], 1: [3], 3: [6, 9]}, "A")
GRAPH_B = Graph({0: [1, 2], 1: [4], 2: [3], 3: [6, 9], 4: [8, 7]}, "B")
BAD = [invariant("no_8_or_9", lambda s: s not in (8, 9))]


def test_entries_not_merged_keep_each_members_counterexample() -> None:
    fam = ModelFamily([GRAPH_A, GRAPH_B])
    exact = explore_family(fam, BAD, stop_when_decided=False)
    solo = [explore(g, BAD, stop_when_decided=False) for g in (GRAPH_A, GRAPH_B)]
    assert [answers(e) for e in exact] == [answers(e) for e in solo]
    assert [s.state for s in exact[1].results[0].trace.steps] == [0, 1, 4, 8]
    # Teeth: merging B's later discovery of 3 into A's entry moves 3 before 4 in B's order,
    # and the comparison sees B's counterexample change.
    merged = explore_family(fam, BAD, stop_when_decided=False, merge_rediscoveries=True)
    assert answers(merged[0]) == answers(solo[0])
    assert answers(merged[1]) != answers(solo[1])


COUNTERS = [Counters(4), Counters(6), Counters(9)]
PROPS = [invariant("a_small", lambda s: s[0] < 5), reachable("b_is_3", lambda s: s[1] == 3),
         invariant("sum_small", lambda s: s[0] + s[1] < 15)]


@pytest.mark.parametrize("stop", [False, True])
def test_counters_family_equals_members(stop: bool) -> None:
    fam = explore_family(ModelFamily(COUNTERS), PROPS, stop_when_decided=stop)
    for m, ex in zip(COUNTERS, fam, strict=True):
        assert answers(ex) == answers(explore(m, PROPS, stop_when_decided=stop))


def test_max_depth_per_member() -> None:
    fam = explore_family(ModelFamily(COUNTERS), PROPS, max_depth=4, stop_when_decided=False)
    for m, ex in zip(COUNTERS, fam, strict=True):
        assert answers(ex) == answers(explore(m, PROPS, max_depth=4, stop_when_decided=False))


def test_max_states_bounds_the_family() -> None:
    fam = explore_family(ModelFamily(COUNTERS), PROPS, max_states=20, stop_when_decided=False)
    assert all(ex.stopped_by == "max_states" and not ex.complete for ex in fam)
    for m, ex in zip(COUNTERS, fam, strict=True):
        assert ex.states <= 20
        alone = explore(m, PROPS, stop_when_decided=False)
        for r, a in zip(ex.results, alone.results, strict=True):
            assert r.verdict == "unknown" or answers(ex)["results"] != [] and (
                r.verdict, r.states, r.trace.steps if r.trace else None) == (
                a.verdict, a.states, a.trace.steps if a.trace else None)


@pytest.mark.parametrize("cut", [5, 17, 40])
def test_save_and_resume_give_the_same_run(tmp_path: Path, cut: int) -> None:
    snap = tmp_path / "fam.snap"
    whole = explore_family(ModelFamily(COUNTERS), PROPS, stop_when_decided=False)
    first = explore_family(ModelFamily(COUNTERS), PROPS, stop_when_decided=False,
                           max_states=cut, save=snap)
    assert not first[0].complete and snap.exists()
    rest = explore_family(ModelFamily(COUNTERS), PROPS, stop_when_decided=False, resume=snap)
    assert [answers(e) for e in rest] == [answers(e) for e in whole]


def test_split_keeps_checkpoint_classes_together() -> None:
    groups = api.split_family(ALL, 2)
    assert len(groups) == 2 and sorted(sum(groups, [])) == sorted(ALL)
    restart_only = [v for v in ALL if VARIANTS[v].base == "fixed" and not (
        {k for k, x in vars(VARIANTS[v]).items() if x != getattr(VARIANTS["fixed"], k)}
        - {"name", "kind", "doc", "base"}
        - step_reads("restart"))]
    assert len(restart_only) >= 8
    assert any(set(restart_only) | {"fixed"} <= set(g) for g in groups)
    # mut-no-visited differs from linuxcr in one checkpoint knob: they share most states
    assert any({"linuxcr", "mut-no-visited"} <= set(g) for g in groups)


# --- the command: family by default, --per-variant, a killed family run resumed ---------------

FEW = ["linuxcr", "subtree", "fixed", "mut-no-setfl"]


def _rows(r: Any) -> list[tuple]:
    import json

    assert r.returncode in (0, 1), r.stderr
    return [(x["variant"], x["spec"], x["verdict"], x["states"], x["transitions"], x["depth"],
             x["trace_length"]) for x in json.loads(r.stdout)["results"]]


def test_cli_family_per_variant_and_resume(tmp_path: Path, kill_after_snapshot) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text('base = "tiny"\nenv_steps = 3\n')
    cmd = [sys.executable, "-m", "crmodel", "check", "--config", str(cfg), "--json",
           *(a for v in FEW for a in ("--variant", v))]

    def run(*extra: str) -> Any:
        return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=300)

    small = tmp_path / "small.toml"
    small.write_text('base = "tiny"\nenv_steps = 2\nkinds = ["reg", "pipe"]\n')
    fam_small = _rows(run("--config", str(small)))
    assert fam_small == _rows(run("--config", str(small), "--per-variant"))
    family = _rows(run("--jobs", "2"))
    snap = tmp_path / "fam.snapshot"
    kill_after_snapshot([*cmd, "--save", str(snap), "--save-every", "0"], snap)
    assert _rows(run("--resume", str(snap))) == family
