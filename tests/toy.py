"""A small fixed catalog with two taste clusters, for tests and examples.

Items ``a0..a14`` are comedies, ``b0..b14`` dramas; users ``u0..u7`` watch comedies, ``u8..u15``
dramas, each on consecutive days. ``a-new`` and ``b-new`` have no interactions (cold).
"""

from __future__ import annotations

import pandas as pd

from recsys.model.data import CatalogData


def toy_catalog() -> CatalogData:
    items = []
    for group, genre in (("a", "Comedy"), ("b", "Drama")):
        for k in [*range(15), "new"]:
            items.append(
                {
                    "item_id": f"{group}{'-' if k == 'new' else ''}{k}",
                    "title": f"{genre} story {k}",
                    "image_path": None,
                    "in_stock": k != 3,
                    "year": 1990 + (k if k != "new" else 12) + (0 if group == "a" else 20),
                    "genres": genre if group == "a" else f"{genre}|Thriller",
                    "brand": f"{group}-brand",
                }
            )
    rows = []
    for user in range(16):
        group = "a" if user < 8 else "b"
        for step, k in enumerate(range(user % 3, 15, 2 + user % 2)):
            stamp = pd.Timestamp("2024-01-01") + pd.Timedelta(days=step)
            rows.append((f"u{user}", f"{group}{k}", "click", 1.0, stamp))
    interactions = pd.DataFrame(
        rows, columns=["user_id", "item_id", "event", "weight", "timestamp"]
    )
    kinds = {"year": "numeric", "genres": "multi", "brand": "categorical"}
    return CatalogData(items=pd.DataFrame(items), kinds=kinds, interactions=interactions)
