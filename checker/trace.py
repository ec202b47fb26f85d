"""Traces: a run from an initial state, as text (only what changes) or as ITF JSON.

ITF is the Informal Trace Format of Apalache and Quint
(https://apalache-mc.org/docs/adr/015adr-trace.html). Every integer is written as
``{"#bigint": "..."}`` because strict readers (the Rust `itf` crate) accept nothing else;
tuples and lists become JSON lists (ITF sequences), records JSON objects, frozensets
``{"#set": [...]}`` and dicts with non-string keys ``{"#map": [[k, v], ...]}``.
"""

from __future__ import annotations

import builtins
import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checker.model import ModelHooks, hooks

ITF_FORMAT_URL = "https://apalache-mc.org/docs/adr/015adr-trace.html"
ACTION_VAR = "action_taken"
ARGS_VAR = "action_args"
INIT_ACTION = "init"


@dataclass(frozen=True)
class Step:
    """One state of a trace and the action that led to it (None for the initial state)."""

    action: Any
    state: Any


@dataclass
class Trace:
    """A run of the model: `steps[0]` is an initial state, each next one a successor.

    `concrete` is False when the model's `canonical` was not a symmetry and the run could only
    be given as canonical representatives (each action then applies to the representative of
    the previous state, not to the state shown).
    """

    steps: list[Step]
    property: str | None = None  # shadows the builtin in this class body: see builtins.property
    concrete: bool = True
    note: str = ""
    # The model the trace belongs to, so that to_text()/to_itf() need no argument.
    model: Any = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.steps)

    def __getstate__(self) -> dict[str, Any]:
        # Models need not be picklable; a trace is.
        d = dict(self.__dict__)
        d["model"] = None
        return d

    @builtins.property
    def last(self) -> Any:
        return self.steps[-1].state

    @builtins.property
    def actions(self) -> list[Any]:
        return [s.action for s in self.steps[1:]]

    @builtins.property
    def length(self) -> int:
        """The number of actions (states less one): what `trace_length` means everywhere."""
        return len(self.steps) - 1

    def _hooks(self, model: Any) -> ModelHooks:
        m = model if model is not None else self.model
        if m is None:
            raise ValueError("this trace has no model: pass one")
        return hooks(m)

    # --- text -------------------------------------------------------------------------------

    def to_text(self, model: Any = None) -> str:
        """Step by step: the initial state in full, then only the entries that changed."""
        h = self._hooks(model)
        lines: list[str] = []
        if self.property:
            lines.append(f"trace for {self.property} ({len(self.steps) - 1} steps)")
        if self.note:
            lines.append(f"note: {self.note}")
        prev: dict[str, str] = {}
        for i, step in enumerate(self.steps):
            cur = h.describe(step.state)
            if i == 0:
                lines.append("step 0: initial state")
                lines.extend(f"    {k} = {v}" for k, v in cur.items())
            else:
                lines.append(f"step {i}: {h.format_action(step.action)}")
                changed = [
                    f"  + {k} = {v}" if k not in prev else f"    {k}: {prev[k]} -> {v}"
                    for k, v in cur.items()
                    if prev.get(k) != v
                ]
                gone = [k for k in prev if k not in cur]
                if len(gone) > 4:  # a step that drops much: name what went, not each value
                    changed.append(f"  - {len(gone)} entries gone: {', '.join(gone)}")
                else:
                    changed += [f"  - {k} (was {prev[k]})" for k in gone]
                lines.extend(changed or ["    (no change)"])
            prev = cur
        return "\n".join(lines)

    def __str__(self) -> str:
        if self.model is None:
            return f"Trace({len(self.steps)} steps)"
        return self.to_text()

    # --- ITF --------------------------------------------------------------------------------

    def to_itf(self, model: Any = None) -> dict[str, Any]:
        """The trace as an ITF JSON document (a dict ready for `json.dump`)."""
        h = self._hooks(model)
        states: list[dict[str, Any]] = []
        var_names: list[str] = []
        for i, step in enumerate(self.steps):
            raw = h.state_to_json(step.state)
            values = (
                raw
                if isinstance(raw, dict) and all(isinstance(k, str) for k in raw)
                else {"state": raw}
            )
            for k in values:
                if k not in var_names:
                    var_names.append(k)
            if step.action is None:
                name, args = INIT_ACTION, []
            else:
                name, args = h.action_name(step.action), h.action_to_json(step.action)
            st: dict[str, Any] = {"#meta": {"index": i}}
            st.update((k, itf_value(v)) for k, v in values.items())
            st[ACTION_VAR] = name
            st[ARGS_VAR] = itf_value(args)
            states.append(st)
        meta: dict[str, Any] = {
            "format": "ITF",
            "format-description": ITF_FORMAT_URL,
            "source": "checker (explicit-state model checker)",
            "description": f"trace for {self.property}" if self.property else "trace",
        }
        if self.property:
            meta["property"] = self.property
        meta.update(h.itf_meta())
        if self.note:
            meta["note"] = self.note
        if not self.concrete:
            meta["canonical"] = True
        return {"#meta": meta, "vars": var_names + [ACTION_VAR, ARGS_VAR], "states": states}

    def write_itf(self, path: str | os.PathLike[str], model: Any = None) -> Path:
        """Write the ITF JSON to `path` (directories created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        doc = self.to_itf(model)
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, p)
        return p


def itf_value(v: Any) -> Any:
    """Encode a Python value (a state part or a JSON-able view of one) as an ITF value."""
    if isinstance(v, bool | str):
        return v
    if isinstance(v, enum.Enum) and not isinstance(v, int):
        return v.name
    if isinstance(v, int):
        return {"#bigint": str(int(v))}
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return {name: itf_value(getattr(v, name)) for name in v._fields}
    if isinstance(v, tuple | list):
        return [itf_value(x) for x in v]
    if isinstance(v, frozenset | set):
        items = [itf_value(x) for x in v]
        # Set order is not meaningful; sort so that the same state gives the same file.
        items.sort(key=lambda x: json.dumps(x, sort_keys=True))
        return {"#set": items}
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {k: itf_value(x) for k, x in v.items()}
        return {"#map": [[itf_value(k), itf_value(x)] for k, x in v.items()]}
    return {"#unserializable": repr(v)}


def from_itf_value(v: Any) -> Any:
    """Decode an ITF value to plain Python: ints, lists, dicts (records), frozensets, tuples."""
    if isinstance(v, list):
        return [from_itf_value(x) for x in v]
    if isinstance(v, dict):
        if "#bigint" in v:
            return int(v["#bigint"])
        if "#tup" in v:
            return tuple(from_itf_value(x) for x in v["#tup"])
        if "#set" in v:
            return frozenset(_hashable(from_itf_value(x)) for x in v["#set"])
        if "#map" in v:
            return {_hashable(from_itf_value(k)): from_itf_value(x) for k, x in v["#map"]}
        if "#unserializable" in v:
            return v["#unserializable"]
        return {k: from_itf_value(x) for k, x in v.items()}
    return v


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def load_itf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ITF file into ``{"meta", "vars", "params", "loop", "states"}``.

    Each state is a dict ``var -> value`` decoded to plain Python, plus ``"#index"``.
    """
    with open(path, encoding="utf-8") as f:
        return decode_itf(json.load(f))


def decode_itf(doc: dict[str, Any]) -> dict[str, Any]:
    """`load_itf` on an ITF document already parsed from JSON."""
    states = []
    for i, raw in enumerate(doc.get("states", [])):
        st = {k: from_itf_value(v) for k, v in raw.items() if k != "#meta"}
        st["#index"] = raw.get("#meta", {}).get("index", i)
        states.append(st)
    return {
        "meta": doc.get("#meta", {}),
        "vars": list(doc.get("vars", [])),
        "params": list(doc.get("params", [])),
        "loop": doc.get("loop"),
        "states": states,
    }


def replay(h: ModelHooks, t0: Any, path: list[int], prop: Any = None) -> Trace:
    """The run from initial state `t0` along successor indexes `path`, made concrete.

    `path` is how a breadth-first search found a state: the index, among each
    representative's successors, of the transition taken. The run is replayed on canonical
    representatives (how the states were found), then re-run from the *concrete* `t0`,
    picking at each step the first successor whose canonical form is the next
    representative, so the trace shown is a genuine run, not a list of representatives.
    `prop`: the property (`checker.model.Property`) the trace is for, if any."""
    c = h.canonical(t0)
    chain, canon_actions = [c], []
    for k in path:
        a, t = list(h.successors(c))[k]
        c = h.canonical(t)
        chain.append(c)
        canon_actions.append(a)
    name = prop.name if prop else None
    steps, t = [Step(None, t0)], t0
    for target in chain[1:]:
        for a, u in h.successors(t):
            if h.canonical(u) == target:
                steps.append(Step(a, u))
                t = u
                break
        else:
            steps = [Step(None, chain[0])]
            steps += [Step(a, s) for a, s in zip(canon_actions, chain[1:], strict=True)]
            note = (
                "canonical() is not a symmetry of successors(): the trace shows "
                "representatives, each action applied to the previous representative"
            )
            return Trace(steps, name, concrete=False, note=note, model=h.model)
    note = ""
    if prop is not None and bool(prop.predicate(t)) != bool(prop.predicate(chain[-1])):
        note = f"{prop.name} differs on the last state and its canonical form: not symmetric"
    return Trace(steps, name, note=note, model=h.model)
