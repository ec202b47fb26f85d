"""Properties of checkpoint/restart as named predicates over model states.

Importing this package registers every spec in `specs.registry.SPECS`."""

from specs import lemmas as lemmas  # noqa: F401  (registers nothing; kept for z3)
from specs import properties as properties  # noqa: F401
from specs import witnesses as witnesses  # noqa: F401
from specs.registry import SPECS, Spec

__all__ = ["SPECS", "Spec"]
