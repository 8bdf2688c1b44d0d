"""Few-label tagging: labels for a few items, predicted for the rest with a confidence each.

    tagger = Tagger(TagConfig(method="linear")).fit(vectors, labels)
    tagger.classes_        # (C,) label names
    tagger.predictions_    # (N,) label per item (given labels kept)
    tagger.confidence_     # (N,) probability of that label (1.0 where given)

``labels`` has one entry per item: a label, or None / "" where unknown.

* ``linear``: a multinomial logistic regression (the linear probe of the self-supervised
  literature, e.g. SimCLR [Chen et al. 2020]) on the labelled items' vectors. Its inverse
  regularisation C is chosen by stratified cross-validation on the labelled items alone
  (``TagConfig.c_candidates``; kept as ``Tagger.c_``) unless ``TagConfig.c`` fixes it.
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
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from recsys.catalog_intel.neighbours import as_unit_vectors, knn, knn_graph
from recsys.errors import InvalidInput

METHODS = ("linear", "propagation")


@dataclass(frozen=True)
class TagConfig:
    # linear (logistic regression) or propagation (label spreading on the kNN graph).
    method: str = "linear"
    # Inverse regularisation of the logistic regression; None: the candidate with the best
    # cross-validated accuracy on the labelled items (``fallback_c`` when some label has
    # fewer than 2 items, too few to hold one out).
    c: float | None = None
    c_candidates: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    fallback_c: float = 1.0
    # Folds of that cross-validation (fewer when a label has fewer items), and the most
    # labelled items it runs on (a seeded sample beyond that; the final fit uses them all).
    folds: int = 5
    cv_items: int = 5000
    max_iter: int = 1000
    seed: int = 0
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
        self.c_ = cfg.c if cfg.c is not None else _choose_c(unit[known], codes[known], cfg)
        model = LogisticRegression(C=self.c_, max_iter=cfg.max_iter)
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


def _choose_c(x: np.ndarray, y: np.ndarray, cfg: TagConfig) -> float:
    """The candidate C with the best mean accuracy over stratified folds of the labelled items
    (the smaller C on a tie: the simpler model)."""
    if len(cfg.c_candidates) == 1:
        return cfg.c_candidates[0]
    if len(y) > cfg.cv_items:
        keep = np.random.default_rng(cfg.seed).choice(len(y), cfg.cv_items, replace=False)
        x, y = x[keep], y[keep]
    counts = np.bincount(y)
    folds = min(cfg.folds, int(counts[counts > 0].min()))
    if folds < 2:
        return cfg.fallback_c
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=cfg.seed).split(x, y))
    accuracy = {}
    for c in cfg.c_candidates:
        hits = 0
        for fit, held in splits:
            model = LogisticRegression(C=c, max_iter=cfg.max_iter).fit(x[fit], y[fit])
            hits += int((model.predict(x[held]) == y[held]).sum())
        accuracy[c] = hits / len(y)
    return max(accuracy, key=lambda c: (accuracy[c], -c))
