"""The weights stage's choice of ALS's confidence form (issue 13): per catalog, on the
validation users, kept only when it measurably helps, and used by the catalog's own fit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recsys.model import validation
from recsys.model.cf import CFConfig, Confidence
from recsys.model.config import TrainConfig, WeightGrid
from recsys.model.training import fit_in_memory
from tests.toy import toy_catalog

CONFIG = TrainConfig(
    cf=CFConfig(factors=8, regularization=0.5),
    grid=WeightGrid(confidence_hu=(1.0, 4.0, 16.0), factors=(), min_users=2),
)


def _judged_by(monkeypatch, gains: dict[Confidence, np.ndarray]):
    """Validation recall of ALS alone: 0.2 per user plus ``gains`` of the model's form."""
    fitted = []

    def recall(cf, task):
        fitted.append(cf.confidence_)
        gain = gains.get(cf.confidence_, np.zeros(len(task.user_ids)))
        per_user = 0.2 + np.resize(gain, len(task.user_ids))
        return validation.Scored(per_user, {"recall@10": float(per_user.mean())})

    monkeypatch.setattr(validation, "_factor_recall", recall)
    return fitted


def _factors_judged_by(monkeypatch, gains: dict[int, np.ndarray]):
    """Validation recall of ALS alone: 0.2 per user plus ``gains`` of its factor count."""
    fitted = []

    def recall(cf, task):
        factors = cf.item_factors_.shape[1]
        fitted.append(factors)
        per_user = 0.2 + np.resize(gains.get(factors, np.zeros(1)), len(task.user_ids))
        return validation.Scored(per_user, {"recall@10": float(per_user.mean())})

    monkeypatch.setattr(validation, "_factor_recall", recall)
    return fitted


FACTORS = replace(CONFIG, grid=WeightGrid(factors=(16, 4), min_users=2))


def test_a_factor_count_that_ranks_better_is_chosen_and_fits_the_catalog(monkeypatch):
    fitted = _factors_judged_by(monkeypatch, {16: np.array([0.1])})
    result = fit_in_memory(toy_catalog(), FACTORS)
    assert fitted == [8, 16, 4]  # the config's first
    assert result.metrics["cf_factors"] == 16
    assert set(result.metrics["validation_als_recall@10"]) == {
        "scaled 1",
        "scaled 1, 16 factors",
        "scaled 1, 4 factors",
    }
    assert result.cf.item_factors_.shape[1] == 16  # the whole catalog's model
    assert FACTORS.cf.factors == 8  # the config is left as it was


def test_a_factor_count_within_noise_keeps_the_configs(monkeypatch):
    _factors_judged_by(monkeypatch, {16: np.array([0.3, -0.28])})
    result = fit_in_memory(toy_catalog(), FACTORS)
    assert result.metrics["cf_factors"] == 8
    assert result.cf.item_factors_.shape[1] == 8


def test_factors_given_on_the_command_line_are_pinned():
    from recsys.commands.model_options import model_args, train_config

    options = {
        "model": "als",
        "factors": 48,
        "iterations": 15,
        "event_weights": (),
        "half_life_days": 180.0,
        "crawler_share": 0.5,
        "image_method": "simclr",
        "image_epochs": 5,
        "image_time_budget": None,
    }
    chosen = train_config(options)
    pinned = train_config(options, given=["--factors"])
    assert chosen.grid.factors == (64,) and pinned.grid.factors == ()
    # the report's command reproduces either: a pinned count is written, a chosen one not
    assert "--factors" not in model_args(chosen)
    assert model_args(pinned)[2:4] == ["--factors", "48"]
    with pytest.raises(ValueError, match="whole numbers"):
        WeightGrid(factors=(0,))


def test_a_form_that_ranks_better_is_chosen_and_fits_the_catalog(monkeypatch):
    fitted = _judged_by(monkeypatch, {Confidence("hu", 4.0): np.array([0.1])})
    result = fit_in_memory(toy_catalog(), CONFIG)
    assert fitted == [Confidence("scaled", 1.0), *(Confidence("hu", a) for a in (1, 4, 16))]
    assert result.metrics["confidence"] == {"form": "hu", "alpha": 4.0}
    assert set(result.metrics["validation_als_recall@10"]) == {"scaled 1", "hu 1", "hu 4", "hu 16"}
    assert result.cf.confidence_ == Confidence("hu", 4.0)  # the whole catalog's model
    assert CONFIG.cf.alpha == 1.0  # the config is left as it was


def test_a_gain_within_noise_keeps_the_configs_form(monkeypatch):
    # +0.3 / -0.28 per user: a mean gain of 0.01 against a standard error near 0.07
    _judged_by(monkeypatch, {Confidence("hu", 16.0): np.array([0.3, -0.28])})
    result = fit_in_memory(toy_catalog(), CONFIG)
    assert result.metrics["confidence"] == {"form": "scaled", "alpha": 1.0}
    assert result.cf.confidence_ == Confidence("scaled", 1.0)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(
            cf=CFConfig(factors=8, regularization=0.5), grid=WeightGrid(factors=(), min_users=2)
        ),  # no candidates
        replace(CONFIG, cf=CFConfig(model="bpr", factors=8, iterations=20)),
    ],
    ids=["no candidates", "bpr"],
)
def test_without_candidates_or_als_only_the_configs_form_is_fitted(monkeypatch, config):
    fitted = _judged_by(monkeypatch, {})
    result = fit_in_memory(toy_catalog(), config)
    assert fitted == []  # nothing to compare: no validation fits beyond the one
    assert result.metrics["confidence"] == {"form": "scaled", "alpha": config.cf.alpha}
    assert "validation_als_recall@10" not in result.metrics
