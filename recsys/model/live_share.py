"""Live items' blocks, made once per host and read by every worker that serves the bundle.

Every worker follows the catalog and needs the blocks of each written item (``LiveItems.blocks``:
the tabular transform, and a photo decoded and run through the image encoder, 3-4 ms each on
a CPU). Made by each worker, a write costs its host that work once per worker. Here the first
worker to follow a write makes them and leaves them in a file; the others, following the same
write a moment later, read the file instead.

A file is named after the item and a digest of everything its blocks are made of (title,
attributes, the photo's path, size and modification time), under a folder per bundle version:
an edited item, or a photo replaced under the same path, gets a new name, so a file is never
stale. Within it, a folder per set of parts the worker made them with (``LiveItems.parts``): a
worker that could not load the bundle's image encoder shares nothing with one that did.

Files are written whole (to a temporary name, then renamed) and hold a line of JSON and raw
float32 / int32 arrays (nothing a reader could execute); one that cannot be read is made
again, and a worker that cannot write goes on with what it made.

    shared = SharedBlocks(root, version, "tabular+image")
    digests = shared.digests(frame)
    found = shared.read(frame["item_id"], digests)  # per item: (blocks, tokens) or None
    shared.write(item_ids, digests, blocks, tokens)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.model import sparse_rows

log = logging.getLogger(__name__)

Made = tuple[dict[str, np.ndarray], sp.csr_matrix | None]  # one item: block -> (d,), (1, F)
_NOT_CONTENT = {"item_id", "in_stock"}


class SharedBlocks:
    """Live items' blocks of bundle ``version`` made with ``parts``, under ``root`` (see the
    module docstring)."""

    def __init__(self, root: str | Path, version: str, parts: str) -> None:
        self.root = Path(root)
        self.version = version
        self.folder = self.root / version / parts
        self._warned = False  # a folder that cannot be written is logged once
        # each item's latest digest this worker met: the file of the one before goes (a file
        # per edit of an item piled up until the next bundle, 10 MB an hour in a soak)
        self._latest: dict[str, str] = {}

    def digests(self, frame: pd.DataFrame) -> list[str]:
        """One digest per row of ``frame`` (``recsys.catalog.changes.item_rows``' columns)."""
        columns = [c for c in frame.columns if c not in _NOT_CONTENT]
        out = []
        for values in frame[columns].itertuples(index=False, name=None):
            content = {c: v for c, v in zip(columns, values, strict=True) if not _missing(v)}
            content["photo"] = _photo_stamp(content.get("image_path"))
            text = json.dumps(content, sort_keys=True, default=str)
            out.append(hashlib.sha256(text.encode()).hexdigest())
        return out

    def read(self, item_ids, digests: list[str]) -> list[Made | None]:
        """Each item's shared blocks, or None where none were left (or they cannot be read)."""
        self._supersede(item_ids, digests)
        return [self._read(self._path(i, d)) for i, d in zip(item_ids, digests, strict=True)]

    def _supersede(self, item_ids, digests: list[str]) -> None:
        """Remember each item's digest; remove the file of the one it had before (a worker
        still following that edit makes its blocks again: a cost, never a wrong answer)."""
        for item_id, digest in zip(item_ids, digests, strict=True):
            before = self._latest.get(item_id)
            self._latest[item_id] = digest
            if before is not None and before != digest:
                with contextlib.suppress(OSError):
                    self._path(item_id, before).unlink(missing_ok=True)

    def write(
        self,
        item_ids,
        digests: list[str],
        blocks: dict[str, np.ndarray],
        tokens: sp.csr_matrix | None,
    ) -> None:
        """Leave the blocks of these items (``blocks``: name -> (n, d); ``tokens``: (n, F) or
        None) for the other workers. Failures are logged: each worker can make its own."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for k, (item_id, digest) in enumerate(zip(item_ids, digests, strict=True)):
                self._write(self._path(item_id, digest), _packed(blocks, k, tokens))
        except OSError as exc:
            if not self._warned:
                log.warning("live items: cannot share blocks in %s: %s", self.folder, exc)
            self._warned = True

    def prune_others(self) -> None:
        """Remove the folders of bundle versions gone from the artifacts folder beside
        ``root`` (``bundles/<version>``; a worker that still serves one makes its items'
        blocks itself). Those of bundles still there are kept: in an artifacts folder shared
        by several catalogs, a service's restart removed the others' live blocks."""
        if not self.root.is_dir():
            return
        bundles = self.root.parent / "bundles"
        for other in self.root.iterdir():
            if (
                other.is_dir()
                and other.name != self.version
                and not (bundles / other.name).is_dir()
            ):
                shutil.rmtree(other, ignore_errors=True)

    def _path(self, item_id: str, digest: str) -> Path:
        name = hashlib.sha256(f"{item_id}\0{digest}".encode()).hexdigest()[:40]
        return self.folder / name[:2] / f"{name}.blocks"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
        partial.write_bytes(data)
        os.replace(partial, path)

    @staticmethod
    def _read(path: Path) -> Made | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return _unpacked(data)
        except (ValueError, KeyError, TypeError) as exc:  # a damaged file: made again
            log.warning("live items: unreadable shared blocks %s: %s", path, exc)
            return None


def _packed(blocks: dict[str, np.ndarray], k: int, tokens: sp.csr_matrix | None) -> bytes:
    """Item ``k``'s blocks and its row of ``tokens`` ((n, F) CSR) as one line of JSON (names
    and sizes) and the arrays' float32 / int32 bytes after it: read back in microseconds."""
    parts = [np.asarray(values[k], dtype=np.float32) for values in blocks.values()]
    sizes = [[name, len(part)] for name, part in zip(blocks, parts, strict=True)]
    head: dict[str, Any] = {"blocks": sizes}
    if tokens is not None:
        indices, data = sparse_rows.row(tokens, k)
        head["tokens"] = [tokens.shape[1], len(indices)]
        parts += [indices.astype(np.int32), data.astype(np.float32)]
    return json.dumps(head).encode() + b"\n" + b"".join(part.tobytes() for part in parts)


def _unpacked(data: bytes) -> Made:
    line, _, body = data.partition(b"\n")
    head = json.loads(line)
    blocks, at = {}, 0
    for name, width in head["blocks"]:
        blocks[name] = np.frombuffer(body, dtype=np.float32, count=width, offset=at)
        at += 4 * width
    tokens = None
    if "tokens" in head:
        width, nnz = head["tokens"]
        indices = np.frombuffer(body, dtype=np.int32, count=nnz, offset=at)
        values = np.frombuffer(body, dtype=np.float32, count=nnz, offset=at + 4 * nnz)
        tokens = sp.csr_matrix((values, indices, np.array([0, nnz])), shape=(1, width))
        at += 8 * nnz
    if at != len(body):
        raise ValueError(f"{len(body)} bytes after the header, {at} expected")
    return blocks, tokens


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _photo_stamp(path: Any) -> list[int] | None:
    """The photo's size and modification time: a file replaced under the same path differs."""
    if not isinstance(path, str):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]
