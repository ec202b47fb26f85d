"""`crmodel replay` of every trace `crmodel check --config tiny --traces DIR` writes (every
variant, mutants included): each environment step agrees with the live kernel, the scan at
the checkpoint equals the model's state, and the checkpoint of the real processes ends as the
model's did."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmodel import api, cli
from crmodel.live import driver
from crmodel.live import replay as live_replay
from model.variants import VARIANTS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="the live-kernel driver needs Linux on x86_64",
)

REPLAYED = ["linuxcr", "criu", "fixed"]
ALL = list(VARIANTS)


def _write(tiny_rows, folder: Path, variants: list[str]) -> list[Path]:
    out = []
    for v in variants:
        for row in tiny_rows(v).values():
            if row.trace is not None:
                out.append(Path(api.write_trace(row, folder)))
    return sorted(out)


@pytest.fixture(scope="module")
def traces(tiny_rows, tmp_path_factory) -> list[Path]:
    """The traces of linuxcr, criu and fixed, written once as `check --traces` writes them."""
    return _write(tiny_rows, tmp_path_factory.mktemp("traces"), REPLAYED)


@pytest.mark.variants(ALL)
def test_every_trace_replays_with_full_agreement(tiny_rows, tmp_path: Path) -> None:
    traces = _write(tiny_rows, tmp_path, ALL)
    assert len(traces) >= 200
    ends = set()
    restored = 0
    for path in traces:
        rep = live_replay.replay(path)
        assert rep.agree, "\n".join(live_replay.lines(rep))
        assert any(s.action == ("freeze",) for s in rep.steps)
        ends.add((rep.variant, rep.real_end.split(",")[0]))
        restored += any("restored for real" in n for s in rep.steps for n in s.notes)
    # the replays cover success, a leak written silently, and refusal
    assert {("linuxcr", "done"), ("linuxcr", "refused errno 16"), ("fixed", "done"),
            ("fixed", "refused errno 16"), ("criu", "done")} <= ends
    assert restored >= 20  # the restart traces: rebuilt for real, as the model restarts


@pytest.mark.variants(REPLAYED)
def test_replay_sees_a_kernel_that_does_something_else(traces: list[Path],
                                                      monkeypatch) -> None:
    """Teeth: the real processes do one extra dup after each pipe; replay must disagree."""
    perform = driver._Session.perform

    def extra(self, action):
        out = perform(self, action)
        if action[0] == "pipe":
            perform(self, ("dup", action[1], out[1][0]))
        return out

    monkeypatch.setattr(driver._Session, "perform", extra)
    path = next(p for p in traces if p.name == "linuxcr__leak_detection_sound.itf.json")
    rep = live_replay.replay(path)
    assert not rep.agree
    bad = [s for s in rep.steps if not s.agree]
    assert bad[0].action[0] == "pipe"
    assert any("differs from the model's" in n for s in bad for n in s.notes)


@pytest.mark.variants(["linuxcr"])
def test_cli_replay(traces: list[Path]) -> None:
    path = next(p for p in traces if p.name == "linuxcr__leak_detection_sound.itf.json")
    out = CliRunner().invoke(cli.main, ["replay", str(path)])
    assert out.exit_code == 0, out.output
    assert "every step agrees" in out.stdout
    assert "pipe inode not compared: no ref_users" in out.stdout
    doc = json.loads(CliRunner().invoke(cli.main, ["replay", str(path), "--json"]).stdout)
    assert doc["agree"] and doc["verdict"]["verdict"] == "leaks"


def test_bad_traces_are_one_line_and_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "x.itf.json"
    junk.write_text('{"states": [{"tasks": []}], "vars": []}')
    for args in (["replay", str(junk)], ["replay", str(tmp_path / "none.itf.json")]):
        out = CliRunner().invoke(cli.main, args)
        assert out.exit_code == 2
        assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("criu") is not None, reason="a criu binary is installed")
def test_replay_criu_without_criu_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "x.itf.json"
    junk.write_text("{}")
    out = CliRunner().invoke(cli.main, ["replay", "--criu", str(junk)])
    assert out.exit_code == 2
    assert out.stderr.strip() == ("crmodel: no criu binary on PATH: `replay --criu` needs one "
                                  "(this project does not build CRIU)")


# --------------------------------------------------------------------------------------------
# replay --criu: the plumbing through a stand-in criu (tests/data/fake_criu.py), a real one
# where installed
# --------------------------------------------------------------------------------------------

FAKE_CRIU = Path(__file__).parent / "data" / "fake_criu.py"


@pytest.fixture
def fake_criu(tmp_path: Path, monkeypatch) -> Path:
    """A `criu` on PATH that runs the stand-in; returns the file its argv lines go to."""
    from crmodel.live import criu

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "criu"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_CRIU} "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CRIU_LOG", str(tmp_path / "argv.jsonl"))
    monkeypatch.setattr(criu, "FREE_WAIT", 0.05)  # the stand-in leaves the tree running
    return tmp_path / "argv.jsonl"


def _criu(traces: list[Path], name: str, *extra: str) -> Any:
    path = next(p for p in traces if p.name == name)
    return CliRunner().invoke(cli.main, ["replay", "--criu", *extra, str(path)])


@pytest.mark.variants(REPLAYED)
def test_replay_criu_dumps_the_container_and_compares_the_restore(traces: list[Path],
                                                                  fake_criu: Path) -> None:
    """A criu that gives back exactly what it dumped agrees with the `criu` variant on a
    pipe; the commands are the documented ones, on the container's root."""
    out = _criu(traces, "criu__restarted_pipe.itf.json")
    assert out.exit_code == 0, out.output
    assert "CRIU agrees with the criu variant" in out.stdout
    dump, restore = [json.loads(x) for x in fake_criu.read_text().splitlines()]
    assert dump[:2] == ["dump", "-t"] and int(dump[2]) > 1
    assert dump[3] == "-D" and "--shell-job" in dump
    assert restore[:3] == ["restore", "-D", dump[4]]
    assert {"-d", "--restore-sibling", "--shell-job", "--pidfile"} <= set(restore)
    doc = json.loads(_criu(traces, "criu__restarted_pipe.itf.json", "--json").stdout)
    assert doc["criu"]["agree"] and doc["criu"]["model"] == "restores"


@pytest.mark.variants(REPLAYED)
def test_replay_criu_sees_a_restore_unlike_the_variant(traces: list[Path],
                                                       fake_criu: Path) -> None:
    """Teeth: CRIU reopens a pty slave by name (O_LARGEFILE added), as the variant says; a
    criu that gives the slave back as openpty made it differs, exit 1."""
    out = _criu(traces, "criu__restarted_pty.itf.json")
    assert out.exit_code == 1, out.output
    assert "restored state differs" in out.stdout and "DISAGREE" in out.stdout


@pytest.mark.variants(REPLAYED)
def test_replay_criu_refusals(traces: list[Path], fake_criu: Path, monkeypatch) -> None:
    """A dump refused agrees with a variant that refuses (an external unix socket) and not
    with one that dumps; a restore that fails disagrees with one that restores."""
    monkeypatch.setenv("FAKE_CRIU", "refuse")
    out = _criu(traces, "criu__leak_detected.itf.json")
    assert out.exit_code == 0, out.output
    assert "dump refused: (00.001) Error (criu/sk-unix.c:1): External socket is used" \
        in out.stdout
    assert _criu(traces, "criu__restarted_pipe.itf.json").exit_code == 1
    monkeypatch.setenv("FAKE_CRIU", "identity")
    assert _criu(traces, "criu__leak_detected.itf.json").exit_code == 1
    monkeypatch.setenv("FAKE_CRIU", "fail-restore")
    out = _criu(traces, "criu__restarted_pipe.itf.json")
    assert out.exit_code == 1 and "restore failed: " in out.stdout
    monkeypatch.setenv("FAKE_CRIU", "no-pidfile")
    out = _criu(traces, "criu__restarted_pipe.itf.json")
    assert out.exit_code == 2
    assert out.stderr.strip() == "crmodel: criu restore succeeded but wrote no pid file"


def test_criu_dumps_one_tree_only() -> None:
    """`criu dump -t` takes one root: two sibling trees, or an outside task under the root,
    are refused in one line."""
    from crmodel.live import criu
    from crmodel.validate import UsageError

    sess = driver._Session(timeout=10.0)
    try:
        sess.start(1, 8)
        assert sess.perform(("fork", 0, 1)) == ("ok", 1)
        assert sess.perform(("fork", 0, 1)) == ("ok", 2)
        p1, p2 = sess.tasks[1].pid, sess.tasks[2].pid
        assert criu.tree_root([p1]) == p1
        with pytest.raises(UsageError, match="2 process trees"):
            criu.tree_root([p1, p2])
        assert sess.perform(("fork", 1, 0)) == ("ok", 3)
        with pytest.raises(UsageError, match="holds an outside task"):
            criu.tree_root([p1])
    finally:
        sess.close()


@pytest.mark.skipif(shutil.which("criu") is None,
                    reason="no criu binary on PATH (this project does not build CRIU)")
@pytest.mark.variants(REPLAYED)
def test_real_criu_agrees_with_the_criu_variant(traces: list[Path]) -> None:
    for name in ("criu__restarted_pipe.itf.json", "criu__restarted_regular_file.itf.json",
                 "criu__restarted_pty.itf.json", "criu__leak_detected.itf.json"):
        out = _criu(traces, name)
        assert out.exit_code == 0, out.output
