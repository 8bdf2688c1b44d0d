"""Connecting to Ray, and what each Ray stage may use of it.

``RECSYS_RAY_ADDRESS`` / ``--ray-address`` names the cluster: ``local`` starts a Ray instance
on this machine (all its cores; stopped when the command ends), ``auto`` joins the cluster
this machine was added to with ``ray start``, and ``ray://head:10001`` connects to a remote
head through Ray Client. A process that already called ``ray.init`` (tests, notebooks) keeps
its own instance. Ray is an optional dependency: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from types import ModuleType

from recsys.engines import unreachable
from recsys.errors import InvalidInput, InvalidSettings

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[ray]"'


@dataclass(frozen=True)
class RayResources:
    """What one Ray stage asks the cluster for."""

    # Ray Train workers (DDP ranks) or, when embedding, encoder actors.
    workers: int = 1
    # CPUs each worker or actor reserves; its torch threads. 0 = all of this machine's cores
    # divided among the workers (on a cluster, set it to the cores of one worker).
    cpus_per_worker: int = 0
    # GPUs each worker or actor reserves; 0 = CPU only.
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InvalidInput(f"workers must be 1 or more, got {self.workers}")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise InvalidInput("cpus_per_worker and gpus_per_worker must be 0 or more")

    def cpus(self) -> int:
        """CPUs per worker, resolved against the cluster when ``cpus_per_worker`` is 0: its
        CPUs shared among the workers, at most one node's."""
        if self.cpus_per_worker:
            return self.cpus_per_worker
        ray = require_ray()
        total = int(ray.cluster_resources().get("CPU", 1))
        return max(1, min(total // self.workers, _node_cpus(ray)))

    @classmethod
    def for_cluster(cls) -> RayResources:
        """One worker per GPU when the cluster has GPUs, else one per node, CPUs shared."""
        ray = require_ray()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            return cls(workers=gpus, gpus_per_worker=1.0)
        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
        return cls(workers=max(1, len(nodes)))


def _node_cpus(ray) -> int:
    """CPUs of the smallest node that has any (a worker must fit on one node)."""
    found = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return int(min((c for c in found if c), default=1))


def require_ray() -> ModuleType:
    """The ``ray`` module, or an error that says what to install."""
    try:
        import ray
    except ImportError:
        raise InvalidSettings(
            "Ray was asked for (--ray-address / RECSYS_RAY_ADDRESS, or --workers) but is not "
            f"installed; install it with {INSTALL_HINT}, or unset the address to run in-process"
        ) from None
    return ray


# local | auto | ray://HOST:PORT | HOST:PORT
_ADDRESS = re.compile(
    r"local|auto|(?:ray://)?(?P<host>[^\s:/]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})"
)
_START_HINT = "start one with `ray start --head` (or pass --ray-address local to run one here)"


def connect(address: str) -> float:
    """Join (or start) the Ray cluster at ``address``; the seconds it took (0 when this
    process was already connected). A malformed address, or a cluster that does not answer
    within ``recsys.engines.REACH_SECONDS``, is an ``InvalidSettings`` of one line (Ray
    itself raised a traceback, or retried a dead address for minutes)."""
    ray = require_ray()
    if ray.is_initialized():
        return 0.0
    if not address:
        raise InvalidSettings("no Ray address; set --ray-address local, auto or ray://HOST:PORT")
    form = _ADDRESS.fullmatch(address)
    if form is None:
        raise InvalidSettings(
            f"Ray address {address!r} is not local, auto, ray://HOST:PORT (Ray Client) or "
            "HOST:PORT (a cluster this host can join, `ray start --address`)"
        )
    if form["host"] is not None and (why := unreachable(form["host"], int(form["port"]))):
        raise InvalidSettings(
            f"cannot join the Ray cluster at {address!r}: nothing answers at "
            f"{form['host']}:{form['port']} ({why}); {_START_HINT}"
        )
    start = time.perf_counter()
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = 'pip install "ray[client]"' if "ray[client]" in str(exc) else _START_HINT
        raise InvalidSettings(
            f"cannot join the Ray cluster at {address!r}: {first}; {hint}"
        ) from None
    seconds = time.perf_counter() - start
    log.info("connected to Ray at %s in %.1f s: %s", address, seconds, ray.cluster_resources())
    return seconds
