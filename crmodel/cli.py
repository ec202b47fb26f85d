"""The `crmodel` command: a thin layer over `crmodel.api`.

Exit codes: 0 every verdict matches its expectation, 1 one differs, 2 usage or input error
(one line on stderr, no traceback)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from checker.cluster import ClusterError
from checker.snapshot import SnapshotMismatch
from crmodel import api
from crmodel.interrupt import is_interrupt
from crmodel.report import EXACT_PRESETS
from crmodel.validate import one_line
from specs import SPECS


class _Group(click.Group):
    """Usage errors as one line and exit 2, never a traceback."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("standalone_mode", False)
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("crmodel: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            click.echo(f"crmodel: {e.format_message()}", err=True)
            sys.exit(2)
        except (api.UsageError, SnapshotMismatch, ClusterError) as e:
            click.echo(f"crmodel: {one_line(str(e))}", err=True)
            sys.exit(2)
        except Exception as e:
            if not is_interrupt(e):  # a Ctrl-C wrapped by Python (in a lazy import...)
                raise
            click.echo("crmodel: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
def main() -> None:
    """A model checker for checkpoint/restart of open files (Linux-CR)."""


@main.command()
@click.option("--config", "cfg", default="default", show_default=True,
              help="A preset (tiny, default, deep) or a TOML file.")
@click.option("--variant", "variants", multiple=True, help="Design variant (repeatable).")
@click.option("--spec", "specs", multiple=True, help="Spec name (repeatable).")
@click.option("--engine", type=click.Choice(["explicit", "z3"]), default="explicit",
              show_default=True, help="Explicit BFS, or z3 (proofs, then BMC).")
@click.option("--proof-size", metavar="IN,OUT,FDS,FILES[,QUEUE]",
              help="z3: the size proofs cover; QUEUE > 0 adds unix sockets with that many "
              "in-flight SCM_RIGHTS files per queue [default: 2,2,8,8].")
@click.option("--z3-timeout", type=float, metavar="SECONDS",
              help="z3: seconds per query; a timeout is a failure [default: 600].")
@click.option("--no-z3-cache", is_flag=True,
              help="z3: solve every query (default: reuse unsat answers to identical "
              "formulas kept in .crmodel-cache/z3).")
@click.option("--max-states", type=int,
              help="Stop after this many states (several variants: the family's distinct "
              "states).")
@click.option("--max-depth", type=int, help="Stop at this BFS depth.")
@click.option("--max-seconds", type=float, help="Stop after this time.")
@click.option("--traces", "traces_dir", type=click.Path(),
              help="Write every trace as <variant>__<spec>.itf.json and .txt here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("--jobs", type=int, default=None,
              help="Parallel processes: over groups of variants (explicit), over a proof's "
              "obligations (z3) [default: cores].")
@click.option("--cluster", metavar="auto|HOST:PORT",
              help="Run on Ray: 'auto' starts a private cluster on this machine, HOST:PORT "
              "joins the head `ray start --head` started (needs the [cluster] extra).")
@click.option("--workers", type=int,
              help="With --cluster: workers (explicit search partitions; CPUs of an 'auto' "
              "cluster) [default: the cluster's CPUs].")
@click.option("--per-variant", is_flag=True,
              help="Explore each variant on its own (default: several variants as one "
              "family, with the same answers).")
@click.option("--save", type=click.Path(),
              help="Write a resumable snapshot here (one variant, or the family explored "
              "in one process).")
@click.option("--resume", type=click.Path(),
              help="Continue from a snapshot (same config, variant, specs, code).")
@click.option("--save-every", type=float, default=10.0, show_default=True,
              help="Seconds between snapshots (written at BFS level boundaries).")
@click.option("--max-memory", metavar="SIZE",
              help="Stop before the process holds this much memory, e.g. 4G or 50% "
              "[default: 80% of the memory available at start].")
@click.option("--show-traces", is_flag=True,
              help="Print every counterexample as text (default: the baseline's only).")
def check(cfg, variants, specs, engine, proof_size, z3_timeout, no_z3_cache, max_states,
          max_depth, max_seconds, traces_dir, as_json, jobs, cluster, workers, per_variant,
          save, resume,
          save_every, max_memory, show_traces) -> None:
    """Explore the model and compare each (variant, spec) verdict with its expectation."""
    config = api.config(cfg)
    jobs = jobs if jobs is not None else min(os.cpu_count() or 1, 2)
    # Logs and pipes get a wide console so the verdict table is never cut.
    out = Console(stderr=as_json, width=None if sys.stdout.isatty() else 150)

    def done(v: str, ex) -> None:
        if not as_json:
            out.print(f"[dim]{v}: {ex.states:,} states, {ex.transitions:,} transitions, "
                      f"depth {ex.depth}, {ex.seconds:.1f}s"
                      + ("" if ex.complete else f", stopped by {ex.stopped_by}") + "[/dim]")
            if ex.never_fired:
                out.print(f"[yellow]  warning: {v}: actions that never fired: "
                          f"{', '.join(ex.never_fired)}[/yellow]")

    report = api.check(
        config, variants, specs, engine=engine, max_states=max_states, max_depth=max_depth,
        max_seconds=max_seconds, traces_dir=traces_dir, save=save,
        resume=resume, jobs=jobs, on_variant=done, progress=not as_json, save_every=save_every,
        proof_size=proof_size, z3_timeout=z3_timeout, z3_cache=not no_z3_cache,
        max_memory=max_memory, per_variant=per_variant,
        cluster=cluster, workers=workers,
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(out, report, show_traces)
    stops = {ex.stopped_by for ex in report.explorations.values()}
    # A run cut by a signal exits as the shell expects (128 + the signal), after the figures.
    if "terminate" in stops:
        sys.exit(143)
    if "interrupt" in stops:
        sys.exit(130)
    sys.exit(0 if report.ok else 1)


_MARK = {"holds": "[green]✓[/]", "violated": "[red]✗[/]", "proved": "[green]P[/]",
         "unknown": "[yellow]?[/]"}


def _print_report(out: Console, report: api.Report, show_traces: bool) -> None:
    specs = list(dict.fromkeys(r.spec for r in report.rows))
    variants = list(dict.fromkeys(r.variant for r in report.rows))
    cell = {(r.variant, r.spec): r for r in report.rows}
    table = Table(title=f"crmodel check, config {report.config.name}", show_lines=False,
                  padding=(0, 0), box=box.SIMPLE_HEAD)
    table.add_column("variant", no_wrap=True)
    table.add_column("states", justify="right", no_wrap=True)
    for i, _ in enumerate(specs):
        table.add_column(f" {i + 1:>2}", justify="right", no_wrap=True)
    for v in variants:
        cells = []
        for s in specs:
            r = cell[(v, s)]
            text = _MARK.get(r.verdict, r.verdict)
            text = text + "*" if r.out_of_reach else text
            cells.append(text if r.matches else "[bold reverse]![/]")
        states = report.explorations[v].states if v in report.explorations else 0
        table.add_row(v + " ", f"{states:,}", *cells)
    out.print(table)
    for i, s in enumerate(specs):
        kind = "" if report.rows and cell[(variants[0], s)].kind == "invariant" else " (witness)"
        out.print(f"  S{i + 1} = {s}{kind}")
    out.print("  ✓ holds (witness: reached)   ✗ violated (witness: never reached)   "
              "! differs from the expectation (listed below); every other cell is as expected"
              + ("; * expected violation or witness out of reach at these bounds"
                 if any(r.out_of_reach for r in report.rows) else ""))
    baseline = [r for r in report.rows if r.verdict == "violated" and r.kind == "invariant"
                and (show_traces or r.variant == variants[0])]
    for r in baseline:
        out.rule(f"{r.variant}: {r.spec} violated, shortest counterexample "
                 f"({r.trace_length} steps)")
        out.print(r.trace_text(), markup=False, highlight=False)
        if r.trace_path:
            out.print(f"ITF: {r.trace_path}")
    for r in report.rows:
        if r.engine == "z3":  # what each proof covers, or why there is none
            out.print(f"  {r.variant} / {r.spec}: {r.verdict} ({r.seconds:.1f}s): {r.reason}",
                      markup=False, highlight=False)
            if r.verdict == "unknown" and r.trace is not None:
                out.print(r.trace_text(), markup=False, highlight=False)
    bad = report.mismatches()
    n = len(report.rows)
    if bad:
        out.print(f"[bold red]{len(bad)} of {n} verdicts differ from expectation:[/]")
        for r in bad:
            out.print(f"  {r.variant} / {r.spec}: got {r.verdict}, expected {r.expected}"
                      + (f" ({r.reason})" if r.reason else ""))
    else:
        out.print(f"[bold green]all {n} verdicts as expected[/]")
    far = [r for r in report.rows if r.out_of_reach]
    if far:
        out.print(f"{len(far)} expected counterexamples or witnesses not reached at these "
                  "bounds (expectations are exact only on the presets "
                  f"{', '.join(EXACT_PRESETS)}):")
        for r in far:
            what = "violation" if r.kind == "invariant" else "witness"
            out.print(f"  {r.variant} / {r.spec}: {what} not reached"
                      + (f" (elsewhere: {SPECS[r.spec].reason(r.variant)})"
                         if SPECS[r.spec].reason(r.variant) else ""))


def _listing(items: list[dict], as_json: bool, cols: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = Table()
    for c in cols:
        table.add_column(c)
    for it in items:
        table.add_row(*(str(it[c]) for c in cols))
    Console().print(table)


@main.command("specs")
@click.option("--json", "as_json", is_flag=True)
def specs_cmd(as_json: bool) -> None:
    """The invariant catalogue: each spec's statement."""
    _listing(api.spec_list(), as_json, ["name", "kind", "doc"])


@main.command("variants")
@click.option("--json", "as_json", is_flag=True)
def variants_cmd(as_json: bool) -> None:
    """Design variants: baseline, fixed, policy and mutants."""
    _listing(api.variant_list(), as_json, ["name", "kind", "doc"])


@main.command("configs")
@click.option("--json", "as_json", is_flag=True)
def configs_cmd(as_json: bool) -> None:
    """Built-in configuration presets."""
    _listing(api.config_list(), as_json, ["name", "doc"])


@main.command("trace")
@click.argument("path")
def trace_cmd(path: str) -> None:
    """Print a trace written by `check --traces` (the .itf.json file) as text."""
    from crmodel.notebook import load_trace

    click.echo(load_trace(path).text())


@main.command("graph")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "cfg", default="tiny", show_default=True,
              help="A preset or a TOML file (the whole space needs a small one).")
@click.option("--variant", default="linuxcr", show_default=True, help="Design variant.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, exists=True),
              help="An ITF trace (from check --traces): export its states and their "
              "successors only.")
@click.option("--spec", help="Check this spec and export its trace's neighbourhood.")
@click.option("--max-states", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Refuse a whole state space larger than this.")
@click.option("--max-depth", type=click.IntRange(min=0), help="Explore only to this depth.")
def graph_command(out: Path, cfg: str, variant: str, trace_path: str | None, spec: str | None,
                  max_states: int, max_depth: int | None) -> None:
    """Export a state space, or a trace's neighbourhood, as GraphML (.graphml) or DOT (.dot).

    The whole space of the tiny preset is too large: give a smaller config, --max-depth, or a
    trace (--trace FILE or --spec NAME)."""
    from crmodel.notebook import load_trace  # matplotlib: loaded only for this command
    from crmodel.render import export_graph
    from crmodel.validate import UsageError, output_file

    if out.suffix.lower() not in (".graphml", ".xml", ".dot", ".gv"):
        raise click.UsageError(f"{out}: the file name must end in .graphml or .dot")
    output_file(out, "graph output")
    conf = api.config(cfg)
    v = api.model(conf, variant).variant
    steps = None
    if trace_path and spec:
        raise click.UsageError("give --trace or --spec, not both")
    if trace_path:
        try:
            load_trace(trace_path, variant=v)  # an ITF trace of the model's states?
        except UsageError as e:
            raise click.UsageError(str(e)) from None
        try:  # re-run through the model: a trace of another config or variant is refused
            steps = load_trace(trace_path, conf, v).steps
        except ValueError as e:
            raise click.UsageError(f"{e} (give the config the trace was made with)") from None
    elif spec:
        rep = api.check(conf, [v.name], [spec])
        row = rep.rows[0]
        if row.trace is None:
            raise click.UsageError(f"{v.name} / {spec}: {row.verdict}, no trace")
        steps = row.trace.steps
    try:
        g = export_graph(conf, v, out, steps, max_states, max_depth)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    what = "trace neighbourhood" if steps else "state space"
    click.echo(f"{out}: {what}, {g.number_of_nodes()} states, {g.number_of_edges()} edges")


def _add_commands() -> None:
    """Commands that live beside their code (docs generation, scan and replay of live
    processes)."""
    from crmodel.docs import docs_command
    from crmodel.live.commands import replay_command, scan_command

    main.add_command(docs_command, "docs")
    main.add_command(scan_command, "scan")
    main.add_command(replay_command, "replay")


_add_commands()
