"""Do the product's intervals cover what they say, and do its verdicts hold under the null?

Audits are drawn from *known truths* — assemblages of per-sample detection probabilities p_j,
so that every quantity an interval claims to cover is known exactly — and each draw goes
through the product's own functions (``side_engine.statistics``, ``side_engine.unseen``).
Reported per quantity and N_G: the share of intervals covering the truth (nominal 95 %), and
under a null (a method identical to Random) the share of "more" or "fewer" verdicts (nominal
5 %). Simulation error at 1 000 arms a cell: ±1.4 points around 95 %, so ≥ 93 % observed is the
pass mark for coverage and ≤ 6.2 % for false verdicts (the issue's).

Truths (``ASSEMBLAGES``):
- ``many-singletons``: 1 000 images, each rare — most finds are single;
- ``few-dominant``: 5 images each 2 % of samples, 200 rare ones;
- ``geometric``: 100 images whose probabilities fall by 15 % each (a memorising model's shape);
- ``lognormal``: 500 images, log-normal heterogeneity (σ = 2);
- ``sparse``: 24 images sharing 1 % of samples (a high band at small N_G);
- ``multi-match``: 150 pairs of near-duplicate training images, a find reaches both (SSCD);
- a model's own ≥mid detections from 4 096 of its samples, p_j = count / 4 096, for each
  Random-only audit given (``--truth WS …``: the demo model's and ``faces3``'s, made with
  ``side-audit init WS --label-source clusters --n-per-lambda 4096`` and methods = ["random"]).

Nulls: two independent Random arms (different noise seeds), and a paired null as the product
pairs — the method's sample at each position is Random's own with probability 0.8 (shared noise,
a guided arm at a λ too small to move most images), else a fresh draw from the same model.
Alternatives (for the ratio's coverage): the method's draws favour the first half of the images
three to one. Holm's family: three null λ arms of one endpoint.

    python bench/calibration.py                                  # the table, ~10 min on 2 cores
    python bench/calibration.py --reps 200 --sizes 128 512       # quick look
    python bench/calibration.py --truth bench/work/truth/demo-random bench/work/truth/faces3-random \
        --json bench/results/calibration.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import statistics, unseen  # noqa: E402
from side_engine.arms import Arm  # noqa: E402

SIZES = (64, 128, 256, 512, 2048)
REPS = 1000
SHARE = 0.8  # the paired null's positions where the method's sample is Random's own


@dataclass
class Truth:
    """Per-sample probabilities of reaching each *group* of training images; a find reaches every
    image of its group (groups of one: the pixel scorer's one pair a sample)."""

    name: str
    p: np.ndarray
    group: int = 1
    n_train: int = field(default=0)

    def __post_init__(self):
        self.n_train = self.n_train or len(self.p) * self.group

    def expected_distinct(self, n: int, p: np.ndarray | None = None) -> float:
        q = self.p if p is None else p
        return float(self.group * (1 - (1 - q) ** n).sum())

    def favoured(self) -> np.ndarray:
        """An alternative's draws: the first half of the groups three times as likely, same total."""
        w = np.ones(len(self.p))
        w[: len(self.p) // 2] = 3.0
        q = self.p * w
        return q * self.p.sum() / q.sum()


def assemblages(truth_ws: list[Path] | None = None) -> list[Truth]:
    rng = np.random.default_rng(7)
    geometric = 0.85 ** np.arange(100)
    lognormal = rng.lognormal(0.0, 2.0, 500)
    out = [Truth("many-singletons", np.full(1000, 2e-4)),
           Truth("few-dominant", np.r_[np.full(5, 0.02), np.full(200, 1e-4)]),
           Truth("geometric", 0.15 * geometric / geometric.sum()),
           Truth("lognormal", 0.10 * lognormal / lognormal.sum()),
           Truth("sparse", np.full(24, 0.01 / 24)),
           Truth("multi-match", np.full(150, 3e-4), group=2)]
    return out + [model_truth(ws) for ws in truth_ws or []]


def model_arm(ws: Path, band: str = "mid") -> tuple[Arm, int]:
    """A Random-only audit's arm at ≥ ``band``, and the training set's size."""
    from side_engine import results, storage
    from side_engine.config import AuditConfig

    db = storage.connect(ws / "audit.db", readonly=True)
    try:
        cfg = AuditConfig.from_stored(results.audit_info(db)["config"])
        bands, higher = results.stored_bands(db)
        mask = next(m for name, cum, m in results.band_masks(bands, higher) if name == band and cum)
        a = results.arm(results.arm_data(db, "random", 0.0), mask, None, cfg.ums == "nearest-only")
        return a, db["train_images"].count
    finally:
        db.close()


def empirical(ws: Path, sizes=(128, 256, 512), band: str = "mid") -> list[dict]:
    """The real thing, without a model of it: disjoint blocks of one large Random run. Each block
    is an audit of n; its UMS interval should hold what the whole run says an audit of n reaches
    (the exact interpolation of all 4 096, the best estimate there is), and two blocks are two
    Random arms of different noise — a real null, paired by position as the product pairs."""
    from side_engine import unseen

    whole, _ = model_arm(ws, band)
    rows = []
    for n in sizes:
        k = whole.n // n
        truth = float(unseen.expected_at(unseen.incidence(whole), [n])[0]) / n
        blocks = [block(whole, i * n, n) for i in range(k)]
        cover = [covered(*(lambda r: (r["ums_lo"], r["ums_hi"]))(statistics.rate_intervals(b)), truth)
                 for b in blocks]
        pairs = [statistics.paired_comparison([blocks[2 * i]], blocks[2 * i + 1]) for i in range(k // 2)]
        rows.append({"truth": f"{ws.name}-{band} (blocks)", "n_g": n, "blocks": k,
                     "UMS interval holds the whole run's expectation": share(cover),
                     "null pairs called more/fewer (UMS)": float(np.mean([c["ums_p"] < 0.05 for c in pairs])),
                     "null pairs called more/fewer (AMS)": float(np.mean([c["ams_p"] < 0.05 for c in pairs])),
                     "pairs": len(pairs)})
    return rows


def block(arm: Arm, start: int, n: int) -> Arm:
    keep = (arm.pair_pos >= start) & (arm.pair_pos < start + n)
    return Arm(arm.hit[start:start + n], arm.pair_pos[keep] - start, arm.pair_train[keep])


def model_truth(ws: Path, band: str = "mid") -> Truth:
    """A Random-only audit's detections at ≥ ``band`` as an assemblage: p_j = Y_j / N."""
    a, n_train = model_arm(ws, band)
    freq = np.bincount(a.pair_train, minlength=n_train)
    return Truth(f"{ws.name}-{band}", freq[freq > 0] / a.n, n_train=n_train)


def draw(truth: Truth, n: int, reps: int, rng: np.random.Generator, p: np.ndarray | None = None) -> np.ndarray:
    """(reps, n) the group each generated image reached (len(p): none)."""
    q = truth.p if p is None else p
    return rng.choice(len(q) + 1, size=(reps, n), p=np.r_[q, max(0.0, 1 - q.sum())])


def paired_draw(truth: Truth, base: np.ndarray, rng: np.random.Generator, p: np.ndarray | None = None,
                share: float = SHARE) -> np.ndarray:
    """The method's draws on Random's positions: Random's own with probability ``share``."""
    fresh = draw(truth, base.shape[1], base.shape[0], rng, p)
    return np.where(rng.random(base.shape) < share, base, fresh)


def marginal(truth: Truth, p: np.ndarray | None, share: float) -> np.ndarray:
    """Per-sample probabilities of a paired draw: ``share`` Random's, the rest ``p``'s."""
    return share * truth.p + (1 - share) * (truth.p if p is None else p)


def arm_of(truth: Truth, row: np.ndarray) -> Arm:
    none = len(truth.p)
    hit = row < none
    pos = np.flatnonzero(hit)
    if truth.group == 1:
        return Arm(hit, pos, row[hit].astype(np.int64))
    g = truth.group
    train = (row[hit][:, None] * g + np.arange(g)[None, :]).ravel()
    return Arm(hit, np.repeat(pos, g), train.astype(np.int64))


def covered(lo: float | None, hi: float | None, truth: float) -> float:
    """1 or 0; NaN where the product prints no interval (counted apart: a share printed)."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return math.nan
    return float(lo - 1e-9 * max(1.0, abs(lo)) <= truth <= hi + 1e-9 * max(1.0, abs(hi)))


def share(values) -> float:
    """Coverage among the intervals printed."""
    v = np.asarray(list(values), dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


# --- the checks: each returns {quantity: share} for one truth and N_G ---------------------------

def check_rates(truth: Truth, n: int, reps: int, rng) -> dict:
    """AMS (exact binomial) and UMS (jackknife / exact Poisson) against their expectations."""
    rows = draw(truth, n, reps, rng)
    ams_true, ums_true = float(truth.p.sum()), truth.expected_distinct(n) / n
    ums = []
    for row in rows:
        r = statistics.rate_intervals(arm_of(truth, row))
        ums.append(covered(r["ums_lo"], r["ums_hi"], ums_true))
    # AMS is binomial: its coverage is computed exactly, summed over every count (no simulation error)
    k = np.arange(n + 1)
    weights = stats.binom.pmf(k, n, ams_true)
    ams = sum(w for i, w in zip(k, weights) if covered(*statistics.clopper_pearson(int(i), n), ams_true) == 1)
    return {"AMS interval (exact binomial; computed exactly)": float(ams), "UMS interval": share(ums)}


def check_null(truth: Truth, n: int, reps: int, rng) -> dict:
    """False verdicts of a method identical to Random: independent arms and shared-noise arms."""
    base = draw(truth, n, reps, rng)
    other = draw(truth, n, reps, rng)
    shared = paired_draw(truth, base, rng)
    out = {}
    for label, method in (("independent", other), ("paired", shared)):
        false = {"ams": 0, "ums": 0}
        for r_row, m_row in zip(base, method):
            c = statistics.paired_comparison([arm_of(truth, m_row)], arm_of(truth, r_row))
            for key in false:
                false[key] += c[f"{key}_p"] < statistics.ALPHA
        for key, k in false.items():
            out[f"{key.upper()} ratio, false verdicts ({label} null)"] = k / reps
    return out


def check_range_and_holm(truth: Truth, n: int, reps: int, rng, lams: int = 3) -> dict:
    """Over a declared range of ``lams`` null λ arms (their mean against Random): false verdicts;
    per λ with Holm over the grid: the family's false verdicts."""
    base = draw(truth, n, reps, rng)
    arms_by_lam = [paired_draw(truth, base, rng, share=s) for s in np.linspace(0.9, 0.5, lams)]
    false_range = {"ams": 0, "ums": 0}
    family = {"ams": 0, "ums": 0}
    for i, r_row in enumerate(base):
        rnd = arm_of(truth, r_row)
        method = [arm_of(truth, a[i]) for a in arms_by_lam]
        c = statistics.paired_comparison(method, rnd)
        per = [statistics.paired_comparison([a], rnd) for a in method]
        for key in false_range:
            false_range[key] += c[f"{key}_p"] < statistics.ALPHA
            family[key] += min(statistics.holm([x[f"{key}_p"] for x in per])) < statistics.ALPHA
    out = {}
    for key in false_range:
        out[f"{key.upper()} ratio over a λ range, false verdicts"] = false_range[key] / reps
        out[f"{key.upper()} per λ after Holm, family false verdicts"] = family[key] / reps
    return out


def check_ratio_coverage(truth: Truth, n: int, reps: int, rng) -> dict:
    """Coverage of the true ratio when the method differs (a single λ and a range of two)."""
    q = truth.favoured()
    base = draw(truth, n, reps, rng)
    one = paired_draw(truth, base, rng, q, share=0.3)
    two = paired_draw(truth, base, rng, q, share=0.6)
    m1, m2 = marginal(truth, q, 0.3), marginal(truth, q, 0.6)
    d_r = truth.expected_distinct(n)
    ums_one = truth.expected_distinct(n, m1) / d_r
    ums_two = (truth.expected_distinct(n, m1) + truth.expected_distinct(n, m2)) / 2 / d_r
    ams_one = m1.sum() / truth.p.sum()
    ams_two = (m1.sum() + m2.sum()) / 2 / truth.p.sum()
    hits: dict[str, list] = {"ums1": [], "ums2": [], "ams1": [], "ams2": [], "diff": []}
    diff_true = (truth.expected_distinct(n, m1) - d_r) / n
    for i, r_row in enumerate(base):
        rnd, a1, a2 = arm_of(truth, r_row), arm_of(truth, one[i]), arm_of(truth, two[i])
        c1 = statistics.paired_comparison([a1], rnd)
        c2 = statistics.paired_comparison([a1, a2], rnd)
        hits["ums1"].append(covered(c1["ums_ratio_lo"], c1["ums_ratio_hi"], ums_one))
        hits["ums2"].append(covered(c2["ums_ratio_lo"], c2["ums_ratio_hi"], ums_two))
        hits["ams1"].append(covered(c1["ams_ratio_lo"], c1["ams_ratio_hi"], ams_one))
        hits["ams2"].append(covered(c2["ams_ratio_lo"], c2["ams_ratio_hi"], ams_two))
        hits["diff"].append(covered(c1["ums_diff_lo"], c1["ums_diff_hi"], diff_true))
    return {"UMS ratio interval (one λ)": share(hits["ums1"]),
            "UMS ratio interval (λ range)": share(hits["ums2"]),
            "AMS ratio interval (one λ)": share(hits["ams1"]),
            "AMS ratio interval (λ range)": share(hits["ams2"]),
            "UMS difference interval (one λ)": share(hits["diff"])}


def check_curve(truth: Truth, n: int, reps: int, rng) -> dict:
    """The coverage curve's range at half the budget and at the full one: does a *new* audit of
    that budget land in it (a prediction), and does it hold the expected count."""
    rows = draw(truth, n, reps, rng)
    fresh = draw(truth, n, reps, rng)
    budgets = [n // 2, n]
    pred = {b: 0 for b in budgets}
    mean = {b: 0 for b in budgets}
    for row, new in zip(rows, fresh):
        pts = unseen.curve_ranges(unseen.incidence(arm_of(truth, row)), budgets)
        for b, pt in zip(budgets, pts):
            reached = len(np.unique(arm_of(truth, new[:b]).pair_train))
            pred[b] += covered(pt["lo"], pt["hi"], reached)
            mean[b] += covered(pt["mean_lo"], pt["mean_hi"], truth.expected_distinct(b))
    return {"coverage curve range at N_G/2 (a new audit)": pred[budgets[0]] / reps,
            "coverage curve range at N_G (a new audit)": pred[budgets[1]] / reps,
            "expected count at N_G/2 (interpolated)": mean[budgets[0]] / reps}


def check_total(truth: Truth, n: int, reps: int, rng) -> dict:
    """The unlimited-budget total: is the printed lower bound below the images there are to find;
    how often would Chao's own two-sided intervals have held them (not printed: the upper end
    printed is the training set's size); and the curve continued to 2× this audit's budget,
    against what continuing it would reach (this audit's finds plus the expected new ones)."""
    rows = draw(truth, n, reps, rng)
    total = len(truth.p) * truth.group
    lower, chao2, ichao2, extra = [], [], [], []
    for row in rows:
        arm = arm_of(truth, row)
        inc = unseen.incidence(arm)
        est = unseen.estimate(inc, ceiling=truth.n_train, resamples=50)
        lower.append(float(est["total_lo"] <= total))
        if inc.observed:
            chao2.append(covered(*unseen.chao2_interval(inc), total))
            draws = unseen.bootstrap(inc, [], 50)
            ich = unseen.ichao2(inc)
            ichao2.append(covered(*unseen._lognormal(inc.observed, ich - inc.observed,
                                                      float(draws["ichao2"].var(ddof=1))), total))
            at2 = next((c for c in est["curve"] if c["budget"] == 2 * n), None)
            if at2 is not None:
                found = np.zeros(len(truth.p), bool)
                found[np.unique(row[row < len(truth.p)])] = True
                gain = truth.group * (1 - (1 - truth.p[~found]) ** n).sum()
                extra.append(covered(at2["lo"], at2["hi"], inc.observed + gain))
    return {"unlimited-budget lower bound (≤ the truth)": share(lower),
            "Chao2 two-sided interval (not printed)": share(chao2),
            "iChao2 two-sided interval (not printed)": share(ichao2),
            "curve continued to 2× the budget": share(extra)}


def check_false_alarm(truth: Truth, n: int, reps: int, rng) -> dict:
    """Newcombe's interval of a band's rate less its false-alarm rate (n held-out images)."""
    p_audit, p_fa = float(truth.p.sum()), float(truth.p.sum()) / 2
    k1 = rng.binomial(n, p_audit, reps)
    k2 = rng.binomial(max(n // 4, 16), p_fa, reps)
    ok = [covered(*statistics.newcombe_difference(a, n, b, max(n // 4, 16))[1:], p_audit - p_fa)
          for a, b in zip(k1, k2)]
    return {"rate above false alarms (Newcombe)": float(np.mean(ok))}


def topk_coverage(sizes=(128, 512, 2048), reps: int = 200, truth_reps: int = 4000, seed: int = 0) -> list[dict]:
    """Table 2's top-k mean best score: does its bootstrap interval hold the expected top-k mean
    of N_G draws from a known score distribution (gamma distances, lower closer)? By k."""
    from side_engine.measures import TOPK_FRACTIONS, topk_mean

    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        truth = {f: float(np.mean([topk_mean(rng.gamma(4, 0.1, n), False)[f] for _ in range(truth_reps)]))
                 for f in TOPK_FRACTIONS}
        hits: dict[float, list] = {f: [] for f in TOPK_FRACTIONS}
        for r in range(reps):
            x = rng.gamma(4, 0.1, n)
            shown = statistics.topk_mean_intervals(x, False, seed=r)
            raw = {f: _raw_topk_interval(x, f, r) for f in TOPK_FRACTIONS}
            for f in TOPK_FRACTIONS:
                hits[f].append((covered(*raw[f], truth[f]), covered(*shown[f], truth[f])))
        for f in TOPK_FRACTIONS:
            h = np.asarray(hits[f], dtype=np.float64)
            rows.append({"n_g": n, "fraction": f, "k": max(1, math.ceil(f * n)),
                         "bootstrap covers": float(np.nanmean(h[:, 0])),
                         "printed": bool(not np.isnan(h[:, 1]).all())})
    return rows


def _raw_topk_interval(x: np.ndarray, f: float, seed: int) -> tuple[float, float]:
    from side_engine.measures import topk_mean

    rng = np.random.default_rng(seed)
    draws = [topk_mean(x[rng.integers(0, len(x), len(x))], False)[f] for _ in range(400)]
    return statistics.percentile_interval(np.asarray(draws))


MARGIN = 0.9  # the studies' declared non-inferiority margin: a ratio's lower bound above 0.9


def check_null_floor(truth: Truth, n: int, reps: int, rng) -> dict:
    """What a method identical to Random scores on the studies' endpoints over a λ range of two
    (the declared range): the primary (UMS ratio's lower bound above 1), AMS not worse (lower
    bound above ``MARGIN``), and both — the null floor a study's cell count is read against."""
    base = draw(truth, n, reps, rng)
    arms = [paired_draw(truth, base, rng, share=s) for s in (0.8, 0.6)]
    primary, ams_ok, both = [], [], []
    for i, r_row in enumerate(base):
        c = statistics.paired_comparison([arm_of(truth, a[i]) for a in arms], arm_of(truth, r_row))
        p_ok = c["ums_ratio_lo"] > 1
        a_ok = c["ams_ratio_lo"] > MARGIN
        primary.append(p_ok)
        ams_ok.append(a_ok)
        both.append(p_ok and a_ok)
    return {"null floor: primary endpoint met (UMS lower bound > 1)": float(np.mean(primary)),
            f"null floor: AMS not worse (lower bound > {MARGIN})": float(np.mean(ams_ok)),
            "null floor: both met": float(np.mean(both))}


CHECKS: dict[str, Callable] = {"rates": check_rates, "null": check_null, "range": check_range_and_holm,
                               "ratio": check_ratio_coverage, "curve": check_curve, "total": check_total,
                               "false_alarm": check_false_alarm, "null_floor": check_null_floor}
# which side of the nominal level a row must be on
FALSE_VERDICT = "false verdicts"


def passes(quantity: str, share: float, reps: int) -> bool:
    """Coverage ≥ 93 %, false verdicts ≤ 6.2 % (the 1 000-arm marks; wider with fewer arms).
    A quantity never printed at this N_G passes (the product says why instead)."""
    if math.isnan(share):
        return True
    slack = 1.96 * math.sqrt(0.05 * 0.95 / reps) + 0.002 if reps < 1000 else 0.0
    if FALSE_VERDICT in quantity:
        return share <= 0.062 + slack
    if "not printed" in quantity or quantity.startswith("null floor"):
        return True
    return share >= 0.93 - slack


def run(truths: list[Truth], sizes, reps: int, checks, seed: int = 0) -> list[dict]:
    rows = []
    for t in truths:
        for n in sizes:
            rng = np.random.default_rng([seed, n, len(rows)])
            for name in checks:
                start = time.perf_counter()
                for quantity, value in CHECKS[name](t, n, reps, rng).items():
                    rows.append({"truth": t.name, "n_g": n, "quantity": quantity, "share": float(value),
                                 "reps": reps, "pass": passes(quantity, float(value), reps)})
                    if not rows[-1]["pass"]:
                        print(f"  FAILS: {t.name} N_G {n} {quantity}: {100 * value:.1f} %", file=sys.stderr)
                print(f"  {t.name:16s} N_G {n:5d} {name:11s} {time.perf_counter() - start:6.1f} s", file=sys.stderr)
    return rows


def markdown(rows: list[dict], sizes) -> str:
    quantities = list(dict.fromkeys(r["quantity"] for r in rows))
    truths = list(dict.fromkeys(r["truth"] for r in rows))
    out = ["| quantity | nominal | " + " | ".join(f"N_G {n}" for n in sizes) + " |",
           "|---|---|" + "---|" * len(sizes)]
    for q in quantities:
        nominal = "≤ 5 %" if FALSE_VERDICT in q else "–" if q.startswith("null floor") else "95 %"
        cells = []
        for n in sizes:
            vals = [r for r in rows if r["quantity"] == q and r["n_g"] == n and not math.isnan(r["share"])]
            if not vals:
                cells.append("–")
                continue
            high_is_worse = FALSE_VERDICT in q or q.startswith("null floor")
            worst = (max if high_is_worse else min)(vals, key=lambda r: r["share"])
            mark = "" if all(r["pass"] for r in vals) else " ✗"
            cells.append(f"{100 * worst['share']:.1f} %{mark}")
        out.append(f"| {q} | {nominal} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"Worst cell over the truths ({', '.join(truths)}); ✗: below 93 % coverage or above "
               "6.2 % false verdicts in some truth.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    ap.add_argument("--truth", type=Path, nargs="+", help="Random-only audits of many samples (models' own truths)")
    ap.add_argument("--only", nargs="+", help="truths by name")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--empirical", action="store_true", help="only the blocks of each --truth run, printed")
    ap.add_argument("--topk", action="store_true", help="only Table 2's top-k intervals, by k")
    args = ap.parse_args(argv)
    if args.topk:
        for row in topk_coverage():
            print(json.dumps(row))
        return 0
    if args.empirical:
        for ws in args.truth or []:
            for band in ("mid", "high"):
                for row in empirical(ws, band=band):
                    print(json.dumps(row))
        return 0
    truths = [t for t in assemblages(args.truth) if not args.only or t.name in args.only]
    rows = run(truths, args.sizes, args.reps, args.checks)
    table = markdown(rows, args.sizes)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"sizes": args.sizes, "reps": args.reps, "rows": rows}, indent=1))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
