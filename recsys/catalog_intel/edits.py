"""Realistic re-listing edits: what a second seller's upload of the same photo looks like.

``realistic_edits`` applies, per image, a crop to 85-95% of the side at a random position
resized back, a brightness factor in 0.85-1.15, a 1-pixel shift and a JPEG re-encode at
quality 40-70. The same edits calibrate the duplicate threshold without labels
(``recsys.catalog_intel.duplicates``) and make the copy-detection protocol of
``scripts/eval_catalog.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from recsys.errors import InvalidInput


@dataclass(frozen=True)
class EditConfig:
    # Side of the kept crop as a fraction of the image side (uniform in the range).
    crop: tuple[float, float] = (0.85, 0.95)
    # JPEG quality of the re-encode (uniform integer in the range, inclusive).
    jpeg_quality: tuple[int, int] = (40, 70)
    # Multiplicative brightness factor.
    brightness: tuple[float, float] = (0.85, 1.15)
    # Shift in pixels along a random non-zero direction (edges repeat).
    shift: int = 1


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise InvalidInput(
            f"images must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} "
            f"{images.shape}; convert with np.asarray(img, np.uint8)"
        )
    return images[..., None] if images.ndim == 3 else images


def _crop_resize(img: Image.Image, side: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    return img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)


def _shift(pixels: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` (H, W, C) moved by ``shift`` along a random non-zero direction."""
    if shift == 0:
        return pixels
    dy, dx = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)][rng.integers(8)]
    padded = np.pad(pixels, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
    h, w = pixels.shape[:2]
    y0, x0 = shift - dy * shift, shift - dx * shift
    return padded[y0 : y0 + h, x0 : x0 + w]


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode).save(
        buf, "JPEG", quality=int(quality)
    )
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert(mode), np.uint8)
    return out.reshape(pixels.shape)


def edit_one(pixels: np.ndarray, cfg: EditConfig, rng: np.random.Generator) -> np.ndarray:
    """One (H, W, C) uint8 image after a random realistic edit."""
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    img = Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode)
    img = _crop_resize(img, rng.uniform(*cfg.crop), rng)
    out = np.asarray(img, np.float32).reshape(pixels.shape) * rng.uniform(*cfg.brightness)
    out = _shift(np.clip(out, 0, 255).round().astype(np.uint8), cfg.shift, rng)
    return _jpeg(out, rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))


def realistic_edits(images: np.ndarray, cfg: EditConfig | None = None, seed: int = 0) -> np.ndarray:
    """Each image of ``images`` (uint8 (N, H, W) or (N, H, W, C)) after its own random edit.

    One PIL crop, resize and JPEG round trip per image (a JPEG is encoded one image at a
    time); used on samples of a few thousand images, never on a training loop.
    """
    cfg = cfg or EditConfig()
    data = _as_nhwc(images)
    rng = np.random.default_rng(seed)
    out = np.stack([edit_one(img, cfg, rng) for img in data]) if len(data) else data.copy()
    return out.reshape(np.shape(images))
