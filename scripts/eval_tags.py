"""Few-label tags on a trained bundle's item vectors: how right, and how honest the
confidence, with balanced, single and skewed labels.

    .venv/bin/python scripts/eval_tags.py \\
        --catalog demo var/artifacts/bundles/<version> var/data/fashion-shop/labels.csv \\
        [--catalog NAME BUNDLE LABELS ...] [--c 1 --c 100] [--seeds 3] [--json out.json]

``LABELS`` is a CSV ``item_id,label`` (a ``label_name`` column, as `recsys datasets prepare
fashion-shop` writes, is taken over ``label``) of the truth, used to draw the given labels
and to score the rest. Items are tagged from the bundle's fused vectors, as
`recsys catalog tag` tags them. Label draws (per seed):

* ``one``: one labelled item per label;
* ``five``: five per label;
* ``skewed``: 50 of the most common label, 2 of every other label but every third, which
  gets 1 (a team that labelled the kind it sells most).

Scores on the items not given, the mean over seeds: accuracy, balanced accuracy (the mean
of the labels' recalls: it falls to 1/labels when every item gets one label), mean
confidence, expected calibration error (10 bins) and log-loss of the true label. The
default ``TagConfig`` is one row; each ``--c`` adds a row with C fixed. Run it in two trees
(the code before and after a change) in one sitting to compare them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import pandas as pd

from recsys.catalog_intel import TagConfig, Tagger

DRAWS = ("one", "five", "skewed")


def load(bundle: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, label names) of the bundle's items the labels file names."""
    ids = np.load(bundle / "item_ids.npy", allow_pickle=False).astype(str)
    vectors = np.load(bundle / "item_vectors.npy", allow_pickle=False)
    table = pd.read_csv(labels, dtype=str)
    column = "label_name" if "label_name" in table else "label"
    truth = table.drop_duplicates("item_id").set_index("item_id")[column].reindex(ids)
    known = truth.notna().to_numpy()
    return vectors[known], truth[known].to_numpy(dtype=str)


def draw(truth: np.ndarray, how: str, seed: int) -> np.ndarray:
    """Rows given their label."""
    rng = np.random.default_rng(seed)
    names, counts = np.unique(truth, return_counts=True)
    order = names[np.argsort(-counts, kind="stable")]
    if how == "skewed":
        per = {name: 50 if k == 0 else (1 if k % 3 == 0 else 2) for k, name in enumerate(order)}
    else:
        per = dict.fromkeys(order, 1 if how == "one" else 5)
    return np.concatenate(
        [
            rng.choice(rows, min(per[name], len(rows)), replace=False)
            for name in order
            for rows in [np.flatnonzero(truth == name)]
        ]
    )


def scores(tagger: Tagger, truth: np.ndarray, judged: np.ndarray) -> dict:
    predicted, confidence = tagger.predictions_[judged], tagger.confidence_[judged]
    right = predicted == truth[judged]
    recalls = [right[truth[judged] == name].mean() for name in np.unique(truth[judged])]
    bins = np.minimum((confidence * 10).astype(int), 9)
    ece = sum(
        abs(right[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
        for b in np.unique(bins)
    )
    column = np.searchsorted(tagger.classes_, truth[judged])
    p_true = tagger.probabilities_[judged, column]
    return {
        "accuracy": float(right.mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "confidence": float(confidence.mean()),
        "ece": float(ece),
        "log_loss": float(-np.log(np.maximum(p_true, 1e-15)).mean()),
    }


@click.command()
@click.option(
    "--catalog",
    "catalogs",
    nargs=3,
    multiple=True,
    required=True,
    type=(
        str,
        click.Path(exists=True, file_okay=False, path_type=Path),
        click.Path(exists=True, dir_okay=False, path_type=Path),
    ),
    metavar="NAME BUNDLE LABELS",
    help="A catalog's name, a bundle folder and its truth labels CSV (repeatable).",
)
@click.option("--c", "fixed", type=float, multiple=True, help="Also C fixed at this value.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(catalogs, fixed: tuple[float, ...], seeds: int, json_path: Path | None) -> None:
    rows = []
    for name, bundle, labels in catalogs:
        vectors, truth = load(bundle, labels)
        click.echo(f"{name}: {len(truth)} items, {len(np.unique(truth))} labels", err=True)
        for how in DRAWS:
            for c in (None, *fixed):
                found, seconds, chosen = [], 0.0, []
                for seed in range(seeds):
                    given = draw(truth, how, seed)
                    labels_in = np.full(len(truth), None, dtype=object)
                    labels_in[given] = truth[given]
                    start = time.perf_counter()
                    tagger = Tagger(TagConfig(c=c)).fit(vectors, labels_in)
                    seconds += time.perf_counter() - start
                    found.append(scores(tagger, truth, np.setdiff1d(np.arange(len(truth)), given)))
                    chosen.append(tagger.c_)
                mean = {k: float(np.mean([f[k] for f in found])) for k in found[0]}
                row = {"catalog": name, "labels": how, "c": "chosen" if c is None else c,
                       "chosen_c": chosen, "seconds": seconds / seeds, **mean}  # fmt: skip
                rows.append(row)
                click.echo(
                    f"{name:6s} {how:6s} C {row['c']!s:>7s} acc {row['accuracy']:.3f} "
                    f"bal {row['balanced_accuracy']:.3f} conf {row['confidence']:.3f} "
                    f"ece {row['ece']:.3f} logloss {row['log_loss']:.3f} "
                    f"{row['seconds']:.1f}s C={chosen}"
                )
    if json_path is not None:
        json_path.write_text(json.dumps({"config": asdict(TagConfig()), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
