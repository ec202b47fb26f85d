"""The generated pages stay in step with the source.

`docs/catalogue.md` depends on the specs and variants only: regenerated and compared byte for
byte. `docs/findings.md` depends on a run of every variant on the tiny preset: each variant's
section is regenerated from the explorations the spec suite shares (`tiny_rows`), so a full
`pytest` run pays nothing extra and `pytest tests/test_docs.py -k linuxcr` explores one variant.
When a test here fails, run `python -m crmodel.docs` and review the diff."""

from __future__ import annotations

import re

import pytest

from crmodel import docs
from model.env import apply, initial_world
from model.variants import VARIANTS

HINT = "docs are stale: run `python -m crmodel.docs` and commit the result"
ALL = list(VARIANTS)


def _findings() -> str:
    return (docs.DOCS / "findings.md").read_text()


def test_catalogue_up_to_date() -> None:
    assert (docs.DOCS / "catalogue.md").read_text() == docs.catalogue(), HINT


def test_catalogue_names_every_spec_and_variant() -> None:
    from specs import SPECS

    text = docs.catalogue()
    for name in SPECS:
        assert f"### `{name}`" in text
    for name in VARIANTS:
        assert f"| `{name}` |" in text


def test_findings_cover_every_variant() -> None:
    text = _findings()
    assert list(docs.split_findings(text)) == ALL, HINT
    assert text.startswith(docs.findings_header(ALL)), HINT


def test_findings_carry_no_dates_or_timings() -> None:
    text = _findings()
    assert not re.search(r"\b\d{4}-\d\d-\d\d\b|\b\d\d:\d\d\b|\d+\.\d+ ?s\b", text)


@pytest.mark.variants(ALL)
@pytest.mark.parametrize("variant", ALL)
def test_findings_section_up_to_date(tiny_rows, variant: str) -> None:
    want = docs.findings_section(variant, tiny_rows(variant))
    got = docs.split_findings(_findings()).get(variant)
    assert got == want, f"{variant}: {HINT}\n--- expected ---\n{want}"


def test_narrate_every_call() -> None:
    """Every environment action reads as a sentence with its result."""
    w = initial_world(4)
    calls = [
        (("fork", 0, 1), "forks a child into the container (task 1)"),
        (("clone_files", 1, 1), "shares its fd table"),
        (("pipe", 1), "read end fd 0, write end fd 1"),
        (("socketpair", 0), "fds 0 and 1"),
        (("sendmsg", 0, 0, 1), "in flight"),
        (("recvmsg", 0, 1), "receives the in-flight file"),
        (("epoll_create", 1), "epoll_create(): fd 2"),
        (("epoll_add", 1, 2, 0), "adds fd 0 to the epoll at fd 2"),
        (("epoll_del", 1, 2, 0), "removes fd 0"),
        (("dup", 1, 0), "dups fd 0 to fd 3"),
        (("setfd", 1, 3, 1), "sets FD_CLOEXEC on fd 3"),
        (("setfl", 1, 0, 0o4000), "O_NONBLOCK with F_SETFL"),
        (("close", 1, 3), "closes fd 3"),
        (("reopen", 0, 1, 1, 1), "a new open file on the same pipe_w object, fd 3"),
        (("exit", 2), "task 2 (inside) exits"),
    ]
    for action, words in calls:
        out, w2 = apply(w, action)
        assert out[0] == "ok", (action, out)
        text = docs.narrate(w, action, w2)
        assert words in text, (action, text)
        w = w2
    assert docs.narrate(w, ("freeze",), w).startswith("the checkpointer freezes")
