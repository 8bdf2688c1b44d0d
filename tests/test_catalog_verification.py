"""Geometric verification of copy candidates (recsys.catalog_intel.verification): an edited
re-upload aligns and verifies, a lookalike product does not; the duplicate finder and the
protocol use it when they have the photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from recsys.catalog_intel import DuplicateConfig, DuplicateFinder
from recsys.catalog_intel.copy_descriptor import center, copy_descriptors
from recsys.catalog_intel.edits import realistic_edits
from recsys.catalog_intel.protocols import copy_detection, verified_copy_detection
from recsys.catalog_intel.verification import (
    VerifyConfig,
    pair_scores,
    prepare,
    refine,
    self_copy_scores,
    symmetric_max,
    verified_scores,
)
from recsys.errors import InvalidInput

SIDE = 28


def _render(params: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 from (n, shapes, 6) rows y, x, h, w, shade, is_disc (soft edges)."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    out = np.zeros((len(params), SIDE, SIDE))
    for i, shapes in enumerate(params):
        for y, x, h, w, shade, disc in shapes:
            if disc:
                inside = np.clip(h - np.hypot(yy - y, xx - x) + 0.5, 0, 1)
            else:
                inside = np.clip(h - abs(yy - y) + 0.5, 0, 1) * np.clip(w - abs(xx - x) + 0.5, 0, 1)
            out[i] = np.maximum(out[i], shade * inside)
    return out.round().astype(np.uint8)


def products(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(products, lookalikes), each (n, 28, 28) uint8: Fashion-MNIST-like items of four
    overlapping shapes with texture-free fills, and for each a different product of the
    same family: the same shapes, one of them moved by 2 pixels and one shaded 15% apart."""
    rng = np.random.default_rng(seed)
    params = np.stack(
        [
            rng.uniform(7, 21, (n, 4)),
            rng.uniform(7, 21, (n, 4)),
            rng.uniform(3, 7, (n, 4)),
            rng.uniform(3, 7, (n, 4)),
            rng.uniform(90, 230, (n, 4)),
            rng.random((n, 4)) < 0.4,
        ],
        axis=2,
    )  # (n, 4, 6)
    other = params.copy()
    angle = rng.uniform(0, 2 * np.pi, n)
    other[:, 0, 0] += 2 * np.sin(angle)
    other[:, 0, 1] += 2 * np.cos(angle)
    other[:, 1, 4] *= rng.choice([0.85, 1.15], n)
    return _render(params), _render(other)


def test_an_edited_copy_verifies_above_its_lookalike():
    items, lookalikes = products(40, seed=1)
    copies = realistic_edits(items, seed=2)
    images = np.concatenate([items, copies, lookalikes])
    n = len(items)
    rows = np.arange(n)
    partners = np.stack([rows + n, rows + 2 * n], axis=1)  # (n, 2): copy, lookalike
    cand = np.concatenate([partners, np.stack([rows, rows], 1), np.stack([rows, rows], 1)])
    scores = verified_scores(images, cand)[:n]
    copy, lookalike = scores[:, 0], scores[:, 1]
    assert np.median(copy) > 0.995
    assert (copy > lookalike).mean() >= 0.95
    # The descriptor alone cannot tell them apart as often.
    d = center(copy_descriptors(images))
    cosine_copy = (d[:n] * d[n : 2 * n]).sum(1)
    cosine_look = (d[:n] * d[2 * n :]).sum(1)
    assert (cosine_copy > cosine_look).mean() < (copy > lookalike).mean()


def test_refinement_recovers_a_known_crop_and_offset():
    items, _ = products(12, seed=3)
    cw, x0, y0 = 24, 3, 1  # crop 24 px from (x0, y0), resized back to 28: scale 24 / 28
    crops = np.stack(
        [
            np.asarray(Image.fromarray(im).crop((x0, y0, x0 + cw, y0 + cw)).resize((SIDE, SIDE)))
            for im in items
        ]
    )
    x = prepare(np.concatenate([items, crops]), VerifyConfig().blur)
    n = len(items)
    start_scale = np.full(n, 0.9, np.float32)
    aligned = refine(x, np.arange(n), np.arange(n, 2 * n), start_scale,
                     np.zeros((n, 2), np.float32), VerifyConfig())  # fmt: skip
    s = cw / SIDE
    offset = [(2 * x0 + SIDE * s - SIDE) / SIDE, (2 * y0 + SIDE * s - SIDE) / SIDE]
    np.testing.assert_allclose(aligned.scale, s, atol=0.01)
    np.testing.assert_allclose(aligned.offset, np.tile(offset, (n, 1)), atol=0.02)
    assert aligned.score.min() > 0.998


def test_symmetric_max_is_the_best_of_both_directions():
    rng = np.random.default_rng(4)
    left, right = rng.integers(0, 6, 50), rng.integers(0, 6, 50)
    score = rng.random(50).astype(np.float32)
    out = symmetric_max(left, right, score, 6)
    for k in range(50):
        both = [score[j] for j in range(50) if {left[j], right[j]} == {left[k], right[k]}]
        assert out[k] == max(both)


def test_candidates_must_be_rows_of_the_images():
    items, _ = products(4)
    with pytest.raises(InvalidInput, match="candidates"):
        verified_scores(items, np.array([[1], [2], [3], [4]]))


def _catalog(seed: int):
    """100 products, 100 lookalikes of them, and edited copies of products 0..15 (rows
    200..215): 14% of the items have a duplicate, more than DuplicateConfig.max_flag_rate."""
    items, lookalikes = products(100, seed=seed)
    copies = realistic_edits(items[:16], seed=seed + 1)
    return np.concatenate([items, lookalikes, copies])


def test_verified_duplicates_are_the_planted_copies_not_the_lookalikes():
    catalog = _catalog(seed=5)
    vectors = center(copy_descriptors(catalog))
    sims = self_copy_scores(catalog, sample=100, seed=0)
    finder = DuplicateFinder().fit(vectors, copy_similarities=sims, images=catalog)
    found = {tuple(sorted(s.tolist())) for s in finder.sets()}
    planted = {(i, 200 + i) for i in range(16)}
    assert finder.scored_by_ == "verified" and finder.calibration_.neighbour_quantile is None
    assert len(found & planted) >= 12 and len(found - planted) <= 1


def test_a_fixed_threshold_applies_to_the_verified_score():
    catalog = _catalog(seed=6)
    vectors = center(copy_descriptors(catalog))
    finder = DuplicateFinder(DuplicateConfig(threshold=0.99)).fit(vectors, images=catalog)
    assert finder.calibration_ is None and finder.threshold_ == 0.99
    assert (finder.pairs_.similarity >= 0.99).all()
    assert {(i, 200 + i) for i in range(16)} <= set(
        zip(finder.pairs_.left.tolist(), finder.pairs_.right.tolist(), strict=True)
    )
    with pytest.raises(InvalidInput, match="images has"):
        DuplicateFinder(DuplicateConfig(threshold=0.99)).fit(vectors, images=catalog[:-1])


def test_the_protocol_scores_verification_above_the_descriptor_alone():
    items, lookalikes = products(150, seed=7)
    originals = np.concatenate([items, lookalikes])
    sources = np.arange(0, 150, 5)  # 30 copies
    copies = realistic_edits(originals[sources], seed=8)
    mean = copy_descriptors(originals).mean(axis=0)

    def embed(batch):
        return center(copy_descriptors(batch), mean)

    plain = copy_detection(embed, originals, copies, sources)
    verified = verified_copy_detection(embed, originals, copies, sources)
    assert verified["copy@1"] >= 0.9
    assert verified["pair_f1"] > plain["pair_f1"] and verified["pair_f1"] >= 0.8


def test_pair_scores_verify_given_pairs_both_ways():
    items, lookalikes = products(20, seed=12)
    copies = realistic_edits(items, seed=13)
    # A copy on the left (the zoomed-out side) scores as with the original on the left.
    forward = pair_scores(items, copies)
    np.testing.assert_allclose(pair_scores(copies, items), forward, atol=1e-6)
    assert (forward > pair_scores(items, lookalikes)).mean() >= 0.95
    assert pair_scores(items[:0], copies[:0]).shape == (0,)
    with pytest.raises(InvalidInput, match="must match"):
        pair_scores(items, copies[:-1])


def test_flat_placeholder_photos_are_no_duplicates_and_stop_nothing():
    """Two listings with the same plain white placeholder: the alignment's system is singular
    (no gradient), which raised and stopped the whole catalog's duplicate check (a 500 on the
    catalog page); the pair is not an edited copy."""
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    photos[0] = photos[1] = 255  # white placeholders
    photos[2] = 0  # a black one
    candidates = np.array([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]])
    scores = verified_scores(photos, candidates, VerifyConfig(candidates=2))
    assert np.isfinite(scores).all() and (scores[:3] < 0.9).all()
    assert (pair_scores(photos[[0, 0]], photos[[1, 3]]) < 0.9).all()
