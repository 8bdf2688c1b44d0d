"""Read CSV, Parquet or JSON Lines in batches of columns, with the line where each row starts.

Nothing here holds a whole file in memory: each reader yields batches of at most
``batch_size`` rows, and reports how far through the file it is for progress bars. CSV and
Parquet are read a block at a time into Arrow columns (CSV records are found with
``csv_scan``; a file with irregular quoting is read row by row with the ``csv`` module from
the first irregular block on). JSON Lines, whose values may change type from row to row, are
read row by row.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from recsys.errors import InvalidInput
from recsys.ingest import csv_scan
from recsys.ingest.report import Reason, Reject
from recsys.ingest.values import Column

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


@dataclass
class Batch:
    """Rows of one batch, column by column; unreadable rows are already set aside."""

    lines: np.ndarray  # (B,) line (Parquet: row number) where each row starts
    columns: dict[str, Column]  # one (B,) column per name in the file
    unreadable: list[Reject]  # malformed rows, not in ``columns``
    source: pa.Table | list[dict[str, Any]]  # the rows as read, for the rejects file

    def __len__(self) -> int:
        return len(self.lines)

    def records(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """The rows at these positions as read (the ``record`` column of the rejects file)."""
        if isinstance(self.source, list):
            return [self.source[row] for row in rows]
        table = self.source.take(pa.array(rows, pa.int64()))
        try:
            return table.to_pylist()
        except (OverflowError, ValueError):  # a date or time beyond Python's years 1-9999
            return _temporal_as_text(table).to_pylist()


def _temporal_as_text(table: pa.Table) -> pa.Table:
    for index, column in enumerate(table.schema):
        if pa.types.is_temporal(column.type):
            table = table.set_column(index, column.name, table.column(index).cast(pa.string()))
    return table


def batch_from_records(records: list[Record]) -> Batch:
    """A batch from rows read one by one (JSON Lines, irregular CSV, the HTTP API)."""
    good = [record for record in records if record.error is None]
    unreadable = [
        Reject(record.line, Reason.MALFORMED_ROW, record.error, record.values)
        for record in records
        if record.error is not None
    ]
    names = dict.fromkeys(name for record in good for name in record.values)
    columns: dict[str, Column] = {
        name: [record.values.get(name) for record in good] for name in names
    }
    lines = np.array([record.line for record in good], dtype=np.int64)
    return Batch(lines, columns, unreadable, [record.values for record in good])


def batch_from_table(table: pa.Table, lines: np.ndarray, unreadable: list[Reject]) -> Batch:
    columns = {name: plain_array(table.column(name)) for name in table.column_names}
    return Batch(lines, columns, unreadable, table)


def plain_array(column: pa.ChunkedArray) -> pa.Array:
    """One array of the column's values as the ingest rules read them: dictionaries decoded,
    large strings and UTF-8 binary as strings."""
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        # Parquet strings written without their UTF-8 annotation (Spark, Hive); not all
        # UTF-8: each value is decoded or refused by the rules (values._text_of_bytes)
        with contextlib.suppress(pa.ArrowInvalid):
            array = array.cast(pa.string())
    return array


class RecordSource:
    """A file opened for batched reading; ``columns`` is known before any batch is read."""

    format: str
    columns: list[str]
    total: int  # progress units: bytes for text formats, rows for Parquet
    position: int  # progress units consumed so far
    # False for a JSON Lines file without one readable line: it has no columns to check,
    # and every line is a reject
    readable: bool = True

    def batches(self, batch_size: int) -> Iterator[Batch]:
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
    if compressed:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise InvalidInput(
                    f"{path.name} is not gzip-compressed; drop the .gz from its name"
                )
    if _utf16(path, compressed):  # its names read as "\ufffd\ufffdu\x00s\x00e...", not UTF-8
        raise InvalidInput(f"{path.name} is UTF-16 text; save it as UTF-8 and load it again")
    if kind == "jsonl":
        return JsonLinesSource(path, compressed)
    return CsvSource(path, compressed, delimiter="\t" if kind == "tsv" else ",")


def _utf16(path: Path, compressed: bool) -> bool:
    """Whether the text starts with a UTF-16 byte order mark (Excel's "Unicode text")."""
    with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
        try:
            return f.read(2) in (b"\xff\xfe", b"\xfe\xff")
        except (OSError, EOFError):  # a damaged gzip: its reader says so
            return False


def _batched(records: Iterator[Record], batch_size: int) -> Iterator[Batch]:
    while batch := list(itertools.islice(records, batch_size)):
        yield batch_from_records(batch)


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


class _Prefixed(io.RawIOBase):
    """``prefix`` and then the rest of a binary stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO):
        self._prefix, self._rest = memoryview(prefix), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        source = self._prefix if len(self._prefix) else self._rest.read(len(buffer))
        n = min(len(buffer), len(source))
        buffer[:n] = source[:n]
        if len(self._prefix):
            self._prefix = self._prefix[n:]
        return n


class _TextSource(RecordSource):
    def __init__(self, path: Path, compressed: bool):
        self.total = path.stat().st_size
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._counter = _CountingReader(self._file)
        self._binary: BinaryIO = io.BufferedReader(self._counter, buffer_size=1 << 20)
        if compressed:
            self._binary = gzip.GzipFile(fileobj=self._binary)

    @property
    def position(self) -> int:
        return self._counter.count

    def _text(self, binary: BinaryIO, encoding: str = "utf-8") -> io.TextIOWrapper:
        # Invalid UTF-8 becomes U+FFFD and is rejected per row, not for the whole file.
        return io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline="")

    def close(self) -> None:
        self._binary.close()
        self._file.close()


class _Lines:
    """A text's lines for ``csv.reader``, remembering those each row took, with lines to
    give again first."""

    def __init__(self, text: Iterable[str]):
        self._text, self.again, self.taken = iter(text), [], []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.again.pop() if self.again else next(self._text)
        self.taken.append(line)
        return line


def csv_records(
    text: io.TextIOBase, columns: list[str], delimiter: str, lines_before: int
) -> Iterator[Record]:
    """Rows read by the ``csv`` module (strictly: a quote that never closes, or text after a
    closing quote, is an error, not a field run on), numbered after ``lines_before`` lines.

    Such an error over several lines is a stray quote: its first line is rejected and the
    lines after it are read again on their own. Before, one stray quote read the rest of the
    file into one field, and 19,998 good rows after it were neither stored nor rejected. A
    row whose quoted field holds a line break and closes well is one row, whatever its
    number of fields (a row of too many is one reject, its lines never rows of their own).
    """
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    width, line = len(columns), lines_before
    while True:
        lines.taken.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start, taken = line + 1, len(lines.taken)
            if taken > 1:
                why = (
                    f"a quote opened on this line is not closed well within {taken} lines (a "
                    "stray quote? write one inside a quoted field as two); this line is "
                    "rejected and those after it are read on their own"
                )
                lines.again.extend(lines.taken[:0:-1])  # all but the first, given again
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
            else:
                why = str(exc)
            line += 1
            yield Record(start, error=f"unreadable CSV row: {why}")
            continue
        start = line + 1
        line += len(lines.taken)
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != width:
            yield Record(
                start,
                dict(zip(columns, row, strict=False)),
                error=f"has {len(row)} fields, the header has {width}",
            )
            continue
        yield Record(start, dict(zip(columns, row, strict=True)))


class CsvSource(_TextSource):
    """CSV or TSV, parsed by Arrow a block of records at a time."""

    LIMIT = 64 << 20  # a record still unfinished after this many bytes: read row by row

    def __init__(self, path: Path, compressed: bool, delimiter: str = ","):
        super().__init__(path, compressed)
        self.format, self._delimiter = "csv", delimiter
        self._buffer, self._eof, self._lines = b"", False, 0
        self._record_bytes = 64  # running estimate, to read about one batch at a time
        self.columns = self._read_header(path)

    def _read_header(self, path: Path) -> list[str]:
        records = self._fill(1)
        end = int(records.ends[0]) if len(records.ends) else len(self._buffer)
        text = self._buffer[:end].decode("utf-8", errors="replace")
        try:
            header = next(csv.reader(io.StringIO(text, newline=""), delimiter=self._delimiter))
        except StopIteration:
            header = []
        except csv.Error as exc:
            raise InvalidInput(f"{path.name}: cannot read the CSV header: {exc}") from exc
        self._consume(records, end)
        columns = [name.strip() for name in header]
        _check_header(columns, path)
        return columns

    def batches(self, batch_size: int) -> Iterator[Batch]:
        while True:
            records = self._fill(batch_size)
            if (
                not records.regular
                or (not len(records.ends) and len(self._buffer))
                or self._bad_over_lines(records)
            ):
                break  # irregular quoting or a runaway record: the csv module decides
            if not len(records.ends):
                return
            yield self._fast_batch(records, batch_size)
        text = self._text(io.BufferedReader(_Prefixed(self._buffer, self._binary)))
        rows = csv_records(text, self.columns, self._delimiter, self._lines)
        yield from _batched(rows, batch_size)

    def _fill(self, batch_size: int) -> csv_scan.Records:
        """Scan the buffer, reading more until it holds ``batch_size`` records or the end."""
        while True:
            records = csv_scan.scan(self._buffer, self._delimiter, final=self._eof)
            enough = np.count_nonzero(~records.blank) >= batch_size
            if self._eof or enough or not records.regular or len(self._buffer) > self.LIMIT:
                return records
            chunk = self._binary.read(max(1 << 20, batch_size * self._record_bytes * 5 // 4))
            if not self._buffer and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]  # UTF-8 byte order mark
            self._eof = not chunk
            self._buffer += chunk

    def _consume(self, records: csv_scan.Records, end: int) -> None:
        self._lines += records.breaks_before(end)
        self._buffer = self._buffer[end:]

    def _bad_over_lines(self, records: csv_scan.Records) -> bool:
        """Whether a bad record (not the header's number of fields) runs on over several
        lines: a quote that never closed, which ``csv_records`` rejects alone, reading the
        lines after it again."""
        bad = np.flatnonzero((records.fields != len(self.columns)) & ~records.blank)
        return any(
            b"\n" in self._buffer[start:stop].rstrip(b"\r\n")
            for start, stop in zip(
                records.starts[bad].tolist(), records.ends[bad].tolist(), strict=True
            )
        )

    def _fast_batch(self, records: csv_scan.Records, batch_size: int) -> Batch:
        rows = np.flatnonzero(~records.blank)[:batch_size]
        end = int(records.ends[rows[-1]]) if len(rows) else int(records.ends[-1])
        block, lines = self._buffer[:end], self._lines + records.lines[rows] + 1
        starts, ends = records.starts[rows], records.ends[rows]
        good = records.fields[rows] == len(self.columns)
        unreadable = [
            self._malformed(block[start:stop], line)
            for start, stop, line in zip(
                starts[~good].tolist(), ends[~good].tolist(), lines[~good].tolist(), strict=True
            )
        ]
        table = self._parse(csv_scan.keep_bytes(block, starts[good], ends[good]), good.sum())
        if len(rows):
            self._record_bytes = max(1, end // len(rows))
        lines_before = self._lines
        self._consume(records, end)
        if table is None:  # Arrow and the csv module disagree: the csv module decides
            text = io.StringIO(block.decode("utf-8", errors="replace"), newline="")
            return batch_from_records(
                list(csv_records(text, self.columns, self._delimiter, lines_before))
            )
        return batch_from_table(table, lines[good], [r for r in unreadable if r is not None])

    def _malformed(self, data: bytes, line: int) -> Reject | None:
        text = io.StringIO(data.decode("utf-8", errors="replace"), newline="")
        record = next(csv_records(text, self.columns, self._delimiter, line - 1), None)
        if record is None:
            return None
        return Reject(record.line, Reason.MALFORMED_ROW, record.error or "", record.values)

    def _parse(self, data: bytes, rows: int) -> pa.Table | None:
        """Arrow's reading of these records, all columns as text; None if it cannot."""
        strings = {name: pa.string() for name in self.columns}
        if not rows:
            return pa.table({name: pa.array([], pa.string()) for name in self.columns})
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", errors="replace").encode()
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(data),
                read_options=pa_csv.ReadOptions(column_names=self.columns, block_size=16 << 20),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self._delimiter, newlines_in_values=True, ignore_empty_lines=False
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=strings,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:
            return None
        return table if table.num_rows == rows else None


def _check_header(columns: list[str], path: Path) -> None:
    if not any(columns):
        raise InvalidInput(f"{path.name} is empty or has no header row")
    blank = [i + 1 for i, name in enumerate(columns) if not name]
    duplicated = sorted({n for n in columns if columns.count(n) > 1})
    if blank or duplicated:
        raise InvalidInput(
            f"{path.name}: header has "
            + (f"blank column names at positions {blank}" if blank else "")
            + (" and " if blank and duplicated else "")
            + (f"duplicated column names {duplicated}" if duplicated else "")
            + "; give every column a unique name"
        )


class JsonLinesSource(_TextSource):
    def __init__(self, path: Path, compressed: bool):
        super().__init__(path, compressed)
        self.format = "jsonl"
        self._lines = self._text(self._binary, encoding="utf-8-sig")
        self._line = 0
        # Columns come from the first readable object; later objects may add or omit keys.
        # The bad lines before it are rejects too (only the last of them was kept: a file
        # whose line 1 was bad reported 1 accepted, 0 rejected).
        self._pending: list[Record] = []
        for record in self._records():
            self._pending.append(record)
            if record.error is None:
                break
        if not self._pending:
            raise InvalidInput(f"{path.name} is empty: expected one JSON object per line")
        self.readable = self._pending[-1].error is None
        self.columns = list(self._pending[-1].values) if self.readable else []

    def batches(self, batch_size: int) -> Iterator[Batch]:
        pending, self._pending = self._pending, []
        return _batched(itertools.chain(pending, self._records()), batch_size)

    def _records(self) -> Iterator[Record]:
        for text in self._lines:
            self._line += 1
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Record(self._line, error=f"invalid JSON: {_where(exc, text)}")
                continue
            except RecursionError:  # a traceback half-way through the file, before
                yield Record(self._line, error="invalid JSON: nested too deeply")
                continue
            if _deeper_than(value, MAX_JSON_DEPTH):  # one level under the parser's limit
                # parsed, then failed as a traceback writing the rejects file
                yield Record(self._line, error=f"invalid JSON: nested over {MAX_JSON_DEPTH} levels")
                continue
            if not isinstance(value, dict):
                yield Record(self._line, error="expected a JSON object on each line")
                continue
            yield Record(self._line, value)


# No value a row holds nests deeper than a list in an object; far deeper is refused.
MAX_JSON_DEPTH = 32


def _where(exc: json.JSONDecodeError, line: str) -> str:
    """The parser's message and column on the line itself: a line cut short was said to be
    wrong "at column 1", of the line break after it."""
    try:
        json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as within:
        exc = within
    return f"{exc.msg} at column {exc.colno}"


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests lists and objects over ``limit`` levels."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for v in level
            if isinstance(v, dict | list)
            for child in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return True


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

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for chunk in self._file.iter_batches(batch_size=batch_size):
            lines = np.arange(self.position + 1, self.position + 1 + chunk.num_rows)
            self.position += chunk.num_rows
            yield batch_from_table(pa.Table.from_batches([chunk]), lines, [])

    def close(self) -> None:
        self._file.close()
