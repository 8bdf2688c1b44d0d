"""Fashion-MNIST [Xiao et al. 2017] as PNG images plus ingestable CSVs.

The four idx files are read from the Debian package `dataset-fashion-mnist` when it is
installed; otherwise the official files are downloaded once into a cache folder and their MD5
checked. The Debian copies are recompressed, so those are checked by their idx headers instead.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from recsys.datasets._io import (
    PrepareSummary,
    atomic_dir,
    download,
    ensure_out_dir,
    file_md5,
    write_csv,
)
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

# Index = label.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLITS = ("train", "test")
SIDE = 28  # images are SIDE x SIDE grayscale

_FILE_PREFIX = {"train": "train", "test": "t10k"}
_SPLIT_SIZE = {"train": 60_000, "test": 10_000}
# MD5 of the official gzipped files (github.com/zalandoresearch/fashion-mnist).
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_IDX_UBYTE = 0x08  # idx type code of unsigned bytes


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/recsys/fashion-mnist`, or `~/.cache/recsys/fashion-mnist`."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "recsys" / "fashion-mnist"


@dataclass(frozen=True)
class FashionMnistSource:
    """Where the idx files come from, first match wins."""

    # Folder holding the *-ubyte.gz files, used when present (the Debian package's by default).
    local_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    # Downloaded files are kept here and checked against OFFICIAL_MD5 before each use.
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Official location; a file's URL is base_url + its name.
    base_url: str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _locate(name: str, source: FashionMnistSource) -> Path:
    """Path of idx file `name`: the local copy, else a verified cached or fresh download."""
    local = Path(source.local_dir) / name
    if local.is_file():
        return local
    cached = Path(source.cache_dir) / name
    if cached.is_file():
        if file_md5(cached) == OFFICIAL_MD5[name]:
            return cached
        log.warning("%s does not match its MD5, downloading it again", cached)
    return download(source.base_url.rstrip("/") + "/" + name, cached, OFFICIAL_MD5[name])


def _corrupt(path: Path, problem: str) -> InvalidInput:
    return InvalidInput(
        f"{path} is not a usable Fashion-MNIST idx file: {problem}. Replace it: "
        "`apt-get install --reinstall dataset-fashion-mnist` for the Debian copy, or delete a "
        "downloaded copy so it is fetched again"
    )


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array in gzipped idx file `path`, which must have `ndim` dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, f"cannot be decompressed ({exc})") from exc
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt(path, f"{len(data)} bytes is shorter than the idx header")
    zeros, type_code, dims = struct.unpack(">HBB", data[:4])
    if (zeros, type_code, dims) != (0, _IDX_UBYTE, ndim):
        expected = f"0x{_IDX_UBYTE << 8 | ndim:08x}"
        raise _corrupt(path, f"magic number 0x{data[:4].hex()}, expected {expected}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise _corrupt(path, f"header promises shape {shape} but holds {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_split(split: str, images: np.ndarray, labels: np.ndarray, paths: list[Path]) -> None:
    expected = _SPLIT_SIZE[split]
    if images.shape != (expected, SIDE, SIDE):
        raise _corrupt(
            paths[0], f"images of shape {images.shape}, expected {(expected, SIDE, SIDE)}"
        )
    if labels.shape != (expected,):
        raise _corrupt(paths[1], f"{labels.shape[0]} labels, expected {expected}")
    if labels.max() >= len(CLASS_NAMES):
        raise _corrupt(paths[1], f"label {labels.max()}, expected 0 to {len(CLASS_NAMES) - 1}")


def load_fashion_mnist(
    split: str, source: FashionMnistSource | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)` of `split` ("train": 60,000, "test": 10,000).

    images: uint8 (N, 28, 28), 0 = background; labels: int64 (N,), index into CLASS_NAMES.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    source = source or FashionMnistSource()
    prefix = _FILE_PREFIX[split]
    paths = [
        _locate(f"{prefix}-images-idx3-ubyte.gz", source),
        _locate(f"{prefix}-labels-idx1-ubyte.gz", source),
    ]
    images = read_idx(paths[0], ndim=3)  # (N, 28, 28)
    labels = read_idx(paths[1], ndim=1)  # (N,)
    _check_split(split, images, labels, paths)
    log.debug("loaded Fashion-MNIST %s from %s", split, paths[0].parent)
    return images.copy(), labels.astype(np.int64)


def split_sizes(limit: int | None) -> dict[str, int]:
    """Images kept per split: all, or the first round(limit * 6/7) train and the rest test."""
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit {limit} keeps no images; pass 1 or more, or no limit for all")
    total = sum(_SPLIT_SIZE.values())
    if limit is None or limit >= total:
        return dict(_SPLIT_SIZE)
    train = round(limit * _SPLIT_SIZE["train"] / total)
    return {"train": train, "test": limit - train}


def _write_pngs(images: np.ndarray, folder: Path, progress: tqdm) -> list[str]:
    """Save each (28, 28) image as folder/NNNNN.png; returns the file names."""
    folder.mkdir()
    names = []
    for index, image in enumerate(images):
        name = f"{index:05d}.png"
        Image.fromarray(image).save(folder / name)
        names.append(name)
        progress.update()
    return names


def _tables(split: str, names: list[str], labels: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """items rows (item_id, image) and labels rows (item_id, label, label_name, split)."""
    item_ids = [f"fmnist-{split}-{name.removesuffix('.png')}" for name in names]
    items = pd.DataFrame({"item_id": item_ids, "image": [f"images/{split}/{n}" for n in names]})
    label_rows = pd.DataFrame(
        {
            "item_id": item_ids,
            "label": labels,
            "label_name": [CLASS_NAMES[label] for label in labels],
            "split": split,
        }
    )
    return items, label_rows


def prepare_fashion_mnist(
    out_dir: str | os.PathLike[str],
    limit: int | None = None,
    show_progress: bool = True,
    source: FashionMnistSource | None = None,
) -> PrepareSummary:
    """Write Fashion-MNIST into `out_dir` for `recsys ingest items ... --images-root out_dir`.

    images/{train,test}/NNNNN.png (replacing the whole images/ folder), items.csv
    (item_id, image path relative to out_dir) and labels.csv (item_id, label, label_name,
    split), which is for evaluation only. `limit` keeps the first round(limit * 6/7) train
    and the rest test images.
    """
    sizes = split_sizes(limit)
    out_dir = ensure_out_dir(out_dir)
    data = {split: load_fashion_mnist(split, source) for split in SPLITS}  # fail before writing
    items, labels = [], []
    with (
        atomic_dir(out_dir / "images") as images_dir,
        tqdm(
            total=sum(sizes.values()), desc="PNGs", unit="img", disable=not show_progress
        ) as progress,
    ):
        for split, (images, split_labels) in data.items():
            names = _write_pngs(images[: sizes[split]], images_dir / split, progress)
            split_items, split_labels_rows = _tables(split, names, split_labels[: sizes[split]])
            items.append(split_items)
            labels.append(split_labels_rows)
    log.info("wrote %d PNGs under %s", sum(sizes.values()), out_dir / "images")
    paths = {
        "images": out_dir / "images",
        "labels": write_csv(pd.concat(labels, ignore_index=True), out_dir / "labels.csv"),
        "items": write_csv(pd.concat(items, ignore_index=True), out_dir / "items.csv"),
    }
    counts = {"items": sum(sizes.values()), **sizes}
    return PrepareSummary(out_dir=out_dir, paths=paths, counts=counts)
