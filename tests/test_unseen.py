"""The unseen-image estimators: against scikit-bio where the two coincide, against exact
enumeration, and on simulated audits whose truth is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from side_engine import unseen
from side_engine.statistics import Arm

HUGE = 10**9  # (T − 1) / T = 1: the incidence forms are then the abundance ones scikit-bio has


@pytest.mark.parametrize("freq", [[1, 1, 1, 2, 2, 3, 5, 8], [1, 1, 1, 3, 5, 8], [2, 2, 3, 5, 8],
                                  [1, 1, 1, 1, 2, 4, 4, 9, 12, 30]])
def test_chao2_and_its_interval_are_scikit_bios_chao1_where_they_coincide(freq):
    alpha = pytest.importorskip("skbio.diversity.alpha")
    inc = unseen.Incidence(np.array(freq), HUGE)
    assert unseen.chao2(inc) == pytest.approx(alpha.chao1(np.array(freq), bias_corrected=True), rel=1e-6)
    assert unseen.chao2_interval(inc) == pytest.approx(alpha.chao1_ci(np.array(freq), bias_corrected=True),
                                                       rel=1e-4)


def test_one_singleton_still_leaves_room_for_unseen_images():
    """Chao2's undetected count is 0 for a lone singleton; scikit-bio's interval is then (S, S),
    a certain "nothing unseen" from one image seen once. Ours takes the no-singleton bound."""
    lo, hi = unseen.chao2_interval(unseen.Incidence(np.array([1, 2]), HUGE))
    assert lo == 2 and hi > 3


def test_the_interval_never_reaches_below_what_was_seen_and_small_runs_correct_for_t():
    inc = unseen.Incidence(np.array([1, 1, 1, 2, 2, 3, 5, 8]), 16)
    lo, hi = unseen.chao2_interval(inc)
    assert inc.observed <= lo < unseen.chao2(inc) < hi
    # (T − 1) / T shrinks the undetected count of a short run
    assert unseen.undetected(inc) == pytest.approx(15 / 16 * 3 * 2 / (2 * 3))


def test_incidence_counts_each_generated_image_once_per_training_image_it_matches():
    # image 0 matches training images 4 and 7; image 1 matches 4 twice (two stored pairs); image 2 none
    arm = Arm(np.array([True, True, False]), np.array([0, 0, 1, 1]), np.array([4, 7, 4, 4]))
    inc = unseen.incidence(arm)
    assert inc.t == 3 and sorted(inc.freq.tolist()) == [1, 2]


def test_interpolation_is_the_mean_over_every_subset_and_extrapolation_tends_to_chao2():
    # 6 generated images, 4 training images with their detecting images
    detections = {0: {0, 1, 2}, 1: {0}, 2: {3, 4}, 3: {5}}
    t = 6
    inc = unseen.Incidence(np.array([len(v) for v in detections.values()]), t)
    for size in range(1, t + 1):
        exact = np.mean([sum(bool(v & set(c)) for v in detections.values())
                         for c in itertools.combinations(range(t), size)])
        assert unseen.expected_at(inc, [size])[0] == pytest.approx(exact)
    far = unseen.expected_at(inc, [t * 10, t * 1000, t * 10**6], "chao2")
    assert np.all(np.diff(far) >= 0) and far[-1] == pytest.approx(unseen.chao2(inc), rel=1e-6)


def test_estimate_caps_at_the_training_set_keeps_what_was_found_and_refuses_beyond_its_range():
    inc = unseen.Incidence(np.array([1] * 12 + [2, 3]), 40)
    est = unseen.estimate(inc, ceiling=16, resamples=50)
    assert est["chao2"] <= 16 and est["ichao2"] <= 16
    # the total: what was found as the lower end, and no upper end but the training set
    assert est["total_lo"] == est["chao2_lo"] == inc.observed < est["ichao2"]
    assert est["chao2_hi"] == est["ichao2_hi"] == 16
    observed_end = next(c for c in est["curve"] if c["budget"] == 40)
    assert observed_end["expected"] == inc.observed and not observed_end["extrapolated"]
    assert observed_end["lo"] < inc.observed < observed_end["hi"]  # what a new audit of 40 would reach
    for c in est["curve"]:
        if c["extrapolated"]:  # an estimate only: Chao's extrapolation held its range far below 95 %
            assert inc.observed <= c["expected"] <= 16 and c["lo"] is None and c["hi"] is None
    assert max(c["budget"] for c in est["curve"]) == unseen.EXTRAPOLATION_CAP * 40
    by = {m["multiple"]: m for m in est["multiples"]}
    assert not by[2.0]["beyond_cap"] and by[2.0]["expected"] is not None
    assert by[5.0]["beyond_cap"] and by[10.0]["beyond_cap"] and by[10.0]["expected"] is None


def test_budget_for_a_share_interpolates_extrapolates_or_says_beyond_range():
    inc = unseen.Incidence(np.array([1, 1, 1, 2, 2, 3, 5, 8]), 64)
    reached = unseen.budget_for(inc, 0.5, 8, "chao2")  # 4 of 8: reached inside the run
    assert not reached["beyond_cap"] and reached["budget"] < 64
    at = [reached["budget"] - 1, reached["budget"]]
    assert unseen.expected_at(inc, at, "chao2")[1] >= 4 > unseen.expected_at(inc, at, "chao2")[0]
    more = unseen.budget_for(inc, 0.9, unseen.chao2(inc), "chao2")
    assert not more["beyond_cap"] and more["budget"] > 64
    assert unseen.expected_at(inc, [more["budget"]], "chao2")[0] >= 0.9 * unseen.chao2(inc) - 1e-9
    assert unseen.budget_for(inc, 1.0, unseen.chao2(inc), "chao2")["unreachable"]  # the asymptote: never
    assert unseen.budget_for(inc, 0.9, 2 * unseen.chao2(inc), "chao2")["unreachable"]  # more than it can find
    sparse = unseen.Incidence(np.array([1] * 20 + [2]), 64)  # mostly singletons: far from saturation
    far = unseen.budget_for(sparse, 0.9, unseen.chao2(sparse), "chao2")
    assert far["beyond_cap"] and far["budget"] is None and far["at_least"] == unseen.EXTRAPOLATION_CAP * 64


def test_on_simulated_audits_the_estimates_correct_towards_the_truth_and_cover_it():
    """200 training images with detection probabilities spread over a decade and a half (a few
    memorised, most reproduced now and then); 60 audits of 300 generated images each."""
    rng = np.random.default_rng(7)
    p = np.exp(rng.uniform(np.log(2e-3), np.log(6e-2), 200))
    truth_600 = np.sum(1 - (1 - p) ** 600)  # the paper's expectation at twice the budget
    covered, seen, chao, ext_err = 0, [], [], []
    runs = 60
    for _ in range(runs):
        y = rng.binomial(300, p)
        inc = unseen.Incidence(y[y > 0], 300)
        lo, hi = unseen.chao2_interval(inc)
        covered += lo <= 200 <= hi
        seen.append(inc.observed)
        chao.append(unseen.chao2(inc))
        ext_err.append(unseen.expected_at(inc, [600], "chao2")[0] - truth_600)
    assert np.mean(seen) < np.mean(chao) <= 200  # closer than what was seen; a lower bound on average
    assert covered >= 0.8 * runs
    assert abs(np.mean(ext_err)) < 0.05 * truth_600  # doubling the budget: within 5 % on average


def test_nothing_found_is_no_certain_zero():
    est = unseen.estimate(unseen.Incidence(np.zeros(0, np.int64), 64), ceiling=100)
    assert est["no_detections"] and est["observed"] == 0 and est["curve"] == []
    assert (est["chao2_lo"], est["chao2_hi"]) == (0.0, 100.0)  # anything up to the training set
    assert all(m["expected"] is None for m in est["multiples"])


def test_every_reader_says_none_found_instead_of_a_number():
    from side_engine.report import unseen_lines

    found = unseen.estimate(unseen.Incidence(np.array([1, 1, 2, 4]), 64), ceiling=50, resamples=20)
    none = unseen.estimate(unseen.Incidence(np.zeros(0, np.int64), 64), ceiling=50)
    record = {"estimator": "chao2", "cap": 3.0, "share": 0.9, "lambdas": [5.0], "planner": [],
              "strategies": [{"strategy": "random", "band": "mid", "cumulative": True, **found},
                             {"strategy": "side", "band": "mid", "cumulative": True, **none}]}
    lines = unseen_lines(record)
    assert lines[0].startswith("Random sampling: 4 training images found at ≥mid in 64 generated images")
    assert "no training image found" in lines[1] and "up to all 50 training images" in lines[1]
    assert "[0, 0]" not in " ".join(lines)
