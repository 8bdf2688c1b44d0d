"""FAISS index: exact results match brute force; filters never leak and still return k."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recsys.model.index import SKIP_REACH, IndexConfig, Projection, VectorIndex, resolved_kind


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(1)
    return rng.normal(size=(2000, 16)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_filters_never_return_filtered_items_and_still_return_k(vectors, kind):
    rng = np.random.default_rng(2)
    index = VectorIndex.build(vectors, IndexConfig(kind=kind, nprobe=64))
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    for share in (0.5, 0.2, 0.01):
        allowed = rng.random(len(vectors)) < share
        exclude = [np.flatnonzero(allowed)[:7] for _ in queries]
        rows, scores = index.search(queries, 10, allowed, exclude)
        assert (rows >= 0).all(), f"{kind} returned fewer than k at share {share}"
        for row, banned in zip(rows, exclude, strict=True):
            assert allowed[row].all() and not set(row) & set(banned.tolist())
            assert len(set(row.tolist())) == 10
        assert np.all(np.diff(scores, axis=1) <= 1e-5)


def test_flat_search_matches_brute_force_with_filters(vectors):
    rng = np.random.default_rng(3)
    index = VectorIndex.build(vectors, IndexConfig(kind="flat"))
    query = rng.normal(size=16).astype(np.float32)
    allowed = rng.random(len(vectors)) < 0.3
    rows, _ = index.search(query, 10, allowed, [np.array([5, 6])])
    scores = vectors @ query
    scores[~allowed] = -np.inf
    scores[[5, 6]] = -np.inf
    assert rows[0].tolist() == np.argsort(-scores)[:10].tolist()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("filtered", [False, True])
def test_a_shopper_who_saw_the_whole_top_gets_the_next_k_items(vectors, kind, filtered):
    """A heavy shopper's seen items can fill the top of the list many times over k: the
    search starts narrower than k plus all of them and widens until k unseen rows remain."""
    rng = np.random.default_rng(5)
    index = VectorIndex.build(vectors, IndexConfig(kind=kind, ef_search=64))
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    allowed = rng.random(len(vectors)) < 0.8 if filtered else None
    exact = queries @ vectors.T
    if allowed is not None:
        exact[:, ~allowed] = -np.inf
    order = np.argsort(-exact, axis=1)
    seen = [order[0, :300], order[1, :300:2], rng.choice(len(vectors), 900, replace=False)]
    breadths, raw_search = [], index._raw_search
    index._raw_search = lambda q, fetch: breadths.append(fetch) or raw_search(q, fetch)
    rows, _ = index.search(queries, 10, allowed, seen)
    if not filtered:  # a short answer widens from the batched search's breadth, not again at it
        assert breadths[0] == 10 + SKIP_REACH * 10 and breadths[0] not in breadths[1:]
    for q, skipped in enumerate(seen):
        left = exact[q].copy()
        left[skipped] = -np.inf
        wanted = np.argsort(-left)[:10]
        found = set(rows[q].tolist())
        assert not found & set(skipped.tolist()) and -1 not in found
        assert len(found & set(wanted.tolist())) >= (10 if kind == "flat" else 9)


def test_fewer_allowed_than_k_pads(vectors):
    index = VectorIndex.build(vectors)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[[3, 9, 27]] = True
    rows, scores = index.search(vectors[:1], 5, allowed)
    assert set(rows[0][:3].tolist()) == {3, 9, 27}
    assert (rows[0][3:] == -1).all() and np.isinf(scores[0][3:]).all()


def test_auto_kind_is_exact_for_small_catalogs_and_overridable(vectors):
    assert VectorIndex.build(vectors).kind == "flat"
    assert VectorIndex.build(vectors, IndexConfig(exact_max_items=100)).kind == "hnsw"


def test_save_load(vectors, tmp_path):
    index = VectorIndex.build(vectors, IndexConfig(kind="hnsw"))
    index.save(tmp_path / "index.faiss")
    loaded = VectorIndex.load(tmp_path / "index.faiss", vectors, IndexConfig(kind="hnsw"))
    np.testing.assert_array_equal(index.search(vectors[:3], 5)[0], loaded.search(vectors[:3], 5)[0])


def test_threads_searching_with_different_breadths_each_get_their_own_answer(vectors):
    """Search parameters go with each call: a wide search in one thread never changes the
    breadth of a narrow one running at the same time in another (gunicorn's gthread)."""
    index = VectorIndex.build(vectors, IndexConfig(kind="hnsw", hnsw_m=4, ef_search=4))
    queries = np.random.default_rng(5).normal(size=(30, 16)).astype(np.float32)
    widths = (1, 300)  # efSearch 4 and 300: different answers for the narrow one
    expected = {k: index.search(queries, k)[0] for k in widths}
    narrow_exact = VectorIndex.build(vectors, IndexConfig(kind="flat")).search(queries, 1)[0]
    assert (expected[1] != narrow_exact).any()  # the narrow search really is approximate
    jobs = [(k, q) for _ in range(20) for q in range(len(queries)) for k in widths]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: index.search(queries[job[1]], job[0])[0][0], jobs))
    for (k, q), rows in zip(jobs, answers, strict=True):
        np.testing.assert_array_equal(rows, expected[k][q])


def test_auto_index_kind_grows_with_the_catalog():
    config = IndexConfig(exact_max_items=100, ivf_min_items=1000)
    assert [resolved_kind(config, n) for n in (100, 101, 999, 1000)] == [
        "flat",
        "hnsw",
        "hnsw",
        "ivf",
    ]


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_ivf_probes_as_many_lists_as_the_target_recall_needs(target, tmp_path):
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(40, 32))
    vectors = (centres[rng.integers(0, 40, 20_000)] + rng.normal(size=(20_000, 32))).astype(
        np.float32
    )
    index = VectorIndex.build(vectors, IndexConfig(kind="ivf", target_recall=target))
    queries = vectors[rng.choice(len(vectors), 300, replace=False)] + 0.1
    exact = VectorIndex.build(vectors, IndexConfig(kind="flat"))
    truth = exact.search(queries, 10)[0]
    found = VectorIndex.load(index.save(tmp_path / "ivf.faiss"), vectors, index.config)
    rows = found.search(queries, 10)[0]
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth, strict=True)])
    assert recall >= target - 0.03  # measured on other queries than the calibration's
    assert 1 <= found.index.nprobe < found.index.nlist  # fewer lists than all of them


def test_a_projected_hnsw_graph_finds_what_queries_reading_one_block_look_for():
    # Item vectors of two blocks: the one the queries read (unit, 16 dims) and one they
    # never read, with 20x the norm. A graph laid out by both blocks misses the queries'
    # exact top 10 far more often than one laid out by the block they read.
    rng = np.random.default_rng(4)
    read = rng.normal(size=(20_000, 16)).astype(np.float32)
    read /= np.linalg.norm(read, axis=1, keepdims=True)
    ignored = 20 * rng.normal(size=(20_000, 16)).astype(np.float32)
    vectors = np.hstack([read, ignored])
    queries = np.hstack([read[:300], np.zeros((300, 16), np.float32)])
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, 1:11]  # itself first, left out
    projection = Projection(np.arange(16), np.full(16, 2.0, np.float32))
    config = IndexConfig(kind="hnsw", hnsw_m=16, ef_search=32)
    full = VectorIndex.build(vectors, config)
    projected = VectorIndex.build(projection.data(vectors), config)
    own = np.arange(300)[:, None]

    def recall(index, asked):
        rows, scores = index.search(asked, 10, None, own)
        exact = np.take_along_axis(queries @ vectors.T, rows, axis=1)
        np.testing.assert_allclose(scores, exact, atol=1e-4)  # the same inner products
        return np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth, strict=True)])

    assert recall(projected, projection.queries(queries)) >= 0.9
    assert recall(full, queries) <= 0.5


def test_a_few_rows_hidden_outside_a_filtered_answer_leave_it_as_it_was(vectors):
    """Selling out a few items that an HNSW answer does not list changes nothing in it: the
    search's breadth (HNSW's efSearch grows with it) follows the share of rows that pass in
    steps, not row by row (kept feeds rely on it, ``Recommender.feed_unchanged``)."""
    rng = np.random.default_rng(5)
    index = VectorIndex.build(vectors, IndexConfig(kind="hnsw"))
    breadths, raw_search = [], index._raw_search
    index._raw_search = lambda q, fetch: breadths.append(fetch) or raw_search(q, fetch)
    query = rng.normal(size=16).astype(np.float32)
    seen = [rng.choice(len(vectors), 400, replace=False)]
    allowed = np.ones(len(vectors), dtype=bool)
    allowed[:2] = False
    rows, scores = index.search(query, 20, allowed, seen)
    first = breadths[-1]
    outside = np.setdiff1d(np.arange(len(vectors)), np.r_[rows.ravel(), seen[0]])
    for hidden in (3, 7, 15, 40):
        fewer = allowed.copy()
        fewer[outside[:hidden]] = False
        again = index.search(query, 20, fewer, seen)
        assert breadths[-1] == first, hidden
        np.testing.assert_array_equal(again[0], rows)
        np.testing.assert_array_equal(again[1], scores)
    skip = min(400, SKIP_REACH * 20)  # the seen rows the first breadth makes room for
    assert first >= (20 + skip) * len(vectors) / allowed.sum() + 20  # rounded up, never down
