"""Shared fixtures: the `tiny` preset explored once per variant for the whole session.

The first test that needs an exploration runs every variant the session collected, in two
processes, so `pytest -k linuxcr` pays for one variant and a full run for all of them once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from checker.result import Exploration
from crmodel import api

_NEEDED: set[str] = set()
_REPORTS: dict[str, dict[str, api.Row]] = {}
_EXPLORATIONS: dict[str, Exploration] = {}


TINY_FIXTURES = {"tiny_rows", "tiny_exploration"}


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: prefetch only what will run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("variants")
        if mark:
            _NEEDED.update(mark.args[0])


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under `pytest -n 2 --dist loadgroup` (make test) every test reading the shared
    explorations runs in one worker, which explores each variant once. (Marked here, at
    collection: xdist reads the group in its own collection_modifyitems.)"""
    if item.get_closest_marker("variants") or TINY_FIXTURES & set(
            getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.xdist_group("tiny"))


def _ensure(variant: str) -> None:
    if variant in _REPORTS:
        return
    todo = sorted((_NEEDED | {variant}) - set(_REPORTS))
    report = api.check("tiny", variants=todo, jobs=2)
    for v in todo:
        _REPORTS[v] = {r.spec: r for r in report.rows if r.variant == v}
        _EXPLORATIONS[v] = report.explorations[v]


@pytest.fixture(scope="session")
def tiny_rows() -> Callable[[str], dict[str, api.Row]]:
    """variant -> {spec name: Row} on the tiny preset (all specs)."""

    def get(variant: str) -> dict[str, api.Row]:
        _ensure(variant)
        return _REPORTS[variant]

    return get


@pytest.fixture(scope="session")
def tiny_exploration() -> Callable[[str], Exploration]:
    """variant -> the checker's Exploration of the tiny preset (all specs)."""

    def get(variant: str) -> Exploration:
        _ensure(variant)
        return _EXPLORATIONS[variant]

    return get


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Figures tests report with `record_property` (they travel from xdist workers too)."""
    for rep in terminalreporter.stats.get("passed", []):
        for name, value in getattr(rep, "user_properties", ()):
            if name == "fuzzed_images":
                errors = ", ".join(f"{k} {n:,}" for k, n in sorted(value.items())
                                   if k not in ("images", "accepted"))
                terminalreporter.write_line(
                    f"hostile images fuzzed: {value['images']:,} ({value['accepted']:,} "
                    f"restored with the specs holding; rejected: {errors})")


def _kill_after_snapshot(cmd: list[str], snap: Path) -> None:
    """Start `cmd`, SIGKILL it soon after it wrote `snap` (no chance to save more)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not snap.exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert snap.exists(), "no snapshot was written"
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.fixture(scope="session")
def kill_after_snapshot() -> Callable[[list[str], Path], None]:
    """Run a command and kill it once it has written its snapshot."""
    return _kill_after_snapshot
