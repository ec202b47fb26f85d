"""A generic explicit-state model checker: any `Model`, any `Property`.

It knows nothing of what the model describes. Main entry point: `explore`.
"""

from checker.explicit import ENGINE, bytes_per_state, explore
from checker.graph import state_graph, to_dot, write_graph
from checker.model import Model, ModelHooks, Property, hooks, invariant, reachable
from checker.progress import (
    NullProgress,
    ProgressInfo,
    RichProgress,
    TextProgress,
    auto_progress,
)
from checker.result import Exploration, Result, Verdict
from checker.snapshot import FORMAT_VERSION, SnapshotMismatch
from checker.trace import Step, Trace, load_itf

__all__ = [
    "ENGINE",
    "FORMAT_VERSION",
    "Exploration",
    "Model",
    "ModelHooks",
    "NullProgress",
    "ProgressInfo",
    "Property",
    "Result",
    "RichProgress",
    "SnapshotMismatch",
    "Step",
    "TextProgress",
    "Trace",
    "Verdict",
    "auto_progress",
    "bytes_per_state",
    "explore",
    "hooks",
    "invariant",
    "load_itf",
    "reachable",
    "state_graph",
    "to_dot",
    "write_graph",
]
