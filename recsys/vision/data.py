"""Images in, one uint8 tensor out: (N, C, S, S) at the configured input size.

The whole training set is held as one uint8 tensor (60k Fashion-MNIST images are 47 MB) so
that augmentation works on batches sliced from it, with no per-sample decoding in the loop.
Files are decoded once, in threads, JPEGs at a reduced scale (``Image.draft``), transparent
pixels onto white; ``recsys.vision.cache`` keeps the result on disk between runs.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from recsys.errors import InvalidInput
from recsys.vision.photo import DECODE_ERRORS, MAX_PHOTO_PIXELS, open_file, shown_at

log = logging.getLogger(__name__)

ImageInput = Sequence[str | Path] | np.ndarray | torch.Tensor
_PATH_COLUMNS = ("image", "image_path", "path")


def read_items_csv(path: str | Path, images_root: str | Path) -> tuple[list[str], list[Path]]:
    """Item ids and absolute image paths from a CSV with ``item_id`` and an image column.

    The image column is the first of ``image``, ``image_path``, ``path``; relative paths are
    taken relative to ``images_root``.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    column = next((c for c in _PATH_COLUMNS if c in columns), None)
    if "item_id" not in columns or column is None:
        raise InvalidInput(
            f"{path} needs an item_id column and one of {', '.join(_PATH_COLUMNS)}; "
            f"it has {', '.join(columns) or 'no header'}"
        )
    if not rows:
        raise InvalidInput(f"{path} lists no items: it holds only its header")
    empty = next((n for n, r in enumerate(rows, start=2) if not (r[column] or "").strip()), None)
    if empty is not None:  # it read as the images root itself ("Is a directory")
        raise InvalidInput(
            f"{path}: line {empty} (item {rows[empty - 2]['item_id']!r}) has no {column}; "
            "leave out the items without a photo"
        )
    ids = [r["item_id"] for r in rows]
    first: dict[str, int] = {}
    for line, item in enumerate(ids, start=2):  # an item paired with itself as a duplicate
        if first.setdefault(item, line) != line:
            raise InvalidInput(
                f"{path}: line {line} names item {item!r} again (first on line {first[item]}); "
                "one row per item"
            )
    root = Path(images_root)
    return ids, [root / r[column] for r in rows]


def _load_one(path: Path, size: int, mode: str) -> np.ndarray:
    """One file, decoded, converted to ``mode`` and resized: (size, size) or (size, size, 3).
    A file that would decode to over ``MAX_PHOTO_PIXELS`` (25 megapixels, after a JPEG's
    reduced scale; the service's default cap on uploads) is refused before its pixels are
    decoded: a 330 KB PNG of 1 x 85,000,000 pixels took a training run to 4 GB. So is
    anything but a regular file (a FIFO put in a photo's place hung the run)."""
    try:
        with open_file(path) as img:
            img.draft(mode, (size, size))  # JPEG: decode at 1/2..1/8 scale, still >= size
            limit = min(MAX_PHOTO_PIXELS, Image.MAX_IMAGE_PIXELS)
            if img.width * img.height > limit:
                raise InvalidInput(
                    f"cannot read image {path}: {img.width}x{img.height} pixels is over the "
                    f"{limit / 1e6:g} megapixels decoded at most"
                )
            return shown_at(img, size, mode)
    except DECODE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise InvalidInput(f"cannot read image {path}: {reason}") from exc


def decode_into(
    out: np.ndarray,
    paths: Sequence[str | Path],
    show_progress: bool = False,
    unreadable: list[int] | None = None,
) -> np.ndarray:
    """Decode ``paths`` into ``out`` (N, C, S, S) uint8, in threads (PIL releases the GIL).
    A file that cannot be decoded raises ``InvalidInput`` naming it; with ``unreadable`` (a
    list) its row is left black and its number appended instead."""
    n, channels, size, _ = out.shape
    mode = "L" if channels == 1 else "RGB"

    def load(i: int) -> None:
        try:
            pixels = _load_one(Path(paths[i]), size, mode).reshape(size, size, channels)
        except InvalidInput as exc:
            if unreadable is None:
                raise
            log.warning("%s; left out", exc)
            unreadable.append(i)
            out[i] = 0
            return
        out[i] = pixels.transpose(2, 0, 1)  # (C, S, S)

    desc = f"decoding images to {size}px"
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 8)) as pool:
        done = pool.map(load, range(n))
        for _ in tqdm(done, total=n, desc=desc, unit="img", disable=not show_progress):
            pass
    return out


def load_image_files(
    paths: Sequence[str | Path], size: int, channels: int, show_progress: bool = False
) -> torch.Tensor:
    """Decode, convert (``L`` or ``RGB``) and resize image files: (N, C, size, size) uint8."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    return torch.from_numpy(decode_into(out, list(paths), show_progress))


def _array_to_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} to (N, C, H, W)."""
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    if x.dtype != torch.uint8:
        raise InvalidInput(f"image arrays must be uint8, got {x.dtype}; scale to 0..255 first")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.permute(0, 3, 1, 2)
    raise InvalidInput(f"image array of shape {tuple(x.shape)}; use (N, H, W) or (N, H, W, C)")


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)


def as_image_tensor(
    images: ImageInput, size: int, channels: int, show_progress: bool = False
) -> torch.Tensor:
    """File paths or a uint8 array, as a (N, channels, size, size) uint8 tensor."""
    if isinstance(images, np.ndarray | torch.Tensor):
        x = _match_channels(_array_to_nchw(images), channels)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x.contiguous()
    return load_image_files(list(images), size, channels, show_progress)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 (N, C, S, S) tensor, in [0, 1] units."""
    sample = x[:: max(1, len(x) // 10_000)].float() / 255  # at most ~10k images
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return mean.tolist(), std.tolist()
