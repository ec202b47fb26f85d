"""Derived terms of a symbolic state (twin of `model.world`): liveness, reference counts,
outside references, the leak test; never stored, always computed from the state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import z3

from model.state import (
    EPOLL,
    PTMX,
    PTS,
    TIMERFD,
)
from model.symbolic import sockets
from model.symbolic.state import PIPES, State
from model.symbolic.terms import any_, cnt, in_, is_, num, sel

if TYPE_CHECKING:  # the model builds these terms; it is not imported here
    from model.symbolic.system import CrSymModel


class View:
    """Derived terms of one symbolic state (reference counts, liveness, outside refs)."""

    def __init__(self, m: CrSymModel, s: State) -> None:
        self.m, self.s = m, s
        self._counts: dict[tuple, z3.ExprRef] = {}

    # tasks and tables
    @cached_property
    def t_in(self) -> list[z3.BoolRef]:
        return [z3.And(self.s["alive"][t], self.s["inside"][t]) for t in range(self.m.NT)]

    @cached_property
    def t_out(self) -> list[z3.BoolRef]:
        return [z3.And(self.s["alive"][t], z3.Not(self.s["inside"][t]))
                for t in range(self.m.NT)]

    def holds(self, t: int, x: int) -> z3.BoolRef:
        return z3.And(self.s["alive"][t], is_(self.s["table"][t], x))

    @cached_property
    def ins_table(self) -> list[z3.BoolRef]:
        """Tables held by an inside task."""
        s, m = self.s, self.m
        return [any_(z3.And(self.t_in[t], is_(s["table"][t], x)) for t in range(m.NT))
                for x in range(m.NT)]

    @cached_property
    def out_table(self) -> list[z3.BoolRef]:
        s, m = self.s, self.m
        return [any_(z3.And(self.t_out[t], is_(s["table"][t], x)) for t in range(m.NT))
                for x in range(m.NT)]

    @cached_property
    def live_table(self) -> list[z3.BoolRef]:
        """Held by a task or by the objhash (model.world.live_tables)."""
        return [z3.Or(self.ins_table[x], self.out_table[x], self.s["h_tab"][x])
                for x in range(self.m.NT)]

    @cached_property
    def n_in_holders(self) -> list[z3.BitVecRef]:
        s, m = self.s, self.m
        return [cnt((z3.And(self.t_in[t], is_(s["table"][t], x)) for t in range(m.NT)), m.CW)
                for x in range(m.NT)]

    @cached_property
    def table_users(self) -> list[z3.BitVecRef]:
        """files->count: tasks holding the table plus the objhash's grab."""
        s, m = self.s, self.m
        return [cnt([self.holds(t, x) for t in range(m.NT)] + [s["h_tab"][x]], m.CW)
                for x in range(m.NT)]

    # slots and files
    @cached_property
    def slot_is(self) -> list[list[list[z3.BoolRef]]]:
        """slot_is[x][d][f]: descriptor d of table x refers to file f."""
        s, m = self.s, self.m
        return [[[z3.And(s["used"][x][d], is_(s["sfile"][x][d], f)) for f in range(m.NF)]
                 for d in range(m.ND)] for x in range(m.NT)]

    @cached_property
    def alive_f(self) -> list[z3.BoolRef]:
        """A file is alive while a live table refers to it or the objhash holds it (as a
        file or, with sockets, as a socket), or it is in flight in a live socket's queue."""
        s, m = self.s, self.m
        direct = [z3.Or(any_(z3.And(self.live_table[x], self.slot_is[x][d][f])
                             for x in range(m.NT) for d in range(m.ND)), s["h_file"][f])
                  for f in range(m.NF)]
        if not m.Q:
            return direct
        return sockets.carried(self, [z3.Or(direct[f], s["h_sock"][f]) for f in range(m.NF)])

    def skipped(self, f: int) -> z3.BoolRef | None:
        """The skip mutant's scan_fds passes over this file (None: no such mutant)."""
        return is_(self.s["kind"][f], TIMERFD) if self.m.v.skip_uncheckpointable else None

    @cached_property
    def tin_all(self) -> list[z3.ExprRef]:
        """Per file: the descriptors of inside tables that refer to it."""
        m = self.m
        return [cnt([z3.And(self.ins_table[x], self.slot_is[x][d][f])
                     for x in range(m.NT) for d in range(m.ND)], m.CW) for f in range(m.NF)]

    @cached_property
    def tin(self) -> list[z3.ExprRef]:
        """Per file: the descriptors of inside tables the collect counts (one term, shared
        by collect, f_count and the lemmas so that z3 sees them cancel). The skip mutant's
        test is on the file, so it stands outside the count: a step that gives a free slot
        a kind then leaves every other file's count the same term (inside the count, z3
        had to see it slot by slot: over 25 minutes for one case of open at 8 and 8)."""
        m = self.m
        out = []
        for f in range(m.NF):
            sk = self.skipped(f)
            out.append(self.tin_all[f] if sk is None
                       else z3.If(sk, num(0, m.CW), self.tin_all[f]))
        return out

    @cached_property
    def f_count(self) -> list[z3.ExprRef]:
        """file->f_count: descriptors in live tables plus the objhash's grab, written as
        the inside ones (`tin_all`, which is `tin` but in the skip mutant) + the rest."""
        s, m = self.s, self.m
        out = []
        for f in range(m.NF):
            rest = [z3.And(z3.Not(self.ins_table[x]), self.live_table[x], self.slot_is[x][d][f])
                    for x in range(m.NT) for d in range(m.ND)]
            total = self.tin_all[f] + cnt(rest + [s["h_file"][f]], m.CW)
            # the variant that compares without in-flight references sees them nowhere
            counted = m.Q and m.v.inflight_counted
            out.append(total + sockets.in_flight(self, f) if counted else total)
        return out

    def hashed_on(self, o: int, kinds: tuple[int, ...]) -> z3.ExprRef:
        """How many hashed files of `kinds` are on object o (cached: one term)."""
        key = ("h", o, kinds)
        if key not in self._counts:
            s = self.s
            self._counts[key] = cnt([z3.And(s["h_file"][f], in_(s["kind"][f], kinds),
                                            is_(s["obj"][f], o)) for f in range(self.m.NF)],
                                    self.m.CW)
        return self._counts[key]

    def unhashed_on(self, o: int, kinds: tuple[int, ...]) -> z3.ExprRef:
        """How many live files of `kinds` the objhash does not hold are on object o."""
        key = ("u", o, kinds)
        if key not in self._counts:
            s = self.s
            self._counts[key] = cnt([z3.And(z3.Not(s["h_file"][f]), self.alive_f[f],
                                            in_(s["kind"][f], kinds), is_(s["obj"][f], o))
                                     for f in range(self.m.NF)], self.m.CW)
        return self._counts[key]

    @cached_property
    def out_file(self) -> list[z3.BoolRef]:
        """Files an outside task holds: through its tables, and in flight in the queues of
        the sockets it holds (model.world.held_files)."""
        m = self.m
        direct = [any_(z3.And(self.out_table[x], self.slot_is[x][d][f])
                       for x in range(m.NT) for d in range(m.ND)) for f in range(m.NF)]
        return sockets.carried(self, direct) if m.Q else direct

    def kind_in(self, f: int, kinds: Iterable[int]) -> z3.BoolRef:
        return in_(self.s["kind"][f], kinds)

    def on(self, f: int, o: int) -> z3.BoolRef:
        """File f is on object o (a pipe inode or pty pair, or a socket pair)."""
        return z3.And(self.kind_in(f, self.m.obj_kinds), is_(self.s["obj"][f], o))

    @cached_property
    def obj_alive(self) -> list[z3.BoolRef]:
        s, m = self.s, self.m
        return [z3.Or(any_(z3.And(self.alive_f[f], self.on(f, o)) for f in range(m.NF)),
                      s["h_ino"][o], s["h_tty"][o][0], s["h_tty"][o][1])
                for o in range(m.NF)]

    @cached_property
    def master(self) -> list[z3.BoolRef]:
        """A pty master is open on pair o."""
        s, m = self.s, self.m
        return [any_(z3.And(self.alive_f[f], is_(s["kind"][f], PTMX), is_(s["obj"][f], o))
                     for f in range(m.NF)) for o in range(m.NF)]

    def files_on(self, o: int, kinds: Iterable[int], extra: Callable[[int], z3.BoolRef]
                 ) -> list[z3.BoolRef]:
        s = self.s
        kinds = tuple(kinds)
        return [z3.And(extra(f), in_(s["kind"][f], kinds), is_(s["obj"][f], o))
                for f in range(self.m.NF)]

    # outside references (model.world.outside_refs)
    @cached_property
    def outside_refs(self) -> dict[str, Any]:
        m = self.m
        ino = [any_(self.files_on(o, PIPES, lambda f: self.out_file[f])) for o in range(m.NF)]
        tty = [any_(self.files_on(o, (PTMX, PTS), lambda f: self.out_file[f]))
               for o in range(m.NF)]
        out = {"tab": list(self.out_table), "file": list(self.out_file), "ino": ino,
               "tty": [[tty[o], tty[o]] for o in range(m.NF)]}
        if m.Q:
            out["sock"] = sockets.outside_socks(self)
        return out

    @cached_property
    def held_in(self) -> list[z3.BoolRef]:
        """Per file: some descriptor of an inside task's table refers to it."""
        m = self.m
        return [any_(z3.And(self.ins_table[x], self.slot_is[x][d][f])
                     for x in range(m.NT) for d in range(m.ND)) for f in range(m.NF)]

    @cached_property
    def is_clean(self) -> z3.BoolRef:
        """model.checkpoint.is_clean: nothing the container uses (its tables, the files it
        holds and their epolls' targets, the objects they are on) is referenced from outside,
        and no file it holds is unsupported (a timerfd, or one with an owner)."""
        s, m = self.s, self.m
        held = self.held_in
        used = [z3.Or(held[f], any_(z3.And(held[e], is_(s["kind"][e], EPOLL), s["ep"][e][f][d])
                                    for e in range(m.NF) for d in range(m.ND)))
                for f in range(m.NF)]
        r = self.outside_refs
        shared = [z3.And(self.ins_table[x], r["tab"][x]) for x in range(m.NT)]
        for f in range(m.NF):
            obj_out = z3.Or(z3.And(self.kind_in(f, PIPES), sel(s["obj"][f], r["ino"])),
                            z3.And(self.kind_in(f, (PTMX, PTS)),
                                   sel(s["obj"][f], [t[0] for t in r["tty"]])))
            shared.append(z3.And(used[f], z3.Or(r["file"][f], obj_out)))
        unsupported = [z3.And(held[f], z3.Or(is_(s["kind"][f], TIMERFD), s["owner"][f]))
                       for f in range(m.NF)]
        if m.Q:
            unsupported += sockets.unclean(self, held, used)
        return z3.Not(any_(shared + unsupported))

    # the contained check (model.checkpoint._leaks)
    def ref_users(self) -> dict[str, Any]:
        """ref_users of each object (live files on an object counted as hashed + unhashed:
        the objhash only holds live files)."""
        s, m = self.s, self.m
        one, zero = num(1, m.CW), num(0, m.CW)
        ino = [self.hashed_on(o, PIPES) + self.unhashed_on(o, PIPES) + one
               for o in range(m.NF)]
        tty = []
        for o in range(m.NF):
            hm = z3.If(s["h_tty"][o][0], one, zero)
            hs = z3.If(s["h_tty"][o][1], one, zero)
            link = z3.If(self.master[o], one, zero)
            tty.append([self.hashed_on(o, (PTMX,)) + self.unhashed_on(o, (PTMX,)) + hm,
                        self.hashed_on(o, (PTS,)) + self.unhashed_on(o, (PTS,)) + link + hs])
        out = {"tab": self.table_users, "file": self.f_count, "ino": ino, "tty": tty}
        if m.Q:
            out["sock"] = sockets.sk_refcnt(self)
        return out

    @cached_property
    def leaks(self) -> z3.BoolRef:
        """Some hashed object whose type has ref_users has ref_users != users."""
        s, m = self.s, self.m
        r = self.ref_users()
        out = [z3.And(s["h_tab"][x], r["tab"][x] != s["u_tab"][x]) for x in range(m.NT)]
        out += [z3.And(s["h_file"][f], r["file"][f] != s["u_file"][f]) for f in range(m.NF)]
        if m.v.pipe_ref_users:
            out += [z3.And(s["h_ino"][o], r["ino"][o] != s["u_ino"][o]) for o in range(m.NF)]
        out += [z3.And(s["h_tty"][o][i], r["tty"][o][i] != s["u_tty"][o][i])
                for o in range(m.NF) for i in (0, 1)]
        if m.Q:
            out += sockets.sock_leaks(self)
        return any_(out)

    # what a task sees through its table
    def task_slots(self, t: z3.BitVecRef) -> tuple[list, list, list]:
        s, m = self.s, self.m
        x = sel(t, s["table"])
        used = [sel(x, [s["used"][xx][d] for xx in range(m.NT)]) for d in range(m.ND)]
        files = [sel(x, [s["sfile"][xx][d] for xx in range(m.NT)]) for d in range(m.ND)]
        clo = [sel(x, [s["cloexec"][xx][d] for xx in range(m.NT)]) for d in range(m.ND)]
        return used, files, clo

    @cached_property
    def n_inside(self) -> z3.BitVecRef:
        return cnt(self.t_in, 8)

    @cached_property
    def n_outside(self) -> z3.BitVecRef:
        return cnt(self.t_out, 8)
