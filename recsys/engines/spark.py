"""Implicit-feedback ALS on Apache Spark, for event logs larger than one machine.

Solvers (``CFConfig.spark_solver``): "cg" (the default) and "exact"
(``recsys.engines.spark_als``) minimise implicit's own objective, its normal equations solved
in numpy on the executors (implicit's default conjugate-gradient steps, or exactly); "mllib"
fits MLlib's ``ALS(implicitPrefs=True)``, JVM code only, on implicit's settings mapped as
below. Two ways in, one fit:

* ``fit_als(user_items, config)``: the user x item confidence matrix the implicit path builds
  (``recsys.model.cf.confidence_matrix``) is handed to Spark as (user, item, confidence) rows;
* ``fit_events(path, item_ids, config)``: Spark reads a Parquet event folder itself and
  aggregates the confidences set-wise in Spark SQL (``event_confidences``: the same event
  weights, interaction weights and time decay as ``interaction_weights``), so the driver never
  holds the events; it gets back the aggregated (user, item, confidence) entries, which the
  bundle keeps, and the factors.

The objectives [Hu, Koren, Volinsky 2008], per user u (items alike, roles swapped), with
``p = 1`` on observed entries and ``0`` elsewhere, unobserved entries weighing 1:

* implicit (``implicit.cpu._als``): ``sum_i c_ui (p_ui - x_u.y_i)^2 + lambda |x_u|^2`` with
  ``c_ui = alpha * w_ui`` (it multiplies the matrix by alpha; ``c < 0`` means ``p = 0`` at
  weight ``|c|``); its user step adds ``(c - 1) y y'`` to ``Y'Y + lambda I`` and ``c y`` to
  ``Y'p``. Nothing keeps ``c`` above 1: an entry may weigh less than an unobserved pair, and
  near 0 it drops out of the objective altogether.
* MLlib (``ALS.computeFactors``): the same sum with ``c_ui = 1 + alpha' |r_ui|`` (``r <= 0``
  means ``p = 0``; ``r = 0`` is an unobserved pair) and ``regParam * n_u |x_u|^2``, ``n_u``
  the row's entries with ``r > 0`` ("ALS-WR", Zhou et al. 2008); its user step adds
  ``alpha'|r| y y'`` and ``(1 + alpha' r) y`` (``r > 0``) or nothing (``r <= 0``) to ``Y'p``.
  No rating weighs a pair below 1.

So the two are the same objective exactly when every ``alpha * w >= 1``; an entry implicit
weighs less cannot be written for MLlib, and neither can implicit's constant ``lambda`` (hence
the exact solver). For "mllib", mapped here once (``mllib_ratings``, ``als_params``; README
"Running on a cluster"):

* **Confidence.** MLlib gets ``alpha' = 1`` and, per entry, the rating whose user-step terms
  (the pair's addition to the normal equations, ``(A, b)``) are nearest implicit's
  ``(c - 1, c)``: ``r = c - 1`` (exact) for ``c >= 1``; for ``KEEP <= c < 1`` weight 1 at
  preference 1 (``r = EPSILON``, ``(0, 1)``); for ``0 <= c < KEEP`` an unobserved pair
  (``r = 0``, ``(0, 0)``): ``(0, 0)`` is the nearer of the two exactly when ``c < 1/2``
  (``(1 - c)^2 + c^2 < 2 (1 - c)^2``). Negative ``c``: ``r = -max(|c| - 1, 0)``.
* **Regularisation.** No ``regParam`` gives every row implicit's ``lambda``; it is chosen so that
  the total penalty weight over all factor rows is the same:
  ``regParam = lambda (users + items) / (2 entries)``, ``entries`` the positive ratings (each
  counts once for its user and once for its item).

Rank, iterations and seed are passed as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from recsys.engines import unreachable
from recsys.errors import InvalidInput, RecsysError
from recsys.ingest.interactions import DEFAULT_EVENT
from recsys.ingest.values import FLOAT_EXACT
from recsys.model.cf import SECONDS_PER_DAY

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
JAVA_VERSION = 17  # pyspark 4 runs on Java 17 or later
INSTALL = (
    'pip install -e ".[spark]" and a Java 17 runtime '
    "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless; or set JAVA_HOME)"
)
# Spark settings of every session recsys starts (a cluster's spark-defaults.conf adds to them).
SESSION_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
}


class SparkUnavailable(RecsysError):
    """Spark was asked for, but pyspark or a Java runtime is missing, or the session failed."""


# MLlib reads a rating <= 0 as "no preference"; this smallest rating stands for confidence 1.
EPSILON = 1e-6
# A positive entry implicit weighs below this is unobserved to MLlib (see the module docstring).
KEEP = 0.5


@dataclass(frozen=True)
class SparkALSParams:
    """MLlib ALS's parameters for one ``CFConfig`` (see the module docstring)."""

    rank: int
    max_iter: int
    reg_param: float
    alpha: float
    seed: int


def als_params(config, users: int, items: int, entries: int) -> SparkALSParams:
    """MLlib's parameters for the implicit ALS ``config`` (a ``CFConfig``) on a matrix of
    ``users`` x ``items`` rows with ``entries`` positive MLlib ratings (``mllib_entries``); the
    ratings come from ``mllib_ratings``, which takes ``config.alpha`` in."""
    reg = config.regularization * (users + items) / (2 * entries) if entries else 0.0
    return SparkALSParams(
        rank=config.factors,
        max_iter=config.iterations,
        reg_param=reg,
        alpha=1.0,
        seed=config.random_state,
    )


def mllib_ratings(confidence: np.ndarray) -> np.ndarray:
    """MLlib ratings (alpha 1, weight ``1 + |r|``, preference ``r > 0``) nearest implicit's
    confidences ``c = alpha * w`` (see the module docstring): ``max(c - 1, EPSILON)`` for
    ``c >= KEEP``, else ``-max(|c| - 1, 0)`` (0: the pair is unobserved to MLlib)."""
    c = np.asarray(confidence, dtype=np.float64)
    return np.where(c >= KEEP, np.maximum(c - 1.0, EPSILON), -np.maximum(np.abs(c) - 1.0, 0.0))


def mllib_confidence(confidence: np.ndarray) -> np.ndarray:
    """The confidences MLlib's user step uses for implicit's ``alpha * w``, signed as
    implicit's (negative: preference 0): ``1 + r`` for ``r > 0``, else ``-(1 + |r|)``
    (``-1``, preference 0 at weight 1, is an unobserved pair)."""
    ratings = mllib_ratings(confidence)
    return np.where(ratings > 0, 1.0 + ratings, -(1.0 + np.abs(ratings)))


def mllib_entries(user_items: sp.csr_matrix, alpha: float) -> int:
    """The number of positive MLlib ratings (``n`` of ``regParam * n``) of a confidence matrix."""
    return int((mllib_ratings(alpha * user_items.data) > 0).sum())


def require_spark() -> None:
    """Raise ``SparkUnavailable``, naming what to install, unless pyspark and Java 17+ are."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable(f"the Spark engine needs pyspark: {INSTALL}") from None
    java = _java()
    if java is None:
        raise SparkUnavailable(f"the Spark engine needs a Java runtime (none found): {INSTALL}")
    version = _java_major(java)
    if version is not None and version < JAVA_VERSION:
        raise SparkUnavailable(
            f"the Spark engine needs Java {JAVA_VERSION} or later, {java} is Java {version}: "
            f"{INSTALL}"
        )


def session(master: str | None = None, conf: dict[str, str] | None = None):
    """The process's Spark session: the running one, or a new one on ``master`` (default
    ``local[*]``) with ``SESSION_CONF`` and ``conf``. ``SparkUnavailable`` says what is
    missing when it cannot start."""
    require_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = master or DEFAULT_MASTER
    _reachable(master)
    builder = SparkSession.builder.master(master).appName("recsys")
    _local_python(master)
    for key, value in {**SESSION_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: py4j/pyspark raise plain errors
        first = (str(exc).strip().splitlines() or [""])[0]  # not the Java stack trace
        raise SparkUnavailable(
            f"could not start Spark on master {master!r}: "
            f"{type(exc).__name__}: {first}; check RECSYS_SPARK_MASTER and {INSTALL}"
        ) from exc
    spark.sparkContext.setLogLevel("WARN")
    log.info("Spark %s session on %s", spark.version, spark.sparkContext.master)
    return spark


def _reachable(master: str) -> None:
    """``SparkUnavailable`` naming the master when a ``spark://HOST:PORT`` (each of a
    list's) accepts no TCP connection within ``recsys.engines.REACH_SECONDS`` (Spark retried
    it for over a minute, then failed on a stopped context); other masters (local, yarn,
    k8s) are Spark's to find."""
    if not master.startswith("spark://"):
        return
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        reason = unreachable(host, int(port)) if port.isdigit() else f"no port in {address!r}"
        if reason is None:
            return  # one live master of a list is enough
    raise SparkUnavailable(
        f"no Spark master answers at {master!r} ({reason}); check RECSYS_SPARK_MASTER, or "
        "leave it empty to run Spark on this machine"
    )


def _local_python(master: str) -> None:
    """On a local master, Python workers (the exact solver's) run this interpreter (pyspark
    reads ``PYSPARK_PYTHON``, default ``python3``) unless ``PYSPARK_PYTHON`` names another; a
    cluster's executors keep their own setting."""
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable


@dataclass(frozen=True)
class SparkFit:
    """What ``fit_events`` brings back to the driver."""

    user_ids: np.ndarray  # (U,) sorted external ids, as CollaborativeModel.user_ids_
    user_items: sp.csr_matrix  # (U, I) summed confidence weights (before alpha)
    user_factors: np.ndarray  # (U, F) float32
    item_factors: np.ndarray  # (I, F) float32; zero for items without entries


def fit_als(user_items: sp.csr_matrix, config, spark=None) -> tuple[np.ndarray, np.ndarray]:
    """MLlib ALS on the confidence matrix ``user_items`` (U, I): (U, F) user and (I, F) item
    factors, float32; rows without any entry get zero factors."""
    spark = spark or session()
    coo = user_items.tocoo()
    entries = pd.DataFrame(
        {
            "user": coo.row.astype(np.int32),
            "item": coo.col.astype(np.int32),
            "confidence": coo.data.astype(np.float32),
        }
    )
    with warnings.catch_warnings():  # pyspark's notice about pandas 3; Arrow does the work
        warnings.filterwarnings("ignore", "PySpark does not yet", FutureWarning)
        frame = spark.createDataFrame(entries)
    return _fit(spark, frame, user_items, config)


def fit_events(path: str, item_ids: np.ndarray, config, spark=None) -> SparkFit:
    """MLlib ALS on the Parquet event folder ``path`` (``recsys.engines.events`` layout; any
    path Spark reads: local, ``s3://`` as its cluster maps it, ``gs://``, ``hdfs://``), the
    confidences aggregated on Spark (``event_confidences``); ``item_ids`` are the catalog's, in
    the model's row order (events of other items are left out)."""
    from pyspark.sql import functions as F

    schema = folder_schema(path)  # before Spark reads: a type it cannot read fails at once
    spark = spark or session()
    item_ids = np.asarray(item_ids, dtype=str)
    reader = spark.read.schema(schema).option("pathGlobFilter", "*.parquet")  # no stray file
    parts = reader.parquet(str(path))
    entries = event_confidences(spark, parts, item_ids, config)
    with _cached(entries):  # read and aggregated once, for the user ids and the entries
        user_ids = np.sort(_column(entries.select("user_id").distinct(), "user_id"))
        users = _frame(spark, {"user_id": user_ids, "user": np.arange(len(user_ids))})
        indexed = entries.join(users, "user_id").select(
            F.col("user").cast("int"), F.col("item").cast("int"), F.col("confidence")
        )
        with _cached(indexed):  # brought back, then fitted
            table = _pandas(indexed)
            user_items = sp.csr_matrix(
                (
                    table["confidence"].to_numpy(dtype=np.float32),
                    (table["user"].to_numpy(), table["item"].to_numpy()),
                ),
                shape=(len(user_ids), len(item_ids)),
            )
            del table
            user_factors, item_factors = _fit(spark, indexed, user_items, config)
    return SparkFit(user_ids, user_items, user_factors, item_factors)


def event_confidences(spark, events, item_ids: np.ndarray, config):
    """(user_id, item, confidence): the summed confidence weights of a Spark frame of events
    (``user_id``, ``item_id``; ``event``, ``weight``, ``timestamp`` optional), set-wise in Spark
    SQL, as ``recsys.model.cf.confidence_matrix`` sums ``interaction_weights`` (event weight x
    interaction weight x 0.5 ** (age / half-life), age from the user's latest event; events of
    items outside ``item_ids`` and without a user or item are left out; ``item`` is the row in
    ``item_ids``; pairs summing to 0 are dropped)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    names = set(events.columns)
    missing = {"user_id", "item_id"} - names
    if missing:
        raise InvalidInput(f"events: no column {', '.join(sorted(missing))}")
    items = _frame(spark, {"item_id": item_ids, "item": np.arange(len(item_ids))})
    rows = events.select(
        _id_text(events, "user_id").alias("user_id"),
        _id_text(events, "item_id").alias("item_id"),
        _optional(events, "event", "string", DEFAULT_EVENT).alias("event"),
        _optional(events, "weight", "double", 1.0).alias("weight"),
        _seconds(events).alias("seconds"),
    ).where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull())
    rows = rows.join(F.broadcast(items), "item_id")
    weight = _event_weight(config)
    if config.use_interaction_weight:
        weight = weight * F.col("weight")
    if config.half_life_days:  # as cf._decay: from the user's latest event not after now
        seconds, now = F.col("seconds"), F.lit(time.time())
        latest = F.max(F.when(seconds <= now, seconds)).over(Window.partitionBy("user_id"))
        age_days = F.greatest(F.coalesce(latest, seconds) - seconds, F.lit(0.0)) / SECONDS_PER_DAY
        decay = F.pow(F.lit(0.5), age_days / float(config.half_life_days))
        weight = weight * F.when(F.col("seconds").isNull(), 1.0).otherwise(decay)
    summed = rows.withColumn("w", weight).groupBy("user_id", "item").agg(F.sum("w").alias("c"))
    return summed.where(F.col("c") != 0).select(
        "user_id", "item", F.col("c").cast("float").alias("confidence")
    )


# A column's Spark type for each Arrow type a Parquet file may give it (int32 and int64 files
# both read as bigint); other types are refused by ``folder_schema``.
_SPARK_TYPES = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.binary(): "binary",
    pa.large_binary(): "binary",
    pa.bool_(): "boolean",
    **{t: "bigint" for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64())},
    **{t: "bigint" for t in (pa.uint8(), pa.uint16(), pa.uint32())},
    pa.float32(): "float",
    pa.float64(): "double",
    pa.date32(): "date",
}
# What each column should be written as, for the messages.
_WRITE_AS = {
    "user_id": "string",
    "item_id": "string",
    "event": "string",
    "weight": "double",
    "timestamp": "a timestamp in microseconds (pyarrow: timestamp('us'))",
}


def folder_schema(path) -> str:
    """The Spark schema (DDL) to read the event folder ``path`` with, from its files' footers
    (pyarrow, no data read): the event columns each file holds, one type each. Spark reads a
    folder with one file's types, and failed on a file whose types differ (ids int64 in some
    files and string in others: ``PARQUET_COLUMN_DATA_TYPE_MISMATCH``) or on a timestamp in
    nanoseconds (``PARQUET_TYPE_ILLEGAL``), minutes into a training; ``InvalidInput`` names
    the file, the column, its types and the fix. Files without rows are left out of the
    check (Spark reads none of their values), so an empty partition pandas wrote with
    null-typed columns does no harm."""
    from recsys.engines.events import INTERACTION_COLUMNS, check_required, part_schemas

    seen: dict[str, tuple[str, str, pa.DataType]] = {}  # column -> (Spark type, file, type)
    for part, schema, rows in part_schemas(path):
        if not rows:
            continue
        check_required(schema.names, part)
        for name in (c for c in INTERACTION_COLUMNS if c in schema.names):
            kind = _spark_type(schema.field(name).type, name, part)
            first = seen.setdefault(name, (kind, part, schema.field(name).type))
            if first[0] != kind:
                raise InvalidInput(
                    f"events {path}: {name} is {first[2]} in {first[1]} but "
                    f"{schema.field(name).type} in {part}; Spark reads a column as one type: "
                    f"write {name} as {_WRITE_AS[name]} in every file (or train without "
                    "--cf-engine spark)"
                )
    kinds = {"user_id": "string", "item_id": "string"} | {k: v[0] for k, v in seen.items()}
    return ", ".join(f"`{name}` {kinds[name]}" for name in INTERACTION_COLUMNS if name in kinds)


def _spark_type(type_: pa.DataType, name: str, part: str) -> str:
    """The Spark type of a Parquet column of Arrow type ``type_``, or ``InvalidInput``
    naming the file, the column and what to write instead."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_timestamp(type_) and type_.unit != "ns":
        return "timestamp"  # zoned or naive, seconds to microseconds: Spark reads them all
    if pa.types.is_decimal(type_):
        return f"decimal({type_.precision},{type_.scale})"
    if type_ in _SPARK_TYPES:
        return _SPARK_TYPES[type_]
    if pa.types.is_timestamp(type_):
        why = "in nanoseconds, which Spark cannot read (PARQUET_TYPE_ILLEGAL)"
    elif pa.types.is_null(type_):
        why = "of no type (every value null, as pandas writes an empty object column)"
    else:
        why = "a type Spark cannot read as an event column"
    raise InvalidInput(
        f"events {part}: {name} is {type_}, {why}; write {name} as {_WRITE_AS[name]} (or "
        "train without --cf-engine spark)"
    )


def _fit(spark, entries, user_items: sp.csr_matrix, config) -> tuple[np.ndarray, np.ndarray]:
    """ALS on a Spark frame of (user, item, confidence) rows with ``config.spark_solver``:
    implicit's objective solved exactly (``recsys.engines.spark_als``), or MLlib's."""
    if config.spark_solver == "mllib":
        return _fit_mllib(spark, entries, user_items, config)
    from recsys.engines import spark_als

    steps = spark_als.CG_STEPS if config.spark_solver == "cg" else None
    return spark_als.fit(spark, entries, *user_items.shape, config, cg_steps=steps)


def _fit_mllib(spark, entries, user_items: sp.csr_matrix, config):
    """MLlib ALS on a Spark frame of (user, item, confidence) rows, ``user_items`` the same
    entries as a matrix (its shape and counts set regParam)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    users, items = user_items.shape
    warm = int((user_items.getnnz(axis=0) > 0).sum())
    params = als_params(config, users, warm, mllib_entries(user_items, config.alpha))
    c = F.col("confidence") * float(config.alpha)  # implicit's confidence, c = alpha * w
    rating = F.when(c >= KEEP, F.greatest(c - 1.0, F.lit(EPSILON))).otherwise(
        -F.greatest(F.abs(c) - 1.0, F.lit(0.0))
    )  # = mllib_ratings(c)
    blocks = max(1, spark.sparkContext.defaultParallelism)
    ratings = entries.select("user", "item", rating.cast("float").alias("rating"))
    ratings = ratings.where(F.col("rating") != 0)  # unobserved to MLlib: nothing to send
    als = ALS(
        rank=params.rank,
        maxIter=params.max_iter,
        regParam=params.reg_param,
        alpha=params.alpha,
        seed=params.seed,
        implicitPrefs=True,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
    )
    log.info("MLlib ALS on %d entries, %d blocks: %s", user_items.nnz, blocks, params)
    model = als.fit(ratings.repartition(blocks))
    return _factors(model.userFactors, users, params.rank), _factors(
        model.itemFactors, items, params.rank
    )


@contextlib.contextmanager
def _cached(frame):
    frame.persist()
    try:
        yield frame
    finally:
        frame.unpersist()


def _event_weight(config):
    """Spark column: the event's weight (``CFConfig.event_weights``, else the default)."""
    from pyspark.sql import functions as F

    default = F.lit(float(config.default_event_weight))
    if not config.event_weights:
        return default
    pairs = [F.lit(x) for k, v in config.event_weights.items() for x in (str(k), float(v))]
    return F.coalesce(F.create_map(*pairs)[F.col("event")], default)


def _optional(events, name: str, kind: str, default):
    from pyspark.sql import functions as F

    if name not in events.columns:
        return F.lit(default).cast(kind)
    return F.coalesce(F.col(name).cast(kind), F.lit(default).cast(kind))


# What Python's str.strip() removes (the id rule's), as a Java regular expression.
_STRIPPED = r"(?U)^[\s\x1c-\x1f]+|[\s\x1c-\x1f]+$"


def _id_text(events, name: str):
    """Spark column: the id column ``name`` as the id rule reads it (``parse_id``, what the
    driver's pyarrow reading gives): text stripped, empty as none; integral floats and
    decimals as their integer's text (``cast("string")`` made 1938.0 "1938.0", a user the
    driver never saw: every user of a Spark bundle got the popularity fallback), other
    decimals without trailing zeros; floats of 2**53 or more, NaN and booleans as none (the
    rule refuses them)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column, kind = F.col(name), events.schema[name].dataType
    if isinstance(kind, T.FloatType | T.DoubleType):
        exact = ~F.isnan(column) & (F.abs(column) < float(FLOAT_EXACT))
        integral = F.when(column == F.floor(column), column.cast("bigint").cast("string"))
        return F.when(exact, integral.otherwise(column.cast("string")))
    if isinstance(kind, T.DecimalType):
        integral = column == F.floor(column)
        trimmed = F.regexp_replace(column.cast("string"), r"\.?0+$", "")
        return F.when(integral, F.floor(column).cast("string")).otherwise(trimmed)
    if isinstance(kind, T.BooleanType):
        return F.lit(None).cast("string")
    text = F.regexp_replace(column.cast("string"), _STRIPPED, "")
    return F.when(text != "", text)


def _seconds(events):
    """Spark column: the event's time in epoch seconds (null without one); naive times are
    UTC (the session's time zone)."""
    from pyspark.sql import functions as F

    if "timestamp" not in events.columns:
        return F.lit(None).cast("double")
    return F.unix_micros(F.col("timestamp").cast("timestamp")) / 1e6


def _frame(spark, columns: dict[str, np.ndarray]):
    """A small Spark frame from driver arrays (ids and their row numbers, int32)."""
    frame = pd.DataFrame(
        {k: v.astype(np.int32) if v.dtype.kind == "i" else v for k, v in columns.items()}
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet", FutureWarning)
        return spark.createDataFrame(frame)


def _pandas(frame) -> pd.DataFrame:
    with warnings.catch_warnings():  # pyspark's notice about pandas 3; Arrow does the work
        warnings.filterwarnings("ignore", "PySpark does not yet", FutureWarning)
        return frame.toPandas()


def _column(frame, name: str) -> np.ndarray:
    return _pandas(frame)[name].to_numpy(dtype=str)


def _factors(frame, rows: int, rank: int) -> np.ndarray:
    """A Spark factors frame (id, features) -> (rows, rank) float32, by id; zero where absent."""
    table = _pandas(frame)
    factors = np.zeros((rows, rank), dtype=np.float32)
    if len(table):
        factors[table["id"].to_numpy()] = np.stack(table["features"].to_numpy())
    return factors


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def _java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (17 for "17.0.15", 8 for "1.8.0"), or None."""
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major
