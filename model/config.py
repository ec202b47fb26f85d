"""Bounds of an exploration: how many tasks, descriptors, paths, flags, offsets and steps.

Presets `tiny`, `default` and `deep` are built in; a user's TOML file gives the same keys
(every key optional, defaults from the `base` preset it names, `default` if none).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any

from model.actions import ACTIONS
from model.flags import ACC_NAMES, FLAG_NAMES, O_APPEND, O_NONBLOCK, O_RDONLY, O_RDWR, flags_str

KINDS = ("reg", "pipe", "pty", "epoll", "unix", "timerfd", "fifo", "unlinked")
# Environment actions (declared in model.actions); those of a file kind come with the kind.
ENV_ACTIONS = tuple(ACTIONS)
KIND_ACTIONS = {k: tuple(a.name for a in ACTIONS.values() if a.kind == k) for k in KINDS}


RACE_PHASES = ("collected", "checked", "written")


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    inside_tasks: int = 1  # most live tasks inside the container at once
    outside_tasks: int = 1  # most live tasks outside it (the initial task is one)
    max_fds: int = 3  # descriptors per fd table (RLIMIT_NOFILE)
    paths: int = 1  # regular files f0..f{paths-1}
    access_modes: tuple[int, ...] = (O_RDWR,)  # access modes open() and reopen explore
    open_flags: tuple[int, ...] = (0,)  # status flag sets open() explores
    open_cloexec: bool = False  # whether open() also explores O_CLOEXEC
    setfl_flags: tuple[int, ...] = (O_APPEND,)  # flag sets F_SETFL explores
    offsets: int = 2  # f_pos takes values 0..offsets-1
    kinds: tuple[str, ...] = ("reg", "pipe")
    disabled: tuple[str, ...] = ()  # environment actions left out
    env_steps: int = 4  # environment steps before and during a checkpoint
    checkpoint_steps: int = 2  # outside-task steps allowed while a checkpoint runs
    # the phases after which outside tasks may act (before the next checkpoint step)
    outside_acts_after: tuple[str, ...] = ("collected", "checked", "written")
    doc: str = field(default="", compare=False)

    def enabled_actions(self) -> frozenset[str]:
        on = {a.name for a in ACTIONS.values() if a.kind is None or a.kind in self.kinds}
        return frozenset(on - set(self.disabled))

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-able view with flag names rather than numbers."""
        d = dataclasses.asdict(self)
        d["access_modes"] = [flags_str(a) for a in self.access_modes]
        d["open_flags"] = [_flag_names(f) for f in self.open_flags]
        d["setfl_flags"] = [_flag_names(f) for f in self.setfl_flags]
        d["kinds"] = list(self.kinds)
        d["disabled"] = list(self.disabled)
        d["outside_acts_after"] = list(self.outside_acts_after)
        return d

    def key(self) -> str:
        """A stable text identity of the bounds (for snapshots)."""
        d = self.to_dict()
        d.pop("doc")
        d.pop("name")
        return repr(sorted(d.items()))


def _flag_names(value: int) -> list[str]:
    return [n for n, v in FLAG_NAMES.items() if value & v]


PRESETS: dict[str, Config] = {
    "tiny": Config(
        name="tiny",
        doc="seconds, for unit tests: every file kind, two tasks inside, three descriptors; "
        "no dup2, exec, F_SETOWN or SCM_RIGHTS",
        inside_tasks=2,
        outside_tasks=1,
        max_fds=3,
        paths=1,
        access_modes=(O_RDWR,),
        open_flags=(0,),
        setfl_flags=(O_APPEND,),
        offsets=2,
        kinds=("reg", "pipe", "pty", "epoll", "unix", "timerfd"),
        env_steps=4,
        checkpoint_steps=1,
        disabled=("dup2", "exec", "setown", "sendmsg", "recvmsg"),
    ),
    "default": Config(
        name="default",
        doc="the main job: tiny's bounds with every environment action enabled",
        inside_tasks=2,
        outside_tasks=1,
        max_fds=3,
        paths=1,
        access_modes=(O_RDWR,),
        open_flags=(0,),
        setfl_flags=(O_APPEND,),
        offsets=2,
        kinds=("reg", "pipe", "pty", "epoll", "unix", "timerfd"),
        env_steps=4,
        checkpoint_steps=1,
    ),
    "deep": Config(
        name="deep",
        doc="benchmarks: one more environment step, two access modes and flag sets",
        inside_tasks=2,
        outside_tasks=1,
        max_fds=3,
        paths=1,
        access_modes=(O_RDONLY, O_RDWR),
        open_flags=(0, O_NONBLOCK),
        setfl_flags=(O_APPEND, O_NONBLOCK),
        offsets=2,
        kinds=("reg", "pipe", "pty", "epoll", "unix", "timerfd"),
        env_steps=5,
        checkpoint_steps=1,
    ),
    "race": Config(
        name="race",
        doc="the checkpoint's window, small: one task on each side, regular files and "
        "pipes, every action, two outside steps while the checkpoint runs",
        inside_tasks=1,
        outside_tasks=1,
        max_fds=2,
        paths=1,
        access_modes=(O_RDWR,),
        open_flags=(0,),
        setfl_flags=(O_APPEND,),
        offsets=2,
        kinds=("reg", "pipe"),
        env_steps=3,
        checkpoint_steps=2,
    ),
}

_INT_BOUNDS = {
    "inside_tasks": (1, 4),
    "outside_tasks": (1, 4),
    "max_fds": (1, 16),
    "paths": (1, 4),
    "offsets": (1, 8),
    "env_steps": (0, 64),
    "checkpoint_steps": (0, 16),
}


_SETTABLE = 0
for _n, _v in FLAG_NAMES.items():
    if _n != "O_LARGEFILE":
        _SETTABLE |= _v
_NAME_LISTS = {"kinds": KINDS, "disabled": ENV_ACTIONS, "outside_acts_after": RACE_PHASES}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: Config) -> Config:
    """Refuse wrong types and out-of-range values with a message naming the key and what is
    allowed; return the config with every sequence made a tuple (a `Config` built in Python
    with lists is accepted)."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"config: a Config or a preset name, not {type(cfg).__name__}")
    for key, (lo, hi) in _INT_BOUNDS.items():
        v = getattr(cfg, key)
        if not _int(v) or not lo <= v <= hi:
            raise ConfigError(f"{key} = {v!r:.60}: must be an integer from {lo} to {hi}")
    fixed: dict[str, Any] = {}
    for key, allowed in _NAME_LISTS.items():
        v = getattr(cfg, key)
        if not isinstance(v, tuple | list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{key} = {v!r:.60}: must be a list of names from "
                              + ", ".join(allowed))
        for x in v:
            if x not in allowed:
                raise ConfigError(f"{key}: unknown name {x!r:.60}; allowed: {', '.join(allowed)}")
        fixed[key] = tuple(v)
    if not fixed["kinds"]:
        raise ConfigError("kinds = []: give at least one of " + ", ".join(KINDS))
    acc = cfg.access_modes
    accs = set(ACC_NAMES.values())
    if not isinstance(acc, tuple | list) or not all(_int(a) and a in accs for a in acc):
        raise ConfigError(f"access_modes = {acc!r:.60}: must be a list of access modes "
                          f"({', '.join(f'{n}={v}' for n, v in ACC_NAMES.items())})")
    if not acc:
        raise ConfigError("access_modes = []: give at least one of " + ", ".join(ACC_NAMES))
    fixed["access_modes"] = tuple(acc)
    for key in ("open_flags", "setfl_flags"):
        v = getattr(cfg, key)
        if not isinstance(v, tuple | list) or not all(_int(x) and not x & ~_SETTABLE
                                                       for x in v):
            raise ConfigError(f"{key} = {v!r:.60}: must be a list of flag sets, each an int of "
                              f"the bits {', '.join(n for n in FLAG_NAMES if n != 'O_LARGEFILE')}")
        fixed[key] = tuple(v)
    if not fixed["open_flags"]:
        raise ConfigError("open_flags = []: give at least one flag set (an empty set [] is one)")
    if not isinstance(cfg.open_cloexec, bool):
        raise ConfigError(f"open_cloexec = {cfg.open_cloexec!r:.60}: must be true or false")
    if not isinstance(cfg.name, str) or not isinstance(cfg.doc, str):
        raise ConfigError("name and doc: must be strings")
    if all(getattr(cfg, k) is v for k, v in fixed.items()):
        return cfg
    return dataclasses.replace(cfg, **fixed)


def _parse_flag_sets(key: str, value: Any) -> tuple[int, ...]:
    allowed = ", ".join(n for n in FLAG_NAMES if n != "O_LARGEFILE")
    if not isinstance(value, list) or not all(isinstance(s, list) for s in value):
        raise ConfigError(f"{key}: must be a list of flag lists, e.g. [[], [\"O_APPEND\"]]")
    out = []
    for s in value:
        bits = 0
        for n in s:
            if not isinstance(n, str) or n not in FLAG_NAMES or n == "O_LARGEFILE":
                raise ConfigError(f"{key}: unknown flag {n!r:.60}; allowed: {allowed}")
            bits |= FLAG_NAMES[n]
        out.append(bits)
    return tuple(out)


def from_dict(data: dict[str, Any], name: str = "custom") -> Config:
    """Build a config from TOML-shaped data; unknown keys and bad values are refused."""
    base_name = data.get("base", "default")
    if not isinstance(base_name, str) or base_name not in PRESETS:
        raise ConfigError(f"base = {base_name!r:.60}: must be one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Config)} - {"name"}
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key == "base":
            continue
        if key not in fields:
            raise ConfigError(f"unknown key {key!r:.60}; allowed: base, "
                              f"{', '.join(sorted(fields))}")
        if key == "access_modes":
            if not isinstance(value, list) or not all(isinstance(v, str) and v in ACC_NAMES
                                                      for v in value):
                raise ConfigError(f"access_modes: a list of {', '.join(ACC_NAMES)}, "
                                  f"not {value!r:.60}")
            kw[key] = tuple(ACC_NAMES[v] for v in value)
        elif key in ("open_flags", "setfl_flags"):
            kw[key] = _parse_flag_sets(key, value)
        elif key == "doc":
            if not isinstance(value, str):
                raise ConfigError("doc: must be a string")
            kw[key] = value
        else:  # ints, name lists and open_cloexec: validate() checks their types
            kw[key] = value
    return validate(dataclasses.replace(PRESETS[base_name], name=name, **kw))


def parse_toml(text: str, name: str) -> Config:
    """A config from the text of a TOML file (the caller reads the file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply") from None
    return from_dict(data, name=name)
