"""A copy-detection descriptor: pixels after the normalisation that undoes a re-listing edit.

A re-upload of the same photo is cropped, rescaled, shifted, brightened and re-compressed.
``copy_descriptors`` undoes the geometry and the brightness before comparing:

1. the background is the median of the border pixels; the foreground weight is each
   pixel's distance from it;
2. the image is resampled (one batched ``grid_sample``) so that the foreground's centroid is
   in the middle and its radius of gyration is ``spread`` of the half-side (moment
   normalisation: the centroid follows a shift, the radius follows a crop-and-resize);
3. the normalised image is described by gradient-orientation histograms over overlapping
   cells [HOG, Dalal & Triggs 2005] (square-rooted), tolerant to the pixel or two of
   misalignment left, blind to brightness;
4. centred on the catalog's mean and L2-normalised by the caller (cosine).

Measured on Fashion-MNIST (``scripts/eval_catalog.py``): see benchmarks/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recsys.errors import InvalidInput


@dataclass(frozen=True)
class CopyDescriptorConfig:
    # Side of the normalised image.
    side: int = 32
    # Radius of gyration of the foreground as a share of the half-side after normalising.
    spread: float = 0.55
    # Orientation bins (over 360 degrees), cell stride and cell size in pixels.
    bins: int = 8
    cell: int = 4
    cell_size: int = 8
    batch: int = 2048


def _gray(images) -> torch.Tensor:
    """(N, 1, H, W) float in [0, 1] from uint8 (N, H, W), (N, H, W, C) or (N, C, H, W)."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise InvalidInput(f"images must be uint8 (N, H, W[, C]), got {x.dtype} {tuple(x.shape)}")
    x = x.float() / 255
    if x.ndim == 3:
        return x[:, None]
    channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    return (x.permute(0, 3, 1, 2) if channels_last else x).mean(dim=1, keepdim=True)


def moment_normalise(x: torch.Tensor, side: int, spread: float) -> torch.Tensor:
    """(N, 1, side, side) foreground-minus-background, centred and scaled by its moments."""
    n, _, h, w = x.shape
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    fg = x - border.flatten(1).median(dim=1).values.view(n, 1, 1, 1)  # (N, 1, H, W)
    weight = fg.abs()
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    mass = weight.sum(dim=(1, 2, 3)).clamp_min(1e-6)  # (N,)
    cy = (weight * ys).sum(dim=(1, 2, 3)) / mass
    cx = (weight * xs).sum(dim=(1, 2, 3)) / mass
    dy2 = (ys - cy.view(n, 1, 1, 1)) ** 2
    dx2 = (xs - cx.view(n, 1, 1, 1)) ** 2
    radius = ((weight * (dy2 + dx2)).sum(dim=(1, 2, 3)) / mass / 2).sqrt().clamp_min(1e-3)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = radius / spread
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    return F.grid_sample(fg, grid, padding_mode="zeros", align_corners=False)


def orientation_histograms(x: torch.Tensor, cfg: CopyDescriptorConfig) -> torch.Tensor:
    """(N, bins * cells) square-rooted gradient-orientation histograms of (N, 1, S, S)."""
    gx = F.conv2d(x, torch.tensor([[[[-1.0, 0.0, 1.0]]]]), padding=(0, 1))
    gy = F.conv2d(x, torch.tensor([[[[-1.0], [0.0], [1.0]]]]), padding=(1, 0))
    magnitude = (gx**2 + gy**2).sqrt()  # (N, 1, S, S)
    position = (torch.atan2(gy, gx) + torch.pi) / (2 * torch.pi) * cfg.bins
    low = position.floor().long() % cfg.bins
    frac = position - position.floor()
    hist = torch.zeros(len(x), cfg.bins, *x.shape[2:])  # (N, bins, S, S)
    hist.scatter_add_(1, low, magnitude * (1 - frac))
    hist.scatter_add_(1, (low + 1) % cfg.bins, magnitude * frac)
    pad = (cfg.cell_size - cfg.cell) // 2
    cells = F.avg_pool2d(hist, cfg.cell_size, cfg.cell, padding=pad)  # (N, bins, s, s)
    return cells.flatten(1).sqrt()


def copy_descriptors(
    images, config: CopyDescriptorConfig | None = None, show_progress: bool = False
) -> np.ndarray:
    """(N, D) float32 descriptors of uint8 images, in batches; compare by cosine after
    centring on the catalog mean (``center``)."""
    cfg = config or CopyDescriptorConfig()
    out = []
    for start in tqdm(
        range(0, len(images), cfg.batch), desc="copy descriptors", disable=not show_progress
    ):
        x = _gray(images[start : start + cfg.batch])
        out.append(orientation_histograms(moment_normalise(x, cfg.side, cfg.spread), cfg))
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def center(descriptors: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Descriptors minus ``mean`` (default: their own), L2-normalised."""
    d = descriptors - (descriptors.mean(axis=0) if mean is None else mean)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
