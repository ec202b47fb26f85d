"""A generic symbolic engine on z3: bounded model checking and inductive invariant checking.

It knows nothing of what a model describes. A *symbolic model* (`SymbolicModel`) gives its
states as z3 terms (any nested structure whose `leaves` are z3 expressions), an initial
predicate, a domain predicate (what "a state of this size" means), its transitions as a list
of guarded functional updates (`SymStep`: guard, post-state terms, parameters), one z3
predicate per property it encodes, and strengthening lemmas. It also decodes z3 models back
into the concrete states and actions of an explicit model, so counterexamples are ordinary
`checker.trace.Trace` values (`to_text`, ITF) with the same `Result` type as `checker.explicit`.

Modes (`check_symbolic`):

* ``bmc``: unroll the transitions from the initial states to depth k, one incremental query
  per depth and property (push/pop); the first satisfiable depth gives a *shortest*
  counterexample. Nothing found: verdict ``holds`` with a reason saying it is bounded.
* ``induction``: prove ``Inv = property /\\ lemmas`` inductive for every state of the model's
  size, reachable or not: *initial* (Init => Inv, one obligation per conjunct), *step* (for
  each transition family, Inv /\\ domain /\\ guard => Inv(post)), *property* (Inv => P).
  All unsat: ``proved`` (the reason names the size). A failed step gives a counterexample to
  induction (CTI, a state pair, which need not be reachable); the engine then runs BMC to
  `depth` looking for a real counterexample: ``violated`` with a trace if found, else
  ``unknown`` with the CTI.

Every z3 ``unknown`` (timeout, resource limit) makes the verdict ``unknown``, never a pass.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import z3

from checker.result import Result
from checker.trace import Step, Trace

ENGINE = "z3"
Mode = Literal["bmc", "induction"]
Pred = Callable[[Any], z3.BoolRef]


@dataclass
class SymStep:
    """One transition family from a symbolic state: enabled when `guard`, leading to `post`
    (same structure as the state, terms over the pre-state and `params`).

    `hints` are optional facts the model claims follow from the invariant, the domain and
    the guard (say, "this step leaves that sum's summands as they were"). A step obligation
    proves each hint first, as a query of its own, and gives the proven ones to the solver
    with the goal: a valid hint changes no answer, only how fast z3 finds it. A hint z3
    refutes, or cannot prove within the timeout, is left out. A proven hint that pins a
    term to a value (`t == v`, `not t`) also rewrites the query (`rewriter`)."""

    name: str
    guard: z3.BoolRef
    post: Any
    params: dict[str, z3.ExprRef] = field(default_factory=dict)
    hints: tuple[z3.BoolRef, ...] = ()


@dataclass(frozen=True)
class Lemma:
    """A named strengthening lemma: `pred(model, state)` is a z3 predicate."""

    name: str
    doc: str
    pred: Callable[[Any, Any], z3.BoolRef]


class SymbolicModel(Protocol):
    """What the engine needs from a symbolic model.

    Transition families and lemmas are duck-typed: anything with the attributes of
    `SymStep` / `Lemma` will do (a model package need not import the checker).

    Optional (looked up with getattr): ``transition(s, tag, name, case=None)`` builds one
    family only (faster proofs), restricted to one of its proof cases;
    ``cases(name, prop) -> list`` the cases a family's step obligation in the proof of
    `prop` is split into (they must cover the family; [None]: not split);
    ``concretize(states, actions, prop) -> (pairs, problem)`` turns decoded states/actions
    into a genuine run of the explicit model (a list of (action, state), the first action
    None) and says what disagrees ('' if nothing);
    without it the decoded states are the trace. ``concrete_model`` is attached to traces for
    rendering; ``describe_extra(ev, state) -> dict[str, str]`` shows ghost values in CTIs.
    """

    name: str

    def size_text(self) -> str: ...

    def fresh(self, tag: str) -> Any:
        """A state of fresh z3 constants, names prefixed by `tag`."""
        ...

    def leaves(self, s: Any) -> list[z3.ExprRef]:
        """The state's z3 terms in a fixed order."""
        ...

    def init(self, s: Any) -> z3.BoolRef: ...

    def domain(self, s: Any) -> z3.BoolRef:
        """Type and size constraints: what "any state of this size" ranges over."""
        ...

    def transitions(self, s: Any, tag: str) -> list[SymStep]: ...

    def property(self, name: str) -> Pred | None:
        """The z3 predicate of property `name`, None if not encoded."""
        ...

    def lemmas(self, name: str) -> list[Lemma]: ...

    def decode_state(self, ev: Callable[[z3.ExprRef], Any], s: Any) -> Any: ...

    def decode_action(self, ev: Callable[[z3.ExprRef], Any], step: SymStep) -> Any: ...


# --- helpers ---------------------------------------------------------------------------------


def _name(p: Any) -> str:
    return p if isinstance(p, str) else p.name


def evaluator(m: z3.ModelRef) -> Callable[[z3.ExprRef], Any]:
    """Evaluate a term in `m` to a Python bool or int (unconstrained parts completed)."""

    def ev(t: z3.ExprRef) -> Any:
        v = m.eval(t, model_completion=True)
        if z3.is_true(v):
            return True
        if z3.is_false(v):
            return False
        if z3.is_bv_value(v) or z3.is_int_value(v):
            return v.as_long()
        raise ValueError(f"cannot decode {t} = {v}")

    return ev


def _logic(sym: Any) -> str | None:
    return getattr(sym, "logic", "QF_BV")


def _solver(timeout: float, incremental: bool = False, logic: str | None = "QF_BV"
            ) -> z3.Solver:
    """A solver with a per-query timeout. Non-incremental QF_BV (bit-blasting to SAT) is
    several times faster on these encodings than the incremental SMT core that push/pop or
    assumptions switch z3 to (measured: 10 s against 92 s for the 8-step BMC query of the
    tiny preset), so a fresh one is the default for each query. A model whose `logic` is None
    (integer counts) gets z3's default solver."""
    s = z3.Solver() if incremental or logic is None else z3.SolverFor(logic)
    s.set("timeout", max(1, int(timeout * 1000)))
    return s


class _Unknown(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _checked(s: z3.Solver, what: str, *assumptions: z3.BoolRef) -> bool:
    """True when satisfiable; raises _Unknown when z3 cannot tell (timeout)."""
    r = s.check(*assumptions)
    if r == z3.unknown:
        raise _Unknown(f"z3 returned unknown on {what}: {s.reason_unknown()}")
    return r == z3.sat


class ProofCache:
    """Unsatisfiable queries remembered on disk, keyed by the SHA-256 of z3's version and the
    query's SMT-LIB text: a later query that is the very same formula (say, the same
    obligation for another variant whose transitions differ only where the invariant does
    not look) is known unsatisfiable without solving. Only unsat answers are kept (a sat
    answer is needed with its model), so the cache can save time but never change a result.
    Besides the queries solved, it keeps formulas shown unsat by their parts (`_question`): a
    step case all of whose conjunct queries were unsat, a family all of whose cases were, a
    goal all of whose parts were; so a second run skips the attempts that had timed out."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def key(self, solver: z3.Solver) -> str:
        text = z3.get_full_version() + "\n" + solver.sexpr()
        return hashlib.sha256(text.encode()).hexdigest()

    def known_unsat(self, key: str) -> bool:
        hit = (self.folder / key[:2] / key).exists()
        self.hits += hit
        self.misses += not hit
        return hit

    def remember(self, key: str) -> None:
        d = self.folder / key[:2]
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}"
        tmp.write_text("unsat\n")
        tmp.replace(d / key)  # atomic: concurrent workers never see half a file


CACHE: ProofCache | None = None  # set with `use_cache`; None: every query is solved


def use_cache(folder: str | Path | None) -> None:
    global CACHE
    CACHE = ProofCache(folder) if folder is not None else None


def _sat_model(s: z3.Solver, what: str) -> z3.ModelRef | None:
    """A model when satisfiable, None when not (from the cache if it knows the formula);
    _Unknown when z3 cannot tell."""
    key = CACHE.key(s) if CACHE is not None else ""
    if CACHE is not None and CACHE.known_unsat(key):
        return None
    if _checked(s, what):
        return s.model()
    if CACHE is not None:
        CACHE.remember(key)
    return None


def _question(sym: SymbolicModel, formulas: Sequence[z3.BoolRef]) -> str:
    """The cache key of a formula that is never solved as such: unsat exactly when some
    queries already answered are all unsat (a step case is valid when each conjunct of the
    invariant holds after it; a goal when each of its parts does). Remembering it lets a
    later run skip the attempts, timed out and so never cached, that led to those queries."""
    if CACHE is None:
        return ""
    solver = _solver(1.0, logic=_logic(sym))
    solver.add(*formulas)
    return CACHE.key(solver)


def _known_unsat(key: str) -> bool:
    return CACHE is not None and CACHE.known_unsat(key)


def _remember(key: str) -> None:
    if CACHE is not None:
        CACHE.remember(key)


def _trace(sym: SymbolicModel, prop: str, states: list[Any], actions: list[Any],
           concrete: bool = True, note: str = "") -> tuple[Trace, str]:
    """A Trace from decoded states/actions, through the model's `concretize` if it has one.
    Returns the trace and a problem text ('' when the concrete replay agreed)."""
    problem = ""
    conc = getattr(sym, "concretize", None)
    if conc is not None and concrete:
        pairs, problem = conc(states, actions, prop)
        steps = [Step(a, st) for a, st in pairs]
    else:
        steps = [Step(None if i == 0 else actions[i - 1], st) for i, st in enumerate(states)]
    model = getattr(sym, "concrete_model", None)
    return Trace(steps, property=prop, concrete=concrete, note=note, model=model), problem


# --- bounded model checking --------------------------------------------------------------


class Unrolling:
    """The transition relation unrolled step by step (constraints kept in a list; `query`
    solves them with one more constraint, incrementally or in a fresh solver)."""

    def __init__(self, sym: SymbolicModel, timeout: float, incremental: bool = False) -> None:
        self.sym = sym
        self.timeout = timeout
        self.incremental = incremental
        self.states = [sym.fresh("s0")]
        self.steps: list[tuple[z3.ExprRef, list[SymStep]]] = []
        self.constraints: list[z3.BoolRef] = [sym.init(self.states[0])]
        self.inc = _solver(timeout, True) if incremental else None
        if self.inc is not None:
            self.inc.add(self.constraints)

    def add(self, c: z3.BoolRef) -> None:
        self.constraints.append(c)
        if self.inc is not None:
            self.inc.add(c)

    def extend(self) -> None:
        """Add one step: s_k -> s_{k+1} by exactly one enabled transition family."""
        k = len(self.steps)
        pre, post = self.states[-1], self.sym.fresh(f"s{k + 1}")
        fams = self.sym.transitions(pre, f"a{k}")
        width = max(1, (len(fams) - 1).bit_length())
        sel = z3.BitVec(f"sel{k}", width)
        self.add(z3.Or([z3.And(sel == i, f.guard) for i, f in enumerate(fams)]))
        pre_l = self.sym.leaves(pre)
        post_l = self.sym.leaves(post)
        fam_l = [self.sym.leaves(f.post) for f in fams]
        eqs = []
        for j, (a, b) in enumerate(zip(pre_l, post_l, strict=True)):
            term = a
            for i, fl in enumerate(fam_l):
                if not fl[j].eq(a):  # only the families that change this leaf
                    term = z3.If(sel == i, fl[j], term)
            eqs.append(b == term)
        self.add(z3.And(eqs))
        self.states.append(post)
        self.steps.append((sel, fams))

    def query(self, what: str, goal: z3.BoolRef) -> z3.ModelRef | None:
        """A model of the unrolling with `goal`, None if unsatisfiable (_Unknown if z3
        cannot tell)."""
        if self.inc is not None:
            return self.inc.model() if _checked(self.inc, what, goal) else None
        s = _solver(self.timeout, logic=_logic(self.sym))
        s.add(self.constraints)
        s.add(goal)
        return s.model() if _checked(s, what) else None

    def decode(self, m: z3.ModelRef, upto: int) -> tuple[list[Any], list[Any]]:
        ev = evaluator(m)
        states = [self.sym.decode_state(ev, self.states[i]) for i in range(upto + 1)]
        actions = []
        for sel, fams in self.steps[:upto]:
            actions.append(self.sym.decode_action(ev, fams[ev(sel)]))
        return states, actions


def bmc(sym: SymbolicModel, properties: Sequence[Any], depth: int, timeout: float = 60.0,
        incremental: bool = False) -> list[Result]:
    """Bounded model checking of each property to `depth` steps; shortest traces. One query
    per depth and undecided property; `timeout` is per query."""
    t0 = time.monotonic()
    names = [_name(p) for p in properties]
    results: dict[str, Result] = {}
    preds: dict[str, Pred] = {}
    for n in names:
        p = sym.property(n)
        if p is None:
            results[n] = Result(n, "unknown", engine=ENGINE,
                                reason=f"{n} is not encoded in the symbolic model {sym.name}")
        else:
            preds[n] = p
    u = Unrolling(sym, timeout, incremental)
    reached = 0
    try:
        for k in range(depth + 1):
            if k:
                u.extend()
            reached = k
            while True:  # one query for all undecided properties at this depth
                open_ = [n for n in names if n in preds and n not in results]
                if not open_:
                    break
                bad = {n: z3.Not(preds[n](u.states[k])) for n in open_}
                model = u.query(f"{', '.join(open_)} at depth {k}", z3.Or(list(bad.values())))
                if model is None:
                    break
                ev = evaluator(model)
                states, actions = u.decode(model, k)
                for n in [n for n in open_ if ev(bad[n])]:  # this run breaks each of these
                    tr, problem = _trace(sym, n, states, actions)
                    el = time.monotonic() - t0
                    if problem:
                        results[n] = Result(n, "unknown", depth=k, seconds=el, trace=tr,
                                            engine=ENGINE, reason="the symbolic "
                                            f"counterexample does not replay: {problem}")
                    else:
                        results[n] = Result(n, "violated", depth=k, seconds=el, trace=tr,
                                            engine=ENGINE, reason=f"BMC found a {k}-step "
                                            f"counterexample ({sym.size_text()})")
            if all(n in results for n in names):
                break
    except _Unknown as e:
        for n in names:
            results.setdefault(n, Result(n, "unknown", depth=reached,
                                         seconds=time.monotonic() - t0, engine=ENGINE,
                                         reason=e.reason))
    el = time.monotonic() - t0
    for n in names:
        results.setdefault(n, Result(
            n, "holds", depth=reached, seconds=el, engine=ENGINE,
            reason=f"bounded: no violation in runs of up to {reached} steps "
                   f"({sym.size_text()}); not a proof"))
    return [results[n] for n in names]


# --- induction -------------------------------------------------------------------------------


@dataclass
class Obligation:
    """One proof obligation of an inductive proof.

    kind ``initial`` (`part` a conjunct of the invariant), ``step`` (`part` a transition
    family) or ``property`` (`part` the property)."""

    kind: Literal["initial", "step", "property"]
    part: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.part}"


@dataclass
class ObligationResult:
    obligation: Obligation
    status: Literal["valid", "failed", "unknown"]
    seconds: float
    detail: str = ""  # which conjunct broke, or z3's reason for unknown
    cti: Trace | None = None  # for a failed step: the (pre, post) pair
    worker: str = ""  # where it was decided, on a cluster (node/pid)
    cpu: float = 0.0  # CPU seconds of the process that decided it (wall time: `seconds`)


def invariant_parts(sym: SymbolicModel, prop: str) -> list[tuple[str, Pred]]:
    """The conjuncts of the inductive invariant: the property, then the lemmas."""
    p = sym.property(prop)
    if p is None:
        raise KeyError(f"{prop} is not encoded in the symbolic model {sym.name}")
    parts: list[tuple[str, Pred]] = [(prop, p)]
    for lem in sym.lemmas(prop):
        parts.append((lem.name, (lambda s, _l=lem: _l.pred(sym, s))))
    return parts


def obligations(sym: SymbolicModel, prop: str) -> list[Obligation]:
    """Every obligation of the inductive proof of `prop` at the model's size."""
    parts = invariant_parts(sym, prop)
    names = getattr(sym, "family_names", None)
    fams = (names() if names is not None
            else [f.name for f in sym.transitions(sym.fresh("probe"), "probe")])
    return ([Obligation("initial", n) for n, _ in parts]
            + [Obligation("step", f) for f in fams]
            + [Obligation("property", prop)])


def check_obligation(sym: SymbolicModel, prop: str, ob: Obligation, timeout: float = 60.0
                     ) -> ObligationResult:
    """Discharge one obligation (unsat = valid). A step obligation is one query per case
    the model splits the family into (`cases`, if it has it) and per invariant conjunct;
    `timeout` applies to each query."""
    c0 = time.process_time()  # z3 runs in this thread: its CPU time is this process's
    r = _check_obligation(sym, prop, ob, timeout)
    r.cpu = time.process_time() - c0
    return r


def _check_obligation(sym: SymbolicModel, prop: str, ob: Obligation, timeout: float
                      ) -> ObligationResult:
    t0 = time.monotonic()
    parts = invariant_parts(sym, prop)
    solver = _solver(timeout, logic=_logic(sym))
    s = sym.fresh("pre")
    try:
        if ob.kind == "initial":
            pred = dict(parts)[ob.part]
            solver.add(sym.init(s), sym.domain(s), z3.Not(pred(s)))
            if _sat_model(solver, ob.id) is not None:
                return ObligationResult(ob, "failed", time.monotonic() - t0,
                                        f"an initial state violates {ob.part}")
            return ObligationResult(ob, "valid", time.monotonic() - t0)
        inv = z3.And([p(s) for _, p in parts])
        solver.add(sym.domain(s), inv)
        if ob.kind == "property":
            solver.add(z3.Not(dict(parts)[ob.part](s)))
            if _sat_model(solver, ob.id) is not None:
                return ObligationResult(ob, "failed", time.monotonic() - t0,
                                        "the invariant does not imply the property")
            return ObligationResult(ob, "valid", time.monotonic() - t0)
        cases = getattr(sym, "cases", None)
        split = cases(ob.part, prop) if cases is not None else [None]
        todo = parts
        if split != [None]:  # each conjunct for the whole family first, briefly
            todo = _family_first(sym, parts, s, inv, ob, timeout)
            split = split if todo else []
        for case in split:
            bad = _step_case(sym, prop, parts, s, inv, ob, case, timeout, todo)
            if bad is not None:
                bad.seconds = time.monotonic() - t0
                return bad
        if CACHE is not None and split != [None]:
            # the cases cover the family (the proof itself rests on that), so the whole
            # family's question, asked first by _step_case(None) in a later run, is unsat
            _remember(_step_question(sym, parts, s, inv, ob, None))
        return ObligationResult(ob, "valid", time.monotonic() - t0)
    except _Unknown as e:
        return ObligationResult(ob, "unknown", time.monotonic() - t0, e.reason)


def _family(sym: SymbolicModel, s: Any, ob: Obligation, case: Any) -> SymStep:
    one = getattr(sym, "transition", None)
    if one is not None:
        return one(s, "a", ob.part, case) if case is not None else one(s, "a", ob.part)
    return next(f for f in sym.transitions(s, "a") if f.name == ob.part)


def _case_question(sym: SymbolicModel, parts: list[tuple[str, Pred]], s: Any,
                   inv: z3.BoolRef, fam: SymStep) -> str:
    """Key of 'some conjunct of the invariant fails after this step': unsat iff valid."""
    return _question(sym, [_domain(sym, s), inv, fam.guard,
                           z3.Not(z3.And([pred(fam.post) for _, pred in parts]))])


def _step_question(sym: SymbolicModel, parts: list[tuple[str, Pred]], s: Any,
                   inv: z3.BoolRef, ob: Obligation, case: Any) -> str:
    return _case_question(sym, parts, s, inv, _family(sym, s, ob, case))


# what each invariant conjunct gets for a whole split family: z3 resource units (about 2 s
# of CPU here), with a timeout in seconds only as a backstop
FAMILY_RLIMIT, FAMILY_QUICK = 8_000_000, 60.0


def _family_first(sym: SymbolicModel, parts: list[tuple[str, Pred]], s: Any, inv: z3.BoolRef,
                  ob: Obligation, timeout: float) -> list[tuple[str, Pred]]:
    """The conjuncts a family the model splits into cases still needs case by case: each is
    tried once for the whole family, briefly (FAMILY_RLIMIT), in one incremental solver; one
    the step does not touch, or one z3 sees at once, is then done for every case (the cases
    only cover the family). A conjunct the family breaks is left to the cases, which find
    the counterexample."""
    fam = _family(sym, s, ob, None)
    if CACHE is not None and _known_unsat(_case_question(sym, parts, s, inv, fam)):
        return []
    guard, rewrite = _proven_facts(sym, s, inv, fam, timeout, ob.id)
    batch = _Batch(lambda: _hyps(sym, s, inv, guard, rewrite))
    quick = min(FAMILY_QUICK, timeout)
    left = []
    for name, pred in parts:
        try:
            if batch.refute(rewrite(pred(fam.post)), quick, f"{ob.id} ({name})",
                            FAMILY_RLIMIT) is None:
                continue
        except _Unknown:
            pass
        left.append((name, pred))
    return left


def _proven_facts(sym: SymbolicModel, s: Any, inv: z3.BoolRef, fam: SymStep, timeout: float,
                  where: str) -> tuple[z3.BoolRef, Callable[[z3.BoolRef], z3.BoolRef]]:
    """The step's guard with its hints that z3 proves (one incremental solver for them
    all), and the rewriting those proven facts allow (`rewriter`)."""
    facts = [fam.guard]
    proving = _Batch(lambda: _hyps(sym, s, inv, fam.guard, lambda e: e))
    given = _given_hints(fam)
    for i, hint in enumerate(getattr(fam, "hints", ())):
        if any(hint.eq(h) for h in given):
            facts.append(hint)  # what the case pins (its phase, say) is in the guard itself
            continue
        try:
            if _refute(sym, s, inv, fam.guard, hint, timeout, f"{where} (hint {i})",
                       batch=proving) is None:
                facts.append(hint)  # proven: it may help, it cannot change an answer
        except _Unknown:
            pass  # unproven: left out
    return z3.And(facts), rewriter(facts[1:])


def _given_hints(fam: SymStep) -> list[z3.BoolRef]:
    """The step's hints that are conjuncts of its guard: true without a proof."""
    conj = {c.get_id(): c for c in _conjuncts(fam.guard)}
    return [h for h in getattr(fam, "hints", ())
            if h.get_id() in conj and conj[h.get_id()].eq(h)]


def _step_case(sym: SymbolicModel, prop: str, parts: list[tuple[str, Pred]], s: Any,
               inv: z3.BoolRef, ob: Obligation, case: Any, timeout: float,
               todo: list[tuple[str, Pred]] | None = None) -> ObligationResult | None:
    """One case of a step obligation: None when valid, else the failure (with its CTI).
    `todo`: the conjuncts still to check (the others hold for the whole family)."""
    fam = _family(sym, s, ob, case)
    question = _case_question(sym, parts, s, inv, fam) if CACHE is not None else ""
    if question and _known_unsat(question):
        return None
    # each conjunct's goal after the step, built once (a lemma's terms take a while)
    goals = [(name, pred(fam.post)) for name, pred in (parts if todo is None else todo)]
    if case is not None and todo:
        # what the case pins in its guard (say, `clean` false) may make every goal left
        # plainly true: then neither the other hints nor the invariant need a solver
        pinned = rewriter(_given_hints(fam))
        if all(z3.is_true(pinned(goal)) for _, goal in goals):
            _remember(question)
            return None
    where = f"{ob.id}" + (f" case {case}" if case is not None else "")
    guard, rewrite = _proven_facts(sym, s, inv, fam, timeout, where)
    # a case's parts are many and, rewritten, mostly easy: one incremental solver for them
    batch = _Batch(lambda: _hyps(sym, s, inv, guard, rewrite)) if case is not None else None
    # one query per conjunct: several small queries are far cheaper than their disjunction
    for name, goal in goals:
        model = _refute(sym, s, inv, guard, goal, timeout, f"{where} ({name})",
                        rewrite, batch)
        if model is None:
            continue
        ev = evaluator(model)
        pre_c, post_c = sym.decode_state(ev, s), sym.decode_state(ev, fam.post)
        act = sym.decode_action(ev, fam)
        note = (f"counterexample to induction: a state satisfying the invariant (not "
                f"necessarily reachable) whose {ob.part} successor breaks {name}")
        detail = f"{ob.part} breaks {name}" + (f" (case {case})" if case is not None else "")
        extra = getattr(sym, "describe_extra", None)
        if extra is not None:  # ghost values the decoded states may not show
            ex_pre, ex_post = extra(ev, s), extra(ev, fam.post)
            diff = [f"{k}: {ex_pre.get(k)} -> {v}" for k, v in ex_post.items()
                    if ex_pre.get(k) != v]
            if diff:
                detail += " [" + "; ".join(diff) + "]"
            note += ("\n      ghosts before: " + ", ".join(f"{k}={v}" for k, v in ex_pre.items())
                     + "\n      ghosts after:  "
                     + ", ".join(f"{k}={v}" for k, v in ex_post.items()))
        tr, _ = _trace(sym, prop, [pre_c, post_c], [act], concrete=False, note=note)
        return ObligationResult(ob, "failed", 0.0, detail, tr)
    _remember(question)
    return None


QUICK = 10.0  # seconds a part of a goal gets before the whole goal gets the full timeout


def _conjuncts(e: z3.BoolRef) -> list[z3.BoolRef]:
    """The leaves of the nested Ands of `e`."""
    out, todo = [], [e]
    while todo:
        x = todo.pop()
        if z3.is_and(x):
            todo.extend(x.children())
        else:
            out.append(x)
    return out


def split_conjuncts(e: z3.BoolRef) -> list[z3.BoolRef]:
    """The top-level conjuncts of `e`: the children of an And; `a => (b and c)` as `a => b`,
    `a => c`; `not (b or c)` as `not b`, `not c`; recursively. Their conjunction is `e`."""
    if z3.is_and(e):
        return [p for c in e.children() for p in split_conjuncts(c)]
    if z3.is_implies(e):
        a, b = e.children()
        parts = split_conjuncts(b)
        return [z3.Implies(a, p) for p in parts] if len(parts) > 1 else [e]
    if z3.is_not(e) and z3.is_or(e.arg(0)):
        return [p for c in e.arg(0).children() for p in split_conjuncts(z3.Not(c))]
    return [e]


_INV_PARTS: list[tuple[z3.BoolRef, list[z3.BoolRef]]] = []  # the last invariant split


def _inv_parts(inv: z3.BoolRef) -> list[z3.BoolRef]:
    """`split_conjuncts(inv)`, split once for all the cases of an obligation."""
    if not (_INV_PARTS and _INV_PARTS[0][0].eq(inv)):
        _INV_PARTS[:] = [(inv, split_conjuncts(inv))]
    return _INV_PARTS[0][1]


def _is_value(e: z3.ExprRef) -> bool:
    return z3.is_true(e) or z3.is_false(e) or z3.is_bv_value(e) or z3.is_int_value(e)


def rewriter(facts: Sequence[z3.BoolRef]) -> Callable[[z3.BoolRef], z3.BoolRef]:
    """A rewriting of queries by proven facts: each equation `t == u` replaces t by u
    wherever it occurs (first those where u is a term, then those where u is a value, so
    that a term can be carried to another and that one to a value); `not t` and a Boolean
    constant `t` pin t to false and true. The result is simplified. The facts stay in the
    query, which is therefore equisatisfiable with the one rewritten (Q and t = v is
    equivalent to Q[t := v] and t = v), so an answer is unchanged and a model still is one of
    the original query. What it buys: a sum over fd slots whose summands mention a table
    the facts say no inside task holds loses those summands on both sides of a step, and the
    two sums become the same term, so z3 needs no arithmetic to see they are equal."""
    terms: list[tuple[z3.ExprRef, z3.ExprRef]] = []  # t == u, u not a value: t := u first
    values: list[tuple[z3.ExprRef, z3.ExprRef]] = []  # then the terms pinned to values
    for f in facts:
        if z3.is_eq(f):
            t, u = f.arg(0), f.arg(1)
            if _is_value(t) and not _is_value(u):  # z3 writes `x == 2` as `2 == x`
                t, u = u, t
            (values if _is_value(u) else terms).append((t, u))
        elif z3.is_not(f):
            values.append((f.arg(0), z3.BoolVal(False)))
        elif z3.is_const(f) and f.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            values.append((f, z3.BoolVal(True)))
    memo: dict[int, tuple[z3.BoolRef, z3.BoolRef]] = {}  # id -> (formula kept alive, result)
    by_terms, by_values = _substitution(terms), _substitution(values)

    def rw(e: z3.BoolRef) -> z3.BoolRef:
        if not values and not terms:
            return e
        hit = memo.get(e.get_id())
        if hit is None or not hit[0].eq(e):
            hit = memo[e.get_id()] = (e, z3.simplify(by_values(by_terms(e))))
        return hit[1]

    return rw


def _substitution(pairs: list[tuple[z3.ExprRef, z3.ExprRef]]
                  ) -> Callable[[z3.ExprRef], z3.ExprRef]:
    """`z3.substitute(e, *pairs)` with the pairs' arrays built once: the wrapper checks
    and converts every pair at each call, which was most of a proof case's time (thousands
    of invariant parts rewritten by the same few dozen pairs). The pairs come from
    equations, so their sorts agree."""
    if not pairs:
        return lambda e: e
    n = len(pairs)
    src, dst = (z3.Ast * n)(), (z3.Ast * n)()
    for i, (a, b) in enumerate(pairs):
        src[i], dst[i] = a.as_ast(), b.as_ast()
    ctx = pairs[0][0].ctx

    def sub(e: z3.ExprRef, _keep: Any = pairs) -> z3.ExprRef:  # _keep: the terms stay alive
        return z3.z3._to_expr_ref(z3.Z3_substitute(ctx.ref(), e.as_ast(), n, src, dst), ctx)

    return sub


class _Batch:
    """One incremental solver holding a query's hypotheses (domain, invariant, guard), each
    goal checked under an assumption literal of its own: z3 preprocesses the hypotheses
    once and keeps what it learns, so the many small goals of a step case (its conjuncts'
    parts) cost a fraction of a fresh solver each (at 2 + 2 tasks, 8 fds and 8 files: 1.3 s
    against 13 s for the 60 parts of one case of open). Not cached query by query: the
    caller remembers the formulas shown unsat as a whole."""

    def __init__(self, hyps: Callable[[], Sequence[z3.BoolRef]]) -> None:
        # built at the first goal that is not plainly true: a case whose goals all rewrite
        # to true (say, the completeness lemmas in a case where `clean` is false) then costs
        # neither the rewriting of the invariant nor a solver
        self._hyps = hyps
        self._solver: z3.Solver | None = None
        self.n = 0
        # the hypotheses' conjuncts (kept, so that their ids stay theirs): a goal that is
        # one of them holds without asking z3 (which can take seconds to see it over sums)
        self.known: dict[int, z3.BoolRef] = {}

    def ready(self) -> z3.Solver:
        """The solver, with the hypotheses added (and `known` filled) on first use."""
        if self._solver is None:
            hyps = self._hyps()
            self._solver = _solver(QUICK, incremental=True)
            self._solver.add(*hyps)
            self.known = {e.get_id(): e for h in hyps for e in _conjuncts(h)}
        return self._solver

    def plain(self, goal: z3.BoolRef) -> bool:
        """The goal holds without asking z3: it is true, or one of the hypotheses."""
        if z3.is_true(goal):
            return True
        self.ready()
        same = self.known.get(goal.get_id())
        return same is not None and same.eq(goal)

    def refute(self, goal: z3.BoolRef, timeout: float, what: str, rlimit: int = 0
               ) -> z3.ModelRef | None:
        """A model of the hypotheses and not goal, None if there is none; _Unknown if z3
        cannot tell within `timeout` seconds (or `rlimit` of z3's resource units, if set:
        a budget that does not depend on the machine's load)."""
        if self.plain(goal):
            return None
        solver = self.ready()
        lit = z3.Bool(f"crmodel!goal{self.n}")
        self.n += 1
        solver.add(z3.Implies(lit, z3.Not(goal)))
        solver.set("timeout", max(1, int(timeout * 1000)))
        solver.set("rlimit", rlimit)
        return solver.model() if _checked(solver, what, lit) else None


def _refute(sym: SymbolicModel, s: Any, inv: z3.BoolRef, guard: z3.BoolRef,
            goal: z3.BoolRef, timeout: float, what: str,
            rewrite: Callable[[z3.BoolRef], z3.BoolRef] | None = None,
            batch: _Batch | None = None) -> z3.ModelRef | None:
    """A model of domain and inv and guard and not goal; None if there is none. The goal is
    split (`split_conjuncts`) and each part gets QUICK seconds, in the incremental solver
    `batch` if given (it must hold these hypotheses; a step case's many easy parts), else
    after the whole goal's own QUICK seconds, each in a fresh solver; a part left
    undecided makes the whole goal get the full timeout in a fresh solver, and then each
    such part; _Unknown if one stays undecided. `rewrite` (see `rewriter`), if given, is
    applied to every formula of the query, goal parts after the split."""
    rw = rewrite if rewrite is not None else (lambda e: e)

    def attempt(g: z3.BoolRef, t: float) -> z3.ModelRef | None:
        solver = _solver(t, logic=_logic(sym))
        solver.add(*_hyps(sym, s, inv, guard, rw), z3.Not(rw(g)))
        return _sat_model(solver, what)

    pieces = split_conjuncts(goal)
    if len(pieces) == 1 and batch is None:
        return attempt(goal, timeout)
    whole = _question(sym, [_domain(sym, s), inv, guard, z3.Not(goal)])
    if whole and _known_unsat(whole):  # the parts are not cached one by one
        return None
    quick = min(QUICK, timeout)
    if batch is None:  # not a step case's: the whole goal first, briefly
        try:
            return attempt(goal, quick)
        except _Unknown:
            pass
    undecided = []
    for g in pieces:
        try:
            model = (batch.refute(rw(g), quick, what) if batch is not None
                     else attempt(g, quick))
        except _Unknown:
            undecided.append(g)
            continue
        if model is not None:
            return model
    if not undecided:  # every part unsat, so the goal, their conjunction, holds
        _remember(whole)
        return None
    # some part is as hard as the whole, perhaps (parts sharing one hard core: splitting
    # only repeats it): the whole gets the full timeout, and only then the undecided parts
    try:
        return attempt(goal, timeout)
    except _Unknown:
        if len(pieces) == 1:
            raise
    for g in undecided:
        model = attempt(g, timeout)
        if model is not None:
            return model
    _remember(whole)
    return None


def _hyps(sym: SymbolicModel, s: Any, inv: z3.BoolRef, guard: z3.BoolRef,
          rw: Callable[[z3.BoolRef], z3.BoolRef]) -> list[z3.BoolRef]:
    """A step query's hypotheses, rewritten by `rw`; the guard (which holds the facts the
    rewriting rests on) also as it is. The invariant is rewritten conjunct by conjunct
    (`split_conjuncts`), as the goals are: simplified alone, a conjunct of the invariant and
    the same conjunct after a step that does not touch it are then the same term (within the
    whole invariant, the simplifier may shape it otherwise)."""
    g = rw(guard)
    ri = inv if g is guard else z3.And([rw(p) for p in _inv_parts(inv)])
    return [rw(_domain(sym, s)), ri, guard] + ([] if g.eq(guard) else [g])


_DOMAIN: list[tuple[Any, Any, z3.BoolRef]] = []  # the last (model, state, domain) built


def _domain(sym: SymbolicModel, s: Any) -> z3.BoolRef:
    """`sym.domain(s)`, built once for the state an obligation asks about (a step case asks
    for it in every query)."""
    if not (_DOMAIN and _DOMAIN[0][0] is sym and _DOMAIN[0][1] is s):
        _DOMAIN[:] = [(sym, s, sym.domain(s))]
    return _DOMAIN[0][2]


def prove(sym: SymbolicModel, prop: str, timeout: float = 60.0, stop_at_failure: bool = True
          ) -> tuple[bool, list[ObligationResult]]:
    """Check every obligation; (all valid, the results)."""
    out: list[ObligationResult] = []
    for ob in obligations(sym, prop):
        r = check_obligation(sym, prop, ob, timeout)
        out.append(r)
        if r.status != "valid" and stop_at_failure:
            return False, out
    return all(r.status == "valid" for r in out), out


_WORKER: dict[str, Any] = {}


def _worker_init(factory: Callable[..., SymbolicModel], args: tuple,
                 cache: str | None) -> None:
    _WORKER["sym"] = factory(*args)  # z3 terms do not cross processes: each builds its own
    use_cache(cache)


def _worker_check(job: tuple[str, Obligation, float]) -> tuple[ObligationResult, int, int]:
    prop, ob, timeout = job
    before = (CACHE.hits, CACHE.misses) if CACHE is not None else (0, 0)
    r = check_obligation(_WORKER["sym"], prop, ob, timeout)
    if r.cti is not None:
        r.cti.model = None  # rendered by the caller
    after = (CACHE.hits, CACHE.misses) if CACHE is not None else (0, 0)
    return r, after[0] - before[0], after[1] - before[1]


def _worker_check_at(job: tuple[int, tuple[str, Obligation, float]]
                     ) -> tuple[int, tuple[ObligationResult, int, int]]:
    return job[0], _worker_check(job[1])


def progress_text(r: ObligationResult, done: int, total: int) -> str:
    """One obligation decided, for a progress line: `3/28 obligations, step:open valid in
    0.1s`."""
    text = (f"{done}/{total} obligations, {r.obligation.id} {r.status} in {r.seconds:.1f}s"
            + (f" ({r.cpu:.1f}s CPU)" if r.cpu else ""))
    return text + (f" on {r.worker}" if r.worker else "")


def prove_parallel(factory: Callable[..., SymbolicModel], args: tuple, prop: str,
                   timeout: float = 60.0, jobs: int = 2,
                   on_result: Callable[[ObligationResult, int, int], None] | None = None
                   ) -> tuple[bool, list[ObligationResult]]:
    """`prove` with the obligations shared among `jobs` processes (each builds the model with
    `factory(*args)`); every obligation is checked; the results are in obligation order,
    the valid ones first and then the others (so a caller reports the last as the failure).
    `on_result(result, done, total)` is called as each obligation is decided (progress)."""
    import multiprocessing

    sym = factory(*args)
    obs = obligations(sym, prop)
    if jobs <= 1:
        out = []
        for ob in obs:
            out.append(check_obligation(sym, prop, ob, timeout))
            if on_result is not None:
                on_result(out[-1], len(out), len(obs))
    else:
        ctx = multiprocessing.get_context("spawn")  # a fresh z3 per worker, nothing shared
        order = sorted(range(len(obs)), key=lambda i: _rank(sym, prop, obs[i]))
        cache = str(CACHE.folder) if CACHE is not None else None
        with ctx.Pool(jobs, _worker_init, (factory, args, cache)) as pool:
            done: dict[int, tuple[ObligationResult, int, int]] = {}
            # unordered: each obligation reported as soon as it is decided (a slow first
            # step would otherwise hold back every line after it for many minutes)
            for i, d in pool.imap_unordered(_worker_check_at,
                                            [(i, (prop, obs[i], timeout)) for i in order],
                                            chunksize=1):
                done[i] = d
                if on_result is not None:
                    on_result(d[0], len(done), len(obs))
        return assemble(sym, obs, done)
    return _ordered(sym, out)


def _rank(sym: SymbolicModel, prop: str, ob: Obligation) -> int:
    """Where an obligation goes in the queue of `prove_parallel`, slow ones first: a step
    family the model does not split into cases (a checkpoint step: one long query per
    conjunct, the longest of a leak proof at 8 and 8), then the other steps, then the rest;
    so the longest runs beside the others instead of after them."""
    if ob.kind != "step":
        return 2
    cases = getattr(sym, "cases", None)
    return 0 if cases is None or cases(ob.part, prop) == [None] else 1


def assemble(sym: SymbolicModel, obs: Sequence[Obligation],
             done: dict[int, tuple[ObligationResult, int, int]]
             ) -> tuple[bool, list[ObligationResult]]:
    """What workers returned (obligation index -> result, cache hits, cache misses) as
    `prove_parallel` returns it; the workers' cache figures are added to `CACHE`'s."""
    if CACHE is not None:  # the workers' figures, so the caller can report them
        CACHE.hits += sum(d[1] for d in done.values())
        CACHE.misses += sum(d[2] for d in done.values())
    return _ordered(sym, [done[i][0] for i in range(len(obs))])


def _ordered(sym: SymbolicModel, out: list[ObligationResult]
             ) -> tuple[bool, list[ObligationResult]]:
    model = getattr(sym, "concrete_model", None)
    for r in out:
        if r.cti is not None:
            r.cti.model = model
    bad = [r for r in out if r.status != "valid"]
    return not bad, [r for r in out if r.status == "valid"] + bad


def induction(sym: SymbolicModel, properties: Sequence[Any], depth: int = 0,
              timeout: float = 60.0) -> list[Result]:
    """Inductive proof of each property at the model's size; on failure, BMC to `depth` for a
    real counterexample, else `unknown` with the counterexample to induction."""
    results = []
    for p in properties:
        n = _name(p)
        t0 = time.monotonic()
        if sym.property(n) is None:
            results.append(Result(n, "unknown", engine=ENGINE,
                                  reason=f"{n} is not encoded in the symbolic model {sym.name}"))
            continue
        ok, obs = prove(sym, n, timeout)
        el = time.monotonic() - t0
        if ok:
            lemmas = [lem.name for lem in sym.lemmas(n)]
            results.append(Result(
                n, "proved", seconds=el, engine=ENGINE, kind="invariant",
                reason=f"inductive for every state of size {sym.size_text()}, reachable or "
                       f"not ({len(obs)} obligations; lemmas: {', '.join(lemmas) or 'none'})"))
            continue
        bad = obs[-1]
        why = (f"not proved: obligation {bad.obligation.id} {bad.status}"
               + (f" ({bad.detail})" if bad.detail else ""))
        if depth > 0:
            r = bmc(sym, [n], depth, timeout)[0]
            if r.verdict == "violated":
                r.reason = f"{why}; {r.reason}"
                r.seconds += el
                results.append(r)
                continue
            why += f"; BMC to depth {depth}: {r.verdict}"
        results.append(Result(n, "unknown", seconds=time.monotonic() - t0, engine=ENGINE,
                              trace=bad.cti, reason=why))
    return results


def check_symbolic(sym: SymbolicModel, properties: Iterable[Any], *, mode: Mode = "bmc",
                   depth: int = 10, timeout: float = 60.0) -> list[Result]:
    """Check `properties` (names, or objects with a `name`) on a symbolic model.

    mode ``bmc``: verdicts ``violated`` (shortest trace) / ``holds`` (bounded, to `depth`) /
    ``unknown``; mode ``induction``: ``proved`` / ``violated`` (BMC to `depth` after a failed
    proof) / ``unknown`` (with the counterexample to induction). `timeout` is per z3 query."""
    props = list(properties)
    if mode == "bmc":
        return bmc(sym, props, depth, timeout)
    if mode == "induction":
        return induction(sym, props, depth, timeout)
    raise ValueError(f"mode must be 'bmc' or 'induction', not {mode!r}")


def benchmark(factory: Callable[..., SymbolicModel], sizes: Iterable[Any],
              properties: Sequence[str], timeout: float = 60.0,
              out: Callable[[str], None] = print, args: tuple = (), jobs: int = 1,
              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Prove each property at each size (`factory(size, *args)` builds the model; with
    `jobs` > 1 the obligations are shared among that many processes, so `factory` must be
    picklable); print and return one row per (size, property): verdict, wall seconds, CPU
    seconds summed over the processes, slowest obligation (by CPU). `progress`, if given,
    gets a line per obligation as it is decided."""
    rows = []
    for size in sizes:
        sym = factory(size, *args)
        for p in properties:
            t0 = time.monotonic()
            told = None if progress is None else (
                lambda r, done, total, _p=p: progress(
                    f"  {_p}: {progress_text(r, done, total)}"))
            ok, obs = prove_parallel(factory, (size, *args), p, timeout, jobs, told)
            el = time.monotonic() - t0
            slow = max(obs, key=lambda r: r.cpu)
            cpu = sum(r.cpu for r in obs)
            row = {"size": sym.size_text(), "property": p, "verdict": "proved" if ok else
                   f"not proved ({obs[-1].obligation.id} {obs[-1].status})",
                   "seconds": round(el, 2), "cpu": round(cpu, 2), "obligations": len(obs),
                   "slowest": f"{slow.obligation.id} {slow.cpu:.1f}s CPU, "
                              f"{slow.seconds:.1f}s wall"}
            rows.append(row)
            out(f"{row['size']:<60} {p:<32} {row['verdict']:<12} {el:7.2f}s wall, "
                f"{cpu:7.2f}s CPU ({len(obs)} obligations, slowest {row['slowest']})")
    return rows
