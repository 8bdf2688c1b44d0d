"""`recsys evaluate`: split the catalog's interactions, train every contender on the training
part, score them side by side and write a report (see ``recsys.evaluation.report``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recsys.errors import InvalidInput
from recsys.evaluation import catalog_tasks, parts
from recsys.evaluation import images as image_eval
from recsys.evaluation.contenders import (
    ContentProfile,
    Fused,
    ItemContent,
    PeerConfig,
    build_contenders,
)
from recsys.evaluation.item_to_item import cosine_ranker, next_item_hits
from recsys.evaluation.registry import record_with_bundle
from recsys.evaluation.report import ReportInputs, write_report
from recsys.ingest.values import BadValue, parse_moment
from recsys.model import diversity, parallel
from recsys.model.bundle import active_version
from recsys.model.data import CatalogData, count_items, count_users, read_catalog
from recsys.model.protocol import MAX_BATCH_CELLS, build_task, rank, recall_per_user, score
from recsys.model.ranking import WIDE_ROW, hit_matrix, per_user_metrics, top_k_finite
from recsys.model.recommender import ItemFilters
from recsys.model.split import DATED_SHARE, SPLITS, split_interactions
from recsys.model.training import TrainConfig, left_out_crawlers

log = logging.getLogger(__name__)

# Users with held-out events the evaluation needs: with one, the contenders that choose a
# parameter on a validation slice of the training part (EASE^R, RP3beta) hold nobody out
# (a single shopper's evaluation crashed after training with KeyError 'recall@10').
MIN_USERS = 2


@dataclass(frozen=True)
class EvaluationConfig:
    # temporal (per user, latest share by time), time-cutoff (one global time) or random.
    split: str = "temporal"
    # Share of each user's interactions held out (temporal, random); for time-cutoff the
    # share of all interactions after the default cutoff.
    holdout: float = 0.2
    # time-cutoff only: ISO time; None = the time quantile 1 - holdout.
    cutoff: str | None = None
    # Cut-offs of every metric; 10 (or the first k) is the report's headline.
    ks: tuple[int, ...] = (5, 10, 20, 50)
    # Seeds the random split, the user sample, ALS/BPR (peers and fused) and the examples.
    seed: int = 0
    # Evaluate a seeded sample of this many users (their interactions only); None = all,
    # unless all of them times the catalog's items is more than ``max_cells``: then a seeded
    # sample of max_cells // items users (logged, and stated in the report).
    users: int | None = None
    # Users x items every contender ranks, at most, when ``users`` is None (None: no bound).
    # 5 * 10^9: the synthetic long-tail shop's 47k users x 100k items stay whole; at 10^6
    # items 5,000 users are evaluated (benchmarks/RESULTS.md, session 17).
    max_cells: int | None = 5 * 10**9
    # Upper bounds of the user segments by training history length: "1-5", "6-20", "21+".
    segments: tuple[int, ...] = (5, 20)
    # Example similar-items rows in the report, and neighbours per row.
    examples: int = 4
    neighbours_shown: int = 5
    # The peers and the fused contender (what `recsys train` builds with the same config:
    # the CLI builds both from the same options); ``seed`` replaces their seeds (peers.seed,
    # fused.cf.random_state). The peers keep their own settings: --factors, --event-weight
    # and the rest reach the fused contender (and --crawler-share every contender's data,
    # the image options the image contender too).
    peers: PeerConfig = field(default_factory=PeerConfig)
    fused: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"EvaluationConfig.split {self.split!r} is not one of {SPLITS}")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"EvaluationConfig.holdout {self.holdout} must be in (0, 1)")
        if self.seed < 0:  # numpy's default_rng refused it mid-run
            raise ValueError(f"EvaluationConfig.seed {self.seed} must be 0 or more")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"EvaluationConfig.ks {self.ks} must be positive cut-offs")
        if self.cutoff is not None:
            try:  # the rule of the events' own times: a zone, epoch seconds, 20150101
                parse_moment(self.cutoff, "cutoff")
            except BadValue as exc:
                raise InvalidInput(f"{exc}; give an ISO time such as 2015-01-01") from None
        # Normalised copies of the fields (a frozen dataclass sets them this way once); the
        # caller's nested configs are left as they were.
        fused = replace(self.fused, cf=replace(self.fused.cf, random_state=self.seed))
        object.__setattr__(self, "ks", tuple(sorted(set(self.ks))))
        object.__setattr__(self, "peers", replace(self.peers, seed=self.seed))
        object.__setattr__(self, "fused", fused)

    @property
    def headline_k(self) -> int:
        return 10 if 10 in self.ks else self.ks[0]


@dataclass
class EvaluationResult:
    path: Path  # the report directory
    metrics: dict[str, Any]  # what metrics.json holds
    bundle: str | None  # the bundle the summary was recorded with (None: not recorded)
    # why it was not recorded with the active bundle (None: recorded, or no active bundle)
    not_recorded: str | None = None


def evaluate(
    engine: Engine,
    out_dir: Path,
    config: EvaluationConfig | None = None,
    labels: Path | None = None,
    show_progress: bool = False,
    image_encoder_factory: Callable[[], Any] | None = None,
    command: str | None = None,
    device: str = "cpu",
) -> EvaluationResult:
    """Evaluate every contender on the catalog and write ``out_dir/<timestamp>/``.

    ``device`` is where the image encoder trains (catalogs with images); ALS, BPR and the
    fused model's CF run on the CPU, so that the seed alone fixes the numbers.
    """
    config = config or EvaluationConfig()
    with threadpool_limits(1, "blas"):
        active = active_version(engine)  # the bundle of this data, not one trained meanwhile
        data, users = _read(engine, config)
        config = replace(config, users=users)  # the sample evaluated, when one was chosen
        content = ItemContent(config.fused, image_encoder_factory, device, show_progress)
        inputs = _evaluate(data, config, content, show_progress)
        if labels is not None:
            inputs.metrics["images"] = _image_section(data, content, labels, config, inputs)
        inputs.command = command
        path = write_report(Path(out_dir), inputs)
    recording = record_with_bundle(engine, active, inputs.metrics, path)
    log.info("report written to %s", path)
    return EvaluationResult(path, inputs.metrics, recording.bundle, recording.reason)


def _read(engine: Engine, config: EvaluationConfig) -> tuple[CatalogData, int | None]:
    """The catalog with the interactions of the evaluated users (a sample read alone), and
    the sample's size (None: every user)."""
    n_items = count_items(engine)
    if not n_items:
        raise InvalidInput("the catalog has no items; run `recsys ingest items FILE` first")
    users = _sample_size(count_users(engine), n_items, config)
    sample = None if users is None else (users, config.seed)
    data = read_catalog(engine, user_sample=sample)
    return left_out_crawlers(data, config.fused), users


def _sample_size(n_users: int, n_items: int, config: EvaluationConfig) -> int | None:
    """``config.users``, or when None the users that keep ``max_cells`` ranked cells (None:
    all of them). ``config.users`` at or above the catalog's users is all of them, no sample
    (`--users 100000` on 671 users was reported as a "seeded sample of 100,000 users")."""
    if config.users is not None and config.users >= n_users:
        log.info("--users %d: the catalog has %d users, all evaluated", config.users, n_users)
        return None
    if config.users is not None or config.max_cells is None:
        return config.users
    if n_users * n_items <= config.max_cells:
        return None
    sample = max(1, config.max_cells // n_items)
    log.warning(
        "%d users x %d items is more than %.0e cells for every contender to rank: evaluating "
        "a seeded sample of %d users (--users N to choose, --all-users for all)",
        n_users,
        n_items,
        config.max_cells,
        sample,
    )
    return sample


def _evaluate(data: CatalogData, config, content: ItemContent, show_progress: bool):
    """Split, fit and score every contender; without interactions only the fused model's
    content vectors are fitted (for the item map and examples)."""
    metrics: dict[str, Any] = {"data": _data_section(data, config), "config": asdict(config)}
    if data.interactions.empty:
        fused = Fused(config.fused, content).fit(data)
        metrics["contenders"] = {}
        return _report_inputs(data, config, metrics, fused, {})
    split = split_interactions(
        data.interactions, config.split, config.holdout, config.seed, config.cutoff
    )
    train = CatalogData(data.items, data.kinds, split.train)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = build_task(split.train, split.test, item_ids)
    if not len(task.user_ids):
        stamps = data.interactions["timestamp"]
        one_time = stamps.notna().all() and stamps.min() == stamps.max()
        if config.split == "time-cutoff" and one_time:
            raise InvalidInput(
                f"every event has the same time ({stamps.min()}): no time splits them; "
                "use --split random"
            )
        if config.cutoff is not None and (split.train.empty or split.test.empty):
            empty = "training" if split.train.empty else "held-out"
            raise InvalidInput(
                f"--cutoff {config.cutoff} leaves no {empty} interactions: the events run from "
                f"{stamps.min()} to {stamps.max()}; give a cutoff between them"
            )
        if config.split == "time-cutoff" and (split.train.empty or split.test.empty):
            when = split.description["cutoff"]
            raise InvalidInput(
                f"every event is {'at or after' if split.train.empty else 'before'} the "
                f"default cutoff {when} (the time by which {1 - config.holdout:.0%} of them "
                "happened): their times do not spread enough to split by one; give --cutoff "
                "between the first and the last or use --split random"
            )
        raise InvalidInput(
            "no user has both training and held-out interactions under this split; "
            "use a larger --holdout, another --split or more interactions"
        )
    if len(task.user_ids) < MIN_USERS:  # before any contender trains
        raise InvalidInput(
            f"evaluate needs at least {MIN_USERS} users with held-out events; this catalog has "
            f"{len(task.user_ids)}"
        )
    metrics["split"] = {**split.description, "train": len(split.train), "test": len(split.test)}
    # the fused model's weights are chosen as `recsys train` chooses them: on each user's
    # latest training events when they have times, whatever this split is (the report says)
    dated = split.train["timestamp"].notna().mean() >= DATED_SHARE
    metrics["split"]["validation_slice"] = "temporal" if dated else "random"
    metrics["task"] = task.info
    contenders = build_contenders(train, config.peers, content, config.fused)
    metrics["contenders"], seconds, ranked, metrics["against_parts"] = _score_all(
        contenders, train, task, config, show_progress
    )
    metrics["best"] = _best(metrics["contenders"], config.headline_k)
    fused = contenders[-1]
    metrics["fused"] = {
        "weights": fused.model_.weights_,
        "cold_scale": fused.model_.cold_scale_,
        "validation": fused.validation_,
    }
    metrics["diversity"] = diversity_sweep(
        fused, train, task, config.headline_k, show_progress, ranked
    )
    metrics["item_to_item"] = _item_to_item(contenders, split, item_ids, config.headline_k)
    return _report_inputs(train, config, metrics, fused, seconds)


def _item_to_item(contenders: list, split, item_ids: np.ndarray, k: int) -> dict:
    """Next-item hit rate@k of the fused surfaces beside pure ALS item-item."""
    fused = contenders[-1]
    rankers = {f"fused {s}": partial(fused.similar, surface=s) for s in ("also", "similar")}
    als = next((c for c in contenders if c.name == "ALS"), None)
    if als is not None:
        rankers["ALS item-item"] = cosine_ranker(als.item_factors_)
    section = next_item_hits(rankers, split.train, split.test, item_ids, k)
    for name, row in section["rankers"].items():
        log.info("%s: next-item hit rate@%d %.4f", name, k, row[f"hit_rate@{k}"])
    return section


# Filterable attributes whose distinct values per list the diversity table counts.
DISTINCT_ATTRIBUTES = 3
# Users re-ranked at once (MMR holds users x pool x pool similarities).
SWEEP_CHUNK = 1024


def diversity_sweep(
    fused: Fused, data: CatalogData, task, k: int, show_progress: bool, ranked=None
) -> dict:
    """The fused model's lists re-ranked by MMR at each λ of ``diversity.SWEEP``, as served
    (the best ``pool_size`` items, training items left out): recall@k, intra-list diversity
    and distinct attribute values per list, and the λ the default rule picks. ``ranked``:
    the fused model's ``rank`` with scores, whose lists are the pools when long enough."""
    blocks = fused.model_.item_blocks_
    filters = ItemFilters.from_items(data.items, data.kinds)
    attributes = list(filters.postings)[:DISTINCT_ATTRIBUTES]
    width = diversity.pool_size(k, max(diversity.SWEEP), len(task.item_ids))
    # On catalogs of WIDE_ROW items or more, rank's lists are in top_k_finite's order (value,
    # then column), so their first ``width`` items are the pools: no second scoring pass.
    if (
        ranked is not None
        and ranked.scores is not None
        and ranked.all.shape[1] >= width
        and len(task.item_ids) >= WIDE_ROW
    ):
        rows, scores = ranked.all[:, :width], ranked.scores[:, :width]
    else:
        rows, scores = _pools(fused, task, width, show_progress)
    n_heldout = task.heldout.getnnz(axis=1)
    sweep = {}
    chunks = [slice(start, start + SWEEP_CHUNK) for start in range(0, len(rows), SWEEP_CHUNK)]
    for lam in diversity.SWEEP:
        top = np.vstack(
            [diversity.diversify(rows[c], scores[c], blocks, k, lam)[0] for c in chunks]
        )  # (U, k)
        hits = hit_matrix(top, task.heldout)
        row = {f"recall@{k}": float(per_user_metrics(hits, n_heldout, (k,))[f"recall@{k}"].mean())}
        spread = np.concatenate([diversity.intra_list_diversity(top[c], blocks) for c in chunks])
        row[f"diversity@{k}"] = float(np.nanmean(spread))
        for name in attributes:
            distinct = diversity.distinct_values(top, filters.labels(name))
            row[f"distinct_{name}@{k}"] = float(distinct.mean())
        sweep[lam] = row
    chosen = diversity.choose_diversity(sweep, k)
    log.info("diversity sweep: %s; the rule picks λ = %s", sweep, chosen)
    return {
        "k": k,
        "pool": width,
        "attributes": attributes,
        "lambdas": {str(lam): row for lam, row in sweep.items()},
        "chosen": chosen,
        "served_default": diversity.DEFAULT_DIVERSITY,
    }


def _pools(fused: Fused, task, width: int, show_progress: bool):
    """(rows (U, width), scores (U, width)): each user's best items, training items left out."""
    n_users, n_items = task.heldout.shape
    batch = max(1, MAX_BATCH_CELLS // max(n_items, 1))

    def batch_pool(start: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.arange(start, min(start + batch, n_users))
        batch_scores = np.asarray(fused.scores(task.user_ids[users]), dtype=np.float32)  # (b, I)
        batch_scores[task.seen[users].nonzero()] = -np.inf
        top = top_k_finite(batch_scores, width)  # (b, width)
        picked = np.take_along_axis(batch_scores, np.maximum(top, 0), axis=1)
        return top, np.where(top >= 0, picked, -np.inf).astype(np.float32)

    starts = range(0, n_users, batch)
    pools = tqdm(
        parallel.map_in_order(batch_pool, starts),  # batches side by side, in their order
        desc="  diversity pools",
        unit="batch",
        total=len(starts),
        disable=not show_progress,
    )
    rows, scores = zip(*pools, strict=True)
    return np.vstack(rows), np.vstack(scores)


def _score_all(contenders: list, train: CatalogData, task, config, show_progress: bool):
    """(contender -> metrics, contender -> seconds, the fused model's rankings, the fused
    model against its parts), one progress step per contender."""
    results, seconds, ranked = {}, {}, None
    per_user, kinds = {}, {}
    for contender in tqdm(contenders, desc="evaluate", unit="model", disable=not show_progress):
        results[contender.name], seconds[contender.name], rankings = _run_one(
            contender, train, task, config, show_progress
        )
        warm, _, cold = recall_per_user(rankings, task, config.headline_k)
        if rankings.cold_tied:  # a tie-break among new items: no figure to compare
            cold = cold[:0]
        per_user[contender.name], kinds[contender.name] = (warm, cold), _kind(contender)
        if isinstance(contender, Fused):
            ranked = rankings
    compared = parts.against_parts(per_user, kinds, config.headline_k)
    return results, seconds, ranked, compared


def _kind(contender) -> str:
    if isinstance(contender, Fused):
        return parts.FUSED
    return parts.CONTENT if isinstance(contender, ContentProfile) else parts.COLLABORATIVE


def _run_one(contender, train: CatalogData, task, config: EvaluationConfig, show_progress):
    log.info("fitting %s ...", contender.name)
    start = time.perf_counter()
    contender.fit(train)
    fitted = time.perf_counter()
    with_scores = isinstance(contender, Fused)  # its lists are the diversity sweep's pools
    rankings = rank(contender, task, max(config.ks), show_progress, scores=with_scores)
    result = score(rankings, task, config.ks, config.segments)
    done = time.perf_counter()
    k = config.headline_k
    warm, cold = result["overall"][f"recall@{k}"], result["cold_items"].get(f"recall@{k}")
    cold = "n/a" if cold is None else f"{cold:.4f}"  # it was 0.0048543689320388345
    log.info("%s: recall@%d %.4f, cold-item recall@%d %s", contender.name, k, warm, k, cold)
    return result, {"fit": round(fitted - start, 2), "score": round(done - fitted, 2)}, rankings


def _best(results: dict, k: int) -> dict[str, str | None]:
    """Per headline metric, the contender with the highest value."""
    best = {}
    for part, key in (("overall", f"recall@{k}"), ("cold_items", f"cold_recall@{k}")):
        values = {n: r[part].get(f"recall@{k}") for n, r in results.items()}
        values = {n: v for n, v in values.items() if v is not None}
        best[key] = max(values, key=values.get) if values else None
    return best


def _data_section(data: CatalogData, config: EvaluationConfig) -> dict:
    section = dict(data.counts)
    section["user_sample"] = config.users
    return section


def _report_inputs(data: CatalogData, config, metrics, fused: Fused, seconds) -> ReportInputs:
    items = data.items
    titles = items["title"].where(items["title"].notna(), items["item_id"]).astype(str).tolist()
    attribute, categories = _map_colours(data, fused)
    return ReportInputs(
        metrics=metrics,
        seconds=seconds,
        headline_k=config.headline_k,
        item_vectors=fused.model_.item_queries(np.arange(len(items))),
        map_attribute=attribute,
        map_categories=categories,
        examples=_examples(data, fused, config),
        titles=titles,
        # as objects: a str column puts NaN back for None, and one photo in a catalog
        # without them ended the report in Image.open(nan)
        images=items["image_path"].astype(object).where(items["image_path"].notna(), None).tolist(),
        seed=config.seed,
    )


def _map_colours(data: CatalogData, fused: Fused) -> tuple[str, np.ndarray]:
    """The attribute the item map is coloured by: the first categorical, else the first value
    of the first multi-valued attribute, else warm/cold."""
    from recsys.model.tabular import split_multi

    for kind in ("categorical", "multi"):
        for name, found in data.kinds.items():
            if found == kind and name in data.items.columns:
                values = data.items[name]
                if kind == "multi":
                    values = values.map(lambda v: (split_multi(v) or [None])[0])
                    return f"{name} (first listed)", values.to_numpy(dtype=object)
                return name, values.to_numpy(dtype=object)
    cold = np.where(fused.model_.cold_, "cold", "warm").astype(object)
    return "warm/cold", cold


def _examples(data: CatalogData, fused: Fused, config: EvaluationConfig) -> list[list[int]]:
    """A few seeded queries among the 100 most popular items (all items without
    interactions), each followed by its most similar items."""
    counts = data.interactions["item_id"].astype(str).value_counts()
    rows = pd.Index(data.items["item_id"].astype(str)).get_indexer(counts.index[:100])
    pool = rows[rows >= 0] if len(counts) else np.arange(len(data.items))
    rng = np.random.default_rng(config.seed)
    queries = np.sort(rng.choice(pool, size=min(config.examples, len(pool)), replace=False))
    neighbours = fused.similar(queries, min(config.neighbours_shown, len(data.items) - 1))
    return [[int(q), *map(int, row)] for q, row in zip(queries, neighbours, strict=True)]


def _image_section(data: CatalogData, content: ItemContent, labels: Path, config, inputs):
    """Item 3 of the report: image vectors vs raw pixels on labelled items."""
    vectors = content.image(data)
    if vectors is None:
        raise InvalidInput(f"--labels {labels} given, but no catalog item has an image")
    table = image_eval.read_labels(labels)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    section = image_eval.image_quality(
        item_ids, data.items["image_path"], vectors, table, config.seed
    )
    names = image_eval.label_names(item_ids, table)
    if pd.notna(names).any():
        inputs.map_attribute, inputs.map_categories = "label", names
        inputs.titles = [
            f"{title} ({name})" if pd.notna(name) else title
            for title, name in zip(inputs.titles, names, strict=True)
        ]
    section["labels_file"] = Path(labels).name
    section["catalog_tasks"] = catalog_tasks.evaluate(
        item_ids, data.items["image_path"], vectors, table, config.seed
    )
    return section
