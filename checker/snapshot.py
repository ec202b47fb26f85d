"""Resumable snapshots of an exploration: data only, checked before anything is decoded.

Layout::

    CRMODEL-SNAPSHOT\\n                magic
    {"format": ..., "version": 2, ...}\\n   one JSON header line (at most 64 KiB)
    payload                           `payload_bytes` bytes whose sha256 the header gives

The header says what the snapshot is for (the model's `fingerprint_salt()`, the properties,
exact mode, the hash function) so that a snapshot of another run is refused from the header
alone. The payload is decoded only once its length and checksum match, by an unpickler that
admits no callable but a fixed list of containers (set, frozenset, array) and the model's
own value types: named tuples and int enums already imported from the model's package. It
never imports a module and never calls a function a file names, so a crafted snapshot cannot
run code; the engine then checks the decoded structure before use. A field added to the
engine's record needs no format work if it is built from ints, floats, strings, bytes, lists,
tuples, dicts, sets, arrays and the model's named tuples and int enums.

Written atomically: to `.<name>.crmodel-tmp.<pid>` beside the target, then renamed. A process
killed mid-write leaves that file behind; the next write to the same target removes leftovers
of processes no longer alive.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

MAGIC = b"CRMODEL-SNAPSHOT\n"
# Bump when the layout of the header or the payload dict changes.
FORMAT_VERSION = 2
FORMAT_NAME = "checker-explicit-snapshot"
MAX_HEADER = 1 << 16
TMP_MARK = ".crmodel-tmp."


class SnapshotMismatch(Exception):
    """The snapshot cannot be resumed with this model, properties or checker."""


def hash_identity() -> list[Any]:
    """What `hash()` fingerprints depend on besides the states themselves."""
    hi = sys.hash_info
    return [sys.implementation.name, *sys.version_info[:2], hi.width, hi.modulus, hi.algorithm]


# --- writing -------------------------------------------------------------------------------


def _tmp_prefix(p: Path) -> str:
    return f".{p.name}{TMP_MARK}"


def clean_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files of writes to `path` by processes no longer alive."""
    p = Path(path)
    removed = []
    try:
        names = os.listdir(p.parent if str(p.parent) else ".")
    except OSError:
        return removed
    prefix = _tmp_prefix(p)
    for n in names:
        if not n.startswith(prefix):
            continue
        try:
            pid = int(n[len(prefix):])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue  # another live process is writing it
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        try:
            (p.parent / n).unlink()
            removed.append(p.parent / n)
        except OSError:
            pass
    return removed


def write_snapshot(path: str | os.PathLike[str], header: dict[str, Any],
                   data: dict[str, Any]) -> Path:
    """Write `header` (JSON-able) and `data` (containers of ints, floats, strings, arrays and
    the model's named tuples) to `path` atomically: a crash leaves the previous one intact."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(p)
    payload = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    head = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "hash": hash_identity(),
            **header, "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest()}
    line = json.dumps(head, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_HEADER:
        raise ValueError("snapshot header too large")
    tmp = p.with_name(f"{_tmp_prefix(p)}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(line)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


# --- reading -------------------------------------------------------------------------------


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of a snapshot, without decoding the payload; SnapshotMismatch if `path` is
    not a snapshot of this format. FileNotFoundError if it does not exist."""
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise SnapshotMismatch(f"{path} is not a crmodel snapshot (no snapshot magic)")
        line = f.readline(MAX_HEADER)
    if not line.endswith(b"\n"):
        raise SnapshotMismatch(f"snapshot {path}: header truncated or too long")
    try:
        head = json.loads(line)
    except (ValueError, RecursionError):
        raise SnapshotMismatch(f"snapshot {path}: header is not JSON") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT_NAME:
        raise SnapshotMismatch(f"{path} is not a checker snapshot")
    if head.get("version") != FORMAT_VERSION:
        raise SnapshotMismatch(
            f"snapshot {path} has format version {head.get('version')!r:.20}, "
            f"this checker reads version {FORMAT_VERSION}: start a new exploration"
        )
    return head


def check_header(path: str | os.PathLike[str], head: dict[str, Any], salt: str) -> None:
    """Refuse a snapshot of another model, configuration or code, or another hash()."""
    if head.get("salt") != salt:
        raise SnapshotMismatch(
            f"snapshot {path} was made for model {str(head.get('salt'))!r:.200}, not {salt!r} "
            "(configuration or code changed): start a new exploration"
        )
    if head.get("hash") != hash_identity():
        raise SnapshotMismatch(
            f"snapshot {path} was made by {str(head.get('hash')):.100}, this is "
            f"{hash_identity()}: fingerprints would differ"
        )


def check_overwritable(path: str | os.PathLike[str], salt: str) -> None:
    """Before a run: `path` may be written only if absent or a snapshot of the same model
    (so `--save` never destroys a config, a trace or another run's snapshot)."""
    if not os.path.lexists(path):
        return
    try:
        head = read_header(path)
    except SnapshotMismatch as e:
        raise SnapshotMismatch(f"--save {path}: exists and is not a snapshot of this run "
                               f"({e}); refusing to overwrite it") from None
    except OSError as e:
        raise SnapshotMismatch(f"--save {path}: cannot read it: {e.strerror}") from None
    if head.get("salt") != salt:
        raise SnapshotMismatch(f"--save {path}: a snapshot of another run (model "
                               f"{str(head.get('salt'))!r:.120}); refusing to overwrite it")


_CONTAINERS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("array", "array"): __import__("array").array,
    ("array", "_array_reconstructor"): __import__("array")._array_reconstructor,
}


def _value_type(obj: Any) -> bool:
    """A named tuple or an int enum: calling it only builds a value."""
    if not isinstance(obj, type):
        return False
    if issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return True
    return issubclass(obj, int) and issubclass(obj, enum.Enum)


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, packages: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self.packages = packages

    def find_class(self, module: str, name: str) -> Any:
        known = _CONTAINERS.get((module, name))
        if known is not None:
            return known
        mod = sys.modules.get(module)  # never import what a file names
        top = module.split(".")[0]
        if mod is not None and top in self.packages and name.isidentifier():
            obj = vars(mod).get(name)
            if _value_type(obj):
                return obj
        raise pickle.UnpicklingError(f"type {module}.{name:.60} is not admitted in a snapshot")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not admitted in a snapshot")


def read_snapshot(path: str | os.PathLike[str], salt: str,
                  packages: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, data) of a snapshot made for model `salt`; the payload's named tuples and
    enums must come from `packages` (top-level package names). Any mismatch, truncation or
    tampering raises SnapshotMismatch before the payload is decoded."""
    head = read_header(path)
    check_header(path, head, salt)
    size, digest = head.get("payload_bytes"), head.get("payload_sha256")
    if not isinstance(size, int) or not isinstance(digest, str):
        raise SnapshotMismatch(f"snapshot {path}: header without payload size and checksum")
    with open(path, "rb") as f:
        f.readline()
        f.readline(MAX_HEADER)
        payload = f.read(size + 1)
    if len(payload) != size:
        raise SnapshotMismatch(f"snapshot {path}: truncated or extended ({len(payload)} "
                               f"payload bytes, the header says {size})")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise SnapshotMismatch(f"snapshot {path}: checksum mismatch (damaged or tampered)")
    try:
        data = _DataUnpickler(payload, packages).load()
    except RecursionError:
        raise SnapshotMismatch(f"snapshot {path}: payload nested too deeply") from None
    except Exception as e:  # noqa: BLE001  any decoding failure is a bad snapshot
        raise SnapshotMismatch(f"snapshot {path}: payload refused: {type(e).__name__}: "
                               f"{str(e):.200}") from None
    if not isinstance(data, dict):
        raise SnapshotMismatch(f"snapshot {path}: payload is not a record")
    return head, data


def model_packages(model: Any) -> tuple[str, ...]:
    """The top-level packages whose value types a snapshot of `model` may hold: the model's
    own, and those of the named tuples and enums in its initial states."""
    tops = {type(model).__module__.split(".")[0]}
    todo: list[Any] = []
    try:
        todo = list(model.init_states())[:16]
    except Exception:  # noqa: BLE001  a broken model fails later, with its own error
        pass
    budget = 10_000
    while todo and budget:
        budget -= 1
        v = todo.pop()
        if isinstance(v, enum.Enum) or (isinstance(v, tuple) and hasattr(v, "_fields")):
            tops.add(type(v).__module__.split(".")[0])
        if isinstance(v, tuple | list | frozenset | set):
            todo.extend(v)
    return tuple(sorted(tops))


def _ints(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_payload(path: str | os.PathLike[str], doc: dict[str, Any], nprops: int,
                  exact: bool) -> None:
    """The decoded explicit-engine record is well formed: the right keys, types and
    consistent sizes (a checksum only proves the file is as written, not by whom)."""
    from array import array

    def bad(what: str) -> SnapshotMismatch:
        return SnapshotMismatch(f"snapshot {path}: malformed payload ({what})")

    keys = {"init_fps", "seen", "levels_par", "levels_act", "level", "pos", "frontier",
            "next_states", "found", "coverage", "seconds", "started", "done"}
    if not keys <= set(doc):  # further keys (an engine's own additions) decode safely too
        raise bad(f"missing {sorted(keys - set(doc))!r:.200}")
    pars, acts = doc["levels_par"], doc["levels_act"]
    if not (isinstance(pars, list) and isinstance(acts, list) and len(pars) == len(acts)
            and all(isinstance(a, array) for a in pars + acts)
            and all(len(p) == len(a) for p, a in zip(pars, acts, strict=True))):
        raise bad("levels")
    seen = doc["seen"]
    if not (isinstance(seen, list) if exact else isinstance(seen, array)):
        raise bad("seen")
    for k in ("level", "pos"):
        if not _ints(doc[k]):
            raise bad(k)
    level, pos = doc["level"], doc["pos"]
    if not isinstance(doc["started"], bool) or not isinstance(doc["done"], bool):
        raise bad("started/done")
    if doc["started"] and not doc["done"]:
        if level >= len(pars) or pos > len(pars[level]):
            raise bad("level/pos")
        if not isinstance(doc["frontier"], list) or len(doc["frontier"]) != len(pars[level]) - pos:
            raise bad("frontier")
    if not isinstance(doc["frontier"], list) or not isinstance(doc["next_states"], list):
        raise bad("frontier")
    if len(pars) > level + 1 and len(doc["next_states"]) != len(pars[level + 1]):
        raise bad("next_states")
    if not isinstance(doc["init_fps"], list) or not isinstance(doc["coverage"], dict):
        raise bad("init_fps/coverage")
    if not all(_ints(c) for c in doc["coverage"].values()):
        raise bad("coverage")
    sec = doc["seconds"]
    if not isinstance(sec, float | int) or isinstance(sec, bool) or not 0 <= sec < 1e12:
        raise bad("seconds")
    found = doc["found"]
    fields = {"level", "index", "states", "transitions", "seconds"}
    if not isinstance(found, dict) or not all(
            _ints(j) and j < nprops and isinstance(f, dict) and set(f) == fields
            and all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0
                    for x in f.values())
            and f["level"] < len(pars) and f["index"] < len(pars[f["level"]])
            for j, f in found.items()):
        raise bad("found")
