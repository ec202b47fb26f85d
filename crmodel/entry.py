"""The `crmodel` command's entry point: a Ctrl-C while the heavy modules are still being
imported ends the process with exit 130 and one line, not a traceback."""

from __future__ import annotations

import sys


def is_interrupt(e: BaseException | None) -> bool:
    """Whether `e` is, or was raised while handling or because of, a KeyboardInterrupt
    (Python wraps one raised in a class body's `__set_name__` in a RuntimeError)."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def main() -> None:
    try:
        from crmodel.cli import main as cli_main
    except BaseException as e:
        if not is_interrupt(e):
            raise
        print("crmodel: interrupted while starting", file=sys.stderr)
        sys.exit(130)
    cli_main()
