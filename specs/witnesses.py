"""Reachability witnesses (Stateright's `sometimes`): states that must be reached, so that no
invariant holds only because the situation it speaks of never arises."""

from __future__ import annotations

import errno

from model.config import Config
from model.image import MALFORMED
from model.state import EPOLL, FAILED, PIPE_KINDS, PTMX, PTS, REG, RESTARTED, UNIX, World
from specs.properties import EPITEMS, KIND, POS, _restored
from specs.registry import reachable

# With users one short every checkpoint fails the contained check: nothing is restarted.
_NO_RESTART = {"mut-users-start-1": "every checkpoint fails: users one short everywhere"}


def _kind(name: str):
    def needs(cfg: Config) -> bool:
        return name in cfg.kinds

    return needs


def _shared_table(cfg: Config) -> bool:
    return cfg.inside_tasks >= 2 and "clone_files" in cfg.enabled_actions()


def _restored_kinds(w: World) -> set[int]:
    return {f[KIND] for f in w.cr.restored[1]} if _restored(w) else set()


@reachable(unreached=_NO_RESTART)
def restarted_regular_file(w: World) -> bool:
    """A checkpoint and restart succeed with a regular file open in the container."""
    return REG in _restored_kinds(w)


@reachable(unreached=_NO_RESTART, needs=_kind("pipe"))
def restarted_pipe(w: World) -> bool:
    """A checkpoint and restart succeed with a pipe end open in the container."""
    return bool(_restored_kinds(w) & PIPE_KINDS)


@reachable(unreached=_NO_RESTART, needs=_kind("pty"))
def restarted_pty(w: World) -> bool:
    """A checkpoint and restart succeed with a pty master or slave open in the container."""
    return bool(_restored_kinds(w) & {PTMX, PTS})


@reachable(unreached=_NO_RESTART, needs=_kind("unix"))
def restarted_unix_socket(w: World) -> bool:
    """A checkpoint and restart succeed with a unix socket open in the container."""
    return UNIX in _restored_kinds(w)


@reachable(unreached=_NO_RESTART, needs=_kind("epoll"))
def restarted_epoll_watching(w: World) -> bool:
    """A checkpoint and restart succeed with an epoll in the container watching a file that
    is not itself an epoll."""
    if not _restored(w):
        return False
    files = w.cr.restored[1]
    return any(
        f[KIND] == EPOLL and any(t >= 0 and files[t][KIND] != EPOLL for t, _ in f[EPITEMS])
        for f in files
    )


@reachable(unreached={**_NO_RESTART, "mut-no-shared-table": "tables are never shared"},
           needs=_shared_table)
def restarted_shared_table(w: World) -> bool:
    """A checkpoint and restart succeed with two tasks sharing one fd table (CLONE_FILES)."""
    if not _restored(w):
        return False
    groups = [tg for tg, _ in w.cr.restored[0]]
    return len(groups) != len(set(groups))


@reachable(unreached={**_NO_RESTART, "mut-no-lseek": "offsets are not restored",
                      "mut-new-file-per-fd": "dup'd descriptors no longer share a file"})
def restarted_dup_at_offset(w: World) -> bool:
    """A checkpoint and restart succeed with two descriptors sharing a file at a non-zero
    offset."""
    if not _restored(w):
        return False
    tasks, files = w.cr.restored
    uses: dict[int, set] = {}
    for tg, fds in tasks:  # a descriptor of a shared table counts once
        for fd, _, g in fds:
            uses.setdefault(g, set()).add((tg, fd))
    return any(len(n) > 1 and files[g][POS] != 0 for g, n in uses.items())


@reachable()
def leak_detected(w: World) -> bool:
    """A checkpoint fails with -EBUSY because something the container uses is referenced
    from outside."""
    cr = w.cr
    return bool(cr) and cr.phase == FAILED and cr.error == errno.EBUSY and not cr.clean


@reachable(unreached=_NO_RESTART)
def hostile_image_rejected(w: World) -> bool:
    """Restart refuses a malformed image with an error."""
    cr = w.cr
    return bool(cr) and cr.phase == RESTARTED and cr.tampered in MALFORMED and cr.rst_error != 0
