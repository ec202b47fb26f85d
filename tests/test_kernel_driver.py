"""Tests of the live-kernel driver against known Linux facts (real syscalls, real processes)."""

from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any

import pytest

from crmodel.live import driver

DriverError = driver.DriverError
Step = driver.Step
run_sequence = driver.run_sequence

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="the live-kernel driver needs Linux on x86_64",
)

O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
O_LARGEFILE = 0o100000
O_APPEND = os.O_APPEND
O_NONBLOCK = os.O_NONBLOCK
O_ASYNC = os.O_ASYNC
O_DIRECT = os.O_DIRECT
O_NOATIME = os.O_NOATIME


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def fds(obs: dict[str, Any], task: int) -> dict[int, dict[str, int]]:
    return obs["tasks"][task]["fds"]


def file_group(obs: dict[str, Any], task: int, fd: int) -> list[list[int]]:
    for g in obs["files"]:
        if [task, fd] in g:
            return g
    raise AssertionError(f"[{task}, {fd}] in no file group: {obs['files']}")


def object_group(obs: dict[str, Any], task: int, fd: int) -> list[list[int]]:
    for g in obs["objects"]:
        if [task, fd] in g:
            return g
    raise AssertionError(f"[{task}, {fd}] in no object group: {obs['objects']}")


def results(steps: list[Step]) -> list[tuple[str, Any]]:
    return [s.result for s in steps]


def own_children() -> list[int]:
    """Live or zombie children of this process (a root worker the driver did not reap)."""
    me = os.getpid()
    found = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(d.rsplit("/", 1)[1]))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(autouse=True)
def no_leftovers(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every driver session this test started is closed: its root worker reaped, its
    process group (every task it forked) gone, its folder removed. Only this test's own
    sessions are looked at, so tests running in parallel cannot trip each other."""
    sessions: list[Any] = []
    start = driver._Session.start

    def recording_start(self: Any, *args: Any, **kwargs: Any) -> None:
        sessions.append(self)
        start(self, *args, **kwargs)

    monkeypatch.setattr(driver._Session, "start", recording_start)
    children = set(own_children())
    yield
    for s in sessions:
        assert s.root_pid == 0, f"root worker {s.root_pid} not reaped"
        assert not (s.pgid and group_alive(s.pgid)), f"tasks of group {s.pgid} left running"
        assert not (s.tmp and os.path.exists(s.tmp)), f"{s.tmp} left behind"
    assert set(own_children()) <= children


# --------------------------------------------------------------------------------------------
# descriptor allocation
# --------------------------------------------------------------------------------------------


def test_initial_table_is_empty_and_lowest_free_descriptor() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("open", 0, 1, O_RDONLY, 0, 0),
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("close", 0, 1),
        ("open", 0, 1, O_RDONLY, 0, 0),
        ("close", 0, 0),
        ("pipe", 0),
        ("dup", 0, 2),
        ("close", 0, 7),
    ])
    assert results(steps) == [("ok", 0), ("ok", 1), ("ok", 2), ("ok", 0), ("ok", 1),
                              ("ok", 0), ("ok", (0, 3)), ("ok", 4), ("err", "EBADF")]
    assert sorted(fds(steps[-1].obs, 0)) == [0, 1, 2, 3, 4]
    assert steps[-1].obs["tables"] == [[0]]


def test_dup2_onto_itself_changes_nothing() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDWR, O_APPEND, 1),
        ("dup2", 0, 0, 0),
        ("dup2", 0, 5, 5),
        ("dup2", 0, 0, 3),
    ])
    assert results(steps) == [("ok", 0), ("ok", 0), ("err", "EBADF"), ("ok", 3)]
    assert steps[1].obs == steps[0].obs
    assert fds(steps[1].obs, 0)[0]["cloexec"] == 1
    assert fds(steps[3].obs, 0)[3]["cloexec"] == 0


def test_dup_clears_cloexec_and_shares_the_file() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 1),
        ("dup", 0, 0),
        ("lseek", 0, 1, 3),
    ])
    obs = steps[-1].obs
    assert fds(obs, 0)[0]["cloexec"] == 1
    assert fds(obs, 0)[1]["cloexec"] == 0
    assert file_group(obs, 0, 0) == [[0, 0], [0, 1]]
    assert fds(obs, 0)[0]["pos"] == 3  # position belongs to the shared open file


# --------------------------------------------------------------------------------------------
# flags
# --------------------------------------------------------------------------------------------


def test_setfl_ignores_access_mode_and_async_on_regular_files() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("setfl", 0, 0, O_RDWR | O_APPEND | O_ASYNC),
        ("setfl", 0, 0, O_WRONLY | O_NONBLOCK | O_NOATIME | O_DIRECT),
        ("setfl", 0, 0, 0),
        ("pipe", 0),
        ("setfl", 0, 1, O_ASYNC | O_WRONLY),
    ])
    assert all(r == ("ok", 0) for r in results(steps)[1:4])
    assert fds(steps[1].obs, 0)[0]["flags"] == O_LARGEFILE | O_APPEND
    assert fds(steps[2].obs, 0)[0]["flags"] == O_LARGEFILE | O_NONBLOCK | O_NOATIME | O_DIRECT
    assert fds(steps[3].obs, 0)[0]["flags"] == O_LARGEFILE
    assert fds(steps[5].obs, 0)[1]["flags"] == O_ASYNC  # pipes have ->fasync


def test_regular_file_opened_with_o_async_keeps_it() -> None:
    steps = run_sequence([("open", 0, 0, O_RDONLY, O_ASYNC, 0), ("setfl", 0, 0, 0)])
    assert fds(steps[0].obs, 0)[0]["flags"] == O_LARGEFILE | O_ASYNC
    assert fds(steps[1].obs, 0)[0]["flags"] == O_LARGEFILE | O_ASYNC


def test_o_direct_is_einval_on_ttys_sockets_epoll_and_timerfd() -> None:
    steps = run_sequence([
        ("openpty", 0),
        ("socketpair", 0),
        ("epoll_create", 0),
        ("timerfd", 0),
    ] + [("setfl", 0, fd, O_DIRECT | O_APPEND) for fd in range(6)])
    assert results(steps[4:]) == [("err", "EINVAL")] * 6
    assert steps[-1].obs == steps[3].obs


def test_getfl_per_kind() -> None:
    """The F_GETFL table of driver.py's docstring."""
    steps = run_sequence([
        ("open", 0, 0, O_RDWR, 0, 0),   # 0
        ("pipe", 0),                    # 1, 2
        ("openpty", 0),                 # 3, 4
        ("epoll_create", 0),            # 5
        ("socketpair", 0),              # 6, 7
        ("timerfd", 0),                 # 8
        ("reopen", 0, 0, 0, O_WRONLY),  # 9
        ("reopen", 0, 0, 1, O_WRONLY),  # 10: the read end, reopened for writing
        ("reopen", 0, 0, 2, O_RDWR),    # 11
        ("reopen", 0, 0, 3, O_RDWR),    # 12: a new pty
        ("reopen", 0, 0, 4, O_RDONLY),  # 13
        ("sendmsg", 0, 6, 4),
        ("recvmsg", 0, 7),              # 14: the pts slave again
    ])
    assert results(steps)[6:] == [("ok", 9), ("ok", 10), ("ok", 11), ("ok", 12), ("ok", 13),
                                  ("ok", 1), ("ok", (14,))]
    obs = steps[-1].obs
    flags = {fd: d["flags"] for fd, d in fds(obs, 0).items()}
    assert flags == {
        0: O_LARGEFILE | O_RDWR,
        1: 0,
        2: O_WRONLY,
        3: O_LARGEFILE | O_RDWR,
        4: O_RDWR,
        5: O_RDWR,
        6: O_RDWR,
        7: O_RDWR,
        8: O_RDWR,
        9: O_LARGEFILE | O_WRONLY,
        10: O_LARGEFILE | O_WRONLY,
        11: O_LARGEFILE | O_RDWR,
        12: O_LARGEFILE | O_RDWR,
        13: O_LARGEFILE | O_RDONLY,
        14: O_RDWR,
    }
    assert all(d["cloexec"] == 0 for d in fds(obs, 0).values())
    kinds = [obs["kinds"][f"0:{fd}"] for fd in range(15)]
    assert kinds == ["reg", "pipe_r", "pipe_w", "ptmx", "pts", "epoll", "unix", "unix",
                     "timerfd", "reg", "pipe_w", "pipe_rw", "ptmx", "pts", "pts"]


def test_reopen_errors_and_objects() -> None:
    steps = run_sequence([
        ("epoll_create", 0),            # 0
        ("socketpair", 0),              # 1, 2
        ("timerfd", 0),                 # 3
        ("reopen", 0, 0, 0, O_RDWR),
        ("reopen", 0, 0, 1, O_RDWR),
        ("reopen", 0, 0, 3, O_RDONLY),
        ("reopen", 0, 0, 9, O_RDONLY),
        ("pipe", 0),                    # 4, 5
        ("reopen", 0, 0, 4, O_RDONLY),  # 6
        ("openpty", 0),                 # 7, 8
        ("reopen", 0, 0, 8, O_RDWR),    # 9
        ("reopen", 0, 0, 7, O_RDWR),    # 10: new pty
        ("close", 0, 7),
        ("reopen", 0, 0, 8, O_RDWR),
        ("close", 0, 5),
        ("reopen", 0, 0, 4, O_RDONLY),  # 5: no writer left, does not block
    ])
    assert results(steps)[3:7] == [("err", "ENXIO")] * 3 + [("err", "ENOENT")]
    assert steps[8].result == ("ok", 6)
    obs = steps[8].obs
    assert object_group(obs, 0, 4) == [[0, 4], [0, 5], [0, 6]]
    assert file_group(obs, 0, 6) == [[0, 6]]
    assert object_group(obs, 0, 1) == [[0, 1], [0, 2]]
    assert results(steps)[10:] == [("ok", 9), ("ok", 10), ("ok", 0), ("err", "EIO"), ("ok", 0),
                                   ("ok", 5)]
    obs = steps[11].obs
    assert object_group(obs, 0, 7) == [[0, 7], [0, 8], [0, 9]]
    assert object_group(obs, 0, 10) == [[0, 10]]
    assert obs["kinds"]["0:10"] == "ptmx"


def test_lseek_per_kind() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 0), ("pipe", 0), ("openpty", 0), ("epoll_create", 0),
        ("socketpair", 0), ("timerfd", 0),
    ] + [("lseek", 0, fd, 5) for fd in range(9)] + [("lseek", 0, 0, -1)])
    assert results(steps)[6:] == [
        ("ok", 5), ("err", "ESPIPE"), ("err", "ESPIPE"), ("err", "ESPIPE"), ("err", "ESPIPE"),
        ("ok", 0), ("err", "ESPIPE"), ("err", "ESPIPE"), ("ok", 0), ("err", "EINVAL"),
    ]
    assert [d["pos"] for d in fds(steps[-1].obs, 0).values()] == [5] + [0] * 8


def test_setown_and_setfd() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 0), ("setown", 0, 0), ("setown", 0, 1), ("setfd", 0, 0, 1),
        ("setfd", 0, 0, 0), ("setfd", 0, 3, 1),
    ])
    assert results(steps) == [("ok", 0), ("ok", 0), ("err", "EBADF"), ("ok", 0), ("ok", 0),
                              ("err", "EBADF")]
    assert fds(steps[3].obs, 0)[0]["cloexec"] == 1
    assert fds(steps[4].obs, 0)[0]["cloexec"] == 0


# --------------------------------------------------------------------------------------------
# tasks and tables
# --------------------------------------------------------------------------------------------


def test_fork_shares_open_files_but_not_the_table() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDWR, 0, 1),
        ("fork", 0, 0),
        ("lseek", 1, 0, 4),
        ("open", 1, 1, O_RDONLY, 0, 0),
        ("close", 0, 0),
    ])
    assert steps[1].result == ("ok", 1)
    obs = steps[2].obs
    assert obs["tables"] == [[0], [1]]
    assert file_group(obs, 0, 0) == [[0, 0], [1, 0]]
    assert fds(obs, 0)[0] == fds(obs, 1)[0] == {"flags": O_LARGEFILE | O_RDWR, "cloexec": 1,
                                                "pos": 4}
    assert steps[3].result == ("ok", 1)
    assert sorted(fds(steps[3].obs, 0)) == [0]
    assert sorted(fds(steps[4].obs, 1)) == [0, 1]
    assert fds(steps[4].obs, 0) == {}


def test_clone_files_shares_the_table() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("clone_files", 0, 1),
        ("open", 1, 1, O_RDONLY, 0, 0),
        ("close", 0, 0),
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("fork", 1, 0),
    ])
    assert results(steps) == [("ok", 0), ("ok", 1), ("ok", 1), ("ok", 0), ("ok", 0), ("ok", 2)]
    obs = steps[-1].obs
    assert obs["tables"] == [[0, 1], [2]]
    assert fds(obs, 0) == fds(obs, 1) == fds(obs, 2)
    assert file_group(obs, 0, 1) == [[0, 1], [1, 1], [2, 1]]


def test_exec_unshares_then_closes_cloexec() -> None:
    steps = run_sequence([
        ("open", 0, 0, O_RDONLY, 0, 1),   # 0, close-on-exec
        ("open", 0, 1, O_RDONLY, 0, 0),   # 1
        ("clone_files", 0, 0),
        ("exec", 0),
        ("open", 0, 0, O_RDONLY, 0, 0),   # 0 again in the exec'd task's private table
        ("open", 1, 1, O_RDONLY, 0, 0),   # 2 in the other task's table
    ])
    assert results(steps) == [("ok", 0), ("ok", 1), ("ok", 1), ("ok", 0), ("ok", 0), ("ok", 2)]
    obs = steps[3].obs
    assert obs["tables"] == [[0], [1]]
    assert sorted(fds(obs, 0)) == [1]
    assert sorted(fds(obs, 1)) == [0, 1]
    assert fds(obs, 1)[0]["cloexec"] == 1
    assert file_group(obs, 0, 1) == [[0, 1], [1, 1]]
    obs = steps[-1].obs
    assert sorted(fds(obs, 0)) == [0, 1] and sorted(fds(obs, 1)) == [0, 1, 2]
    assert file_group(obs, 0, 0) == [[0, 0]]


def test_exec_keeps_descriptors_positions_and_the_worker_works() -> None:
    steps = run_sequence([
        ("pipe", 0),                     # 0, 1 become the exec'd Python's stdin/stdout
        ("open", 0, 0, O_RDWR, 0, 0),    # 2 its stderr
        ("lseek", 0, 2, 6),
        ("epoll_create", 0),             # 3
        ("epoll_add", 0, 3, 0),
        ("exec", 0),
        ("exec", 0),
        ("dup", 0, 2),
        ("fork", 0, 0),
        ("exec", 1),
        ("socketpair", 1),
    ])
    assert results(steps)[5:] == [("ok", 0), ("ok", 0), ("ok", 4), ("ok", 1), ("ok", 0),
                                  ("ok", (5, 6))]
    assert steps[6].obs == steps[4].obs
    obs = steps[-1].obs
    assert fds(obs, 1)[2]["pos"] == 6
    assert obs["epoll"] == {"0:3": [0], "1:3": [0]}


def test_exit_removes_the_task_and_shifts_indexes() -> None:
    steps = run_sequence([
        ("fork", 0, 0),
        ("fork", 0, 0),
        ("open", 2, 0, O_RDONLY, 0, 0),
        ("exit", 1),
        ("open", 1, 0, O_RDONLY, 0, 0),
        ("exit", 0),
        ("fork", 0, 0),
    ])
    assert results(steps) == [("ok", 1), ("ok", 2), ("ok", 0), ("ok", 0), ("ok", 1), ("ok", 0),
                              ("ok", 1)]
    assert len(steps[3].obs["tasks"]) == 2
    assert sorted(fds(steps[4].obs, 1)) == [0, 1]
    obs = steps[-1].obs
    assert obs["tables"] == [[0], [1]]
    assert file_group(obs, 0, 0) == [[0, 0], [1, 0]]


def test_exit_of_a_table_sharer_keeps_the_table() -> None:
    steps = run_sequence([
        ("clone_files", 0, 0),
        ("open", 0, 0, O_RDONLY, 0, 0),
        ("exit", 0),
        ("open", 0, 1, O_RDONLY, 0, 0),
    ])
    assert results(steps) == [("ok", 1), ("ok", 0), ("ok", 0), ("ok", 1)]
    assert sorted(fds(steps[-1].obs, 0)) == [0, 1]


# --------------------------------------------------------------------------------------------
# epoll, pipes, sockets, timerfd
# --------------------------------------------------------------------------------------------


def test_epoll_tfd_listing_and_item_lifetime() -> None:
    steps = run_sequence([
        ("epoll_create", 0),      # 0
        ("pipe", 0),              # 1, 2
        ("epoll_add", 0, 0, 1),
        ("epoll_add", 0, 0, 2),
        ("epoll_add", 0, 0, 1),
        ("open", 0, 0, O_RDONLY, 0, 0),  # 3
        ("epoll_add", 0, 0, 3),
        ("dup", 0, 1),            # 4
        ("close", 0, 1),          # the file lives on through 4: item stays
        ("close", 0, 4),          # last reference: item gone
        ("epoll_del", 0, 0, 2),
        ("epoll_del", 0, 0, 2),
    ])
    assert results(steps)[2:5] == [("ok", 0), ("ok", 0), ("err", "EEXIST")]
    assert steps[6].result == ("err", "EPERM")
    assert steps[4].obs["epoll"] == {"0:0": [1, 2]}
    assert steps[8].obs["epoll"] == {"0:0": [1, 2]}
    assert steps[9].obs["epoll"] == {"0:0": [2]}
    assert results(steps)[10:] == [("ok", 0), ("err", "ENOENT")]
    assert steps[-1].obs["epoll"] == {"0:0": []}


def test_epoll_item_survives_in_another_task() -> None:
    steps = run_sequence([
        ("epoll_create", 0), ("timerfd", 0), ("epoll_add", 0, 0, 1), ("fork", 0, 0),
        ("close", 0, 1), ("exit", 1),
    ])
    assert steps[3].obs["epoll"] == {"0:0": [1], "1:0": [1]}
    assert steps[4].obs["epoll"] == {"0:0": [1], "1:0": [1]}
    assert steps[5].obs["epoll"] == {"0:0": []}


def test_pipe_reopened_via_proc_is_the_same_object() -> None:
    steps = run_sequence([("pipe", 0), ("fork", 0, 0), ("reopen", 1, 0, 1, O_RDONLY)])
    obs = steps[-1].obs
    assert steps[-1].result == ("ok", 2)
    assert object_group(obs, 0, 0) == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]]
    assert file_group(obs, 1, 2) == [[1, 2]]
    assert obs["kinds"]["1:2"] == "pipe_r"


def test_sendmsg_recvmsg_passes_an_open_file() -> None:
    steps = run_sequence([
        ("socketpair", 0),                 # 0, 1
        ("open", 0, 0, O_RDWR, 0, 1),      # 2
        ("lseek", 0, 2, 7),
        ("recvmsg", 0, 1),
        ("sendmsg", 0, 0, 2),
        ("close", 0, 2),
        ("fork", 0, 0),
        ("recvmsg", 1, 1),                 # 2 in task 1, no close-on-exec
        ("sendmsg", 0, 2, 0),
        ("sendmsg", 0, 3, 0),
        ("close", 0, 0),
        ("recvmsg", 0, 1),
        ("close", 1, 0),
        ("recvmsg", 0, 1),
        ("sendmsg", 0, 1, 1),
    ])
    assert results(steps) == [
        ("ok", (0, 1)), ("ok", 2), ("ok", 7), ("err", "EAGAIN"), ("ok", 1), ("ok", 0),
        ("ok", 1), ("ok", (2,)), ("err", "EBADF"), ("err", "EBADF"), ("ok", 0), ("err", "EAGAIN"),
        ("ok", 0), ("ok", ("eof",)), ("err", "EPIPE"),
    ]
    obs = steps[7].obs
    assert fds(obs, 1)[2] == {"flags": O_LARGEFILE | O_RDWR, "cloexec": 0, "pos": 7}
    assert file_group(obs, 1, 2) == [[1, 2]]
    assert 2 not in fds(obs, 0)
    assert object_group(obs, 0, 0) == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_sendmsg_of_a_descriptor_in_flight_keeps_the_file() -> None:
    steps = run_sequence([
        ("socketpair", 0), ("pipe", 0), ("epoll_create", 0), ("epoll_add", 0, 4, 2),
        ("sendmsg", 0, 0, 2), ("close", 0, 2), ("recvmsg", 0, 1), ("close", 0, 2),
        ("sendmsg", 0, 0, 3), ("epoll_add", 0, 4, 3), ("close", 0, 3), ("close", 0, 1),
    ])
    assert steps[5].obs["epoll"] == {"0:4": [2]}  # the file is alive in the socket queue
    assert steps[6].result == ("ok", (2,))
    assert steps[6].obs["epoll"] == {"0:4": [2]}
    assert steps[7].obs["epoll"] == {"0:4": []}
    assert steps[10].obs["epoll"] == {"0:4": [3]}
    assert steps[11].obs["epoll"] == {"0:4": []}  # closing the receiver drops the message


def test_timerfd_kind() -> None:
    steps = run_sequence([("timerfd", 0), ("dup", 0, 0)])
    assert steps[0].result == ("ok", 0)
    obs = steps[-1].obs
    assert obs["kinds"] == {"0:0": "timerfd", "0:1": "timerfd"}
    assert obs["objects"] == []
    assert file_group(obs, 0, 0) == [[0, 0], [0, 1]]


def test_openpty_objects() -> None:
    steps = run_sequence([("openpty", 0), ("openpty", 0), ("fork", 0, 0)])
    assert results(steps)[:2] == [("ok", (0, 1)), ("ok", (2, 3))]
    obs = steps[-1].obs
    assert obs["objects"] == [[[0, 0], [0, 1], [1, 0], [1, 1]],
                              [[0, 2], [0, 3], [1, 2], [1, 3]]]


def test_observation_is_json_and_deterministic() -> None:
    seq = [("socketpair", 0), ("fork", 0, 0), ("openpty", 1), ("epoll_create", 1),
           ("epoll_add", 1, 4, 3), ("open", 0, 1, O_WRONLY, O_APPEND, 1), ("clone_files", 1, 0)]
    a = run_sequence(seq)
    b = run_sequence(seq)
    assert a == b
    json.dumps([s.obs for s in a])
    assert list(a[-1].obs) == ["tasks", "files", "tables", "objects", "epoll", "kinds", "fmode",
                               "paths", "inq", "owner", "flight", "adrift"]


def test_owner_stays_observed_after_the_owner_exits() -> None:
    """F_GETOWN reads 0 once the owner is reaped; exited tasks stay zombies until the
    session ends, so the owner set by a task that has exited is still seen."""
    steps = run_sequence([("open", 0, 0, O_RDONLY, 0, 0), ("fork", 0, 0), ("setown", 1, 0),
                          ("exit", 1), ("dup", 0, 0)])
    assert [s.obs["owner"] for s in steps] == [{}, {}, {"0:0": 1, "1:0": 1}, {"0:0": 1},
                                              {"0:0": 1, "0:1": 1}]


def test_in_flight_files_are_named_in_queue_order() -> None:
    """Every message's file, in order, by its first descriptor or as a file in flight only
    (with the queue of a socket in flight), and the queues are left as they were."""
    steps = run_sequence([
        ("socketpair", 0), ("pipe", 0), ("sendmsg", 0, 0, 3), ("sendmsg", 0, 0, 2),
        ("socketpair", 0), ("sendmsg", 0, 4, 1), ("sendmsg", 0, 0, 4), ("close", 0, 4),
        ("close", 0, 2), ("recvmsg", 0, 1),
    ])
    obs = steps[8].obs  # fd 2 (a pipe end) and fd 4 (a socket with a queue) in flight only
    assert obs["flight"] == {"0:0": [], "0:1": ["0:3", "~0", "~1"], "0:5": ["0:1"], "~1": []}
    assert obs["adrift"] == {"~0": "pipe_r", "~1": "unix"}
    assert obs["inq"]["0:1"] == 3
    # after a peek the messages are still there: recvmsg takes the first, the pipe's write end
    assert steps[9].result[0] == "ok" and len(steps[9].result[1]) == 1
    assert steps[9].obs["flight"]["0:1"] == ["~0", "~1"]


# --------------------------------------------------------------------------------------------
# driver robustness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    ("frobnicate", 0),
    ("close", 0),
    ("close", 0, 64),
    ("dup2", 0, 0, 500),
    ("open", 0, 2, 0, 0, 0),
    ("open", 0, "f0", 0, 0, 0),
])
def test_static_validation(bad: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        run_sequence([("pipe", 0), bad])


def test_task_index_out_of_range_cleans_up() -> None:
    with pytest.raises(ValueError, match="task index"):
        run_sequence([("fork", 0, 0), ("clone_files", 1, 0), ("pipe", 2), ("exit", 0),
                      ("pipe", 2)])
    with pytest.raises(ValueError, match="task index"):
        run_sequence([("fork", 0, 0), ("reopen", 0, 2, 0, 0)])


def test_hung_worker_times_out_and_is_killed() -> None:
    """The hung worker is killed (no_leftovers checks its group is gone), not waited for."""
    with pytest.raises(TimeoutError):
        run_sequence([("fork", 0, 0), ("pipe", 1), ("_sleep", 1, 60)], timeout=0.5)


def test_driver_error_is_raised_for_worker_failures() -> None:
    with pytest.raises(DriverError):
        run_sequence([("_sleep", 0, "not a number")])


def test_fmode_paths_and_queue_length_are_observed() -> None:
    """f_mode's READ/WRITE bits by 0-byte read/write probes (a probe changes no offset),
    which path a regular file is, and how many bytes wait in a unix socket's queue."""
    steps = run_sequence([
        ("open", 0, 1, O_RDONLY, 0, 0), ("open", 0, 0, O_WRONLY, O_APPEND, 0),
        ("open", 0, 1, O_RDWR, 0, 0), ("lseek", 0, 2, 3), ("pipe", 0), ("socketpair", 0),
        ("sendmsg", 0, 5, 0), ("sendmsg", 0, 5, 1), ("epoll_create", 0),
    ])
    obs = steps[-1].obs
    assert obs["fmode"] == {"0:0": 1, "0:1": 2, "0:2": 3, "0:3": 1, "0:4": 2, "0:5": 3,
                            "0:6": 3, "0:7": 3}
    assert obs["paths"] == {"0:0": 1, "0:1": 0, "0:2": 1}
    assert obs["inq"] == {"0:5": 0, "0:6": 2}
    assert fds(obs, 0)[2]["pos"] == 3 and fds(obs, 0)[1]["pos"] == 0
