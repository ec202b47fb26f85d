"""CRIU as a further oracle for the `criu` variant: `crmodel replay --criu`.

The trace's environment steps run with real processes (the driver) up to its checkpoint.
There the container (the model's inside tasks) must be one process tree, since `criu dump -t`
takes one root. Every worker leaves the driver (closes its control channel, so the dump
meets no socket to the driver) and from then on only reaps its children. Then

    criu dump -t ROOT -D IMAGES --shell-job -v4 -o dump.log
    criu restore -D IMAGES --shell-job -d --restore-sibling --pidfile PIDFILE -v4 -o restore.log

(a dump kills the tree; the workers and the anchor reap it so that its pids, which a restore
takes back, come free; `--restore-sibling` makes the restored root this process's child, so it
is reaped here). The restored processes keep their pids; they are read back with the scanner
and compared, in `model.world.observe` form, with what the `criu` variant's checkpoint and
restart make of the model's state at the freeze (no outside step in between): both refuse,
or both restore the same state. A dump that fails agrees with a model that refuses (CRIU's
messages are not errnos: the last "Error" line of its log is shown); a restore that fails
agrees with a model restart that fails. Processes restored are killed before returning.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from crmodel.live import driver
from crmodel.live import scan as live_scan
from crmodel.validate import UsageError
from model import checkpoint
from model.config import Config
from model.env import apply
from model.restart import restart
from model.state import World
from model.system import CR_ACTIONS, CrModel
from model.variants import VARIANTS
from model.world import observe

CRIU_WAIT = 120.0  # seconds a criu run may take
FREE_WAIT = 2.0  # seconds to wait for a dumped tree's pids to come free


def require() -> str:
    """The criu binary's path, or a one-line UsageError (exit 2) saying there is none."""
    path = shutil.which("criu")
    if path is None:
        raise UsageError("no criu binary on PATH: `replay --criu` needs one (this project "
                         "does not build CRIU)")
    return path


@dataclass
class CriuCheck:
    """CRIU's dump and restore of the replayed container beside the `criu` variant's."""

    trace: str
    root: int = 0
    dump: list[str] = field(default_factory=list)  # the commands run
    restore: list[str] = field(default_factory=list)
    model: str = ""  # "refuses errno N", "restart fails errno N", "restores"
    real: str = ""  # "dump refused: ...", "restore failed: ...", "restores"
    agree: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"trace": self.trace, "root": self.root, "dump": self.dump,
                "restore": self.restore, "model": self.model, "real": self.real,
                "agree": self.agree, "notes": self.notes}

    def lines(self) -> list[str]:
        out = [f"criu: {' '.join(self.dump)}" if self.dump else "criu: no dump"]
        if self.restore:
            out.append(f"criu: {' '.join(self.restore)}")
        out.append(f"criu variant (model): {self.model}")
        out.append(f"criu (real):          {self.real}")
        out += [f"      {n}" for n in self.notes]
        out.append("CRIU agrees with the criu variant" if self.agree
                   else "CRIU and the criu variant DISAGREE")
        return out


def model_outcome(w: World, cfg: Config) -> tuple[str, int, tuple]:
    """What the `criu` variant's checkpoint, then restart, make of `w` (no outside step in
    between): ("refuses", errno, ()) or ("restores", restart's errno or 0, observation)."""
    v = VARIANTS["criu"]
    x = checkpoint.freeze(w, v)
    steps = [checkpoint.collect, checkpoint.contained] if v.full_container else []
    for step in [*steps, checkpoint.write, checkpoint.visited]:
        x = step(x, v)
        if x.cr.error:
            return ("refuses", x.cr.error, ())
    code, obs, _ = restart(x.cr.image, v, cfg.max_fds)
    return ("restores", code, obs)


def _describe(out: tuple[str, int, tuple]) -> str:
    if out[0] == "refuses":
        return f"refuses errno {out[1]}"
    return f"restart fails errno {out[1]}" if out[1] else "restores"


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def tree_root(pids: list[int]) -> int:
    """The one process of `pids` whose parent is not among them, if its live descendants are
    exactly `pids`; UsageError otherwise (`criu dump -t` takes one tree)."""
    roots = [p for p in pids if _ppid(p) not in pids]
    if len(roots) != 1:
        raise UsageError(f"the container is {len(roots)} process trees: `criu dump -t` "
                         "takes one")
    seen, todo = [], [roots[0]]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += [c for c in _children(p) if _alive(c)]
    if sorted(seen) != sorted(pids):
        raise UsageError("the container's process tree holds an outside task: `criu dump "
                         "-t` would dump it too")
    return roots[0]


def _run(argv: list[str], log: str) -> tuple[bool, str]:
    """Run criu; (succeeded, why not: the last Error line of its log, or its exit)."""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=CRIU_WAIT, check=False)
    except subprocess.TimeoutExpired:
        return False, f"criu did not finish within {CRIU_WAIT:.0f} s"
    except OSError as e:
        raise UsageError(f"cannot run {argv[0]}: {e.strerror}") from None
    if r.returncode == 0:
        return True, ""
    text = ""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        pass
    errs = [ln.strip() for ln in (text + "\n" + r.stderr).splitlines() if "Error" in ln]
    return False, (errs[-1][:300] if errs else f"exit status {r.returncode}")


def _kill_tree(root: int, pids: list[int]) -> None:
    """Kill the restored processes (and what they forked) and reap the root, our child."""
    every = list(pids)
    try:
        every += [c for p in pids for c in _children(p) if c not in every]
    except OSError:
        pass
    for p in every:
        try:
            fd = os.pidfd_open(p)
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)
    deadline = time.monotonic() + FREE_WAIT
    while root and time.monotonic() < deadline:
        try:
            got, _ = os.waitpid(root, os.WNOHANG)
        except ChildProcessError:
            return  # not our child (already reaped, or not restored as our sibling)
        if got:
            return
        time.sleep(0.005)


def _free(sess: Any, pids: list[int]) -> None:
    """Wait (briefly) until the dumped tree is gone: the anchor reaps what comes to it."""
    deadline = time.monotonic() + FREE_WAIT
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        if sess.root_sock is not None:
            sess.root_sock.send(b"r")
        time.sleep(0.01)


def dump_and_restore(sess: Any, w: World, cfg: Config, criu: str) -> CriuCheck:
    """Dump the session's inside tasks with criu, restore them and read them back."""
    inside = [i for i, t in enumerate(w.tasks) if t.inside]
    pids = [sess.tasks[i].pid for i in inside]
    chk = CriuCheck(trace="")
    want = model_outcome(w, cfg)
    chk.model = _describe(want)
    chk.root = root = tree_root(pids)
    for t in sess.tasks:  # no worker keeps a channel to the driver
        out = sess.call(t, "park")
        if out[0] != "ok":
            raise driver.DriverError(f"worker pid {t.pid} would not leave: {out!r}")
    with tempfile.TemporaryDirectory(prefix="crmodel-criu-") as imgs:
        chk.dump = [criu, "dump", "-t", str(root), "-D", imgs, "--shell-job", "-v4",
                    "-o", "dump.log"]
        ok, why = _run(chk.dump, os.path.join(imgs, "dump.log"))
        if not ok:
            chk.real = f"dump refused: {why}"
            chk.agree = want[0] == "refuses"
            return chk
        _free(sess, pids)
        pidfile = os.path.join(imgs, "restored.pid")
        chk.restore = [criu, "restore", "-D", imgs, "--shell-job", "-d", "--restore-sibling",
                       "--pidfile", pidfile, "-v4", "-o", "restore.log"]
        ok, why = _run(chk.restore, os.path.join(imgs, "restore.log"))
        if not ok:
            chk.real = f"restore failed: {why}"
            chk.agree = want[0] == "restores" and want[1] != 0
            return chk
        try:
            with open(pidfile) as f:
                got = int(f.read().strip())
        except (OSError, ValueError):
            raise UsageError("criu restore succeeded but wrote no pid file") from None
    try:
        if got != root:
            chk.real = f"restores with root pid {got}, not {root}"
            chk.notes.append("CRIU restores a tree with its pids; this one has others")
            return chk
        missing = [p for p in pids if not _alive(p)]
        if missing:
            chk.real = f"restores without pids {missing}"
            return chk
        sc = live_scan.scan(pids, outside=[], fd_limit=driver.MODEL_FDS, max_fds=cfg.max_fds,
                            path_of=sess.name_index)
        if sc.world is None:
            chk.real = "restores what the model cannot express: " + "; ".join(sc.unexpressible)
            return chk
        obs = observe(sc.world, [sc.task_pids.index(p) for p in pids])
        chk.real = "restores"
        chk.agree = want[0] == "restores" and want[1] == 0 and obs == want[2]
        if want[0] == "restores" and want[1] == 0 and obs != want[2]:
            chk.notes.append(f"restored state differs: model {want[2]!r:.300} real {obs!r:.300}")
        return chk
    finally:
        _kill_tree(got, pids)


def compare(path: str | os.PathLike[str], *, variant: str | None = None,
            config: str | None = None, timeout: float = 10.0) -> CriuCheck:
    """Replay the trace's environment steps up to its freeze, then dump and restore the
    container with criu and compare with the `criu` variant (see the module docstring)."""
    from crmodel.live import replay as live_replay

    criu = require()
    actions, _recorded, v, cfg = live_replay.load(path, variant, config)
    model = CrModel(cfg, v)
    w = model.init_states()[0]
    upto = next((i for i, a in enumerate(actions) if a[0] in CR_ACTIONS), None)
    if upto is None or actions[upto][0] != "freeze":
        raise UsageError(f"trace {os.fspath(path)!r}: no checkpoint to dump (no freeze step)")
    sess = driver._Session(timeout=timeout)
    try:
        sess.start(cfg.paths, live_replay.FILE_SIZE)
        for i, a in enumerate(actions[:upto], start=1):
            want, _ = apply(w, a)
            w2 = live_replay._step(model, w, a)
            got = sess.perform(a)
            if got != want or w2 is None:
                chk = CriuCheck(os.fspath(path), model=f"step {i} {a!r}: {want!r}",
                                real=f"step {i} {a!r}: {got!r}")
                chk.notes.append("the kernel differs from the model before the checkpoint")
                return chk
            w = w2
        chk = dump_and_restore(sess, w, cfg, criu)
        chk.trace = os.fspath(path)
        return chk
    finally:
        sess.close()
