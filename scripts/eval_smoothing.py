"""Clusters and few-label tags with and without neighbour smoothing, on labelled vectors.

What ``recsys.catalog_intel`` gains from averaging each item's vector over its neighbours
(``neighbours.smoothed``) and from k-means restarts, side by side in one run, on any of:

* ``--source fashion-mnist --model-dir DIR``: an image encoder's vectors of the 60k train
  images (clusters, k = 10 classes) and of train + test (tags: 60 labels a class from the
  train images, accuracy on the 10k test images, as ``scripts/eval_catalog.py``);
* ``--source openmoji --data-dir DIR --model-dir DIR``: the encoder's vectors of the emoji
  (clusters: k = the groups, and k = the subgroups; tags: ``--per-label`` labels a group,
  accuracy on the others);
* ``--source bundle --bundle DIR --labels CSV``: a trained bundle's fused vectors
  (``--block image`` etc. for one block), classes from a CSV ``item_id,label``.

Labels are used only to score. Clusters: NMI against the classes for each smoothing
(0, 1, 2 rounds) and restarts (3, 10), mean / min / max over ``--seeds`` seeds. Tags: linear
probe accuracy for each fixed smoothing and for the cross-validated choice (``TagConfig``
defaults), mean over the seeds' draws of labelled items.

    .venv/bin/python scripts/eval_smoothing.py --source fashion-mnist --model-dir /tmp/fm/model
    .venv/bin/python scripts/eval_smoothing.py --source bundle \\
        --bundle var/artifacts/bundles/<version> --labels var/data/fashion-shop/labels.csv
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.catalog_intel import ClusterConfig, Clusterer, TagConfig, Tagger, neighbours
from recsys.catalog_intel.neighbours import as_unit_vectors, smoothed

ROUNDS = (0, 1, 2)
RESTARTS = (3, 10)


def fashion_mnist(opts) -> dict:
    """{"clusters": [(name, vectors, classes)], "tags": (vectors, classes, pool, scored)}."""
    from eval_catalog import Encoder, load_data

    data = load_data(0, None, None)
    encoder = Encoder(opts["model_dir"], "cpu")
    train, test = encoder(data.train_x), encoder(data.test_x)
    catalog = np.concatenate([train, test])
    classes = np.r_[data.train_y, data.test_y]
    pool = np.arange(len(train))  # labels are drawn from the train images
    scored = np.arange(len(train), len(catalog))  # accuracy on the test images
    return {"clusters": [("class", train, data.train_y)], "tags": (catalog, classes, pool, scored)}


def openmoji(opts) -> dict:
    from eval_image_encoder import openmoji_task

    from recsys.vision import ImageEncoder

    if not opts["data_dir"]:
        raise click.UsageError("--source openmoji needs --data-dir (recsys datasets prepare)")
    task = openmoji_task(opts["data_dir"])
    vectors = ImageEncoder.load(opts["model_dir"], device="cpu").transform(task.gallery)
    labels = task.gallery_labels
    every = np.arange(len(vectors))
    return {
        "clusters": [(name, vectors, labels[name]) for name in ("group", "subgroup")],
        "tags": (vectors, labels["group"], every, None),
    }


def bundle(opts) -> dict:
    folder = Path(opts["bundle"])
    ids = np.load(folder / "item_ids.npy", allow_pickle=False).astype(str)
    if opts["block"] == "similar":  # the listing vectors (duplicates' space)
        from recsys.model.fusion import FusedModel

        vectors = FusedModel.load(folder).listing_vectors()
    else:
        name = "item_vectors.npy" if opts["block"] == "fused" else f"item_block_{opts['block']}.npy"
        vectors = np.load(folder / name, allow_pickle=False)
    table = pd.read_csv(opts["labels"], dtype=str).drop_duplicates("item_id")
    labels = table.set_index("item_id")["label"].reindex(ids)
    known = labels.notna().to_numpy()
    vectors, classes = vectors[known], pd.factorize(labels[known])[0]
    every = np.arange(len(vectors))
    return {"clusters": [("label", vectors, classes)], "tags": (vectors, classes, every, None)}


def cluster_rows(sets, seeds: int) -> list[dict]:
    rows = []
    for name, vectors, classes in sets:
        views = smoothed(as_unit_vectors(vectors), 10, max(ROUNDS), max_items=len(vectors))
        k = len(np.unique(classes))
        for rounds in ROUNDS:
            for restarts in RESTARTS:
                cfg = ClusterConfig(k=k, smoothing=0, n_init=restarts)
                nmi = [
                    normalized_mutual_info_score(
                        classes, Clusterer(replace(cfg, seed=s)).fit(views[rounds]).labels_
                    )
                    for s in range(seeds)
                ]
                rows.append(
                    {"labels": name, "k": k, "smoothing": rounds, "restarts": restarts,
                     "nmi_mean": float(np.mean(nmi)), "nmi_min": float(np.min(nmi)),
                     "nmi_max": float(np.max(nmi))}
                )  # fmt: skip
                click.echo(_line(rows[-1]))
    return rows


def tag_rows(vectors, classes, pool, scored, per_label: int, seeds: int) -> list[dict]:
    """Probe accuracy at each fixed smoothing and at the cross-validated choice."""
    rows = []
    for rounds in (*ROUNDS, None):
        accuracy, chosen = [], []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            given = np.concatenate(
                [
                    rng.choice(rows_of, min(per_label, len(rows_of)), replace=False)
                    for rows_of in (pool[classes[pool] == c] for c in np.unique(classes[pool]))
                ]
            )
            labels = np.full(len(vectors), None, dtype=object)
            labels[given] = classes[given].astype(str)
            tagger = Tagger(TagConfig(smoothing=rounds)).fit(vectors, labels)
            judged = scored if scored is not None else np.setdiff1d(pool, given)
            accuracy.append(
                float((tagger.predictions_[judged] == classes[judged].astype(str)).mean())
            )
            chosen.append(tagger.smoothing_)
        rows.append(
            {"smoothing": "chosen" if rounds is None else rounds, "per_label": per_label,
             "accuracy_mean": float(np.mean(accuracy)), "accuracy": accuracy, "chosen": chosen}
        )  # fmt: skip
        click.echo(_line(rows[-1]))
    return rows


def _line(row: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


@click.command()
@click.option("--source", type=click.Choice(["fashion-mnist", "openmoji", "bundle"]), required=True)
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--data-dir", default=None, help="OpenMoji folder (recsys datasets prepare).")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), default=None)
@click.option(
    "--block",
    default="fused",
    show_default=True,
    help="bundle: fused, image, tabular, ..., or similar (the listing vectors: the items as "
    "similar items compares them)",
)
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--per-label",
    type=click.IntRange(min=1),
    default=None,
    help="Labelled items per class for the tags [default: 60 on Fashion-MNIST, else 5].",
)
@click.option(
    "--exact-max",
    type=click.IntRange(min=0),
    default=None,
    help="Distinct vectors searched exhaustively (neighbours.EXACT_MAX; 0: the smoothing's "
    "graph from the approximate index whatever the catalog's size).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(**opts) -> None:
    """NMI of k-means and few-label probe accuracy, with and without neighbour smoothing."""
    if opts["exact_max"] is not None:
        neighbours.EXACT_MAX = opts["exact_max"]
    if opts["source"] != "bundle" and not opts["model_dir"]:
        raise click.UsageError(f"--source {opts['source']} needs --model-dir")
    if opts["source"] == "bundle" and not (opts["bundle"] and opts["labels"]):
        raise click.UsageError("--source bundle needs --bundle and --labels")
    load_before = os.getloadavg()
    found = {"fashion-mnist": fashion_mnist, "openmoji": openmoji, "bundle": bundle}[
        opts["source"]
    ](opts)
    per_label = opts["per_label"] or (60 if opts["source"] == "fashion-mnist" else 5)
    result = {
        "clusters": cluster_rows(found["clusters"], opts["seeds"]),
        "tags": tag_rows(*found["tags"], per_label, opts["seeds"]),
        "env": {"load_before": load_before, "load_after": os.getloadavg()},
        "options": opts,
    }
    if opts["json_path"]:
        Path(opts["json_path"]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
