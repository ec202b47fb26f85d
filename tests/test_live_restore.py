"""The executable restorer: every image `criu` and `fixed` write on `tiny`, rebuilt in fresh
real processes with the design's restart steps, reads back as the model's restarted state
(flags with O_LARGEFILE, close-on-exec, offsets, which descriptors share a file, which tasks
share a table, pipe/pty/socket partners, epoll watch sets)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import pytest

from crmodel.live import restore as live_restore
from crmodel.live.images import written_images
from model.config import PRESETS
from model.flags import O_LARGEFILE
from model.image import R_FILE, R_QUEUE
from model.restart import restart
from model.state import PIPE_KINDS, PTS
from model.variants import VARIANTS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="the live-kernel driver needs Linux on x86_64",
)

TINY = PRESETS["tiny"]
_IMAGES: dict[str, list[tuple]] = {}


def images(variant: str) -> list[tuple]:
    if variant not in _IMAGES:
        _IMAGES[variant] = written_images(TINY, VARIANTS[variant])
    return _IMAGES[variant]


def _differences(model_obs: tuple, real_obs: tuple) -> list[tuple]:
    """(kind, model f_flags, real f_flags) of files that differ in nothing but f_flags; a
    difference anywhere else is returned as ("other", model, real)."""
    if not model_obs or not real_obs or model_obs[0] != real_obs[0]:
        return [("other", model_obs, real_obs)]
    out = []
    for m, k in zip(model_obs[1], real_obs[1], strict=True):
        if m != k:
            out.append((m[0], m[1], k[1]) if m[:1] + m[2:] == k[:1] + k[2:]
                       else ("other", m, k))
    return out


def restore_all(variant: str, v=None) -> tuple[int, list[tuple]]:
    v = v or VARIANTS[variant]
    differences = []
    imgs = images(variant)
    for img in imgs:
        code, obs, _ = restart(img, VARIANTS[variant], TINY.max_fds)
        got = live_restore.restore(img, v, TINY.max_fds, TINY.paths)
        assert got.code == code, (img, got.why)
        if got.obs != obs:
            differences += _differences(obs, got.obs)
    return len(imgs), differences


def test_fixed_images_restore_for_real() -> None:
    n, diff = restore_all("fixed")
    assert n >= 600 and diff == []


def test_criu_images_restore_for_real() -> None:
    """No difference: a pipe end with O_LARGEFILE (reopened through /proc, PIPE_RW among
    them) is reopened through /proc again, as CRIU's pipes.c does and the model says; a
    timerfd is made again (timerfd.c)."""
    n, diff = restore_all("criu")
    assert n >= 600 and diff == [], diff[:3]


def test_finding_5_pty_slave_gains_o_largefile_when_reopened_by_path() -> None:
    """openpty's slave has no O_LARGEFILE; criu restores it by path (/dev/pts/N), which
    adds it, as the model says; fixed restores it as saved (TIOCGPTPEER), also as the model
    says. Both seen here on real images."""
    slaves = [r for img in images("criu") for r in img if r[0] == 4 and r.f_type == PTS
              and not r.f_flags & O_LARGEFILE]
    assert slaves
    img = next(img for img in images("criu") if any(r in slaves for r in img))
    for name in ("criu", "fixed"):
        got = live_restore.restore(img, VARIANTS[name], TINY.max_fds, TINY.paths)
        code, obs, _ = restart(img, VARIANTS[name], TINY.max_fds)
        assert (got.code, got.obs) == (code, obs)
        pts = [f for f in got.obs[1] if f[0] == PTS]
        assert pts and all(bool(f[1] & O_LARGEFILE) == (name == "criu") for f in pts)


@pytest.mark.parametrize("knob", ["restore_pos", "setfl"])
def test_a_restorer_that_skips_a_step_is_seen(knob: str) -> None:
    """Teeth: without lseek (or F_SETFL) some real restore differs from the model's."""
    v = replace(VARIANTS["fixed"], **{knob: False if knob == "restore_pos" else "none"})
    for img in images("fixed"):
        code, obs, _ = restart(img, VARIANTS["fixed"], TINY.max_fds)
        got = live_restore.restore(img, v, TINY.max_fds, TINY.paths)
        if (got.code, got.obs) != (code, obs):
            return
    raise AssertionError("no image restored differently")


# tiny's bounds (one step fewer) with named pipes and unlinked files, which the presets leave out
NAMED = replace(TINY, name="tiny-named", kinds=("reg", "pipe", "fifo", "unlinked"), env_steps=3)


@pytest.mark.parametrize("variant", ["criu", "fixed"])
def test_named_pipes_and_unlinked_files_restore_for_real(variant: str) -> None:
    """A FIFO end is opened by its name; an unlinked file (dumped by criu) comes back
    nameless: every image of a config with both kinds reads back as the model restarts it."""
    v = VARIANTS[variant]
    imgs = written_images(NAMED, v)
    files = [r for img in imgs for r in img if r[0] == R_FILE]
    assert any(r.f_type in PIPE_KINDS and r.path >= 0 for r in files)
    assert (variant == "criu") == any(r.path <= -2 for r in files)
    for img in imgs:
        code, obs, _ = restart(img, v, NAMED.max_fds)
        got = live_restore.restore(img, v, NAMED.max_fds, NAMED.paths)
        assert (got.code, got.obs) == (code, obs), (img, got.why)


# sockets and SCM_RIGHTS, which tiny leaves out: criu dumps the messages in flight
QUEUES = replace(TINY, name="tiny-queues", kinds=("reg", "pipe", "unix", "epoll"),
                 disabled=("dup2", "exec", "setown"))


def test_files_in_flight_restore_for_real() -> None:
    """CRIU sends each message in flight again (sk-queue.c): every `criu` image with a queue
    record reads back, queues in order included, as the model restarts it."""
    v = VARIANTS["criu"]
    imgs = [img for img in written_images(QUEUES, v) if any(r[0] == R_QUEUE for r in img)]
    assert len(imgs) >= 50
    for img in imgs:
        code, obs, _ = restart(img, v, QUEUES.max_fds)
        got = live_restore.restore(img, v, QUEUES.max_fds, QUEUES.paths)
        assert (got.code, got.obs) == (code, obs), (img, got.why)
