"""The weights stage's candidate scores: token terms scored set-wise equal the full product."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.model import validation


@pytest.mark.parametrize("threshold", [0, 10**9])  # looked up pair by pair / gathered from all
def test_candidate_token_scores_are_the_profiles_dots_either_way(threshold, monkeypatch):
    monkeypatch.setattr(validation, "PAIR_MIN_ITEMS_PER_CANDIDATE", threshold)
    item_tokens = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    fused = SimpleNamespace(item_tokens_=item_tokens, token_postings=sp.csr_matrix(item_tokens.T))
    profiles = sp.random(6, 30, density=0.3, format="csr", dtype=np.float32, random_state=1)
    items = np.random.default_rng(2).integers(0, 50, size=(6, 8))
    items[1, 5:] = -1  # padding
    got = validation._candidate_token_scores(fused, profiles, items, batch=4)
    full = (profiles @ item_tokens.T).toarray()
    expected = np.where(items >= 0, np.take_along_axis(full, np.maximum(items, 0), 1), 0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
