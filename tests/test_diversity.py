"""MMR re-ranking (recsys.model.diversity): λ = 0 is the plain ranking, the fast MMR matches a
slow greedy reference, diversity shows in what a shopper sees, and bad λ are refused."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.catalog import connect, migrate
from recsys.errors import InvalidInput
from recsys.model import diversity
from recsys.model.bundle import load_active
from recsys.model.training import train
from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import populate, train_config


def reference_mmr(relevance, vectors, k, lam):
    """The greedy definition, one query at a time, in plain Python."""
    valid = [j for j in range(len(relevance)) if np.isfinite(relevance[j])]
    low, high = min(relevance[j] for j in valid), max(relevance[j] for j in valid)
    scaled = {j: (relevance[j] - low) / (high - low) if high > low else 0.0 for j in valid}
    chosen: list[int] = []
    while valid and len(chosen) < k:

        def gain(j):
            near = max((float(vectors[j] @ vectors[i]) for i in chosen), default=0.0)
            return (1 - lam) * scaled[j] - lam * near

        best = max(valid, key=lambda j: (gain(j), -j))  # first of equal gains
        chosen.append(best)
        valid.remove(best)
    return chosen + [-1] * (k - len(chosen))


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_mmr_matches_the_greedy_reference(lam):
    rng = np.random.default_rng(int(lam * 10))
    relevance = np.sort(rng.normal(size=(6, 12)), axis=1)[:, ::-1].copy()  # pools, best first
    relevance[2, 9:] = -np.inf  # a short pool
    vectors = rng.normal(size=(6, 12, 5)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    fast = diversity.mmr(relevance, vectors, 5, lam)
    for q in range(6):
        assert fast[q].tolist() == reference_mmr(relevance[q], vectors[q], 5, lam)


def test_mmr_with_lambda_zero_is_the_relevance_order():
    rng = np.random.default_rng(0)
    relevance = rng.normal(size=(4, 30))
    vectors = rng.normal(size=(4, 30, 8))
    order = diversity.mmr(relevance, vectors, 10, 0.0)
    expected = np.argsort(-relevance, axis=1, kind="stable")[:, :10]
    assert (order == expected).all()


def test_intra_list_diversity_and_distinct_values_match_their_definitions():
    rng = np.random.default_rng(1)
    blocks = {"tabular": rng.normal(size=(20, 6)), "image": rng.normal(size=(20, 4))}
    top = rng.choice(20, size=(5, 4), replace=False)
    top[4, 2:] = -1
    spread = diversity.intra_list_diversity(top, blocks)
    unit = {b: v / np.linalg.norm(v, axis=1, keepdims=True) for b, v in blocks.items()}
    for u in range(5):
        items = [i for i in top[u] if i >= 0]
        pairs = [(i, j) for i in items for j in items if i != j]
        cosine = [np.mean([unit[b][i] @ unit[b][j] for b in unit]) for i, j in pairs]
        assert spread[u] == pytest.approx(np.mean([1 - c for c in cosine]), abs=1e-5)
    values = sp.csr_matrix(rng.random((20, 3)) > 0.6, dtype=np.float32)
    distinct = diversity.distinct_values(top, values)
    for u in range(5):
        items = [i for i in top[u] if i >= 0]
        assert distinct[u] == len(set(np.flatnonzero(values[items].toarray().any(axis=0))))


def test_the_default_rule_takes_the_largest_cheap_and_diverse_lambda():
    def sweep(*rows):
        pairs = zip(diversity.SWEEP, rows, strict=True)
        return {lam: {"recall@10": r, "diversity@10": d} for lam, (r, d) in pairs}

    # 0.1: too little variety; 0.3: -1.5% recall, +22% variety; 0.5: -5% recall
    cheap = sweep((0.2, 0.5), (0.199, 0.55), (0.197, 0.61), (0.19, 0.8))
    assert diversity.choose_diversity(cheap) == 0.3
    costly = sweep((0.2, 0.5), (0.199, 0.55), (0.15, 0.7), (0.1, 0.9))
    assert diversity.choose_diversity(costly) == 0.0


def test_bad_lambdas_are_refused_naming_the_field():
    with pytest.raises(InvalidInput, match="diversity must be between 0 and 1"):
        diversity.check_diversity(1.5)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The toy shop without images, trained: (database URL, artifacts)."""
    root = tmp_path_factory.mktemp("diversity")
    url = f"sqlite:///{root / 'shop.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    populate(engine)
    train(engine, root / "artifacts", train_config(), "cpu")
    engine.dispose()
    return url, root / "artifacts"


def test_lambda_zero_is_the_plain_ranking_and_more_lambda_more_variety(shop):
    recommender = load_active(connect(shop[0]))
    users = ["u2", "u9", "nobody"]
    plain = recommender.recommend(users, k=8, diversity=0.0)
    for q, user in enumerate(users[:2]):
        row = recommender.user_index.get(user)
        seen = recommender.cf.user_items_[row].indices
        rows, scores = recommender.index.search(
            recommender.fused.user_vectors(row), 8, None, [seen]
        )
        assert plain.ids[q] == recommender.item_ids[rows[0]].tolist()
        np.testing.assert_array_equal(plain.scores[q], scores[0])
    similar = recommender.similar_items(["a1", "b2"], k=6, diversity=0.0)
    assert similar.ids == recommender.similar_items(["a1", "b2"], k=6).ids

    blocks = recommender.fused.item_blocks_
    spread = {}
    for lam in (0.0, 0.5):
        found = recommender.similar_items(["a1", "b2"], k=6, diversity=lam)
        rows = np.array([recommender.item_rows(ids) for ids in found.ids])
        spread[lam] = diversity.intra_list_diversity(rows, blocks).mean()
        pool = recommender.similar_items(["a1", "b2"], k=18, diversity=0.0).ids
        assert all(set(ids) <= set(p) for ids, p in zip(found.ids, pool, strict=True))
        assert all(len(ids) == 6 for ids in found.ids)
    assert spread[0.5] > spread[0.0]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "lots", "1e1", "nan", "inf", "", "1e999"])
def test_the_api_refuses_a_bad_diversity_naming_it(shop, value):
    url, artifacts = shop
    app = create_app(Settings(database_url=url, artifacts_dir=artifacts), {"TESTING": True})
    client = app.test_client()
    for path in ("/v1/items/a1/similar", "/v1/users/u9/recommendations"):
        response = client.get(f"{path}?diversity={value}")
        assert response.status_code == 400
        assert "diversity" in response.get_json()["error"]["message"]
    ok = client.get("/v1/items/a1/similar?diversity=0.3&k=5").get_json()
    assert len(ok["items"]) == 5
    # exponents, as generated clients (httpx) write small floats, are decimal numbers too
    for written in ("1e-1", "1e-05", "2.5E-3", "0.3e0"):
        exponent = client.get(f"/v1/items/a1/similar?diversity={written}&k=5")
        assert exponent.status_code == 200, written
    body = client.post("/v1/users/u9/recommendations", json={"diversity": 2}).get_json()
    assert "diversity" in body["error"]["message"]
