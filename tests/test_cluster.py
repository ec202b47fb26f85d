"""The engines on Ray (`--cluster`): the same answers as one process, on a private local
cluster of 2 workers started once for this module (in the xdist group that holds the shared
`tiny` explorations, which it compares with)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from checker import symbolic
from checker.distributed import explore_cluster, stable_fingerprint
from crmodel import api
from model.symbolic import Sizes
from model.variants import VARIANTS
from specs.lemmas import proof_model

# The [cluster] extra (`make test` installs it). Ray is imported by the session, not here:
# a private cluster must be set to loopback before Ray is first imported.
pytestmark = [pytest.mark.xdist_group("tiny"),
              pytest.mark.skipif(find_spec("ray") is None, reason="Ray is not installed")]
ROOT = Path(__file__).resolve().parent.parent
SMALL = Sizes(inside=1, outside=1, fds=2, files=2)


@pytest.fixture(scope="module")
def cluster():
    """A private Ray of 2 CPUs on loopback, shut down after the module; its processes gone."""
    from checker.cluster import session

    with session("auto", 2) as r:
        procs = [p.process.pid for ps in r._private.worker._global_node.all_processes.values()
                 for p in ps]
        yield r
    assert not r.is_initialized()
    alive = [pid for pid in procs if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert not alive, f"Ray processes left running: {alive}"


def _strip(obs: list[symbolic.ObligationResult]) -> list[tuple]:
    # Not the counterexample to induction itself: z3 may pick another pre/post pair for the
    # same failed step in another process, or even in the same one the second time.
    return [(o.obligation.id, o.status, o.detail, o.cti is None) for o in obs]


@pytest.mark.parametrize("variant", ["fixed", "linuxcr"])
def test_z3_obligations_on_the_cluster_as_in_one_process(cluster, variant: str) -> None:
    """Each obligation a Ray task: the same statuses and details, in the same order, as one
    process, a counterexample to induction where a step fails; each obligation reported
    once, with its worker (on loopback: the private cluster)."""
    from checker.cluster import prove_cluster

    args = (SMALL, VARIANTS[variant])
    one = symbolic.prove_parallel(proof_model, args, "leak_detection_sound", 60, jobs=1)
    seen: list[str] = []
    on = prove_cluster(cluster, proof_model, args, "leak_detection_sound", 60,
                       on_result=lambda r, d, t: seen.append(symbolic.progress_text(r, d, t)))
    assert on[0] == one[0] == (variant == "fixed")
    assert _strip(on[1]) == _strip(one[1])
    assert len(seen) == len(one[1]) and all(" on 127.0.0.1/" in line for line in seen)
    if variant == "linuxcr":
        assert on[1][-1].cti is not None and on[1][-1].cti.model is not None


def test_z3_check_on_the_cluster_shares_the_proof_cache(cluster, tmp_path: Path) -> None:
    """`check --engine z3 --cluster`: proved as with --jobs; a second run finds every query
    the workers proved in the driver's cache."""
    from crmodel import z3run

    kw = dict(size=SMALL, timeout=60, cache_dir=tmp_path / "z3")
    first = z3run.check(api.config("tiny"), ["fixed"], ["leak_detection_sound"],
                        cluster_address="auto", **kw).rows[0]
    again = z3run.check(api.config("tiny"), ["fixed"], ["leak_detection_sound"],
                        cluster_address="auto", **kw).rows[0]
    local = z3run.check(api.config("tiny"), ["fixed"], ["leak_detection_sound"], jobs=1,
                        size=SMALL, timeout=60, cache_dir=None).rows[0]
    assert first.verdict == again.verdict == local.verdict == "proved"
    hits = [_cache_hits(r.reason) for r in (first, again)]
    assert hits[0][0] < hits[0][1] and hits[1][0] == hits[1][1] > 0, hits
    assert any((tmp_path / "z3").rglob("*"))


def _cache_hits(reason: str) -> tuple[int, int]:
    """(queries answered from the cache, queries) from a proof's reason."""
    m = re.search(r"(\d+) of (\d+) queries were formulas already proved", reason)
    return (int(m[1]), int(m[2])) if m else (0, 1)


@pytest.mark.variants(["linuxcr", "fixed"])
@pytest.mark.parametrize("variant", ["linuxcr", "fixed"])
def test_explicit_search_on_two_workers_as_in_one_process(cluster, tiny_exploration,
                                                          variant: str) -> None:
    """Partitioned among 2 workers: the same distinct states per level, transitions,
    coverage, verdicts, figures at each verdict, and the same traces, step by step."""
    one = tiny_exploration(variant)
    m = api.model("tiny", variant)
    two = explore_cluster(cluster, m, api.properties(list(api.SPECS)), workers=2)
    assert (two.states, two.transitions, two.levels, two.depth, two.complete) == \
        (one.states, one.transitions, one.levels, one.depth, one.complete)
    assert two.coverage == one.coverage and two.never_fired == one.never_fired
    for a, b in zip(one.results, two.results, strict=True):
        assert (b.property, b.verdict, b.states, b.transitions, b.depth) == \
            (a.property, a.verdict, a.states, a.transitions, a.depth)
        assert b.trace == a.trace, b.property
    assert any(r.trace is not None for r in two.results)
    assert two.bytes_exchanged > 0


FAMILY = ["linuxcr", "fixed", "criu", "subtree"]


def _answers(ex) -> tuple:
    return (ex.states, ex.transitions, ex.levels, ex.depth, ex.complete, ex.stopped_by,
            ex.coverage, ex.never_fired,
            [(r.property, r.verdict, r.states, r.transitions, r.depth, r.trace)
             for r in ex.results])


def test_a_family_on_two_workers_as_in_one_process(cluster) -> None:
    """Several variants as one family, its entries partitioned among 2 workers: each
    variant's states per level, transitions, coverage, verdicts, figures and traces are
    those of the single-process family search, to depth 6 (deeper states exist: the last
    level is probed); `crmodel check` with several variants on the cluster gives the same
    rows as one process."""
    from checker.distributed import explore_cluster_family
    from checker.family import explore_family
    from model.system import CrFamily

    fam = CrFamily(api.config("tiny"), [VARIANTS[v] for v in FAMILY])
    props = api.properties(list(api.SPECS))
    one = explore_family(fam, props, max_depth=6, stop_when_decided=False)
    two = explore_cluster_family(cluster, fam, props, workers=2, max_depth=6)
    assert [_answers(e) for e in two] == [_answers(e) for e in one]
    assert sum(r.trace is not None for e in two for r in e.results) > 20
    assert {e.stopped_by for e in two} == {"max_depth"}
    rows = [[(r.variant, r.spec, r.verdict, r.states, r.depth, r.reason) for r in
             api.check("tiny", FAMILY, max_depth=4, **kw).rows]
            for kw in ({"jobs": 1}, {"cluster": "auto", "workers": 2})]
    assert rows[0] == rows[1]


def test_a_family_on_two_workers_keeps_each_members_order(cluster) -> None:
    """Two graphs where member B reaches 3 only after 4: B's counterexample is its own
    (0, 1, 4, 8), as in its own run, although A found 3 first, on another worker or not."""
    import test_family
    from ray import cloudpickle
    from test_family import BAD, GRAPH_A, GRAPH_B

    from checker import explore
    from checker.distributed import explore_cluster_family
    from checker.family import ModelFamily

    cloudpickle.register_pickle_by_value(test_family)  # the workers cannot import tests/
    solo = [explore(g, BAD, stop_when_decided=False) for g in (GRAPH_A, GRAPH_B)]
    for n in (1, 2):
        two = explore_cluster_family(cluster, ModelFamily([GRAPH_A, GRAPH_B]), BAD, workers=n)
        assert [_answers(e)[:5] + _answers(e)[-1:] for e in two] == \
            [_answers(e)[:5] + _answers(e)[-1:] for e in solo]
        assert [s.state for s in two[1].results[0].trace.steps] == [0, 1, 4, 8]


def test_a_worker_killed_mid_run_stops_with_the_figures_so_far(cluster) -> None:
    """A worker's process killed before depth 3 is expanded: the run stops, undecided
    properties `unknown`, the reason names the worker and the levels completed."""

    def kill(level: int, actors: list) -> None:
        if level == 3:
            os.kill(cluster.get(actors[1].pid.remote()), signal.SIGKILL)

    m = api.model("tiny", "fixed")
    ex = explore_cluster(cluster, m, api.properties(["leak_detection_sound"]), workers=2,
                         on_level=kill)
    assert ex.stopped_by == "worker_lost" and not ex.complete
    [r] = ex.results
    assert r.verdict == "unknown"
    assert "worker 1 lost while depth 3 was expanded" in r.reason
    assert f"{ex.states:,} states" in r.reason and len(ex.levels) == 4
    # the cluster is still usable: the lost worker was one of this run's actors
    again = explore_cluster(cluster, m, api.properties(["leak_detection_sound"]), workers=2,
                            max_depth=2)
    assert again.levels == ex.levels[:3]


def test_a_worker_lost_while_saving_is_replaced_from_the_last_snapshot(cluster, tmp_path: Path
                                                                      ) -> None:
    """Saving at every level boundary, a worker killed before depth 3 is replaced: new
    workers go on from the snapshot, to the answers of one uninterrupted process. Killed
    again every time, the search stops after RETRIES new starts, as without a snapshot."""
    import checker
    from checker.distributed import RETRIES

    kills: list[int] = []

    def kill(level: int, actors: list, always: bool = False) -> None:
        if level == 3 and (always or not kills):
            kills.append(level)
            os.kill(cluster.get(actors[1].pid.remote()), signal.SIGKILL)

    m = api.model("tiny", "fixed")
    props = api.properties(list(api.SPECS))
    ex = explore_cluster(cluster, m, props, workers=2, max_depth=6, on_level=kill,
                         save=tmp_path / "a.snap", save_every=0)
    one = checker.explore(m, props, max_depth=6, stop_when_decided=False)
    assert kills == [3] and ex.stopped_by == one.stopped_by == "max_depth"
    assert (ex.states, ex.transitions, ex.levels, ex.coverage) == \
        (one.states, one.transitions, one.levels, one.coverage)
    for a, b in zip(one.results, ex.results, strict=True):
        assert (b.verdict, b.states, b.transitions, b.depth, b.trace) == \
            (a.verdict, a.states, a.transitions, a.depth, a.trace), a.property
    kills.clear()
    lost = explore_cluster(cluster, m, props, workers=2, max_depth=6, save_every=0,
                           on_level=lambda lv, a: kill(lv, a, always=True),
                           save=tmp_path / "b.snap")
    assert lost.stopped_by == "worker_lost" and len(kills) == RETRIES + 1
    assert "worker 1 lost while depth 3 was expanded" in lost.results[0].reason


def test_stable_fingerprint_is_a_function_of_the_value() -> None:
    """Equal values fingerprint alike (sets in any order, True as 1, NamedTuples as tuples),
    in any process whatever its hash seed; different values differ."""
    a = (1, frozenset({(2, "x"), (3, "y"), (1 << 70, "z")}), True)
    b = (1, frozenset([(1 << 70, "z"), (3, "y"), (2, "x")]), 1)
    assert stable_fingerprint(a) == stable_fingerprint(b)
    assert stable_fingerprint((1, 2)) != stable_fingerprint((2, 1))
    assert stable_fingerprint((1, (2,))) != stable_fingerprint(((1,), 2))
    code = ("from checker.distributed import stable_fingerprint as f; "
            "print(f((1, frozenset({(2, 'x'), (3, 'y'), (1 << 70, 'z')}), True)))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert int(out.stdout) == stable_fingerprint(a)


def _crmodel(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}import sys; from crmodel.cli import main; sys.argv[0] = 'crmodel'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("args,pre,message", [
    (["--cluster", "no such head"], "", "--cluster wants 'auto' or HOST:PORT"),
    (["--cluster", "127.0.0.1:1"], "", "no Ray head at 127.0.0.1:1"),
    (["--cluster", "auto"], "sys.modules['ray'] = None; ", "--cluster needs Ray"),
    (["--workers", "2"], "", "--workers needs --cluster"),
])
def test_bad_cluster_input_is_one_line_exit_2(args: list[str], pre: str, message: str
                                              ) -> None:
    p = _crmodel("check", "--config", "tiny", "--variant", "linuxcr", *args,
                 pre=f"import sys; {pre}" if pre else "")
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and message in p.stderr, p.stderr


def test_check_command_on_a_cluster_gives_the_rows_of_one_process() -> None:
    """`crmodel check --cluster auto --workers 2 --json` (its own private Ray, started and
    stopped by the command) prints the same rows as one process, engine aside."""
    import json

    common = ["check", "--config", "tiny", "--variant", "linuxcr", "--max-depth", "4",
              "--json"]
    one = _crmodel(*common, "--jobs", "1")
    two = _crmodel(*common, "--cluster", "auto", "--workers", "2")
    assert one.returncode == two.returncode, two.stderr
    keep = ("variant", "spec", "verdict", "expected", "states", "transitions", "depth",
            "trace_length", "reason")
    rows = [[{k: r[k] for k in keep} for r in json.loads(p.stdout)["results"]]
            for p in (one, two)]
    assert rows[0] == rows[1]


def test_snapshots_at_level_boundaries_resume_with_the_same_workers(cluster, tmp_path: Path
                                                                     ) -> None:
    """Saved at depth 3, resumed to depth 7: the figures, verdicts and traces of one
    uninterrupted single-process run to depth 7 (a witness at depth 4 and a violation at
    depth 7, both traced back through the levels the snapshot holds). Another worker
    count, or a snapshot whose parent pointer leaves the level before (checksum
    recomputed), is refused in one line."""
    import checker
    from checker.snapshot import SnapshotMismatch, read_header, read_snapshot, write_snapshot

    m = api.model("tiny", "linuxcr")
    props = api.properties(list(api.SPECS))
    snap = tmp_path / "run.snap"
    first = explore_cluster(cluster, m, props, workers=2, max_depth=3, save=snap)
    assert first.stopped_by == "max_depth" and snap.exists()
    resumed = explore_cluster(cluster, m, props, workers=2, max_depth=7, resume=snap)
    one = checker.explore(m, props, max_depth=7, stop_when_decided=False)
    assert (resumed.states, resumed.transitions, resumed.levels, resumed.coverage) == \
        (one.states, one.transitions, one.levels, one.coverage)
    for a, b in zip(one.results, resumed.results, strict=True):
        assert (b.verdict, b.states, b.transitions, b.depth, b.trace) == \
            (a.verdict, a.states, a.transitions, a.depth, a.trace), a.property
    assert {(r.verdict, r.depth) for r in resumed.results if r.trace is not None} == {
        ("reached", 4), ("violated", 7)}
    with pytest.raises(SnapshotMismatch, match="made with 2 workers, not 1"):
        explore_cluster(cluster, m, props, workers=1, resume=snap)
    alone = explore_cluster(cluster, m, props, workers=1, max_depth=4)  # one partition
    assert alone.levels == one.levels[:5] and alone.coverage != {}
    head = read_header(snap)
    _, data = read_snapshot(snap, head["salt"], ("model",))
    w = next(i for i, p in enumerate(data["parts"]) if len(p["par_p"][2]))
    data["parts"][w]["par_p"][2][0] = 10**6
    bad = tmp_path / "bad.snap"
    write_snapshot(bad, {k: v for k, v in head.items()
                         if k not in ("format", "version", "hash", "payload_bytes",
                                      "payload_sha256")}, data)
    with pytest.raises(SnapshotMismatch, match="parent out of range"):
        explore_cluster(cluster, m, props, workers=2, resume=bad)
