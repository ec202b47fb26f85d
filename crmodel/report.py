"""What a check reports, whichever engine ran it: a `Row` per (variant, spec), the `Report`
of a run, and the ITF traces written beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checker.result import Exploration
from checker.trace import Trace
from model.config import PRESETS, Config
from model.system import CrModel


@dataclass
class Row:
    """One (variant, spec) verdict."""

    variant: str
    spec: str
    kind: str
    engine: str
    verdict: str
    expected: str
    states: int
    transitions: int
    depth: int
    seconds: float
    reason: str
    trace: Trace | None = field(default=None, repr=False)
    trace_path: str | None = None
    model: CrModel | None = field(default=None, repr=False)
    exact: bool = True  # expectations are exact on the presets tiny, default and deep

    @property
    def out_of_reach(self) -> bool:
        """On other bounds, an expected counterexample or witness not found: the bounds may
        simply be too small for it. Not a mismatch; an unexpected violation always is."""
        if self.exact or self.verdict == self.expected:
            return False
        if self.kind == "invariant":
            return self.expected == "violated" and self.verdict == "holds"
        return self.expected == "holds" and self.verdict == "violated"

    @property
    def matches(self) -> bool:
        proved = self.verdict == "proved" and self.expected == "holds"  # a proof is more
        return self.verdict == self.expected or proved or self.out_of_reach

    @property
    def trace_length(self) -> int | None:
        """Steps (actions) in the counterexample or witness trace."""
        return None if self.trace is None else self.trace.length

    def trace_text(self) -> str:
        return "" if self.trace is None else self.trace.to_text(self.model)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "spec": self.spec,
            "kind": self.kind,
            "engine": self.engine,
            "verdict": self.verdict,
            "expected": self.expected,
            "out_of_reach": self.out_of_reach,
            "states": self.states,
            "transitions": self.transitions,
            "depth": self.depth,
            "seconds": round(self.seconds, 3),
            "trace_length": self.trace_length,
            "trace": self.trace_path,
            "reason": self.reason,
        }


@dataclass
class Report:
    config: Config
    rows: list[Row]
    explorations: dict[str, Exploration]

    @property
    def ok(self) -> bool:
        return all(r.matches for r in self.rows)

    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if not r.matches]

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "results": [r.to_json() for r in self.rows]}


EXACT_PRESETS = ("tiny", "default", "deep")


def exact_expectations(cfg: Config) -> bool:
    """Whether every declared expectation must be met exactly on `cfg`: on the presets the
    tests check; on other bounds a counterexample may be out of reach."""
    return cfg.name in EXACT_PRESETS and PRESETS[cfg.name] == cfg


def write_trace(row: Row, folder: Path) -> str:
    """`<variant>__<spec>.itf.json` and a `.txt` beside it; returns the ITF path."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"{row.variant}__{row.spec}"
    assert row.trace is not None
    itf = row.trace.write_itf(base.with_suffix(".itf.json"), row.model)
    base.with_suffix(".txt").write_text(row.trace_text())
    return str(itf)
