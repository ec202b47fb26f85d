"""How a spec is declared: a named predicate over a state, whose docstring's first sentence is
the invariant, with the verdict expected under each design variant."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["invariant", "reachable"]


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Kind
    predicate: Callable = field(repr=False)
    statement: str  # the docstring's first paragraph: what the spec says
    detail: str  # the rest of the docstring
    applies: str  # the modes and variants it is about
    deviations: dict[str, str]  # variant -> why its verdict differs from the default

    def expected(self, variant: str) -> str:
        """The verdict this spec should get under `variant`: `holds` or `violated`. For a
        witness, `holds` means reached and `violated` means never reached."""
        return "violated" if variant in self.deviations else "holds"

    def reason(self, variant: str) -> str:
        return self.deviations.get(variant, "")


SPECS: dict[str, Spec] = {}


def _register(kind: Kind, applies: str, deviations: dict[str, str] | None) -> Callable:
    def deco(fn: Callable) -> Callable:
        doc = inspect.cleandoc(fn.__doc__ or "")
        statement, _, detail = doc.partition("\n\n")
        if not statement:
            raise ValueError(f"spec {fn.__name__} needs a docstring")
        SPECS[fn.__name__] = Spec(
            fn.__name__, kind, fn, " ".join(statement.split()), detail, applies,
            dict(deviations or {}),
        )
        return fn

    return deco


def invariant(applies: str = "all modes and variants", violated: dict[str, str] | None = None):
    """Declare an invariant; `violated` maps each variant expected to violate it to why."""
    return _register("invariant", applies, violated)


def reachable(applies: str = "all modes and variants", unreached: dict[str, str] | None = None):
    """Declare a witness that must be reached (so no invariant holds vacuously)."""
    return _register("reachable", applies, unreached)
