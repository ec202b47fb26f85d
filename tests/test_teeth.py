"""Every spec has teeth and every mutant is killed: checked on the verdicts actually obtained
on the tiny preset, not only on the declared expectations."""

from __future__ import annotations

import pytest

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


@pytest.mark.variants(ALL)
@pytest.mark.parametrize("mutant", [v.name for v in MUTANTS])
def test_every_mutant_is_killed(tiny_rows, mutant: str) -> None:
    base = VARIANTS[mutant].base
    rows = tiny_rows(mutant)
    killed = [s.name for s in INVARIANTS if rows[s.name].verdict == "violated"
              and tiny_rows(base)[s.name].verdict == "holds"]
    assert killed, f"{mutant} violates no invariant that its base `{base}` satisfies"


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
