"""Event logs as Parquet: the catalog's interactions exported partitioned by day, and event
folders read back as the training pipeline's interactions frame.

``export_interactions`` writes ``OUT/day=YYYY-MM-DD/*.parquet`` (Hive partitioning; events
without a timestamp under ``day=__HIVE_DEFAULT_PARTITION__``) with the columns of
``recsys.model.data.INTERACTION_COLUMNS``, and ``OUT/_recsys_export.json`` (row count, days,
and the catalog time of the export; names starting with ``_`` are skipped by Spark and
pyarrow readers). ``read_events`` reads any such folder, local or on a filesystem pyarrow
knows (``s3://``, ``gs://``, ``hdfs://``), set-wise, into the same frame ``read_catalog``
builds, so the confidence weighting (``recsys.model.cf.interaction_weights``) is the same code
for both sources.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from sqlalchemy import Engine
from tqdm import tqdm

from recsys.catalog.models import utcnow
from recsys.errors import InvalidInput
from recsys.files import left_by_dead_process
from recsys.ingest.interactions import DEFAULT_EVENT
from recsys.ingest.readers import plain_array
from recsys.ingest.values import (
    MAX_EPOCH_SECONDS,
    BadValue,
    event_column,
    id_column,
    parse_timestamp,
    timestamp_column,
    weight_column,
)
from recsys.model.data import INTERACTION_COLUMNS, interaction_batches

log = logging.getLogger(__name__)

EXPORT_FILE = "_recsys_export.json"
DAY = "day"
# Rows per Parquet row group / file: large enough for fast scans, small enough for workers.
ROWS_PER_GROUP = 1_000_000
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event", pa.string()),
        ("weight", pa.float64()),
        ("timestamp", pa.timestamp("us")),
    ]
)
_DAYS = SCHEMA.append(pa.field(DAY, pa.string()))  # what is written: the day partitions it
# Rows read and written at a time: the export's memory is about this many events' worth
# whatever the log's size (a time-ordered log's chunks fall in a day or two, so its row groups
# are chunks; a log whose chunks span every day writes smaller ones).
EXPORT_CHUNK_ROWS = 100_000
# Days an export may hold (Arrow's guard against runaway partitioning): 1970 to 2100.
MAX_DAYS = 48_000


def export_interactions(
    engine: Engine, out: Path, overwrite: bool = False, show_progress: bool = False
) -> dict:
    """Write the catalog's interactions to ``out`` as Parquet partitioned by day; returns what
    ``_recsys_export.json`` holds. Written beside ``out`` and renamed into place, so a failed
    export leaves ``out`` as it was; an existing non-empty ``out`` needs ``overwrite``.
    ``show_progress``: a bar of the events written (no total: counting them is a scan)."""
    out = Path(out)
    check_out(out, overwrite)
    exported_at = utcnow().isoformat()  # catalog events stored later are fresh to a bundle
    rows, days = [0], set()
    bar = tqdm(desc="exporting", unit=" events", unit_scale=True, disable=not show_progress)

    def batches():  # one chunk of the log at a time: memory does not grow with the log
        for batch in interaction_batches(engine, EXPORT_CHUNK_ROWS):
            day = pc.strftime(batch["timestamp"], format="%Y-%m-%d")
            rows[0] += batch.num_rows
            bar.update(batch.num_rows)
            days.update(pc.unique(day.drop_null()).to_pylist())
            batch = pa.RecordBatch.from_arrays([*batch.columns, day], schema=_DAYS)
            # each day's rows of the chunk together: the writer's slices of it make one row
            # group per day, not one per day and slice (15 of a few hundred rows each)
            yield batch.take(pc.sort_indices(batch, [(DAY, "ascending")]))

    staging = staging_folder(out)
    try:
        ds.write_dataset(
            batches(),
            staging,
            schema=_DAYS,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([(DAY, pa.string())]), flavor="hive"),
            max_rows_per_group=ROWS_PER_GROUP,
            max_rows_per_file=ROWS_PER_GROUP,
            basename_template="part-{i}.parquet",
            max_partitions=MAX_DAYS,
            use_threads=False,  # no read-ahead: one chunk in memory at a time
        )
        summary = {
            "rows": rows[0],
            "days": len(days),
            "exported_at": exported_at,
            "columns": INTERACTION_COLUMNS,
        }
        (staging / EXPORT_FILE).write_text(json.dumps(summary, indent=2))
        replace_folder(staging, out)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %d interactions over %d days to %s", summary["rows"], summary["days"], out)
    return summary


def staging_folder(out: Path) -> Path:
    """A new folder beside ``out`` to write an export in before it is renamed to ``out``
    (``replace_folder``); those that exports killed on this host left are removed first."""
    _remove_dead_staging(out)
    staging = out.parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    return staging


def _remove_dead_staging(out: Path) -> None:
    """Remove the staging folders of ``out`` that exports killed on this host left (19 MB
    for 2M events, never removed): those whose process is gone."""
    for staging in out.parent.glob(f".{glob.escape(out.name)}.*-*.tmp"):
        if left_by_dead_process(staging.name[len(out.name) + 2 :].split("-", 1)[0]):
            shutil.rmtree(staging, ignore_errors=True)
            log.warning("removed %s, left by an interrupted export", staging)


def check_out(
    out: Path,
    overwrite: bool,
    marker: str = EXPORT_FILE,
    owned: Callable[[str], bool] | None = None,
) -> None:
    """``InvalidInput`` unless ``out`` is new, empty, or (with ``overwrite``) an earlier
    export: ``--overwrite`` replaces the whole folder, so a folder holding anything an export
    does not write (a prepared shop, notes, a home directory) is never replaced. An earlier
    export holds ``marker`` and only names ``owned`` accepts (default: day partitions)."""
    owned = owned or (lambda name: name.startswith(f"{DAY}="))
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out} is a file; give a folder")
    held = sorted(out.iterdir()) if out.exists() else []
    if not held:
        return
    if not overwrite:
        raise InvalidInput(f"--out {out} is not empty; pass --overwrite to replace it")
    foreign = [p.name for p in held if p.name != marker and not owned(p.name)]
    if foreign or not (out / marker).is_file():
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        what = f"it holds {listed}" if foreign else f"it has no {marker}"
        raise InvalidInput(
            f"--out {out} is not an earlier export ({what}); --overwrite replaces only an "
            "export's folder: pass a new or empty folder"
        )


def replace_folder(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``; an old ``out`` is removed only once the new one is there."""
    old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def read_events(path: str | Path, item_ids: np.ndarray | None = None) -> pd.DataFrame:
    """The interactions frame (``INTERACTION_COLUMNS``) of a Parquet event folder or file.

    ``user_id`` and ``item_id`` are required; ``event`` (default "interaction"), ``weight``
    (default 1) and ``timestamp`` (naive UTC; zoned times are converted) are optional; other
    columns and the ``day`` partition are ignored. Each file is read with its own schema (the
    jobs that write a folder over a year differ: int64 ids then strings, nanoseconds then
    zoned milliseconds) and each value meets the rule ``recsys ingest`` holds it to
    (``recsys.ingest.values``: ids stripped, ``42``, ``42.0`` and ``"42"`` one id, events
    lower-cased, weights finite from 0 to 10^6, times from 1970 to 2100, numbers as epoch
    seconds), so a folder trains what its ingest would store. Rows a rule refuses, rows
    without a user or item, and with ``item_ids``, rows of items not in it, are left out and
    counted in the log; a file that cannot be read so (no ``user_id``; numbers past epoch
    seconds for times) is refused, naming it. Files are read one at a time and only their
    checked columns kept, so the whole log is held once.
    """
    tally = _Tally()
    checked = [_checked(table, part, path, tally) for part, table in _part_tables(path)]
    table = pa.concat_tables(checked) if checked else SCHEMA.empty_table()
    checked.clear()  # the concatenation holds the same buffers
    keep = _known_rows(table, item_ids, tally)
    tally.log(path)
    log.info("read %d events from %s", int(keep.sum()), path)
    return _frame(table, keep)


@dataclass
class _Tally:
    """The rows of a folder's files and those left out, logged once for the folder."""

    rows: int = 0
    refused: int = 0
    first_refusal: str = ""
    no_user: int = 0
    no_item: int = 0
    unknown_item: int = 0

    def log(self, path) -> None:
        if self.refused:
            log.warning(
                "events %s: %d of %d rows refused by the ingest rules (first: %s)",
                path,
                self.refused,
                self.rows,
                self.first_refusal,
            )
        left_out = self.no_user + self.no_item + self.unknown_item
        if left_out:
            log.warning(
                "events %s: %d of %d rows left out: %d without a user id, %d without an item "
                "id, %d of items the catalog lacks",
                path,
                left_out,
                self.rows,
                self.no_user,
                self.no_item,
                self.unknown_item,
            )


def _part_tables(path) -> Iterator[tuple[str, pa.Table]]:
    """(file, table) of each Parquet file of ``path`` that holds rows, read with the file's
    own schema: a dataset's schema is its first file's, and Arrow cast every later file to
    it (epoch milliseconds became dates of January 1970, a string id after int64 ones was
    an ArrowInvalid). Files without rows are skipped: a job's empty partition is often
    written with null-typed columns."""
    for fragment, schema, rows in _fragments(path):
        if not rows:
            continue
        check_required(schema.names, fragment.path)
        columns = [c for c in INTERACTION_COLUMNS if c in schema.names]
        with _unreadable(fragment.path):
            table = fragment.to_table(schema=schema, columns=columns)
        yield fragment.path, table


def part_schemas(path: str | Path) -> Iterator[tuple[str, pa.Schema, int]]:
    """(file, schema, rows) of each Parquet file of ``path``, as ``read_events`` finds them,
    from the files' footers alone (no data is read)."""
    for fragment, schema, rows in _fragments(path):
        yield fragment.path, schema, rows


def _fragments(path) -> Iterator[tuple[ds.ParquetFileFragment, pa.Schema, int]]:
    for fragment in _dataset(path).get_fragments():
        with _unreadable(fragment.path):
            schema, rows = fragment.physical_schema, fragment.metadata.num_rows
        yield fragment, schema, rows


@contextlib.contextmanager
def _unreadable(part: str):
    """``InvalidInput`` naming the file ``part`` for what Arrow could not read of it."""
    try:
        yield
    except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"events {part}: not a readable Parquet file ({exc}); rewrite it or move it out "
            "of the folder"
        ) from None


def check_required(names: list[str], part: str) -> None:
    """``InvalidInput`` naming the file ``part`` unless its columns ``names`` hold the ids."""
    missing = {"user_id", "item_id"} - set(names)
    if missing:
        raise InvalidInput(
            f"events {part}: no column {', '.join(sorted(missing))}; each file of an event "
            "folder needs user_id and item_id (and optionally event, weight, timestamp)"
        )


def _checked(table: pa.Table, part: str, path, tally: _Tally) -> pa.Table:
    """The events of one file as ``SCHEMA``, whatever the file's own types, each column
    through its ingest rule; the rows a rule refuses are left out and counted in ``tally``,
    the first with its file."""
    n = table.num_rows

    def column(name: str):
        return plain_array(table[name]) if name in table.column_names else None

    _check_epoch_seconds(column("timestamp"), part)
    parsed = {
        "user_id": id_column(column("user_id"), n, "user_id"),
        "item_id": id_column(column("item_id"), n, "item_id"),
        "event": event_column(column("event"), n),
        "weight": weight_column(column("weight"), n, "weight"),
        "timestamp": timestamp_column(column("timestamp"), n),
    }
    refused = np.zeros(n, dtype=bool)
    for found in parsed.values():
        refused[list(found.errors)] = True
    tally.rows += n
    if refused.any() and not tally.refused:
        reason = next(next(iter(p.errors.values())) for p in parsed.values() if p.errors)
        tally.first_refusal = str(reason) if part == str(path) else f"{part}: {reason}"
    tally.refused += int(refused.sum())
    events = pa.table(
        {
            "user_id": parsed["user_id"].values,
            "item_id": parsed["item_id"].values,
            "event": parsed["event"].values.fill_null(DEFAULT_EVENT),
            "weight": parsed["weight"].values.fill_null(1.0),
            "timestamp": parsed["timestamp"].values,
        },
        schema=SCHEMA,
    )
    return events.filter(pa.array(~refused)) if refused.any() else events


def _check_epoch_seconds(column: pa.Array | None, part: str) -> None:
    """``InvalidInput`` when every time of a file is a number past epoch seconds: a job that
    wrote epoch milliseconds (or micro-, nanoseconds) would lose all its rows to the
    timestamp rule, a month of events left out with a warning."""
    if column is None or not (
        pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    ):
        return
    numbers = column.drop_null().cast(pa.float64()).to_numpy()  # (B,)
    numbers = numbers[np.isfinite(numbers)]
    if not len(numbers) or np.abs(numbers).min() < MAX_EPOCH_SECONDS:
        return
    try:
        parse_timestamp(int(numbers[0]) if pa.types.is_integer(column.type) else numbers[0])
    except BadValue as exc:
        raise InvalidInput(
            f"events {part}: {exc}, as is every timestamp of the file; numbers are epoch "
            "seconds: write timestamp as a Parquet timestamp, or as epoch seconds"
        ) from None


def fresh_after(path: str | Path | None) -> str | None:
    """The catalog time an ``export_interactions`` folder was read at (catalog events stored
    later are fresh to a bundle trained on it), or None: no folder, another kind of event
    folder, or a remote one."""
    if path is None:
        return None
    marker = Path(str(path)) / EXPORT_FILE
    try:
        return json.loads(marker.read_text())["exported_at"]
    except (OSError, ValueError, KeyError):
        return None


def _dataset(path: str | Path) -> ds.Dataset:
    """The Parquet files of an event folder (its ``*.parquet`` files: an ingest's rejects
    file or a note beside the parts is no part; nor is a file under a folder or with a name
    starting with "_" or ".", as Arrow and Spark skip them: a failed Spark job's
    ``_temporary/`` parts, ``.spark-staging``), or one file; a remote URL as Arrow reads it."""
    local = Path(str(path))
    try:
        if local.is_dir():
            parts = sorted(
                str(part)
                for part in local.rglob("*.parquet")
                if part.is_file() and not _hidden(part.relative_to(local))
            )
            if not parts:  # it said "no column item_id, user_id" of a folder without events
                raise InvalidInput(
                    f"events {path}: no Parquet file in the folder (an export of a catalog "
                    "without events, or not an event folder); write one with `recsys export "
                    "interactions --out DIR`"
                )
            return ds.dataset(
                parts, format="parquet", partitioning="hive", partition_base_dir=str(local)
            )
        return ds.dataset(str(path), format="parquet", partitioning="hive")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(
            f"events {path}: not a readable Parquet folder or file ({exc}); write one with "
            "`recsys export interactions --out DIR`"
        ) from None


def _hidden(relative: Path) -> bool:
    """A path inside an event folder that Arrow's and Spark's own discovery leave out."""
    return any(name.startswith(("_", ".")) for name in relative.parts)


def _known_rows(table: pa.Table, item_ids: np.ndarray | None, tally: _Tally) -> np.ndarray:
    """(N,) bool: the rows of ``table`` with a user, an item, and with ``item_ids``, an item
    in it; those left out are counted in ``tally`` by reason."""
    user = table["user_id"].is_valid().to_numpy()
    item = table["item_id"].is_valid().to_numpy()
    keep = user & item
    tally.no_user += int((~user).sum())
    tally.no_item += int((user & ~item).sum())
    if item_ids is not None:
        known = pc.is_in(table["item_id"], value_set=pa.array(np.asarray(item_ids, dtype=str)))
        catalog = known.to_numpy(zero_copy_only=False)
        tally.unknown_item += int((keep & ~catalog).sum())
        keep &= catalog
    return keep


def _frame(table: pa.Table, keep: np.ndarray) -> pd.DataFrame:
    """The interactions frame of the checked events ``table``'s ``keep`` rows, converted a
    column at a time and each column's Arrow buffers let go once converted."""
    rows = pa.array(keep)
    columns = {}
    for name in INTERACTION_COLUMNS:
        columns[name] = table[name].filter(rows).to_numpy()
        table = table.drop_columns([name])
    return pd.DataFrame(columns, columns=INTERACTION_COLUMNS)
