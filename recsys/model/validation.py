"""The weights stage of `recsys train`: block weights chosen on a validation slice.

Each user's latest ``validation_share`` of training interactions is held out (a seeded random
share when events have no timestamps), a collaborative model is fitted on the rest, and the
candidates of ``TrainConfig.grid`` are scored, one block at a time, by the evaluation protocol
(``recsys.model.protocol``) on a seeded sample of users: warm recall@10 plus cold-item
recall@10. Then cold items' own block weights are chosen on the cold items alone
(``_cold_search``). Before all that, ALS's confidence form (``recsys.model.cf.Confidence``)
is chosen on the same users (``choose_confidence``), and the weights are searched on the
chosen form's model. Under ``FusionConfig.token_profile`` "auto" the weights are searched
once per token profile form (``choose_token_profile``): a form significantly better than the
default ("confidence") on the users' all-items recall or on the cold search's objective, and
significantly worse on neither, replaces it; when none is, the form with the best cold
objective whose all-items recall is not significantly below the default's
(``_choose_form``). The choice is returned; the config is left as it was.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.model import parallel, sparse_rows
from recsys.model.cf import CollaborativeModel, Confidence
from recsys.model.config import TrainConfig
from recsys.model.content import Content
from recsys.model.data import CatalogData
from recsys.model.fusion import (
    CONTENT_BLOCKS,
    SURFACES,
    TOKEN_BUDGET,
    TOKENS,
    FusedModel,
    profile_dots,
)
from recsys.model.protocol import (
    MAX_BATCH_CELLS,
    Rankings,
    build_task,
    rank,
    recall_per_user,
)
from recsys.model.ranking import WIDE_ROW, hit_matrix, per_user_metrics, top_k, top_k_finite
from recsys.model.split import DATED_SHARE, validation_split

log = logging.getLogger(__name__)

K = 10


@dataclass(frozen=True)
class WeightChoice:
    """What the weights stage chose, and what the bundle reports of it: the validation
    metrics ("validation_recall@10", ...) and the choice, or why the stage was skipped."""

    weights: dict[str, float]
    cold_scale: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)
    # Item-to-item surface -> block weights (recsys.model.fusion.SURFACES).
    surfaces: dict[str, dict[str, float]] = field(default_factory=dict)
    # ALS's confidence form, for the collaborative model of the whole catalog (None: the
    # config's, CFConfig.alpha's scaled form).
    confidence: Confidence | None = None
    # How the feed's token profiles count history items (recsys.model.fusion.TOKEN_PROFILES;
    # None: the config's, "confidence" under "auto").
    token_profile: str | None = None
    # The half-life in events of the recency weights the users' ALS factors are solved with
    # (CollaborativeModel.fit's ``recency``; None: none).
    recency: float | None = None
    # ALS's latent factors (None: CFConfig.factors).
    factors: int | None = None


def choose_weights(
    data: CatalogData, content: Content, config: TrainConfig, use_gpu: bool = False
) -> WeightChoice | None:
    """The best candidate of the grid; the defaults (``_defaults``) with fewer validation
    users than ``grid.min_users``; None when no slice is to be held out (no interactions,
    ``validation_share`` 0): the config's weights then stand."""
    interactions = data.interactions
    if interactions.empty or config.validation_share <= 0:
        return None
    if interactions["user_id"].nunique() < 2:
        return _defaults(config, content, "1 user; the weights stage needs 2 or more")
    fit_part, val_part = validation_split(interactions, config.validation_share)
    item_ids = data.items["item_id"].to_numpy(dtype=str)
    task = build_task(fit_part, val_part, item_ids).sample(config.validation_users, seed=0)
    if not len(task.user_ids):
        return _defaults(config, content, "too few interactions per user to hold any out")
    if len(task.user_ids) < config.grid.min_users:
        n, least = len(task.user_ids), config.grid.min_users
        return _defaults(config, content, f"{n} validation users, under grid.min_users {least}")
    cf, (confidence, factors), report = choose_confidence(fit_part, item_ids, task, config, use_gpu)
    recency, recency_report = choose_recency(cf, fit_part, task, config)
    report.update(recency_report)
    fused = FusedModel(config.fusion).fit(
        cf, content.blocks, len(item_ids), tokens=content.tokens, blocks_only=True
    )
    profiles = _user_profiles(fused, cf, task, config.fusion.token_profiles)
    candidates = Candidates.of_users(
        fused, cf.user_ids_, task, config.validation_candidates, profiles
    )
    blocks = {**fused.layout_.dims, **({TOKENS: 1} if fused.has_tokens else {})}
    profile, choice = choose_token_profile(candidates, task, blocks, config, list(profiles))
    fused.set_weights(choice.weights, choice.cold_scale)
    pairs = next_item_pairs(fit_part, val_part, item_ids, config.validation_users)
    surfaces, hit_rates = _surface_search(fused, pairs, config)
    metrics = {**choice.metrics, **report, "surfaces": surfaces}
    metrics.update({f"validation_next_item_hit@{K}_{s}": v for s, v in hit_rates.items()})
    log.info("weights chosen on the validation slice: %s", metrics)
    return WeightChoice(
        choice.weights,
        choice.cold_scale,
        metrics,
        surfaces,
        confidence,
        profile,
        recency,
        None if factors == config.cf.factors else factors,
    )


def _defaults(config: TrainConfig, content: Content, why: str) -> WeightChoice:
    """The config's weights and cold multipliers, and "more like this" (``similar``'s
    content-led weights) on both item-to-item surfaces: with too few shoppers there is no
    co-viewing to show, and ``also``'s cf alone listed what cf predicted for items no one
    had viewed."""
    log.info("weights stage skipped (%s): the weights are the defaults", why)
    skipped = {"validation": f"skipped: {why}; the weights are the defaults"}
    led = _content_led(content.blocks)
    surfaces = {s: dict(led) for s in SURFACES} if led else {}
    return WeightChoice(
        dict(config.fusion.weights), dict(config.fusion.cold_scale), skipped, surfaces
    )


def _content_led(blocks) -> dict[str, float]:
    """``similar``'s start: the catalog's content blocks at 1 (empty without any)."""
    return {b: 1.0 for b in CONTENT_BLOCKS if b in blocks}


def _user_profiles(fused: FusedModel, cf: CollaborativeModel, task, forms: tuple) -> dict:
    """Form -> (U, F) token profiles of the task's users (in its order) under each token
    profile form (none without tokens): one sparse product of their histories each, not of
    every fitted user's (11.5 s a form for 100k users at 10^6 items, 0.2 s for 3,000)."""
    if not fused.has_tokens:
        return {}
    user_items = cf.user_items_[pd.Index(cf.user_ids_).get_indexer(task.user_ids)]
    profiles = {}
    for form in forms:
        fused.token_profile_ = form
        profiles[form] = fused.history_token_profiles(user_items)
    fused.token_profile_ = forms[0]
    return profiles


def choose_token_profile(
    candidates: Candidates, task, blocks: dict[str, int], config: TrainConfig, forms: list
) -> tuple[str | None, WeightChoice]:
    """The weights searched once per token profile form (``forms``, the default first; none
    without tokens), on the same candidates with each form's token column. Each form is
    judged at its own weights on the two objectives it moves: the users' all-items
    recall@K, and the cold objective of the cold search (cold-item recall@``grid.cold_k``
    of the users holding cold items out, among cold items; with fewer than
    ``grid.cold_min_users`` of them, the first alone). ``_choose_form`` decides.
    -> (the form, its weights)."""
    grid = config.grid
    found = {}  # form -> (WeightChoice, Scored at K, Scored at cold_k)
    for form in forms or [None]:
        view = candidates.with_profile(form)

        def evaluate(weights, cold_scale, k: int = K, view=view) -> Scored:
            return _scored(view.rank(weights, cold_scale, k), task, k)

        choice, current = _grid_search(evaluate, blocks, config)
        found[form] = (choice, current, evaluate(choice.weights, choice.cold_scale, grid.cold_k))
    judged = {form: (at_k, cold) for form, (_, at_k, cold) in found.items()}
    chosen = _choose_form(judged, grid.cold_min_users, grid.significance)
    choice = replace(
        found[chosen][0], metrics={**found[chosen][0].metrics, "token_profile": chosen}
    )
    if len(forms) > 1:
        cold_key = f"validation_cold_recall@{grid.cold_k}"
        report = {
            f: {
                f"validation_recall@{K}": _mean(w.warm),
                cold_key: _mean(c.cold),
                "weights": ch.weights,
                "cold_scale": ch.cold_scale,
            }
            for f, (ch, w, c) in found.items()
        }
        choice = replace(choice, metrics={**choice.metrics, "token_profiles": report})
    return chosen, choice


def _choose_form(found: dict, cold_min_users: int, z: float):
    """The token profile form to keep, of ``found`` (form -> (Scored at K, Scored at the
    cold search's cut-off), the default first), each at its own weights.

    1. A form that beats the default by ``z`` standard errors on one objective (the users'
       all-items recall@K, or the cold objective when at least ``cold_min_users`` users hold
       cold items) and is not that much below it on the other replaces it; of several, the
       best on the weights search's own objective.
    2. When none does, the forms differ by less than the validation slice can measure. They
       are three equally plausible ways of counting a user's items, so of those whose
       all-items recall is not significantly below the default's, the one with the best cold
       objective is kept (the default on a tie): keeping the default instead kept, on the
       synthetic shop's 100k items (seed 0, benchmarks/RESULTS.md session 14), the form
       whose cold objective was 0.043 against binary's 0.063, and the fused model's cold
       recall@10 fell to 0.0174 against the TF-IDF profile contender's 0.0275, which counts
       each item once."""
    forms = list(found)
    default = chosen = forms[0]
    parts = ("warm", "cold") if len(found[default][1].cold) >= max(cold_min_users, 2) else ("warm",)

    def judged(form, part):
        return found[form][0 if part == "warm" else 1].on(part)

    def gains(form, over) -> tuple[bool, bool]:
        up = any(_better(judged(form, p), judged(over, p), z) for p in parts)
        down = any(_better(judged(over, p), judged(form, p), z) for p in parts)
        return up, down

    for form in forms[1:]:
        up, down = gains(form, default)
        if up and not down and found[form][0].objective > found[chosen][0].objective:
            chosen = form
    if chosen != default or "cold" not in parts:
        return chosen
    level = [f for f in forms if not _better(judged(default, "warm"), judged(f, "warm"), z)]
    return max(level, key=lambda f: judged(f, "cold").objective)


def _mean(values: np.ndarray | None) -> float | None:
    return None if values is None or not len(values) else round(float(values.mean()), 6)


def choose_confidence(
    fit_part: pd.DataFrame, item_ids: np.ndarray, task, config: TrainConfig, use_gpu: bool
) -> tuple[CollaborativeModel, tuple[Confidence, int], dict]:
    """ALS's confidence form and factor count: the config's ("scaled", ``CFConfig.alpha``;
    ``CFConfig.factors``) unless the factors of a form of ``grid.confidence_hu``, or of a
    count of ``grid.factors``, alone rank the validation users' held-out items better
    (recall@K, ``grid.significance`` standard errors of the paired gain over the config's;
    the best such). Catalogs differ: one purchase among views is worth more under one form
    on one catalog and less on another (benchmarks/RESULTS.md, session 8), and a bookshop
    whose readers follow authors and series ranks better with 64 factors while MovieLens
    and the demo shop rank worse (session 66). BPR and the Spark engine keep the config's.
    -> (the chosen candidate's model fitted on ``fit_part``, (its form, its factors), a
    report)."""
    default = (Confidence("scaled", config.cf.alpha), config.cf.factors)
    candidates = [default]
    if config.cf.model == "als" and config.cf.engine == "implicit":
        candidates += [(Confidence("hu", a), default[1]) for a in config.grid.confidence_hu]
        candidates += [(default[0], n) for n in config.grid.factors if n != default[1]]
    base = chosen = None  # (model, candidate, Scored)
    recalls = {}
    for form, factors in candidates:
        cf = CollaborativeModel(replace(config.cf, factors=factors), use_gpu=use_gpu)
        cf.fit(fit_part, item_ids, confidence=form)
        if len(candidates) == 1:
            return cf, (form, factors), {"confidence": asdict(form)}
        scored = _factor_recall(cf, task)
        recalls[_candidate_name(form, factors, default[1])] = round(scored.objective, 6)
        if base is None:
            base = chosen = (cf, (form, factors), scored)
        elif scored.objective > chosen[2].objective and _better(
            scored, base[2], config.grid.significance
        ):
            chosen = (cf, (form, factors), scored)
    form, factors = chosen[1]
    report = {"confidence": asdict(form), "cf_factors": factors}
    report[f"validation_als_recall@{K}"] = recalls
    return chosen[0], chosen[1], report


def _candidate_name(form: Confidence, factors: int, default_factors: int) -> str:
    """A ``choose_confidence`` candidate in its report: "scaled 1", "hu 16", "scaled 1, 64
    factors" (the factors named when they are not the config's)."""
    name = f"{form.form} {form.alpha:g}"
    return name if factors == default_factors else f"{name}, {factors} factors"


def choose_recency(
    cf: CollaborativeModel, fit_part: pd.DataFrame, task, config: TrainConfig
) -> tuple[float | None, dict]:
    """The half-life (in events) of the recency weights the users' ALS factors are solved
    with (``CollaborativeModel.refold_users``): none unless the factors solved with one of
    ``grid.recency`` rank the validation users' held-out items better (recall@K,
    ``grid.significance`` standard errors of the paired gain over none). The held-out
    events are each user's latest, so the slice asks the question a feed answers: what
    comes next. Only for ALS on the implicit engine, and only when (nearly) every event has a
    time (``split.DATED_SHARE``; the others count as the oldest).
    ``cf`` (fitted on ``fit_part``) keeps the chosen factors. -> (half-life or None, report)"""
    grid = config.grid.recency
    if (
        not grid
        or config.cf.model != "als"
        or config.cf.engine != "implicit"
        or fit_part["timestamp"].notna().mean() < DATED_SHARE  # the slice is not the latest
    ):
        return None, {}
    plain = _users_recall(cf, cf.user_factors_, task)
    chosen, best, solved = None, plain, (cf.user_factors_, None)
    recalls = {"none": round(plain.objective, 6)}
    for half_life, refolded in zip(grid, cf.refold_users(fit_part, grid), strict=True):
        scored = _users_recall(cf, refolded[0], task)
        recalls[f"{half_life:g}"] = round(scored.objective, 6)
        if scored.objective > best.objective and _better(scored, plain, config.grid.significance):
            chosen, best, solved = half_life, scored, refolded
    (cf.user_factors_, cf.user_recent_), cf.recency_ = solved, chosen
    return chosen, {"recency": chosen, f"validation_als_recall@{K}_recency": recalls}


@dataclass
class _FactorsAlone:
    """ALS's factors alone, as a contender of ``recsys.model.protocol.rank``."""

    cf: CollaborativeModel
    user_factors: np.ndarray | None = None  # None: the model's own
    name: str = "als factors"

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = pd.Index(self.cf.user_ids_).get_indexer(user_ids)
        users = self.cf.user_factors_ if self.user_factors is None else self.user_factors
        return users[rows] @ self.cf.item_factors_.T  # (U, I)


def _factor_recall(cf: CollaborativeModel, task) -> Scored:
    """ALS's factors alone on the task's users: per user, all-items recall@K."""
    return _users_recall(cf, cf.user_factors_, task)


def _users_recall(cf: CollaborativeModel, user_factors: np.ndarray, task) -> Scored:
    """``_factor_recall`` with ``user_factors`` in place of the model's own."""
    held = task.heldout
    top = rank(_FactorsAlone(cf, user_factors), task, K).all
    recall = per_user_metrics(hit_matrix(top, held), held.getnnz(axis=1), (K,))[f"recall@{K}"]
    return Scored(recall, {f"recall@{K}": float(recall.mean())})


def next_item_pairs(
    fit_part: pd.DataFrame, val_part: pd.DataFrame, item_ids: np.ndarray, limit: int
) -> np.ndarray:
    """(P, 2) item rows: per validation user, their last item before the slice and their
    first item in it (other than that one), a seeded sample of at most ``limit``."""
    index = pd.Index(np.asarray(item_ids, dtype=str))
    last = fit_part.groupby("user_id", sort=True)["item_id"].last()
    first = val_part.groupby("user_id", sort=True)["item_id"].first()
    joined = pd.concat([last.rename("query"), first.rename("target")], axis=1, join="inner")
    pairs = np.stack(
        [
            index.get_indexer(joined["query"].astype(str)),
            index.get_indexer(joined["target"].astype(str)),
        ],
        axis=1,
    )
    pairs = pairs[(pairs >= 0).all(axis=1) & (pairs[:, 0] != pairs[:, 1])]
    if len(pairs) > limit:
        pairs = pairs[np.sort(np.random.default_rng(0).choice(len(pairs), limit, replace=False))]
    return pairs


def _surface_search(fused: FusedModel, pairs: np.ndarray, config: TrainConfig):
    """Per surface, block weights by coordinate ascent on next-item hit rate@K (the item a
    shopper went on to, among the K most similar to the one they were on: label-free).
    ``also`` starts from cf alone; ``similar`` stays content-led (cf 0) when the catalog has
    content, so "more like this" shows items that look and read alike."""
    grid = config.grid
    dims = fused.layout_.dims
    content = [b for b in CONTENT_BLOCKS if b in dims]
    options = {b: getattr(grid, b) for b in content}
    starts = {"also": {"cf": 1.0, **dict.fromkeys(content, 0.0)}}
    starts["similar"] = _content_led(dims) or dict(starts["also"])
    if not len(pairs) or "cf" not in dims:
        return {s: {b: w for b, w in start.items() if b in dims} for s, start in starts.items()}, {}
    candidates = Candidates.of_items(fused, pairs, config.validation_candidates)
    chosen, rates = {}, {}
    for surface, weights in starts.items():

        def evaluate(candidate):
            top = candidates.rank(candidate, fused.cold_scale_, K).all
            return Scored((top == pairs[:, 1:]).any(axis=1).astype(float), {})

        chosen[surface], found = _ascend(
            evaluate, weights, options, grid.significance, 1, lambda w: any(w.values())
        )
        rates[surface] = found.objective
    fused.set_weights(fused.weights_, fused.cold_scale_, chosen)
    return chosen, rates


@dataclass(frozen=True)
class Candidates:
    """Per query (a validation user, or an item for "items like this"), the items some block
    ranks high, with each block's score of them.

    A fused score is linear in the block weights and cold items' multipliers:
    ``sum_b weight_b * scale_b(item) * (query_b . item_b)``. So each query's candidates are
    the union, over blocks, of that block's top ``n`` items and top ``n`` cold items (seen
    ones excluded), and one weight candidate is ranked from those ``(Q, C, B)`` block
    scores: the weight search reads the catalog once instead of once per candidate, and its
    cost no longer grows with the catalog. An item outside every block's top ``n`` that a blend
    would still rank in its top ``K`` is missed (rare for n >> K). On catalogs of
    ``ranking.WIDE_ROW`` items or more, a token column's top items are found as a feed finds
    them (``_rarest_token_best``), so the weights are judged on the candidates a feed sees.
    """

    items: np.ndarray  # (U, C) item rows, -1 padding
    scores: np.ndarray  # (U, C, B) per-block scores; 0 at padding
    blocks: tuple[str, ...]
    cold: np.ndarray  # (I,) bool

    @classmethod
    def build(
        cls,
        fused: FusedModel,
        queries: dict[str, np.ndarray],
        exclude: sp.csr_matrix,
        cold: np.ndarray,
        n: int,
    ) -> Candidates:
        """Candidates of the queries' unweighted ``queries`` blocks ((Q, d) each) against the
        fused model's item blocks; ``exclude`` (Q, I) marks items never ranked (seen ones)."""
        blocks = tuple(b for b in (*fused.layout_.dims, *queries) if b in queries)
        blocks = tuple(dict.fromkeys(blocks))  # dense blocks first, then token columns
        n_queries, n_items = exclude.shape
        cold_cols = np.flatnonzero(cold)
        batch = max(1, MAX_BATCH_CELLS // max(n_items, 1))
        orders = _rank_one_orders(fused, queries, blocks, cold)
        # the token postings, built here once rather than by every batch's thread at once
        postings = fused.token_postings if any(_is_tokens(b) for b in blocks) else None

        def batch_best(start: int) -> tuple[np.ndarray, list[np.ndarray]]:
            """(the batch's query rows, per block (b, 2n) its best and best cold items)."""
            rows = np.arange(start, min(start + batch, n_queries))
            excluded = sp.csr_matrix(exclude[rows])
            excluded_cells = excluded.nonzero()
            per_block = []
            for block in blocks:
                if block in orders:
                    best = [_first_unseen(order, excluded, n) for order in orders[block]]
                elif _is_tokens(block) and n_items >= WIDE_ROW:
                    best = _rarest_token_best(postings, queries[block][rows], excluded, cold, n)
                else:
                    scores = _block_scores(fused, block, queries[block][rows])
                    scores[excluded_cells] = -np.inf
                    best = [top_k_finite(scores, n), top_k_finite(scores, n, cold_cols)]
                per_block.append(np.hstack(best))
            return rows, per_block

        found = [[] for _ in range(n_queries)]
        # batches side by side on the CPUs (``parallel``), gathered in their order
        for rows, per_block in parallel.map_in_order(batch_best, range(0, n_queries, batch)):
            for best in per_block:
                for q, picked in zip(rows, best, strict=True):
                    found[q].append(picked[picked >= 0])
        union = [np.unique(np.concatenate(parts)) if parts else np.zeros(0, int) for parts in found]
        width = max((len(u) for u in union), default=0)
        items = np.full((n_queries, width), -1, dtype=np.int64)
        for q, picked in enumerate(union):
            items[q, : len(picked)] = picked
        scores = np.zeros((n_queries, width, len(blocks)), dtype=np.float32)
        step = max(1, MAX_BATCH_CELLS // max(width * max(fused.layout_.dims.values()), 1))
        dense = [(j, b) for j, b in enumerate(blocks) if not _is_tokens(b)]
        for start in range(0, n_queries, step):
            rows = slice(start, start + step)
            picked = np.maximum(items[rows], 0)
            for j, block in dense:
                item_part = fused.item_blocks_[block][picked]  # (b, C, d)
                scores[rows, :, j] = np.einsum("qd,qcd->qc", queries[block][rows], item_part)
        for j in (j for j, b in enumerate(blocks) if _is_tokens(b)):
            scores[:, :, j] = _candidate_token_scores(fused, queries[blocks[j]], items, batch)
        scores[items < 0] = 0.0
        log.info("validation candidates: %d queries x at most %d items", n_queries, width)
        return cls(items, scores, blocks, cold)

    @classmethod
    def of_users(
        cls, fused: FusedModel, user_ids: np.ndarray, task, n: int, profiles: dict | None = None
    ) -> Candidates:
        """The task's users (their fitted user blocks; training items excluded). ``profiles``
        (form -> the task's users' token profiles in its order, ``_user_profiles``) gives
        one token column per form, candidates found by each (``with_profile`` picks one);
        else the fitted ones."""
        rows = pd.Index(user_ids).get_indexer(task.user_ids)
        queries = {b: v[rows] for b, v in fused.user_blocks_.items()}
        if profiles:
            queries.update({f"{TOKENS}:{form}": p for form, p in profiles.items()})
        elif fused.has_tokens:
            queries[TOKENS] = fused.user_tokens_[rows]
        return cls.build(fused, queries, task.seen, task.cold, n)

    def with_profile(self, form: str | None) -> Candidates:
        """The same candidates with one token profile form's column as the token block
        (the others dropped); ``None`` or a build without forms: as they are."""
        key = f"{TOKENS}:{form}"
        if form is None or key not in self.blocks:
            return self
        keep = [j for j, b in enumerate(self.blocks) if not _is_tokens(b) or b == key]
        blocks = tuple(TOKENS if self.blocks[j] == key else self.blocks[j] for j in keep)
        return replace(self, scores=self.scores[:, :, keep], blocks=blocks)

    @classmethod
    def of_items(cls, fused: FusedModel, pairs: np.ndarray, n: int) -> Candidates:
        """ "Items like this" for each pair's query item (itself excluded)."""
        n_items = len(fused.cold_)
        exclude = sp.csr_matrix(
            (np.ones(len(pairs), dtype=np.float32), (np.arange(len(pairs)), pairs[:, 0])),
            shape=(len(pairs), n_items),
        )
        queries = fused.item_query_blocks(pairs[:, 0])
        return cls.build(fused, queries, exclude, fused.cold_, n)

    def rank(self, weights: dict[str, float], cold_scale: dict[str, float], k: int) -> Rankings:
        """Top-k of all, warm and cold candidates under these weights (as ``protocol.rank``)."""
        cold, columns = self._cold_cells, self._block_columns
        total = np.zeros(self.items.shape, dtype=np.float32)
        for j, block in enumerate(self.blocks):
            weight = weights.get(block, 0.0)
            if not weight:
                continue
            multiplier = cold_scale.get(block, 1.0)
            if multiplier == 1.0:
                total += weight * columns[j]
            else:
                total += weight * np.where(cold, multiplier, 1.0).astype(np.float32) * columns[j]
        total[self._padding] = -np.inf
        warm_only, cold_only = np.where(cold, -np.inf, total), np.where(cold, total, -np.inf)
        return Rankings(*(self._top(scores, k) for scores in (total, warm_only, cold_only)))

    # The weight search ranks the same candidates hundreds of times: what does not depend on
    # the weights is worked out once (a block's scores as one contiguous (U, C) array: read
    # across the (U, C, B) array, a block's column is strided and 2x slower to add).
    @cached_property
    def _cold_cells(self) -> np.ndarray:
        return self.cold[np.maximum(self.items, 0)]  # (U, C)

    @cached_property
    def _padding(self) -> np.ndarray:
        return self.items < 0

    @cached_property
    def _block_columns(self) -> list[np.ndarray]:
        return [np.ascontiguousarray(self.scores[:, :, j]) for j in range(len(self.blocks))]

    def _top(self, scores: np.ndarray, k: int) -> np.ndarray:
        best = top_k_finite(scores, k)  # (U, k) candidate columns
        return np.where(best >= 0, np.take_along_axis(self.items, np.maximum(best, 0), 1), -1)


def _rank_one_orders(fused: FusedModel, queries: dict, blocks: tuple, cold: np.ndarray) -> dict:
    """Block -> (all items, cold items) in the order every query ranks them, for the dense
    one-number blocks (popularity) whose queries are all positive, on catalogs of
    ``ranking.WIDE_ROW`` items or more: each query's top items are then the first ones it
    has not seen, with no pass over the catalog per query. The order is ``top_k``'s on such
    rows: value, then column."""
    if len(cold) < WIDE_ROW:
        return {}
    orders = {}
    for block in blocks:
        if _is_tokens(block) or fused.layout_.dims.get(block) != 1:
            continue
        values = fused.item_blocks_[block][:, 0]
        if not (np.all(queries[block] > 0) and np.all(np.isfinite(values))):
            continue
        order = np.argsort(-values, kind="stable")
        orders[block] = (order, order[cold[order]])
    return orders


def _first_unseen(order: np.ndarray, seen: sp.csr_matrix, n: int) -> np.ndarray:
    """(Q, n) the first ``n`` items of ``order`` each query row of ``seen`` has not seen,
    -1 past the end."""
    out = np.full((seen.shape[0], n), -1, dtype=np.int64)
    for row in range(seen.shape[0]):  # Q <= cells / I: per batch, not per item
        skip = seen.indices[seen.indptr[row] : seen.indptr[row + 1]]
        head = order[: n + len(skip)]
        head = head[~np.isin(head, skip)][:n]
        out[row, : len(head)] = head
    return out


def _rarest_token_best(
    postings: sp.csr_matrix, profiles: sp.csr_matrix, seen: sp.csr_matrix, cold: np.ndarray, n: int
) -> list[np.ndarray]:
    """[(Q, n) all items, (Q, n) cold items]: each profile's best items of ``postings`` (the
    model's token postings) not ``seen``, found as a feed finds its token candidates
    (``sparse_rows.rarest_dots`` under ``TOKEN_BUDGET``), -1 past the end. On wide catalogs:
    a profile scored against every item costs a pass over the catalog's postings per batch
    and per form (72% of the weights stage's candidate search at 10^6 items), this at most
    the budget's entries per profile."""
    profiles = sp.csr_matrix(profiles, dtype=np.float32)
    best = [np.full((profiles.shape[0], n), -1, dtype=np.int64) for _ in range(2)]
    for q in range(profiles.shape[0]):  # Q <= cells / I: per batch, not per item
        profile = sparse_rows.row(profiles, q)
        rows, dots = sparse_rows.rarest_dots(postings, profile.indices, profile.data, TOKEN_BUDGET)
        skip = seen.indices[seen.indptr[q] : seen.indptr[q + 1]]
        keep = ~np.isin(rows, skip)
        for out, part in zip(best, (keep, keep & cold[rows]), strict=True):
            picked = rows[part][top_k(dots[part], n)[0]] if part.any() else rows[:0]
            out[q, : len(picked)] = picked
    return best


# Candidates' token scores are looked up one by one (``sparse_rows.pair_dots``) when the
# catalog has at least this many items per candidate; below, each profile is scored against
# the whole catalog and the candidates' scores gathered, which costs less per entry. Measured
# per 3,000 queries (benchmarks/RESULTS.md, session 13): 9k items / 1,500 candidates full
# 0.6 s, pair 9.2 s; 100k / 1,000: 8.1 s, 6.0 s; 10^6 / 1,100: 90 s, 4.8 s.
PAIR_MIN_ITEMS_PER_CANDIDATE = 256


def _candidate_token_scores(
    fused: FusedModel, profiles: sp.csr_matrix, items: np.ndarray, batch: int
) -> np.ndarray:
    """(Q, C) unweighted token scores of each query's candidates ``items`` (-1: padding)."""
    n_items = fused.item_tokens_.shape[0]
    if n_items >= PAIR_MIN_ITEMS_PER_CANDIDATE * max(items.shape[1], 1):
        return sparse_rows.pair_dots(fused.item_tokens_, items, profiles)
    out = np.zeros(items.shape, dtype=np.float32)
    for start in range(0, len(items), batch):
        rows = slice(start, start + batch)
        full = _block_scores(fused, TOKENS, profiles[rows])  # (b, I)
        out[rows] = np.take_along_axis(full, np.maximum(items[rows], 0), 1)
    return out


def _is_tokens(block: str) -> bool:
    """The token block, or one token profile form's column of it (``"tokens:binary"``)."""
    return block == TOKENS or block.startswith(f"{TOKENS}:")


def _block_scores(fused: FusedModel, block: str, queries) -> np.ndarray:
    """(Q, I) float32 unweighted similarities of ``queries`` to every item in one block."""
    if _is_tokens(block):
        return profile_dots(sp.csr_matrix(queries, dtype=np.float32), fused.token_postings)
    return np.asarray(queries @ fused.item_blocks_[block].T).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Scored:
    """One candidate on the validation users: per user, warm recall@K plus cold-item recall@K
    scaled so that the mean of ``per_user`` is the objective, and the reported means.
    ``warm`` is each user's all-items recall@K alone and ``cold`` the cold-item recall@K of
    the users holding cold items out (the cold search's two objectives)."""

    per_user: np.ndarray  # (U,)
    metrics: dict[str, float]
    warm: np.ndarray | None = None  # (U,)
    cold: np.ndarray | None = None  # (H,) users holding cold items out

    @property
    def objective(self) -> float:
        return float(self.per_user.mean())

    def on(self, part: str) -> Scored:
        """The same candidate judged on ``warm`` or ``cold`` alone."""
        return replace(self, per_user=getattr(self, part))


def _scored(rankings, task, k: int = K) -> Scored:
    warm, holding, cold = recall_per_user(rankings, task, k)
    per_user = warm.copy()
    metrics = {f"recall@{k}": float(warm.mean())}
    if len(cold):
        per_user[holding] += cold * len(per_user) / holding.sum()
        metrics[f"cold_recall@{k}"] = float(cold.mean())
        metrics["cold_users"] = int(holding.sum())
    return Scored(per_user, metrics, warm, cold)


def _ascend(evaluate, start: dict, options: dict, z: float, rounds: int, allowed=None, better=None):
    """Coordinate ascent: per name, the best of its candidates (those ``allowed``) replaces
    the current value when ``better`` (default ``_better``) says so; at most ``rounds``
    passes, stopping after one that changes nothing. -> (values, their Scored)."""
    better = better or _better
    values, current = dict(start), evaluate(start)
    for _ in range(rounds):
        before = dict(values)
        for name, candidates in options.items():
            tried = {
                v: evaluate({**values, name: v})
                for v in candidates
                if v != values[name] and (allowed is None or allowed({**values, name: v}))
            }
            if tried:
                value, found = max(tried.items(), key=lambda pair: pair[1].objective)
                if better(found, current, z):
                    values, current = {**values, name: value}, found
        if values == before:
            break
    return values, current


# The feed's terms that describe an item by its content: what a content contender ranks new
# items by, alone.
_CONTENT_TERMS = (TOKENS, "tabular", "image")


def _cold_only_floors(grid, weights: dict, cold_scale: dict) -> dict[str, float]:
    """Content blocks the feed gives no weight that the cold search may still give cold
    items (block -> the feed weight that then carries them): a cold item's score in a
    block is its feed weight times its cold multiplier, so a block the feed leaves out
    needs some feed weight. The token term is held at the grid's smallest non-zero token
    weight (as before); the tabular and image blocks at a hundredth of their grid's, which
    orders warm items as the weights chosen for them do, to float precision in practice.
    Without this, a block the feed does without for warm items (the collaborative block
    ranks them better) was never tried for new ones, however well it ranks them: on the
    demo shop the feed gives the tabular block 0, the block the content (tabular)
    contender ranks new items by."""
    floors = {}
    for b in _CONTENT_TERMS:
        smallest = _smallest(getattr(grid, b))
        if b in cold_scale and not weights.get(b) and smallest:
            floors[b] = smallest if b == TOKENS else smallest / 100
    return floors


def _smallest(values: tuple[float, ...]) -> float:
    """The smallest positive value of a grid's candidates (0.0 when none is)."""
    return min((v for v in values if v > 0), default=0.0)


def _pick_end(ends: list, at_headline, z: float) -> dict:
    """The cold search's end: of the ascents' ends ((cold weights, Scored at ``cold_k``), the
    blend's first), the one significantly better (``z`` standard errors) on the cold
    objective; when none is, the one whose cold items' order is better at the headline
    cut-off (``at_headline``: cold weights -> Scored at K), the first's on a tie there too.
    recall@``cold_k`` is deep enough to judge each step at two standard errors, but two ends
    it cannot tell apart can still differ at the top of the list, the part a feed shows: on
    the demo shop (seed 0) the blend and the token term alone are level at @50 (0.2206
    against 0.2178) and the blend is behind at @10 on validation (0.0553 against 0.0581) as
    on the test split (0.0543 against 0.0622; benchmarks/RESULTS.md, session 11), while the
    raw @50 mean kept the blend."""
    first = ends[0]
    for end in ends[1:]:
        tied = not _better(first[1], end[1], z) and end[0] != first[0]
        if _better(end[1], first[1], z) or (
            tied and at_headline(end[0]).objective > at_headline(first[0]).objective
        ):
            first = end
    return first[0]


def _better(found: Scored, current: Scored, z: float) -> bool:
    """Whether ``found`` beats ``current`` by more than ``z`` standard errors of the paired
    per-user difference: a block earns weight only when it measurably helps, so a block of
    noise stays at 0 however the validation users happen to fall."""
    diff = found.per_user - current.per_user
    margin = z * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return diff.mean() > margin


def _feed_better(found: Scored, current: Scored, z: float) -> bool:
    """The feed weights' rule: ``found`` is significantly better on the objective (all-items
    recall plus the cold items' recall of the users holding them out), or on the all-items
    recall alone and not significantly worse on the cold items. The cold part is a few
    users' recall counted users/holders times over: on a small shop (an electronics shop's
    743 validation users, 103 holding cold items) it made the objective's standard error
    three times the all-items recall's, so tokens at 3 (all-items recall 0.2355 -> 0.2738)
    fell short of 2 standard errors (1.96) and the feed kept cf alone, 0.032 below RP3beta on
    the test split (benchmarks/RESULTS.md, session 66)."""
    if _better(found, current, z):
        return True
    if (
        found.warm is None
        or current.warm is None
        or not _better(found.on("warm"), current.on("warm"), z)
    ):
        return False
    paired = found.cold is not None and current.cold is not None
    return not (paired and len(found.cold) > 1 and _better(current.on("cold"), found.on("cold"), z))


def _grid_search(evaluate, blocks: dict[str, int], config: TrainConfig):
    """Block weights by coordinate ascent from cf alone (cf 1, cold items at the config's
    scale): per block, cf last, the best candidate replaces the current weight when it is
    significantly better (``_feed_better``); then, with ``search_cold``, cold items' own
    weights. -> (the choice, its Scored)."""
    grid = config.grid
    options = {
        "tabular": grid.tabular,
        "image": grid.image,
        TOKENS: grid.tokens,
        "popularity": grid.popularity,
    }
    options = {name: values for name, values in options.items() if name in blocks}
    options["cf"] = grid.cf  # last: only once the other blocks hold what they can
    cold_scale = {b: config.fusion.cold_scale.get(b, 1.0) for b in blocks}
    start = {**dict.fromkeys(options, 0.0), "cf": 1.0}
    weights, current = _ascend(
        lambda w: evaluate(w, cold_scale),
        start,
        options,
        grid.significance,
        grid.rounds,
        better=_feed_better,
    )
    if grid.search_cold:
        weights, cold_scale, current = _cold_search(evaluate, weights, cold_scale, current, grid)
    report = {f"validation_{k}": v for k, v in current.metrics.items()}
    metrics = {**report, "weights": weights, "cold_scale": cold_scale}
    return WeightChoice(weights, cold_scale, metrics), current


def _cold_search(evaluate, weights: dict, cold_scale: dict, current: Scored, grid):
    """Cold items' own block weights (feed weight times cold multiplier) on the cold-only
    objective (cold-item recall@``grid.cold_k`` of the users holding cold items out, cold
    items ranked among themselves), one block at a time, cf last, from the feed's weights and
    (where it finds cold items) from each content block alone, as the content contenders
    rank them, keeping the best end (``_pick_end``: at recall@K when the cold objective
    cannot tell them apart); content blocks the feed leaves out are tried too
    (``_cold_only_floors``). Then one level for all of them on the users' all-items recall.
    The result stands only when the all-items recall is not significantly below
    ``current``'s; with fewer than ``grid.cold_min_users`` users holding cold items the
    defaults stay.
    -> (weights, cold_scale, Scored)."""
    if current.cold is None or len(current.cold) < max(grid.cold_min_users, 2):
        return weights, cold_scale, current
    floors = _cold_only_floors(grid, weights, cold_scale)

    def realize(cold_weights: dict) -> tuple[dict, dict]:
        feed = dict(weights)
        for b, floor in floors.items():
            if cold_weights.get(b):
                feed[b] = floor  # the block exists for cold items only through it
        scale = {
            b: round(cold_weights[b] / feed[b], 6) if feed.get(b) and b in cold_weights else s
            for b, s in cold_scale.items()
        }
        return feed, scale

    options = {
        b: (0.0, *(w for w in getattr(grid, b) if w > 0))
        if b in floors
        else tuple(sorted({weights[b] * m for m in grid.cold_multipliers}))
        for b in (TOKENS, "tabular", "image", "popularity", "cf")
        if b in floors or (b in cold_scale and weights.get(b, 0.0) > 0)
    }
    start = {b: weights.get(b, 0.0) * cold_scale[b] for b in options}

    scored: dict[tuple, Scored] = {}  # both ascents and the check meet the same weights

    def cold_objective(cold_weights: dict) -> Scored:
        key = tuple(sorted(cold_weights.items()))
        if key not in scored:
            scored[key] = evaluate(*realize(cold_weights), grid.cold_k).on("cold")
        return scored[key]

    # The content contenders rank new items by one content block alone (the TF-IDF profile
    # by the token term). The feed's blend adds each block's prediction for them, which can
    # drown that block (demo shop, benchmarks/RESULTS.md session 10), and one block at a
    # time at 2 standard errors cannot leave it. So where a content block alone finds the
    # validation's cold items (significantly better than no weights at all), the ascent
    # also starts from it, every block earning its cold weight as before, and the best of
    # the ascents' ends is kept.
    origins = [start]
    nothing = dict.fromkeys(options, 0.0)
    for b in (b for b in _CONTENT_TERMS if b in options):
        alone = {**nothing, b: start[b] or _smallest(getattr(grid, b))}
        if (
            alone[b] > 0
            and alone != start
            and _better(cold_objective(alone), cold_objective(nothing), grid.significance)
        ):
            origins.append(alone)
    ends = [_ascend(cold_objective, o, options, grid.significance, grid.rounds) for o in origins]
    chosen = _pick_end(
        ends, lambda cold_weights: evaluate(*realize(cold_weights), K).on("cold"), grid.significance
    )
    if chosen == start:
        return weights, cold_scale, current

    def leveled(level: float) -> dict:
        return {b: level * c for b, c in chosen.items()}

    level, _ = _ascend(
        lambda v: evaluate(*realize(leveled(v["level"]))).on("warm"),
        {"level": 1.0},
        {"level": grid.cold_levels},
        grid.significance,
        1,
    )
    feed, scale = realize(leveled(level["level"]))
    found = evaluate(feed, scale)
    if _better(current.on("warm"), found.on("warm"), grid.significance):
        log.info("cold weights %s cost all-items recall: defaults kept", chosen)
        return weights, cold_scale, current
    return feed, scale, found
