"""The checkpoint's phases as symbolic transitions (twin of `model.checkpoint`): freeze,
collect, the contained check, the write (with the ghosts it records about the restart to
come) and the visited check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import z3

from model.flags import (
    O_RDWR,
)
from model.state import (
    CHECKED,
    COLLECTED,
    DONE,
    EPOLL,
    FAILED,
    FROZEN,
    PTMX,
    PTS,
    REG,
    TIMERFD,
    WRITTEN,
)
from model.symbolic import sockets
from model.symbolic.restart import restore_term
from model.symbolic.state import EBADF, EBUSY, IMG_GHOSTS, PIPES, SETTABLE, State, Transition
from model.symbolic.terms import EW, FALSE, PW, any_, bv, cnt, in_, is_, num, sel

if TYPE_CHECKING:  # the model builds these terms; it is not imported here
    from model.symbolic.system import CrSymModel


class Checkpoint:
    """The checkpoint's phases and restart from one state."""

    def __init__(self, m: CrSymModel, s: State) -> None:
        self.m, self.s, self.v = m, s, m.view(s)

    def _set(self, post: State, phase: int | z3.BitVecRef, error: Any = None) -> None:
        post["phase"] = bv(phase, PW) if isinstance(phase, int) else phase
        if error is not None:
            post["error"] = bv(error, EW) if isinstance(error, int) else error

    def freeze(self) -> Transition:
        m, s, v = self.m, self.s, self.v
        post = dict(s)
        post["frozen"] = [z3.Or(s["frozen"][t], s["inside"][t]) for t in range(m.NT)]
        self._set(post, FROZEN, 0)
        for k in ("h_tab", "v_tab", "g_tab", "h_file", "v_file", "g_file", "h_ino", "v_ino",
                  "g_ino"):
            post[k] = [FALSE] * len(s[k])
        for k in ("h_tty", "v_tty", "g_tty"):
            post[k] = [[FALSE, FALSE] for _ in range(m.NF)]
        if m.Q:
            for k in ("h_sock", "v_sock", "g_sock"):
                post[k] = [FALSE] * m.NF
        for k in ("leak", "leak_w", "leak_pipe", *IMG_GHOSTS, "rst_err"):
            post[k] = FALSE
        if m.dom.bounded:
            post["ext"] = bv(0, 8)
        post["clean"] = v.is_clean
        post["tamper"] = bv(0, 4)
        if not m.v.full_container:  # subtree: the ghost record is taken at the freeze
            r = v.outside_refs
            post["g_tab"], post["g_file"], post["g_ino"] = r["tab"], r["file"], r["ino"]
            post["g_tty"] = r["tty"]
            if m.Q:
                post["g_sock"] = r["sock"]
        g = z3.And(is_(s["phase"], 0), any_(v.t_in))
        return Transition("freeze", g, post, {})

    def collect_terms(self) -> dict[str, Any]:
        """The objhash `collect` builds from this state (model.checkpoint.collect)."""
        m, s, v, var = self.m, self.s, self.v, self.m.v
        CW = m.CW
        one, zero = num(1, CW), num(0, CW)
        start1 = num(var.users_start - 1, CW)
        # table encounters: each inside table scanned once, each used slot
        T = v.tin
        is_ep = [is_(s["kind"][f], EPOLL) for f in range(m.NF)]
        if var.collect_every:
            runs_ep = [z3.If(is_ep[e], T[e], zero) for e in range(m.NF)]
        else:
            runs_ep = [z3.If(z3.And(is_ep[e], T[e] != 0), one, zero) for e in range(m.NF)]
        items = [[cnt(s["ep"][e][f], CW) for f in range(m.NF)] for e in range(m.NF)]
        P = []
        for f in range(m.NF):
            terms = [runs_ep[e] * items[e][f] if var.collect_every
                     else z3.If(runs_ep[e] != 0, items[e][f], zero)
                     for e in range(m.NF)]
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            # eventpoll skips epoll targets; items only ever watch live files (release
            # drops the others), which the guard says outright so no lemma must
            P.append(z3.If(z3.Or(is_ep[f], z3.Not(v.alive_f[f])), zero, total))
        seen = [T[f] + P[f] for f in range(m.NF)]
        h_file = [seen[f] != 0 for f in range(m.NF)]
        u_file = [start1 + T[f] + (P[f] if var.epoll_counts_targets else zero)
                  for f in range(m.NF)]
        if var.collect_every:
            runs = seen
        else:
            runs = [z3.If(h_file[f], one, zero) for f in range(m.NF)]

        def on_sum(o: int, kinds: tuple[int, ...]) -> z3.BitVecRef:
            total = zero
            for f in range(m.NF):
                total = total + z3.If(z3.And(in_(s["kind"][f], kinds), is_(s["obj"][f], o)),
                                      runs[f], zero)
            return total

        ino = [on_sum(o, PIPES) if var.pipe_ref_users else zero for o in range(m.NF)]
        ttm = [on_sum(o, (PTMX,)) for o in range(m.NF)]
        tts = [on_sum(o, (PTMX, PTS)) for o in range(m.NF)]
        socks = sockets.collect_terms(v, runs) if m.Q else {}
        return socks | {
            "h_tab": list(v.ins_table),
            "u_tab": [start1 + v.n_in_holders[x] for x in range(m.NT)],
            "h_file": h_file, "u_file": u_file,
            "h_ino": [c != 0 for c in ino], "u_ino": [start1 + c for c in ino],
            "h_tty": [[ttm[o] != 0, tts[o] != 0] for o in range(m.NF)],
            "u_tty": [[start1 + ttm[o], start1 + tts[o]] for o in range(m.NF)],
        }

    def collect(self) -> Transition:
        m, s = self.m, self.s
        post = dict(s)
        post.update(self.collect_terms())
        post["v_tab"] = [FALSE] * m.NT
        post["v_file"] = [FALSE] * m.NF
        post["v_ino"] = [FALSE] * m.NF
        post["v_tty"] = [[FALSE, FALSE] for _ in range(m.NF)]
        if m.Q:
            post["v_sock"] = [FALSE] * m.NF
        if m.v.tables_checked_at_collect:  # an fd table also held outside: EBUSY at once
            v = self.v  # files->count: the holders and now the objhash's grab
            r = [cnt([v.holds(t, x) for t in range(m.NT)] + [post["h_tab"][x]], m.CW)
                 for x in range(m.NT)]
            fail = any_(z3.And(post["h_tab"][x], r[x] != post["u_tab"][x]) for x in range(m.NT))
            post["clean"] = z3.And(s["clean"], z3.Or(z3.Not(fail), v.is_clean))
            self._set(post, z3.If(fail, bv(FAILED, PW), bv(COLLECTED, PW)),
                      z3.If(fail, bv(EBUSY, EW), s["error"]))
        else:
            self._set(post, COLLECTED)
        return Transition("collect", is_(s["phase"], FROZEN), post, {})

    def contained(self) -> Transition:
        m, s, v = self.m, self.s, self.v
        post = dict(s)
        r = v.outside_refs
        post["g_tab"], post["g_file"], post["g_ino"] = r["tab"], r["file"], r["ino"]
        post["g_tty"] = r["tty"]
        if m.Q:
            post["g_sock"] = r["sock"]
        fail = v.leaks if m.v.contained_check else FALSE
        post["clean"] = z3.And(s["clean"], v.is_clean)
        self._set(post, z3.If(fail, bv(FAILED, PW), bv(CHECKED, PW)),
                  z3.If(fail, bv(EBUSY, EW), s["error"]))
        return Transition("contained", is_(s["phase"], COLLECTED), post, {})

    def write(self) -> Transition:
        m, s, v, var = self.m, self.s, self.v, self.m.v
        NT, ND, NF = m.NT, m.ND, m.NF
        full = var.full_container
        skip = [is_(s["kind"][f], TIMERFD) if var.skip_uncheckpointable else FALSE
                for f in range(NF)]
        wt = v.t_in  # inside tasks, in task order
        first_holder = [z3.And(wt[t], z3.Not(any_(z3.And(wt[u], s["table"][u] == s["table"][t])
                                                   for u in range(t))))
                        for t in range(NT)]
        TU, TF, TC = [], [], []
        for t in range(NT):
            x = s["table"][t]
            TU.append([sel(x, [s["used"][xx][d] for xx in range(NT)]) for d in range(ND)])
            TF.append([sel(x, [s["sfile"][xx][d] for xx in range(NT)]) for d in range(ND)])
            TC.append([sel(x, [s["cloexec"][xx][d] for xx in range(NT)]) for d in range(ND)])
        positions = [(t, d) for t in range(NT) for d in range(ND)]
        pw = {(t, d): z3.And(first_holder[t], TU[t][d], z3.Not(sel(TF[t][d], skip)))
              for t, d in positions}
        first = {}
        for i, (t, d) in enumerate(positions):
            earlier = [z3.And(pw[q], TF[q[0]][q[1]] == TF[t][d]) for q in positions[:i]]
            first[(t, d)] = z3.And(pw[(t, d)], z3.Not(any_(earlier)))
        # the files written: those of the inside tables' slots (each inside table has a
        # first holder that writes it), said without the write order so that the term is
        # `held_in`'s, the one the lemmas speak of (over positions, z3 had to match first
        # holders to tables: minutes at 8 fds and 8 files)
        written_f = [z3.And(v.held_in[f], z3.Not(skip[f])) for f in range(NF)]
        # per-file record errors (model.checkpoint._file_record), full mode "late" adds
        kind, obj = s["kind"], s["obj"]
        late_tty = []
        for f in range(NF):
            hm = sel(obj[f], [s["h_tty"][o][0] for o in range(NF)])
            hs = sel(obj[f], [s["h_tty"][o][1] for o in range(NF)])
            mst = sel(obj[f], v.master)
            late = z3.Or(z3.And(is_(kind[f], PTMX), z3.Or(z3.Not(hm), z3.Not(hs))),
                         z3.And(is_(kind[f], PTS), z3.Or(z3.Not(hs), z3.And(mst, z3.Not(hm)))))
            late_tty.append(late if full else FALSE)
        rec_err = [z3.Or(is_(kind[f], TIMERFD), s["owner"][f], late_tty[f]) for f in range(NF)]
        if m.Q:
            sock_err, vis_sock = sockets.write_terms(v, written_f, full)
            rec_err = [z3.Or(rec_err[f], sock_err[f]) for f in range(NF)]
        rec_code = [z3.If(is_(kind[f], TIMERFD), bv(EBADF, EW), bv(EBUSY, EW))
                    for f in range(NF)]
        late_file = [z3.Not(s["h_file"][f]) if full else FALSE for f in range(NF)]
        # deferred epoll queue: every item's target needs an objref
        has_ref = [z3.Or(s["h_file"][f], written_f[f]) for f in range(NF)]
        def_err = any_(z3.And(written_f[e], is_(kind[e], EPOLL), s["ep"][e][tf][d],
                              z3.Not(has_ref[tf]))
                       for e in range(NF) for tf in range(NF) for d in range(ND))
        late_tab = [z3.And(wt[t], z3.Not(sel(s["table"][t], s["h_tab"]))) if full else FALSE
                    for t in range(NT)]
        code: z3.BitVecRef = z3.If(def_err, bv(EBUSY, EW), bv(0, EW))
        for t in reversed(range(NT)):
            for d in reversed(range(ND)):
                q = (t, d)
                f = TF[t][d]
                lf, re, rc = sel(f, late_file), sel(f, rec_err), sel(f, rec_code)
                cond = z3.And(pw[q], z3.Or(lf, z3.And(first[q], re)))
                code = z3.If(cond, z3.If(lf, bv(EBUSY, EW), rc), code)
            if full:
                code = z3.If(late_tab[t], bv(EBUSY, EW), code)
        # the first error in write order gives the errno; that there is one is simply the
        # disjunction (every errno above is non-zero), which is far easier for the solver,
        # and order-free: a written file late or with a record error (a file's first
        # descriptor is where its record is written), or a late table
        fail = any_([def_err]
                    + [z3.And(written_f[f], z3.Or(late_file[f], rec_err[f])) for f in range(NF)]
                    + late_tab)
        # success: what is visited, the leak ghosts, what restart will give
        vis_tab = list(v.ins_table)
        vis_file = written_f
        vis_ino = [any_(z3.And(written_f[f], v.on(f, o), in_(kind[f], PIPES))
                        for f in range(NF)) for o in range(NF)]
        wm = [any_(z3.And(written_f[f], is_(kind[f], PTMX), is_(obj[f], o)) for f in range(NF))
              for o in range(NF)]
        ws = [any_(z3.And(written_f[f], is_(kind[f], PTS), is_(obj[f], o)) for f in range(NF))
              for o in range(NF)]
        vis_tty = [[z3.Or(wm[o], z3.And(ws[o], v.master[o])), z3.Or(wm[o], ws[o])]
                   for o in range(NF)]
        ept = [any_(z3.And(written_f[e], is_(kind[e], EPOLL), s["ep"][e][tf][d])
                    for e in range(NF) for d in range(ND)) for tf in range(NF)]
        # nothing is visited before the write (collect and freeze clear the marks)
        new = {"tab": vis_tab, "file": vis_file, "ino": vis_ino, "tty": vis_tty}
        if m.Q:
            new["sock"] = vis_sock
        now = v.outside_refs

        def hits(ghost: dict[str, Any], types: tuple[str, ...]) -> z3.BoolRef:
            out = []
            if "tab" in types:
                out += [z3.And(new["tab"][x], ghost["tab"][x]) for x in range(NT)]
            if "file" in types:
                out += [z3.And(z3.Or(new["file"][f], ept[f]), ghost["file"][f])
                        for f in range(NF)]
            if "ino" in types:
                out += [z3.And(new["ino"][o], ghost["ino"][o]) for o in range(NF)]
            if "tty" in types:
                out += [z3.And(new["tty"][o][i], ghost["tty"][o][i])
                        for o in range(NF) for i in (0, 1)]
            if "sock" in types:
                out += [z3.And(new["sock"][f], ghost["sock"][f]) for f in range(NF)]
            return any_(out)

        ghost = {"tab": s["g_tab"], "file": s["g_file"], "ino": s["g_ino"], "tty": s["g_tty"]}
        alltypes: tuple[str, ...] = ("tab", "file", "ino", "tty")
        if m.Q:
            ghost["sock"] = s["g_sock"]
            alltypes += ("sock",)
        # restart, as the specs read it
        rerr, rflags = zip(*(restore_term(var, kind[f], s["flags"][f], m.valid_kinds,
                                          m.has_fasync) for f in range(NF)), strict=True)
        bad_f = [(rflags[f] & SETTABLE) != (s["flags"][f] & SETTABLE) for f in range(NF)]
        bad = []
        for q in positions:
            t, d = q
            f = TF[t][d]
            b = sel(f, bad_f)
            if var.cloexec_per_file:
                b = z3.Or(b, any_(z3.And(pw[r], TF[r[0]][r[1]] == f, TC[r[0]][r[1]] != TC[t][d])
                                  for r in positions if r != q))
            bad.append(z3.And(pw[q], b))
        in_slots = [z3.And(v.ins_table[x], s["used"][x][d]) for x in range(NT) for d in range(ND)]
        timer_in = any_(z3.And(c, is_(sel(s["sfile"][x][d], kind), TIMERFD))
                        for c, (x, d) in zip(in_slots, [(x, d) for x in range(NT)
                                                        for d in range(ND)], strict=True))
        if var.skip_uncheckpointable:
            bad.append(timer_in)  # the left-out descriptor is missing after restart
        post = dict(s)
        post["v_tab"], post["v_file"], post["v_ino"], post["v_tty"] = (
            new["tab"], new["file"], new["ino"], new["tty"])
        post["h_tab"] = [z3.Or(s["h_tab"][x], new["tab"][x]) for x in range(NT)]
        post["h_file"] = [z3.Or(s["h_file"][f], new["file"][f]) for f in range(NF)]
        post["h_ino"] = [z3.Or(s["h_ino"][o], new["ino"][o]) for o in range(NF)]
        post["h_tty"] = [[z3.Or(s["h_tty"][o][i], new["tty"][o][i]) for i in (0, 1)]
                         for o in range(NF)]
        start = num(var.users_start, m.CW)
        if m.Q:
            post["v_sock"] = new["sock"]
            post["h_sock"] = [z3.Or(s["h_sock"][f], new["sock"][f]) for f in range(NF)]
            post["u_sock"] = [z3.If(s["h_sock"][f], s["u_sock"][f], start) for f in range(NF)]
            post["g_sock"] = [FALSE] * NF
        post["u_tab"] = [z3.If(s["h_tab"][x], s["u_tab"][x], start) for x in range(NT)]
        post["u_file"] = [z3.If(s["h_file"][f], s["u_file"][f], start) for f in range(NF)]
        post["u_ino"] = [z3.If(s["h_ino"][o], s["u_ino"][o], start) for o in range(NF)]
        post["u_tty"] = [[z3.If(s["h_tty"][o][i], s["u_tty"][o][i], start) for i in (0, 1)]
                         for o in range(NF)]
        post["leak"] = hits(ghost, alltypes)
        post["leak_w"] = hits(now, alltypes)
        post["leak_pipe"] = hits(ghost, ("ino", "tty"))
        post["img_bad"] = any_(bad)
        # restart fails on a record it cannot restore, or on an epoll item whose target has
        # an objref (hashed at collect) but no file record (possible without the visited check)
        dangling = any_(z3.And(written_f[e], is_(kind[e], EPOLL), s["ep"][e][tf][d],
                               z3.Not(written_f[tf]))
                        for e in range(NF) for tf in range(NF) for d in range(ND))
        post["img_err"] = z3.Or(any_(z3.And(written_f[f], rerr[f]) for f in range(NF)),
                                dangling)
        post["img_timerfd"] = timer_in
        # sharing and counts after restart (restore_preserves_offsets_and_sharing,
        # refcounts_restored): correct restart rebuilds one file per objref and one table
        # per table objref, so only the restart knobs can break them
        # (built only under the knob that reads them: dup_rec alone is O(positions^2) terms)
        share_bad, count_bad = [], []
        if var.new_file_per_fd:  # a file with two fd records comes back as two files
            dup_rec = any_(z3.And(pw[q], pw[r], TF[q[0]][q[1]] == TF[r[0]][r[1]])
                           for i, q in enumerate(positions) for r in positions[i + 1:])
            share_bad.append(dup_rec)
            count_bad.append(dup_rec)
        if not var.restore_pos:  # a seekable file comes back at offset 0
            share_bad.append(any_(z3.And(written_f[f], is_(kind[f], REG), s["pos"][f] != 0)
                                  for f in range(NF)))
        if not var.share_tables:  # a later task gets a copy: its own table, counted again
            shared_tab = [any_(z3.And(wt[t], wt[u], s["table"][t] == s["table"][u])
                               for u in range(t + 1, NT)) for t in range(NT)]
            share_bad.append(any_(shared_tab))
            count_bad.append(any_(z3.And(shared_tab[t], first_holder[t], pw[(t, d)])
                                  for t in range(NT) for d in range(ND)))
        if var.restart_keeps_ref:  # every restored file one reference too many
            count_bad.append(any_(pw.values()))
        if var.skip_uncheckpointable:  # the left-out descriptor and file are missing
            share_bad.append(timer_in)
            count_bad.append(timer_in)
        post["img_share"] = any_(share_bad)
        post["img_count"] = any_(count_bad)
        # what a hostile image can be made from (model.image.tamper): an fd record (and so
        # a file record), and a read-write file record whose f_mode can be lowered
        post["img_fd"] = any_(pw.values())
        post["img_rdwr"] = any_(z3.And(written_f[f], (s["flags"][f] & 3) == O_RDWR)
                                for f in range(NF))
        post["g_tab"], post["g_file"] = [FALSE] * NT, [FALSE] * NF
        post["g_ino"], post["g_tty"] = [FALSE] * NF, [[FALSE, FALSE] for _ in range(NF)]
        if var.check_at_write:  # counts compared in the same step, with the write's objhash
            late_leak = m.view(post).leaks
            code = z3.If(fail, code, bv(EBUSY, EW))
            fail = z3.Or(fail, late_leak)
        # on failure the rest is moot: the explicit model drops everything but the errno
        # (and the completeness ghost, which _fail takes from the state the write read)
        post["clean"] = z3.And(s["clean"], z3.Or(z3.Not(fail), v.is_clean))
        out = post
        self._set(out, z3.If(fail, bv(FAILED, PW), bv(WRITTEN, PW)),
                  z3.If(fail, code, s["error"]))
        start_phase = CHECKED if full else FROZEN
        return Transition("write", is_(s["phase"], start_phase), out, {})

    def visited(self) -> Transition:
        m, s, v, var = self.m, self.s, self.v, self.m.v
        unvisited = any_(
            [z3.And(s["h_tab"][x], z3.Not(s["v_tab"][x])) for x in range(m.NT)]
            + [z3.And(s["h_file"][f], z3.Not(s["v_file"][f])) for f in range(m.NF)]
            + [z3.And(s["h_ino"][o], z3.Not(s["v_ino"][o])) for o in range(m.NF)]
            + [z3.And(s["h_tty"][o][i], z3.Not(s["v_tty"][o][i]))
               for o in range(m.NF) for i in (0, 1)]
            + ([z3.And(s["h_sock"][f], z3.Not(s["v_sock"][f])) for f in range(m.NF)]
               if m.Q else []))
        fail = z3.Or(unvisited if var.visited_check else FALSE,
                     v.leaks if var.recheck_after_write else FALSE)
        post = dict(s)
        post["clean"] = z3.And(s["clean"], z3.Or(z3.Not(fail), v.is_clean))
        self._set(post, z3.If(fail, bv(FAILED, PW), bv(DONE, PW)),
                  z3.If(fail, bv(EBUSY, EW), s["error"]))
        return Transition("visited", is_(s["phase"], WRITTEN), post, {})
