"""`crmodel replay` of every trace `crmodel check --config tiny --traces DIR` writes for
linuxcr, criu and fixed: each environment step agrees with the live kernel, the scan at the
checkpoint equals the model's state, and the checkpoint of the real processes ends as the
model's did."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmodel import api, cli
from crmodel.live import driver
from crmodel.live import replay as live_replay

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="the live-kernel driver needs Linux on x86_64",
)

REPLAYED = ["linuxcr", "criu", "fixed"]


@pytest.fixture(scope="module")
def traces(tiny_rows, tmp_path_factory) -> list[Path]:
    """The traces of the replayed variants, written once as `check --traces` writes them."""
    folder = tmp_path_factory.mktemp("traces")
    out = []
    for v in REPLAYED:
        for row in tiny_rows(v).values():
            if row.trace is not None:
                out.append(Path(api.write_trace(row, folder)))
    return sorted(out)


@pytest.mark.variants(REPLAYED)
def test_every_trace_replays_with_full_agreement(traces: list[Path]) -> None:
    assert len(traces) >= 30
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
