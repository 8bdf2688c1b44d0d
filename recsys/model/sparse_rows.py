"""A few rows of a CSR matrix, worked on as plain arrays.

A request touches tens of rows of the item-token matrix (a feed's candidates, a user's
history). scipy builds a new sparse matrix for every slice, transpose and product, at tens
of microseconds each whatever its size; these functions read the rows' slices of the CSR
arrays directly, so their cost is the entries they touch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp


class Row(NamedTuple):
    """One row of a CSR matrix as its arrays: column numbers (ascending) and values."""

    indices: np.ndarray
    data: np.ndarray


def row(matrix: sp.csr_matrix, r: int) -> Row:
    """Row ``r`` of ``matrix`` as views of its arrays (sorted first when the matrix's column
    numbers are not), where ``matrix[r]`` builds a new sparse matrix."""
    start, end = matrix.indptr[r], matrix.indptr[r + 1]
    indices, data = matrix.indices[start:end], matrix.data[start:end]
    if not matrix.has_sorted_indices:
        order = np.argsort(indices, kind="stable")
        indices, data = indices[order], data[order]
    return Row(indices, data)


def row_matrix(matrix: sp.csr_matrix, r: int) -> sp.csr_matrix:
    """Row ``r`` of ``matrix`` as a (1, F) CSR matrix holding copies of its arrays (``row``'s,
    so nothing keeps the whole matrix alive); ``matrix[r]`` goes through scipy's general
    indexing, several times slower."""
    indices, data = row(matrix, r)
    return sp.csr_matrix(
        (data.copy(), indices.copy(), [0, len(indices)]), shape=(1, matrix.shape[1])
    )


def gather(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner, columns, values) of the entries of ``rows``, row after row; ``owner`` is each
    entry's place in ``rows`` (so repeated rows give repeated entries)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), lengths)
    at = ranges(starts, lengths)
    return owner, matrix.indices[at], matrix.data[at]


def ranges(starts, lengths: np.ndarray) -> np.ndarray:
    """start, start + 1, ..., start + length - 1 for each (start, length), one range after the
    other (``starts`` may be one number for all): the places of CSR rows' entries, set-wise."""
    lengths = np.asarray(lengths, dtype=np.int64)
    before = np.cumsum(lengths) - lengths  # each range's place in the output
    total = int(before[-1] + lengths[-1]) if len(lengths) else 0
    return np.arange(total) + np.repeat(np.asarray(starts, dtype=np.int64) - before, lengths)


def row_dots(
    matrix: sp.csr_matrix, rows: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """(len(rows),) float64: each row's inner product with the sparse vector (``indices``
    ascending and distinct, ``values``)."""
    owner, columns, data = gather(matrix, rows)
    return np.bincount(owner, weights=data * lookup(indices, values, columns), minlength=len(rows))


# Entries gathered at once by ``pair_dots`` (each costs about 40 bytes of temporaries).
PAIR_ENTRIES = 1 << 23


def pair_dots(matrix: sp.csr_matrix, rows: np.ndarray, vectors: sp.csr_matrix) -> np.ndarray:
    """(Q, C) float32: ``matrix[rows[q, c]] . vectors[q]`` for each query ``q`` and each of its
    candidate rows (-1: padding, scored 0). Set-wise: the candidates' entries are gathered
    and each looked up among its query's entries; nothing is densified over the columns.
    """
    n_queries, width = rows.shape
    out = np.zeros((n_queries, width), dtype=np.float32)
    if n_queries == 0 or width == 0:
        return out
    vectors = sp.csr_matrix(vectors)
    if not vectors.has_sorted_indices:  # sorted on a copy: the caller's matrix stays as it is
        vectors = vectors.sorted_indices()
    per_row = max(1.0, matrix.nnz / max(matrix.shape[0], 1))
    step = max(1, int(PAIR_ENTRIES // (width * per_row)))
    n_columns = np.int64(vectors.shape[1])
    for start in range(0, n_queries, step):
        part = rows[start : start + step]  # (b, C)
        flat = part.ravel()
        owner, columns, data = gather(matrix, np.maximum(flat, 0))
        query = vectors[start : start + step]
        wanted = (owner // width).astype(np.int64) * n_columns + columns
        values = lookup(entry_keys(query), query.data, wanted)
        dots = np.bincount(owner, weights=data * values, minlength=len(flat))
        out[start : start + step] = np.where(flat >= 0, dots, 0.0).reshape(part.shape)
    return out


def norm_of_sum(matrix: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> float:
    """``|sum_j weights_j * matrix[rows_j]|``, the Euclidean norm of a weighted sum of rows."""
    owner, columns, data = gather(matrix, rows)
    if not len(columns):
        return 0.0
    _, column = np.unique(columns, return_inverse=True)
    summed = np.bincount(column, weights=data * np.asarray(weights, dtype=np.float64)[owner])
    return float(np.sqrt(summed @ summed))


# Above this many (shared entry, right row) products, ``cross_dots`` hands them to scipy's
# sparse-dense product instead of laying them out as numpy arrays: the same sums in the same
# order, without the temporaries (a feed's reasons for shoppers with 3,677-17,553 events:
# 8.6-10.9 -> 6.2-6.8 ms; benchmarks/RESULTS.md, session 29).
CROSS_DENSE_PRODUCTS = 1 << 14


def cross_dots(matrix: sp.csr_matrix, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(len(left), len(right)) float64: the inner products of rows ``left`` (a request's
    history, any length) with rows ``right`` (its list, a few dozen rows)."""
    r_owner, r_columns, r_data = gather(matrix, right)
    if not len(r_columns):
        return np.zeros((len(left), len(right)))
    shared, r_column = np.unique(r_columns, return_inverse=True)
    dense = np.zeros((len(shared), len(right)))  # the right rows over their own columns
    dense[r_column, r_owner] = r_data
    l_owner, l_columns, l_data = gather(matrix, left)
    at = np.minimum(np.searchsorted(shared, l_columns), len(shared) - 1)
    hit = shared[at] == l_columns
    l_owner, at, l_data = l_owner[hit], at[hit], l_data[hit]
    if len(at) * len(right) > CROSS_DENSE_PRODUCTS:  # the left rows' shared entries as CSR
        indptr = np.zeros(len(left) + 1, dtype=np.int64)
        np.cumsum(np.bincount(l_owner, minlength=len(left)), out=indptr[1:])
        hits = sp.csr_matrix((l_data, at, indptr), shape=(len(left), len(shared)))
        return np.asarray(hits @ dense)
    products = l_data[:, None] * dense[at]  # (E, len(right)): one line per shared entry
    slots = l_owner[:, None] * len(right) + np.arange(len(right))
    out = np.bincount(slots.ravel(), weights=products.ravel(), minlength=len(left) * len(right))
    return out.reshape(len(left), len(right))


def entry_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """(nnz,) int64: each stored entry's row-major place, ``row * columns + column``;
    ascending when the matrix's indices are sorted, so ``lookup`` can search them."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return rows * np.int64(matrix.shape[1]) + matrix.indices


def lookup(indices: np.ndarray, values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The sparse vector's value at each of ``columns`` (0 where it has none); ``indices``
    ascending (a row's sorted indices, or ``entry_keys`` of a whole matrix)."""
    if not len(indices):
        return np.zeros(len(columns))
    at = np.minimum(np.searchsorted(indices, columns), len(indices) - 1)
    return np.where(indices[at] == columns, values[at], 0.0)


# rarest_dots sorts (column, position) pairs packed in one int64: positions take this many bits
_POSITION_BITS = 31
_POSITION_MASK = (1 << _POSITION_BITS) - 1


def rarest_dots(
    postings: sp.csr_matrix, indices: np.ndarray, values: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """(columns ascending, float32 dots): the sparse vector (``indices``, ``values``) times
    ``postings`` (one row per index), over the columns its rows reach. When those rows hold
    more than ``budget`` entries, only its shortest rows are read, up to the budget, and the
    dots are those rows' part of the product: the cost is at most ``budget`` entries and
    one sort of them, whatever the number of columns."""
    lengths = postings.indptr[indices + 1] - postings.indptr[indices]
    budget = min(budget, _POSITION_MASK)
    if lengths.sum() > budget:
        order = np.argsort(lengths, kind="stable")
        kept = order[np.cumsum(lengths[order]) <= budget]
        indices, values = indices[kept], values[kept]
    # the read rows as one run of positions, each with its row's value
    owner, columns, data = gather(postings, indices)
    if not len(columns):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    products = data * values[owner]
    # summed by column: one sort of (column, position) keys, then a segmented sum
    keys = np.sort((columns.astype(np.int64) << _POSITION_BITS) | np.arange(len(columns)))
    columns = keys >> _POSITION_BITS
    first = np.flatnonzero(np.r_[True, columns[1:] != columns[:-1]])
    dots = np.add.reduceat(products[keys & _POSITION_MASK], first)
    return columns[first], dots.astype(np.float32)
