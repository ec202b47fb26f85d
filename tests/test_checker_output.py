"""What the checker writes: text traces, ITF traces, state graphs, progress lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import itf_py
import networkx as nx
import pytest

from checker import (
    ProgressInfo,
    RichProgress,
    TextProgress,
    auto_progress,
    explore,
    load_itf,
    state_graph,
    to_dot,
    write_graph,
)
from checker.examples import BuggyMutex, Counters, Mutex
from checker.model import default_describe, default_format_action
from checker.trace import Step, Trace, itf_value


def mutex_trace() -> Trace:
    m = BuggyMutex(3)
    ex = explore(m, m.properties())
    trace = ex["mutual_exclusion"].trace
    assert trace is not None
    return trace


def test_text_trace_shows_only_changes() -> None:
    text = mutex_trace().to_text()
    lines = text.splitlines()
    assert lines[0] == "trace for mutual_exclusion (6 steps)"
    assert lines[1] == "step 0: initial state"
    # The initial state in full...
    assert lines[2:6] == [
        "    proc[0] = idle",
        "    proc[1] = idle",
        "    proc[2] = idle",
        "    locked = no",
    ]
    # ...then one line per change, the model's format_action for the action.
    assert lines[6:8] == ["step 1: process 0: want", "    proc[0]: idle -> waiting"]
    assert "step 5: process 0: take" in lines
    i = lines.index("step 5: process 0: take")
    assert lines[i + 1 : i + 3] == ["    proc[0]: entering -> critical", "    locked: no -> yes"]
    assert "proc[2]" not in "\n".join(lines[6:])  # never changes: never shown again


def test_text_trace_added_removed_and_no_change() -> None:
    class M:
        def describe(self, s: int) -> dict[str, str]:
            return {"x": str(s)} if s % 2 else {"y": str(s)}

    t = Trace([Step(None, 1), Step(("flip",), 2), Step(("stay",), 2)], model=M())
    assert t.to_text().splitlines() == [
        "step 0: initial state",
        "    x = 1",
        "step 1: flip()",
        "  + y = 2",
        "  - x (was 1)",
        "step 2: stay()",
        "    (no change)",
    ]


def test_default_describe_and_format() -> None:
    s = Mutex((0, 3, 1), True)
    assert default_describe(s) == {"pcs": "(0, 3, 1)", "locked": "True"}
    assert default_describe((4, 5)) == {"[0]": "4", "[1]": "5"}
    assert default_describe(((1, (2, 3)),)) == {"[0][0]": "1", "[0][1]": "(2, 3)"}
    assert default_format_action(("open", 1, 2)) == "open(1, 2)"


def test_itf_structure_and_roundtrip(tmp_path: Path) -> None:
    trace = mutex_trace()
    doc = trace.to_itf()
    json.dumps(doc)  # plain JSON
    assert doc["#meta"]["format"] == "ITF" and doc["#meta"]["property"] == "mutual_exclusion"
    assert doc["vars"] == ["pcs", "locked", "action_taken", "action_args"]
    assert len(doc["states"]) == len(trace.steps)
    s0, s1 = doc["states"][0], doc["states"][1]
    assert s0["#meta"] == {"index": 0}
    assert s0["pcs"] == [{"#bigint": "0"}] * 3 and s0["locked"] is False
    assert s0["action_taken"] == "init" and s0["action_args"] == []
    assert s1["action_taken"] == "want" and s1["action_args"] == [{"#bigint": "0"}]
    for st in doc["states"]:
        assert set(st) == {"#meta", *doc["vars"]}

    path = trace.write_itf(tmp_path / "t" / "trace.itf.json")
    # itf-py's reader accepts it.
    parsed = itf_py.trace_from_json(json.loads(path.read_text()))
    assert parsed.vars == doc["vars"]
    assert [s.values["action_taken"] for s in parsed.states][:2] == ["init", "want"]
    assert list(parsed.states[-1].values["pcs"]) == list(trace.last.pcs)
    # And ours gives the states back.
    loaded = load_itf(path)
    assert loaded["vars"] == doc["vars"]
    assert [tuple(s["pcs"]) for s in loaded["states"]] == [st.state.pcs for st in trace.steps]
    assert [s["locked"] for s in loaded["states"]] == [st.state.locked for st in trace.steps]


def test_itf_value_encoding() -> None:
    assert itf_value(2**70) == {"#bigint": str(2**70)}
    assert itf_value(True) is True
    assert itf_value((1, (2,))) == [{"#bigint": "1"}, [{"#bigint": "2"}]]
    assert itf_value(frozenset({2, 1})) == {"#set": [{"#bigint": "1"}, {"#bigint": "2"}]}
    assert itf_value({1: "a"}) == {"#map": [[{"#bigint": "1"}, "a"]]}
    # Values of a tuple-typed state go under one variable "state".
    t = Trace([Step(None, (0, 0)), Step(("inc_a",), (1, 0))], model=Counters(3))
    doc = t.to_itf()
    assert doc["vars"] == ["state", "action_taken", "action_args"]
    assert doc["states"][1]["state"] == [{"#bigint": "1"}, {"#bigint": "0"}]


def test_trace_pickles_without_model() -> None:
    import pickle

    trace = mutex_trace()
    back = pickle.loads(pickle.dumps(trace))
    assert back == trace and back.model is None
    with pytest.raises(ValueError, match="no model"):
        back.to_text()
    assert back.to_text(BuggyMutex(3)) == trace.to_text()


def test_state_graph_matches_exploration_and_brute_force() -> None:
    m = Counters(5)
    g = state_graph(m)
    ex = explore(m, stop_when_decided=False)
    assert g.number_of_nodes() == ex.states
    # Depth attributes are BFS distances.
    root = next(n for n, a in g.nodes(data=True) if a["initial"])
    dist = nx.single_source_shortest_path_length(g, root)
    assert all(g.nodes[n]["depth"] == d for n, d in dist.items())
    assert sum(a["count"] for _, _, a in g.edges(data=True)) == ex.transitions
    assert {a["action"] for _, _, a in g.edges(data=True)} == {
        "inc_a()",
        "inc_b()",
        "double_a()",
        "swap()",
    }
    # The same graph from explore(keep_graph=True).
    g2 = explore(m, keep_graph=True).graph
    assert g2 is not None and nx.utils.graphs_equal(g, g2)


def test_state_graph_refuses_big_spaces() -> None:
    with pytest.raises(ValueError, match="max_states=50"):
        state_graph(Counters(10), max_states=50)


def test_write_graph_dot_and_graphml(tmp_path: Path) -> None:
    g = state_graph(BuggyMutex(2))
    dot = write_graph(g, tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "g" {') and dot.rstrip().endswith("}")
    assert dot.count("->") == g.number_of_edges()
    assert "style=bold" in dot  # the initial state
    assert to_dot(g).count("label=") == g.number_of_nodes() + g.number_of_edges()
    assert "proc[0]=idle\\nproc[1]=idle\\nlocked=no" in dot  # describe() as the label
    back = nx.read_graphml(write_graph(g, tmp_path / "g.graphml"))
    assert back.number_of_nodes() == g.number_of_nodes()
    assert back.number_of_edges() == g.number_of_edges()
    assert "state" not in next(iter(back.nodes(data=True)))[1]
    with pytest.raises(ValueError, match="unknown graph format"):
        write_graph(g, tmp_path / "g.png")


def test_dot_escapes_quotes() -> None:
    g = nx.DiGraph()
    g.add_node(0, label='say "hi"\\')
    assert r'label="say \"hi\"\\"' in to_dot(g)


def test_progress_reporters() -> None:
    got: list[ProgressInfo] = []
    m = Counters(40)
    ex = explore(m, progress=got.append, stop_when_decided=False)
    assert got and all(isinstance(i, ProgressInfo) for i in got)
    assert any(i.level_done for i in got)  # one per level boundary at least
    assert max(i.states for i in got) <= ex.states

    out = io.StringIO()
    explore(m, progress=TextProgress(out, interval=0.0))
    lines = out.getvalue().splitlines()
    assert lines and "states" in lines[0] and lines[-1].endswith("done")

    out = io.StringIO()
    quiet = TextProgress(out, interval=3600, slow_level=3600)
    explore(m, progress=quiet)
    assert len(out.getvalue().splitlines()) == 2  # the first update and the final line

    assert isinstance(auto_progress(io.StringIO()), TextProgress)
    out = io.StringIO()
    explore(m, progress=RichProgress(out))
    assert "states" in out.getvalue()
