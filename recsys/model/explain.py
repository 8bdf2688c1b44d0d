"""Why an item is in a list: its score split exactly into parts that sum to it.

A fused score is an inner product, ``score = sum_b w_b <q_b, v_b>`` over the blocks of the
layout (``recsys.model.fusion``), so it splits without approximation:

- **Similar items**: one part per block, ``w_b <q_b, v_b>``: "viewed together" (cf),
  "looks alike" (image), "same brand" (tabular, naming the filterable attributes whose
  values the two items share; "similar attributes" when none is), "popular" (popularity).
- **Feeds**: one part per item of the user's history. A content block of the user vector is
  ``normalize(sum_j c_j x_j)``, so item j adds ``w_b c_j <x_j, v_b> / |sum_j c_j x_j|`` (the
  token profile counts each item by c_j, or by its sign with ``FusionConfig.token_profile``
  "binary"); the ALS user factor solves ``M u = sum_j a_j y_j``
  (``recsys.model.cf._als_fold_in``), so item j adds ``w_cf a_j y_j' M^-1 v_cf`` [Hu, Koren,
  Volinsky 2008, section 5]; BPR's fold-in is a ridge solve of the same shape. The popularity
  bias is its own part, and what is left (a stored ALS/BPR user factor is not exactly the
  fold-in of the user's history) is
  "your overall taste", so the parts always sum to the score; for a feed folded in from a
  history (fresh events) that remainder is zero up to rounding.

A feed item's ``because`` lists the (at most) ``TOP_ITEMS`` history items adding most, then
the rest of the history, the popularity part and the remainder, each when non-zero.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from recsys.model import sparse_rows
from recsys.model.fusion import CONTENT_BLOCKS

PREDICTED_CF = "cf predicted"
BLOCK_LABELS = {
    "cf": "viewed together",
    # the cf part of a pair with an item no shopper has seen: its cf block is predicted from
    # its attributes and title, so it is what shoppers of items like it viewed
    PREDICTED_CF: "viewed with items like it",
    "tabular": "similar attributes",
    "image": "looks alike",
    "popularity": "popular",
}
TOP_ITEMS = 3
OTHERS = "other items you viewed"
NEW_REASON = "new in the catalog"
PHOTO_REASON = "looks like your photo"  # visual search: the whole score
# Parts smaller than this (absolute) are left out of a list of reasons (they sum to ~0): a
# share an answer rounds to 0 (6 decimals), which showed as "your overall taste -0.0".
NEGLIGIBLE = 5e-7


# The part of a feed's score no history item's or popularity's is.
REMAINDER = "your overall taste"


class Reason(NamedTuple):
    """One part of a score: ``share`` of it, ``label`` in words; ``item_id``: the history
    item it comes from (feeds). A named tuple: a feed builds about a hundred per request."""

    label: str
    share: float
    item_id: str | None = None

    def to_json(self) -> dict:
        out = {"label": self.label, "share": round(float(self.share), 6)}
        if self.item_id is not None:
            out["item_id"] = self.item_id
        return out


# -- similar items --------------------------------------------------------------------------


def block_shares(fused, query_rows: np.ndarray, found: np.ndarray, surface: str, scores=None):
    """block -> (Q, k) parts of each score ``found`` (rows, -1 padded) got for the query
    items ``query_rows`` on ``surface``; they sum over blocks to the scores (``scores``,
    (Q, k), where known).

    On "similar", a new item is scored by its whole content where the feed scales it down
    (``FusedModel.surface_item_vectors``; the neighbour table holds it so), or by its feed vector
    where a search of the serving index left it so (many new items): with ``scores``, each
    pair is split by the one whose sum is its score. Split by the feed vector alone, 1 in 5
    of a demo shop's similar items had parts that did not sum to their score."""
    weights = fused.surface_weights_[surface]
    weighted = [name for name, weight in weights.items() if weight != 0.0]
    queries = fused.item_query_blocks(query_rows, weighted)  # block -> (Q, d_b)
    rows = np.maximum(found, 0)
    items = np.asarray(fused.item_vectors_[rows])  # (Q, k, D)
    shares = _split(fused, items, queries, weights, found)
    listed_cold = fused.cold_[rows] & (found >= 0)
    if surface == "similar" and fused.content_cold_scaled and listed_cold.any():
        # the listed new items' content blocks as they are, not scaled for feeds (the
        # surface's item vectors, FusedModel.surface_item_vectors, differ there alone)
        q, j = np.nonzero(listed_cold)
        whole = dict(shares)
        for name in (b for b in CONTENT_BLOCKS if b in queries and b in fused.item_blocks_):
            own = np.asarray(fused.item_blocks_[name][rows[q, j]])  # (m, d)
            dots = np.einsum("md,md->m", queries[name][q], own)
            whole[name] = shares[name].copy()
            whole[name][q, j] = weights[name] * dots
        if scores is None:
            shares = whole
        else:
            scores = np.asarray(scores, dtype=np.float64)
            gap = np.abs(sum(whole.values()) - scores) <= np.abs(sum(shares.values()) - scores)
            shares = {name: np.where(gap, whole[name], part) for name, part in shares.items()}
    cold = fused.cold_[query_rows][:, None] | fused.cold_[rows]
    return _predicted_apart(shares, cold)


def _split(fused, items, queries: dict, weights: dict, found: np.ndarray) -> dict:
    """block -> (Q, k) weighted dots of the block ``queries`` with ``items`` (Q, k, D)."""
    listed = found >= 0
    shares = {}
    for name, part in fused.layout_.slices().items():
        if name not in queries:
            continue
        dots = np.einsum("qd,qkd->qk", queries[name], items[:, :, part])  # (Q, k)
        shares[name] = np.where(listed, weights[name] * dots, 0.0)
    return shares


def _predicted_apart(shares: dict[str, np.ndarray], cold: np.ndarray) -> dict[str, np.ndarray]:
    """``shares`` with the cf part of a pair with an item that had no interactions (``cold``,
    (Q, k)) moved to ``PREDICTED_CF``: such a pair was not viewed together, it is predicted."""
    if "cf" in shares:
        shares[PREDICTED_CF] = np.where(cold, shares["cf"], 0.0)
        shares["cf"] = np.where(cold, 0.0, shares["cf"])
    return shares


def query_shares(fused, queries: np.ndarray, items: np.ndarray, surface: str, cold: np.ndarray):
    """block -> (Q, k) parts of the scores of ``items`` (Q, k, D) for the fused item
    ``queries`` (Q, D) of ``surface`` (``item_queries``: each block already weighted), for
    queries and items that are not bundle rows (live items); they sum to ``queries . items``.
    ``cold`` (Q, k): the pairs with an item that had no interactions (``block_shares``)."""
    weights = fused.surface_weights_[surface]
    shares = {
        name: np.einsum("qd,qkd->qk", queries[:, part], items[:, :, part])
        for name, part in fused.layout_.slices().items()
        if weights.get(name, 0.0) != 0.0
    }
    return _predicted_apart(shares, cold)


def similar_reasons(shares: dict[str, np.ndarray], shared: list[list[list[str]]], q: int):
    """The reasons of query ``q``'s items (one list per item), largest part first;
    ``shared[q][j]``: the attributes item j shares with the query item."""
    parts = {name: values[q].tolist() for name, values in shares.items()}  # Python floats
    out = []
    for j, names in enumerate(shared[q]):
        reasons = [
            Reason(_block_label(name, names), values[j])
            for name, values in parts.items()
            if abs(values[j]) > NEGLIGIBLE
        ]
        out.append(sorted(reasons, key=lambda r: -r.share))
    return out


def listed_reasons(shares: dict[str, np.ndarray], shared, found: np.ndarray):
    """``similar_reasons`` of every query, for the items it lists (``found`` (Q, k) rows,
    -1 padded: the padding has none)."""
    return [
        [r for r, ok in zip(similar_reasons(shares, shared, q), row >= 0, strict=True) if ok]
        for q, row in enumerate(found)
    ]


class InCommon(str):
    """An attribute two items share a value of where one holds several (genres, tags): they
    have values in common, not the same values ("same genres" named Comedy|Drama beside
    Comedy|Crime|Drama|Thriller)."""

    __slots__ = ()


def _block_label(block: str, shared: list[str]) -> str:
    """The label of a block's part: for the attributes two items share, their column names
    as a sentence, "_" read as a space: "same brand, department and colour tone" for
    attributes of one value, "genres in common" for ``InCommon`` ones."""
    if block != "tabular" or not shared:
        return BLOCK_LABELS.get(block, block)
    same = [name for name in shared if not isinstance(name, InCommon)]
    common = [name for name in shared if isinstance(name, InCommon)]
    parts = ["same " + _sentence(same)] if same else []
    if common:
        parts.append(_sentence(common) + " in common")
    return ", ".join(parts)


def _sentence(names: list[str]) -> str:
    names = [name.replace("_", " ") for name in names]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


# -- feeds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """One user's items (rows) and confidence weights, as their user vector was built."""

    rows: np.ndarray  # (H,)
    weights: np.ndarray  # (H,) the content profiles' (and tokens') weights
    # (H,) the collaborative fold-in's, where they differ (users' factors solved with recency:
    # ``CollaborativeModel.user_recent_``, ``Recommender.history_with``); None: ``weights``
    fold_in: np.ndarray | None = None

    @property
    def cf_weights(self) -> np.ndarray:
        return self.weights if self.fold_in is None else self.fold_in


def history_parts(fused, cf, history: History, query: np.ndarray, found: np.ndarray):
    """(per history item (H, k), popularity (k,), remainder (k,)) of the scores the fused
    query vector ``query`` (D,) gives items ``found`` (k,) (-1: none, all parts 0)."""
    slices = fused.layout_.slices()
    weights = fused.weights_
    items = np.asarray(fused.item_vectors_[np.maximum(found, 0)], dtype=np.float64)  # (k, D)
    per_item = np.zeros((len(history.rows), len(found)))
    counted = fused.content_profile_weights(history.weights)  # the content profiles' c_j
    for name in ("tabular", "image"):
        if name in slices and weights.get(name, 0.0) and len(history.rows):
            x = np.asarray(fused.item_blocks_[name][history.rows], dtype=np.float64)  # (H, d)
            per_item += weights[name] * _profile_parts(x, counted, items[:, slices[name]])
    if "cf" in slices and cf is not None and weights.get("cf", 0.0) and len(history.rows):
        cf_items = items[:, slices["cf"]] / fused.cf_scales_[1]
        stand_ins = fused.cf_stand_ins
        per_item += weights["cf"] * _fold_in_parts(cf, history, cf_items, stand_ins)
    tokens = np.zeros(len(found))
    if fused.token_weight and len(history.rows):
        token_parts = _token_parts(fused, history, found)
        per_item += token_parts
        tokens = token_parts.sum(axis=0)
    popularity = np.zeros(len(found))
    if "popularity" in slices:
        part = slices["popularity"]
        popularity = np.asarray(query[part], dtype=np.float64) @ items[:, part].T  # (k,)
    score = items @ np.asarray(query, dtype=np.float64) + tokens  # (k,) the feed's score
    remainder = score - per_item.sum(axis=0) - popularity
    valid = found >= 0
    return per_item * valid, popularity * valid, remainder * valid


def _profile_parts(x, counted: np.ndarray, items) -> np.ndarray:
    """(H, k): history item j's part of <normalize(sum_j c_j x_j), v_i> for the listed items'
    rows ``items`` (k, d) of one block, ``x`` (H, d) the history's rows, ``counted`` (H,) the
    c_j (``FusedModel.content_profile_weights``)."""
    norm = np.linalg.norm(x.T @ counted)
    if norm < 1e-12:
        return np.zeros((len(counted), items.shape[0]))
    return counted[:, None] * (x @ items.T) / norm


def _token_parts(fused, history: History, found: np.ndarray) -> np.ndarray:
    """(H, k): item j's part of the feed's token term, weight * scale_i *
    <normalize(sum_j c'_j t_j), t_i>, for the listed items ``found``; c'_j is what the
    confidence c_j counts for in a token profile (its sign when profiles are binary,
    ``FusedModel.token_profile_weights``). Read from the token matrix's CSR arrays
    (``recsys.model.sparse_rows``): no sparse matrix is built per feed."""
    listed = np.maximum(found, 0)
    counted = np.asarray(fused.token_profile_weights(history.weights), dtype=np.float64)
    norm = sparse_rows.norm_of_sum(fused.item_tokens_, history.rows, counted)
    if norm < 1e-12:
        return np.zeros((len(history.rows), len(found)))
    products = sparse_rows.cross_dots(fused.item_tokens_, history.rows, listed)
    scale = np.where(fused.cold_[listed], fused.cold_scale_.get("tokens", 1.0), 1.0)
    return fused.token_weight * scale * (counted[:, None] * products / norm)


def _fold_in_parts(cf, history: History, items: np.ndarray, stand_ins=None) -> np.ndarray:
    """(H, k): item j's part of <u, v_i> where u is the user factor folded in from the
    history, exactly as ``CollaborativeModel.fold_in`` solves it (ALS or BPR's ridge), with
    the same ``stand_ins`` for items the fit saw no interaction of."""
    config = cf.config
    factors, fitted = cf.history_factors(history.rows, stand_ins)  # (H, F), (H,)
    if config is None or config.model == "als":
        confidence, regularization = _als_terms(cf, history)
        system = cf.gram + regularization * np.eye(factors.shape[1])
        entry = confidence != 0  # as fold_in: a weight of 0 is no entry
        change = np.abs(confidence[entry]) - fitted[entry]  # a stand-in is not in Y'Y
        system += (factors[entry].T * change) @ factors[entry]
        pull = np.clip(confidence, 0, None)
    else:
        system = factors.T @ (factors * history.cf_weights[:, None])
        system += max(config.regularization, 1e-3) * np.eye(factors.shape[1])
        pull = history.cf_weights
    solved = np.linalg.solve(system, items.T)  # (F, k): M^-1 v_i (M is symmetric)
    return pull[:, None] * (factors @ solved)


def _als_terms(cf, history: History) -> tuple[np.ndarray, float]:
    """The confidences and regularisation of the ALS user step, as the model's own fold-in
    takes them (they depend on the engine that fitted it); implicit's without that hook."""
    config = cf.config
    # implicit's terms are the two lines at the end; another engine's come from the model
    own = getattr(cf, "_als_terms", None)
    if own is not None and getattr(config, "engine", "implicit") != "implicit":
        n_items = len(cf.item_ids_)
        matrix = sp.csr_matrix(
            (history.cf_weights, history.rows, [0, len(history.rows)]), shape=(1, n_items)
        )
        confidence, regularization = own(matrix, config)
        return np.asarray(confidence, dtype=np.float64), float(regularization)
    confidence = cf.confidence.of(history.cf_weights)  # the form the factors were fitted with
    return confidence, 0.05 if config is None else config.regularization


def feed_reasons(
    item_ids: np.ndarray, history: History, parts, top: int = TOP_ITEMS
) -> list[list[Reason]]:
    """Per listed item: its top history items, then the rest, popularity and remainder."""
    per_item, popularity, remainder = parts
    order = _top_rows(per_item, top)  # (top, k) history places
    listed = per_item[order, np.arange(per_item.shape[1])]  # (top, k)
    rest = per_item.sum(axis=0) - np.where(listed > NEGLIGIBLE, listed, 0.0).sum(axis=0)
    names = item_ids[history.rows[order]] if len(history.rows) else order.astype(str)
    labels = {
        OTHERS: rest,
        BLOCK_LABELS["popularity"]: popularity,
        REMAINDER: remainder,
    }
    # Python floats and strings first: numpy scalars cost a conversion each
    listed, names = listed.T.tolist(), names.T.tolist()  # (k, top)
    extras = [[(label, v) for v in values.tolist()] for label, values in labels.items()]  # (3, k)
    out = []
    for j, (shares, named) in enumerate(zip(listed, names, strict=True)):
        reasons = [
            Reason("you viewed", share, str(name))
            for share, name in zip(shares, named, strict=True)
            if share > NEGLIGIBLE
        ]
        reasons += [Reason(*extra[j]) for extra in extras if abs(extra[j][1]) > NEGLIGIBLE]
        out.append(reasons)
    return out


def settled(because: list[list[Reason]], scores, label: str) -> list[list[Reason]]:
    """Each listed item's reasons with the part of a fold-in that the bundle's history does
    not name (items added since it, folded in from the live catalog) said as ``label``: the
    remainder ("your overall taste", which a fold-in otherwise leaves at about 0) and what
    the reasons leave of its score (``scores``, one per item: the token term of those items),
    so that the shares still sum to the score."""
    out = []
    for reasons, score in zip(because, np.asarray(scores, dtype=np.float64).tolist(), strict=True):
        named = [r for r in reasons if r.label != REMAINDER]
        rest = score - sum(r.share for r in named)
        out.append([*named, Reason(label, rest)] if abs(rest) > NEGLIGIBLE else named)
    return out


def without_removed(because: list[list[Reason]], present: Container[str]) -> list[list[Reason]]:
    """One query's reasons with each naming an item the catalog no longer holds (not in
    ``present``) counted in "other items you viewed": a removed item has no title or page to
    show, and the shares still sum to the score."""
    out = []
    for reasons in because:
        gone = [r.share for r in reasons if r.item_id is not None and r.item_id not in present]
        if not gone:
            out.append(reasons)
            continue
        kept = [r for r in reasons if r.item_id is None or r.item_id in present]
        named = [r for r in kept if r.item_id is not None]
        others = sum(gone) + sum(r.share for r in kept if r.label == OTHERS)
        rest = [r for r in kept if r.item_id is None and r.label != OTHERS]
        out.append([*named, Reason(OTHERS, others), *rest])
    return out


def _top_rows(values: np.ndarray, top: int) -> np.ndarray:
    """(min(top, H), k): the first ``top`` rows of each column of ``values`` (H, k) in a stable
    descending sort, without sorting all H rows of a heavy shopper's history: only the rows at
    or above some column's top-th largest value are sorted, and every row a column's first
    ``top`` hold is among them, in the order the full sort gives."""
    if len(values) <= 4 * top:
        return np.argsort(-values, axis=0, kind="stable")[:top]
    kth = -np.partition(-values, top - 1, axis=0)[top - 1]  # (k,) each column's top-th largest
    rows = np.flatnonzero((values >= kth).any(axis=1))
    return rows[np.argsort(-values[rows], axis=0, kind="stable")[:top]]


def history_of(matrix: sp.csr_matrix, user: int, fold_in: np.ndarray | None = None) -> History:
    """Row ``user`` of a (users, items) confidence matrix as a History; ``fold_in``: the
    collaborative fold-in's weights on the matrix's entries (``matrix.data``'s order), when
    they differ."""
    start, end = matrix.indptr[user], matrix.indptr[user + 1]
    return History(
        np.asarray(matrix.indices[start:end], dtype=np.int64),
        np.asarray(matrix.data[start:end], dtype=np.float64),
        None if fold_in is None else np.asarray(fold_in[start:end], dtype=np.float64),
    )


def fallback(cold: np.ndarray, scores: np.ndarray) -> list[list[Reason]]:
    """One reason per item of a feed that knows nothing of its user (the popularity
    fallback): "popular with shoppers", or, for an item with no events in the training
    data (``cold``; every item of a catalog without events), "new in the catalog"."""
    labels = np.where(cold, NEW_REASON, "popular with shoppers").tolist()
    return [[Reason(label, float(s))] for label, s in zip(labels, scores.tolist(), strict=True)]


def single(label: str, scores: np.ndarray) -> list[list[Reason]]:
    """One reason per item holding its whole score (visual search, live items)."""
    return [[Reason(label, float(score))] for score in scores]
