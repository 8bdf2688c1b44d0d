"""Few-label tagging: labels for a few items, predicted for the rest with a confidence each.

    tagger = Tagger(TagConfig(method="linear")).fit(vectors, labels)
    tagger.classes_        # (C,) label names
    tagger.predictions_    # (N,) label per item (given labels kept)
    tagger.confidence_     # (N,) probability of that label (1.0 where given)

``labels`` has one entry per item: a label, or None / "" where unknown.

* ``linear``: a multinomial logistic regression (the linear probe of the self-supervised
  literature, e.g. SimCLR [Chen et al. 2020]) on the labelled items' vectors, after
  ``smoothing`` rounds of averaging every item's vector over its neighbours among all items
  (``neighbours.smoothed``; logistic regression on such vectors is simplified graph
  convolution, Wu et al. 2019): the unlabelled items shape the vectors, the labels only the
  probe. The inverse regularisation C is chosen by stratified cross-validation on the
  labelled items alone (``TagConfig.c_candidates``; kept as ``Tagger.c_``) unless
  ``TagConfig.c`` fixes it. Two rounds by default (``Tagger.smoothing_``): with 1% of
  Fashion-MNIST's labels (benchmarks/RESULTS.md session 25, 3 draws) accuracy rose from
  0.835 to 0.854, with 5 labels a class on the demo shop's fused vectors from 0.893 to 0.936,
  on its image vectors from 0.621 to 0.656 and on OpenMoji's groups from 0.338 to 0.361.
  ``TagConfig.smoothing`` None chooses the rounds with C among ``smoothing_candidates``,
  but a few labels a class are too few folds to choose by: it did worse than two fixed
  rounds on three of those four.
* ``propagation``: label spreading [Zhou et al. 2004] over the k-nearest-neighbour graph of
  all items: F <- alpha S F + (1 - alpha) Y, S the symmetrically normalised affinity; uses
  the unlabelled items too. Confidence is the spread mass of the label, normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from recsys.catalog_intel.neighbours import as_unit_vectors, normalised_graph, smoothed
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
    # Rounds of averaging over the smoothing_k-nearest-neighbour graph of all items before
    # the probe; None: chosen with C among smoothing_candidates (the first when C falls back).
    # Skipped above smoothing_max_items items (ClusterConfig says what the search costs).
    smoothing: int | None = 2
    smoothing_candidates: tuple[int, ...] = (0, 1, 2)
    smoothing_k: int = 10
    smoothing_max_items: int = 2_000_000
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
        rounds = [cfg.smoothing] if cfg.smoothing is not None else list(cfg.smoothing_candidates)
        views = smoothed(
            unit, cfg.smoothing_k, max(rounds), cfg.smoothing_max_items, self.show_progress
        )
        rounds = sorted({min(r, len(views) - 1) for r in rounds})  # none past a skip
        labelled = {r: views[r][known] for r in rounds}
        self.smoothing_, self.c_ = _choose(labelled, codes[known], cfg)
        x = views[self.smoothing_]
        model = LogisticRegression(C=self.c_, max_iter=cfg.max_iter)
        model.fit(x[known], codes[known])
        proba = np.zeros((len(unit), len(self.classes_)))
        proba[:, model.classes_] = model.predict_proba(x)  # a class may lack examples
        return proba

    def _propagate(self, unit: np.ndarray, codes: np.ndarray, cfg: TagConfig) -> np.ndarray:
        s = normalised_graph(unit, cfg.k, False, self.show_progress, "label graph")
        y = np.zeros((len(unit), len(self.classes_)))
        y[codes >= 0, codes[codes >= 0]] = 1.0
        f = y.copy()
        for _ in tqdm(range(cfg.iterations), desc="propagating", disable=not self.show_progress):
            f = cfg.alpha * (s @ f) + (1 - cfg.alpha) * y
        total = f.sum(axis=1, keepdims=True)
        uniform = np.full_like(f, 1.0 / f.shape[1])  # items no label reached
        return np.where(total > 0, f / np.maximum(total, 1e-300), uniform)


def _choose(views: dict[int, np.ndarray], y: np.ndarray, cfg: TagConfig) -> tuple[int, float]:
    """(smoothing rounds, C): of ``views`` (rounds -> the labelled items' vectors) and the C
    candidates (``TagConfig.c`` alone when given), the pair with the best mean accuracy over
    stratified folds of the labelled items; on a tie the fewer rounds and the smaller C (the
    simpler model). With a single pair there is nothing to choose; when some label has fewer
    than 2 items (too few to hold one out), the fewest rounds and ``fallback_c``."""
    cs = [cfg.c] if cfg.c is not None else list(cfg.c_candidates)
    first = min(views)
    if len(views) * len(cs) == 1:
        return first, cs[0]
    rows = np.arange(len(y))
    if len(y) > cfg.cv_items:
        rows = np.random.default_rng(cfg.seed).choice(len(y), cfg.cv_items, replace=False)
    y = y[rows]
    counts = np.bincount(y)
    folds = min(cfg.folds, int(counts[counts > 0].min()))
    if folds < 2:
        return first, cfg.c if cfg.c is not None else cfg.fallback_c
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=cfg.seed).split(rows, y))
    accuracy = {}
    for r, x in views.items():
        x = x[rows]
        for c in cs:
            hits = 0
            for fit, held in splits:
                model = LogisticRegression(C=c, max_iter=cfg.max_iter).fit(x[fit], y[fit])
                hits += int((model.predict(x[held]) == y[held]).sum())
            accuracy[r, c] = hits / len(y)
    return max(accuracy, key=lambda rc: (accuracy[rc], -rc[0], -rc[1]))
