"""The state graph of a small model, for drawing and for checking the checker.

`state_graph` explores the canonical states (it refuses past `max_states`, so that a
forgotten bound does not eat the machine) and returns a networkx DiGraph: nodes are discovery
numbers with attributes ``depth``, ``fingerprint``, ``label``, ``initial`` and ``state`` (the
state value itself, dropped on export), edges have ``action`` (the first action between the
two states), ``label`` (all of them) and ``count``.

`write_graph` writes GraphML (``.graphml``) with networkx, or DOT (``.dot``/``.gv``) by hand:
no pydot or graphviz needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import networkx as nx

from checker.explicit import new_search
from checker.progress import NullProgress


def state_graph(model: Any, max_states: int = 10_000, max_depth: int | None = None) -> nx.DiGraph:
    """Every reachable canonical state (up to `max_depth`) and every transition between them.

    Raises ValueError when there are more than `max_states` states.
    """
    search = new_search(model, (), resume=None, exact=False)
    stopped = search.run(
        max_states=max_states,
        max_depth=max_depth,
        max_seconds=None,
        progress=NullProgress(),
        save=None,
        save_every=float("inf"),
        stop_when_decided=False,
    )
    if stopped == "max_states":
        raise ValueError(
            f"the state space has more than max_states={max_states} states: "
            "too large for a graph (raise max_states or bound the model)"
        )
    if stopped == "interrupt":
        raise KeyboardInterrupt
    return search.graph()


_SCALARS = (str, int, float, bool)


def _exportable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes GraphML/DOT can hold: scalars as they are, no state objects."""
    return {k: v for k, v in attrs.items() if k != "state" and isinstance(v, _SCALARS)}


def _dot_id(x: Any) -> str:
    return x if isinstance(x, int) else _dot_str(x)  # type: ignore[return-value]


def _dot_str(v: Any) -> str:
    text = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def to_dot(g: nx.DiGraph, name: str = "states") -> str:
    """DOT text: initial states drawn bold, each node labelled with its `label`."""
    lines = [f"digraph {_dot_str(name)} {{", "  node [shape=box, fontsize=10];"]
    for n, attrs in g.nodes(data=True):
        a = _exportable(attrs)
        parts = [f"{k}={_dot_str(v)}" for k, v in a.items()]
        if attrs.get("initial"):
            parts.append("style=bold")
        lines.append(f"  {_dot_id(n)} [{', '.join(parts)}];")
    for u, v, attrs in g.edges(data=True):
        a = _exportable(attrs)
        parts = [f"{k}={_dot_str(x)}" for k, x in a.items()]
        lines.append(f"  {_dot_id(u)} -> {_dot_id(v)} [{', '.join(parts)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(g: nx.DiGraph, path: str | os.PathLike[str]) -> Path:
    """Write `g` as GraphML (.graphml, .xml) or DOT (.dot, .gv), chosen by the extension."""
    p = Path(path)
    ext = p.suffix.lower()
    p.parent.mkdir(parents=True, exist_ok=True)
    if ext in (".dot", ".gv"):
        p.write_text(to_dot(g, p.stem), encoding="utf-8")
    elif ext in (".graphml", ".xml"):
        clean = nx.DiGraph()
        clean.add_nodes_from((n, _exportable(a)) for n, a in g.nodes(data=True))
        clean.add_edges_from((u, v, _exportable(a)) for u, v, a in g.edges(data=True))
        nx.write_graphml(clean, p)
    else:
        raise ValueError(f"{p}: unknown graph format {ext!r} (use .graphml or .dot)")
    return p
