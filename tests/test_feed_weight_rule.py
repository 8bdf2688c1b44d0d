"""The feed weights' rule (``validation._feed_better``): a weight that ranks the validation
users' items significantly better counts even where the few users holding cold items out
make the mixed objective too noisy to say so, unless it loses on those cold items."""

from __future__ import annotations

import numpy as np

from recsys.model.validation import Scored, _better, _feed_better

USERS, HOLDING = 743, 103  # an electronics shop's validation users, those holding cold items


def scored(warm: np.ndarray, cold: np.ndarray) -> Scored:
    """As ``validation._scored``: the first ``HOLDING`` users hold cold items out, their cold
    recall counted users / holders times over in the objective."""
    per_user = warm.copy()
    per_user[:HOLDING] += cold * USERS / HOLDING
    return Scored(per_user, {}, warm, cold)


def test_a_gain_on_every_users_items_counts_through_a_noisy_cold_part():
    rng = np.random.default_rng(0)
    warm, cold = rng.random(USERS) * 0.4, (rng.random(HOLDING) < 0.1).astype(float)
    current = scored(warm, cold)
    gain = (rng.random(USERS) < 0.15).astype(float) * 0.25  # +0.0375 mean, many users
    noisy = cold.copy()  # as many holders' cold hits lost as found: the same mean
    hits, misses = np.flatnonzero(cold), np.flatnonzero(cold == 0)
    noisy[hits[:5]], noisy[misses[:5]] = 0.0, 1.0
    found = scored(warm + gain, noisy)
    assert not _better(found, current, 2.0)  # the mixed objective cannot tell
    assert _feed_better(found, current, 2.0)
    # the same gain that loses the cold items is refused
    lost = scored(warm + gain, np.zeros(HOLDING))
    assert not _feed_better(lost, scored(warm, np.ones(HOLDING) * 0.5), 2.0)
    # and nothing is gained from noise alone
    assert not _feed_better(scored(warm, noisy), current, 2.0)
