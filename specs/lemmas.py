"""Strengthening lemmas for the inductive proofs of the z3 engine (`checker.symbolic`).

A property is rarely inductive on its own: a state that satisfies it may still step into one
that does not, if that state is unreachable. Each lemma below is a named predicate over a
symbolic state of `model.symbolic` (a z3 term), with a one-sentence docstring saying what it
states; the proof of a property conjoins the property with its lemmas (`lemmas_for`) and shows
the conjunction holds initially and is preserved by every transition from every state of the
size, reachable or not. Each lemma is thereby itself proved, together with the property.

The lemmas for `leak_detection_sound` encode the argument why the contained check is sound
when it is: collect refuses an fd table that a task outside also holds, so after collect no
unfrozen task can change what the container references; each hashed object's `users` then
equals the references found from inside plus the objhash's own until the check, and equal
counts at the check mean no outside reference. Without that refusal (`mut-stale-counts`) an
outside task sharing a table can close a descriptor and exec between collect and the check;
the lemma `collected_counts_consistent` is then false in a reachable state and the proof
fails, as it must.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import z3

from model.config import Config
from model.state import (
    CHECKED,
    COLLECTED,
    DONE,
    EPOLL,
    FROZEN,
    PTMX,
    PTS,
    RESTARTED,
    TIMERFD,
    UNIX,
    WRITTEN,
)
from model.symbolic import CrSymModel, Sizes, sockets, symbolic_model
from model.symbolic.state import KNOWN_FLAGS, PIPES
from model.symbolic.terms import FW, all_, any_, bv, cnt, in_, is_, num, sel
from model.variants import Variant
from specs.registry import SPECS

Pred = Callable[[Any, Any], z3.BoolRef]


@dataclass(frozen=True)
class Lemma:
    """A named strengthening lemma; `pred(model, state)` is its z3 predicate."""

    name: str
    doc: str
    pred: Pred
    properties: tuple[str, ...]
    sockets: bool = False  # only for a model with unix sockets (`Sizes.queue` > 0)


LEMMAS: dict[str, Lemma] = {}


def lemma(*properties: str, sockets: bool = False) -> Callable[[Pred], Pred]:
    """Register a lemma for the proofs of `properties` (`sockets`: only where the model has
    unix sockets); its docstring's first sentence is what it states."""

    def deco(fn: Pred) -> Pred:
        doc = inspect.cleandoc(fn.__doc__ or "")
        if not doc:
            raise ValueError(f"lemma {fn.__name__} needs a docstring")
        LEMMAS[fn.__name__] = Lemma(fn.__name__, " ".join(doc.split()), fn, properties,
                                    sockets)
        return fn

    return deco


def lemmas_for(prop: str, sockets: bool = False) -> list[Lemma]:
    """The lemmas the inductive proof of `prop` uses, in declaration order (those about unix
    sockets only if `sockets`)."""
    return [lem for lem in LEMMAS.values()
            if prop in lem.properties and (sockets or not lem.sockets)]


def _sockets_lemmas_for(prop: str) -> list[Lemma]:
    return lemmas_for(prop, sockets=True)


def proof_model(cfg_or_sizes: Config | Sizes, variant: Variant, **kw: Any) -> CrSymModel:
    """`model.symbolic.symbolic_model` with what its proofs and counterexamples need from the
    specs: the lemmas of this module, and each spec's predicate (a counterexample replayed on
    the explicit model must violate it)."""
    predicates = {name: spec.predicate for name, spec in SPECS.items()}
    socks = (cfg_or_sizes.queue if isinstance(cfg_or_sizes, Sizes) else kw.get("queue", 0)) > 0
    return symbolic_model(cfg_or_sizes, variant, predicates=predicates,
                          lemmas=_sockets_lemmas_for if socks else lemmas_for, **kw)


def _phase_in(s: Any, phases: tuple[int, ...]) -> z3.BoolRef:
    return in_(s["phase"], phases)


# --- leak_detection_sound and the specs that share its argument ------------------------------

_LEAK_SPECS = ("leak_detection_sound", "leak_detection_sound_at_write", "pipe_peers_contained")


@lemma(*_LEAK_SPECS, "leak_detection_complete")
def objhash_empty_before_collect(m: Any, s: Any) -> z3.BoolRef:
    """Before collect (no checkpoint, or just frozen) the objhash holds nothing."""
    hashed = (list(s["h_tab"]) + list(s["h_file"]) + list(s["h_ino"])
              + [h for pair in s["h_tty"] for h in pair] + (list(s["h_sock"]) if m.Q else []))
    return z3.Implies(_phase_in(s, (0, FROZEN)), z3.Not(any_(hashed)))


@lemma(*_LEAK_SPECS, "leak_detection_complete")
def one_master_per_pty(m: Any, s: Any) -> z3.BoolRef:
    """No two live pty master files are on the same pty pair."""
    v = m.view(s)
    out = []
    for f in range(m.NF):
        for g in range(f + 1, m.NF):
            both = z3.And(v.alive_f[f], v.alive_f[g], is_(s["kind"][f], PTMX),
                          is_(s["kind"][g], PTMX))
            out.append(z3.Implies(both, s["obj"][f] != s["obj"][g]))
    return all_(out)


@lemma(*_LEAK_SPECS, "leak_detection_complete", sockets=True)
def two_ends_per_socket_pair(m: Any, s: Any) -> z3.BoolRef:
    """No three live unix socket files are on the same socket pair."""
    v = m.view(s)
    live = [z3.And(v.alive_f[f], is_(s["kind"][f], UNIX)) for f in range(m.NF)]
    out = [z3.Not(z3.And(live[f], live[g], live[h], s["obj"][f] == s["obj"][g],
                         s["obj"][g] == s["obj"][h]))
           for f in range(m.NF) for g in range(f + 1, m.NF) for h in range(g + 1, m.NF)]
    return all_(out)


@lemma(*_LEAK_SPECS)
def hashed_tables_are_the_inside_tables(m: Any, s: Any) -> z3.BoolRef:
    """From collect to the write, the hashed fd tables are exactly those inside tasks hold,
    each with users = users_start - 1 + the inside tasks holding it."""
    v = m.view(s)
    start1 = num(m.v.users_start - 1, m.CW)
    ok = [z3.And(s["h_tab"][x] == v.ins_table[x],
                 z3.Implies(s["h_tab"][x], s["u_tab"][x] == start1 + v.n_in_holders[x]))
          for x in range(m.NT)]
    return z3.Implies(_phase_in(s, (COLLECTED, CHECKED)), all_(ok))


def _hashed_on(m: Any, s: Any, o: int, kinds: tuple[int, ...]) -> list[z3.BoolRef]:
    return [z3.And(s["h_file"][f], in_(s["kind"][f], kinds), is_(s["obj"][f], o))
            for f in range(m.NF)]


def counts_match_inside_references(m: Any, s: Any) -> z3.BoolRef:
    """Every hashed object's users is users_start - 1 plus the references found from inside
    in the current state: fd slots of inside tables for a file, hashed files on it for a
    pipe inode or a tty side (the conjunct of `collected_counts_consistent`)."""
    v = m.view(s)
    start1 = num(m.v.users_start - 1, m.CW)
    out = [z3.Implies(s["h_file"][f], s["u_file"][f] == start1 + v.tin[f])
           for f in range(m.NF)]
    pipes, ptmx, pts = PIPES, (PTMX,), (PTS,)
    for o in range(m.NF):
        if m.v.pipe_ref_users:
            out.append(s["h_ino"][o] == any_(_hashed_on(m, s, o, pipes)))
            out.append(z3.Implies(s["h_ino"][o], s["u_ino"][o] == start1 + v.hashed_on(o, pipes)))
        else:
            out.append(z3.Not(s["h_ino"][o]))
        hm = any_(_hashed_on(m, s, o, ptmx))
        hs = z3.Or(hm, any_(_hashed_on(m, s, o, pts)))
        out.append(s["h_tty"][o][0] == hm)
        out.append(z3.Implies(s["h_tty"][o][0], s["u_tty"][o][0] == start1 + v.hashed_on(o, ptmx)))
        out.append(s["h_tty"][o][1] == hs)
        out.append(z3.Implies(s["h_tty"][o][1], s["u_tty"][o][1]
                              == start1 + v.hashed_on(o, ptmx) + v.hashed_on(o, pts)))
    if m.Q:
        out += _sock_counts(m, s, v, start1)
    return all_(out)


def _sock_counts(m: Any, s: Any, v: Any, start1: z3.ExprRef) -> list[z3.BoolRef]:
    """A socket is hashed when its file is, or the file whose peer it is; its users count
    both (the socket conjunct of `counts_match_inside_references`)."""
    pi = sockets.peer_is(v)
    out = []
    for f in range(m.NF):
        by = [z3.And(s["h_file"][f], is_(s["kind"][f], UNIX))] + [
            z3.And(s["h_file"][g], is_(s["kind"][g], UNIX), pi[g][f])
            for g in range(m.NF) if g != f]
        out.append(s["h_sock"][f] == any_(by))
        out.append(z3.Implies(s["h_sock"][f], s["u_sock"][f] == start1 + cnt(by, m.CW)))
    return out


@lemma(*_LEAK_SPECS)
def collected_counts_consistent(m: Any, s: Any) -> z3.BoolRef:
    """Between collect and the contained check, no outside task holds a hashed fd table, and
    every hashed object's users equals users_start - 1 plus its references from inside now."""
    v = m.view(s)
    shared = any_(z3.And(s["h_tab"][x], v.out_table[x]) for x in range(m.NT))
    return z3.Implies(is_(s["phase"], COLLECTED),
                      z3.And(z3.Not(shared), counts_match_inside_references(m, s)))


@lemma("leak_detection_sound", "pipe_peers_contained")
def checked_objects_not_shared(m: Any, s: Any) -> z3.BoolRef:
    """After a passed contained check, no hashed object (nor the inode of a hashed pipe) was
    referenced from outside at the check, and no outside task holds a hashed fd table."""
    v = m.view(s)
    out = [z3.Not(z3.And(s["h_tab"][x], z3.Or(s["g_tab"][x], v.out_table[x])))
           for x in range(m.NT)]
    out += [z3.Not(z3.And(s["h_file"][f], s["g_file"][f])) for f in range(m.NF)]
    out += [z3.Not(z3.And(s["h_ino"][o], s["g_ino"][o])) for o in range(m.NF)]
    out += [z3.Not(z3.And(s["h_tty"][o][i], s["g_tty"][o][i]))
            for o in range(m.NF) for i in (0, 1)]
    if m.Q:
        out += [z3.Not(z3.And(s["h_sock"][f], s["g_sock"][f])) for f in range(m.NF)]
    for f in range(m.NF):
        pipe = z3.And(s["h_file"][f], in_(s["kind"][f], PIPES))
        out.append(z3.Implies(pipe, z3.Not(sel(s["obj"][f], s["g_ino"]))))
    return z3.Implies(is_(s["phase"], CHECKED), all_(out))


@lemma("leak_detection_sound")
def no_leak_recorded(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, the write recorded no object referenced from outside at
    the check."""
    return z3.Implies(_phase_in(s, (WRITTEN, DONE, RESTARTED)), z3.Not(s["leak"]))


@lemma("pipe_peers_contained")
def no_pipe_leak_recorded(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, the write recorded no pipe inode or tty referenced from
    outside at the check."""
    return z3.Implies(_phase_in(s, (WRITTEN, DONE, RESTARTED)), z3.Not(s["leak_pipe"]))


@lemma("leak_detection_sound_at_write")
def checked_counts_consistent(m: Any, s: Any) -> z3.BoolRef:
    """After a passed contained check, no outside task holds a hashed fd table and every
    hashed object's users still equals users_start - 1 plus its references from inside."""
    v = m.view(s)
    shared = any_(z3.And(s["h_tab"][x], v.out_table[x]) for x in range(m.NT))
    return z3.Implies(is_(s["phase"], CHECKED),
                      z3.And(z3.Not(shared), counts_match_inside_references(m, s)))


@lemma("leak_detection_sound_at_write")
def no_leak_at_write_recorded(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, the write recorded no object that an outside task
    referenced as it was written."""
    return z3.Implies(_phase_in(s, (WRITTEN, DONE, RESTARTED)), z3.Not(s["leak_w"]))


# --- uncheckpointable_refused ------------------------------------------------------------------


@lemma("uncheckpointable_refused")
def no_timerfd_written(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, no container descriptor referred to a timerfd when it
    was written."""
    return z3.Implies(_phase_in(s, (WRITTEN, DONE, RESTARTED)), z3.Not(s["img_timerfd"]))


# --- restore_preserves_fcntl_flags -----------------------------------------------------------


def flags_ok(kind: z3.BitVecRef, flags: z3.BitVecRef) -> z3.BoolRef:
    """The f_flags an open file of `kind` can have (see `flags_wellformed`)."""
    from model.flags import O_ASYNC, O_DIRECT, O_RDONLY, O_RDWR, O_WRONLY
    from model.state import PIPE_R, PIPE_RW, PIPE_W, TIMERFD

    acc = flags & 3
    return z3.And(
        (flags & ~bv(KNOWN_FLAGS, FW)) == 0, acc != 3,
        z3.Implies(is_(kind, PIPE_R), acc == O_RDONLY),
        z3.Implies(is_(kind, PIPE_W), acc == O_WRONLY),
        z3.Implies(is_(kind, PIPE_RW), acc == O_RDWR),
        z3.Implies(in_(kind, (EPOLL, TIMERFD)),
                   z3.And(acc == O_RDWR, (flags & (O_ASYNC | O_DIRECT)) == 0)),
        z3.Implies(in_(kind, (PTMX, PTS)), (flags & O_DIRECT) == 0),
    )


@lemma("restore_preserves_fcntl_flags")
def flags_wellformed(m: Any, s: Any) -> z3.BoolRef:
    """Every file slot's f_flags are a valid access mode plus known status bits, a pipe
    end's access mode matches its kind, epoll and timerfd files are O_RDWR without O_ASYNC or
    O_DIRECT, pty files never have O_DIRECT, and unix sockets are O_RDWR without O_DIRECT."""
    from model.flags import O_DIRECT, O_RDWR

    out = [flags_ok(s["kind"][f], s["flags"][f]) for f in range(m.NF)]
    if m.Q:
        out += [z3.Implies(is_(s["kind"][f], UNIX), z3.And((s["flags"][f] & 3) == O_RDWR,
                                                          (s["flags"][f] & O_DIRECT) == 0))
                for f in range(m.NF)]
    return all_(out)


def _written_ghost_means_error(s: Any, ghost: str) -> z3.BoolRef:
    """Once the image is written, the restart ghost `ghost` implies that restart fails."""
    return z3.Implies(_phase_in(s, (WRITTEN, DONE, RESTARTED)),
                      z3.Implies(s[ghost], s["img_err"]))


@lemma("restore_preserves_fcntl_flags")
def image_restorable(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, a restored descriptor can differ in flags or close-on-exec
    only if restart fails."""
    return _written_ghost_means_error(s, "img_bad")


@lemma("restore_preserves_offsets_and_sharing")
def image_keeps_sharing(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, restart can break the sharing of files or fd tables, or
    an offset, only if it fails."""
    return _written_ghost_means_error(s, "img_share")


@lemma("refcounts_restored")
def image_keeps_counts(m: Any, s: Any) -> z3.BoolRef:
    """Once the image is written, a restored file's f_count can differ from its descriptors
    at the write only if restart fails."""
    return _written_ghost_means_error(s, "img_count")


@lemma("restore_preserves_fcntl_flags", "restore_preserves_offsets_and_sharing",
       "refcounts_restored")
def restart_reports_image(m: Any, s: Any) -> z3.BoolRef:
    """After restart from an untampered image, it failed exactly when the image said it
    would."""
    return z3.Implies(z3.And(is_(s["phase"], RESTARTED), is_(s["tamper"], 0)),
                      s["rst_err"] == s["img_err"])


# --- leak_detection_complete -------------------------------------------------------------------
# The argument why a clean container's checkpoint does not fail: after a clean freeze no
# outside task can reach what the container uses (it holds none of its tables or files, and
# a frozen task makes no new ones), so the objhash collect builds is exactly the container's
# objects, each counted as its inside references plus the objhash's own; while no outside
# file is on a hashed pipe or pty either (`is_clean` at the check), each count then equals
# the kernel's and no step of the checkpoint finds a leak, a late object or an unvisited one.

_RUNNING = (0, FROZEN, COLLECTED, CHECKED, WRITTEN)
_COMPLETE = ("leak_detection_complete",)


@lemma(*_COMPLETE)
def epoll_items_watch_live_files(m: Any, s: Any) -> z3.BoolRef:
    """Until the checkpoint ends, every item of a live eventpoll watches a live file."""
    v = m.view(s)
    out = [z3.Implies(z3.And(v.alive_f[e], is_(s["kind"][e], EPOLL), _watches(m, s, e, f)),
                      v.alive_f[f])
           for e in range(m.NF) for f in range(m.NF)]
    return z3.Implies(_phase_in(s, _RUNNING), all_(out))


def _watches(m: Any, s: Any, e: int, f: int) -> z3.BoolRef:
    """Eventpoll file e has an item on file f (for any descriptor number): one premise per
    pair of files, not per item, so the proof has NF^2 goals to see to, not NF^2 * ND."""
    return any_(s["ep"][e][f][d] for d in range(m.ND))


@lemma(*_COMPLETE)
def clean_container_untouched(m: Any, s: Any) -> z3.BoolRef:
    """From the freeze until the visited check, while `clean` (nothing the container uses
    was seen shared or unsupported), no outside task holds an inside fd table, every item of
    an inside eventpoll watches a file an inside table holds, and no file an inside table
    holds is also an outside task's, a timerfd or owned (F_SETOWN)."""
    v = m.view(s)
    held = v.held_in
    out = [z3.Not(z3.And(v.ins_table[x], v.out_table[x])) for x in range(m.NT)]
    out += [z3.Implies(z3.And(held[e], is_(s["kind"][e], EPOLL), _watches(m, s, e, f)), held[f])
            for e in range(m.NF) for f in range(m.NF)]
    out += [z3.Implies(held[f], z3.Not(z3.Or(v.out_file[f], is_(s["kind"][f], TIMERFD),
                                             s["owner"][f])))
            for f in range(m.NF)]
    if m.Q:
        out += _clean_sockets(m, s, v, held)
    return z3.Implies(z3.And(_phase_in(s, (FROZEN, COLLECTED, CHECKED, WRITTEN)), s["clean"]),
                      all_(out))


def _clean_sockets(m: Any, s: Any, v: Any, held: list[z3.BoolRef]) -> list[z3.BoolRef]:
    """The socket conjuncts of `clean_container_untouched`: a socket an inside table holds
    has no message queued, no outside reference to its pair, and its peer, if any, is held
    by an inside table too; and no file an inside table holds is in flight."""
    r = v.outside_refs["sock"]
    pi = sockets.peer_is(v)
    out = [z3.Implies(z3.And(held[f], is_(s["kind"][f], UNIX)),
                      z3.And(s["qn"][f] == 0, z3.Not(r[f]),
                             all_(z3.Implies(pi[f][g], held[g]) for g in range(m.NF))))
           for f in range(m.NF)]
    out += [z3.Implies(held[f], z3.Not(z3.And(v.alive_f[g], c)))
            for f in range(m.NF) for g in range(m.NF) for c in sockets.in_queue(v, g, f)]
    return out


@lemma(*_COMPLETE)
def clean_objhash_is_the_container(m: Any, s: Any) -> z3.BoolRef:
    """From collect (in subtree mode, the write) until the visited check, while `clean`, the
    objhash holds exactly the inside fd tables and the files they hold, each hashed object's
    users is users_start - 1 plus its references from inside (after the write only where the
    variant checks the counts again), and after the write every hashed object is visited."""
    v = m.view(s)
    held = v.held_in
    start1 = num(m.v.users_start - 1, m.CW)
    same = [s["h_tab"][x] == v.ins_table[x] for x in range(m.NT)]
    same += [s["h_file"][f] == held[f] for f in range(m.NF)]
    tabs = [z3.Implies(s["h_tab"][x], s["u_tab"][x] == start1 + v.n_in_holders[x])
            for x in range(m.NT)]
    counts = all_(tabs + [counts_match_inside_references(m, s)])
    visited = all_([s["v_tab"][x] == s["h_tab"][x] for x in range(m.NT)]
                       + [s["v_file"][f] == s["h_file"][f] for f in range(m.NF)]
                       + [s["v_ino"][o] == s["h_ino"][o] for o in range(m.NF)]
                       + [s["v_tty"][o][i] == s["h_tty"][o][i]
                          for o in range(m.NF) for i in (0, 1)]
                       + ([s["v_sock"][f] == s["h_sock"][f] for f in range(m.NF)]
                          if m.Q else []))
    # after the write only the re-check reads the counts (the write adds no object: with a
    # clean container each is hashed already)
    written = z3.And(visited, counts) if m.v.recheck_after_write else visited
    return z3.Implies(s["clean"], z3.And(
        z3.Implies(_phase_in(s, (COLLECTED, CHECKED, WRITTEN)), all_(same)),
        z3.Implies(_phase_in(s, (COLLECTED, CHECKED)), counts),
        z3.Implies(is_(s["phase"], WRITTEN), written)))
