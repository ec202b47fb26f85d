"""How a spec is declared: a named predicate over a state, whose docstring's first sentence is
the invariant, with the verdict expected under each design variant."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from model.config import Config

Kind = Literal["invariant", "reachable"]


@dataclass(frozen=True)
class Bounded:
    """An expected violation that needs bounds beyond the small presets: `reached(cfg)` says
    whether a configuration allows the counterexample at all, `needs` says so in words, and
    `demo` names the preset on which the tests show it."""

    needs: str
    reached: Callable[[Config], bool] = field(repr=False)
    demo: str


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Kind
    predicate: Callable = field(repr=False)
    statement: str  # the docstring's first paragraph: what the spec says
    detail: str  # the rest of the docstring
    applies: str  # the modes and variants it is about
    deviations: dict[str, str]  # variant -> why its verdict differs from the default
    bounded: dict[str, Bounded] = field(default_factory=dict)  # deviations needing bounds
    # a witness's situation needs these bounds (file kinds, tasks) to arise at all
    needs: Callable[[Config], bool] | None = field(default=None, repr=False)

    def expected(self, variant: str, cfg: Config | None = None) -> str:
        """The verdict this spec should get under `variant` (on `cfg`, if given): `holds` or
        `violated`. For a witness, `holds` means reached and `violated` means never reached.
        A deviation whose counterexample needs bounds `cfg` lacks is not expected there."""
        if self.needs is not None and cfg is not None and not self.needs(cfg):
            return "violated"  # the bounds exclude the situation: never reached
        if variant not in self.deviations:
            return "holds"
        b = self.bounded.get(variant)
        if b is not None and cfg is not None and not b.reached(cfg):
            return "holds"
        return "violated"

    def reason(self, variant: str) -> str:
        return self.deviations.get(variant, "")


SPECS: dict[str, Spec] = {}


def _register(kind: Kind, applies: str, deviations: dict[str, str] | None,
              bounded: dict[str, Bounded] | None = None,
              needs: Callable[[Config], bool] | None = None) -> Callable:
    def deco(fn: Callable) -> Callable:
        doc = inspect.cleandoc(fn.__doc__ or "")
        statement, _, detail = doc.partition("\n\n")
        if not statement:
            raise ValueError(f"spec {fn.__name__} needs a docstring")
        SPECS[fn.__name__] = Spec(
            fn.__name__, kind, fn, " ".join(statement.split()), detail, applies,
            dict(deviations or {}), dict(bounded or {}), needs,
        )
        return fn

    return deco


def invariant(applies: str = "all modes and variants", violated: dict[str, str] | None = None,
              bounded: dict[str, Bounded] | None = None):
    """Declare an invariant; `violated` maps each variant expected to violate it to why;
    `bounded` says which of those violations need bounds beyond the small presets."""
    unknown = set(bounded or {}) - set(violated or {})
    if unknown:
        raise ValueError(f"bounded deviations {sorted(unknown)} are not in `violated`")
    return _register("invariant", applies, violated, bounded)


def reachable(applies: str = "all modes and variants", unreached: dict[str, str] | None = None,
              needs: Callable[[Config], bool] | None = None):
    """Declare a witness that must be reached (so no invariant holds vacuously); `needs(cfg)`
    says whether a configuration's bounds let the situation arise at all."""
    return _register("reachable", applies, unreached, needs=needs)
