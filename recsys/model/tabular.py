"""Tabular item features -> one dense vector per item, from the attribute kinds of ingest.

numeric -> robust scaling plus soft quantile bins (so that cosine similarity rewards close
values, not just the same sign); categorical -> one-hot; multi -> multi-hot; text -> TF-IDF +
truncated SVD; date -> age in days, then as numeric. Each column's encoding is L2-normalised
and weighted, so the cosine of two encoded items is a weighted mean of per-column similarities.

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
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import RobustScaler
from sklearn.utils.validation import check_is_fitted

log = logging.getLogger(__name__)

KINDS = ("numeric", "categorical", "multi", "text", "date")


@dataclass
class TabularConfig:
    # Dimensions kept from TF-IDF by truncated SVD, per text column.
    text_components: int = 32
    # Words must appear in at least this many items to enter a TF-IDF vocabulary.
    min_df: int = 2
    # Most frequent categories (or multi-valued labels) kept per column; the rest encode as 0.
    max_categories: int = 500
    # Soft quantile bins per numeric/date column (0 keeps only the scaled value).
    numeric_bins: int = 64
    # Relative weight of each column (default 1.0) in the tabular block.
    column_weights: dict[str, float] = field(default_factory=dict)
    # A block wider than this is projected onto its top max_dims singular directions
    # (truncated SVD fitted on the catalog): one-hot columns with many values (300 brands)
    # otherwise make every vector, the index and each similarity search several times wider.
    # 0 keeps every dimension.
    max_dims: int = 128
    random_state: int = 0


def split_multi(value: Any) -> list[str]:
    """``"a|b|c"`` or a list -> ["a", "b", "c"]; missing -> []."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    return [str(part) for part in value]


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

    def transform(self, values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        scaled = np.clip((np.nan_to_num(values) - self.center) / self.scale, -3, 3) / 3
        columns = [scaled[:, None]]
        if len(self.edges) > 1:
            edges = np.asarray(self.edges)
            position = np.interp(np.nan_to_num(values), edges, np.arange(len(edges)))
            columns.append(np.exp(-0.5 * (position[:, None] - np.arange(len(edges))) ** 2))
        out = np.hstack(columns)
        out[missing] = 0.0
        return out

    def state(self) -> dict:
        return {"center": self.center, "scale": self.scale, "edges": self.edges}


class _Categorical:
    def fit(self, values: list[list[str]], config: TabularConfig) -> _Categorical:
        counts = pd.Series([v for row in values for v in row], dtype=object).value_counts()
        self.categories = [str(c) for c in counts.index[: config.max_categories]]
        return self

    def transform(self, values: list[list[str]]) -> np.ndarray:
        lookup = {c: k for k, c in enumerate(self.categories)}
        out = np.zeros((len(values), len(self.categories)))
        for row, labels in enumerate(values):
            cols = [lookup[v] for v in labels if v in lookup]
            out[row, cols] = 1.0
        return out

    def state(self) -> dict:
        return {"categories": self.categories}


class _Text:
    """TF-IDF with sublinear tf, then truncated SVD [Deerwester et al. 1990]."""

    def fit(self, values: list[str], config: TabularConfig) -> _Text:
        min_df = min(config.min_df, max(1, len(values) // 2))
        tfidf = TfidfVectorizer(min_df=min_df, sublinear_tf=True)
        try:
            matrix = tfidf.fit_transform(values)
        except ValueError:  # empty vocabulary
            self.vocabulary, self.idf, self.components = {}, np.zeros(0), np.zeros((0, 0))
            return self
        self.vocabulary = {w: int(k) for w, k in tfidf.vocabulary_.items()}
        self.idf = tfidf.idf_.astype(np.float32)
        components = min(config.text_components, matrix.shape[1] - 1)
        if components < 2:
            self.components = np.eye(matrix.shape[1], dtype=np.float32)
        else:
            svd = TruncatedSVD(components, random_state=config.random_state).fit(matrix)
            self.components = svd.components_.T.astype(np.float32)  # (V, C)
        return self

    def transform(self, values: list[str]) -> np.ndarray:
        if not self.vocabulary:
            return np.zeros((len(values), 0))
        counts = CountVectorizer(vocabulary=self.vocabulary).transform(values).astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf, as TfidfVectorizer
        tfidf = counts.multiply(self.idf[None, :]).tocsr()
        norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1))).ravel()
        return np.asarray(tfidf @ self.components) / np.maximum(norms, 1e-12)[:, None]

    def state(self) -> dict:
        return {"vocabulary": self.vocabulary}


class TabularEncoder(TransformerMixin, BaseEstimator):
    """Encodes the attribute columns of an items frame; ``kinds`` maps column -> kind."""

    def __init__(self, kinds: dict[str, str] | None = None, config: TabularConfig | None = None):
        self.kinds = kinds
        self.config = config

    def fit(self, items: pd.DataFrame, y=None):
        config = self.config or TabularConfig()
        self.columns_ = {}
        for name, kind in (self.kinds or {}).items():
            if kind not in KINDS:
                raise ValueError(f"attribute {name!r} has kind {kind!r}; expected one of {KINDS}")
            if name not in items.columns or items[name].isna().all():
                log.info("attribute %s has no values; skipped", name)
                continue
            self.columns_[name] = (kind, self._fit_column(kind, items[name], config))
        if kind_date := [n for n, (k, _) in self.columns_.items() if k == "date"]:
            log.debug("date columns encoded as age: %s", kind_date)
        self.projection_ = None
        self._fit_projection(items, config)
        self.dim_ = self.transform(items.head(1)).shape[1]
        log.info("tabular encoder: %d columns, %d dimensions", len(self.columns_), self.dim_)
        return self

    def _fit_projection(self, items: pd.DataFrame, config: TabularConfig) -> None:
        """Truncated SVD of the encoded catalog when it is wider than ``max_dims``."""
        if not config.max_dims:
            return
        encoded = self.transform(items)  # (n_items, raw dims)
        if encoded.shape[1] <= config.max_dims or len(encoded) <= config.max_dims:
            return
        svd = TruncatedSVD(config.max_dims, random_state=config.random_state).fit(encoded)
        self.projection_ = svd.components_.T.astype(np.float32)  # (raw dims, max_dims)
        log.info(
            "tabular block projected from %d to %d dimensions (%.0f%% of the variance kept)",
            encoded.shape[1],
            config.max_dims,
            100 * svd.explained_variance_ratio_.sum(),
        )

    def _fit_column(self, kind: str, values: pd.Series, config: TabularConfig):
        if kind in ("numeric", "date"):
            encoder = _Numeric().fit(self._numbers(kind, values, fit=True), config)
            return encoder
        if kind == "text":
            return _Text().fit(self._texts(values), config)
        return _Categorical().fit(self._labels(kind, values), config)

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        """(n_items, dim_) float32; all-zero rows for items with no known attributes."""
        check_is_fitted(self, "columns_")
        config = self.config or TabularConfig()
        blocks = [np.zeros((len(items), 0))]
        for name, (kind, encoder) in self.columns_.items():
            values = items[name] if name in items.columns else pd.Series([None] * len(items))
            if kind in ("numeric", "date"):
                block = encoder.transform(self._numbers(kind, values))
            elif kind == "text":
                block = encoder.transform(self._texts(values))
            else:
                block = encoder.transform(self._labels(kind, values))
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            weight = np.sqrt(config.column_weights.get(name, 1.0))
            blocks.append(weight * block / np.maximum(norms, 1e-12))
        encoded = np.hstack(blocks).astype(np.float32)
        projection = getattr(self, "projection_", None)
        return encoded if projection is None else encoded @ projection

    # -- value parsing -------------------------------------------------------------------
    def _numbers(self, kind: str, values: pd.Series, fit: bool = False) -> np.ndarray:
        if kind == "numeric":
            return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        dates = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601").dt.tz_localize(
            None
        )
        if fit:
            self.reference_date_ = str(dates.max()) if dates.notna().any() else "1970-01-01"
        age = (pd.Timestamp(self.reference_date_) - dates).dt.total_seconds() / 86_400
        return age.to_numpy(dtype=np.float64)

    @staticmethod
    def _texts(values: pd.Series) -> list[str]:
        return ["" if v is None or v != v else str(v) for v in values.tolist()]

    @staticmethod
    def _labels(kind: str, values: pd.Series) -> list[list[str]]:
        if kind == "multi":
            return [split_multi(v) for v in values.tolist()]
        return [[] if v is None or v != v else [str(v)] for v in values.tolist()]

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
                for part in ("idf", "components"):
                    paths.append(directory / f"{prefix}_{k}_{part}.npy")
                    np.save(paths[-1], getattr(encoder, part), allow_pickle=False)
        if getattr(self, "projection_", None) is not None:
            paths.append(directory / f"{prefix}_projection.npy")
            np.save(paths[-1], self.projection_, allow_pickle=False)
        paths.append(directory / f"{prefix}.json")
        paths[-1].write_text(json.dumps(state, indent=1))
        return paths

    @classmethod
    def load(cls, directory: str | Path, prefix: str = "tabular") -> TabularEncoder:
        directory = Path(directory)
        state = json.loads((directory / f"{prefix}.json").read_text())
        encoder = cls(state["kinds"], TabularConfig(**state["config"]))
        if state["reference_date"] is not None:
            encoder.reference_date_ = state["reference_date"]
        encoder.columns_ = {}
        for k, (name, column) in enumerate(state["columns"].items()):
            encoder.columns_[name] = (column["kind"], _restore(column, directory, f"{prefix}_{k}"))
        encoder.dim_ = sum(_width(kind, e) for kind, e in encoder.columns_.values())
        encoder.projection_ = None
        projection = directory / f"{prefix}_projection.npy"
        if projection.is_file():
            encoder.projection_ = np.load(projection, allow_pickle=False)
            encoder.dim_ = encoder.projection_.shape[1]
        return encoder


def _restore(column: dict, directory: Path, stem: str):
    kind = column["kind"]
    if kind in ("numeric", "date"):
        encoder = _Numeric()
        encoder.center, encoder.scale, encoder.edges = (
            column["center"],
            column["scale"],
            column["edges"],
        )
    elif kind == "text":
        encoder = _Text()
        encoder.vocabulary = column["vocabulary"]
        encoder.idf = np.load(directory / f"{stem}_idf.npy", allow_pickle=False)
        encoder.components = np.load(directory / f"{stem}_components.npy", allow_pickle=False)
    else:
        encoder = _Categorical()
        encoder.categories = column["categories"]
    return encoder


def _width(kind: str, encoder) -> int:
    if kind in ("numeric", "date"):
        return 1 + (len(encoder.edges) if len(encoder.edges) > 1 else 0)
    if kind == "text":
        return encoder.components.shape[1] if encoder.vocabulary else 0
    return len(encoder.categories)
