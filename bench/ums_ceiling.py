"""How much gain in distinct training images a model leaves to find: the UMS ceiling.

UMS counts distinct training images reached. When the model's own sampler already reaches
nearly every training image, no method can show much more: the largest possible UMS ratio is
N_train / (Random's distinct count). This takes each stored study audit, keeps its Random
samples as they are, and sets beside them an *oracle* guided arm that reaches every training
image at ≥mid (each from n / N_train of its samples, so no bootstrap draw loses one), then runs
the product's own paired comparison on the two. If even the oracle's interval hardly clears 1,
the primary endpoint on that model measures saturation, not the method.

    python bench/ums_ceiling.py [--models copier regime faces2] [--arm reliability]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import measures, statistics, storage  # noqa: E402
from side_engine.results import arm, arm_data, stored_bands  # noqa: E402

STUDY = ROOT / "bench" / "work" / "study"


def ceiling(ws: Path) -> dict | None:
    db = storage.connect(ws / "audit.db", readonly=True)
    try:
        bands, higher = stored_bands(db)
        mid = next(b for b in bands if b.name == "mid")
        n_train = db.execute("select count(*) from train_images").fetchone()[0]
        rnd = arm_data(db, "random", 0.0)
        side = {lam: arm_data(db, "side", lam) for (lam,) in db.execute(
            "select distinct lam from samples where method = 'side' order by lam").fetchall()}
    finally:
        db.close()
    if not len(rnd["index"]):
        return None
    mask = lambda s: measures.at_least(s, mid, higher)  # noqa: E731
    r = arm(rnd, mask, None, False)
    n = r.n
    pos = np.arange(n, dtype=np.int64)
    oracle = statistics.Arm(np.ones(n, bool), pos, pos % n_train)
    c = statistics.paired_comparison([oracle], r)
    seen = {lam: statistics.paired_comparison([arm(d, mask, rnd["index"], False)], r)["ums_ratio"]
            for lam, d in side.items() if np.array_equal(np.sort(d["index"]), rnd["index"])}
    return {"n": n, "n_train": n_train, "random_distinct": len(np.unique(r.pair_train)),
            "ceiling": c["ums_ratio"], "ceiling_lo": c["ums_ratio_lo"], "ceiling_hi": c["ums_ratio_hi"],
            "side": seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["copier", "regime", "faces2"])
    ap.add_argument("--arm", default="reliability")
    args = ap.parse_args()
    print("| model | seed | training images | Random distinct ≥mid (n) | largest possible UMS ratio "
          "(oracle, paired interval) | SIDE's, per λ |")
    print("|---|---:|---:|---:|---:|---|")
    for model in args.models:
        for ws in sorted(STUDY.glob(f"{model}-{args.arm}-s*")):
            out = ceiling(ws)
            if out is None:
                continue
            side = ", ".join(f"λ {lam:g}: {v:.2f}" for lam, v in out["side"].items())
            print(f"| {model} | {ws.name.rsplit('-s', 1)[1]} | {out['n_train']} | {out['random_distinct']} "
                  f"({out['n']}) | {out['ceiling']:.3f} [{out['ceiling_lo']:.3f}, {out['ceiling_hi']:.3f}] | {side} |")


if __name__ == "__main__":
    main()
