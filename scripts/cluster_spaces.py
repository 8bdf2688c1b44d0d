"""Which item vectors should catalog clusters read? The fused ones or the listing vectors.

For the active bundle of a catalog, clusters each space at `recsys catalog clusters`'s
defaults (``ClusterConfig()``: k by silhouette, two rounds of neighbour smoothing) and at k =
the number of classes, and reports side by side:

* how the most-viewed 1% of the items (by events in the bundle) spread over the clusters:
  the largest share of them in one cluster, and that cluster's share of the catalog (a
  cluster of popular items, not of a kind of item, holds many of them and few items);
* NMI against classes read from the catalog: ``--attribute NAME`` (a multi-valued attribute's
  first value; ``--level N`` keeps the N-th part of a ``/``-separated value, e.g. the
  department of ``women/tops/blouse``) or ``--labels CSV`` (``item_id,label``).

The spaces: the fused item vectors (what clusters and tags read) and
``FusedModel.listing_vectors`` (what duplicates and outliers read).

    .venv/bin/python scripts/cluster_spaces.py --database-url URL --attribute category --level 1
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score
from sqlalchemy import select

from recsys.catalog import connect
from recsys.catalog.models import Item
from recsys.catalog_intel import ClusterConfig, Clusterer
from recsys.model.bundle import load_active


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--attribute", help="the classes: this attribute of each item")
    group.add_argument("--labels", help="the classes: a CSV item_id,label")
    parser.add_argument("--level", type=int, help="with --attribute: part N of a/b/c values")
    parser.add_argument("--seeds", type=int, default=2, help="k-means seeds, each reported")
    args = parser.parse_args()
    engine = connect(args.database_url)
    recommender = load_active(engine)
    ids = recommender.item_ids
    if args.labels:
        table = pd.read_csv(args.labels, dtype=str).drop_duplicates("item_id")
        classes = table.set_index("item_id")["label"].reindex(ids).to_numpy()
    else:
        classes = attribute_classes(engine, ids, args.attribute, args.level)
    views = np.asarray(recommender.cf.user_items_.getnnz(axis=0))
    popular = np.argsort(-views, kind="stable")[: max(1, len(ids) // 100)]
    fused = recommender.fused
    spaces = {"fused item vectors": fused.item_vectors_, "listing vectors": fused.listing_vectors()}
    known = pd.notna(classes)
    n_classes = len(pd.unique(classes[known]))
    report = {"items": len(ids), "classified": int(known.sum()), "classes": n_classes}
    for name, vectors in spaces.items():
        vectors = np.asarray(vectors, dtype=np.float32)
        report[name] = [
            scored(vectors, classes, known, popular, k, seed)
            for k in (None, n_classes)
            for seed in range(args.seeds)
        ]
    print(json.dumps(report, indent=1))


def attribute_classes(engine, ids, attribute: str, level: int | None) -> np.ndarray:
    """Each item's class from its ``attribute`` (first value of a list; ``level``: that part
    of a ``/``-separated value); None where it has none."""
    with engine.connect() as connection:
        rows = connection.execute(select(Item.external_id, Item.attributes)).all()
    found = {}
    for item_id, attributes in rows:
        value = (attributes or {}).get(attribute)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, str) and level is not None:
            parts = value.split("/")
            value = parts[level] if level < len(parts) else None
        found[item_id] = value if value not in ("", []) else None
    return np.array([found.get(item_id) for item_id in ids.tolist()], dtype=object)


def scored(vectors, classes, known, popular, k: int | None, seed: int) -> dict:
    """Clusters of ``vectors`` at the defaults but ``k`` and ``seed``: where the popular items
    fall, and NMI against the classes of the ``known`` items."""
    fitted = Clusterer(ClusterConfig(k=k, seed=seed), show_progress=False).fit(vectors)
    sizes = np.bincount(fitted.labels_, minlength=fitted.k_) / len(vectors)
    held = np.bincount(fitted.labels_[popular], minlength=fitted.k_) / len(popular)
    fullest = int(held.argmax())
    nmi = normalized_mutual_info_score(classes[known].astype(str), fitted.labels_[known])
    return {
        "k": fitted.k_,
        "seed": seed,
        "most-viewed 1% in one cluster": round(float(held[fullest]), 3),
        "that cluster's share of the items": round(float(sizes[fullest]), 3),
        "nmi": round(float(nmi), 4),
    }


if __name__ == "__main__":
    main()
