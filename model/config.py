"""Bounds of an exploration: how many tasks, descriptors, paths, flags, offsets and steps.

Presets `tiny`, `default` and `deep` are built in; a user's TOML file gives the same keys
(every key optional, defaults from the `base` preset it names, `default` if none).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.flags import ACC_NAMES, FLAG_NAMES, O_APPEND, O_NONBLOCK, O_RDONLY, O_RDWR, flags_str

KINDS = ("reg", "pipe", "pty", "epoll", "unix", "timerfd")
# Environment actions; those of a file kind are enabled with the kind.
ENV_ACTIONS = (
    "open", "close", "dup", "dup2", "setfl", "setfd", "setown", "lseek", "fork", "clone_files",
    "exec", "exit", "reopen", "pipe", "openpty", "epoll_create", "epoll_add", "epoll_del",
    "socketpair", "sendmsg", "recvmsg", "timerfd",
)
KIND_ACTIONS = {
    "reg": ("open", "lseek"),
    "pipe": ("pipe",),
    "pty": ("openpty",),
    "epoll": ("epoll_create", "epoll_add", "epoll_del"),
    "unix": ("socketpair", "sendmsg", "recvmsg"),
    "timerfd": ("timerfd",),
}


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
        kind_owned = {a for acts in KIND_ACTIONS.values() for a in acts} - {"open", "lseek"}
        on = set(ENV_ACTIONS) - kind_owned
        for k in self.kinds:
            on |= set(KIND_ACTIONS[k])
        if "reg" not in self.kinds:
            on -= {"open", "lseek"}
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


def validate(cfg: Config) -> Config:
    """Refuse out-of-range values with a message naming the key and what is allowed."""
    for key, (lo, hi) in _INT_BOUNDS.items():
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"{key} = {v!r}: must be an integer from {lo} to {hi}")
    for k in cfg.kinds:
        if k not in KINDS:
            raise ConfigError(f"kinds: unknown kind {k!r}; allowed: {', '.join(KINDS)}")
    for p in cfg.outside_acts_after:
        if p not in RACE_PHASES:
            raise ConfigError(f"outside_acts_after: unknown phase {p!r}; allowed: "
                              + ", ".join(RACE_PHASES))
    for a in cfg.disabled:
        if a not in ENV_ACTIONS:
            raise ConfigError(f"disabled: unknown action {a!r}; allowed: {', '.join(ENV_ACTIONS)}")
    if not cfg.access_modes:
        raise ConfigError("access_modes: give at least one of " + ", ".join(ACC_NAMES))
    if not cfg.open_flags:
        raise ConfigError("open_flags: give at least one flag set (an empty list [] is one)")
    return cfg


def _parse_flag_sets(key: str, value: Any) -> tuple[int, ...]:
    allowed = ", ".join(FLAG_NAMES)
    if not isinstance(value, list) or not all(isinstance(s, list) for s in value):
        raise ConfigError(f"{key}: must be a list of flag lists, e.g. [[], [\"O_APPEND\"]]")
    out = []
    for s in value:
        bits = 0
        for n in s:
            if n not in FLAG_NAMES or n == "O_LARGEFILE":
                raise ConfigError(f"{key}: unknown flag {n!r}; allowed: {allowed}")
            bits |= FLAG_NAMES[n]
        out.append(bits)
    return tuple(out)


def from_dict(data: dict[str, Any], name: str = "custom") -> Config:
    """Build a config from TOML-shaped data; unknown keys and bad values are refused."""
    base_name = data.get("base", "default")
    if base_name not in PRESETS:
        raise ConfigError(f"base = {base_name!r}: must be one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Config)} - {"name"}
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key == "base":
            continue
        if key not in fields:
            raise ConfigError(f"unknown key {key!r}; allowed: base, {', '.join(sorted(fields))}")
        if key == "access_modes":
            if not isinstance(value, list) or any(v not in ACC_NAMES for v in value):
                raise ConfigError(f"access_modes: a list of {', '.join(ACC_NAMES)}")
            kw[key] = tuple(ACC_NAMES[v] for v in value)
        elif key in ("open_flags", "setfl_flags"):
            kw[key] = _parse_flag_sets(key, value)
        elif key in ("kinds", "disabled", "outside_acts_after"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key}: must be a list of names")
            kw[key] = tuple(value)
        elif key == "open_cloexec":
            if not isinstance(value, bool):
                raise ConfigError("open_cloexec: must be true or false")
            kw[key] = value
        elif key == "doc":
            kw[key] = str(value)
        else:
            kw[key] = value
    return validate(dataclasses.replace(PRESETS[base_name], name=name, **kw))


def load(spec: str) -> Config:
    """A preset name, or the path of a TOML file."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if not path.suffix == ".toml" and not path.exists():
        raise ConfigError(f"config {spec!r}: not a preset ({', '.join(PRESETS)}) nor a TOML file")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {spec!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {spec!r}: not valid TOML: {e}") from None
    return from_dict(data, name=path.stem)
