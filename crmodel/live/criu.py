"""CRIU as a further oracle for the `criu` variant, when a criu binary is installed."""

from __future__ import annotations

import shutil

from crmodel.validate import UsageError


def require() -> str:
    """The criu binary's path, or a one-line UsageError (exit 2) saying there is none."""
    path = shutil.which("criu")
    if path is None:
        raise UsageError("no criu binary on PATH: `replay --criu` needs one (this project "
                         "does not build CRIU)")
    return path
