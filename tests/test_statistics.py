"""Intervals and paired tests on hand-computed cases."""

import math

import numpy as np
import pytest

from side_engine.statistics import (
    Arm,
    budgets_for,
    clopper_pearson,
    coverage_curve,
    holm,
    mcnemar_exact,
    paired_comparison,
    rate_intervals,
    wilson,
)


def test_wilson_interval_matches_hand_computed_values():
    # 0 / 10: the upper end is z^2 / (n + z^2)
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(1.959964**2 / (10 + 1.959964**2), rel=1e-6)
    lo, hi = wilson(5, 10)  # symmetric around 1/2
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)
    # 15 / 100: centre (0.15 + z²/200) / (1 + z²/100) = 0.16295, half-width 0.06989
    lo, hi = wilson(15, 100)
    assert lo == pytest.approx(0.09306, abs=1e-5) and hi == pytest.approx(0.23284, abs=1e-5)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_discordant_pairs():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # thousands of discordant pairs (50 000 samples a λ): 2**n overflowed a float; the values are
    # scipy.stats.binomtest's two-sided p
    assert mcnemar_exact(600, 500) == pytest.approx(0.00281954499143643, rel=1e-9)
    assert mcnemar_exact(20000, 19000) == pytest.approx(4.216841447373e-07, rel=1e-6)
    assert mcnemar_exact(5000, 5100) == pytest.approx(0.324581546331, rel=1e-6)


def test_holm_adjusts_in_rank_order_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    out = holm([0.2, math.nan, 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def _unique_arm(n):
    """Every generated image hits its own training image."""
    return Arm(np.ones(n, bool), np.arange(n), np.arange(n))


def test_ums_bootstrap_of_all_distinct_hits_centres_on_one_minus_one_over_e():
    arm = _unique_arm(200)
    assert arm.ums() == 1.0
    assert np.allclose(arm.ums_resampled(np.ones((3, 200), np.int32)), 1.0)  # every image drawn once
    counts = np.zeros((1, 200), np.int32)
    counts[0, :50] = 4  # a quarter drawn: a quarter of the training images reached
    assert arm.ums_resampled(counts)[0] == pytest.approx(0.25)
    # a raw bootstrap draw reaches only about 1 - 1/e of the distinct images, with the occupancy
    # variance n (1/e - 2/e^2): the interval is that spread, shifted onto the estimate
    r = rate_intervals(arm)
    sd = math.sqrt(200 * (math.exp(-1) - 2 * math.exp(-2))) / 200
    assert r["ums_lo"] == pytest.approx(1 - 1.96 * sd, abs=0.006)
    assert r["ums_lo"] < r["ums"] <= r["ums_hi"]
    assert r["ams"] == 1.0 and r["ams_hi"] == 1.0


def test_ums_counts_a_training_image_once_however_many_images_hit_it():
    arm = Arm(np.array([True, True, True, False]), np.array([0, 1, 2, 2]), np.array([7, 7, 7, 3]))
    assert arm.ums() == pytest.approx(2 / 4)
    counts = np.array([[1, 1, 0, 2], [0, 0, 1, 0]], np.int32)  # image 2 drawn only in the second
    assert arm.ums_resampled(counts) == pytest.approx([1 / 4, 2 / 4])


def test_paired_comparison_of_identical_arms_shows_no_difference():
    rng = np.random.default_rng(0)
    hit = rng.random(100) < 0.2
    arm = Arm(hit, np.flatnonzero(hit), rng.integers(0, 30, hit.sum()))
    c = paired_comparison([arm], arm)
    assert c["ams_discordant"] == [0, 0] and c["ams_p"] == 1.0
    assert c["ams_diff"] == 0 and c["ams_diff_lo"] == 0 and c["ams_diff_hi"] == 0
    assert c["ums_ratio"] == 1.0 and c["ums_ratio_lo"] == 1.0 and c["ums_ratio_hi"] == 1.0
    assert c["ums_p"] == 1.0


def test_paired_comparison_finds_a_clear_gain_and_its_mcnemar_counts():
    n = 200
    rnd = np.zeros(n, bool)
    rnd[:10] = True  # Random: 5 %
    side = rnd.copy()
    side[10:50] = True  # the method hits 40 more, loses none
    r_arm = Arm(rnd, np.flatnonzero(rnd), np.flatnonzero(rnd) % 5)
    m_arm = Arm(side, np.flatnonzero(side), np.flatnonzero(side))
    c = paired_comparison([m_arm], r_arm)
    assert c["ams_discordant"] == [40, 0]
    assert c["ams_p"] == pytest.approx(2 * 0.5**40)
    assert c["ams_ratio"] == pytest.approx(5.0) and c["ams_ratio_lo"] > 1
    assert c["ums_method"] == pytest.approx(50 / n) and c["ums_random"] == pytest.approx(5 / n)
    assert c["ums_diff_lo"] > 0 and c["ums_p"] < 0.01
    # two λ of a range: the method's rate is their mean, tested by the paired bootstrap
    c2 = paired_comparison([m_arm, r_arm], r_arm)
    assert c2["ams_method"] == pytest.approx((50 + 10) / 2 / n) and c2["ams_test"] == "paired bootstrap"
    with pytest.raises(ValueError):
        paired_comparison([_unique_arm(10)], _unique_arm(11))


def test_coverage_at_equal_budget_counts_distinct_training_images():
    n = 64
    rnd = Arm(np.ones(n, bool), np.arange(n), np.zeros(n, np.int64))  # Random finds image 0 only
    side = Arm(np.ones(n, bool), np.arange(n), np.arange(n) % 8 + 1)  # the method finds 8 others
    pts = coverage_curve(rnd, side, [8, 64], resamples=50)
    assert [p["budget"] for p in pts] == [8, 64]
    assert all(p["random"] == 1 for p in pts)
    # 32 Random draws reach image 0; 32 method draws (with replacement) miss each of the 8
    # others with probability (7/8)^32
    assert pts[1]["mixed"] == pytest.approx(1 + 8 * (1 - (7 / 8) ** 32), abs=0.15)
    assert pts[1]["mixed_hi"] == 9 and pts[1]["method"] > pts[1]["mixed"] - 1
    assert pts[0]["random_lo"] <= pts[0]["random"] <= pts[0]["random_hi"]
    assert budgets_for(100) == [8, 16, 32, 64, 100] and budgets_for(8) == [8]


def test_a_count_the_bootstrap_cannot_spread_gets_its_exact_interval_never_a_certain_zero():
    """64 samples with no in-band pair can only say "at most a few percent": UMS's interval is
    then the exact one of its count (Clopper–Pearson), not the bootstrap's [0, 0]; so is the
    interval of samples that all reach the same single image (every resample reaches it)."""
    n = 64
    assert clopper_pearson(0, n) == (0.0, pytest.approx(1 - 0.025 ** (1 / n)))  # 5.6 %
    lo, hi = clopper_pearson(5, n)  # scipy.stats.beta.ppf(0.025, 5, 60), (0.975, 6, 59)
    assert lo == pytest.approx(0.025854, abs=1e-6) and hi == pytest.approx(0.172978, abs=1e-6)
    assert clopper_pearson(n, n) == (pytest.approx(0.025 ** (1 / n)), 1.0)
    none = Arm(np.zeros(n, bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
    r = rate_intervals(none)
    assert r["ums"] == 0 and r["ums_lo"] == 0 and r["ums_hi"] == pytest.approx(1 - 0.025 ** (1 / n))
    assert r["ams_hi"] > 0  # Wilson's, as before
    one = Arm(np.ones(n, bool), np.arange(n), np.zeros(n, np.int64))  # every sample, the same image
    r = rate_intervals(one)
    assert r["ums"] == pytest.approx(1 / n) and (r["ums_lo"], r["ums_hi"]) == pytest.approx(clopper_pearson(1, n))
    c = paired_comparison([none], none)  # and in the paired comparison's per-arm intervals
    assert c["ums_method_hi"] == c["ums_random_hi"] == pytest.approx(1 - 0.025 ** (1 / n))
    some = _unique_arm(n)
    c = paired_comparison([some], none)
    assert c["ums_random_hi"] > 0 and c["ums_method_lo"] < c["ums_method_hi"]
