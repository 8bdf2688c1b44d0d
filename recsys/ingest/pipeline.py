"""The batch loop shared by every ingest: read, validate, write one transaction per batch.

A batch is read and validated column by column before its transaction opens; the transaction
then resolves ids and writes the batch set-wise (``bulk``). A crash or ``kill -9`` leaves every
committed batch whole and nothing of the batch in flight; re-running the same file finishes
the job, because writes are upserts keyed on external ids (items) or on a hash of the event
(interactions).
"""

from __future__ import annotations

import copy
import gzip
import logging
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from recsys.catalog.db import require_current_schema
from recsys.errors import Interrupted, InvalidInput, Terminated, TryAgain
from recsys.ingest.bulk import FOREIGN_KEY_VIOLATION, prepare, sqlstate
from recsys.ingest.readers import Batch, open_records
from recsys.ingest.report import IngestReport, Reason, Reject, RejectsWriter, default_rejects_path
from recsys.ingest.values import BadValue, Parsed, check_attribute_name, is_missing, parse_id

log = logging.getLogger(__name__)

# Refused rows of a batch: position in the batch -> (reason, detail).
Problems = dict[int, tuple[str, str]]


@dataclass(frozen=True)
class IngestOptions:
    # Rows per transaction: larger is faster, smaller loses less work to a crash.
    batch_size: int = 50_000
    # Where rejected rows go; default: "<input>.rejects.csv" beside the input.
    rejects_path: Path | None = None
    show_progress: bool = True
    # Columns of the file to leave out (an interactions file's other columns are refused; an
    # items file's would be attributes).
    ignore_columns: tuple[str, ...] = ()
    # Whether an items file may change the kind the catalog records for an attribute (a
    # numeric price made categorical by one "1,234.50", for every item); without it, a row
    # whose value does not fit the recorded kind is rejected, as an HTTP write is refused.
    widen_kinds: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {self.batch_size}")
        object.__setattr__(self, "ignore_columns", tuple(self.ignore_columns))


class Ingester(Protocol):
    """What differs between item and interaction ingests."""

    name: str
    required: tuple[str, ...]
    # Columns of their own; with ``attributes``, every other column is an item attribute.
    known: tuple[str, ...]
    attributes: bool

    def parse(self, batch: Batch) -> tuple[Any, Problems]:
        """The batch's valid rows ready to write (with their ``row`` in the batch), and the
        problems of the others."""

    def look_up(self, reader: Connection, rows: Any) -> Any:
        """The parsed rows with what can be read ahead of the write's transaction, on a
        connection of its own (the parse thread's); ``write`` must not rely on it."""

    def write(self, connection: Connection, rows: Any, report: IngestReport) -> Problems:
        """Write the rows in the open transaction; return the rows refused on the way."""


def run_ingest(
    engine: Engine, path: Path, ingester: Ingester, options: IngestOptions
) -> IngestReport:
    require_current_schema(engine)
    path = Path(path)
    pristine = copy.deepcopy(ingester)  # a pass leaves its keys seen and ids known
    stored = None  # the report of the pass that stored most: rows stored stay stored
    for attempt in range(1, RACED_ATTEMPTS + 1):
        try:
            return _attempt(engine, path, copy.deepcopy(pristine), options)
        except _Raced as raced:
            if stored is None or raced.report.accepted > stored.accepted:
                stored = raced.report
            # a nightly job stopped (exit 130) whenever a merchandiser removed an item the
            # current batch named: the file is read again, its stored rows left as they are
            if attempt < RACED_ATTEMPTS:
                log.warning(
                    "%s: a user or item a batch names was erased or removed while it was "
                    "written; reading the file again (%d of %d)",
                    path.name,
                    attempt + 1,
                    RACED_ATTEMPTS,
                )
    again = TryAgain(
        f"{path.name}: users or items the batches named were erased or removed while they were "
        f"written, {RACED_ATTEMPTS} passes in a row; {stored.accepted:,} rows or more were "
        "stored, in whole batches; run the same command again to store the rest (rows already "
        "stored are left as they are)"
    )
    again.report = stored  # type: ignore[attr-defined]
    raise again


# How often an ingest reads its file again after a user or item it names was removed while
# a batch was written (PostgreSQL): each pass finds the rows stored before unchanged.
RACED_ATTEMPTS = 3


class _Raced(Exception):
    """A user erased or an item removed between a batch's look-up of its ids and its write."""


def _attempt(engine: Engine, path: Path, ingester: Ingester, options: IngestOptions):
    """One pass over the file. An error that stops it carries the pass's ``report`` (its
    ``report`` attribute): what was stored by then, which `ingest --json` prints."""
    report = IngestReport(path)

    def told(error: BaseException) -> BaseException:
        error.report = report  # type: ignore[attr-defined]
        return error

    rest = "(rows already stored are left as they are)"
    try:
        return _run_ingest(engine, path, ingester, options, report)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a damaged .gz, read lazily
        raise told(
            InvalidInput(
                f"{path.name}: the compressed file is damaged or cut short ({exc}); "
                f"{_stored(report, ' before the damage')}; ingest a whole copy "
                f"to store the rest {rest}"
            )
        ) from None
    except KeyboardInterrupt as exc:
        raise told(
            Interrupted(
                f"{path.name}: {_stop_word(exc)}; {_stored(report)}, in whole "
                f"batches; run the same command again to store the rest {rest}"
            )
        ) from None
    except DBAPIError as exc:
        if sqlstate(exc.orig) != FOREIGN_KEY_VIOLATION:
            # the database went away (a restart): what is stored is said, as for Ctrl-C
            exc.add_note(
                f"{path.name}: {_stored(report)}, in whole batches; run the "
                f"same command again to store the rest {rest}"
            )
            told(exc)
            raise
        # PostgreSQL: a user erased (or an item removed) between a batch's look-up of its ids
        # and its write; SQLite's one writer at a time cannot meet this
        raise told(
            _Raced(
                f"{path.name}: a user or item this batch names was erased or removed while it "
                f"was written; {_stored(report)}, in whole batches; run the "
                f"same command again to store the rest {rest}"
            )
        ) from None
    except OSError as exc:  # the rejects file on a full disk, the input file unreadable
        where = f" ({exc.filename})" if exc.filename else ""
        raise told(
            InvalidInput(
                f"{path.name}: stopped: {exc.strerror or exc}{where}; "
                f"{_stored(report)}, in whole batches; fix that and run the same command "
                f"again {rest}"
            )
        ) from None


def _stop_word(exc: BaseException) -> str:
    """How an ingest was stopped: by SIGTERM or Ctrl-C."""
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def _run_ingest(
    engine: Engine, path: Path, ingester: Ingester, options: IngestOptions, report: IngestReport
) -> IngestReport:
    with open_records(path) as source:
        absent = [name for name in options.ignore_columns if name not in source.columns]
        if absent and source.format != "jsonl":  # a JSON Lines key may first come later
            raise InvalidInput(
                f"{path.name} has no column {absent[0]!r} to leave out (--ignore-column); its "
                f"columns are {', '.join(source.columns)}"
            )
        kept = [name for name in source.columns if name not in options.ignore_columns]
        if source.readable:
            check_columns(kept, ingester, path)
        rejects = RejectsWriter(options.rejects_path or default_rejects_path(path), report)
        bar = tqdm(
            total=source.total,
            desc=f"ingest {ingester.name}",
            unit="B" if source.format != "parquet" else "row",
            unit_scale=True,
            disable=not options.show_progress,
        )

        def done(batch: Batch, problems: Problems, position: int) -> None:
            for reject in batch_rejects(batch, problems):
                rejects.add(reject)
            bar.update(position - bar.n)
            bar.set_postfix_str(
                f"ok={report.accepted} rejected={report.total_rejected}", refresh=False
            )

        parsed = _parsed_ahead(source, options, ingester, engine)
        try:
            if hasattr(ingester, "stage") and engine.dialect.name == "postgresql":
                _overlapped_writes(engine, parsed, ingester, report, done)
            else:
                for batch, (rows, problems), position in parsed:
                    with engine.begin() as connection:
                        prepare(connection)
                        problems.update(ingester.write(connection, rows, report))
                    done(batch, problems, position)
        finally:
            parsed.close()  # the read-ahead thread and its connection, also after a failure
            bar.close()
            rejects.close()
    log.debug("ingested %s: %s", path, report.as_dict())
    return report


def _overlapped_writes(engine: Engine, parsed, ingester, report: IngestReport, done) -> None:
    """PostgreSQL: each batch's events are written and committed on a second thread while
    the next batch's transaction is opened and staged beside it (``ingester.stage``: ids,
    checks, new users), so the server copies one batch while this process prepares the next.
    Each batch is still one transaction, and they commit in file order: a batch's events are
    written only once the previous batch has committed, so the new users it took from that
    batch (``pending``) are stored by then. When a batch fails, the next one is rolled back."""
    inflight = None  # (future, batch, problems, position, staged) of the batch being written
    pending = None  # the users the batch being written added (``Staged.users``)

    def finish() -> None:
        nonlocal inflight
        (future, batch, problems, position, staged), inflight = inflight, None
        staged.count(report, *future.result())
        done(batch, problems, position)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-write") as pool:
        try:
            for batch, (rows, problems), position in parsed:
                connection = engine.connect()
                try:
                    transaction = connection.begin()
                    prepare(connection)
                    staged = ingester.stage(connection, rows, pending)
                    if inflight is not None:
                        finish()
                except BaseException:
                    connection.close()  # rolls the staged batch back
                    raise
                pending = staged.users
                problems.update(staged.problems)
                future = pool.submit(_write_staged, ingester, connection, transaction, staged)
                inflight = (future, batch, problems, position, staged)
        finally:
            if inflight is not None:  # the last batch, or one committed before a failure
                finish()


def _write_staged(ingester, connection: Connection, transaction, staged) -> tuple[int, int]:
    try:
        counts = ingester.write_staged(connection, staged)
        transaction.commit()
        return counts
    finally:
        connection.close()


def _parsed_ahead(
    source, options: IngestOptions, ingester: Ingester, engine: Engine
) -> Iterator[tuple[Batch, tuple[Any, Problems], int]]:
    """(batch, ``ingester.parse(batch)`` with its ``look_up``, the source's position after
    it), in file order. The next batch is read, parsed and looked up on a second thread while
    the caller writes this one (Arrow, numpy and SQLite leave the GIL for most of their work).

    The look-ups hold one connection for the whole run, so that every write gets the same
    other one: a SQLite connection's page cache stays warm only while no other connection
    writes between its transactions.
    """
    batches = iter(source.batches(options.batch_size))

    def step():
        batch = next(batches, None)
        if batch is None:
            return None
        for name in options.ignore_columns:
            batch.columns.pop(name, None)
        rows, problems = ingester.parse(batch)
        rows = ingester.look_up(reader, rows)
        reader.rollback()  # no read transaction kept open between batches
        return batch, (rows, problems), source.position

    with (
        engine.connect() as reader,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-parse") as pool,
    ):
        ahead = pool.submit(step)
        while (parsed := ahead.result()) is not None:
            ahead = pool.submit(step)
            yield parsed


def check_columns(columns: Sequence[str], ingester: Ingester, path: Path) -> None:
    """Fail fast, before anything is written, when a required column is absent or a column
    name could not be an id (attribute names are stored like ids). A header whose names
    another separator joins (a ';' spreadsheet export) says so first."""
    elsewhere = dict(getattr(ingester, "elsewhere", ()))
    for name in columns:
        command = elsewhere.get(name)
        if command is not None:
            raise InvalidInput(
                f"{path.name} has a {name!r} column: it looks like another kind of file than "
                f"{ingester.name}; load it with `{command}` (or rename the column)"
            )
    missing = [name for name in ingester.required if name not in columns]
    hint = _separator_hint(columns, missing) if missing else ""
    if not hint:
        for position, name in enumerate(columns, start=1):
            try:
                parse_id(name, f"column {position}'s name")
            except BadValue as exc:
                raise InvalidInput(f"{path.name}: {exc}") from None
            try:
                if ingester.attributes and name not in ingester.known:
                    check_attribute_name(name)
            except BadValue as exc:
                raise InvalidInput(f"{path.name}: column {position}, {exc}") from None
    if missing and not hint:
        hint = _case_hint(columns, missing)
    if missing:
        raise InvalidInput(
            f"{path.name} has no {', '.join(repr(m) for m in missing)} column "
            f"(found: {', '.join(columns) or 'none'}); {ingester.name} files need "
            f"{', '.join(ingester.required)}{hint}"
        )
    unknown = [] if ingester.attributes else [c for c in columns if c not in ingester.known]
    if unknown:
        them = "them" if len(unknown) > 1 else "it"
        raise InvalidInput(
            f"{path.name}: {unknown_columns(unknown, ingester.known)}; rename {them}, or leave "
            f"{them} out with --ignore-column NAME (ignore_columns in IngestOptions)"
        )


def _case_hint(columns: list[str], missing: list[str]) -> str:
    """ "; rename 'Item_ID' to item_id" where a column differs from a missing name only in
    case or surrounding spaces (names are matched exactly)."""
    found = {c.strip().lower(): c for c in columns}
    pairs = [(found[m], m) for m in missing if m in found]
    renames = ", ".join(f"{c!r} to {m}" for c, m in pairs)
    return f"; rename {renames} (names are matched exactly)" if pairs else ""


# Names logs give the fields an event has: suggested when a file holds them.
_SYNONYMS = {
    "timestamp": ("time", "ts", "date", "datetime", "event_time", "event_timestamp",
                  "created_at", "occurred_at", "time_stamp"),
    "user_id": ("user", "userid", "customer_id", "customer", "visitor_id", "client_id"),
    "item_id": ("item", "itemid", "product_id", "product", "sku", "movie_id", "movieid"),
    "event": ("event_type", "type", "action", "event_name", "kind"),
    "weight": ("value", "quantity", "qty", "count", "score"),
}  # fmt: skip


def unknown_columns(names: Sequence[str], known: Sequence[str]) -> str:
    """What to say of the columns ``names`` a file has besides ``known``: each named, with
    the known column it probably is."""
    said = []
    for name in names:
        folded = name.strip().lower().replace(" ", "_").replace("-", "_")
        guess = next((k for k in known if k == folded or folded in _SYNONYMS.get(k, ())), None)
        said.append(f"{name!r}" + (f" (is it {guess!r}?)" if guess else ""))
    return (
        f"unknown column{'s' if len(names) > 1 else ''} {', '.join(said)}: "
        f"the columns taken are {', '.join(known)}"
    )


def unknown_fields(batch: Batch, known: Sequence[str]) -> Problems:
    """Rows with a value in a column besides ``known`` (a JSON Lines key that first appears
    after the first line, an event of the library's or the API's), refused naming it."""
    problems: Problems = {}
    for name, column in batch.columns.items():
        if name in known:
            continue
        values = column.to_pylist() if isinstance(column, pa.Array) else column
        rows = [row for row, value in enumerate(values) if not is_missing(value)]
        refuse(problems, np.asarray(rows, dtype=np.int64), Reason.INVALID_VALUE,
               [unknown_columns([name], known)] * len(rows))  # fmt: skip
    return problems


def _separator_hint(columns: Sequence[str], missing: Sequence[str]) -> str:
    """What to do when the header holds the missing names joined by another separator
    (a ';' CSV from a spreadsheet, tabs in a .csv): '' when it does not."""
    comma = "save the file comma-separated"
    for separator, fix in ((";", comma), ("\t", "name the file .tsv"), ("|", comma)):
        names = {part.strip() for column in columns for part in column.split(separator)}
        if len(names) > len(columns) and set(missing) <= names:
            shown = "tabs" if separator == "\t" else repr(separator)
            return f"; its header looks separated by {shown}: {fix}"
    return ""


def first_problems(checks: Sequence[tuple[str, Parsed, bool]]) -> Problems:
    """Each row's first problem, trying ``(column, parsed, required)`` checks in order."""
    problems: Problems = {}
    for column, parsed, required in checks:
        for row, error in parsed.errors.items():
            problems.setdefault(row, (error.reason, str(error)))
        if required:
            for row in np.flatnonzero(parsed.missing).tolist():
                problems.setdefault(row, (Reason.MISSING_VALUE, f"{column} is empty"))
    return problems


def _stored(report: IngestReport, rows: str = "") -> str:
    """ "N rows were stored", and how many of them were new when some were stored before: an
    interrupted rerun of a file already ingested said "35,200 rows were stored" of 0 new."""
    said = f"{report.accepted:,} rows{rows} were stored"
    if report.unchanged:
        said += f" ({report.inserted + report.updated:,} new or changed, the rest as before)"
    return said


def accepted(length: int, problems: Problems) -> np.ndarray:
    """(B,) True for the rows without a problem."""
    keep = np.ones(length, dtype=bool)
    keep[list(problems)] = False
    return keep


def batch_rejects(batch: Batch, problems: Problems) -> list[Reject]:
    """The batch's rejects, unreadable rows included, in file order."""
    rows = np.array(sorted(problems), dtype=np.int64)
    records = batch.records(rows) if len(rows) else []
    rejects = [
        Reject(int(batch.lines[row]), *problems[row], record)
        for row, record in zip(rows.tolist(), records, strict=True)
    ]
    return sorted(rejects + batch.unreadable, key=lambda reject: reject.line)


def refuse(problems: Problems, rows: np.ndarray, reason: str, details: Sequence[str]) -> None:
    for row, detail in zip(rows.tolist(), details, strict=True):
        problems[row] = (reason, detail)


def hash64(values: pa.Array) -> np.ndarray:
    """(B,) a 64-bit hash of each string, stable across runs."""
    return pd.util.hash_array(values.to_numpy(zero_copy_only=False).astype(object))


class SeenKeys:
    """The keys accepted so far in one run, to reject duplicates within a file.

    Holds 64 bits per key (40 MB for 5 million rows), never the rows, in sorted runs whose
    sizes shrink from the oldest to the newest: a batch's keys become a run, merged with the
    newer runs no larger than itself (a binary counter). A key is merged O(log n) times and a
    lookup searches O(log n) runs, where one sorted array copied every key seen so far into
    each batch's insert (14% of an ingest's time at 10M rows). With ``values`` (events'
    weights) each key keeps its first row's value too, 64 bits more.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self._values: list[np.ndarray | None] = []  # per run, its keys' values

    def first_occurrences(self, hashes: np.ndarray, values: np.ndarray | None = None):
        """(B,) True where this run has not seen the key before (earlier rows first). With
        ``values`` (B,), also (B,) the value of each key's first row (NaN on first rows):
        a repeat of equal value is the same row again (delivered twice)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        _, at, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        first = np.zeros(len(hashes), dtype=bool)
        first[at] = True
        before, earlier = self._contains(hashes)
        first &= ~before
        order = np.argsort(hashes[first], kind="stable")
        run = hashes[first][order]
        kept = None if values is None else np.asarray(values, np.float64)[first][order]
        if len(run):
            while self._runs and len(self._runs[-1]) <= len(run):
                # two sorted runs: the stable sort (timsort) merges them in linear time
                joined, older = np.concatenate([self._runs.pop(), run]), self._values.pop()
                if kept is None or older is None:
                    run, kept = np.sort(joined, kind="stable"), None
                    continue
                merged = np.argsort(joined, kind="stable")
                run, kept = joined[merged], np.concatenate([older, kept])[merged]
            self._runs.append(run)
            self._values.append(kept)
        if values is None:
            return first
        values = np.asarray(values, np.float64)
        first_value = np.where(before, earlier, values[at[inverse]])
        first_value[first] = np.nan
        return first, first_value

    def _contains(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) whether each key is in a run, and (B,) its kept value there (NaN: none)."""
        # Sorted needles: each search starts where the last one ended, and the runs are read
        # front to back instead of at random.
        order = np.argsort(hashes)
        needles = hashes[order]
        hit = np.zeros(len(hashes), dtype=bool)
        value = np.full(len(hashes), np.nan)
        for run, kept in zip(self._runs, self._values, strict=True):
            positions = np.searchsorted(run, needles).clip(max=len(run) - 1)
            here = run[positions] == needles
            hit |= here
            if kept is not None:
                value[here] = kept[positions[here]]
        found, found_value = np.empty(len(hashes), dtype=bool), np.empty(len(hashes))
        found[order], found_value[order] = hit, value
        return found, found_value
