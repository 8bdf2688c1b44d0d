"""Train/test splits of a catalog's interactions: offline evaluation and training's validation.

- ``temporal``: each user's latest ``floor(holdout * n_user)`` interactions by time;
- ``time-cutoff``: one global time; everything at or after it is held out;
- ``random``: each user's ``floor(holdout * n_user)`` interactions drawn at random (seeded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.errors import InvalidInput

log = logging.getLogger(__name__)

SPLITS = ("temporal", "time-cutoff", "random")


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    # name, holdout, cutoff (ISO time or None), seed: what the report states.
    description: dict


def split_interactions(
    interactions: pd.DataFrame, name: str, holdout: float, seed: int, cutoff: str | None = None
) -> Split:
    """Dispatch to one of ``SPLITS``; see the module docstring."""
    if name not in SPLITS:
        raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")
    if name != "random":
        _require_timestamps(interactions, name)
    if name == "temporal":
        train, test = temporal_split(interactions, holdout)
    elif name == "time-cutoff":
        when = pd.Timestamp(cutoff) if cutoff else default_cutoff(interactions, holdout)
        train, test = time_cutoff_split(interactions, when)
        cutoff = when.isoformat()
    else:
        train, test = random_split(interactions, holdout, seed)
    description = {"name": name, "holdout": holdout, "cutoff": cutoff, "seed": seed}
    log.info("%s split: %d training, %d held-out interactions", name, len(train), len(test))
    return Split(train, test, description)


def validation_split(
    interactions: pd.DataFrame, share: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A validation slice that fits the data: each user's latest ``share`` when every event
    has a time (``temporal``), else a seeded random ``share`` per user (``random``)."""
    if interactions["timestamp"].notna().all():
        return temporal_split(interactions, share)
    return random_split(interactions, share, seed)


def temporal_split(interactions: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's latest ``floor(share * n_user)`` interactions by timestamp."""
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    return _hold_latest(ordered, share)


def time_cutoff_split(
    interactions: pd.DataFrame, cutoff: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interactions before ``cutoff`` train; those at or after it are held out."""
    held = pd.to_datetime(interactions["timestamp"]) >= cutoff
    return interactions[~held.to_numpy()], interactions[held.to_numpy()]


def default_cutoff(interactions: pd.DataFrame, holdout: float) -> pd.Timestamp:
    """The time before which a share ``1 - holdout`` of all interactions happened."""
    stamps = pd.to_datetime(interactions["timestamp"]).astype("datetime64[ns]")
    return pd.Timestamp(stamps.quantile(1.0 - holdout)).floor("s")


def random_split(
    interactions: pd.DataFrame, share: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``floor(share * n_user)`` random interactions per user; same seed, same split."""
    ordered = interactions.sort_values(["user_id", "item_id", "timestamp"], kind="stable")
    draw = np.random.default_rng(seed).random(len(ordered))
    ordered = ordered.iloc[np.lexsort((draw, ordered["user_id"].to_numpy()))]
    return _hold_latest(ordered, share)


def _hold_latest(ordered: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, held): the last ``floor(share * n_user)`` rows of each user in this order."""
    position = ordered.groupby("user_id").cumcount()
    size = ordered.groupby("user_id")["item_id"].transform("size")
    held = position >= size - np.floor(size * share)
    return ordered[~held], ordered[held]


def sample_users(interactions: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The interactions of a seeded sample of ``n`` users (all of them when fewer)."""
    users = interactions["user_id"].astype(str).unique()
    chosen = sample_positions(len(users), n, seed)
    if chosen is None:
        return interactions
    chosen = np.sort(users)[chosen]
    return interactions[interactions["user_id"].astype(str).isin(chosen).to_numpy()]


def sample_positions(count: int, n: int, seed: int) -> np.ndarray | None:
    """``sample_users``' draw: positions of its ``n`` users among the ``count`` users' ids
    sorted as strings; None when n covers them all. ``data.read_interactions`` draws the
    same users in SQL through it."""
    if n >= count:
        return None
    return np.random.default_rng(seed).choice(count, size=n, replace=False)


def _require_timestamps(interactions: pd.DataFrame, name: str) -> None:
    missing = int(pd.to_datetime(interactions["timestamp"]).isna().sum())
    if missing:
        raise InvalidInput(
            f"the {name} split orders interactions by time, but {missing} of them have no "
            "timestamp; ingest timestamps or use --split random"
        )
