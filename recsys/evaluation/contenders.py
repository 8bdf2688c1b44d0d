"""The models compared by ``recsys evaluate``, each with ``fit(train)`` and ``scores(users)``.

``fit`` takes a ``CatalogData`` holding the training interactions only; ``scores`` returns
(U, I) scores of every catalog item (in catalog order) for external user ids, 0 for users
the contender never saw. Peers train on the binary user x item matrix, as in the reference
runs of benchmarks/RESULTS.md: popularity, item-kNN cosine [Sarwar et al. 2001], implicit
ALS [Hu, Koren, Volinsky 2008], BPR [Rendle et al. 2009]; content-only contenders rank
by the cosine of an item's vector to the user's profile, the normalised mean of the vectors
of the items they interacted with.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.evaluation.neighbourhood import EASE, RP3beta
from recsys.model.cf import CFConfig, implicit_model
from recsys.model.content import Content, build_content
from recsys.model.data import CatalogData
from recsys.model.fusion import normalize_rows, profile_dots
from recsys.model.protocol import binary_matrix
from recsys.model.ranking import top_k_inner
from recsys.model.training import TrainConfig, fit_in_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerConfig:
    # Latent factors of the ALS and BPR peers (64, as in the reference runs of
    # benchmarks/RESULTS.md, "Offline evaluation").
    factors: int = 64
    # implicit's default L2 penalty of ALS and BPR.
    regularization: float = 0.01
    # Neighbours kept per item by item-kNN.
    neighbours: int = 100
    # implicit's default iterations: ALS 15, BPR 100.
    als_iterations: int = 15
    bpr_iterations: int = 100
    # EASE^R's candidate L2 penalties (chosen on a validation slice), and the most items with
    # training interactions it runs on (a dense items x items inverse; larger: skipped).
    ease_lambdas: tuple[float, ...] = (100.0, 300.0, 1000.0)
    ease_max_items: int = 12_000
    # RP3beta's candidate popularity penalties (chosen on a validation slice).
    rp3_betas: tuple[float, ...] = (0.0, 0.3, 0.6)
    # Seed of ALS, BPR, the validation slices (and of the fused model's ALS).
    seed: int = 0


class _UserRows:
    """Maps external user ids onto the rows a contender learned; unknown users get -1."""

    def _index_users(self, user_ids: np.ndarray) -> None:
        self.users_ = pd.Index(np.asarray(user_ids, dtype=str))

    def _rows(self, user_ids: np.ndarray) -> np.ndarray:
        return self.users_.get_indexer(np.asarray(user_ids, dtype=str))


def _by_rows(rows: np.ndarray, compute: Callable[[np.ndarray], np.ndarray], n_items: int):
    """(U, I) scores from ``compute(known rows)``; unknown users (row -1) score 0."""
    out = np.zeros((len(rows), n_items), dtype=np.float32)
    known = rows >= 0
    if known.any():
        out[known] = compute(rows[known])
    return out


class Popularity(_UserRows):
    """Every user gets the items with the most training users."""

    name = "popularity"

    def fit(self, train: CatalogData) -> Popularity:
        item_ids = train.items["item_id"].to_numpy(dtype=str)
        _, matrix = binary_matrix(train.interactions, item_ids)
        self.popularity_ = matrix.getnnz(axis=0).astype(np.float32)  # (I,)
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        return np.tile(self.popularity_, (len(user_ids), 1))


class ItemKNN(_UserRows):
    """Sum of the cosine similarities of an item to the user's items (implicit, top K)."""

    name = "item-kNN"

    def __init__(self, config: PeerConfig | None = None):
        self.config = config or PeerConfig()

    def fit(self, train: CatalogData) -> ItemKNN:
        from implicit.nearest_neighbours import CosineRecommender
        from implicit.utils import ParameterWarning

        users, self.matrix_ = binary_matrix(train.interactions, _item_ids(train))
        self._index_users(users)
        model = CosineRecommender(K=self.config.neighbours)
        with warnings.catch_warnings():  # it converts its own transposed matrix, and says so
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(self.matrix_, show_progress=False)
        self.similarity_ = model.similarity.tocsr()  # (I, I)
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        def compute(rows):
            return (self.matrix_[rows] @ self.similarity_).toarray()

        return _by_rows(self._rows(user_ids), compute, self.matrix_.shape[1])


class MatrixFactorization(_UserRows):
    """implicit's ALS or BPR on the binary matrix, CPU, one thread for BPR (reproducible)."""

    def __init__(self, model: str = "als", config: PeerConfig | None = None):
        self.model = model
        self.config = config or PeerConfig()
        self.name = model.upper()

    def fit(self, train: CatalogData) -> MatrixFactorization:
        users, matrix = binary_matrix(train.interactions, _item_ids(train))
        self._index_users(users)
        model = self._make()
        model.fit(matrix, show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)  # (U, F)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)  # (I, F)
        return self

    def _make(self):
        c = self.config
        iterations = c.als_iterations if self.model == "als" else c.bpr_iterations
        config = CFConfig(
            model=self.model,
            factors=c.factors,
            regularization=c.regularization,
            iterations=iterations,
            random_state=c.seed,
        )
        # BPR's Hogwild SGD on several threads would make the result depend on thread timing.
        return implicit_model(config, num_threads=1 if self.model == "bpr" else 0)

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        def compute(rows):
            return self.user_factors_[rows] @ self.item_factors_.T

        return _by_rows(self._rows(user_ids), compute, len(self.item_factors_))


class ContentProfile(_UserRows):
    """Cosine of each item's content vector to the user's profile (content only, no CF)."""

    def __init__(self, name: str, vectors: np.ndarray):
        self.name = name
        self.vectors = vectors

    def fit(self, train: CatalogData) -> ContentProfile:
        self.item_vectors_ = normalize_rows(self.vectors)  # (I, D), dense or sparse
        users, matrix = binary_matrix(train.interactions, _item_ids(train))
        self._index_users(users)
        self.profiles_ = normalize_rows(matrix @ self.item_vectors_)  # (U, D)
        # sparse (token) vectors: the items per token, read by ``profile_dots``
        self.postings_ = (
            sp.csr_matrix(self.item_vectors_.T) if sp.issparse(self.item_vectors_) else None
        )
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        def compute(rows):
            if self.postings_ is not None:
                return profile_dots(self.profiles_[rows], self.postings_)  # (b, I)
            return self.profiles_[rows] @ self.item_vectors_.T  # (b, I)

        return _by_rows(self._rows(user_ids), compute, self.item_vectors_.shape[0])


class Fused(_UserRows):
    """The model `recsys train` builds (``fit_in_memory``), trained on the training part, on
    the content blocks the content contenders use."""

    name = "fused"

    def __init__(self, config: TrainConfig | None = None, content: ItemContent | None = None):
        self.config = config or TrainConfig()
        self.content = content or ItemContent(self.config)

    def fit(self, train: CatalogData) -> Fused:
        fitted = fit_in_memory(train, self.config, self.content.content(train))
        self.model_, self.validation_ = fitted.fused, fitted.metrics
        if self.model_.has_tokens:  # built once here, not by each scoring thread
            self.model_.token_postings  # noqa: B018
        # items as item-to-item queries meet them: cold items by their whole content
        self.page_items_ = self.model_.item_vectors_
        if self.model_.content_cold_scaled:
            self.page_items_ = self.model_.surface_item_vectors(
                self.model_.item_blocks_, self.model_.cold_
            )
        self._index_users(fitted.cf.user_ids_ if fitted.cf is not None else [])
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        model = self.model_

        def compute(rows):
            scores = model.user_vectors(rows) @ model.item_vectors_.T
            tokens = model.token_scores(model.user_tokens_[rows] if model.has_tokens else None)
            return scores if tokens is None else scores + tokens

        return _by_rows(self._rows(user_ids), compute, len(model.item_vectors_))

    def similar(self, rows: np.ndarray, k: int, surface: str = "similar") -> np.ndarray:
        """(Q, k) item rows most like each query row on ``surface``, the query itself
        excluded (cold items met by their whole content, as the served neighbour table meets
        them)."""
        return top_k_inner(self.model_.item_queries(rows, surface), self.page_items_, k, rows)


def _item_ids(data: CatalogData) -> np.ndarray:
    return data.items["item_id"].to_numpy(dtype=str)


@dataclass
class ItemContent:
    """Item content blocks built once per run by ``build_content`` (what `recsys train`
    builds, with the same config), shared by the content-only contenders and the fused one.

    Image vectors come from training the image encoder on every catalog image (no labels,
    no interactions); the blocks depend on the items only, so the training part and the
    whole catalog share them.
    """

    config: TrainConfig = field(default_factory=TrainConfig)
    # () -> an unfitted image encoder (fit(paths) / transform(paths)); None: the config's.
    image_encoder_factory: Callable[[], Any] | None = None
    device: str = "cpu"
    show_progress: bool = False
    _built: Content | None = field(default=None, repr=False)

    def content(self, data: CatalogData) -> Content:
        if self._built is None:
            self._built = build_content(
                data, self.config, self.device, self.show_progress, self.image_encoder_factory
            )
        return self._built

    def tabular(self, data: CatalogData) -> np.ndarray | None:
        return self.content(data).blocks.get("tabular")

    def image(self, data: CatalogData) -> np.ndarray | None:
        """(I, D) image vectors, zero rows for items without an image; None without images."""
        return self.content(data).blocks.get("image")


def build_contenders(
    data: CatalogData, peers: PeerConfig, content: ItemContent, fused: TrainConfig
) -> list:
    """Every contender the catalog allows, peers first and the fused model last."""
    contenders: list = [
        Popularity(),
        ItemKNN(peers),
        MatrixFactorization("als", peers),
        MatrixFactorization("bpr", peers),
    ]
    if EASE.fits(data, peers.ease_max_items):
        contenders.append(EASE(peers.ease_lambdas, peers.ease_max_items, seed=peers.seed))
    contenders.append(RP3beta(peers.rp3_betas, neighbours=peers.neighbours, seed=peers.seed))
    built = content.content(data)
    if built.tokens is not None:
        contenders.append(ContentProfile("TF-IDF profile", built.tokens))
    for block in ("tabular", "image"):
        if block in built.blocks:
            contenders.append(ContentProfile(f"content ({block})", built.blocks[block]))
    contenders.append(Fused(fused, content))
    return contenders
