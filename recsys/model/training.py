"""`recsys train`: catalog -> encoders, CF, fusion, index -> a registered, active bundle.

Stages: read, images, tabular, cf, weights (validation), fuse, index, bundle, register. Each
stage that fails raises ``TrainingFailed`` naming the stage; the bundle is written to a
temporary directory and registered last, so a failed run leaves the active bundle untouched.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recsys.catalog.models import utcnow
from recsys.errors import InvalidInput, TrainingFailed
from recsys.model.bundle import new_version, register_bundle, write_bundle
from recsys.model.cf import CFConfig, CollaborativeModel
from recsys.model.data import CatalogData, read_catalog
from recsys.model.fusion import FusedModel, FusionConfig
from recsys.model.index import IndexConfig, VectorIndex
from recsys.model.recommender import ItemFilters, Recommender
from recsys.model.split import evaluate_scores, heldout_sets, temporal_split
from recsys.model.tabular import TabularConfig, TabularEncoder

log = logging.getLogger(__name__)

STAGES = ("read", "images", "tabular", "cf", "weights", "fuse", "index", "bundle", "register")


@dataclass
class WeightGrid:
    # Candidate block weights (cf is fixed at 1); blocks the data lacks are skipped.
    tabular: tuple[float, ...] = (0.0, 0.1, 0.3)
    image: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    popularity: tuple[float, ...] = (0.0, 0.05, 0.2)
    # Also search multipliers for cold items' blocks. Off by default: on MovieLens the
    # validation slice's cold items misjudged them (cold recall 0.111 -> 0.079 on the test
    # split), so cold items keep FusionConfig.cold_scale (1: a predicted block counts as a
    # learned one).
    search_cold: bool = False
    # Candidate multipliers for cold items' predicted cf, tabular and popularity blocks.
    cold_cf: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    cold_tabular: tuple[float, ...] = (0.5, 1.0, 2.0)
    cold_popularity: tuple[float, ...] = (0.0, 1.0, 4.0)


@dataclass
class ImageConfig:
    """The images stage's encoder (``recsys.vision.ImageEncoder``); the rest of its
    configuration keeps the library defaults. Pass ``image_encoder_factory`` to ``train`` for
    full control."""

    # Self-supervised method: simclr, byol or dino.
    method: str = "simclr"
    # Passes over the catalog's images; ignored when time_budget is set. 10,000 28x28 images
    # take 15-20 s an epoch on 2 CPU cores (benchmarks/RESULTS.md, "Demo shop").
    epochs: int = 5
    # Train for this many seconds instead (the result then depends on the machine's speed).
    time_budget: float | None = None
    # Side of the training crops (None = the 28-px input size); 20-px crops train 1.7x
    # faster on a CPU, at no loss in quality (benchmarks/RESULTS.md, "Image encoder").
    train_size: int | None = 20
    # Seed of the initialisation, batch order and augmentations.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"ImageConfig.epochs {self.epochs} must be 1 or more")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"ImageConfig.time_budget {self.time_budget} must be above 0 s")

    def encoder_config(self):
        """The ``recsys.vision.ImageEncoderConfig`` this describes (imports torch)."""
        from recsys.vision import ImageEncoderConfig
        from recsys.vision import TrainConfig as VisionTrainConfig

        train = VisionTrainConfig(epochs=self.epochs, time_budget=self.time_budget, seed=self.seed)
        return ImageEncoderConfig(method=self.method, train_size=self.train_size, train=train)


@dataclass
class TrainConfig:
    cf: CFConfig = field(default_factory=CFConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    grid: WeightGrid = field(default_factory=WeightGrid)
    # Share of each user's latest training interactions used to choose block weights;
    # 0 keeps fusion.weights as given.
    validation_share: float = 0.2
    # At most this many users score each weight candidate (a seeded sample): the grid costs
    # users x items x dims per candidate, so large catalogs need a bound.
    validation_users: int = 3000
    # Use the item title as a text attribute.
    use_titles: bool = True
    # Mark the new bundle active.
    activate: bool = True


@dataclass
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]
    seconds: dict[str, float]


@dataclass
class _Parts:
    """What the stages produce, handed from one to the next."""

    data: CatalogData
    # When the catalog was read (naive UTC, like the catalog): interactions stored later are
    # "fresh" to this bundle and are folded in at serving time.
    read_at: str = field(default_factory=lambda: utcnow().isoformat())
    content: dict[str, np.ndarray] = field(default_factory=dict)
    tabular: TabularEncoder | None = None
    image_encoder: Any = None
    cf: CollaborativeModel | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def train(
    engine: Engine,
    artifacts_dir: Path,
    config: TrainConfig | None = None,
    device: str = "auto",
    show_progress: bool = False,
    image_encoder_factory: Callable[[], Any] | None = None,
) -> TrainResult:
    """Trains what the catalog allows and registers the bundle; see the module docstring."""
    config = config or TrainConfig()
    use_gpu = _cuda_wanted(device)
    config.cf.use_gpu = use_gpu
    config.index.use_gpu = use_gpu
    seconds: dict[str, float] = {}
    bar = tqdm(total=len(STAGES), desc="train", unit="stage", disable=not show_progress)
    with bar, threadpool_limits(1, "blas"):  # implicit's own threads do the work

        def stage(name: str):
            bar.set_postfix_str(name)
            return _stage(name, seconds, bar)

        with stage("read"):
            parts = _Parts(read_catalog(engine))
            _check_trainable(parts.data)
        with stage("images"):
            _images(parts, config.image, device, show_progress, image_encoder_factory)
        with stage("tabular"):
            _tabular(parts, config)
        with stage("cf"):
            _cf(parts, config, show_progress)
        with stage("weights"):
            _choose_weights(parts, config)
        with stage("fuse"):
            fused = FusedModel(config.fusion).fit(parts.cf, parts.content, len(parts.data.items))
        with stage("index"):
            index = VectorIndex.build(fused.item_vectors_, config.index)
            filters = ItemFilters.from_items(parts.data.items, parts.data.kinds)
            ids = parts.data.items["item_id"].to_numpy(dtype=str)
            recommender = Recommender(fused, parts.cf, ids, filters, index, {})
            recommender.compute_neighbours()
        with stage("bundle"):
            version = new_version()
            manifest = _manifest(parts, config, fused, index)
            root = Path(artifacts_dir) / "bundles"
            path = write_bundle(root, version, _writer(recommender, parts), manifest)
        with stage("register"):
            register_bundle(engine, version, path.resolve(), parts.metrics, config.activate)
    log.info("trained bundle %s in %.1fs: %s", version, sum(seconds.values()), parts.metrics)
    return TrainResult(version, path, parts.metrics, seconds)


@contextlib.contextmanager
def _stage(name: str, seconds: dict[str, float], bar) -> Iterator[None]:
    start = time.perf_counter()
    log.info("stage %s ...", name)
    try:
        yield
    except TrainingFailed:
        raise
    except Exception as exc:
        log.debug("stage %s failed", name, exc_info=True)
        raise TrainingFailed(
            f"training failed at stage {name!r}: {type(exc).__name__}: {exc}; "
            "the active model bundle is unchanged"
        ) from exc
    seconds[name] = round(time.perf_counter() - start, 3)
    bar.update(1)


def _cuda_wanted(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def _check_trainable(data: CatalogData) -> None:
    if data.items.empty:
        raise InvalidInput("the catalog has no items; run `recsys ingest items FILE` first")


def _images(parts: _Parts, config: ImageConfig, device: str, show_progress: bool, factory) -> None:
    paths = parts.data.items["image_path"]
    has = paths.notna().to_numpy()
    if not has.any():
        log.info("no item images: training without an image block")
        return
    if factory is None:
        from recsys.vision import ImageEncoder

        def factory():
            return ImageEncoder(config.encoder_config(), device, show_progress=show_progress)

    files = paths[has].tolist()
    # Torch's CPU kernels share OpenMP with OpenBLAS: lift train()'s one-thread BLAS limit,
    # which would halve their speed on 2 cores.
    with threadpool_limits(_torch_threads()):
        encoder = factory().fit(files)
        vectors = np.asarray(encoder.transform(files), dtype=np.float32)
    image = np.zeros((len(paths), vectors.shape[1]), dtype=np.float32)
    image[has] = vectors
    parts.content["image"], parts.image_encoder = image, encoder


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _tabular(parts: _Parts, config: TrainConfig) -> None:
    kinds = dict(parts.data.kinds)
    if config.use_titles and parts.data.items["title"].notna().any() and "title" not in kinds:
        kinds["title"] = "text"
    if not kinds:
        log.info("no item attributes: training without a tabular block")
        return
    encoder = TabularEncoder(kinds, config.tabular).fit(parts.data.items)
    if encoder.dim_:
        parts.tabular = encoder
        parts.content["tabular"] = encoder.transform(parts.data.items)


def _cf(parts: _Parts, config: TrainConfig, show_progress: bool) -> None:
    if parts.data.interactions.empty:
        log.info("no interactions: training without a collaborative block")
        return
    item_ids = parts.data.items["item_id"].to_numpy(dtype=str)
    model = CollaborativeModel(config.cf)
    parts.cf = model.fit(parts.data.interactions, item_ids, show_progress=show_progress)


def _choose_weights(parts: _Parts, config: TrainConfig) -> None:
    """Grid-search block weights on each user's latest training interactions."""
    interactions = parts.data.interactions
    if parts.cf is None or config.validation_share <= 0 or interactions["user_id"].nunique() < 2:
        return
    fit_part, val_part = temporal_split(interactions, config.validation_share)
    item_ids = parts.data.items["item_id"].to_numpy(dtype=str)
    cf = CollaborativeModel(config.cf).fit(fit_part, item_ids)
    fused = FusedModel(config.fusion).fit(cf, parts.content, len(item_ids))
    users, held = heldout_sets(val_part, cf.user_ids_, item_ids)
    if len(users) > config.validation_users:  # a seeded sample bounds the grid's cost
        keep = np.sort(
            np.random.default_rng(0).choice(len(users), config.validation_users, replace=False)
        )
        users, held = users[keep], [held[k] for k in keep]
    if not len(users):
        parts.metrics["validation"] = "skipped: too few interactions per user to hold any out"
        return

    def score(weights, cold_scale):
        fused.set_weights(weights, cold_scale)
        return evaluate_scores(
            lambda rows: fused.user_vectors_[rows] @ fused.item_vectors_.T,
            users, held, cf.user_items_, fused.cold_,
        )  # fmt: skip

    weights, cold_scale, metrics = _grid_search(score, fused.layout_.dims, config)
    config.fusion.weights, config.fusion.cold_scale = weights, cold_scale
    parts.metrics.update({f"validation_{k}": v for k, v in metrics.items() if v == v})
    parts.metrics["weights"], parts.metrics["cold_scale"] = weights, cold_scale
    log.info("validation %s with weights %s, cold scale %s", metrics, weights, cold_scale)


def _grid_search(score, blocks: dict[str, int], config: TrainConfig):
    grid = config.grid
    options = {
        "tabular": grid.tabular if "tabular" in blocks else (0.0,),
        "image": grid.image if "image" in blocks else (0.0,),
        "popularity": grid.popularity,
    }
    best = (-1.0, None, None)
    ones = {b: config.fusion.cold_scale.get(b, 1.0) for b in blocks}
    for values in itertools.product(*options.values()):
        weights = {"cf": 1.0, **dict(zip(options, values, strict=True))}
        metrics = score(weights, ones)
        if _objective(metrics) > best[0]:
            best = (_objective(metrics), weights, metrics)
    weights, metrics, cold_scale = best[1], best[2], ones
    if not grid.search_cold or np.isnan(metrics.get("cold_recall@10", np.nan)):
        return weights, cold_scale, metrics
    objective = _objective(metrics)
    for cf, tab, pop in itertools.product(grid.cold_cf, grid.cold_tabular, grid.cold_popularity):
        candidate = {**ones, "cf": cf, "tabular": tab, "popularity": pop}
        found = score(weights, candidate)
        if _objective(found) > objective:
            objective, cold_scale, metrics = _objective(found), candidate, found
    return weights, cold_scale, metrics


def fit_in_memory(
    data: CatalogData, config: TrainConfig | None = None, image_encoder_factory=None
) -> tuple[FusedModel, _Parts]:
    """The images..fuse stages without a database or bundle (evaluation, experiments)."""
    config = config or TrainConfig()
    parts = _Parts(data)
    with threadpool_limits(1, "blas"):
        return _fit_in_memory(parts, config, image_encoder_factory)


def _fit_in_memory(parts: _Parts, config: TrainConfig, image_encoder_factory):
    data = parts.data
    _images(parts, config.image, "cpu", False, image_encoder_factory)
    _tabular(parts, config)
    _cf(parts, config, show_progress=False)
    _choose_weights(parts, config)
    fused = FusedModel(config.fusion).fit(parts.cf, parts.content, len(data.items))
    return fused, parts


def _objective(metrics: dict[str, float]) -> float:
    """Warm plus cold-item recall on the validation slice (warm alone without cold items)."""
    cold = metrics.get("cold_recall@10", np.nan)
    return metrics["recall@10"] + (0.0 if np.isnan(cold) else cold)


def _manifest(parts: _Parts, config: TrainConfig, fused: FusedModel, index) -> dict[str, Any]:
    return {
        "config": {**asdict(config), "index": asdict(config.index)},
        "counts": {**parts.data.counts, "cold_items": int(fused.cold_.sum())},
        "data_read_at": parts.read_at,
        "blocks": fused.layout_.dims,
        "weights": fused.weights_,
        "cold_scale": fused.cold_scale_,
        "index_kind": index.kind,
        "metrics": parts.metrics,
    }


def _writer(recommender: Recommender, parts: _Parts):
    def write(directory: Path) -> None:
        recommender.save(directory)
        if parts.tabular is not None:
            parts.tabular.save(directory)
        if parts.image_encoder is not None:
            parts.image_encoder.save(directory / "image_encoder")
        items = parts.data.items[["item_id", "title"]]
        pd.DataFrame(items).to_parquet(directory / "items.parquet", index=False)

    return write
