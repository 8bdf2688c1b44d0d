"""Few-label tagging: labels for a few items, predicted for the rest with a confidence each.

    tagger = Tagger(TagConfig(method="linear")).fit(vectors, labels)
    tagger.classes_        # (C,) label names
    tagger.predictions_    # (N,) label per item (given labels kept)
    tagger.confidence_     # (N,) probability of that label (1.0 where given)

``labels`` has one entry per item: a label, or None / "" where unknown.

* ``linear``: a multinomial logistic regression (the linear probe of the self-supervised
  literature, e.g. SimCLR [Chen et al. 2020]) on the labelled items' vectors.
* ``propagation``: label spreading [Zhou et al. 2004] over the k-nearest-neighbour graph of
  all items: F <- alpha S F + (1 - alpha) Y, S the symmetrically normalised affinity; uses
  the unlabelled items too. Confidence is the spread mass of the label, normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from recsys.catalog_intel.neighbours import as_unit_vectors, knn, knn_graph
from recsys.errors import InvalidInput

METHODS = ("linear", "propagation")


@dataclass(frozen=True)
class TagConfig:
    # linear (logistic regression) or propagation (label spreading on the kNN graph).
    method: str = "linear"
    # Inverse regularisation of the logistic regression.
    c: float = 1.0
    max_iter: int = 1000
    # Propagation: neighbours per item, how much a label spreads per step, steps.
    k: int = 10
    alpha: float = 0.9
    iterations: int = 30


def _encode(labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes (C,), codes (N,) with -1 where unknown)."""
    values = np.asarray(labels, dtype=object)
    if values.shape != (n,):
        raise InvalidInput(f"labels must have one entry per item ({n}), got shape {values.shape}")
    known = np.array([v is not None and v == v and str(v) != "" for v in values], bool)
    classes, codes = np.unique(values[known].astype(str), return_inverse=True)
    if len(classes) < 2:
        raise InvalidInput(
            f"labels need at least 2 distinct labels among the items, got {len(classes)}; "
            "label a few items of each kind"
        )
    out = np.full(n, -1, np.int64)
    out[known] = codes
    return classes, out


class Tagger(BaseEstimator):
    def __init__(self, config: TagConfig | None = None, show_progress: bool = False):
        self.config = config
        self.show_progress = show_progress

    def fit(self, vectors, labels) -> Tagger:
        cfg = self.config or TagConfig()
        if cfg.method not in METHODS:
            raise InvalidInput(f"method {cfg.method!r} is not one of {', '.join(METHODS)}")
        unit = as_unit_vectors(vectors)
        self.classes_, codes = _encode(labels, len(unit))
        if cfg.method == "linear":
            proba = self._linear(unit, codes, cfg)
        else:
            proba = self._propagate(unit, codes, cfg)
        known = codes >= 0
        proba[known] = np.eye(len(self.classes_))[codes[known]]
        self.probabilities_ = proba.astype(np.float32)  # (N, C)
        best = proba.argmax(axis=1)
        self.predictions_ = self.classes_[best]
        self.confidence_ = self.probabilities_[np.arange(len(unit)), best]
        self.labelled_ = known
        return self

    def _linear(self, unit: np.ndarray, codes: np.ndarray, cfg: TagConfig) -> np.ndarray:
        known = codes >= 0
        model = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter)
        model.fit(unit[known], codes[known])
        proba = np.zeros((len(unit), len(self.classes_)))
        proba[:, model.classes_] = model.predict_proba(unit)  # a class may lack examples
        return proba

    def _propagate(self, unit: np.ndarray, codes: np.ndarray, cfg: TagConfig) -> np.ndarray:
        sims, rows = knn(unit, cfg.k, self.show_progress, "label graph")
        w = knn_graph(sims, rows, len(unit))
        d = np.asarray(w.sum(axis=1)).ravel()
        inv = sparse.diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
        s = (inv @ w @ inv).tocsr()  # D^-1/2 W D^-1/2
        y = np.zeros((len(unit), len(self.classes_)))
        y[codes >= 0, codes[codes >= 0]] = 1.0
        f = y.copy()
        for _ in tqdm(range(cfg.iterations), desc="propagating", disable=not self.show_progress):
            f = cfg.alpha * (s @ f) + (1 - cfg.alpha) * y
        total = f.sum(axis=1, keepdims=True)
        uniform = np.full_like(f, 1.0 / f.shape[1])  # items no label reached
        return np.where(total > 0, f / np.maximum(total, 1e-300), uniform)
