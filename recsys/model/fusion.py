"""One vector per item (and per user) fusing collaborative, tabular and image blocks.

Layout of every fused vector: ``[cf | tabular | image | popularity]``. Item vectors hold the
blocks as they are (times ``cold_scale`` for cold items); the query side carries the block
weights, so a query's inner product with an item is ``sum_b weight_b * <q_b, i_b>``, the
weighted sum of per-block similarities. One index thus serves every weighting: the home feed
(``weights_``, on user vectors) and each item-to-item surface (``surface_weights_``):
``similar`` ("more like this", content-led) and ``also`` ("viewed this, also viewed").

- ``tabular`` and ``image`` are L2-normalised per row: their block similarity is a cosine.
- ``cf`` holds implicit's factors divided by one global scale (the RMS norm over warm items),
  not per-row normalised: the factor norm carries how much users engage with an item, and
  dropping it cost a third of ALS's recall on MovieLens. Item *queries* (similar items) use the
  row-normalised factors.
- ``popularity`` is one number in [0, 1] on the item side (log interaction count) and 1 on the
  user side: a learned bias.

Items without interactions get ``cf`` and ``popularity`` predicted from their content by a
ridge regression fitted on warm items, scaled by ``cold_scale`` (the confidence in a
prediction), so they can be recommended and found as similar items.

Feeds add one term the index cannot hold: ``weight_tokens * cold_scale * cosine(user token
profile, item tokens)`` over the sparse attribute and title tokens (``token_scores``); the
service takes its candidates from the index and from the tokens, and ranks their union by the
whole score (``recsys.model.recommender``).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.linear_model import Ridge
from sklearn.utils.validation import check_is_fitted

from recsys.errors import InvalidInput
from recsys.model import parallel, sparse_rows
from recsys.model.data import mapped
from recsys.model.frozen import FrozenDict
from recsys.model.index import Projection

log = logging.getLogger(__name__)

BLOCKS = ("cf", "tabular", "image", "popularity")
CONTENT_BLOCKS = ("tabular", "image")
# The items' sparse attribute and title tokens, scored exactly beside the index (feeds only):
# a user's token profile against each item's tokens, a cosine that keeps every seller, brand
# and word (any dense projection of them loses most of that identity).
TOKENS = "tokens"
# Item-to-item surfaces, each with its own block weights: the product page's "more like
# this" (the default) and "shoppers who viewed this also viewed".
SURFACES = ("similar", "also")
# How history items count in a user's token profile (``FusionConfig.token_profile``); the
# first is the default the weights stage starts from (``validation._choose_form``).
TOKEN_PROFILES = ("confidence", "binary", "capped")
AUTO = "auto"
# How history items count in a user's content (tabular, image) profile: once each, as the
# content contenders and every fold-in count them. Weighed by their confidence (3 purchases
# of one shirt, 27 views of one item), the profiles ranked new items far below the content
# contenders on the same blocks: cold-item recall@10 of the tabular block alone 0.0493
# against 0.0656 on the demo shop, 0.0039 against 0.0104 on the synthetic shop, level on
# MovieLens, whose weights are a time decay (benchmarks/RESULTS.md, session 61). Bundles
# from before say "confidence" (``FusedModel.content_profile_``).
ONCE = "once"


@dataclass(frozen=True)
class FusionConfig:
    # Block weights: the inner product is sum_b weight_b * block similarity_b (the weights
    # stage of `recsys train` chooses the ones a bundle uses; these are its fallback).
    weights: dict[str, float] = field(
        default_factory=lambda: {"cf": 1.0, "tabular": 0.3, "image": 0.3, "popularity": 0.1}
    )
    # Per-block multiplier applied to cold items (no interactions) on top of weights. A cold
    # item's popularity is only a guess from its content: times the large popularity weights
    # of long-tail shops it swamped what the item's tokens say (synthetic shop: cold-item
    # recall@10 0.0037 with it, benchmarks/RESULTS.md), so it counts 0; where popularity has
    # no weight (MovieLens, the demo shop) this changes nothing.
    cold_scale: dict[str, float] = field(
        default_factory=lambda: {"cf": 1.0, "tabular": 1.0, "image": 1.0, "popularity": 0.0}
    )
    # Ridge penalty of the content -> (cf factors, popularity) model (on unit-norm attribute
    # and title tokens: 10 suits MovieLens and the synthetic long-tail shop alike).
    content_alpha: float = 10.0
    # How a user's items count in their token profile (``TOKEN_PROFILES``): "confidence",
    # times its ALS confidence weight (summed events times the time decay), so a purchase
    # counts as several views and a fresh event as several old ones; "binary", each item once
    # (the sign of its weight), as the TF-IDF profile contender counts them; "capped", at most
    # once (min(w, 1): repeats add nothing, the decay stays). Which ranks new items better
    # depends on the catalog (benchmarks/RESULTS.md, session 8: binary gains 0.011 cold
    # recall@10 on the synthetic shop and loses 0.005 on MovieLens, whose weights are the
    # time decay alone), so "auto" lets the weights stage of `recsys train` choose per
    # catalog on its validation slice (``FusedModel.token_profile_`` holds the choice;
    # ``validation._choose_form`` says how); any other value is used as given.
    token_profile: str = AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", FrozenDict(self.weights))
        object.__setattr__(self, "cold_scale", FrozenDict(self.cold_scale))
        if self.token_profile not in (AUTO, *TOKEN_PROFILES):
            raise ValueError(
                f"FusionConfig.token_profile {self.token_profile!r} must be one of "
                f"{', '.join((AUTO, *TOKEN_PROFILES))}"
            )

    @property
    def token_profiles(self) -> tuple[str, ...]:
        """The token profiles a fit may use: all of ``TOKEN_PROFILES`` under "auto" (the
        first is the default), else the one given."""
        return TOKEN_PROFILES if self.token_profile == AUTO else (self.token_profile,)


def normalize_rows(matrix):
    """Rows scaled to unit L2 norm, float32, dense or sparse CSR; all-zero rows stay zero."""
    if sp.issparse(matrix):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        if not matrix.has_canonical_format:  # duplicates summed, in a copy: not the caller's
            matrix = matrix.copy()
            matrix.sum_duplicates()
        # on the CSR arrays, where sparse products build whole matrices (slow for a few rows)
        lengths = np.diff(matrix.indptr)
        sums = np.zeros(matrix.shape[0], dtype=np.float32)
        held = lengths > 0  # each row's entries run from its start to the next held row's
        if held.any():
            sums[held] = np.add.reduceat(matrix.data * matrix.data, matrix.indptr[:-1][held])
        scale = (1.0 / np.maximum(np.sqrt(sums), 1e-12)).astype(np.float32)
        data = matrix.data * np.repeat(scale, lengths)
        return sp.csr_matrix(
            (data, matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Layout:
    """Ordered block name -> width of a fused vector."""

    dims: dict[str, int]

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, width in self.dims.items():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def dim(self) -> int:
        return sum(self.dims.values())


def fuse(blocks: dict[str, np.ndarray], scale: dict[str, float], layout: Layout) -> np.ndarray:
    """(n, layout.dim) float32: each present block times its scale; absent blocks 0."""
    n = len(next(iter(blocks.values())))
    out = np.zeros((n, layout.dim), dtype=np.float32)
    for name, part in layout.slices().items():
        if name in blocks:
            out[:, part] = scale.get(name, 0.0) * blocks[name]
    return out


# Item tokens one profile reads, at most, to find its token candidates (the feed's,
# recsys.model.recommender.token_candidates, and the weights stage's on wide catalogs); a
# profile whose tokens' postings hold more reads its rarest tokens' up to this
# (scripts/bench_token_candidates.py, session 9: 0.870 of the exact top 20 on the 100k bench
# catalog against 0.874 at 20,000, all of it on the synthetic shop at either, for 1.1 ms and
# 4.4 ms less per feed).
TOKEN_BUDGET = 5_000

# Profiles x tokens cells densified at once by ``profile_dots`` (64 MiB of float32).
PROFILE_CELLS = 1 << 24


def profile_dots(profiles: sp.csr_matrix, postings: sp.csr_matrix) -> np.ndarray:
    """(U, I) float32: each of ``profiles`` (U, F) dotted with every item of ``postings``
    (F, I), the items holding each token.

    Only the postings of tokens some profile holds are read, and they are accumulated into a
    dense result (sparse (I, T) times dense (T, U)): a profile reaches most of a catalog, so
    a sparse-by-sparse product spends its time building a sparse result that is dense anyway
    (6.8x slower for 33 profiles at 10^6 items, benchmarks/RESULTS.md).
    """
    n_users, n_items = profiles.shape[0], postings.shape[1]
    out = np.empty((n_users, n_items), dtype=np.float32)
    if n_users == 0:
        return out
    width = max(1, len(np.unique(profiles.indices)))
    step = max(1, PROFILE_CELLS // width)
    for start in range(0, n_users, step):
        part = profiles[start : start + step]
        tokens = np.unique(part.indices)  # (T,)
        dense = part[:, tokens].toarray().astype(np.float32, copy=False)  # (u, T)
        product = postings[tokens].T @ dense.T  # (I, T) @ (T, u) -> (I, u)
        out[start : start + step] = np.asarray(product, dtype=np.float32).T
    return out


def popularity_scores(user_items: sp.csr_matrix) -> np.ndarray:
    """log(1 + users per item), scaled to [0, 1]."""
    counts = np.log1p(user_items.getnnz(axis=0).astype(np.float64))
    return (counts / max(counts.max(), 1e-12)).astype(np.float32)


# Warm items per part of X'X W in ``sparse_ridge``. The parts are summed in one fixed order
# whatever the number of threads, so a fit is the same on any machine; a catalog of at most
# this many warm items is one part, computed as one product.
RIDGE_PART_ROWS = 1 << 16


def sparse_ridge(
    features: sp.csr_matrix, targets: np.ndarray, alpha: float, iterations: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(coef (F, T), intercept (T,)) of ridge regression on sparse features, every target at
    once by conjugate gradients on (X'X + alpha I) W = X'(Y - mean Y) [Hestenes & Stiefel
    1952]: costs grow with the non-zeros, never with F x F. X'X W is summed over parts of
    ``RIDGE_PART_ROWS`` rows on the process's CPUs (``parallel.cpus``; scipy's sparse
    products release the GIL; 1.8x on two cores at 10^6 items,
    scripts/bench_sparse_ridge.py)."""
    intercept = targets.mean(axis=0)  # (T,)
    rhs = np.asarray(features.T @ (targets - intercept), dtype=np.float64)  # (F, T)
    coef = np.zeros_like(rhs)
    residual = rhs.copy()
    direction = residual.copy()
    norms = np.sum(residual**2, axis=0)  # (T,)
    tolerance = 1e-10 * np.maximum(np.sum(rhs**2, axis=0), 1e-30)
    rows = features.shape[0]
    parts = [features[a : a + RIDGE_PART_ROWS] for a in range(0, rows, RIDGE_PART_ROWS)]
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), parallel.cpus()))) as pool:

        def apply(p: np.ndarray) -> np.ndarray:
            grams = pool.map(lambda part: np.asarray(part.T @ (part @ p)), parts)
            return sum(grams, alpha * p)  # (F, T), the parts added in order

        for _ in range(iterations):
            if np.all(norms <= tolerance):
                break
            product = apply(direction)
            step = norms / np.maximum(np.sum(direction * product, axis=0), 1e-30)
            coef += step * direction
            residual -= step * product
            new_norms = np.sum(residual**2, axis=0)
            direction = residual + (new_norms / np.maximum(norms, 1e-30)) * direction
            norms = new_norms
    return coef.astype(np.float32), intercept.astype(np.float32)


class FusedModel(BaseEstimator):
    """Fused item and user vectors from a fitted CF model and item content matrices."""

    def __init__(self, config: FusionConfig | None = None):
        self.config = config

    def fit(
        self,
        cf=None,
        content: dict[str, np.ndarray] | None = None,
        n_items: int = 0,
        weights: dict[str, float] | None = None,
        cold_scale: dict[str, float] | None = None,
        tokens: sp.spmatrix | None = None,
        surfaces: dict[str, dict[str, float]] | None = None,
        token_profile: str | None = None,
        blocks_only: bool = False,
    ):
        """``cf``: a fitted CollaborativeModel or None; ``content``: block -> (n_items, d);
        ``weights``, ``cold_scale`` and ``token_profile`` (e.g. chosen on a validation slice)
        override the config's (under "auto", "confidence" unless one is given); ``tokens``:
        the items' sparse attribute and title tokens (n_items, F), which predict cold items'
        collaborative blocks with every seller, brand and word kept. ``blocks_only``: the
        blocks, weights and cold predictions alone, as the weights stage's search reads them:
        no fused item or user vectors and no token profile of every user (at 10^6 items, about
        0.9 GB of peak memory it never reads), so it cannot be saved."""
        config = self.config or FusionConfig()
        self.blocks_only_ = blocks_only
        content = {k: normalize_rows(v) for k, v in (content or {}).items() if v.shape[1]}
        n_items = len(cf.item_ids_) if cf is not None else n_items
        self.cold_ = np.ones(n_items, dtype=bool)
        self.cf_scales_ = (1.0, 1.0)
        self.cold_predictor_ = None  # (coef, intercept) of content -> [cf | popularity]
        item_blocks: dict[str, np.ndarray] = dict(content)
        user_blocks: dict[str, np.ndarray] = {}
        self.item_tokens_ = self.user_tokens_ = self.token_postings_ = None
        self.content_profile_ = ONCE
        self.token_profile_ = token_profile or config.token_profiles[0]
        if self.token_profile_ not in config.token_profiles:
            raise ValueError(
                f"token_profile {self.token_profile_!r} must be one of "
                f"{', '.join(config.token_profiles)} (FusionConfig.token_profile)"
            )
        if tokens is not None and tokens.shape[1] and cf is not None:
            self.item_tokens_ = normalize_rows(tokens)  # (I, F) CSR, unit rows
            if not blocks_only:
                self.user_tokens_ = self.history_token_profiles(cf.user_items_)  # (U, F)
        if cf is not None:
            self.cold_ = ~cf.warm_items_
            item_blocks["cf"], user_blocks["cf"] = self._cf_blocks(cf)
            item_blocks["popularity"] = popularity_scores(cf.user_items_)[:, None]
            self._predict_cold(item_blocks, content, tokens, config)
            user_blocks.update(_profiles(cf.user_items_, content))
            user_blocks["popularity"] = np.ones((len(cf.user_ids_), 1), dtype=np.float32)
        if not item_blocks:
            raise InvalidInput(
                "nothing to learn from: the catalog has no interactions, attributes, titles or "
                "images; ingest interactions or item attributes first"
            )
        self.layout_ = Layout({b: item_blocks[b].shape[1] for b in BLOCKS if b in item_blocks})
        self.item_blocks_, self.user_blocks_ = item_blocks, user_blocks
        self.item_vectors_ = None  # fused by set_weights
        weights, cold_scale = weights or config.weights, cold_scale or config.cold_scale
        return self.set_weights(weights, cold_scale, surfaces)

    def _cf_blocks(self, cf) -> tuple[np.ndarray, np.ndarray]:
        items, users = cf.item_factors_, cf.user_factors_
        item_scale = np.sqrt(np.mean(np.sum(items[cf.warm_items_] ** 2, axis=1))) or 1.0
        user_scale = np.sqrt(np.mean(np.sum(users**2, axis=1))) or 1.0
        self.cf_scales_ = (float(item_scale), float(user_scale))
        return (items / item_scale).astype(np.float32), (users / user_scale).astype(np.float32)

    def _predict_cold(self, item_blocks, content, tokens, config: FusionConfig) -> None:
        """Fit content -> [cf | popularity] on warm items; fill in cold items' blocks. The
        fitted map is kept (``cold_predictor_``): items added later get their blocks from it
        exactly as these cold items did (``cold_item_blocks``)."""
        self.cold_predictor_ = None
        warm = ~self.cold_
        if not content or warm.sum() < 2:
            return
        targets = np.hstack([item_blocks["cf"], item_blocks["popularity"]])
        features = cold_features(content, tokens)
        coef, intercept = fit_cold_predictor(features[warm], targets[warm], config.content_alpha)
        self.cold_predictor_ = (coef.astype(np.float32), intercept.astype(np.float32))
        if self.cold_.any():
            predicted = self._predict(features[self.cold_])
            item_blocks["cf"][self.cold_] = predicted[:, :-1]
            item_blocks["popularity"][self.cold_, 0] = np.clip(predicted[:, -1], 0.0, 1.0)
            log.info("predicted collaborative blocks of %d cold items", int(self.cold_.sum()))

    def _predict(self, features) -> np.ndarray:
        """(n, cf dims + 1) predicted [cf | popularity] of content ``features``."""
        coef, intercept = self.cold_predictor_
        return (np.asarray(features @ coef, dtype=np.float32) + intercept).astype(np.float32)

    def cold_item_blocks(
        self, content: dict[str, np.ndarray], tokens: sp.spmatrix | None = None
    ) -> dict[str, np.ndarray]:
        """The unweighted item blocks of items this model was not fitted on (new or changed
        listings), made exactly as fitting made those of items without interactions: content
        blocks L2-normalised, cf and popularity predicted from the content (0 when the model
        has no predictor). ``content``: block -> (n, d) as ``fit`` took it; ``tokens``: their
        sparse tokens (n, F) when ``fit`` had tokens."""
        check_is_fitted(self, "layout_")
        dims = self.layout_.dims
        content = {k: normalize_rows(v) for k, v in content.items() if k in dims}
        n = len(next(iter(content.values()))) if content else tokens.shape[0]
        blocks = dict(content)
        if "cf" in dims:
            predictor = getattr(self, "cold_predictor_", None)
            predicted = np.zeros((n, dims["cf"] + 1), dtype=np.float32)
            if predictor is not None and content:
                predicted = self._predict(cold_features(content, tokens))
            blocks["cf"] = predicted[:, :-1]
            blocks["popularity"] = np.clip(predicted[:, -1:], 0.0, 1.0)
        return blocks

    def cold_item_vectors(self, content: dict[str, np.ndarray], tokens=None) -> np.ndarray:
        """(n, dim) fused vectors of items this model was not fitted on, as ``item_vectors_``
        holds those of its cold items (``cold_scale_`` applied)."""
        return fuse(self.cold_item_blocks(content, tokens), self.cold_scale_, self.layout_)

    def set_weights(
        self,
        weights: dict[str, float],
        cold_scale: dict[str, float] | None = None,
        surfaces: dict[str, dict[str, float]] | None = None,
    ):
        """Re-fuse with new feed weights, cold-item multipliers and item-to-item surface
        weights (a surface not given starts where the weights stage's search starts:
        ``similar`` the content blocks at 1, ``also`` cf alone; without those blocks, the
        feed's weights, popularity left out). The feed's weights served both when no slice
        could be held out (a shop of a few shoppers), so "more like this" listed what one
        shopper happened to view together."""
        check_is_fitted(self, "layout_")
        dims = self.layout_.dims
        names = [*dims, TOKENS] if self.has_tokens else list(dims)
        self.weights_ = {b: float(weights.get(b, 0.0)) for b in names}
        cold_scale = {b: float((cold_scale or {}).get(b, 1.0)) for b in names}
        if self.blocks_only_:
            self.cold_scale_ = cold_scale
        elif self.item_vectors_ is None or cold_scale != self.cold_scale_:
            # Items hold unweighted blocks: only a new cold scale changes them (the weights
            # stage re-weights dozens of times; each item re-fuse costs items x dims).
            self._fuse_items(cold_scale)
        default = {b: w for b, w in self.weights_.items() if b in dims and b != "popularity"}
        starts = {
            "similar": {b: 1.0 for b in CONTENT_BLOCKS if b in dims} or default,
            "also": {"cf": 1.0} if "cf" in dims else default,
        }
        surfaces = surfaces or {}
        self.surface_weights_ = {
            name: {b: float(surfaces.get(name, starts[name]).get(b, 0.0)) for b in dims}
            for name in SURFACES
        }
        # (I,) the feed token term's weight times each item's cold multiplier
        token_scale = np.where(self.cold_, cold_scale.get(TOKENS, 1.0), 1.0) * self.token_weight
        self.token_scale_ = token_scale.astype(np.float32)
        return self

    def _fuse_items(self, cold_scale: dict[str, float]) -> None:
        self.cold_scale_ = cold_scale
        dims = self.layout_.dims
        self.item_vectors_ = fuse(self.item_blocks_, dict.fromkeys(dims, 1.0), self.layout_)
        for name, part in self.layout_.slices().items():
            self.item_vectors_[self.cold_, part] *= cold_scale[name]

    @property
    def content_cold_scaled(self) -> bool:
        """Whether some cold item's content blocks are scaled in ``item_vectors_`` (then the
        item-to-item surfaces meet items in ``surface_item_vectors``, not those)."""
        dims = self.layout_.dims
        scaled = any(self.cold_scale_.get(b, 1.0) != 1.0 for b in CONTENT_BLOCKS if b in dims)
        return scaled and bool(np.any(self.cold_))

    def surface_rows(self, rows: np.ndarray) -> np.ndarray:
        """(n, dim) ``surface_item_vectors`` of the bundle's item ``rows``."""
        blocks = {b: np.asarray(v[rows]) for b, v in self.item_blocks_.items()}
        return self.surface_item_vectors(blocks, self.cold_[rows])

    def surface_item_vectors(self, blocks: dict[str, np.ndarray], cold: np.ndarray) -> np.ndarray:
        """(n, dim) items as the item-to-item surfaces' queries meet them: unweighted
        ``blocks`` (block -> (n, d), as ``item_blocks_``), where the ``cold`` (n,) items'
        cf and popularity take ``cold_scale_`` as in ``item_vectors_`` but their content
        blocks do not. The cold scale is how far a feed trusts a new item's blocks for a
        user's taste; on a "more like this" row an item's photo and attributes describe it
        whether or not anyone has interacted with it (a content scale of 0, which the
        weights stage picks where new items rank best by their tokens alone, left every
        new item out of every similar-items row)."""
        out = fuse(blocks, dict.fromkeys(self.layout_.dims, 1.0), self.layout_)
        cold = np.asarray(cold, dtype=bool)
        if cold.any():
            for name, part in self.layout_.slices().items():
                if name not in CONTENT_BLOCKS:
                    out[cold, part] *= self.cold_scale_.get(name, 1.0)
        return out

    @staticmethod
    def check_surface(surface: str) -> None:
        """``ValueError`` naming the surfaces when ``surface`` is not one of ``SURFACES``."""
        if surface not in SURFACES:
            raise ValueError(f"unknown surface {surface!r}; use one of {', '.join(SURFACES)}")

    def item_queries(self, rows: np.ndarray, surface: str = "similar") -> np.ndarray:
        """Query vectors for "items like these" on a surface (``SURFACES``): cf
        row-normalised, no popularity term, the surface's block weights."""
        self.check_surface(surface)
        return fuse(self.item_query_blocks(rows), self.surface_weights_[surface], self.layout_)

    def listing_vectors(self, batch: int = 65_536) -> np.ndarray:
        """(items, d) float32: every item as the "similar" surface compares listings, the
        space near-duplicate and outlier search read (``recsys catalog duplicates|outliers``,
        the admin endpoints). Each block the surface weighs (cf row-normalised, never
        popularity) times the root of its weight, content blocks as the item has them
        whether or not it has events: a cosine of two rows compares the listings themselves,
        so a re-listed item meets its source although only the source has shoppers' events
        (in the fused item vectors the cf block's norm, or a new item's cold scale, kept them
        apart), and the most viewed items are not outliers for it. The fused item vectors
        where the surface weighs no block, or one negatively."""
        check_is_fitted(self, "item_vectors_")
        projection = self.surface_projection("similar")
        if projection is None:
            return self.item_vectors_
        n = len(self.item_vectors_)
        out = np.empty((n, len(projection.columns)), dtype=np.float32)
        for start in range(0, n, batch):
            rows = np.arange(start, min(start + batch, n))
            out[rows] = projection.queries(self.item_queries(rows))
        return out

    def content_vectors(self) -> np.ndarray:
        """(items, d) float32: each content block the items have (attributes, photo), unit
        rows, side by side at one weight: the listings as they are, whatever weight a surface
        learned for them, the space outlier search reads. The "similar" surface's weights are
        chosen for what shoppers view next; where they dropped the photo (2 of 4 seeds of a
        2,000-item demo shop), a listing with another department's photo was no outlier any
        more (ROC AUC 0.95 -> 0.55-0.61; scripts/planted_outliers.py). The listing vectors
        where the model has no content block."""
        check_is_fitted(self, "item_vectors_")
        blocks = [b for b in CONTENT_BLOCKS if b in self.item_blocks_]
        if not blocks:
            return self.listing_vectors()
        width = sum(self.item_blocks_[b].shape[1] for b in blocks)
        out = np.empty((len(self.item_vectors_), width), dtype=np.float32)
        start = 0
        for block in blocks:
            rows = normalize_rows(np.asarray(self.item_blocks_[block]))
            out[:, start : start + rows.shape[1]] = rows / np.sqrt(len(blocks))
            start += rows.shape[1]
        return out

    def surface_projection(self, surface: str = "similar") -> Projection | None:
        """The columns ``surface``'s item queries read: its blocks of positive weight, but
        popularity, which item queries never hold. Each is scaled by the root of its block's
        weight, so items and queries share one geometry. None when a weight is negative or
        none is positive."""
        self.check_surface(surface)
        weights = self.surface_weights_[surface]
        if any(w < 0 for w in weights.values()):
            return None
        slices = self.layout_.slices()
        read = [b for b, w in weights.items() if w > 0 and b != "popularity"]
        if not read:
            return None
        every = np.arange(self.layout_.dim)
        columns = np.concatenate([every[slices[b]] for b in read])
        scale = np.concatenate([np.full(self.layout_.dims[b], weights[b] ** 0.5) for b in read])
        return Projection(columns, scale.astype(np.float32))

    def item_query_blocks(self, rows: np.ndarray, only=None) -> dict[str, np.ndarray]:
        """The unweighted blocks of ``item_queries``: cf row-normalised, no popularity;
        ``only``: those of these names."""
        blocks = {
            b: v[rows]
            for b, v in self.item_blocks_.items()
            if b != "popularity" and (only is None or b in only)
        }
        if "cf" in blocks:
            blocks["cf"] = normalize_rows(blocks["cf"])
        return blocks

    def history_queries(
        self, cf_vectors: np.ndarray | None, histories: sp.csr_matrix, extra: dict | None = None
    ):
        """User query vectors from folded-in cf factors and weighted item histories (U, I);
        ``extra``: block -> (U, d) sums of the content blocks of history items the bundle does
        not hold (the live catalog's), added to each profile before it is normalised."""
        content = {b: self.item_blocks_[b] for b in CONTENT_BLOCKS if b in self.item_blocks_}
        blocks = _profiles(histories, content, extra)
        if cf_vectors is not None and "cf" in self.layout_.dims:
            blocks["cf"] = cf_vectors / self.cf_scales_[1]
            blocks["popularity"] = np.ones((histories.shape[0], 1), dtype=np.float32)
        return fuse(blocks, self.weights_, self.layout_)

    def cf_stand_ins(self, rows: np.ndarray) -> np.ndarray:
        """(n, F) collaborative factors for item ``rows`` the fit saw no interaction of, in the
        cf model's units: those predicted from their content (``_predict_cold``; 0 without a
        predictor). A shopper's history of new items is folded in from them
        (``CollaborativeModel.fold_in``), as the product page pairs a new item by them."""
        block = self.item_blocks_.get("cf")
        if block is None:
            return np.zeros((len(rows), 0))
        return np.asarray(block[rows], dtype=np.float64) * self.cf_scales_[0]

    def without_interactions(self, rows: np.ndarray) -> np.ndarray:
        """(n,) bool: item ``rows`` (-1: not in the bundle) the bundle saw no interaction of,
        whose collaborative part is predicted from content: new items and cold ones."""
        rows = np.asarray(rows)
        return (rows < 0) | self.cold_[np.maximum(rows, 0)]

    @property
    def has_tokens(self) -> bool:
        return getattr(self, "item_tokens_", None) is not None

    @property
    def has_user_vectors(self) -> bool:
        return bool(self.user_blocks_) and not self.blocks_only_

    def user_vectors(self, rows=None) -> np.ndarray:
        """The fused vectors of users ``rows`` (an int: (D,); int array: (n, D); None: every
        user's), fused from their blocks at the feed's weights when asked: a serving process
        holds no users x dims array of its own (10^6 users of 161 dims would cost every worker
        644 MB), and fusing one user's rows costs a few microseconds."""
        if not self.has_user_vectors:
            raise ValueError("no user vectors: a fit without interactions or a blocks-only fit")
        if rows is None:
            return fuse(self.user_blocks_, self.weights_, self.layout_)
        picked = np.atleast_1d(rows)
        vectors = fuse(
            {b: v[picked] for b, v in self.user_blocks_.items()}, self.weights_, self.layout_
        )
        return vectors[0] if np.ndim(rows) == 0 else vectors

    @property
    def token_weight(self) -> float:
        """The feed's weight of the token term (0 without tokens)."""
        return self.weights_.get(TOKENS, 0.0) if self.has_tokens else 0.0

    def history_token_profiles(
        self, histories: sp.csr_matrix, extra: sp.csr_matrix | None = None
    ) -> sp.csr_matrix | None:
        """(U, F) token profiles of confidence-weighted item histories (U, I), as users' are
        made: normalize(sum_j c'_j t_j), c'_j from ``token_profile_weights``; ``extra``: (U, F)
        the summed tokens of history items the bundle does not hold, each counted once."""
        if not self.has_tokens:
            return None
        histories = sp.csr_matrix(histories, dtype=np.float32, copy=True)
        histories.data = self.token_profile_weights(histories.data)
        summed = histories @ self.item_tokens_
        return normalize_rows(summed if extra is None else summed + extra)

    def token_profile_weights(self, confidences: np.ndarray) -> np.ndarray:
        """What each history item's confidence weight counts for in a token profile: its sign
        ("binary", each item once), at most 1 ("capped") or itself ("confidence");
        ``FusionConfig.token_profile``."""
        if self.token_profile_ == "binary":
            return np.sign(confidences)
        if self.token_profile_ == "capped":
            return np.minimum(confidences, 1.0)
        return confidences

    def content_profile_weights(self, confidences: np.ndarray) -> np.ndarray:
        """What each history item's confidence weight counts for in a user's content
        profile: 1 (``ONCE``), or itself in bundles from before (``content_profile_``)."""
        return np.sign(confidences) if self.content_profile_ == ONCE else confidences

    @property
    def token_postings(self) -> sp.csr_matrix:
        """(F, I) CSR: the items holding each token (the item tokens transposed, kept once;
        a bundle stores them). A profile times it touches only its own tokens' postings."""
        postings = getattr(self, "token_postings_", None)
        if postings is None:
            postings = self.token_postings_ = sp.csr_matrix(self.item_tokens_.T)
        return postings

    def token_scores(self, profiles: sp.csr_matrix | None, rows=None) -> np.ndarray | None:
        """(U, I) or (U, len(rows)) feed token terms of ``profiles`` (U, F): weight times
        cold multiplier times cosine; None when the feed gives tokens no weight. Over all
        items the cosines cost the postings of the profiles' tokens."""
        if profiles is None or not self.token_weight:
            return None
        if not (sp.isspmatrix_csr(profiles) and profiles.dtype == np.float32):
            profiles = sp.csr_matrix(profiles, dtype=np.float32)
        if rows is None:
            cosine = profile_dots(profiles, self.token_postings)
        elif profiles.shape[0] == 1:  # one feed's few hundred rows: no sparse matrix built
            return self.row_token_scores(sparse_rows.row(profiles, 0), rows)[None, :]
        else:
            cosine = (profiles @ self.item_tokens_[rows].T).toarray()
        scale = self.token_scale_ if rows is None else self.token_scale_[rows]
        return scale * np.asarray(cosine, dtype=np.float32)

    def row_token_scores(self, profile: sparse_rows.Row, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) ``token_scores`` of one profile given as a ``sparse_rows.Row`` (a
        request's: read from the CSR arrays, no sparse matrix built)."""
        cosine = sparse_rows.row_dots(self.item_tokens_, rows, profile.indices, profile.data)
        return self.token_scale_[rows] * np.asarray(cosine, dtype=np.float32)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``fusion.json`` (layout, weights, scales), ``cold_items.npy`` and one ``.npy`` per
        item and user block; the fused vectors are recomputed from them on ``load``."""
        check_is_fitted(self, "layout_")
        if self.blocks_only_:
            raise ValueError("a blocks-only fit (the weights stage's) cannot serve; fit again")
        directory = Path(directory)
        np.save(directory / "cold_items.npy", self.cold_, allow_pickle=False)
        if self.has_tokens:
            _save_csr(directory / "item_tokens", self.item_tokens_)
            _save_csr(directory / "user_tokens", self.user_tokens_)
            _save_csr(directory / "token_postings", self.token_postings)
        predictor = getattr(self, "cold_predictor_", None)
        if predictor is not None:
            np.save(directory / "cold_coef.npy", predictor[0], allow_pickle=False)
            np.save(directory / "cold_intercept.npy", predictor[1], allow_pickle=False)
        for prefix, blocks in (("item", self.item_blocks_), ("user", self.user_blocks_)):
            for name, block in blocks.items():
                np.save(directory / f"{prefix}_block_{name}.npy", block, allow_pickle=False)
        state = {
            "layout": self.layout_.dims,
            "weights": self.weights_,
            "cold_scale": self.cold_scale_,
            "surfaces": self.surface_weights_,
            "cf_scales": list(self.cf_scales_),
            "item_blocks": list(self.item_blocks_),
            "user_blocks": list(self.user_blocks_),
            "has_cf": "cf" in self.user_blocks_,
            "has_tokens": self.has_tokens,
            "token_profile": self.token_profile_,
            "content_profile": self.content_profile_,
        }
        (directory / "fusion.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> FusedModel:
        directory = Path(directory)
        state = json.loads((directory / "fusion.json").read_text())

        def blocks(prefix: str) -> dict[str, np.ndarray]:
            return {
                name: mapped(directory / f"{prefix}_block_{name}.npy")
                for name in state[f"{prefix}_blocks"]
            }

        fused = cls()
        fused.blocks_only_ = False
        fused.layout_ = Layout(dict(state["layout"]))
        fused.cold_ = np.load(directory / "cold_items.npy", allow_pickle=False)
        fused.cf_scales_ = tuple(state["cf_scales"])
        # bundles from before the option weighed token profiles by confidence
        fused.token_profile_ = state.get("token_profile", "confidence")
        # and their users' content profiles too (fold-ins counted each item once)
        fused.content_profile_ = state.get("content_profile", "confidence")
        fused.item_tokens_ = fused.user_tokens_ = fused.token_postings_ = None
        if state.get("has_tokens"):
            fused.item_tokens_ = _load_csr(directory / "item_tokens")
            fused.user_tokens_ = _load_csr(directory / "user_tokens")
            if Path(f"{directory / 'token_postings'}_shape.npy").exists():
                fused.token_postings_ = _load_csr(directory / "token_postings")
        fused.cold_predictor_ = None
        if (directory / "cold_coef.npy").exists():
            fused.cold_predictor_ = (
                mapped(directory / "cold_coef.npy"),
                np.load(directory / "cold_intercept.npy", allow_pickle=False),
            )
        fused.item_blocks_, fused.user_blocks_ = blocks("item"), blocks("user")
        fused.item_vectors_ = None  # fused by set_weights, unless the bundle holds them
        if (directory / "item_vectors.npy").exists():
            fused.item_vectors_ = mapped(directory / "item_vectors.npy")
            names = [*state["layout"], *([TOKENS] if fused.has_tokens else [])]
            fused.cold_scale_ = {b: float(state["cold_scale"].get(b, 1.0)) for b in names}
        return fused.set_weights(state["weights"], state["cold_scale"], state["surfaces"])

    @property
    def has_cf(self) -> bool:
        return "cf" in self.user_blocks_


def _save_csr(prefix: Path, matrix: sp.csr_matrix) -> None:
    """A CSR matrix as ``<prefix>_{data,indices,indptr,shape}.npy`` (mapped on load)."""
    for part in ("data", "indices", "indptr"):
        np.save(f"{prefix}_{part}.npy", getattr(matrix, part), allow_pickle=False)
    np.save(f"{prefix}_shape.npy", np.asarray(matrix.shape, dtype=np.int64), allow_pickle=False)


def _load_csr(prefix: Path) -> sp.csr_matrix:
    parts = [mapped(Path(f"{prefix}_{part}.npy")) for part in ("data", "indices", "indptr")]
    shape = tuple(np.load(f"{prefix}_shape.npy", allow_pickle=False).tolist())
    return sp.csr_matrix(tuple(parts), shape=shape, copy=False)


def fit_cold_predictor(features, targets: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """(coef (F, T), intercept (T,)) of the ridge map from warm items' ``cold_features`` to
    their unweighted [cf | popularity] blocks ``targets``, penalty ``alpha``. On sparse
    tokens it is fitted on centred targets and predicts without the mean: an item its tokens
    say little about sits near 0 (it waits for interactions), not at the mean item, which
    every user's feed would rank high; among cold items the order is the same."""
    if not sp.issparse(features):
        ridge = Ridge(alpha=alpha).fit(features, targets)
        return ridge.coef_.T, ridge.intercept_
    coef, _ = sparse_ridge(features, targets, alpha)
    return coef, np.zeros(targets.shape[1], dtype=np.float32)


def cold_features(content: dict[str, np.ndarray], tokens: sp.spmatrix | None):
    """What cold items' blocks are predicted from: the sparse tokens (standing for the
    tabular block) beside the other content blocks, or the dense content blocks."""
    if tokens is None:
        return np.hstack([content[b] for b in CONTENT_BLOCKS if b in content])
    others = [content[b] for b in CONTENT_BLOCKS if b in content and b != "tabular"]
    return sp.hstack([tokens, *others], format="csr", dtype=np.float32)


def _profiles(user_items: sp.csr_matrix, content: dict[str, np.ndarray], extra=None) -> dict:
    """Per user, the normalised mean of their items' content blocks, each item counted once
    (``ONCE``; ``extra``: block -> (U, d) more of them, summed in)."""
    once = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    once.data = np.sign(once.data)
    extra = extra or {}
    return {b: normalize_rows(np.asarray(once @ v) + extra.get(b, 0.0)) for b, v in content.items()}
