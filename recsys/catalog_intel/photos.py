"""Candidate duplicate pairs verified with the catalog's own photos (the service's view).

    photos = CatalogPhotos(engine, item_ids)
    calibration = photos.calibrate()          # None when the catalog has (almost) no photos
    checked = photos.verify(left, right, cosine, calibration, threshold=None)

A caller that already has candidate pairs (items whose vectors are close) decides them by
geometric verification (``verification.pair_scores``) instead of by cosine. Cost is bounded
by what is checked, never by the catalog's size: only the photos of the first
``max_pairs`` candidate pairs (most similar first) are decoded, and the label-free threshold
is calibrated on edited self-copies of a seeded sample of ``calibration_photos`` photos.
Photos are decoded grayscale at the copy descriptor's side (32 px), as
``recsys catalog duplicates --images`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine, select

from recsys.catalog.models import Item
from recsys.catalog_intel.duplicates import DuplicateConfig, calibrate_threshold
from recsys.errors import InvalidInput

if TYPE_CHECKING:  # torch is imported where photos are compared: the service starts without it
    from recsys.catalog_intel.verification import VerifyConfig

log = logging.getLogger(__name__)

_CHUNK = 900  # ids per SELECT ... IN (under SQLite's bound-parameter limit)


@dataclass(frozen=True)
class PhotoConfig:
    # Candidate pairs verified per answer, most similar first (2 photos decoded per pair
    # at most); the rest are counted, not verified.
    max_pairs: int = 2000
    # Photos sampled (seeded) for the label-free threshold; at least 10 must decode.
    calibration_photos: int = 300
    seed: int = 0


@dataclass(frozen=True)
class VerifiedPairs:
    left: np.ndarray  # (P,) rows of the pairs kept, verified score >= threshold
    right: np.ndarray  # (P,)
    score: np.ndarray  # (P,) verified score
    threshold: float
    verified: int  # candidate pairs verified (both photos decoded)
    skipped: int  # candidate pairs not verified: a photo missing, or beyond max_pairs
    closest: float | None = None  # the best verified score below threshold (None: none)


class CatalogPhotos:
    """The photos of ``item_ids`` (the rows of a vector matrix) in the catalog ``engine``."""

    def __init__(self, engine: Engine, item_ids, config: PhotoConfig | None = None):
        self.engine = engine
        self.item_ids = np.asarray(item_ids).astype(str)
        self.config = config or PhotoConfig()

    def paths(self, rows: np.ndarray) -> list[str | None]:
        """Each row's photo file, None without one (no image_path, or not a file)."""
        ids = self.item_ids[rows].tolist()
        found: dict[str, str] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                query = select(Item.external_id, Item.image_path).where(
                    Item.external_id.in_(chunk), Item.image_path.is_not(None)
                )
                found.update((i, p) for i, p in connection.execute(query))
        return [p if (p := found.get(i)) and Path(p).is_file() else None for i in ids]

    def decode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows whose photo decoded, uint8 (n, S, S) photos) at the copy descriptor's side."""
        paths = self.paths(rows)
        kept = [(r, p) for r, p in zip(rows.tolist(), paths, strict=True) if p is not None]
        photos = _decode([p for _, p in kept])
        good = [k for k, photo in enumerate(photos) if photo is not None]
        side = _side()
        stack = np.stack([photos[k] for k in good]) if good else np.zeros((0, side, side))
        return np.asarray([kept[k][0] for k in good], np.int64), stack.astype(np.uint8)

    def calibrate(self, verify: VerifyConfig | None = None) -> float | None:
        """The label-free verified threshold (``calibrate_threshold`` on edited self-copies
        of sampled photos, as the CLI), or None when fewer than 10 sampled items have one."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        n = len(self.item_ids)
        rows = np.sort(rng.choice(n, min(cfg.calibration_photos, n), replace=False))
        _, photos = self.decode(rows)
        if len(photos) < 10:
            # files that do not decode (a photo volume half-mounted, a broken upload) read
            # as a catalog without photos: say so
            listed = sum(path is not None for path in self.paths(rows))
            if len(photos) < listed:
                log.warning(
                    "%d of %d sampled items' photo files decoded, fewer than 10: duplicate "
                    "pairs are checked by their titles, not their photos",
                    len(photos),
                    listed,
                )
            return None
        from recsys.catalog_intel.verification import self_copy_scores

        copies = self_copy_scores(photos, sample=len(photos), seed=cfg.seed, cfg=verify)
        return calibrate_threshold(copies, copies, DuplicateConfig(), verified=True).threshold

    def verify(
        self,
        left: np.ndarray,
        right: np.ndarray,
        similarity: np.ndarray,
        threshold: float,
        verify: VerifyConfig | None = None,
    ) -> VerifiedPairs:
        """The candidate pairs (rows ``left``/``right``, vector ``similarity``) whose photos
        verify at ``threshold`` or above; at most ``max_pairs`` of them checked."""
        order = np.argsort(-np.asarray(similarity), kind="stable")[: self.config.max_pairs]
        left, right = np.asarray(left)[order], np.asarray(right)[order]
        rows, photos = self.decode(np.unique(np.r_[left, right]))
        at = np.full(len(self.item_ids), -1, np.int64)
        at[rows] = np.arange(len(rows))
        both = (at[left] >= 0) & (at[right] >= 0)
        left, right = left[both], right[both]
        from recsys.catalog_intel.verification import pair_scores

        score = pair_scores(photos[at[left]], photos[at[right]], verify)
        keep = score >= threshold
        log.info("verified %d candidate pairs with photos, %d kept", len(score), keep.sum())
        return VerifiedPairs(
            left[keep],
            right[keep],
            score[keep],
            float(threshold),
            verified=len(score),
            skipped=len(similarity) - len(score),
            closest=_closest(score[~keep]),
        )


def _decode(paths: list[str]) -> list[np.ndarray | None]:
    """uint8 (S, S) grayscale at the copy descriptor's side per path; one at a time (None
    for a file that will not decode) only when decoding them together fails."""
    from recsys.vision.data import load_image_files

    side = _side()
    try:
        return list(load_image_files(paths, side, 1)[:, 0].numpy())
    except (InvalidInput, OSError, ValueError):  # InvalidInput: a file that does not decode
        pass
    out, failed = [], []
    for path in paths:
        try:
            out.append(load_image_files([path], side, 1)[0, 0].numpy())
        except (InvalidInput, OSError, ValueError) as exc:
            failed.append(str(exc))
            out.append(None)
    if failed:  # one line, not one per photo (300 when a volume is half-mounted)
        log.warning("%d of %d photos not verified: %s", len(failed), len(paths), failed[0])
    return out


@dataclass(frozen=True)
class CheckedPairs:
    """Duplicate pairs of a catalog's listings, decided as the service decides them."""

    left: np.ndarray  # (P,) rows
    right: np.ndarray  # (P,) rows
    score: np.ndarray  # (P,) what decided each pair (see ``scored_by``)
    threshold: float  # the cosine from which items were candidate pairs
    scored_by: str  # "verified" (photos), "cosine and titles" (no photos) or "cosine"
    verified_threshold: float | None = None
    verified: int = 0
    skipped: int = 0
    grouped: int = 0  # candidate pairs left out as variants of one product (``groups``)
    # The best score of a candidate pair left out below the threshold (titles or photos
    # scored it); None: none was ("0 pairs" said nothing of how close the closest came).
    closest: float | None = None


def checked_pairs(
    engine: Engine,
    item_ids,
    vectors: np.ndarray,
    threshold: float,
    verify: bool = True,
    verified_threshold: float | None = None,
    calibrated: Callable[[], float | None] | None = None,
    show_progress: bool = False,
    groups: np.ndarray | None = None,
) -> CheckedPairs:
    """The items of ``vectors`` (rows of ``item_ids``) at cosine ``threshold`` or above are
    candidate pairs; with ``verify``, their photos decide them (geometric verification at
    ``verified_threshold``, by default the label-free one, ``calibrated()`` when given, which
    is None for a catalog without photos), or, without photos, their titles' words
    (``duplicates.title_checked``). ``groups``: (N,) each row's product (-1: none); a
    candidate pair of one product's variants is left out before anything decodes its photos
    (``duplicates.ungrouped``). What ``recsys catalog duplicates`` and
    ``/v1/admin/catalog/duplicates`` answer from the active bundle's listing vectors."""
    from recsys.catalog.reads import titles_by_row
    from recsys.catalog_intel.duplicates import DuplicateFinder, title_checked

    item_ids = np.asarray(item_ids).astype(str)
    finder = DuplicateFinder(DuplicateConfig(threshold=threshold), show_progress=show_progress)
    pairs = finder.fit(vectors, groups=groups).pairs_
    left, right, score = pairs.left, pairs.right, pairs.similarity
    grouped = finder.grouped_out_
    if not verify:
        return CheckedPairs(left, right, score, finder.threshold_, "cosine", grouped=grouped)
    photos = CatalogPhotos(engine, item_ids)
    default = calibrated() if calibrated is not None else photos.calibrate()
    if default is None:  # no photos: the titles' words check the pairs
        titles = titles_by_row(engine, item_ids)
        left, right, score = title_checked(titles, left, right, score, -np.inf)
        keep = score >= finder.threshold_
        return CheckedPairs(
            left[keep],
            right[keep],
            score[keep],
            finder.threshold_,
            "cosine and titles",
            grouped=grouped,
            closest=_closest(score[~keep]),
        )
    at = default if verified_threshold is None else verified_threshold
    if not len(left):  # no candidate: nothing to decode
        return CheckedPairs(
            left, right, score, finder.threshold_, "verified", float(at), grouped=grouped
        )
    found = photos.verify(left, right, score, at)
    return CheckedPairs(
        found.left,
        found.right,
        found.score,
        finder.threshold_,
        "verified",
        found.threshold,
        found.verified,
        found.skipped,
        grouped,
        found.closest,
    )


def _closest(below: np.ndarray) -> float | None:
    """The best of the scores of candidate pairs left out, None when there is none."""
    return round(float(below.max()), 6) if len(below) else None


def _side() -> int:
    """The side (pixels) photos are compared at: the copy descriptor's."""
    from recsys.catalog_intel.copy_descriptor import CopyDescriptorConfig

    return CopyDescriptorConfig().side
