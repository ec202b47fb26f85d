"""Progress reports for long explorations.

An engine calls ``update(info)`` a few times a second and at every BFS level boundary, then
``close(info)`` once. A progress is any object with ``update`` (``close`` optional) or a plain
callable taking a `ProgressInfo`. Reporters decide themselves how often to show something.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO


@dataclass(frozen=True)
class ProgressInfo:
    states: int  # distinct states so far
    transitions: int
    queue: int  # states discovered but not expanded yet
    depth: int  # BFS level being expanded
    elapsed: float  # seconds
    states_per_s: float
    level_done: bool = False  # sent right after a level finished
    level_seconds: float = 0.0  # how long that level took
    final: bool = False
    stopping: str | None = None  # why the engine is stopping, once it knows
    variants: int = 0  # members of a family exploration (0: one model)
    undecided: int = 0  # members with a property still undecided

    def line(self) -> str:
        text = (
            f"[{self.elapsed:8.1f}s] depth {self.depth:>3}  states {self.states:>12,}"
            f"  ({self.states_per_s:>9,.0f}/s)  queue {self.queue:>11,}"
            f"  transitions {self.transitions:>13,}"
        )
        if self.variants:
            text += f"  undecided variants {self.undecided}/{self.variants}"
        if self.stopping:
            text += f"  stopping: {self.stopping}"
        return text


class Progress(Protocol):
    def update(self, info: ProgressInfo) -> None: ...


class NullProgress:
    """Shows nothing."""

    def update(self, info: ProgressInfo) -> None:
        pass

    def close(self, info: ProgressInfo | None = None) -> None:
        pass


class TextProgress:
    """One line per update on a stream (logs, CI): at most every `interval` seconds, plus one
    at the end of every level that took at least `slow_level` seconds, plus the final one."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 2.0,
        slow_level: float = 1.0,
        title: str = "",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = f"{title}: " if title else ""
        self.interval = interval
        self.slow_level = slow_level
        self._last = -float("inf")

    def update(self, info: ProgressInfo) -> None:
        now = time.monotonic()
        slow_level_end = info.level_done and info.level_seconds >= self.slow_level
        if slow_level_end or now - self._last >= self.interval:
            self._last = now
            suffix = f"  (level took {info.level_seconds:.1f}s)" if info.level_done else ""
            print(self.prefix + info.line() + suffix, file=self.stream, flush=True)

    def close(self, info: ProgressInfo | None = None) -> None:
        if info is not None:
            print(self.prefix + info.line() + "  done", file=self.stream, flush=True)


class RichProgress:
    """A live status line on a terminal (rich), replaced in place."""

    def __init__(self, stream: TextIO | None = None, title: str = "exploring") -> None:
        from rich.console import Console

        self.console = Console(file=stream if stream is not None else sys.stderr)
        self.title = title
        self._live: Any = None

    def _render(self, info: ProgressInfo) -> Any:
        from rich.text import Text

        t = Text()
        t.append(f"{self.title} ", style="bold")
        t.append(f"depth {info.depth}  ", style="cyan")
        t.append(f"{info.states:,} states ", style="green")
        t.append(f"({info.states_per_s:,.0f}/s)  ")
        t.append(f"queue {info.queue:,}  transitions {info.transitions:,}  ")
        if info.variants:
            t.append(f"undecided variants {info.undecided}/{info.variants}  ")
        t.append(f"{info.elapsed:.1f}s", style="dim")
        if info.stopping:
            t.append(f"  stopping: {info.stopping}", style="yellow")
        return t

    def update(self, info: ProgressInfo) -> None:
        if self._live is None:
            from rich.live import Live

            self._live = Live(
                self._render(info), console=self.console, refresh_per_second=4, transient=False
            )
            self._live.start()
        else:
            self._live.update(self._render(info))

    def close(self, info: ProgressInfo | None = None) -> None:
        if self._live is not None:
            if info is not None:
                self._live.update(self._render(info))
            self._live.stop()
            self._live = None


class CallableProgress:
    """Adapts a plain function to the progress interface."""

    def __init__(self, fn: Callable[[ProgressInfo], Any]) -> None:
        self.fn = fn

    def update(self, info: ProgressInfo) -> None:
        self.fn(info)

    def close(self, info: ProgressInfo | None = None) -> None:
        pass


def auto_progress(
    stream: TextIO | None = None, title: str = "", live: bool = True
) -> RichProgress | TextProgress:
    """A live display on a terminal (unless `live` is False), plain lines otherwise."""
    s = stream if stream is not None else sys.stderr
    isatty = getattr(s, "isatty", None)
    if live and isatty is not None and isatty():
        return RichProgress(s, title=title or "exploring")
    return TextProgress(s, title=title)


def as_progress(progress: Any) -> Any:
    """None -> NullProgress, an object with update() -> itself, a callable -> wrapped."""
    if progress is None:
        return NullProgress()
    if hasattr(progress, "update"):
        return progress
    if callable(progress):
        return CallableProgress(progress)
    raise TypeError(f"progress must have update() or be callable, not {type(progress).__name__}")
