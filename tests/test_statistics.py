"""Intervals and paired tests on hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import special, stats

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


def test_ums_interval_of_all_distinct_hits_is_the_jackknife_of_the_distinct_count():
    """Each of 200 images found once: leaving any generated image out loses one training image,
    so the jackknife variance is the number found once (200, an upper bound of the count's
    variance), raised to its one-sided Poisson upper bound (one standard error above)."""
    arm = _unique_arm(200)
    assert arm.ums() == 1.0 and arm.sole_finds().tolist() == [1] * 200
    r = rate_intervals(arm)
    upper = special.gammaincinv(201, stats.norm.cdf(1))  # ≈ 214.6: scipy's Poisson upper bound of 200
    half = 1.959964 * math.sqrt(upper) / 200
    assert r["ums_lo"] == pytest.approx(1 - half, abs=1e-6) and r["ums_hi"] == pytest.approx(1 + half, abs=1e-6)
    assert r["ums_method"] == "jackknife"
    assert r["ams"] == 1.0 and r["ams_hi"] == 1.0 and r["ams_lo"] == pytest.approx(0.025 ** (1 / 200))


def test_sole_finds_count_the_images_only_one_generated_image_reached():
    # image 7 by positions 0-2, image 3 by 2 only, image 5 by 3 only; position 3 also reaches 9 alone
    arm = Arm(np.array([True, True, True, True]), np.array([0, 1, 2, 2, 3, 3]), np.array([7, 7, 7, 3, 5, 9]))
    assert arm.sole_finds().tolist() == [0, 0, 1, 2]
    assert arm.distinct() == 4


def test_ums_counts_a_training_image_once_however_many_images_hit_it():
    arm = Arm(np.array([True, True, True, False]), np.array([0, 1, 2, 2]), np.array([7, 7, 7, 3]))
    assert arm.ums() == pytest.approx(2 / 4)
    counts = np.array([[1, 1, 0, 2], [0, 0, 1, 0]], np.int32)  # image 2 drawn only in the second
    assert arm.ums_resampled(counts) == pytest.approx([1 / 4, 2 / 4])


def test_paired_comparison_of_identical_arms_shows_no_difference_and_no_certain_ratio():
    rng = np.random.default_rng(0)
    hit = rng.random(100) < 0.2
    arm = Arm(hit, np.flatnonzero(hit), rng.integers(0, 30, hit.sum()))
    c = paired_comparison([arm], arm)
    assert c["ams_discordant"] == [0, 0] and c["ams_p"] == 1.0 and c["ams_test"] == "McNemar exact"
    assert c["ams_diff"] == 0
    for key in ("ams", "ums"):  # the ratio is 1, its interval around it, never a certain [1, 1]
        assert c[f"{key}_ratio"] == 1.0 and c[f"{key}_ratio_lo"] < 1 < c[f"{key}_ratio_hi"]
        assert c[f"{key}_p"] == 1.0


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
    assert c["ams_ratio"] == pytest.approx(5.0) and 1 < c["ams_ratio_lo"] < 5 <= c["ams_ratio_hi"]
    assert c["ums_method"] == pytest.approx(50 / n) and c["ums_random"] == pytest.approx(5 / n)
    # Random's 5 images were each found twice (no sole find): its variance is the Poisson upper
    # bound of none found once (1.84), with no credit for pairing
    assert c["ums_test"] == "paired jackknife (log ratio)" and c["ums_ratio_lo"] > 1 and c["ums_p"] < 0.01
    # two λ of a range: the method's rate is their mean, compared by the paired jackknife
    c2 = paired_comparison([m_arm, r_arm], r_arm)
    assert c2["ams_method"] == pytest.approx((50 + 10) / 2 / n) and c2["ams_test"].startswith("paired jackknife")
    with pytest.raises(ValueError):
        paired_comparison([_unique_arm(10)], _unique_arm(11))


@pytest.mark.parametrize("seed", range(40))
def test_a_verdict_and_its_interval_come_from_one_computation(seed):
    """Whatever the counts: the ratio's interval holds its estimate, and it excludes 1 exactly
    when p < 0.05 (AMS of one λ: McNemar; UMS and ranges: the jackknife or the exact route)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    arms = []
    for rate, pool in ((rng.uniform(0.01, 0.4), int(rng.integers(3, 300))), (rng.uniform(0.01, 0.4), 50)):
        hit = rng.random(n) < rate
        arms.append(Arm(hit, np.flatnonzero(hit), rng.integers(0, pool, hit.sum())))
    for c in (paired_comparison([arms[0]], arms[1]), paired_comparison(arms, arms[1])):
        for key in ("ams", "ums"):
            lo, hi, p = c[f"{key}_ratio_lo"], c[f"{key}_ratio_hi"], c[f"{key}_p"]
            if math.isnan(c[f"{key}_ratio"]):
                continue
            assert lo <= c[f"{key}_ratio"] <= hi
            assert (p < 0.05) == (lo > 1 or hi < 1), (key, c[f"{key}_test"], lo, hi, p)


def test_coverage_at_equal_budget_is_the_exact_interpolation_with_a_new_audits_range():
    n = 64
    rnd = Arm(np.ones(n, bool), np.arange(n), np.zeros(n, np.int64))  # Random finds image 0 only
    side = Arm(np.ones(n, bool), np.arange(n), np.arange(n) % 8 + 1)  # the method finds 8 others
    pts = coverage_curve(rnd, side, [8, 64])
    assert [p["budget"] for p in pts] == [8, 64]
    assert all(p["random"] == 1 for p in pts)
    # 8 of 64 drawn without replacement miss one of the 8 images (each found 8 times) with
    # probability C(56, 8) / C(64, 8)
    assert pts[0]["method"] == pytest.approx(8 * (1 - math.comb(56, 8) / math.comb(64, 8)))
    half = 1 - math.comb(56, 32) / math.comb(64, 32)  # 32 of 64 drawn reach one of the 8
    assert pts[1]["method"] == 8 and pts[1]["mixed"] == pytest.approx(1 + 8 * half)
    for p in pts:  # found eight times or more: counted; the range allows for images not found
        for key in ("random", "method", "mixed"):
            assert p[f"{key}_lo"] <= p[key] < p[f"{key}_hi"]
    assert budgets_for(100) == [8, 16, 32, 64, 100] and budgets_for(8) == [8]


def test_a_count_with_few_finds_never_reads_as_certain():
    """64 samples with no in-band pair can only say "at most a few": no image found once is read
    as its Poisson upper bound, 1.84 (one standard error above 0), so UMS reads 0 to 2.7 images
    out of 64, never a certain zero; so does one image that every sample reached."""
    n = 64
    assert clopper_pearson(0, n) == (0.0, pytest.approx(1 - 0.025 ** (1 / n)))  # 5.6 %
    lo, hi = clopper_pearson(5, n)  # scipy.stats.beta.ppf(0.025, 5, 60), (0.975, 6, 59)
    assert lo == pytest.approx(0.025854, abs=1e-6) and hi == pytest.approx(0.172978, abs=1e-6)
    assert clopper_pearson(n, n) == (pytest.approx(0.025 ** (1 / n)), 1.0)
    half = 1.959964 * math.sqrt(special.gammaincinv(1, stats.norm.cdf(1)))  # -ln(0.1587) = 1.84
    none = Arm(np.zeros(n, bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
    r = rate_intervals(none)
    assert r["ums"] == 0 and r["ums_lo"] == 0 and r["ums_hi"] == pytest.approx(half / n, rel=1e-5)
    assert r["ams_hi"] > 0
    one = Arm(np.ones(n, bool), np.arange(n), np.zeros(n, np.int64))  # every sample, the same image
    r = rate_intervals(one)
    assert r["ums"] == pytest.approx(1 / n) and r["ums_hi"] == pytest.approx((1 + half) / n, rel=1e-5)
    c = paired_comparison([none], none)  # and in the paired comparison's per-arm intervals
    assert c["ums_method_hi"] == c["ums_random_hi"] == pytest.approx(half / n, rel=1e-5)
    assert math.isnan(c["ums_ratio"]) and c["ums_p"] == 1.0
    some = _unique_arm(n)
    c = paired_comparison([some], none)  # Random found none: no log ratio, the exact test
    assert c["ums_random_hi"] > 0 and c["ums_method_lo"] < c["ums_method_hi"]
    assert c["ums_ratio"] == math.inf and c["ums_ratio_lo"] > 1 and c["ums_p"] < 0.05
    assert c["ums_test"].startswith("exact conditional")
