"""Ctrl-C and SIGTERM, sent to a real `crmodel` process: the run stops at the next check,
prints the figures so far, writes a final snapshot when saving, and exits 130 / 143; a
Ctrl-C while the program is still starting is one line, never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checker.snapshot import read_header

CRMODEL = [sys.executable, "-m", "crmodel"]
ROOT = Path(__file__).resolve().parent.parent
# The default preset runs for minutes: a signal always lands mid-run.
LONG = ["check", "--config", "default", "--variant", "linuxcr", "--jobs", "1"]


def _finish(p: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """Wait for `p` (bounded); kill it if it does not end, so no test leaves it behind."""
    try:
        return p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def _wait_for(path: Path, p: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    if not path.exists():
        _finish(p, 1)
        pytest.fail("the run wrote no snapshot before the deadline")


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_signal_stops_with_figures_and_snapshot(sig: int, code: int, word: str,
                                                tmp_path: Path) -> None:
    snap = tmp_path / "run.snap"
    p = subprocess.Popen([*CRMODEL, *LONG, "--json", "--save", str(snap), "--save-every", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(snap, p)
    first = snap.stat().st_mtime_ns
    time.sleep(0.5)
    p.send_signal(sig)
    out, err = _finish(p)
    assert p.returncode == code, err[-2000:]
    assert "Traceback" not in err
    rows = json.loads(out)["results"]
    assert rows and all(r["states"] > 0 for r in rows)
    undecided = [r for r in rows if r["verdict"] == "unknown"]
    assert undecided and all(word in r["reason"] for r in undecided)
    # The final snapshot, written after the signal, is a readable snapshot of this run.
    assert snap.stat().st_mtime_ns >= first
    assert read_header(snap)["format"] == "checker-explicit-snapshot"
    assert [q.name for q in tmp_path.iterdir()] == ["run.snap"]  # no temporary left


def test_ctrl_c_without_save_prints_the_table(tmp_path: Path) -> None:
    log = tmp_path / "stderr"
    with open(log, "w") as errf:
        p = subprocess.Popen([*CRMODEL, *LONG, "--max-seconds", "600"], stdout=subprocess.PIPE,
                             stderr=errf, text=True)
        deadline = time.monotonic() + 120
        # The progress line on stderr says the exploration runs.
        while time.monotonic() < deadline and p.poll() is None and "states" not in (
                log.read_text()):
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, _ = _finish(p)
    err = log.read_text()
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "stopped by interrupt" in out and "crmodel check, config default" in out


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.2])
def test_ctrl_c_during_start_up(delay: float) -> None:
    """While Python imports the checker (seconds on a loaded machine) or builds the model."""
    p = subprocess.Popen([*CRMODEL, *LONG, "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = _finish(p)
    if "Traceback" in err:
        # Only the interpreter's own start-up (site with its .pth files, runpy: the first
        # tenth of a second or so) runs before any code of ours could catch it.
        frames = [ln for ln in err.splitlines() if ln.lstrip().startswith("File ")]
        assert frames and frames[0].lstrip().startswith('File "<frozen '), err[-3000:]
        ours = [f'"{ROOT / d}/' for d in ("crmodel", "checker", "model", "specs")]
        assert not [ln for ln in frames if any(o in ln for o in ours)], err[-3000:]
        return
    # Before the interpreter installs its handler the default action ends the process.
    assert p.returncode in (130, -signal.SIGINT), err
    if p.returncode == 130 and not out:  # stopped before the exploration began
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "interrupted" in lines[0], err
    elif p.returncode == 130:  # or in it: the figures so far
        assert json.loads(out)["results"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_a_parallel_run_reaches_its_workers(sig: int, code: int,
                                                      tmp_path: Path) -> None:
    """Variants explored in worker processes: the signal is passed on, every worker stops
    with its figures, none is left running."""
    log = tmp_path / "stderr"
    with open(log, "w") as errf:
        p = subprocess.Popen([*CRMODEL, "check", "--config", "default", "--variant", "linuxcr",
                              "--variant", "fixed", "--jobs", "2"], stdout=subprocess.PIPE,
                             stderr=errf, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None and log.read_text().count(
                "states") < 2:  # both workers report progress
            time.sleep(0.1)
        workers = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        p.send_signal(sig)
        out, _ = _finish(p)
    assert p.returncode == code, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()
    assert out.count("stopped by") == 2, out
    assert workers and _gone(workers)


def _gone(pids: list[str], seconds: float = 10) -> bool:
    """Whether the processes end within `seconds` (a killed process takes a moment)."""
    deadline = time.monotonic() + seconds
    while [w for w in pids if _running(w)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return not [w for w in pids if _running(w)]


def _running(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_second_sigterm_to_a_parallel_run_ends_it_at_once(tmp_path: Path) -> None:
    """A second signal does not wait for the workers' figures, and leaves none behind."""
    log = tmp_path / "stderr"
    with open(log, "w") as errf:
        p = subprocess.Popen([*CRMODEL, "check", "--config", "default", "--variant", "linuxcr",
                              "--variant", "fixed", "--jobs", "2"], stdout=subprocess.PIPE,
                             stderr=errf, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None and log.read_text().count(
                "states") < 2:
            time.sleep(0.1)
        workers = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        p.send_signal(signal.SIGTERM)
        time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        _finish(p)
    err = log.read_text()
    assert p.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert workers and _gone(workers)
