"""The fused model against its parts: paired differences, their standard errors and the
level rule, and which contender each figure is compared with."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.parts import COLLABORATIVE, CONTENT, FUSED, LEVEL, against_parts, paired


def test_a_paired_difference_and_its_standard_error():
    fused = np.array([1.0, 0.0, 1.0, 1.0])
    other = np.array([0.0, 0.0, 1.0, 0.0])
    found = paired("ALS", fused, other)
    assert found.difference == pytest.approx(0.5) and found.users == 4
    # the per-user differences 1, 0, 0, 1: sample std 0.577, over sqrt(4)
    assert found.stderr == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)
    assert found.verdict == "ahead" and not found.significant  # 0.5 < 2 x 0.289
    one = paired("ALS", np.array([0.0]), np.array([1.0]))  # one user: no standard error
    assert one.verdict == "behind" and one.stderr == 0.0 and not one.significant


def test_within_the_level_below_is_level_and_further_is_behind():
    users = 1000
    other = np.zeros(users)
    slightly = np.zeros(users)
    slightly[: int(LEVEL * users) - 1] = -1.0  # just under LEVEL below
    assert paired("x", slightly, other).verdict == "level"
    further = np.zeros(users)
    further[:50] = -1.0
    found = paired("x", further, other)
    assert found.verdict == "behind" and found.difference == pytest.approx(-0.05)
    assert found.significant  # 0.05 against a standard error of 0.0069


def test_warm_is_compared_with_the_best_collaborative_and_cold_with_the_best_content():
    rng = np.random.default_rng(0)
    warm = {name: rng.random(50) for name in ("popularity", "ALS", "TF-IDF", "fused")}
    warm["ALS"] += 1.0  # the best warm figure of all, and collaborative
    warm["TF-IDF"] += 2.0  # better still, but content: not the warm comparison
    cold = {name: rng.random(8) for name in warm}
    cold["popularity"] += 3.0  # the best cold figure, but collaborative
    cold["TF-IDF"] += 1.0
    per_user = {name: (warm[name], cold[name]) for name in warm}
    kinds = {"popularity": COLLABORATIVE, "ALS": COLLABORATIVE, "TF-IDF": CONTENT}
    section = against_parts(per_user, {**kinds, "fused": FUSED}, 10)
    assert section["warm"]["part"] == "ALS" and section["cold"]["part"] == "TF-IDF"
    assert section["cold"]["users"] == 8
    assert section["warm"]["difference"] == pytest.approx(warm["fused"].mean() - warm["ALS"].mean())


def test_nothing_to_compare_without_cold_users_or_a_fused_model():
    per_user = {"ALS": (np.ones(5), np.zeros(0)), "fused": (np.ones(5), np.zeros(0))}
    section = against_parts(per_user, {"ALS": COLLABORATIVE, "fused": FUSED}, 10)
    assert section["warm"]["verdict"] == "level" and section["cold"] is None
    assert against_parts(per_user, {"ALS": COLLABORATIVE}, 10)["warm"] is None
