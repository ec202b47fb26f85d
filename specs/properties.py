"""The invariants. Each predicate is True in a state where the invariant holds.

"When the image was written" (or "at checkpoint") means at the `write` step: the inside tasks
are frozen, but outside tasks keep running and may share a file or an fd table with them, so
the image is written in one step and every restore property compares the restored tasks with
the inside tasks as they were at that step. The checkpoint's other phases (freeze, collect,
contained check, visited check) are separate steps, and outside tasks act between them.
"""

from __future__ import annotations

import errno

from model.config import Config
from model.flags import FMODE_READ, FMODE_WRITE, O_ACCMODE, O_ASYNC, SETFL_MASK
from model.image import MALFORMED
from model.state import DONE, FAILED, OBJ_INODE, OBJ_TTY, RESTARTED, TIMERFD, World
from specs.registry import Bounded, invariant

# Observation layout (model.world.observe): (tasks, files);
# task = (table_group, ((fd, cloexec, file_group), ...));
# file = (kind, f_flags, f_mode, f_pos, path, obj_group, epitems, owner, rcvq).
KIND, FLAGS, FMODE, POS, PATH, OBJ, EPITEMS, OWNER, RCVQ = range(9)

# The bits F_GETFL shows that F_SETFL (with ->fasync) can set: what restore can give back.
SETTABLE = O_ACCMODE | SETFL_MASK | O_ASYNC

_LEAK_FINDINGS = {
    "linuxcr": "a pipe whose other end an outside task holds: the pipe inode has no "
    "ref_users, so the contained check never compares it",
    "subtree": "subtree mode has no leak detection by design",
    "criu": "CRIU dumps a pipe with an outside peer without a warning",
    "fixed-pipe": "an outside task holding a pipe end an inside epoll watches: its extra "
    "f_count is matched by the epoll's extra `users`, hiding the leak",
    "fixed-epoll": "still the pipe gap",
    "fixed-race": "still the pipe gap",
    "mut-no-contained": "nothing is compared",
    "mut-collect-every": "a pty master open twice adds a spare `users` to its slave tty, "
    "matching an outside reference to the slave",
    "mut-no-visited": "as linuxcr, its base",
    "mut-stale-counts": "an outside task sharing an inside fd table closes one of two "
    "descriptors of a file after collect, then execs: its copy of the table holds the file, "
    "yet the file's count still equals the users collect counted",
}


def _stale_counts_reachable(cfg: Config) -> bool:
    """Bounds that allow the stale-count run: a table shared across the boundary, a file in
    it twice, then close and exec by the outside task while the checkpoint runs."""
    acts = cfg.enabled_actions()
    return (cfg.checkpoint_steps >= 2 and "collected" in cfg.outside_acts_after
            and {"clone_files", "close", "exec"} <= acts and cfg.max_fds >= 2
            and cfg.env_steps >= 3)


_LEAK_BOUNDED = {
    "mut-stale-counts": Bounded(
        "two outside steps during the checkpoint, exec, CLONE_FILES and two descriptors",
        _stale_counts_reachable, demo="race"),
}


def _succeeded(w: World) -> bool:
    cr = w.cr
    return bool(cr) and (cr.phase == DONE or cr.phase == RESTARTED)


def _restored(w: World) -> bool:
    """A restart from an untampered image that succeeded."""
    cr = w.cr
    return bool(cr) and cr.phase == RESTARTED and not cr.rst_error and not cr.tampered


@invariant(
    applies="every variant; in subtree mode and CRIU, 'the check' is the freeze",
    violated=_LEAK_FINDINGS,
    bounded=_LEAK_BOUNDED,
)
def leak_detection_sound(w: World) -> bool:
    """A checkpoint that succeeds wrote no object that an outside task referenced when the
    contained check ran.

    Objects: fd tables, open files, sockets, pipe inodes and tty pairs. "Referenced from
    outside" is computed from the model's own reference graph (ghost state recorded at the
    check), not from the objhash's counts, so the spec judges the counting."""
    return not (_succeeded(w) and w.cr.leak_check)


@invariant(
    applies="every variant",
    violated={
        **{v: why for v, why in _LEAK_FINDINGS.items() if v != "mut-no-contained"},
        "linuxcr": "besides the pipe gap, a race: after the contained check an outside task "
        "opens /proc/PID/fd/N of an inside pty slave; the write phase never compares counts",
        "fixed-pipe": "the race after the contained check remains",
        "fixed-epoll": "the pipe gap and the race remain",
        "fixed-race": "the pipe gap remains",
    },
    bounded=_LEAK_BOUNDED,
)
def leak_detection_sound_at_write(w: World) -> bool:
    """A checkpoint that succeeds wrote no object that an outside task referenced when the
    image was written.

    Stronger than `leak_detection_sound`: it also catches references outside tasks gain
    between the contained check and the write (the patch calls the later checks advisory)."""
    return not (_succeeded(w) and w.cr.leak_write)


@invariant(
    applies="every variant",
    violated={
        "linuxcr": "pipes have no ->collect and their inode no ref_users",
        "subtree": "no leak detection by design",
        "criu": "external pipes are dumped silently",
        "fixed-pipe": "the epoll over-count hides an outside reference to a watched pipe end",
        "fixed-epoll": "still the pipe gap",
        "fixed-race": "still the pipe gap",
        "mut-no-contained": "nothing is compared",
        "mut-collect-every": "a spare `users` on a slave tty hides an outside reference",
        "mut-no-visited": "as linuxcr, its base",
        "mut-stale-counts": "the stale-count run with a pipe end: the outside task's copy of "
        "the shared table holds the pipe",
    },
    bounded={"mut-stale-counts": Bounded(
        "as for leak_detection_sound, with pipes or ptys",
        lambda cfg: _stale_counts_reachable(cfg) and bool({"pipe", "pty"} & set(cfg.kinds)),
        demo="race")},
)
def pipe_peers_contained(w: World) -> bool:
    """A checkpoint that succeeds never wrote a pipe or a pty pair whose other end an outside
    task held when the contained check ran."""
    if not _succeeded(w):
        return True
    return not any(t in (OBJ_INODE, OBJ_TTY) for _, t in w.cr.leak_check)


@invariant(
    applies="full-container mode (subtree and CRIU never report a leak)",
    violated={
        "linuxcr": "an epoll watching a file inside: eventpoll's ->collect adds a `users` "
        "count for the target but the epoll item holds no f_count, a false leak",
        "fixed-pipe": "still the epoll over-count",
        "fixed-race": "still the epoll over-count",
        "mut-users-start-1": "every count is one short",
        "mut-collect-every": "a file met twice is collected twice",
        "mut-no-visited": "as linuxcr, its base",
    },
)
def leak_detection_complete(w: World) -> bool:
    """When nothing the container uses is referenced from outside and every file it holds is
    supported (has ->checkpoint, no owner, no in-flight SCM_RIGHTS), the checkpoint does not
    fail.

    "Nothing referenced from outside" must hold at the freeze, at the contained check and
    when the checkpoint fails (ghost state `Cr.clean`)."""
    cr = w.cr
    return not (cr and cr.phase == FAILED and cr.clean)


@invariant(violated={
    "mut-skip-uncheckpointable": "the file is left out silently",
    "criu": "not a gap: CRIU dumps and restores timerfd (timerfd.c), the kind that stands for "
    "'no ->checkpoint' in Linux-CR",
})
def uncheckpointable_refused(w: World) -> bool:
    """A file whose f_op has no ->checkpoint makes the checkpoint fail; it is never silently
    left out of an image."""
    if not _succeeded(w):
        return True
    return all(f[KIND] != TIMERFD for f in w.cr.snapshot[1])


def _pairs(w: World):
    """(saved fd, restored fd) pairs with their files, or None when the tasks or descriptor
    numbers differ."""
    (snap_t, snap_f), (rest_t, rest_f) = w.cr.snapshot, w.cr.restored
    if len(snap_t) != len(rest_t):
        return None
    out = []
    for (_, fds), (_, fds2) in zip(snap_t, rest_t, strict=True):
        if [d[0] for d in fds] != [d[0] for d in fds2]:
            return None
        for (_, c, g), (_, c2, g2) in zip(fds, fds2, strict=True):
            out.append((c, snap_f[g], c2, rest_f[g2]))
    return out


@invariant(
    violated={
        "mut-no-setfl": "O_APPEND/O_NONBLOCK set with F_SETFL on a pipe are lost",
        "mut-cloexec-per-file": "dup'd descriptors with different FD_CLOEXEC",
        "mut-skip-uncheckpointable": "the left-out descriptor is missing after restart",
    }
)
def restore_preserves_fcntl_flags(w: World) -> bool:
    """For every restored descriptor, F_GETFL restricted to the access mode and the status
    flags F_SETFL can set, and FD_CLOEXEC, equal their values when the image was written.

    Bits outside that mask (O_LARGEFILE) are the subject of `restore_preserves_all_flags`."""
    if not _restored(w):
        return True
    pairs = _pairs(w)
    if pairs is None:
        return False
    return all(
        c == c2 and f[FLAGS] & SETTABLE == f2[FLAGS] & SETTABLE for c, f, c2, f2 in pairs
    )


@invariant(
    violated={
        "linuxcr": "O_LARGEFILE: a pty slave from openpty() lacks it, restart reopens "
        "/dev/pts/N by name and open() adds it; a pipe end reopened through /proc has it and "
        "the rebuilt pipe does not",
        "subtree": "as linuxcr",
        "criu": "a pty slave from openpty() gains O_LARGEFILE, as CRIU 4.2 showed on this "
        "kernel (pipe ends keep theirs: CRIU reopens them through /proc/self/fd)",
        "fixed-pipe": "as linuxcr",
        "fixed-epoll": "as linuxcr",
        "fixed-race": "as linuxcr",
        "mut-skip-uncheckpointable": "the left-out descriptor is missing",
        "mut-no-setfl": "F_SETFL flags are lost",
        "mut-no-visited": "as linuxcr, its base",
    }
)
def restore_preserves_all_flags(w: World) -> bool:
    """For every restored descriptor, the whole F_GETFL value equals its value when the image
    was written.

    Expected to fail where restart cannot reproduce a bit that F_SETFL cannot set: the spec
    names the bit (O_LARGEFILE) instead of hiding it behind a mask."""
    if not _restored(w):
        return True
    pairs = _pairs(w)
    return pairs is not None and all(f[FLAGS] == f2[FLAGS] for _, f, _, f2 in pairs)


@invariant(
    violated={
        "mut-new-file-per-fd": "dup'd descriptors no longer share an offset",
        "mut-no-lseek": "the offset is lost",
        "mut-no-shared-table": "CLONE_FILES tasks no longer share a table",
        "mut-skip-uncheckpointable": "the left-out descriptor is missing",
    }
)
def restore_preserves_offsets_and_sharing(w: World) -> bool:
    """After restart, descriptors share an open file exactly when they did when the image was
    written, with the same kind and offset; tasks share an fd table exactly when they did;
    pipe ends, pty pairs, socket pairs and epoll watch lists join the same partners; owners
    and the files in flight in socket queues come back where a design saves them."""
    if not _restored(w):
        return True
    (snap_t, snap_f), (rest_t, rest_f) = w.cr.snapshot, w.cr.restored

    def shape(f: tuple) -> tuple:
        return (f[KIND], f[POS], f[PATH], f[OBJ], f[EPITEMS], f[OWNER], f[RCVQ])

    def tasks(ts: tuple) -> list:  # FD_CLOEXEC is restore_preserves_fcntl_flags' business
        return [(tg, [(fd, g) for fd, _, g in fds]) for tg, fds in ts]

    return tasks(snap_t) == tasks(rest_t) and [shape(f) for f in snap_f] == [
        shape(f) for f in rest_f
    ]


@invariant(violated={"mut-fmode-upgrade": "a read-write reopen keeps WRITE the image lacks"})
def restore_never_escalates(w: World) -> bool:
    """A restored file never has read or write access that its image record's f_mode did not
    have, whatever the image says otherwise."""
    cr = w.cr
    if not (cr and cr.phase == RESTARTED and not cr.rst_error):
        return True
    rw = FMODE_READ | FMODE_WRITE
    return all(
        f[FMODE] & rw & ~image_mode == 0
        for f, (_, image_mode) in zip(cr.restored[1], cr.rst_files, strict=True)
    )


@invariant(
    violated={
        "mut-no-visited": "an epoll watching a file held only outside is written; the "
        "image names the target's objref but has no record for it: restart fails -EINVAL",
    }
)
def restart_succeeds(w: World) -> bool:
    """Restart from an image that a successful checkpoint wrote, untampered, succeeds."""
    cr = w.cr
    return not (cr and cr.phase == RESTARTED and not cr.tampered and cr.rst_error)


@invariant(
    violated={
        "mut-no-type-check": "an fd record naming the table's objref is accepted",
        "mut-partial-restore": "the tasks built before the error survive",
    }
)
def hostile_images_rejected(w: World) -> bool:
    """Restart refuses every malformed image with an error, and leaves no task with a
    partial fd table.

    Malformed: objref 0, an unknown or duplicate objref, an objref of the wrong type, an
    f_type out of range, open-only flags (O_TRUNC), a negative nfds."""
    cr = w.cr
    if not (cr and cr.phase == RESTARTED and cr.tampered in MALFORMED):
        return True
    # restored is (tasks, files): a partial restart that built no task has ((), ())
    return cr.rst_error != 0 and not (cr.restored and cr.restored[0])


@invariant(
    violated={
        "mut-new-file-per-fd": "each fd record gets its own struct file",
        "mut-no-shared-table": "each task's copied table holds its own references",
        "mut-restart-keeps-ref": "every restored file keeps one reference too many",
        "mut-skip-uncheckpointable": "the left-out file is missing",
    }
)
def refcounts_restored(w: World) -> bool:
    """After restart, each restored file's f_count equals the number of descriptors (counted
    once per fd table) and in-flight messages that referred to it when the image was written."""
    if not _restored(w):
        return True
    snap_t, snap_f = w.cr.snapshot
    counts: dict[int, set] = {}
    for tg, fds in snap_t:
        for fd, _, g in fds:
            counts.setdefault(g, set()).add((tg, fd))
    for i, f in enumerate(snap_f):
        for n, g in enumerate(f[RCVQ]):
            counts.setdefault(g, set()).add(("in flight", i, n))
    want = [len(counts[g]) for g in sorted(counts)]
    return want == [n for n, _ in w.cr.rst_files]


EBUSY = errno.EBUSY
