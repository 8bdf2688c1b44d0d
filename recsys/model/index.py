"""FAISS inner-product index over fused item vectors, with filters that still return k."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from recsys.model.ranking import along, first_kept, top_k_finite

log = logging.getLogger(__name__)

# A search's first breadth for the rows it must skip (a feed's seen items) is k plus at most
# this many times k, not k plus all of them: a heavy shopper's thousands of seen items rarely
# fill the top of the list (the 50 heaviest users of a 2M-event shop, 320 seen items at the
# median, found k = 40 unseen items within the first 97; benchmarks/RESULTS.md, session 29),
# and a list still short after the skip is widened 4x at a time. Without the cap the breadth,
# and HNSW's efSearch with it, grew with the user's history.
SKIP_REACH = 2


@dataclass(frozen=True)
class IndexConfig:
    # "auto" (flat up to exact_max_items, HNSW above; IVF from ivf_min_items when set),
    # "flat", "ivf" or "hnsw".
    kind: str = "auto"
    exact_max_items: int = 50_000
    # From this many items "auto" builds IVF (it builds in minutes where HNSW takes far
    # longer, and its lists are mapped from the bundle's file). None: never. Off by default:
    # on the 10^6-item synthetic shop's fused vectors (inner products of unnormalised
    # blocks) IVF reached recall@10 0.464 at 512 of 4,000 lists (benchmarks/RESULTS.md).
    ivf_min_items: int | None = None
    # IVF: number of lists (0 = 4 * sqrt(n)); lists probed per query (0 = the fewest of
    # NPROBE_STEPS reaching target_recall, measured at build on sampled item queries).
    nlist: int = 0
    nprobe: int = 0
    target_recall: float = 0.95
    # HNSW: neighbours per node and search breadth.
    hnsw_m: int = 32
    ef_search: int = 128
    # An allowed set smaller than this share of the catalog is scored exactly instead.
    exact_filter_share: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"IndexConfig.kind {self.kind!r}: use auto, flat, ivf or hnsw")
        if not 0 < self.target_recall <= 1:
            raise ValueError(
                f"IndexConfig.target_recall must be in (0, 1], got {self.target_recall}"
            )


@dataclass(frozen=True)
class Projection:
    """The columns one kind of query reads, each with a scale s > 0.

    ``data`` keeps those columns of the item vectors times s and ``queries`` keeps them
    divided by s: the inner products are those of the full vectors (every such query is 0 in
    the columns left out), while an index built on ``data`` is laid out in the space these
    queries see, not in one that blocks they never read dominate.
    """

    columns: np.ndarray  # (K,) int64
    scale: np.ndarray  # (K,) float32, > 0

    def data(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vectors[:, self.columns] * self.scale, dtype=np.float32)

    def queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.atleast_2d(queries)[:, self.columns] / self.scale
        return np.ascontiguousarray(queries, dtype=np.float32)

    def is_identity(self, dim: int) -> bool:
        return len(self.columns) == dim and bool(np.all(self.scale == 1.0))


# nprobe values tried, in order, when IndexConfig.nprobe is 0; queries and k of the check.
NPROBE_STEPS = (8, 16, 32, 64, 128, 256, 512)
RECALL_QUERIES = 1_000
RECALL_K = 10


class VectorIndex:
    """Maximum inner product search; row numbers in, row numbers out.

    Searches never change the shared FAISS index (search parameters go with each call), so
    one index serves several threads at once. ``use_gpu`` moves flat and IVF indexes to GPU 0
    when faiss-gpu finds one; ``on_gpu`` says whether it did.
    """

    def __init__(self, vectors: np.ndarray, index: faiss.Index, config: IndexConfig):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = index
        self.config = config
        self.on_gpu = _is_gpu(index)

    @classmethod
    def build(
        cls, vectors: np.ndarray, config: IndexConfig | None = None, use_gpu: bool = False
    ) -> VectorIndex:
        config = config or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        kind = resolved_kind(config, len(vectors))
        index = _make_index(kind, vectors, config)
        index.add(vectors)
        if kind == "ivf":
            calibrate_nprobe(index, vectors, config)
        log.info("built %s index over %d vectors of %d dims", kind, *vectors.shape)
        return cls(vectors, _maybe_gpu(index, kind, use_gpu), config)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def kind(self) -> str:
        return resolved_kind(self.config, len(self.vectors))

    def search(self, queries: np.ndarray, k: int, allowed=None, exclude=None):
        """Top-k rows per query -> (rows (Q, k), scores (Q, k)); -1 / -inf pad short results.

        ``allowed``: boolean mask over rows, shared by all queries (stock, category, candidates);
        ``exclude``: per query, an array of rows never to return (seen items, the query item),
        or one (Q, E) array for all queries (vectorised: the neighbour table's self-exclusion).
        Filtered searches over-fetch and widen until k rows pass; a small allowed set is
        scored exactly, so k rows come back whenever k rows pass the filters.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if exclude is None:
            exclude = np.zeros((len(queries), 0), dtype=np.int64)
        elif not (isinstance(exclude, np.ndarray) and exclude.ndim == 2):
            exclude = [np.asarray([] if e is None else e, dtype=np.int64) for e in exclude]
        n = len(self.vectors)
        small = max(k, self.config.exact_filter_share * n)
        passing = n if allowed is None else np.count_nonzero(allowed)  # once: a catalog's pass
        if allowed is not None and passing <= small:
            return self._exact(queries, k, np.flatnonzero(allowed), exclude)
        searched = 0  # the breadth the batched search found short answers at
        if allowed is None:  # one batched search; short answers are widened one by one below
            longest = max((len(e) for e in exclude), default=0)
            searched = min(k + min(longest, SKIP_REACH * k), n)
            rows, scores = self._search_batch(queries, k, exclude, searched)
        else:
            rows = np.full((len(queries), k), -1, dtype=np.int64)
            scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q in np.flatnonzero((rows < 0).any(axis=1)):
            rows[q], scores[q] = self._search_one(
                queries[q], k, allowed, exclude[q], searched, passing
            )
        return rows, scores

    def _search_batch(self, queries: np.ndarray, k: int, exclude, fetch: int):
        """(rows (Q, k), scores (Q, k)) from one search fetching ``fetch`` rows (k plus the
        longest exclusion list, at most ``SKIP_REACH`` k more); -1 where too few were left."""
        found_scores, found = self._raw_search(queries, fetch)  # (Q, fetch)
        keep = found >= 0
        if isinstance(exclude, np.ndarray):
            keep &= ~(found[:, :, None] == exclude[:, None, :]).any(axis=2)
        else:
            for q, blocked in enumerate(exclude):
                keep[q] &= ~_among(found[q], blocked)
        return first_kept(found, found_scores, keep, k)

    def _search_one(self, query, k: int, allowed, blocked: np.ndarray, searched: int, passing: int):
        """(rows (k,), scores (k,)) of one query, widening 4x at a time until k rows pass;
        ``searched``: a breadth the batched search already found this query short at (not
        searched again: the same search gives the same answer); ``passing``: how many rows
        ``allowed`` holds."""
        n = len(self.vectors)
        fetch = k + min(len(blocked), SKIP_REACH * k)
        if allowed is not None:
            fetch = int(fetch * _over_fetch(n / max(passing, 1))) + k
        while True:
            fetch = min(fetch, n)
            if fetch == searched and fetch < n:
                fetch *= 4
                continue
            found_scores, found = self._raw_search(query[None, :], fetch)
            found_scores, found = found_scores[0], found[0]
            keep = found >= 0
            if allowed is not None:
                keep &= allowed[np.where(keep, found, 0)]
            keep &= ~_among(found, blocked)
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
        """FAISS's (scores (Q, fetch), rows (Q, fetch)); HNSW's breadth is passed per call."""
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.ef_search, fetch))
            return self.index.search(queries, fetch, params=params)
        return self.index.search(queries, fetch)

    def _exact(self, queries: np.ndarray, k: int, rows: np.ndarray, exclude):
        """Brute-force scores over a row subset (numpy): small candidate lists, fallbacks."""
        if not len(rows):  # the filters pass no row
            shape = (len(queries), k)
            return np.full(shape, -1, dtype=np.int64), np.full(shape, -np.inf, dtype=np.float32)
        scores = queries @ self.vectors[rows].T  # (Q, R)
        for q, blocked in enumerate(exclude):
            if len(blocked):
                scores[q, _among(rows, blocked)] = -np.inf
        best = top_k_finite(scores, k)  # (Q, k) columns of scores, -1 where none is left
        valid = best >= 0
        out_rows = np.where(valid, rows[np.maximum(best, 0)], -1)
        out_scores = np.where(valid, along(scores, np.maximum(best, 0)), -np.inf)
        return out_rows.astype(np.int64), out_scores.astype(np.float32)

    def save(self, path: str | Path) -> Path:
        index = self.index
        if hasattr(faiss, "index_gpu_to_cpu") and _is_gpu(index):
            index = faiss.index_gpu_to_cpu(index)
        faiss.write_index(index, str(path))
        return Path(path)

    @classmethod
    def load(
        cls, path: str | Path, vectors: np.ndarray, config: IndexConfig, use_gpu: bool = False
    ) -> VectorIndex:
        # Mapped, not read: the flat codes (flat, HNSW storage), the HNSW graph and the IVF
        # lists stay in the page cache, shared by every process serving this bundle (faiss
        # 1.15: loading the 100k-item benchmark bundle's HNSW index adds 1 MB of private
        # memory mapped, 88 MB read).
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        if index.ntotal != len(vectors) or index.d != vectors.shape[1]:
            raise ValueError(
                f"index {path} holds {index.ntotal}x{index.d}, vectors are {vectors.shape}"
            )
        kind = resolved_kind(config, len(vectors))
        return cls(vectors, _maybe_gpu(index, kind, use_gpu), config)


def resolved_kind(config: IndexConfig, n: int) -> str:
    if config.kind != "auto":
        return config.kind
    if n <= config.exact_max_items:
        return "flat"
    if config.ivf_min_items is not None and n >= config.ivf_min_items:
        return "ivf"
    return "hnsw"


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
    index.train(_training_sample(vectors, nlist))
    return index


def _training_sample(vectors: np.ndarray, nlist: int, per_list: int = 64) -> np.ndarray:
    """The rows k-means sees: at most ``per_list`` per list (FAISS's own advice is 39-256)."""
    if len(vectors) <= nlist * per_list:
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), nlist * per_list, replace=False)
    return vectors[np.sort(rows)]


def calibrate_nprobe(index: faiss.Index, vectors: np.ndarray, config: IndexConfig) -> float:
    """Set ``index.nprobe`` to ``config.nprobe``, or to the fewest of ``NPROBE_STEPS`` whose
    recall@10 against exact search on sampled item queries reaches ``config.target_recall``
    -> the recall measured at the chosen value."""
    n = len(vectors)
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(n, min(RECALL_QUERIES, n), replace=False)]
    k = min(RECALL_K, n)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    truth = exact.search(queries, k)[1]
    steps = (config.nprobe,) if config.nprobe else NPROBE_STEPS
    for nprobe in steps:
        index.nprobe = min(nprobe, index.nlist)
        found = index.search(queries, k)[1]
        hits = (found[:, :, None] == truth[:, None, :]).any(axis=2)
        recall = float(hits.mean())
        if recall >= config.target_recall or index.nprobe == index.nlist:
            break
    log.info("IVF over %d lists probes %d: recall@%d %.3f", index.nlist, index.nprobe, k, recall)
    if recall < config.target_recall:
        log.warning(
            "IVF reaches recall@%d %.3f at most (target %.2f): prefer --index hnsw or flat",
            k,
            recall,
            config.target_recall,
        )
    return recall


def _maybe_gpu(index: faiss.Index, kind: str, use_gpu: bool) -> faiss.Index:
    """Flat and IVF indexes go to GPU 0 with faiss-gpu; HNSW stays on the CPU."""
    if not use_gpu or kind == "hnsw" or not hasattr(faiss, "StandardGpuResources"):
        return index
    if faiss.get_num_gpus() < 1:
        return index
    log.info("moving the %s index to the GPU", kind)
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def _is_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(index).__name__


def _over_fetch(ratio: float) -> float:
    """``ratio`` (rows over rows that pass, at most 16) rounded up to an eighth of an octave:
    a few rows sold out or back in stock leave a search's breadth, and so its answer, as it
    was (``Recommender.feed_unchanged`` relies on that), at most 9% wider than the ratio."""
    return float(2.0 ** (np.ceil(np.log2(min(max(ratio, 1.0), 16.0)) * 8 - 1e-9) / 8))


def _among(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is one of ``rows`` (a request's few seen items): a sort and a
    binary search, a sixth of what ``np.isin`` costs at these sizes."""
    if not len(rows):
        return np.zeros(len(values), dtype=bool)
    rows = np.sort(rows)
    at = np.minimum(np.searchsorted(rows, values), len(rows) - 1)
    return rows[at] == values
