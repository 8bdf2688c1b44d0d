"""`recsys train`: catalog -> encoders, CF, fusion, index -> a registered, active bundle.

Stages: read, images, tabular, cf, weights (validation), fuse, index, bundle, register. Each
stage that fails raises ``TrainingFailed`` naming the stage; the bundle is written to a
temporary directory and registered last, so a failed run leaves the active bundle untouched;
what a killed run leaves behind is removed by the next run (``bundle.remove_orphans``).
The config is never written to: the chosen weights and the devices the stages ran on are in
the ``TrainResult`` and the bundle manifest.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recsys.catalog import changes
from recsys.catalog.db import catalog_key, sqlite_unwritable
from recsys.catalog.models import catalog_id, utcnow
from recsys.engines.events import fresh_after
from recsys.errors import InvalidInput, TrainingFailed
from recsys.ingest.bulk import settled_writes
from recsys.model.bundle import (
    active_version,
    drop_unregistered,
    new_version,
    register_bundle,
    remove_orphans,
    write_bundle,
    write_model_files,
    writing_bundles,
)
from recsys.model.cf import CFConfig, CollaborativeModel, warn_faded
from recsys.model.config import ImageConfig, TrainConfig, WeightGrid
from recsys.model.content import (
    Content,
    build_collaborative,
    build_content,
    image_block,
    tabular_block,
)
from recsys.model.data import CatalogData, read_catalog, without_crawlers
from recsys.model.fusion import FusedModel
from recsys.model.index import VectorIndex
from recsys.model.recommender import ItemFilters, Recommender
from recsys.model.validation import WeightChoice, choose_weights

__all__ = ["ImageConfig", "TrainConfig", "TrainResult", "WeightGrid", "fit_in_memory", "train"]

log = logging.getLogger(__name__)

# The weights stage comes before cf: it chooses ALS's confidence form, which cf fits with.
STAGES = ("read", "images", "tabular", "weights", "cf", "fuse", "index", "bundle", "register")


@dataclass
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]
    seconds: dict[str, float]
    # What the fit chose and resolved: block weights, cold items' multipliers, and the
    # device each stage ran on ("cpu" or "cuda").
    weights: dict[str, float] = field(default_factory=dict)
    cold_scale: dict[str, float] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    # Whether the bundle became the active one (``TrainConfig.activate``, unless another
    # bundle was activated while it trained: ``register_bundle``'s ``unless_moved_from``).
    active: bool = False


@dataclass
class Fitted:
    """What the stages up to ``fuse`` produce (``fit_in_memory`` returns it)."""

    data: CatalogData
    content: Content
    cf: CollaborativeModel | None
    fused: FusedModel
    # Validation metrics of the weights stage ("validation_recall@10", ...), chosen weights.
    metrics: dict[str, Any]


def left_out_crawlers(data: CatalogData, config: TrainConfig) -> CatalogData:
    """``data`` without the events of users taken for crawlers (``without_crawlers`` at
    ``config``'s crawler_share and crawler_min_items), saying how many and who."""
    data, crawlers = without_crawlers(data, config.crawler_share, config.crawler_min_items)
    if crawlers:
        log.warning(
            "%d user(s) whose events span over %.0f%% of the catalog's %d items (and at least "
            "%d of them) left out as crawlers, not shoppers: %s (--crawler-share, "
            "TrainConfig.crawler_share; `recsys users erase` removes them for good)",
            len(crawlers),
            100 * config.crawler_share,
            len(data.items),
            config.crawler_min_items,
            ", ".join(crawlers[:5]) + (", ..." if len(crawlers) > 5 else ""),
        )
    return data


def train(
    engine: Engine,
    artifacts_dir: Path,
    config: TrainConfig | None = None,
    device: str = "auto",
    show_progress: bool = False,
    image_encoder_factory: Callable[[], Any] | None = None,
    ray_address: str = "",
    events: str | Path | None = None,
) -> TrainResult:
    """Trains what the catalog allows and registers the bundle; see the module docstring.
    With ``ray_address`` the images and the neighbour table run on Ray (``recsys.engines``);
    ``events``: the interactions of this Parquet event folder instead of the catalog's."""
    config = config or TrainConfig()
    use_gpu = _cuda_wanted(device)
    bundles = Path(artifacts_dir) / "bundles"
    _check_writable(engine, bundles)  # before any work, not at the end of it
    if events is not None and config.cf.engine == "spark":  # its file types, before any fit
        from recsys.engines.spark import folder_schema

        folder_schema(events)
    remove_orphans(engine, bundles)  # what killed runs left
    seconds: dict[str, float] = {}
    bar = tqdm(total=len(STAGES), desc="train", unit="stage", disable=not show_progress)
    with bar, threadpool_limits(1, "blas"):  # implicit's own threads do the work

        def stage(name: str):
            bar.set_postfix_str(name)
            return _stage(name, seconds, bar, bundles)

        with stage("read"):
            # the events stored by then are read, and the later ones are "fresh" to this
            # bundle (an exported folder: those after export); erasures from then on are
            # not in what is read
            reading = settled_writes(engine) if events is None else utcnow()
            read_at = fresh_after(events) or reading.isoformat()
            # before the items are read: a write from now on is one the bundle may lack
            generation = changes.generation(engine)
            catalog = catalog_id(engine)
            active_before = active_version(engine)  # another run's activation is not undone
            data = read_catalog(engine, events, stored_by=None if events else reading)
            data = left_out_crawlers(data, config)
            _check_trainable(data)
            _check_event_weights(data, config.cf)
            _check_column_weights(data, config)
            warn_faded(data.interactions, config.cf)
        content = Content()
        with stage("images"):
            if ray_address and image_encoder_factory is None:
                from recsys.engines.ray_train import ray_image_factory

                storage = Path(artifacts_dir).resolve() / "ray"  # shared on a cluster
                image_encoder_factory = ray_image_factory(
                    config.image, ray_address, storage, show_progress
                )
            image_block(content, data, config, device, show_progress, image_encoder_factory)
        with stage("tabular"):
            tabular_block(content, data, config)
        with stage("weights"):
            choice = choose_weights(data, content, config, use_gpu)
        with stage("cf"):
            cf = _collaborative(data, config, use_gpu, show_progress, events, choice)
        with stage("fuse"):
            fitted = _fuse(data, content, cf, choice, config)
            _check_finite(fitted)
        with stage("index"):
            recommender = _recommender(fitted, config, use_gpu, ray_address)
        with writing_bundles(bundles):
            with stage("bundle"):
                version = new_version()
                source = "catalog" if events is None else "folder"
                manifest = _manifest(fitted, config, recommender, read_at, generation, source)
                manifest["catalog_id"] = catalog  # whose bundle it is (migration 0013)
                writer = _writer(recommender, fitted)
                path = write_bundle(bundles, version, writer, manifest, catalog_key(engine.url))
            with stage("register"):
                try:
                    active = register_bundle(
                        engine,
                        version,
                        path.resolve(),
                        fitted.metrics,
                        config.activate,
                        unless_moved_from=active_before,
                    )
                except Exception:
                    drop_unregistered(engine, path)  # not left for the next run to remove
                    raise
    _erased_while_training(engine, path, reading)
    metrics = fitted.metrics or "the weights are the defaults (no validation slice to choose on)"
    log.info("trained bundle %s in %.1fs: %s", version, sum(seconds.values()), metrics)
    fused = fitted.fused
    return TrainResult(
        version,
        path,
        fitted.metrics,
        seconds,
        fused.weights_,
        fused.cold_scale_,
        manifest["devices"],
        active,
    )


def fit_in_memory(
    data: CatalogData,
    config: TrainConfig | None = None,
    content: Content | None = None,
    image_encoder_factory: Callable[[], Any] | None = None,
    device: str = "cpu",
) -> Fitted:
    """The images..fuse stages without a database or bundle (the evaluation's fused contender,
    experiments): the same builders, in the same order, as ``train``. ``content`` built
    earlier with ``build_content(data, config)`` is used as it is."""
    config = config or TrainConfig()
    use_gpu = _cuda_wanted(device)
    warn_faded(data.interactions, config.cf)
    with threadpool_limits(1, "blas"):
        content = content or build_content(data, config, device, False, image_encoder_factory)
        choice = choose_weights(data, content, config, use_gpu)
        confidence, recency = _chosen_cf(choice)
        cf = build_collaborative(
            data.interactions,
            _item_ids(data),
            _chosen_config(config, choice),
            use_gpu,
            confidence=confidence,
            recency=recency,
        )
        return _fuse(data, content, cf, choice, config)


def _collaborative(
    data: CatalogData, config: TrainConfig, use_gpu, show_progress, events, choice=None
):
    """The cf stage, with the confidence form the weights stage chose. ALS on Spark over an
    event folder aggregates the confidences on Spark, from the folder itself
    (``CollaborativeModel.fit_events``): the same entries as from ``data.interactions``,
    computed where the events are (unless erased users' events were left out of them: then
    from ``data.interactions``)."""
    item_ids = _item_ids(data)
    folder = events is not None and not data.erased_events
    if folder and config.cf.engine == "spark" and not data.interactions.empty:
        return CollaborativeModel(config.cf).fit_events(str(events), item_ids)
    cf_config = _chosen_config(config, choice)
    return build_collaborative(
        data.interactions, item_ids, cf_config, use_gpu, show_progress, *_chosen_cf(choice)
    )


def _chosen_cf(choice: WeightChoice | None) -> tuple:
    """(confidence form, recency half-life) the weights stage chose (None, None: the
    config's form, no recency)."""
    return (choice.confidence, choice.recency) if choice else (None, None)


def _chosen_config(config: TrainConfig, choice: WeightChoice | None) -> CFConfig:
    """``config.cf`` with the factor count the weights stage chose; the config itself is left
    as it was (the bundle's cf/config.json and metrics say what was fitted)."""
    if choice is None or choice.factors is None:
        return config.cf
    return replace(config.cf, factors=choice.factors)


def _fuse(data, content: Content, cf, choice: WeightChoice | None, config) -> Fitted:
    weights = choice.weights if choice else None
    cold_scale = choice.cold_scale if choice else None
    surfaces = choice.surfaces if choice else None
    profile = choice.token_profile if choice else None
    fused = FusedModel(config.fusion).fit(
        cf, content.blocks, len(data.items), weights, cold_scale, content.tokens, surfaces, profile
    )
    return Fitted(data, content, cf, fused, dict(choice.metrics) if choice else {})


def _recommender(fitted: Fitted, config: TrainConfig, use_gpu: bool, ray_address="") -> Recommender:
    data = fitted.data
    index = VectorIndex.build(fitted.fused.item_vectors_, config.index, use_gpu)
    filters = ItemFilters.from_items(data.items, data.kinds)
    recommender = Recommender(fitted.fused, fitted.cf, _item_ids(data), filters, index, {})
    if ray_address:
        from recsys.engines.ray_index import neighbour_table

        recommender.neighbours = neighbour_table(recommender, config.neighbours, ray_address)
    else:
        recommender.compute_neighbours(config.neighbours)
    return recommender


def _check_writable(engine: Engine, bundles: Path) -> None:
    """``TrainingFailed`` before any work when the bundle could not be written under
    ``bundles`` or registered in a SQLite catalog (a read-only folder or file): both were
    found at the end of a whole training, one as a traceback."""
    try:
        bundles.mkdir(parents=True, exist_ok=True)
        writable = os.access(bundles, os.W_OK)  # False on a read-only mount too
    except OSError as exc:
        writable = False
        log.debug("cannot make %s", bundles, exc_info=exc)
    if not writable:
        raise TrainingFailed(
            f"model bundles cannot be written under {bundles}; give --artifacts-dir (or "
            "RECSYS_ARTIFACTS_DIR) a folder this user can write; nothing was trained"
        )
    problem = sqlite_unwritable(engine)
    if problem:
        raise TrainingFailed(f"{problem}; a bundle is registered there: nothing was trained")


@contextlib.contextmanager
def _stage(name: str, seconds: dict[str, float], bar, bundles: Path) -> Iterator[None]:
    start = time.perf_counter()
    log.info("stage %s ...", name)
    try:
        yield
    except TrainingFailed:
        raise
    except Exception as exc:
        log.debug("stage %s failed", name, exc_info=True)
        raise TrainingFailed(
            f"training failed at stage {name!r}: {_failure(exc, bundles)}; "
            "the active model bundle is unchanged"
        ) from exc
    seconds[name] = round(time.perf_counter() - start, 3)
    bar.update(1)


def _failure(exc: Exception, bundles: Path) -> str:
    """What failed, in a line: a database error without its SQL, a full disk named."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy's: its text repeats the SQL and parameters
    text = f"{type(orig).__name__}: {orig}" if orig is not None else f"{type(exc).__name__}: {exc}"
    # numpy writes a short write as "N requested and M written"
    full = getattr(exc, "errno", None) == errno.ENOSPC or "requested and" in str(exc)
    if isinstance(exc, OSError) and full:
        text += (
            f" (the disk holding {bundles} is full: free some space, e.g. remove old bundles "
            "with `recsys bundles gc --keep N`)"
        )
    return text


def _erased_while_training(engine: Engine, path: Path, reading) -> None:
    """Warn when users this bundle holds were erased while it trained: feeds do not use
    their data (``recsys.serving.fresh_history``), but its files hold it until the next
    training (the README's erasure finish, train then gc, left them there unsaid)."""
    from recsys.ingest.users import erased_in_bundle

    if count := erased_in_bundle(engine, path, reading):
        log.warning(
            "%d of this bundle's users were erased while it trained: its files hold their "
            "data (feeds do not use it); train again to finish their erasure",
            count,
        )


def _cuda_wanted(device: str) -> bool:
    """Whether the stages run on the GPU: ``auto`` when torch sees one; ``cuda`` and
    ``cuda:N`` insist (trained on the CPU without a word, where the image stage refused)."""
    if device == "cpu":
        return False
    import torch

    available = torch.cuda.is_available()
    if device.startswith("cuda") and not available:
        raise InvalidInput(f"device {device!r} asked for, but torch sees no GPU; use --device cpu")
    return available


def _check_trainable(data: CatalogData) -> None:
    if data.items.empty:
        raise InvalidInput("the catalog has no items; run `recsys ingest items FILE` first")


def _check_event_weights(data: CatalogData, cf: CFConfig) -> None:
    """A warning naming an event type given a weight that no event has (a typo weighs
    nothing: "purchse=5" leaves purchases at the default); ``InvalidInput`` when every event
    the catalog holds weighs 0 (the collaborative model would learn from nothing: its
    vectors came out NaN, and the bundle was activated)."""
    weights = cf.event_weights
    held = {str(event) for event in data.interactions["event"].unique()}  # codes when categorical
    if held and all(weights.get(event, cf.default_event_weight) == 0 for event in held):
        raise InvalidInput(
            f"every event ({', '.join(sorted(held))}) has weight 0: give at least one event "
            "type a weight above 0 (--event-weight TYPE=W)"
        )
    if not weights:
        return
    unknown = sorted(set(weights) - held)
    if unknown:
        log.warning(
            "no event of type %s: its weight changes nothing (the events are %s)",
            ", ".join(map(repr, unknown)),
            ", ".join(sorted(held)) or "none",
        )


def _check_column_weights(data: CatalogData, config: TrainConfig) -> None:
    """A warning naming a weighted column the catalog does not have (a typo weighs nothing:
    "oem_numbr=4" leaves the OEM numbers at 1)."""
    unknown = sorted(set(config.tabular.column_weights) - set(data.kinds))
    if unknown:
        log.warning(
            "no attribute %s: its weight changes nothing (the attributes are %s)",
            ", ".join(map(repr, unknown)),
            ", ".join(sorted(data.kinds)) or "none",
        )


def _check_finite(fitted: Fitted, step: int = 65_536) -> None:
    """``InvalidInput`` when a fused item vector is not finite: a bundle that would answer
    nothing (every score NaN) is never written, let alone activated. Checked in steps, so
    no copy of the vectors is made."""
    vectors = fitted.fused.item_vectors_
    for start in range(0, len(vectors), step):
        part = np.asarray(vectors[start : start + step])
        if not np.isfinite(part).all():
            row = start + int(np.flatnonzero(~np.isfinite(part).all(axis=1))[0])
            raise InvalidInput(
                f"item {_item_ids(fitted.data)[row]!r} got a vector that is not finite; "
                "nothing was written (run with -v and report the log)"
            )


def _item_ids(data: CatalogData) -> np.ndarray:
    return data.items["item_id"].to_numpy(dtype=str)


def _manifest(
    fitted: Fitted,
    config: TrainConfig,
    recommender: Recommender,
    read_at: str,
    generation: int,
    events_from: str,
):
    fused, content = fitted.fused, fitted.content
    devices = {"index": "cuda" if recommender.index.on_gpu else "cpu"}
    if fitted.cf is not None:
        devices["cf"] = fitted.cf.device_
    if content.image_encoder is not None:
        # any fit/transform object can encode images; ImageEncoder says where it trained
        devices["images"] = getattr(content.image_encoder, "device_", "unknown")
    return {
        "config": asdict(config),
        "counts": {**fitted.data.counts, "cold_items": int(fused.cold_.sum())},
        "data_read_at": read_at,
        # where the users and their events came from: a feed forgets a user the catalog no
        # longer has (erased, recsys.ingest.users) only when the catalog had them all
        "events_from": events_from,
        # the catalog's items generation before the items were read (recsys.model.delta: a
        # live catalog rebuilt later takes every item the change log names since as written)
        "items_generation": generation,
        "blocks": fused.layout_.dims,
        "weights": fused.weights_,
        "cold_scale": fused.cold_scale_,
        "surfaces": fused.surface_weights_,
        "devices": devices,
        "index_kind": recommender.index.kind,
        "metrics": fitted.metrics,
    }


def _writer(recommender: Recommender, fitted: Fitted):
    def write(directory: Path) -> None:
        content = fitted.content
        write_model_files(
            directory, recommender, content.tabular, content.image_encoder, fitted.data.items
        )

    return write
