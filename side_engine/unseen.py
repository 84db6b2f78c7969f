"""How many training images a method would extract with an unlimited budget, and how the count
grows with the budget: unseen-species estimators over the detections an audit stores.

An audit's data are *incidence* data in the ecologists' sense: every generated image is one
sampling unit, and it "detects" each training image it matches within a band (a generated image
can match several). The number of generated images that detected training image i, Y_i, is
what the estimators read; their frequency counts Q_k (training images detected exactly k times)
carry the information about the images never detected. The paper's own expectation
(E[N_umem] = Σ_i 1 − (1 − p_i)^{N_G}, Appendix) is this model with p_i the per-sample
detection probability.

Estimators (Chao 1987; Chiu, Wang, Walther & Chao 2014; Chao et al. 2014, incidence forms):
- Chao2, bias-corrected: S_obs + (T−1)/T · Q1(Q1−1) / (2(Q2+1)), with the log-normal 95 %
  interval on the undetected count (never below what was seen).
- iChao2: Chao2 plus the Q3/Q4 correction; interval from Chao's bootstrap.
- The expected count at budget t: interpolated exactly for t ≤ T, extrapolated for t > T with
  Chao2's undetected count, intervals from Chao's bootstrap. Extrapolation is reported up to
  ``EXTRAPOLATION_CAP`` × T only, where the estimator's theory holds.

The product's default is iChao2 (``DEFAULT``), chosen by ``bench/results/extrapolation.md``:
both are lower bounds in practice (on small audits they fell 17-37 % short of what large runs
reached), iChao2 less so, and its intervals covered the large runs' estimate more often.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from .arms import SEED, Arm, budgets_for

EXTRAPOLATION_CAP = 3.0  # Chao et al. 2014: reliable to about double, at most triple, the sample
MULTIPLES = (2.0, 5.0, 10.0)  # budgets a reviewer asks about, as multiples of the observed one
BOOTSTRAP = 200
# the estimator the Summary, the curve and the planner use: iChao2 held up better on small audits
# of three models against large ones — less biased in every cell, its interval covering the
# large run's estimate more often (84 % against 75 % on average) — bench/results/extrapolation.md
DEFAULT = "ichao2"
PLAN_SHARE = 0.9  # the planner's goal: this share of the estimated extractable images
ESTIMATORS = {"chao2": lambda inc: chao2(inc), "ichao2": lambda inc: ichao2(inc)}
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Incidence:
    """Detections of one strategy in one band: ``freq[i]`` generated images detected the i-th
    detected training image; ``t`` generated images in all."""

    freq: np.ndarray
    t: int
    # training images one find reaches together (1 with one pair a sample; 2 when each find matches
    # a pair of near-duplicates): the counts' spread grows with it (``curve_ranges``)
    unit: float = 1.0

    @property
    def observed(self) -> int:
        return int(len(self.freq))

    def q(self, k: int) -> int:
        return int(np.count_nonzero(self.freq == k))


def incidence(arm: Arm) -> Incidence:
    """Per training image, the number of distinct generated images with an in-band pair to it."""
    if not len(arm.pair_train):
        return Incidence(np.zeros(0, np.int64), arm.n)
    pairs = np.unique(np.stack([arm.pair_train, arm.pair_pos]), axis=1)
    _, freq = np.unique(pairs[0], return_counts=True)
    sole = arm.sole_finds().astype(np.float64)
    if not sole.any():  # no image found once: the images a find reaches together
        sole = np.bincount(pairs[1], minlength=arm.n).astype(np.float64)
    unit = max(1.0, float((sole ** 2).sum() / sole.sum())) if sole.any() else 1.0
    return Incidence(freq.astype(np.int64), arm.n, unit)


def pooled(arms: Sequence[Arm]) -> Arm:
    """Several arms as one strategy: their generated images one after another."""
    offset = np.cumsum([0] + [a.n for a in arms[:-1]])
    return Arm(np.concatenate([a.hit for a in arms]),
               np.concatenate([a.pair_pos + o for a, o in zip(arms, offset)]),
               np.concatenate([a.pair_train for a in arms]))


def head(arm: Arm, n: int) -> Arm:
    """The arm's first ``n`` generated images."""
    keep = arm.pair_pos < n
    return Arm(arm.hit[:n], arm.pair_pos[keep], arm.pair_train[keep])


def undetected(inc: Incidence) -> float:
    """Chao2's (bias-corrected) estimate of the training images no generated image detected."""
    t, q1, q2 = inc.t, inc.q(1), inc.q(2)
    if t <= 1 or q1 == 0:
        return 0.0
    return (t - 1) / t * q1 * (q1 - 1) / (2 * (q2 + 1))


def chao2(inc: Incidence) -> float:
    return inc.observed + undetected(inc)


def ichao2(inc: Incidence) -> float:
    """Chao2 with the tripleton/quadrupleton correction (Chiu et al. 2014, incidence form); a
    zero Q4 is counted as one (their recommendation)."""
    t, q1, q2, q3, q4 = inc.t, inc.q(1), inc.q(2), inc.q(3), max(inc.q(4), 1)
    if t <= 3:
        return chao2(inc)
    return chao2(inc) + (t - 3) / (4 * t) * q3 / q4 * max(q1 - (t - 3) / (2 * (t - 1)) * q2 * q3 / q4, 0.0)


def estimate_of(inc: Incidence, estimator: str | None = None) -> float:
    return float(ESTIMATORS[estimator or DEFAULT](inc))


def chao2_variance(inc: Incidence) -> float:
    """Variance of the bias-corrected Chao2 (the EstimateS formulas, incidence form)."""
    t, q1, q2 = inc.t, inc.q(1), inc.q(2)
    a = (t - 1) / t if t > 0 else 1.0
    if q1 == 0:
        return 0.0
    if q2 > 0:
        return (a * q1 * (q1 - 1) / (2 * (q2 + 1)) + a * a * q1 * (2 * q1 - 1) ** 2 / (4 * (q2 + 1) ** 2)
                + a * a * q1 * q1 * q2 * (q1 - 1) ** 2 / (4 * (q2 + 1) ** 4))
    est = chao2(inc)
    return (a * q1 * (q1 - 1) / 2 + a * a * q1 * (2 * q1 - 1) ** 2 / 4 - a * a * q1 ** 4 / (4 * est)
            if est > 0 else 0.0)


def chao2_interval(inc: Incidence, z: float = Z95) -> tuple[float, float]:
    """95 % interval: log-normal on the undetected count (Chao 1987), so it never reaches below
    what was seen; with no singleton, the EstimateS bound for that case."""
    s, f0 = inc.observed, undetected(inc)
    if inc.q(1) == 0 or f0 <= 0:
        u = int(inc.freq.sum())
        if s == 0 or u == 0:
            return float(s), float(s)
        p = math.exp(-u / s)
        spread = z * math.sqrt(s * p / (1 - p)) if p < 1 else 0.0
        return float(max(s, s / (1 - p) - spread)), float(s / (1 - p) + spread)
    return _lognormal(s, f0, chao2_variance(inc), z)


def gap(inc: Incidence, estimator: str | None = None) -> float:
    """The undetected count the curve extrapolates with: the estimator's total less what was seen."""
    name = estimator or DEFAULT
    return undetected(inc) if name == "chao2" else max(estimate_of(inc, name) - inc.observed, 0.0)


def expected_at(inc: Incidence, budgets: Sequence[float], estimator: str | None = None) -> np.ndarray:
    """Expected training images detected by ``t`` generated images: exact interpolation for
    t ≤ T (each image detected unless none of its Y_i detections is among the t drawn), Chao2's
    extrapolation beyond (Chao et al. 2014, Eq. for incidence data)."""
    t_obs, s = inc.t, inc.observed
    q1, f0 = inc.q(1), gap(inc, estimator or DEFAULT)
    k, q_k = np.unique(inc.freq, return_counts=True)  # the curve depends on the counts Q_k only
    out = []
    for t in budgets:
        if t <= t_obs:
            t = int(round(t))
            ok = k <= t_obs - t  # C(T − k, t) / C(T, t) is 0 otherwise
            log_ratio = (_lgamma(t_obs - k[ok] + 1) + math.lgamma(t_obs - t + 1)
                         - _lgamma(t_obs - k[ok] - t + 1) - math.lgamma(t_obs + 1))
            out.append(float(s - (q_k[ok] * np.exp(log_ratio)).sum()))
        elif q1 == 0 or f0 <= 0:
            out.append(float(s))
        else:
            out.append(float(s + f0 * (1 - (1 - q1 / (t_obs * f0 + q1)) ** (t - t_obs))))
    return np.asarray(out)


def _lgamma(x: np.ndarray) -> np.ndarray:
    """log Γ of a few values (one per distinct detection count)."""
    return np.array([math.lgamma(float(v)) for v in x])


UPPER = 0.8413447460685429  # a count of images found once, taken one standard error above (here and statistics)


def _log_choose(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def _reached(y: np.ndarray, t: int, b: int) -> np.ndarray:
    """Per detected image, the chance that b of the t generated images, drawn without
    replacement, include one of its y detections: 1 − C(t − y, b) / C(t, b)."""
    miss = np.zeros(len(y))
    ok = t - y >= b
    miss[ok] = np.exp(_log_choose(t - y[ok], b) - _log_choose(np.full(ok.sum(), t), b))
    return 1 - miss


def curve_ranges(inc: Incidence, budgets: Sequence[int], alpha: float = 0.05) -> list[dict]:
    """The expected count of training images an audit of b ≤ T generated images reaches (the
    exact interpolation, unbiased for it), with two 95 % ranges: of that expectation (``mean_lo``,
    ``mean_hi``: the delete-one jackknife of the interpolation, each image's term as one of its
    detections is left out) and of what one *new* audit of that budget would reach (``lo``,
    ``hi``: a new audit's own spread, at most the expected number of images it finds once,
    added); both counts of images found once raised to their Poisson upper bounds."""
    t, y = inc.t, inc.freq.astype(np.float64)
    z = float(special.ndtri(1 - alpha / 2))
    out = []
    for b in budgets:
        b = int(min(max(int(round(b)), 1), t))
        e = float(_reached(y, t, b).sum()) if len(y) else 0.0
        # images a new audit of b would find exactly once: y C(t − y, b − 1) / C(t, b)
        once = y * np.exp(_log_choose(t - y, b - 1) - _log_choose(np.full(len(y), t), b)) if len(y) else y
        once = np.where(t - y >= b - 1, once, 0.0)
        if b >= t:
            var_mean = float(inc.q(1))
        else:  # leaving out one of image j's y_j detections changes its term by Δ_j
            delta = _reached(y - 1, t - 1, b) - _reached(y, t - 1, b)
            var_mean = float((y * delta ** 2).sum())
        u = inc.unit
        # the images found once, a handful or none, raised to their Poisson upper bound as the
        # distinct count's interval does (``statistics._sole_variance``): never a certain count
        var_mean += (float(special.gammaincinv(inc.q(1) + 1, UPPER)) - inc.q(1)) * b / t
        new_once = float(special.gammaincinv(float(once.sum()) + 1, UPPER))
        half_m = z * math.sqrt(u * var_mean)
        m_lo, m_hi = max(0.0, e - half_m), e + half_m
        half = z * math.sqrt(u * (var_mean + new_once))
        lo, hi = max(0.0, e - half), e + half
        out.append({"budget": b, "expected": e, "mean_lo": m_lo, "mean_hi": m_hi, "lo": lo, "hi": hi})
    return out


def detection_probabilities(inc: Incidence) -> np.ndarray:
    """Chao's bootstrap assemblage: a detection probability for every detected training image
    (shrunk by the sample coverage) and for each of the estimated undetected ones."""
    t, freq = inc.t, inc.freq.astype(np.float64)
    u = float(freq.sum())
    if not len(freq) or t == 0:
        return np.zeros(0)
    q1, q2 = inc.q(1), inc.q(2)
    if q2 > 0:
        coverage = 1 - q1 / u * ((t - 1) * q1 / ((t - 1) * q1 + 2 * q2))
    elif q1 > 0:
        coverage = 1 - q1 / u * ((t - 1) * (q1 - 1) / ((t - 1) * (q1 - 1) + 2))
    else:
        coverage = 1.0
    p = freq / t
    weight = np.sum(p * (1 - p) ** t)
    shrink = (1 - coverage) / weight * (u / t) if weight > 0 else 0.0
    p = p * (1 - shrink * (1 - p) ** t)
    f0 = math.ceil(undetected(inc))
    if f0 > 0 and coverage < 1:
        p = np.concatenate([p, np.full(f0, (u / t) * (1 - coverage) / f0)])
    return np.clip(p, 0.0, 1.0)


def bootstrap(inc: Incidence, budgets: Sequence[float], resamples: int = BOOTSTRAP,
              seed: int = SEED, estimator: str | None = None) -> dict[str, np.ndarray]:
    """Chao's bootstrap: incidence vectors drawn from the estimated assemblage, the estimators
    and the curve recomputed on each draw. Returns the draws (rows: resamples)."""
    rng = np.random.default_rng(seed)
    p = detection_probabilities(inc)
    out: dict[str, list] = {"observed": [], "chao2": [], "ichao2": [], "curve": []}
    for _ in range(resamples):
        y = rng.binomial(inc.t, p) if len(p) else np.zeros(0, np.int64)
        draw = Incidence(y[y > 0].astype(np.int64), inc.t)
        out["observed"].append(draw.observed)
        out["chao2"].append(chao2(draw))
        out["ichao2"].append(ichao2(draw))
        out["curve"].append(expected_at(draw, budgets, estimator))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def estimate(inc: Incidence, ceiling: int | None = None, resamples: int = BOOTSTRAP, seed: int = SEED,
             estimator: str | None = None) -> dict:
    """Everything the app, the report and the JSON show for one strategy and band: what was
    seen, what an unlimited budget would reach (Chao2 and iChao2, each with its 95 % interval),
    the expected count as the budget grows (observed up to T, extrapolated to the cap), and the
    multiples a reviewer asks about (beyond the cap: not extrapolated, said so). ``ceiling``:
    the training set's size — the estimators assume an unbounded population, no figure may
    exceed the images there are."""
    if inc.observed == 0:
        return _nothing_found(inc, ceiling)
    out = _estimate(inc, resamples, seed, estimator or DEFAULT)
    if ceiling is not None:
        cap = float(ceiling)
        for key in ("chao2", "chao2_lo", "chao2_hi", "ichao2", "ichao2_lo", "ichao2_hi", "total_lo"):
            out[key] = min(out[key], cap)
        for c in out["curve"] + [m for m in out["multiples"] if not m["beyond_cap"]]:
            for key in ("expected", "lo", "hi"):
                c[key] = None if c[key] is None else min(c[key], cap)
        out["ceiling"] = ceiling
    return out


def _nothing_found(inc: Incidence, ceiling: int | None) -> dict:
    """No detection at all: the frequency counts say nothing about how many images there are
    to find, so the interval runs from 0 to the whole training set (never a certain zero), and
    no curve is drawn."""
    top = float(ceiling) if ceiling is not None else None
    return {"generated": inc.t, "observed": 0, "q1": 0, "q2": 0, "no_detections": True, "total_lo": 0.0,
            "chao2": 0.0, "chao2_lo": 0.0, "chao2_hi": top, "ichao2": 0.0, "ichao2_lo": 0.0, "ichao2_hi": top,
            "curve": [], "multiples": [{"multiple": m, "budget": int(round(m * inc.t)), "expected": None, "lo": None,
                                        "hi": None, "beyond_cap": m > EXTRAPOLATION_CAP} for m in MULTIPLES],
            "cap": EXTRAPOLATION_CAP, **({"ceiling": ceiling} if ceiling is not None else {})}


def _estimate(inc: Incidence, resamples: int, seed: int, estimator: str) -> dict:
    t, s = inc.t, inc.observed
    observed_budgets = budgets_for(t)  # the coverage curve's: 8, 16, ... and the audit's own
    extra = [m * t for m in (1.5, 2.0, 2.5, 3.0) if m <= EXTRAPOLATION_CAP]
    budgets = observed_budgets + extra
    point = expected_at(inc, budgets, estimator)
    curve = []
    within = {c["budget"]: c for c in curve_ranges(inc, observed_budgets)}
    for b, e in zip(budgets, point):
        if b <= t:  # what a new audit of that budget would reach (``curve_ranges``)
            lo, hi = within[int(b)]["lo"], within[int(b)]["hi"]
        else:  # continuing this audit: an estimate with no range (Chao's extrapolation falls short
            # of what continuing reaches when detection probabilities differ: bench/calibration.py)
            lo = hi = None
        curve.append({"budget": int(round(b)), "expected": float(s if b == t else e),
                      "lo": None if lo is None else float(lo), "hi": None if hi is None else float(hi),
                      "extrapolated": bool(b > t)})
    # the totals: the images found as the lower end (certain), the training set's size as the
    # upper one. bench/calibration.py: Chao's two-sided intervals held the images there are in
    # under 5 % of simulated audits with unequal detection chances (images almost never reached
    # leave no singletons), and the log-normal lower end itself rose above them in 14 % of audits
    # of a model whose every image had been found (N_G 2 048 of the demo model)
    ich = ichao2(inc)
    lo = i_lo = float(s)
    hi = i_hi = math.inf
    by_budget = {c["budget"]: c for c in curve}
    multiples = []
    for m in MULTIPLES:
        c = by_budget.get(int(round(m * t))) if m <= EXTRAPOLATION_CAP else None
        multiples.append({"multiple": m, "budget": int(round(m * t)),
                          "expected": c and c["expected"], "lo": c and c["lo"], "hi": c and c["hi"],
                          "beyond_cap": c is None})
    return {"generated": t, "observed": s, "q1": inc.q(1), "q2": inc.q(2), "total_lo": float(s),
            "chao2": chao2(inc), "chao2_lo": lo, "chao2_hi": hi,
            "ichao2": ich, "ichao2_lo": i_lo, "ichao2_hi": i_hi,
            "curve": curve, "multiples": multiples, "cap": EXTRAPOLATION_CAP, "curve_estimator": estimator}


def _lognormal(s: int, f0: float, var: float, z: float = Z95) -> tuple[float, float]:
    """Chao's log-normal interval on the undetected count ``f0``: [s + f0 / K, s + f0 · K]."""
    if f0 <= 0 or var <= 0:
        return float(s), float(s + max(f0, 0.0))
    k = math.exp(z * math.sqrt(math.log(1 + var / f0 ** 2)))
    return s + f0 / k, s + f0 * k


def budget_for(inc: Incidence, share: float, target: float, estimator: str | None = None) -> dict:
    """Generated images needed to reach ``share`` of ``target`` training images (an unlimited
    budget's estimate): interpolated when the audit got there, extrapolated when the answer
    lies within the cap; beyond it, only "more than cap × T" can be said; "unreachable" when
    the strategy's own unlimited-budget estimate stays below the goal."""
    t, goal = inc.t, share * target
    if goal <= 0:
        return {"budget": 0, "beyond_cap": False}
    if inc.observed >= goal:
        lo, hi = 1, t
        while lo < hi:
            mid = (lo + hi) // 2
            if expected_at(inc, [mid], estimator)[0] >= goal:
                hi = mid
            else:
                lo = mid + 1
        return {"budget": int(lo), "beyond_cap": False}
    q1, f0 = inc.q(1), gap(inc, estimator or DEFAULT)
    s = inc.observed
    if q1 == 0 or f0 <= 0 or goal >= s + f0:  # its own unlimited budget stays short of the goal
        return {"budget": None, "beyond_cap": False, "unreachable": True}
    m = math.log(1 - (goal - s) / f0) / math.log(1 - q1 / (t * f0 + q1))
    need = t + math.ceil(m)
    if need > EXTRAPOLATION_CAP * t:
        return {"budget": None, "beyond_cap": True, "at_least": int(EXTRAPOLATION_CAP * t)}
    return {"budget": int(need), "beyond_cap": False}
