"""What an ingest did: counts, rejected rows with line numbers, and the rejects file."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.errors import InvalidInput


class Reason:
    """Why a row was rejected (the ``reason`` column of the rejects file)."""

    MALFORMED_ROW = "malformed_row"
    MISSING_VALUE = "missing_value"
    INVALID_VALUE = "invalid_value"
    DUPLICATE = "duplicate"
    UNKNOWN_ITEM = "unknown_item"
    MISSING_IMAGE = "missing_image"
    ERASED_USER = "erased_user"


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    detail: str
    record: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.detail}"


# Items named in the warning about updated items that lost fields.
FIRST_CLEARED = 5


@dataclass
class IngestReport:
    path: Path
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    # updated items whose stored title, photo or attribute the new row left out (a row
    # replaces the item's whole row)
    cleared: int = 0
    # the first ``FIRST_CLEARED`` of them, to name in the warning
    first_cleared: list[str] = field(default_factory=list)
    # new items the change log says were removed before (an older file brings them back),
    # and the first ``FIRST_CLEARED`` of them
    revived: int = 0
    first_revived: list[str] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    rejects_path: Path | None = None
    first_rejects: list[Reject] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "accepted": self.accepted,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "cleared_fields": self.cleared,
            "removed_before": self.revived,
            "rejected": self.total_rejected,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "rejects_file": str(self.rejects_path) if self.rejects_path else None,
        }


def default_rejects_path(input_path: Path) -> Path:
    """``items.csv`` -> ``items.csv.rejects.csv``, beside the input."""
    return input_path.with_name(input_path.name + ".rejects.csv")


class RejectsWriter:
    """Streams rejects to ``path`` via a temporary file renamed on close.

    Keeps the first ``keep`` rejects for the console. A run with no rejects leaves no file
    (and removes a stale one from an earlier run, so it cannot be mistaken for this run's).
    """

    COLUMNS = ("line", "reason", "detail", "record")

    def __init__(self, path: Path, report: IngestReport, keep: int = 20):
        folder = Path(path).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            # before any row is stored: the rejects of a finished ingest cannot be lost
            raise InvalidInput(
                f"cannot write the rejects file {path}: its folder {folder} "
                f"{'is not writable' if folder.is_dir() else 'does not exist'}; "
                "give --rejects a path in a folder that exists"
            )
        self.path, self.report, self.keep = path, report, keep
        # this run's own: two ingests of one file shared "<rejects>.tmp", and the one whose
        # file the other had moved away stopped with "No such file or directory"
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self):x}.tmp")
        self._file = None
        self._writer = None

    def add(self, reject: Reject) -> None:
        self.report.rejected[reject.reason] += 1
        if len(self.report.first_rejects) < self.keep:
            self.report.first_rejects.append(reject)
        if self._writer is None:
            # A rejected record may hold what UTF-8 cannot (an unpaired surrogate): escaped.
            self._file = open(  # noqa: SIM115 - closed in close()
                self._tmp, "w", newline="", encoding="utf-8", errors="backslashreplace"
            )
            self._writer = csv.writer(self._file)
            self._writer.writerow(self.COLUMNS)
        record = json.dumps(reject.record, default=str, ensure_ascii=False) if reject.record else ""
        if reject.reason == Reason.ERASED_USER:  # an erased shopper's data is not written again
            record = ""
        self._writer.writerow((reject.line, reject.reason, reject.detail, record))

    def close(self) -> None:
        if self._file is None:
            self.path.unlink(missing_ok=True)
            return
        try:
            self._file.close()
            os.replace(self._tmp, self.path)
        except OSError:  # a full disk: no half-written rejects file is left behind
            self._tmp.unlink(missing_ok=True)
            raise
        self.report.rejects_path = self.path
