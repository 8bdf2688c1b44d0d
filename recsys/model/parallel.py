"""Set-wise work spread over the process's CPUs with threads.

numpy's sorts and partitions, BLAS products and scipy's sparse products release the GIL, so
independent batches of them run side by side in threads, with no copy of their inputs. The
results come back in the order of the batches, so nothing depends on the number of CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cpus() -> int:
    """The CPUs this process may run on, at most ``OMP_NUM_THREADS`` when it is set (the
    usual way to keep one job to fewer cores)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        count = min(count or 1, int(limit))
    return max(1, count or 1)


def map_in_order(function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``map(function, items)`` on ``cpus()`` threads, results in the order of ``items``."""
    workers = cpus()
    if workers == 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(function, items)
