"""The `crmodel scan` command (and the other live-kernel commands): thin layers over
`crmodel.live`."""

from __future__ import annotations

import json
import sys

import click

from crmodel.live import scan as live_scan
from crmodel.validate import UsageError
from model.variants import VARIANTS


def _variants(names: tuple[str, ...]) -> list[str]:
    chosen = list(names) or list(live_scan.DEFAULT_VARIANTS)
    for n in chosen:
        if n not in VARIANTS:
            raise click.UsageError(f"unknown variant {n!r} (see `crmodel variants`)")
    return chosen


def _fail(message: str) -> None:
    click.echo(f"crmodel: {message}", err=True)
    sys.exit(2)


@click.command("scan")
@click.argument("pids", nargs=-1, type=int)
@click.option("--variant", "variants", multiple=True,
              help="Design variant (repeatable) [default: linuxcr, criu, fixed].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def scan_command(pids: tuple[int, ...], variants: tuple[str, ...], as_json: bool) -> None:
    """Read processes' open files from /proc and say what each design's checkpoint would do.

    The PIDs are the container; every other process sharing a file, fd table, pipe, pty or
    socket peer with them is outside. Exit 0 when every chosen variant would succeed, 1 when
    one refuses, would leak, or cannot judge (not expressible), 2 on bad input."""
    names = _variants(variants)
    try:
        sc = live_scan.scan(list(pids))
    except live_scan.ScanError as e:
        _fail(str(e))
    vs = live_scan.verdicts(sc, names)
    if as_json:
        click.echo(json.dumps({
            "inside": sc.inside, "outside": sc.outside,
            "processes": {str(p): c for p, c in sc.comms.items()},
            "descriptors": live_scan.describe(sc),
            "not_expressible": sc.unexpressible,
            "verdicts": [v.to_json() for v in vs],
        }, indent=2))
    else:
        click.echo("container: " + ", ".join(sc.who(p) for p in sc.inside))
        click.echo("outside:   " + (", ".join(sc.who(p) for p in sc.outside) or "none"))
        for line in live_scan.describe(sc):
            click.echo("  " + line)
        if sc.unexpressible:
            click.echo("not expressible in the model:")
            for line in sc.unexpressible:
                click.echo("  " + line)
        for line in live_scan.verdict_lines(vs):
            click.echo(line)
    sys.exit(live_scan.exit_code(vs))


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--variant", help="The trace's variant, if its file does not say.")
@click.option("--config", "cfg", help="The trace's config preset, if its file does not say.")
@click.option("--criu", "use_criu", is_flag=True,
              help="Also dump and restore the replayed tree with a criu binary on PATH.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def replay_command(trace: str, variant: str | None, cfg: str | None, use_criu: bool,
                   as_json: bool) -> None:
    """Perform a trace's steps with real processes and compare each with the model.

    TRACE is an .itf.json file written by `crmodel check --traces`. Environment steps run as
    real system calls; at the checkpoint the real processes are scanned and each checkpoint
    step runs on the scan beside the model. Exit 0 when every step agrees, 1 when one
    differs, 2 on bad input."""
    from crmodel.live import replay as live_replay

    if use_criu:
        from crmodel.live import criu

        criu.require()
    try:
        rep = live_replay.replay(trace, variant=variant, config=cfg)
        extra = criu.compare(trace, variant=variant, config=cfg) if use_criu else None
    except (live_scan.ScanError, UsageError) as e:
        _fail(str(e))
    ok = rep.agree and (extra is None or extra.agree)
    if as_json:
        doc = rep.to_json()
        if extra is not None:
            doc["criu"] = extra.to_json()
        click.echo(json.dumps(doc, indent=2))
    else:
        for line in live_replay.lines(rep):
            click.echo(line)
        if extra is not None:
            for line in extra.lines():
                click.echo(line)
    sys.exit(0 if ok else 1)
