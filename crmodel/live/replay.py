"""Replay a trace on the live kernel: its environment steps with real processes and system
calls, its checkpoint on a scan of those processes.

Every environment step runs in the model (the trace's own transition, checked against the
state the trace file records) and in real worker processes (`driver`); the outcomes and the
observable projection (`model.world.project`) must agree. At `freeze` the real processes are
scanned (`scan`: the model's inside tasks are the container, its outside tasks outside) and
the scanned state must equal the model's up to renaming; the checkpoint's steps then run on
the scanned state beside the model's, outside tasks acting for real in between where the trace
says so, and both must end the same way: the verdict on the real processes is the model's.
Restart from an untampered image runs for real too (`restore`: fresh processes rebuilt from the
image, read back and compared with the model's restarted state); tampering is the model's alone.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checker.trace import ACTION_VAR, ARGS_VAR, from_itf_value
from crmodel.live import driver
from crmodel.live import scan as live_scan
from crmodel.live.restore import restore
from crmodel.validate import UsageError, itf_document
from model.config import PRESETS, Config, ConfigError, from_dict
from model.env import apply
from model.state import DONE, FAILED, PHASE_NAMES, World
from model.system import CR_ACTIONS, CrModel, format_action, to_json
from model.variants import VARIANTS, Variant
from model.world import normalize, project

FILE_SIZE = 8
MAX_STEPS = 200


@dataclass
class StepResult:
    index: int
    action: tuple
    text: str
    model: Any = None  # the model's outcome (environment steps)
    kernel: Any = None  # the kernel's outcome
    agree: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "action": list(self.action), "text": self.text,
                "model": _jsonable(self.model), "kernel": _jsonable(self.kernel),
                "agree": self.agree, "notes": self.notes}


@dataclass
class Replay:
    trace: str
    variant: str
    config: str
    steps: list[StepResult] = field(default_factory=list)
    model_end: str = ""  # how the model's checkpoint ended, in short
    real_end: str = ""  # how the checkpoint of the scanned processes ended
    verdict: live_scan.Verdict | None = None  # on the scanned processes, in words

    @property
    def agree(self) -> bool:
        return all(s.agree for s in self.steps) and self.model_end == self.real_end

    def to_json(self) -> dict[str, Any]:
        return {"trace": self.trace, "variant": self.variant, "config": self.config,
                "steps": [s.to_json() for s in self.steps], "model_end": self.model_end,
                "real_end": self.real_end, "agree": self.agree,
                "verdict": self.verdict.to_json() if self.verdict else None}


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple | list):
        return [_jsonable(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# Reading the trace


def load(path: str | os.PathLike[str], variant: str | None = None,
         config: str | None = None) -> tuple[list[tuple], list[dict], Variant, Config]:
    """(actions, recorded states, variant, config) of an ITF trace; UsageError if it is not a
    concrete trace of this model."""
    doc = itf_document(path)
    name = os.fspath(path)
    meta = doc.get("#meta", {})
    if meta.get("canonical"):
        raise UsageError(f"trace {name!r}: gives canonical representatives only, not a run")
    vname = variant or meta.get("variant") or Path(name).name.split("__")[0]
    if vname not in VARIANTS:
        raise UsageError(f"trace {name!r}: unknown variant {vname!r:.40} (give --variant)")
    cfg = _config(name, config, meta.get("config"))
    states = doc["states"]
    if len(states) > MAX_STEPS + 1:
        raise UsageError(f"trace {name!r}: more than {MAX_STEPS} steps")
    actions = []
    recorded = []
    known = set(cfg.enabled_actions()) | set(CR_ACTIONS)
    for i, raw in enumerate(states):
        st = {k: from_itf_value(v) for k, v in raw.items() if k != "#meta"}
        args = st.pop(ARGS_VAR, None)
        act = st.pop(ACTION_VAR, None)
        recorded.append(st)
        if i == 0:
            continue
        if not (isinstance(args, dict) and isinstance(args.get("args"), list)
                and act in known and args.get("name") == act
                and all(isinstance(a, int) and not isinstance(a, bool) for a in args["args"])):
            raise UsageError(f"trace {name!r}: state {i}: not an action of this model")
        actions.append((act, *args["args"]))
    return actions, recorded, VARIANTS[vname], cfg


def _config(name: str, given: str | None, meta: Any) -> Config:
    if given is not None:
        if given not in PRESETS:
            raise UsageError(f"unknown config {given!r:.40}: one of {', '.join(PRESETS)}")
        return PRESETS[given]
    if not isinstance(meta, dict):
        raise UsageError(f"trace {name!r}: does not say its config (give --config)")
    preset = PRESETS.get(meta.get("name", ""))
    if preset is not None and preset.to_dict() == meta:
        return preset
    data = {k: v for k, v in meta.items() if k != "name"}
    try:
        return from_dict(data, str(meta.get("name", "custom"))[:40])
    except (ConfigError, TypeError, ValueError) as e:
        raise UsageError(f"trace {name!r}: bad config ({e})") from None


# ---------------------------------------------------------------------------------------------
# Replaying


def _end(w: World) -> str:
    """How a checkpoint ended, comparable across the model and the scan."""
    cr = w.cr
    if not cr or cr.phase < DONE:
        return "no checkpoint ended" if not cr else f"checkpoint {PHASE_NAMES[cr.phase]}"
    if cr.phase == FAILED:
        return f"refused errno {cr.error}"
    leaked = sorted(set(cr.leak_check) | set(cr.leak_write))
    return f"done, shared with outside: {leaked}" if leaked else "done"


def _step(model: CrModel, w: World, a: tuple) -> World | None:
    return next((w2 for a2, w2 in model.successors(w) if a2 == a), None)


def replay(path: str | os.PathLike[str], *, variant: str | None = None,
           config: str | None = None, timeout: float = 10.0) -> Replay:
    actions, recorded, v, cfg = load(path, variant, config)
    model = CrModel(cfg, v)
    w = model.init_states()[0]
    rep = Replay(os.fspath(path), v.name, cfg.name)
    if _jsonable_state(w) != recorded[0]:
        raise UsageError(f"trace {rep.trace!r}: its initial state is not the model's")
    sess = driver._Session(timeout=timeout)
    try:
        sess.start(cfg.paths, FILE_SIZE)
        ws: World | None = None  # the scanned processes' state, in lockstep
        sc: live_scan.Scan | None = None
        raced = False
        for i, a in enumerate(actions, start=1):
            w2 = _step(model, w, a)
            if w2 is None or _jsonable_state(w2) != recorded[i]:
                raise UsageError(f"trace {rep.trace!r}: step {i} ({a[0]}) is not the "
                                 "model's transition (another model version?)")
            st = StepResult(i, a, format_action(a))
            if a[0] not in CR_ACTIONS:
                st.model, _ = apply(w, a)
                st.kernel = sess.perform(a)
                obs = sess.observe()
                st.agree = st.model == st.kernel and project(w2) == obs
                if not st.agree:
                    st.notes.append(_diff(project(w2), obs))
                if ws is not None and ws.cr and ws.cr.phase < DONE:
                    raced = True
                    nxt = _step(model, ws, a)
                    if nxt is None:
                        st.agree = False
                        st.notes.append("the scanned state has no such step")
                    else:
                        ws = nxt
            elif a[0] == "freeze":
                sc, ws0 = _scan(sess, w, cfg)
                if ws0 is None:
                    st.agree = False
                    st.notes.append("not expressible: " + "; ".join(sc.unexpressible))
                elif normalize(ws0) != normalize(w):
                    st.agree = False
                    st.notes.append("the scanned state differs from the model's: "
                                    + _diff(to_json(normalize(w)), to_json(normalize(ws0))))
                else:
                    st.notes.append(f"scanned {len(sc.inside)} inside and "
                                    f"{len(sc.outside)} outside processes: the model's state")
                    ws = _step(model, ws0, a)
                    rep.verdict = live_scan.run_checkpoint(sc, ws0, v) if not raced else None
            elif a[0] == "restart" and not w.cr.tampered:
                _restart(st, w, w2, v, cfg)
            elif a[0] in ("restart", "tamper"):
                st.notes.append("the model's alone (a tampered image)")
            elif ws is not None:
                ws = _step(model, ws, a)
            rep.steps.append(st)
            w = w2
            if ws is not None and ws.cr and ws.cr.phase >= DONE and not rep.real_end:
                rep.real_end = _end(ws)
            if w.cr and w.cr.phase >= DONE and not rep.model_end:
                rep.model_end = _end(w)
        if raced and sc is not None and ws is not None:
            rep.verdict = None  # outside tasks acted during the checkpoint: no static words
        rep.model_end = rep.model_end or _end(w)
        rep.real_end = rep.real_end or (_end(ws) if ws is not None else "no scan")
    finally:
        sess.close()
    return rep


def _restart(st: StepResult, w: World, w2: World, v: Variant, cfg: Config) -> None:
    """Restore the image in fresh processes (the restorer) and compare with the model's."""
    try:
        got = restore(w.cr.image, v, cfg.max_fds, cfg.paths)
    except ValueError as e:  # a restart knob user space does not follow (a mutant's)
        st.notes.append(f"the model's alone: {e}")
        return
    st.model = (w2.cr.rst_error, w2.cr.restored)
    st.kernel = (got.code, got.obs)
    st.agree = st.model == st.kernel
    if st.agree:
        st.notes.append("restored for real in fresh processes: the model's restarted state")
    else:
        st.notes.append(f"the real restore differs: {_diff(st.model, st.kernel)}"
                        + (f" ({got.why})" if got.why else ""))


def _jsonable_state(w: World) -> dict:
    return to_json(w)


def _scan(sess: Any, w: World, cfg: Config) -> tuple[live_scan.Scan, World | None]:
    """Scan the driver's live tasks (inside as the model says) into a state in the model's
    task order."""
    pids = [t.pid for t in sess.tasks]
    inside = [p for p, t in zip(pids, w.tasks, strict=True) if t.inside]
    outside = [p for p, t in zip(pids, w.tasks, strict=True) if not t.inside]
    sc = live_scan.scan(inside, outside=outside, fd_limit=driver.MODEL_FDS,
                        max_fds=cfg.max_fds, path_of=sess.name_index)
    if sc.world is None:
        return sc, None
    order = [sc.task_pids.index(p) for p in pids]
    ws = sc.world._replace(tasks=tuple(sc.world.tasks[i] for i in order), steps=w.steps)
    sc.task_pids = pids
    return sc, ws


def _diff(m: Any, k: Any) -> str:
    if m == k:
        return "same"
    if isinstance(m, dict) and isinstance(k, dict):
        keys = [x for x in dict.fromkeys(list(m) + list(k)) if m.get(x) != k.get(x)]
        return "; ".join(f"{x}: model {m.get(x)!r:.120} real {k.get(x)!r:.120}" for x in keys)
    return f"model {m!r:.200} real {k!r:.200}"


def _rst(code: int) -> str:
    return "restored" if not code else "-" + errno.errorcode.get(code, str(code))


def lines(rep: Replay) -> list[str]:
    out = [f"trace {rep.trace}: variant {rep.variant}, config {rep.config}"]
    for s in rep.steps:
        text = f"{s.index:3} {s.text}"
        if s.model is not None and s.action == ("restart",):  # the notes say what came back
            text = f"{text:<52} model {_rst(s.model[0]):<16} kernel {_rst(s.kernel[0])}"
        elif s.model is not None:
            text = f"{text:<52} model {s.model!r:<16} kernel {s.kernel!r}"
        mark = "" if s.agree else "  DIFFERS"
        out.append(text + mark)
        out += [f"      {n}" for n in s.notes]
    out.append(f"model's checkpoint:  {rep.model_end}")
    out.append(f"scanned processes:   {rep.real_end}")
    if rep.verdict is not None:
        out += ["verdict on the real processes:"] + ["  " + x for x in live_scan.verdict_lines(
            [rep.verdict])]
    out.append("every step agrees" if rep.agree else "the model and the kernel DISAGREE")
    return out
