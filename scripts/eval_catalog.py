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
  (``recsys.catalog_intel.copy_descriptor``) is scored here too.
* outliers: for each class c, the test images of the other 9 classes plus 1% (90) of class
  c's; AUROC of the outlier score (``OutlierScorer``), mean over the 10 choices of c.
* clusters: k-means, k = 10, on the 60k train images; NMI and ARI against the classes.
* few labels: 60 labels per class from the train images (1%); logistic regression, accuracy
  on the 10k test images; and label propagation over train + test.

    .venv/bin/python scripts/eval_catalog.py --model-dir /tmp/ci16/model \\
        --json var/eval/catalog_cpu.json --plots var/eval/catalog_cpu
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
from scipy.fft import dctn
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    roc_auc_score,
    roc_curve,
)

from recsys.catalog_intel import (
    ClusterConfig,
    Clusterer,
    DuplicateConfig,
    OutlierConfig,
    OutlierScorer,
    TagConfig,
    Tagger,
)
from recsys.catalog_intel.copy_descriptor import center, copy_descriptors
from recsys.catalog_intel.duplicates import calibrate_threshold, self_copy_similarities
from recsys.catalog_intel.edits import realistic_edits
from recsys.catalog_intel.neighbours import as_unit_vectors, knn

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


def load_data(seed: int, data_dir: str | None) -> Data:
    from recsys.datasets.fashion_mnist import FashionMnistSource, load_fashion_mnist

    source = FashionMnistSource(local_dir=Path(data_dir)) if data_dir else None
    train_x, train_y = load_fashion_mnist("train", source)
    test_x, test_y = load_fashion_mnist("test", source)
    sources = np.random.default_rng(seed).choice(len(test_x), N_COPIES, replace=False)
    copies = realistic_edits(test_x[sources], seed=seed + 1)
    return Data(train_x, train_y, test_x, test_y, copies, sources)


# --- descriptors: each maps uint8 images to (N, D) vectors compared by cosine ---------------


class Pixels:
    """Mean-centred pixels in [0, 1] (the mean of the train images)."""

    def __init__(self, data: Data):
        self.mean = data.train_x.reshape(len(data.train_x), -1).mean(axis=0) / 255

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) / 255 - self.mean


def phash_bits(images: np.ndarray) -> np.ndarray:
    """(N, 64) booleans: pHash [Zauner 2010] of each image."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images).float()[:, None]  # (N, 1, 28, 28)
    small = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    low = dctn(small.numpy(), axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(images), 64)
    return low > np.median(low[:, 1:], axis=1, keepdims=True)


def phash(images: np.ndarray) -> np.ndarray:
    """pHash bits as +-1 vectors: cosine = 1 - 2 x Hamming distance / 64."""
    return np.where(phash_bits(images), 1.0, -1.0).astype(np.float32)


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


# --- tasks -------------------------------------------------------------------------------


def duplicates(embed, data: Data) -> dict:
    """copy@1, best-threshold pair F1, and F1 at the label-free calibrated threshold."""
    catalog = as_unit_vectors(embed(np.concatenate([data.test_x, data.copies])))
    n = len(data.test_x)
    sims, rows = knn(catalog, 1)
    nearest, score = rows[:, 0], sims[:, 0]
    copy_at_1 = float((nearest[n:] == data.sources).mean())
    left, right = (
        np.minimum(np.arange(len(catalog)), nearest),
        np.maximum(np.arange(len(catalog)), nearest),
    )
    _, first = np.unique(left * len(catalog) + right, return_index=True)  # each pair once
    is_copy = (right[first] >= n) & (
        left[first] == data.sources[np.clip(right[first] - n, 0, None)]
    )
    curve = _pr_curve(score[first], is_copy, N_COPIES)
    best = int(np.argmax(curve["f1"]))
    copy_sims = self_copy_similarities(embed, data.test_x, sample=1000, seed=7)
    threshold = calibrate_threshold(copy_sims, score, DuplicateConfig()).threshold
    chosen = score[first] >= threshold
    tp = int((chosen & is_copy).sum())
    calibrated_f1 = 2 * tp / max(int(chosen.sum()) + N_COPIES, 1)
    return {
        "copy@1": copy_at_1,
        "pair_f1": float(curve["f1"][best]),
        "best_threshold": float(curve["threshold"][best]),
        "calibrated_threshold": float(threshold),
        "calibrated_f1": calibrated_f1,
        "curve": {k: v[:: max(1, len(v) // 400)].tolist() for k, v in curve.items()},
    }


def _pr_curve(scores: np.ndarray, positive: np.ndarray, n_positive: int) -> dict:
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / n_positive
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": scores[order]}


def outliers(vectors: np.ndarray, labels: np.ndarray, k: int | None, seed: int) -> dict:
    """AUROC of the outlier score for each choice of the tenth class, and their mean."""
    rng = np.random.default_rng(seed)
    per_class, rocs = {}, {}
    for c in np.unique(labels):
        inliers = np.flatnonzero(labels != c)
        n_out = round(OUTLIER_SHARE * len(inliers))
        odd = rng.choice(np.flatnonzero(labels == c), n_out, replace=False)
        rows = np.concatenate([inliers, odd])
        truth = np.r_[np.zeros(len(inliers)), np.ones(n_out)]
        scores = OutlierScorer(OutlierConfig(k=k)).fit(vectors[rows]).scores_
        per_class[int(c)] = float(roc_auc_score(truth, scores))
        fpr, tpr, _ = roc_curve(truth, scores)
        rocs[int(c)] = {
            "fpr": fpr[:: max(1, len(fpr) // 200)].tolist(),
            "tpr": tpr[:: max(1, len(tpr) // 200)].tolist(),
        }
    return {"auroc": float(np.mean(list(per_class.values()))), "per_class": per_class, "roc": rocs}


def clusters(vectors: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    fitted = Clusterer(ClusterConfig(k=10, seed=seed)).fit(vectors)
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (labels, fitted.labels_), 1)
    return {
        "nmi": float(normalized_mutual_info_score(labels, fitted.labels_)),
        "ari": float(adjusted_rand_score(labels, fitted.labels_)),
        "confusion": confusion.tolist(),
    }


def few_labels(train: np.ndarray, test: np.ndarray, data: Data, seed: int, propagate: bool) -> dict:
    """Accuracy on the test images from 60 labels per class of the train images: the linear
    probe sees the labelled vectors only; propagation spreads over train + test."""
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(data.train_y == c), LABELS_PER_CLASS, replace=False)
            for c in range(10)
        ]
    )
    given = data.train_y[chosen].astype(str)
    unknown = np.full(len(test), None, dtype=object)
    linear = Tagger(TagConfig(method="linear")).fit(
        np.concatenate([train[chosen], test]), np.r_[given, unknown]
    )
    fitted = {"linear": linear}
    if propagate:
        everything = np.full(len(train), None, dtype=object)
        everything[chosen] = given
        fitted["propagation"] = Tagger(TagConfig(method="propagation")).fit(
            np.concatenate([train, test]), np.r_[everything, unknown]
        )
    return {
        f"{name}_accuracy": float((t.predictions_[-len(test) :].astype(int) == data.test_y).mean())
        for name, t in fitted.items()
    }


def score_vectors(name: str, embed, data: Data, opts: dict, tasks: tuple[str, ...]) -> dict:
    """The ``tasks`` for one descriptor ("duplicates", "vectors": outliers, clusters and
    the linear probe, "propagation")."""
    row = {}
    if "duplicates" in tasks:
        row["duplicates"] = duplicates(embed, data)
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
    lines = [f"{'vectors':22s} " + " ".join(f"{h:>12s}" for h in COLUMNS)]
    for name, r in rows.items():
        values = (r.get(section, {}).get(key) for section, key in COLUMNS.values())
        cells = (f"{v:12.4f}" if v is not None else f"{'-':>12s}" for v in values)
        lines.append(f"{name:22s} " + " ".join(cells))
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
    roc.legend(fontsize=7)
    paths = [out_dir / "duplicates_and_outliers.png"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    with_clusters = [n for n in rows if "clusters" in rows[n]]
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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False), default=None)
def main(**opts) -> None:
    """Issue 16's four catalog protocols on Fashion-MNIST, ours beside the baselines."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    data = load_data(opts["seed"], opts["data_dir"])
    both = ("duplicates", "vectors")
    runs = {}  # name -> (images -> vectors, tasks)
    if opts["baselines"]:
        runs["centred pixels"] = (Pixels(data), both)
        runs["pHash 64-bit"] = (phash, both)
    runs["copy descriptor"] = (CopyDescriptor(data), ("duplicates",))
    if opts["model_dir"]:
        runs["encoder"] = (Encoder(opts["model_dir"], opts["device"]), (*both, "propagation"))
    rows = {name: score_vectors(name, f, data, opts, tasks) for name, (f, tasks) in runs.items()}
    env = {"load_before": load_before, "load_after": os.getloadavg(), "cpus": os.cpu_count()}
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
