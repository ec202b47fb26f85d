"""Design variants: the Linux-CR design as read from the patches, proposed fixes, CRIU's
policy, and single-bug mutants. A variant is data: the model reads its knobs."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

Kind = Literal["baseline", "fixed", "policy", "mutant"]


@dataclass(frozen=True)
class Variant:
    name: str
    kind: Kind
    doc: str
    # --- checkpoint ---
    full_container: bool = True  # collect + contained check (False: CHECKPOINT_SUBTREE)
    users_start: int = 2  # obj_new: one for the reference found, one for the objhash's own
    collect_every: bool = False  # call ->collect on every encounter, not only the first
    contained_check: bool = True
    visited_check: bool = True
    pipe_ref_users: bool = False  # pipes get ->collect and the INODE gets ref_users
    epoll_counts_targets: bool = True  # eventpoll ->collect adds a `users` per watched target
    recheck_after_write: bool = False  # run the contained check again before succeeding
    check_at_write: bool = False  # compare counts as the image is written (same step)
    # collect compares each fd table's count at once: a table shared with an unfrozen task
    # lets that task change the container's references after collect (close, then exec)
    tables_checked_at_collect: bool = False
    skip_uncheckpointable: bool = False  # silently leave out files without ->checkpoint
    # the counts the contained check compares include in-flight SCM_RIGHTS references
    # (file->f_count); off: only descriptors and the objhash's grab, as a design that counts
    # the references it can walk (fd tables) would
    inflight_counted: bool = True
    # CRIU's own rules (the CRIU source file that has each is named where the model reads it)
    refuse_external_unix: bool = False  # a dumped unix socket whose peer was not dumped
    owner_dumped: bool = False  # F_SETOWN owner saved and restored (no -EBUSY)
    scm_dumped: bool = False  # in-flight SCM_RIGHTS files saved, restored into the queue
    timerfd_dumped: bool = False  # timerfd has a dump and restore method
    refuse_pipe_direct: bool = False  # a pipe in packet mode (O_DIRECT) is refused
    refuse_unpaired_slave: bool = False  # a pty slave whose live master was not dumped
    unlinked_dumped: bool = False  # an open file whose name is gone: link-remap / ghost file
    # --- restart ---
    setfl: Literal["mask", "none"] = "mask"  # F_SETFL with f_flags & CKPT_SETFL_MASK, or skip
    cloexec_per_file: bool = False  # close-on-exec kept per file, not per descriptor
    new_file_per_fd: bool = False  # a new struct file per fd record instead of by objref
    fmode_check: bool = True  # downgrade only, else -EINVAL
    type_check: bool = True  # fetched object must have the expected type (-ENOMSG)
    partial_restore: bool = False  # a failed restart leaves the tasks built so far
    restore_pos: bool = True  # vfs_llseek(f_pos)
    share_tables: bool = True  # a task with a known table objref adopts the table
    restore_largefile: bool = False  # set O_LARGEFILE as the image says (restart is in-kernel)
    flags_reread: bool = False  # CRIU: re-read F_GETFL after restore, fail if a flag dropped
    pipe_reopen_flags: bool = False  # CRIU: pipe ends reopened with their saved flags
    restart_keeps_ref: bool = False  # the restart objhash's reference is never dropped
    base: str = ""  # a mutant's correct variant: its bug must break a spec `base` satisfies


# The knobs of CRIU's own rules (each named with its CRIU source file where the model reads it).
CRIU_RULES = ("refuse_external_unix", "owner_dumped", "scm_dumped", "timerfd_dumped",
              "refuse_pipe_direct", "refuse_unpaired_slave", "unlinked_dumped",
              "pipe_reopen_flags")


def knobs(v: Variant) -> dict[str, object]:
    """The knobs that differ from the Linux-CR baseline (for listings)."""
    base = LINUXCR
    skip = {"name", "kind", "doc", "base"}
    return {
        f.name: getattr(v, f.name)
        for f in fields(Variant)
        if f.name not in skip and getattr(v, f.name) != getattr(base, f.name)
    }


LINUXCR = Variant(
    "linuxcr",
    "baseline",
    "Linux-CR v20 as read from the patches, full-container mode, gaps included",
)

_FIXES = dict(pipe_ref_users=True, epoll_counts_targets=False, recheck_after_write=True,
              tables_checked_at_collect=True, check_at_write=True, restore_largefile=True)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        LINUXCR,
        replace(LINUXCR, name="subtree", kind="baseline",
                doc="CHECKPOINT_SUBTREE: no collect, no contained check (no leak detection)",
                full_container=False),
        replace(LINUXCR, name="criu", kind="policy",
                doc="CRIU 4.2's rules: no refcount leak check, external pipes dumped silently; "
                "a unix socket whose peer is not dumped, a pipe in packet mode (O_DIRECT) and "
                "a pty slave whose master is not dumped refused; owners, in-flight SCM_RIGHTS "
                "files, timerfds and unlinked files dumped and restored; pipe ends reopened "
                "with their saved flags; flags re-read after restore",
                full_container=False, refuse_external_unix=True, flags_reread=True,
                owner_dumped=True, scm_dumped=True, timerfd_dumped=True, unlinked_dumped=True,
                refuse_pipe_direct=True, refuse_unpaired_slave=True,
                pipe_reopen_flags=True),
        replace(LINUXCR, name="fixed", kind="fixed",
                doc="every gap closed: pipes leak-checked, epoll targets not over-counted, "
                "fd tables shared across the boundary refused at collect, counts compared "
                "again as the image is written and after it, O_LARGEFILE restored as saved",
                **_FIXES),
        replace(LINUXCR, name="fixed-pipe", kind="fixed",
                doc="only the pipe gap closed: a pipe's inode gets ->collect and ref_users",
                pipe_ref_users=True),
        replace(LINUXCR, name="fixed-epoll", kind="fixed",
                doc="only the epoll gap closed: watched targets are collected without a count",
                epoll_counts_targets=False),
        replace(LINUXCR, name="fixed-race", kind="fixed",
                doc="only the race closed: the contained check runs again after the write",
                recheck_after_write=True),
        # --- single-bug mutants (each starts from `fixed`, unless it names another base) ---
        replace(LINUXCR, name="mut-users-start-1", kind="mutant", base="fixed",
                doc="obj_new starts users at 1 (forgets the objhash's own reference)",
                users_start=1, **_FIXES),
        replace(LINUXCR, name="mut-collect-every", kind="mutant", base="fixed",
                doc="->collect runs on every encounter of a file, not only the first",
                collect_every=True, **_FIXES),
        replace(LINUXCR, name="mut-stale-counts", kind="mutant", base="fixed",
                doc="collect leaves fd tables to the contained check, whose counts an "
                "unfrozen task sharing an inside table may have changed meanwhile",
                **{**_FIXES, "tables_checked_at_collect": False}),
        replace(LINUXCR, name="mut-no-contained", kind="mutant", base="fixed",
                doc="the contained check is skipped", contained_check=False, **_FIXES),
        # Built on linuxcr: with the fixed contained check the visited check is redundant
        # at every bound we tried (an equivalent mutant); in linuxcr it is the only check
        # that catches an epoll watching a file held only outside.
        replace(LINUXCR, name="mut-no-visited", kind="mutant", base="linuxcr",
                doc="the visited check is skipped (on linuxcr)", visited_check=False),
        replace(LINUXCR, name="mut-skip-uncheckpointable", kind="mutant", base="fixed",
                doc="scan_fds silently passes over files without ->checkpoint (collect and write)",
                skip_uncheckpointable=True, **_FIXES),
        replace(LINUXCR, name="mut-no-setfl", kind="mutant", base="fixed",
                doc="restart skips F_SETFL", setfl="none", **_FIXES),
        replace(LINUXCR, name="mut-cloexec-per-file", kind="mutant", base="fixed",
                doc="close-on-exec saved per file (from its first descriptor), not per fd",
                cloexec_per_file=True, **_FIXES),
        replace(LINUXCR, name="mut-new-file-per-fd", kind="mutant", base="fixed",
                doc="restart makes a new struct file for every fd record",
                new_file_per_fd=True, **_FIXES),
        replace(LINUXCR, name="mut-fmode-upgrade", kind="mutant", base="fixed",
                doc="restart accepts an f_mode the reopened file does not match (no check)",
                fmode_check=False, **_FIXES),
        replace(LINUXCR, name="mut-no-type-check", kind="mutant", base="fixed",
                doc="restart does not check the type of the object an objref names",
                type_check=False, **_FIXES),
        replace(LINUXCR, name="mut-partial-restore", kind="mutant", base="fixed",
                doc="a failed restart leaves the tasks and fd tables built so far",
                partial_restore=True, **_FIXES),
        replace(LINUXCR, name="mut-no-lseek", kind="mutant", base="fixed",
                doc="restart does not restore f_pos", restore_pos=False, **_FIXES),
        replace(LINUXCR, name="mut-no-shared-table", kind="mutant", base="fixed",
                doc="restart gives every task its own table even when the objref is known",
                share_tables=False, **_FIXES),
        replace(LINUXCR, name="mut-restart-keeps-ref", kind="mutant", base="fixed",
                doc="restart never drops the restart objhash's reference on files",
                restart_keeps_ref=True, **_FIXES),
    ]
}
