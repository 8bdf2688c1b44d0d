"""recsys.catalog_intel: duplicates, outliers, clusters and few-label tags on item vectors.

Fast paths are checked against slow, obvious NumPy references on random inputs; the
estimators on planted structure a shop would recognise (a re-uploaded photo, an odd batch,
product families)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from recsys.catalog_intel import (
    ClusterConfig,
    Clusterer,
    DuplicateConfig,
    DuplicateFinder,
    OutlierConfig,
    OutlierScorer,
    TagConfig,
    Tagger,
)
from recsys.catalog_intel.copy_descriptor import center, copy_descriptors
from recsys.catalog_intel.duplicates import (
    calibrate_threshold,
    duplicate_sets,
    self_copy_similarities,
    set_rows,
)
from recsys.catalog_intel.edits import realistic_edits
from recsys.catalog_intel.neighbours import as_unit_vectors, knn, pairs_above, smoothed
from recsys.catalog_intel.outliers import top_rows
from recsys.errors import InvalidInput


def blobs(n_per: int = 60, k: int = 5, dim: int = 16, noise: float = 0.25, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


# --- neighbours against brute force -----------------------------------------------------


def test_knn_matches_a_brute_force_reference_and_never_returns_the_item_itself():
    x = as_unit_vectors(np.random.default_rng(1).normal(size=(300, 8)))
    sims, rows = knn(x, 5)
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    reference = np.argsort(-full, axis=1)[:, :5]
    assert (rows != np.arange(300)[:, None]).all()
    np.testing.assert_array_equal(rows, reference)
    np.testing.assert_allclose(sims, np.take_along_axis(full, reference, 1), atol=1e-5)


def test_knn_leaves_the_item_out_when_an_exact_duplicate_ties_with_it():
    x = as_unit_vectors(np.random.default_rng(2).normal(size=(50, 4)))
    x[7] = x[3]
    _, rows = knn(x, 1)
    assert rows[3, 0] == 7 and rows[7, 0] == 3


def test_pairs_above_is_every_pair_over_the_threshold_once():
    x = as_unit_vectors(np.random.default_rng(3).normal(size=(200, 3)))
    left, right, sims = pairs_above(x, 0.9)
    full = x @ x.T
    i, j = np.nonzero(np.triu(full >= 0.9, k=1))
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == sorted(
        zip(i.tolist(), j.tolist(), strict=True)
    )
    np.testing.assert_allclose(sims, full[left, right], atol=1e-5)


def shared_vectors(seed: int = 4):
    """Unit rows of which many share a vector: 80 distinct ones held by 1-4 rows each, one
    by 15 (more than the neighbours asked for), shuffled."""
    rng = np.random.default_rng(seed)
    distinct = as_unit_vectors(rng.normal(size=(80, 6)))
    held = rng.permutation(np.repeat(np.arange(80), np.r_[15, rng.integers(1, 5, 79)]))
    return distinct[held], held


def test_items_sharing_a_vector_are_searched_once_and_answered_as_by_brute_force(monkeypatch):
    from recsys.catalog_intel import neighbours

    x, _ = shared_vectors()
    searched = []
    real = neighbours.search_index
    monkeypatch.setattr(
        neighbours, "search_index", lambda u, *hits: searched.append(len(u)) or real(u, *hits)
    )
    sims, rows = knn(x, 5)
    assert searched == [80]  # the distinct vectors, not the rows
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    assert (rows != np.arange(len(x))[:, None]).all()
    assert all(len(set(r)) == 5 for r in rows.tolist())
    np.testing.assert_allclose(sims, np.take_along_axis(full, rows, 1), atol=1e-5)
    np.testing.assert_allclose(sims, -np.sort(-full, axis=1)[:, :5], atol=1e-5)

    left, right, score = pairs_above(x, 0.9)
    assert searched == [80, 80]
    i, j = np.nonzero(np.triu(full >= 0.9, k=1))
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == sorted(
        zip(i.tolist(), j.tolist(), strict=True)
    )
    np.testing.assert_allclose(score, full[left, right], atol=1e-5)


def test_items_of_a_vector_held_very_often_pair_with_its_first_item_only(monkeypatch):
    from scipy.sparse.csgraph import connected_components

    from recsys.catalog_intel import neighbours

    monkeypatch.setattr(neighbours, "STAR_FROM", 3)
    x, held = shared_vectors()
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    left, right, _ = pairs_above(x, 0.9)
    assert (left < right).all() and (full[left, right] >= 0.9 - 1e-5).all()
    own = np.flatnonzero(held == 0)  # the 15 rows of one vector: 14 pairs, not 105
    assert ((held[left] == 0) & (held[right] == 0)).sum() == 14
    assert set(left[np.isin(right, own) & np.isin(left, own)]) == {own[0]}
    i, j = np.nonzero(np.triu(full >= 0.9, k=1))
    assert len(left) < len(i)

    def sets(a, b):
        graph = np.zeros((len(x), len(x)), bool)
        graph[a, b] = True
        return connected_components(graph, directed=False)[1]

    assert normalized_mutual_info_score(sets(i, j), sets(left, right)) == 1.0


def test_above_exact_max_an_ivf_finds_nearly_every_neighbour_and_pair(monkeypatch):
    from recsys.catalog_intel import neighbours

    monkeypatch.setattr(neighbours, "EXACT_MAX", 100)
    built = []
    real = neighbours.search_index
    monkeypatch.setattr(neighbours, "search_index", lambda *a: built.append(real(*a)) or built[-1])
    x, _ = blobs(n_per=400, k=5, dim=16, noise=0.6)
    x = as_unit_vectors(x)
    x[1::50] = x[::50] + 0.02 * np.random.default_rng(5).normal(size=x[::50].shape)
    x = as_unit_vectors(x)
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    sims, rows = knn(x, 10)
    assert (rows != np.arange(len(x))[:, None]).all()
    np.testing.assert_allclose(sims, np.take_along_axis(full, rows, 1), atol=1e-5)
    kth = -np.sort(-full, axis=1)[:, 9]
    assert (sims >= kth[:, None] - 1e-5).mean() > 0.9  # recall@10

    left, right, _ = pairs_above(x, 0.95)
    assert (full[left, right] >= 0.95 - 1e-5).all() and (left < right).all()
    truth = set(zip(*np.nonzero(np.triu(full >= 0.95, k=1)), strict=True))
    found = set(zip(left.tolist(), right.tolist(), strict=True))
    assert len(truth) >= 40 and len(truth & found) >= 0.95 * len(truth)
    assert [type(index).__name__ for index in built] == ["IndexIVFFlat"] * 2


@pytest.mark.parametrize("collide", [False, True])
def test_distinct_vectors_are_the_distinct_rows_even_when_hashes_collide(monkeypatch, collide):
    from recsys.catalog_intel import neighbours

    if collide:  # every row one hash: the rows' bits decide
        monkeypatch.setattr(neighbours, "_row_hashes", lambda words: np.zeros(len(words), "u8"))
    x = np.random.default_rng(4).normal(size=(300, 6)).astype(np.float32)
    x[1::4] = x[::4][: len(x[1::4])]
    x[5::9] = x[2]
    distinct = neighbours.Distinct.of(x)
    _, first, group = np.unique(x, axis=0, return_index=True, return_inverse=True)
    assert sorted(distinct.rows.tolist()) == sorted(first.tolist())
    same = group.ravel()[:, None] == group.ravel()[None, :]
    np.testing.assert_array_equal(distinct.group[:, None] == distinct.group[None, :], same)
    assert (distinct.rows[distinct.group] <= np.arange(len(x))).all()  # numbered by first row


@pytest.mark.parametrize("exact_max", [100, 100_000])
def test_the_kth_similarity_is_the_last_column_of_knn(monkeypatch, exact_max):
    from recsys.catalog_intel import neighbours

    monkeypatch.setattr(neighbours, "EXACT_MAX", exact_max)  # the IVF, and the exact search
    x, _ = blobs(n_per=100, k=5, dim=16, noise=0.6)
    x[1::7] = x[::7][: len(x[1::7])]  # items that share a vector
    x = as_unit_vectors(x)
    sims, _ = knn(x, 10)
    np.testing.assert_array_equal(neighbours.kth_similarity(x, 10), sims[:, -1])


def test_queries_an_ivf_cannot_fill_are_searched_again_exhaustively():
    import faiss

    from recsys.catalog_intel.neighbours import _search

    x = as_unit_vectors(np.random.default_rng(6).normal(size=(500, 8)))
    index = faiss.index_factory(8, "IVF50,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    index.nprobe = 1  # one list of about 10 vectors: short of 30 hits
    assert (index.search(x, 30)[1] < 0).any()
    sims, rows = _search(index, x, 30, x)
    assert (rows >= 0).all()
    np.testing.assert_allclose(sims, -np.sort(-(x @ x.T), axis=1)[:, :30], atol=1e-5)


def test_vectors_must_be_a_finite_matrix():
    with pytest.raises(InvalidInput, match="vectors must be an"):
        OutlierScorer().fit(np.ones(5))
    with pytest.raises(InvalidInput, match="NaN"):
        Clusterer(ClusterConfig(k=2)).fit(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]))


# --- duplicates ---------------------------------------------------------------------------


def test_duplicate_sets_are_connected_components_numbered_as_listed():
    """A pair's set number is its set's place in the listed sets (largest first), so a row
    of `recsys catalog duplicates` points at its set in the document's "sets"."""
    sets = duplicate_sets(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert sets[0] == sets[1] == sets[2] != sets[4] == sets[5] and sets[3] == -1
    sets = duplicate_sets(7, np.array([0, 2, 3]), np.array([1, 3, 4]))  # {0, 1}, {2, 3, 4}
    assert sets.tolist() == [1, 1, 0, 0, 0, -1, -1]
    rows, sizes = set_rows(sets)
    assert rows.tolist() == [2, 3, 4, 0, 1] and sizes.tolist() == [3, 2]


def test_planted_reuploads_form_duplicate_sets_and_lookalikes_do_not():
    x, _ = blobs()
    rng = np.random.default_rng(4)
    copies = x[[3, 3, 90]] + 0.01 * rng.normal(size=(3, x.shape[1]))  # two of 3, one of 90
    finder = DuplicateFinder(DuplicateConfig(threshold=0.999)).fit(np.vstack([x, copies]))
    sets = [sorted(s.tolist()) for s in finder.sets()]
    assert sets == [[3, 300, 301], [90, 302]]
    assert (np.diff(finder.pairs_.similarity) <= 0).all()  # most similar first


def test_pairs_of_one_products_variants_are_left_out_before_the_sets():
    x, _ = blobs()
    rng = np.random.default_rng(4)
    copies = x[[3, 3, 90]] + 0.01 * rng.normal(size=(3, x.shape[1]))  # two of 3, one of 90
    vectors, cfg = np.vstack([x, copies]), DuplicateConfig(threshold=0.999)
    groups = np.full(len(vectors), -1)
    groups[[3, 300]], groups[301] = 7, 8  # 300 a size of 3's product, 301 a re-listing
    finder = DuplicateFinder(cfg).fit(vectors, groups=groups)  # 90, 302: no product named
    pairs = set(zip(finder.pairs_.left.tolist(), finder.pairs_.right.tolist(), strict=True))
    assert (3, 300) not in pairs and {(3, 301), (300, 301), (90, 302)} <= pairs
    assert finder.grouped_out_ == 1
    assert [sorted(s.tolist()) for s in finder.sets()] == [[3, 300, 301], [90, 302]]
    groups[[90, 302]] = 5  # one product: its set goes
    finder = DuplicateFinder(cfg).fit(vectors, groups=groups)
    assert [sorted(s.tolist()) for s in finder.sets()] == [[3, 300, 301]]
    assert finder.grouped_out_ == 2
    assert DuplicateFinder(cfg).fit(vectors).grouped_out_ == 0


def test_titles_keep_a_relisting_and_part_items_that_only_their_vectors_pair():
    # rows 0-2 meet by vector (one year and genre, say), as rows 3-4 and 5-6 do; only 0 and
    # 1 share their title; row 3 has none, so the vectors decide for 3-4
    vectors = np.array([[1, 0, 0]] * 3 + [[0, 1, 0]] * 2 + [[0, 0, 1]] * 2, dtype=np.float32)
    titles = ["Harbour Lights", "harbour lights", "The Quiet Orchard", None, "Anything"]
    titles += ["iPhone 7, 64 GB", "iPhone 8, 64 GB"]
    config = DuplicateConfig(threshold=0.95)
    finder = DuplicateFinder(config).fit(vectors, titles=titles)
    pairs = set(zip(finder.pairs_.left.tolist(), finder.pairs_.right.tolist(), strict=True))
    assert pairs == {(0, 1), (3, 4)} and finder.scored_by_ == "cosine and titles"
    assert len(DuplicateFinder(config).fit(vectors).pairs_.left) == 5  # by vector alone
    with pytest.raises(InvalidInput, match="titles has 2 rows"):
        DuplicateFinder(config).fit(vectors, titles=titles[:2])


def test_a_chinese_relisting_keeps_its_pair_and_another_product_does_not():
    """A title without spaces was one word: the same sneakers re-listed with 包邮 ("free
    shipping") added shared no word with the original, and every such pair was dropped."""
    vectors = np.array([[1, 0]] * 3 + [[0, 1]] * 2, dtype=np.float32)
    titles = ["李宁红色运动鞋", "李宁红色运动鞋包邮", "白色连衣裙", "赤い傘", "黒い財布"]
    finder = DuplicateFinder(DuplicateConfig(threshold=0.95)).fit(vectors, titles=titles)
    pairs = set(zip(finder.pairs_.left.tolist(), finder.pairs_.right.tolist(), strict=True))
    assert pairs == {(0, 1)}  # an umbrella and a wallet: a vector's pair, not a re-listing


@pytest.mark.filterwarnings("error")  # the command line would print a RuntimeWarning
def test_two_untitled_items_keep_their_cosine_without_a_warning():
    titles = [None, "", "Harbour Lights", "Harbour Lights"]
    vectors = np.repeat(np.eye(2, dtype=np.float32), 2, axis=0)
    finder = DuplicateFinder(DuplicateConfig(threshold=0.95)).fit(vectors, titles=titles)
    pairs = set(zip(finder.pairs_.left.tolist(), finder.pairs_.right.tolist(), strict=True))
    assert pairs == {(0, 1), (2, 3)}


def test_a_one_word_title_pairs_only_with_that_word_alone():
    # each two rows meet by vector; a word added to a two-word title keeps the pair, a word
    # added to a one-word title is another item named by it
    titles = ["Ninja", "Ninja Assassin", "Heat", "HEAT", "Desert Boots", "Desert Boots - new"]
    vectors = np.repeat(np.eye(3, dtype=np.float32), 2, axis=0)
    finder = DuplicateFinder(DuplicateConfig(threshold=0.95)).fit(vectors, titles=titles)
    pairs = set(zip(finder.pairs_.left.tolist(), finder.pairs_.right.tolist(), strict=True))
    assert pairs == {(2, 3), (4, 5)}


def test_a_catalog_without_duplicates_has_no_sets():
    x, _ = blobs()
    finder = DuplicateFinder(DuplicateConfig(threshold=0.9999)).fit(x)
    assert finder.sets() == [] and len(finder.pairs_.left) == 0 and (finder.set_of_ == -1).all()


def test_calibrated_threshold_is_the_stricter_of_copies_and_flag_rate():
    copies = np.linspace(0.9, 1.0, 101)
    neighbours = np.linspace(0.0, 0.8, 101)
    cal = calibrate_threshold(copies, neighbours, DuplicateConfig(recall=0.9, max_flag_rate=0.05))
    assert cal.threshold == pytest.approx(0.91) == cal.copy_quantile
    lookalikes = np.linspace(0.0, 0.99, 101)  # lookalikes closer than edits
    cal = calibrate_threshold(copies, lookalikes, DuplicateConfig(recall=0.9, max_flag_rate=0.05))
    assert cal.threshold == pytest.approx(np.quantile(lookalikes, 0.95))


def test_duplicates_need_a_threshold_or_copy_similarities():
    x, _ = blobs()
    with pytest.raises(InvalidInput, match="--threshold"):
        DuplicateFinder().fit(x)


def shapes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 28, 28) uint8 'product photos': random rectangles and discs on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        for _ in range(3):
            y, x, h, w = rng.integers(4, 24), rng.integers(4, 24), *rng.integers(2, 8, 2)
            shade = rng.integers(80, 255)
            if rng.random() < 0.5:
                out[i][(abs(yy - y) < h) & (abs(xx - x) < w)] = shade
            else:
                out[i][np.hypot(yy - y, xx - x) < h] = shade
    return out


def test_realistic_edits_change_pixels_but_keep_the_photo():
    images = shapes(20)
    edited = realistic_edits(images, seed=1)
    assert edited.shape == images.shape and edited.dtype == np.uint8
    np.testing.assert_array_equal(edited, realistic_edits(images, seed=1))
    assert (edited != images).mean() > 0.05
    a = images.reshape(20, -1).astype(float)
    b = edited.reshape(20, -1).astype(float)
    corr = [np.corrcoef(a[i], b[i])[0, 1] for i in range(20)]
    assert np.median(corr) > 0.6


def test_copy_descriptor_finds_the_source_of_an_edited_photo():
    images = shapes(300, seed=2)
    copies = realistic_edits(images[:30], seed=3)
    d = copy_descriptors(np.concatenate([images, copies]))
    unit = center(d, d[:300].mean(axis=0))
    _, rows = knn(unit, 1)
    assert (rows[300:, 0] == np.arange(30)).mean() >= 0.9


def test_self_copy_calibration_finds_the_planted_copies_without_labels():
    images = shapes(300, seed=5)
    copies = realistic_edits(images[:10], seed=6)
    catalog = np.concatenate([images, copies])
    mean = copy_descriptors(images).mean(axis=0)

    def embed(batch):
        return center(copy_descriptors(batch), mean)

    sims = self_copy_similarities(embed, images, sample=200)
    finder = DuplicateFinder().fit(embed(catalog), copy_similarities=sims)
    found = {tuple(sorted(s.tolist())) for s in finder.sets()}
    planted = {(i, 300 + i) for i in range(10)}
    assert len(found & planted) >= 8
    assert len(found) <= 20  # few false sets


# --- outliers -----------------------------------------------------------------------------


def test_odd_items_score_highest_and_the_flagged_share_is_the_stated_rate():
    x, _ = blobs(n_per=100)
    odd = np.random.default_rng(5).normal(size=(5, x.shape[1])) * 3
    scorer = OutlierScorer(OutlierConfig(false_positive_rate=0.02)).fit(np.vstack([x, odd]))
    assert set(scorer.top(5)) == set(range(500, 505))
    assert scorer.flagged_.sum() == pytest.approx(0.02 * 505, abs=1)
    assert scorer.flagged_[500:].all()


def test_a_batch_of_identical_odd_items_is_found_with_the_default_k_not_with_k_1():
    x, _ = blobs(n_per=100)
    batch = np.tile(np.random.default_rng(6).normal(size=(1, x.shape[1])) * 3, (6, 1))
    batch += 0.001 * np.random.default_rng(7).normal(size=batch.shape)
    data = np.vstack([x, batch])
    default = OutlierScorer().fit(data)
    assert default.k_ == 10 and set(default.top(6)) == set(range(500, 506))
    near = OutlierScorer(OutlierConfig(k=1)).fit(data)
    assert not set(near.top(6)) & set(range(500, 506))


def test_the_default_k_is_two_percent_of_the_items_at_most_100():
    x, _ = blobs(n_per=1200, k=5, dim=8)  # 6,000 items: 2% would be 120
    assert OutlierScorer().fit(x).k_ == 100
    assert OutlierScorer().fit(x[:4000]).k_ == 80
    assert OutlierScorer(OutlierConfig(k=150)).fit(x).k_ == 150  # asked for: as asked


def outlier_reference(x: np.ndarray, k: int) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return 1 - np.sort(sims, axis=1)[:, -k]


def test_outlier_score_matches_the_reference():
    x = np.random.default_rng(8).normal(size=(120, 6))
    scorer = OutlierScorer(OutlierConfig(k=7)).fit(x)
    np.testing.assert_allclose(scorer.scores_, outlier_reference(x, 7), atol=1e-5)


def test_the_top_outliers_are_the_highest_scores_ties_by_row():
    rng = np.random.default_rng(3)
    for _ in range(200):  # scores of few values: ties at the cut, n past the end
        scores = rng.integers(0, 4, rng.integers(1, 40)).astype(np.float32)
        n = int(rng.integers(0, len(scores) + 3))
        expected = np.argsort(-scores, kind="stable")[:n]
        np.testing.assert_array_equal(top_rows(scores, n), expected)


# --- clusters -----------------------------------------------------------------------------


def test_kmeans_recovers_product_families_and_medoids_are_members_near_the_centre():
    x, labels = blobs()
    fitted = Clusterer(ClusterConfig(k=5, smoothing=0)).fit(x)
    assert normalized_mutual_info_score(labels, fitted.labels_) > 0.99
    assert sorted(fitted.sizes_.tolist()) == [60] * 5
    unit = as_unit_vectors(x)
    for c, m in enumerate(fitted.medoids_):
        members = np.flatnonzero(fitted.labels_ == c)
        assert m in members
        sims = unit[members] @ fitted.centroids_[c]
        assert unit[m] @ fitted.centroids_[c] == pytest.approx(sims.max(), abs=1e-6)


def test_smoothed_vectors_are_the_neighbour_graph_average_of_a_dense_reference():
    x = np.random.default_rng(2).normal(size=(80, 6))
    unit = as_unit_vectors(x)
    views = smoothed(unit, 4, 2, max_items=1000)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    w = np.zeros_like(sims)
    for i, row in enumerate(np.argsort(-sims, axis=1)[:, :4]):
        w[i, row] = np.clip(sims[i, row], 0, None)
    w = np.maximum(w, w.T) + np.eye(len(x))
    s = w / np.sqrt(np.outer(w.sum(axis=1), w.sum(axis=1)))
    expected = [unit, s @ unit, s @ s @ unit]
    assert len(views) == 3
    for got, want in zip(views, expected, strict=True):
        np.testing.assert_allclose(
            got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5
        )
    assert len(smoothed(unit, 4, 2, max_items=79)) == 1  # over the bound: as they are


def test_smoothed_clusters_keep_families_and_their_medoids_in_the_space_they_were_found():
    x, labels = blobs()
    fitted = Clusterer(ClusterConfig(k=5)).fit(x)
    assert fitted.smoothing_ == ClusterConfig().smoothing == 2
    assert normalized_mutual_info_score(labels, fitted.labels_) > 0.99
    unit = smoothed(as_unit_vectors(x), 10, 2, max_items=10_000)[-1]
    for c, m in enumerate(fitted.medoids_):
        sims = unit[fitted.labels_ == c] @ fitted.centroids_[c]
        assert fitted.labels_[m] == c
        assert unit[m] @ fitted.centroids_[c] == pytest.approx(sims.max(), abs=1e-6)


def test_k_is_chosen_by_silhouette_when_not_given():
    x, _ = blobs(k=6, noise=0.15)
    fitted = Clusterer(ClusterConfig(k_candidates=(3, 4, 5, 6, 8, 10))).fit(x)
    assert fitted.k_ == 6 and max(fitted.k_scores_, key=fitted.k_scores_.get) == 6


def test_above_k_choice_items_the_candidates_are_fitted_on_a_sample_and_k_on_all(monkeypatch):
    from recsys.catalog_intel import clusters

    x, truth = blobs(n_per=400, k=6, noise=0.15)
    fitted_on = []
    kmeans = clusters._kmeans
    monkeypatch.setattr(
        clusters,
        "_kmeans",
        lambda unit, k, cfg: (fitted_on.append(len(unit)), kmeans(unit, k, cfg))[1],
    )
    config = ClusterConfig(k_candidates=(3, 4, 6, 8), silhouette_sample=500, k_choice_items=1000)
    fitted = Clusterer(config).fit(x)
    assert fitted_on == [1000, 1000, 1000, 1000, 2400]  # each candidate on 1000, k on all
    assert fitted.k_ == 6 and normalized_mutual_info_score(truth, fitted.labels_) > 0.99


def test_a_k_above_the_items_is_refused_before_the_smoothing_work(monkeypatch):
    from recsys.catalog_intel import clusters

    def smoothing(*args, **kwargs):
        raise AssertionError("smoothed the vectors for a k that cannot be fitted")

    monkeypatch.setattr(clusters, "smoothed", smoothing)
    x, _ = blobs(n_per=4, k=3)
    with pytest.raises(InvalidInput, match="k must be at most the 12 items, got 13"):
        Clusterer(ClusterConfig(k=13)).fit(x)


def test_vectors_all_alike_get_clusters_and_a_warning_not_a_crash(caplog):
    """30 copies of one listing's vector: there is no structure to choose k by, and a fixed k
    leaves clusters empty; both answer and say so."""
    same = np.tile(np.array([[0.6, 0.8, 0.0]]), (30, 1))
    chosen = Clusterer(ClusterConfig(smoothing=0)).fit(same)
    assert set(chosen.k_scores_.values()) == {-1.0} and chosen.sizes_.sum() == 30
    fixed = Clusterer(ClusterConfig(k=5, smoothing=0)).fit(same)
    assert np.count_nonzero(fixed.sizes_) == 1
    assert "only 1 of the 5 clusters hold items" in caplog.text


# --- few-label tagging --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["linear", "propagation"])
def test_two_labels_per_family_tag_the_rest(method):
    x, truth = blobs()
    names = np.array(["shirt", "shoe", "bag", "dress", "coat"])
    labels = np.full(len(x), None, dtype=object)
    given = np.concatenate([np.flatnonzero(truth == c)[:2] for c in range(5)])
    labels[given] = names[truth[given]]
    tagger = Tagger(TagConfig(method=method)).fit(x, labels)
    assert (tagger.predictions_ == names[truth]).mean() > 0.97
    assert (tagger.confidence_[given] == 1).all() and tagger.labelled_.sum() == 10
    assert ((tagger.confidence_ > 0) & (tagger.confidence_ <= 1)).all()
    np.testing.assert_allclose(tagger.probabilities_.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("method", ["linear", "propagation"])
def test_confidence_is_lower_where_the_tag_is_wrong(method):
    x, truth = blobs(n_per=150, k=3, noise=1.2, seed=9)  # overlapping families
    labels = np.full(len(x), None, dtype=object)
    given = np.concatenate([np.flatnonzero(truth == c)[:5] for c in range(3)])
    labels[given] = truth[given].astype(str)
    tagger = Tagger(TagConfig(method=method)).fit(x, labels)
    right = tagger.predictions_ == truth.astype(str)
    assert 0.5 < right.mean() < 1
    assert tagger.confidence_[~right].mean() < tagger.confidence_[right].mean() - 0.05


def test_linear_tagging_chooses_its_penalty_on_the_labelled_items():
    # Families in a narrow cone (vectors that share a large common part, as embeddings do):
    # at a fixed C = 1 the unit vectors differ too little and every confidence sits at chance.
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(8), 200)
    x = rng.normal(size=(8, 16))[truth] * 0.3 + rng.normal(size=(len(truth), 16)) * 0.2 + 6.0
    labels = np.full(len(x), None, dtype=object)
    given = np.concatenate([np.flatnonzero(truth == c)[:30] for c in range(8)])
    labels[given] = truth[given].astype(str)
    fixed = Tagger(TagConfig(c=1.0, smoothing=0)).fit(x, labels)
    chosen = Tagger(TagConfig(smoothing=0)).fit(x, labels)
    assert fixed.c_ == 1.0 and chosen.c_ in TagConfig().c_candidates and chosen.c_ > 1.0
    assert (chosen.predictions_ == truth.astype(str)).mean() > 0.98
    unlabelled = ~chosen.labelled_
    assert np.median(fixed.confidence_[unlabelled]) < 0.2  # 1/8 is chance
    assert np.median(chosen.confidence_[unlabelled]) > 0.25


def test_a_team_that_labelled_mostly_one_kind_still_gets_every_kind_tagged():
    """50 labels of one kind and one or two of each other: every item was tagged that kind
    (C fell back to 1 for the kinds with a single label, and the fit weighed each labelled
    item alike). Each label now weighs alike, and C is cross-validated on the kinds with
    two labels, the single ones only trained on."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(6), 200)
    x = rng.normal(size=(6, 16))[truth] * 0.3 + rng.normal(size=(len(truth), 16)) * 0.2 + 6.0
    counts = [50, 2, 1, 2, 1, 2]
    given = np.concatenate([np.flatnonzero(truth == c)[:n] for c, n in enumerate(counts)])
    labels = np.full(len(x), None, dtype=object)
    labels[given] = truth[given].astype(str)
    tagger = Tagger(TagConfig(smoothing=0)).fit(x, labels)
    right = tagger.predictions_ == truth.astype(str)
    recalls = [right[truth == c].mean() for c in range(6)]
    assert min(recalls) > 0.8, recalls  # it was 0.005
    assert tagger.cv_accuracy_ is not None and tagger.cv_accuracy_ > 0.9
    unlabelled = ~tagger.labelled_
    assert np.median(tagger.confidence_[unlabelled]) > 0.5  # 1/6 is chance


def test_smoothing_over_the_unlabelled_items_tags_noisy_families_better():
    # Families whose members scatter widely (noise 0.3 a dimension on centres of length 1):
    # two labels a family leave a plain probe at 0.72; each item averaged over its
    # neighbours first (the default, or rounds cross-validated with C), it reaches 0.9.
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(5), 80)
    x = centres[truth] + rng.normal(scale=0.3, size=(len(truth), 64))
    labels = np.full(len(x), None, dtype=object)
    given = np.concatenate([np.flatnonzero(truth == c)[:2] for c in range(5)])
    labels[given] = truth[given].astype(str)

    def accuracy(tagger):
        return (tagger.predictions_ == truth.astype(str)).mean()

    plain = Tagger(TagConfig(smoothing=0)).fit(x, labels)
    default = Tagger(TagConfig()).fit(x, labels)
    chosen = Tagger(TagConfig(smoothing=None)).fit(x, labels)
    assert plain.smoothing_ == 0 and accuracy(plain) < 0.8
    assert default.smoothing_ == 2 and accuracy(default) > 0.88
    assert chosen.smoothing_ > 0 and accuracy(chosen) > 0.88


def test_tagging_needs_two_labels():
    x, _ = blobs()
    labels = np.full(len(x), None, dtype=object)
    labels[:3] = "shirt"
    with pytest.raises(InvalidInput, match="at least 2 distinct labels"):
        Tagger().fit(x, labels)


def test_a_value_every_item_holds_names_no_cluster():
    """Named by share alone, a shop's constant `currency` EUR named 7 of 12 clusters."""
    from scipy import sparse

    from recsys.catalog_intel.clusters import describe_clusters

    labels = np.array([0, 0, 0, 1, 1, 1])
    everywhere = (sparse.csr_matrix(np.ones((6, 1))), np.array(["EUR"]))
    kinds = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 0]])
    named = describe_clusters(
        labels,
        2,
        {"currency": everywhere, "type": (sparse.csr_matrix(kinds), np.array(["disc", "pad"]))},
    )
    assert named == [("type", "disc", 1.0), ("type", "pad", 0.6667)]
    # a catalog of one value throughout has nothing to set a cluster apart
    assert describe_clusters(labels, 2, {"currency": everywhere}) == [None, None]
