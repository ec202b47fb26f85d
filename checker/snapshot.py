"""Resumable snapshots of an exploration: data only, checked before anything is decoded.

Layout::

    CRMODEL-SNAPSHOT\\n                magic
    {"format": ..., "version": 2, ...}\\n   one JSON header line (at most 64 KiB)
    payload                           `payload_bytes` bytes whose sha256 the header gives

The header says what the snapshot is for (the model's `fingerprint_salt()`, the properties,
exact mode, the hash function) so that a snapshot of another run is refused from the header
alone. The payload is decoded only once its length and checksum match. It is zlib-compressed
JSON in which every container carries a tag (tuple, list, set, frozenset, dict, array, bytes,
named tuple, int enum); nothing is unpickled. A named tuple or int enum is rebuilt only if its
class is already imported from the model's packages and is such a value type, so decoding
never imports a module and never calls anything but a value constructor; the engine then
checks the decoded structure before use. A field added to the engine's record needs no format
work if it is built from ints, floats, strings, bytes, lists, tuples, dicts, sets, arrays and
the model's named tuples and int enums.

Written atomically: to `.<name>.crmodel-tmp.<pid>` beside the target, then renamed. A process
killed mid-write leaves that file behind; the next write to the same target removes leftovers
of processes no longer alive.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

MAGIC = b"CRMODEL-SNAPSHOT\n"
# Bump when the layout of the header or the payload dict changes.
FORMAT_VERSION = 3
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
    payload = encode_payload(data)
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


# --- the payload codec: tagged JSON, no pickle ------------------------------------------------

MAX_PAYLOAD_JSON = 1 << 34  # decompressed size cap: a zip bomb is refused, not expanded


class PayloadError(ValueError):
    """A payload that does not decode to admitted values."""


def _encode(v: Any, names: dict[type, str]) -> Any:
    if v is None or isinstance(v, bool | str | float):
        return v
    t = type(v)
    if isinstance(v, enum.Enum) and isinstance(v, int):
        return ["e", names.setdefault(t, f"{t.__module__}:{t.__qualname__}"), int(v)]
    if t is int:
        return v
    if isinstance(v, tuple):
        if hasattr(v, "_fields"):
            name = names.setdefault(t, f"{t.__module__}:{t.__qualname__}")
            return ["n", name, *[_encode(x, names) for x in v]]
        return ["t", *[_encode(x, names) for x in v]]
    if t is list:
        return ["l", *[_encode(x, names) for x in v]]
    if t is set or t is frozenset:
        items = [_encode(x, names) for x in v]
        items.sort(key=lambda x: json.dumps(x, sort_keys=True))  # the same bytes every run
        return ["s" if t is set else "f", *items]
    if t is dict:
        return ["d", *[[_encode(k, names), _encode(x, names)] for k, x in v.items()]]
    if t is array:
        return ["a", v.typecode, v.tobytes().hex()]
    if t is bytes:
        return ["b", v.hex()]
    if isinstance(v, int):
        return int(v)
    raise TypeError(f"a snapshot cannot hold a {t.__qualname__}")


def encode_payload(data: dict[str, Any]) -> bytes:
    """`data` as compressed tagged JSON (deterministic: sets are written sorted)."""
    text = json.dumps(_encode(data, {}), separators=(",", ":"))
    return zlib.compress(text.encode(), 6)


def _value_type(obj: Any) -> bool:
    """A named tuple or an int enum: calling it only builds a value."""
    if not isinstance(obj, type):
        return False
    if issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return True
    return issubclass(obj, int) and issubclass(obj, enum.Enum)


class _Decoder:
    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages
        self.types: dict[str, type] = {}

    def cls(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise PayloadError("a type name is not a string")
        got = self.types.get(name)
        if got is not None:
            return got
        module, _, qual = name.partition(":")
        mod = sys.modules.get(module)  # never import what a file names
        obj: Any = None
        if mod is not None and module.split(".")[0] in self.packages:
            obj = mod
            for part in qual.split("."):
                obj = vars(obj).get(part) if part.isidentifier() and hasattr(obj, "__dict__") \
                    else None
        if not _value_type(obj):
            raise PayloadError(f"type {name:.80} is not admitted in a snapshot")
        self.types[name] = obj
        return obj

    def dec(self, v: Any) -> Any:
        if not isinstance(v, list):
            if isinstance(v, dict):
                raise PayloadError("an untagged object")
            return v
        if not v or not isinstance(v[0], str):
            raise PayloadError("an untagged list")
        tag, rest = v[0], v[1:]
        d = self.dec
        if tag == "t":
            return tuple(d(x) for x in rest)
        if tag == "l":
            return [d(x) for x in rest]
        if tag == "s":
            return {d(x) for x in rest}
        if tag == "f":
            return frozenset(d(x) for x in rest)
        if tag == "d":
            out = {}
            for kv in rest:
                if not (isinstance(kv, list) and len(kv) == 2):
                    raise PayloadError("a dict entry is not a pair")
                out[d(kv[0])] = d(kv[1])
            return out
        if tag == "n" and rest:
            c = self.cls(rest[0])
            vals = [d(x) for x in rest[1:]]
            if len(vals) != len(c._fields):
                raise PayloadError(f"{rest[0]:.80} with {len(vals)} fields")
            return c(*vals)
        if tag == "e" and len(rest) == 2 and type(rest[1]) is int:
            return self.cls(rest[0])(rest[1])
        if tag == "a" and len(rest) == 2 and rest[0] in tuple("bBhHiIlLqQfd") \
                and isinstance(rest[1], str):
            return array(rest[0], bytes.fromhex(rest[1]))
        if tag == "b" and len(rest) == 1 and isinstance(rest[0], str):
            return bytes.fromhex(rest[0])
        raise PayloadError(f"unknown or malformed tag {tag!r:.20}")


def decode_payload(payload: bytes, packages: tuple[str, ...]) -> Any:
    """The values `encode_payload` wrote; PayloadError (or ValueError) for anything else."""
    z = zlib.decompressobj()
    text = z.decompress(payload, MAX_PAYLOAD_JSON)
    if z.unconsumed_tail or not z.eof:
        raise PayloadError("compressed payload too large or incomplete")
    return _Decoder(packages).dec(json.loads(text))


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
        data = decode_payload(payload, packages)
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
