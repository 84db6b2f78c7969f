"""Band membership, AMS/UMS (as the metrics stage computes them) and the other measures, on hand-computed cases."""

import math

import numpy as np
import pytest

from side_engine import measures
from side_engine.results import arm, band_masks
from side_engine.scorers import Band

SSCD = [Band("low", 0.4, 0.5), Band("mid", 0.5, 0.6), Band("high", 0.6, 1.0)]
PIXEL = [Band("low", 2 / 3, 1.0), Band("mid", 1 / 3, 2 / 3), Band("high", 0.0, 1 / 3)]


def test_band_edges_cosine_are_half_open_and_high_is_open_above():
    s = np.array([0.3999, 0.4, 0.4999, 0.5, 0.6, 1.0, 1.0000001])
    low = measures.in_band(s, SSCD[0], SSCD, True)
    mid = measures.in_band(s, SSCD[1], SSCD, True)
    high = measures.in_band(s, SSCD[2], SSCD, True)
    assert low.tolist() == [False, True, True, False, False, False, False]
    assert mid.tolist() == [False, False, False, True, False, False, False]
    assert high.tolist() == [False, False, False, False, True, True, True]


def test_band_edges_pixel_ratio_lower_is_closer():
    r = np.array([0.0, 0.2, 1 / 3, 0.5, 2 / 3, 0.99, 1.0])
    assert measures.in_band(r, PIXEL[2], PIXEL, False).tolist() == [True, True, False, False, False, False, False]
    assert measures.in_band(r, PIXEL[1], PIXEL, False).tolist() == [False, False, True, True, False, False, False]
    assert measures.in_band(r, PIXEL[0], PIXEL, False).tolist() == [False, False, False, False, True, True, False]
    assert measures.at_least(r, PIXEL[0], False).tolist() == [True] * 6 + [False]


def _rates(best, nearest, pair_sample, pair_train, pair_score, nearest_only=False) -> dict:
    """{(band, cumulative): (AMS, UMS)} of one (method, λ), through the stage's own code path."""
    data = {"index": np.arange(len(best)), "best": np.asarray(best, float), "nearest": np.asarray(nearest),
            "pair_index": np.asarray(pair_sample), "pair_train": np.asarray(pair_train),
            "pair_score": np.asarray(pair_score, float)}
    out = {}
    for name, cumulative, mask in band_masks(SSCD, True):
        a = arm(data, mask, None, nearest_only)
        out[name, cumulative] = (a.ams(), a.ums())
    return out


def test_ams_counts_best_similarity_per_generated_image():
    rates = _rates([0.45, 0.55, 0.65, 0.1], [0, 1, 2, 3], [], [], [])
    assert rates["low", False][0] == 0.25 and rates["mid", False][0] == 0.25 and rates["high", False][0] == 0.25
    assert rates["low", True][0] == 0.75
    assert rates["mid", True][0] == 0.5
    assert rates["high", True][0] == 0.25


def test_ums_union_counts_every_in_band_training_image_once():
    # 4 generated images; pairs (sample, train, cos)
    pair_sample = np.array([0, 0, 1, 2, 3])
    pair_train = np.array([7, 8, 7, 9, 9])
    pair_score = np.array([0.65, 0.62, 0.7, 0.55, 0.45])
    best = np.array([0.65, 0.7, 0.55, 0.45])
    nearest = np.array([7, 7, 9, 9])
    union = _rates(best, nearest, pair_sample, pair_train, pair_score)
    # high: training images 7 and 8 (8 is not anyone's nearest) -> 2 / 4
    assert union["high", False][1] == pytest.approx(2 / 4)
    assert union["mid", False][1] == pytest.approx(1 / 4)  # 9
    assert union["low", False][1] == pytest.approx(1 / 4)  # 9 again
    assert union["low", True][1] == pytest.approx(3 / 4)  # 7, 8, 9
    nearest_only = _rates(best, nearest, pair_sample, pair_train, pair_score, nearest_only=True)
    assert nearest_only["high", False][1] == pytest.approx(1 / 4)  # only 7
    assert nearest_only["low", True][1] == pytest.approx(2 / 4)  # 7, 9
    assert measures.exposure(pair_sample, pair_train, pair_score, SSCD, True)[0]["train_idx"] == 7


def test_topk_mean_and_percentile_follow_closeness_direction():
    best = np.arange(1000) / 1000.0
    top = measures.topk_mean(best, True)
    assert top[0.001] == pytest.approx(0.999)
    assert top[0.01] == pytest.approx(np.mean(best[-10:]))
    assert top[0.10] == pytest.approx(np.mean(best[-100:]))
    low = measures.topk_mean(best, False)
    assert low[0.005] == pytest.approx(np.mean(best[:5]))
    assert measures.topk_mean(np.array([0.3, 0.9]), True)[0.001] == pytest.approx(0.9)  # at least one image
    assert measures.p95_closeness(best, True) == pytest.approx(np.percentile(best, 95))
    assert measures.p95_closeness(best, False) == pytest.approx(np.percentile(best, 5))


def test_gu_fraction_ignores_undefined_ratios():
    assert measures.gu_fraction(np.array([0.1, 0.5, np.nan, 0.3333])) == pytest.approx(2 / 3)
    assert math.isnan(measures.gu_fraction(np.array([np.nan])))


def test_an_empty_arm_has_no_rate_rather_than_a_zero_one():
    rates = _rates([], [], [], [], [])
    assert all(math.isnan(a) and math.isnan(u) for a, u in rates.values())


def test_topk_mean_intervals_cover_the_estimate_narrow_with_more_images_and_skip_small_tails():
    from side_engine.measures import topk_mean
    from side_engine.statistics import TOPK_MIN, topk_mean_intervals

    rng = np.random.default_rng(0)
    small, large = rng.uniform(0, 1, 10 * TOPK_MIN), rng.uniform(0, 1, 160 * TOPK_MIN)
    for higher in (True, False):
        est = topk_mean(small, higher)[0.1]
        lo, hi = topk_mean_intervals(small, higher)[0.1]
        assert lo <= est <= hi and hi > lo
        lo2, hi2 = topk_mean_intervals(large, higher)[0.1]
        assert (hi2 - lo2) < (hi - lo) / 2  # ~1/sqrt(16) of the width
    again, once = topk_mean_intervals(small, True), topk_mean_intervals(small, True)  # deterministic
    assert again.keys() == once.keys() and all(np.allclose(again[k], once[k], equal_nan=True) for k in again)
    # the closest 1 of 1 000 (and 5, 10, 50): a resample can only lose them, and such intervals
    # under-cover, so none is given
    for f in (0.001, 0.005, 0.01, 0.05):
        assert all(math.isnan(v) for v in topk_mean_intervals(small, False)[f])
