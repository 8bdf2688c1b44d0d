"""A shared model test mixin run against every model on a small fixed interaction matrix."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import UnknownItem
from recsys.model.cf import (
    CFConfig,
    CollaborativeModel,
    Confidence,
    confidence_matrix,
    events_after,
    implicit_model,
    warn_faded,
)
from recsys.model.data import IdIndex
from recsys.model.index import VectorIndex
from recsys.model.ranking import top_k
from recsys.model.recommender import ItemFilters, Postings, Recommender
from recsys.model.training import TrainConfig, fit_in_memory
from tests.toy import toy_catalog


class ModelTestMixin:
    """Subclasses provide ``make(data)`` returning a fitted model, and ``recommend`` and
    ``similar`` answering (ids, scores) per query from it."""

    k = 5

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls):
        return toy_catalog()

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, data):
        return cls.make(data)

    def seen(self, data, user):
        frame = data.interactions
        return set(frame.loc[frame["user_id"] == user, "item_id"])

    def test_recommend_returns_k_unseen_items_from_the_users_cluster(self, model, data):
        ids, _ = self.recommend(model, ["u0", "u9"], self.k)
        for user, group, row in zip(["u0", "u9"], "ab", ids, strict=True):
            assert len(row) == self.k
            assert not set(row) & self.seen(data, user)
            assert sum(item.startswith(group) for item in row) >= self.k - 1

    def test_scores_are_sorted(self, model):
        _, scores = self.recommend(model, ["u1", "u10"], self.k)
        for row in scores:
            assert np.all(np.diff(np.asarray(row)) <= 1e-6)

    def test_one_id_or_many(self, model):
        single, _ = self.recommend(model, "u2", self.k)
        batch, _ = self.recommend(model, ["u2", "u3"], self.k)
        assert list(single[0]) == list(batch[0])

    def test_similar_items_stay_in_cluster_and_exclude_the_query(self, model):
        ids, _ = self.similar(model, ["a1", "b2"], self.k)
        for query, group, row in zip(["a1", "b2"], "ab", ids, strict=True):
            assert query not in list(row)
            assert sum(item.startswith(group) for item in row) >= self.k - 1

    def test_unknown_item_raises(self, model):
        with pytest.raises(UnknownItem, match="nope"):
            self.similar(model, ["a1", "nope"], self.k)


class FactorsTestMixin(ModelTestMixin):
    """Ranks straight from a CollaborativeModel's factors (dot products for users, cosines for
    items), seen items and the query item excluded: what the factors alone say."""

    def recommend(self, model, users, k):
        rows = model.user_rows(users)
        scores = model.user_factors_[rows] @ model.item_factors_.T  # (U, I)
        scores[model.user_items_[rows].nonzero()] = -np.inf
        return self._ranked(model, scores, k)

    def similar(self, model, items, k):
        rows = model.item_rows(items)
        norms = np.linalg.norm(model.item_factors_, axis=1, keepdims=True)
        normed = model.item_factors_ / np.maximum(norms, 1e-12)
        scores = normed[rows] @ normed.T  # (Q, I)
        scores[np.arange(len(rows)), rows] = -np.inf
        return self._ranked(model, scores, k)

    @staticmethod
    def _ranked(model, scores, k):
        top = top_k(scores, k)
        return model.item_ids_[top], np.take_along_axis(scores, top, axis=1)


class TestALS(FactorsTestMixin):
    @classmethod
    def make(cls, data):
        return CollaborativeModel(
            CFConfig(model="als", factors=8, iterations=15, regularization=0.5)
        ).fit(data.interactions, data.items["item_id"])

    def test_fold_in_matches_the_trained_user(self, model, data):
        history = sorted(self.seen(data, "u4"))
        folded = model.fold_in(history)
        trained = model.user_factors_[model.user_rows("u4")[0]]
        cos = folded @ trained / np.linalg.norm(folded) / np.linalg.norm(trained)
        assert cos > 0.9

    def test_fold_in_is_implicits_exact_user_step(self, model, data):
        history = sorted(self.seen(data, "u4"))
        rows = model.item_rows(history)
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (np.zeros(len(rows), dtype=int), rows)),
            shape=(1, len(model.item_ids_)),
        )
        solver = implicit_model(model.config)
        solver.user_factors = model.user_factors_.copy()
        solver.item_factors = model.item_factors_.copy()
        expected = solver.recalculate_user(0, matrix)
        np.testing.assert_allclose(model.fold_in(history), expected, rtol=1e-4, atol=1e-5)

    def test_save_load_round_trip(self, model, tmp_path):
        model.save(tmp_path)
        loaded = CollaborativeModel.load(tmp_path)
        assert (
            self.recommend(model, ["u0"], 3)[0].tolist()
            == self.recommend(loaded, ["u0"], 3)[0].tolist()
        )
        np.testing.assert_allclose(model.fold_in(["a1", "a2"]), loaded.fold_in(["a1", "a2"]))


class TestBPR(FactorsTestMixin):
    @classmethod
    def make(cls, data):
        config = CFConfig(model="bpr", factors=8, iterations=200, learning_rate=0.05)
        return CollaborativeModel(config).fit(data.interactions, data.items["item_id"])


class TestFusedRecommender(ModelTestMixin):
    @classmethod
    def make(cls, data):
        config = TrainConfig(cf=CFConfig(factors=8, iterations=15, regularization=0.5))
        fitted = fit_in_memory(data, config)
        filters = ItemFilters.from_items(data.items, data.kinds)
        index = VectorIndex.build(fitted.fused.item_vectors_)
        return Recommender(fitted.fused, fitted.cf, data.items["item_id"], filters, index, {})

    def recommend(self, model, users, k):
        results = model.recommend(users, k=k)
        return results.ids, results.scores

    def similar(self, model, items, k):
        results = model.similar_items(items, k=k)
        return results.ids, results.scores

    def test_unknown_user_gets_flagged_popularity(self, model):
        results = model.recommend(["u0", "stranger"], k=3)
        assert results.fallback == [False, True]
        assert len(results.ids[1]) == 3

    def test_history_of_a_new_user_ranks_their_cluster(self, model):
        results = model.recommend_for_history([["b0", "b1", "b2"]], k=4)
        assert all(item.startswith("b") for item in results.ids[0])
        assert not {"b0", "b1", "b2"} & set(results.ids[0])


def test_confidence_matrix_applies_event_weights_and_decay():
    toy = toy_catalog()
    frame = toy.interactions.head(3).copy()
    frame["event"] = ["click", "purchase", "click"]
    config = CFConfig(event_weights={"purchase": 4.0}, half_life_days=1.0)
    users, items = np.array(["u0"]), frame["item_id"].to_numpy()
    matrix = confidence_matrix(frame, users, items, config).toarray()[0]
    # Events on days 0, 1, 2: ages 2, 1, 0 days before the latest.
    np.testing.assert_allclose(matrix, [0.25, 4 * 0.5, 1.0], rtol=1e-6)


def test_an_event_dated_in_the_future_leaves_its_users_other_events_their_weight():
    """Ages count from the user's latest event not after now: one event dated 2099 (which
    ingest now refuses, but an older catalog may hold) made the user's others 76 years old
    and dropped them from the fit."""
    toy = toy_catalog()
    frame = toy.interactions.head(3).copy()
    late = frame.tail(1).assign(item_id="b0", timestamp=pd.Timestamp("2099-12-31"))
    config = CFConfig(half_life_days=1.0)
    users, items = np.array(["u0"]), np.append(frame["item_id"].to_numpy(), "b0")
    plain = confidence_matrix(frame, users, items, config).toarray()[0]
    with_late = confidence_matrix(pd.concat([frame, late]), users, items, config).toarray()[0]
    np.testing.assert_allclose(plain, [0.25, 0.5, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(with_late, [0.25, 0.5, 1.0, 1.0], rtol=1e-6)


def test_a_decay_that_leaves_most_events_at_nothing_says_so(caplog):
    """`train --half-life-days 1e-9` decayed every event but each user's newest to nothing:
    8,303 of MovieLens's 9,066 items went cold and recall@10 fell from 0.153 to 0.060, without
    a word."""
    days = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-03-01"] * 2)
    frame = pd.DataFrame(
        {
            "user_id": ["u1"] * 3 + ["u2"] * 3,
            "item_id": ["a", "b", "c", "a", "d", "c"],
            "timestamp": days,
        }
    )
    with caplog.at_level("WARNING", logger="recsys.model.cf"):
        assert warn_faded(frame, CFConfig(half_life_days=180.0)) == 0
        assert warn_faded(frame, CFConfig(half_life_days=0)) == 0
        assert not caplog.records
        # 58 days at a 2-day half-life: 2**-29 of the newest event's weight
        assert warn_faded(frame, CFConfig(half_life_days=2.0)) == 4
    said = caplog.records[0].getMessage()
    assert "leaves 4 of 6 dated events (67%) under 1e-06" in said
    assert "3 of 4 items have no event above it" in said and "--half-life-days" in said


def test_later_events_are_counted_per_user_in_time_order():
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u1", "u2", "u1"],
            "timestamp": pd.to_datetime(
                ["2024-01-03", "2024-05-01", "2024-01-01", "2024-01-02", "2024-01-01", "2024-01-02"]
            ),
        }
    )
    # u1: Jan 1 (3 events after it), Jan 2 twice (the later row in the file counts as later),
    # Jan 3 (latest); u2: Jan 1, then May 1 (latest), however many days apart
    np.testing.assert_array_equal(events_after(frame), [0, 0, 3, 2, 1, 1])


def test_recency_solves_the_users_factors_again_and_is_saved(tmp_path):
    toy = toy_catalog()
    config = CFConfig(factors=8, regularization=0.5)
    plain = CollaborativeModel(config).fit(toy.interactions)
    recent = CollaborativeModel(config).fit(toy.interactions, recency=2.0)
    np.testing.assert_array_equal(recent.item_factors_, plain.item_factors_)  # items as fitted
    np.testing.assert_array_equal(recent.user_items_.indptr, plain.user_items_.indptr)
    assert not np.allclose(recent.user_factors_, plain.user_factors_)
    # each user's factors: ALS's exact user step on the recency-weighted confidences
    decayed = toy.interactions.assign(weight=0.5 ** (events_after(toy.interactions) / 2.0))
    weighted = confidence_matrix(
        decayed, recent.user_ids_, recent.item_ids_, replace(config, use_interaction_weight=True)
    )
    expected = plain.model_.recalculate_user(np.arange(weighted.shape[0]), weighted)
    np.testing.assert_allclose(recent.user_factors_, expected, rtol=1e-4, atol=1e-5)
    assert (plain.recency_, recent.recency_) == (None, 2.0)
    # the confidences they were solved from, on the stored entries: folding a user's stored
    # history in with them gives back the stored factors (the serving path's fold-in)
    np.testing.assert_allclose(recent.user_recent_, weighted.data, rtol=1e-6)
    for row in (0, 9):
        part = slice(recent.user_items_.indptr[row], recent.user_items_.indptr[row + 1])
        items = recent.item_ids_[recent.user_items_.indices[part]]
        folded = recent.fold_in(items, recent.user_recent_[part])
        np.testing.assert_allclose(folded, recent.user_factors_[row], rtol=1e-3, atol=1e-4)
    recent.save(tmp_path)
    loaded = CollaborativeModel.load(tmp_path)
    assert loaded.recency_ == 2.0
    np.testing.assert_array_equal(loaded.user_recent_, recent.user_recent_)
    assert plain.user_recent_ is None
    with pytest.raises(ValueError, match="needs ALS on the implicit engine"):
        CollaborativeModel(CFConfig(model="bpr")).fit(toy.interactions, recency=2.0)
    with pytest.raises(ValueError, match="positive numbers of events"):
        CollaborativeModel(config).fit(toy.interactions, recency=0.0)


def test_recency_past_float32s_range_leaves_the_stored_entries_whole():
    # a shopper with 300 events on comedies, then 200 on dramas: at a half-life of 1 event
    # every comedy's entry weighs at most 0.5 ** 200, zero in float32; they drop out of the
    # solve, not out of the model's history
    toy = toy_catalog()
    heavy = pd.DataFrame(
        {
            "user_id": "heavy",
            "item_id": [f"a{k % 15}" for k in range(300)] + [f"b{k % 15}" for k in range(200)],
            "event": "click",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(500), "min"),
        }
    )
    events = pd.concat([toy.interactions, heavy], ignore_index=True)
    config = CFConfig(factors=8, regularization=0.5)
    plain = CollaborativeModel(config).fit(events)
    recent = CollaborativeModel(config).fit(events, recency=1.0)
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(
            getattr(recent.user_items_, part), getattr(plain.user_items_, part)
        )
    assert len(recent.user_recent_) == recent.user_items_.nnz
    assert (recent.user_recent_ == 0).sum() == 15  # the comedies' entries
    assert np.isfinite(recent.user_factors_).all()
    # a feed folds the stored history in at those weights: it gives the stored factors back
    # (a 0 taken as a confidence pushed the user away from every comedy: cosine 0.67 on
    # MovieLens, 55 times the norm)
    row = recent.user_index_.get("heavy")
    part = slice(recent.user_items_.indptr[row], recent.user_items_.indptr[row + 1])
    items = recent.item_ids_[recent.user_items_.indices[part]]
    folded = recent.fold_in(items, recent.user_recent_[part])
    np.testing.assert_allclose(folded, recent.user_factors_[row], rtol=1e-3, atol=1e-4)


def test_id_index_answers_like_a_dict_and_refuses_look_alikes():
    ids = np.array(["b", "a", "sku-10", "sku-1", "Ünï"])
    index = IdIndex(ids)
    assert len(index) == 5 and index["a"] == 1 and index.get("Ünï") == 4
    assert "sku-1" in index and "sku-" not in index and "a\x00" not in index and 7 not in index
    assert index.get("zzz", -5) == -5
    assert index.rows(["sku-10", "nope", "b"]).tolist() == [2, -1, 0]
    # keys longer than every id, and ids ending in NUL, are not cut down to a stored id
    assert index.rows(["sku-100", "sku-1\x00", "Ünïcode", "a"]).tolist() == [-1, -1, -1, 1]
    assert index.rows(np.array(["a", "b"], dtype=object)).tolist() == [1, 0]
    with pytest.raises(KeyError):
        index["c"]
    assert IdIndex(np.array([], dtype=str)).rows(["a"]).tolist() == [-1]


def test_a_long_unknown_id_costs_no_copy_of_the_index():
    """A live item's id, or a hostile client's, longer than every id of the bundle: numpy
    would search for it by widening all the held ids to its length first (1.3 ms and 4.8 MB
    per look-up at 10^5 ids). It is answered unknown without that copy, and the shorter
    keys asked beside it are still found."""
    ids = np.array([f"sku-{i:06d}" for i in range(100_000)])
    index = IdIndex(ids)
    keys = ["sku-000042", "live-item-" + "x" * 40, "sku-099999"]
    tracemalloc.start()
    try:
        rows = index.rows(keys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows.tolist() == [42, -1, 99_999]
    assert peak < 100_000  # bytes: the asked keys' arrays, not the index's 4 MB
    postings = Postings.build(np.arange(len(ids)), ids)
    assert postings.rows_of("sku-000007").tolist() == [7]
    assert postings.rows_of("sku-0000070").tolist() == []


class TestALSHuConfidence(TestALS):
    """ALS with Hu's confidence c = 1 + alpha * w (the weights stage may choose it)."""

    @classmethod
    def make(cls, data):
        config = CFConfig(model="als", factors=8, iterations=15, regularization=0.5)
        return CollaborativeModel(config).fit(
            data.interactions, data.items["item_id"], confidence=Confidence("hu", 4.0)
        )

    def test_fold_in_is_implicits_exact_user_step(self, model, data):
        history = sorted(self.seen(data, "u4"))
        rows = model.item_rows(history)
        weights = np.linspace(0.5, 2.0, len(rows))
        matrix = sp.csr_matrix(  # implicit's confidences, c = 1 + 4 w, at its alpha 1
            ((1 + 4 * weights).astype(np.float32), (np.zeros(len(rows), dtype=int), rows)),
            shape=(1, len(model.item_ids_)),
        )
        solver = implicit_model(replace(model.config, alpha=1.0))
        solver.user_factors = model.user_factors_.copy()
        solver.item_factors = model.item_factors_.copy()
        expected = solver.recalculate_user(0, matrix)
        folded = model.fold_in(history, weights)
        np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-5)

    def test_save_load_round_trip(self, model, tmp_path):
        super().test_save_load_round_trip(model, tmp_path)
        assert CollaborativeModel.load(tmp_path).confidence == Confidence("hu", 4.0)

    def test_the_form_changes_the_factors(self, model, data):
        scaled = TestALS.make(data)
        assert model.confidence_ == Confidence("hu", 4.0) and scaled.confidence_.form == "scaled"
        assert not np.allclose(model.user_factors_, scaled.user_factors_, atol=1e-3)


def test_confidence_forms_are_checked_and_the_spark_engine_refuses_another():
    weights = np.array([0.5, 2.0, -1.0])
    np.testing.assert_allclose(Confidence("scaled", 2.0).of(weights), [1.0, 4.0, -2.0])
    np.testing.assert_allclose(Confidence("hu", 2.0).of(weights), [2.0, 5.0, -3.0])
    with pytest.raises(ValueError, match=r"Confidence\.form 'log'"):
        Confidence("log", 1.0)
    with pytest.raises(ValueError, match=r"Confidence\.alpha"):
        Confidence("hu", 0.0)
    toy = toy_catalog()
    spark = CollaborativeModel(CFConfig(engine="spark"))
    with pytest.raises(ValueError, match=r"engine 'spark' takes CFConfig\.alpha's scaled"):
        spark.fit(toy.interactions, toy.items["item_id"], confidence=Confidence("hu", 1.0))
