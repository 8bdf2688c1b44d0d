"""Clusters of the catalog: k-means on the item vectors, a choice of k, each cluster's medoid.

    clusters = Clusterer(ClusterConfig(k=10)).fit(vectors)
    clusters.labels_     # (N,) cluster per item
    clusters.medoids_    # (k,) row of the item nearest each centroid (a cluster's face)
    clusters.k_scores_   # {k: silhouette} when k was chosen

Spherical k-means (unit vectors, cosine) with FAISS, ``n_init`` restarts, the lowest
inertia kept. Without a given k, each k of ``k_candidates`` is fitted and scored by the
silhouette [Rousseeuw 1987] of a random sample; the best one is refitted on everything.
Above ``k_choice_items`` items the candidates are fitted on a seeded sample of that many
(the silhouette's among them), so choosing k costs the same at 10^5 and 10^7 items: on all
items it took 43.5 s at 10^5 and 462 s at 10^6, now 22.5 s and 19.1 s
(``scripts/bench_clusters.py``; benchmarks/RESULTS.md, session 49).

Before k-means, each vector is averaged over its neighbours ``smoothing`` times
(``neighbours.smoothed``), so items that sit among the same neighbours fall into the same
cluster. Against known classes (NMI, 10 restarts, mean of 3-5 seeds; benchmarks/RESULTS.md
session 25) two rounds took Fashion-MNIST's SimCLR vectors from 0.643 to 0.682, OpenMoji's
groups from 0.240 to 0.255 and the demo shop's fused vectors from 0.815 to 0.877; clouds of
plain noise around a centre, which k-means models exactly, lose a little (synthetic blobs:
0.975 to 0.952). Ten restarts instead of three narrowed the seeds' spread (Fashion-MNIST
without smoothing: 0.58-0.67 with three). ``smoothing`` 0 clusters the vectors as they are;
``centroids_`` and ``medoids_`` are those of the vectors k-means ran on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.metrics import silhouette_score
from tqdm import tqdm

from recsys.catalog_intel.neighbours import as_unit_vectors, smoothed
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    # Number of clusters; None = the best silhouette among k_candidates.
    k: int | None = None
    k_candidates: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)
    # Items the silhouette of each candidate k is computed on.
    silhouette_sample: int = 5000
    # Items each candidate k is fitted on: all of them up to this many, else a seeded sample
    # holding the silhouette's. Choosing k on 5,000 items alone chose worse k on MovieLens and
    # the demo shop (NMI 0.15 to 0.02-0.06, 0.91 to 0.88; benchmarks/RESULTS.md, session 49).
    k_choice_items: int = 50_000
    n_init: int = 10
    iterations: int = 25
    seed: int = 0
    # Rounds of averaging each vector over its smoothing_k nearest neighbours before k-means
    # (0: none); skipped above smoothing_max_items items. The neighbour search is exhaustive
    # up to neighbours.EXACT_MAX distinct vectors and approximate above (10^6 items: about
    # 3 minutes on 2 cores, benchmarks/RESULTS.md, session 51).
    smoothing: int = 2
    smoothing_k: int = 10
    smoothing_max_items: int = 2_000_000


def _kmeans(unit: np.ndarray, k: int, cfg: ClusterConfig) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, D), labels (N,)) of spherical k-means."""
    km = faiss.Kmeans(
        unit.shape[1],
        k,
        niter=cfg.iterations,
        nredo=cfg.n_init,
        spherical=True,
        seed=cfg.seed,
        max_points_per_centroid=max(256, len(unit) // k + 1),
        min_points_per_centroid=1,
    )
    km.train(unit)
    _, labels = km.index.search(unit, 1)  # (N, 1)
    return km.centroids, labels[:, 0]


def medoids(unit: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k,) row of each cluster's item most similar to its centroid (-1 for an empty one)."""
    sims = np.einsum("nd,nd->n", unit, centroids[labels])  # (N,)
    order = np.lexsort((-sims, labels))  # by cluster, best first
    first = np.unique(labels[order], return_index=True)
    out = np.full(len(centroids), -1, np.int64)
    out[first[0]] = order[first[1]]
    return out


class Clusterer(BaseEstimator):
    def __init__(self, config: ClusterConfig | None = None, show_progress: bool = False):
        self.config = config
        self.show_progress = show_progress

    def fit(self, vectors) -> Clusterer:
        cfg = self.config or ClusterConfig()
        unit = as_unit_vectors(vectors)
        if cfg.k is not None and not 1 <= cfg.k <= len(unit):  # before the smoothing's work
            bound = "at least 1" if cfg.k < 1 else f"at most the {len(unit)} items"
            raise InvalidInput(f"k must be {bound}, got {cfg.k}")
        views = smoothed(
            unit, cfg.smoothing_k, cfg.smoothing, cfg.smoothing_max_items, self.show_progress
        )
        unit = views[-1]
        self.smoothing_ = len(views) - 1  # rounds applied
        self.k_scores_ = {} if cfg.k is not None else self._score_ks(unit, cfg)
        k = cfg.k if cfg.k is not None else max(self.k_scores_, key=self.k_scores_.get)
        self.k_ = int(k)
        self.centroids_, self.labels_ = _kmeans(unit, self.k_, cfg)
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_)
        if (self.sizes_ == 0).any():
            log.warning(
                "only %d of the %d clusters hold items: the vectors have fewer distinct "
                "directions than k",
                np.count_nonzero(self.sizes_),
                self.k_,
            )
        self.medoids_ = medoids(unit, self.centroids_, self.labels_)
        return self

    def _score_ks(self, unit: np.ndarray, cfg: ClusterConfig) -> dict[int, float]:
        rng = np.random.default_rng(cfg.seed)
        sample = rng.choice(len(unit), min(cfg.silhouette_sample, len(unit)), replace=False)
        candidates = [k for k in cfg.k_candidates if 2 <= k < len(sample)]
        if not candidates:
            raise InvalidInput("too few items to choose k; pass k (--k) explicitly")
        fitted_on, at = unit, sample  # at: the silhouette's items among those fitted
        size = max(cfg.k_choice_items, len(sample))
        if len(unit) > size:
            others = np.setdiff1d(np.arange(len(unit)), sample, assume_unique=True)
            fit = np.sort(np.r_[sample, rng.choice(others, size - len(sample), replace=False)])
            fitted_on, at = unit[fit], np.searchsorted(fit, sample)
        scored, scores = unit[sample], {}
        for k in tqdm(candidates, desc="choosing k", disable=not self.show_progress):
            _, labels = _kmeans(fitted_on, k, cfg)
            found = len(np.unique(labels[at]))
            # vectors all alike (or all apart) leave no structure to score: the worst score
            scores[k] = (
                float(silhouette_score(scored, labels[at], metric="cosine"))
                if 2 <= found < len(scored)
                else -1.0
            )
        log.info("silhouette by k: %s", {k: round(s, 4) for k, s in scores.items()})
        return scores


def describe_clusters(
    labels: np.ndarray, k: int, attributes: dict[str, tuple[sparse.csr_matrix, np.ndarray]]
) -> list[tuple[str, str, float] | None]:
    """Per cluster, the attribute value that sets it apart: (attribute, value, share of the
    cluster's items with it), the value whose share in the cluster most exceeds its share of
    the clustered items, over every attribute; None for an empty cluster or one no value sets
    apart. ``attributes``: name -> ((items, values) 0/1 matrix, the values). One sparse
    product per attribute: what names a cluster for a person ("footwear, 98%") where it had a
    number. By its share alone a value every item holds named most clusters (an auto-parts
    shop's `currency` EUR named 7 of 12)."""
    labels = np.asarray(labels)
    kept = labels >= 0
    members = sparse.csr_matrix(
        (np.ones(int(kept.sum()), dtype=np.float32), (labels[kept], np.flatnonzero(kept))),
        shape=(k, len(labels)),
    )
    sizes = np.asarray(members.sum(axis=1)).ravel()
    best: list[tuple[str, str, float] | None] = [None] * k
    lead = np.zeros(k)  # the chosen value's share above its share of all clustered items
    for name, (matrix, values) in attributes.items():
        counts = (members @ matrix).toarray()  # (k, values)
        if not counts.size:
            continue
        shares = counts / np.maximum(sizes, 1)[:, None]
        above = shares - counts.sum(axis=0) / max(int(kept.sum()), 1)
        top = above.argmax(axis=1)
        for c in np.flatnonzero(above[np.arange(k), top] > lead):
            lead[c] = above[c, top[c]]
            best[c] = (name, str(values[top[c]]), round(float(shares[c, top[c]]), 4))
    return best
