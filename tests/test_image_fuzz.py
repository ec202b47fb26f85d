"""Hostile images, fuzzed: hypothesis mutates images that variants write on `tiny` (objrefs,
record types, flags, modes, descriptor numbers, offsets, truncated, dropped, duplicated and
swapped records) and restart must either

* reject the image with one of the design's errors (EINVAL, EMFILE, ENOMSG, EBADF) and leave
  no task behind (`hostile_images_rejected`), or
* restore it with the restore specs holding, read against the image: no access its f_mode
  lacks (`restore_never_escalates`), every task holding exactly the descriptors and
  close-on-exec bits its table's fd records give, and each restored file's f_count equal to
  the descriptors naming it;

and never fail any other way. The images come from seeded random runs of the model (the same
on every run); hypothesis is derandomized, so CI sees the same images every time. The count
and the errors seen are printed in the terminal summary (see conftest.py)."""

from __future__ import annotations

import contextlib
import errno
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from model.config import PRESETS
from model.flags import O_APPEND, O_ASYNC, O_DIRECT, O_LARGEFILE, O_NOATIME, O_NONBLOCK
from model.image import (
    R_EPITEM,
    R_FD,
    R_FILE,
    R_TABLE,
    R_TASK,
    T_BAD_OBJREF,
    T_FMODE_DOWN,
    EpRec,
    FdRec,
    FileRec,
    TableRec,
    TaskRec,
)
from model.restart import restart
from model.state import DONE, RESTARTED, World
from model.system import CrModel
from model.variants import VARIANTS
from specs import SPECS

TINY = PRESETS["tiny"]
CORRECT = ("fixed", "linuxcr", "criu")  # variants whose restart the specs find correct
DESIGN_ERRORS = {errno.EINVAL, errno.EMFILE, errno.ENOMSG, errno.EBADF}
RECORD_TYPES = {R_TASK: TaskRec, R_TABLE: TableRec, R_FD: FdRec, R_FILE: FileRec,
                R_EPITEM: EpRec}
FLAG_BITS = (1, 2, 3, O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME, O_LARGEFILE, 0o100,
             0o200, 0o1000)  # access mode, status flags, open-only flags (O_CREAT, O_TRUNC)
EXAMPLES = 850  # hypothesis examples; each mutates one image of every variant, four times
PER_EXAMPLE = 4
STATS: Counter[str] = Counter()


def written_images(variant: str, walks: int = 800, seed: int = 22) -> list[World]:
    """Distinct states right after a successful checkpoint, from seeded random runs."""
    m = CrModel(TINY, VARIANTS[variant])
    rng = random.Random(seed)
    found: dict[tuple, World] = {}
    for _ in range(walks):
        w = m.init_states()[0]
        for _ in range(40):
            if w.cr and w.cr.phase == DONE:
                if w.cr.image and not w.cr.tampered:
                    found.setdefault(w.cr.image, w)
                break
            succ = [(a, t) for a, t in m.successors(w) if a[0] != "tamper"]
            env = [t for a, t in succ if a[0] != "freeze"]
            if not succ:
                break
            # Mostly let the environment build something before the checkpoint.
            w = rng.choice(env) if env and rng.random() < 0.85 else rng.choice(succ)[1]
    return list(found.values())


_IMAGES: dict[str, list[World]] = {}


def images(variant: str) -> list[World]:
    if variant not in _IMAGES:
        _IMAGES[variant] = written_images(variant)
    return _IMAGES[variant]


# --- mutations ------------------------------------------------------------------------------

INTS = st.one_of(st.integers(-3, 12), st.sampled_from([2**31 - 1, -(2**31), 2**63, 0o100000,
                                                        0o1000, 0o2000, 0o4000, 99]))


@st.composite
def mutation(draw: Any) -> tuple:
    kind = draw(st.sampled_from(["field", "field", "objref", "objref", "mode", "mode", "fd",
                                 "type", "retype", "drop", "dup", "swap", "truncate",
                                 "insert"]))
    return (kind, draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6)), draw(INTS),
            draw(st.lists(INTS, min_size=4, max_size=4)))


def mutate(image: tuple, plan: list[tuple]) -> tuple:
    """`image` with every mutation of `plan` applied (positions taken modulo its length)."""
    recs = list(image)
    for kind, a, b, value, values in plan:
        if not recs:
            break
        i = a % len(recs)
        r = recs[i]
        if kind == "objref":  # point a reference at another object of the image
            fields = [n for n in r._fields if n.endswith("ref")]
            if fields:
                refs = sorted({x for q in recs for n, x in zip(q._fields, q, strict=True)
                               if n.endswith("ref")} | {0, 99})
                recs[i] = r._replace(**{fields[b % len(fields)]: refs[value % len(refs)]})
        elif kind == "mode" and r[0] == R_FILE:  # f_mode in 0..7, or one f_flags bit flipped
            if b % 2:
                recs[i] = r._replace(f_mode=value & 7)
            else:
                recs[i] = r._replace(f_flags=r.f_flags ^ FLAG_BITS[value % len(FLAG_BITS)])
        elif kind == "fd" and r[0] in (R_FD, R_EPITEM):
            recs[i] = r._replace(fd=value % 6 - 1)
            if r[0] == R_FD and b % 2:
                recs[i] = recs[i]._replace(cloexec=1 - r.cloexec)
        elif kind == "type" and r[0] == R_FILE:
            recs[i] = r._replace(f_type=value % 11 - 1)
        elif kind == "field":  # any field but the type tag
            f = 1 + b % (len(r) - 1)
            recs[i] = r._replace(**{r._fields[f]: value})
        elif kind == "retype":  # a record of another type, fields from the fuzzer
            tag = list(RECORD_TYPES)[b % len(RECORD_TYPES)]
            cls = RECORD_TYPES[tag]
            vals = (list(r[1:]) + values * 3)[: len(cls._fields) - 1]
            recs[i] = cls(tag, *vals)
        elif kind == "drop":
            del recs[i]
        elif kind == "dup":
            recs.insert(b % (len(recs) + 1), r)
        elif kind == "swap":
            j = b % len(recs)
            recs[i], recs[j] = recs[j], recs[i]
        elif kind == "truncate":
            del recs[i:]
        elif kind == "insert":  # a fresh record
            tag = list(RECORD_TYPES)[b % len(RECORD_TYPES)]
            cls = RECORD_TYPES[tag]
            recs.insert(i, cls(tag, *(values * 3)[: len(cls._fields) - 1]))
    return tuple(recs)


# --- the oracle -----------------------------------------------------------------------------


def declared(image: tuple) -> list[tuple[int, dict[int, tuple[int, int]]]]:
    """Per task record, in order: its table's objref and fd -> (cloexec, file objref) as its
    fd records give them (the last record for a descriptor wins, as restart installs them)."""
    tables: dict[int, dict[int, tuple[int, int]]] = {}
    tasks: list[int] = []
    current = None
    for r in image:
        if r[0] == R_TASK:
            tasks.append(r.files_ref)
        elif r[0] == R_TABLE:
            current = tables.setdefault(r.objref, {})
        elif r[0] == R_FD and current is not None:
            current[r.fd] = (1 if r.cloexec else 0, r.file_ref)
    return [(t, tables.get(t, {})) for t in tasks]


def _same_partition(pairs: list[tuple[int, int]]) -> bool:
    """Whether (a, b) pairs relate a and b one to one: equal a exactly when equal b."""
    ab: dict[int, int] = {}
    ba: dict[int, int] = {}
    return all(ab.setdefault(a, b) == b and ba.setdefault(b, a) == a for a, b in pairs)


def check_restart(w: World, image: tuple, variant: str) -> str:
    """Restart `image` as `variant` after the checkpoint that led to `w`; an AssertionError
    says which promise broke. Returns 'accepted' or the error's name."""
    v = VARIANTS[variant]
    code, obs, files = restart(image, v, TINY.max_fds)  # any other exception fails the test
    cr = w.cr._replace(phase=RESTARTED, rst_error=code, restored=obs, rst_files=files, image=())
    if code:
        assert code in DESIGN_ERRORS, f"rejected with errno {code}, not a design error"
        after = w._replace(cr=cr._replace(tampered=T_BAD_OBJREF))  # a malformed image
        assert SPECS["hostile_images_rejected"].predicate(after), (
            f"rejected ({errno.errorcode[code]}) but tasks survive: {obs}")
        return errno.errorcode[code]
    after = w._replace(cr=cr._replace(tampered=T_FMODE_DOWN))  # well formed, not as written
    assert SPECS["restore_never_escalates"].predicate(after), f"access escalated: {obs}"
    want = declared(image)
    assert len(obs[0]) == len(want), f"{len(obs[0])} tasks restored, the image has {len(want)}"
    tables, shared = [], []
    for (tg, fds), (tref, recs) in zip(obs[0], want, strict=True):
        got = {fd: cx for fd, cx, _ in fds}
        assert got == {fd: cx for fd, (cx, _) in recs.items()}, (
            f"descriptors {got} but the image gives {recs}")
        tables.append((tref, tg))
        shared += [(recs[fd][1], g) for fd, _, g in fds]
    assert _same_partition(tables), f"tables shared otherwise than the image says: {tables}"
    assert _same_partition(shared), f"files shared otherwise than the image says: {shared}"
    refs: Counter[int] = Counter()
    for fds in {tg: fds for tg, fds in obs[0]}.values():  # a shared table counts once
        for _, _, g in fds:
            refs[g] += 1
    assert [n for n, _ in files] == [refs[g] for g in range(len(files))], (
        f"f_count {[n for n, _ in files]} but descriptors {dict(refs)}")
    return "accepted"


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", CORRECT)
def test_written_images_restore_with_every_spec(variant: str) -> None:
    """The unmutated images: restart succeeds and every restore spec expected to hold does."""
    m = CrModel(TINY, VARIANTS[variant])
    ws = images(variant)
    assert len(ws) >= 20 and any(len(w.cr.image) >= 6 for w in ws)
    specs = [s for s in SPECS.values() if s.kind == "invariant"
             and s.expected(variant, TINY) == "holds"]
    assert any(s.name.startswith("restore_") for s in specs)
    for w in ws:
        assert check_restart(w, w.cr.image, variant) == "accepted"
        (after,) = [t for a, t in m.successors(w) if a == ("restart",)]
        for s in specs:
            assert s.predicate(after), (variant, s.name, w.cr.image)


@contextlib.contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis mixes literals of the modules loaded so far into its draws ("local
    constants"), so the images would depend on which tests ran before in the process; with
    none, CI fuzzes the same images on every run, whatever runs beside."""
    from hypothesis.internal.conjecture import providers

    saved = providers._get_local_constants
    providers._get_local_constants = lambda: providers.Constants()
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = saved
        providers.CONSTANTS_CACHE.cache.clear()


def _fuzz(variants: tuple[str, ...], examples: int, phases: tuple = tuple(Phase)) -> None:
    pools = {v: images(v) for v in variants}

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              phases=phases)
    @given(st.lists(st.integers(0, 10**6), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE),
           st.lists(mutation(), min_size=1, max_size=4))
    def run(picks: list[int], plan: list[tuple]) -> None:
        for v, pool in pools.items():
            for k in picks:
                w = pool[k % len(pool)]
                img = mutate(w.cr.image, plan)
                STATS["images"] += 1
                STATS[check_restart(w, img, v)] += 1

    with _no_local_constants():
        run()


def test_fuzzed_images_rejected_or_restored(record_property: Any) -> None:
    STATS.clear()
    _fuzz(CORRECT, EXAMPLES)
    assert STATS["images"] >= 10_000, STATS
    assert STATS["accepted"] > 100 and len(STATS) >= 5, STATS  # both outcomes, several errors
    record_property("fuzzed_images", dict(STATS))


@pytest.mark.parametrize("mutant", ["mut-partial-restore", "mut-no-type-check",
                                    "mut-restart-keeps-ref", "mut-fmode-upgrade",
                                    "mut-new-file-per-fd", "mut-no-shared-table"])
def test_fuzzer_finds_restart_mutants(mutant: str) -> None:
    """Teeth: a deliberately broken restart is caught by the same fuzzer and oracle, on the
    images linuxcr writes."""
    _IMAGES.setdefault(mutant, images("linuxcr"))
    with pytest.raises(AssertionError):
        _fuzz((mutant,), 800, phases=(Phase.generate,))
