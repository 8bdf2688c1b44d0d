"""Connecting to Ray, and what each Ray stage may use of it.

``RECSYS_RAY_ADDRESS`` / ``--ray-address`` names the cluster: ``local`` starts a Ray instance
on this machine (all its cores; stopped when the command ends), ``auto`` joins the cluster
this machine was added to with ``ray start``, and ``ray://head:10001`` connects to a remote
head through Ray Client. A process that already called ``ray.init`` (tests, notebooks) keeps
its own instance. Ray is an optional dependency: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import ModuleType

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


def connect(address: str) -> float:
    """Join (or start) the Ray cluster at ``address``; the seconds it took (0 when this
    process was already connected)."""
    ray = require_ray()
    if ray.is_initialized():
        return 0.0
    if not address:
        raise InvalidSettings("no Ray address; set --ray-address local, auto or ray://HOST:PORT")
    start = time.perf_counter()
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    seconds = time.perf_counter() - start
    log.info("connected to Ray at %s in %.1f s: %s", address, seconds, ray.cluster_resources())
    return seconds
