"""Catalog-intelligence protocols of issue 16 on Fashion-MNIST, with their baselines.

Vectors: a self-supervised image encoder (``--model-dir``, trained without labels by
`recsys train-images` or ``scripts/eval_image_encoder.py --model-dir``), beside mean-centred
pixels and a 64-bit perceptual hash (pHash: the sign of the 8x8 lowest DCT frequencies of a
32x32 resize against their median), all computed in this run. Labels are used only to score.

* duplicates: 500 seeded test images re-listed after a realistic edit
  (``recsys.catalog_intel.edits``) and added to the 10k test images. copy@1: the copy's
  nearest other item is its source. Pair F1: every item's nearest pair, scored by its
  similarity, positive when it is a (copy, source) pair; F1 at the best single threshold and
  at the label-free calibrated one. The copy descriptor
  (``recsys.catalog_intel.copy_descriptor``) is scored here too, alone and followed by
  geometric verification of each item's 5 nearest (``recsys.catalog_intel.verification``:
  each pair aligned by scale and offset, then scored by pixel correlation; row "copy
  descriptor + verification", its time in ``duplicates_s``).
* outliers: for each class c, the test images of the other 9 classes plus 1% (90) of class
  c's; AUROC of the outlier score (``OutlierScorer``), mean over the 10 choices of c.
* clusters: k-means, k = 10, on the 60k train images (``Clusterer``'s defaults: each vector
  averaged over its neighbours twice, 10 restarts); NMI and ARI against the classes.
* few labels: 60 labels per class from the train images (1%) in a catalog of train + test;
  logistic regression (on vectors smoothed over all items as cross-validation on the
  labelled ones chooses), accuracy on the 10k test images; and label propagation.

    .venv/bin/python scripts/eval_catalog.py --model-dir /tmp/ci16/model \\
        --json var/eval/catalog_cpu.json --plots var/eval/catalog_cpu
    # the near-duplicate protocol only (no encoder, no outliers/clusters/few labels):
    .venv/bin/python scripts/eval_catalog.py --duplicates-only --json var/eval/dups.json
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import faiss
import numpy as np
import torch

from recsys.catalog_intel.copy_descriptor import center, copy_descriptors
from recsys.catalog_intel.edits import realistic_edits
from recsys.catalog_intel.protocols import (
    cluster_agreement,
    copy_detection,
    few_label_accuracy,
    outlier_auroc,
    phash,
    verified_copy_detection,
)

log = logging.getLogger("eval_catalog")

N_COPIES = 500
LABELS_PER_CLASS = 60
OUTLIER_SHARE = 0.01


@dataclass(frozen=True)
class Data:
    train_x: np.ndarray  # (60000, 28, 28) uint8
    train_y: np.ndarray
    test_x: np.ndarray  # (10000, 28, 28) uint8
    test_y: np.ndarray
    copies: np.ndarray  # (500, 28, 28) uint8, edited test images
    sources: np.ndarray  # (500,) test rows the copies come from


def load_data(seed: int, data_dir: str | None, limit: int | None) -> Data:
    """The protocol's data; ``limit`` keeps the first N train and N/6 test images (smoke runs)."""
    from recsys.datasets.fashion_mnist import FashionMnistSource, load_fashion_mnist

    source = FashionMnistSource(local_dir=Path(data_dir)) if data_dir else None
    train_x, train_y = load_fashion_mnist("train", source)
    test_x, test_y = load_fashion_mnist("test", source)
    if limit:
        train_x, train_y = train_x[:limit], train_y[:limit]
        test_x, test_y = test_x[: limit // 6], test_y[: limit // 6]
    n_copies = min(N_COPIES, len(test_x) // 5)
    sources = np.random.default_rng(seed).choice(len(test_x), n_copies, replace=False)
    copies = realistic_edits(test_x[sources], seed=seed + 1)
    return Data(train_x, train_y, test_x, test_y, copies, sources)


# --- descriptors: each maps uint8 images to (N, D) vectors compared by cosine ---------------


class Pixels:
    """Mean-centred pixels in [0, 1] (the mean of the train images)."""

    def __init__(self, data: Data):
        self.mean = data.train_x.reshape(len(data.train_x), -1).mean(axis=0) / 255

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) / 255 - self.mean


class Encoder:
    def __init__(self, model_dir: str, device: str):
        from recsys.vision import ImageEncoder

        self.encoder = ImageEncoder.load(model_dir, device=device)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.transform(images)


class CopyDescriptor:
    def __init__(self, data: Data):
        self.mean = copy_descriptors(data.test_x).mean(axis=0)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return center(copy_descriptors(images), self.mean)


# --- tasks (recsys.catalog_intel.protocols) ---------------------------------------------


class Verified:
    """The copy descriptor's candidates, decided by geometric verification."""

    def __init__(self, descriptor: CopyDescriptor):
        self.descriptor = descriptor


def duplicates(embed, data: Data) -> dict:
    if isinstance(embed, Verified):
        return verified_copy_detection(embed.descriptor, data.test_x, data.copies, data.sources)
    return copy_detection(embed, data.test_x, data.copies, data.sources)


def outliers(vectors: np.ndarray, labels: np.ndarray, k: int | None, seed: int) -> dict:
    return outlier_auroc(vectors, labels, k, seed, OUTLIER_SHARE)


def clusters(vectors: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    return cluster_agreement(vectors, labels, 10, seed)


def few_labels(train: np.ndarray, test: np.ndarray, data: Data, seed: int, propagate: bool) -> dict:
    return few_label_accuracy(
        train, data.train_y, test, data.test_y, LABELS_PER_CLASS, seed, propagate
    )


def score_vectors(name: str, embed, data: Data, opts: dict, tasks: tuple[str, ...]) -> dict:
    """The ``tasks`` for one descriptor ("duplicates", "vectors": outliers, clusters and
    the linear probe, "propagation")."""
    row = {}
    if "duplicates" in tasks:
        t0 = time.monotonic()
        row["duplicates"] = duplicates(embed, data)
        row["duplicates_s"] = round(time.monotonic() - t0, 1)
        log.info("%s: duplicates %s", name, _short(row["duplicates"]))
    if "vectors" in tasks:
        t0 = time.monotonic()
        train, test = embed(data.train_x), embed(data.test_x)
        row["embed_s"] = round(time.monotonic() - t0, 1)
        row["outliers"] = outliers(test, data.test_y, opts["outlier_k"], opts["seed"])
        row["outliers_k10"] = outliers(test, data.test_y, 10, opts["seed"])
        row["clusters"] = clusters(train, data.train_y, opts["seed"])
        row["few_labels"] = few_labels(train, test, data, opts["seed"], "propagation" in tasks)
        log.info("%s: %s", name, _short({k: v for k, v in row.items() if k != "duplicates"}))
    return row


def _short(section) -> str:
    if isinstance(section, dict):
        inner = (
            f"{k}={_short(v)}"
            for k, v in section.items()
            if k not in ("curve", "roc", "per_class", "confusion")
        )
        return "{" + ", ".join(inner) + "}"
    return f"{section:.4f}" if isinstance(section, float) else str(section)


COLUMNS = {
    "dup. s": ("duplicates_s", None),
    "copy@1": ("duplicates", "copy@1"),
    "pair F1": ("duplicates", "pair_f1"),
    "F1 calib.": ("duplicates", "calibrated_f1"),
    "out. AUROC": ("outliers", "auroc"),
    "AUROC k=10": ("outliers_k10", "auroc"),
    "NMI": ("clusters", "nmi"),
    "ARI": ("clusters", "ari"),
    "1% LR acc": ("few_labels", "linear_accuracy"),
    "1% prop. acc": ("few_labels", "propagation_accuracy"),
}


def table(rows: dict[str, dict]) -> str:
    lines = [f"{'vectors':32s} " + " ".join(f"{h:>12s}" for h in COLUMNS)]
    for name, r in rows.items():
        values = (
            r.get(section) if key is None else r.get(section, {}).get(key)
            for section, key in COLUMNS.values()
        )
        cells = (f"{v:12.4f}" if v is not None else f"{'-':>12s}" for v in values)
        lines.append(f"{name:32s} " + " ".join(cells))
    return "\n".join(lines)


def plots(rows: dict[str, dict], out_dir: Path) -> list[Path]:
    """Duplicate precision/recall curves, outlier ROC (class 0 as the tenth), and the
    k-means confusion image of the first descriptor that is not a baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (pr, roc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in rows.items():
        if "duplicates" in r:
            curve = r["duplicates"]["curve"]
            pr.plot(curve["recall"], curve["precision"], label=name)
        if "outliers" in r:
            first = r["outliers"]["roc"][0]
            roc.plot(first["fpr"], first["tpr"], label=f"{name} ({r['outliers']['auroc']:.2f})")
    pr.set(xlabel="recall", ylabel="precision", title="duplicate pairs")
    roc.set(
        xlabel="false-positive rate", ylabel="true-positive rate", title="outliers (tenth class: 0)"
    )
    pr.legend(fontsize=7)
    if roc.lines:
        roc.legend(fontsize=7)
    paths = [out_dir / "duplicates_and_outliers.png"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    with_clusters = [n for n in rows if "clusters" in rows[n]]
    if not with_clusters:  # --duplicates-only
        plt.close("all")
        return paths
    name = with_clusters[-1]  # the encoder when there is one
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(np.asarray(rows[name]["clusters"]["confusion"]), cmap="Blues")
    ax.set(xlabel="k-means cluster", ylabel="class", title=f"clusters: {name}")
    paths.append(out_dir / "cluster_confusion.png")
    fig.savefig(paths[1], dpi=110, bbox_inches="tight")
    plt.close("all")
    return paths


@click.command()
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False),
    help="A trained image encoder (train-images); without: no encoder row.",
)
@click.option("--data-dir", default=None, help="Folder of the four *-ubyte.gz files.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--outlier-k", type=int, default=None, help="Default: OutlierScorer's (2%).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: all]."
)
@click.option("--limit", type=int, default=None, help="Smoke run: the first N train images.")
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option(
    "--duplicates-only",
    is_flag=True,
    help="Only the near-duplicate protocol (skips outliers, clusters and few labels).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False), default=None)
def main(**opts) -> None:
    """Issue 16's four catalog protocols on Fashion-MNIST, ours beside the baselines."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    threads = opts["threads"] or os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    data = load_data(opts["seed"], opts["data_dir"], opts["limit"])
    both = ("duplicates",) if opts["duplicates_only"] else ("duplicates", "vectors")
    runs = {}  # name -> (images -> vectors, tasks)
    if opts["baselines"]:
        runs["centred pixels"] = (Pixels(data), both)
        runs["pHash 64-bit"] = (phash, both)
    descriptor = CopyDescriptor(data)
    runs["copy descriptor"] = (descriptor, ("duplicates",))
    runs["copy descriptor + verification"] = (Verified(descriptor), ("duplicates",))
    if opts["model_dir"]:
        extra = () if opts["duplicates_only"] else ("propagation",)
        runs["encoder"] = (Encoder(opts["model_dir"], opts["device"]), (*both, *extra))
    rows = {name: score_vectors(name, f, data, opts, tasks) for name, (f, tasks) in runs.items()}
    env = {
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "threads": threads,
    }
    click.echo(table(rows))
    click.echo(f"load average before {env['load_before']}, after {env['load_after']}")
    if opts["plot_dir"]:
        for path in plots(rows, Path(opts["plot_dir"])):
            click.echo(f"wrote {path}")
    if opts["json_path"]:
        path = Path(opts["json_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"options": opts, "env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
