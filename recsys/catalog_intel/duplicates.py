"""Near-duplicate listings: pairs above a similarity threshold, grouped into duplicate sets.

    finder = DuplicateFinder().fit(vectors, copy_similarities=self_copy_sims)
    finder.pairs_      # DuplicatePairs: rows i < j and their score, most similar first
    finder.set_of_     # (N,) duplicate-set number per item, -1 for items with no duplicate

On vectors alone, pairs come from one FAISS range search
(``recsys.catalog_intel.neighbours.pairs_above``) and are scored by cosine. Given the items'
photos too (``fit(..., images=...)``), each item's ``VerifyConfig.candidates`` nearest items
by vector are checked by geometric verification (``recsys.catalog_intel.verification``:
align, then correlate pixels) and the pairs are scored by that verified score instead: an
edited re-upload aligns, a lookalike product does not. Given the items' titles
(``fit(..., titles=...)``), a pair of items that both have one scores at most the share of
the shorter title's words the other has (``title_checked``): the vectors of listings whose
attributes say little (a year and a genre) meet for many distinct items, whose titles do
not. Given each item's product (``fit(..., groups=...)``: a style all of a product's sizes and
colours share), a pair of one product's variants is left out. Sets are the connected
components of the pairs kept. The threshold is either given or
calibrated without labels (``calibrate_threshold``) from two samples the catalog itself
provides: the similarity of items to an edited copy of themselves (``realistic_edits``; what
a duplicate looks like) and every item's similarity to its nearest other item (mostly
lookalikes, since duplicates are rare).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator

from recsys.catalog_intel.neighbours import as_unit_vectors, knn, pairs_above
from recsys.errors import InvalidInput

if TYPE_CHECKING:  # torch is imported where photos are verified: the service starts without it
    from recsys.catalog_intel.verification import VerifyConfig

log = logging.getLogger(__name__)

# Cosine of two items' listing vectors (``FusedModel.listing_vectors``) from which they are a
# candidate pair, unless told otherwise: `recsys catalog duplicates` on the bundle and
# ``/v1/admin/catalog/duplicates`` alike. Titles or photos then decide the candidates.
LISTING_THRESHOLD = 0.95


@dataclass(frozen=True)
class DuplicateConfig:
    # Score from which a pair is a duplicate (cosine, or the verified score when fit gets
    # images); None = calibrated (needs copy_similarities in fit, on the same score).
    threshold: float | None = None
    # Calibration: share of edited self-copies the threshold must still catch.
    recall: float = 0.9
    # Calibration: at most this share of items may have their nearest neighbour above the
    # threshold (a catalog is mostly distinct products).
    max_flag_rate: float = 0.05
    # The same cap for verified scores (fit with images); None = none: verification already
    # keeps lookalikes below edited copies, and the cap would cut real copies wherever more
    # than max_flag_rate of the items have a duplicate.
    verified_max_flag_rate: float | None = None


@dataclass(frozen=True)
class Calibration:
    threshold: float
    copy_quantile: float  # the recall quantile of the self-copy similarities
    # The (1 - max_flag_rate) quantile of nearest-neighbour scores; None when not capped.
    neighbour_quantile: float | None


def calibrate_threshold(
    copy_similarities: np.ndarray,
    neighbour_similarities: np.ndarray,
    cfg: DuplicateConfig,
    verified: bool = False,
) -> Calibration:
    """A label-free threshold: the higher of "catches ``recall`` of the edited self-copies"
    and "flags at most ``max_flag_rate`` (``verified_max_flag_rate`` for verified scores)
    of the items' nearest pairs".

    The second keeps lookalike products out where they are as close as edited copies; the
    returned ``Calibration`` shows which of the two decided (``neighbour_quantile`` is None
    without a cap)."""
    copies = np.asarray(copy_similarities, np.float64)
    if copies.ndim != 1 or len(copies) < 10:
        raise InvalidInput("copy_similarities needs at least 10 values (edit a larger sample)")
    q_copy = float(np.quantile(copies, 1 - cfg.recall))
    rate = cfg.verified_max_flag_rate if verified else cfg.max_flag_rate
    if rate is None:
        return Calibration(q_copy, q_copy, None)
    q_nn = float(np.quantile(neighbour_similarities, 1 - rate))
    return Calibration(max(q_copy, q_nn), q_copy, q_nn)


@dataclass(frozen=True)
class DuplicatePairs:
    left: np.ndarray  # (P,) rows
    right: np.ndarray  # (P,) rows, left < right
    similarity: np.ndarray  # (P,) cosine or verified score, descending


class DuplicateFinder(BaseEstimator):
    """Duplicate pairs and sets of a catalog's vectors (sklearn-style; ``fit`` returns self)."""

    def __init__(
        self,
        config: DuplicateConfig | None = None,
        verify: VerifyConfig | None = None,
        show_progress: bool = False,
    ):
        self.config = config
        self.verify = verify
        self.show_progress = show_progress

    def fit(
        self,
        vectors,
        copy_similarities: np.ndarray | None = None,
        images=None,
        titles=None,
        groups=None,
    ) -> DuplicateFinder:
        """``copy_similarities``: scores of items against edited copies of themselves, on
        the score the pairs get (``self_copy_similarities`` for cosine, and
        ``verification.self_copy_scores`` with ``images``). ``images``: the items' photos,
        uint8 (N, H, W[, C]) in the rows' order; the pairs are then verified. ``titles``:
        the items' titles (str or None) in the rows' order, or a callable giving those of
        some rows (an array of rows -> their titles), which reads only the pairs' titles; a
        pair's score is then at most the share of its shorter title's words the other title
        has (``title_checked``). ``groups``: (N,) each item's product (a number; -1: none),
        for items listed once per size and colour: a pair of one product's variants is no
        duplicate and is left out (``ungrouped``; ``grouped_out_`` counts them)."""
        cfg = self.config or DuplicateConfig()
        unit = as_unit_vectors(vectors)
        if cfg.threshold is None and copy_similarities is None:
            raise InvalidInput(
                "no duplicate threshold: pass copy_similarities (self_copy_similarities, or "
                "verification.self_copy_scores with images) to calibrate one, or set "
                "DuplicateConfig(threshold=...) / --threshold"
            )
        if images is not None and len(images) != len(unit):
            raise InvalidInput(f"images has {len(images)} rows but vectors {len(unit)}")
        if titles is not None and not callable(titles) and len(titles) != len(unit):
            raise InvalidInput(f"titles has {len(titles)} rows but vectors {len(unit)}")
        if groups is not None and len(groups) != len(unit):
            raise InvalidInput(f"groups has {len(groups)} rows but vectors {len(unit)}")
        self.scored_by_ = "cosine" if images is None else "verified"
        if images is None:
            left, right, sims = self._cosine_pairs(unit, cfg, copy_similarities)
        else:
            left, right, sims = self._verified_pairs(unit, images, cfg, copy_similarities)
        left, right, sims, self.grouped_out_ = ungrouped(groups, left, right, sims)
        if titles is not None:
            left, right, sims = title_checked(titles, left, right, sims, self.threshold_)
            self.scored_by_ += " and titles"
        order = np.argsort(-sims, kind="stable")
        self.pairs_ = DuplicatePairs(left[order], right[order], sims[order])
        self.set_of_ = duplicate_sets(len(unit), left, right)
        log.info(
            "%d duplicate pairs in %d sets at %s >= %.4f",
            len(sims),
            self.set_of_.max() + 1,
            self.scored_by_,
            self.threshold_,
        )
        return self

    def _threshold(self, cfg: DuplicateConfig, copy_similarities, nearest_scores) -> None:
        self.calibration_ = None
        if cfg.threshold is not None:
            self.threshold_ = float(cfg.threshold)
        else:
            verified = self.scored_by_ == "verified"
            self.calibration_ = calibrate_threshold(
                copy_similarities, nearest_scores, cfg, verified
            )
            self.threshold_ = self.calibration_.threshold

    def _cosine_pairs(self, unit, cfg, copy_similarities):
        nearest = None
        if cfg.threshold is None:
            nn_sims, _ = knn(unit, 1, self.show_progress, "nearest neighbours")
            nearest = nn_sims[:, 0]
        self._threshold(cfg, copy_similarities, nearest)
        return pairs_above(unit, self.threshold_, self.show_progress)

    def _verified_pairs(self, unit, images, cfg, copy_similarities):
        """Each item's candidates by vector, verified; the pairs at or above the threshold."""
        from recsys.catalog_intel.verification import VerifyConfig, verified_scores

        vcfg = self.verify or VerifyConfig()
        _, cand = knn(unit, vcfg.candidates, self.show_progress, "candidates")
        scores = verified_scores(images, cand, vcfg, self.show_progress)  # (N, K)
        self._threshold(cfg, copy_similarities, scores.max(axis=1))
        rows = np.repeat(np.arange(len(unit)), cand.shape[1])
        left, right = np.minimum(rows, cand.ravel()), np.maximum(rows, cand.ravel())
        _, first = np.unique(left * len(unit) + right, return_index=True)
        keep = first[scores.ravel()[first] >= self.threshold_]
        return left[keep], right[keep], scores.ravel()[keep]

    def sets(self) -> list[np.ndarray]:
        """Rows of each duplicate set, largest set first."""
        rows, sizes = set_rows(self.set_of_)
        return np.split(rows, np.cumsum(sizes)[:-1]) if len(sizes) else []


def title_words(titles) -> sparse.csr_matrix:
    """(len(titles), 2^20) 0/1: the words each title has (none for no title), lower-cased,
    a lone digit or letter included ("iPhone 7" is not "iPhone 8"), hashed: no vocabulary
    to fit, so a word only one title has counts as much as any."""
    from sklearn.feature_extraction.text import HashingVectorizer

    from recsys.text import analyzer

    hashing = HashingVectorizer(  # the words of any script (Chinese titles: two-character pieces)
        analyzer=analyzer(shortest=1), binary=True, norm=None, alternate_sign=False
    )
    return hashing.transform(["" if title is None else str(title) for title in titles])


def title_checked(titles, left: np.ndarray, right: np.ndarray, score: np.ndarray, threshold):
    """(left, right, score) of the pairs still at or above ``threshold`` once each pair of
    items that both have a title's words scores at most the share of the shorter title's
    words that the other title has too; a pair where either has none keeps its score. A
    re-listing under its source's title, or with words added ("- new"), loses nothing;
    two films of one year and genre under their own titles, or "iPhone 7" and "iPhone 8",
    do not stay a pair. A one-word title counts as two words beside a longer one: one
    shared word is too little to tell a re-listing with words added from another item
    named by one of its words ("Ninja" and "Ninja Assassin"), so that pair scores at most
    0.5 and only the same one word scores 1. ``titles``: a title per row, or a callable
    (rows -> their titles)."""
    if not len(left):
        return left, right, score
    rows = np.unique(np.r_[left, right])
    named = titles(rows) if callable(titles) else [titles[r] for r in rows.tolist()]
    words = title_words(named)
    at_left, at_right = np.searchsorted(rows, left), np.searchsorted(rows, right)
    shared = np.asarray(words[at_left].multiply(words[at_right]).sum(axis=1)).ravel()
    counts = np.diff(words.indptr)
    shorter = np.minimum(counts[at_left], counts[at_right])
    longer = np.maximum(counts[at_left], counts[at_right])
    # (a pair where a title has no words keeps its score; 1 keeps its 0 / 0 from warning)
    share = shared / np.maximum(np.maximum(shorter, np.minimum(longer, 2)), 1)
    checked = np.where(shorter > 0, np.minimum(score, share), score).astype(score.dtype)
    keep = checked >= threshold
    return left[keep], right[keep], checked[keep]


def ungrouped(groups, left: np.ndarray, right: np.ndarray, score: np.ndarray):
    """(left, right, score, how many pairs were left out): the pairs whose two items are not
    variants of one product, by ``groups`` ((N,) each row's product number, -1 for an item
    without one, which is never grouped; None: keep every pair)."""
    if groups is None or not len(left):
        return left, right, score, 0
    groups = np.asarray(groups)
    same = (groups[left] == groups[right]) & (groups[left] >= 0)  # (P,)
    keep = ~same
    return left[keep], right[keep], score[keep], int(same.sum())


def duplicate_sets(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(n,) set number per item (connected components of the pairs), -1 when alone; the
    sets are numbered largest first (ties: the set of the lower row first), the order
    ``set_rows`` lists them in, so a pair's set number is its set's place in that list."""
    graph = sparse.csr_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, component = connected_components(graph, directed=False)  # numbered by lowest row
    size = np.bincount(component)
    in_set = size[component] > 1
    number = np.unique(component[in_set], return_inverse=True)[1]
    rank = np.empty(number.max(initial=-1) + 1, np.int64)
    rank[np.argsort(-np.bincount(number), kind="stable")] = np.arange(len(rank))
    out = np.full(n, -1, np.int64)
    out[in_set] = rank[number]
    return out


def set_rows(set_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of every set of ``duplicate_sets``, set after set, largest set first (ties: the
    lower set number), rows ascending within one; (S,) the sets' sizes in that order)."""
    rows = np.flatnonzero(set_of >= 0)
    sizes = np.bincount(set_of[rows])
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rows[np.argsort(rank[set_of[rows]], kind="stable")], sizes[order]


def self_copy_similarities(
    embed, images: np.ndarray, sample: int = 1000, seed: int = 0
) -> np.ndarray:
    """Cosine between each of ``sample`` images and a realistic edit of it, both through
    ``embed`` (a callable: uint8 images -> (N, D) vectors). What a duplicate looks like."""
    from recsys.catalog_intel.edits import realistic_edits

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(images), size=min(sample, len(images)), replace=False)
    originals = as_unit_vectors(embed(images[rows]), "embedded originals")
    copies = as_unit_vectors(embed(realistic_edits(images[rows], seed=seed)), "embedded copies")
    return np.einsum("nd,nd->n", originals, copies)
