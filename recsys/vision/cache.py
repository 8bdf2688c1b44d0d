"""Decoded images, kept: one uint8 (N, C, S, S) array per (image files, size, channels).

Decoding and resizing real-size photos costs far more than a training step on a CPU, so it is
done once. With a cache folder the array is a ``.npy`` file there, memory-mapped, and reused by
later runs (`train-images`, then `embed-images`, then another `train-images`) while the files
are unchanged (the key covers each file's path, size and modification time). A catalog that
changes between runs gets a new array, so writing one removes the older arrays of its size and
channels except the last used (``_prune``): a daily retrain keeps two, not one a day. Without one it
is held in memory, or in an anonymous memory-mapped temporary file when it is larger than
``IN_MEMORY_BYTES`` (100k colour images at 64 px are 1.2 GB).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from recsys.errors import InvalidInput
from recsys.vision.data import decode_into

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = 1 << 30  # larger decoded catalogs go to a memory-mapped temporary file
# A cached array used this recently is never removed (another run may be about to open it).
KEEP_USED_SECONDS = 3600.0
_DECODER = "v2"  # bump when decoding changes, so old cache files are not reused


def cache_key(paths: Sequence[str | Path], size: int, channels: int) -> str:
    """A digest of the decoding settings and every file's path, byte size and mtime (a file
    that cannot be read counts as missing: decoding says so, or leaves it out)."""
    digest = hashlib.sha256(f"{_DECODER}|{size}|{channels}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:  # one missing photo stopped a training that skips unreadable ones
            digest.update(f"{os.path.abspath(path)}|missing\n".encode())
            continue
        digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _open(path: Path) -> torch.Tensor:
    """The cached array, memory-mapped copy-on-write (the file is never modified)."""
    return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array: in memory, or mapped on an unlinked temporary file."""
    if int(np.prod(shape)) <= IN_MEMORY_BYTES:
        return np.empty(shape, dtype=np.uint8)
    with tempfile.TemporaryFile(prefix="recsys-images-") as f:  # the mapping outlives f
        return np.memmap(f, dtype=np.uint8, mode="w+", shape=shape)


def decoded_images(
    paths: Sequence[str | Path],
    size: int,
    channels: int,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
    unreadable: list[int] | None = None,
) -> torch.Tensor:
    """Image files as a (N, channels, size, size) uint8 tensor, decoded at most once.

    With ``cache_dir`` the array is read from (or written to) a ``.npy`` file there and
    memory-mapped; without, it is decoded now (see the module docstring). A file that cannot
    be decoded raises ``InvalidInput``; with ``unreadable`` (a list) its row is black and its
    number is added, in order (the cache keeps them beside its array).
    """
    paths = [Path(p) for p in paths]
    shape = (len(paths), channels, size, size)
    failed: list[int] | None = None if unreadable is None else []  # None: the first raises
    if cache_dir is None:
        data = torch.from_numpy(decode_into(_scratch(shape), paths, show_progress, failed))
    else:
        folder = Path(cache_dir)
        path = folder / f"images-{size}px-{channels}ch-{cache_key(paths, size, channels)}.npy"
        sidecar = path.with_suffix(".unreadable.json")
        if path.is_file():
            log.info("decoded images from the cache %s", path)
            _used(path)
            if sidecar.is_file():
                failed = json.loads(sidecar.read_text())
                if unreadable is None:
                    raise InvalidInput(
                        f"cannot read image {paths[failed[0]]}: it could not be decoded "
                        f"({len(failed)} files in all)"
                    )
        else:
            folder.mkdir(parents=True, exist_ok=True)
            _write(path, paths, shape, show_progress, failed, sidecar)
            log.info("decoded %d images into the cache %s", len(paths), path)
            _prune(folder, f"images-{size}px-{channels}ch-*.npy", path)
        data = _open(path)
    if unreadable is not None:
        unreadable.extend(sorted(failed))
    return data


def _write(
    path: Path,
    paths: list[Path],
    shape: tuple[int, ...],
    show_progress: bool,
    unreadable: list[int] | None,
    sidecar: Path,
) -> None:
    """Decode into a temporary ``.npy`` beside ``path``, then rename it to ``path`` (the
    numbers of the ``unreadable`` files written first, to ``sidecar``)."""
    needed, free = math.prod(shape), shutil.disk_usage(path.parent).free
    if needed > free:  # not a sparse file that fails half-way, or one that fills the disk
        raise InvalidInput(
            f"the image cache needs {needed / 1e9:,.1f} GB ({shape[0]:,} images at "
            f"{shape[1]} px) and {path.parent} has {free / 1e9:,.1f} GB free; use a smaller "
            "--input-size, or a cache folder on a larger disk"
        )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        decode_into(out, paths, show_progress, unreadable)
        out.flush()
        del out
        if unreadable:  # None (strict) or empty: none
            sidecar.write_text(json.dumps(sorted(unreadable)))
        os.replace(tmp, path)  # a reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)


def _used(path: Path) -> None:
    """Mark the cached array ``path`` as used now (its modification time), for ``_prune``."""
    with contextlib.suppress(OSError):  # a read-only cache: still read, just not kept by use
        os.utime(path)


def _last_use(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run's prune
        return float("inf")


def _prune(folder: Path, pattern: str, written: Path) -> None:
    """Remove the cached arrays matching ``pattern`` (one size and channels) other than
    ``written`` and the last used of the others, unless used within ``KEEP_USED_SECONDS``:
    each change of a catalog's files writes a new array (1.2 GB for 100k colour images at
    64 px), and without this they pile up, one per retrain. An array mapped by a running
    process stays readable by it after its file is removed."""
    others = sorted((p for p in folder.glob(pattern) if p != written), key=_last_use, reverse=True)
    now = time.time()
    for old in others[1:]:
        idle = now - _last_use(old)
        if idle <= KEEP_USED_SECONDS:
            continue
        old.unlink(missing_ok=True)
        old.with_suffix(".unreadable.json").unlink(missing_ok=True)
        log.info("removed the image cache %s (unused for %.1f days)", old, idle / 86400)
