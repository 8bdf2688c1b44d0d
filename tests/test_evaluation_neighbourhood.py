"""RP3beta's item weights: the walk on warm items, in batches, sparse or dense, equals the
walk written out densely over the whole catalog."""

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation import neighbourhood
from recsys.evaluation.neighbourhood import RP3beta


def dense_rp3(matrix: np.ndarray, alpha: float, beta: float, k: int) -> np.ndarray:
    """The reference: every (item, item) walk probability, best k per row by value then
    column, positive and off the diagonal."""
    user_to_item = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1e-12)
    item_to_user = matrix.T / np.maximum(matrix.T.sum(axis=1, keepdims=True), 1e-12)
    walk = (item_to_user @ user_to_item) ** alpha
    walk = walk / np.maximum((matrix > 0).sum(axis=0), 1) ** beta
    np.fill_diagonal(walk, 0.0)
    out = np.zeros_like(walk)
    for i, row in enumerate(walk):
        best = sorted(np.flatnonzero(row > 0), key=lambda j: (-row[j], j))[:k]
        out[i, best] = row[best]
    return out


@pytest.mark.parametrize("dense_share", [0.0, 1.0])  # every batch dense / every batch sparse
def test_rp3beta_weights_equal_the_dense_walk_over_the_whole_catalog(dense_share, monkeypatch):
    monkeypatch.setattr(neighbourhood, "DENSE_SHARE", dense_share)
    monkeypatch.setattr(neighbourhood, "WALK_CELLS", 40)  # many batches of a few rows
    rng = np.random.default_rng(5)
    matrix = (rng.random((40, 60)) < 0.08).astype(np.float32)
    matrix[:, 10:20] = 0.0  # cold items: no row, no column in the weights
    matrix[:, 30] = matrix[:, 31] = matrix[:, 32]  # equal columns: ties at the cut
    for beta in (0.0, 0.5):
        model = RP3beta(betas=(beta,), neighbours=4)
        weights = model.item_weights(sp.csr_matrix(matrix), beta)
        assert weights.shape == (60, 60)
        expected = dense_rp3(matrix.astype(np.float64), 1.0, beta, 4)
        np.testing.assert_allclose(weights.toarray(), expected, rtol=1e-5, atol=1e-7)
        assert weights[10:20].nnz == 0 and weights[:, 10:20].nnz == 0
