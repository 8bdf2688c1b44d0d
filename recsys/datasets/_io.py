"""Helpers shared by the data set preparers: atomic writes, verified downloads, summaries."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.errors import InvalidInput, RecsysError
from recsys.files import out_path

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # download read size, bytes


class DatasetUnavailable(RecsysError):
    """A data set's files are neither on this machine nor downloadable."""


@dataclass(frozen=True)
class PrepareSummary:
    """What a `prepare_*` call wrote."""

    out_dir: Path
    # Name -> file or folder written, e.g. {"items": out_dir / "items.csv"}.
    paths: dict[str, Path] = field(default_factory=dict)
    # Name -> count, e.g. {"items": 9066, "users": 671}.
    counts: dict[str, int] = field(default_factory=dict)
    # What differs from what was asked, said after the counts.
    notes: list[str] = field(default_factory=list)


def ensure_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create `out_dir` (and its parents) unless it exists; refuse an existing file. Returns
    it as ``recsys.files.out_path`` has it: a folder replaced whole replaced a link to it,
    and its target stayed empty."""
    out_dir = out_path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(
            f"output folder {out_dir} is an existing file; pass a folder path "
            "(it is created if missing)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def replaceable_out_dir(out_dir: str | os.PathLike[str], ours: set[str]) -> Path:
    """``ensure_out_dir`` for a data set that replaces its folder whole: refuse a folder holding
    anything but ``ours`` (an earlier run's outputs) and ingest's ``*.rejects.csv`` files."""
    out_dir = ensure_out_dir(out_dir)
    others = sorted(
        p.name
        for p in out_dir.iterdir()
        if p.name not in ours and not p.name.endswith(".rejects.csv")
    )
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise InvalidInput(
            f"{out_dir} holds other files ({shown}) and the data set replaces the folder "
            "whole; pass a new or empty folder"
        )
    return out_dir


def _temporary_sibling(path: Path, suffix: str) -> Path:
    """A hidden, unique name in `path`'s folder, so a rename onto `path` is atomic."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{suffix}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name next to `path`; once the block succeeds it is renamed to `path`.

    Readers see either the old file or the complete new one; on error the temporary is removed.
    """
    tmp = _temporary_sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it replaces `path` whole.

    Whatever `path` held before is removed, so a re-run leaves no stale files behind.
    """
    tmp = _temporary_sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _temporary_sibling(path, "old")
    try:
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists() or old.is_symlink():
                os.replace(old, path)  # the earlier output back in its place
            raise
    except BaseException:  # a read-only earlier output: its staging folder was left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)  # the new output is in place: not an error
        if old.exists():
            log.warning("could not remove %s, the earlier output; remove it yourself", old)
    elif old.is_symlink() or old.exists():
        old.unlink()


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` without its index to `path`, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    log.info("wrote %s (%d rows)", path, len(frame))
    return path


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch `url` into `dest`, keeping it only if its MD5 is `md5`; returns `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as f:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise DatasetUnavailable(
                f"could not download {url} ({exc}); check the network connection, or place "
                f"the file in {dest.parent} yourself"
            ) from exc
        if digest.hexdigest() != md5:
            raise InvalidInput(
                f"{url} downloaded with MD5 {digest.hexdigest()}, expected {md5}; the file is "
                "damaged or was changed upstream, so it was not kept. Try again, or place a "
                f"verified copy in {dest.parent}"
            )
    return dest
