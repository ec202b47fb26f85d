"""--max-memory: a run stops before the machine runs out, with the figures so far and a
snapshot when asked; a resumed run then ends as an unbounded one would."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from checker import explore
from checker.examples import Counters
from checker.explicit import resident_bytes
from crmodel import cli
from crmodel.validate import default_memory, memory


def test_memory_bound_stops_with_figures_and_snapshot(tmp_path: Path) -> None:
    m = Counters(14)
    props = m.properties()
    whole = explore(m, props, stop_when_decided=False)
    snap = tmp_path / "s.snap"
    ex = explore(m, props, max_memory=1, save=snap, stop_when_decided=False)
    assert ex.stopped_by == "max_memory" and not ex.complete
    assert 0 < ex.states < whole.states
    assert all(r.verdict == "unknown" and "max_memory=1 bytes" in r.reason
               for r in ex.results if r.verdict not in ("violated", "reached"))
    assert ex.snapshot == str(snap)
    resumed = explore(m, props, resume=snap, stop_when_decided=False)
    assert (resumed.states, resumed.transitions, resumed.complete) == (
        whole.states, whole.transitions, True)


def test_a_bound_above_the_process_does_not_stop_it() -> None:
    m = Counters(8)
    ex = explore(m, m.properties(), max_memory=resident_bytes() + (1 << 30),
                 stop_when_decided=False)
    assert ex.complete and ex.stopped_by is None


def test_sizes_and_default() -> None:
    assert memory("m", "2G") == 2 << 30 and memory("m", "500M") == 500 << 20
    assert memory("m", 4096) == 4096 and memory("m", "1.5k") == 1536
    assert 0 < memory("m", "50%") < 2 * default_memory()
    assert resident_bytes() < default_memory()


def test_cli_reports_the_memory_stop(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('base = "tiny"\nenv_steps = 2\nkinds = ["reg", "pipe"]\n')
    r = CliRunner().invoke(cli.main, ["check", "--config", str(cfg), "--variant", "fixed",
                                      "--max-memory", "1"])
    assert r.exit_code == 1, r.output  # undecided verdicts differ from the expectations
    assert "stopped by max_memory" in r.stdout
