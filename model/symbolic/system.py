"""The symbolic model (twin of `model.system.CrModel`): one design variant at one size,
the interface `checker.symbolic` drives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any

import z3

from model.actions import ACTIONS, DOMAINS, PARAMS
from model.config import ENV_ACTIONS, Config
from model.image import MALFORMED, T_BAD_NFDS, T_FMODE_DOWN
from model.state import (
    DONE,
    FAILED,
    RESTARTED,
    World,
)
from model.symbolic.checkpoint import Checkpoint
from model.symbolic.counts import View
from model.symbolic.decode import decode_values, evtree, summary
from model.symbolic.env import Env
from model.symbolic.restart import restart, tamper
from model.symbolic.sockets import SOCKET_STEPS
from model.symbolic.state import (
    CAN_POLL,
    CKPT_ACTIONS,
    COVERED_ACTIONS,
    COVERED_KINDS,
    HAS_FASYNC,
    IMG_GHOSTS,
    NEW_TABLE_ACTIONS,
    OBJ_KINDS_SYM,
    PHASES,
    RACE_PHASES,
    RESTORE_GHOSTS,
    SOCK_CAN_POLL,
    SOCK_HAS_FASYNC,
    SOCK_OBJ_KINDS,
    SOCK_VALID_KINDS,
    SOCKET_ACTIONS,
    STATUS_FLAGS,
    VALID_KINDS,
    Domains,
    Sizes,
    State,
    Transition,
    covered_config,
    domains_of,
)
from model.symbolic.terms import EW, FW, KW, PW, TRUE, all_, bits, in_, is_, lt, member, subsets
from model.variants import Variant


class CrSymModel:
    """Symbolic crmodel under one design variant, at one size (see the module docstring)."""

    def __init__(self, sizes: Sizes, variant: Variant, dom: Domains | None = None,
                 cfg: Config | None = None, counts: str = "bv",
                 lemmas: Callable[[str], list[Any]] | None = None,
                 predicates: Mapping[str, Callable[[World], bool]] | None = None) -> None:
        """`lemmas(name)`: the strengthening lemmas of a property's proof (none if not
        given); `predicates`: the explicit predicate of each property, by name, with which
        `concretize` checks a replayed counterexample (both come from `specs`)."""
        self.sizes, self.v = sizes, variant
        self._lemmas, self._predicates = lemmas, predicates or {}
        self.dom = dom or Domains()
        self.NT, self.ND, self.NF = sizes.tasks, sizes.fds, sizes.files
        self.NI, self.NO = sizes.inside, sizes.outside
        # unix sockets: Q in-flight messages per queue (0: none, and no term mentions them)
        self.Q = sizes.queue
        self.wQ = bits(self.Q + 1)
        self.env_actions = COVERED_ACTIONS + (SOCKET_ACTIONS if self.Q else ())
        self.valid_kinds = SOCK_VALID_KINDS if self.Q else VALID_KINDS
        self.obj_kinds = SOCK_OBJ_KINDS if self.Q else OBJ_KINDS_SYM
        self.has_fasync = SOCK_HAS_FASYNC if self.Q else HAS_FASYNC
        self.can_poll = SOCK_CAN_POLL if self.Q else CAN_POLL
        self.wT, self.wD, self.wF = bits(self.NT), bits(self.ND), bits(self.NF)
        self.wP, self.wO = bits(self.dom.paths), bits(self.dom.offsets)
        # counts (users, refcounts): 8-bit vectors (12 under collect_every, whose sums are
        # products) keep everything in QF_BV, fastest for BMC; integers make the counting
        # arguments of the proofs linear arithmetic, which SAT on adders is bad at
        if counts not in ("bv", "int"):
            raise ValueError("counts must be 'bv' or 'int'")
        self.CW = 0 if counts == "int" else 12 if variant.collect_every else 8
        self.logic = "QF_BV" if self.CW else None  # the solver the engine should use
        self.name = f"crmodel-z3[{variant.name}]"
        self._views: dict[int, tuple[State, View]] = {}
        self._cfg = cfg
        if self.NT < 1 or self.ND < 1 or self.NF < 1 or self.NO < 1:
            raise ValueError("sizes: need at least one outside task, one fd and one file")
        self.open_flags = (self.dom.open_flags if self.dom.open_flags is not None
                           else subsets(STATUS_FLAGS))
        self.setfl_flags = (self.dom.setfl_flags if self.dom.setfl_flags is not None
                            else subsets(STATUS_FLAGS))

    # --- shapes ----------------------------------------------------------------------------

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str, int]]:
        """name -> (dims, 'bool' | 'bv', width)."""
        NT, ND, NF, CW = self.NT, self.ND, self.NF, self.CW
        sh: dict[str, tuple[tuple[int, ...], str, int]] = {
            "alive": ((NT,), "bool", 0), "inside": ((NT,), "bool", 0),
            "frozen": ((NT,), "bool", 0), "table": ((NT,), "bv", self.wT),
            "used": ((NT, ND), "bool", 0), "sfile": ((NT, ND), "bv", self.wF),
            "cloexec": ((NT, ND), "bool", 0),
            "kind": ((NF,), "bv", KW), "path": ((NF,), "bv", self.wP),
            "obj": ((NF,), "bv", self.wF), "flags": ((NF,), "bv", FW),
            "pos": ((NF,), "bv", self.wO), "owner": ((NF,), "bool", 0),
            "ep": ((NF, NF, ND), "bool", 0),
            "phase": ((), "bv", PW), "error": ((), "bv", EW),
            "h_tab": ((NT,), "bool", 0), "u_tab": ((NT,), "bv", CW),
            "v_tab": ((NT,), "bool", 0), "g_tab": ((NT,), "bool", 0),
            "h_file": ((NF,), "bool", 0), "u_file": ((NF,), "bv", CW),
            "v_file": ((NF,), "bool", 0), "g_file": ((NF,), "bool", 0),
            "h_ino": ((NF,), "bool", 0), "u_ino": ((NF,), "bv", CW),
            "v_ino": ((NF,), "bool", 0), "g_ino": ((NF,), "bool", 0),
            "h_tty": ((NF, 2), "bool", 0), "u_tty": ((NF, 2), "bv", CW),
            "v_tty": ((NF, 2), "bool", 0), "g_tty": ((NF, 2), "bool", 0),
            "leak": ((), "bool", 0), "leak_w": ((), "bool", 0), "leak_pipe": ((), "bool", 0),
            "img_bad": ((), "bool", 0), "img_err": ((), "bool", 0),
            "img_timerfd": ((), "bool", 0), "img_share": ((), "bool", 0),
            "img_count": ((), "bool", 0), "rst_err": ((), "bool", 0),
            "img_fd": ((), "bool", 0), "img_rdwr": ((), "bool", 0),
            "tamper": ((), "bv", 4), "clean": ((), "bool", 0),
        }
        if self.dom.bounded:
            sh["steps"] = ((), "bv", 8)
            sh["ext"] = ((), "bv", 8)
        if self.Q:  # a unix socket's queue (files in flight, oldest first) and sk_err
            sh.update({
                "q": ((NF, self.Q), "bv", self.wF), "qn": ((NF,), "bv", self.wQ),
                "sk_err": ((NF,), "bool", 0),
                "h_sock": ((NF,), "bool", 0), "u_sock": ((NF,), "bv", CW),
                "v_sock": ((NF,), "bool", 0), "g_sock": ((NF,), "bool", 0),
            })
        return sh

    # --- the engine's interface -------------------------------------------------------------

    def size_text(self) -> str:
        acts = sorted(self.dom.actions)
        off = sorted(set(self.env_actions) - set(acts))
        bound = ("" if not self.dom.bounded else
                 f", at most {self.dom.env_steps} env steps and {self.dom.checkpoint_steps} "
                 "outside steps during a checkpoint")
        return (self.sizes.text() + bound
                + (f"; actions left out: {', '.join(off)}" if off else ""))

    def fresh(self, tag: str) -> State:
        def make(name: str, dims: tuple[int, ...], kind: str, w: int, idx: tuple) -> Any:
            if dims:
                return [make(name, dims[1:], kind, w, idx + (i,)) for i in range(dims[0])]
            n = f"{tag}.{name}" + "".join(f"[{i}]" for i in idx)
            if kind == "bool":
                return z3.Bool(n)
            return z3.Int(n) if w == 0 else z3.BitVec(n, w)

        return {n: make(n, d, k, w, ()) for n, (d, k, w) in self.shapes().items()}

    def leaves(self, s: State) -> list[z3.ExprRef]:
        out: list[z3.ExprRef] = []

        def walk(x: Any) -> None:
            if isinstance(x, list):
                for y in x:
                    walk(y)
            else:
                out.append(x)

        for n in self.shapes():
            walk(s[n])
        return out

    def view(self, s: State) -> View:
        hit = self._views.get(id(s))
        if hit is not None and hit[0] is s:
            return hit[1]
        v = View(self, s)
        self._views[id(s)] = (s, v)  # keeps `s` alive, so its id is not reused
        return v

    def init(self, s: State) -> z3.BoolRef:
        """model.env.initial_world: one outside task with an empty table; every other slot
        zero (a dead task, an unused descriptor, a dead file REG O_RDONLY)."""
        alive0 = s["alive"][0]
        cs = [alive0]
        for x in self.leaves(s):
            if x.eq(alive0):
                continue
            cs.append(z3.Not(x) if z3.is_bool(x) else x == 0)
        return z3.And(cs)

    def domain(self, s: State) -> z3.BoolRef:
        """Any state of this size: indexes in range, valid kinds and phases, at most NI
        inside and NO outside tasks alive (dead slots and unused descriptors unconstrained)."""
        cs = [lt(x, self.NT) for x in s["table"]]
        cs += [lt(f, self.NF) for row in s["sfile"] for f in row]
        for f in range(self.NF):
            cs += [in_(s["kind"][f], self.valid_kinds), lt(s["obj"][f], self.NF),
                   lt(s["path"][f], self.dom.paths), lt(s["pos"][f], self.dom.offsets)]
        if self.Q:
            for f in range(self.NF):
                cs.append(z3.ULE(s["qn"][f], self.Q))
                cs += [lt(x, self.NF) for x in s["q"][f]]
        cs.append(in_(s["phase"], PHASES))
        v = self.view(s)
        cs.append(z3.ULE(v.n_inside, self.NI))
        cs.append(z3.ULE(v.n_outside, self.NO))
        if self.dom.bounded:
            cs.append(z3.ULE(s["steps"], self.dom.env_steps))
            cs.append(z3.ULE(s["ext"], self.dom.checkpoint_steps))
        return all_(cs)

    def property(self, name: str) -> Callable[[State], z3.BoolRef] | None:
        def succeeded(s: State) -> z3.BoolRef:
            return in_(s["phase"], (DONE, RESTARTED))

        if name == "leak_detection_sound":
            return lambda s: z3.Not(z3.And(succeeded(s), s["leak"]))
        if name == "leak_detection_sound_at_write":
            return lambda s: z3.Not(z3.And(succeeded(s), s["leak_w"]))
        if name == "pipe_peers_contained":
            return lambda s: z3.Not(z3.And(succeeded(s), s["leak_pipe"]))
        if name == "leak_detection_complete":
            return lambda s: z3.Not(z3.And(is_(s["phase"], FAILED), s["clean"]))
        if name == "uncheckpointable_refused":
            return lambda s: z3.Not(z3.And(succeeded(s), s["img_timerfd"]))
        def restarted(s: State) -> z3.BoolRef:
            return is_(s["phase"], RESTARTED)

        if name == "restore_never_escalates":  # only a tampered f_mode can ask for less
            esc = z3.BoolVal(not self.v.fmode_check)
            return lambda s: z3.Not(z3.And(restarted(s), z3.Not(s["rst_err"]),
                                           is_(s["tamper"], T_FMODE_DOWN), esc))
        if name == "hostile_images_rejected":
            # with partial_restore a failed restart leaves the tasks built before the error:
            # every malformed record but the first table's nfds comes after the first task
            partial = z3.BoolVal(self.v.partial_restore)
            return lambda s: z3.Not(z3.And(
                restarted(s), in_(s["tamper"], sorted(MALFORMED)),
                z3.Or(z3.Not(s["rst_err"]), z3.And(partial, z3.Not(is_(s["tamper"],
                                                                          T_BAD_NFDS))))))
        g = next((g for g, spec in RESTORE_GHOSTS.items() if spec == name), None)
        if g is not None:  # on an untampered image (tampered ones: the two specs above)
            return lambda s: z3.Not(z3.And(restarted(s), z3.Not(s["rst_err"]),
                                           is_(s["tamper"], 0), s[g]))
        return None

    def lemmas(self, name: str) -> list[Any]:
        return self._lemmas(name) if self._lemmas is not None else []

    # --- transitions -----------------------------------------------------------------------

    def transitions(self, s: State, tag: str) -> list[Transition]:
        """Every transition family from `s`, parameters shared between families."""
        p = self._params(tag)
        fams: list[Transition] = []
        env = Env(self, s, p)
        for name in self.env_actions:
            if name in self.dom.actions:
                fams.append(SOCKET_STEPS[name](env) if name in SOCKET_STEPS
                            else getattr(env, name)())
        ck = Checkpoint(self, s)
        fams += [ck.freeze()]
        if self.v.full_container:
            fams += [ck.collect(), ck.contained()]
        fams += [ck.write(), ck.visited(), tamper(self, s, p["k"]), restart(self, s)]
        return fams

    def transition(self, s: State, tag: str, name: str, case: Any = None) -> Transition:
        """One transition family (what `transitions` would list under `name`), restricted
        to proof case `case` (from `cases`) if given."""
        if name in self.env_actions:
            table, phase, clean, new = (tuple(case) + (None,))[:4] if case is not None else (
                None, None, None, None)
            env = Env(self, s, self._params(tag), table, phase, new, clean)
            return SOCKET_STEPS[name](env) if name in SOCKET_STEPS else getattr(env, name)()
        if name == "tamper":
            return tamper(self, s, self._params(tag)["k"])
        if name == "restart":
            return restart(self, s)
        return getattr(Checkpoint(self, s), name)()

    def cases(self, name: str, prop: str = "") -> list[Any]:
        """Proof cases of a family, covering all its transitions: an environment action by
        a task holding table x, in phase p (before a checkpoint, or between its phases),
        with the completeness ghost `clean` c either way in the proof of the property that
        reads it (None: not fixed). Building each with x and p constant keeps the terms of
        the other tables as they are, and the case's hints (`Env.case_hints`) let z3 drop
        what the case rules out: so it sees that counts over the other tables do not change
        without arithmetic. Exec's cases are the unshared exec (-1) and the shared one into
        each slot y."""
        if name not in self.env_actions:
            return [None]
        cases = [(x, 0, None) for x in range(self.NT)]
        cleans = (False, True) if prop == "leak_detection_complete" else (None,)
        cases += [(x, p, c) for p in self.dom.race_phases for c in cleans
                  for x in range(self.NT)]
        if name in NEW_TABLE_ACTIONS:  # and the slot the new table takes, likewise
            keep = [(x, p, c, -1) for x, p, c in cases] if name == "exec" else []
            return keep + [(x, p, c, y) for x, p, c in cases for y in range(self.NT)]
        return cases

    def family_names(self) -> list[str]:
        names = [a for a in self.env_actions if a in self.dom.actions] + ["freeze"]
        if self.v.full_container:
            names += ["collect", "contained"]
        return names + ["write", "visited", "tamper", "restart"]

    def _params(self, tag: str) -> dict[str, z3.ExprRef]:
        """A z3 constant per parameter name of the declared actions (`model.actions`), of the
        width its sort needs, plus the acting task `t` and the tampering `k`."""
        width = {"task": self.wT, "fd": self.wD, "path": self.wP, "acc": 2, "flags": FW,
                 "offset": self.wO}
        out = {"t": z3.BitVec(f"{tag}.t", self.wT)}
        for name, sort in PARAMS.items():
            out[name] = (z3.Bool(f"{tag}.{name}") if sort == "bool"
                         else z3.BitVec(f"{tag}.{name}", width[sort]))
        out["k"] = z3.BitVec(f"{tag}.k", 4)
        for name in ("nf", "nf2", "no"):  # the new files' and object's slots (`Env`)
            out[name] = z3.BitVec(f"{tag}.{name}", self.wF)
        return out

    def in_domain(self, domain: str, x: z3.ExprRef) -> z3.BoolRef:
        """The symbolic twin of a parameter domain (`model.actions.DOMAINS`): `x` is one of
        its values at this model's size and domains."""
        sort = DOMAINS[domain].sort
        if sort == "fd":
            return lt(x, self.ND)
        if sort == "task":
            return lt(x, self.NT)
        if domain in ("paths", "offsets"):
            return lt(x, getattr(self.dom, domain))
        if domain == "access_modes":
            return in_(x, self.dom.access_modes)
        if domain in ("open_flags", "setfl_flags"):
            return member(x, getattr(self, domain))
        if domain == "open_cloexec":
            return TRUE if self.dom.open_cloexec else z3.Not(x)
        return TRUE  # bit

    # --- decoding --------------------------------------------------------------------------

    def decode_action(self, ev: Callable[[z3.ExprRef], Any], step: Transition) -> tuple:
        """The explicit action tuple of a transition, its arguments as `model.actions`
        declares them."""
        n, p = step.name, step.params
        if n == "tamper":
            return (n, ev(p["k"]))
        if n in CKPT_ACTIONS:
            return (n,)
        return (n, ev(p["t"]), *(int(ev(p[x.name])) if x.sort == "bool" else ev(p[x.name])
                                 for x in ACTIONS[n].params))

    def decode_state(self, ev: Callable[[z3.ExprRef], Any], s: State) -> World:
        """The explicit World a symbolic state stands for (normalized: dead slots dropped).
        Symbolic-only ghosts appear as: `leak_check` non-empty iff `leak` (with objref 0)."""
        return decode_values(self, {n: evtree(ev, s[n]) for n in self.shapes()})

    def describe_extra(self, ev: Callable[[z3.ExprRef], Any], s: State) -> dict[str, str]:
        vals = {n: evtree(ev, s[n]) for n in ("leak", "leak_w", "leak_pipe", *IMG_GHOSTS,
                                                 "rst_err", "clean")}
        return {k: str(int(v)) for k, v in vals.items()}

    # --- concrete side ---------------------------------------------------------------------

    @cached_property
    def concrete_config(self) -> Config:
        """The explicit config whose transition system this symbolic model is."""
        if self._cfg is not None:
            return self._cfg
        d = self.dom
        return Config(
            name=f"sym-{self.NI}-{self.NO}-{self.ND}-{self.NF}", inside_tasks=self.NI,
            outside_tasks=self.NO, max_fds=self.ND, paths=d.paths,
            access_modes=d.access_modes, open_flags=self.open_flags,
            open_cloexec=d.open_cloexec, setfl_flags=self.setfl_flags, offsets=d.offsets,
            kinds=COVERED_KINDS + (("unix",) if self.Q else ()),
            disabled=tuple(a for a in ENV_ACTIONS if a not in d.actions),
            env_steps=d.env_steps if d.env_steps is not None else 10**6,
            checkpoint_steps=d.checkpoint_steps if d.checkpoint_steps is not None else 10**6,
            outside_acts_after=tuple(n for n, p in RACE_PHASES.items() if p in d.race_phases),
        )

    @cached_property
    def concrete_model(self) -> Any:
        from model.system import CrModel

        return CrModel(self.concrete_config, self.v)

    def concretize(self, states: list[World], actions: list[tuple], prop: str = ""
                   ) -> tuple[list[tuple[Any, World]], str]:
        """Replay the decoded actions on the explicit model, so the trace is a genuine run
        of `CrModel`: every state must agree with the decoded symbolic one (`summary`), and
        the last must violate `prop` (the spec's own predicate). Returns the (action, state)
        pairs and a problem text ('' when all agree)."""
        cm = self.concrete_model
        steps_on = self.dom.bounded
        w = cm.init_states()[0]
        out: list[tuple[Any, World]] = [(None, w)]
        if summary(w, steps_on) != summary(states[0], steps_on):
            return out, "initial states differ"
        for i, a in enumerate(actions):
            nxt = [w2 for a2, w2 in cm.successors(w) if a2 == a]
            if not nxt:
                return out, f"step {i + 1}: {a} is not a transition of the explicit model"
            w = nxt[0]
            out.append((a, w))
            if summary(w, steps_on) != summary(states[i + 1], steps_on):
                return out, (f"step {i + 1} ({a}): states differ: explicit "
                             f"{summary(w, steps_on)} vs symbolic "
                             f"{summary(states[i + 1], steps_on)}")
        if prop in self._predicates and self._predicates[prop](w):
            return out, f"the replayed last state does not violate {prop}"
        return out, ""


def symbolic_model(cfg_or_sizes: Config | Sizes, variant: Variant, *, files: int | None = None,
                   bounded: bool = True, actions: Iterable[str] | None = None,
                   domains: Domains | None = None, counts: str | None = None,
                   lemmas: Callable[[str], list[Any]] | None = None,
                   predicates: Mapping[str, Callable[[World], bool]] | None = None,
                   queue: int = 0) -> CrSymModel:
    """The symbolic model for a config (its bounds and domains; `files` open-file slots,
    default one per descriptor of every task) or for explicit `Sizes` (wide domains: every
    access mode, every status-flag set for open and F_SETFL, O_CLOEXEC, 2 paths, 4 offsets;
    no step bounds). `actions` restricts the environment actions (e.g. without exec).
    `counts`: 'bv' (default for a config: BMC) or 'int' (default for Sizes: proofs).
    `lemmas`, `predicates`: see `CrSymModel` (`specs.lemmas.proof_model` passes the specs').
    `queue` (for a config; `Sizes.queue` otherwise): unix sockets with that many in-flight
    messages per queue, and the config's socket actions (the explicit queue is unbounded:
    a run that would queue more is not a symbolic run)."""
    extra = {"lemmas": lemmas, "predicates": predicates}
    if isinstance(cfg_or_sizes, Config):
        cfg = cfg_or_sizes
        nf = files if files is not None else (cfg.inside_tasks + cfg.outside_tasks) * cfg.max_fds
        sizes = Sizes(cfg.inside_tasks, cfg.outside_tasks, cfg.max_fds, nf, queue)
        dom = domains or domains_of(cfg, bounded)
        if queue and domains is None:
            dom = dataclasses.replace(dom, actions=dom.actions | (
                cfg.enabled_actions() & frozenset(SOCKET_ACTIONS)))
        if actions is not None:
            dom = dataclasses.replace(dom, actions=frozenset(actions) & dom.actions)
        return CrSymModel(sizes, variant, dom, cfg=covered_config(cfg, sockets=queue > 0)
                          if bounded and actions is None and domains is None else None,
                          counts=counts or "bv", **extra)
    socks = SOCKET_ACTIONS if cfg_or_sizes.queue else ()
    dom = domains or (Domains(actions=frozenset(COVERED_ACTIONS + socks)) if socks
                      else Domains())
    if actions is not None:
        dom = dataclasses.replace(dom, actions=frozenset(actions)
                                  & frozenset(COVERED_ACTIONS + socks))
    return CrSymModel(cfg_or_sizes, variant, dom, counts=counts or "int", **extra)
