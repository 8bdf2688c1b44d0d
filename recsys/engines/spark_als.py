"""implicit's ALS on Apache Spark: implicit's objective, its normal equations solved on the
executors.

MLlib's ALS cannot weigh an observed pair below an unobserved one (``recsys.engines.spark``),
so it minimises another objective than ``implicit`` whenever time decay makes ``alpha * w < 1``.
This solver minimises implicit's own [Hu, Koren, Volinsky 2008; as ``implicit.cpu._als``]: per
user u (items alike, roles swapped), with ``c = alpha * w`` on observed pairs (``c < 0``:
preference 0 at weight ``|c|``) and weight 1, preference 0 elsewhere, each step solves

    (Y'Y + Y_u'(|C_u| - I) Y_u + lambda I) x_u = Y_u' max(C_u, 0) 1

in one of implicit's two ways (``fit``'s ``cg_steps``):

* ``cg_steps=None``, **exact**: Cholesky-backed ``numpy.linalg.solve`` (``solve_rows``), the
  step of ``AlternatingLeastSquares(use_cg=False)``;
* ``cg_steps=3``, **cg**: implicit's default, 3 conjugate-gradient steps per row from the
  row's previous factors (``cg_rows``; ``least_squares_cg``), never forming the matrix.

Either reproduces implicit's factors from the same seed (tests/test_spark.py: to 1e-5 and
1e-4; implicit computes in float32, this in float64). Rows without entries are zero, as
implicit sets them.

How it is distributed (every frame stays on the executors until the end):

* **Entries** (user, item, c) are cached once; the initial factors are drawn on the
  executors from ``spark.range(rows)``, each partition advancing implicit's PCG64 stream
  (``numpy.random.default_rng(seed)``: users' ``U x F`` floats, then items') to its own rows,
  so they equal implicit's initial factors whatever the partitioning.
* **Each half-step** (users from item factors, then items from user factors): the Gram matrix
  ``Y'Y`` of the fixed side is summed per partition (``mapInPandas``, one ``F x F`` block each)
  and added in the driver (``F^2`` numbers); the entries are joined with the fixed side's
  factors by id (a shuffle of both, or a broadcast when the factors are small), then grouped
  into ``blocks`` by ``id mod blocks`` of the side being solved (``applyInPandas``: one Python
  call per block, not per row; cg cogroups the block's previous factors with it) and each
  block's rows are solved as one batch in numpy. The
  solved factors are checkpointed locally (``localCheckpoint``: no lineage growing with the
  iterations).
* ``blocks`` is the session's default parallelism, or more so that a block holds about
  ``ENTRIES_PER_BLOCK`` entries (a block and its factors are in one Python worker's memory:
  ``ENTRIES_PER_BLOCK * (F + 3) * 8`` bytes, about 140 MB at F = 32).

Factors are frames of ``id`` and ``f0 .. f{F-1}`` (float32 columns). Only ``fit`` brings them
back to the driver, for the bundle. The executors need Python with numpy, pandas and pyarrow
(what pyspark's pandas functions need); this module's functions are shipped by value, so not
recsys itself.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ENTRIES_PER_BLOCK = 500_000
CG_STEPS = 3  # implicit's AlternatingLeastSquares.cg_steps
CHUNK = 4_096  # entries per batch of outer products (CHUNK * F^2 * 8 bytes: 32 MB at F = 32)


def fit(
    spark, entries, users: int, items: int, config, cg_steps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ALS (``config``: a ``CFConfig``) on a Spark frame of (user, item, confidence)
    rows, confidence the weight ``w`` before alpha, ids ``0 <= user < users``,
    ``0 <= item < items``, solved exactly (``cg_steps`` None) or by ``cg_steps`` conjugate-
    gradient steps per row: (users, F) and (items, F) float32 factors; rows without entries
    are zero, as implicit sets them."""
    from pyspark.sql import functions as F

    _ship_by_value()
    confidence = (F.col("confidence") * float(config.alpha)).cast("double").alias("c")
    cells = entries.select(F.col("user").cast("int"), F.col("item").cast("int"), confidence)
    cells = cells.where(F.col("c") != 0).persist()
    try:
        with warnings.catch_warnings():  # pyspark's notice about pandas 3; Arrow does the work
            warnings.filterwarnings("ignore", "PySpark does not yet", FutureWarning)
            return _iterate(spark, cells, users, items, config, cg_steps)
    finally:
        cells.unpersist()


def _iterate(spark, cells, users: int, items: int, config, cg_steps: int | None):
    rank, reg, seed = config.factors, float(config.regularization), config.random_state
    count = cells.count()
    parallelism = spark.sparkContext.defaultParallelism
    blocks = max(parallelism, math.ceil(count / ENTRIES_PER_BLOCK))
    log.info("ALS on Spark: %d entries, %d blocks, rank %d, cg %s", count, blocks, rank, cg_steps)
    user_factors = initial(spark, 0, users, rank, seed, parallelism)
    item_factors = initial(spark, users * rank, items, rank, seed, parallelism)
    step = Step(reg, blocks, cg_steps)
    for _ in range(config.iterations):
        user_factors = step.solve(cells, item_factors, user_factors, "user", "item")
        item_factors = step.solve(cells, user_factors, item_factors, "item", "user")
    return collect(user_factors, users, rank), collect(item_factors, items, rank)


def initial(spark, start: int, rows: int, rank: int, seed: int, partitions: int):
    """implicit's initial factors, drawn per partition on the executors: rows of
    ``rng.random(., float32) * 0.01`` from float32 draw ``start`` of
    ``rng = numpy.random.default_rng(seed)`` (users from 0, then items from ``users * F``), a
    frame of ``id, f0 .. f{F-1}``."""

    def draw(batches):
        for batch in batches:
            ids = batch["id"].to_numpy()
            if not len(ids):
                continue
            low, high = int(ids.min()), int(ids.max()) + 1
            values = _draws(seed, start + low * rank, (high - low) * rank).reshape(-1, rank)
            yield _factor_frame(ids, values[ids - low] * np.float32(0.01))

    ids = spark.range(0, rows, numPartitions=max(1, partitions)).selectExpr("cast(id as int) id")
    return ids.mapInPandas(draw, _schema(rank)).localCheckpoint()


class Step:
    """One half-step of ALS on Spark: one side's factors solved against the other's, in
    ``blocks`` groups, exactly (``cg_steps`` None) or by implicit's conjugate gradient."""

    def __init__(self, reg: float, blocks: int, cg_steps: int | None):
        self.reg, self.blocks, self.cg_steps = reg, blocks, cg_steps

    def solve(self, cells, fixed, previous, key: str, other: str):
        """The ``key`` side's factors (a frame of ``id, f*``) against the ``fixed`` side's
        (``other`` ids); ``previous``, the ``key`` side's last factors, is where CG starts."""
        from pyspark.sql import functions as F

        rank = len(fixed.columns) - 1
        gram = gramian(fixed, rank) + self.reg * np.eye(rank)  # (F, F)
        joined = cells.join(fixed.withColumnRenamed("id", other), other)
        joined = joined.select(F.col(key).alias("id"), "c", *_names(rank))
        block = F.pmod(F.col("id"), F.lit(self.blocks)).alias("block")
        if self.cg_steps is None:
            solved = joined.groupBy(block).applyInPandas(_exact_block(gram, rank), _schema(rank))
        else:
            cg = _cg_block(gram, rank, self.cg_steps)
            grouped = joined.groupBy(block).cogroup(previous.groupBy(block))
            solved = grouped.applyInPandas(cg, _schema(rank))
        return solved.localCheckpoint()


def _exact_block(gram: np.ndarray, rank: int):
    def solve_block(frame: pd.DataFrame) -> pd.DataFrame:
        ids, factors = solve_rows(
            frame["id"].to_numpy(),
            frame["c"].to_numpy(dtype=np.float64),
            frame[_names(rank)].to_numpy(dtype=np.float64),
            gram,
        )
        return _factor_frame(ids, factors.astype(np.float32))

    return solve_block


def _cg_block(gram: np.ndarray, rank: int, steps: int):
    names = _names(rank)

    def solve_block(frame: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
        if not len(frame):  # rows without entries: zero (absent), as implicit sets them
            return _factor_frame(np.zeros(0, np.int32), np.zeros((0, rank), np.float32))
        ids = frame["id"].to_numpy()
        rows = np.unique(ids)
        start = np.zeros((len(rows), rank))
        at = pd.Index(rows).get_indexer(previous["id"].to_numpy())
        start[at[at >= 0]] = previous[names].to_numpy(dtype=np.float64)[at >= 0]
        _, factors = cg_rows(
            ids,
            frame["c"].to_numpy(dtype=np.float64),
            frame[names].to_numpy(dtype=np.float64),
            gram,
            start,
            steps,
        )
        return _factor_frame(rows, factors.astype(np.float32))

    return solve_block


def solve_rows(ids: np.ndarray, c: np.ndarray, factors: np.ndarray, gram: np.ndarray):
    """implicit's exact step for every row id among the entries: ``ids`` (n,) the solved
    side's row of each entry, ``c`` (n,) its confidence ``alpha * w``, ``factors`` (n, F) the
    fixed side's factor row it meets, ``gram`` (F, F) ``Y'Y + lambda I``. Returns the sorted
    unique ids (R,) and their factors (R, F)."""
    rows, seg, starts, c, factors = _sorted(ids, c, factors)
    rank = factors.shape[1]
    b = np.add.reduceat(np.maximum(c, 0.0)[:, None] * factors, starts)  # (R, F): Y_u' C_u p_u
    a = np.broadcast_to(gram, (len(rows), rank, rank)).copy()  # (R, F, F)
    weight = np.abs(c) - 1.0  # (n,): C_u - I, a dislike weighing |c|
    for low in range(0, len(seg), CHUNK):
        part = slice(low, low + CHUNK)
        y = factors[part]  # (k, F)
        outer = (weight[part, None, None] * y[:, :, None]) * y[:, None, :]  # (k, F, F)
        local = seg[part]
        first = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
        a[local[first]] += np.add.reduceat(outer, first)
    return rows, np.linalg.solve(a, b[:, :, None])[:, :, 0]


def cg_rows(ids, c, factors, gram, start: np.ndarray, steps: int):
    """implicit's default step (``implicit.cpu._als.least_squares_cg``) for every row id among
    the entries, all rows at once: ``steps`` conjugate-gradient steps on the same normal
    equations as ``solve_rows`` from ``start`` (R, F), the rows' previous factors in sorted id
    order; a row stops where its squared residual falls under 1e-20, as implicit's does."""
    rows, seg, starts, c, factors = _sorted(ids, c, factors)
    weight = np.abs(c) - 1.0  # (n,)

    def times(v):  # (R, F) -> (Y'Y + lambda I + Y_u'(C_u - I)Y_u) v, per row
        along = weight * np.einsum("nf,nf->n", factors, v[seg])  # (n,)
        return v @ gram + np.add.reduceat(along[:, None] * factors, starts)

    x = start.copy()
    b = np.add.reduceat(np.maximum(c, 0.0)[:, None] * factors, starts)  # (R, F)
    r = b - times(x)
    p, rsold = r.copy(), np.einsum("rf,rf->r", r, r)
    active = rsold >= 1e-20
    for _ in range(steps):
        ap = times(p)
        alpha = np.where(active, rsold / np.where(active, np.einsum("rf,rf->r", p, ap), 1), 0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rsnew = np.einsum("rf,rf->r", r, r)
        active &= rsnew >= 1e-20
        p = r + np.where(active, rsnew / np.where(rsold > 0, rsold, 1), 0)[:, None] * p
        rsold = rsnew
    return rows, x


def _sorted(ids, c, factors):
    """Entries sorted by row id: unique ids (R,), each entry's row (n,), each row's first
    entry (R,), and ``c``, ``factors`` in that order."""
    order = np.argsort(ids, kind="stable")
    ids, c, factors = ids[order], c[order], factors[order]
    rows, starts, seg = np.unique(ids, return_index=True, return_inverse=True)
    return rows, seg, starts, c, factors


def gramian(factors, rank: int) -> np.ndarray:
    """``Y'Y`` (F, F) of a factor frame: one partial sum per partition on the executors, added
    here."""
    names = _names(rank)

    def partial(batches):
        total = np.zeros((rank, rank))
        for batch in batches:
            y = batch[names].to_numpy(dtype=np.float64)  # (n, F)
            total += y.T @ y
        yield pd.DataFrame({"gram": [total.ravel()]})

    rows = factors.mapInPandas(partial, "gram array<double>").collect()
    return np.sum([np.asarray(row["gram"]) for row in rows], axis=0).reshape(rank, rank)


def collect(factors, rows: int, rank: int) -> np.ndarray:
    """A factor frame brought back as a (rows, F) float32 array by id; zero where absent."""
    table = factors.toPandas()
    out = np.zeros((rows, rank), dtype=np.float32)
    out[table["id"].to_numpy()] = table[_names(rank)].to_numpy(dtype=np.float32)
    return out


def _draws(seed: int, offset: int, count: int) -> np.ndarray:
    """Float32 draws ``offset .. offset + count`` of ``default_rng(seed).random``: PCG64 gives
    two float32 per 64-bit step, so it advances ``offset // 2`` steps and one odd draw."""
    rng = np.random.default_rng(seed)
    rng.bit_generator.advance(offset // 2)
    if offset % 2:
        rng.random(1, dtype=np.float32)
    return rng.random(count, dtype=np.float32)


def _factor_frame(ids: np.ndarray, factors: np.ndarray) -> pd.DataFrame:
    columns = {"id": ids.astype(np.int32)}
    columns |= {name: factors[:, k] for k, name in enumerate(_names(factors.shape[1]))}
    return pd.DataFrame(columns)


def _names(rank: int) -> list[str]:
    return [f"f{k}" for k in range(rank)]


def _schema(rank: int) -> str:
    return ", ".join(["id int", *(f"{name} float" for name in _names(rank))])


def _ship_by_value() -> None:
    """Pickle this module's functions by value, so executors need no recsys installed."""
    import sys

    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
