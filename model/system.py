"""The whole model for the checker: environment steps, the checkpoint's phases, image
tampering and restart, under one config and one design variant.

`CrModel` offers what `checker/` asks of any model: initial states, successors, a canonical
form, plus names and renderings for traces. It is pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from model import checkpoint
from model.actions import ACTIONS
from model.config import Config
from model.env import apply, env_actions, initial_world
from model.flags import (
    O_ACCMODE,
    O_ASYNC,
    O_LARGEFILE,
    SETFL_MASK,
    flags_str,
    fmode_str,
)
from model.image import TAMPERS, tamper
from model.restart import READS as RESTART_READS
from model.restart import restart
from model.state import (
    CHECKED,
    COLLECTED,
    DONE,
    EMPTY,
    FAILED,
    FROZEN,
    KIND_NAMES,
    OBJ_NAMES,
    PHASE_NAMES,
    REG,
    RESTARTED,
    WRITTEN,
    World,
    slot_cloexec,
    slot_file,
)
from model.variants import Variant
from model.world import canonical

CR_ACTIONS = ("freeze", "collect", "contained", "write", "visited", "tamper", "restart")


def code_version() -> str:
    """A digest of the model's source, so snapshots of another model version are refused."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class ScriptOutcome(NamedTuple):
    """How a scripted run ended: the checkpoint's errno (0: it wrote an image), then the
    restart's errno, the inside tasks when the image was written and the restored tasks
    (observations, `model.world.observe`)."""

    error: int
    rst_error: int = 0
    snapshot: tuple = ()
    restored: tuple = ()


def run_script(actions: tuple, v: Variant, max_fds: int) -> ScriptOutcome:
    """Environment `actions` from the initial world (each must succeed), then a checkpoint
    with no outside step while it runs, then restart from its image: one scenario."""
    w = initial_world(max_fds)
    for a in actions:
        out, w = apply(w, a)
        if out[0] != "ok":
            raise ValueError(f"{format_action(a)} failed: {out[1]}")
    w = checkpoint.freeze(w, v)
    steps = ([checkpoint.collect, checkpoint.contained] if v.full_container else []) + [
        checkpoint.write, checkpoint.visited]
    for step in steps:
        w = step(w, v)
        if w.cr.phase == FAILED:
            return ScriptOutcome(w.cr.error)
    code, obs, _ = restart(w.cr.image, v, max_fds)
    return ScriptOutcome(0, code, w.cr.snapshot, obs)


# What a restore can get wrong, by name (the aspects CRIU's zdtm tests check one by one).
ASPECTS = ("fds", "cloexec", "flags", "O_LARGEFILE", "offsets", "sharing", "kinds", "paths",
           "peers", "epoll", "owner", "queue")


def restore_differences(snapshot: tuple, restored: tuple) -> tuple[str, ...]:
    """The `ASPECTS` in which the restored tasks differ from the tasks when the image was
    written; ("fds",) alone when the tasks or their descriptor numbers differ."""
    (snap_t, snap_f), (rest_t, rest_f) = snapshot, restored
    if [[d[0] for d in fds] for _, fds in snap_t] != [[d[0] for d in fds] for _, fds in rest_t]:
        return ("fds",)
    settable = O_ACCMODE | SETFL_MASK | O_ASYNC
    out: set[str] = set()
    if [tg for tg, _ in snap_t] != [tg for tg, _ in rest_t]:
        out.add("sharing")
    for (_, fds), (_, fds2) in zip(snap_t, rest_t, strict=True):
        for (_, c, g), (_, c2, g2) in zip(fds, fds2, strict=True):
            if c != c2:
                out.add("cloexec")
            if g != g2:
                out.add("sharing")
    for f, f2 in zip(snap_f, rest_f, strict=False):
        kind, flags, _, pos, path, og, items, owner, rcvq = f
        kind2, flags2, _, pos2, path2, og2, items2, owner2, rcvq2 = f2
        checks = {"kinds": kind != kind2, "flags": (flags ^ flags2) & settable,
                  "O_LARGEFILE": (flags ^ flags2) & O_LARGEFILE, "offsets": pos != pos2,
                  "paths": path != path2, "peers": og != og2, "epoll": items != items2,
                  "owner": owner != owner2, "queue": rcvq != rcvq2}
        out.update(k for k, bad in checks.items() if bad)
    if len(snap_f) != len(rest_f):
        out.add("queue")
    return tuple(a for a in ASPECTS if a in out)


class CrModel:
    """Linux open files + checkpoint/restart, bounded by `cfg`, following design `variant`."""

    def __init__(self, cfg: Config, variant: Variant) -> None:
        self.cfg = cfg
        self.variant = variant
        self.on = cfg.enabled_actions()
        # During a checkpoint outside tasks act, but nothing enters the frozen container.
        self._steps = {
            COLLECTED: checkpoint.contained,
            CHECKED: checkpoint.write,
            WRITTEN: checkpoint.visited,
        }
        names = {"collected": COLLECTED, "checked": CHECKED, "written": WRITTEN}
        self._race = frozenset(names[p] for p in cfg.outside_acts_after)
        self._step_names = {COLLECTED: "contained", CHECKED: "write", WRITTEN: "visited"}

    # --- the checker's interface -------------------------------------------------------------

    def init_states(self) -> list[World]:
        return [initial_world(self.cfg.max_fds)]

    def canonical(self, w: World) -> World:
        return canonical(w)

    def successors(self, w: World) -> Iterator[tuple[tuple, World]]:
        v = self.variant
        for shared, a, x in self.moves(w):
            yield (a, x) if shared else x(v)

    def moves(self, w: World) -> Iterator[tuple[bool, object, object]]:
        """The successors in order, each either shared by every variant, ``(True, action,
        world)``, or a step whose result depends on knobs, ``(False, step name, v -> (action,
        world))`` (its knobs: `step_reads`). Both `successors` and `CrFamily` read this."""
        cr = w.cr
        if not cr:
            if w.steps < self.cfg.env_steps:
                for a, w2 in self._env(w, inside_ok=True):
                    yield True, a, w2._replace(steps=w.steps + 1)
            if any(t.inside for t in w.tasks):
                yield False, "freeze", lambda v: (("freeze",), checkpoint.freeze(w, v))
            return
        phase = cr.phase
        if phase < DONE:
            # Outside tasks act between the phases the config names. Never right after the
            # freeze: what they could do there they could do before it (the freeze changes
            # nothing they see).
            if phase in self._race and cr.ext_steps < self.cfg.checkpoint_steps:
                for a, w2 in self._env(w, inside_ok=False):
                    yield True, a, w2._replace(cr=w2.cr._replace(ext_steps=cr.ext_steps + 1))
            if phase == FROZEN:
                yield False, "frozen", lambda v: _after_freeze(w, v)
            else:
                name = self._step_names[phase]
                step = self._steps[phase]
                yield False, name, lambda v: ((name,), step(w, v))
        elif phase == DONE:
            yield False, "restart", lambda v: (("restart",), _restarted(w, v, self.cfg.max_fds))
            if not cr.tampered:
                for k in TAMPERS:
                    img = tamper(cr.image, k)
                    if img is not None:
                        yield True, ("tamper", k), w._replace(
                            cr=cr._replace(image=img, tampered=k))

    def _env(self, w: World, inside_ok: bool) -> Iterator[tuple[tuple, World]]:
        for t, task in enumerate(w.tasks):
            if task.frozen or (task.inside and not inside_ok):
                continue
            for a in env_actions(w, self.cfg, t, self.on):
                if not inside_ok and a[0] in ("fork", "clone_files") and a[2]:
                    continue  # the container is frozen: nothing new enters it
                _, w2 = apply(w, a)
                if w2 != w:  # a call that changes nothing is not a step
                    yield a, w2

    # --- names and renderings ----------------------------------------------------------------

    def action_name(self, a: tuple) -> str:
        return a[0]

    def all_action_names(self) -> list[str]:
        cr = [a for a in CR_ACTIONS if self.variant.full_container or a not in
              ("collect", "contained")]  # subtree mode has no collect and no check
        return sorted(self.on) + cr

    def fingerprint_salt(self) -> str:
        return f"{self.cfg.key()}|{self.variant.name}|{code_version()}"

    def format_action(self, a: tuple) -> str:
        return format_action(a)

    def describe(self, w: World) -> dict[str, str]:
        return describe(w)

    def state_to_json(self, w: World) -> dict:
        return to_json(w)

    def action_to_json(self, a: tuple) -> dict:
        return {"name": a[0], "args": list(a[1:])}

    def itf_meta(self) -> dict:
        """The variant and bounds, so that `crmodel replay` can rerun the trace."""
        return {"variant": self.variant.name, "config": self.cfg.to_dict()}


def _after_freeze(w: World, v: Variant) -> tuple[tuple, World]:
    """Full-container mode collects next; subtree mode writes at once."""
    if v.full_container:
        return ("collect",), checkpoint.collect(w, v)
    return ("write",), checkpoint.write(w, v)


def _restarted(w: World, v: Variant, max_fds: int) -> World:
    cr = w.cr
    code, obs, files = restart(cr.image, v, max_fds)
    # The image has served: the specs read the snapshot and the restored tasks.
    return w._replace(
        cr=cr._replace(phase=RESTARTED, rst_error=code, restored=obs, rst_files=files, image=())
    )


def step_reads(step: str) -> frozenset[str]:
    """The Variant knobs a variant-dependent step of `CrModel.moves` reads."""
    if step == "frozen":
        return (checkpoint.READS["collect"] | checkpoint.READS["write"]
                | {"full_container"})
    if step == "restart":
        return RESTART_READS
    return checkpoint.READS[step]


STEPS = ("freeze", "frozen", "contained", "write", "visited", "restart")


def checkpoint_knobs(v: Variant) -> tuple:
    """The values of every knob a checkpoint step reads: variants equal here share every
    state up to the end of the checkpoint."""
    names = sorted(set().union(*(step_reads(s) for s in STEPS if s != "restart")))
    return tuple(getattr(v, n) for n in names)


class CrFamily:
    """Several variants under one config, for the checker's family exploration: members
    are numbered in the order given (bit i of a mask is member i). A step that reads knobs is
    computed once per class of the given members agreeing on those knobs (`step_reads`),
    and classes whose results are equal are one successor for all of them."""

    def __init__(self, cfg: Config, variants: list[Variant]) -> None:
        self.cfg = cfg
        self.variants = list(variants)
        self._members = [CrModel(cfg, v) for v in self.variants]
        self._core = self._members[0]
        self._classes: dict[str, list[tuple[int, Variant]]] = {}
        for step in STEPS:
            knobs = sorted(step_reads(step))
            groups: dict[tuple, int] = {}
            for i, v in enumerate(self.variants):
                key = tuple(getattr(v, k) for k in knobs)
                groups[key] = groups.get(key, 0) | 1 << i
            # (class mask, a representative) in member order
            self._classes[step] = [
                (m, self.variants[(m & -m).bit_length() - 1]) for m in groups.values()
            ]

    def members(self) -> list[CrModel]:
        return self._members

    def init_states(self) -> list[World]:
        return self._core.init_states()

    def canonical(self, w: World) -> World:
        return canonical(w)

    def fingerprint_salt(self) -> str:
        return "family|" + "|".join(m.fingerprint_salt() for m in self._members)

    def successors_family(self, w: World, mask: int) -> list[tuple[int, int, tuple, World]]:
        """(members, index, action, successor) for the members of `mask`: each member's
        successors are those with its bit, in index order, exactly its own `successors`."""
        out: list[tuple[int, int, tuple, World]] = []
        k = 0
        for shared, a, x in self._core.moves(w):
            if shared:
                out.append((mask, k, a, x))
            else:
                first = len(out)
                for cm, rep in self._classes[a]:
                    cm &= mask
                    if not cm:
                        continue
                    act, w2 = x(rep)
                    for i in range(first, len(out)):  # equal results: one successor
                        pm, _, pa, pw = out[i]
                        if pa == act and pw == w2:
                            out[i] = (pm | cm, k, act, w2)
                            break
                    else:
                        out.append((cm, k, act, w2))
            k += 1
        return out


def format_action(a: tuple) -> str:
    """`task 1: dup2(0, 2)` for environment calls, `checkpoint: collect` for the rest."""
    name = a[0]
    if name in ("freeze", "collect", "contained", "write", "visited"):
        return f"checkpoint: {name}"
    if name == "restart":
        return "restart from the image"
    if name == "tamper":
        return f"tamper with the image: {TAMPERS[a[1]]}"
    return ACTIONS[name].format(a)


def _file_text(f) -> str:
    parts = [KIND_NAMES[f.kind]]
    if f.path != -1:
        parts.append(path_name(f.kind, f.path))
    parts += [flags_str(f.f_flags), f"mode={fmode_str(f.f_mode)}", f"pos={f.f_pos}"]
    if f.obj >= 0:
        parts.append(f"obj={f.obj}")
    if f.owner:
        parts.append("owner")
    if f.epitems:
        parts.append("watches=" + ",".join(f"file{t}/fd{fd}" for t, fd in f.epitems))
    if f.rcvq:
        parts.append("in-flight=" + ",".join(f"file{x}" for x in f.rcvq))
    return " ".join(parts)


def path_name(kind: int, path: int) -> str:
    """`f0` for a regular file, `q0` for a FIFO, `f0 (deleted)` once unlinked."""
    p = path if path >= 0 else -2 - path
    return f"{'f' if kind == REG else 'q'}{p}" + (" (deleted)" if path < -1 else "")


def describe(w: World) -> dict[str, str]:
    """A flat view (`path -> text`) so a trace can show only what each step changed."""
    d: dict[str, str] = {}
    for i, t in enumerate(w.tasks):
        where = "inside" if t.inside else "outside"
        d[f"task {i}"] = f"{where}{' frozen' if t.frozen else ''}, table {t.table}"
    for ti, table in enumerate(w.tables):
        for fd, s in enumerate(table):
            if s != EMPTY:
                cl = " FD_CLOEXEC" if slot_cloexec(s) else ""
                d[f"table {ti} fd {fd}"] = f"file {slot_file(s)}{cl}"
    for fi, f in enumerate(w.files):
        d[f"file {fi}"] = _file_text(f)
    if w.tasks:
        d["env steps"] = str(w.steps)
    cr = w.cr
    if not cr:
        return d
    err = f" error={_errname(cr.error)}" if cr.error else ""
    d["checkpoint"] = PHASE_NAMES[cr.phase] + err
    for i, e in enumerate(cr.objhash):
        seen = " VISITED" if e.visited else ""
        d[f"objhash objref {i + 1}"] = f"{OBJ_NAMES[e.objtype]} {e.ptr} users={e.users}{seen}"
    for i, r in enumerate(cr.image):
        d[f"image record {i}"] = _record_text(r)
    if cr.leak_check:
        d["written though shared at check"] = _refs(cr.leak_check)
    if cr.leak_write:
        d["written though shared at write"] = _refs(cr.leak_write)
    if cr.tampered:
        d["image tampered"] = TAMPERS[cr.tampered]
    if cr.snapshot:
        d.update(_observation_text("at write", cr.snapshot))
    if cr.phase == RESTARTED:
        d["restart"] = _errname(cr.rst_error) if cr.rst_error else "ok"
        if cr.restored:
            d.update(_observation_text("restored", cr.restored))
    return d


def _record_text(r: tuple) -> str:
    """An image record in words."""
    name = type(r).__name__
    if name == "FileRec":
        kind = KIND_NAMES.get(r.f_type, f"f_type {r.f_type}")
        text = (f"FILE objref {r.objref}: {kind} {flags_str(r.f_flags)} "
                f"mode={fmode_str(r.f_mode)} pos={r.f_pos}")
        if r.obj_ref:
            text += f" on objref {r.obj_ref}"
        if r.peer_ref:
            text += f" peer objref {r.peer_ref}"
        return text
    if name == "FdRec":
        return f"fd {r.fd} -> objref {r.file_ref}" + (" FD_CLOEXEC" if r.cloexec else "")
    if name == "TableRec":
        return f"FILE_TABLE objref {r.objref}, {r.nfds} fds"
    if name == "TaskRec":
        return f"task with table objref {r.files_ref}"
    if name == "EpRec":
        return f"epoll objref {r.ep_ref} watches objref {r.target_ref} fd {r.fd}"
    return repr(r)


def _observation_text(label: str, obs: tuple) -> dict[str, str]:
    """One entry per task descriptor of an observation (model.world.observe)."""
    tasks, files = obs
    d: dict[str, str] = {}
    for i, (tg, fds) in enumerate(tasks):
        for fd, cloexec, g in fds:
            kind, flags, mode, pos, path, og, items = files[g][:7]
            text = f"file #{g} {KIND_NAMES.get(kind, kind)} {flags_str(flags)} pos={pos}"
            if og >= 0:
                text += f" object #{og}"
            if items:
                text += " watches " + ",".join(f"#{t}/fd{x}" for t, x in items)
            d[f"{label}: task {i} (table #{tg}) fd {fd}"] = text + (
                " FD_CLOEXEC" if cloexec else ""
            )
    return d


def _refs(pairs) -> str:
    return ", ".join(f"objref {r} ({OBJ_NAMES[t]})" for r, t in pairs)


def _errname(code: int) -> str:
    import errno

    return "-" + errno.errorcode.get(code, str(code))


def to_json(w: World):
    """Plain JSON data (records as objects, tuples as lists) for ITF traces."""

    def conv(x):
        if hasattr(x, "_asdict"):
            return {k: conv(v) for k, v in x._asdict().items()}
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        return x

    return conv(w)
