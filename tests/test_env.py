"""Unit tests of the environment transitions (`model.env`), the pure helpers of `model.world`
and config loading (`model.config`), against the model only (fast, no kernel).

The kernel facts behind each expectation are in `../shared/linux-cr-facts.md` section 6 and the
driver's docstring (`crmodel/live/driver.py`); `tests/test_conformance.py` checks the same
transitions against the live kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crmodel.validate import UsageError
from crmodel.validate import config as load
from model import config as cfgmod
from model.config import PRESETS, Config, ConfigError, from_dict
from model.env import CAN_POLL, SYSCALLS, Outcome, apply, env_actions, initial_world
from model.flags import (
    FMODE_LSEEK,
    FMODE_READ,
    FMODE_WRITE,
    O_APPEND,
    O_ASYNC,
    O_CLOEXEC,
    O_DIRECT,
    O_LARGEFILE,
    O_NOATIME,
    O_NONBLOCK,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    flags_str,
)
from model.state import (
    EMPTY,
    EPOLL,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    TIMERFD,
    UNIX,
    File,
    Task,
    World,
    slot,
    slot_cloexec,
    slot_file,
)
from model.world import canonical, f_count, normalize, project

O_CREAT, O_TRUNC, O_SYNC = 0o100, 0o1000, 0o4010000

Action = tuple


def run(actions: list[Action], max_fds: int = 8) -> tuple[list[Outcome], World]:
    """Apply `actions` from the initial world; the outcomes and the final world."""
    w = initial_world(max_fds)
    outs = []
    for a in actions:
        out, w = apply(w, a)
        outs.append(out)
    return outs, w


def file_at(w: World, t: int, fd: int) -> int:
    s = w.tables[w.tasks[t].table][fd]
    assert s != EMPTY, f"task {t} fd {fd} is closed"
    return slot_file(s)


def fobj(w: World, t: int, fd: int) -> File:
    return w.files[file_at(w, t, fd)]


def cloexec(w: World, t: int, fd: int) -> int:
    return slot_cloexec(w.tables[w.tasks[t].table][fd])


def fds(w: World, t: int) -> list[int]:
    return [fd for fd, s in enumerate(w.tables[w.tasks[t].table]) if s != EMPTY]


def step(w: World, action: Action) -> tuple[Outcome, World]:
    return apply(w, action)


def assert_fails_unchanged(w: World, action: Action, errname: str) -> None:
    """A failing call returns the very same world."""
    out, w2 = apply(w, action)
    assert out == ("err", errname), action
    assert w2 is w


# --------------------------------------------------------------------------------------------
# descriptors: allocation, EMFILE, dup, dup2, close
# --------------------------------------------------------------------------------------------


def test_initial_world() -> None:
    w = initial_world(4)
    assert w.tasks == (Task(0, 0, 0),)
    assert w.tables == ((EMPTY,) * 4,)
    assert w.files == () and w.steps == 0 and w.cr == ()


def test_open_takes_the_lowest_free_descriptor() -> None:
    outs, w = run([
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("close", 0, 1),
        ("open", 0, 0, O_WRONLY, 0, 0),
        ("pipe", 0),
    ])
    assert outs == [("ok", 0), ("ok", 1), ("ok", 2), ("ok", 0), ("ok", 1), ("ok", (3, 4))]
    assert fobj(w, 0, 1).f_flags == O_WRONLY | O_LARGEFILE


def test_open_flags_mode_and_cloexec() -> None:
    _, w = run([("open", 0, 1, O_RDWR, O_APPEND | O_ASYNC | O_NOATIME, 1)])
    f = fobj(w, 0, 0)
    # the kernel forces O_LARGEFILE on 64-bit and keeps even O_ASYNC (no ->fasync call)
    assert f.kind == REG and f.path == 1 and f.f_pos == 0
    assert f.f_flags == O_RDWR | O_APPEND | O_ASYNC | O_NOATIME | O_LARGEFILE
    assert f.f_mode == FMODE_READ | FMODE_WRITE | FMODE_LSEEK
    assert cloexec(w, 0, 0) == 1
    _, w = run([("open", 0, 0, O_RDONLY, 0, 0), ("open", 0, 0, O_WRONLY, 0, 0)])
    assert fobj(w, 0, 0).f_mode == FMODE_READ | FMODE_LSEEK
    assert fobj(w, 0, 1).f_mode == FMODE_WRITE | FMODE_LSEEK
    assert cloexec(w, 0, 0) == 0


@pytest.mark.parametrize(
    "make, free_needed",
    [
        (("open", 0, 0, O_RDWR, 0, 0), 1),
        (("epoll_create", 0), 1),
        (("timerfd", 0), 1),
        (("pipe", 0), 2),
        (("openpty", 0), 2),
        (("socketpair", 0), 2),
        (("dup", 0, 0), 1),
        (("reopen", 0, 0, 0, O_RDONLY), 1),
    ],
)
def test_emfile_with_a_full_table_changes_nothing(make: Action, free_needed: int) -> None:
    # fill all but free_needed - 1 slots of a 3-descriptor table
    _, w = run([("open", 0, 0, O_RDWR, 0, 0)] * (3 - free_needed + 1), max_fds=3)
    assert_fails_unchanged(w, make, "EMFILE")


def test_emfile_pipe_with_one_free_slot_takes_none() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0)], max_fds=2)
    assert_fails_unchanged(w, ("pipe", 0), "EMFILE")
    assert len(w.files) == 1


def test_close_and_ebadf() -> None:
    outs, w = run([("open", 0, 0, O_RDWR, 0, 0), ("close", 0, 0)])
    assert outs[1] == ("ok", 0)
    assert w.files == ()  # the last reference went: released
    assert_fails_unchanged(w, ("close", 0, 0), "EBADF")
    assert_fails_unchanged(w, ("close", 0, 7), "EBADF")
    assert_fails_unchanged(w, ("close", 0, 99), "EBADF")  # beyond the table


def test_dup_shares_the_file_and_clears_cloexec() -> None:
    outs, w = run([("open", 0, 0, O_RDWR, 0, 1), ("dup", 0, 0), ("lseek", 0, 1, 1)])
    assert outs[1] == ("ok", 1)
    assert file_at(w, 0, 0) == file_at(w, 0, 1)
    assert (cloexec(w, 0, 0), cloexec(w, 0, 1)) == (1, 0)
    assert fobj(w, 0, 0).f_pos == 1  # the offset belongs to the open file
    assert f_count(w, file_at(w, 0, 0)) == 2
    assert_fails_unchanged(w, ("dup", 0, 5), "EBADF")


def test_dup2_onto_itself_returns_newfd_and_changes_nothing() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 1)])
    out, w2 = step(w, ("dup2", 0, 0, 0))
    assert out == ("ok", 0)
    assert w2 is w  # even close-on-exec stays set
    assert_fails_unchanged(w, ("dup2", 0, 3, 3), "EBADF")  # onto itself, but closed


def test_dup2_onto_an_open_descriptor_closes_it() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0), ("open", 0, 1, O_RDONLY, 0, 1)])
    a, b = file_at(w, 0, 0), file_at(w, 0, 1)
    assert a != b
    out, w2 = step(w, ("dup2", 0, 0, 1))
    assert out == ("ok", 1)
    assert file_at(w2, 0, 0) == file_at(w2, 0, 1)
    assert cloexec(w2, 0, 1) == 0  # dup2 clears it on newfd
    assert len(w2.files) == 1 and w2.files[0].path == 0  # f1 lost its last reference
    assert f_count(w2, 0) == 2


def test_dup2_onto_an_open_descriptor_keeps_a_still_referenced_file() -> None:
    _, w = run([
        ("open", 0, 0, O_RDWR, 0, 0),
        ("open", 0, 1, O_RDONLY, 0, 0),
        ("dup", 0, 1),
        ("dup2", 0, 0, 1),
    ])
    assert len(w.files) == 2  # f1 still held by descriptor 2
    assert fobj(w, 0, 2).path == 1 and f_count(w, file_at(w, 0, 2)) == 1


def test_dup2_to_a_free_slot_and_out_of_range() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0)], max_fds=4)
    out, w2 = step(w, ("dup2", 0, 0, 3))
    assert out == ("ok", 3) and fds(w2, 0) == [0, 3]
    assert_fails_unchanged(w, ("dup2", 0, 0, 4), "EBADF")  # newfd >= RLIMIT_NOFILE
    assert_fails_unchanged(w, ("dup2", 0, 2, 3), "EBADF")


# --------------------------------------------------------------------------------------------
# fcntl: F_SETFL, F_SETFD, F_SETOWN; lseek
# --------------------------------------------------------------------------------------------


def test_setfl_ignores_the_access_mode_and_other_bits() -> None:
    _, w = run([("open", 0, 0, O_RDONLY, 0, 0)])
    out, w = step(w, ("setfl", 0, 0, O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_SYNC | O_CLOEXEC))
    assert out == ("ok", 0)
    f = fobj(w, 0, 0)
    assert f.f_flags == O_RDONLY | O_APPEND | O_LARGEFILE
    assert f.f_mode == FMODE_READ | FMODE_LSEEK  # never upgraded
    _, w = step(w, ("setfl", 0, 0, O_WRONLY | O_NONBLOCK | O_NOATIME | O_DIRECT))
    assert fobj(w, 0, 0).f_flags == O_NONBLOCK | O_NOATIME | O_DIRECT | O_LARGEFILE
    _, w = step(w, ("setfl", 0, 0, 0))  # clears the settable bits; O_LARGEFILE stays
    assert fobj(w, 0, 0).f_flags == O_LARGEFILE


def test_setfl_to_the_current_flags_returns_the_same_world() -> None:
    _, w = run([("open", 0, 0, O_RDONLY, O_APPEND, 0)])
    out, w2 = step(w, ("setfl", 0, 0, O_APPEND))
    assert out == ("ok", 0) and w2 is w


@pytest.mark.parametrize(
    "make, fd, has_fasync",
    [
        (("open", 0, 0, O_RDWR, 0, 0), 0, False),
        (("pipe", 0), 0, True),
        (("pipe", 0), 1, True),
        (("openpty", 0), 0, True),
        (("openpty", 0), 1, True),
        (("socketpair", 0), 0, True),
        (("epoll_create", 0), 0, False),
        (("timerfd", 0), 0, False),
    ],
)
def test_o_async_only_through_fasync(make: Action, fd: int, has_fasync: bool) -> None:
    _, w = run([make])
    before = fobj(w, 0, fd).f_flags
    out, w = step(w, ("setfl", 0, fd, O_ASYNC))
    assert out == ("ok", 0)
    assert fobj(w, 0, fd).f_flags == (before | O_ASYNC if has_fasync else before)
    _, w = step(w, ("setfl", 0, fd, 0))
    assert fobj(w, 0, fd).f_flags == before


def test_regular_file_opened_with_o_async_keeps_it() -> None:
    _, w = run([("open", 0, 0, O_RDONLY, O_ASYNC, 0), ("setfl", 0, 0, 0)])
    assert fobj(w, 0, 0).f_flags == O_ASYNC | O_LARGEFILE


@pytest.mark.parametrize(
    "make, fd",
    [
        (("openpty", 0), 0),
        (("openpty", 0), 1),
        (("socketpair", 0), 0),
        (("epoll_create", 0), 0),
        (("timerfd", 0), 0),
    ],
)
def test_o_direct_einval_applies_nothing(make: Action, fd: int) -> None:
    _, w = run([make])
    # O_APPEND and O_ASYNC in the same call are not applied either
    assert_fails_unchanged(w, ("setfl", 0, fd, O_DIRECT | O_APPEND | O_ASYNC), "EINVAL")


@pytest.mark.parametrize("make", [("open", 0, 0, O_RDWR, 0, 0), ("pipe", 0)])
def test_o_direct_accepted_on_regular_files_and_pipes(make: Action) -> None:
    _, w = run([make])
    out, w = step(w, ("setfl", 0, 0, O_DIRECT))
    assert out == ("ok", 0) and fobj(w, 0, 0).f_flags & O_DIRECT


def test_setfl_ebadf() -> None:
    assert_fails_unchanged(initial_world(4), ("setfl", 0, 0, O_APPEND), "EBADF")


def test_setfd_is_per_descriptor() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0), ("dup", 0, 0), ("setfd", 0, 1, 1)])
    assert (cloexec(w, 0, 0), cloexec(w, 0, 1)) == (0, 1)
    assert fobj(w, 0, 0).f_flags == O_RDWR | O_LARGEFILE  # not a file flag
    _, w = step(w, ("setfd", 0, 1, 0))
    assert cloexec(w, 0, 1) == 0
    assert_fails_unchanged(w, ("setfd", 0, 5, 1), "EBADF")


def test_setown_marks_the_open_file() -> None:
    _, w = run([("pipe", 0), ("setown", 0, 1)])
    assert fobj(w, 0, 1).owner == 1 and fobj(w, 0, 0).owner == 0
    out, w2 = step(w, ("setown", 0, 1))
    assert out == ("ok", 0) and w2 is w
    assert_fails_unchanged(w, ("setown", 0, 3), "EBADF")


def test_lseek_per_kind() -> None:
    _, w = run([
        ("open", 0, 0, O_RDWR, 0, 0),  # 0
        ("pipe", 0),  # 1, 2
        ("openpty", 0),  # 3, 4
        ("socketpair", 0),  # 5, 6
        ("epoll_create", 0),  # 7
        ("timerfd", 0),  # 8
    ], max_fds=10)
    out, w2 = step(w, ("lseek", 0, 0, 5))
    assert out == ("ok", 5) and fobj(w2, 0, 0).f_pos == 5
    for fd in range(1, 7):  # pipes, ttys, sockets: no FMODE_LSEEK
        assert_fails_unchanged(w, ("lseek", 0, fd, 1), "ESPIPE")
    for fd in (7, 8):  # noop_llseek: succeeds, the offset stays 0
        out, w2 = step(w, ("lseek", 0, fd, 3))
        assert out == ("ok", 0) and w2 is w
    assert_fails_unchanged(w, ("lseek", 0, 9, 0), "EBADF")


# --------------------------------------------------------------------------------------------
# tasks: fork, clone(CLONE_FILES), exec, exit
# --------------------------------------------------------------------------------------------


def test_fork_copies_the_table_with_cloexec_bits() -> None:
    outs, w = run([("open", 0, 0, O_RDWR, 0, 1), ("pipe", 0), ("fork", 0, 1)])
    assert outs[2] == ("ok", 1)
    assert w.tasks[1].inside == 1 and w.tasks[1].table != w.tasks[0].table
    assert w.tables[0] == w.tables[1]
    assert cloexec(w, 1, 0) == 1
    for f in range(len(w.files)):
        assert f_count(w, f) == 2  # every file gains a reference
    _, w = step(w, ("close", 1, 1))  # the tables are separate
    assert fds(w, 0) == [0, 1, 2] and fds(w, 1) == [0, 2]


def test_clone_files_shares_the_table() -> None:
    outs, w = run([("clone_files", 0, 0), ("open", 1, 0, O_RDWR, 0, 0)])
    assert outs[0] == ("ok", 1)
    assert w.tasks[0].table == w.tasks[1].table
    assert fds(w, 0) == [0]
    assert f_count(w, 0) == 1  # one table slot, however many tasks hold the table
    assert project(w)["tables"] == [[0, 1]]


def test_exec_closes_cloexec_descriptors_only() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 1), ("open", 0, 1, O_RDWR, 0, 0), ("exec", 0)])
    assert fds(w, 0) == [1]
    assert len(w.files) == 1 and w.files[0].path == 1


def test_exec_unshares_the_table_first() -> None:
    _, w = run([
        ("open", 0, 0, O_RDWR, 0, 1),
        ("open", 0, 1, O_RDWR, 0, 0),
        ("clone_files", 0, 1),
        ("exec", 1),
    ])
    assert w.tasks[0].table != w.tasks[1].table
    assert fds(w, 0) == [0, 1] and cloexec(w, 0, 0) == 1  # the sibling keeps its cloexec fd
    assert fds(w, 1) == [1]
    assert f_count(w, file_at(w, 0, 0)) == 1 and f_count(w, file_at(w, 0, 1)) == 2


def test_exec_with_nothing_to_do_is_the_same_world() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0)])
    out, w2 = step(w, ("exec", 0))
    assert out == ("ok", 0) and w2 == w


def test_exit_releases_what_only_it_held() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0), ("fork", 0, 1), ("pipe", 1)])
    assert len(w.files) == 3
    out, w = step(w, ("exit", 1))
    assert out == ("ok", 0)
    assert len(w.tasks) == 1 and len(w.tables) == 1
    assert len(w.files) == 1 and f_count(w, 0) == 1  # the pipe is gone, the shared file stays


def test_exit_of_a_clone_files_sibling_keeps_the_table() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0), ("clone_files", 0, 1), ("exit", 0)])
    assert len(w.tasks) == 1 and fds(w, 0) == [0] and w.tasks[0].inside == 1


def test_apply_refuses_a_missing_task() -> None:
    with pytest.raises(ValueError, match="no task 3"):
        apply(initial_world(4), ("open", 3, 0, O_RDWR, 0, 0))


# --------------------------------------------------------------------------------------------
# objects: pipe, openpty, socketpair, epoll, timerfd
# --------------------------------------------------------------------------------------------


def test_object_kinds_and_flags() -> None:
    _, w = run([("pipe", 0), ("openpty", 0), ("socketpair", 0), ("epoll_create", 0),
                ("timerfd", 0)])
    kinds = [fobj(w, 0, fd).kind for fd in range(8)]
    assert kinds == [PIPE_R, PIPE_W, PTMX, PTS, UNIX, UNIX, EPOLL, TIMERFD]
    flags = [fobj(w, 0, fd).f_flags for fd in range(8)]
    assert flags == [O_RDONLY, O_WRONLY, O_RDWR | O_LARGEFILE, O_RDWR, O_RDWR, O_RDWR, O_RDWR,
                     O_RDWR]
    # each pair references one object; the two sockets are distinct files
    assert fobj(w, 0, 0).obj == fobj(w, 0, 1).obj
    assert fobj(w, 0, 2).obj == fobj(w, 0, 3).obj
    assert fobj(w, 0, 4).obj == fobj(w, 0, 5).obj and file_at(w, 0, 4) != file_at(w, 0, 5)
    assert len({fobj(w, 0, fd).obj for fd in (0, 2, 4)}) == 3


def test_epoll_items_hold_no_reference() -> None:
    _, w = run([("pipe", 0), ("epoll_create", 0)])
    before = f_count(w, file_at(w, 0, 0))
    out, w = step(w, ("epoll_add", 0, 2, 0))
    assert out == ("ok", 0)
    assert f_count(w, file_at(w, 0, 0)) == before == 1
    assert fobj(w, 0, 2).epitems == ((file_at(w, 0, 0), 0),)
    _, w = step(w, ("close", 0, 0))  # the last reference: the item goes with the file
    assert fobj(w, 0, 1).kind == PIPE_W and fobj(w, 0, 2).epitems == ()
    assert project(w)["epoll"] == {"0:2": []}


def test_epoll_item_stays_while_another_reference_holds_the_file() -> None:
    _, w = run([("pipe", 0), ("epoll_create", 0), ("epoll_add", 0, 2, 0), ("dup", 0, 0),
                ("close", 0, 0)])
    assert project(w)["epoll"] == {"0:2": [0]}  # keyed by the fd number used at ADD
    # the item is (file, 0): deleting through the dup's number finds nothing
    assert_fails_unchanged(w, ("epoll_del", 0, 2, 3), "ENOENT")
    _, w = step(w, ("close", 0, 3))
    assert project(w)["epoll"] == {"0:2": []}


def test_epoll_ctl_errors() -> None:
    _, w = run([
        ("open", 0, 0, O_RDWR, 0, 0),  # 0
        ("pipe", 0),  # 1, 2
        ("epoll_create", 0),  # 3
        ("epoll_create", 0),  # 4
        ("epoll_add", 0, 3, 1),
        ("epoll_add", 0, 4, 3),  # 4 watches 3
    ], max_fds=8)
    assert_fails_unchanged(w, ("epoll_add", 0, 3, 0), "EPERM")  # regular file: no ->poll
    assert_fails_unchanged(w, ("epoll_del", 0, 3, 0), "EPERM")  # checked before the op
    assert_fails_unchanged(w, ("epoll_add", 0, 3, 1), "EEXIST")
    assert_fails_unchanged(w, ("epoll_del", 0, 3, 2), "ENOENT")
    assert_fails_unchanged(w, ("epoll_add", 0, 3, 4), "ELOOP")  # 4 already watches 3
    assert_fails_unchanged(w, ("epoll_add", 0, 3, 3), "EINVAL")  # itself
    assert_fails_unchanged(w, ("epoll_add", 0, 1, 2), "EINVAL")  # not an epoll
    assert_fails_unchanged(w, ("epoll_del", 0, 1, 2), "EINVAL")
    assert_fails_unchanged(w, ("epoll_add", 0, 5, 1), "EBADF")
    assert_fails_unchanged(w, ("epoll_add", 0, 3, 6), "EBADF")
    assert_fails_unchanged(w, ("epoll_add", 0, 0, 0), "EPERM")  # EPERM before EINVAL
    out, w2 = step(w, ("epoll_del", 0, 3, 1))
    assert out == ("ok", 0) and fobj(w2, 0, 3).epitems == ()


def test_epoll_loop_through_a_chain() -> None:
    _, w = run([("epoll_create", 0), ("epoll_create", 0), ("epoll_create", 0),
                ("epoll_add", 0, 0, 1), ("epoll_add", 0, 1, 2)])
    assert_fails_unchanged(w, ("epoll_add", 0, 2, 0), "ELOOP")  # 0 -> 1 -> 2 -> 0
    out, _ = step(w, ("epoll_add", 0, 0, 2))  # 0 -> 2 directly too: no loop
    assert out == ("ok", 0)


def test_can_poll_excludes_only_regular_files() -> None:
    assert REG not in CAN_POLL
    assert {PIPE_R, PIPE_W, PIPE_RW, PTMX, PTS, UNIX, EPOLL, TIMERFD} <= CAN_POLL


# --------------------------------------------------------------------------------------------
# unix sockets: SCM_RIGHTS in flight
# --------------------------------------------------------------------------------------------


def test_sendmsg_recvmsg_count_in_flight_references() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 1), ("socketpair", 0)])  # 0; 1, 2
    f = file_at(w, 0, 0)
    out, w = step(w, ("sendmsg", 0, 1, 0))
    assert out == ("ok", 1)
    assert f_count(w, f) == 2 and fobj(w, 0, 2).rcvq == (f,)
    _, w = step(w, ("close", 0, 0))
    assert len(w.files) == 3  # alive in flight only
    f = fobj(w, 0, 2).rcvq[0]
    assert f_count(w, f) == 1 and w.files[f].path == 0
    assert project(w)["files"] == [[[0, 1]], [[0, 2]]]  # in flight: not observed
    out, w = step(w, ("recvmsg", 0, 2))
    assert out == ("ok", (0,))  # the lowest free descriptor
    assert cloexec(w, 0, 0) == 0 and fobj(w, 0, 2).rcvq == ()
    assert f_count(w, file_at(w, 0, 0)) == 1


def test_recvmsg_empty_queue_and_closed_peer() -> None:
    _, w = run([("socketpair", 0)])
    assert_fails_unchanged(w, ("recvmsg", 0, 0), "EAGAIN")
    _, w = step(w, ("close", 0, 1))
    out, w2 = step(w, ("recvmsg", 0, 0))
    assert out == ("ok", ("eof",)) and w2 is w
    assert_fails_unchanged(w, ("sendmsg", 0, 0, 0), "EPIPE")


def test_peer_released_with_unread_messages_gets_econnreset() -> None:
    """unix_release_sock: a socket released with a non-empty receive queue sets ECONNRESET
    on its peer; recvmsg on an empty queue returns it once (and clears it), then eof."""
    _, w = run([("socketpair", 0), ("open", 0, 0, O_RDONLY, 0, 0), ("sendmsg", 0, 0, 2),
                ("sendmsg", 0, 1, 2)])
    _, w = step(w, ("close", 0, 1))  # 1 goes with a message unread
    assert fobj(w, 0, 0).sk_err == 1
    assert_fails_unchanged(w, ("sendmsg", 0, 0, 2), "EPIPE")  # sendmsg leaves it pending
    out, w = step(w, ("recvmsg", 0, 0))  # the queued message comes first
    assert out == ("ok", (1,)) and fobj(w, 0, 0).sk_err == 1
    out, w2 = step(w, ("recvmsg", 0, 0))
    assert out == ("err", "ECONNRESET")
    assert w2 != w and fobj(w2, 0, 0).sk_err == 0  # a failing call that consumes the error
    out, _ = step(w2, ("recvmsg", 0, 0))
    assert out == ("ok", ("eof",))


def test_peer_released_with_an_empty_queue_gives_plain_eof() -> None:
    _, w = run([("socketpair", 0), ("open", 0, 0, O_RDONLY, 0, 0), ("sendmsg", 0, 1, 2),
                ("recvmsg", 0, 0), ("close", 0, 1)])
    assert fobj(w, 0, 0).sk_err == 0
    out, _ = step(w, ("recvmsg", 0, 0))
    assert out == ("ok", ("eof",))


def test_econnreset_reaches_a_socket_in_flight() -> None:
    _, w = run([
        ("socketpair", 0),  # 0, 1
        ("open", 0, 0, O_RDONLY, 0, 0),  # 2
        ("sendmsg", 0, 0, 2),  # into 1's queue
        ("socketpair", 0),  # 3, 4
        ("sendmsg", 0, 3, 0),  # socket 0 into 4's queue
        ("close", 0, 0),
        ("close", 0, 1),  # 1 released unread: 0 (in flight) gets the error
    ])
    assert w.files[fobj(w, 0, 4).rcvq[0]].sk_err == 1
    outs = []
    for a in [("recvmsg", 0, 4), ("recvmsg", 0, 0), ("recvmsg", 0, 0)]:
        out, w = step(w, a)
        outs.append(out)
    assert outs == [("ok", (0,)), ("err", "ECONNRESET"), ("ok", ("eof",))]


def test_env_actions_offer_recvmsg_for_a_pending_error() -> None:
    cfg = PRESETS["default"]
    # 0 itself travels in 1's queue; releasing 1 drops that reference and flags 0
    _, w = run([("socketpair", 0), ("sendmsg", 0, 0, 0), ("close", 0, 1)], max_fds=3)
    assert len(w.files) == 1 and fobj(w, 0, 0).sk_err == 1 and fobj(w, 0, 0).rcvq == ()
    assert ("recvmsg", 0, 0) in set(env_actions(w, cfg, 0, cfg.enabled_actions()))


def test_sendmsg_errors() -> None:
    _, w = run([("pipe", 0), ("socketpair", 0)])
    assert_fails_unchanged(w, ("sendmsg", 0, 0, 1), "ENOTSOCK")
    assert_fails_unchanged(w, ("sendmsg", 0, 5, 1), "EBADF")
    assert_fails_unchanged(w, ("sendmsg", 0, 2, 5), "EBADF")
    assert_fails_unchanged(w, ("recvmsg", 0, 1), "ENOTSOCK")
    assert_fails_unchanged(w, ("recvmsg", 0, 5), "EBADF")


def test_closing_the_receiver_releases_its_queue() -> None:
    _, w = run([("pipe", 0), ("socketpair", 0), ("sendmsg", 0, 2, 0), ("close", 0, 0),
                ("close", 0, 3)])
    # the pipe's read end lived only in 3's queue: released with it
    assert sorted(f.kind for f in w.files) == [PIPE_W, UNIX]


def test_peer_alive_in_flight_keeps_the_connection() -> None:
    _, w = run([("socketpair", 0), ("sendmsg", 0, 0, 0), ("close", 0, 0)])
    # socket 0 lives in 1's queue: 1 still has a peer
    out, _ = step(w, ("sendmsg", 0, 1, 1))
    assert out == ("ok", 1)


def test_recvmsg_with_a_full_table_drops_the_file() -> None:
    _, w = run([("socketpair", 0), ("open", 0, 0, O_RDWR, 0, 0), ("sendmsg", 0, 0, 2),
                ("close", 0, 2), ("open", 0, 1, O_RDWR, 0, 0)], max_fds=3)
    assert len(w.files) == 4
    out, w = step(w, ("recvmsg", 0, 1))
    assert out == ("ok", ("ctrunc",))
    assert len(w.files) == 3 and all(f.path != 0 for f in w.files if f.kind == REG)


def test_in_flight_cycle_is_collected() -> None:
    """A socket in its own queue with no descriptor left is garbage (unix_gc's job; the
    kernel does it later, asynchronously)."""
    _, w = run([("socketpair", 0), ("sendmsg", 0, 0, 1), ("close", 0, 1)])
    assert [f.kind for f in w.files] == [UNIX] and w.files[0].rcvq == ()


# --------------------------------------------------------------------------------------------
# reopen through /proc/PID/fd/N
# --------------------------------------------------------------------------------------------


def test_reopen_per_kind() -> None:
    _, w = run([
        ("open", 0, 1, O_WRONLY, O_APPEND, 1),  # 0
        ("lseek", 0, 0, 3),
        ("pipe", 0),  # 1, 2
        ("openpty", 0),  # 3, 4
        ("socketpair", 0),  # 5, 6
        ("epoll_create", 0),  # 7
        ("timerfd", 0),  # 8
        ("fork", 0, 1),
    ], max_fds=16)
    out, w2 = step(w, ("reopen", 1, 0, 0, O_RDONLY))
    assert out == ("ok", 9)
    f = fobj(w2, 1, 9)
    # a new open file: flags from this open (O_LARGEFILE added), offset 0, same path
    assert (f.kind, f.path, f.f_flags, f.f_pos) == (REG, 1, O_RDONLY | O_LARGEFILE, 0)
    assert f.f_mode == FMODE_READ | FMODE_LSEEK
    assert file_at(w2, 1, 9) != file_at(w2, 1, 0)
    for fd, acc, kind in ((1, O_RDWR, PIPE_RW), (1, O_WRONLY, PIPE_W), (2, O_RDONLY, PIPE_R)):
        _, w2 = step(w, ("reopen", 1, 0, fd, acc))
        g = fobj(w2, 1, 9)
        assert (g.kind, g.obj, g.f_flags) == (kind, fobj(w, 0, 1).obj, acc | O_LARGEFILE)
        assert not g.f_mode & FMODE_LSEEK
    _, w2 = step(w, ("reopen", 1, 0, 4, O_RDWR))  # the same pty
    assert fobj(w2, 1, 9).kind == PTS and fobj(w2, 1, 9).obj == fobj(w, 0, 4).obj
    _, w2 = step(w, ("reopen", 1, 0, 3, O_RDWR))  # /dev/ptmx: a new pty
    g = fobj(w2, 1, 9)
    assert g.kind == PTMX and g.obj not in {x.obj for x in w.files}
    for fd in (5, 7, 8):  # socket, eventpoll, timerfd
        assert_fails_unchanged(w, ("reopen", 1, 0, fd, O_RDWR), "ENXIO")
    assert_fails_unchanged(w, ("reopen", 1, 0, 12, O_RDWR), "ENOENT")


def test_reopen_of_a_hung_up_pts_is_eio() -> None:
    _, w = run([("openpty", 0), ("close", 0, 0)])
    assert_fails_unchanged(w, ("reopen", 0, 0, 1, O_RDWR), "EIO")


def test_master_close_hangs_up_the_slave() -> None:
    """pty_close(master) -> tty_vhangup(slave): O_ASYNC cleared on every slave file, and
    F_SETFL can no longer toggle it (ENOTTY), other flags still change."""
    _, w = run([
        ("openpty", 0),  # 0, 1
        ("setfl", 0, 1, O_ASYNC | O_NONBLOCK),
        ("reopen", 0, 0, 1, O_RDWR),  # 2: another slave file
        ("setfl", 0, 2, O_ASYNC),
        ("setfl", 0, 0, O_ASYNC),
        ("socketpair", 0),  # 3, 4
        ("sendmsg", 0, 3, 2),
        ("close", 0, 2),  # slave file 2 only in flight now
    ])
    assert fobj(w, 0, 1).f_flags == O_RDWR | O_ASYNC | O_NONBLOCK
    _, w2 = step(w, ("close", 0, 0))  # the master's only reference
    assert fobj(w2, 0, 1).f_flags == O_RDWR | O_NONBLOCK
    inflight = w2.files[fobj(w2, 0, 4).rcvq[0]]
    assert inflight.kind == PTS and not inflight.f_flags & O_ASYNC
    assert_fails_unchanged(w2, ("setfl", 0, 1, O_ASYNC), "ENOTTY")
    assert_fails_unchanged(w2, ("setfl", 0, 1, O_ASYNC | O_DIRECT), "EINVAL")  # checked first
    out, w3 = step(w2, ("setfl", 0, 1, 0))
    assert out == ("ok", 0) and fobj(w3, 0, 1).f_flags == O_RDWR


def test_slave_close_does_not_touch_the_master() -> None:
    _, w = run([("openpty", 0), ("setfl", 0, 0, O_ASYNC), ("close", 0, 1)])
    assert fobj(w, 0, 0).f_flags == O_RDWR | O_LARGEFILE | O_ASYNC
    out, _ = step(w, ("setfl", 0, 0, 0))
    assert out == ("ok", 0)


# --------------------------------------------------------------------------------------------
# purity, symmetry, garbage collection
# --------------------------------------------------------------------------------------------


def test_transitions_are_pure() -> None:
    _, w = run([("open", 0, 0, O_RDWR, 0, 0), ("pipe", 0), ("socketpair", 0)])
    snapshot = repr(w)
    for a in [("close", 0, 0), ("dup2", 0, 1, 0), ("sendmsg", 0, 3, 1), ("exec", 0),
              ("fork", 0, 0), ("setfl", 0, 0, O_APPEND)]:
        apply(w, a)
        assert repr(w) == snapshot
    assert hash(w) == hash(World(*w))


def test_canonical_ignores_task_order() -> None:
    _, a = run([("fork", 0, 1), ("fork", 0, 1), ("open", 1, 0, O_RDWR, 0, 0)])
    _, b = run([("fork", 0, 1), ("fork", 0, 1), ("open", 2, 0, O_RDWR, 0, 0)])
    assert a != b
    assert canonical(a) == canonical(b)
    assert canonical(canonical(a)) == canonical(a)


def test_canonical_ignores_file_and_object_numbering() -> None:
    rw = FMODE_READ | FMODE_WRITE
    p = File(PIPE_R, -1, 0, O_RDONLY, FMODE_READ, 0, 0)
    q = File(PIPE_W, -1, 0, O_WRONLY, FMODE_WRITE, 0, 0)
    s0 = File(UNIX, -1, 1, O_RDWR, rw, 0, 0)
    s1 = File(UNIX, -1, 1, O_RDWR, rw, 0, 0, rcvq=(0,))
    table = (0, 2, 4, 6, EMPTY)
    a = World((Task(0, 0, 0),), (table,), (p, q, s0, s1), 0)
    # the same state, files listed in another order and objects numbered the other way
    perm = [2, 3, 0, 1]  # new index of old file i is perm[i]

    def renum(f: File) -> File:
        return f._replace(obj=1 - f.obj, rcvq=tuple(perm[x] for x in f.rcvq))

    files = [None] * 4
    for old, new in enumerate(perm):
        files[new] = renum(a.files[old])
    b = World(a.tasks, (tuple(s if s == EMPTY else slot(perm[slot_file(s)], 0) for s in table),),
              tuple(files), 0)  # type: ignore[arg-type]
    assert a != b
    assert canonical(a) == canonical(b)
    assert project(a) == project(b)


def test_canonical_keeps_descriptor_numbers_flags_and_offsets() -> None:
    _, a = run([("open", 0, 0, O_RDWR, 0, 0)])
    _, b = run([("open", 0, 0, O_RDWR, 0, 0), ("dup2", 0, 0, 1), ("close", 0, 0)])
    assert canonical(a) != canonical(b)  # fd 0 vs fd 1: observable, never renamed
    _, c = run([("open", 0, 0, O_RDWR, 0, 0), ("lseek", 0, 0, 1)])
    _, d = run([("open", 0, 0, O_RDWR, O_APPEND, 0)])
    assert len({canonical(a), canonical(c), canonical(d)}) == 3
    _, e = run([("open", 0, 0, O_RDWR, 0, 1)])
    assert canonical(a) != canonical(e)  # close-on-exec too


def test_normalize_releases_unreferenced_files_and_their_items() -> None:
    _, w = run([("pipe", 0), ("epoll_create", 0), ("epoll_add", 0, 2, 0)])
    # drop descriptor 0 by hand (no fput): the read end is referenced by nothing
    table = list(w.tables[0])
    table[0] = EMPTY
    raw = w._replace(tables=(tuple(table),))
    assert len(raw.files) == 3
    n = normalize(raw)
    assert [f.kind for f in n.files] == [PIPE_W, EPOLL]
    assert n.files[1].epitems == ()
    assert normalize(n) == n


def test_normalize_drops_unheld_tables() -> None:
    _, w = run([("fork", 0, 0), ("open", 1, 0, O_RDWR, 0, 0)])
    raw = w._replace(tasks=w.tasks[:1])  # task 1 gone without exit
    n = normalize(raw)
    assert len(n.tables) == 1 and n.files == ()


# --------------------------------------------------------------------------------------------
# env_actions
# --------------------------------------------------------------------------------------------


def test_env_actions_are_valid_actions() -> None:
    cfg = PRESETS["default"]
    on = cfg.enabled_actions()
    _, w = run([("pipe", 0)], max_fds=cfg.max_fds)
    acts = list(env_actions(w, cfg, 0, on))
    assert acts and {a[0] for a in acts} <= on
    names = {a[0] for a in acts}
    assert {"close", "dup2", "setfl", "setfd", "fork", "clone_files", "exec", "exit"} <= names
    assert "dup" in names and "pipe" not in names  # one slot free: no pair fits
    for a in acts:
        assert a[0] in SYSCALLS
        apply(w, a)  # never raises


def test_env_actions_respect_disabled() -> None:
    cfg = PRESETS["tiny"]
    on = cfg.enabled_actions()
    assert not {"dup2", "exec", "setown", "sendmsg", "recvmsg"} & on
    _, w = run([("socketpair", 0)], max_fds=cfg.max_fds)
    assert not {a[0] for a in env_actions(w, cfg, 0, on)} & {"sendmsg", "recvmsg", "exec"}


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "default", "deep"])
def test_presets_load_and_validate(name: str) -> None:
    cfg = load(name)
    assert cfg is PRESETS[name] and cfg.name == name
    assert cfgmod.validate(cfg) is cfg
    assert from_dict({"base": name}, name=name) == cfg


def test_config_from_toml_file(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text(
        'base = "tiny"\n'
        "max_fds = 4\n"
        'access_modes = ["O_RDONLY", "O_WRONLY"]\n'
        'open_flags = [[], ["O_APPEND", "O_NONBLOCK"]]\n'
        'setfl_flags = [["O_DIRECT"]]\n'
        "open_cloexec = true\n"
        'kinds = ["reg", "unix"]\n'
        'disabled = ["exec"]\n'
    )
    cfg = load(str(p))
    assert cfg.name == "mine"
    assert cfg.max_fds == 4 and cfg.inside_tasks == PRESETS["tiny"].inside_tasks
    assert cfg.access_modes == (O_RDONLY, O_WRONLY)
    assert cfg.open_flags == (0, O_APPEND | O_NONBLOCK)
    assert cfg.setfl_flags == (O_DIRECT,)
    assert cfg.open_cloexec is True
    on = cfg.enabled_actions()
    assert {"socketpair", "sendmsg", "open"} <= on and not {"pipe", "exec", "openpty"} & on


def test_config_default_base_and_roundtrip() -> None:
    cfg = from_dict({"paths": 2})
    assert cfg.name == "custom" and cfg.paths == 2
    assert cfg.max_fds == PRESETS["default"].max_fds
    d = cfg.to_dict()
    assert d["access_modes"] == [flags_str(a) for a in PRESETS["default"].access_modes]
    assert from_dict({k: v for k, v in d.items() if k not in ("name", "doc")}) == cfg
    assert isinstance(cfg.key(), str) and cfg.key() != PRESETS["default"].key()


@pytest.mark.parametrize(
    "data, key",
    [
        ({"max_fd": 3}, "max_fd"),
        ({"base": "huge"}, "base"),
        ({"max_fds": 0}, "max_fds"),
        ({"max_fds": 99}, "max_fds"),
        ({"max_fds": "3"}, "max_fds"),
        ({"inside_tasks": True}, "inside_tasks"),
        ({"offsets": 9}, "offsets"),
        ({"env_steps": -1}, "env_steps"),
        ({"kinds": ["reg", "socket"]}, "kinds"),
        ({"kinds": "reg"}, "kinds"),
        ({"disabled": ["fly"]}, "disabled"),
        ({"access_modes": ["O_RDWR", "O_EXEC"]}, "access_modes"),
        ({"access_modes": []}, "access_modes"),
        ({"open_flags": [["O_SYNC"]]}, "open_flags"),
        ({"open_flags": ["O_APPEND"]}, "open_flags"),
        ({"open_flags": []}, "open_flags"),
        ({"setfl_flags": [["O_LARGEFILE"]]}, "setfl_flags"),
        ({"open_cloexec": "yes"}, "open_cloexec"),
    ],
)
def test_config_refuses_bad_keys_and_values(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        from_dict(data)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a preset"):
        load("nosuchpreset")
    with pytest.raises(UsageError, match="not found"):
        load(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("max_fds = = 3\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load(str(bad))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("colour = 3\n")
    with pytest.raises(UsageError, match="colour"):
        load(str(wrong))


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().max_fds = 5  # type: ignore[misc]


def test_flags_str_names_every_value() -> None:
    """A counterexample to induction may start from a state no syscall can build: access
    mode 3, unknown bits. Showing it must never raise."""
    assert flags_str(O_RDWR | O_NONBLOCK) == "O_RDWR|O_NONBLOCK"
    assert flags_str(3 | O_LARGEFILE) == "O_ACCMODE|O_LARGEFILE"
    assert flags_str(O_WRONLY | 0o10) == "O_WRONLY|0o10"
