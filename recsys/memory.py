"""Giving freed memory back to the system."""

from __future__ import annotations

import ctypes
import functools


def trim_c_heap() -> None:
    """glibc's ``malloc_trim``, where there is one (elsewhere nothing): glibc keeps what is
    freed in the middle of the heap for later allocations, and a process that once held much
    (a training's read, a worker's decode of a large photo) keeps it for good otherwise."""
    trim = _malloc_trim()
    if trim is not None:
        trim(ctypes.c_size_t(0))


@functools.cache
def _malloc_trim():
    """The process's own ``malloc_trim``, looked up once; None without glibc."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
