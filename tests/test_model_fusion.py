"""Fusion invariants and cold items."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.errors import InvalidInput
from recsys.evaluation.contenders import ContentProfile
from recsys.model import explain, fusion
from recsys.model.cf import CFConfig
from recsys.model.fusion import FusedModel, FusionConfig, Layout, fuse, normalize_rows
from recsys.model.index import VectorIndex
from recsys.model.recommender import ItemFilters, Recommender
from recsys.model.training import TrainConfig, fit_in_memory
from tests.toy import toy_catalog


def test_inner_product_is_the_weighted_sum_of_block_similarities():
    rng = np.random.default_rng(0)
    layout = Layout({"cf": 6, "tabular": 5, "image": 4, "popularity": 1})
    weights = {"cf": 1.0, "tabular": 0.3, "image": 0.7, "popularity": 0.1}
    a = {b: normalize_rows(rng.normal(size=(20, d))) for b, d in layout.dims.items()}
    b = {b: normalize_rows(rng.normal(size=(20, d))) for b, d in layout.dims.items()}
    # Queries carry the weights, items the blocks as they are.
    ones = dict.fromkeys(layout.dims, 1.0)
    fused = np.sum(fuse(a, weights, layout) * fuse(b, ones, layout), axis=1)
    # Slow reference: block by block.
    expected = sum(weights[name] * np.sum(a[name] * b[name], axis=1) for name in layout.dims)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)


def test_fused_scores_follow_the_weights():
    data = toy_catalog()
    weights = {"cf": 1.0, "tabular": 0.5, "popularity": 0.2}
    config = TrainConfig(fusion=FusionConfig(weights=weights), validation_share=0)
    fused = fit_in_memory(data, config).fused
    warm = np.flatnonzero(~fused.cold_)
    users, items = fused.user_vectors(np.arange(5)), fused.item_vectors_[warm[:5]]
    slices = fused.layout_.slices()
    expected = sum(
        weights[n] * np.sum(fused.user_blocks_[n][:5] * fused.item_blocks_[n][warm[:5]], axis=1)
        for n in slices
    )
    np.testing.assert_allclose(np.sum(users * items, axis=1), expected, rtol=1e-4, atol=1e-6)
    # An item-to-item surface weighs the same blocks with its own weights.
    also = {"cf": 2.0, "tabular": 0.0}
    fused.set_weights(weights, None, {"also": also})
    queries = fused.item_queries(warm[:5], "also")
    cf = fused.item_blocks_["cf"][warm[:5]]
    cosines = np.sum(cf / np.linalg.norm(cf, axis=1, keepdims=True) * cf, axis=1)
    np.testing.assert_allclose(np.sum(queries * items, axis=1), 2.0 * cosines, rtol=1e-4)
    # Content blocks are unit length per item.
    np.testing.assert_allclose(np.linalg.norm(fused.item_blocks_["tabular"], axis=1), 1, rtol=1e-5)


def _recommender(data):
    config = TrainConfig(cf=CFConfig(factors=8, regularization=0.5), validation_share=0)
    fitted = fit_in_memory(data, config)
    fused = fitted.fused
    index = VectorIndex.build(fused.item_vectors_)
    filters = ItemFilters.from_items(data.items, data.kinds)
    return Recommender(fused, fitted.cf, data.items["item_id"], filters, index, {}), fused


def test_a_cold_item_is_recommendable_and_found_as_similar():
    data = toy_catalog()
    recommender, fused = _recommender(data)
    cold = set(data.items["item_id"][fused.cold_])
    assert cold == {"a-new", "b-new"}
    # Its collaborative block is predicted from content, not left at zero.
    cf = fused.item_blocks_["cf"][fused.cold_]
    assert np.all(np.linalg.norm(cf, axis=1) > 0)
    # Among comedies, the cold comedy reaches the comedy fans' feed.
    comedies = data.items["item_id"][data.items["genres"] == "Comedy"].tolist()
    users = [f"u{k}" for k in range(8)]
    results = recommender.recommend(users, k=3, candidates=comedies)
    assert any("a-new" in row for row in results.ids)
    similar = recommender.similar_items(["a-new"], k=5)
    assert all(item.startswith("a") for item in similar.ids[0])
    assert "a-new" in recommender.similar_items(["a1"], k=len(comedies)).ids[0]


def test_catalog_without_interactions_uses_content_only():
    data = toy_catalog()
    data.interactions = data.interactions.iloc[0:0]
    fitted = fit_in_memory(data, TrainConfig())
    fused = fitted.fused
    assert fitted.cf is None and set(fused.layout_.dims) == {"tabular"}
    index = VectorIndex.build(fused.item_vectors_)
    filters = ItemFilters.from_items(data.items, data.kinds)
    recommender = Recommender(fused, None, data.items["item_id"], filters, index, {})
    assert recommender.similar_items(["b1"], k=3).ids[0][0].startswith("b")
    results = recommender.recommend(["u0"], k=3)
    assert results.fallback == [True] and len(results.ids[0]) == 3
    # nothing is popular where nobody viewed anything
    assert [r[0].label for r in results.because[0]] == ["new in the catalog"] * 3


def test_fused_model_without_content_is_plain_cf():
    data = toy_catalog()
    config = TrainConfig(validation_share=0, use_titles=False)
    data.kinds = {}
    fused = fit_in_memory(data, config).fused
    assert set(fused.layout_.dims) == {"cf", "popularity"}
    assert isinstance(fused, FusedModel)


class FakeImageEncoder:
    """Stands in for recsys.vision.ImageEncoder: one-hot of the genre in the file name."""

    def fit(self, paths):
        return self

    def transform(self, paths):
        return np.asarray([[1.0, 0.0] if "Comedy" in p else [0.0, 1.0] for p in paths])


def test_images_add_an_image_block_and_items_without_images_still_work():
    data = toy_catalog()
    data.items["image_path"] = [
        None if k % 4 == 0 else f"/img/{g}-{k}.png" for k, g in enumerate(data.items["genres"])
    ]
    weights = {"cf": 1.0, "tabular": 0.3, "image": 0.5}
    config = TrainConfig(fusion=FusionConfig(weights=weights), validation_share=0)
    fused = fit_in_memory(data, config, image_encoder_factory=FakeImageEncoder).fused
    assert fused.layout_.dims["image"] == 2
    image = fused.item_blocks_["image"]
    assert not image[::4].any() and np.allclose(np.linalg.norm(image[1::4], axis=1), 1)


def test_a_catalog_with_nothing_to_learn_from_is_refused_clearly():
    data = toy_catalog()
    data.interactions, data.kinds = data.interactions.iloc[0:0], {}
    with pytest.raises(InvalidInput, match="nothing to learn from"):
        fit_in_memory(data, TrainConfig(use_titles=False))


@pytest.mark.parametrize("part_rows", [fusion.RIDGE_PART_ROWS, 37])  # one part / nine parts
def test_sparse_ridge_matches_sklearn_ridge(part_rows, monkeypatch):
    """Slow reference: sklearn's Ridge on the same (densified) features. In parts, on any
    number of threads, the fit is the same to the bit."""
    from sklearn.linear_model import Ridge

    monkeypatch.setattr(fusion, "RIDGE_PART_ROWS", part_rows)
    rng = np.random.default_rng(0)
    features = sp.random(300, 80, density=0.05, random_state=0, format="csr", dtype=np.float32)
    targets = rng.normal(size=(300, 5)).astype(np.float32)
    coef, intercept = fusion.sparse_ridge(features, targets, alpha=0.5)
    # the same problem, solved densely: targets centred, no intercept column
    centred = targets - targets.mean(axis=0)
    reference = Ridge(alpha=0.5, fit_intercept=False).fit(features.toarray(), centred)
    np.testing.assert_allclose(coef, reference.coef_.T, atol=1e-4)
    np.testing.assert_allclose(intercept, targets.mean(axis=0), atol=1e-6)
    for cpus in (1, 3):
        monkeypatch.setattr(fusion.parallel, "cpus", lambda cpus=cpus: cpus)
        again, _ = fusion.sparse_ridge(features, targets, alpha=0.5)
        np.testing.assert_array_equal(again, coef)


class NoiseImageEncoder:
    """Image vectors of pure noise: nothing about an item's look says anything of its taste."""

    def fit(self, paths):
        return self

    def transform(self, paths):
        seeds = [int(p.split("-")[-1].split(".")[0]) for p in paths]
        return np.stack([np.random.default_rng(s).normal(size=16) for s in seeds])


def _genre_shop(seed: int = 0):
    """300 items in 6 genres, 240 users who each stick to one genre, 15 days of events."""
    import pandas as pd

    from recsys.model.data import CatalogData

    rng = np.random.default_rng(seed)
    genre = np.arange(300) % 6
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(300)],
            "title": None,
            "image_path": [f"/img/i-{k}.png" for k in range(300)],
            "in_stock": True,
            "genre": [f"g{g}" for g in genre],
        }
    )
    users = np.repeat(np.arange(240), 15)
    liked = rng.choice(50, size=len(users)) * 6 + (users % 6)
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{k}" for k in liked],
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.tile(np.arange(15), 240), unit="D"),
        }
    ).drop_duplicates(["user_id", "item_id"])
    return CatalogData(items, {"genre": "categorical"}, interactions)


def test_a_block_of_pure_noise_gets_no_weight_and_costs_no_recall():
    from recsys.model.protocol import build_task, rank, score
    from recsys.model.split import temporal_split

    data = _genre_shop()
    train, test = temporal_split(data.interactions, 0.2)
    part = type(data)(data.items, data.kinds, train)
    task = build_task(train, test, data.items["item_id"].to_numpy(dtype=str))

    def recall(fitted):
        users = list(fitted.cf.user_ids_)

        class Scores:
            name = "fused"

            def scores(self, user_ids):
                rows = [users.index(u) for u in user_ids]
                return fitted.fused.user_vectors(rows) @ fitted.fused.item_vectors_.T

        return score(rank(Scores(), task, 10), task, (10,), ())["overall"]["recall@10"]

    config = TrainConfig(cf=CFConfig(factors=8, regularization=0.5))
    noisy = fit_in_memory(part, config, image_encoder_factory=NoiseImageEncoder)
    assert noisy.fused.weights_["image"] <= 0.1  # near zero: the grid's smallest step
    plain = part.items.assign(image_path=None)
    clean = fit_in_memory(type(data)(plain, data.kinds, train), config)
    assert recall(noisy) >= recall(clean) - 0.005


def test_attribute_filters_survive_a_save_and_match_any_wanted_value(tmp_path):
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "in_stock": [True, False, True, True],
            "brand": ["acme", "zeta", None, "acme"],
            "tags": ["red|blue", "blue", "", ["green", "red"]],
        }
    )
    kinds = {"brand": "categorical", "tags": "multi"}
    ItemFilters.from_items(items, kinds).save(tmp_path)
    filters = ItemFilters.load(tmp_path)

    def rows(wanted):
        return np.flatnonzero(filters.mask(wanted)).tolist()

    assert rows({"brand": "acme"}) == [0, 3]
    assert rows({"tags": ["green", "blue"]}) == [0, 1, 3]
    assert rows({"tags": "red", "in_stock": True}) == [0, 3]
    assert rows({"brand": "unknown"}) == []
    with pytest.raises(ValueError, match=r"filterable: in_stock, brand, tags$"):
        filters.mask({"colour": "red"})


def test_a_collaborative_model_weaker_than_popularity_stops_diluting_it():
    # Shoppers pick items by a global long-tail popularity and nothing else, a few events each:
    # ALS can only fit noise, so the weights stage must let popularity rank.
    import pandas as pd

    from recsys.model.data import CatalogData
    from recsys.model.protocol import build_task, rank, score
    from recsys.model.split import temporal_split

    rng = np.random.default_rng(0)
    n_items, n_users, per_user = 2000, 1500, 6
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.1
    liked = rng.choice(n_items, size=(n_users, per_user), p=popularity / popularity.sum())
    interactions = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{u}" for u in range(n_users)], per_user),
            "item_id": [f"i{k}" for k in liked.ravel()],
            "event": "view",
            "weight": 1.0,
            "timestamp": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.tile(np.arange(per_user), n_users), unit="h"),
        }
    ).drop_duplicates(["user_id", "item_id"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n_items)], "in_stock": True})
    train, test = temporal_split(interactions, 0.2)
    part = CatalogData(items.assign(title=None, image_path=None), {}, train)
    task = build_task(train, test, items["item_id"].to_numpy(dtype=str))
    fitted = fit_in_memory(part, TrainConfig(cf=CFConfig(factors=32, regularization=0.01)))
    users = list(fitted.cf.user_ids_)

    class Scores:
        name = "scores"

        def __init__(self, scores):
            self.scores = scores

    fused = Scores(
        lambda ids: (
            fitted.fused.user_vectors([users.index(u) for u in ids]) @ fitted.fused.item_vectors_.T
        )
    )
    counts = np.bincount(
        items["item_id"].pipe(pd.Index).get_indexer(train["item_id"]), minlength=n_items
    ).astype(np.float32)
    popular = Scores(lambda ids: np.tile(counts, (len(ids), 1)))

    def recall(model):
        return score(rank(model, task, 10), task, (10,), ())["overall"]["recall@10"]

    assert fitted.fused.weights_["popularity"] >= 1.0
    assert recall(fused) >= recall(popular) - 0.005


def _token_model(profile: str):
    data = toy_catalog()
    # purchases weigh 5 views, and older events less (the default half-life): confidences vary
    data.interactions.loc[data.interactions.index % 3 == 0, "event"] = "purchase"
    cf = CFConfig(factors=8, event_weights={"purchase": 5.0, "click": 1.0})
    fusion = FusionConfig(token_profile=profile)
    config = TrainConfig(cf=cf, fusion=fusion, validation_share=0)
    fitted = fit_in_memory(data, config)
    assert fitted.fused.has_tokens
    return fitted.fused, fitted.cf


@pytest.mark.parametrize("profile", ["binary", "confidence"])
def test_token_profiles_count_each_item_once_or_by_its_confidence(profile, tmp_path):
    fused, cf = _token_model(profile)
    tokens = fused.item_tokens_.toarray()
    expected = []  # slow reference: user by user, item by item
    for user in range(cf.user_items_.shape[0]):
        row = cf.user_items_[user]
        total = sum(
            (1.0 if profile == "binary" else c) * tokens[i]
            for i, c in zip(row.indices, row.data, strict=True)
        )
        expected.append(total / np.linalg.norm(total))
    np.testing.assert_allclose(fused.user_tokens_.toarray(), expected, rtol=1e-5, atol=1e-6)
    # a history folded in later is profiled the same way, also after a save and load
    fused.save(tmp_path)
    loaded = FusedModel.load(tmp_path)
    assert loaded.token_profile_ == profile
    again = loaded.history_token_profiles(cf.user_items_).toarray()
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-6)


def test_binary_token_profiles_differ_from_confidence_weighted_ones(tmp_path):
    binary, _ = _token_model("binary")
    weighted, _ = _token_model("confidence")
    assert abs(binary.user_tokens_ - weighted.user_tokens_).max() > 1e-3
    # a bundle saved before the option existed was profiled by confidence, and loads so
    weighted.save(tmp_path)
    state = json.loads((tmp_path / "fusion.json").read_text())
    del state["token_profile"]
    (tmp_path / "fusion.json").write_text(json.dumps(state))
    assert FusedModel.load(tmp_path).token_profile_ == "confidence"


def test_an_unknown_token_profile_is_refused_by_name():
    with pytest.raises(ValueError, match="token_profile 'tfidf'"):
        FusionConfig(token_profile="tfidf")


def test_profile_dots_equal_the_sparse_product_in_any_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    postings = sp.random(300, 2_000, density=0.01, format="csr", dtype=np.float32, random_state=1)
    profiles = sp.random(40, 300, density=0.05, format="csr", dtype=np.float32, random_state=2)
    keep = np.ones(40, dtype=np.float32)
    keep[rng.choice(40, 5, replace=False)] = 0  # users without a token
    profiles = sp.csr_matrix(sp.diags(keep) @ profiles)
    profiles.eliminate_zeros()
    expected = (profiles @ postings).toarray()
    for cells in (1 << 24, 64, 1):  # one chunk, several, one profile at a time
        monkeypatch.setattr(fusion, "PROFILE_CELLS", cells)
        got = fusion.profile_dots(profiles, postings)
        assert got.shape == (40, 2_000) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert fusion.profile_dots(profiles[:0], postings).shape == (0, 2_000)


def test_a_blocks_only_fit_holds_the_same_blocks_and_no_vectors(tmp_path):
    data = toy_catalog()
    config = TrainConfig(cf=CFConfig(factors=8, regularization=0.5), validation_share=0)
    fitted = fit_in_memory(data, config)
    full, cf, content = fitted.fused, fitted.cf, fitted.content
    lean = FusedModel(config.fusion).fit(
        cf, content.blocks, len(data.items), tokens=content.tokens, blocks_only=True
    )
    lean.set_weights(full.weights_, {**full.cold_scale_, "cf": 0.5}, full.surface_weights_)
    assert lean.item_vectors_ is None and not lean.has_user_vectors
    assert lean.user_tokens_ is None and full.user_tokens_ is not None
    assert lean.cold_scale_["cf"] == 0.5
    for name, block in full.item_blocks_.items():
        np.testing.assert_array_equal(lean.item_blocks_[name], block)
    for name, block in full.user_blocks_.items():
        np.testing.assert_array_equal(lean.user_blocks_[name], block)
    rows = np.arange(4)
    np.testing.assert_array_equal(lean.item_queries(rows, "also"), full.item_queries(rows, "also"))
    with pytest.raises(ValueError, match="blocks-only"):
        lean.save(tmp_path)


def test_sparse_rows_are_scaled_to_unit_norm_as_their_dense_rows_are():
    # rows with duplicate entries (summed first), an empty row between held ones, a last
    # empty row: the sparse result equals the dense one's, and the caller's matrix is kept
    data = np.array([3.0, 4.0, 1.0, 1.0, 2.0, -2.0], dtype=np.float32)
    indices = np.array([0, 2, 1, 1, 0, 3])
    matrix = sp.csr_matrix((data, indices, [0, 2, 2, 4, 6, 6]), shape=(5, 4))
    before = matrix.data.copy(), matrix.indices.copy()
    unit = normalize_rows(matrix)
    np.testing.assert_allclose(unit.toarray(), normalize_rows(matrix.toarray()), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(unit.toarray(), axis=1), [1, 0, 1, 1, 0], atol=1e-6)
    assert unit.dtype == np.float32
    np.testing.assert_array_equal(matrix.data, before[0])
    np.testing.assert_array_equal(matrix.indices, before[1])


def test_content_profiles_count_each_item_once_as_the_content_contenders_do(tmp_path):
    """A user's tabular profile is the mean of their items' rows, each item counted once, as
    the content (tabular) contender and every fold-in count them, whatever its confidence
    (a purchase weighs 5 views here). Weighed by confidence, the demo shop's new items were
    ranked by the fused model's tabular block far below that contender (cold-item recall@10
    0.049 against 0.066, benchmarks/RESULTS.md session 61). A feed's reasons split the term
    per history item the same way: nothing is left over."""
    data = toy_catalog()
    data.interactions.loc[data.interactions.index % 3 == 0, "event"] = "purchase"
    cf = CFConfig(factors=8, event_weights={"purchase": 5.0, "click": 1.0})
    fusion_config = FusionConfig(weights={"cf": 1.0, "tabular": 0.5})
    fitted = fit_in_memory(data, TrainConfig(cf=cf, fusion=fusion_config, validation_share=0))
    fused, user_items = fitted.fused, fitted.cf.user_items_
    assert len(np.unique(user_items.data)) > 2  # the confidences differ
    contender = ContentProfile("content (tabular)", fitted.content.blocks["tabular"]).fit(data)
    rows = contender._rows(np.asarray(fitted.cf.user_ids_))
    np.testing.assert_allclose(
        fused.user_blocks_["tabular"], contender.profiles_[rows], rtol=1e-5, atol=1e-6
    )
    fused.set_weights({"tabular": 1.0})  # the tabular term alone
    found = np.arange(6)
    for user in range(4):
        history = explain.history_of(user_items, user)
        parts = explain.history_parts(fused, fitted.cf, history, fused.user_vectors(user), found)
        np.testing.assert_allclose(parts[2], 0.0, atol=1e-5)  # no remainder
    # a bundle saved before weighed its users' content profiles by confidence, and loads so
    fused.save(tmp_path)
    assert FusedModel.load(tmp_path).content_profile_ == fusion.ONCE
    state = json.loads((tmp_path / "fusion.json").read_text())
    del state["content_profile"]
    (tmp_path / "fusion.json").write_text(json.dumps(state))
    old = FusedModel.load(tmp_path)
    np.testing.assert_array_equal(old.content_profile_weights(user_items.data), user_items.data)
