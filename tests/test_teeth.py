"""Every spec has teeth and every mutant is killed: checked on the verdicts actually obtained
on the tiny preset (or, for a violation that needs more room, on the preset its `Bounded`
deviation names), not only on the declared expectations."""

from __future__ import annotations

from functools import cache

import pytest

from crmodel import api
from model.config import PRESETS
from model.variants import VARIANTS
from specs import SPECS

INVARIANTS = [s for s in SPECS.values() if s.kind == "invariant"]
WITNESSES = [s for s in SPECS.values() if s.kind == "reachable"]
MUTANTS = [v for v in VARIANTS.values() if v.kind == "mutant"]
ALL = list(VARIANTS)


@pytest.mark.variants(ALL)
@pytest.mark.parametrize("spec", [s.name for s in INVARIANTS])
def test_every_invariant_is_violated_by_some_variant(tiny_rows, spec: str) -> None:
    killers = [v for v in VARIANTS if tiny_rows(v)[spec].verdict == "violated"]
    assert killers, f"{spec} is violated by no variant: it has no demonstrated teeth"


BOUNDED = [(s.name, v, b.demo) for s in SPECS.values() for v, b in s.bounded.items()]


@cache
def _rows(preset: str, variant: str) -> dict[str, api.Row]:
    report = api.check(preset, variants=[variant], jobs=1)
    return {r.spec: r for r in report.rows}


@pytest.mark.variants(ALL)
@pytest.mark.parametrize("mutant", [v.name for v in MUTANTS])
def test_every_mutant_is_killed(tiny_rows, mutant: str) -> None:
    base = VARIANTS[mutant].base
    rows = tiny_rows(mutant)
    killed = [s.name for s in INVARIANTS if rows[s.name].verdict == "violated"
              and tiny_rows(base)[s.name].verdict == "holds"]
    for spec, v, demo in BOUNDED:  # killed only with more room than tiny gives
        if v == mutant and _rows(demo, mutant)[spec].verdict == "violated" \
                and _rows(demo, base)[spec].verdict == "holds":
            killed.append(f"{spec} on {demo}")
    assert killed, f"{mutant} violates no invariant that its base `{base}` satisfies"


@pytest.mark.variants(ALL)
@pytest.mark.parametrize("spec,variant,demo", BOUNDED)
def test_bounded_deviation_shown_where_it_says(tiny_rows, spec: str, variant: str,
                                               demo: str) -> None:
    """A violation declared to need more room than tiny: out of tiny's reach as declared, and
    found on the preset it names, with a trace that ends in the violation."""
    b = SPECS[spec].bounded[variant]
    assert not b.reached(PRESETS["tiny"]) and b.reached(PRESETS[demo])
    assert tiny_rows(variant)[spec].verdict == "holds"
    row = _rows(demo, variant)[spec]
    assert row.verdict == "violated" and row.trace is not None
    assert not SPECS[spec].predicate(row.trace.last)


@pytest.mark.parametrize("preset", ["race"])
def test_fixed_satisfies_every_invariant_with_more_room(preset: str) -> None:
    """Two outside steps while the checkpoint runs (tiny allows one): `fixed` still holds."""
    bad = [s for s, r in _rows(preset, "fixed").items()
           if SPECS[s].kind == "invariant" and r.verdict != "holds"]
    assert not bad, f"fixed fails {bad} on {preset}"


@pytest.mark.variants(["fixed"])
def test_fixed_satisfies_every_spec(tiny_rows) -> None:
    rows = tiny_rows("fixed")
    bad = [s for s, r in rows.items() if r.verdict != "holds"]
    assert not bad, f"fixed fails {bad}"


@pytest.mark.variants(["linuxcr", "fixed"])
@pytest.mark.parametrize("variant", ["linuxcr", "fixed"])
def test_witnesses_reached(tiny_rows, variant: str) -> None:
    """No invariant of the baseline or the fix holds vacuously: every witness is reached."""
    rows = tiny_rows(variant)
    missing = [s.name for s in WITNESSES if rows[s.name].verdict != "holds"]
    assert not missing, missing


def test_expectations_name_real_variants() -> None:
    for s in SPECS.values():
        unknown = set(s.deviations) - set(VARIANTS)
        assert not unknown, f"{s.name} names unknown variants {unknown}"
