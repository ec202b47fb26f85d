"""Every (variant, spec) pair on the `tiny` preset is a test item: a proof that stops holding,
or a finding that stops reproducing, fails by name."""

from __future__ import annotations

import pytest

from model.variants import VARIANTS
from specs import SPECS

PAIRS = [(v, s) for v in VARIANTS for s in SPECS]


@pytest.mark.variants(list(VARIANTS))
@pytest.mark.parametrize(("variant", "spec"), PAIRS, ids=[f"{v}:{s}" for v, s in PAIRS])
def test_verdict(tiny_rows, variant: str, spec: str) -> None:
    row = tiny_rows(variant)[spec]
    why = SPECS[spec].reason(variant)
    assert row.verdict == row.expected, (
        f"{variant} / {spec}: got {row.verdict}, expected {row.expected}"
        + (f" ({why})" if why else "")
        + ("\n" + row.trace_text() if row.trace is not None else "")
    )


@pytest.mark.variants(list(VARIANTS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_action_fired(tiny_exploration, variant: str) -> None:
    """No spec may hold because an action never fired."""
    ex = tiny_exploration(variant)
    assert ex.complete, ex.stopped_by
    assert not ex.never_fired or variant == "mut-users-start-1", ex.never_fired


def test_a_partial_restart_that_built_no_task_leaves_nothing() -> None:
    """hostile_images_rejected asks that no task survive a refused image: a partial restart
    failing at the first table built none (its observation is ((), ())); one that built a
    task did not."""
    import errno

    from model.image import T_BAD_NFDS, T_BAD_OBJREF
    from model.state import RESTARTED, Cr, World

    def after(tamper: int, restored: tuple) -> World:
        return World((), (), (), 0, Cr(RESTARTED, tampered=tamper, rst_error=errno.EINVAL,
                                       restored=restored))

    spec = SPECS["hostile_images_rejected"].predicate
    assert spec(after(T_BAD_NFDS, ((), ())))
    assert spec(after(T_BAD_OBJREF, ()))
    assert not spec(after(T_BAD_OBJREF, (((0, ()),), ())))
