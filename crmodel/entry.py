"""The `crmodel` command's entry point: a Ctrl-C while the heavy modules are still being
imported ends the process with exit 130 and one line, not a traceback."""

from __future__ import annotations

import sys

from crmodel.interrupt import is_interrupt


def main() -> None:
    try:
        from crmodel.cli import main as cli_main
    except BaseException as e:
        if not is_interrupt(e):
            raise
        print("crmodel: interrupted while starting", file=sys.stderr)
        sys.exit(130)
    cli_main()
