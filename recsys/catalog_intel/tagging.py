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
  probe. Each label weighs alike however many items carry it (``TagConfig.class_weight``):
  with 50 labelled bags and one or two of every other kind, the probe had tagged every item
  a bag. The inverse regularisation C is chosen by stratified cross-validation on the
  labelled items alone, by the log-loss of the held-out items' probabilities
  (``TagConfig.c_candidates``; kept as ``Tagger.c_``, the held-out balanced accuracy as
  ``Tagger.cv_accuracy_``) unless ``TagConfig.c`` fixes it. Accuracy could not choose: it
  was level from C = 0.3 to 100 on the demo shop's vectors, and the smallest C it then took
  left every confidence near chance. Items of a label with a single labelled item are never
  held out, only trained on. Two rounds by default (``Tagger.smoothing_``): with 1% of
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

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from recsys.catalog_intel.neighbours import as_unit_vectors, normalised_graph, smoothed
from recsys.errors import InvalidInput

METHODS = ("linear", "propagation")
# C when no label has 2 labelled items to hold one out (one label a kind): with one label a
# kind, C = 1000 gave the held-out items the lowest log-loss of 1 to 1000 on MovieLens, the
# demo shop and the synthetic shop (C = 1: confidences near chance; benchmarks/RESULTS.md
# session 64, scripts/eval_tags.py)
FALLBACK_C = 1000.0


@dataclass(frozen=True)
class TagConfig:
    # linear (logistic regression) or propagation (label spreading on the kNN graph).
    method: str = "linear"
    # Inverse regularisation of the logistic regression; None: the candidate with the best
    # cross-validated log-loss on the labelled items (``fallback_c`` when no label has 2
    # items, too few to hold one out).
    c: float | None = None
    c_candidates: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    fallback_c: float = FALLBACK_C
    # "balanced": each label weighs alike in the fit and the log-loss, whatever its share of
    # the labelled items; None: each labelled item alike.
    class_weight: str | None = "balanced"
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
        chosen = _choose(labelled, codes[known], cfg, self.show_progress)
        self.smoothing_, self.c_, self.cv_accuracy_ = chosen
        x = views[self.smoothing_]
        model = _probe(self.c_, cfg).fit(x[known], codes[known])
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


def _probe(c: float, cfg: TagConfig, warm_start: bool = False) -> LogisticRegression:
    return LogisticRegression(
        C=c, class_weight=cfg.class_weight, max_iter=cfg.max_iter, warm_start=warm_start
    )


def _choose(
    views: dict[int, np.ndarray], y: np.ndarray, cfg: TagConfig, show_progress: bool = False
) -> tuple[int, float, float | None]:
    """(smoothing rounds, C, held-out balanced accuracy there): of ``views`` (rounds -> the
    labelled items' vectors) and the C candidates (``TagConfig.c`` alone when given), the
    pair whose probabilities give the held-out items of stratified folds the lowest mean
    log-loss, each label weighing alike (``class_weight`` "balanced"); on a tie the fewer
    rounds and the smaller C. Items of a label with a single labelled item are only trained
    on. With a single pair there is nothing to choose (accuracy None); when no label has 2
    items, the fewest rounds and ``fallback_c``."""
    cs = [cfg.c] if cfg.c is not None else sorted(cfg.c_candidates)
    first = min(views)
    if len(views) * len(cs) == 1:
        return first, cs[0], None
    rows = np.arange(len(y))
    if len(y) > cfg.cv_items:
        rows = np.random.default_rng(cfg.seed).choice(len(y), cfg.cv_items, replace=False)
    y = y[rows]
    counts = np.bincount(y)
    pool, single = np.flatnonzero(counts[y] >= 2), np.flatnonzero(counts[y] < 2)
    if not len(pool):
        return first, cfg.c if cfg.c is not None else cfg.fallback_c, None
    folds = min(cfg.folds, int(counts[counts >= 2].min()))
    stratified = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)
    splits = [(np.r_[pool[f], single], pool[h]) for f, h in stratified.split(pool, y[pool])]
    present = np.flatnonzero(counts)
    weight = np.ones(len(y))
    if cfg.class_weight == "balanced":  # as sklearn weighs the fit
        weight = (len(y) / (len(present) * counts))[y]
    loss, hits = {}, {}
    progress = tqdm(
        total=len(views) * len(splits) * len(cs), desc="choosing C", disable=not show_progress
    )
    with progress, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a candidate is only scored
        # many labels of one or two items each: said once per fit, 35 times here
        warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
        for r, x in views.items():
            x = x[rows]
            for fit, held in splits:
                model = _probe(cs[0], cfg, warm_start=True)  # each C starts from the last
                for c in cs:
                    model.set_params(C=c).fit(x[fit], y[fit])
                    proba = model.predict_proba(x[held])
                    right = proba[np.arange(len(held)), np.searchsorted(model.classes_, y[held])]
                    w = weight[held]
                    loss[r, c] = loss.get((r, c), 0.0) - w @ np.log(np.maximum(right, 1e-15))
                    hit = w @ (model.classes_[proba.argmax(axis=1)] == y[held])
                    hits[r, c] = hits.get((r, c), 0.0) + hit
                    progress.update()
    r, c = min(loss, key=lambda rc: (loss[rc], rc[0], rc[1]))
    return r, c, float(hits[r, c] / weight[pool].sum())
