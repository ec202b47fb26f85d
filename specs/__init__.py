"""Properties of checkpoint/restart as named predicates over model states.

Importing this package registers every spec in `specs.registry.SPECS`. The lemmas of the z3
proofs (`specs.lemmas`) are imported by who proves: they load z3, the specs do not."""

from specs import properties as properties  # noqa: F401
from specs import witnesses as witnesses  # noqa: F401
from specs.registry import SPECS, Spec

__all__ = ["SPECS", "Spec"]
