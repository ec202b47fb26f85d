"""Checkpoint and restart steps on hand-built scenarios: the objhash counts, the contained
check, the image records, restart's validation errors and the restored sharing."""

from __future__ import annotations

import errno

import pytest

from model import checkpoint as ck
from model.env import apply, initial_world
from model.flags import CKPT_SETFL_MASK, O_APPEND, O_LARGEFILE, O_NONBLOCK, O_RDWR
from model.image import (
    MALFORMED,
    R_FD,
    R_FILE,
    T_BAD_NFDS,
    T_BAD_OBJREF,
    T_CREAT_FLAGS,
    T_DUP_OBJREF,
    T_FMODE_DOWN,
    T_UNKNOWN_OBJREF,
    T_WRONG_TYPE,
    tamper,
)
from model.restart import restart
from model.state import DONE, FAILED, OBJ_FILE, OBJ_FILE_TABLE, OBJ_TTY, WRITTEN, World
from model.variants import VARIANTS

LINUXCR, FIXED = VARIANTS["linuxcr"], VARIANTS["fixed"]


def run(w: World, *actions: tuple) -> World:
    for a in actions:
        out, w = apply(w, a)
        assert out[0] == "ok", (a, out)
    return w


def checkpoint(w: World, v=LINUXCR, until: int = DONE) -> World:
    w = ck.freeze(w, v)
    steps = [ck.collect, ck.contained, ck.write, ck.visited] if v.full_container else [
        ck.write, ck.visited]
    for step in steps:
        if w.cr.phase >= until:
            break
        w = step(w, v)
    return w


def container(*actions: tuple) -> World:
    """Task 0 outside forks task 1 into the container, then the actions run."""
    return run(initial_world(4), ("fork", 0, 1), *actions)


def users(w: World) -> dict[tuple[int, int], int]:
    return {(e.objtype, e.ptr): e.users for e in w.cr.objhash}


def test_users_start_at_two_and_count_each_further_encounter() -> None:
    w = container(("open", 1, 0, O_RDWR, 0, 0), ("dup", 1, 0))
    w = checkpoint(w, until=ck.COLLECTED)  # stop after collect
    u = users(w)
    assert u[(OBJ_FILE_TABLE, w.tasks[1].table)] == 2
    assert u[(OBJ_FILE, 0)] == 3  # two descriptors: 2 + 1
    assert w.cr.phase == ck.COLLECTED


def test_contained_file_passes_and_shared_file_is_a_leak() -> None:
    ok = checkpoint(container(("open", 1, 0, O_RDWR, 0, 0)))
    assert ok.cr.phase == DONE and ok.cr.error == 0
    # opened before the fork: the outside task holds the same struct file
    shared = checkpoint(run(initial_world(4), ("open", 0, 0, O_RDWR, 0, 0), ("fork", 0, 1)))
    assert shared.cr.phase == FAILED and shared.cr.error == errno.EBUSY
    assert shared.cr.clean == 0


def test_pipe_with_outside_end_is_not_detected_by_linuxcr_but_by_fixed() -> None:
    w = run(initial_world(4), ("pipe", 0), ("fork", 0, 1), ("close", 1, 1), ("close", 0, 0))
    bad = checkpoint(w, LINUXCR)
    assert bad.cr.phase == DONE and bad.cr.leak_check  # written though shared
    good = checkpoint(w, FIXED)
    assert good.cr.phase == FAILED and good.cr.error == errno.EBUSY


def test_epoll_target_over_count_is_a_false_leak_in_linuxcr_only() -> None:
    w = container(("pipe", 1), ("epoll_create", 1), ("epoll_add", 1, 2, 0))
    bad = checkpoint(w, LINUXCR)
    assert bad.cr.phase == FAILED and bad.cr.error == errno.EBUSY and bad.cr.clean == 1
    good = checkpoint(w, FIXED)
    assert good.cr.phase == DONE


def test_pty_pair_counts_balance_inside() -> None:
    w = checkpoint(container(("openpty", 1)), until=ck.CHECKED)
    u = users(w)
    assert u[(OBJ_TTY, 0)] == 2 and u[(OBJ_TTY, 1)] == 3  # the slave: master's collect + own
    assert w.cr.phase == ck.CHECKED


def test_uncheckpointable_owner_and_in_flight_fail() -> None:
    assert checkpoint(container(("timerfd", 1))).cr.error == errno.EBADF
    assert checkpoint(container(("open", 1, 0, O_RDWR, 0, 0), ("setown", 1, 0))).cr.error == (
        errno.EBUSY)
    inflight = container(("socketpair", 1), ("open", 1, 0, O_RDWR, 0, 0), ("sendmsg", 1, 0, 2))
    assert checkpoint(inflight).cr.phase == FAILED


def test_image_records_and_restart_preserve_sharing_flags_cloexec() -> None:
    w = container(
        ("open", 1, 0, O_RDWR, O_APPEND, 0), ("dup", 1, 0), ("setfd", 1, 1, 1),
        ("lseek", 1, 0, 1), ("pipe", 1), ("setfl", 1, 2, O_NONBLOCK),
    )
    done = checkpoint(w, FIXED, until=WRITTEN)
    image = done.cr.image
    files = [r for r in image if r[0] == R_FILE]
    fds = [r for r in image if r[0] == R_FD]
    assert len(files) == 3 and [r.fd for r in fds] == [0, 1, 2, 3]
    assert fds[0].file_ref == fds[1].file_ref and [r.cloexec for r in fds] == [0, 1, 0, 0]
    code, obs, counts = restart(image, FIXED, 4)
    assert code == 0 and obs == done.cr.snapshot
    assert [n for n, _ in counts] == [2, 1, 1]


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_image_is_refused_with_nothing_left(kind: int) -> None:
    w = container(("open", 1, 0, O_RDWR, 0, 0), ("pipe", 1))
    image = checkpoint(w, FIXED, until=WRITTEN).cr.image
    bad = tamper(image, kind)
    assert bad is not None and bad != image
    code, obs, _ = restart(bad, FIXED, 4)
    want = {T_BAD_OBJREF: errno.EINVAL, T_UNKNOWN_OBJREF: errno.EINVAL,
            T_DUP_OBJREF: errno.EINVAL, T_WRONG_TYPE: errno.ENOMSG,
            T_CREAT_FLAGS: errno.EINVAL, T_BAD_NFDS: errno.EMFILE}.get(kind, errno.EINVAL)
    assert code == want and obs == ()


def test_unknown_objref_is_unknown_past_the_objects_files_are_on() -> None:
    """A pipe's inode objref comes after its first file's: the unknown objref must be past
    it, or it names the inode and a restart without the type check skips the descriptor."""
    w = container(("pipe", 1), ("close", 1, 1))
    image = checkpoint(w, FIXED, until=WRITTEN).cr.image
    bad = tamper(image, T_UNKNOWN_OBJREF)
    code, obs, _ = restart(bad, VARIANTS["mut-no-type-check"], 4)
    assert code == errno.EINVAL and obs == ()


def test_fmode_downgrade_only() -> None:
    w = container(("open", 1, 0, O_RDWR, 0, 0))
    image = tamper(checkpoint(w, FIXED, until=WRITTEN).cr.image, T_FMODE_DOWN)
    code, obs, files = restart(image, FIXED, 4)
    assert code == 0 and obs[1][0][2] & 2 == 0  # WRITE dropped
    code, obs, files = restart(image, VARIANTS["mut-fmode-upgrade"], 4)
    assert code == 0 and obs[1][0][2] & 2  # the mutant keeps WRITE


def test_restart_setfl_mask_and_largefile() -> None:
    w = container(("openpty", 1))
    image = checkpoint(w, LINUXCR, until=WRITTEN).cr.image
    _, obs, _ = restart(image, LINUXCR, 4)
    slave = obs[1][1]
    assert slave[1] & O_LARGEFILE  # reopened by name: open() adds it; the original lacked it
    _, obs, _ = restart(image, FIXED, 4)
    assert not obs[1][1][1] & O_LARGEFILE
    assert CKPT_SETFL_MASK & O_LARGEFILE == 0
