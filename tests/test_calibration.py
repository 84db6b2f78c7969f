"""The product's intervals against known truths: a fast run of ``bench/calibration.py``.

Audits are drawn from assemblages whose expected AMS, UMS and ratios are known exactly, and go
through ``side_engine.statistics`` / ``side_engine.unseen`` as an audit's would. With 200 arms a
cell, a 95 % interval covering less than 90 % (3 standard errors below), or a test saying "more"
or "fewer" of a method identical to Random more than 10 % of the time, fails. The full table
(1 000 arms a cell, N_G 64-2 048, more truths) is ``python bench/calibration.py``."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import calibration  # noqa: E402

REPS = 200
TRUTHS = {t.name: t for t in calibration.assemblages()}


@pytest.mark.parametrize("name", ["geometric", "many-singletons", "sparse", "multi-match"])
@pytest.mark.parametrize("n", [128, 512])
def test_every_interval_covers_and_no_null_verdict_is_too_frequent(name, n):
    truth = TRUTHS[name]
    rng = np.random.default_rng([n, len(name)])
    rows = {}
    for check in ("rates", "null", "ratio", "curve"):
        rows.update(calibration.CHECKS[check](truth, n, REPS, rng))
    for quantity, share in rows.items():
        if np.isnan(share):  # never printed at this N_G (e.g. no ratio when neither finds anything)
            continue
        if calibration.FALSE_VERDICT in quantity:
            assert share <= 0.10, (quantity, share)
        else:
            assert share >= 0.90, (quantity, share)


def test_the_unlimited_budget_total_is_a_lower_bound_and_chao_alone_would_not_cover():
    """The printed lower bound stays below the images there are to find; Chao's own two-sided
    interval, which the product no longer prints, misses them on a heterogeneous truth."""
    rows = calibration.check_total(TRUTHS["lognormal"], 256, 60, np.random.default_rng(3))
    assert rows["unlimited-budget lower bound (≤ the truth)"] >= 0.95
    assert rows["Chao2 two-sided interval (not printed)"] < 0.5


def test_the_old_bootstrap_interval_would_fail_this_check():
    """The check can fail: a resampling bootstrap that sees only the images found (the product's
    interval before) covers the expected distinct count far less often than 90 %."""
    truth, n = TRUTHS["many-singletons"], 512
    rng = np.random.default_rng(1)
    expected = truth.expected_distinct(n)
    hits = []
    for row in calibration.draw(truth, n, 100, rng):
        arm = calibration.arm_of(truth, row)
        draws = np.concatenate([arm.ums_resampled(c) for c in calibration.statistics.bootstrap_counts(n, 200)]) * n
        lo, hi = np.percentile(draws - draws.mean() + arm.distinct(), [2.5, 97.5])
        hits.append(lo <= expected <= hi)
    assert np.mean(hits) < 0.85
