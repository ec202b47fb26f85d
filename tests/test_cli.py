"""The `crmodel` command as a user and a CI script meet it: exit codes, one-line errors,
the JSON contract, traces on disk, and a run killed midway then resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CRMODEL = [sys.executable, "-m", "crmodel"]
SMALL = """base = "tiny"
env_steps = 2
kinds = ["reg", "pipe"]
"""


def crmodel(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CRMODEL, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "--variant", "nope"], "unknown variant 'nope'"),
        (["check", "--spec", "nope"], "unknown spec 'nope'"),
        (["check", "--config", "nope"], "not a preset"),
        (["check", "--config", "missing.toml"], "not found"),
        (["check", "--engine", "nope"], "'nope' is not one of"),
        (["check", "--engine", "z3", "--spec", "restart_succeeds"], "does not encode"),
        (["check", "--engine", "z3", "--variant", "criu"], "does not encode variant 'criu'"),
        (["check", "--engine", "z3", "--proof-size", "1,2"], "INSIDE,OUTSIDE,FDS,FILES"),
        (["check", "--engine", "z3", "--proof-size", "0,1,1,1"], "at least 1"),
        (["check", "--engine", "z3", "--max-states", "5"], "belong to the explicit engine"),
        (["check", "--proof-size", "2,2,8,8"], "belong to --engine z3"),
        (["check", "--max-states", "0"], "--max-states"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    r = crmodel(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_toml_values_name_the_key(tmp_path: Path) -> None:
    for text, needle in [("max_fds = 99", "max_fds"), ("kinds = [\"socket\"]", "kinds"),
                         ("colour = 1", "unknown key 'colour'"), ("max_fds = ", "not valid TOML"),
                         ("open_flags = [[\"O_BOGUS\"]]", "O_BOGUS")]:
        p = tmp_path / "c.toml"
        p.write_text(text)
        r = crmodel("check", "--config", str(p))
        assert r.returncode == 2 and needle in r.stderr, (text, r.stderr)


def test_json_contract_and_traces(tmp_path: Path, small: Path) -> None:
    r = crmodel("check", "--config", str(small), "--variant", "linuxcr", "--variant", "fixed",
                "--json", "--traces", str(tmp_path / "tr"))
    data = json.loads(r.stdout)
    assert set(data) == {"config", "results"}
    keys = {"variant", "spec", "engine", "verdict", "expected", "states", "transitions",
            "depth", "seconds", "trace_length", "trace"}
    for res in data["results"]:
        assert keys <= set(res)
        assert res["verdict"] in ("holds", "violated", "proved", "unknown")
        if res["trace"] is not None:
            assert Path(res["trace"]).exists() and res["trace"].endswith(".itf.json")
            itf = json.loads(Path(res["trace"]).read_text())
            assert len(itf["states"]) == res["trace_length"] + 1
    # this config is too small for some witnesses: they are out of reach, not differences
    far = [x for x in data["results"] if x["out_of_reach"]]
    assert far and all(x["verdict"] != x["expected"] for x in far)
    mism = [x for x in data["results"] if x["verdict"] != x["expected"] and not x["out_of_reach"]]
    assert (r.returncode == 1) == bool(mism) and r.returncode in (0, 1)


def test_listings_json() -> None:
    for cmd in ("specs", "variants", "configs"):
        items = json.loads(crmodel(cmd, "--json").stdout)
        assert items and all("name" in i and "doc" in i for i in items)
    kinds = {v["kind"] for v in json.loads(crmodel("variants", "--json").stdout)}
    assert kinds == {"baseline", "fixed", "policy", "mutant"}


def test_killed_run_resumes_to_identical_counts(tmp_path: Path, kill_after_snapshot) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('base = "tiny"\nenv_steps = 3\n')
    common = ["check", "--config", str(cfg), "--variant", "linuxcr", "--json", "--jobs", "1"]
    full = json.loads(crmodel(*common).stdout)["results"]
    snap = tmp_path / "run.snapshot"
    kill_after_snapshot([*CRMODEL, *common, "--save", str(snap), "--save-every", "0"], snap)
    resumed = json.loads(crmodel(*common, "--resume", str(snap)).stdout)["results"]

    def essentials(rows: list[dict]) -> list[tuple]:
        return [(r["spec"], r["verdict"], r["states"], r["transitions"], r["depth"],
                 r["trace_length"]) for r in rows]

    assert essentials(resumed) == essentials(full)


def test_snapshot_of_another_config_is_refused(tmp_path: Path, small: Path) -> None:
    snap = tmp_path / "s.snapshot"
    crmodel("check", "--config", str(small), "--variant", "linuxcr", "--save", str(snap),
            "--json")
    r = crmodel("check", "--config", "tiny", "--variant", "linuxcr", "--resume", str(snap))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
