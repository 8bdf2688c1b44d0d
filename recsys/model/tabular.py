"""Tabular item features -> a sparse token matrix and one dense vector per item.

numeric -> robust scaling plus soft quantile bins (so that cosine similarity rewards close
values, not just the same sign); categorical -> one-hot; multi -> multi-hot; text -> TF-IDF
with sublinear tf; date -> age in days, then as numeric. Each column's encoding is
L2-normalised and weighted, so the cosine of two encoded items is a weighted mean of
per-column similarities.

Everything stays sparse (``transform_sparse``): a seller among 10^5 keeps its own column, so
identities that carry taste survive, and memory grows with the number of values an item has,
not with the number of distinct values. ``transform`` is the dense block of the fused vectors:
the sparse matrix projected onto its top ``max_dims`` singular directions, fitted on a seeded
sample of items so the cost stays flat as catalogs grow.

The fitted state is plain JSON and .npy arrays (``save``/``load``), never a pickle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import RobustScaler
from sklearn.utils.validation import check_is_fitted

from recsys import text
from recsys.model.frozen import FrozenDict
from recsys.model.fusion import normalize_rows

log = logging.getLogger(__name__)

KINDS = ("numeric", "categorical", "multi", "text", "date")


@dataclass(frozen=True)
class TabularConfig:
    # Words, categories and labels must appear in at least this many items to get a column
    # (a value only one item has says nothing about any other item).
    min_df: int = 2
    # Most frequent values kept per categorical, multi or text column.
    max_features: int = 200_000
    # Soft quantile bins per numeric/date column (0 keeps only the scaled value).
    numeric_bins: int = 64
    # Relative weight of each column (default 1.0) in the tabular block.
    column_weights: dict[str, float] = field(default_factory=dict)
    # The dense block: the sparse matrix projected onto its top max_dims singular directions
    # when it is wider (0 keeps every column, dense: small catalogs only).
    max_dims: int = 128
    # Items the projection is fitted on (a seeded sample above this many).
    svd_sample: int = 100_000
    # The dense block, when items come with another view of themselves (``fit(view=...)``:
    # `recsys train` passes their image vectors): a feature (a word, a value, a price bin)
    # whose items are more alike in that view than random items are counts 1 + view_weight x
    # that lift (``view_lift``: 0 to 1, the share of the way from random pairs to identical
    # ones). So the block follows what the photos show, the product type, rather than a
    # brand that spans types; a view that says nothing leaves every weight near 1. The
    # sparse tokens (the feed's token term, new items' predicted blocks) are not weighted.
    # 0 = off. Demo shop: same-class precision@10 of the block 0.903 -> 0.998
    # (benchmarks/RESULTS.md, session 26).
    view_weight: float = 10.0
    # Prior pairs of the lift (at no lift): a value few items share needs several alike
    # pairs to gain weight.
    view_prior_pairs: float = 10.0
    random_state: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_weights", FrozenDict(self.column_weights))


def split_multi(value: Any) -> list[str]:
    """``"a|b|c"`` or a list -> ["a", "b", "c"]; missing -> []."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    return [str(part) for part in value]


# Up to this many values, ``label_pairs`` reads them one by one: a live item's few rows
# then cost microseconds, where each of pandas' set-wise steps costs tens whatever the size.
FEW_VALUES = 64


def label_pairs(kind: str, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, labels as str objects) of every value of a categorical or multi
    column, set-wise: ``"a|b"`` strings and lists are split for multi (each part stripped);
    missing values and empty labels give no pair."""
    if len(values) <= FEW_VALUES and (
        values.dtype == object or isinstance(values.dtype, pd.StringDtype)
    ):
        few = _few_label_pairs(kind, values.tolist())
        if few is not None:
            return few
    values = values.reset_index(drop=True)
    if kind == "multi":
        values = values.explode()
    values = values.dropna().astype(str)
    if kind == "multi":
        values = values.str.split("|").explode().str.strip()
    values = values[values != ""]
    return values.index.to_numpy(dtype=np.int64), values.to_numpy(dtype=object)


def _few_label_pairs(kind: str, values: list) -> tuple[np.ndarray, np.ndarray] | None:
    """``label_pairs`` of a few values, read one by one with the same rules; None when a
    value is of a type those rules leave to pandas (anything but None, str, numbers, bools
    and, for multi, lists of those)."""
    rows, labels = [], []
    for row, value in enumerate(values):
        parts = value if kind == "multi" and isinstance(value, list) else (value,)
        for part in parts:
            if part is None or (isinstance(part, float) and part != part):  # missing
                continue
            if not isinstance(part, str | int | float | bool):
                return None
            text = str(part)
            for label in (
                (piece.strip() for piece in text.split("|")) if kind == "multi" else (text,)
            ):
                if label:
                    rows.append(row)
                    labels.append(label)
    return np.array(rows, dtype=np.int64), np.array(labels, dtype=object)


class _Numeric:
    """Robust-scaled value (clipped) plus a Gaussian soft assignment to quantile bins."""

    def fit(self, values: np.ndarray, config: TabularConfig) -> _Numeric:
        known = values[~np.isnan(values)]
        known = known if len(known) else np.zeros(1)
        scaler = RobustScaler().fit(known[:, None])
        self.center, self.scale = float(scaler.center_[0]), float(scaler.scale_[0]) or 1.0
        bins = min(config.numeric_bins, len(np.unique(known)))
        self.edges = np.unique(np.quantile(known, np.linspace(0, 1, bins))) if bins > 1 else []
        self.edges = [float(e) for e in self.edges]
        return self

    def transform(self, values: np.ndarray) -> sp.csr_matrix:
        missing = np.isnan(values)
        scaled = np.clip((np.nan_to_num(values) - self.center) / self.scale, -3, 3) / 3
        columns = [scaled[:, None]]
        if len(self.edges) > 1:
            edges = np.asarray(self.edges)
            position = np.interp(np.nan_to_num(values), edges, np.arange(len(edges)))
            soft = np.exp(-0.5 * (position[:, None] - np.arange(len(edges))) ** 2)
            columns.append(np.where(soft > 1e-4, soft, 0.0))  # (n, bins), ~9 non-zeros a row
        out = np.hstack(columns)
        out[missing] = 0.0
        return sp.csr_matrix(out)

    @property
    def width(self) -> int:
        return 1 + (len(self.edges) if len(self.edges) > 1 else 0)

    def state(self) -> dict:
        return {"center": self.center, "scale": self.scale, "edges": self.edges}


class _Categorical:
    """One column per value held by at least ``min_df`` items (most frequent first)."""

    def fit(self, kind: str, values: pd.Series, config: TabularConfig) -> _Categorical:
        rows, labels = label_pairs(kind, values)
        pairs = pd.DataFrame({"row": rows, "label": labels}).drop_duplicates()
        counts = pairs["label"].value_counts()  # items holding each value
        min_df = min(config.min_df, max(1, len(values) // 2))
        kept = counts[counts >= min_df].index[: config.max_features]
        return self.using([str(c) for c in kept])

    def using(self, categories: list[str]) -> _Categorical:
        """This encoder with these columns (fitted or restored)."""
        self.categories = categories
        # Value -> column, hashed once here: encoding a few rows (a live item, every second)
        # then costs those rows, where a fresh index per call hashed every kept value.
        self._columns = pd.Index(categories)
        return self

    def transform(self, kind: str, values: pd.Series) -> sp.csr_matrix:
        rows, labels = label_pairs(kind, values)
        cols = self._columns.get_indexer(labels)
        known = cols >= 0
        width = len(self.categories)
        # each (row, column) once, in row then column order: the CSR arrays themselves
        cells = np.unique(rows[known] * width + cols[known])
        rows, cols = np.divmod(cells, max(width, 1))
        indptr = np.searchsorted(rows, np.arange(len(values) + 1))
        ones = np.ones(len(cells), dtype=np.float32)
        return sp.csr_matrix((ones, cols, indptr), shape=(len(values), width))

    @property
    def width(self) -> int:
        return len(self.categories)

    def state(self) -> dict:
        return {"categories": self.categories}


class _Text:
    """TF-IDF with sublinear tf [Salton & Buckley 1988], kept sparse, over the words of
    ``recsys.text`` (any script; a bundle from before them reads scikit-learn's words)."""

    def __init__(self, words: int = text.VERSION):
        self.words = words

    def _analyzer(self):
        return text.analyzer() if self.words >= 2 else "word"

    def fit(self, values: list[str], config: TabularConfig) -> _Text:
        min_df = min(config.min_df, max(1, len(values) // 2))
        tfidf = TfidfVectorizer(
            min_df=min_df,
            sublinear_tf=True,
            max_features=config.max_features,
            dtype=np.float32,
            analyzer=self._analyzer(),
        )
        try:
            tfidf.fit(values)
        except ValueError:  # empty vocabulary
            return self.using({}, np.zeros(0, dtype=np.float32))
        vocabulary = {w: int(k) for w, k in tfidf.vocabulary_.items()}
        return self.using(vocabulary, tfidf.idf_.astype(np.float32))

    def using(self, vocabulary: dict[str, int], idf: np.ndarray) -> _Text:
        """This encoder with this vocabulary and these weights (fitted or restored)."""
        self.vocabulary, self.idf = vocabulary, idf
        # One counter, already holding the vocabulary as its fitted one: a counter made per
        # call checked and copied the whole vocabulary before counting, so encoding a few
        # rows (a live item, every second) cost time in proportion to it.
        self._counter = CountVectorizer(
            vocabulary=vocabulary, dtype=np.float32, analyzer=self._analyzer()
        )
        self._counter.vocabulary_, self._counter.fixed_vocabulary_ = vocabulary, True
        return self

    def transform(self, values: list[str]) -> sp.csr_matrix:
        if not self.vocabulary:
            return sp.csr_matrix((len(values), 0), dtype=np.float32)
        counts = sp.csr_matrix(self._counter.transform(values), dtype=np.float32)
        counts.data = (1.0 + np.log(counts.data)) * self.idf[counts.indices]  # sublinear tf-idf
        return counts

    @property
    def width(self) -> int:
        return len(self.vocabulary)

    def state(self) -> dict:
        return {"vocabulary": self.vocabulary, "words": self.words}


class TabularEncoder(TransformerMixin, BaseEstimator):
    """Encodes the attribute columns of an items frame; ``kinds`` maps column -> kind.

    ``transform_sparse`` -> (n, features_) CSR; ``transform`` -> (n, dim_) dense float32.
    """

    def __init__(self, kinds: dict[str, str] | None = None, config: TabularConfig | None = None):
        self.kinds = kinds
        self.config = config

    def fit(self, items: pd.DataFrame, y=None, view: np.ndarray | None = None):
        """``view``: (n_items, d) another view of the same items (image vectors; all-zero
        rows where an item has none) that weights the dense block's features
        (``TabularConfig.view_weight``)."""
        self._fit(items, encode_all=False, view=view)
        return self

    def fit_transform_sparse(
        self, items: pd.DataFrame, view: np.ndarray | None = None
    ) -> sp.csr_matrix:
        """``fit`` then ``transform_sparse``, encoding the items once: the projection is
        fitted on a row sample of the same matrix."""
        return self._fit(items, encode_all=True, view=view)

    def _fit(
        self, items: pd.DataFrame, encode_all: bool, view: np.ndarray | None = None
    ) -> sp.csr_matrix | None:
        config = self.config or TabularConfig()
        self.columns_ = {}
        for name, kind in (self.kinds or {}).items():
            if kind not in KINDS:
                raise ValueError(f"attribute {name!r} has kind {kind!r}; expected one of {KINDS}")
            if name not in items.columns or items[name].isna().all():
                log.info("attribute %s has no values; skipped", name)
                continue
            self.columns_[name] = (kind, self._fit_column(kind, items[name], config))
        self.features_ = sum(encoder.width for _, encoder in self.columns_.values())
        if view is not None and len(view) != len(items):
            raise ValueError(f"view has {len(view)} rows for {len(items)} items")
        encoded = self.transform_sparse(items) if encode_all else None
        self.projection_ = self._fit_projection(items, config, encoded, view)
        self.dim_ = self.features_ if self.projection_ is None else self.projection_.shape[1]
        log.info(
            "tabular encoder: %d columns, %d sparse features, %d dense dimensions",
            len(self.columns_),
            self.features_,
            self.dim_,
        )
        return encoded

    def _fit_column(self, kind: str, values: pd.Series, config: TabularConfig):
        if kind in ("numeric", "date"):
            return _Numeric().fit(self._numbers(kind, values, fit=True), config)
        if kind == "text":
            return _Text().fit(self._texts(values), config)
        return _Categorical().fit(kind, values, config)

    def _fit_projection(
        self,
        items: pd.DataFrame,
        config: TabularConfig,
        encoded: sp.csr_matrix | None,
        view: np.ndarray | None,
    ) -> np.ndarray | None:
        """(features_, dims) map of the sparse encoding to the dense block: each feature's
        view weight (``view_weights_``) times the truncated SVD basis of the weighted
        encoding, fitted on a seeded sample of items (rows of ``encoded``, the items'
        encoding, when given); the weights alone (diagonal) when no projection is needed,
        None when neither is."""
        self.view_weights_ = None
        project = bool(config.max_dims) and self.features_ > config.max_dims
        weigh = view is not None and config.view_weight > 0 and self.features_ > 0
        if not (project or weigh):
            return None
        rng = np.random.default_rng(config.random_state)
        sample = None
        if len(items) > config.svd_sample:
            sample = np.sort(rng.choice(len(items), config.svd_sample, replace=False))
        if encoded is None:
            encoded = self.transform_sparse(items if sample is None else items.iloc[sample])
        elif sample is not None:
            encoded = encoded[sample]
        if weigh:
            rows = view if sample is None else view[sample]
            self.view_weights_ = self._view_weights(encoded, rows, config)
            encoded = encoded @ sp.diags(self.view_weights_)
        weights = self.view_weights_
        dims = min(config.max_dims, encoded.shape[0] - 1) if project else 0
        if dims < 1:
            return None if weights is None else np.diag(weights).astype(np.float32)
        svd = TruncatedSVD(dims, random_state=config.random_state).fit(encoded)
        log.info(
            "tabular block projected from %d to %d dimensions (%.0f%% of the variance kept)",
            self.features_,
            dims,
            100 * svd.explained_variance_ratio_.sum(),
        )
        basis = svd.components_.T  # (features_, dims)
        if weights is not None:
            basis = basis * weights[:, None]
        return basis.astype(np.float32)

    def _view_weights(
        self, encoded: sp.csr_matrix, view: np.ndarray, config: TabularConfig
    ) -> np.ndarray:
        """(features_,) 1 + view_weight x each feature's lift in ``view`` (rows of the
        sampled items, all-zero where an item has no view)."""
        has = np.linalg.norm(view, axis=1) > 0
        lift = view_lift(encoded[has], view[has], config.view_prior_pairs)
        weights = (1.0 + config.view_weight * lift).astype(np.float32)
        log.info(
            "tabular block: %d of %d features weighted by how alike their items look "
            "(lift above 0.05; largest weight %.2f), from %d items' image vectors",
            int(np.sum(lift > 0.05)), len(lift), float(weights.max(initial=1.0)), int(has.sum()),
        )  # fmt: skip
        return weights

    def transform_sparse(self, items: pd.DataFrame) -> sp.csr_matrix:
        """(n_items, features_) float32 CSR: every column's unit-norm, weighted encoding."""
        check_is_fitted(self, "columns_")
        config = self.config or TabularConfig()
        blocks = [sp.csr_matrix((len(items), 0), dtype=np.float32)]
        for name, (kind, encoder) in self.columns_.items():
            values = items[name] if name in items.columns else pd.Series([None] * len(items))
            if kind in ("numeric", "date"):
                block = encoder.transform(self._numbers(kind, values))
            elif kind == "text":
                block = encoder.transform(self._texts(values))
            else:
                block = encoder.transform(kind, values)
            block = normalize_rows(block)  # a new matrix: weighted in place
            block.data *= np.float32(np.sqrt(config.column_weights.get(name, 1.0)))
            blocks.append(block)
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        """(n_items, dim_) float32; all-zero rows for items with no known attributes."""
        return self.project(self.transform_sparse(items))

    def project(self, encoded: sp.csr_matrix) -> np.ndarray:
        """The dense block of rows ``transform_sparse`` gave."""
        if self.projection_ is None:
            return encoded.toarray()
        return np.asarray(encoded @ self.projection_, dtype=np.float32)

    # -- value parsing -------------------------------------------------------------------
    def _numbers(self, kind: str, values: pd.Series, fit: bool = False) -> np.ndarray:
        if kind == "numeric":
            return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        dates = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        dates = dates.dt.tz_localize(None)
        if fit:
            self.reference_date_ = str(dates.max()) if dates.notna().any() else "1970-01-01"
        age = (pd.Timestamp(self.reference_date_) - dates).dt.total_seconds() / 86_400
        return age.to_numpy(dtype=np.float64)

    @staticmethod
    def _texts(values: pd.Series) -> list[str]:
        return values.fillna("").astype(str).tolist()

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path, prefix: str = "tabular") -> list[Path]:
        check_is_fitted(self, "columns_")
        directory = Path(directory)
        state: dict[str, Any] = {
            "kinds": self.kinds,
            "config": asdict(self.config or TabularConfig()),
            "reference_date": getattr(self, "reference_date_", None),
            "columns": {},
        }
        paths = []
        for k, (name, (kind, encoder)) in enumerate(self.columns_.items()):
            state["columns"][name] = {"kind": kind, **encoder.state()}
            if kind == "text":
                paths.append(directory / f"{prefix}_{k}_idf.npy")
                np.save(paths[-1], encoder.idf, allow_pickle=False)
        if self.projection_ is not None:
            paths.append(directory / f"{prefix}_projection.npy")
            np.save(paths[-1], self.projection_, allow_pickle=False)
        paths.append(directory / f"{prefix}.json")
        paths[-1].write_text(json.dumps(state, indent=1))
        return paths

    @classmethod
    def load(cls, directory: str | Path, prefix: str = "tabular") -> TabularEncoder:
        from recsys.model.config import from_dict

        directory = Path(directory)
        state = json.loads((directory / f"{prefix}.json").read_text())
        encoder = cls(state["kinds"], from_dict(TabularConfig, state["config"]))
        if state["reference_date"] is not None:
            encoder.reference_date_ = state["reference_date"]
        encoder.columns_ = {}
        for k, (name, column) in enumerate(state["columns"].items()):
            encoder.columns_[name] = (column["kind"], _restore(column, directory, f"{prefix}_{k}"))
        encoder.features_ = sum(e.width for _, e in encoder.columns_.values())
        encoder.projection_ = None  # the view weights, if any, are folded into it
        projection = directory / f"{prefix}_projection.npy"
        if projection.is_file():
            encoder.projection_ = np.load(projection, allow_pickle=False)
        encoder.dim_ = (
            encoder.features_ if encoder.projection_ is None else encoder.projection_.shape[1]
        )
        return encoder


def view_lift(encoded: sp.spmatrix, view: np.ndarray, prior_pairs: float = 0.0) -> np.ndarray:
    """(F,) how much more alike the items holding each feature of ``encoded`` (N, F) are in
    ``view`` (N, d) than random items: (mean cosine of their pairs - mean cosine of all
    pairs) / (1 - mean cosine of all pairs), 0 when not more alike. A pair counts by the
    product of the two items' (absolute) values in the feature, and ``prior_pairs`` pairs
    at the catalog's mean cosine are added to every feature. Set-wise: one sparse-dense
    product, (F, d) sums, no pair is formed."""
    features = sp.csc_matrix(abs(sp.csr_matrix(encoded, dtype=np.float64)))
    n_features = features.shape[1]
    if len(view) < 2 or not n_features:
        return np.zeros(n_features)
    view = np.asarray(view, dtype=np.float64)
    unit = view / np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
    total = unit.sum(axis=0)
    base = (total @ total - len(unit)) / (len(unit) * (len(unit) - 1))  # mean cosine of pairs
    sums = np.asarray(features.T @ unit)  # (F, d): sum of each feature's items, weighted
    mass = np.asarray(features.sum(axis=0)).ravel()
    squares = np.asarray(features.multiply(features).sum(axis=0)).ravel()
    pair_cosines = np.einsum("fd,fd->f", sums, sums) - squares  # unit rows: self-pairs 1
    pairs = mass**2 - squares
    lift = (pair_cosines - pairs * base) / ((pairs + prior_pairs) * max(1.0 - base, 1e-12))
    return np.clip(np.nan_to_num(lift), 0.0, 1.0)


def _restore(column: dict, directory: Path, stem: str):
    kind = column["kind"]
    if kind in ("numeric", "date"):
        encoder = _Numeric()
        encoder.center, encoder.scale = column["center"], column["scale"]
        encoder.edges = column["edges"]
    elif kind == "text":
        idf = np.load(directory / f"{stem}_idf.npy", allow_pickle=False)
        encoder = _Text(column.get("words", 1)).using(column["vocabulary"], idf)
    else:
        encoder = _Categorical().using(column["categories"])
    return encoder
