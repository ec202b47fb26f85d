"""The notebooks in `notebooks/` run from top to bottom without error (so they never rot),
each within its time budget, and are committed without outputs (so diffs stay small).

Each notebook runs in its own Jupyter kernel through nbclient, from the notebooks folder, the
same way `pytest --nbmake notebooks/` runs them."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
HANG = 600.0  # seconds per cell before a notebook counts as hung (their times: benchmarks/)


def run_notebook(path: Path, timeout: float = HANG) -> nbformat.NotebookNode:
    """Execute a notebook in a fresh kernel; returns it with its outputs."""
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=int(timeout), kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return book


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    dirty = [i for i, c in enumerate(book.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


_CELL = re.compile(r'<td( style="background:#f4b6b6")? title="[^"]*">([^<]*)</td>')
_ROW = re.compile(r"<tr><th>([^<]+)</th><td>[0-9,]+</td>(.*?)</tr>")


def shown_facts(book: nbformat.NotebookNode) -> list[str]:
    """What the executed notebook shows, in order: each verdict of each table with the length
    of its trace (and UNEXPECTED where it is marked so), each printed step count, each
    story's number of steps, and the z3 notebook's printed verdicts."""
    facts: list[str] = []
    for c in book.cells:
        if c.cell_type != "code":
            continue
        for o in c.outputs:
            html = o.get("data", {}).get("text/html", "")
            if "<th>variant</th><th>states</th>" in html:
                specs = re.findall(r"<th>([a-z_]+)</th>", html.split("</tr>", 1)[0])[2:]
                for variant, cells in _ROW.findall(html):
                    for spec, (red, mark) in zip(specs, _CELL.findall(cells), strict=True):
                        shown = mark.replace("&#10003; ", "").replace("&#10007; ", "")
                        facts.append(f"{variant} / {spec}: {shown}{' UNEXPECTED' if red else ''}")
            text = o.get("text", "") if o.get("output_type") == "stream" else ""
            for n in re.findall(r"^(\d+) steps$", text, re.M):
                facts.append(f"steps: {n}")
            story = re.findall(r"^(\d+)\. ", text, re.M)
            if story:
                facts.append(f"story: {len(story)}")
            for variant, verdict in re.findall(r"^([a-z][a-z-]*): (proved|holds|violated|"
                                               r"unknown): ", text, re.M):
                facts.append(f"{variant}: {verdict}")
            for line in re.findall(r"^(inductive|counterexample to induction|fails in an "
                                   r"initial state)$", text, re.M):
                facts.append(f"induction: {line}")
            for label, found in re.findall(r"^(\w+ close): +(None|\[.*\])$", text, re.M):
                facts.append(f"bmc {label}: {None if found == 'None' else found.count('{')}")
    return facts


# What each notebook shows: verdicts with the length of their trace, stories by their steps.
SHOWN: dict[str, list[str]] = {
    "01_tour": [
        "linuxcr / leak_detection_sound: violated (8 steps)",
        "linuxcr / restore_preserves_offsets_and_sharing: holds",
        "linuxcr / restarted_pipe: holds (8 steps)",
        "fixed / leak_detection_sound: holds",
        "fixed / restore_preserves_offsets_and_sharing: holds",
        "fixed / restarted_pipe: holds (8 steps)",
        "steps: 8",
        "story: 8",
    ],
    "02_leak_detection": [
        "linuxcr / leak_detection_sound: violated (8 steps)",
        "linuxcr / pipe_peers_contained: violated (8 steps)",
        "linuxcr / leak_detected: holds (4 steps)",
        "fixed-pipe / leak_detection_sound: holds",
        "fixed-pipe / pipe_peers_contained: holds",
        "fixed-pipe / leak_detected: holds (4 steps)",
        "story: 8",
        "linuxcr / leak_detection_sound: violated (8 steps)",
        "linuxcr / leak_detection_sound_at_write: violated (8 steps)",
        "linuxcr / leak_detection_complete: violated (7 steps)",
        "linuxcr / pipe_peers_contained: violated (8 steps)",
        "fixed-pipe / leak_detection_sound: violated (10 steps)",
        "fixed-pipe / leak_detection_sound_at_write: violated (8 steps)",
        "fixed-pipe / leak_detection_complete: violated (7 steps)",
        "fixed-pipe / pipe_peers_contained: violated (10 steps)",
        "fixed-epoll / leak_detection_sound: violated (8 steps)",
        "fixed-epoll / leak_detection_sound_at_write: violated (8 steps)",
        "fixed-epoll / leak_detection_complete: holds",
        "fixed-epoll / pipe_peers_contained: violated (8 steps)",
        "fixed / leak_detection_sound: holds",
        "fixed / leak_detection_sound_at_write: holds",
        "fixed / leak_detection_complete: holds",
        "fixed / pipe_peers_contained: holds",
        "story: 7",
        "story: 10",
        "linuxcr / leak_detection_sound: holds",
        "linuxcr / leak_detection_sound_at_write: violated (8 steps)",
        "fixed-race / leak_detection_sound: holds",
        "fixed-race / leak_detection_sound_at_write: holds",
        "story: 8",
        "fixed / leak_detection_sound: holds",
        "fixed / leak_detection_sound_at_write: holds",
        "fixed / leak_detection_complete: holds",
        "fixed / pipe_peers_contained: holds",
    ],
    "03_restore_and_flags": [
        "fixed / restore_preserves_fcntl_flags: holds",
        "fixed / restore_preserves_offsets_and_sharing: holds",
        "fixed / refcounts_restored: holds",
        "mut-cloexec-per-file / restore_preserves_fcntl_flags: violated (10 steps)",
        "mut-cloexec-per-file / restore_preserves_offsets_and_sharing: holds",
        "mut-cloexec-per-file / refcounts_restored: holds",
        "mut-new-file-per-fd / restore_preserves_fcntl_flags: holds",
        "mut-new-file-per-fd / restore_preserves_offsets_and_sharing: violated (9 steps)",
        "mut-new-file-per-fd / refcounts_restored: violated (9 steps)",
        "story: 10",
        "linuxcr / restore_preserves_fcntl_flags: holds",
        "linuxcr / restore_preserves_all_flags: violated (8 steps)",
        "criu / restore_preserves_fcntl_flags: holds",
        "criu / restore_preserves_all_flags: violated (6 steps)",
        "fixed / restore_preserves_fcntl_flags: holds",
        "fixed / restore_preserves_all_flags: holds",
        "story: 8",
    ],
    "04_z3_proofs": [
        "induction: counterexample to induction",
        "induction: inductive",
        "bmc guarded close: None",
        "bmc unguarded close: 2",
        "fixed: proved",
        "mut-no-setfl: violated",
    ],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    book = run_notebook(path)
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    facts = shown_facts(book)
    assert not [f for f in facts if f.endswith("UNEXPECTED")], "a verdict shown as unexpected"
    # Every story told is as long as a trace a verdict table showed before it.
    lengths: set[str] = set()
    for f in facts:
        if f.endswith(" steps)"):
            lengths.add(f.rsplit("(", 1)[1].split()[0])
        elif f.startswith(("story: ", "steps: ")):
            assert f.split(": ")[1] in lengths, f"{path.name}: {f}, and no such trace shown"
    assert facts == SHOWN[path.stem]
