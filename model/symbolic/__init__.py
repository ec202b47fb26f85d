"""The crmodel world and Linux-CR checkpoint/restart as z3 terms (for `checker.symbolic`).

A symbolic state is a dict of fixed-size arrays of z3 terms (pure values: no solver here).
Transitions are hand-written twins of `model.env` / `model.checkpoint` / `model.restart`;
`tests/test_z3_agreement.py` checks them against the explicit model transition by transition
on random states, and verdict by verdict (with counterexample lengths) on small configs.

Sizes: ``NT = inside + outside`` task slots (also the fd-table slots), ``ND`` descriptors per
table, ``NF`` open-file slots (also the ids of pipe inodes / pty pairs). A transition that
would need a slot beyond these is disabled: a proof at a size covers every state of that size
and every transition that stays within it.

What is covered (same semantics as the explicit model):

* tasks (alive, inside, frozen, table), fd tables (per slot: used, file, FD_CLOEXEC), open
  files (kind, path, obj, f_flags, f_pos, owner, epoll items as bits (epoll, target, fd));
  f_mode is a function of kind and access mode (as it is in every state the explicit model
  builds); liveness of files, tables and objects is derived from the references (never
  stored), and release clears epoll items of dead targets and ghost entries of dead objects,
  as `model.world.normalize` does;
* environment actions: open, close, dup, dup2, fcntl F_SETFL / F_SETFD / F_SETOWN, lseek,
  fork, clone(CLONE_FILES), exec, exit, open of /proc/PID/fd/N (reopen), pipe, openpty,
  epoll_create, epoll_ctl ADD (with the exact ELOOP check) / DEL, timerfd; the same guards as
  `model.env.env_actions` plus "the call succeeds and changes the state"; task order is kept
  as the explicit model keeps it (exit compacts, fork appends), so task numbers in decoded
  actions are the explicit ones;
* file kinds reg, pipe (read, write, read-write end), pty master/slave, eventpoll, timerfd;
* the checkpoint: freeze, collect (objhash ``users`` as closed-form sums: first encounter
  `users_start`, `collect_every`, `epoll_counts_targets`, `pipe_ref_users`, skipped
  uncheckpointable files), the contained check (`ref_users` from the derived counts:
  f_count, files->count, tty kref, pipe files + 1), write (reverse-added-late, EBADF for no
  ->checkpoint, EBUSY for an owner, the deferred epoll queue; the first error in write order
  wins), the visited check and the re-check after the write; subtree mode; outside-task
  steps between the phases (bounded by `checkpoint_steps` in BMC, unbounded in proofs);
* restart, as far as the covered specs read it: per written file the flags restart gives
  (open/reconstruct, F_SETFL with CKPT_SETFL_MASK or none, O_LARGEFILE as saved, the f_mode
  rule, CRIU's re-read), close-on-exec per descriptor or per file;
* tampering with the image (`model.image.tamper`, each of its eight mutations where it
  applies, once, before restart) and what restart makes of it: a malformed image fails
  (unless the type check is off and an fd record names the table), a lowered f_mode fails
  nothing; a partial restart keeps the tasks built before the error;
* the completeness ghost `Cr.clean` (`model.checkpoint.is_clean`), taken at the freeze, at
  the contained check and when the checkpoint fails.

What is abstracted:

* the image is not materialised: the write step records ghost booleans computed from the
  state it reads (which the explicit restart would read back from the image): ``leak``
  (a written object was referenced from outside at the check: `Cr.leak_check` non-empty),
  ``leak_w`` (at the write), ``leak_pipe`` (a written pipe inode or tty was, at the check),
  ``img_bad`` (some restored descriptor would differ in F_GETFL & SETTABLE or FD_CLOEXEC, or
  be missing), ``img_err`` (restart would fail), ``img_timerfd`` (the snapshot holds a
  timerfd), ``img_share`` / ``img_count`` (restart would break the sharing and offsets / the
  reference counts), ``img_fd`` / ``img_rdwr`` (the image has an fd record / a read-write
  file record: what tampering needs); ``restart`` copies ``img_err`` to ``rst_err`` for an
  untampered image. The objref order, image records,
  snapshot and restored observation are therefore not decoded (BMC traces get them from the
  explicit replay, see `concretize`);
* the ghost record of outside references (`Cr.ghost`) is one bit per object;
* unix sockets (socketpair, SCM_RIGHTS sendmsg/recvmsg, in-flight references and Linux-CR's
  checkpoint of sockets) only when `Sizes.queue` > 0 (`sockets`; with 0 no term mentions
  them);
* not covered: CRIU's rules (in-flight files dumped, external unix peers refused), FIFOs and
  unlinked files, and the specs `restore_preserves_all_flags` and `restart_succeeds`.

Specs encoded: `SPECS_ENCODED`.

Rooms, each beside its explicit twin: `state` (sizes, domains, what is covered), `terms`
(z3 term builders), `counts` (derived terms: `model.world`), `env` (`model.env`),
`checkpoint` (`model.checkpoint`), `restart` (`model.restart`, `model.image.tamper`),
`sockets` (the unix parts of `model.env`, `model.world` and `model.checkpoint`),
`decode` (back to an explicit World), `system` (the model: `model.system`). Nothing here
imports `specs`: the proofs' lemmas are handed in (`specs.lemmas.proof_model`).
"""

from model.symbolic.counts import View
from model.symbolic.decode import decode_values, summary
from model.symbolic.state import (
    CKPT_ACTIONS,
    COVERED_ACTIONS,
    COVERED_KINDS,
    IMG_GHOSTS,
    RESTORE_GHOSTS,
    SPECS_ENCODED,
    Domains,
    Sizes,
    State,
    Transition,
    covered_config,
    domains_of,
)
from model.symbolic.system import CrSymModel, symbolic_model

__all__ = [
    "CKPT_ACTIONS", "COVERED_ACTIONS", "COVERED_KINDS", "IMG_GHOSTS", "RESTORE_GHOSTS",
    "SPECS_ENCODED", "CrSymModel", "Domains", "Sizes", "State", "Transition", "View",
    "covered_config", "decode_values", "domains_of", "summary", "symbolic_model",
]
