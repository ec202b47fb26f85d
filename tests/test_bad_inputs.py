"""Every user mistake is one line on stderr and exit 2, never a traceback, never a silent run.

Each case is a command line (run in-process through click's runner, in a folder holding the
bad files below) or a Python API call; a few need a real process (a FIFO, /dev/zero)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmodel import api, cli
from crmodel.validate import UsageError
from model.config import PRESETS, Config

# Files a case may name, written in the case's working folder.
FILES: dict[str, bytes | None] = {
    "binary.toml": bytes(range(256)) * 2,
    "nested.toml": b'access_modes = [["O_RDWR"]]\n',
    "base_list.toml": b'base = ["tiny"]\n',
    "deep.toml": b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "no_kinds.toml": b'base = "tiny"\nkinds = []\n',
    "no_modes.toml": b'base = "tiny"\naccess_modes = []\n',
    "bad_syntax.toml": b"max_fds = = 3\n",
    "unknown_key.toml": b"colour = 3\n",
    "float_fds.toml": b"max_fds = 3.0\n",
    "string_fds.toml": b'max_fds = "3"\n',
    "neg_steps.toml": b"env_steps = -1\n",
    "huge_fds.toml": b"max_fds = 100000000000000000\n",
    "bool_tasks.toml": b"inside_tasks = true\n",
    "kinds_str.toml": b'kinds = "reg"\n',
    "kinds_socket.toml": b'kinds = ["socket"]\n',
    "kinds_nested.toml": b'kinds = [["reg"]]\n',
    "flag_unknown.toml": b'open_flags = [["O_SYNC"]]\n',
    "flag_flat.toml": b'open_flags = ["O_APPEND"]\n',
    "flag_int.toml": b"setfl_flags = [[1024]]\n",
    "flag_largefile.toml": b'setfl_flags = [["O_LARGEFILE"]]\n',
    "cloexec_str.toml": b'open_cloexec = "yes"\n',
    "disabled_bad.toml": b'disabled = ["fly"]\n',
    "phase_bad.toml": b'outside_acts_after = ["lunch"]\n',
    "doc_int.toml": b"doc = 3\n",
    "empty_open_flags.toml": b"open_flags = []\n",
    "base_table.toml": b"[base]\nx = 1\n",
    "utf16.toml": "max_fds = 3\n".encode("utf-16"),
    "big.toml": b"# " + b"x" * (2 << 20) + b"\n",
    "notjson.itf.json": b"root:x:0:0:root:/root:/bin/bash\n",
    "list.itf.json": b"[1, 2, 3]\n",
    "nostates.itf.json": b'{"vars": ["tasks"]}\n',
    "badstates.itf.json": b'{"states": [1, 2]}\n',
    "emptystate.itf.json": b'{"states": [{}]}\n',
    "wrongstate.itf.json": b'{"states": [{"tasks": 3, "tables": [], "files": [], "steps": 0,'
    b' "cr": []}]}\n',
    "deep.itf.json": b'{"states": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
    "snapshot.bin": b"\x80\x04not a snapshot at all",
    "afile": b"just a file\n",
    "my.toml": b'base = "tiny"\nenv_steps = 2\nkinds = ["reg", "pipe"]\n',
}
DIRS = ("adir", "adir.toml", "adir.itf.json")

CHECK = ["check", "--config", "tiny", "--variant", "fixed", "--json"]

# (id, command line)
CLI_CASES: list[tuple[str, list[str]]] = [
    # names
    ("unknown variant", ["check", "--variant", "nope"]),
    ("unknown spec", ["check", "--config", "tiny", "--spec", "nope"]),
    ("unknown engine", [*CHECK, "--engine", "smt"]),
    ("unknown preset", ["check", "--config", "huge"]),
    ("unknown option", [*CHECK, "--colour"]),
    ("unknown command", ["frobnicate"]),
    ("empty variant", ["check", "--variant", ""]),
    # config files
    ("missing toml", ["check", "--config", "missing.toml"]),
    ("binary toml", ["check", "--config", "binary.toml"]),
    ("directory toml", ["check", "--config", "adir.toml"]),
    ("directory config", ["check", "--config", "adir"]),
    ("nested access_modes", ["check", "--config", "nested.toml"]),
    ("base as list", ["check", "--config", "base_list.toml"]),
    ("deeply nested array", ["check", "--config", "deep.toml"]),
    ("kinds empty", ["check", "--config", "no_kinds.toml"]),
    ("access_modes empty", ["check", "--config", "no_modes.toml"]),
    ("toml syntax", ["check", "--config", "bad_syntax.toml"]),
    ("unknown key", ["check", "--config", "unknown_key.toml"]),
    ("float max_fds", ["check", "--config", "float_fds.toml"]),
    ("string max_fds", ["check", "--config", "string_fds.toml"]),
    ("negative env_steps", ["check", "--config", "neg_steps.toml"]),
    ("huge max_fds", ["check", "--config", "huge_fds.toml"]),
    ("bool inside_tasks", ["check", "--config", "bool_tasks.toml"]),
    ("kinds a string", ["check", "--config", "kinds_str.toml"]),
    ("kinds socket", ["check", "--config", "kinds_socket.toml"]),
    ("kinds nested", ["check", "--config", "kinds_nested.toml"]),
    ("unknown flag", ["check", "--config", "flag_unknown.toml"]),
    ("flags not a list of lists", ["check", "--config", "flag_flat.toml"]),
    ("flag as a number", ["check", "--config", "flag_int.toml"]),
    ("O_LARGEFILE settable", ["check", "--config", "flag_largefile.toml"]),
    ("open_cloexec a string", ["check", "--config", "cloexec_str.toml"]),
    ("disabled unknown", ["check", "--config", "disabled_bad.toml"]),
    ("phase unknown", ["check", "--config", "phase_bad.toml"]),
    ("doc an int", ["check", "--config", "doc_int.toml"]),
    ("open_flags empty", ["check", "--config", "empty_open_flags.toml"]),
    ("base a table", ["check", "--config", "base_table.toml"]),
    ("utf-16 toml", ["check", "--config", "utf16.toml"]),
    ("oversized toml", ["check", "--config", "big.toml"]),
    ("device config", ["check", "--config", "/dev/null"]),
    # numbers
    ("max-seconds nan", [*CHECK, "--max-seconds", "nan"]),
    ("max-seconds inf", [*CHECK, "--max-seconds", "inf"]),
    ("max-seconds zero", [*CHECK, "--max-seconds", "0"]),
    ("max-seconds negative", [*CHECK, "--max-seconds", "-5"]),
    ("max-seconds text", [*CHECK, "--max-seconds", "soon"]),
    ("save-every nan", [*CHECK, "--save-every", "nan"]),
    ("save-every negative", [*CHECK, "--save-every", "-1"]),
    ("max-states zero", [*CHECK, "--max-states", "0"]),
    ("max-states float", [*CHECK, "--max-states", "1.5"]),
    ("max-depth negative", [*CHECK, "--max-depth", "-1"]),
    ("jobs zero", [*CHECK, "--jobs", "0"]),
    ("jobs huge", [*CHECK, "--jobs", "100000"]),
    ("z3-timeout nan", [*CHECK, "--engine", "z3", "--z3-timeout", "nan"]),
    ("z3-timeout inf", [*CHECK, "--engine", "z3", "--z3-timeout", "inf"]),
    ("z3-timeout zero", [*CHECK, "--engine", "z3", "--z3-timeout", "0"]),
    ("proof-size empty", [*CHECK, "--engine", "z3", "--proof-size", ""]),
    ("proof-size three figures", [*CHECK, "--engine", "z3", "--proof-size", "1,1,2"]),
    ("proof-size zero", [*CHECK, "--engine", "z3", "--proof-size", "0,1,2,2"]),
    ("proof-size huge", [*CHECK, "--engine", "z3", "--proof-size", "9,9,99,99"]),
    ("proof-size six figures", [*CHECK, "--engine", "z3", "--proof-size", "1,1,3,4,2,2"]),
    ("proof-size queue huge", [*CHECK, "--engine", "z3", "--proof-size", "1,1,3,4,99"]),
    ("proof-size queue negative", [*CHECK, "--engine", "z3", "--proof-size", "1,1,3,4,-1"]),
    ("proof-size sockets, 2 files", [*CHECK, "--engine", "z3", "--proof-size", "1,1,2,2,1"]),
    ("proof-size with explicit", [*CHECK, "--proof-size", "1,1,2,2"]),
    ("max-states with z3", [*CHECK, "--engine", "z3", "--max-states", "5"]),
    ("max-memory junk", [*CHECK, "--max-memory", "lots"]),
    ("max-memory zero", [*CHECK, "--max-memory", "0"]),
    ("max-memory percent", [*CHECK, "--max-memory", "150%"]),
    ("max-memory with z3", [*CHECK, "--engine", "z3", "--max-memory", "2G"]),
    ("max-memory nan", [*CHECK, "--max-memory", "nanG"]),
    ("save with a family on a cluster", [*CHECK, "--variant", "linuxcr", "--cluster", "auto",
                                         "--save", "s.snap"]),
    ("workers without cluster", [*CHECK, "--workers", "2"]),
    ("cluster bad address", [*CHECK, "--cluster", "host:99999"]),
    # outputs, checked before any work
    ("save under a file", [*CHECK, "--save", "afile/x.snap"]),
    ("save a directory", [*CHECK, "--save", "adir"]),
    ("save over the config", [*CHECK, "--save", "my.toml"]),
    ("save over a device", [*CHECK, "--save", "/dev/null"]),
    ("save unwritable", [*CHECK, "--save", "/proc/crmodel.snap"]),
    ("traces a file", [*CHECK, "--traces", "afile"]),
    ("traces under a file", [*CHECK, "--traces", "afile/t"]),
    ("traces unwritable", [*CHECK, "--traces", "/proc/crmodel-traces"]),
    ("save with two variants apart", ["check", "--config", "tiny", "--variant", "fixed",
                                      "--variant", "linuxcr", "--per-variant", "--save",
                                      "s.snap"]),
    # snapshots
    ("resume missing", [*CHECK, "--resume", "missing.snap"]),
    ("resume a directory", [*CHECK, "--resume", "adir"]),
    ("resume not a snapshot", [*CHECK, "--resume", "snapshot.bin"]),
    ("resume a toml", [*CHECK, "--resume", "my.toml"]),
    ("resume a device", [*CHECK, "--resume", "/dev/zero"]),
    # traces (ITF)
    ("trace of /etc/passwd", ["trace", "/etc/passwd"]),
    ("trace not json", ["trace", "notjson.itf.json"]),
    ("trace a json list", ["trace", "list.itf.json"]),
    ("trace without states", ["trace", "nostates.itf.json"]),
    ("trace states not records", ["trace", "badstates.itf.json"]),
    ("trace empty state", ["trace", "emptystate.itf.json"]),
    ("trace wrong state", ["trace", "wrongstate.itf.json"]),
    ("trace nested deep", ["trace", "deep.itf.json"]),
    ("trace a directory", ["trace", "adir.itf.json"]),
    ("trace missing", ["trace", "missing.itf.json"]),
    ("graph trace not itf", ["graph", "g.dot", "--trace", "list.itf.json"]),
    ("graph trace wrong state", ["graph", "g.dot", "--trace", "wrongstate.itf.json"]),
    ("graph trace passwd", ["graph", "g.dot", "--trace", "/etc/passwd"]),
    ("graph bad suffix", ["graph", "g.png"]),
    ("graph out under a file", ["graph", "afile/g.dot", "--max-depth", "1"]),
    ("graph out a directory", ["graph", "adir.itf.json/", "--max-depth", "1"]),
    ("graph unknown variant", ["graph", "g.dot", "--variant", "nope"]),
    ("graph bad config", ["graph", "g.dot", "--config", "nested.toml"]),
    ("docs out unwritable", ["docs", "--out", "/proc/crmodel-docs"]),
    ("docs out a file", ["docs", "--out", "afile"]),
]


def _setup(folder: Path) -> None:
    for name, data in FILES.items():
        if data is not None:
            (folder / name).write_bytes(data)
    for d in DIRS:
        (folder / d).mkdir()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad_inputs")
    _setup(d)
    return d


def _one_line_exit_2(code: int, out: str, err: str, args: list[str]) -> None:
    assert code == 2, f"{args}: exit {code}\nstdout: {out[-500:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"{args}: {len(lines)} lines on stderr:\n{err[-2000:]}"
    assert lines[0].startswith("crmodel: "), lines[0]
    if "--json" in args:
        assert out == "", f"stdout under --json: {out[:300]}"


@pytest.mark.parametrize("args", [a for _, a in CLI_CASES], ids=[i for i, _ in CLI_CASES])
def test_cli_bad_input(args: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    before = sorted(os.listdir(workdir))
    runner = CliRunner()
    r = runner.invoke(cli.main, args, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"{args}: {type(r.exception).__name__}: {r.exception}")
    _one_line_exit_2(r.exit_code, r.stdout, r.stderr, args)
    # Refused before any work: nothing written, the run's own config intact.
    assert sorted(os.listdir(workdir)) == before
    assert (workdir / "my.toml").read_bytes() == FILES["my.toml"]


def test_case_list_is_long_and_distinct() -> None:
    ids = [i for i, _ in CLI_CASES]
    assert len(set(ids)) == len(ids)
    assert len({tuple(a) for _, a in CLI_CASES}) == len(CLI_CASES)
    assert len(CLI_CASES) + len(API_CASES) >= 60


# --- a real process: files that must not be read --------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "fifo_trace"])
def test_special_files_refused_without_reading(kind: str, tmp_path: Path) -> None:
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    args = {"fifo": ["check", "--config", str(fifo)],
            "dev_zero": ["check", "--config", "/dev/zero"],
            "fifo_trace": ["trace", str(fifo)]}[kind]
    p = subprocess.Popen([sys.executable, "-m", "crmodel", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    _one_line_exit_2(p.returncode, out, err, args)
    assert "not a regular file" in err


# --- the Python API -------------------------------------------------------------------------

API_CASES: list[tuple[str, Callable[[], object]]] = [
    ("variants a string", lambda: api.check("tiny", variants="linuxcr")),
    ("specs a string", lambda: api.check("tiny", ["fixed"], specs="restart_succeeds")),
    ("variants not names", lambda: api.check("tiny", variants=[3])),
    ("Config max_fds negative", lambda: api.check(Config(max_fds=-3), ["fixed"])),
    ("Config env_steps negative", lambda: api.check(Config(env_steps=-1), ["fixed"])),
    ("Config offsets zero", lambda: api.check(Config(offsets=0), ["fixed"])),
    ("Config kinds socket", lambda: api.check(Config(kinds=("socket",)), ["fixed"])),
    ("Config kinds a string", lambda: api.check(Config(kinds="reg"), ["fixed"])),  # type: ignore
    ("Config access mode 3", lambda: api.check(Config(access_modes=(3,)), ["fixed"])),
    ("Config flags bit", lambda: api.check(Config(open_flags=(1 << 40,)), ["fixed"])),
    ("Config cloexec int", lambda: api.check(Config(open_cloexec=1), ["fixed"])),  # type: ignore
    ("config an int", lambda: api.check(3, ["fixed"])),  # type: ignore[arg-type]
    ("max_seconds nan", lambda: api.check("tiny", ["fixed"], max_seconds=float("nan"))),
    ("max_states bool", lambda: api.check("tiny", ["fixed"], max_states=True)),
    ("engine unknown", lambda: api.check("tiny", ["fixed"], engine="tlc")),
    ("model unknown variant", lambda: api.model("tiny", "nope")),
    ("model bad config", lambda: api.model(Config(paths=0), "fixed")),
]


@pytest.mark.parametrize("call", [c for _, c in API_CASES], ids=[i for i, _ in API_CASES])
def test_api_bad_input(call: Callable[[], object]) -> None:
    with pytest.raises(UsageError) as e:
        call()
    assert "\n" not in str(e.value)


def test_lists_in_a_python_config_are_accepted() -> None:
    cfg = api.config(Config(name="mine", kinds=["reg", "pipe"]))  # type: ignore[arg-type]
    assert cfg.kinds == ("reg", "pipe") and hash(cfg)
    assert api.config("tiny") is PRESETS["tiny"]


def test_usage_error_is_raised_for_config_errors_too() -> None:
    with pytest.raises(UsageError, match="max_fds"):
        api.config(Config(max_fds=0))
    with pytest.raises(ValueError):  # still a ValueError for older callers
        api.config("no-such-preset")
