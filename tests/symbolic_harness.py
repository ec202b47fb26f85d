"""Evaluating the symbolic transitions on concrete states, for the agreement tests
(`tests/test_z3_agreement.py`): an explicit World as symbolic values, each family's guard and
post-state folded to constants, or solved for with z3."""

from __future__ import annotations

import weakref
from typing import Any

import z3

from model.actions import ACTIONS
from model.state import (
    CHECKED,
    COLLECTED,
    EMPTY,
    FROZEN,
    OBJ_FILE,
    OBJ_FILE_TABLE,
    OBJ_INODE,
    OBJ_SOCK,
    OBJ_TTY,
    REG,
    WRITTEN,
    World,
    slot_cloexec,
    slot_file,
)
from model.symbolic.decode import evtree
from model.symbolic.state import CKPT_ACTIONS, IMG_GHOSTS, State, Transition
from model.symbolic.system import CrSymModel
from model.symbolic.terms import all_


def encode_world(m: CrSymModel, w: World) -> dict[str, Any] | None:
    """Values of the symbolic state standing for an explicit World at phase 0 or during a
    checkpoint up to WRITTEN (None if it does not fit the sizes). Task i -> slot i, table j
    -> slot j, file k -> slot k, object ids as they are."""
    NT, ND, NF = m.NT, m.ND, m.NF
    if len(w.tasks) > NT or len(w.tables) > NT or len(w.files) > NF:
        return None
    if any(len(tb) != ND for tb in w.tables):
        return None
    if any(f.obj >= NF for f in w.files):
        return None
    if any(len(f.rcvq) > m.Q for f in w.files):
        return None  # a queue longer than the symbolic one (or any queue without sockets)
    cr = w.cr
    if cr and cr.phase not in (FROZEN, COLLECTED, CHECKED, WRITTEN):
        return None
    val: dict[str, Any] = {}
    val["alive"] = [t < len(w.tasks) for t in range(NT)]
    val["inside"] = [bool(w.tasks[t].inside) if t < len(w.tasks) else False for t in range(NT)]
    val["frozen"] = [bool(w.tasks[t].frozen) if t < len(w.tasks) else False for t in range(NT)]
    val["table"] = [w.tasks[t].table if t < len(w.tasks) else 0 for t in range(NT)]
    val["used"] = [[x < len(w.tables) and w.tables[x][d] != EMPTY for d in range(ND)]
                   for x in range(NT)]
    val["sfile"] = [[slot_file(w.tables[x][d]) if val["used"][x][d] else 0 for d in range(ND)]
                    for x in range(NT)]
    val["cloexec"] = [[bool(slot_cloexec(w.tables[x][d])) if val["used"][x][d] else False
                       for d in range(ND)] for x in range(NT)]

    def fget(f: int, attr: str, default: Any) -> Any:
        return getattr(w.files[f], attr) if f < len(w.files) else default

    val["kind"] = [fget(f, "kind", REG) for f in range(NF)]
    val["path"] = [max(0, fget(f, "path", 0)) for f in range(NF)]
    val["obj"] = [max(0, fget(f, "obj", 0)) for f in range(NF)]
    val["flags"] = [fget(f, "f_flags", 0) for f in range(NF)]
    val["pos"] = [fget(f, "f_pos", 0) for f in range(NF)]
    val["owner"] = [bool(fget(f, "owner", 0)) for f in range(NF)]
    val["ep"] = [[[f < len(w.files) and (tf, d) in w.files[f].epitems for d in range(ND)]
                  for tf in range(NF)] for f in range(NF)]
    if m.Q:
        val["qn"] = [len(fget(f, "rcvq", ())) for f in range(NF)]
        val["q"] = [list(fget(f, "rcvq", ())) + [0] * (m.Q - val["qn"][f]) for f in range(NF)]
        val["sk_err"] = [bool(fget(f, "sk_err", 0)) for f in range(NF)]
    val["phase"] = cr.phase if cr else 0
    val["error"] = 0
    z = {"tab": NT, "file": NF, "ino": NF}
    if m.Q:
        z["sock"] = NF
    for pre in ("h", "v", "g"):
        for k, n in z.items():
            val[f"{pre}_{k}"] = [False] * n
        val[f"{pre}_tty"] = [[False, False] for _ in range(NF)]
    for k, n in z.items():
        val[f"u_{k}"] = [0] * n
    val["u_tty"] = [[0, 0] for _ in range(NF)]
    key = {OBJ_FILE_TABLE: "tab", OBJ_FILE: "file", OBJ_INODE: "ino"}
    if m.Q:
        key[OBJ_SOCK] = "sock"
    if cr:
        for e in cr.objhash:
            if e.objtype == OBJ_TTY:
                val["h_tty"][e.ptr >> 1][e.ptr & 1] = True
                val["u_tty"][e.ptr >> 1][e.ptr & 1] = e.users
                val["v_tty"][e.ptr >> 1][e.ptr & 1] = bool(e.visited)
            elif e.objtype in key:
                k = key[e.objtype]
                val[f"h_{k}"][e.ptr] = True
                val[f"u_{k}"][e.ptr] = e.users
                val[f"v_{k}"][e.ptr] = bool(e.visited)
            else:
                return None
        for typ, ptr in cr.ghost:
            if typ == OBJ_TTY:
                val["g_tty"][ptr >> 1][ptr & 1] = True
            elif typ in key:
                val[f"g_{key[typ]}"][ptr] = True
    val["leak"] = bool(cr and cr.leak_check)
    val["leak_w"] = bool(cr and cr.leak_write)
    val["leak_pipe"] = bool(cr and any(t in (OBJ_INODE, OBJ_TTY) for _, t in cr.leak_check))
    for k in (*IMG_GHOSTS, "rst_err"):
        val[k] = False
    val["clean"] = bool(cr and cr.clean)
    val["tamper"] = 0
    if m.dom.bounded:
        val["steps"] = w.steps
        val["ext"] = cr.ext_steps if cr else 0
    return val


def constrain(m: CrSymModel, s: State, val: dict[str, Any]) -> z3.BoolRef:
    """The symbolic state `s` equals the values `val` (only the keys given)."""
    cs = []

    def walk(x: Any, y: Any) -> None:
        if isinstance(x, list):
            for a, b in zip(x, y, strict=True):
                walk(a, b)
        elif z3.is_bool(x):
            cs.append(x if y else z3.Not(x))
        else:
            cs.append(x == y)

    for k, y in val.items():
        walk(s[k], y)
    return z3.And(cs)


# The parameters each family reads (the others are free and irrelevant).
RELEVANT: dict[str, tuple[str, ...]] = {
    a.name: ("t", *(p.name for p in a.params)) for a in ACTIONS.values()} | {"tamper": ("k",)}


def action_values(a: tuple) -> dict[str, Any]:
    """The parameter values of an explicit action tuple (inverse of `decode_action`)."""
    n = a[0]
    if n == "tamper":
        return {"k": a[1]}
    if n in CKPT_ACTIONS:
        return {}
    act = ACTIONS[n]
    out: dict[str, Any] = {"t": a[1]}
    for p, x in zip(act.params, a[2:], strict=True):
        out[p.name] = bool(x) if p.sort == "bool" else x
    return out


def _const(x: Any, like: z3.ExprRef) -> z3.ExprRef:
    if z3.is_bool(like):
        return z3.BoolVal(bool(x))
    return z3.IntVal(x) if z3.is_int(like) else z3.BitVecVal(x, like.size())


def constant_state(m: CrSymModel, val: dict[str, Any]) -> State:
    """A symbolic state whose terms are the constants `val` (layout of `fresh`)."""
    shape = m.fresh("c")

    def conv(x: Any, like: Any) -> Any:
        if isinstance(like, list):
            return [conv(a, b) for a, b in zip(x, like, strict=True)]
        return _const(x, like)

    return {k: conv(val[k], shape[k]) for k in shape}


class _Families:
    """Every transition family of a model, built once on one symbolic state (building is
    the slow part: seconds for the write at 9 file slots), to be evaluated on many."""

    def __init__(self, m: CrSymModel) -> None:
        self.m = m
        self.s = m.fresh("e")
        self.leaves = m.leaves(self.s)
        self.fams: dict[str, Transition] = {}

    def get(self, name: str) -> Transition:
        if name not in self.fams:
            self.fams[name] = self.m.transition(self.s, "e", name)
        return self.fams[name]


_FAMILIES: weakref.WeakKeyDictionary[CrSymModel, _Families] = weakref.WeakKeyDictionary()


def _fold_all(terms: list[z3.ExprRef], subst: list[tuple[z3.ExprRef, z3.ExprRef]]
              ) -> list[Any]:
    """The values of `terms` under `subst` (which must fix every constant in them), in one
    substitution and one simplification of their concatenation: shared subterms are
    folded once, not once per term."""
    if not terms:
        return []
    bits = [z3.If(t, z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)) if z3.is_bool(t) else t
            for t in terms]
    whole = bits[0] if len(bits) == 1 else z3.Concat(*bits)
    value = _pyval(z3.simplify(z3.substitute(whole, *subst)))
    out: list[Any] = []
    for t, b in zip(reversed(terms), reversed(bits), strict=True):  # Concat: last is lowest
        w = b.size()
        x, value = value & ((1 << w) - 1), value >> w
        out.append(bool(x) if z3.is_bool(t) else x)
    return out[::-1]


class StepEvaluator:
    """The symbolic transitions from one concrete state: the model's families (built once
    per model, on a symbolic state) with that state's values substituted in."""

    def __init__(self, m: CrSymModel, val: dict[str, Any]) -> None:
        self.m = m
        if m not in _FAMILIES:
            _FAMILIES[m] = _Families(m)
        self._fams = _FAMILIES[m]
        self.pre_values = m.leaves(val)  # type: ignore[arg-type]
        self.subst = [(x, _const(v, x)) for x, v in
                      zip(self._fams.leaves, self.pre_values, strict=True)]

    def family(self, name: str) -> Transition:
        """The family `name` from the symbolic state (its leaves: `self._fams.leaves`)."""
        return self._fams.get(name)

    def step(self, a: tuple) -> tuple[bool, dict[str, Any] | None]:
        """(enabled, the values of the successor or None), by constant folding."""
        m, fam = self.m, self.family(a[0])
        subst = self.subst + [(fam.params[k], _const(v, fam.params[k]))
                              for k, v in action_values(a).items()]
        # the parameters the pre-state fixes (a new file's slot): their terms folded
        subst += [(x, _const(v, x)) for (x, _), v in
                  zip(fam.defs, _fold_all([d for _, d in fam.defs], self.subst), strict=True)]
        post = m.leaves(fam.post)
        changed = [i for i, (pre, x) in enumerate(zip(self._fams.leaves, post, strict=True))
                   if not x.eq(pre)]
        enabled, *vals = _fold_all([fam.guard] + [post[i] for i in changed], subst)
        if not enabled:
            return False, None
        out_flat = list(self.pre_values)
        for i, x in zip(changed, vals, strict=True):
            out_flat[i] = x
        return True, _unflatten(m, out_flat)

    def extra(self, name: str, known: list[tuple], timeout: float = 30.0) -> tuple | None:
        """An action of family `name` enabled here other than the `known` ones, or None:
        the symbolic transitions are no more than the explicit ones."""
        fam = self.family(name)
        rel = RELEVANT.get(name, ())
        so = z3.SolverFor("QF_BV")
        so.set("timeout", int(timeout * 1000))
        so.add(z3.substitute(fam.guard, *self.subst))
        for a in known:
            vals = action_values(a)
            so.add(z3.Not(all_(fam.params[k] == _const(vals[k], fam.params[k]) for k in rel)))
        r = so.check()
        if r == z3.unknown:
            raise TimeoutError(f"z3 unknown on extra {name}")
        if r == z3.unsat:
            return None
        mod = so.model()

        def ev(t: z3.ExprRef) -> Any:
            return _pyval(mod.eval(t, model_completion=True))

        return self.m.decode_action(ev, fam)


def _pyval(x: z3.ExprRef) -> Any:
    """A z3 value as a Python bool or int (ValueError for a term that is not a value)."""
    if z3.is_true(x):
        return True
    if z3.is_false(x):
        return False
    if z3.is_bv_value(x) or z3.is_int_value(x):
        return x.as_long()
    raise ValueError(f"not a value: {x}")


def _unflatten(m: CrSymModel, flat: list[Any]) -> dict[str, Any]:
    it = iter(flat)
    shape = m.fresh("u")

    def take(like: Any) -> Any:
        return [take(y) for y in like] if isinstance(like, list) else next(it)

    return {k: take(shape[k]) for k in m.shapes()}


def solve_step(m: CrSymModel, val: dict[str, Any], a: tuple, timeout: float = 30.0
               ) -> tuple[bool, dict[str, Any] | None]:
    """The same with a solver: fix the pre-state and the parameters, solve for the
    post-state (fresh constants equal to the post terms); also checks it is unique."""
    s = m.fresh("pre")
    fam = m.transition(s, "x", a[0])
    post = m.fresh("post")
    vals = action_values(a)
    so = z3.SolverFor("QF_BV")
    so.set("timeout", int(timeout * 1000))
    so.add(constrain(m, s, val))
    for k, v in vals.items():
        so.add(fam.params[k] == _const(v, fam.params[k]))
    so.add(fam.guard)
    so.add(z3.And([x == y for x, y in zip(m.leaves(post), m.leaves(fam.post), strict=True)]))
    r = so.check()
    if r == z3.unknown:
        raise TimeoutError(f"z3 unknown on {a}")
    if r == z3.unsat:
        return False, None
    mod = so.model()

    got = {k: evtree(lambda t: _pyval(mod.eval(t, model_completion=True)), post[k])
           for k in m.shapes()}
    so.add(z3.Not(constrain(m, post, got)))
    if so.check() != z3.unsat:
        raise ValueError(f"the successor of {a} is not unique")
    return True, got
