"""The models compared by ``recsys evaluate``, each with ``fit(train)`` and ``scores(users)``.

``fit`` takes a ``CatalogData`` holding the training interactions only; ``scores`` returns
(U, I) scores of every catalog item (in catalog order) for external user ids, 0 for users
the contender never saw. Peers train on the binary user x item matrix, as in
``scripts/eval_movielens.py``: popularity, item-kNN cosine [Sarwar et al. 2001], implicit
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

from recsys.model.data import CatalogData
from recsys.model.fusion import normalize_rows
from recsys.model.tabular import TabularConfig, TabularEncoder
from recsys.model.training import TrainConfig, fit_in_memory

log = logging.getLogger(__name__)


@dataclass
class PeerConfig:
    # Latent factors of the ALS and BPR peers (the ALS peer has 64).
    factors: int = 64
    # Neighbours kept per item by item-kNN.
    neighbours: int = 100
    # implicit's default iterations: ALS 15, BPR 100.
    als_iterations: int = 15
    bpr_iterations: int = 100
    # Seed of ALS, BPR (and of the fused model's ALS, see EvaluationConfig).
    seed: int = 0


def binary_matrix(interactions: pd.DataFrame, item_ids: np.ndarray):
    """(sorted user ids, binary (users, items) CSR) of the interactions; items in catalog order."""
    users = np.sort(interactions["user_id"].astype(str).unique())
    u = pd.Index(users).get_indexer(interactions["user_id"].astype(str))
    i = pd.Index(item_ids).get_indexer(interactions["item_id"].astype(str))
    keep = i >= 0
    ones = np.ones(int(keep.sum()), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (u[keep], i[keep])), shape=(len(users), len(item_ids)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return users, matrix


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
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        if self.model == "als":
            return AlternatingLeastSquares(
                factors=c.factors, iterations=c.als_iterations, random_state=c.seed
            )
        # Hogwild SGD on several threads would make the result depend on thread timing.
        return BayesianPersonalizedRanking(
            factors=c.factors, iterations=c.bpr_iterations, random_state=c.seed, num_threads=1
        )

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        def compute(rows):
            return self.user_factors_[rows] @ self.item_factors_.T

        return _by_rows(self._rows(user_ids), compute, len(self.item_factors_))


class ContentProfile(_UserRows):
    """Cosine of each item's content vector to the user's profile (content only, no CF)."""

    def __init__(self, name: str, vectors: Callable[[CatalogData], np.ndarray]):
        self.name = name
        self.vectors = vectors

    def fit(self, train: CatalogData) -> ContentProfile:
        self.item_vectors_ = normalize_rows(self.vectors(train))  # (I, D)
        users, matrix = binary_matrix(train.interactions, _item_ids(train))
        self._index_users(users)
        self.profiles_ = normalize_rows(np.asarray(matrix @ self.item_vectors_))  # (U, D)
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        def compute(rows):
            return self.profiles_[rows] @ self.item_vectors_.T

        return _by_rows(self._rows(user_ids), compute, len(self.item_vectors_))


class Fused(_UserRows):
    """The model `recsys train` builds (``fit_in_memory``), trained on the training part."""

    name = "fused"

    def __init__(self, config: TrainConfig | None = None, image_encoder_factory=None):
        self.config = config or TrainConfig()
        self.image_encoder_factory = image_encoder_factory

    def fit(self, train: CatalogData) -> Fused:
        self.model_, parts = fit_in_memory(train, self.config, self.image_encoder_factory)
        self.validation_ = parts.metrics
        self._index_users(parts.cf.user_ids_ if parts.cf is not None else [])
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        def compute(rows):
            return self.model_.user_vectors_[rows] @ self.model_.item_vectors_.T

        return _by_rows(self._rows(user_ids), compute, len(self.model_.item_vectors_))

    def similar(self, rows: np.ndarray, k: int) -> np.ndarray:
        """(Q, k) item rows most like each query row, the query itself excluded."""
        model = self.model_
        scores = model.item_queries(rows) @ model.item_vectors_.T  # (Q, I)
        scores[np.arange(len(rows)), rows] = -np.inf
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _item_ids(data: CatalogData) -> np.ndarray:
    return data.items["item_id"].to_numpy(dtype=str)


@dataclass
class ItemContent:
    """Item content vectors computed once per run, shared by content contenders and fusion.

    Image vectors come from training the image encoder on every catalog image (no labels,
    no interactions), as `recsys train` does.
    """

    tabular_config: TabularConfig = field(default_factory=TabularConfig)
    use_titles: bool = True
    # () -> an unfitted image encoder (fit(paths) / transform(paths)).
    image_encoder_factory: Callable[[], Any] | None = None
    _cache: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False)

    def tabular(self, data: CatalogData) -> np.ndarray | None:
        if "tabular" not in self._cache:
            self._cache["tabular"] = _tabular_vectors(data, self.tabular_config, self.use_titles)
        return self._cache["tabular"]

    def image(self, data: CatalogData) -> np.ndarray | None:
        """(I, D) image vectors, zero rows for items without an image; None without images."""
        if "image" not in self._cache:
            self._cache["image"] = self._image_vectors(data)
        return self._cache["image"]

    def _image_vectors(self, data: CatalogData) -> np.ndarray | None:
        paths = data.items["image_path"]
        has = paths.notna().to_numpy()
        if not has.any() or self.image_encoder_factory is None:
            return None
        files = paths[has].tolist()
        encoder = self.image_encoder_factory().fit(files)
        vectors = np.asarray(encoder.transform(files), dtype=np.float32)  # (N, D)
        out = np.zeros((len(paths), vectors.shape[1]), dtype=np.float32)
        out[has] = vectors
        return out

    def precomputed_encoder(self, data: CatalogData):
        """A factory of encoders that return the shared image vectors (for the fused model)."""
        vectors = self.image(data)
        if vectors is None:
            return None
        by_path = dict(zip(data.items["image_path"].tolist(), vectors, strict=True))
        return lambda: _Precomputed(by_path)


class _Precomputed:
    """fit/transform over image paths, answering from vectors computed earlier."""

    def __init__(self, by_path: dict[str, np.ndarray]):
        self.by_path = by_path

    def fit(self, paths) -> _Precomputed:
        return self

    def transform(self, paths) -> np.ndarray:
        return np.stack([self.by_path[p] for p in paths])


def _tabular_vectors(data: CatalogData, config: TabularConfig, use_titles: bool):
    """The tabular block `recsys train` builds: attributes, plus the title as text."""
    kinds = dict(data.kinds)
    if use_titles and data.items["title"].notna().any() and "title" not in kinds:
        kinds["title"] = "text"
    if not kinds:
        return None
    encoder = TabularEncoder(kinds, config).fit(data.items)
    return encoder.transform(data.items) if encoder.dim_ else None


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
    if content.tabular(data) is not None:
        contenders.append(ContentProfile("content (tabular)", content.tabular))
    if content.image(data) is not None:
        contenders.append(ContentProfile("content (image)", content.image))
    contenders.append(Fused(fused, content.precomputed_encoder(data)))
    return contenders
