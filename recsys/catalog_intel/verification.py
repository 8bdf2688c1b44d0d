"""Geometric verification of copy candidates: align one photo on the other, then correlate.

A global descriptor ranks candidates; it cannot tell an edited re-upload from a lookalike
product, because at a global level the two are about as close. The decision is local, as in
copy detection generally: search the crop (a scale) and the offset that maps one photo onto the
other, and score the aligned pair by normalised cross-correlation (NCC) of the pixels, which is
blind to brightness. An edited copy aligns almost exactly (what is left is JPEG noise); a
lookalike product does not.

For each item and each of its ``candidates`` nearest items by descriptor
(``verified_scores``):

1. **coarse search** at half resolution, for the direction and a starting point: each item
   is resampled once at every scale of the crop range, both ways (zoomed in: the item is the
   original; zoomed out: it is the copy), onto a padded canvas; the NCC of the candidate
   against every window of every canvas is one batched product per block of items
   (``(b, K, HW) @ (b, HW, scales x shifts)``);
2. **refinement** of every candidate pair at full resolution: Gauss-Newton on scale,
   offset, gain and bias [Lucas & Kanade 1981; Baker & Matthews 2004], the original
   sampled with one ``grid_sample`` per iteration for all pairs of a batch;
3. the verified score is the NCC of the aligned pair on the overlap (1 = identical up to
   brightness), -1 when the fitted brightness gain is outside what an edit does; a pair's
   score is the best over the two items' lists.

Cost grows with items x candidates (no all-pairs step); on one CPU core about 5 s per 1,000
items of 28 x 28 pixels at 10 candidates (benchmarks/RESULTS.md).

Nothing is learned. Measured on Fashion-MNIST (``scripts/eval_catalog.py``): see
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recsys.catalog_intel.copy_descriptor import _gray
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

EDGE = 2  # pixels of the target's frame left out of the refinement and score


@dataclass(frozen=True)
class VerifyConfig:
    # Descriptor neighbours verified per item.
    candidates: int = 10
    # Smallest crop searched (share of the side kept by a re-upload's crop); scales run from
    # it to 1 in ``scales`` steps, each way.
    min_crop: float = 0.85
    scales: int = 5
    # Offset searched, in pixels of the full image, beside what the crop implies.
    max_shift: float = 1.5
    # Gaussian blur (pixels) of both photos before comparing: absorbs JPEG noise.
    blur: float = 0.8
    # Gauss-Newton iterations of the refinement.
    iterations: int = 3
    # Brightness gain an edit may apply (target ~= gain x source); outside it a pair scores
    # -1 (a differently coloured variant is a different product).
    gain: tuple[float, float] = (0.8, 1.25)
    # Items per block of the coarse search; pairs per batch of the refinement.
    block: int = 128
    batch: int = 4096


@dataclass(frozen=True)
class Alignment:
    """Directed pairs: ``target`` ~= gain x ``source`` sampled at scale x u + offset (u: the
    target's normalised pixel coordinates, -1..1) + bias."""

    source: np.ndarray  # (P,) rows, the original under the hypothesis
    target: np.ndarray  # (P,) rows, the edited copy under the hypothesis
    scale: np.ndarray  # (P,)
    offset: np.ndarray  # (P, 2) x, y
    gain: np.ndarray  # (P,)
    score: np.ndarray  # (P,) NCC on the overlap


def prepare(images, blur: float) -> torch.Tensor:
    """(N, 1, H, W) float gray in [0, 1] of uint8 images, blurred by ``blur`` pixels."""
    x = _gray(images)
    if x.shape[-1] < 8 or x.shape[-2] < 8:
        raise InvalidInput(f"images must be at least 8x8 pixels, got {tuple(x.shape[-2:])}")
    return gaussian_blur(x, blur)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W), edges repeated."""
    if sigma <= 0:
        return x
    r = int(np.ceil(2.5 * sigma))
    g = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))


# --- coarse search --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Canvas:
    """The hypotheses of the coarse search: each scale's sampling grid and valid window."""

    scales: torch.Tensor  # (S,)
    pad: int
    grid: torch.Tensor  # (1, S * Hc, Wc, 2)
    valid: torch.Tensor  # (S, 1, Hc, Wc) 1 where the canvas lies inside the item
    unfolded_valid: torch.Tensor  # (HW, S * L) the valid mask under every window
    count: torch.Tensor  # (S * L,) valid pixels under every window


def _canvas(h: int, w: int, cfg: VerifyConfig) -> _Canvas:
    zoom_in = np.linspace(cfg.min_crop, 1.0, cfg.scales)
    scales = torch.tensor(np.r_[zoom_in, 1 / zoom_in[:-1]], dtype=torch.float32)  # (S,)
    # Largest offset a crop implies, in pixels of the compared frame, plus the shift.
    pad = int(np.ceil((1 - cfg.min_crop) * max(h, w) / 2 / cfg.min_crop + cfg.max_shift))
    hc, wc = h + 2 * pad, w + 2 * pad
    theta = torch.zeros(len(scales), 2, 3)
    theta[:, 0, 0] = scales * wc / w
    theta[:, 1, 1] = scales * hc / h
    grid = F.affine_grid(theta, [len(scales), 1, hc, wc], align_corners=False)
    grid = grid.reshape(1, len(scales) * hc, wc, 2)
    inside = F.grid_sample(torch.ones(1, 1, h, w), grid, align_corners=False)
    valid = (inside > 0.999).float().view(len(scales), 1, hc, wc)
    windows = F.unfold(valid, (h, w))  # (S, HW, L)
    unfolded = windows.permute(1, 0, 2).reshape(h * w, -1)
    return _Canvas(scales, pad, grid, valid, unfolded, unfolded.sum(dim=0))


def _ncc(sxy, sx, sxx, sy, syy, n) -> torch.Tensor:
    """NCC from the sums over n pixels (any broadcastable shapes)."""
    n = n.clamp_min(1)
    cov = sxy - sx * sy / n
    var = ((sxx - sx**2 / n).clamp_min(1e-9) * (syy - sy**2 / n).clamp_min(1e-9)).sqrt()
    return cov / var


def coarse_search(
    x: torch.Tensor, candidates: np.ndarray, cfg: VerifyConfig, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best coarse hypothesis of each (item, candidate): NCC, scale, offset (x, y), all
    (N, K) (offset (N, K, 2)); scale < 1 when the item is the original (zoomed in onto the
    candidate), > 1 when it is the copy. Normalised coordinates, as ``Alignment``."""
    small = F.avg_pool2d(x, 2)  # (N, 1, h, w)
    n, _, h, w = small.shape
    canvas = _canvas(h, w, cfg)
    flat = small.view(n, h * w)
    sy, syy = flat @ canvas.unfolded_valid, flat**2 @ canvas.unfolded_valid  # (N, S * L)
    ones = torch.ones(1, 1, h, w)
    n_scales, side = len(canvas.scales), 2 * canvas.pad + 1
    cand = torch.as_tensor(candidates)
    best = torch.empty(cand.shape)
    which = torch.empty(cand.shape, dtype=torch.long)
    for start in tqdm(range(0, n, cfg.block), desc="coarse alignment", disable=not show_progress):
        b = min(cfg.block, n - start)
        img = small[start : start + b]
        canv = F.grid_sample(img, canvas.grid.expand(b, -1, -1, -1), align_corners=False)
        canv = canv.view(b * n_scales, 1, h + 2 * canvas.pad, w + 2 * canvas.pad)
        canv = canv * canvas.valid.repeat(b, 1, 1, 1)
        sx = F.conv2d(canv, ones).view(b, 1, -1)  # (b, 1, S * L)
        sxx = F.conv2d(canv**2, ones).view(b, 1, -1)
        unf = F.unfold(canv, (h, w)).view(b, n_scales, h * w, side * side)
        unf = unf.permute(0, 2, 1, 3).reshape(b, h * w, -1)  # (b, HW, S * L)
        rows = cand[start : start + b]  # (b, K)
        sxy = torch.bmm(flat[rows], unf)  # (b, K, S * L)
        ncc = _ncc(sxy, sx, sxx, sy[rows], syy[rows], canvas.count)
        best[start : start + b], which[start : start + b] = ncc.max(dim=2)
    scale_i, shift = which // (side * side), which % (side * side)
    scale = canvas.scales[scale_i]
    dy, dx = shift // side - canvas.pad, shift % side - canvas.pad
    offset = torch.stack([2 * scale * dx / w, 2 * scale * dy / h], dim=-1)  # (N, K, 2)
    return best.numpy(), scale.numpy(), offset.numpy(), which.numpy()


# --- refinement ----------------------------------------------------------------------------


def _pixel_coords(h: int, w: int) -> torch.Tensor:
    """(H * W, 2) normalised x, y of the pixel centres (align_corners=False)."""
    ys = (2 * torch.arange(h) + 1.0) / h - 1
    xs = (2 * torch.arange(w) + 1.0) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def _interior(h: int, w: int) -> torch.Tensor:
    """(HW,) 1 away from the frame's edge: a re-upload's shift repeats its edge rows, and
    the blur repeats them too, so the outer ``EDGE`` pixels are left out of the score."""
    keep = torch.zeros(h, w)
    keep[EDGE : h - EDGE, EDGE : w - EDGE] = 1
    return keep.view(-1)


def _with_gradients(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W): the image and its x and y derivatives per normalised unit."""
    h, w = x.shape[-2:]
    gx = F.conv2d(F.pad(x, (1, 1, 0, 0), mode="replicate"), torch.tensor([[[[-0.5, 0, 0.5]]]]))
    gy = F.conv2d(F.pad(x, (0, 0, 1, 1), mode="replicate"), torch.tensor([[[[-0.5], [0], [0.5]]]]))
    return torch.cat([x, gx * (w / 2), gy * (h / 2)], dim=1)


def _sample(src3: torch.Tensor, coords: torch.Tensor, scale, offset, h, w):
    """Source image and gradients at scale x coords + offset: (P, 3, HW) and the valid mask."""
    pos = scale[:, None, None] * coords[None] + offset[:, None, :]  # (P, HW, 2)
    out = F.grid_sample(src3, pos.view(-1, h, w, 2), align_corners=False, padding_mode="border")
    inside = (pos.abs() <= 1 - 1 / torch.tensor([w, h])).all(dim=2)  # (P, HW)
    return out.view(len(pos), 3, h * w), inside.float() * _interior(h, w)


def _refine_batch(src3, target, scale, offset, iterations: int):
    """Gauss-Newton on (scale, offset x, offset y, gain, bias); returns the final parameters,
    gain and NCC on the overlap."""
    h, w = src3.shape[-2:]
    coords = _pixel_coords(h, w)  # (HW, 2)
    for _ in range(iterations):
        s3, m = _sample(src3, coords, scale, offset, h, w)
        a, ga_x, ga_y = s3[:, 0], s3[:, 1], s3[:, 2]  # (P, HW)
        gain, bias = _fit_gain(a, target, m)
        dwarp = ga_x * coords[None, :, 0] + ga_y * coords[None, :, 1]
        jac = torch.stack([gain[:, None] * dwarp, gain[:, None] * ga_x,
                           gain[:, None] * ga_y, a, torch.ones_like(a)], dim=2)  # fmt: skip
        resid = (target - gain[:, None] * a - bias[:, None]) * m  # (P, HW)
        jm = jac * m[..., None]  # (P, HW, 5)
        hess = jm.transpose(1, 2) @ jm + 1e-6 * torch.eye(5)  # (P, 5, 5)
        step, info = torch.linalg.solve_ex(hess, jm.transpose(1, 2) @ resid[..., None])
        # a flat photo (a white placeholder) has no gradient to align by: its system is
        # singular, and one such pair stopped the whole catalog's check; it keeps its place
        solved = (info == 0) & torch.isfinite(step[..., 0]).all(dim=1)
        step = torch.where(solved[:, None], step[..., 0], 0.0)
        scale = (scale + step[:, 0]).clamp(0.6, 1.6)
        offset = (offset + step[:, 1:3]).clamp(-0.6, 0.6)
    s3, m = _sample(src3, coords, scale, offset, h, w)
    a = s3[:, 0]
    gain, _ = _fit_gain(a, target, m)
    n = m.sum(dim=1)
    score = _ncc((a * target * m).sum(1), (a * m).sum(1), (a * a * m).sum(1),
                 (target * m).sum(1), (target**2 * m).sum(1), n)  # fmt: skip
    return scale, offset, gain, score


def _fit_gain(a, b, m):
    """Least-squares gain and bias of b ~= gain x a + bias over the mask, per row."""
    n = m.sum(dim=1).clamp_min(1)
    ma, mb = (a * m).sum(1) / n, (b * m).sum(1) / n
    cov = ((a - ma[:, None]) * (b - mb[:, None]) * m).sum(1)
    var = (((a - ma[:, None]) ** 2) * m).sum(1).clamp_min(1e-9)
    gain = cov / var
    return gain, mb - gain * ma


def refine(
    x: torch.Tensor,
    source: np.ndarray,
    target: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    cfg: VerifyConfig,
    show_progress: bool = False,
) -> Alignment:
    """Refine directed hypotheses (``target`` ~= ``source`` at scale x u + offset) at full
    resolution, in batches of ``cfg.batch`` pairs."""
    target_flat = x.view(len(x), -1)
    with_grad = _with_gradients(x)  # (N, 3, H, W)
    parts = []
    for start in tqdm(
        range(0, len(source), cfg.batch), desc="refinement", disable=not show_progress
    ):
        sl = slice(start, start + cfg.batch)
        src, tgt = torch.as_tensor(source[sl]), torch.as_tensor(target[sl])
        parts.append(_refine_batch(with_grad[src], target_flat[tgt],
                                   torch.as_tensor(scale[sl], dtype=torch.float32),
                                   torch.as_tensor(offset[sl], dtype=torch.float32),
                                   cfg.iterations))  # fmt: skip
    if not parts:
        empty = np.zeros(0, np.float32)
        return Alignment(source, target, empty, np.zeros((0, 2), np.float32), empty, empty)
    s, o, g, sc = (torch.cat(p).numpy() for p in zip(*parts, strict=True))
    return Alignment(np.asarray(source), np.asarray(target), s, o, g, sc)


def as_original_first(rows, cand, scale, offset):
    """Directed hypotheses with the original as source: a zoom-out (scale > 1: the item is
    the copy) is inverted so that the candidate is sampled instead."""
    rows, cand = np.asarray(rows), np.asarray(cand)
    out = scale > 1
    source = np.where(out, cand, rows)
    target = np.where(out, rows, cand)
    inv_scale = np.where(out, 1 / scale, scale)
    inv_offset = np.where(out[:, None], -offset / scale[:, None], offset)
    return source, target, inv_scale, inv_offset


def verified_scores(
    images, candidates: np.ndarray, cfg: VerifyConfig | None = None, show_progress: bool = False
) -> np.ndarray:
    """(N, K) verified score of each item against each of its ``candidates`` (N, K) rows:
    the NCC of the aligned pair, the best of the two items' lists for a pair in both."""
    cfg = cfg or VerifyConfig()
    cand = np.asarray(candidates, np.int64)
    x = prepare(images, cfg.blur)
    if (
        cand.ndim != 2
        or len(cand) != len(x)
        or (cand.size and not 0 <= cand.min() <= cand.max() < len(x))
    ):
        raise InvalidInput(
            f"candidates must be (N, K) rows of the {len(x)} images, got {cand.shape}"
        )
    _, scale, offset, _ = coarse_search(x, cand, cfg, show_progress)
    rows = np.repeat(np.arange(len(cand)), cand.shape[1])
    source, target, s, o = as_original_first(
        rows, cand.ravel(), scale.ravel(), offset.reshape(-1, 2)
    )
    aligned = refine(x, source, target, s, o, cfg, show_progress)
    ok = (aligned.gain >= cfg.gain[0]) & (aligned.gain <= cfg.gain[1])
    score = np.where(ok, aligned.score, -1.0).astype(np.float32)
    return symmetric_max(rows, cand.ravel(), score, len(x)).reshape(cand.shape)


def symmetric_max(left: np.ndarray, right: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Each directed pair's score replaced by the best score of its unordered pair."""
    key = np.minimum(left, right) * n + np.maximum(left, right)
    uniq, inverse = np.unique(key, return_inverse=True)
    best = np.full(len(uniq), -np.inf, np.float32)
    np.maximum.at(best, inverse, score)
    return best[inverse]


def self_copy_scores(
    images, sample: int = 1000, seed: int = 0, cfg: VerifyConfig | None = None
) -> np.ndarray:
    """Verified score between each of ``sample`` images and a realistic edit of it: what a
    duplicate scores (the label-free calibration sample)."""
    from recsys.catalog_intel.edits import realistic_edits

    images = np.asarray(images)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(images), size=min(sample, len(images)), replace=False)
    return pair_scores(images[rows], realistic_edits(images[rows], seed=seed), cfg)


def pair_scores(left, right, cfg: VerifyConfig | None = None) -> np.ndarray:
    """(P,) verified score of each photo in ``left`` against the same row of ``right`` (both
    uint8 (P, H, W[, C])), each pair tried both ways: a given list of pairs, such as the
    candidate pairs a caller already has, without any neighbour search."""
    left, right = np.asarray(left), np.asarray(right)
    if left.shape != right.shape:
        raise InvalidInput(f"left {left.shape} and right {right.shape} photos must match")
    n = len(left)
    if n == 0:
        return np.zeros(0, np.float32)
    partner = np.r_[np.arange(n, 2 * n), np.arange(n)][:, None]  # (2P, 1)
    return verified_scores(np.concatenate([left, right]), partner, cfg)[:n, 0]
