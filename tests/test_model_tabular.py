"""Tabular encoder: each attribute kind, a TF-IDF reference, save/load without pickles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from recsys.model import tabular
from recsys.model.tabular import TabularConfig, TabularEncoder, view_lift

KINDS = {
    "price": "numeric",
    "color": "categorical",
    "tags": "multi",
    "title": "text",
    "released": "date",
}


@pytest.fixture
def items():
    return pd.DataFrame(
        {
            "price": [1.0, 2.0, 3.0, 100.0, None],
            "color": ["red", "blue", "red", None, "green"],
            "tags": ["a|b", ["b", "c"], "a", None, "c"],
            "title": ["red shoe", "blue shoe", "red hat big", "big hat", "green shoe"],
            "released": ["2024-01-01", "2023-06-01", None, "2020-01-01", "2024-01-01T12:00"],
        }
    )


def test_encodes_every_kind_with_unit_columns(items):
    encoder = TabularEncoder(KINDS, TabularConfig(min_df=1)).fit(items)
    out = encoder.transform(items)
    assert out.shape == (5, encoder.dim_) and out.dtype == np.float32
    # One unit-norm sub-block per column with a value: squared norm = number of known columns.
    known = items.notna().sum(axis=1).to_numpy()
    np.testing.assert_allclose(np.sum(out**2, axis=1), known, rtol=1e-5)
    color = TabularEncoder({"color": "categorical"}).fit(items).transform(items)
    assert color[0] @ color[2] == 1 and color[0] @ color[1] == 0
    tags = TabularEncoder({"tags": "multi"}).fit(items).transform(items)
    np.testing.assert_allclose([tags[0] @ tags[1], tags[0] @ tags[4]], [0.5, 0.0], atol=1e-6)


def test_unseen_values_encode_as_zero(items):
    encoder = TabularEncoder({"color": "categorical"}).fit(items)
    out = encoder.transform(pd.DataFrame({"color": ["purple"]}))
    assert not out.any()


def test_text_matches_sklearn_tfidf(items):
    """Slow reference: sklearn's TfidfVectorizer on the same data (words kept, not squeezed)."""
    encoder = TabularEncoder({"title": "text"}, TabularConfig(min_df=1, max_dims=0))
    out = encoder.fit(items).transform(items)
    reference = TfidfVectorizer(min_df=1, sublinear_tf=True).fit_transform(items["title"])
    np.testing.assert_allclose(out @ out.T, (reference @ reference.T).toarray(), atol=1e-5)


def test_high_cardinality_values_keep_their_identity():
    """20,000 sellers: each one held by two items keeps its own column, in the sparse matrix
    the content models use, and memory follows the values items have."""
    sellers = np.repeat([f"s{k}" for k in range(20_000)], 2)
    items = pd.DataFrame({"seller": sellers, "title": [f"{s} shop" for s in sellers]})
    encoder = TabularEncoder({"seller": "categorical"}, TabularConfig(max_dims=32)).fit(items)
    sparse = encoder.transform_sparse(items)
    assert sparse.shape == (40_000, 20_000) and sparse.nnz == 40_000
    similarity = (sparse[:4] @ sparse[:4].T).toarray()
    np.testing.assert_allclose(similarity, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    assert encoder.transform(items).shape == (40_000, 32)


def test_numeric_bins_reward_close_values():
    frame = pd.DataFrame({"year": np.arange(1950, 2020, dtype=float)})
    out = TabularEncoder({"year": "numeric"}).fit(frame).transform(frame)
    assert out[60] @ out[61] > out[60] @ out[40] > out[60] @ out[0]


def test_titles_without_spaces_share_words_and_one_text_has_one_form():
    """A Chinese title was one word, shared with no other title: two sneakers had nothing in
    common, nor did a title written with a combining umlaut and the same one composed."""
    titles = pd.DataFrame(
        {
            "title": [
                "李宁新款红色运动鞋",  # Li-Ning new red sneakers
                "安踏白色运动鞋",  # Anta white sneakers
                "红色连衣裙",  # red dress
                "Müller Jacke",
                "Mu\u0308ller Jacke",  # the same, its umlaut a combining mark (macOS)
                "ＭＵＬＬＥＲ",  # full-width letters
            ]
        }
    )
    encoder = TabularEncoder({"title": "text"}, TabularConfig(min_df=1, max_dims=0))
    out = encoder.fit(titles).transform(titles)
    cosine = out @ out.T
    assert cosine[0, 1] > 0.2 and cosine[0, 2] > 0.1  # 运动鞋 (sneakers), 红色 (red)
    assert cosine[1, 2] == 0
    assert cosine[3, 4] == pytest.approx(1.0, abs=1e-5) and cosine[3, 5] == 0  # mu'ller, muller
    assert tabular.text.words("ＭＵＬＬＥＲ ﾜﾝﾋﾟｰｽ 傘") and list(
        tabular.text.words("ＭＵＬＬＥＲ ﾜﾝﾋﾟｰｽ 傘")
    ) == ["muller", "ワン", "ンピ", "ピー", "ース", "傘"]
    assert list(tabular.text.words("Regen\u00adschirm")) == ["regenschirm"]  # a soft hyphen


def test_a_bundles_vocabulary_is_read_with_the_words_it_was_counted_in(items, tmp_path):
    """A bundle saved before the words of any script counts its vocabulary as scikit-learn
    did (its state has no "words"): a title is encoded as it was at training."""
    encoder = TabularEncoder({"title": "text"}, TabularConfig(min_df=1, max_dims=0))
    encoder.fit(pd.DataFrame({"title": ["红色运动鞋", "白色运动鞋 x1"]}))
    encoder.save(tmp_path)
    state = json.loads((tmp_path / "tabular.json").read_text())
    assert state["columns"]["title"].pop("words") == 2
    (tmp_path / "tabular.json").write_text(json.dumps(state))
    loaded = TabularEncoder.load(tmp_path)
    _, text = loaded.columns_["title"]
    assert text.words == 1 and text._counter.build_analyzer()("红色运动鞋 x1") == [
        "红色运动鞋",
        "x1",
    ]


def test_save_load_round_trip_without_pickles(items, tmp_path):
    encoder = TabularEncoder(KINDS, TabularConfig(min_df=1)).fit(items)
    paths = encoder.save(tmp_path)
    for path in paths:
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
    loaded = TabularEncoder.load(tmp_path)
    np.testing.assert_allclose(loaded.transform(items), encoder.transform(items), rtol=1e-6)
    assert loaded.dim_ == encoder.dim_


def test_unknown_kind_is_refused(items):
    with pytest.raises(ValueError, match="kind 'blob'"):
        TabularEncoder({"price": "blob"}).fit(items)


def test_a_wide_block_is_projected_and_the_projection_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    items = pd.DataFrame(
        {"brand": [f"b{v}" for v in rng.integers(0, 300, 1000)], "price": rng.random(1000)}
    )
    kinds = {"brand": "categorical", "price": "numeric"}
    wide = TabularEncoder(kinds, TabularConfig(max_dims=0)).fit(items)
    narrow = TabularEncoder(kinds, TabularConfig(max_dims=64)).fit(items)
    assert wide.dim_ > 300 and narrow.dim_ == 64 == narrow.transform(items).shape[1]
    narrow.save(tmp_path)
    loaded = TabularEncoder.load(tmp_path)
    assert loaded.dim_ == 64
    np.testing.assert_allclose(loaded.transform(items), narrow.transform(items), atol=1e-6)


def test_fit_transform_sparse_equals_fit_then_transform():
    rng = np.random.default_rng(1)
    items = pd.DataFrame(
        {"brand": [f"b{v}" for v in rng.integers(0, 300, 1000)], "price": rng.random(1000)}
    )
    kinds = {"brand": "categorical", "price": "numeric"}
    config = TabularConfig(max_dims=16, svd_sample=400)
    once = TabularEncoder(kinds, config)
    tokens = once.fit_transform_sparse(items)
    twice = TabularEncoder(kinds, config).fit(items)
    assert (tokens != twice.transform_sparse(items)).nnz == 0
    np.testing.assert_allclose(once.projection_, twice.projection_, atol=1e-6)


def test_view_lift_is_the_mean_pair_cosine_above_random_pairs_of_a_dense_reference():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 6)) * (rng.random((40, 6)) < 0.4)  # signed, sparse
    encoded = sp.csr_matrix(values)
    view = rng.normal(size=(40, 5))
    unit = view / np.linalg.norm(view, axis=1, keepdims=True)
    cosine = unit @ unit.T
    off = ~np.eye(40, dtype=bool)
    base = cosine[off].mean()
    lift = view_lift(encoded, view)
    for f in range(6):
        a = np.abs(encoded[:, f].toarray().ravel())
        pairs = np.outer(a, a) * off
        expected = ((pairs * cosine).sum() / pairs.sum() - base) / (1 - base)
        assert lift[f] == pytest.approx(float(np.clip(expected, 0, 1)), abs=1e-9)


def _kinds_and_brands(seed: int = 0, n: int = 600):
    """Items whose product word fixes what they look like (the view: one of 6 looks plus
    noise) and whose brand and tone span every look; titles read "brand word tone"."""
    rng = np.random.default_rng(seed)
    look = rng.integers(0, 6, n)
    words = np.array(["tee", "coat", "boots", "bag", "dress", "jeans"])
    brands = np.array([f"brand{b}" for b in range(8)])[rng.integers(0, 8, n)]
    tones = np.array(["light", "mid", "dark"])[rng.integers(0, 3, n)]
    items = pd.DataFrame(
        {
            "title": [f"{b} {w} {t}" for b, w, t in zip(brands, words[look], tones, strict=True)],
            "brand": brands,
            "tone": tones,
        }
    )
    centres = rng.normal(size=(6, 16))
    view = centres[look] + 1.5 * rng.normal(size=(n, 16))
    return items, look, view


def _same_look_at_10(block: np.ndarray, look: np.ndarray) -> float:
    unit = block / np.linalg.norm(block, axis=1, keepdims=True)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :10]
    return float((look[top] == look[:, None]).mean())


def test_a_view_weights_the_block_towards_what_items_look_like_and_a_noise_view_does_not():
    items, look, view = _kinds_and_brands()
    kinds = {"title": "text", "brand": "categorical", "tone": "categorical"}
    config = TabularConfig(max_dims=8)
    plain = TabularEncoder(kinds, config).fit(items).transform(items)
    weighted = TabularEncoder(kinds, config).fit(items, view=view).transform(items)
    # brand and tone words outweigh the one product word until the view says otherwise
    assert _same_look_at_10(plain, look) < 0.6
    assert _same_look_at_10(weighted, look) > 0.95
    shuffled = view[np.random.default_rng(1).permutation(len(view))]
    noise = TabularEncoder(kinds, config).fit(items, view=shuffled)
    assert noise.view_weights_.max() < 1.5
    unchanged = _same_look_at_10(noise.transform(items), look) - _same_look_at_10(plain, look)
    assert abs(unchanged) < 0.03
    off = TabularEncoder(kinds, TabularConfig(max_dims=8, view_weight=0)).fit(items, view=view)
    assert off.view_weights_ is None
    np.testing.assert_allclose(off.transform(items), plain, atol=1e-6)


def test_view_weights_survive_save_and_load_also_without_a_projection(tmp_path):
    items, _, view = _kinds_and_brands(n=200)
    kinds = {"title": "text", "brand": "categorical"}
    for max_dims in (8, 0):
        encoder = TabularEncoder(kinds, TabularConfig(max_dims=max_dims)).fit(items, view=view)
        assert encoder.view_weights_.max() > 2
        (tmp_path / str(max_dims)).mkdir()
        encoder.save(tmp_path / str(max_dims))
        restored = TabularEncoder.load(tmp_path / str(max_dims))
        np.testing.assert_allclose(restored.transform(items), encoder.transform(items), atol=1e-6)
        assert restored.dim_ == encoder.dim_


def test_a_view_of_the_wrong_length_is_refused():
    items, _, view = _kinds_and_brands(n=50)
    with pytest.raises(ValueError, match="view has 49 rows for 50 items"):
        TabularEncoder({"title": "text"}).fit(items, view=view[:49])


@pytest.mark.parametrize("kind", ["categorical", "multi"])
def test_a_few_values_read_one_by_one_give_the_pairs_pandas_gives(kind, monkeypatch):
    # A live item's few rows take the one-by-one reading; a catalog takes pandas' set-wise
    # steps. Both must label every value alike, or a live item's vector would differ from
    # the same item's at training time.
    values = [
        "red", " red ", "a|b", "a| b |", "|", "", "  ", None, np.nan, 3, 2.5, True,
        "nan", np.float64(1.5),
    ]  # fmt: skip
    if kind == "multi":
        values += [["x", "y|z", None, 7, ""], []]
    for series in (pd.Series(values, dtype=object), pd.Series([" s", None, "t|u"], dtype="str")):
        assert tabular._few_label_pairs(kind, series.tolist()) is not None  # read one by one
        few_rows, few_labels = tabular.label_pairs(kind, series)
        monkeypatch.setattr(tabular, "FEW_VALUES", 0)  # pandas' steps
        rows, labels = tabular.label_pairs(kind, series)
        monkeypatch.undo()
        assert few_rows.tolist() == rows.tolist()
        assert few_labels.tolist() == labels.tolist()


def test_a_live_items_categorical_encoding_equals_its_rows_in_the_whole_catalog():
    rng = np.random.default_rng(0)
    brands = [f"brand-{k}" for k in range(40)]
    catalog = pd.DataFrame(
        {
            "brand": [brands[k] for k in rng.integers(0, 40, 500)],
            "tags": ["|".join(rng.choice(brands, 3)) for _ in range(500)],
        }
    )
    encoder = TabularEncoder({"brand": "categorical", "tags": "multi"}, TabularConfig())
    whole = encoder.fit(catalog).transform_sparse(catalog)  # 500 rows: pandas' steps
    few = encoder.transform_sparse(catalog.iloc[100:110])  # 10 rows: one by one
    assert (abs(few - whole[100:110]) > 1e-6).nnz == 0
