"""Running the engines on a Ray cluster: the connection, and proof obligations as Ray tasks.

Ray is an optional dependency (`pip install -e '.[cluster]'`); nothing here imports it until a
cluster is asked for. `session(address, workers)` joins a cluster (`host:port` of a head
started with `ray start --head`) or, with ``auto``, starts a private one on this machine with
`workers` CPUs, bound to the loopback interface, and shuts it down afterwards. A session
already open in this process (`ray.init` by a caller, a test fixture) is reused and left open.

`prove_cluster` is `checker.symbolic.prove_parallel` with each obligation a Ray task: the
same results, in the same order. The proof cache (`checker.symbolic.ProofCache`) lives where
the driver runs: an actor pinned to the driver's node answers every worker's lookups and
records what they prove, so an obligation decided on one machine is known to all, and to the
next run on the driver's disk. A task whose worker dies is run again (Ray retries it): an
obligation is a pure function of the model, so a retry gives the same answer.

The explicit engine on a cluster is `checker.distributed`.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from checker import symbolic
from checker.symbolic import Obligation, ObligationResult, SymbolicModel

AUTO = "auto"
RETRIES = 2  # runs of a task after its worker died (an obligation is deterministic)
_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|"
                      r"\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")


class ClusterError(Exception):
    """No cluster to run on (bad address, unreachable head, Ray not installed) or a worker
    lost mid-run: a one-line message for the user."""


def parse_address(text: str) -> str:
    """``auto`` or ``host:port`` (a Ray head's GCS address), else ClusterError."""
    text = text.strip()
    if text == AUTO:
        return text
    m = _ADDRESS.match(text)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise ClusterError(f"--cluster wants 'auto' or HOST:PORT of a Ray head "
                           f"(ray start --head prints it), not {text!r}")
    return text


def _import_ray(local: bool) -> Any:
    if local and "ray" not in sys.modules:
        # A private cluster: every Ray server on 127.0.0.1 (Ray otherwise picks the address
        # other machines would use, and listens on every interface).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report sent anywhere
    if local:
        # Ray starts its workers at nice 15: on a machine busy with other work they would
        # get a fraction of a core each, however many there are.
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray: pip install -e '.[cluster]'") from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at `address` (Ray itself would retry for
    a long time and then raise a multi-line error)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ClusterError(f"no Ray head at {address}: {e.strerror or e}") from None


@contextmanager
def session(address: str = AUTO, workers: int | None = None) -> Iterator[Any]:
    """The `ray` module, connected. ``auto``: a private local cluster with `workers` CPUs
    (default: this machine's), shut down on exit; else join the head at `address`."""
    address = parse_address(address)
    ray = _import_ray(local=address == AUTO)
    if ray.is_initialized():
        yield ray
        return
    if address == AUTO:
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        _reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ClusterError(f"cannot join the Ray cluster at {address}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: Any) -> int:
    """CPUs the cluster offers (its workers)."""
    return int(ray.cluster_resources().get("CPU", 1))


_WHERE: list[str] = []


def where(ray: Any) -> str:
    """This worker, for progress lines: node address and pid."""
    if not _WHERE:
        ctx = ray.get_runtime_context()
        node = next((n["NodeManagerAddress"] for n in ray.nodes()
                     if n["NodeID"] == ctx.get_node_id()), ctx.get_node_id()[:8])
        _WHERE.append(f"{node}/{os.getpid()}")
    return _WHERE[0]


# --- the proof cache, shared --------------------------------------------------------------


class _CacheKeeper:
    """The driver's `ProofCache`, answering for every worker (a Ray actor on its node)."""

    def __init__(self, folder: str) -> None:
        self.cache = symbolic.ProofCache(folder)

    def known_unsat(self, key: str) -> bool:
        return self.cache.known_unsat(key)

    def remember(self, key: str) -> None:
        self.cache.remember(key)


class RemoteCache(symbolic.ProofCache):
    """A worker's view of the driver's cache: keys computed here, answers kept there."""

    def __init__(self, keeper: Any) -> None:
        super().__init__(".")
        self.keeper = keeper

    def known_unsat(self, key: str) -> bool:
        import ray

        hit = bool(ray.get(self.keeper.known_unsat.remote(key)))
        self.hits += hit
        self.misses += not hit
        return hit

    def remember(self, key: str) -> None:
        import ray

        ray.get(self.keeper.remember.remote(key))


# --- obligations as tasks -----------------------------------------------------------------

_MODELS: dict[tuple[Any, tuple], SymbolicModel] = {}  # per worker process: built once


def _obligation_task(factory: Callable[..., SymbolicModel], args: tuple, prop: str,
                     ob: Obligation, timeout: float, keeper: Any
                     ) -> tuple[ObligationResult, int, int]:
    import ray

    key = (factory, args)
    if key not in _MODELS:  # z3 terms do not cross processes: each worker builds its own
        _MODELS.clear()
        _MODELS[key] = factory(*args)
    symbolic.CACHE = RemoteCache(keeper) if keeper is not None else None
    try:
        r = symbolic.check_obligation(_MODELS[key], prop, ob, timeout)
        hits, misses = ((symbolic.CACHE.hits, symbolic.CACHE.misses)
                        if symbolic.CACHE is not None else (0, 0))
    finally:
        symbolic.CACHE = None
    if r.cti is not None:
        r.cti.model = None  # rendered by the caller
    r.worker = where(ray)
    return r, hits, misses


def prove_cluster(ray: Any, factory: Callable[..., SymbolicModel], args: tuple, prop: str,
                  timeout: float = 60.0,
                  on_result: Callable[[ObligationResult, int, int], None] | None = None
                  ) -> tuple[bool, list[ObligationResult]]:
    """`checker.symbolic.prove_parallel` on a connected Ray (`session`): each obligation a
    task, `on_result` called as each is decided (its `worker` says where)."""
    sym = factory(*args)
    obs = symbolic.obligations(sym, prop)
    keeper = None
    if symbolic.CACHE is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                              soft=False)
        keeper = ray.remote(_CacheKeeper).options(
            num_cpus=0, scheduling_strategy=here).remote(str(symbolic.CACHE.folder.resolve()))
    task = ray.remote(_obligation_task).options(num_cpus=1, max_retries=RETRIES)
    order = sorted(range(len(obs)), key=lambda i: obs[i].kind != "step")  # slow first
    pending = {task.remote(factory, args, prop, obs[i], timeout, keeper): i for i in order}
    done: dict[int, tuple[ObligationResult, int, int]] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    done[i] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise ClusterError(f"obligation {obs[i].id} lost after {RETRIES + 1} "
                                       f"tries: {type(e).__name__}; {len(done)} of "
                                       f"{len(obs)} obligations were decided") from None
                if on_result is not None:
                    on_result(done[i][0], len(done), len(obs))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if keeper is not None:
            ray.kill(keeper)
    return symbolic.assemble(sym, obs, done)
