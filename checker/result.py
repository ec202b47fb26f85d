"""Verdicts, shared by every engine (the explicit BFS here, a symbolic engine later)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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


def property_results(props: Sequence[Any], found: dict[int, Any],
                     trace: Callable[[Any, Any], Trace], *, complete: bool, reason: str,
                     max_depth: int | None, states: int, transitions: int, depth: int,
                     seconds: float, engine: str) -> list[Result]:
    """One Result per property of a breadth-first run: those `found` decided (index -> an
    object with level, states, transitions, seconds) at that moment with `trace(f, prop)`;
    the rest `holds`/`unreached` when the run is `complete`, else `unknown` for `reason`."""
    out: list[Result] = []
    for j, p in enumerate(props):
        inv = p.kind == "invariant"
        f = found.get(j)
        if f is not None:
            out.append(Result(p.name, "violated" if inv else "reached", states=f.states,
                              transitions=f.transitions, depth=f.level, seconds=f.seconds,
                              trace=trace(f, p), engine=engine, kind=p.kind))
            continue
        if complete:
            verdict: Verdict = "holds" if inv else "unreached"
            why = "state space exhausted" + (
                f" (no state deeper than max_depth={max_depth})" if max_depth else "")
        else:
            verdict, why = "unknown", reason
        out.append(Result(p.name, verdict, states=states, transitions=transitions,
                          depth=depth, seconds=seconds, engine=engine, reason=why,
                          kind=p.kind))
    return out


def coverage_by_name(coverage: Iterable[tuple[Any, int]], action_name: Callable[[Any], str],
                     names: Sequence[str] | None) -> tuple[dict[str, int], list[str]]:
    """Transitions per action name (every declared name, zero included, in declared order;
    else the names seen, sorted) and the declared names that never fired."""
    by_name: dict[str, int] = {n: 0 for n in names} if names is not None else {}
    for a, cnt in coverage:
        nm = action_name(a)
        by_name[nm] = by_name.get(nm, 0) + cnt
    if names is None:
        return dict(sorted(by_name.items())), []
    return by_name, [n for n in names if by_name.get(n, 0) == 0]


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
    worker_cpu_seconds: float = 0.0  # CPU time of those workers in this search, all together
    states_moved: int = 0  # given by one worker to another to even out their frontiers

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
