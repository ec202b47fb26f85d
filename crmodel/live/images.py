"""Every image a variant's checkpoint writes within a config's bounds (for the restorer)."""

from __future__ import annotations

from checker.explicit import explore
from checker.model import invariant
from model.config import Config
from model.state import WRITTEN, World
from model.system import CrModel
from model.variants import Variant


class _UpToImage(CrModel):
    """The model up to the written image: what follows (outside steps, the visited check,
    restart, tampering) cannot change it."""

    def successors(self, w: World):
        if w.cr and w.cr.phase >= WRITTEN:
            return iter(())
        return super().successors(w)


def written_images(cfg: Config, v: Variant) -> list[tuple]:
    """The distinct images the checkpoint writes (whether or not a later check refuses the
    checkpoint), in the order the search meets them."""
    seen: dict[tuple, None] = {}

    def note(w: World) -> bool:
        if w.cr and w.cr.phase == WRITTEN:
            seen.setdefault(w.cr.image, None)
        return True

    explore(_UpToImage(cfg, v), [invariant("images", note)], exact=False)
    return list(seen)
