"""The notebooks in `notebooks/` run from top to bottom without error (so they never rot),
each within its time budget, and are committed without outputs (so diffs stay small).

Each notebook runs in its own Jupyter kernel through nbclient, from the notebooks folder, the
same way `pytest --nbmake notebooks/` runs them."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
BUDGET = 60.0  # seconds per notebook, kernel start included


def run_notebook(path: Path, timeout: float = BUDGET) -> nbformat.NotebookNode:
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    t0 = time.perf_counter()
    book = run_notebook(path)
    seconds = time.perf_counter() - t0
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    assert seconds < BUDGET, f"{path.name} took {seconds:.0f}s (budget {BUDGET:.0f}s)"
