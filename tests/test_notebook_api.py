"""The notebook API (`crmodel.notebook`), the pictures (`crmodel.render`) and the graph export,
on small configs of a few seconds each."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from crmodel import notebook as nb
from crmodel.cli import graph_command
from crmodel.render import (
    changed_nodes,
    export_graph,
    neighbourhood_graph,
    object_graph,
    observation_world,
    render_state,
)
from model.env import apply, initial_world
from model.state import RESTARTED
from model.system import CrModel
from model.variants import VARIANTS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def epoll_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[nb.Results, Path]:
    """Pipes and epolls, one task inside: the hidden leak of `fixed-pipe` and the false
    positive of `linuxcr`, with their ITF files."""
    folder = tmp_path_factory.mktemp("traces")
    cfg = nb.config("tiny", kinds=("pipe", "epoll"), inside_tasks=1)
    res = nb.check(cfg, ["linuxcr", "fixed-pipe"],
                   ["leak_detection_sound", "leak_detection_complete"], traces_dir=folder)
    return res, folder


@pytest.fixture(scope="module")
def pty_run() -> nb.Results:
    cfg = nb.config("tiny", kinds=("pty",), inside_tasks=1)
    return nb.check(cfg, "linuxcr", ["restore_preserves_all_flags",
                                     "leak_detection_sound_at_write"])


def test_config_overrides_and_validates() -> None:
    cfg = nb.config("tiny", kinds=["pipe"], inside_tasks=1)
    assert cfg.kinds == ("pipe",) and cfg.inside_tasks == 1
    assert nb.config("tiny").name == "tiny"
    with pytest.raises(ValueError):
        nb.config("tiny", max_fds=0)


def test_results(epoll_run) -> None:
    res, _ = epoll_run
    assert res.ok
    assert res.verdict("linuxcr", "leak_detection_complete") == "violated"
    assert res.verdict("fixed-pipe", "leak_detection_complete") == "violated"
    assert res.states("linuxcr") > 0
    html = res._repr_html_()
    assert "<table>" in html and "leak_detection_sound" in html
    with pytest.raises(KeyError):
        res.row("fixed", "leak_detection_sound")


def test_trace_from_row(epoll_run) -> None:
    res, _ = epoll_run
    tr = res.trace("fixed-pipe", "leak_detection_sound")
    row = res.row("fixed-pipe", "leak_detection_sound")
    assert len(tr) == row.trace_length + 1
    assert tr.action(0) is None and tr.action_text(0) == "initial state"
    assert tr.state(0) == CrModel(res.config, VARIANTS["fixed-pipe"]).init_states()[0]
    assert tr.state(-1) == tr.state(len(tr) - 1)
    with pytest.raises(IndexError):
        tr.state(len(tr))
    for i in range(1, len(tr)):
        assert tr.action(i) == row.trace.steps[i].action
        assert tr.changes(i), f"step {i} changed nothing"
    # the collect step adds the objhash entries
    collect = next(i for i in range(len(tr)) if tr.action(i) == ("collect",))
    added = [c for c in tr.changes(collect) if c.kind == "added"]
    assert added and all(c.key.startswith("objhash") for c in added)
    story = tr.story()
    assert len(story) == len(tr) - 1 and story[0].startswith("1. ")
    assert "epoll" in " ".join(story)
    assert "<table>" in tr._repr_html_()
    assert tr[collect].index == collect


def test_trace_from_itf(epoll_run) -> None:
    res, folder = epoll_run
    path = folder / "fixed-pipe__leak_detection_sound.itf.json"
    want = res.trace("fixed-pipe", "leak_detection_sound")
    for cfg in (None, res.config):  # rebuilt from the JSON; and re-run through the model
        got = nb.load_trace(path, cfg)
        assert got.variant.name == "fixed-pipe" and got.spec == "leak_detection_sound"
        assert [s.state for s in got.steps] == [s.state for s in want.steps]
        assert [s.action for s in got.steps] == [s.action for s in want.steps]
        assert got.story() == want.story()


def test_itf_from_another_config_is_refused(epoll_run) -> None:
    res, folder = epoll_run
    other = nb.config(res.config, max_fds=4)
    with pytest.raises(ValueError, match="differs"):
        nb.load_trace(folder / "linuxcr__leak_detection_complete.itf.json", other)


def test_render_every_step_deterministic(epoll_run, tmp_path: Path) -> None:
    res, _ = epoll_run
    tr = res.trace("fixed-pipe", "leak_detection_sound")
    for i in range(len(tr)):
        a = tr.render(i).save(tmp_path / f"a{i}.png")
        b = tr.render(i).save(tmp_path / f"b{i}.png")
        assert a.read_bytes().startswith(PNG)
        assert a.read_bytes() == b.read_bytes(), f"step {i} renders differently"
    g1 = object_graph(tr.state(6), tr.variant)
    g2 = object_graph(tr.state(6), tr.variant)
    assert nx.utils.graphs_equal(g1, g2)


def test_objhash_mismatch_is_flagged(epoll_run) -> None:
    """The false positive: after collect, the watched file's users exceed its f_count."""
    res, _ = epoll_run
    tr = res.trace("linuxcr", "leak_detection_complete")
    collect = next(i for i in range(len(tr)) if tr.action(i) == ("collect",))
    g = object_graph(tr.state(collect), tr.variant)
    alerts = [n for n, a in g.nodes(data=True) if a["alert"]]
    assert alerts and all(n.startswith("objref") for n in alerts)
    assert "objref" in tr[collect].tables_html()


def test_state_graph_parts() -> None:
    """Shared tables, close-on-exec, epoll items (no reference) and SCM_RIGHTS in flight."""
    w = initial_world(4)
    for a in [("fork", 0, 1), ("clone_files", 1, 1), ("socketpair", 1), ("sendmsg", 1, 0, 1),
              ("epoll_create", 1), ("epoll_add", 1, 2, 1), ("setfd", 1, 2, 1)]:
        _, w2 = apply(w, a)
        prev, w = w, w2
    g = object_graph(w)
    kinds = {a["kind"] for _, _, a in g.edges(data=True)}
    assert {"holds", "fd", "file", "object", "epitem", "inflight"} <= kinds
    assert g.has_edge("task 1", "table 1") and g.has_edge("task 2", "table 1")
    assert "fd 2 CLOEXEC" in g.nodes["table 1 fd 2"]["lines"]
    assert changed_nodes(g, object_graph(prev)) == {"table 1 fd 2"}
    assert render_state(w, prev).png().startswith(PNG)


def test_restored_differs_from_snapshot(pty_run, tmp_path: Path) -> None:
    """The O_LARGEFILE finding: the restored pty slave is the node that differs."""
    tr = pty_run.trace("linuxcr", "restore_preserves_all_flags")
    cr = tr.state(-1).cr
    assert cr.phase == RESTARTED
    snap = object_graph(observation_world(cr.snapshot), counts=False)
    rest = object_graph(observation_world(cr.restored), counts=False)
    changed = changed_nodes(rest, snap)
    assert len(changed) == 1
    assert any("pts" in line for line in rest.nodes[changed.pop()]["lines"])
    html = tr[-1]._repr_html_()
    assert "data:image/png;base64," in html and "restored tasks" in html
    assert tr.render(-1).save(tmp_path / "restored.png").stat().st_size > 1000


def test_race_shows_at_the_write(pty_run) -> None:
    tr = pty_run.trace("linuxcr", "leak_detection_sound_at_write")
    write = next(i for i in range(len(tr)) if tr.action(i) == ("write",))
    g = object_graph(tr.state(write), tr.variant)
    assert any(a["alert"] for _, a in g.nodes(data=True))


def test_neighbourhood_graph(epoll_run, tmp_path: Path) -> None:
    res, folder = epoll_run
    tr = nb.load_trace(folder / "linuxcr__leak_detection_complete.itf.json", res.config)
    model = CrModel(res.config, VARIANTS["linuxcr"])
    g = neighbourhood_graph(model, tr.steps)
    on_trace = sorted(a["trace_step"] for _, a in g.nodes(data=True) if a["trace_step"] >= 0)
    assert on_trace == list(range(len(tr)))
    assert sum(1 for *_, a in g.edges(data=True) if a["on_trace"]) == len(tr) - 1
    for i, s in enumerate(tr.steps):  # every trace state has all its successors
        succ = {model.canonical(w) for _, w in model.successors(s.state)}
        node = next(n for n, a in g.nodes(data=True) if a["trace_step"] == i)
        assert {g.nodes[m]["state"] for m in g.successors(node)} == succ
    p = export_graph(res.config, VARIANTS["linuxcr"], tmp_path / "n.graphml", tr.steps)
    back = nx.read_graphml(tmp_path / "n.graphml")
    assert back.number_of_nodes() == p.number_of_nodes()
    export_graph(res.config, VARIANTS["linuxcr"], tmp_path / "n.dot", tr.steps)
    assert (tmp_path / "n.dot").read_text().startswith('digraph "n"')


def plain_bfs(model: CrModel) -> tuple[int, int]:
    """States and distinct (state, successor) pairs, by the simplest search there is: a set
    of canonical states and a queue, nothing of the checker's."""
    init = [model.canonical(s) for s in model.init_states()]
    seen, edges, todo = set(init), set(), deque(init)
    while todo:
        s = todo.popleft()
        for _, t in model.successors(s):
            c = model.canonical(t)
            edges.add((s, c))
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return len(seen), len(edges)


def test_whole_space_export_matches_an_independent_count(tmp_path: Path) -> None:
    cfg = nb.config("tiny", kinds=("reg",), inside_tasks=1, env_steps=2)
    m = CrModel(cfg, VARIANTS["linuxcr"])
    g = export_graph(cfg, VARIANTS["linuxcr"], tmp_path / "s.graphml")
    assert (g.number_of_nodes(), g.number_of_edges()) == plain_bfs(m)
    assert g.number_of_nodes() > 100  # a space worth counting
    assert nx.read_graphml(tmp_path / "s.graphml").number_of_nodes() == g.number_of_nodes()


def test_graph_command(epoll_run, tmp_path: Path) -> None:
    _, folder = epoll_run
    run = CliRunner().invoke
    out = tmp_path / "depth.dot"
    r = run(graph_command, [str(out), "--config", "tiny", "--max-depth", "2"])
    assert r.exit_code == 0, r.output
    assert "state space" in r.output and out.exists()
    trace = folder / "linuxcr__leak_detection_complete.itf.json"
    r = run(graph_command, [str(tmp_path / "n.graphml"), "--trace", str(trace), "--config",
                            "tiny"])  # every action of the trace is enabled in tiny too
    assert r.exit_code == 0 and "trace neighbourhood" in r.output, r.output
    wide = tmp_path / "wide.toml"
    wide.write_text('base = "tiny"\nmax_fds = 4\n')
    r = run(graph_command, [str(tmp_path / "n.dot"), "--trace", str(trace), "--config",
                            str(wide)])
    assert r.exit_code == 2 and "differs" in r.output  # another initial state
    r = run(graph_command, [str(tmp_path / "too.dot"), "--config", "tiny"])
    assert r.exit_code == 2 and "max_states" in r.output
    r = run(graph_command, [str(tmp_path / "x.png")])
    assert r.exit_code == 2 and ".graphml or .dot" in r.output
