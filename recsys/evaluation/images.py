"""Image-encoder quality from item labels (e.g. Fashion-MNIST's labels.csv).

Labelled items' image vectors are scored by weighted kNN accuracy (k=20) and same-label
precision@10 (``recsys.vision.evaluate``), queries against a gallery, beside mean-centred
raw pixels. The labels file's ``split`` column picks queries ("test") and gallery
("train"); without it a seeded seventh of the items are the queries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("item_id", "label")


def read_labels(path: str | Path) -> pd.DataFrame:
    """item_id, label (and label_name, split when present) as strings, as written: pandas
    read the id "NaN" or "null" as no id at all. A row without an id or a label is refused,
    naming its line."""
    labels = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise InvalidInput(
            f"{path} lacks column(s) {', '.join(missing)}; expected item_id, label "
            "(and optionally label_name, split), like Fashion-MNIST's labels.csv"
        )
    labels = labels.assign(item_id=labels["item_id"].str.strip(), label=labels["label"].str.strip())
    blank = (labels == "").all(axis=1).to_numpy()
    empty = np.flatnonzero(~blank & ((labels["item_id"] == "") | (labels["label"] == "")))
    if len(empty):
        raise InvalidInput(f"{path}: line {empty[0] + 2} has no item_id or no label")
    return labels[~blank].reset_index(drop=True)


def image_quality(
    item_ids: np.ndarray,
    image_paths: pd.Series,
    vectors: np.ndarray,
    labels: pd.DataFrame,
    seed: int = 0,
) -> dict:
    """kNN accuracy and precision@10 of ``vectors`` and of raw pixels, on labelled items."""
    from recsys.vision.evaluate import knn_accuracy, precision_at_k

    rows, codes, queries = _labelled_rows(item_ids, image_paths, labels, seed)
    pixels = raw_pixels(image_paths.iloc[rows].tolist())
    results = {"queries": int(queries.sum()), "gallery": int((~queries).sum())}
    for name, matrix in (("image vectors", vectors[rows]), ("raw pixels", pixels)):
        q, g = matrix[queries], matrix[~queries]
        results[name] = {
            "knn_accuracy": knn_accuracy(q, codes[queries], g, codes[~queries], k=20),
            "precision@10": precision_at_k(q, codes[queries], g, codes[~queries], k=10),
        }
    return results


def _labelled_rows(item_ids, image_paths: pd.Series, labels: pd.DataFrame, seed: int):
    """(catalog rows, integer label codes, query mask) of labelled items with images."""
    by_id = labels.drop_duplicates("item_id").set_index("item_id")
    position = pd.Index(np.asarray(item_ids, dtype=str))
    rows = position.get_indexer(by_id.index)
    keep = rows >= 0
    rows, by_id = rows[keep], by_id[keep]
    has_image = image_paths.iloc[rows].notna().to_numpy()
    rows, by_id = rows[has_image], by_id[has_image]
    if len(rows) < 2:
        raise InvalidInput(
            "the labels file names fewer than 2 catalog items with images; check that its "
            "item_id column matches the ingested items"
        )
    codes = pd.factorize(by_id["label"], sort=True)[0]
    if "split" in by_id.columns:
        queries = (by_id["split"] == "test").to_numpy()
    else:
        queries = np.random.default_rng(seed).random(len(rows)) < 1 / 7
    if queries.all() or not queries.any():
        raise InvalidInput("the labelled items need both queries (split=test) and a gallery")
    return rows, codes, queries


def raw_pixels(paths: list[str], size: int = 28) -> np.ndarray:
    """(N, size*size*C) mean-centred pixels in [0, 1], grayscale unless any image is colour."""
    mode = "L" if all(_is_gray(p) for p in paths[:16]) else "RGB"
    out = []
    for path in paths:
        with Image.open(path) as image:
            small = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            out.append(np.asarray(small, dtype=np.float32).ravel() / 255.0)
    pixels = np.stack(out)  # (N, D)
    return pixels - pixels.mean(axis=0)


def _is_gray(path: str) -> bool:
    with Image.open(path) as image:
        return image.mode in ("L", "LA", "1", "I", "I;16")


def label_names(item_ids: np.ndarray, labels: pd.DataFrame) -> np.ndarray:
    """Per catalog item its label name (or label), None when unlabelled: for the item map."""
    column = "label_name" if "label_name" in labels.columns else "label"
    names = labels.drop_duplicates("item_id").set_index("item_id")[column]
    return names.reindex(np.asarray(item_ids, dtype=str)).to_numpy(dtype=object)
