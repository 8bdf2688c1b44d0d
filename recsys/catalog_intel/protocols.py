"""Label-scored protocols of the four catalog tasks (issue 16), shared by
``scripts/eval_catalog.py`` and ``recsys evaluate --labels`` (``recsys.evaluation``).

Labels only score; every estimator runs without them (few-label tagging sees its few).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.fft import dctn
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    roc_auc_score,
    roc_curve,
)

from recsys.catalog_intel.clusters import ClusterConfig, Clusterer
from recsys.catalog_intel.duplicates import (
    DuplicateConfig,
    calibrate_threshold,
    self_copy_similarities,
)
from recsys.catalog_intel.neighbours import as_unit_vectors, knn
from recsys.catalog_intel.outliers import OutlierConfig, OutlierScorer
from recsys.catalog_intel.tagging import TagConfig, Tagger
from recsys.catalog_intel.verification import VerifyConfig, self_copy_scores, verified_scores

CURVE_POINTS = 400  # points kept of each curve (plots and JSON)


def phash(images: np.ndarray) -> np.ndarray:
    """64-bit pHash [Zauner 2010] of uint8 (N, H, W) images as +-1 vectors (cosine =
    1 - 2 x Hamming / 64): the sign of the 8x8 lowest DCT frequencies of a 32x32 resize
    against their median."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(images)).float()[:, None]  # (N, 1, H, W)
    small = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    low = dctn(small.numpy(), axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(x), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    return np.where(bits, 1.0, -1.0).astype(np.float32)


def _thin(values: np.ndarray) -> list:
    return values[:: max(1, len(values) // CURVE_POINTS)].tolist()


def pr_curve(scores: np.ndarray, positive: np.ndarray, n_positive: int) -> dict:
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / n_positive
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": scores[order]}


def copy_detection(embed, originals: np.ndarray, copies: np.ndarray, sources: np.ndarray) -> dict:
    """``copies`` (edited ``originals[sources]``) added to ``originals``; ``embed`` maps uint8
    images to vectors. copy@1 (a copy's nearest other item is its source); F1 of "this pair
    is a duplicate" over every item's nearest pair at the best threshold, and at the
    threshold calibrated without labels (``calibrate_threshold``)."""
    catalog = as_unit_vectors(embed(np.concatenate([originals, copies])))
    sims, rows = knn(catalog, 1)
    copy_sims = self_copy_similarities(embed, originals, sample=1000, seed=7)
    return _pair_metrics(rows[:, 0], sims[:, 0], len(originals), sources, copy_sims)


def verified_copy_detection(
    embed,
    originals: np.ndarray,
    copies: np.ndarray,
    sources: np.ndarray,
    cfg: VerifyConfig | None = None,
) -> dict:
    """``copy_detection`` with each item's nearest found among its ``cfg.candidates``
    nearest by ``embed`` vectors after geometric verification, and scored by the verified
    score; the calibration sample is verified self-copies (``self_copy_scores``)."""
    images = np.concatenate([originals, copies])
    catalog = as_unit_vectors(embed(images))
    cfg = cfg or VerifyConfig()
    _, cand = knn(catalog, cfg.candidates)
    t0 = time.perf_counter()
    scores = verified_scores(images, cand, cfg)  # (N, K)
    verify_s = time.perf_counter() - t0
    best = np.argmax(scores, axis=1)  # ties: the descriptor's order
    nearest = np.take_along_axis(cand, best[:, None], 1)[:, 0]
    score = np.take_along_axis(scores, best[:, None], 1)[:, 0]
    copy_scores = self_copy_scores(originals, sample=1000, seed=7, cfg=cfg)
    out = _pair_metrics(nearest, score, len(originals), sources, copy_scores, verified=True)
    return {**out, "verify_s": round(verify_s, 1), "verified_items": len(images)}


def _pair_metrics(
    nearest: np.ndarray,
    score: np.ndarray,
    n: int,
    sources: np.ndarray,
    copy_scores: np.ndarray,
    verified: bool = False,
) -> dict:
    """copy@1 and pair F1 (best and calibrated threshold) of every item's nearest pair;
    rows >= n are the copies of ``sources``."""
    total = len(nearest)
    left, right = np.minimum(np.arange(total), nearest), np.maximum(np.arange(total), nearest)
    _, first = np.unique(left * total + right, return_index=True)  # each pair once
    source_of_right = sources[np.clip(right[first] - n, 0, None)]
    is_copy = (right[first] >= n) & (left[first] == source_of_right)
    curve = pr_curve(score[first], is_copy, len(sources))
    best = int(np.argmax(curve["f1"]))
    threshold = calibrate_threshold(copy_scores, score, DuplicateConfig(), verified).threshold
    chosen = score[first] >= threshold
    tp = int((chosen & is_copy).sum())
    return {
        "copy@1": float((nearest[n:] == sources).mean()),
        "pair_f1": float(curve["f1"][best]),
        "best_threshold": float(curve["threshold"][best]),
        "calibrated_threshold": float(threshold),
        "calibrated_f1": 2 * tp / max(int(chosen.sum()) + len(sources), 1),
        "curve": {k: _thin(v) for k, v in curve.items()},
    }


def outlier_auroc(
    vectors: np.ndarray, labels: np.ndarray, k: int | None, seed: int, share: float = 0.01
) -> dict:
    """For each class c: the items of the other classes plus ``share`` of that many of class
    c's; AUROC of the outlier score; the mean over the classes, each class's and its ROC."""
    rng = np.random.default_rng(seed)
    per_class, rocs = {}, {}
    for c in np.unique(labels):
        inliers = np.flatnonzero(labels != c)
        pool = np.flatnonzero(labels == c)
        odd = rng.choice(pool, min(len(pool), max(1, round(share * len(inliers)))), replace=False)
        truth = np.r_[np.zeros(len(inliers)), np.ones(len(odd))]
        scores = OutlierScorer(OutlierConfig(k=k)).fit(vectors[np.r_[inliers, odd]]).scores_
        per_class[int(c)] = float(roc_auc_score(truth, scores))
        fpr, tpr, _ = roc_curve(truth, scores)
        rocs[int(c)] = {"fpr": _thin(fpr), "tpr": _thin(tpr)}
    return {"auroc": float(np.mean(list(per_class.values()))), "per_class": per_class, "roc": rocs}


def cluster_agreement(vectors: np.ndarray, labels: np.ndarray, k: int, seed: int) -> dict:
    """k-means with ``k`` clusters against the labels: NMI, ARI and the confusion counts."""
    fitted = Clusterer(ClusterConfig(k=k, seed=seed)).fit(vectors)
    classes, codes = np.unique(labels, return_inverse=True)
    confusion = np.zeros((len(classes), k), np.int64)
    np.add.at(confusion, (codes, fitted.labels_), 1)
    return {
        "nmi": float(normalized_mutual_info_score(codes, fitted.labels_)),
        "ari": float(adjusted_rand_score(codes, fitted.labels_)),
        "confusion": confusion.tolist(),
    }


def few_label_accuracy(
    train: np.ndarray,
    train_y: np.ndarray,
    test: np.ndarray,
    test_y: np.ndarray,
    per_class: int,
    seed: int,
    propagate: bool = True,
) -> dict:
    """Test accuracy from ``per_class`` labels of each class among the train vectors. The
    catalog is train + test, as for ``recsys catalog tag`` on a shop's whole catalog with a
    few items labelled: the linear probe is fitted on the labelled vectors (after the
    smoothing over all items that cross-validation on them chooses), propagation spreads the
    labels over all items. Neither sees a test label."""
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.choice(rows, min(per_class, len(rows)), replace=False)
            for rows in (np.flatnonzero(train_y == c) for c in np.unique(train_y))
        ]
    )
    labels = np.full(len(train) + len(test), None, dtype=object)
    labels[chosen] = np.asarray(train_y)[chosen].astype(str)
    truth = np.asarray(test_y).astype(str)
    catalog = np.concatenate([train, test])
    methods = ("linear", "propagation") if propagate else ("linear",)
    fitted = {m: Tagger(TagConfig(method=m)).fit(catalog, labels) for m in methods}
    out = {
        f"{name}_accuracy": float((t.predictions_[-len(test) :] == truth).mean())
        for name, t in fitted.items()
    }
    out["labels"] = len(chosen)
    out["smoothing"] = fitted["linear"].smoothing_
    out["c"] = fitted["linear"].c_
    return out
