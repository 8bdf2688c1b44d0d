"""Augmentation of whole batches as tensors, with per-sample random parameters.

Everything runs on the batch's own device (the GPU when training there): a random resized crop
and horizontal flip are one batched affine grid + ``grid_sample``; brightness, contrast,
saturation, grayscale and random erasing are element-wise ops. Only the parameters (a few
numbers per sample) are drawn on the CPU from an explicit ``torch.Generator``, so a run is
reproducible for a fixed seed and independent of the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    # Area fraction of the source kept by the random resized crop of a global view. Milder than
    # SimCLR's ImageNet (0.08, 1): for centred product shots (0.7, 1) scored best on
    # Fashion-MNIST (benchmarks/RESULTS.md, "Image encoder").
    scale: tuple[float, float] = (0.7, 1.0)
    # Aspect-ratio range of the crop (SimCLR's 3/4..4/3).
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # Probability of a horizontal flip.
    hflip: float = 0.5
    # Maximum relative brightness and contrast change (ColorJitter-style), and its probability.
    brightness: float = 0.4
    contrast: float = 0.4
    # Saturation jitter and probability of converting to grayscale (colour images only).
    saturation: float = 0.4
    grayscale: float = 0.2
    # Hue rotation, at most this fraction of the colour circle either way (colour images
    # only; SimCLR's ColorJitter has one): 0.5 turns a view to any hue. Without it the
    # encoder told a shop's products apart by their colour: on 600x800 JPEGs of the demo
    # shop each tinted at random, "similar" same-class precision@10 0.813 -> 0.945 (0.1:
    # 0.848), OpenMoji's group precision level (0.4725 -> 0.4742; benchmarks/RESULTS.md,
    # session 57). Grayscale catalogs are unchanged.
    hue: float = 0.5
    jitter_p: float = 0.8
    # Probability of erasing one random rectangle (2%..25% of the image) per view.
    erase_p: float = 0.3
    # DINO multi-crop: number of extra local views, their size and crop-area range.
    n_local: int = 0
    local_size: int = 12
    local_scale: tuple[float, float] = (0.1, 0.4)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low  # (n,)


def crop_thetas(
    n: int, scale: tuple[float, float], cfg: AugmentConfig, gen: torch.Generator
) -> torch.Tensor:
    """Affine matrices of random resized crops (+ flips) in ``affine_grid`` units: (n, 2, 3)."""
    area = _uniform(n, *scale, gen)
    log_ratio = _uniform(n, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), gen)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # (n,) crop width as a fraction of the image
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (_uniform(n, -1, 1, gen)) * (1 - w)  # centre kept inside the image
    cy = (_uniform(n, -1, 1, gen)) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < cfg.hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return theta


def resized_crop(x: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Sample a ``size`` x ``size`` crop of each image in ``x`` (B, C, H, W) by ``theta``."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast (and saturation, grayscale on colour) of (B, C, H, W)."""
    n = x.shape[0]
    apply = (torch.rand(n, generator=gen) < cfg.jitter_p).float()
    b = 1 + apply * _uniform(n, -cfg.brightness, cfg.brightness, gen)
    c = 1 + apply * _uniform(n, -cfg.contrast, cfg.contrast, gen)
    x = x * b.to(x).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (x - mean) * c.to(x).view(n, 1, 1, 1) + mean
    if x.shape[1] == 3:
        s = 1 + apply * _uniform(n, -cfg.saturation, cfg.saturation, gen)
        s = torch.where(torch.rand(n, generator=gen) < cfg.grayscale, 0.0, s)
        gray = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * s.to(x).view(n, 1, 1, 1) + gray
        if cfg.hue > 0:
            angle = apply * _uniform(n, -cfg.hue, cfg.hue, gen) * 2 * math.pi
            turn = _hue_rotations(angle).to(x)[:, :, :, None, None]  # (B, 3, 3, 1, 1)
            # element-wise sums, not a batched matrix product: the same result whatever the
            # threads (a Ray worker's one thread and this process's two gave other floats)
            x = sum(turn[:, :, j] * x[:, j : j + 1] for j in range(3))
    return x.clamp(0, 1)


# RGB -> YIQ (NTSC): Y the luma, I and Q the chroma plane a hue rotation turns. A turn by
# angle a is inv(YIQ) @ [[1, 0, 0], [0, cos a, -sin a], [0, sin a, cos a]] @ YIQ, that is
# FIXED + cos a * COS + sin a * SIN: made of these three, each sample's matrix is element-wise
# arithmetic, the same floats whatever the threads (batched matrix products were not: a Ray
# worker's one thread and this process's two trained other encoders).
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_RGB = torch.linalg.inv(_YIQ)
_HUE_FIXED = torch.outer(_RGB[:, 0], _YIQ[0]).float()
_HUE_COS = (torch.outer(_RGB[:, 1], _YIQ[1]) + torch.outer(_RGB[:, 2], _YIQ[2])).float()
_HUE_SIN = (torch.outer(_RGB[:, 2], _YIQ[1]) - torch.outer(_RGB[:, 1], _YIQ[2])).float()


def _hue_rotations(angle: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) RGB -> RGB matrices turning the hue by ``angle`` (n,) radians, luma kept."""
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    return _HUE_FIXED + cos * _HUE_COS + sin * _HUE_SIN


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Zero one random rectangle (2%..25% of the area) in each image with probability ``p``."""
    n, _, h, w = x.shape
    area = _uniform(n, 0.02, 0.25, gen)
    ratio = _uniform(n, math.log(0.3), math.log(3.3), gen).exp()
    eh, ew = (area / ratio).sqrt().clamp(max=1), (area * ratio).sqrt().clamp(max=1)
    y0, x0 = torch.rand(n, generator=gen) * (1 - eh), torch.rand(n, generator=gen) * (1 - ew)
    on = torch.rand(n, generator=gen) < p
    ys = (torch.arange(h) + 0.5) / h  # (H,)
    xs = (torch.arange(w) + 0.5) / w
    in_y = (ys[None] >= y0[:, None]) & (ys[None] < (y0 + eh)[:, None])  # (B, H)
    in_x = (xs[None] >= x0[:, None]) & (xs[None] < (x0 + ew)[:, None])  # (B, W)
    mask = in_y[:, :, None] & in_x[:, None, :] & on[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None].to(x.device), 0.0)


class BatchAugment:
    """Makes the views of one batch: ``views(x, gen) -> [global, global, local...]``.

    ``x`` is a (B, C, H, W) float batch in [0, 1]; each view is normalised with ``mean`` and
    ``std`` and has size ``size`` (global) or ``cfg.local_size`` (local).
    """

    def __init__(self, cfg: AugmentConfig, size: int, mean: list[float], std: list[float]):
        self.cfg = cfg
        self.size = size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def view(self, x: torch.Tensor, size: int, scale, gen: torch.Generator) -> torch.Tensor:
        """One random view of every image in ``x``: (B, C, size, size), normalised."""
        v = resized_crop(x, crop_thetas(x.shape[0], scale, self.cfg, gen), size)
        v = color_jitter(v, self.cfg, gen)
        if self.cfg.erase_p > 0:
            v = random_erase(v, self.cfg.erase_p, gen)
        return (v - self.mean.to(v)) / self.std.to(v)

    def views(self, x: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        glob = [self.view(x, self.size, self.cfg.scale, gen) for _ in range(2)]
        local = [
            self.view(x, self.cfg.local_size, self.cfg.local_scale, gen)
            for _ in range(self.cfg.n_local)
        ]
        return glob + local
