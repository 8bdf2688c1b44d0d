"""The batch loop shared by every ingest: read, parse, write one transaction per batch.

A crash or ``kill -9`` between batches leaves every committed batch whole and nothing of the
batch in flight; re-running the same file finishes the job, because writes are upserts keyed
on external ids (items) or on a hash of the event (interactions).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from tqdm import tqdm

from recsys.catalog.db import require_current_schema
from recsys.errors import InvalidInput
from recsys.ingest.readers import Record, open_records
from recsys.ingest.report import IngestReport, Reason, Reject, RejectsWriter, default_rejects_path
from recsys.ingest.values import BadValue, is_missing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    # Rows per transaction: larger is faster, smaller loses less work to a crash.
    batch_size: int = 5000
    # Where rejected rows go; default: "<input>.rejects.csv" beside the input.
    rejects_path: Path | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {self.batch_size}")


class RowRejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class Ingester(Protocol):
    """What differs between item and interaction ingests."""

    name: str
    required: tuple[str, ...]

    def parse(self, record: Record) -> Any:
        """A row ready to write, or raise ``RowRejected``."""

    def write(
        self, session: Session, rows: Sequence[Any], report: IngestReport
    ) -> Iterable[Reject]:
        """Write one batch in the open transaction; yield rows rejected on the way."""


def run_ingest(
    engine: Engine, path: Path, ingester: Ingester, options: IngestOptions
) -> IngestReport:
    require_current_schema(engine)
    path = Path(path)
    report = IngestReport(path)
    with open_records(path) as source:
        check_columns(source.columns, ingester, path)
        rejects = RejectsWriter(options.rejects_path or default_rejects_path(path), report)
        bar = tqdm(
            total=source.total,
            desc=f"ingest {ingester.name}",
            unit="B" if source.format != "parquet" else "row",
            unit_scale=True,
            disable=not options.show_progress,
        )
        try:
            for batch in source.batches(options.batch_size):
                rows = parse_batch(batch, ingester, rejects)
                with Session(engine) as session, session.begin():
                    late_rejects = list(ingester.write(session, rows, report))
                for reject in late_rejects:
                    rejects.add(reject)
                bar.update(source.position - bar.n)
                bar.set_postfix_str(
                    f"ok={report.accepted} rejected={report.total_rejected}", refresh=False
                )
        finally:
            bar.close()
            rejects.close()
    log.debug("ingested %s: %s", path, report.as_dict())
    return report


def check_columns(columns: Sequence[str], ingester: Ingester, path: Path) -> None:
    """Fail fast, before anything is written, when a required column is absent."""
    missing = [name for name in ingester.required if name not in columns]
    if missing:
        raise InvalidInput(
            f"{path.name} has no {', '.join(repr(m) for m in missing)} column "
            f"(found: {', '.join(columns) or 'none'}); {ingester.name} files need "
            f"{', '.join(ingester.required)}"
        )


def parse_batch(batch: list[Record], ingester: Ingester, rejects: RejectsWriter) -> list[Any]:
    rows = []
    for record in batch:
        if record.error is not None:
            rejects.add(Reject(record.line, Reason.MALFORMED_ROW, record.error, record.values))
            continue
        try:
            row = ingester.parse(record)
        except RowRejected as exc:
            rejects.add(Reject(record.line, exc.reason, exc.detail, record.values))
            continue
        rows.append(row)
    return rows


def required(record: Record, column: str, parse) -> Any:
    value = record.values.get(column)
    if is_missing(value):
        raise RowRejected(Reason.MISSING_VALUE, f"{column} is empty")
    return parsed(value, column, parse)


def optional(record: Record, column: str, parse, default: Any = None) -> Any:
    value = record.values.get(column)
    return default if is_missing(value) else parsed(value, column, parse)


def parsed(value: Any, column: str, parse) -> Any:
    try:
        return parse(value, column)
    except BadValue as exc:
        raise RowRejected(Reason.INVALID_VALUE, str(exc)) from None


def key_hash(key: str) -> str:
    """A 128-bit hex digest of a natural key (stable across runs and machines)."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class SeenKeys:
    """The keys accepted so far in one run, to reject duplicates within a file.

    Holds 64 bits per key in a sorted array (40 MB for 5 million rows), never the rows.
    """

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)

    def first_occurrences(self, digests: Sequence[str]) -> list[bool]:
        """For each hex digest: True if this run has not seen it before (in order)."""
        hashes = np.array([int(d[:16], 16) for d in digests], dtype=np.uint64)  # (B,)
        seen_before = self._contains(hashes)
        in_batch: set[int] = set()
        first = []
        for value, old in zip(hashes.tolist(), seen_before.tolist(), strict=True):
            first.append(not old and value not in in_batch)
            in_batch.add(value)
        new = np.unique(hashes[~seen_before])
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, new), new)
        return first

    def _contains(self, hashes: np.ndarray) -> np.ndarray:
        if not len(self._sorted):
            return np.zeros(len(hashes), dtype=bool)
        positions = np.searchsorted(self._sorted, hashes).clip(max=len(self._sorted) - 1)
        return self._sorted[positions] == hashes
