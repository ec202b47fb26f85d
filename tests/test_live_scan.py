"""`crmodel scan` on real process trees: the verdicts of linuxcr, criu and fixed on a pipe and
a unix socket shared with an outside process, a clean tree, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from crmodel import cli
from crmodel.live import scan as live_scan

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="the live scan needs Linux on x86_64",
)

# A process P that makes a pipe and a socket pair and forks R (outside), which keeps only what
# SHARE names: the pipe's write end or one socket of the pair; P closes those, then forks Q
# (inside, keeps the rest). P prints the three pids and closes its stdout.
TREE = r"""
import os, socket, sys, time
share = sys.argv[1]
os.close(0); os.close(2)
r, w = os.pipe()                      # fds 0 and 2
a, b = socket.socketpair()
a, b = a.detach(), b.detach()
given = {"pipe": {w}, "socket": {b}, "none": set(), "owner": set()}[share]
if share == "owner":
    import fcntl
    fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
o = os.fork()
if o == 0:
    for fd in {r, w, a, b} - given:
        os.close(fd)
    os.close(1); time.sleep(600); os._exit(0)
for fd in given:
    os.close(fd)
q = os.fork()
if q == 0:
    os.close(1); time.sleep(600); os._exit(0)
os.write(1, f"{os.getpid()} {q} {o}\n".encode()); os.close(1)
time.sleep(600)
"""


@pytest.fixture
def tree() -> Iterator:
    procs: list[int] = []
    popens: list[subprocess.Popen] = []

    def start(share: str) -> tuple[int, int, int]:
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", TREE, share],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
        popens.append(p)
        assert p.stdout is not None
        line = p.stdout.read().decode()
        p.stdout.close()
        pids = tuple(int(x) for x in line.split())
        for pid in pids:
            procs.append(os.pidfd_open(pid))
        return pids  # type: ignore[return-value]

    yield start
    for fd in procs:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in popens:
        p.wait(timeout=10)
    for fd in procs:  # the forked children are reaped by init once P is gone
        os.close(fd)


def _verdicts(pids: list[int]) -> dict[str, live_scan.Verdict]:
    sc = live_scan.scan(pids)
    return {v.variant: v for v in live_scan.verdicts(sc)}


def test_pipe_shared_with_an_outside_process(tree) -> None:
    p, q, r = tree("pipe")
    sc = live_scan.scan([p, q])
    assert sc.outside == [r]
    vs = {v.variant: v for v in live_scan.verdicts(sc)}
    assert vs["linuxcr"].verdict == "leaks"
    assert any("pipe inode not compared: no ref_users" in x for x in vs["linuxcr"].reasons)
    assert f"pid {r} (python" in vs["linuxcr"].reasons[0]
    assert vs["criu"].verdict == "leaks"
    fixed = vs["fixed"]
    assert (fixed.verdict, fixed.errno, fixed.phase) == ("refuses", "EBUSY", "contained")
    assert "INODE objref" in fixed.reasons[0] and f"pid {r}" in fixed.reasons[0]
    assert live_scan.exit_code(list(vs.values())) == 1


def test_unix_socket_with_an_outside_peer(tree) -> None:
    p, q, r = tree("socket")
    vs = _verdicts([p, q])
    criu = vs["criu"]
    assert (criu.verdict, criu.errno, criu.phase) == ("refuses", "EBUSY", "write")
    assert "external unix socket" in criu.reasons[0] and f"pid {r}" in criu.reasons[0]
    fixed = vs["fixed"]
    assert (fixed.verdict, fixed.errno, fixed.phase) == ("refuses", "EBUSY", "contained")
    assert "SOCK objref" in fixed.reasons[0]


def test_a_tree_that_shares_nothing_succeeds(tree) -> None:
    p, q, r = tree("none")
    sc = live_scan.scan([p, q])
    assert sc.outside == [] and sc.unexpressible == []
    assert [v.verdict for v in live_scan.verdicts(sc)] == ["succeeds"] * 3
    # the outside process alone holds nothing: also clean
    assert [v.verdict for v in live_scan.verdicts(live_scan.scan([r]))] == ["succeeds"] * 3


def test_a_file_with_an_owner_is_refused_at_write(tree) -> None:
    """Linux-CR refuses an owned file (-EBUSY); CRIU saves a fown entry and dumps it."""
    p, q, _r = tree("owner")
    vs = _verdicts([p, q])
    for name in ("linuxcr", "fixed"):
        v = vs[name]
        assert (v.verdict, v.errno, v.phase) == ("refuses", "EBUSY", "write")
        assert "F_SETOWN owner" in v.reasons[0]
    assert vs["criu"].verdict == "succeeds"


def test_cli_json_and_exit_codes(tree) -> None:
    p, q, r = tree("pipe")
    out = CliRunner().invoke(cli.main, ["scan", str(p), str(q), "--json"])
    assert out.exit_code == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["outside"] == [r]
    assert [v["verdict"] for v in doc["verdicts"]] == ["leaks", "leaks", "refuses"]
    ok = CliRunner().invoke(cli.main, ["scan", str(p), str(q), str(r), "--variant", "fixed"])
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert "fixed: succeeds" in ok.stdout


def test_not_expressible_is_named_never_guessed() -> None:
    """This test process itself holds files the model has no kind for (e.g. /dev/null)."""
    with open(os.devnull) as f:
        sc = live_scan.scan([os.getpid()])
        assert f"fd {f.fileno()}: /dev/null" in "\n".join(sc.unexpressible)
    assert sc.world is None
    assert {v.verdict for v in live_scan.verdicts(sc)} == {"not expressible"}


@pytest.mark.parametrize("args, message", [
    (["999999999"], "no such process: 999999999"),
    ([], "nothing to scan"),
    (["1", "--variant", "nope"], "unknown variant"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = CliRunner().invoke(cli.main, ["scan", *args])
    assert out.exit_code == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


# A process in folder D: a FIFO D/q opened read-write (fd 0) and write-only (fd 1), a file D/f
# opened read-write (fd 2) whose name it then unlinks; prints its pid, closes stdout.
NAMED = r"""
import os, sys, time
d = sys.argv[1]
os.close(0); os.close(2)
os.mkfifo(os.path.join(d, "q"))
fifo = os.path.join(d, "q")
a = os.open(fifo, os.O_RDWR)                     # fd 0
b = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # fd 2: a reader exists (a)
with open(os.path.join(d, "f"), "wb") as f:
    f.write(b"abc")
c = os.open(os.path.join(d, "f"), os.O_RDWR)     # fd 3
os.lseek(c, 2, 0)
if sys.argv[2] == "unlink":
    os.unlink(os.path.join(d, "f"))
os.write(1, f"{os.getpid()}\n".encode()); os.close(1)
time.sleep(600)
"""


@pytest.fixture
def named(tmp_path) -> Iterator:
    started: list[subprocess.Popen] = []

    def start(what: str) -> int:
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", NAMED, str(tmp_path), what],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        started.append(p)
        assert p.stdout is not None
        pid = int(p.stdout.read().decode())
        p.stdout.close()
        return pid

    yield start
    for p in started:
        p.kill()
        p.wait(timeout=10)


def test_fifo_ends_and_an_unlinked_file_are_the_models(named, tmp_path) -> None:
    """A FIFO's ends are pipe ends with a name, on one pipe; a file whose name was unlinked is
    the model's unlinked file: refused by Linux-CR (no name to save), dumped by CRIU."""
    from model.state import PIPE_RW, PIPE_W, REG, unlinked

    pid = named("unlink")
    sc = live_scan.scan([pid])
    assert sc.unexpressible == [] and sc.world is not None
    kinds = {(f.kind, f.path, f.f_pos) for f in sc.world.files}
    assert kinds == {(PIPE_RW, 0, 0), (PIPE_W, 0, 0), (REG, unlinked(0), 2)}
    ends = [f.obj for f in sc.world.files if f.kind in (PIPE_RW, PIPE_W)]
    assert len(set(ends)) == 1  # the same FIFO
    assert sc.fifo_paths == [str(tmp_path / "q")] and sc.paths == [str(tmp_path / "f")]
    text = "\n".join(live_scan.describe(sc))
    assert f"{tmp_path / 'q'} (fifo)" in text and f"{tmp_path / 'f'} (deleted)" in text
    vs = {v.variant: v for v in live_scan.verdicts(sc)}
    for name in ("linuxcr", "fixed"):
        v = vs[name]
        assert (v.verdict, v.errno, v.phase) == ("refuses", "EBADF", "write"), v
        assert "unlinked, no name to save" in v.reasons[0]
    assert vs["criu"].verdict == "succeeds"


def test_a_fifo_and_a_named_file_held_inside_succeed(named) -> None:
    pid = named("keep")
    out = CliRunner().invoke(cli.main, ["scan", str(pid)])
    assert out.exit_code == 0, out.stdout + out.stderr
    assert "not expressible" not in out.stdout
    assert out.stdout.count(": succeeds") == 3


def test_files_in_flight_are_read_into_the_models_queues() -> None:
    """SCM_RIGHTS messages in a queue, a file in flight only and a socket in flight with a
    queue of its own: the scan is the model's state, and the queues are left as they were."""
    from crmodel.live import driver
    from model.env import apply, initial_world
    from model.world import normalize

    acts = [("socketpair", 0), ("pipe", 0), ("sendmsg", 0, 0, 3), ("close", 0, 3),
            ("sendmsg", 0, 0, 2), ("socketpair", 0), ("sendmsg", 0, 3, 2),
            ("sendmsg", 0, 0, 4), ("close", 0, 4), ("fork", 0, 1)]
    w = initial_world(driver.MODEL_FDS)
    for a in acts:
        _, w = apply(w, a)
    sess = driver._Session(timeout=10.0)
    try:
        sess.start(1, 8)
        for a in acts:
            sess.perform(a)
        before = sess.observe()
        sc = live_scan.scan([t.pid for t in sess.tasks], fd_limit=driver.MODEL_FDS,
                            max_fds=driver.MODEL_FDS, path_of=sess.name_index)
        assert sc.unexpressible == [] and sc.world is not None
        inside = w._replace(tasks=tuple(t._replace(inside=1) for t in w.tasks))
        assert normalize(sc.world._replace(steps=w.steps)) == normalize(inside)
        assert [len(f.rcvq) for f in sc.world.files if f.rcvq] == [3, 1]
        assert sess.observe() == before  # nothing taken off a queue, no count changed
        assert "(in flight)" in " ".join(sc.names.values())
        queued = [x for x in live_scan.describe(sc) if ": in its queue: " in x]
        # fd 1 of both processes (the fork copied it): its three messages
        assert len(queued) == 2 and all(x.count("file ") == 3 for x in queued)
    finally:
        sess.close()


def test_a_queue_of_plain_data_is_not_expressible() -> None:
    a, b = __import__("socket").socketpair()
    try:
        a.send(b"hello")
        sc = live_scan.scan([os.getpid()])
        text = "\n".join(sc.unexpressible)
        assert f"fd {b.fileno()}: 5 unread bytes in its queue that are not one-byte messages" \
            in text
        assert b.recv(10) == b"hello"  # peeked, not taken
    finally:
        a.close()
        b.close()
