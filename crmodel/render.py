"""Pictures of model states: the object graph of a `World` drawn with networkx + matplotlib.

`object_graph(w, variant)` turns a state into a networkx DiGraph whose nodes are the kernel
objects (tasks, fd tables, descriptors, open files, pipe inodes / pty pairs / socket pairs, and
during a checkpoint the objhash entries) and whose edges are the references between them;
`render_state(w, prev, variant)` draws it (changes from `prev` outlined in green, objhash
entries whose `users` differ from the kernel's count filled red) and returns a `Picture`, which
a notebook shows as a PNG. Once a checkpoint has ended the model keeps only what the specs read
(the image, the snapshot taken at the write, the restored observation), so the picture shows
the snapshot and the restored tasks as two graphs side by side and lists the image records.

The layout is layered (tasks | fd tables | descriptors | open files | objects | objhash), each
column ordered from the state alone: the same state gives the same picture, byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from checker.graph import state_graph, write_graph
from checker.trace import Step
from model.checkpoint import kernel_count
from model.config import Config
from model.flags import flags_str, fmode_str
from model.state import (
    DONE,
    EMPTY,
    EPOLL,
    FAILED,
    KIND_NAMES,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_NAMES,
    OBJ_SOCK,
    OBJ_TTY,
    PHASE_NAMES,
    PIPE_KINDS,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    RESTARTED,
    TIMERFD,
    UNIX,
    File,
    Task,
    World,
    slot,
    slot_cloexec,
    slot_file,
)
from model.system import CrModel, describe, format_action
from model.variants import LINUXCR, Variant
from model.world import f_count, outside_refs, table_users

# --- the object graph ----------------------------------------------------------------------

TASK, TABLE, FD, FILE, OBJECT, OBJHASH = range(6)
LAYER_NAMES = ("tasks", "fd tables", "descriptors", "open files", "objects", "objhash")

KIND_FILL = {
    REG: "#d9ead3",
    PIPE_R: "#d0e0e3",
    PIPE_W: "#d0e0e3",
    PIPE_RW: "#d0e0e3",
    PTMX: "#ead1dc",
    PTS: "#ead1dc",
    EPOLL: "#fce5cd",
    UNIX: "#d9d2e9",
    TIMERFD: "#eeeeee",
}
FILL = {
    "inside": "#cfe2f3",
    "outside": "#e8e8e8",
    "table": "#fff2cc",
    "fd": "#ffffff",
    "fd_cloexec": "#f6d7b0",
    "object": "#e6e0f8",
    "objhash": "#f3f3f3",
    "mismatch": "#f4b6b6",
    "note": "#fafafa",
}
CHANGED = "#1b8a2e"  # outline of a node that is new or changed since the previous step
ALERT = "#c62828"  # objhash users differ from the kernel's count
EPOLL_EDGE = "#d9822b"
INFLIGHT_EDGE = "#7b3fa0"


def _obj_name(w: World, obj: int) -> str:
    kinds = {f.kind for f in w.files if f.obj == obj}
    if kinds & PIPE_KINDS:
        return f"pipe {obj}"
    if kinds & {PTMX, PTS}:
        return f"pty pair {obj}"
    if UNIX in kinds:
        return f"socket pair {obj}"
    return f"object {obj}"


def _file_lines(w: World, fi: int, f: File, counts: bool) -> list[str]:
    head = f"file {fi}: {KIND_NAMES.get(f.kind, str(f.kind))}"
    if f.kind == REG and f.path >= 0:
        head += f" f{f.path}"
    lines = [head, flags_str(f.f_flags), f"{fmode_str(f.f_mode)} pos={f.f_pos}"]
    if counts:
        lines.append(f"f_count={f_count(w, fi)}" + ("  owner" if f.owner else ""))
    return lines


def object_graph(w: World, variant: Variant | None = None, counts: bool = True) -> nx.DiGraph:
    """The object graph of `w`: one node per kernel object, one edge per reference.

    Node attributes: `layer` (TASK..OBJHASH), `order` (position hint in its column), `lines`
    (the label, one string per line), `fill`, `alert` (objhash users != kernel count),
    `strong` (a frozen task). Edge attributes: `kind` (holds, fd, file, object, epitem,
    inflight), `label`. Epoll items are `epitem` edges: they hold no reference.
    `variant` decides the kernel count of a pipe INODE (only fixed variants give it one);
    `counts=False` leaves out f_count and files->count (an observation has no outside to count
    references from)."""
    v = variant or LINUXCR
    g = nx.DiGraph()
    cr = w.cr
    entries = cr.objhash if cr else ()
    # objhash tags on the objects they name, so that collect shows on the graph itself
    tags: dict[str, list[str]] = {}
    for i, e in enumerate(entries):
        tags.setdefault(_entry_target(w, e.objtype, e.ptr), []).append(
            f"objref {i + 1}" + (" (slave)" if e.objtype == OBJ_TTY and e.ptr & 1 else "")
            + (" (master)" if e.objtype == OBJ_TTY and not e.ptr & 1 else "")
        )

    def add(node: str, layer: int, order: tuple, lines: list[str], fill: str, **kw) -> None:
        g.add_node(node, layer=layer, order=order, lines=lines + tags.get(node, []), fill=fill,
                   alert=kw.get("alert", False), strong=kw.get("strong", False))

    for ti, t in enumerate(w.tasks):
        where = "inside" if t.inside else "outside"
        lines = [f"task {ti}", where + (", FROZEN" if t.frozen else "")]
        add(f"task {ti}", TASK, (ti,), lines, FILL[where], strong=bool(t.frozen))
    seen_tables: list[int] = []
    for t in w.tasks:
        if t.table not in seen_tables:
            seen_tables.append(t.table)
    for e in entries:  # a table only the objhash holds still shows
        if e.objtype == OBJ_FILE_TABLE and e.ptr not in seen_tables:
            seen_tables.append(e.ptr)
    for k, tb in enumerate(seen_tables):
        add(f"table {tb}", TABLE, (k,),
            [f"fd table {tb}"] + ([f"count={table_users(w, tb)}"] if counts else []),
            FILL["table"])
        for fd, s in enumerate(w.tables[tb]):
            if s == EMPTY:
                continue
            node = f"table {tb} fd {fd}"
            cloexec = slot_cloexec(s)
            add(node, FD, (k, fd), [f"fd {fd}" + (" CLOEXEC" if cloexec else "")],
                FILL["fd_cloexec" if cloexec else "fd"])
            g.add_edge(f"table {tb}", node, kind="fd", label="")
    for ti, t in enumerate(w.tasks):
        g.add_edge(f"task {ti}", f"table {t.table}", kind="holds", label="")
    # files in first-encounter order from the descriptors, then any others (in flight)
    order: list[int] = []
    for tb in seen_tables:
        for s in w.tables[tb]:
            if s != EMPTY and slot_file(s) not in order:
                order.append(slot_file(s))
    order += [fi for fi in range(len(w.files)) if fi not in order]
    for k, fi in enumerate(order):
        f = w.files[fi]
        add(f"file {fi}", FILE, (k,), _file_lines(w, fi, f, counts),
            KIND_FILL.get(f.kind, "#ffffff"))
    for tb in seen_tables:
        for fd, s in enumerate(w.tables[tb]):
            if s != EMPTY:
                g.add_edge(f"table {tb} fd {fd}", f"file {slot_file(s)}", kind="file", label="")
    objs: list[int] = []
    for fi in order:
        o = w.files[fi].obj
        if o >= 0 and o not in objs:
            objs.append(o)
    for k, o in enumerate(objs):
        add(f"obj {o}", OBJECT, (k,), [_obj_name(w, o)], FILL["object"])
    for fi in order:
        f = w.files[fi]
        if f.obj >= 0:
            side = {PTMX: "master", PTS: "slave"}.get(f.kind, "")
            g.add_edge(f"file {fi}", f"obj {f.obj}", kind="object", label=side)
        for target, fd in f.epitems:
            g.add_edge(f"file {fi}", f"file {target}", kind="epitem", label=f"watch fd {fd}")
        for x in f.rcvq:
            g.add_edge(f"file {fi}", f"file {x}", kind="inflight", label="in flight")
    outside = outside_refs(w) if entries else set()
    for i, e in enumerate(entries):
        kernel = kernel_count(w, v, e.objtype, e.ptr)
        alert = kernel is not None and kernel != e.users
        lines = [f"objref {i + 1}: {OBJ_NAMES[e.objtype]} ({_entry_name(w, e.objtype, e.ptr)})",
                 f"users={e.users}  " + ("not compared (no ref_users)" if kernel is None
                                         else f"kernel={kernel}")]
        flags = []
        if e.visited:
            flags.append("VISITED")
        if (e.objtype, e.ptr) in outside:
            flags.append("HELD FROM OUTSIDE")
        if flags:
            lines.append(" ".join(flags))
        add(f"objref {i + 1}", OBJHASH, (i,), lines,
            FILL["mismatch" if alert else "objhash"], alert=alert)
    return g


def _entry_target(w: World, objtype: int, ptr: int) -> str:
    """The node an objhash entry stands for."""
    if objtype == OBJ_FILE_TABLE:
        return f"table {ptr}"
    if objtype in (OBJ_FILE, OBJ_SOCK):
        return f"file {ptr}"
    if objtype == OBJ_INODE:
        return f"obj {ptr}"
    if objtype == OBJ_TTY:
        return f"obj {ptr >> 1}"
    return f"{OBJ_NAMES.get(objtype, objtype)} {ptr}"


def _entry_name(w: World, objtype: int, ptr: int) -> str:
    """What an objhash entry names, in the picture's words."""
    if objtype == OBJ_FILE_TABLE:
        return f"fd table {ptr}"
    if objtype == OBJ_FILE:
        return f"file {ptr}"
    if objtype == OBJ_SOCK:
        return f"socket of file {ptr}"
    if objtype == OBJ_INODE:
        return f"pipe {ptr}"
    if objtype == OBJ_TTY:
        return f"pty {ptr >> 1} {'slave' if ptr & 1 else 'master'}"
    return f"{OBJ_NAMES.get(objtype, objtype)} {ptr}"


def observation_world(obs: tuple) -> World:
    """A `World` holding just the tasks of an observation (`model.world.observe`): the snapshot
    taken at the write or the restored tasks, so they can be drawn like any state. Internal ids
    are the observation's group numbers; epoll items on a file outside the tasks are dropped."""
    tasks, files = obs
    ntables = 1 + max((tg for tg, _ in tasks), default=-1)
    width = 1 + max((fd for _, fds in tasks for fd, _, _ in fds), default=0)
    tables = [[EMPTY] * width for _ in range(ntables)]
    for tg, fds in tasks:
        for fd, cloexec, gi in fds:
            tables[tg][fd] = slot(gi, cloexec)
    out_files = tuple(
        File(kind, path, og, flags, mode, pos, owner, tuple((t, fd) for t, fd in items if t >= 0),
             rcvq)
        for kind, flags, mode, pos, path, og, items, owner, rcvq in files
    )
    return World(tuple(Task(1, 0, tg) for tg, _ in tasks), tuple(map(tuple, tables)), out_files,
                 0)


def changed_nodes(g: nx.DiGraph, before: nx.DiGraph | None) -> set[str]:
    """Nodes that are new in `g` or whose label differs from `before` (None: nothing)."""
    if before is None:
        return set()
    return {n for n, a in g.nodes(data=True)
            if n not in before or before.nodes[n]["lines"] != a["lines"]}


# --- layout ------------------------------------------------------------------------------
# Everything is measured in inches (the figure is sized to the layout), so text sizes and box
# sizes agree whatever the state.

FONT = 7.5
LINE_H = 0.145
PAD_H = 0.1
GAP = 0.09
LAYER_W = (1.2, 1.05, 1.05, 1.75, 1.1, 2.25)
LAYER_GAP = (0.35, 0.3, 0.45, 0.75, 0.3, 0.3)  # after each layer; wide where arcs go


def _box_h(lines: list[str]) -> float:
    return len(lines) * LINE_H + PAD_H


def _spread(items: list[tuple[float, float, str]], top: float) -> dict[str, float]:
    """Centres for boxes `(desired centre, height, node)` kept in the order of their desired
    centres (ties by node order) without overlapping, never above `top`."""
    items = sorted(items, key=lambda x: x[0])
    out: dict[str, float] = {}
    last_bottom = top
    for want, h, n in items:
        y = max(want, last_bottom + GAP + h / 2)
        out[n] = y
        last_bottom = y + h / 2
    return out


@dataclass
class _Panel:
    """One graph drawn in a rectangle of the figure."""

    title: str
    graph: nx.DiGraph
    highlight: set[str]
    pos: dict[str, tuple[float, float]] = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0
    layer_x: dict[int, float] = field(default_factory=dict)


def _layout(p: _Panel) -> None:
    g = p.graph
    layers = sorted({a["layer"] for _, a in g.nodes(data=True)})
    x = 0.0
    for layer in range(OBJHASH + 1):
        if layer in layers:
            p.layer_x[layer] = x + LAYER_W[layer] / 2
            x += LAYER_W[layer] + LAYER_GAP[layer]
    p.width = max(x - LAYER_GAP[layers[-1]], 2.0) if layers else 2.0
    if layers and layers[-1] == FILE and any(
        a["kind"] in ("epitem", "inflight") for *_, a in g.edges(data=True)
    ):
        p.width += 0.9  # the arcs right of the files, and their labels
    nodes = {layer: sorted((n for n, a in g.nodes(data=True) if a["layer"] == layer),
                           key=lambda n: g.nodes[n]["order"]) for layer in layers}
    h = {n: _box_h(a["lines"]) for n, a in g.nodes(data=True)}
    y: dict[str, float] = {}
    top = 0.0
    # descriptors first, a fixed pitch per table, a gap between tables
    fy, last_table = top, None
    for n in nodes.get(FD, []):
        tb = n.rsplit(" fd ", 1)[0]
        if last_table is not None and tb != last_table:
            fy += 0.25
        last_table = tb
        y[n] = fy + h[n] / 2
        fy += max(h[n], 0.55) + GAP  # room for the taller file boxes they point to

    def mean(ns: Iterable[str], default: float) -> float:
        vals = [y[m] for m in ns if m in y]
        return sum(vals) / len(vals) if vals else default

    # tables at the middle of their descriptors, tasks at their table, files at the
    # descriptors that point to them, objects at their files; then no overlaps
    for layer, refs in ((TABLE, "succ"), (TASK, "succ"), (FILE, "pred"), (OBJECT, "pred")):
        items = []
        for k, n in enumerate(nodes.get(layer, [])):
            near = g.successors(n) if refs == "succ" else g.predecessors(n)
            near = [m for m in near if g.nodes[m]["layer"] != layer]
            items.append((mean(near, top + k * 0.6) + k * 1e-6, h[n], n))
        y.update(_spread(items, top - GAP))
    oy = top
    for n in nodes.get(OBJHASH, []):
        y[n] = oy + h[n] / 2
        oy += h[n] + GAP
    p.height = max((y[n] + h[n] / 2 for n in y), default=0.5)
    p.pos = {n: (p.layer_x[g.nodes[n]["layer"]], y[n]) for n in g.nodes}


# --- drawing -----------------------------------------------------------------------------

TITLE_H = 0.45
NOTE_H = FONT * 1.2 * 1.2 / 72  # one line of the notes block, in inches
MARGIN = 0.25


@dataclass
class Picture:
    """A rendered figure; a notebook shows it as a PNG (`_repr_png_`)."""

    figure: Figure

    def png(self, dpi: int = 110) -> bytes:
        buf = io.BytesIO()
        # no metadata: the same state gives the same bytes on every run
        self.figure.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        return buf.getvalue()

    def save(self, path: str | Path, dpi: int = 110) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.png(dpi))
        return p

    def _repr_png_(self) -> bytes:
        return self.png()


def _free_spot(placed: list[tuple[float, float, float]], x: float, y: float,
               width: float) -> float:
    """A y near `y` where a label from `x` to `x + width` overlaps none already placed."""
    while any(x < b and a < x + width and abs(y - py) < 0.14 for a, b, py in placed):
        y += 0.15
    placed.append((x, x + width, y))
    return y


def _draw_panel(ax, p: _Panel, x0: float, y0: float) -> None:
    g = p.graph
    ax.text(x0, y0 - 0.12, p.title, fontsize=FONT + 1.5, fontweight="bold", va="bottom",
            ha="left")
    boxes: dict[str, FancyBboxPatch] = {}
    placed: list[tuple[float, float, float]] = []  # arc labels drawn: (x from, x to, y)
    for layer, lx in p.layer_x.items():
        ax.text(x0 + lx, y0 + 0.06, LAYER_NAMES[layer], fontsize=FONT - 0.5, color="#666666",
                ha="center", va="bottom", style="italic")
    for n, a in g.nodes(data=True):
        cx, cy = p.pos[n]
        w, h = LAYER_W[a["layer"]], _box_h(a["lines"])
        cx, cy = x0 + cx, y0 + 0.3 + cy
        edge, lw = "#555555", 0.8
        if a["strong"]:
            edge, lw = "#1c4587", 1.8
        if a["alert"]:
            edge, lw = ALERT, 2.0
        if n in p.highlight:
            edge, lw = CHANGED, 2.6
        box = FancyBboxPatch((cx - w / 2, cy - h / 2), w, h,
                             boxstyle="round,pad=0,rounding_size=0.06", fc=a["fill"], ec=edge,
                             lw=lw, zorder=2)
        ax.add_patch(box)
        boxes[n] = box
        ax.text(cx, cy, "\n".join(a["lines"]), fontsize=FONT, ha="center", va="center",
                linespacing=1.15, zorder=3, family="DejaVu Sans")
    for u, v, a in g.edges(data=True):
        kind = a["kind"]
        style = dict(arrowstyle="-|>", mutation_scale=8, lw=0.9, color="#444444",
                     patchA=boxes[u], patchB=boxes[v], zorder=1)
        if kind == "fd":
            style.update(arrowstyle="-", color="#999999")
        elif kind == "epitem":
            style.update(linestyle=(0, (4, 2.5)), color=EPOLL_EDGE, lw=1.2,
                         connectionstyle="arc3,rad=-0.55")
        elif kind == "inflight":
            style.update(linestyle=(0, (1, 1.5)), color=INFLIGHT_EDGE, lw=1.4,
                         connectionstyle="arc3,rad=-0.55")
        (ux, uy), (vx, vy) = p.pos[u], p.pos[v]
        if kind in ("epitem", "inflight"):
            # same column: leave and enter by the right-hand side, bulging right
            wu = LAYER_W[g.nodes[u]["layer"]] / 2
            a_pt = (x0 + ux + wu, y0 + 0.3 + uy)
            b_pt = (x0 + vx + wu, y0 + 0.3 + vy)
            style.update(patchA=None, patchB=None, shrinkA=1, shrinkB=1)
            if u == v:  # a socket whose own queue holds its file: a loop on its side
                a_pt = (a_pt[0], a_pt[1] - 0.12)
                b_pt = (b_pt[0], b_pt[1] + 0.12)
                style["connectionstyle"] = "arc3,rad=-1.8"
            elif uy > vy:
                style["connectionstyle"] = "arc3,rad=0.55"
            arrow = FancyArrowPatch(a_pt, b_pt, **style)
            # the label sits at the middle of the arc (a quadratic Bezier: half the bulge)
            rad = abs(float(style["connectionstyle"].split("=")[1]))
            mx = a_pt[0] + 0.5 * rad * abs(b_pt[1] - a_pt[1]) + 0.04
            my = _free_spot(placed, mx, (a_pt[1] + b_pt[1]) / 2, len(a["label"]) * 0.055)
            ax.text(mx, my, a["label"], fontsize=FONT - 1,
                    color=style["color"], ha="left", va="center", zorder=4,
                    bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.85))
        else:
            arrow = FancyArrowPatch((x0 + ux, y0 + 0.3 + uy), (x0 + vx, y0 + 0.3 + vy),
                                    **style)
            if a["label"]:
                ax.text(x0 + (ux + vx) / 2, y0 + 0.3 + (uy + vy) / 2 - 0.05, a["label"],
                        fontsize=FONT - 1.5, color="#555555", ha="center", va="bottom",
                        zorder=3)
        ax.add_patch(arrow)


def _note_lines(title: str, rows: list[str]) -> list[str]:
    return [title] + [f"  {r}" for r in rows]


def _panels(w: World, prev: World | None, variant: Variant | None) -> tuple[list[_Panel],
                                                                                list[str]]:
    """The graphs to draw for `w` and the text block (image records, outcome) under them."""
    cr = w.cr
    notes: list[str] = []
    panels: list[_Panel] = []
    if w.tasks or not cr:
        g = object_graph(w, variant)
        before = object_graph(prev, variant) if prev is not None and prev.tasks else None
        title = "the system" + (f" (checkpoint: {PHASE_NAMES[cr.phase]})" if cr else "")
        panels.append(_Panel(title, g, changed_nodes(g, before)))
    else:  # the checkpoint has ended: only what the specs read is left
        if cr.snapshot:
            g = object_graph(observation_world(cr.snapshot), counts=False)
            before = None
            if prev is not None and prev.cr and prev.cr.snapshot:
                before = object_graph(observation_world(prev.cr.snapshot), counts=False)
            panels.append(_Panel("inside tasks when the image was written", g,
                                 changed_nodes(g, before)))
        if cr.phase == RESTARTED and cr.restored:
            g = object_graph(observation_world(cr.restored), counts=False)
            base = (object_graph(observation_world(cr.snapshot), counts=False)
                    if cr.snapshot else None)
            panels.append(_Panel("restored tasks (green: differs from the snapshot)", g,
                                 changed_nodes(g, base)))
    if cr:
        d = describe(w)
        status = d.get("checkpoint", "")
        if cr.phase == FAILED:
            status += "  (nothing the container uses was shared with outside)" if cr.clean \
                else "  (something the container uses was shared with outside)"
        if cr.phase == RESTARTED:
            status += f"; restart: {d.get('restart', '')}"
        if cr.tampered:
            status += f"; image tampered: {d.get('image tampered', '')}"
        if cr.phase >= DONE:  # before that the panel's title says the phase
            notes.append(f"checkpoint: {status}")
        for key in ("written though shared at check", "written though shared at write"):
            if key in d:
                notes.append(f"{key}: {d[key]}")
        recs = [v for k, v in d.items() if k.startswith("image record ")]
        if recs:
            notes += _note_lines("image records:", [f"{i}: {r}" for i, r in enumerate(recs)])
    return panels, notes


def render_state(w: World, prev: World | None = None, variant: Variant | None = None,
                 title: str = "") -> Picture:
    """Draw `w` (changes since `prev` outlined in green) and return the picture."""
    panels, notes = _panels(w, prev, variant)
    for p in panels:
        _layout(p)
    gap = 0.6
    width = sum(p.width for p in panels) + gap * max(len(panels) - 1, 0)
    graphs_h = max((p.height + 0.45 for p in panels), default=0.0)
    notes_h = len(notes) * NOTE_H + (0.2 if notes else 0)
    legend = ("green outline: new or changed in this step    red: objhash users differ from "
              "the kernel's count    dashed orange: epoll item (holds no reference)    "
              "dotted purple: SCM_RIGHTS in flight    blue outline: frozen task")
    width = max(width, len(legend) * 0.047, max((len(n) for n in notes), default=0) * 0.062)
    height = TITLE_H + graphs_h + notes_h + 0.2
    fig = Figure(figsize=(width + 2 * MARGIN, height + 2 * MARGIN))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-MARGIN, width + MARGIN)
    ax.set_ylim(height + MARGIN, -MARGIN)  # y grows downwards, in inches
    ax.axis("off")
    if title:
        ax.text(0, 0.05, title, fontsize=FONT + 3, fontweight="bold", va="top", ha="left")
    x = 0.0
    for p in panels:
        _draw_panel(ax, p, x, TITLE_H + 0.1)
        x += p.width + gap
    if notes:
        ax.text(0, TITLE_H + graphs_h + 0.2, "\n".join(notes), fontsize=FONT,
                family="DejaVu Sans Mono", va="top", ha="left", linespacing=1.2)
    ax.text(0, height + 0.05, legend, fontsize=FONT - 1, color="#555555", va="bottom",
            ha="left")
    return Picture(fig)


# --- state-space graphs ------------------------------------------------------------------


def _state_label(w: World, lines: int = 24) -> str:
    items = [f"{k}={v}" for k, v in describe(w).items()]
    if len(items) > lines:  # as checker.graph labels: long states are cut
        items = items[: lines - 1] + [f"... ({len(items) - lines + 1} more)"]
    return "\n".join(items)


def neighbourhood_graph(model: CrModel, steps: Sequence[Step]) -> nx.DiGraph:
    """The states of a trace and their direct successors, as `checker.graph.state_graph`
    gives a whole space: nodes are canonical states numbered trace first (attributes `depth`,
    `fingerprint`, `label`, `initial`, `state`, plus `trace_step`, -1 off the trace), edges
    carry `action`, `label`, `count` and `on_trace`; the trace is coloured red for DOT."""
    g = nx.DiGraph()
    ids: dict[World, int] = {}

    def node(w: World, depth: int, step: int) -> int:
        c = model.canonical(w)
        if c not in ids:
            ids[c] = len(ids)
            g.add_node(ids[c], depth=depth, fingerprint=format(hash(c) & (2**60 - 1), "015x"),
                       label=_state_label(c), initial=depth == 0 and step == 0, state=c,
                       trace_step=step, color="red" if step >= 0 else "black")
        return ids[c]

    trace_ids = [node(s.state, i, i) for i, s in enumerate(steps)]
    for i, s in enumerate(steps):
        src = trace_ids[i]
        for a, w2 in model.successors(s.state):
            dst = node(w2, i + 1, -1)
            text = format_action(a)
            on = i + 1 < len(steps) and a == steps[i + 1].action
            if g.has_edge(src, dst):
                e = g.edges[src, dst]
                e["label"] += "; " + text
                e["count"] += 1
                e["on_trace"] = e["on_trace"] or on
            else:
                g.add_edge(src, dst, action=text, label=text, count=1, on_trace=on)
            if on:  # DOT viewers draw the trace in red
                g.edges[src, dst].update(color="red", penwidth=2)
    return g


def export_graph(cfg: Config, variant: Variant, out: str | Path,
                 trace: Sequence[Step] | None = None, max_states: int = 10_000,
                 max_depth: int | None = None) -> nx.DiGraph:
    """Write the state space of `cfg` under `variant` (or, given a trace, its neighbourhood)
    to `out` (.graphml or .dot) and return the graph."""
    model = CrModel(cfg, variant)
    if trace is None:
        g = state_graph(model, max_states=max_states, max_depth=max_depth)
    else:
        g = neighbourhood_graph(model, trace)
    write_graph(g, out)
    return g
