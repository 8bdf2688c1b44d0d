"""The cold search's two ends (from the feed's blend, from the token term alone): when the
cold objective cannot tell them apart, the one ranking cold items better at the headline
cut-off is kept (``recsys.model.validation._pick_end``)."""

from __future__ import annotations

import numpy as np

from recsys.model.config import WeightGrid
from recsys.model.fusion import TOKENS
from recsys.model.validation import K, Scored, _cold_search, _pick_end

USERS = 200  # validation users holding cold items out


def _case(bias_at_cold_k: float, gain_at_headline: float):
    """The cold search on 200 users whose new items only the token term finds (any token
    weight gains 0.3 for half of them at both cut-offs). At ``grid.cold_k`` a blend with cf
    scores ``bias_at_cold_k`` more than the token term alone, inside a spread of 0.1 per user
    (a standard error of about 0.007: level); at the headline K the token term alone scores
    ``gain_at_headline`` more. -> (the feed weights, cold multipliers)."""
    rng = np.random.default_rng(0)
    warm = rng.random(USERS) * 0.2
    base, by_tokens = rng.random(USERS) * 0.3, rng.random(USERS) < 0.5
    spread = np.tile([0.05, -0.05], USERS // 2)  # mean exactly 0

    def evaluate(weights, cold_scale, k=K):
        cold = {b: weights.get(b, 0.0) * cold_scale.get(b, 1.0) for b in ("cf", TOKENS)}
        recall = base + 0.3 * by_tokens * (cold[TOKENS] > 0)
        if cold[TOKENS] > 0:
            alone = cold["cf"] == 0
            sign = -1.0 if alone else 1.0
            recall = recall + sign * spread
            if k == K:
                recall = recall + gain_at_headline * alone
            elif not alone:
                recall = recall + bias_at_cold_k
        return Scored(warm, {}, warm, np.clip(recall, 0.0, 1.0))

    weights, scale = {"cf": 1.0, TOKENS: 0.0}, {"cf": 1.0, TOKENS: 1.0}
    feed, cold_scale, _ = _cold_search(
        evaluate, weights, scale, evaluate(weights, scale), WeightGrid()
    )
    return {b: feed[b] * cold_scale[b] for b in ("cf", TOKENS)}


def test_level_ends_are_decided_at_the_headline_cut_off():
    # the blend is 0.002 ahead at cold_k (not significant), the token term alone 0.02 ahead
    # at K: the token term alone ranks new items (the raw cold_k mean kept the blend)
    cold = _case(bias_at_cold_k=0.002, gain_at_headline=0.02)
    assert cold["cf"] == 0 and cold[TOKENS] > 0


def test_the_blend_stays_when_the_headline_cut_off_does_not_prefer_the_token_term():
    cold = _case(bias_at_cold_k=0.002, gain_at_headline=-0.02)
    assert cold["cf"] > 0 and cold[TOKENS] > 0


def _scored(mean: float, sign: float = 1.0) -> Scored:
    """Per user ``mean`` +- 0.05 (``sign``: which half gets +): two of opposite signs differ
    by a paired standard error of about 0.007."""
    per_user = mean + sign * np.tile([0.05, -0.05], USERS // 2)
    return Scored(per_user, {}, per_user, per_user)


def test_a_significantly_better_end_is_kept_whatever_the_headline_cut_off_says():
    blend, alone = {"cf": 1.0, TOKENS: 0.1}, {"cf": 0.0, TOKENS: 0.1}
    headline = {repr(blend): _scored(0.05), repr(alone): _scored(0.2, -1)}  # alone far ahead at K
    asked = []

    def at_headline(cold_weights):
        asked.append(cold_weights)
        return headline[repr(cold_weights)]

    # at cold_k the blend is 0.05 ahead (about 7 standard errors): kept, K not consulted
    ends = [(blend, _scored(0.25)), (alone, _scored(0.20, -1))]
    assert _pick_end(ends, at_headline, 2.0) == blend
    # and the token term alone when it is the one significantly ahead
    ends = [(blend, _scored(0.20)), (alone, _scored(0.25, -1))]
    assert _pick_end(ends, at_headline, 2.0) == alone
    assert not asked
    # level at cold_k: K decides
    ends = [(blend, _scored(0.201)), (alone, _scored(0.200, -1))]
    assert _pick_end(ends, at_headline, 2.0) == alone


def test_pick_end_without_a_second_end_keeps_the_first():
    one = _scored(0.1)
    assert _pick_end([({"cf": 1.0}, one)], lambda _: one, 2.0) == {"cf": 1.0}
