"""The fused model against its own parts, paired per user: is its warm recall@k level with the
best collaborative contender's, and its cold-item recall@k with the best content contender's?

Every contender ranks the same users on the same split, so each comparison is the per-user
difference of one figure, fused minus part: its mean (the difference of the two means), and
its standard error, ``std(diff) / sqrt(n)``. The difference alone decides (within
``LEVEL`` below the part counts as level); the standard error says how much of it the split's
users can resolve. A gap of a few users' worth on a fixed test split is noise that no seed
averages away: the seeds change the models, not the held-out events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Below the part by at most this much counts as level.
LEVEL = 0.002
# Differences beyond this many standard errors are called significant.
Z = 2.0

COLLABORATIVE, CONTENT, FUSED = "collaborative", "content", "fused"


@dataclass(frozen=True)
class Comparison:
    part: str  # the contender compared with
    fused: float  # the fused model's mean
    other: float  # the part's mean
    difference: float  # fused minus part
    stderr: float  # of the per-user difference
    users: int
    verdict: str  # "ahead", "level" or "behind"
    significant: bool  # |difference| > Z standard errors


def verdict(difference: float, level: float = LEVEL) -> str:
    """The verdict on ``difference`` (fused minus part): "ahead" past ``level`` above,
    "behind" past ``level`` below, else "level"."""
    return "ahead" if difference > level else "behind" if difference < -level else "level"


def paired(name: str, fused: np.ndarray, other: np.ndarray) -> Comparison:
    """``fused`` against ``other``: (n,) per-user values of one figure, the same users."""
    diff = np.asarray(fused, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    n = len(diff)
    mean = float(diff.mean()) if n else 0.0
    stderr = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return Comparison(
        part=name,
        fused=float(np.mean(fused)) if n else 0.0,
        other=float(np.mean(other)) if n else 0.0,
        difference=mean,
        stderr=stderr,
        users=n,
        verdict=verdict(mean),
        significant=n > 1 and abs(mean) > Z * stderr,  # one user has no standard error
    )


def against_parts(per_user: dict[str, tuple], kinds: dict[str, str], k: int) -> dict:
    """The fused model's warm recall@k against the best collaborative contender's and its
    cold-item recall@k against the best content contender's (best by their means).

    ``per_user``: contender -> (warm (U,), cold (H,)), as ``protocol.recall_per_user``
    returns them; ``kinds``: contender -> ``COLLABORATIVE``, ``CONTENT`` or ``FUSED``.
    -> {"k", "level", "z", "warm": Comparison fields or None, "cold": ... or None}."""
    fused = next((n for n, kind in kinds.items() if kind == FUSED), None)
    section: dict = {"k": k, "level": LEVEL, "z": Z, "warm": None, "cold": None}
    if fused is None:
        return section
    for key, position, kind in (("warm", 0, COLLABORATIVE), ("cold", 1, CONTENT)):
        parts = {
            n: per_user[n][position]
            for n, found in kinds.items()
            if found == kind and len(per_user[n][position])
        }
        if not parts or not len(per_user[fused][position]):
            continue
        best = max(parts, key=lambda n: float(parts[n].mean()))
        section[key] = asdict(paired(best, per_user[fused][position], parts[best]))
    return section
