"""Two audits that share classifiers, noise and targets but computed their guided images
differently (a fork that changed only how the guide runs, e.g. ``guide_precision``): are the
guided images as good? Paired on (λ, sample index) over the declared λ range, the second
audit against the first: the ratio of AMS and UMS at "at least mid" and AMS at "high", with
the product's paired bootstrap interval; McNemar's exact test on the images that changed band;
the difference of distinct training images with an uncentred paired bootstrap interval; and how
many guided images kept their nearest training image and their band.

    python bench/compare_guides.py WS_FP32 WS_BF16 [WS_FP32_2 WS_BF16_2 ...] [--json OUT]

The seventeenth study (``bench/results/study-guidance-declared.md``) declared this comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from side_engine import results, statistics, storage, unseen  # noqa: E402
from side_engine.workspace import Workspace  # noqa: E402

ENDPOINTS = (("mid", "ams"), ("mid", "ums"), ("high", "ams"))


def pooled(datas: list[dict], keep: np.ndarray, mask, nearest_only: bool) -> statistics.Arm:
    """The guided images of every λ of the range as one arm: λ j's sample i at position j·n + i."""
    return unseen.pooled([results.arm(d, mask, keep, nearest_only) for d in datas])


def ums_difference(arm_b: statistics.Arm, arm_a: statistics.Arm) -> tuple[float, float, float]:
    """Distinct training images, b − a, with the paired bootstrap interval of the *uncentred*
    difference (the eighteenth study): both arms' draws share their resampled indices, so their
    resampling bias largely cancels, and two identical arms give [0, 0] — unlike the ratio of
    separately centred draws, whose interval can exclude its own estimate of 1."""
    draws = np.concatenate([arm_b.ums_resampled(c) - arm_a.ums_resampled(c)
                            for c in statistics.bootstrap_counts(arm_a.n)]) * arm_a.n
    lo, hi = statistics.percentile_interval(draws)
    return (arm_b.ums() - arm_a.ums()) * arm_a.n, lo, hi


def compare(ws_a: Path, ws_b: Path) -> dict:
    cfg = Workspace(ws_a).load_config()
    lams = cfg.table_grid()
    db_a, db_b = storage.connect(Workspace(ws_a).db_path), storage.connect(Workspace(ws_b).db_path)
    try:
        bands, higher = results.stored_bands(db_a)
        a = [results.arm_data(db_a, "side", lam) for lam in lams]
        b = [results.arm_data(db_b, "side", lam) for lam in lams]
        used = [storage.get_kv(db, "guide_precision") for db in (db_a, db_b)]
    finally:
        db_a.close()
        db_b.close()
    keep = a[0]["index"]
    for d in a + b:
        keep = np.intersect1d(keep, d["index"])
    masks = {(name, cum): m for name, cum, m in results.band_masks(bands, higher)}
    nearest_only = cfg.ums == "nearest-only"
    out = {"a": str(ws_a), "b": str(ws_b), "guide_precision": used, "lambdas": lams, "n": int(len(keep)),
           "endpoints": {}}
    for band, key in ENDPOINTS:
        mask = masks[(band, True)]
        arm_a, arm_b = pooled(a, keep, mask, nearest_only), pooled(b, keep, mask, nearest_only)
        c = statistics.paired_comparison([arm_b], arm_a)
        out["endpoints"][f"{key} >={band}"] = {
            "a": c[f"{key}_random"], "b": c[f"{key}_method"], "ratio": c[f"{key}_ratio"],
            "lo": c[f"{key}_ratio_lo"], "hi": c[f"{key}_ratio_hi"], "p": c[f"{key}_p"],
            # the guided images that changed their outcome: in the band only under b, only under a
            "gained": int((arm_b.hit & ~arm_a.hit).sum()), "lost": int((arm_a.hit & ~arm_b.hit).sum())}
        e = out["endpoints"][f"{key} >={band}"]
        if key == "ams":  # McNemar's exact test on the images whose outcome changed
            e["mcnemar_p"] = statistics.mcnemar_exact(e["gained"], e["lost"])
        else:
            e["difference"], e["difference_lo"], e["difference_hi"] = ums_difference(arm_b, arm_a)
    same_nearest = same_band = total = 0
    mid = masks[("mid", True)]
    for da, db_ in zip(a, b):
        ia, ib = np.isin(da["index"], keep), np.isin(db_["index"], keep)
        same_nearest += int((da["nearest"][ia] == db_["nearest"][ib]).sum())
        same_band += int((mid(da["best"][ia]) == mid(db_["best"][ib])).sum())
        total += int(ia.sum())
    out["same_nearest"], out["same_mid_outcome"], out["guided"] = same_nearest / total, same_band / total, total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspaces", type=Path, nargs="+", help="pairs: the reference audit, then the other")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if len(args.workspaces) % 2:
        ap.error("workspaces come in pairs")
    rows = [compare(a, b) for a, b in zip(args.workspaces[::2], args.workspaces[1::2])]
    print("| audits | guide | n per λ | AMS ≥mid ratio | UMS ≥mid ratio | AMS high ratio | same nearest | "
          "same ≥mid outcome |\n|---|---|---:|---|---|---|---:|---:|")
    for r in rows:
        cells = [f"{e['ratio']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]" + (
            f" (+{e['gained']} −{e['lost']}, McNemar p {e['mcnemar_p']:.2g})" if k.startswith("ams") else
            f"; difference {e['difference']:+.0f} [{e['difference_lo']:+.1f}, {e['difference_hi']:+.1f}] images")
            for k, e in r["endpoints"].items()]
        print(f"| {Path(r['b']).name} vs {Path(r['a']).name} | {' vs '.join(map(str, r['guide_precision'][::-1]))} "
              f"| {r['n']} | {' | '.join(cells)} | {100 * r['same_nearest']:.1f} % | "
              f"{100 * r['same_mid_outcome']:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
