"""The notebook API: run a check, read verdicts, load a trace, step through it, draw states.

    from crmodel import notebook as nb
    cfg = nb.config("tiny", kinds=("pipe", "epoll"), inside_tasks=1)
    res = nb.check(cfg, ["linuxcr"], ["leak_detection_sound"])
    res                                   # an HTML table of verdicts in a notebook
    tr = res.trace("linuxcr", "leak_detection_sound")
    len(tr), tr.action_text(3), tr.changes(3), tr.story()
    tr[6]                                 # step 6: picture + tables
    tr.render(6).save("step6.png")

`check` is a thin wrapper over `crmodel.api.check`. A trace comes from a run's row
(`Results.trace`, `from_row`) or from an ITF file written by `crmodel check --traces`
(`load_trace`). An ITF file is turned back into `World` states from its JSON (the JSON that
`model.system.to_json` writes is lossless, so this needs neither the config nor the variant);
when a config is given, the recorded actions are also re-run through the model from its
initial state and must give the very same states, which checks that the file belongs to this
model, config and variant.

States, traces, verdicts and specs show as HTML tables in a notebook (`_repr_html_`); a
`StateView` shows its picture too (`crmodel.render`).
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from checker.trace import Step, decode_itf
from crmodel import api
from crmodel.docs import errname, narrate, story
from crmodel.render import Picture, render_state
from crmodel.validate import UsageError, itf_document, one_line
from model.checkpoint import kernel_count
from model.config import Config, validate
from model.flags import flags_str, fmode_str
from model.image import (
    R_EPITEM,
    R_FD,
    R_FILE,
    R_QUEUE,
    R_TABLE,
    R_TASK,
    EpRec,
    FdRec,
    FileRec,
    QueueRec,
    TableRec,
    TaskRec,
)
from model.state import (
    KIND_NAMES,
    OBJ_NAMES,
    PHASE_NAMES,
    RESTARTED,
    Cr,
    File,
    ObjEntry,
    Task,
    World,
    slot_cloexec,
    slot_file,
)
from model.system import CrModel, describe, format_action
from model.variants import LINUXCR, VARIANTS, Variant
from model.world import f_count, outside_refs
from specs import SPECS

__all__ = [
    "Change",
    "Results",
    "StateView",
    "Table",
    "TraceView",
    "check",
    "config",
    "from_row",
    "load_trace",
    "narrate",
    "render_state",
    "spec",
    "variants",
    "world_from_json",
]

# --- configs and checks ------------------------------------------------------------------


def config(base: str | Config = "tiny", name: str | None = None, **overrides: Any) -> Config:
    """A preset (or a TOML file, or a Config) with some bounds changed:
    `config("tiny", kinds=("pipe",))`.
    Lists are accepted where the Config holds tuples; the result is validated."""
    cfg = api.config(base)  # a preset name, a TOML file or a Config
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if name is None:
        name = cfg.name if not overrides else f"{cfg.name}+" + ",".join(sorted(overrides))
    return validate(dataclasses.replace(cfg, name=name, **fixed))


def check(cfg: str | Config = "tiny", variants: Sequence[str] | str | None = None,
          specs: Sequence[str] | str | None = None, **kw: Any) -> Results:
    """`crmodel.api.check` with the result wrapped for a notebook. `variants` and `specs` may
    be one name; other keywords (jobs, max_states, traces_dir, ...) pass through."""
    if isinstance(variants, str):
        variants = [variants]
    if isinstance(specs, str):
        specs = [specs]
    return Results(api.check(cfg, variants, specs, **kw))


class Results:
    """The verdicts of one check: `verdict(v, s)`, `row(v, s)`, `trace(v, s)`."""

    def __init__(self, report: api.Report) -> None:
        self.report = report
        self.config = report.config
        self.rows: list[api.Row] = report.rows
        self._cell = {(r.variant, r.spec): r for r in report.rows}

    @property
    def ok(self) -> bool:
        """Every verdict as the spec expects."""
        return self.report.ok

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.rows))

    @property
    def specs(self) -> list[str]:
        return list(dict.fromkeys(r.spec for r in self.rows))

    def row(self, variant: str, spec: str) -> api.Row:
        try:
            return self._cell[(variant, spec)]
        except KeyError:
            raise KeyError(f"no result for ({variant!r}, {spec!r}) in this check") from None

    def verdict(self, variant: str, spec: str) -> str:
        return self.row(variant, spec).verdict

    def states(self, variant: str) -> int:
        return self.report.explorations[variant].states

    def trace(self, variant: str, spec: str) -> TraceView:
        """The counterexample (an invariant violated) or witness (reached) as a TraceView."""
        r = self.row(variant, spec)
        if r.trace is None:
            raise ValueError(f"{variant} / {spec}: {r.verdict}, no trace")
        return from_row(r)

    def mismatches(self) -> list[api.Row]:
        return self.report.mismatches()

    def table(self) -> Table:
        return Table([
            {"variant": r.variant, "spec": r.spec, "verdict": r.verdict,
             "expected": r.expected, "trace length": r.trace_length, "states": r.states}
            for r in self.rows
        ])

    def __repr__(self) -> str:
        bad = len(self.mismatches())
        return (f"<Results config={self.config.name} variants={self.variants} "
                f"{len(self.rows)} verdicts, {bad} unexpected>")

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{_e(s)}</th>" for s in self.specs)
        body = []
        for v in self.variants:
            cells = []
            for s in self.specs:
                r = self._cell.get((v, s))
                if r is None:
                    cells.append("<td></td>")
                    continue
                mark = {"holds": "&#10003; holds", "violated": "&#10007; violated"}.get(
                    r.verdict, _e(r.verdict))
                if r.trace_length is not None:
                    mark += f" ({r.trace_length} steps)"
                style = "" if r.matches else ' style="background:#f4b6b6"'
                why = SPECS[s].reason(v)
                title = f"expected {r.expected}" + (f": {why}" if why else "")
                cells.append(f'<td{style} title="{_e(title)}">{mark}</td>')
            body.append(f"<tr><th>{_e(v)}</th><td>{self.states(v):,}</td>{''.join(cells)}</tr>")
        note = ("every verdict as expected" if self.ok else
                f"{len(self.mismatches())} verdict(s) differ from the expectation (red)")
        return (f"<p>config <b>{_e(self.config.name)}</b>: {note}</p>"
                f"<table><tr><th>variant</th><th>states</th>{head}</tr>{''.join(body)}</table>")


# --- traces ------------------------------------------------------------------------------


class Change(NamedTuple):
    """One entry of `model.system.describe` that a step added, changed or removed."""

    key: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"

    def __str__(self) -> str:
        if self.before is None:
            return f"+ {self.key} = {self.after}"
        if self.after is None:
            return f"- {self.key} (was {self.before})"
        return f"  {self.key}: {self.before} -> {self.after}"


def diff(before: World | None, after: World) -> list[Change]:
    """What changed from `before` to `after`, as `describe` entries (all added if None)."""
    old = describe(before) if before is not None else {}
    new = describe(after)
    out = [Change(k, old.get(k), v) for k, v in new.items() if old.get(k) != v]
    out += [Change(k, v, None) for k, v in old.items() if k not in new]
    return out


class TraceView:
    """A run of the model to step through: `len`, `tv[i]` (a StateView), `state(i)`,
    `action(i)`, `action_text(i)`, `changes(i)`, `story()`, `render(i)`."""

    def __init__(self, steps: Sequence[Step], variant: Variant, spec: str | None = None,
                 cfg: Config | None = None, source: str = "") -> None:
        self.steps = list(steps)
        self.variant = variant
        self.spec = spec
        self.config = cfg
        self.source = source

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> StateView:
        i = self._index(i)
        return StateView(self.state(i), self.state(i - 1) if i else None, self.variant,
                         title=self.title(i), index=i)

    def __iter__(self) -> Iterator[StateView]:
        return (self[i] for i in range(len(self)))

    def _index(self, i: int) -> int:
        n = len(self.steps)
        if not -n <= i < n:
            raise IndexError(f"step {i}: the trace has steps 0..{n - 1}")
        return i % n

    def state(self, i: int) -> World:
        return self.steps[self._index(i)].state

    def action(self, i: int) -> tuple | None:
        """The action that led to step i (None for the initial state)."""
        return self.steps[self._index(i)].action

    def action_text(self, i: int) -> str:
        a = self.action(i)
        return "initial state" if a is None else format_action(a)

    def title(self, i: int) -> str:
        return f"step {self._index(i)}: {self.action_text(i)}"

    def changes(self, i: int) -> list[Change]:
        """What step i changed (for step 0: everything in the initial state)."""
        i = self._index(i)
        return diff(self.state(i - 1) if i else None, self.state(i))

    def story(self) -> list[str]:
        """The trace in words, one numbered sentence per step (as docs/findings.md has it)."""
        return story(self.steps, self.variant)

    def render(self, i: int) -> Picture:
        """The picture of step i, changes since step i-1 outlined in green."""
        i = self._index(i)
        return render_state(self.state(i), self.state(i - 1) if i else None, self.variant,
                            self.title(i))

    def text(self) -> str:
        """The trace as the CLI prints it (only what changes)."""
        lines = [f"trace for {self.spec} ({len(self) - 1} steps)"] if self.spec else []
        for i in range(len(self)):
            lines.append(self.title(i))
            lines += [f"  {c}" for c in self.changes(i)] or ["    (no change)"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<TraceView {self.spec or 'trace'} variant={self.variant.name} "
                f"{len(self) - 1} steps>")

    def _repr_html_(self) -> str:
        rows = []
        for i in range(len(self)):
            ch = "<br>".join(_change_html(c) for c in self.changes(i)) or "(no change)"
            rows.append(f"<tr><td>{i}</td><td style='text-align:left'>"
                        f"{_e(self.action_text(i))}</td>"
                        f"<td style='text-align:left;font-family:monospace'>{ch}</td></tr>")
        head = (f"<p>trace for <b>{_e(self.spec or '?')}</b>, variant "
                f"<b>{_e(self.variant.name)}</b>, {len(self) - 1} steps"
                + (f" ({_e(self.source)})" if self.source else "") + "</p>")
        return (head + "<table><tr><th>step</th><th>action</th><th>what changed</th></tr>"
                + "".join(rows) + "</table>")


def from_row(row: api.Row) -> TraceView:
    """The trace of a result row of `crmodel.api.check`."""
    if row.trace is None:
        raise ValueError(f"{row.variant} / {row.spec}: {row.verdict}, no trace")
    m = row.model
    variant = m.variant if m is not None else VARIANTS[row.variant]
    return TraceView(row.trace.steps, variant, row.spec, m.cfg if m is not None else None,
                     source=f"check on {m.cfg.name}" if m is not None else "")


# --- ITF ---------------------------------------------------------------------------------

_RECORDS = {R_TASK: TaskRec, R_TABLE: TableRec, R_FD: FdRec, R_FILE: FileRec, R_EPITEM: EpRec,
            R_QUEUE: QueueRec}


def _tup(x: Any) -> Any:
    """JSON lists back to the tuples the model uses, all the way down."""
    if isinstance(x, list):
        return tuple(_tup(v) for v in x)
    return x


def _record(d: dict) -> tuple:
    return _RECORDS[d["rec"]](**d)


def world_from_json(d: dict[str, Any]) -> World:
    """The `World` that `model.system.to_json` (as decoded by `checker.trace.load_itf`)
    came from."""
    tasks = tuple(Task(**t) for t in d["tasks"])
    tables = _tup(d["tables"])
    files = tuple(File(**{k: _tup(v) for k, v in f.items()}) for f in d["files"])
    cr: Any = ()
    if d["cr"]:
        c = dict(d["cr"])
        fields = {k: _tup(v) for k, v in c.items()}
        fields["objhash"] = tuple(ObjEntry(**e) for e in c["objhash"])
        fields["image"] = tuple(_record(r) for r in c["image"])
        cr = Cr(**fields)
    return World(tasks, tables, files, d["steps"], cr)


def _action(st: dict[str, Any]) -> tuple | None:
    args = st.get("action_args")
    if st.get("action_taken") == "init" or not isinstance(args, dict):
        return None
    return (args["name"], *_tup(args["args"]))


def load_trace(path: str | Path, cfg: str | Config | None = None,
               variant: str | Variant | None = None) -> TraceView:
    """A trace from an ITF file written by `crmodel check --traces`.

    The states are rebuilt from the file's JSON. The variant (for the kernel counts drawn on
    the objhash) defaults to the one in the file name `<variant>__<spec>.itf.json`. With `cfg`,
    the actions are also re-run through the model from its initial state, and a state that
    differs from the file's raises ValueError."""
    p = Path(path)
    raw = itf_document(p)
    if variant is None:
        guess = p.name.split("__")[0]
        variant = VARIANTS.get(guess, LINUXCR)
    elif isinstance(variant, str):
        variant = api.model("tiny", variant).variant
    steps = []
    try:
        doc = decode_itf(raw)
        for st in doc["states"]:
            w = world_from_json({k: st[k] for k in ("tasks", "tables", "files", "steps", "cr")})
            steps.append(Step(_action(st), w))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
        raise UsageError(
            f"trace {str(p)!r}: state {len(steps)} is not a crmodel state "
            f"({type(e).__name__}: {one_line(str(e), 80)}); an ITF trace from "
            "`crmodel check --traces` is wanted") from None
    spec = doc["meta"].get("property")
    conf = None
    if cfg is not None:
        conf = api.config(cfg)
        try:
            replayed = replay(CrModel(conf, variant), [s.action for s in steps[1:]])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise UsageError(f"{p.name}: {one_line(str(e), 120)} when re-run under config "
                             f"{conf.name}, variant {variant.name}") from None
        for i, (a, b) in enumerate(zip(replayed, steps, strict=True)):
            if a.state != b.state:
                raise UsageError(f"{p.name}: step {i} differs when re-run under config "
                                 f"{conf.name}, variant {variant.name}")
    return TraceView(steps, variant, spec, conf, source=p.name)


def replay(model: CrModel, actions: Sequence[tuple]) -> list[Step]:
    """Run `actions` from the model's initial state; each must be enabled where it is taken."""
    w = model.init_states()[0]
    steps = [Step(None, w)]
    for i, a in enumerate(actions, 1):
        nxt = next((s for b, s in model.successors(w) if b == a), None)
        if nxt is None:
            raise ValueError(f"step {i}: {format_action(a)} is not enabled")
        w = nxt
        steps.append(Step(a, w))
    return steps


# --- one state ---------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape(str(x))


def _change_html(c: Change) -> str:
    colour = {"added": "#1b8a2e", "removed": "#c62828", "changed": "#1c4587"}[c.kind]
    return f"<span style='color:{colour}'>{_e(str(c))}</span>"


def _html_table(title: str, head: list[str], rows: list[tuple[list[Any], str]]) -> str:
    """A titled table; each row is (cells, css background or '')."""
    out = [(f"<p><b>{_e(title)}</b></p>" if title else "") + "<table><tr>"
           + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for cells, bg in rows:
        style = f" style='background:{bg}'" if bg else ""
        out.append(f"<tr{style}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


NEW_BG = "#d9f2dc"  # a row that is new or changed in this step
ALERT_BG = "#f4b6b6"  # users differ from the kernel's count


def _observation_rows(obs: tuple, other: tuple | None) -> list[tuple[list[Any], str]]:
    tasks, files = obs
    rows = []
    base: dict[tuple[int, int], tuple] = {}
    if other:
        for i, (_, fds) in enumerate(other[0]):
            for fd, c, g in fds:
                base[(i, fd)] = (c, other[1][g])
    for i, (tg, fds) in enumerate(tasks):
        for fd, cloexec, g in fds:
            kind, flags, mode, pos, path, og, items = files[g][:7]
            cells = [i, tg, fd, "yes" if cloexec else "", g, KIND_NAMES.get(kind, kind),
                     flags_str(flags), pos, "" if og < 0 else og,
                     ", ".join(f"#{t}/fd{x}" for t, x in items)]
            differs = other is not None and base.get((i, fd)) != (cloexec, files[g])
            rows.append((cells, NEW_BG if differs else ""))
    return rows


class StateView:
    """One state: a picture of its object graph and tables of its parts (`_repr_html_`)."""

    def __init__(self, world: World, prev: World | None = None, variant: Variant | None = None,
                 title: str = "", index: int | None = None) -> None:
        self.world = world
        self.prev = prev
        self.variant = variant or LINUXCR
        self.title = title
        self.index = index

    @property
    def changes(self) -> list[Change]:
        return diff(self.prev, self.world)

    def render(self) -> Picture:
        return render_state(self.world, self.prev, self.variant, self.title)

    def describe(self) -> dict[str, str]:
        return describe(self.world)

    def __repr__(self) -> str:
        lines = [self.title or "state"] + [f"  {k} = {v}" for k, v in self.describe().items()]
        return "\n".join(lines)

    def tables_html(self) -> str:
        w, cr = self.world, self.world.cr
        changed = {c.key for c in self.changes} if self.prev is not None else set()

        def bg(key: str) -> str:
            return NEW_BG if key in changed else ""

        parts = []
        if w.tasks:
            parts.append(_html_table("tasks", ["task", "where", "frozen", "fd table"], [
                ([i, "inside" if t.inside else "outside", "yes" if t.frozen else "", t.table],
                 bg(f"task {i}")) for i, t in enumerate(w.tasks)]))
            fds = []
            for ti in sorted({t.table for t in w.tasks}):
                for fd, s in enumerate(w.tables[ti]):
                    if s >= 0:
                        fds.append(([ti, fd, slot_file(s), "yes" if slot_cloexec(s) else ""],
                                    bg(f"table {ti} fd {fd}")))
            parts.append(_html_table("descriptors", ["fd table", "fd", "file", "FD_CLOEXEC"],
                                     fds))
            parts.append(_html_table(
                "open files",
                ["file", "kind", "path", "f_flags", "f_mode", "pos", "f_count", "object",
                 "epoll watches", "in flight"],
                [([fi, KIND_NAMES.get(f.kind, f.kind), "" if f.path < 0 else f"f{f.path}",
                   flags_str(f.f_flags), fmode_str(f.f_mode), f.f_pos, f_count(w, fi),
                   "" if f.obj < 0 else f.obj,
                   ", ".join(f"file {t} (fd {fd})" for t, fd in f.epitems),
                   ", ".join(f"file {x}" for x in f.rcvq)], bg(f"file {fi}"))
                 for fi, f in enumerate(w.files)]))
        if cr:
            parts.append(f"<p>checkpoint: <b>{_e(PHASE_NAMES[cr.phase])}</b>"
                         + (f", error {_e(errname(cr.error))}" if cr.error else "")
                         + (f"; restart: {_e(errname(cr.rst_error)) if cr.rst_error else 'ok'}"
                            if cr.phase == RESTARTED else "") + "</p>")
        if cr and cr.objhash:
            outside = outside_refs(w)
            rows = []
            for i, e in enumerate(cr.objhash):
                kernel = kernel_count(w, self.variant, e.objtype, e.ptr)
                bad = kernel is not None and kernel != e.users
                rows.append(([i + 1, OBJ_NAMES[e.objtype], e.ptr, e.users,
                              "no ref_users" if kernel is None else kernel,
                              "yes" if e.visited else "",
                              "yes" if (e.objtype, e.ptr) in outside else ""],
                             ALERT_BG if bad else bg(f"objhash objref {i + 1}")))
            parts.append(_html_table(
                "objhash (red: users differ from the kernel's count)",
                ["objref", "type", "ptr", "users", "kernel count", "VISITED",
                 "held from outside"], rows))
        if cr and cr.image:
            d = self.describe()
            parts.append(_html_table("image records", ["#", "record"], [
                ([i, d[f"image record {i}"]], bg(f"image record {i}"))
                for i in range(len(cr.image))]))
        head = ["task", "fd table #", "fd", "FD_CLOEXEC", "file #", "kind", "f_flags", "pos",
                "object #", "epoll watches"]
        if cr and cr.snapshot:
            parts.append(_html_table("inside tasks when the image was written", head,
                                     _observation_rows(cr.snapshot, None)))
        if cr and cr.phase == RESTARTED and cr.restored:
            parts.append(_html_table("restored tasks (green: differs from the snapshot)", head,
                                     _observation_rows(cr.restored, cr.snapshot or None)))
        return "".join(parts)

    def _repr_html_(self) -> str:
        png = base64.b64encode(self.render().png()).decode()
        title = f"<h4>{_e(self.title)}</h4>" if self.title else ""
        return (f"{title}<img src='data:image/png;base64,{png}'/>" + self.tables_html())


# --- catalogue helpers -------------------------------------------------------------------


class Table:
    """Rows of dicts shown as an HTML table (and as text outside a notebook)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def _cols(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.rows for k in r))

    def __repr__(self) -> str:
        cols = self._cols()
        return "\n".join([" | ".join(cols)] + [" | ".join(str(r.get(c, "")) for c in cols)
                                               for r in self.rows])

    def _repr_html_(self) -> str:
        cols = self._cols()
        return _html_table("", cols, [([r.get(c, "") for c in cols], "") for r in self.rows])


class SpecView:
    """A spec's statement, detail and expected verdicts."""

    def __init__(self, name: str) -> None:
        self.spec = SPECS[name]

    def __repr__(self) -> str:
        s = self.spec
        dev = "\n".join(f"  {v}: violated ({r})" for v, r in s.deviations.items())
        return f"{s.name} ({s.kind}): {s.statement}\n{s.detail}\napplies: {s.applies}\n{dev}"

    def _repr_html_(self) -> str:
        s = self.spec
        rows = [([v, "violated" if s.kind == "invariant" else "never reached", r], "")
                for v, r in s.deviations.items()]
        detail = f"<p>{_e(s.detail)}</p>" if s.detail else ""
        return (f"<p><b>{_e(s.name)}</b> ({_e(s.kind)}): {_e(s.statement)}</p>{detail}"
                f"<p>applies: {_e(s.applies)}; every other variant: holds</p>"
                + _html_table("expected deviations", ["variant", "expected", "why"], rows))


def spec(name: str) -> SpecView:
    """A spec's documentation, as a notebook shows it."""
    return SpecView(name)


def variants(kind: str | None = None) -> Table:
    """The design variants (of one kind: baseline, fixed, policy, mutant) with their knobs."""
    return Table([
        {"name": v["name"], "kind": v["kind"], "doc": v["doc"],
         "knobs": ", ".join(f"{k}={x}" for k, x in v["knobs"].items())}
        for v in api.variant_list() if kind is None or v["kind"] == kind
    ])
