"""Resumable snapshots of an exploration: a pickle written atomically.

A snapshot is only valid for the same model configuration and code (the model's
`fingerprint_salt()`), the same snapshot format, the same properties and the same hash
function (Python version): anything else raises `SnapshotMismatch`, whose message is one line
meant for the user.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

# Bump when the layout of the pickled dict changes.
FORMAT_VERSION = 1
FORMAT_NAME = "checker-explicit-snapshot"


class SnapshotMismatch(Exception):
    """The snapshot cannot be resumed with this model, properties or checker."""


def hash_identity() -> list[Any]:
    """What `hash()` fingerprints depend on besides the states themselves."""
    hi = sys.hash_info
    return [sys.implementation.name, *sys.version_info[:2], hi.width, hi.modulus, hi.algorithm]


def write_snapshot(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Pickle `data` to `path` atomically (a crash leaves the previous snapshot intact)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "hash": hash_identity(), **data}
    tmp = p.with_name(f"{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def read_snapshot(path: str | os.PathLike[str], salt: str) -> dict[str, Any]:
    """Load a snapshot, refusing one made by another format, model salt or Python."""
    try:
        with open(path, "rb") as f:
            doc = pickle.load(f)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated file, foreign pickle, missing model class...
        raise SnapshotMismatch(f"cannot read snapshot {path}: {type(e).__name__}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise SnapshotMismatch(f"{path} is not a checker snapshot")
    if doc.get("version") != FORMAT_VERSION:
        raise SnapshotMismatch(
            f"snapshot {path} has format version {doc.get('version')}, "
            f"this checker writes version {FORMAT_VERSION}: start a new exploration"
        )
    if doc.get("salt") != salt:
        raise SnapshotMismatch(
            f"snapshot {path} was made for model {doc.get('salt')!r}, not {salt!r} "
            "(configuration or code changed): start a new exploration"
        )
    if doc.get("hash") != hash_identity():
        raise SnapshotMismatch(
            f"snapshot {path} was made by {doc.get('hash')}, this is {hash_identity()}: "
            "fingerprints would differ"
        )
    return doc
