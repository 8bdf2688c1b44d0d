"""The report's catalog tasks (``recsys evaluate --labels``): near-duplicates, outliers,
clusters and few-label tagging on the labelled items, beside raw pixels and a 64-bit pHash.

The protocols are ``recsys.catalog_intel.protocols`` (as in ``scripts/eval_catalog.py``);
queries are the labels file's test split, the gallery its train split:

* duplicates: 500 seeded queries re-listed after a realistic edit; copy@1 and pair F1 of
  the copy descriptor alone, of its candidates decided by geometric verification (each
  item's 10 nearest, ``protocols.verified_copy_detection``, as ``scripts/eval_catalog.py``:
  about 5 s per 1,000 queries on one core), raw pixels and pHash (the image vectors of
  edited copies would need the encoder, which the report does not hold);
* outliers: AUROC over the choices of the odd label, on the queries;
* clusters: k-means with k = the number of labels on the gallery, NMI and ARI;
* few labels: 1% of the gallery labelled (per label), accuracy on the queries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.catalog_intel import protocols
from recsys.catalog_intel.copy_descriptor import center, copy_descriptors
from recsys.catalog_intel.edits import realistic_edits
from recsys.catalog_intel.verification import VerifyConfig
from recsys.evaluation import images as image_eval

log = logging.getLogger(__name__)

COPIES = 500
VERIFIED = "copy descriptor + verification"
LABEL_SHARE = 0.01
# Held-out labelled items the tasks need at the least (the duplicate threshold's calibration
# edits 10 of them; fewer make every task's figure one item's luck).
MIN_QUERIES = 20
SIDE = 28  # images are compared at this side, grayscale (as raw_pixels does)


def evaluate(
    item_ids: np.ndarray, image_paths: pd.Series, vectors: np.ndarray, labels, seed: int = 0
) -> dict:
    """The four tasks on the labelled items with images (``labels``: read_labels' table)."""
    from recsys.vision.cache import decoded_images

    rows, codes, queries = image_eval._labelled_rows(item_ids, image_paths, labels, seed)
    if queries.sum() < MIN_QUERIES:
        log.warning(
            "catalog tasks skipped: %d labelled items with images give %d queries; they "
            "need %d (label more items)",
            len(rows),
            queries.sum(),
            MIN_QUERIES,
        )
        return {"skipped": f"{len(rows)} labelled items with images; label more items"}
    paths = image_paths.iloc[rows].tolist()
    images = decoded_images(paths, SIDE, 1)[:, 0].numpy()  # (N, S, S) uint8
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255
    pixels -= pixels[~queries].mean(axis=0)
    named = {
        "image vectors": vectors[rows],
        "raw pixels": pixels,
        "pHash 64-bit": protocols.phash(images),
    }
    q, g = queries, ~queries
    classes = len(np.unique(codes))
    per_class = max(1, round(LABEL_SHARE * g.sum() / classes))
    log.info("catalog tasks on %d queries, %d gallery items", q.sum(), g.sum())
    return {
        "duplicates": _duplicates(images[q], seed),
        "outliers": {
            n: protocols.outlier_auroc(v[q], codes[q], None, seed) for n, v in named.items()
        },
        "clusters": {
            n: protocols.cluster_agreement(v[g], codes[g], classes, seed) for n, v in named.items()
        },
        "few_labels": {
            n: protocols.few_label_accuracy(
                v[g], codes[g], v[q], codes[q], per_class, seed, n == "image vectors"
            )
            for n, v in named.items()
        },
    }


def _duplicates(originals: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sources = rng.choice(len(originals), min(COPIES, len(originals) // 5), replace=False)
    copies = realistic_edits(originals[sources], seed=seed + 1)
    mean_desc = copy_descriptors(originals).mean(axis=0)
    mean_pix = originals.reshape(len(originals), -1).mean(axis=0) / 255
    embeds = {
        "copy descriptor": lambda x: center(copy_descriptors(x), mean_desc),
        "raw pixels": lambda x: x.reshape(len(x), -1).astype(np.float32) / 255 - mean_pix,
        "pHash 64-bit": protocols.phash,
    }
    out = {n: protocols.copy_detection(f, originals, copies, sources) for n, f in embeds.items()}
    candidates = min(VerifyConfig().candidates, len(originals) + len(copies) - 1)
    out[VERIFIED] = protocols.verified_copy_detection(
        embeds["copy descriptor"], originals, copies, sources, VerifyConfig(candidates=candidates)
    )
    return out


def figures(metrics: dict, directory: Path) -> dict[str, Path]:
    """Duplicate precision/recall, outlier ROC (the first label as the odd one) and the
    image vectors' cluster confusion, when the report has catalog tasks."""
    section = metrics.get("images", {}).get("catalog_tasks")
    if not section or "skipped" in section:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pr, roc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in section["duplicates"].items():
        pr.plot(r["curve"]["recall"], r["curve"]["precision"], label=name)
    for name, r in section["outliers"].items():
        first = next(iter(r["roc"].values()))
        roc.plot(first["fpr"], first["tpr"], label=f"{name} (mean AUROC {r['auroc']:.2f})")
    pr.set(xlabel="recall", ylabel="precision", title="duplicate pairs")
    roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="outliers")
    pr.legend(fontsize=7)
    roc.legend(fontsize=7)
    out = {"catalog_curves": directory / "catalog_duplicates_outliers.png"}
    fig.savefig(out["catalog_curves"], dpi=110, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(np.asarray(section["clusters"]["image vectors"]["confusion"]), cmap="Blues")
    ax.set(xlabel="k-means cluster", ylabel="label", title="clusters of the image vectors")
    out["catalog_confusion"] = directory / "catalog_cluster_confusion.png"
    fig.savefig(out["catalog_confusion"], dpi=110, bbox_inches="tight")
    plt.close("all")
    return out


def render(doc, metrics: dict, figures: dict[str, Path]) -> None:
    """The "Catalog tasks" section of the report, when there is one."""
    section = metrics.get("images", {}).get("catalog_tasks")
    if not section:
        return
    doc.heading("Catalog tasks")
    if "skipped" in section:
        doc.paragraph(f"Not run: {section['skipped']}.")
        return
    doc.paragraph(
        "Near-duplicates (500 queries re-listed after a crop, JPEG, brightness and 1-pixel "
        "edit: copy@1 and the F1 of every item's nearest pair at the best threshold and at the "
        "threshold calibrated without labels; "
        f"'{VERIFIED}' decides the descriptor's 10 nearest candidates by aligning the "
        "photos and correlating their pixels), outliers "
        "(one label at 1% among the others: AUROC, mean over the labels), clusters (k-means, "
        "k = labels: NMI, ARI) and 1%-label tagging (logistic regression; label propagation for "
        "the image vectors). Labels only score. See scripts/eval_catalog.py for the protocol."
    )
    names = [*section["outliers"], "copy descriptor", VERIFIED]
    rows = []
    for name in names:
        dup = section["duplicates"].get(name, {})
        out = section["outliers"].get(name, {})
        clu = section["clusters"].get(name, {})
        few = section["few_labels"].get(name, {})
        rows.append(
            [
                name,
                *(
                    _fmt(v)
                    for v in (
                        dup.get("copy@1"),
                        dup.get("pair_f1"),
                        dup.get("calibrated_f1"),
                        out.get("auroc"),
                        clu.get("nmi"),
                        clu.get("ari"),
                        few.get("linear_accuracy"),
                        few.get("propagation_accuracy"),
                    )
                ),
            ]
        )
    doc.table(
        [
            "vectors",
            "copy@1",
            "pair F1",
            "pair F1 (no labels)",
            "outlier AUROC",
            "NMI",
            "ARI",
            "1% linear",
            "1% propagation",
        ],
        rows,
    )
    for key, alt in (
        ("catalog_curves", "duplicate precision/recall and outlier ROC"),
        ("catalog_confusion", "cluster confusion"),
    ):
        if key in figures:
            doc.image(figures[key], alt)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"
