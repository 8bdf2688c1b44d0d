"""implicit ALS against ALS on Spark (`--cf-engine spark`): quality and fit time.

    python scripts/bench_spark.py --movielens sqlite:////tmp/ml/ml.db --sizes S
    python scripts/bench_spark.py --movielens sqlite:////tmp/ml/ml.db --sizes S M --master local[2]

1. **Quality parity** (``--movielens URL``: a catalog holding MovieLens, README "Offline
   evaluation"): the temporal split of ``recsys evaluate`` (holdout 0.2), the fused model
   ``recsys train`` builds fitted on its training part once per ``--engine``: implicit ALS,
   Spark's solvers of implicit's objective (``CFConfig.engine`` "spark", ``spark_solver``
   "cg", implicit's default steps, or "exact") and MLlib ALS ("mllib"), same seed and settings,
   scored side by side: warm recall@10, cold-item recall@10, fit seconds, and the chosen
   block weights; then ALS alone on the same split (the same engines, implicit's exact solver
   ``use_cg=False``, implicit given MLlib's confidences: the objective MLlib minimises):
   where a difference comes from.
2. **Fit time and memory** (``--sizes``): the collaborative block alone on the synthetic
   long-tail shop of ``scripts/bench_scale.py`` (``WORKDIR/SIZE/shop/*.parquet``; prepared
   here when missing): Spark reading the Parquet events and aggregating the confidences itself
   (``CollaborativeModel.fit_events``, ``--solver``), implicit on the events read by
   ``recsys.engines.events.read_events`` (``CollaborativeModel.fit``): seconds and peak
   resident memory of this process (the driver) and with its children (Spark's JVM).

Prints one JSON document and Markdown tables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"S": (100_000, 10_000, 1_000_000), "M": (1_000_000, 100_000, 20_000_000)}
# The collaborative blocks compared: name -> CFConfig fields.
ENGINES = {
    "implicit": {"engine": "implicit"},
    "spark cg": {"engine": "spark", "spark_solver": "cg"},
    "spark exact": {"engine": "spark", "spark_solver": "exact"},
    "spark mllib": {"engine": "spark", "spark_solver": "mllib"},
}
MB = 2**20


class PeakMemory:
    """Peak RSS (MB) of this process (``own``) and with its children (``peak``: Spark's JVM),
    polled every 0.2 s."""

    def __enter__(self) -> PeakMemory:
        self.own, self.peak, self._stop = 0.0, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            try:
                own = me.memory_info().rss
                rss = own + sum(p.memory_info().rss for p in me.children(recursive=True))
            except psutil.Error:
                continue
            self.own, self.peak = max(self.own, own / MB), max(self.peak, rss / MB)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def quality(database_url: str, seed: int, engines: list[str]) -> dict:
    """The fused model with each of ``engines`` (``ENGINES``) as ALS, on the temporal split."""
    from sqlalchemy import create_engine
    from threadpoolctl import threadpool_limits

    from recsys.evaluation.contenders import Fused, ItemContent
    from recsys.evaluation.run import EvaluationConfig
    from recsys.model.data import CatalogData, read_catalog
    from recsys.model.protocol import build_task, rank, score
    from recsys.model.split import split_interactions

    config = EvaluationConfig(seed=seed)
    data = read_catalog(create_engine(database_url))
    split = split_interactions(data.interactions, config.split, config.holdout, seed)
    train = CatalogData(data.items, data.kinds, split.train)
    task = build_task(split.train, split.test, data.items["item_id"].to_numpy(dtype=str))
    content = ItemContent(config.fused)
    results = {}
    with threadpool_limits(1, "blas"):
        content.content(train)  # shared by both, built before the clocks start
        for engine in engines:
            fused = replace(config.fused, cf=replace(config.fused.cf, **ENGINES[engine]))
            start = time.perf_counter()
            contender = Fused(fused, content).fit(train)
            seconds = time.perf_counter() - start
            scored = score(rank(contender, task, 10), task, (10,), config.segments)
            results[engine] = {
                "recall@10": round(scored["overall"]["recall@10"], 4),
                "cold_recall@10": round(scored["cold_items"]["recall@10"], 4),
                "fit_seconds": round(seconds, 1),
                "weights": contender.model_.weights_,
            }
            print(f"MovieLens fused, {engine}: {results[engine]}", file=sys.stderr, flush=True)
    results["data"] = {**data.counts, "train": len(split.train), "test": len(split.test)}
    return results


class FactorScores:
    """A contender for ``recsys.model.protocol.rank``: user x item factor products."""

    def __init__(self, name: str, user_ids, user_factors, item_factors) -> None:
        self.name, self.users = name, pd.Index(np.asarray(user_ids, dtype=str))
        self.user_factors, self.item_factors = user_factors, item_factors

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users.get_indexer(np.asarray(user_ids, dtype=str))
        out = self.user_factors[np.maximum(rows, 0)] @ self.item_factors.T  # (U, I)
        out[rows < 0] = 0.0
        return out


def objectives(database_url: str, seed: int, engines: list[str]) -> dict:
    """Where a gap comes from: ALS alone (no fusion) on the same split, warm recall@10 of each
    of ``engines``, of implicit's exact solver (``use_cg=False``, what Spark's exact solver
    computes) and, with MLlib among them, of implicit given MLlib's confidences
    (``recsys.engines.spark.mllib_confidence``: the objective MLlib minimises, but for the
    regularisation's per-row scaling)."""
    from sqlalchemy import create_engine
    from threadpoolctl import threadpool_limits

    from recsys.engines.spark import mllib_confidence
    from recsys.model.cf import CFConfig, CollaborativeModel, implicit_model
    from recsys.model.data import read_catalog
    from recsys.model.protocol import build_task, rank, score
    from recsys.model.split import split_interactions

    data = read_catalog(create_engine(database_url))
    split = split_interactions(data.interactions, "temporal", 0.2, seed)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = build_task(split.train, split.test, item_ids)
    results = {}
    with threadpool_limits(1, "blas"):
        for engine in engines:
            config = CFConfig(random_state=seed, **ENGINES[engine])
            model = CollaborativeModel(config).fit(split.train, item_ids)
            contenders = [FactorScores(engine, model.user_ids_, model.user_factors_,
                                       model.item_factors_)]  # fmt: skip
            if engine == "implicit":
                exact = implicit_model(config)
                exact.use_cg = False
                exact.fit(model.user_items_, show_progress=False)
                items = exact.item_factors * model.warm_items_[:, None]
                name = "implicit, exact (use_cg=False)"
                contenders.append(FactorScores(name, model.user_ids_, exact.user_factors, items))
            if engine == "implicit" and "spark mllib" in engines:
                matrix = model.user_items_.copy()
                for below in (0.9, 0.5):  # where MLlib's weight (1) differs from implicit's
                    share = float((config.alpha * matrix.data < below).mean())
                    results[f"share of entries weighing < {below} under implicit"] = share
                matrix.data = mllib_confidence(config.alpha * matrix.data) / config.alpha
                als = implicit_model(config)
                als.fit(matrix, show_progress=False)
                items = als.item_factors * model.warm_items_[:, None]
                name = "implicit, MLlib's confidences"
                contenders.append(FactorScores(name, model.user_ids_, als.user_factors, items))
            for contender in contenders:
                scored = score(rank(contender, task, 10), task, (10,), (5, 20))
                results[contender.name] = round(scored["overall"]["recall@10"], 4)
    print(f"ALS alone, seed {seed}: {results}", file=sys.stderr, flush=True)
    return results


def shop(workdir: Path, size: str) -> Path:
    """``WORKDIR/SIZE/shop``, prepared with bench_scale.py's command when missing."""
    folder = workdir / size / "shop"
    if not (folder / "interactions.parquet").exists():
        items, users, events = SIZES[size]
        command = [sys.executable, "-m", "recsys", "datasets", "prepare", "synthetic-shop"]
        command += ["--out", str(folder), "--items", str(items), "--users", str(users)]
        command += ["--events", str(events), "--no-images", "--format", "parquet", "--seed", "0"]
        subprocess.run(command, check=True, cwd=ROOT)
    return folder


def fit_times(workdir: Path, size: str, iterations: int, solver: str) -> dict:
    """Seconds and peak memory of the collaborative block on the shop, per engine: Spark
    reads the Parquet events and aggregates them itself (``CollaborativeModel.fit_events``;
    run first, so the driver's figure holds no events), implicit gets them read by pyarrow."""
    from threadpoolctl import threadpool_limits

    from recsys.engines.events import read_events
    from recsys.model.cf import CFConfig, CollaborativeModel

    folder = shop(workdir, size)
    events_path = folder / "interactions.parquet"
    item_ids = pq.read_table(folder / "items.parquet", columns=["item_id"])["item_id"]
    item_ids = np.asarray(item_ids.to_pylist(), dtype=str)
    row: dict = {"events": pq.ParquetFile(events_path).metadata.num_rows, "items": len(item_ids)}
    config = CFConfig(engine="spark", spark_solver=solver, iterations=iterations)
    with PeakMemory() as memory, threadpool_limits(1, "blas"):
        start = time.perf_counter()
        model = CollaborativeModel(config).fit_events(str(events_path), item_ids)
        row["spark_seconds"] = round(time.perf_counter() - start, 1)
    row |= {"users": len(model.user_ids_), "entries": int(model.user_items_.nnz)}
    row["spark_python_peak_mb"] = round(memory.own)  # the driver: entries and factors
    row["spark_peak_mb"] = round(memory.peak)  # with the JVM
    del model
    print(f"size {size}: {row}", file=sys.stderr, flush=True)
    with PeakMemory() as memory, threadpool_limits(1, "blas"):
        start = time.perf_counter()
        events = read_events(events_path, item_ids)
        row["read_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        CollaborativeModel(replace(config, engine="implicit")).fit(events, item_ids)
        row["implicit_seconds"] = round(time.perf_counter() - start, 1)
    row["implicit_python_peak_mb"] = round(memory.own)  # events read + fit
    print(f"size {size}: {row}", file=sys.stderr, flush=True)
    return row


def tables(report: dict) -> str:
    lines = []
    if "quality" in report:
        lines += [
            "| seed | ALS engine | warm recall@10 | cold recall@10 | fused fit (s) | weights |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
        gaps: dict[str, list] = {}
        for seed, q in report["quality"].items():
            for engine, r in q.items():
                if engine not in ENGINES:
                    continue
                lines.append(
                    f"| {seed} | {engine} | {r['recall@10']:.4f} | {r['cold_recall@10']:.4f} "
                    f"| {r['fit_seconds']} | {r['weights']} |"
                )
                if engine != "implicit" and "implicit" in q:
                    metrics = ("recall@10", "cold_recall@10")
                    gap = [r[m] - q["implicit"][m] for m in metrics]
                    gaps.setdefault(engine, []).append(gap)
        for engine, rows in gaps.items():
            text = " / ".join(f"{w:+.4f}" for w, _ in rows)
            cold = " / ".join(f"{c:+.4f}" for _, c in rows)
            warm_mean, cold_mean = np.mean(rows, axis=0)
            lines.append(
                f"\n{engine} - implicit per seed: warm {text} (mean {warm_mean:+.4f}), "
                f"cold {cold} (mean {cold_mean:+.4f})"
            )
        lines.append("")
    if "als_alone" in report:
        names = list(next(iter(report["als_alone"].values())))
        lines += [f"| ALS alone, warm recall@10 | {' | '.join(names)} |"]
        lines += ["| --- |" + " ---: |" * len(names)]
        for seed, r in report["als_alone"].items():
            lines.append(f"| {seed} | " + " | ".join(f"{r[n]:.4f}" for n in names) + " |")
        lines.append("")
    if report.get("sizes"):
        lines += [
            "| size | events | entries | users / items | implicit: read events + fit "
            "| implicit peak RSS | Spark: read, aggregate + fit | Spark peak RSS: driver "
            "(Python) / with the JVM |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for size, r in report["sizes"].items():
            lines.append(
                f"| {size} | {r['events']:,} | {r['entries']:,} | {r['users']:,} / "
                f"{r['items']:,} | {r['read_seconds']} s + {r['implicit_seconds']} s "
                f"| {r['implicit_python_peak_mb']} MB | {r['spark_seconds']} s "
                f"| {r['spark_python_peak_mb']} / {r['spark_peak_mb']} MB |"
            )
    return "\n".join(lines)


@click.command()
@click.option("--movielens", metavar="URL", help="Catalog holding MovieLens: quality parity.")
@click.option("--sizes", multiple=True, type=click.Choice(sorted(SIZES)), help="Fit-time sizes.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/bench-scale"),
    show_default=True,
    help="bench_scale.py's folder: SIZE/shop/*.parquet is reused or prepared.",
)
@click.option("--master", default="local[2]", show_default=True, help="Spark master.")
@click.option("--driver-memory", default="8g", show_default=True, help="spark.driver.memory.")
@click.option(
    "--seed",
    "seeds",
    multiple=True,
    type=int,
    default=[0],
    show_default=True,
    help="ALS (and fused model) seed of the quality runs; repeatable.",
)
@click.option("--iterations", default=15, show_default=True, help="ALS iterations (sizes).")
@click.option(
    "--engine",
    "engines",
    multiple=True,
    type=click.Choice(list(ENGINES)),
    default=list(ENGINES),
    show_default=True,
    help="ALS engines of the quality runs (implicit, Spark's solvers); repeatable.",
)
@click.option(
    "--solver",
    type=click.Choice(["cg", "exact", "mllib"]),
    default="cg",
    show_default=True,
    help="Spark's solver of the fit-time runs (--sizes).",
)
@click.option("--fused/--no-fused", default=True, help="The fused models (else ALS alone).")
def main(
    movielens, sizes, workdir, master, driver_memory, seeds, iterations, engines, solver, fused
):
    """implicit vs ALS on Spark: quality parity on MovieLens, fit time and memory at scale."""
    from recsys.engines.spark import session

    workdir = workdir.resolve()  # `recsys datasets prepare` runs in the checkout
    load_before = os.getloadavg()
    spark = session(master, {"spark.driver.memory": driver_memory})
    report: dict = {"master": spark.sparkContext.master, "spark": spark.version}
    if movielens:
        if fused:
            report["quality"] = {f"seed {s}": quality(movielens, s, engines) for s in seeds}
        report["als_alone"] = {f"seed {s}": objectives(movielens, s, engines) for s in seeds}
    report["sizes"] = {size: fit_times(workdir, size, iterations, solver) for size in sizes}
    report["solver"] = solver
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(report, indent=2))
    print(tables(report))


if __name__ == "__main__":
    main()
