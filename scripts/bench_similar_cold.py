"""Whether items without interactions reach other items' similar-items rows, and how good
those rows are, with the neighbour table built two ways from one trained bundle.

"feed vectors" searches the items as the serving index holds them (``item_vectors_``: a cold
item's blocks times the feed's cold scale; the only way before session 20), "surface
vectors" searches them as the similar surface now meets them
(``FusedModel.surface_item_vectors``: a cold item's content unscaled). Both tables are exact
top-``--k`` over the whole catalog for ``--items`` sampled query items, so the index's own
recall does not enter. Printed per way: the share of the catalog's cold items that appear in
any sampled row, the share of rows listing at least one cold item, and same-``--attribute``
precision@k for warm and cold query items (an attribute filter of the bundle, e.g. category).

    .venv/bin/python scripts/bench_similar_cold.py --database sqlite:///catalog.db \\
        --attribute category
"""

from __future__ import annotations

import argparse

import numpy as np

from recsys.catalog import connect
from recsys.model.bundle import load_active
from recsys.model.ranking import top_k_finite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="catalog URL; its active bundle")
    parser.add_argument("--attribute", required=True, help="a single-valued attribute filter")
    parser.add_argument("--items", type=int, default=2000, help="sampled query items")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rec = load_active(connect(args.database))
    fused = rec.fused
    if args.attribute not in rec.filters.postings:
        raise SystemExit(f"--attribute: the bundle filters on {', '.join(rec.filters.postings)}")
    labels = rec.filters.labels(args.attribute)
    codes = rec.filters._single_codes(args.attribute, labels)
    if codes is None:
        raise SystemExit(f"--attribute {args.attribute!r} has several values per item")
    cold = np.asarray(fused.cold_, dtype=bool)
    n = len(cold)
    print(
        f"{n} items, {int(cold.sum())} without interactions; cold scale {fused.cold_scale_}; "
        f"content scaled: {fused.content_cold_scaled}"
    )
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(n, min(args.items, n), replace=False)
    queries = fused.item_queries(rows)  # (Q, D)
    ways = {
        "feed vectors": np.asarray(fused.item_vectors_),
        "surface vectors": fused.surface_item_vectors(fused.item_blocks_, cold),
    }
    for name, vectors in ways.items():
        found = np.empty((len(rows), args.k), dtype=np.int64)
        for start in range(0, len(rows), 256):
            part = slice(start, start + 256)
            scores = queries[part] @ vectors.T  # (q, N)
            scores[np.arange(len(scores)), rows[part]] = -np.inf  # itself excluded
            found[part] = top_k_finite(scores, args.k)
        listed = found[found >= 0]
        same = codes[np.maximum(found, 0)] == codes[rows][:, None]
        precision = np.where(found >= 0, same, False).mean(axis=1)
        reached = np.unique(listed[cold[listed]])
        print(
            f"{name:>15}: cold items listed {len(reached)} "
            f"({len(reached) / max(cold.sum(), 1):.1%} of the cold items), "
            f"rows with a cold item {np.mean(cold[np.maximum(found, 0)].any(axis=1)):.3f}, "
            f"same-{args.attribute} P@{args.k}: warm queries {precision[~cold[rows]].mean():.4f}, "
            f"cold queries {precision[cold[rows]].mean():.4f}, all {precision.mean():.4f}"
        )


if __name__ == "__main__":
    main()
