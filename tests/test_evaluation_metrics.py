"""Evaluation metrics, splits and ranking against slow, obvious references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.model.data import positions
from recsys.model.protocol import build_task, rank, segment_masks
from recsys.model.ranking import (
    coverage,
    first_kept,
    hit_matrix,
    mean_popularity,
    per_user_metrics,
    reserved_places,
    top_k,
    top_k_finite,
    top_k_inner,
)
from recsys.model.split import (
    default_cutoff,
    random_split,
    sample_users,
    split_interactions,
    temporal_split,
    time_cutoff_split,
    validation_split,
)

KS = (1, 3, 5, 10)


# -- slow references: one user at a time, straight from the definitions ----------------------
def ref_recall(top, held, k):
    return len([i for i in top[:k] if i in held]) / min(k, len(held))


def ref_precision(top, held, k):
    return len([i for i in top[:k] if i in held]) / k


def ref_ndcg(top, held, k):
    dcg = sum(1 / math.log2(j + 2) for j, i in enumerate(top[:k]) if i in held)
    idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(held))))
    return dcg / idcg


def ref_map(top, held, k):
    hits, total = 0, 0.0
    for j, item in enumerate(top[:k]):
        if item in held:
            hits += 1
            total += hits / (j + 1)
    return total / min(k, len(held))


def ref_mrr(top, held, k):
    for j, item in enumerate(top[:k]):
        if item in held:
            return 1 / (j + 1)
    return 0.0


def ref_hit_rate(top, held, k):
    return float(any(i in held for i in top[:k]))


REFERENCES = {
    "recall": ref_recall,
    "precision": ref_precision,
    "ndcg": ref_ndcg,
    "map": ref_map,
    "mrr": ref_mrr,
    "hit_rate": ref_hit_rate,
}


def random_lists(seed: int, users: int = 40, items: int = 30, length: int = 10):
    """Top lists (some shorter, padded with -1) and held-out sets (at least one item each)."""
    rng = np.random.default_rng(seed)
    top = np.full((users, length), -1, dtype=np.int64)
    held = []
    for u in range(users):
        size = rng.integers(3, length + 1)
        top[u, :size] = rng.choice(items, size=size, replace=False)
        held.append(set(rng.choice(items, size=rng.integers(1, 12), replace=False).tolist()))
    rows = [u for u, h in enumerate(held) for _ in h]
    cols = [i for h in held for i in sorted(h)]
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(users, items))
    return top, held, matrix


@pytest.mark.parametrize("seed", range(5))
def test_every_ranking_metric_matches_its_reference(seed):
    top, held, matrix = random_lists(seed)
    fast = per_user_metrics(hit_matrix(top, matrix), matrix.getnnz(axis=1), KS)
    lists = [[i for i in row if i >= 0] for row in top.tolist()]
    for name, reference in REFERENCES.items():
        for k in KS:
            expected = [reference(t, h, k) for t, h in zip(lists, held, strict=True)]
            np.testing.assert_allclose(fast[f"{name}@{k}"], expected, err_msg=f"{name}@{k}")


def test_metrics_beyond_the_list_length_count_as_misses():
    top = np.array([[3, -1]])
    held = sp.csr_matrix(np.array([[0, 0, 1, 1]]))
    fast = per_user_metrics(hit_matrix(top, held), held.getnnz(axis=1), (5,))
    assert fast["recall@5"][0] == 0.5 and fast["precision@5"][0] == 0.2
    assert fast["mrr@5"][0] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_coverage_and_popularity_match_their_references(seed):
    top, _, _ = random_lists(seed)
    popularity = np.random.default_rng(seed).integers(0, 50, size=30).astype(float)
    for k in KS:
        shown = {i for row in top[:, :k].tolist() for i in row if i >= 0}
        assert coverage(top, k, 30) == pytest.approx(len(shown) / 30)
        per_user = [
            np.mean([popularity[i] for i in row if i >= 0])
            for row in top[:, :k].tolist()
            if any(i >= 0 for i in row)
        ]
        assert mean_popularity(top, k, popularity) == pytest.approx(np.mean(per_user))


# -- splits ----------------------------------------------------------------------------------
def interactions(users: int = 12, per_user: int = 11, seed: int = 0) -> pd.DataFrame:
    """Users with 11-13 views of 40 items at random hours of 2024 (all times distinct)."""
    rng = np.random.default_rng(seed)
    counts = [per_user + u % 3 for u in range(users)]
    n = sum(counts)
    hours = pd.to_timedelta(rng.choice(10_000, size=n, replace=False), unit="h")
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u, c in enumerate(counts) for _ in range(c)],
            "item_id": [f"i{i}" for i in rng.integers(0, 40, size=n)],
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01") + hours,
        }
    )


def test_temporal_split_holds_out_each_users_latest_share():
    frame = interactions()
    split = split_interactions(frame, "temporal", 0.3, seed=0)
    for user, own in frame.groupby("user_id"):
        test = split.test[split.test["user_id"] == user]
        train = split.train[split.train["user_id"] == user]
        assert len(test) == math.floor(0.3 * len(own))
        assert test["timestamp"].min() >= train["timestamp"].max()


def test_splits_order_rows_as_a_stable_pandas_sort_even_on_ties_and_unknown_times():
    # The splits sort in Arrow; the reference sorts the frame itself. Equal frames, rows in
    # the same order (later steps read a user's last row as their latest), on tied times,
    # missing times and ids that are not ASCII.
    rng = np.random.default_rng(0)
    n = 3000
    users = np.array([f"u{i}" for i in range(40)] + ["é", "Z", "a b"], dtype=object)
    stamps = pd.to_datetime(rng.integers(0, 20, n), unit="s")
    frame = pd.DataFrame(
        {
            "user_id": pd.array(users[rng.integers(0, len(users), n)], dtype=pd.StringDtype()),
            "item_id": [f"i{i}" for i in rng.integers(0, 30, n)],
            "event": "view",
            "weight": rng.random(n),
            "timestamp": stamps,
        }
    ).iloc[rng.permutation(n)[:-5]]

    def hold(ordered, share):
        position = ordered.groupby("user_id").cumcount()
        size = ordered.groupby("user_id")["item_id"].transform("size")
        held = position >= size - np.floor(size * share)
        return ordered[~held], ordered[held]

    keys = ["user_id", "timestamp", "item_id"]
    expected = hold(frame.sort_values(keys, kind="stable"), 0.3)
    for got, want in zip(temporal_split(frame, 0.3), expected, strict=True):
        pd.testing.assert_frame_equal(got, want)
    frame["timestamp"] = frame["timestamp"].where(rng.random(len(frame)) > 0.3)
    ordered = frame.sort_values(["user_id", "item_id", "timestamp"], kind="stable")
    draw = np.random.default_rng(4).random(len(ordered))
    ordered = ordered.iloc[np.lexsort((draw, ordered["user_id"].to_numpy()))]
    for got, want in zip(random_split(frame, 0.3, 4), hold(ordered, 0.3), strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_positions_look_ids_up_as_get_indexer_does():
    ids = np.array(["a", "b", "c", "é", "x y"])
    columns = [
        pd.Series(["b", "zz", "é", None, "a"], dtype=pd.StringDtype()),
        pd.Series(["x y", "a"], dtype=object),
        np.array(["c", "q"]),
        pd.Categorical(["a", "c", "c", "nope"]),
        pd.Series([], dtype=pd.StringDtype()),
    ]
    for column in columns:
        want = pd.Index(ids).get_indexer(pd.Series(column, dtype=object))
        np.testing.assert_array_equal(positions(column, ids), want)
    np.testing.assert_array_equal(positions(pd.Series([2, 1, 3]), np.array(["1", "2"])), [1, 0, -1])


def test_a_validation_slice_holds_out_the_latest_though_a_few_events_have_no_time():
    """One event without a time among thousands made training's slice random (and so left
    the users' recency untried); up to 1% of them count as the oldest events instead."""
    frame = interactions()
    few = frame.copy()
    undated = few["timestamp"].idxmin()
    few.loc[undated, "timestamp"] = pd.NaT
    assert len(few) >= 100  # 1 in 100 or more
    fit_few, held_few = validation_split(few, 0.25)
    assert undated in fit_few.index and len(fit_few) + len(held_few) == len(few)
    for user, held in held_few.groupby("user_id"):  # each user's latest dated events
        fit = fit_few[fit_few["user_id"] == user]["timestamp"].dropna()
        assert held["timestamp"].min() >= fit.max()
    many = frame.copy()
    many.loc[many.index[::10], "timestamp"] = pd.NaT  # 10%: a seeded random share
    _, held_many = validation_split(many, 0.25, seed=0)
    assert held_many.index.equals(random_split(many, 0.25, seed=0)[1].index)


def test_time_cutoff_split_is_one_global_time():
    frame = interactions()
    cutoff = default_cutoff(frame, 0.25)
    train, test = time_cutoff_split(frame, cutoff)
    assert (train["timestamp"] < cutoff).all() and (test["timestamp"] >= cutoff).all()
    assert len(test) / len(frame) == pytest.approx(0.25, abs=0.02)
    split = split_interactions(frame, "time-cutoff", 0.2, seed=0, cutoff="2024-06-01")
    assert split.description["cutoff"] == "2024-06-01T00:00:00"
    assert (split.test["timestamp"] >= pd.Timestamp("2024-06-01")).all()
    # a zone, epoch seconds or a basic date, as ingest reads the events' own times (a zoned
    # cutoff was a TypeError: a zone-aware time compared with the naive UTC ones)
    for same in ("2024-06-01T05:30:00+05:30", "1717200000", "20240601"):
        zoned = split_interactions(frame, "time-cutoff", 0.2, seed=0, cutoff=same)
        assert zoned.description["cutoff"] == "2024-06-01T00:00:00"
        assert zoned.test.index.equals(split.test.index)


def test_random_split_is_seeded_per_user_and_not_by_time():
    frame = interactions()
    a_train, a_test = random_split(frame, 0.3, seed=1)
    _, b_test = random_split(frame.sample(frac=1, random_state=5), 0.3, seed=1)
    _, c_test = random_split(frame, 0.3, seed=2)
    assert a_test.sort_index().equals(b_test.sort_index())  # input order does not matter
    assert not a_test.sort_index().equals(c_test.sort_index())
    sizes = frame.groupby("user_id").size()
    held = a_test.groupby("user_id").size().reindex(sizes.index, fill_value=0)
    assert (held == np.floor(0.3 * sizes)).all()
    assert len(a_train) + len(a_test) == len(frame)
    latest, _ = temporal_split(frame, 0.3)
    assert not a_train.sort_index().equals(latest.sort_index())


def test_time_based_splits_need_timestamps():
    frame = interactions()
    frame.loc[0, "timestamp"] = pd.NaT
    with pytest.raises(Exception, match="--split random"):
        split_interactions(frame, "temporal", 0.2, seed=0)
    split_interactions(frame, "random", 0.2, seed=0)


def test_user_sample_is_seeded():
    frame = interactions()
    a, b = sample_users(frame, 5, 3), sample_users(frame, 5, 3)
    assert a["user_id"].nunique() == 5 and a.equals(b)
    assert sample_users(frame, 100, 3) is frame


def test_big_catalogs_are_evaluated_on_a_user_sample_that_bounds_the_ranked_cells(caplog):
    from recsys.evaluation.run import EvaluationConfig, _sample_size

    assert _sample_size(12, 40, EvaluationConfig(max_cells=12 * 40)) is None  # all fit
    assert _sample_size(12, 40, EvaluationConfig(max_cells=5 * 40 + 39)) == 5
    assert "seeded sample of 5 users" in caplog.text
    assert _sample_size(12, 40, EvaluationConfig(users=7, max_cells=40)) == 7  # asked for
    # as many users as the catalog has, or more, is all of them: no sample
    assert _sample_size(12, 40, EvaluationConfig(users=12)) is None
    assert _sample_size(12, 40, EvaluationConfig(users=100_000, max_cells=40)) is None
    assert _sample_size(12, 40, EvaluationConfig(max_cells=None)) is None  # --all-users
    assert _sample_size(12, 40, EvaluationConfig(max_cells=1)) == 1


def test_segments_by_history_length():
    masks = segment_masks(np.array([1, 5, 6, 20, 21, 300]), (5, 20))
    assert list(masks) == ["1-5", "6-20", "21+"]
    assert masks["1-5"].tolist() == [True, True, False, False, False, False]
    assert masks["21+"].tolist() == [False, False, False, False, True, True]


# -- the protocol agrees with the training/eval-script protocol ------------------------------
class RandomScores:
    name = "random"

    def __init__(self, n_items: int, seed: int):
        self.n_items, self.rng = n_items, np.random.default_rng(seed)
        self.table: dict[str, np.ndarray] = {}

    def scores(self, user_ids):
        return np.stack([self._row(u) for u in user_ids])

    def _row(self, user):
        if user not in self.table:
            self.table[user] = self.rng.random(self.n_items).astype(np.float32)
        return self.table[user]


@pytest.mark.parametrize("k", [1, 5, 30, 40])
def test_top_k_matches_a_full_stable_sort(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 6, size=(20, 30)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    for row, best in zip(scores, top_k(scores, k), strict=True):
        assert best.tolist() == sorted(range(30), key=lambda j: (-row[j], j))[:k]
    finite = top_k_finite(scores, k)
    for row, best in zip(scores, finite, strict=True):
        listed = best[best >= 0]
        assert np.isfinite(row[listed]).all()
        assert len(listed) == min(k, np.isfinite(row).sum())


@pytest.mark.parametrize("k", [1, 6, 30])
def test_top_k_inner_lists_the_best_scores_in_order_and_never_the_skipped_row(k):
    # integer-valued vectors: exact sums in any order, and many equal scores
    rng = np.random.default_rng(k)
    items = rng.integers(-2, 3, size=(400, 8)).astype(np.float32)
    items[100:140] = items[7]  # 41 copies of one item: ties across the whole list
    rows = np.array([7, 120, 3, 399, 0])
    queries = items[rows]
    for skip in (None, rows):
        scores = queries @ items.T
        if skip is not None:
            scores[np.arange(len(rows)), rows] = -np.inf
        found = top_k_inner(queries, items, k, skip=skip)
        assert found.shape == (len(rows), k)
        for row, listed in zip(scores, found, strict=True):
            assert len(set(listed.tolist())) == k and np.isfinite(row[listed]).all()
            cut = np.sort(row)[::-1][k - 1]
            np.testing.assert_array_equal(row[listed], np.sort(row)[::-1][:k])  # best first
            assert set(np.flatnonzero(row > cut)) <= set(listed.tolist())
            tied = listed[row[listed] == row[listed][0]]
            assert (np.diff(tied) > 0).all()  # equal scores listed in row order
        assert top_k_inner(queries, items, k, skip=skip).tolist() == found.tolist()  # reruns
    assert top_k_inner(queries, items[:3], 10, skip=rows).shape == (5, 2)  # all but its own


@pytest.mark.parametrize("k", [1, 4, 8, 12])
def test_first_kept_takes_kept_entries_in_rank_order_and_pads(k):
    rng = np.random.default_rng(k)
    rows = rng.permutation(64).reshape(8, 8)
    scores = -np.sort(rng.random((8, 8)), axis=1).astype(np.float32)
    keep = rng.random((8, 8)) < 0.6
    keep[0] = True  # one row with nothing to skip
    found, found_scores = first_kept(rows, scores, keep, k)
    assert found.shape == found_scores.shape == (8, k)
    for r in range(8):
        expected = rows[r][keep[r]][:k]
        assert found[r, : len(expected)].tolist() == expected.tolist()
        assert (found[r, len(expected) :] == -1).all()
        assert np.isneginf(found_scores[r, len(expected) :]).all()
        np.testing.assert_array_equal(found_scores[r, : len(expected)], scores[r][keep[r]][:k])


def test_a_task_sample_is_seeded_and_keeps_rows_aligned():
    frame = interactions(users=30, per_user=15)
    item_ids = np.array([f"i{i}" for i in range(45)])
    task = build_task(*temporal_split(frame, 0.3), item_ids)
    sample = task.sample(10, seed=3)
    assert (
        len(sample.user_ids) == 10
        and sample.user_ids.tolist() == task.sample(10, 3).user_ids.tolist()
    )
    rows = pd.Index(task.user_ids).get_indexer(sample.user_ids)
    assert (sample.heldout != task.heldout[rows]).nnz == 0
    assert (sample.seen != task.seen[rows]).nnz == 0
    assert task.sample(100) is task


def test_held_out_repeats_of_training_items_are_left_out_and_counted():
    """A view before the split and a purchase after: the item is a training item, never
    listed, so no model could find it; it is not held out (recall would count it against
    every model), and a user left with nothing held out is not evaluated."""
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2"],
            "item_id": ["a", "b", "a", "a", "c"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-01-02", "2024-01-03"] * 1 + ["2024-01-01", "2024-01-03"]
            ),
        }
    )
    train = frame[frame["timestamp"] < "2024-01-03"]
    test = frame[frame["timestamp"] >= "2024-01-03"]
    task = build_task(train, test, np.array(["a", "b", "c"]))
    assert task.info["heldout_repeats"] == 1  # u1's a
    assert task.info["heldout_pairs"] == 1 and task.info["users_holding_only_repeats"] == 1
    assert task.user_ids.tolist() == ["u2"] and task.heldout[0].indices.tolist() == [2]  # c


def test_training_items_are_never_recommended_and_cold_lists_hold_cold_items():
    frame = interactions(users=10, per_user=20)
    item_ids = np.array([f"i{i}" for i in range(45)])
    train, test = temporal_split(frame, 0.2)
    task = build_task(train, test, item_ids)
    rankings = rank(RandomScores(len(item_ids), seed=1), task, 45)
    for u in range(len(task.user_ids)):
        seen = set(task.seen[u].indices.tolist())
        listed = [i for i in rankings.all[u].tolist() if i >= 0]
        assert not seen & set(listed)
        assert len(listed) == len(item_ids) - len(seen)
        assert all(task.cold[i] for i in rankings.cold[u].tolist() if i >= 0)
        assert not any(task.cold[i] for i in rankings.warm[u].tolist() if i >= 0)


def test_top_k_keeps_and_lists_the_lower_columns_of_equal_scores_at_any_width(monkeypatch):
    """Of equal scores the lower columns come first, where the cut falls among them and in
    the list, on narrow rows (argpartition) as on wide ones (the k-th-score cut)."""
    from recsys.model import ranking

    row = np.array([[1, 5, 5, 5, 5, 5, 5, 0, 0, 0]], dtype=np.float32)
    assert top_k(row, 6).tolist() == [[1, 2, 3, 4, 5, 6]]  # the old path: [[1 2 3 4 6 5]]
    assert top_k(row, 3).tolist() == [[1, 2, 3]]
    rng = np.random.default_rng(8)
    scores = rng.integers(0, 3, size=(50, 200)).astype(np.float32)  # ties at every cut
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[:5, 100:] = 0.0  # rows tied across half their columns, as cold items often are
    narrow = top_k(scores, 40)
    for values, best in zip(scores, narrow, strict=True):
        assert best.tolist() == sorted(range(200), key=lambda j: (-values[j], j))[:40]
    monkeypatch.setattr(ranking, "WIDE_ROW", 100)  # the same rows on the wide path
    np.testing.assert_array_equal(top_k(scores, 40), narrow)
    # NaN ranks last, below -inf, also in column order (the narrow path at any width)
    scores[0, [3, 150]] = np.nan
    assert top_k(scores[:1], 200)[0, -2:].tolist() == [3, 150]


def test_top_k_on_catalog_wide_rows_matches_the_narrow_path_and_keeps_first_columns_at_ties():
    from recsys.model import ranking

    rng = np.random.default_rng(3)
    scores = rng.standard_normal((4, ranking.WIDE_ROW + 5)).astype(np.float32)
    scores[:, -5:] = -10.0  # never in a top 50: the two paths see the same candidates
    scores[1, ::3] = -np.inf
    scores[2] = -np.inf  # nothing rankable: still k columns, all -inf
    wide = ranking.top_k(scores, 50)
    narrow = ranking.top_k(scores[:, :-5], 50)  # below WIDE_ROW: argpartition
    np.testing.assert_array_equal(wide[[0, 1, 3]], narrow[[0, 1, 3]])
    assert wide[2].tolist() == list(range(50))
    # Ties at the cut: the first columns of the tied score, best first then column order.
    tied = np.zeros((1, ranking.WIDE_ROW), dtype=np.float32)
    tied[0, [70_000 % ranking.WIDE_ROW, 9]] = [2.0, 1.0]
    assert ranking.top_k(tied, 5).tolist() == [[70_000 % ranking.WIDE_ROW, 9, 0, 1, 2]]
    # NaN anywhere: the argpartition path, NaN ranked last.
    tied[0, 5] = np.nan
    assert ranking.top_k(tied, 2).tolist() == [[70_000 % ranking.WIDE_ROW, 9]]


@pytest.mark.parametrize("k", [1, 7, 50])
def test_whole_row_lists_merged_from_warm_and_cold_parts_equal_a_pass_over_the_whole_row(
    k, monkeypatch
):
    from recsys.model import ranking

    monkeypatch.setattr(ranking, "WIDE_ROW", 16)  # the merge path on rows of 60 columns
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(30, 60)).astype(np.float32)  # ties everywhere
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0] = -np.inf  # a user with nothing left to rank
    cold = rng.random(60) < 0.4
    parts = (np.flatnonzero(~cold), np.flatnonzero(cold))
    whole, warm, cold_best = ranking.top_k_parts(scores, k, parts)
    np.testing.assert_array_equal(whole, ranking.top_k_finite(scores, k))
    for columns, best in zip(parts, (warm, cold_best), strict=True):
        np.testing.assert_array_equal(best, ranking.top_k_finite(scores, k, columns))
    # NaN anywhere: three passes, the same lists as three top_k_finite calls
    scores[3, 2] = np.nan
    whole, *_ = ranking.top_k_parts(scores, k, parts)
    np.testing.assert_array_equal(whole, ranking.top_k_finite(scores, k))


def test_ranked_lists_with_their_scores_are_the_diversity_pools_on_wide_catalogs(monkeypatch):
    from recsys.evaluation import run
    from recsys.model import ranking

    class TiedScores(RandomScores):
        def scores(self, user_ids):
            return np.round(super().scores(user_ids) * 4) / 4  # five values: ties at every cut

    monkeypatch.setattr(ranking, "WIDE_ROW", 16)  # 45 items: a wide catalog
    frame = interactions(users=10, per_user=20)
    item_ids = np.array([f"i{i}" for i in range(45)])
    task = build_task(*temporal_split(frame, 0.2), item_ids)
    scorer = TiedScores(len(item_ids), seed=2)
    ranked = rank(scorer, task, 20, scores=True)
    rows, scores = run._pools(scorer, task, 12, show_progress=False)
    np.testing.assert_array_equal(ranked.all[:, :12], rows)
    np.testing.assert_array_equal(ranked.scores[:, :12], scores)
    assert rank(scorer, task, 20).scores is None


def test_reserved_places_give_new_items_the_lowest_places_of_the_others():
    listed = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=bool)
    new = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=bool)
    offered = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=bool)
    places = reserved_places(listed, new, offered, 2)
    # positions into [4 listed | 3 offered]
    assert places.tolist() == [
        [0, 1, 4, 5],  # two offered take the two lowest places
        [0, 1, 4, -1],  # empty places first; only one is offered
        [0, 1, 2, 4],  # one new item listed already: one more, in the lowest other's place
        [0, 1, 2, 3],  # two listed already: as it was
    ]
    assert (reserved_places(listed, new, offered, 0) == np.where(listed, np.arange(4), -1)).all()
