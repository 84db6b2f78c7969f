"""AMS/UMS and friends on hand-computed cases."""

import math

import numpy as np
import pytest

from side_engine import metrics
from side_engine.scorers import Band

SSCD = [Band("low", 0.4, 0.5), Band("mid", 0.5, 0.6), Band("high", 0.6, 1.0)]
PIXEL = [Band("low", 2 / 3, 1.0), Band("mid", 1 / 3, 2 / 3), Band("high", 0.0, 1 / 3)]


def test_band_edges_cosine_are_half_open_and_high_is_open_above():
    s = np.array([0.3999, 0.4, 0.4999, 0.5, 0.6, 1.0, 1.0000001])
    low = metrics.in_band(s, SSCD[0], SSCD, True)
    mid = metrics.in_band(s, SSCD[1], SSCD, True)
    high = metrics.in_band(s, SSCD[2], SSCD, True)
    assert low.tolist() == [False, True, True, False, False, False, False]
    assert mid.tolist() == [False, False, False, True, False, False, False]
    assert high.tolist() == [False, False, False, False, True, True, True]


def test_band_edges_pixel_ratio_lower_is_closer():
    r = np.array([0.0, 0.2, 1 / 3, 0.5, 2 / 3, 0.99, 1.0])
    assert metrics.in_band(r, PIXEL[2], PIXEL, False).tolist() == [True, True, False, False, False, False, False]
    assert metrics.in_band(r, PIXEL[1], PIXEL, False).tolist() == [False, False, True, True, False, False, False]
    assert metrics.in_band(r, PIXEL[0], PIXEL, False).tolist() == [False, False, False, False, True, True, False]
    assert metrics.at_least(r, PIXEL[0], False).tolist() == [True] * 6 + [False]


def test_ams_counts_best_similarity_per_generated_image():
    best = np.array([0.45, 0.55, 0.65, 0.1])
    rows = {r["band"]: r for r in metrics.band_table(best, np.array([0, 1, 2, 3]), np.zeros(0), np.zeros(0),
                                                      SSCD, True)}
    assert rows["low"]["ams"] == 0.25 and rows["mid"]["ams"] == 0.25 and rows["high"]["ams"] == 0.25
    assert rows["low"]["ams_cumulative"] == 0.75
    assert rows["mid"]["ams_cumulative"] == 0.5
    assert rows["high"]["ams_cumulative"] == 0.25


def test_ums_union_counts_every_in_band_training_image_once():
    # 4 generated images; pairs (sample, train, cos)
    pair_sample = np.array([0, 0, 1, 2, 3])
    pair_train = np.array([7, 8, 7, 9, 9])
    pair_score = np.array([0.65, 0.62, 0.7, 0.55, 0.45])
    best = np.array([0.65, 0.7, 0.55, 0.45])
    nearest = np.array([7, 7, 9, 9])
    union = {r["band"]: r for r in metrics.band_table(best, nearest, pair_train, pair_score, SSCD, True)}
    # high: training images 7 and 8 (8 is not anyone's nearest) -> 2 / 4
    assert union["high"]["ums"] == pytest.approx(2 / 4)
    assert union["mid"]["ums"] == pytest.approx(1 / 4)  # 9
    assert union["low"]["ums"] == pytest.approx(1 / 4)  # 9 again
    assert union["low"]["ums_cumulative"] == pytest.approx(3 / 4)  # 7, 8, 9
    nearest_only = {r["band"]: r for r in metrics.band_table(best, nearest, pair_train, pair_score, SSCD, True,
                                                             nearest_only=True)}
    assert nearest_only["high"]["ums"] == pytest.approx(1 / 4)  # only 7
    assert nearest_only["low"]["ums_cumulative"] == pytest.approx(2 / 4)  # 7, 9
    assert metrics.exposure(pair_sample, pair_train, pair_score, SSCD, True)[0]["train_idx"] == 7


def test_topk_mean_and_percentile_follow_closeness_direction():
    best = np.arange(1000) / 1000.0
    top = metrics.topk_mean(best, True)
    assert top[0.001] == pytest.approx(0.999)
    assert top[0.01] == pytest.approx(np.mean(best[-10:]))
    assert top[0.10] == pytest.approx(np.mean(best[-100:]))
    low = metrics.topk_mean(best, False)
    assert low[0.005] == pytest.approx(np.mean(best[:5]))
    assert metrics.topk_mean(np.array([0.3, 0.9]), True)[0.001] == pytest.approx(0.9)  # at least one image
    assert metrics.p95_closeness(best, True) == pytest.approx(np.percentile(best, 95))
    assert metrics.p95_closeness(best, False) == pytest.approx(np.percentile(best, 5))


def test_gu_fraction_ignores_undefined_ratios():
    assert metrics.gu_fraction(np.array([0.1, 0.5, np.nan, 0.3333])) == pytest.approx(2 / 3)
    assert math.isnan(metrics.gu_fraction(np.array([np.nan])))


def test_empty_inputs_give_zero_not_errors():
    rows = metrics.band_table(np.zeros(0), np.zeros(0, int), np.zeros(0), np.zeros(0), SSCD, True)
    assert all(r["ams"] == 0 and r["ums"] == 0 for r in rows)


def test_topk_mean_intervals_cover_the_estimate_and_narrow_with_more_images():
    from side_engine.metrics import topk_mean, topk_mean_intervals

    rng = np.random.default_rng(0)
    small, large = rng.uniform(0, 1, 200), rng.uniform(0, 1, 3200)
    for higher in (True, False):
        est = topk_mean(small, higher)[0.1]
        lo, hi = topk_mean_intervals(small, higher)[0.1]
        assert lo <= est <= hi and hi > lo
        lo2, hi2 = topk_mean_intervals(large, higher)[0.1]
        assert (hi2 - lo2) < (hi - lo) / 2  # ~1/sqrt(16) of the width
    assert topk_mean_intervals(small, True) == topk_mean_intervals(small, True)  # fixed seed: reproducible
    # the single closest image: a resample can only lose it, so the interval lies on one side of it
    lo, hi = topk_mean_intervals(small, False)[0.001]
    assert lo == pytest.approx(small.min()) and hi > lo
