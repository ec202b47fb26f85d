"""Telling a Ctrl-C apart when Python has wrapped it: shared by the entry point (before the
heavy imports) and the CLI (around its lazy imports), so it imports nothing."""

from __future__ import annotations


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
