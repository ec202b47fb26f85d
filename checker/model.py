"""What the checker needs from a model, and the defaults for the optional parts.

The checker knows nothing about what a model describes: a model is a set of initial states,
a successor function and a symmetry reduction (`canonical`). Everything else is optional and
looked up with `getattr`, falling back to the generic defaults below.

Requirements on states (checked nowhere, relied on everywhere):

* States are immutable, hashable values built from ``int``, ``bool``, ``tuple``,
  ``NamedTuple``, ``frozenset`` and ``IntEnum``. No ``str``, no plain ``Enum`` (hashed by name),
  no ``None`` and no NaN: in CPython 3.11 ``hash(str)`` is salted per process
  (PYTHONHASHSEED) and ``hash(None)``/``hash(nan)`` depend on an address, while the explicit
  engine stores only ``hash()`` fingerprints, and snapshots must be resumable by another process.
* ``hash()`` is then deterministic, but not collision-free: see `checker.explicit` for the
  risk. In particular ``hash(-1) == hash(-2)``, so states that differ *only* by -1 versus -2 in
  one position always collide; use one negative sentinel, not two.
* NamedTuples compare and hash as plain tuples (their type is ignored): two record types in
  the same position must differ by a field (e.g. an int tag), and ``True == 1``.
* ``successors`` and ``init_states`` are deterministic (same order every run).
* ``canonical(s)`` returns a representative isomorphic to ``s`` and invariant under the
  symmetry; properties must give the same answer on ``s`` and ``canonical(s)``.

Actions are hashable values, by convention tuples whose first element is the action name.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

S = TypeVar("S")
A = TypeVar("A")

PropertyKind = Literal["invariant", "reachable"]


class Model(Protocol[S, A]):
    """The interface a model offers. Only the first three methods are required."""

    def init_states(self) -> Iterable[S]: ...

    def successors(self, s: S) -> Iterable[tuple[A, S]]:
        """Every enabled action with its successor, in a deterministic order."""
        ...

    def canonical(self, s: S) -> S:
        """The symmetry-reduced representative of `s` (`s` itself without symmetry)."""
        ...

    # Optional, looked up with getattr (see `ModelHooks`):
    # action_name(a) -> str, all_action_names() -> Sequence[str], state_to_json(s) -> Any,
    # action_to_json(a) -> Any, describe(s) -> dict[str, str], format_action(a) -> str,
    # fingerprint_salt() -> str, fingerprint(s) -> int.


@dataclass(frozen=True)
class Property:
    """A predicate over states.

    ``invariant``: must hold in every reachable state (a violation gives a counterexample).
    ``reachable``: must hold in *some* reachable state (a witness trace shows it can happen),
    used to make sure the model is not vacuous.
    """

    name: str
    kind: PropertyKind
    predicate: Callable[[Any], bool] = field(compare=False)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("invariant", "reachable"):
            raise ValueError(f"property {self.name!r}: unknown kind {self.kind!r}")


def invariant(name: str, predicate: Callable[[Any], bool], description: str = "") -> Property:
    return Property(name, "invariant", predicate, description)


def reachable(name: str, predicate: Callable[[Any], bool], description: str = "") -> Property:
    return Property(name, "reachable", predicate, description)


def source_digest(*parts: Any) -> str:
    """A short digest of source code and values, for ``fingerprint_salt()``.

    Each part may be a module, class or function (its source text is hashed), a path to a
    file, or any other value (its repr is hashed: pass the configuration). Snapshots made
    before the code or the configuration changed are then refused on resume.
    """
    h = hashlib.sha256()
    for p in parts:
        if inspect.ismodule(p) or inspect.isclass(p) or inspect.isfunction(p):
            try:
                text = inspect.getsource(p)
            except (OSError, TypeError):
                text = repr(p)
        elif isinstance(p, os.PathLike) or (isinstance(p, str) and os.path.isfile(p)):
            with open(p, "rb") as f:
                h.update(f.read())
            continue
        else:
            text = repr(p)
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# --- generic defaults -------------------------------------------------------------------------


def default_action_name(a: Any) -> str:
    if isinstance(a, tuple) and a and isinstance(a[0], str):
        return a[0]
    return str(a)


def _scalar_text(v: Any) -> str:
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, frozenset):
        return "{" + ", ".join(sorted(_scalar_text(x) for x in v)) + "}"
    if isinstance(v, tuple) and not hasattr(v, "_fields"):
        inner = ", ".join(_scalar_text(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


def default_format_action(a: Any) -> str:
    if isinstance(a, tuple) and a and isinstance(a[0], str):
        return f"{a[0]}({', '.join(_scalar_text(x) for x in a[1:])})"
    return _scalar_text(a)


def _is_record(v: Any) -> bool:
    return isinstance(v, tuple) and hasattr(v, "_fields")


def _is_flat(v: tuple) -> bool:
    """A tuple of scalars, short enough to read as one value."""
    return not any(isinstance(x, tuple | frozenset) for x in v) and len(v) <= 16


def default_describe(state: Any) -> dict[str, str]:
    """Flatten a state into ``path -> text``: records by field, tuples by index.

    Flat short tuples of scalars stay one entry (``fds: (3, -1, 4)``) so that a change reads
    as one line; the top level is always expanded so that every variable has its own entry.
    """
    out: dict[str, str] = {}

    def walk(path: str, v: Any, top: bool = False) -> None:
        if _is_record(v):
            for name in v._fields:
                walk(f"{path}.{name}" if path else name, getattr(v, name))
        elif isinstance(v, tuple) and v and (top or not _is_flat(v)):
            for i, x in enumerate(v):
                walk(f"{path}[{i}]", x)
        else:
            out[path or "state"] = _scalar_text(v)

    walk("", state, top=True)
    return out


def to_plain(v: Any) -> Any:
    """A JSON-able view of a state or action value: records become objects, tuples lists."""
    if isinstance(v, bool | str) or v is None:
        return v
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, int | float):
        return v
    if _is_record(v):
        return {name: to_plain(getattr(v, name)) for name in v._fields}
    if isinstance(v, tuple | list):
        return [to_plain(x) for x in v]
    if isinstance(v, frozenset | set):
        return sorted((to_plain(x) for x in v), key=repr)
    if isinstance(v, dict):
        return {str(k): to_plain(x) for k, x in v.items()}
    return repr(v)


def default_state_to_json(s: Any) -> Any:
    return to_plain(s)


def default_action_to_json(a: Any) -> Any:
    if isinstance(a, tuple) and a and isinstance(a[0], str):
        return to_plain(a[1:])
    return to_plain(a)


@dataclass(frozen=True)
class ModelHooks:
    """A model's methods, the optional ones resolved once to the model's or the defaults."""

    model: Any
    init_states: Callable[[], Iterable[Any]]
    successors: Callable[[Any], Iterable[tuple[Any, Any]]]
    canonical: Callable[[Any], Any]
    action_name: Callable[[Any], str]
    format_action: Callable[[Any], str]
    describe: Callable[[Any], dict[str, str]]
    state_to_json: Callable[[Any], Any]
    action_to_json: Callable[[Any], Any]
    all_action_names: Sequence[str] | None
    fingerprint_salt: str
    fingerprint: Callable[[Any], int]
    # what a trace file should say about the run (e.g. its variant and bounds), for replay
    itf_meta: Callable[[], dict[str, Any]] = dict


def _identity(s: Any) -> Any:
    return s


def hooks(model: Any) -> ModelHooks:
    if isinstance(model, ModelHooks):
        return model
    names = getattr(model, "all_action_names", None)
    salt = getattr(model, "fingerprint_salt", None)
    return ModelHooks(
        model=model,
        # Required by the engines (which check), not by trace rendering.
        init_states=getattr(model, "init_states", None),  # type: ignore[arg-type]
        successors=getattr(model, "successors", None),  # type: ignore[arg-type]
        canonical=getattr(model, "canonical", _identity),
        action_name=getattr(model, "action_name", default_action_name),
        format_action=getattr(model, "format_action", default_format_action),
        describe=getattr(model, "describe", default_describe),
        state_to_json=getattr(model, "state_to_json", default_state_to_json),
        action_to_json=getattr(model, "action_to_json", default_action_to_json),
        all_action_names=list(names()) if names is not None else None,
        fingerprint_salt=str(salt()) if salt is not None else type(model).__qualname__,
        fingerprint=getattr(model, "fingerprint", hash),
        itf_meta=getattr(model, "itf_meta", dict),
    )
