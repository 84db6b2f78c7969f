"""Do the unseen-image estimates hold? Small audits against what large ones reached.

For each study model (``bench/study_guidance.py``'s audits, seeds 0-2, plus Random-only audits
of further seeds, ``--extra-random``), every generated image of a strategy is pooled: Random
from every seed (≥ 2 048 images), SIDE over its declared λ range from every seed (3 × 1 024).
A *small run* is a disjoint block of that pool of the size a small audit has (Random: n images;
SIDE: n a λ of one seed, its λ together). From each block the product's estimators
(``side_engine.unseen``) give

- the unlimited-budget count (Chao2 and iChao2, with their 95 % intervals), compared with the
  whole pool's Chao2 (the best estimate of the truth there is) and the pool's observed count
  (a lower bound of the truth);
- the expected count when the run continues to 2× and 3× its budget, compared with what the
  block and further blocks of the pool actually reached (averaged over those extensions).

Reported per model, strategy, band and n: how often the truth lies inside each interval (its
coverage) and the mean bias. Guided samples are not independent draws from one fixed
distribution (their targets are stratified over the run), so SIDE is checked separately.

    python bench/bench_extrapolation.py --extra-random 3          # 512 more Random images a model
    python bench/bench_extrapolation.py --json bench/results/extrapolation.json --markdown

Slow only with ``--extra-random`` (a Random-only fork per model and seed); reading is seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from side_engine import results, storage, unseen  # noqa: E402
from side_engine.config import AuditConfig  # noqa: E402
from side_engine.statistics import Arm  # noqa: E402

WORK = ROOT / "bench" / "work" / "study"
MODELS = ("faces2", "regime", "copier")
SEEDS = (0, 1, 2)
SIZES = (64, 128, 256)
BANDS = ("mid", "high")  # at least the band (cumulative), the headline's
MULTIPLES = (2, 3)
CURVES = ("chao2", "ichao2")  # whose undetected count the curve extrapolates with


def extra_random(model: str, seed: int, n: int = 512) -> Path:
    """A Random-only audit of ``model`` with another seed, forked from the study's base audit."""
    from study_guidance import located

    from side_engine.audit import AuditRunner
    from side_engine.fork import fork
    from side_engine.progress import Progress

    ws = WORK / f"{model}-random-s{seed}"
    if not (ws / "audit.toml").exists():
        settings = {**located(model), "seed": seed, "n_per_lambda": n, "lambdas": [0], "methods": ["random"]}
        fork(WORK / f"{model}-base", ws, settings)
    AuditRunner(ws, Progress()).run()
    return ws


def arms_of(ws: Path, band: str) -> tuple[dict[float, Arm], int]:
    """The audit's arms at ≥ ``band`` by λ (0: Random)."""
    db = storage.connect(ws / "audit.db", readonly=True)
    try:
        info = results.audit_info(db)
        cfg = AuditConfig.from_stored(info["config"])
        bands, higher = results.stored_bands(db)
        mask = next(m for name, cum, m in results.band_masks(bands, higher) if name == band and cum)
        out = {}
        for method, lam in cfg.grid():
            d = results.arm_data(db, method, lam)
            if len(d["index"]) and (method == "random" or lam in cfg.table_grid()):
                out[lam] = results.arm(d, mask, None, cfg.ums == "nearest-only")
        n_train = db["train_images"].count
    finally:
        db.close()
    return out, n_train


def block(arm: Arm, start: int, n: int) -> Arm:
    keep = (arm.pair_pos >= start) & (arm.pair_pos < start + n)
    return Arm(arm.hit[start:start + n], arm.pair_pos[keep] - start, arm.pair_train[keep])


def detected(arms: list[Arm]) -> int:
    return len(np.unique(np.concatenate([a.pair_train for a in arms]))) if arms else 0


def pools(model: str, band: str) -> dict:
    """Random's images from every seed; SIDE's blocks per seed."""
    random_ws = sorted(WORK.glob(f"{model}-random-s*")) + [WORK / f"{model}-reliability-s{s}" for s in SEEDS]
    random_arms, side_runs, n_train = [], [], 0
    for ws in random_ws:
        if not (ws / "audit.db").exists():
            continue
        arms, n_train = arms_of(ws, band)
        if 0.0 in arms:
            random_arms.append(arms[0.0])
        if "reliability" in ws.name:
            side_runs.append([a for lam, a in sorted(arms.items()) if lam > 0])
    return {"random": unseen.pooled(random_arms), "side": side_runs, "n_train": n_train}


def random_blocks(pool: Arm, n: int) -> list[Arm]:
    return [block(pool, s, n) for s in range(0, pool.n - n + 1, n)]


def side_blocks(runs: list[list[Arm]], n: int) -> list[list[Arm]]:
    """A small SIDE run: n images at each λ of one seed, taken at the same sample indices."""
    out = []
    for arms in runs:
        size = min(a.n for a in arms)
        for s in range(0, size - n + 1, n):
            out.append([block(a, s, n) for a in arms])
    return out


def check(blocks: list[list[Arm]], truth_asymptote: float, pool_observed: int, n_train: int) -> dict:
    """Each block's estimates against the truths; extensions by the following blocks."""
    rows = []
    for i, own in enumerate(blocks):
        inc = unseen.incidence(unseen.pooled(own))
        # the curve extrapolated with each estimator's undetected count (the asymptotes are both in each)
        est = {name: unseen.estimate(inc, ceiling=n_train, resamples=200, estimator=name) for name in CURVES}
        row = {"observed": inc.observed, "t": inc.t}
        for name in ("chao2", "ichao2"):
            e = est["chao2"]
            lo, hi = e[f"{name}_lo"], e[f"{name}_hi"]
            row[name] = {"estimate": e[name], "lo": lo, "hi": hi,
                         "covers_pool_chao2": lo <= truth_asymptote <= hi,
                         "at_least_pool_observed": hi >= pool_observed}
        others = [b for j, b in enumerate(blocks) if j != i]
        for m in MULTIPLES:
            ext = [own + list(itertools.chain(*combo)) for combo in _combos(others, m - 1)]
            if not ext:
                continue
            reached = float(np.mean([detected(e) for e in ext]))
            for name in CURVES:
                c = next((c for c in est[name]["curve"] if c["budget"] == m * inc.t), None)
                if c is None:  # nothing found in this block: no curve to check
                    continue
                row[f"x{m}_{name}"] = {"expected": c["expected"], "lo": c["lo"], "hi": c["hi"], "reached": reached,
                                       "covers": c["lo"] <= reached <= c["hi"]}
        rows.append(row)
    return _summarise(rows, truth_asymptote)


def _combos(others: list, k: int, most: int = 12) -> list:
    """Up to ``most`` extensions of k further blocks each (disjoint, in pool order)."""
    out = []
    for start in range(0, len(others) - k + 1):
        out.append(others[start:start + k])
        if len(out) >= most:
            break
    return out


def _summarise(rows: list[dict], truth: float) -> dict:
    out = {"replicates": len(rows), "observed": float(np.mean([r["observed"] for r in rows])) if rows else None}
    for name in ("chao2", "ichao2"):
        e = [r[name] for r in rows]
        out[name] = {"mean": float(np.mean([x["estimate"] for x in e])),
                     "bias": float(np.mean([x["estimate"] - truth for x in e])),
                     "coverage": float(np.mean([x["covers_pool_chao2"] for x in e])),
                     "upper_at_least_pool_observed": float(np.mean([x["at_least_pool_observed"] for x in e]))}
    for m in MULTIPLES:
        for name in CURVES:
            e = [r[f"x{m}_{name}"] for r in rows if f"x{m}_{name}" in r]
            if e:
                out[f"x{m}_{name}"] = {"expected": float(np.mean([x["expected"] for x in e])),
                                       "reached": float(np.mean([x["reached"] for x in e])),
                                       "bias": float(np.mean([x["expected"] - x["reached"] for x in e])),
                                       "coverage": float(np.mean([x["covers"] for x in e])), "n": len(e)}
    return out


def run(models: list[str]) -> dict:
    report = {"models": {}}
    for model in models:
        for band in BANDS:
            p = pools(model, band)
            if not p["side"]:
                continue
            n_train = p["n_train"]
            rnd_pool = p["random"]
            side_pool = unseen.pooled([a for run in p["side"] for a in run])
            truths = {}
            for name, pool in (("random", rnd_pool), ("side", side_pool)):
                inc = unseen.incidence(pool)
                truths[name] = {"t": inc.t, "observed": inc.observed,
                                "chao2": min(unseen.chao2(inc), n_train), "n_train": n_train}
            entry = report["models"].setdefault(model, {}).setdefault(band, {"pools": truths, "checks": []})
            for n in SIZES:
                for name, blocks in (("random", [[b] for b in random_blocks(rnd_pool, n)]),
                                     ("side", side_blocks(p["side"], n))):
                    t = truths[name]
                    res = check(blocks, t["chao2"], t["observed"], n_train)
                    entry["checks"].append({"strategy": name, "n_per_lambda": n, **res})
                    print(model, band, name, n, json.dumps({k: res[k] for k in ("replicates", "chao2", "x2_chao2")
                                                             if k in res}), flush=True)
    return report


def markdown(report: dict) -> str:
    lines = ["| model | band | strategy | n a λ | runs | seen | pool: Chao2 (seen in T) | Chao2: mean, bias, coverage "
             "| iChao2: mean, bias, coverage | 2× (Chao2 / iChao2 curve): expected, reached, coverage "
             "| 3× (Chao2 / iChao2 curve) |",
             "|---|---|---|---:|---:|---:|---:|---|---|---|---|"]
    for model, bands in report["models"].items():
        for band, entry in bands.items():
            for c in entry["checks"]:
                pool = entry["pools"][c["strategy"]]
                est = lambda k, c=c: (f"{c[k]['mean']:.1f}, {c[k]['bias']:+.1f}, "  # noqa: E731
                                      f"{100 * c[k]['coverage']:.0f} %")

                def ext(m, c=c):
                    a, b = c.get(f"x{m}_chao2"), c.get(f"x{m}_ichao2")
                    if not a:
                        return "—"
                    return (f"{a['expected']:.1f} / {b['expected']:.1f}, {a['reached']:.1f}, "
                            f"{100 * a['coverage']:.0f} / {100 * b['coverage']:.0f} % (of {a['n']})")

                lines.append(f"| {model} | ≥{band} | {c['strategy']} | {c['n_per_lambda']} | {c['replicates']} "
                             f"| {c['observed']:.1f} | {pool['chao2']:.1f} ({pool['observed']} in "
                             f"{pool['t']}) | {est('chao2')} | {est('ichao2')} | {ext(2)} | {ext(3)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--extra-random", nargs="*", type=int, default=[], help="seeds of Random-only audits to add")
    ap.add_argument("--json")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    for model in args.models:
        for seed in args.extra_random:
            extra_random(model, seed)
    report = run(args.models)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.markdown:
        print(markdown(report))


if __name__ == "__main__":
    main()
