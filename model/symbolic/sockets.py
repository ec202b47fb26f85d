"""Unix stream sockets and SCM_RIGHTS in the symbolic model (twin of the unix parts of
`model.env`, `model.world` and `model.checkpoint`), on when `Sizes.queue` > 0.

A unix file's receive queue is `q[f][0 .. qn[f]-1]` (the files in flight, oldest first; at
most `Sizes.queue` of them: a sendmsg onto a full queue is not a step), and `sk_err[f]` the
pending ECONNRESET. The objhash's socket entries are `h_sock/u_sock/v_sock/g_sock`, indexed
by the socket's file, as `model.state.OBJ_SOCK` entries are by theirs. What follows the
explicit model:

* a file in flight holds a reference (`f_count`) and stays alive while the socket whose
  queue holds it is alive; liveness is the least fixpoint from the references of tables
  and the objhash (a cycle of sockets holding only each other is released, as unix_gc
  would); an outside task reaches what is in flight in the queues of the sockets it holds,
  and the socket objects of those sockets and of their peers (`model.world.outside_refs`);
* the release of a socket with unread messages sets `sk_err` on its live peer, which the
  peer's next recvmsg on an empty queue returns and clears;
* Linux-CR's checkpoint of sockets (the variants with `scm_dumped` off, which is every
  variant the symbolic model encodes): ->collect of a unix file collects its socket and its
  peer's; the contained check compares `sk_refcnt` (its file, a connected peer, the
  objhash's grab); the write refuses a socket with messages queued (-EBUSY, as is_clean
  counts it unsupported) and, in full-container mode, a socket object first met there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import z3

from model.flags import O_RDWR
from model.state import UNIX
from model.symbolic.state import State, Transition
from model.symbolic.terms import FALSE, TRUE, any_, cnt, is_, lowest, num, sel

if TYPE_CHECKING:  # the model builds these terms; they are not imported here
    from model.symbolic.counts import View
    from model.symbolic.env import Env
    from model.symbolic.system import CrSymModel


# --- derived terms (model.world) ----------------------------------------------------------


def is_unix(s: State, f: int) -> z3.BoolRef:
    return is_(s["kind"][f], UNIX)


def in_queue(v: View, g: int, f: int) -> list[z3.BoolRef]:
    """Per message slot i: socket g's i-th queued message carries file f."""
    key = ("inq", g, f)
    if key not in v._counts:
        s = v.s
        v._counts[key] = [z3.And(is_unix(s, g), z3.UGT(s["qn"][g], i), is_(s["q"][g][i], f))
                          for i in range(v.m.Q)]
    return v._counts[key]  # type: ignore[return-value]


def carried(v: View, holders: list[z3.BoolRef]) -> list[z3.BoolRef]:
    """`holders` and every file in flight in the queue of one of them, transitively (a chain
    of sockets in flight has at most NF - 1 links)."""
    m = v.m
    cur = list(holders)
    for _ in range(m.NF - 1):
        cur = [z3.Or(cur[f], any_(z3.And(cur[g], c) for g in range(m.NF)
                                  for c in in_queue(v, g, f)))
               for f in range(m.NF)]
    return cur


def in_flight(v: View, f: int) -> z3.ExprRef:
    """References to file f from the queues of live sockets (model.world.file_counts)."""
    m = v.m
    return cnt([z3.And(v.alive_f[g], c) for g in range(m.NF) for c in in_queue(v, g, f)],
               m.CW)


def peer_is(v: View) -> list[list[z3.BoolRef]]:
    """peer_is[f][g]: g is f's peer (model.env._peer: the first other live unix file on the
    same socket pair)."""
    key = ("peer",)
    if key not in v._counts:
        s, m = v.s, v.m
        cand = [[z3.And(v.alive_f[g], is_unix(s, g), s["obj"][g] == s["obj"][f])
                 if g != f else FALSE for g in range(m.NF)] for f in range(m.NF)]
        v._counts[key] = [[z3.And(cand[f][g], z3.Not(any_(cand[f][:g])))
                           for g in range(m.NF)] for f in range(m.NF)]  # type: ignore[assignment]
    return v._counts[key]  # type: ignore[return-value]


def has_peer(v: View, f: int) -> z3.BoolRef:
    return any_(peer_is(v)[f])


def outside_socks(v: View) -> list[z3.BoolRef]:
    """Socket objects an outside task references: those of the unix files it holds (through
    tables or in flight) and of their peers (model.world.outside_refs)."""
    s, m = v.s, v.m
    out = v.out_file
    return [z3.Or(z3.And(out[p], is_unix(s, p)),
                  z3.And(v.alive_f[p], is_unix(s, p),
                         any_(z3.And(out[g], is_unix(s, g), s["obj"][g] == s["obj"][p])
                              for g in range(m.NF) if g != p)))
            for p in range(m.NF)]


def sk_refcnt(v: View) -> list[z3.ExprRef]:
    """model.world.sock_refcnt: its file, a connected peer, and the objhash's grab."""
    m, s = v.m, v.s
    one = num(1, m.CW)
    return [one + cnt([has_peer(v, f), s["h_sock"][f]], m.CW) for f in range(m.NF)]


def sock_leaks(v: View) -> list[z3.BoolRef]:
    s = v.s
    r = sk_refcnt(v)
    return [z3.And(s["h_sock"][f], r[f] != s["u_sock"][f]) for f in range(v.m.NF)]


def unclean(v: View, held: list[z3.BoolRef], used: list[z3.BoolRef]) -> list[z3.BoolRef]:
    """model.checkpoint.is_clean's socket terms: a held socket with messages queued is
    unsupported, and a used socket whose object an outside task references is shared."""
    s, m = v.s, v.m
    r = v.outside_refs["sock"]
    return ([z3.And(held[f], is_unix(s, f), s["qn"][f] != 0) for f in range(m.NF)]
            + [z3.And(used[f], is_unix(s, f), r[f]) for f in range(m.NF)])


# --- environment (model.env) ------------------------------------------------------------


def socketpair(env: Env) -> Transition:
    return env._pair("socketpair", UNIX, O_RDWR, UNIX, O_RDWR, True)


def sendmsg(env: Env) -> Transition:
    """sendmsg(fd, SCM_RIGHTS [fd2]): fd2's file, with a reference, joins the peer's queue
    (a full queue: beyond the size, not a step)."""
    m, s, v = env.m, env.s, env.v
    sk, f = env.fF, env.f2
    row = [sel(sk, [peer_is(v)[a][g] for a in range(m.NF)]) for g in range(m.NF)]
    peer_ok, p = lowest(row, m.wF)
    qn_p = sel(p, s["qn"])
    post = env.base()
    post["q"] = [[z3.If(z3.And(is_(p, g), is_(qn_p, i)), f, s["q"][g][i]) for i in range(m.Q)]
                 for g in range(m.NF)]
    post["qn"] = [z3.If(is_(p, g), s["qn"][g] + 1, s["qn"][g]) for g in range(m.NF)]
    g = z3.And(env.fd_ok, env.fd2_ok, env.uF, env.u2, is_(env.fattr("kind", sk), UNIX),
               peer_ok, z3.ULT(qn_p, m.Q))
    return env.fam("sendmsg", g, post)


def recvmsg(env: Env) -> Transition:
    """recvmsg(fd): the oldest message's file at the lowest free descriptor, or, with a full
    table, dropped (its reference released); on an empty queue a pending ECONNRESET is
    consumed (end of stream and EAGAIN change nothing: not steps)."""
    m, s = env.m, env.s
    sk = env.fF
    qn_s = sel(sk, s["qn"])
    msg = qn_s != 0
    x = sel(sk, [s["q"][g][0] for g in range(m.NF)])
    post = env.base()
    pop = [z3.And(is_(sk, g), msg) for g in range(m.NF)]
    post["q"] = [[z3.If(pop[g], s["q"][g][min(i + 1, m.Q - 1)], s["q"][g][i])
                  for i in range(m.Q)] for g in range(m.NF)]
    post["qn"] = [z3.If(pop[g], s["qn"][g] - 1, s["qn"][g]) for g in range(m.NF)]
    post["sk_err"] = [z3.If(z3.And(is_(sk, g), z3.Not(msg)), FALSE, s["sk_err"][g])
                      for g in range(m.NF)]
    inst = dict(post)
    env.set_slots(inst, env.X, [(env.nfd, TRUE, x, FALSE)])
    install = z3.And(msg, env.has_free)
    for k in ("used", "sfile", "cloexec"):
        post[k] = [[z3.If(install, inst[k][xx][d], post[k][xx][d]) for d in range(m.ND)]
                   for xx in range(m.NT)]
    g = z3.And(env.fd_ok, env.uF, is_(env.fattr("kind", sk), UNIX),
               z3.Or(msg, sel(sk, s["sk_err"])))
    return env.fam("recvmsg", g, post, release=True)


SOCKET_STEPS = {"socketpair": socketpair, "sendmsg": sendmsg, "recvmsg": recvmsg}


def release(m: CrSymModel, pre: State, post: State, out: State) -> None:
    """The sockets' part of `model.symbolic.env.cleanup`: a socket released with messages
    queued sets sk_err on its live peer (unix_release_sock), and the ghost entries of
    released sockets go."""
    v, v0 = m.view(post), m.view(pre)
    died = [any_(z3.And(v0.alive_f[f], z3.Not(v.alive_f[f]), is_unix(post, f),
                        post["qn"][f] != 0, is_(post["obj"][f], o)) for f in range(m.NF))
            for o in range(m.NF)]
    out["sk_err"] = [z3.Or(post["sk_err"][g], z3.And(v.alive_f[g], is_unix(post, g),
                                                     sel(post["obj"][g], died)))
                     for g in range(m.NF)]
    out["g_sock"] = [z3.And(post["g_sock"][f], v.alive_f[f]) for f in range(m.NF)]


# --- checkpoint (model.checkpoint) --------------------------------------------------------


def collect_terms(v: View, runs: list[z3.ExprRef]) -> dict[str, Any]:
    """->collect of each unix file collected (`runs[f]` times) collects its socket and its
    peer's: users = users_start - 1 + the runs of the file and of the file whose peer it
    is."""
    m, s = v.m, v.s
    zero = num(0, m.CW)
    start1 = num(m.v.users_start - 1, m.CW)
    pi = peer_is(v)
    total = []
    for f in range(m.NF):
        t = z3.If(is_unix(s, f), runs[f], zero)
        for g in range(m.NF):
            if g != f:
                t = t + z3.If(z3.And(is_unix(s, g), pi[g][f]), runs[g], zero)
        total.append(t)
    return {"h_sock": [c != 0 for c in total], "u_sock": [start1 + c for c in total]}


def write_terms(v: View, written_f: list[z3.BoolRef], full: bool
                ) -> tuple[list[z3.BoolRef], list[z3.BoolRef]]:
    """(per file: its record fails: messages queued, or in full-container mode a socket
    object the collect did not hash; per socket: visited by the write)."""
    m, s = v.m, v.s
    pi = peer_is(v)
    err = []
    for f in range(m.NF):
        late = FALSE
        if full:
            peer_late = any_(z3.And(pi[f][g], z3.Not(s["h_sock"][g])) for g in range(m.NF))
            late = z3.Or(z3.Not(s["h_sock"][f]), peer_late)
        err.append(z3.And(is_unix(s, f), z3.Or(s["qn"][f] != 0, late)))
    vis = [z3.Or(z3.And(written_f[f], is_unix(s, f)),
                 any_(z3.And(written_f[g], is_unix(s, g), pi[g][f])
                      for g in range(m.NF) if g != f))
           for f in range(m.NF)]
    return err, vis


def decode_queue(val: dict[str, Any], f: int) -> tuple[tuple[int, ...], int]:
    """(rcvq, sk_err) of file slot f from a z3 model's values."""
    n = min(val["qn"][f], len(val["q"][f]))
    return tuple(val["q"][f][i] for i in range(n)), int(val["sk_err"][f])
