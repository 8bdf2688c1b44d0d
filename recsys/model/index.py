"""FAISS inner-product index over fused item vectors, with filters that still return k."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)


@dataclass
class IndexConfig:
    # "auto" (flat up to exact_max_items, HNSW above), "flat", "ivf" or "hnsw".
    kind: str = "auto"
    exact_max_items: int = 50_000
    # IVF: number of lists (0 = 4 * sqrt(n)) and lists probed per query.
    nlist: int = 0
    nprobe: int = 16
    # HNSW: neighbours per node and search breadth.
    hnsw_m: int = 32
    ef_search: int = 128
    # Move flat/IVF indexes to the GPU when faiss-gpu and a GPU are present.
    use_gpu: bool = False
    # An allowed set smaller than this share of the catalog is scored exactly instead.
    exact_filter_share: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"IndexConfig.kind {self.kind!r}: use auto, flat, ivf or hnsw")


class VectorIndex:
    """Maximum inner product search; row numbers in, row numbers out."""

    def __init__(self, vectors: np.ndarray, index: faiss.Index, config: IndexConfig):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = index
        self.config = config

    @classmethod
    def build(cls, vectors: np.ndarray, config: IndexConfig | None = None) -> VectorIndex:
        config = config or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        kind = resolved_kind(config, len(vectors))
        index = _make_index(kind, vectors, config)
        index.add(vectors)
        log.info("built %s index over %d vectors of %d dims", kind, *vectors.shape)
        return cls(vectors, _maybe_gpu(index, kind, config), config)

    @property
    def kind(self) -> str:
        return resolved_kind(self.config, len(self.vectors))

    def search(self, queries: np.ndarray, k: int, allowed=None, exclude=None):
        """Top-k rows per query -> (rows (Q, k), scores (Q, k)); -1 / -inf pad short results.

        ``allowed``: boolean mask over rows, shared by all queries (stock, category, candidates);
        ``exclude``: per query, an array of rows never to return (seen items, the query item).
        Filtered searches over-fetch and widen until k rows pass; a small allowed set is
        scored exactly, so k rows come back whenever k rows pass the filters.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        exclude = exclude if exclude is not None else [None] * len(queries)
        n = len(self.vectors)
        if allowed is not None and allowed.sum() <= max(k, self.config.exact_filter_share * n):
            return self._exact(queries, k, np.flatnonzero(allowed), exclude)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q, query in enumerate(queries):
            rows[q], scores[q] = self._search_one(query, k, allowed, exclude[q])
        return rows, scores

    def _search_one(self, query: np.ndarray, k: int, allowed, exclude):
        n = len(self.vectors)
        blocked = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude)
        fetch = k + len(blocked)
        if allowed is not None:
            fetch = int(fetch * min(n / max(allowed.sum(), 1), 16)) + k
        while True:
            fetch = min(fetch, n)
            found_scores, found = self._raw_search(query[None, :], fetch)
            keep = found >= 0
            if allowed is not None:
                keep &= allowed[np.where(keep, found, 0)]
            keep &= ~np.isin(found, blocked)
            if keep.sum() >= k or fetch >= n:
                break
            fetch *= 4
        if keep.sum() < k and fetch >= n and self.kind != "flat":
            # Approximate indexes may miss rows at full width: finish exactly.
            mask = np.ones(n, dtype=bool) if allowed is None else allowed
            return self._exact(query[None, :], k, np.flatnonzero(mask), [blocked])
        out_rows = np.full(k, -1, dtype=np.int64)
        out_scores = np.full(k, -np.inf, dtype=np.float32)
        chosen = found[keep][:k]
        out_rows[: len(chosen)], out_scores[: len(chosen)] = chosen, found_scores[keep][:k]
        return out_rows, out_scores

    def _raw_search(self, queries: np.ndarray, fetch: int):
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.config.ef_search, fetch)
        scores, rows = self.index.search(queries, fetch)
        return scores[0], rows[0]

    def _exact(self, queries: np.ndarray, k: int, rows: np.ndarray, exclude):
        """Brute-force scores over a row subset (numpy): small candidate lists, fallbacks."""
        scores = queries @ self.vectors[rows].T  # (Q, R)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q in range(len(queries)):
            row_scores = scores[q].copy()
            if exclude[q] is not None and len(exclude[q]):
                row_scores[np.isin(rows, exclude[q])] = -np.inf
            order = np.argsort(-row_scores, kind="stable")[:k]
            order = order[np.isfinite(row_scores[order])]
            out_rows[q, : len(order)], out_scores[q, : len(order)] = rows[order], row_scores[order]
        return out_rows, out_scores

    def save(self, path: str | Path) -> Path:
        index = self.index
        if hasattr(faiss, "index_gpu_to_cpu") and _is_gpu(index):
            index = faiss.index_gpu_to_cpu(index)
        faiss.write_index(index, str(path))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, vectors: np.ndarray, config: IndexConfig) -> VectorIndex:
        index = faiss.read_index(str(path))
        if index.ntotal != len(vectors) or index.d != vectors.shape[1]:
            raise ValueError(
                f"index {path} holds {index.ntotal}x{index.d}, vectors are {vectors.shape}"
            )
        return cls(vectors, _maybe_gpu(index, resolved_kind(config, len(vectors)), config), config)


def resolved_kind(config: IndexConfig, n: int) -> str:
    if config.kind != "auto":
        return config.kind
    return "flat" if n <= config.exact_max_items else "hnsw"


def _make_index(kind: str, vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    n, dim = vectors.shape
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 2 * config.hnsw_m
        return index
    nlist = config.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.nprobe = min(config.nprobe, nlist)
    return index


def _maybe_gpu(index: faiss.Index, kind: str, config: IndexConfig) -> faiss.Index:
    """Flat and IVF indexes go to GPU 0 with faiss-gpu; HNSW stays on the CPU."""
    if not config.use_gpu or kind == "hnsw" or not hasattr(faiss, "StandardGpuResources"):
        return index
    if faiss.get_num_gpus() < 1:
        return index
    log.info("moving the %s index to the GPU", kind)
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def _is_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__
