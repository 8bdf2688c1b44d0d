"""The CSR-row helpers a request uses agree with scipy's own sparse algebra."""

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.model import sparse_rows


@pytest.fixture
def matrix():
    rng = np.random.default_rng(0)
    m = sp.random(60, 40, density=0.15, random_state=1, format="csr", dtype=np.float32)
    m[5] = 0  # an empty row
    m.eliminate_zeros()
    return m, rng


def test_gather_lists_each_rows_entries_in_order_with_repeats(matrix):
    m, _ = matrix
    rows = np.array([3, 5, 3, 59])
    owner, columns, values = sparse_rows.gather(m, rows)
    rebuilt = sp.csr_matrix((values, (owner, columns)), shape=(len(rows), m.shape[1]))
    np.testing.assert_array_equal(rebuilt.toarray(), m[rows].toarray())


def test_row_dots_cross_dots_and_norm_match_scipy(matrix):
    m, rng = matrix
    rows = rng.choice(60, 25)
    vector = sp.random(1, 40, density=0.3, random_state=2, format="csr")
    vector.sort_indices()
    dots = sparse_rows.row_dots(m, rows, vector.indices, vector.data)
    np.testing.assert_allclose(dots, (m[rows] @ vector.T).toarray().ravel(), rtol=1e-6)

    left, right = rng.choice(60, 7), np.array([5, *rng.choice(60, 11)])
    expected = (m[left] @ m[right].T).toarray()
    np.testing.assert_allclose(sparse_rows.cross_dots(m, left, right), expected, rtol=1e-6)

    weights = rng.normal(size=len(left))
    expected = np.linalg.norm(m[left].T @ weights)
    assert sparse_rows.norm_of_sum(m, left, weights) == pytest.approx(expected, rel=1e-6)


def test_a_long_history_gets_the_same_cross_dots_from_either_product(matrix, monkeypatch):
    """A heavy shopper's history goes through scipy's product, a light one's through numpy
    arrays: the same sums in the same order, so the same bits (reasons are compared byte
    for byte when a kept answer is checked)."""
    m, rng = matrix
    left = np.r_[rng.choice(60, 500), 5]  # repeats and an empty row
    right = np.array([5, *rng.choice(60, 20)])
    expected = (m[left] @ m[right].T).toarray()
    through_scipy = sparse_rows.cross_dots(m, left, right)
    monkeypatch.setattr(sparse_rows, "CROSS_DENSE_PRODUCTS", 10**12)
    through_numpy = sparse_rows.cross_dots(m, left, right)
    np.testing.assert_allclose(through_scipy, expected, rtol=1e-6)
    np.testing.assert_array_equal(through_scipy, through_numpy)


def test_empty_rows_and_vectors_give_zeros(matrix):
    m, _ = matrix
    empty = np.zeros(0, dtype=np.int64)
    assert sparse_rows.row_dots(m, np.array([1, 2]), empty, np.zeros(0)).tolist() == [0, 0]
    assert sparse_rows.cross_dots(m, np.array([1]), np.array([5])).tolist() == [[0.0]]
    assert sparse_rows.norm_of_sum(m, np.array([5]), np.ones(1)) == 0.0
    assert sparse_rows.cross_dots(m, empty, np.array([1, 2])).shape == (0, 2)


def test_pair_dots_match_scipy_with_padding_and_any_batching(matrix, monkeypatch):
    m, rng = matrix
    vectors = sp.random(7, m.shape[1], density=0.4, format="csr", random_state=4)
    keep = np.ones(7)
    keep[2] = 0  # a query without entries
    vectors = sp.csr_matrix(sp.diags(keep) @ vectors[:, ::-1])  # unsorted within rows
    vectors.eliminate_zeros()
    rows = rng.integers(0, m.shape[0], size=(7, 5))
    rows[[0, 3], [1, 4]] = -1  # padding
    full = (vectors @ m.T).toarray()  # (Q, I)
    expected = np.where(rows >= 0, np.take_along_axis(full, np.maximum(rows, 0), 1), 0)
    for entries in (1 << 23, 16, 1):  # one batch, several, one query at a time
        monkeypatch.setattr(sparse_rows, "PAIR_ENTRIES", entries)
        got = sparse_rows.pair_dots(m, rows, vectors)
        assert got.shape == (7, 5) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_rarest_dots_are_the_product_or_within_a_budget_its_shortest_rows_part(matrix):
    m, _ = matrix  # here: 60 postings rows over 40 columns
    vector = sp.random(1, 60, density=0.3, random_state=6, format="csr", dtype=np.float32)
    vector.sort_indices()
    columns, dots = sparse_rows.rarest_dots(m, vector.indices, vector.data, budget=10**6)
    full = (vector @ m).toarray().ravel()
    assert columns.tolist() == sorted(set(m[vector.indices].indices))  # reached, ascending
    np.testing.assert_allclose(dots, full[columns], rtol=1e-6)

    lengths = np.diff(m.indptr)[vector.indices]
    shortest = np.argsort(lengths, kind="stable")[:3]
    budget = int(lengths[shortest].sum())  # exactly the three shortest rows fit
    columns, dots = sparse_rows.rarest_dots(m, vector.indices, vector.data, budget)
    part = (vector[:, vector.indices[shortest]] @ m[vector.indices[shortest]]).toarray().ravel()
    assert columns.tolist() == np.flatnonzero(part).tolist()  # positive entries: none cancel
    np.testing.assert_allclose(dots, part[columns], rtol=1e-6)
    assert len(columns) <= budget


def test_a_row_matrix_is_the_row_scipy_gives_and_shares_nothing_with_the_matrix(matrix):
    matrix, _ = matrix
    for r in range(matrix.shape[0]):
        one = sparse_rows.row_matrix(matrix, r)
        assert one.shape == (1, matrix.shape[1])
        np.testing.assert_array_equal(one.toarray(), matrix[r].toarray())
        assert not np.shares_memory(one.data, matrix.data)
