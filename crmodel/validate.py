"""Every input a user hands in, checked in one place before any work starts.

Options, TOML configs, `Config` objects built in Python, ITF traces, snapshot paths and
output paths all pass through here. A mistake raises `UsageError` (or a subclass) whose
message is one line naming the input and what is allowed; the CLI prints it and exits 2.
Files are read only if they are regular files of bounded size (a FIFO, a device such as
/dev/zero or a directory is refused without being read), and a FIFO swapped in after the
check cannot block the open (O_NONBLOCK).
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from checker.explicit import resident_bytes
from model.config import PRESETS, Config, ConfigError, parse_toml
from model.config import validate as validate_config

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes
MAX_ITF_BYTES = 64 << 20  # a trace of a few hundred states


class UsageError(ValueError):
    """A bad name, value or file given by the user: the CLI prints it on one line, exit 2."""


class SnapshotError(UsageError):
    """A snapshot that cannot be resumed or overwritten (another run's, tampered, truncated)."""


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, cut at `limit` characters (messages quote user input)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- files read --------------------------------------------------------------------------


def input_file(path: str | os.PathLike[str] | None, what: str) -> os.stat_result:
    """Check, without opening it, that `path` names an existing regular file."""
    name = os.fspath(path) if path is not None else ""
    if not name:
        raise UsageError(f"{what}: no file given")
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise UsageError(f"{what} {name!r}: not found") from None
    except OSError as e:
        raise UsageError(f"{what} {name!r}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {name!r}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {name!r}: not a regular file (a FIFO, device or socket)")
    return st


def read_input(path: str | os.PathLike[str], what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or a UsageError saying why not."""
    name = os.fspath(path)
    st = input_file(name, what)
    if st.st_size > limit:
        raise UsageError(f"{what} {name!r}: {st.st_size:,} bytes, more than the {limit:,} "
                         "allowed")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise UsageError(f"{what} {name!r}: cannot open: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
            raise UsageError(f"{what} {name!r}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"{what} {name!r}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{what} {name!r}: more than the {limit:,} bytes allowed")
    return data


def read_text(path: str | os.PathLike[str], what: str, limit: int) -> str:
    try:
        return read_input(path, what, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {os.fspath(path)!r}: not UTF-8 text (byte {e.start})") from None


# --- configs -----------------------------------------------------------------------------


def config(spec: Any) -> Config:
    """A preset name, the path of a TOML file, or a `Config` (checked like a file's)."""
    try:
        if isinstance(spec, Config):
            return validate_config(spec)
        if not isinstance(spec, str | os.PathLike):
            raise UsageError(f"config: a preset name ({', '.join(PRESETS)}), a TOML file or a "
                             f"Config, not {type(spec).__name__}")
        name = os.fspath(spec)
        if name in PRESETS:
            return PRESETS[name]
        path = Path(name)
        if path.suffix != ".toml" and not path.exists():
            raise UsageError(f"config {name!r}: not a preset ({', '.join(PRESETS)}) nor a "
                             "TOML file")
        text = read_text(path, "config file", MAX_CONFIG_BYTES)
        try:
            return parse_toml(text, path.stem)
        except ConfigError as e:
            raise UsageError(f"config file {name!r}: {e}") from None
    except ConfigError as e:
        raise UsageError(f"config: {e}") from None


# --- names and numbers -------------------------------------------------------------------


def names(value: Sequence[str] | None, known: Sequence[str], what: str) -> list[str]:
    """The chosen names (all of `known` when none), in order, duplicates dropped."""
    if value is None:
        return list(known)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise UsageError(f"{what}s: a list of names, e.g. [{known[0]!r}], not {value!r:.60}")
    value = list(value)
    if not value:
        return list(known)
    for n in value:
        if not isinstance(n, str) or n not in known:
            raise UsageError(f"unknown {what} {n!r:.60}; known: {', '.join(known)}")
    return list(dict.fromkeys(value))


def count(name: str, value: Any, lo: int, hi: int | None = None) -> int | None:
    """An optional integer option within [lo, hi]."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (
            hi is not None and value > hi):
        allowed = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise UsageError(f"{name} = {value!r:.60}: must be an integer {allowed}")
    return value


def seconds(name: str, value: Any, *, zero: bool = False,
            infinite: bool = False) -> float | None:
    """An optional number of seconds: finite (or inf when `infinite`), > 0 (>= 0 with `zero`)."""
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value >= 0 if zero else value > 0) and (infinite or math.isfinite(value))
    if not ok:
        what = "a number of seconds " + (">= 0" if zero else "> 0")
        raise UsageError(f"{name} = {value!r:.60}: must be {what}"
                         + ("" if infinite else " (finite)"))
    return float(value)


def memory(name: str, value: Any) -> int | None:
    """A memory bound in bytes, or text such as 2G, 500M, 80% (of the memory available)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip().upper()
        try:
            if text.endswith("%"):
                pct = float(text[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                return max(1, int(available_memory() * pct / 100))
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
            figure = float(text[:-1] if mult > 1 else text)
            if math.isfinite(figure) and figure > 0:
                return max(1, int(figure * mult))
        except ValueError:
            pass
    raise UsageError(f"{name} = {value!r:.60}: must be a size such as 2G, 500M, 4096 (bytes) "
                     "or 80% (of the memory available)")


def default_memory() -> int:
    """The default --max-memory: 80% of what the machine could give this process at start."""
    return int(available_memory() * 0.8)


def available_memory() -> int:
    """Bytes the system could give this process now (MemAvailable plus what it holds)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
            else:
                raise OSError
    except (OSError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return avail + resident_bytes()


# --- outputs -----------------------------------------------------------------------------


def _probe_dir(d: Path, what: str, name: str) -> None:
    """Create and remove a file in `d`: permission bits do not stop root, a read-only or
    special file system does."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".crmodel-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{what} {name!r}: cannot write in {str(d)!r}: {e.strerror}") from None


def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_folder(folder: Path, what: str, name: str) -> None:
    """`folder` exists or is made, and a file can be created in it."""
    top = _existing_ancestor(folder)
    if not top.is_dir():
        raise UsageError(f"{what} {name!r}: {str(top)!r} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{what} {name!r}: cannot make {str(folder)!r}: {e.strerror}") from None
    _probe_dir(folder, what, name)


def _named(path: str | os.PathLike[str], what: str) -> tuple[str, Path]:
    name = os.fspath(path)
    if not name:
        raise UsageError(f"{what}: an empty path")
    return name, Path(name)


def output_file(path: str | os.PathLike[str] | None, what: str) -> Path | None:
    """Check before any work that `path` can be written: not a directory or a special file,
    in a folder that exists (or is made here) and takes new files."""
    if path is None:
        return None
    name, p = _named(path, what)
    if p.is_dir():
        raise UsageError(f"{what} {name!r}: is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise UsageError(f"{what} {name!r}: not a regular file")
    _writable_folder(p.parent, what, name)
    return p


def output_dir(path: str | os.PathLike[str] | None, what: str) -> Path | None:
    """Check before any work that files can be written in folder `path` (made if missing)."""
    if path is None:
        return None
    name, p = _named(path, what)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {name!r}: exists and is not a directory")
    _writable_folder(p, what, name)
    return p


# --- ITF traces --------------------------------------------------------------------------


def itf_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON of an ITF trace file, checked for the shape `crmodel check --traces` writes
    (states holding the model's variables); anything else is a UsageError."""
    name = os.fspath(path)
    text = read_text(path, "trace", MAX_ITF_BYTES)
    try:
        doc = json.loads(text)
    except RecursionError:
        raise UsageError(f"trace {name!r}: JSON nested too deeply") from None
    except ValueError as e:
        raise UsageError(f"trace {name!r}: not JSON ({one_line(str(e), 80)}); an ITF trace "
                         "from `crmodel check --traces` is wanted") from None
    states = doc.get("states") if isinstance(doc, dict) else None
    if not isinstance(states, list) or not states or not all(isinstance(s, dict)
                                                               for s in states):
        raise UsageError(f"trace {name!r}: not an ITF trace (no list of states); one written "
                         "by `crmodel check --traces` is wanted")
    if not isinstance(doc.get("vars", []), list) or not isinstance(doc.get("#meta", {}), dict):
        raise UsageError(f"trace {name!r}: not an ITF trace (bad vars or #meta)")
    return doc
