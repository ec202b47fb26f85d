"""The environment's system calls as symbolic transitions (twin of `model.env`), with
the proof cases and hints that make their inductive steps fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import z3

from model.flags import (
    O_ASYNC,
    O_DIRECT,
    O_LARGEFILE,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    SETFL_MASK,
)
from model.state import (
    EPOLL,
    PIPE_R,
    PIPE_RW,
    PIPE_W,
    PTMX,
    PTS,
    REG,
    TIMERFD,
)
from model.symbolic import sockets
from model.symbolic.state import (
    CAN_ODIRECT,
    HAS_FASYNC,
    PIPES,
    REOPENABLE,
    State,
    Transition,
)
from model.symbolic.terms import (
    FALSE,
    FW,
    KW,
    TRUE,
    all_,
    any_,
    bv,
    gt,
    in_,
    is_,
    lowest,
    lt,
    num,
    second,
    sel,
)

if TYPE_CHECKING:  # the model builds these terms; it is not imported here
    from model.symbolic.system import CrSymModel


class Env:
    """The environment actions from one state, sharing the parameters and derived terms."""

    def __init__(self, m: CrSymModel, s: State, p: dict[str, z3.ExprRef],
                 table: int | None = None, phase: int | None = None,
                 new_table: int | None = None, clean: bool | None = None) -> None:
        """`table`/`phase`/`new_table`/`clean` fix the acting task's fd table / the phase /
        the slot a new table takes / the completeness ghost (a proof case): the terms are
        then built with them as constants, and the step hints what the case pins down
        (`case_hints`)."""
        self.m, self.s, self.p = m, s, p
        self.new_table = new_table
        self.v = m.view(s)
        NT = m.NT
        t = p["t"]
        self.case = TRUE
        if table is None:
            self.X: z3.BitVecRef | int = sel(t, s["table"])
            self.U, self.Fi, self.C = self.v.task_slots(t)
        else:
            self.X = table
            self.case = is_(sel(t, s["table"]), table)
            self.U, self.Fi, self.C = s["used"][table], s["sfile"][table], s["cloexec"][table]
        if phase is not None:
            self.case = z3.And(self.case, is_(s["phase"], phase))
        if clean is not None:
            self.case = z3.And(self.case, s["clean"] == z3.BoolVal(clean))
        self.case_hints = self._case_hints(table, phase, clean)
        self.racing = phase not in (None, 0)  # a case between the checkpoint's phases
        fd, fd2 = p["fd"], p["fd2"]
        self.uF, self.fF, self.cF = sel(fd, self.U), sel(fd, self.Fi), sel(fd, self.C)
        self.u2, self.f2, self.c2 = sel(fd2, self.U), sel(fd2, self.Fi), sel(fd2, self.C)
        self.free = [z3.Not(u) for u in self.U]
        self.has_free, self.nfd = lowest(self.free, m.wD)
        self.has_free2, self.nfd2 = lowest(second(self.free), m.wD)
        ffree = [z3.Not(a) for a in self.v.alive_f]
        has_file, nf = lowest(ffree, m.wF)
        has_file2, nf2 = lowest(second(ffree), m.wF)
        has_obj, no = lowest([z3.Not(a) for a in self.v.obj_alive], m.wF)
        # the new files' (and pty pair's) slots are parameters the guard ties to the lowest
        # free ones: the post-state then says "file nf" with a constant, not with the whole
        # liveness term the lowest free slot is (which every count over files repeated)
        self.nf, self.nf2, self.no = p["nf"], p["nf2"], p["no"]
        self.defs = ((self.nf, nf), (self.nf2, nf2), (self.no, no))
        self.has_file = z3.And(has_file, self.nf == nf)
        self.has_file2 = z3.And(has_file2, self.nf == nf, self.nf2 == nf2)
        self.has_obj = z3.And(has_obj, self.no == no)
        ph = s["phase"]
        self.ph0 = is_(ph, 0)
        ckx = in_(ph, m.dom.race_phases)
        if m.dom.bounded:
            self.ph0 = z3.And(self.ph0, z3.ULT(s["steps"], m.dom.env_steps))
            ckx = z3.And(ckx, z3.ULT(s["ext"], m.dom.checkpoint_steps))
        inside_t, alive_t, frozen_t = (sel(t, s["inside"]), sel(t, s["alive"]),
                                       sel(t, s["frozen"]))
        self.inside_t = inside_t
        t_ok = lt(t, NT)
        self.can = z3.And(t_ok, alive_t, z3.Not(frozen_t),
                          z3.Or(self.ph0, z3.And(ckx, z3.Not(inside_t))))
        self.fd_ok, self.fd2_ok = m.in_domain("fd", fd), m.in_domain("fd", fd2)

    def _case_hints(self, table: int | None, phase: int | None, clean: bool | None
                    ) -> tuple[z3.BoolRef, ...]:
        """What a proof case pins down, as facts that pin terms to values (the engine
        rewrites the query with them, `checker.symbolic.rewriter`): the phase and `clean`,
        and during a checkpoint that the acting (outside) task's table is no inside task's
        (the leak lemmas say so, the completeness lemmas while `clean`; where they do not,
        the engine cannot prove the hint and leaves it out). The last removes that table's
        slots from every count over inside tables, before and after the step alike, so the
        counts are the same terms."""
        s, out = self.s, []
        if phase is not None:
            out.append(is_(s["phase"], phase))
        if clean is not None:
            out.append(s["clean"] == z3.BoolVal(clean))
        if table is not None and phase not in (None, 0) and clean is not False:
            out.append(z3.Not(self.v.ins_table[table]))
        return tuple(out)

    # helpers building the post-state
    def base(self) -> State:
        post = dict(self.s)
        if self.m.dom.bounded:
            one = bv(1, 8)
            post["steps"] = z3.If(self.ph0, self.s["steps"] + one, self.s["steps"])
            post["ext"] = z3.If(self.ph0, self.s["ext"], self.s["ext"] + one)
        return post

    def fam(self, name: str, guard: z3.BoolRef, post: State, release: bool = False) -> Transition:
        if release:
            post = cleanup(self.m, self.s, post)
        return Transition(name, z3.And(self.case, self.can, guard), post, self.p,
                          self.case_hints, self.defs)

    def set_slots(self, post: State, X: z3.BitVecRef | int, updates: list[tuple]) -> None:
        """updates: (fd term, used, file, cloexec) written into table X in order."""
        m = self.m
        used = [list(r) for r in post["used"]]
        sf = [list(r) for r in post["sfile"]]
        cl = [list(r) for r in post["cloexec"]]
        for x in range(m.NT):
            for d in range(m.ND):
                for fd, u, f, c in updates:
                    # fold what is known in Python, so untouched slots keep their terms
                    if (isinstance(fd, int) and fd != d) or (isinstance(X, int) and X != x):
                        continue
                    hits = ([] if isinstance(X, int) else [is_(X, x)]) + (
                        [] if isinstance(fd, int) else [is_(fd, d)])
                    if not hits:
                        used[x][d], sf[x][d], cl[x][d] = u, f, c
                        continue
                    hit = all_(hits)
                    used[x][d] = z3.If(hit, u, used[x][d])
                    sf[x][d] = z3.If(hit, f, sf[x][d])
                    cl[x][d] = z3.If(hit, c, cl[x][d])
        post["used"], post["sfile"], post["cloexec"] = used, sf, cl

    def set_file(self, post: State, f: z3.BitVecRef, **attrs: Any) -> None:
        for name, val in attrs.items():
            post[name] = [z3.If(is_(f, i), val, post[name][i]) for i in range(self.m.NF)]

    def new_file(self, post: State, f: z3.BitVecRef, kind: int, flags: Any, path: Any = None,
                 obj: Any = None) -> None:
        m = self.m
        self.set_file(post, f, kind=bv(kind, KW), flags=flags if not isinstance(flags, int)
                      else bv(flags, FW), path=path if path is not None else bv(0, m.wP),
                      obj=obj if obj is not None else bv(0, m.wF), pos=bv(0, m.wO),
                      owner=FALSE)
        if m.Q:  # a new file has an empty queue and no pending error
            self.set_file(post, f, qn=bv(0, m.wQ), sk_err=FALSE)

    def fattr(self, name: str, f: z3.BitVecRef) -> Any:
        return sel(f, self.s[name])

    # --- descriptors -----------------------------------------------------------------------

    def open(self) -> Transition:
        m, p = self.m, self.p
        acc, fl = p["acc"], p["oflags"]
        acc20 = z3.ZeroExt(FW - 2, acc)
        dom = z3.And(m.in_domain("access_modes", acc), m.in_domain("open_flags", fl),
                     m.in_domain("open_cloexec", p["cl"]), m.in_domain("paths", p["path"]))
        post = self.base()
        self.new_file(post, self.nf, REG, acc20 | fl | bv(O_LARGEFILE, FW), path=p["path"])
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, p["cl"])])
        return self.fam("open", z3.And(dom, self.has_free, self.has_file), post)

    def close(self) -> Transition:
        post = self.base()
        self.set_slots(post, self.X, [(self.p["fd"], FALSE, bv(0, self.m.wF), FALSE)])
        return self.fam("close", z3.And(self.fd_ok, self.uF), post, release=True)

    def dup(self) -> Transition:
        post = self.base()
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.fF, FALSE)])
        tr = self.fam("dup", z3.And(self.fd_ok, self.uF, self.has_free), post)
        return tr._replace(hints=tr.hints + self.alive_hints(tr.post))

    def dup2(self) -> Transition:
        p = self.p
        same = z3.And(self.u2, self.f2 == self.fF, z3.Not(self.c2))  # nothing would change
        post = self.base()
        self.set_slots(post, self.X, [(p["fd2"], TRUE, self.fF, FALSE)])
        g = z3.And(self.fd_ok, self.fd2_ok, self.uF, p["fd"] != p["fd2"], z3.Not(same))
        return self.fam("dup2", g, post, release=True)

    def setfl(self) -> Transition:
        m, p = self.m, self.p
        f, arg = self.fF, p["arg"]
        kind, old = self.fattr("kind", f), self.fattr("flags", f)
        code, new = setfl_term(kind, old, arg, m.has_fasync)
        post = self.base()
        # tty_fasync() turning O_ASYNC on for a pty end makes the caller the file's owner
        owned = z3.Or(self.fattr("owner", f),
                      z3.And(in_(kind, (PTMX, PTS)), (new & ~old & O_ASYNC) != 0))
        self.set_file(post, f, flags=new, owner=owned)
        # tty_fasync() on a hung-up pty slave (no master left): ENOTTY
        enotty = z3.And(is_(kind, PTS), ((arg ^ old) & O_ASYNC) != 0,
                        z3.Not(sel(self.fattr("obj", f), self.v.master)))
        g = z3.And(self.fd_ok, self.uF, m.in_domain("setfl_flags", arg), z3.Not(code),
                   z3.Not(enotty), new != old)
        return self.fam("setfl", g, post)

    def setfd(self) -> Transition:
        p = self.p
        post = self.base()
        self.set_slots(post, self.X, [(p["fd"], TRUE, self.fF, p["cl"])])
        # only FD_CLOEXEC changes: the slot stays used and on its file, as the same terms,
        # so that whatever reads only those (every leak lemma) is plainly unchanged
        post["used"], post["sfile"] = self.s["used"], self.s["sfile"]
        return self.fam("setfd", z3.And(self.fd_ok, self.uF, p["cl"] != self.cF), post)

    def setown(self) -> Transition:
        post = self.base()
        self.set_file(post, self.fF, owner=TRUE)
        g = z3.And(self.fd_ok, self.uF, z3.Not(self.fattr("owner", self.fF)))
        return self.fam("setown", g, post)

    def lseek(self) -> Transition:
        m, p = self.m, self.p
        f = self.fF
        post = self.base()
        self.set_file(post, f, pos=p["pos"])
        pos_ok = m.in_domain("offsets", p["pos"])
        g = z3.And(self.fd_ok, self.uF, is_(self.fattr("kind", f), REG), pos_ok,
                   p["pos"] != self.fattr("pos", f))
        return self.fam("lseek", g, post)

    # --- tasks -----------------------------------------------------------------------------

    def _child_ok(self) -> z3.BoolRef:
        m, ch = self.m, self.p["ch_in"]
        n_in, n_out = self.v.n_inside, self.v.n_outside
        room_in = z3.ULT(n_in, m.NI)
        room_out = z3.ULT(n_out, m.NO)
        # inside tasks make inside children; nothing enters the container once frozen
        return z3.And(z3.Or(self.ph0, z3.Not(ch)),
                      z3.If(self.inside_t, z3.And(ch, room_in),
                            z3.If(ch, room_in, room_out)))

    def _new_task(self, post: State, table: z3.BitVecRef) -> z3.BoolRef:
        m, s = self.m, self.s
        ok, nt = lowest([z3.Not(a) for a in s["alive"]], m.wT)
        post["alive"] = [z3.If(is_(nt, i), TRUE, s["alive"][i]) for i in range(m.NT)]
        post["inside"] = [z3.If(is_(nt, i), self.p["ch_in"], s["inside"][i])
                          for i in range(m.NT)]
        post["frozen"] = [z3.If(is_(nt, i), FALSE, s["frozen"][i]) for i in range(m.NT)]
        post["table"] = [z3.If(is_(nt, i), table, s["table"][i]) for i in range(m.NT)]
        return ok

    def _copy_table(self, post: State, clear_cloexec: bool) -> tuple[z3.BoolRef, z3.BitVecRef]:
        """A new table slot holding a copy of the task's table (close-on-exec descriptors
        dropped for exec)."""
        m = self.m
        ok, nx = lowest([z3.Not(a) for a in self.v.live_table], m.wT)
        self.copy_case = TRUE
        if self.new_table is not None:  # a proof case: the lowest free slot is this one
            self.copy_case = z3.And(ok, is_(nx, self.new_table))
            nx = bv(self.new_table, m.wT)
        used = [list(r) for r in post["used"]]
        sf = [list(r) for r in post["sfile"]]
        cl = [list(r) for r in post["cloexec"]]
        for x in range(m.NT):
            if self.new_table is not None and x != self.new_table:
                continue
            hit = is_(nx, x) if self.new_table is None else TRUE
            for d in range(m.ND):
                u = z3.And(self.U[d], z3.Not(self.C[d])) if clear_cloexec else self.U[d]
                used[x][d] = z3.If(hit, u, used[x][d])
                sf[x][d] = z3.If(hit, z3.If(u, self.Fi[d], bv(0, m.wF)), sf[x][d])
                cl[x][d] = z3.If(hit, z3.And(u, self.C[d]), cl[x][d])
        post["used"], post["sfile"], post["cloexec"] = used, sf, cl
        return ok, nx

    def frame_hints(self, post: State, child_in: z3.BoolRef) -> tuple[z3.BoolRef, ...]:
        """When neither the acting task nor a new task is inside, every fd table is held by
        the same inside tasks after the step as before: said per table, so that the solver
        sees, by congruence, that the counts summed over inside tables are unchanged (the
        sums of the leak lemmas are otherwise a hard arithmetic problem: minutes a query
        at 8 descriptors and 8 files)."""
        v0, v1 = self.v, self.m.view(post)
        if self.racing:  # the acting task and a child are outside: pins, for the rewriting
            out = [v1.ins_table[x] == v0.ins_table[x] for x in range(self.m.NT)]
            return tuple(out + [v1.n_in_holders[x] == v0.n_in_holders[x]
                                for x in range(self.m.NT)])
        quiet = z3.And(z3.Not(self.inside_t), z3.Not(child_in))
        return tuple(z3.Implies(quiet, z3.And(v1.ins_table[x] == v0.ins_table[x],
                                              v1.n_in_holders[x] == v0.n_in_holders[x]))
                     for x in range(self.m.NT))

    def alive_hints(self, post: State) -> tuple[z3.BoolRef, ...]:
        """Dup, fork and clone_files make no file live or dead (a new descriptor or a
        copied table refers to files the acting task's table holds already): said per file,
        so that whatever reads liveness (the epoll and pty lemmas) is, rewritten, the same
        term before and after the step. Between the checkpoint's phases the acting task is
        outside, and so is a child: no file or table other than a new table becomes an
        outside task's either."""
        v0, v1 = self.v, self.m.view(post)
        out = [v1.alive_f[f] == v0.alive_f[f] for f in range(self.m.NF)]
        if self.racing:  # and an outside task's new task reaches no more than it did
            out += [v1.out_file[f] == v0.out_file[f] for f in range(self.m.NF)]
            out += [v1.out_table[x] == v0.out_table[x] for x in range(self.m.NT)
                    if x != self.new_table]
        return tuple(out)

    def fork(self) -> Transition:
        post = self.base()
        ok_x, nx = self._copy_table(post, clear_cloexec=False)
        self.case = z3.And(self.case, self.copy_case)  # ok_x holds in every fork
        ok_t = self._new_task(post, nx)
        tr = self.fam("fork", z3.And(self._child_ok(), ok_x, ok_t), post)
        free = () if self.new_table is None else (z3.Not(self.v.ins_table[self.new_table]),)
        return tr._replace(hints=tr.hints + free + self.frame_hints(tr.post, self.p["ch_in"])
                           + self.alive_hints(tr.post))

    def clone_files(self) -> Transition:
        post = self.base()
        ok_t = self._new_task(post, self.X)
        tr = self.fam("clone_files", z3.And(self._child_ok(), ok_t), post)
        return tr._replace(hints=tr.hints + self.frame_hints(tr.post, self.p["ch_in"])
                           + self.alive_hints(tr.post))

    def exec(self) -> Transition:
        """A task's exec: with its table shared it gets a copy in a free slot (close-on-exec
        descriptors dropped), else its table loses those descriptors. Proof case
        `new_table` -1: the unshared exec; y: the shared exec into slot y."""
        m, s, t = self.m, self.s, self.p["t"]
        shared = gt(sel(self.X, self.v.table_users), num(1, m.CW))
        any_cl = any_(z3.And(self.U[d], self.C[d]) for d in range(m.ND))
        unshared = self.base()
        self.set_slots(unshared, self.X, [(d, z3.And(self.U[d], z3.Not(self.C[d])),
                                           z3.If(z3.And(self.U[d], z3.Not(self.C[d])),
                                                 self.Fi[d], bv(0, m.wF)), FALSE)
                                          for d in range(m.ND)])
        if self.new_table == -1:  # a proof case: the unshared exec only
            self.case = z3.And(self.case, z3.Not(shared))
            tr = self.fam("exec", any_cl, unshared, release=True)
            return tr._replace(hints=tr.hints + self.frame_hints(tr.post, FALSE))
        post = self.base()
        ok_x, nx = self._copy_table(post, clear_cloexec=True)  # used if shared
        out = self.base()
        out["table"] = [z3.If(z3.And(shared, is_(t, i)), nx, s["table"][i])
                        for i in range(m.NT)]
        if self.new_table is not None:  # a proof case: the shared exec into this slot
            self.case = z3.And(self.case, shared, self.copy_case)
            for k in ("used", "sfile", "cloexec", "table"):
                out[k] = post[k] if k != "table" else [z3.If(is_(t, i), nx, s["table"][i])
                                                        for i in range(m.NT)]
            tr = self.fam("exec", ok_x, out, release=True)
            free = (z3.Not(self.v.ins_table[self.new_table]),)
            return tr._replace(hints=tr.hints + free + self.frame_hints(tr.post, FALSE))
        for k in ("used", "sfile", "cloexec"):
            out[k] = [[z3.If(shared, post[k][x][d], unshared[k][x][d]) for d in range(m.ND)]
                      for x in range(m.NT)]
        g = z3.And(z3.Or(shared, any_cl), z3.Or(z3.Not(shared), ok_x))
        tr = self.fam("exec", g, out, release=True)
        return tr._replace(hints=tr.hints + self.frame_hints(tr.post, FALSE))

    def exit(self) -> Transition:
        m, s, t = self.m, self.s, self.p["t"]
        post = self.base()
        for k in ("alive", "inside", "frozen", "table"):
            old = s[k]
            # compaction: tasks after t move down one slot (the explicit model's order)
            nxt = [old[i + 1] for i in range(m.NT - 1)] + [FALSE if k != "table"
                                                           else bv(0, m.wT)]
            post[k] = [z3.If(z3.UGT(t, i), old[i], nxt[i]) for i in range(m.NT)]
        tr = self.fam("exit", TRUE, post, release=True)
        return tr._replace(hints=tr.hints + self.frame_hints(tr.post, FALSE))

    # --- objects ---------------------------------------------------------------------------

    def reopen(self) -> Transition:
        m, s, p = self.m, self.s, self.p
        t2, fd2, acc = p["t2"], p["fd2"], p["acc"]
        U2, F2, _ = self.v.task_slots(t2)
        used2, g = sel(fd2, U2), sel(fd2, F2)
        gk, gobj = self.fattr("kind", g), self.fattr("obj", g)
        acc20 = z3.ZeroExt(FW - 2, acc)
        flags = acc20 | bv(O_LARGEFILE, FW)
        pipe_kind = z3.If(is_(acc, O_RDONLY), bv(PIPE_R, KW),
                          z3.If(is_(acc, O_WRONLY), bv(PIPE_W, KW), bv(PIPE_RW, KW)))
        is_pipe = in_(gk, PIPES)
        kind = z3.If(is_pipe, pipe_kind, gk)
        obj = z3.If(is_(gk, PTMX), self.no, gobj)
        path = z3.If(is_(gk, REG), self.fattr("path", g), bv(0, m.wP))
        post = self.base()
        self.set_file(post, self.nf, kind=kind, flags=flags, path=path, obj=obj,
                      pos=bv(0, m.wO), owner=FALSE)
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, FALSE)])
        t2_ok = m.in_domain("task", t2)
        master = sel(gobj, self.v.master)
        guard = z3.And(t2_ok, sel(t2, s["alive"]), self.fd2_ok, used2, in_(gk, REOPENABLE),
                       m.in_domain("access_modes", acc), self.has_free, self.has_file,
                       z3.Implies(is_(gk, PTS), master),  # a hung-up slave: EIO
                       z3.Implies(is_(gk, PTMX), self.has_obj))
        return self.fam("reopen", guard, post)

    def _pair(self, name: str, k1: int, fl1: int, k2: int, fl2: int, with_obj: bool
              ) -> Transition:
        post = self.base()
        obj = self.no if with_obj else None
        self.new_file(post, self.nf, k1, fl1, obj=obj)
        self.new_file(post, self.nf2, k2, fl2, obj=obj)
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, FALSE),
                                      (self.nfd2, TRUE, self.nf2, FALSE)])
        g = z3.And(self.has_free2, self.has_file2, self.has_obj if with_obj else TRUE)
        return self.fam(name, g, post)

    def pipe(self) -> Transition:
        return self._pair("pipe", PIPE_R, O_RDONLY, PIPE_W, O_WRONLY, True)

    def openpty(self) -> Transition:
        return self._pair("openpty", PTMX, O_RDWR | O_LARGEFILE, PTS, O_RDWR, True)

    def _single(self, name: str, kind: int) -> Transition:
        m = self.m
        post = self.base()
        self.new_file(post, self.nf, kind, O_RDWR)
        if kind == EPOLL:  # a fresh interest list
            post["ep"] = [[[z3.And(z3.Not(is_(self.nf, e)), post["ep"][e][tf][d])
                            for d in range(m.ND)] for tf in range(m.NF)] for e in range(m.NF)]
        self.set_slots(post, self.X, [(self.nfd, TRUE, self.nf, FALSE)])
        return self.fam(name, z3.And(self.has_free, self.has_file), post)

    def epoll_create(self) -> Transition:
        return self._single("epoll_create", EPOLL)

    def timerfd(self) -> Transition:
        return self._single("timerfd", TIMERFD)

    def _ep_item(self) -> tuple[z3.BitVecRef, z3.BitVecRef, z3.BoolRef]:
        e, tf = self.fF, self.f2
        item = sel(e, [sel(tf, [sel(self.p["fd2"], self.s["ep"][ee][tt])
                                for tt in range(self.m.NF)]) for ee in range(self.m.NF)])
        return e, tf, item

    def _set_item(self, post: State, e: z3.BitVecRef, tf: z3.BitVecRef, val: z3.BoolRef
                  ) -> None:
        m, fd2 = self.m, self.p["fd2"]
        post["ep"] = [[[z3.If(z3.And(is_(e, ee), is_(tf, tt), is_(fd2, d)), val,
                              post["ep"][ee][tt][d]) for d in range(m.ND)]
                       for tt in range(m.NF)] for ee in range(m.NF)]

    def epoll_add(self) -> Transition:
        e, tf, item = self._ep_item()
        ek, tk = self.fattr("kind", e), self.fattr("kind", tf)
        loop = z3.And(is_(tk, EPOLL), sel(tf, [sel(e, row) for row in self.m_watch()]))
        post = self.base()
        self._set_item(post, e, tf, TRUE)
        g = z3.And(self.fd_ok, self.fd2_ok, self.uF, self.u2, self.p["fd"] != self.p["fd2"],
                   is_(ek, EPOLL), in_(tk, self.m.can_poll), e != tf, z3.Not(item),
                   z3.Not(loop))
        return self.fam("epoll_add", g, post)

    def m_watch(self) -> list[list[z3.BoolRef]]:
        """watch[i][j]: epoll file i watches file j, directly or through nested epolls
        (model.env._watches), as a transitive closure by repeated squaring."""
        m, s = self.m, self.s
        n = m.NF
        r = [[z3.And(is_(s["kind"][i], EPOLL), any_(s["ep"][i][j][d] for d in range(m.ND)))
              for j in range(n)] for i in range(n)]
        length = 1
        while length < n:
            r = [[z3.Or(r[i][j], any_(z3.And(r[i][k], r[k][j]) for k in range(n)))
                  for j in range(n)] for i in range(n)]
            length *= 2
        return r

    def epoll_del(self) -> Transition:
        e, tf, item = self._ep_item()
        post = self.base()
        self._set_item(post, e, tf, FALSE)
        g = z3.And(self.fd_ok, self.fd2_ok, self.uF, self.u2, is_(self.fattr("kind", e), EPOLL),
                   in_(self.fattr("kind", tf), self.m.can_poll), e != tf, item)
        return self.fam("epoll_del", g, post)


def setfl_term(kind: z3.BitVecRef, flags: z3.BitVecRef, arg: z3.BitVecRef,
               fasync: tuple[int, ...] = HAS_FASYNC) -> tuple[z3.BoolRef, z3.BitVecRef]:
    """model.env.setfl_file: (EINVAL?, flags after); `fasync`: the kinds with ->fasync."""
    einval = z3.And((arg & O_DIRECT) != 0, z3.Not(in_(kind, CAN_ODIRECT)))
    toggle = z3.And(((arg ^ flags) & O_ASYNC) != 0, in_(kind, fasync))
    f1 = z3.If(toggle, flags ^ O_ASYNC, flags)
    return einval, (arg & SETFL_MASK) | (f1 & ~bv(SETFL_MASK, FW))


def cleanup(m: CrSymModel, pre: State, post: State) -> State:
    """After a release (model.env._release): epoll items of dead targets and ghost entries
    of dead objects go (model.world.normalize drops them when it renumbers), and the release
    of a pty master hangs up its slave, which clears O_ASYNC on every file open on it."""
    v, v0 = m.view(post), m.view(pre)
    out = dict(post)
    died = [any_(z3.And(v0.alive_f[f], z3.Not(v.alive_f[f]), is_(pre["kind"][f], PTMX),
                        is_(pre["obj"][f], o)) for f in range(m.NF)) for o in range(m.NF)]
    out["flags"] = [z3.If(z3.And(is_(post["kind"][g], PTS), sel(post["obj"][g], died)),
                          post["flags"][g] & ~bv(O_ASYNC, FW), post["flags"][g])
                    for g in range(m.NF)]
    out["ep"] = [[[z3.And(post["ep"][e][tf][d], v.alive_f[tf]) for d in range(m.ND)]
                  for tf in range(m.NF)] for e in range(m.NF)]
    out["g_tab"] = [z3.And(post["g_tab"][x], v.live_table[x]) for x in range(m.NT)]
    out["g_file"] = [z3.And(post["g_file"][f], v.alive_f[f]) for f in range(m.NF)]
    out["g_ino"] = [z3.And(post["g_ino"][o], v.obj_alive[o]) for o in range(m.NF)]
    out["g_tty"] = [[z3.And(post["g_tty"][o][i], v.obj_alive[o]) for i in (0, 1)]
                    for o in range(m.NF)]
    if m.Q:
        sockets.release(m, pre, post, out)
    return out
