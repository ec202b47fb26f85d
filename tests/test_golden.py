"""The explicit engine's answers equal the golden reference (`tests/data/golden.json`, written
by `benchmarks/golden.py record`): states, transitions, states per level, coverage, and per
spec the verdict and every action of its counterexample or witness. A change meant only to
make exploration faster must leave all of them as they are; a change of the model that moves
them re-records the reference and says why in its commit.

The tiny runs reuse the session's explorations (no extra cost in the full suite); the two race
runs take seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from model.variants import VARIANTS

_spec = importlib.util.spec_from_file_location(
    "golden", Path(__file__).resolve().parent.parent / "benchmarks" / "golden.py")
assert _spec and _spec.loader
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

GOLDEN = golden.load()


def test_every_variant_is_recorded() -> None:
    assert set(GOLDEN) == set(golden.keys())
    assert all(f"tiny:{v}" in GOLDEN for v in VARIANTS)


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=pytest.mark.variants([v])) for v in VARIANTS])
def test_tiny_answers_unchanged(tiny_exploration, variant: str) -> None:
    got = golden.summary(tiny_exploration(variant))
    assert not golden.differences(GOLDEN[f"tiny:{variant}"], got)


@pytest.mark.parametrize("variant", ["fixed", "mut-stale-counts"])
def test_race_answers_unchanged(variant: str) -> None:
    assert not golden.differences(GOLDEN[f"race:{variant}"], golden.explore("race", variant))


def test_a_changed_answer_is_seen() -> None:
    """The comparison has teeth: one action of one trace, or one state more, is a difference."""
    want = GOLDEN["race:mut-stale-counts"]
    got = {**want, "states": want["states"] + 1}
    assert golden.differences(want, got) == [f"states: {want['states']} != {want['states'] + 1}"]
    spec, res = next((s, r) for s, r in want["results"].items() if r["trace"])
    trace = [list(a) for a in res["trace"]]
    trace[-1] = ["restart"] if trace[-1] != ["restart"] else ["visited"]
    got = {**want, "results": {**want["results"], spec: {**res, "trace": trace}}}
    assert [d.split(":")[0] for d in golden.differences(want, got)] == [spec]
