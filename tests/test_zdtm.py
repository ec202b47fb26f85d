"""CRIU's zdtm/static open-file tests as model scenarios (`specs/scenarios.py`): each runs
its set-up, a checkpoint and a restart under `criu`, `fixed` and `linuxcr`, and must end as
CRIU's test expects (for `criu`) or as the design answers (the other two)."""

from __future__ import annotations

import errno

import pytest

from model.system import ASPECTS, restore_differences, run_script
from model.variants import CRIU_RULES, VARIANTS
from specs.scenarios import SCENARIOS
from specs.scenarios import VARIANTS as SCENARIO_VARIANTS


def outcome(name: str, variant: str) -> tuple[str, tuple[str, ...]]:
    sc = next(s for s in SCENARIOS if s.name == name)
    r = run_script(sc.actions, VARIANTS[variant], sc.max_fds)
    if r.error:
        return errno.errorcode[r.error], ()
    if r.rst_error:
        return "restart " + errno.errorcode[r.rst_error], ()
    return "ok", restore_differences(r.snapshot, r.restored)


@pytest.mark.parametrize("variant", SCENARIO_VARIANTS)
@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario(name: str, variant: str) -> None:
    sc = next(s for s in SCENARIOS if s.name == name)
    got, diffs = outcome(name, variant)
    assert got == sc.expect[variant]
    if got == "ok":
        assert set(diffs) & set(sc.checks) == set(sc.differs.get(variant, ()))


def test_scenarios_are_well_formed() -> None:
    """At least 20 of zdtm's tests, names unique, every check a known aspect, every variant
    given an answer, and each scenario's set-up valid for every variant alike."""
    assert len({s.zdtm for s in SCENARIOS if s.zdtm}) >= 20
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    for s in SCENARIOS:
        assert set(s.checks) <= set(ASPECTS) and s.checks, s.name
        assert set(s.expect) == set(SCENARIO_VARIANTS), s.name
        assert set(s.differs) <= set(s.expect), s.name


def test_each_criu_rule_decides_some_scenario() -> None:
    """Each of CRIU's own rules (a knob of the `criu` variant) changes the outcome of some
    scenario when turned off: the scenarios have teeth for every rule."""
    import dataclasses

    criu = VARIANTS["criu"]
    for knob in CRIU_RULES:
        off = dataclasses.replace(criu, **{knob: False})
        changed = []
        for s in SCENARIOS:
            a, b = run_script(s.actions, criu, s.max_fds), run_script(s.actions, off, s.max_fds)
            if (a.error, a.rst_error, a.restored) != (b.error, b.rst_error, b.restored):
                changed.append(s.name)
        assert changed, knob


def test_an_epoll_only_in_flight_keeps_its_items() -> None:
    """An epoll in flight (sent over a socket and closed by the sender) watching a socket of
    the container: criu dumps it with its items, so restart gives back its watch list (the
    `deep` preset found it written without them)."""
    acts = (("socketpair", 0), ("fork", 0, 1), ("epoll_create", 0), ("sendmsg", 0, 0, 2),
            ("epoll_add", 0, 2, 0))
    r = run_script(acts, VARIANTS["criu"], 3)
    assert (r.error, r.rst_error) == (0, 0)
    assert restore_differences(r.snapshot, r.restored) == ()
