"""Verdicts, shared by every engine (the explicit BFS here, a symbolic engine later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import networkx as nx

    from checker.trace import Trace

Verdict = Literal["holds", "violated", "proved", "unknown", "reached", "unreached"]
StopReason = Literal[
    "max_states", "max_depth", "max_seconds", "max_memory", "interrupt", "terminate", "decided",
    "worker_lost",
]

# Verdicts that mean "the property is fine" / "the property is not".
PASSED: frozenset[str] = frozenset({"holds", "proved", "reached"})
FAILED: frozenset[str] = frozenset({"violated", "unreached"})


@dataclass
class Result:
    """The verdict on one property.

    ``holds``: no violation in the whole (bounded) state space; ``proved``: for every state
    (symbolic engines); ``violated``/``reached``: `trace` leads to a violating/witness state;
    ``unreached``: the space was exhausted without a witness; ``unknown``: a bound stopped the
    engine first, `reason` says which.

    For ``violated``/``reached`` the figures are those when the verdict was established (the
    trace is the shortest one); otherwise those of the whole run.
    """

    property: str
    verdict: Verdict
    states: int = 0
    transitions: int = 0
    depth: int = 0
    seconds: float = 0.0
    trace: Trace | None = None
    engine: str = ""
    reason: str = ""
    kind: str = "invariant"

    @property
    def passed(self) -> bool:
        return self.verdict in PASSED

    @property
    def failed(self) -> bool:
        return self.verdict in FAILED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (the trace as its length; write it with `Trace.write_itf`)."""
        return {
            "property": self.property,
            "kind": self.kind,
            "verdict": self.verdict,
            "states": self.states,
            "transitions": self.transitions,
            "depth": self.depth,
            "seconds": round(self.seconds, 3),
            "trace_length": None if self.trace is None else self.trace.length,  # actions
            "engine": self.engine,
            "reason": self.reason,
        }


@dataclass
class Exploration:
    """What one exploration found: a result per property plus run-wide figures."""

    results: list[Result]
    coverage: dict[str, int]  # action name -> transitions taken with it
    never_fired: list[str]  # names from model.all_action_names() with no transition
    states: int
    transitions: int
    depth: int  # deepest BFS level reached
    seconds: float
    complete: bool  # the whole reachable space (within max_depth, if any) was explored
    stopped_by: StopReason | None = None
    levels: list[int] = field(default_factory=list)  # distinct states per BFS depth
    engine: str = ""
    collision_probability: float = 0.0  # birthday bound for the fingerprints, 0 if exact
    snapshot: str | None = None  # where the last snapshot was written
    graph: nx.DiGraph | None = None  # with keep_graph=True
    bytes_exchanged: int = 0  # between workers (checker.distributed), pickled batches
    worker_cpu_seconds: float = 0.0  # CPU time of those workers, all together

    def result(self, name: str) -> Result:
        for r in self.results:
            if r.property == name:
                return r
        raise KeyError(name)

    def __getitem__(self, name: str) -> Result:
        return self.result(name)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "coverage": dict(self.coverage),
            "never_fired": list(self.never_fired),
            "states": self.states,
            "transitions": self.transitions,
            "depth": self.depth,
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "stopped_by": self.stopped_by,
            "levels": list(self.levels),
            "engine": self.engine,
            "collision_probability": self.collision_probability,
        }
