"""Implicit-feedback ALS on Apache Spark (MLlib), for event logs larger than one machine.

``recsys train --cf-engine spark`` builds the user x item confidence matrix with the same code
as the implicit path (``recsys.model.cf.confidence_matrix``: event weights, interaction
weights, time decay) and hands its entries, one row per (user, item) pair, to MLlib's
``ALS(implicitPrefs=True)``; the factors come back as the collaborative block of the bundle.
The executors run JVM code only (no Python, no recsys package needed on the cluster).

The two objectives [Hu, Koren, Volinsky 2008] differ in two places, mapped here once
(``als_params``) and documented in the README ("Running on a cluster"):

* **Confidence.** implicit weighs an observed entry ``alpha * r`` (it multiplies the matrix by
  alpha; unobserved entries weigh 1); MLlib weighs it ``1 + alpha * r``, Hu et al.'s formula,
  which ``CFConfig.alpha`` documents. Spark gets ``r`` and ``alpha`` unchanged, so observed
  entries weigh exactly 1 more there than under implicit. (MLlib cannot weigh an observed
  entry below 1, as implicit does for ``alpha * r < 1``: with the default alpha 1 and time
  decay that is most entries. Ratings ``alpha * r - 1``, equal confidences wherever they can
  be, measured worse on MovieLens: ALS alone, recall@10 0.126 against 0.134 for this mapping
  and 0.138 for implicit; benchmarks/RESULTS.md.)
* **Regularisation.** implicit adds ``lambda |x|^2`` to every user's and item's solve; MLlib
  scales it by the row's number of ratings ("ALS-WR", Zhou et al. 2008): ``lambda' n_u |x|^2``.
  ``regParam`` is chosen so that the total weight of the penalty over all factor rows is the
  same: ``lambda' = lambda (users + items) / (2 entries)`` (each entry counts once for its
  user and once for its item).

Rank, iterations and seed are passed as they are.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import RecsysError

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
    ``users`` x ``items`` rows with ``entries`` non-zero (user, item) pairs."""
    reg = config.regularization * (users + items) / (2 * entries) if entries else 0.0
    return SparkALSParams(
        rank=config.factors,
        max_iter=config.iterations,
        reg_param=reg,
        alpha=config.alpha,
        seed=config.random_state,
    )


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
    builder = SparkSession.builder.master(master or DEFAULT_MASTER).appName("recsys")
    for key, value in {**SESSION_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: py4j/pyspark raise plain errors
        raise SparkUnavailable(
            f"could not start Spark on master {master or DEFAULT_MASTER!r}: "
            f"{type(exc).__name__}: {exc}; check RECSYS_SPARK_MASTER and {INSTALL}"
        ) from exc
    spark.sparkContext.setLogLevel("WARN")
    log.info("Spark %s session on %s", spark.version, spark.sparkContext.master)
    return spark


def fit_als(user_items: sp.csr_matrix, config, spark=None) -> tuple[np.ndarray, np.ndarray]:
    """MLlib ALS on the confidence matrix ``user_items`` (U, I): (U, F) user and (I, F) item
    factors, float32; rows without any entry get zero factors."""
    spark = spark or session()
    from pyspark.ml.recommendation import ALS

    coo = user_items.tocoo()
    users, items = user_items.shape
    params = als_params(config, users, int((user_items.getnnz(axis=0) > 0).sum()), coo.nnz)
    entries = pd.DataFrame(
        {
            "user": coo.row.astype(np.int32),
            "item": coo.col.astype(np.int32),
            "rating": coo.data.astype(np.float32),  # MLlib: confidence 1 + alpha * rating
        }
    )
    blocks = max(1, spark.sparkContext.defaultParallelism)
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
    log.info("MLlib ALS on %d entries, %d blocks: %s", coo.nnz, blocks, params)
    with warnings.catch_warnings():  # pyspark's notice about pandas 3; Arrow does the work
        warnings.filterwarnings("ignore", "PySpark does not yet", FutureWarning)
        model = als.fit(spark.createDataFrame(entries).repartition(blocks))
        user_factors = _factors(model.userFactors, users, params.rank)
        item_factors = _factors(model.itemFactors, items, params.rank)
    return user_factors, item_factors


def _factors(frame, rows: int, rank: int) -> np.ndarray:
    """A Spark factors frame (id, features) -> (rows, rank) float32, by id; zero where absent."""
    table = frame.toPandas()
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
