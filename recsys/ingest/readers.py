"""Stream records from CSV, Parquet or JSON Lines in batches, with line numbers.

Nothing here holds a whole file in memory: each reader yields lists of at most
``batch_size`` records, and reports how far through the file it is for progress bars.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from recsys.errors import InvalidInput

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass
class Record:
    """One source row. ``line`` is the file line where it starts (1-based; the CSV header is
    line 1) or, for Parquet, the 1-based row number. ``error`` is set for unreadable rows."""

    line: int
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class RecordSource:
    """A file opened for batched reading; ``columns`` is known before any batch is read."""

    format: str
    columns: list[str]
    total: int  # progress units: bytes for text formats, rows for Parquet
    position: int  # progress units consumed so far

    def batches(self, batch_size: int) -> Iterator[list[Record]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> RecordSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_records(path: str | Path) -> RecordSource:
    """Open ``path`` by its extension (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``; ``.gz`` ok)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"input file {path} does not exist")
    suffixes = [s.lower() for s in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = FORMATS.get(suffixes[-2] if compressed and len(suffixes) > 1 else path.suffix.lower())
    if kind is None:
        raise InvalidInput(
            f"cannot tell the format of {path.name}: name it .csv, .tsv, .parquet or .jsonl "
            "(optionally .gz for CSV and JSON Lines)"
        )
    if kind == "parquet":
        if compressed:
            raise InvalidInput(f"{path.name}: Parquet is compressed internally; drop the .gz")
        return ParquetSource(path)
    if kind == "jsonl":
        return JsonLinesSource(path, compressed)
    return CsvSource(path, compressed, delimiter="\t" if kind == "tsv" else ",")


def _batched(records: Iterator[Record], batch_size: int) -> Iterator[list[Record]]:
    while batch := list(itertools.islice(records, batch_size)):
        yield batch


class _CountingReader(io.RawIOBase):
    """Counts the compressed/raw bytes read, so text readers can report progress."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n


class _TextSource(RecordSource):
    def __init__(self, path: Path, compressed: bool):
        self.total = path.stat().st_size
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._counter = _CountingReader(self._file)
        binary: BinaryIO = io.BufferedReader(self._counter, buffer_size=1 << 20)
        if compressed:
            binary = gzip.GzipFile(fileobj=binary)
        # Invalid UTF-8 becomes U+FFFD and is rejected per row, not for the whole file.
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")

    @property
    def position(self) -> int:
        return self._counter.count

    def close(self) -> None:
        self._text.close()
        self._file.close()


class CsvSource(_TextSource):
    def __init__(self, path: Path, compressed: bool, delimiter: str = ","):
        super().__init__(path, compressed)
        self.format = "csv"
        self._reader = csv.reader(self._text, delimiter=delimiter)
        try:
            header = next(self._reader)
        except StopIteration:
            header = []
        except csv.Error as exc:
            raise InvalidInput(f"{path.name}: cannot read the CSV header: {exc}") from exc
        self.columns = [name.strip() for name in header]
        if not any(self.columns):
            raise InvalidInput(f"{path.name} is empty or has no header row")
        blank = [i + 1 for i, name in enumerate(self.columns) if not name]
        duplicated = sorted({n for n in self.columns if self.columns.count(n) > 1})
        if blank or duplicated:
            raise InvalidInput(
                f"{path.name}: header has "
                + (f"blank column names at positions {blank}" if blank else "")
                + (" and " if blank and duplicated else "")
                + (f"duplicated column names {duplicated}" if duplicated else "")
                + "; give every column a unique name"
            )

    def batches(self, batch_size: int) -> Iterator[list[Record]]:
        return _batched(self._records(), batch_size)

    def _records(self) -> Iterator[Record]:
        width, previous_end = len(self.columns), self._reader.line_num
        while True:
            start = previous_end + 1
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                previous_end = self._reader.line_num
                yield Record(start, error=f"unreadable CSV row: {exc}")
                continue
            previous_end = self._reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                yield Record(
                    start,
                    dict(zip(self.columns, row, strict=False)),
                    error=f"has {len(row)} fields, the header has {width}",
                )
                continue
            yield Record(start, dict(zip(self.columns, row, strict=True)))


class JsonLinesSource(_TextSource):
    def __init__(self, path: Path, compressed: bool):
        super().__init__(path, compressed)
        self.format = "jsonl"
        self._line = 0
        self._pending: Record | None = None
        # Columns come from the first readable object; later objects may add or omit keys.
        for record in self._records():
            self._pending = record
            if record.error is None:
                break
        self.columns = list(self._pending.values) if self._pending else []
        if self._pending is None:
            raise InvalidInput(f"{path.name} is empty: expected one JSON object per line")

    def batches(self, batch_size: int) -> Iterator[list[Record]]:
        pending, self._pending = [self._pending] if self._pending else [], None
        return _batched(itertools.chain(pending, self._records()), batch_size)

    def _records(self) -> Iterator[Record]:
        for text in self._text:
            self._line += 1
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Record(self._line, error=f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(value, dict):
                yield Record(self._line, error="expected a JSON object on each line")
                continue
            yield Record(self._line, value)


class ParquetSource(RecordSource):
    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.format = "parquet"
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet data
            raise InvalidInput(f"{path.name} is not a readable Parquet file: {exc}") from exc
        self.columns = list(self._file.schema_arrow.names)
        self.total = self._file.metadata.num_rows
        self.position = 0

    def batches(self, batch_size: int) -> Iterator[list[Record]]:
        for table in self._file.iter_batches(batch_size=batch_size):
            rows = table.to_pylist()
            start = self.position + 1
            self.position += len(rows)
            yield [Record(start + i, row) for i, row in enumerate(rows)]

    def close(self) -> None:
        self._file.close()
