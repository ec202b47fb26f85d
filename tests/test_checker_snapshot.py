"""Save / interrupt / resume: a resumed run ends exactly like an uninterrupted one."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

import checker.snapshot
from checker import Exploration, SnapshotMismatch, explore, invariant
from checker.examples import BuggyMutex, Counters, Procs
from checker.snapshot import MAGIC


def summary(ex: Exploration) -> tuple:
    """Everything that must not depend on interruptions (not the timings)."""
    return (
        ex.states,
        ex.transitions,
        ex.depth,
        ex.levels,
        ex.coverage,
        ex.never_fired,
        ex.complete,
        [(r.property, r.verdict, r.states, r.transitions, r.depth, r.trace) for r in ex.results],
    )


class Interrupting:
    """Wraps a model and raises KeyboardInterrupt at the `at`-th successors call, possibly
    after yielding some successors (a cut in the middle of a parent)."""

    def __init__(self, inner: Any, at: int, after_yielding: int = 0) -> None:
        self.inner, self.at, self.after_yielding = inner, at, after_yielding
        self.calls = 0

    def init_states(self) -> Any:
        return self.inner.init_states()

    def successors(self, s: Any) -> Any:
        self.calls += 1
        if self.calls != self.at:
            yield from self.inner.successors(s)
            return
        for i, x in enumerate(self.inner.successors(s)):
            if i == self.after_yielding:
                break
            yield x
        raise KeyboardInterrupt

    def canonical(self, s: Any) -> Any:
        return self.inner.canonical(s)

    def __getattr__(self, name: str) -> Any:
        # The optional methods are the inner model's (or missing like them).
        return getattr(self.inner, name)


class InterruptingCanonical(Interrupting):
    """Raises at the `at`-th canonical() call instead: in the middle of a parent's successors,
    after some of its children were recorded (the engine must roll them back)."""

    def successors(self, s: Any) -> Any:
        return self.inner.successors(s)

    def canonical(self, s: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner.canonical(s)


def check_consistent(path: Path) -> None:
    """A snapshot taken at an interruption is as at a parent boundary."""
    _, doc = checker.snapshot.read_snapshot(path, _salt(path), ("checker",))
    pars, acts = doc["levels_par"], doc["levels_act"]
    assert [len(p) for p in pars] == [len(a) for a in acts]
    assert len(doc["seen"]) == sum(len(p) for p in pars)
    assert len(doc["frontier"]) == len(pars[doc["level"]]) - doc["pos"]
    if len(pars) > doc["level"] + 1:
        nxt = pars[doc["level"] + 1]
        assert len(nxt) == len(doc["next_states"])
        assert all(pi < doc["pos"] for pi in nxt)  # only parents before pos have children


def run_in_pieces(
    make: Any, props: list, path: Path, pieces: list[int], cut: int, wrapper: Any = Interrupting
) -> Exploration:
    """Interrupt at each call count in `pieces`, resuming each time."""
    resume = None
    for at in pieces:
        ex = explore(
            wrapper(make(), at, cut),
            props,
            save=path,
            resume=resume,
            stop_when_decided=False,
        )
        assert ex.stopped_by == "interrupt" and not ex.complete
        assert all(r.verdict in ("unknown", "violated", "reached") for r in ex.results)
        assert ex.snapshot == str(path)
        check_consistent(path)
        resume = path
    return explore(make(), props, save=path, resume=path, stop_when_decided=False)


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_interrupt_and_resume_gives_the_same_run(tmp_path: Path, cut: int) -> None:
    m = BuggyMutex(3)
    props = m.properties()
    whole = explore(m, props, stop_when_decided=False)
    resumed = run_in_pieces(lambda: BuggyMutex(3), props, tmp_path / "s.pkl", [5, 9, 3, 6], cut)
    assert resumed.complete
    assert summary(resumed) == summary(whole)


def test_interrupt_between_children_and_resume(tmp_path: Path) -> None:
    m = BuggyMutex(4)
    props = m.properties()
    whole = explore(m, props, stop_when_decided=False)
    pieces = [3, 8, 10, 15, 4, 9, 12, 20]  # canonical() calls: several per parent
    resumed = run_in_pieces(
        lambda: BuggyMutex(4), props, tmp_path / "s.pkl", pieces, 0, InterruptingCanonical
    )
    assert summary(resumed) == summary(whole)


def test_many_interruptions_generator_model(tmp_path: Path) -> None:
    m = Procs(3, 4)
    props = m.properties()
    whole = explore(m, props, stop_when_decided=False)
    resumed = run_in_pieces(lambda: Procs(3, 4), props, tmp_path / "s.pkl", [4] * 8, 1)
    assert summary(resumed) == summary(whole)


def test_interrupt_in_predicate(tmp_path: Path) -> None:
    m = Counters(8)
    calls = {"n": 0}

    def flaky(s: tuple[int, int]) -> bool:
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return s[0] + s[1] < 12

    path = tmp_path / "s.pkl"
    first = explore(m, [invariant("p", flaky)], save=path, stop_when_decided=False)
    assert first.stopped_by == "interrupt" and first["p"].verdict == "unknown"
    resumed = explore(m, [invariant("p", flaky)], resume=path, stop_when_decided=False)
    whole = explore(m, [invariant("p", lambda s: s[0] + s[1] < 12)], stop_when_decided=False)
    assert summary(resumed) == summary(whole)


def test_real_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    class SelfSignalling(Counters):
        calls = 0

        def successors(self, s: tuple[int, int]) -> Any:
            SelfSignalling.calls += 1
            if SelfSignalling.calls == 20:
                os.kill(os.getpid(), signal.SIGINT)
            return super().successors(s)

    before = signal.getsignal(signal.SIGINT)
    path = tmp_path / "s.pkl"
    m = SelfSignalling(12)
    ex = explore(m, m.properties(), save=path, stop_when_decided=False)
    assert signal.getsignal(signal.SIGINT) is before
    assert ex.stopped_by == "interrupt"
    assert (
        ex["never_negative"].verdict == "unknown" and "interrupted" in ex["never_negative"].reason
    )
    resumed = explore(Counters(12), m.properties(), resume=path, stop_when_decided=False)
    whole = explore(Counters(12), m.properties(), stop_when_decided=False)
    assert summary(resumed) == summary(whole)


def test_bounded_runs_resume(tmp_path: Path) -> None:
    m = Counters(12)
    props = m.properties()
    whole = explore(m, props, stop_when_decided=False)
    path = tmp_path / "s.pkl"
    ex = explore(m, props, max_states=40, save=path, stop_when_decided=False)
    assert ex.stopped_by == "max_states"
    ex = explore(m, props, max_depth=9, save=path, resume=path, stop_when_decided=False)
    assert ex.stopped_by == "max_depth"
    for _ in range(200):
        ex = explore(m, props, max_seconds=0, save=path, resume=path, stop_when_decided=False)
        if ex.complete:
            break
        assert ex.stopped_by == "max_seconds"
    assert summary(ex) == summary(whole)
    # A finished snapshot resumes to the same results at once.
    again = explore(m, props, resume=path, stop_when_decided=False)
    assert summary(again) == summary(whole)


def test_other_salt_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    explore(Counters(5), save=path, max_states=10)
    with pytest.raises(SnapshotMismatch, match=r"Counters\(n=5\).*Counters\(n=6\)"):
        explore(Counters(6), resume=path)


def test_other_properties_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    m = Counters(5)
    explore(m, m.properties(), save=path, max_states=10)
    with pytest.raises(SnapshotMismatch, match="properties"):
        explore(m, m.properties()[:2], resume=path)
    with pytest.raises(SnapshotMismatch, match="exact"):
        explore(m, m.properties(), resume=path, exact=True)


def test_other_format_version_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.pkl"
    explore(Counters(5), save=path, max_states=10)
    monkeypatch.setattr(checker.snapshot, "FORMAT_VERSION", checker.snapshot.FORMAT_VERSION + 1)
    with pytest.raises(SnapshotMismatch, match="version"):
        explore(Counters(5), resume=path)


def test_unstable_fingerprints_refused(tmp_path: Path) -> None:
    class Salted(Counters):
        def fingerprint(self, s: tuple[int, int]) -> int:
            return hash(s) ^ 12345  # as if hash() differed in another process

    path = tmp_path / "s.pkl"
    explore(Counters(5), save=path, max_states=10)
    with pytest.raises(SnapshotMismatch, match="fingerprint"):
        explore(Salted(5), resume=path)


def test_garbage_snapshot_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    path.write_bytes(b"not a snapshot")
    with pytest.raises(SnapshotMismatch, match="not a crmodel snapshot"):
        explore(Counters(5), resume=path)
    path.write_bytes(pickle.dumps({"hello": 1}))
    with pytest.raises(SnapshotMismatch, match="not a crmodel snapshot"):
        explore(Counters(5), resume=path)
    path.write_bytes(MAGIC + b'{"format": "other"}\n')
    with pytest.raises(SnapshotMismatch, match="not a checker snapshot"):
        explore(Counters(5), resume=path)
    with pytest.raises(FileNotFoundError):
        explore(Counters(5), resume=tmp_path / "missing.pkl")


# --- tampering: refused before decoding, or by the decoded structure's checks ---------------


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    assert raw.startswith(MAGIC)
    line, payload = raw[len(MAGIC):].split(b"\n", 1)
    return json.loads(line), payload


def _salt(path: Path) -> str:
    return _split(path)[0]["salt"]


def _rewrite(path: Path, payload: bytes, **head_changes: Any) -> None:
    """The snapshot with another payload and a checksum that matches it (what a deliberate
    forger would write: the checksum only catches accidents)."""
    head, _ = _split(path)
    head.update(payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest(),
                **head_changes)
    path.write_bytes(MAGIC + json.dumps(head).encode() + b"\n" + payload)


@pytest.fixture()
def snap(tmp_path: Path) -> Path:
    path = tmp_path / "s.snap"
    m = Counters(9)
    ex = explore(m, m.properties(), save=path, max_states=30, stop_when_decided=False)
    assert ex.snapshot == str(path)
    return path


def resume(path: Path) -> Exploration:
    m = Counters(9)
    return explore(m, m.properties(), resume=path, stop_when_decided=False)


def test_untampered_snapshot_resumes(snap: Path) -> None:
    assert resume(snap).complete


@pytest.mark.parametrize("where", [0, 5, 40, -1, -30])
def test_flipped_byte_refused(snap: Path, where: int) -> None:
    raw = bytearray(snap.read_bytes())
    raw[where] ^= 0x20
    snap.write_bytes(bytes(raw))
    with pytest.raises(SnapshotMismatch):
        resume(snap)


@pytest.mark.parametrize("keep", [0, 3, 20, 0.5, 0.99])
def test_truncated_refused(snap: Path, keep: float) -> None:
    raw = snap.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    snap.write_bytes(raw[:n])
    with pytest.raises(SnapshotMismatch):
        resume(snap)


def test_extended_refused(snap: Path) -> None:
    snap.write_bytes(snap.read_bytes() + b"\0")
    with pytest.raises(SnapshotMismatch, match="truncated or extended"):
        resume(snap)


@pytest.mark.parametrize(
    "change",
    [{"level": "x"}, {"pos": -1}, {"pos": 10**9}, {"seen": "abc"}, {"levels_par": [1]},
     {"found": {0: {"level": 99, "index": 0, "states": 0, "transitions": 0, "seconds": 0.0}}},
     {"seconds": float("nan")}, {"done": 1}, {"frontier": None}, {"coverage": [1]}],
    ids=str,
)
def test_well_checksummed_but_malformed_refused(snap: Path, change: dict) -> None:
    _, doc = checker.snapshot.read_snapshot(snap, _salt(snap), ("checker",))
    doc.update(change)
    _rewrite(snap, checker.snapshot.encode_payload(doc))
    with pytest.raises(SnapshotMismatch, match="malformed"):
        resume(snap)


def test_missing_key_refused(snap: Path) -> None:
    _, doc = checker.snapshot.read_snapshot(snap, _salt(snap), ("checker",))
    del doc["coverage"]
    _rewrite(snap, checker.snapshot.encode_payload(doc))
    with pytest.raises(SnapshotMismatch, match="missing"):
        resume(snap)


def _json_payload(doc: object) -> bytes:
    return zlib.compress(json.dumps(doc).encode())


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_crafted_payload_runs_no_code(snap: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in a snapshot is unpickled, and a type it names is never imported or called
    unless it is an already-imported value type of the model's packages."""
    marker = tmp_path / "pwned"
    # 1. a pickle that would run a command, with a valid checksum: not even read as a pickle
    _rewrite(snap, pickle.dumps({"seen": _Evil(marker)}))
    with pytest.raises(SnapshotMismatch, match="payload refused"):
        resume(snap)
    _rewrite(snap, zlib.compress(pickle.dumps({"seen": _Evil(marker)})))
    with pytest.raises(SnapshotMismatch, match="payload refused"):
        resume(snap)
    # 2. a module that runs code when imported: never imported
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass T: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _rewrite(snap, _json_payload(["d", [["n", "evilmod:T"], 1]]))
    with pytest.raises(SnapshotMismatch, match="not admitted"):
        resume(snap)
    # 3. a function or module reached through an admitted package, or a builtin
    for name in ["checker.examples:Counters.successors", "checker.snapshot:os",
                 "builtins:eval", "checker.explicit:explore", "checker.snapshot:_Decoder"]:
        for tag in ("n", "e"):
            _rewrite(snap, _json_payload(["d", ["seen", [tag, name, 1]]]))
            with pytest.raises(SnapshotMismatch, match="not admitted"):
                resume(snap)
    # 4. untagged or malformed structures
    for doc in [{"seen": 1}, ["x"], ["d", ["seen"]], ["a", "O", "00"], ["e", "m:T", "1"]]:
        _rewrite(snap, _json_payload(doc))
        with pytest.raises(SnapshotMismatch):
            resume(snap)
    assert not marker.exists()
    assert "evilmod" not in sys.modules


def test_payload_codec_round_trip() -> None:
    from array import array

    from checker.examples import Counters  # noqa: F401  (its module must be imported)
    from checker.snapshot import decode_payload, encode_payload

    class Color(enum.IntEnum):
        RED = 1

    doc = {"a": (1, -2, 2**70, True, None, 1.5, "s", b"\x00\xff"), 3: [frozenset({1, 2}),
           {(1, 2)}], "arr": array("I", [1, 2, 3]), (1, "k"): {}}
    assert decode_payload(encode_payload(doc), ("checker",)) == doc
    assert encode_payload(doc) == encode_payload(dict(doc))  # deterministic bytes
    with pytest.raises(TypeError):
        encode_payload({"f": lambda: 0})
    # an enum defined outside the admitted packages is refused on the way back
    with pytest.raises(ValueError, match="not admitted"):
        decode_payload(encode_payload({"c": Color.RED}), ("checker",))


def test_other_run_header_refused_before_decoding(snap: Path) -> None:
    _rewrite(snap, b"garbage that would not decode", salt="Counters(n=4)")
    with pytest.raises(SnapshotMismatch, match="Counters"):
        resume(snap)


def test_kill_leftovers_removed(tmp_path: Path) -> None:
    """A process killed while writing leaves `.<name>.crmodel-tmp.<pid>`; the next write
    removes it (if that process is gone) and leaves other files alone."""
    path = tmp_path / "s.snap"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".s.snap{checker.snapshot.TMP_MARK}{dead.pid}"
    left.write_bytes(b"partial")
    other = tmp_path / ".t.snap.crmodel-tmp.1"
    other.write_bytes(b"someone else's")
    explore(Counters(5), save=path, max_states=10)
    assert not left.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "s.snap"]


def test_snapshot_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "s.pkl"
    explore(Counters(5), save=path, save_every=0)
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["s.pkl"]  # no temporary left
