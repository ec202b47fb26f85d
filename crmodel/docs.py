"""Documentation generated from the specs and the checker's findings.

`docs/catalogue.md`: the invariant catalogue: per spec its statement (the docstring's first
paragraph), the rest of the docstring, its kind, what it applies to and the verdict expected
under each variant with the reason; the variant table; the lemmas of `specs/lemmas.py`.
It depends only on the source, so `tests/test_docs.py` regenerates it and compares bytes.

`docs/findings.md`: per variant the verdicts on the `tiny` preset and, for each violated
invariant, the shortest counterexample in words (`narrate`, one sentence per step) with the
reason the spec gives. It needs a run of every variant (a few minutes with two processes), so
the test compares each variant's section with one generated from the explorations the spec
suite shares (`tiny_rows` in `tests/conftest.py`).

Nothing generated carries a time or a timing: the same source gives the same bytes.

    python -m crmodel.docs                 # both pages
    python -m crmodel.docs --catalogue     # the catalogue only (fast)
    python -m crmodel.docs --check         # exit 1 when a page differs from the source
"""

from __future__ import annotations

import errno
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import click

from model.actions import ACTIONS
from model.checkpoint import kernel_count
from model.config import PRESETS
from model.env import apply
from model.flags import flags_str
from model.state import DONE, FAILED, KIND_NAMES, OBJ_INODE, OBJ_NAMES, RESTARTED, World, slot_file
from model.system import format_action, restore_differences, run_script
from model.variants import LINUXCR, VARIANTS, Variant, knobs
from specs import SPECS, Spec
from specs.scenarios import SCENARIOS, Scenario

DOCS = Path(__file__).resolve().parent.parent / "docs"
FINDINGS_CONFIG = "tiny"
REGENERATE = "python -m crmodel.docs"

# --- a trace in words --------------------------------------------------------------------


def errname(code: int) -> str:
    return "-" + errno.errorcode.get(code, str(code))


def _who(w: World, t: int) -> str:
    if 0 <= t < len(w.tasks):
        return f"task {t} ({'inside' if w.tasks[t].inside else 'outside'})"
    return f"task {t}"


def narrate(before: World, action: tuple | None, after: World,
            variant: Variant | None = None) -> str:
    """One sentence for a step: who did what, and what came of it. `variant` says which
    objects the contained check compares (a pipe inode only under the pipe fix)."""
    if action is None:
        return "the initial state: one task outside the container, no open files"
    name = action[0]
    cr = after.cr
    if name == "freeze":
        return "the checkpointer freezes the container's tasks (outside tasks keep running)"
    v = variant or LINUXCR
    if name == "collect":
        n = len(cr.objhash) if cr else 0
        return (f"collect walks the container's fd tables and files into the objhash ({n} "
                f"object{'s' if n != 1 else ''}), counting `users` for every reference found")
    if name == "contained":
        if cr and cr.phase == FAILED:
            bad = [(i + 1, e, k) for i, e in enumerate(before.cr.objhash if before.cr else ())
                   if (k := kernel_count(before, v, e.objtype, e.ptr)) is not None
                   and k != e.users]
            what = "an object" if not bad else (
                f"objref {bad[0][0]} ({OBJ_NAMES[bad[0][1].objtype]}) with `users` "
                f"{bad[0][1].users} but a kernel count of {bad[0][2]}")
            return (f"the contained check finds {what}: the checkpoint fails with "
                    f"{errname(cr.error)}")
        skipped = [e for e in (before.cr.objhash if before.cr else ())
                   if kernel_count(before, v, e.objtype, e.ptr) is None]
        text = ("the contained check passes: every object it compares has `users` equal to "
                "its kernel count")
        if skipped and any(e.objtype == OBJ_INODE for e in skipped):
            text += " (a pipe inode has no ref_users: it is not compared)"
        return text
    if name == "write":
        if cr and cr.phase == FAILED:
            return f"writing the image fails with {errname(cr.error)}"
        return "the image is written"
    if name == "visited":
        if cr and cr.phase == DONE:
            return "the final checks pass: the checkpoint succeeds with an image"
        return f"the final checks fail with {errname(cr.error) if cr else '?'}"
    if name == "restart":
        if cr and cr.phase == RESTARTED and cr.rst_error:
            return f"restart from the image fails with {errname(cr.rst_error)}"
        return "restart from the image succeeds"
    if name == "tamper":
        return f"the image is altered before restart: {format_action(action).split(': ')[-1]}"
    return _narrate_call(before, action)


def _narrate_call(before: World, action: tuple) -> str:
    """A system call by a task, with what it returned (re-run on the state before)."""
    name, t = action[0], action[1]
    a = ACTIONS[name].args(action)  # the arguments by their declared names
    who = _who(before, t)
    out, _ = apply(before, action)
    val = out[1] if out[0] == "ok" else None
    if name in ("fork", "clone_files"):
        where = "into the container" if a["ch_in"] else "outside the container"
        if name == "fork":
            return f"{who} forks a child {where} (task {val}) with a copy of its fd table"
        return (f"{who} clones a child {where} (task {val}) that shares its fd table "
                "(CLONE_FILES)")
    if name == "open":
        fl = flags_str(a["acc"] | a["oflags"]) + ("|O_CLOEXEC" if a["cl"] else "")
        return f"{who} opens f{a['path']} with {fl} and gets fd {val}"
    if name == "reopen":
        target, fd, acc = a["t2"], a["fd2"], a["acc"]
        src = before.files[slot_file(before.tables[before.tasks[target].table][fd])]
        return (f"{who} opens /proc/<task {target}>/fd/{fd} with {flags_str(acc)}: a new open "
                f"file on the same {KIND_NAMES[src.kind]} object, fd {val}")
    simple: dict[str, Callable[[], str]] = {
        "close": lambda: f"closes fd {a['fd']}",
        "dup": lambda: f"dups fd {a['fd']} to fd {val} (the same open file)",
        "dup2": lambda: f"dup2s fd {a['fd']} onto fd {a['fd2']}",
        "setfl": lambda: f"sets the status flags of fd {a['fd']} to {flags_str(a['arg'])} "
        "with F_SETFL",
        "setfd": lambda: f"{'sets' if a['cl'] else 'clears'} FD_CLOEXEC on fd {a['fd']}",
        "setown": lambda: f"makes itself the owner of fd {a['fd']} (F_SETOWN)",
        "lseek": lambda: f"seeks fd {a['fd']} to offset {a['pos']}",
        "exec": lambda: "calls execve: its close-on-exec descriptors are closed",
        "exit": lambda: "exits",
        "pipe": lambda: f"calls pipe(): read end fd {val[0]}, write end fd {val[1]}",
        "openpty": lambda: f"calls openpty(): master fd {val[0]}, slave fd {val[1]}",
        "socketpair": lambda: f"calls socketpair(): fds {val[0]} and {val[1]}",
        "epoll_create": lambda: f"calls epoll_create(): fd {val}",
        "timerfd": lambda: f"creates a timerfd (its f_op has no ->checkpoint in Linux-CR): fd "
        f"{val}",
        "epoll_add": lambda: f"adds fd {a['fd2']} to the epoll at fd {a['fd']} (epoll_ctl ADD)",
        "epoll_del": lambda: f"removes fd {a['fd2']} from the epoll at fd {a['fd']} "
        "(epoll_ctl DEL)",
        "sendmsg": lambda: f"sends fd {a['fd2']} over the socket at fd {a['fd']} (SCM_RIGHTS): "
        "the file is in flight",
        "recvmsg": lambda: f"receives the in-flight file on the socket at fd {a['fd']}",
        "open_fifo": lambda: f"opens the FIFO q{a['path']} with "
        f"{flags_str(a['acc'] | a['oflags'])} and gets fd {val}",
        "unlink": lambda: f"unlinks {'q' if a['fifo'] else 'f'}{a['path']} and makes the name "
        "again: the files open on the old one are now nameless",
    }
    if name in simple:
        return f"{who} {simple[name]()}"
    return f"{who}: {format_action(action)}"


def story(steps: list, variant: Variant | None = None) -> list[str]:
    """Numbered sentences for a trace's steps (`checker.trace.Step`s), the initial state
    left out."""
    return [f"{i}. {narrate(steps[i - 1].state, steps[i].action, steps[i].state, variant)}"
            for i in range(1, len(steps))]


# --- the catalogue -----------------------------------------------------------------------


def _md(text: str) -> str:
    """One paragraph of docstring text on one line (Markdown reflows anyway)."""
    return " ".join(text.split())


def _paragraphs(text: str) -> list[str]:
    return [_md(p) for p in text.split("\n\n") if p.strip()]


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|")


def _spec_section(s: Spec) -> list[str]:
    names = {"invariant": ("hold", "violated"), "reachable": ("be reached", "never reached")}
    good, bad = names[s.kind]
    out = [f"### `{s.name}`", "", f"**{s.statement}**", ""]
    for p in _paragraphs(s.detail):
        out += [p, ""]
    out += [f"- kind: {'invariant' if s.kind == 'invariant' else 'witness (must be reached)'}",
            f"- applies: {s.applies}", ""]
    holds = [v for v in VARIANTS if v not in s.deviations]
    if s.deviations:
        out += ["| variant | expected | why |", "|---|---|---|"]
        for v, why in s.deviations.items():
            known = "" if v in VARIANTS else " (not a known variant)"
            out.append(f"| `{v}`{known} | {bad} | {_cell(why)} |")
        out.append("")
    out += [f"Expected to {good} under every other variant ({len(holds)}): "
            + ", ".join(f"`{v}`" for v in holds) + ".", ""]
    return out


def _lemmas() -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, statement, the properties whose proofs use it) of the lemmas in
    `specs/lemmas.py`: its `LEMMAS` registry if it has one, else its public functions."""
    from specs import lemmas

    found = getattr(lemmas, "LEMMAS", None)
    items: list[tuple[str, object]] = []
    if isinstance(found, Mapping):
        items = list(found.items())
    else:
        items = [(n, f) for n, f in vars(lemmas).items()
                 if inspect.isfunction(f) and f.__module__ == lemmas.__name__
                 and not n.startswith("_")]
    out = []
    for name, obj in items:
        doc = getattr(obj, "doc", None)
        if not isinstance(doc, str):  # a plain function: its own docstring
            doc = inspect.getdoc(obj) if inspect.isfunction(obj) else ""
        props = tuple(getattr(obj, "properties", ()) or ())
        out.append((str(name), _paragraphs(doc or "")[0] if (doc or "").strip() else "", props))
    return out


def catalogue() -> str:
    """The invariant catalogue as Markdown."""
    invariants = [s for s in SPECS.values() if s.kind == "invariant"]
    witnesses = [s for s in SPECS.values() if s.kind != "invariant"]
    out = [
        "# Invariant catalogue",
        "",
        f"Generated from `specs/` and `model/variants.py` by `{REGENERATE}`; do not edit by "
        "hand (`tests/test_docs.py` fails when this page and the source differ).",
        "",
        "Each spec is a predicate over model states. An invariant must hold in every reachable "
        "state; a witness must hold in some reachable state (so that no invariant holds only "
        "because its situation never arises). Each names the variants expected to deviate and "
        "why; the verdicts actually found are in [findings.md](findings.md).",
        "",
        "## Invariants",
        "",
    ]
    out += [f"- [`{s.name}`](#{s.name}): {s.statement}" for s in invariants]
    out += ["", "## Witnesses", ""]
    out += [f"- [`{s.name}`](#{s.name}): {s.statement}" for s in witnesses]
    out += [""]
    for s in invariants + witnesses:
        out += _spec_section(s)
    out += ["## Variants", "",
            "Knobs are the settings that differ from `linuxcr`; a mutant's base is the variant "
            "its single bug is made in.", "",
            "| variant | kind | base | what it is | knobs |", "|---|---|---|---|---|"]
    for v in VARIANTS.values():
        k = ", ".join(f"`{n}={x}`" for n, x in knobs(v).items()) or "none"
        base = getattr(v, "base", "") or ""
        out.append(f"| `{v.name}` | {v.kind} | {base} | {_cell(v.doc)} | {k} |")
    out += ["", "## Lemmas", ""]
    lemmas = _lemmas()
    if lemmas:
        out += ["Strengthening lemmas of the inductive proofs (`specs/lemmas.py`): the proof of "
                "a spec conjoins it with the lemmas listed for it.", "",
                "| lemma | used for | states |", "|---|---|---|"]
        for n, doc, props in lemmas:
            used = ", ".join(f"[`{p}`](#{p})" for p in props)
            out.append(f"| `{n}` | {used} | {_cell(doc)} |")
    else:
        out.append("No lemmas are defined yet in `specs/lemmas.py`.")
    return "\n".join(out) + "\n"


# --- the findings ------------------------------------------------------------------------


def findings_header(variants: list[str]) -> str:
    cfg = PRESETS[FINDINGS_CONFIG]
    out = [
        "# Findings",
        "",
        f"Generated by `{REGENERATE}` from a run of every variant on the `{cfg.name}` preset "
        f"({cfg.doc}); do not edit by hand. `tests/test_docs.py` compares every section with "
        "the verdicts the spec suite computes.",
        "",
        "For each variant: the verdict of every spec, and for each violated invariant the "
        "shortest counterexample (breadth-first search finds a shortest one) in words, with the "
        "reason the spec gives for it. What each spec says is in "
        "[catalogue.md](catalogue.md).",
        "",
        "Variants: " + ", ".join(f"[`{v}`](#{v})" for v in variants) + ".",
        "",
    ]
    return "\n".join(out) + "\n" + scenario_table()


def scenario_outcome(sc: Scenario, variant: str) -> str:
    """How a scenario ends under `variant`, in a few words: "ok", "ok; O_LARGEFILE differs",
    "-EBUSY" (the checkpoint's error) or "restart -EINVAL"."""
    r = run_script(sc.actions, VARIANTS[variant], sc.max_fds)
    if r.error:
        return errname(r.error)
    if r.rst_error:
        return "restart " + errname(r.rst_error)
    diffs = restore_differences(r.snapshot, r.restored)
    return "ok" + (f"; {', '.join(diffs)} differs" if diffs else "")


def scenario_table() -> str:
    """CRIU's zdtm open-file tests as scenarios (`specs/scenarios.py`), run here under each
    of the three designs: the rows where they differ, then the scenarios where they agree."""
    names = {"linuxcr": "Linux-CR", "criu": "CRIU", "fixed": "`fixed`"}
    out = ["## zdtm scenarios: where Linux-CR, CRIU and `fixed` differ", "",
           "CRIU's own open-file tests (`test/zdtm/static` in checkpoint-restore/criu) written "
           "as model scenarios in `specs/scenarios.py`, plus a few situations that decide one of "
           "CRIU's rules (no zdtm test). Each scenario's set-up runs, then a checkpoint "
           "(nothing outside acts while it runs) and a restart. \"ok\" means both succeed, "
           "with the aspects of the restored tasks that differ from the checkpointed ones "
           "named; otherwise the checkpoint's error. `tests/test_zdtm.py` holds each outcome "
           "to what the zdtm test expects of CRIU and to the design's answer for the others.",
           "", "| scenario | zdtm test | " + " | ".join(names.values()) + " | what decides |",
           "|---|---|---|---|---|---|"]
    same = []
    for sc in SCENARIOS:
        got = {v: scenario_outcome(sc, v) for v in names}
        if len(set(got.values())) == 1:
            same.append(f"`{sc.name}` ({got['criu']})")
            continue
        why = "; ".join(f"{names[v]}: {sc.why[v]}" for v in names if v in sc.why)
        out.append(f"| `{sc.name}` | {sc.zdtm or '-'} | "
                   + " | ".join(_cell(got[v]) for v in names) + f" | {_cell(_md(why))} |")
    out += ["", "The three agree on: " + ", ".join(same) + ".", ""]
    return "\n".join(out) + "\n"


def findings_section(variant: str, rows: Mapping[str, object]) -> str:
    """One variant's section from its result rows (`crmodel.api.Row` by spec name)."""
    v = VARIANTS[variant]
    out = [f"## {variant}", "", f"{v.kind}: {_md(v.doc)}.", "",
           "| spec | kind | verdict | expected | trace length |", "|---|---|---|---|---|"]
    violated = []
    for name, r in rows.items():
        kind = "invariant" if r.kind == "invariant" else "witness"
        # a witness `holds` when reached: say so in words
        words = {} if r.kind == "invariant" else {"holds": "reached",
                                                  "violated": "never reached"}
        length = "" if r.trace_length is None else str(r.trace_length)
        verdict = words.get(r.verdict, r.verdict)
        if not r.matches:
            verdict = f"**{verdict} (unexpected)**"
        out.append(f"| `{name}` | {kind} | {verdict} | {words.get(r.expected, r.expected)} "
                   f"| {length} |")
        if r.kind == "invariant" and r.verdict == "violated" and r.trace is not None:
            violated.append(r)
    out.append("")
    if not violated:
        out += ["Every invariant holds.", ""]
    for r in violated:
        out += [f"### {variant}: `{r.spec}` violated ({r.trace_length} steps)", ""]
        out += story(r.trace.steps, v)
        why = SPECS[r.spec].reason(variant)
        out += ["", f"Why: {_md(why)}." if why else
                "Why: unexpected, the spec expects this invariant to hold here.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def findings(rows: Mapping[str, Mapping[str, object]]) -> str:
    """The findings page from `{variant: {spec: Row}}`."""
    return findings_header(list(rows)) + "\n".join(
        findings_section(v, r) for v, r in rows.items())  # one blank line between sections


def split_findings(text: str) -> dict[str, str]:
    """The page's variant sections by name (what `findings_section` produced)."""
    parts = text.split("\n## ")
    return {p.split("\n", 1)[0]: "## " + p.rstrip("\n") + "\n" for p in parts[1:]
            if p.split("\n", 1)[0] in VARIANTS}  # the header's scenario table is no variant


def run_findings(jobs: int = 2) -> dict[str, dict[str, object]]:
    """Explore every variant on the findings preset: `{variant: {spec: Row}}`."""
    from crmodel import api

    report = api.check(FINDINGS_CONFIG, list(VARIANTS), None, jobs=jobs)
    out: dict[str, dict[str, object]] = {v: {} for v in VARIANTS}
    for r in report.rows:
        out[r.variant][r.spec] = r
    return out


def write(folder: Path = DOCS, catalogue_only: bool = False, jobs: int = 2,
          check_only: bool = False) -> list[Path]:
    """Write (or with `check_only`, compare) the pages; returns those that differ."""
    pages = {folder / "catalogue.md": catalogue()}
    if not catalogue_only:
        pages[folder / "findings.md"] = findings(run_findings(jobs))
    differ = [p for p, text in pages.items() if not p.exists() or p.read_text() != text]
    if not check_only:
        folder.mkdir(parents=True, exist_ok=True)
        for p in differ:
            p.write_text(pages[p])
    return differ


@click.command("docs")
@click.option("--out", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=DOCS, show_default=True, help="Where the pages go.")
@click.option("--catalogue", "catalogue_only", is_flag=True,
              help="Only the catalogue (no exploration: about a second).")
@click.option("--check", "check_only", is_flag=True,
              help="Write nothing; exit 1 when a page differs from what the source gives.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes exploring the variants for the findings.")
def docs_command(folder: Path, catalogue_only: bool, check_only: bool, jobs: int) -> None:
    """Generate docs/catalogue.md (from specs/) and docs/findings.md (from a run on tiny)."""
    if not check_only:  # before the exploration, not after it
        from crmodel.validate import UsageError, output_dir

        try:
            output_dir(folder, "--out")
        except UsageError as e:
            raise click.UsageError(str(e)) from None
    differ = write(folder, catalogue_only, jobs, check_only)
    for p in differ:
        click.echo(f"{'differs' if check_only else 'wrote'}: {p}")
    if not differ:
        click.echo("up to date")
    if check_only and differ:
        sys.exit(1)


if __name__ == "__main__":
    docs_command()
