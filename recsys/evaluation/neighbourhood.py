"""Item-to-item peers of ``recsys evaluate``: EASE^R and RP3beta, each scoring a user's items
through an (I, I) item weight matrix, ``scores = X_u @ B``, with its one hyperparameter chosen
on a validation slice of the training part (``recsys.model.split.validation_split``).

- EASE^R [Steck 2019, "Embarrassingly Shallow Autoencoders"]: B = I - P diagMat(1 / diag P),
  P = (X'X + lambda I)^-1, dense over the items with training interactions; catalogs with more
  such items than ``ease_max_items`` skip it (memory ~ 8 x items^2 bytes, time ~ items^3).
- RP3beta [Paudel et al. 2016; Dacrema et al. 2019]: the two-step random walk item -> user ->
  item, raised to alpha, divided by the destination's popularity^beta, top-K per item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.model import parallel
from recsys.model.data import CatalogData
from recsys.model.protocol import binary_matrix, build_task, rank, score
from recsys.model.split import validation_split

log = logging.getLogger(__name__)

# Users scoring each candidate on the validation slice (a seeded sample).
VALIDATION_USERS = 2000


class ItemWeights:
    """``scores(user_ids) = X_u @ B`` for a learned (I, I) item weight matrix ``B``."""

    name = "item weights"

    def __init__(self, candidates: tuple[float, ...], holdout: float = 0.2, seed: int = 0):
        self.candidates = candidates
        self.holdout = holdout
        self.seed = seed

    def fit(self, train: CatalogData):
        item_ids = train.items["item_id"].to_numpy(dtype=str)
        self.param_ = self._choose(train.interactions, item_ids)
        users, matrix = binary_matrix(train.interactions, item_ids)
        self.users_, self.matrix_ = pd.Index(users), matrix
        self.weights_ = self.item_weights(matrix, self.param_)  # (I, I)
        log.info("%s: chose %s on the validation slice", self.name, self.param_)
        return self

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users_.get_indexer(np.asarray(user_ids, dtype=str))
        out = np.zeros((len(rows), self.matrix_.shape[1]), dtype=np.float32)
        known = rows >= 0
        if known.any():
            product = self.matrix_[rows[known]] @ self.weights_
            out[known] = product.toarray() if sp.issparse(product) else product
        return out

    def item_weights(self, matrix: sp.csr_matrix, param: float):
        raise NotImplementedError

    def _choose(self, interactions: pd.DataFrame, item_ids: np.ndarray) -> float:
        """The candidate with the best recall@10 on a validation slice of ``interactions``;
        the first when the slice holds no user out (nothing to choose on)."""
        if len(self.candidates) == 1:
            return self.candidates[0]
        fit_part, val_part = validation_split(interactions, self.holdout, self.seed)
        task = build_task(fit_part, val_part, item_ids).sample(VALIDATION_USERS, self.seed)
        if not len(task.user_ids):
            log.info("%s: no validation users; %s kept", self.name, self.candidates[0])
            return self.candidates[0]
        users, matrix = binary_matrix(fit_part, item_ids)
        scorer = _Scorer(pd.Index(users), matrix)
        best, best_recall = self.candidates[0], -1.0
        for candidate in self.candidates:
            scorer.weights = self.item_weights(matrix, candidate)
            recall = score(rank(scorer, task, 10), task, (10,), ())["overall"]["recall@10"]
            log.info("%s %s: validation recall@10 %.4f", self.name, candidate, recall)
            if recall > best_recall:
                best, best_recall = candidate, recall
        return best


class _Scorer:
    name = "validation"

    def __init__(self, users: pd.Index, matrix: sp.csr_matrix):
        self.users, self.matrix, self.weights = users, matrix, None

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        product = self.matrix[self.users.get_indexer(user_ids)] @ self.weights
        return product.toarray() if sp.issparse(product) else np.asarray(product)


class EASE(ItemWeights):
    """EASE^R over the items with training interactions; lambda chosen on validation."""

    name = "EASE"

    def __init__(self, lambdas=(100.0, 300.0, 1000.0), max_items: int = 12_000, **kwargs):
        super().__init__(tuple(lambdas), **kwargs)
        self.max_items = max_items

    @staticmethod
    def fits(train: CatalogData, max_items: int) -> bool:
        return train.interactions["item_id"].nunique() <= max_items

    def item_weights(self, matrix: sp.csr_matrix, param: float) -> np.ndarray:
        warm = np.flatnonzero(matrix.getnnz(axis=0))
        sub = matrix[:, warm]
        gram = np.asarray((sub.T @ sub).toarray(), dtype=np.float64)  # (W, W)
        gram[np.diag_indices_from(gram)] += param
        inverse = np.linalg.inv(gram)
        block = -inverse / np.diag(inverse)[None, :]  # B = I - P diagMat(1/diag P)
        block[np.diag_indices_from(block)] = 0.0
        out = np.zeros((matrix.shape[1], matrix.shape[1]), dtype=np.float32)
        out[np.ix_(warm, warm)] = block
        return out


class RP3beta(ItemWeights):
    """P3 = P(item -> user) P(user -> item), ** alpha, / popularity ** beta; beta chosen on
    validation, the top ``neighbours`` weights kept per item."""

    name = "RP3beta"

    def __init__(self, betas=(0.0, 0.3, 0.6), alpha: float = 1.0, neighbours: int = 100, **kw):
        super().__init__(tuple(betas), **kw)
        self.alpha, self.neighbours = alpha, neighbours

    def item_weights(self, matrix: sp.csr_matrix, param: float) -> sp.csr_matrix:
        # Only items with training interactions take part in the walk: the others' rows and
        # columns are zero, so the walk runs on the warm columns and is spread back.
        warm = np.flatnonzero(matrix.getnnz(axis=0))
        sub = sp.csr_matrix(matrix[:, warm])
        user_to_item = _row_normalised(sub)  # (U, W)
        item_to_user = _row_normalised(sp.csr_matrix(sub.T))  # (W, U)
        damp = sub.getnnz(axis=0).astype(np.float32) ** -param  # (W,)
        # Upper bound of each row's nonzeros: the items of the users who took the item.
        reach = sp.csr_matrix(sub.T) @ sub.getnnz(axis=1).astype(np.float64)

        def walk(rows: np.ndarray) -> sp.csr_matrix:
            product = sp.csr_matrix(item_to_user[rows] @ user_to_item)
            product.data **= self.alpha
            product.data *= damp[product.indices]
            return product

        weights = _top_per_row(walk, reach, self.neighbours)  # (W, W)
        return _spread(weights, warm, matrix.shape[1])


# Rows of the walk computed at once: at most about this many nonzeros (~0.5 GiB at peak).
WALK_CELLS = 1 << 23
# Batches whose product fills more than this share of its cells are ranked densely.
DENSE_SHARE = 0.1


def _top_per_row(block: Callable[[np.ndarray], sp.csr_matrix], reach: np.ndarray, k: int):
    """(n, n) CSR keeping the k largest positive entries of each row of the sparse
    ``block(rows)``, ties to the lower column; the diagonal is left out. Rows go in
    batches of about ``WALK_CELLS`` nonzeros by ``reach``, a bound of each row's."""
    n = len(reach)

    def best(rows: np.ndarray) -> sp.csr_matrix:
        row, col, value = _candidates(block(rows), rows, k)
        order = np.lexsort((col, -value, row))  # by row, best first, lower column first
        row, col, value = row[order], col[order], value[order]
        top = np.arange(len(row)) - np.searchsorted(row, row) < k
        return sp.csr_matrix((value[top], (row[top], col[top])), shape=(len(rows), n))

    # batches side by side on the CPUs, stacked in their order
    parts = list(parallel.map_in_order(best, _batches(np.minimum(reach, n), WALK_CELLS)))
    if not parts:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def _candidates(product: sp.csr_matrix, rows: np.ndarray, k: int):
    """(row, column, value) of the positive off-diagonal entries that may be among their
    row's k largest: on dense batches, only those at least the row's k-th largest value."""
    b, n = product.shape
    if product.nnz <= DENSE_SHARE * b * n:
        part = product.tocoo()
        keep = (part.data > 0) & (part.col != rows[part.row])
        return part.row[keep], part.col[keep], part.data[keep]
    dense = product.toarray()
    dense[np.arange(b), rows] = 0.0
    if k < n:
        kth = -np.partition(-dense, k - 1, axis=1)[:, k - 1]
        dense[dense < kth[:, None]] = 0.0
    row, col = np.nonzero(dense > 0)
    return row, col, dense[row, col]


def _batches(cost: np.ndarray, budget: float):
    """Consecutive row ranges whose summed ``cost`` stays within ``budget`` (one row at
    least), as arrays of row numbers."""
    bounds = np.cumsum(cost)
    start = 0
    while start < len(cost):
        before = bounds[start - 1] if start else 0.0
        stop = max(int(np.searchsorted(bounds, before + budget, side="right")), start + 1)
        yield np.arange(start, stop)
        start = stop


def _spread(weights: sp.csr_matrix, rows: np.ndarray, n: int) -> sp.csr_matrix:
    """The (n, n) matrix holding ``weights`` at rows and columns ``rows`` (sorted)."""
    counts = np.zeros(n, dtype=np.int64)
    counts[rows] = np.diff(weights.indptr)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((weights.data, rows[weights.indices], indptr), shape=(n, n))


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.maximum(np.asarray(matrix.sum(axis=1)).ravel(), 1e-12)
    return sp.csr_matrix(sp.diags(1.0 / sums) @ matrix, dtype=np.float32)
