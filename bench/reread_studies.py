"""Re-read the defaults' study cells with intervals that hold, from the counts that were kept.

The studies kept each cell's rates (the method's mean over its declared λ range, Random's) but
not the per-sample pairs the product's paired jackknife needs. From counts alone, a valid test
remains: each count read as a Poisson count — a distinct count of independent finds, and a
count of hits, are less spread than that, and the positive pairing of shared noise only narrows
the truth — compared by the exact conditional test of the method's share of the two, with its
exact interval of the ratio (``statistics.poisson_ratio``). It is
conservative: a cell it calls "more" is more by any valid paired test; one it cannot call may
still be.

Endpoints (declared with issue 43, before this re-read): primary, UMS ≥mid ratio's lower bound
above 1; not worse, AMS ≥mid and AMS at the high band with lower bounds above ``MARGIN`` (0.9).
The null floor: how many cells a method identical to Random would meet, by simulation of
Poisson counts at each cell's own Random counts.

    python bench/reread_studies.py > bench/results/reread-defaults.md
    python bench/reread_studies.py --export bench/work/study/faces2-syn-default-fit-s6 ...  # keep the pairs
    python bench/reread_studies.py --pairs bench/results/pairs/*.json   # re-read cells whose pairs were kept

``--export`` keeps what a cell's audit stored for the comparison — per band (≥mid, high), which
sample positions hit and which (position, training image) pairs lie in the band, for Random and
each guided λ of the declared range — in a small JSON beside the results, so that a later method
can re-read the cell exactly; ``--pairs`` re-reads such files with the product's own paired
comparison (``statistics.paired_comparison``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import results  # noqa: E402
from side_engine.statistics import poisson_ratio  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MARGIN = 0.9
# (label, file, arm): the defaults' classifier draws, and the bf16 guide on the latter two's
DRAWS = [("stored draw (chose the defaults)", "study-demo.json", "syn-clusters-hi", {"faces2"}),
         ("stored draw (chose the defaults)", "study-syn-hi.json", "syn-clusters-hi", {"faces3", "regime"}),
         ("seventeenth study's draw", "study-bf16.json", "syn-default", None),
         ("eighteenth study's fresh seeds", "study-bf16-fresh.json", "syn-default", None)]
ENDPOINTS = (("UMS ≥mid", "mid", "ums", 1.0), ("AMS ≥mid", "mid", "ams", MARGIN),
             ("AMS high", "high", "ams", MARGIN))


def cells() -> list[dict]:
    out = []
    for label, name, arm, models in DRAWS:
        data = json.loads((RESULTS / name).read_text())
        for r in data["rows"]:
            if r["arm"] != arm or (models and r["model"] not in models):
                continue
            cell = {"draw": label, "model": r["model"], "seed": r["seed"], "endpoints": []}
            for title, band, key, bound in ENDPOINTS:
                b = r[band]
                n = b["n"]
                m, x = b[f"{key}_method"] * n, b[f"{key}_random"] * n
                c = poisson_ratio(m, x)
                cell["endpoints"].append({"endpoint": title, "method": m, "random": x, "ratio": c["ratio"],
                                          "lo": c["ratio_lo"], "hi": c["ratio_hi"], "p": c["p"],
                                          "met": bool(c["ratio_lo"] > bound), "old": [b[f"{key}_ratio"],
                                                                                     b[f"{key}_ratio_lo"],
                                                                                     b[f"{key}_ratio_hi"]]})
            cell["all"] = all(e["met"] for e in cell["endpoints"])
            out.append(cell)
    return out


def null_floor(cell: dict, rng: np.random.Generator, reps: int = 2000) -> tuple[float, float]:
    """(primary met, all met) for a method identical to Random at this cell's Random counts."""
    hits = np.zeros((reps, len(ENDPOINTS)), bool)
    for j, ((_, _, _, bound), e) in enumerate(zip(ENDPOINTS, cell["endpoints"])):
        mean = max(e["random"], 0.5)
        a, b = rng.poisson(mean, reps), rng.poisson(mean, reps)
        hits[:, j] = [poisson_ratio(x, y)["ratio_lo"] > bound for x, y in zip(a, b)]
    return float(hits[:, 0].mean()), float(hits.all(axis=1).mean())


def fmt(r: float, lo: float, hi: float) -> str:
    return results.with_interval(r, lo, hi, percent=False)


def export(ws: Path) -> Path:
    """The cell's arms at ≥mid and at high, on the positions Random and every λ of the range hold."""
    from side_engine import results, storage
    from side_engine.config import AuditConfig

    db = storage.connect(ws / "audit.db", readonly=True)
    try:
        cfg = AuditConfig.from_stored(results.audit_info(db)["config"])
        bands, higher = results.stored_bands(db)
        lams = [lam for m, lam in cfg.grid() if m == "side" and lam in cfg.table_grid()]
        data = {lam: results.arm_data(db, m, lam) for m, lam in [("random", 0.0)] + [("side", x) for x in lams]}
        keep = data[0.0]["index"]
        for d in data.values():
            keep = np.intersect1d(keep, d["index"])
        out = {"workspace": ws.name, "seed": cfg.seed, "lambdas": lams, "n": int(len(keep)), "bands": {}}
        for name, cum, mask in results.band_masks(bands, higher):
            if not cum or name not in ("mid", "high"):
                continue
            arms = {}
            for lam, d in data.items():
                a = results.arm(d, mask, keep, cfg.ums == "nearest-only")
                arms[str(lam)] = {"hit": np.flatnonzero(a.hit).tolist(), "pair_pos": a.pair_pos.tolist(),
                                  "pair_train": a.pair_train.tolist()}
            out["bands"][name] = arms
    finally:
        db.close()
    path = RESULTS / "pairs" / f"{ws.name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, separators=(",", ":")))
    return path


def reread_pairs(paths: list[Path]) -> None:
    """Each kept cell through the product's paired comparison, over its declared λ range."""
    from side_engine.arms import Arm

    print("| cell | UMS ≥mid | AMS ≥mid | AMS high | endpoints met |")
    print("|---|---|---|---|---:|")
    for path in paths:
        d = json.loads(Path(path).read_text())
        n = d["n"]

        def arm(x: dict, n: int = n) -> Arm:
            hit = np.zeros(n, bool)
            hit[x["hit"]] = True
            return Arm(hit, np.asarray(x["pair_pos"], np.int64), np.asarray(x["pair_train"], np.int64))

        parts, met = [], 0
        for _, band, key, bound in ENDPOINTS:
            arms = d["bands"][band]
            c = compare_pairs([arm(arms[str(lam)]) for lam in d["lambdas"]], arm(arms["0.0"]))
            ok = c[f"{key}_ratio_lo"] > bound
            met += ok
            parts.append(f"{fmt(c[f'{key}_ratio'], c[f'{key}_ratio_lo'], c[f'{key}_ratio_hi'])}"
                         f"{' ✓' if ok else ''} ({c[f'{key}_verdict_word']})")
        print(f"| {d['workspace']} | " + " | ".join(parts) + f" | {met} of 3 |")


def compare_pairs(method, random) -> dict:
    from side_engine.statistics import ALPHA, paired_comparison

    c = paired_comparison(method, random)
    for key in ("ams", "ums"):
        word = "no difference shown" if c[f"{key}_p"] >= ALPHA else (
            "more than Random" if c[f"{key}_ratio"] > 1 else "fewer than Random")
        c[f"{key}_verdict_word"] = word
    return c


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", type=Path, nargs="+", help="study workspaces whose pairs to keep")
    ap.add_argument("--pairs", type=Path, nargs="+", help="kept pairs to re-read")
    args = ap.parse_args()
    if args.export:
        for ws in args.export:
            print(export(ws))
        return 0
    if args.pairs:
        reread_pairs(args.pairs)
        return 0
    rng = np.random.default_rng(43)
    rows = cells()
    print("| draw | model | seed | UMS ≥mid (re-read; before) | AMS ≥mid | AMS high | endpoints met |")
    print("|---|---|---:|---|---|---|---:|")
    floors = []
    for c in rows:
        e = c["endpoints"]
        parts = [f"{fmt(x['ratio'], x['lo'], x['hi'])}{' ✓' if x['met'] else ''}"
                 + (f" (was {fmt(*x['old'])})" if i == 0 else "") for i, x in enumerate(e)]
        print(f"| {c['draw']} | {c['model']} | {c['seed']} | " + " | ".join(parts)
              + f" | {sum(x['met'] for x in e)} of 3 |")
        floors.append(null_floor(c, rng))
    by_draw: dict[str, list] = {}
    for c, f in zip(rows, floors):
        by_draw.setdefault(c["draw"], []).append((c, f))
    print()
    print("| draw | cells (model × seed) | primary met | all three met | null floor: primary | null floor: all |")
    print("|---|---:|---:|---:|---:|---:|")
    for draw, items in by_draw.items():
        cs = [c for c, _ in items]
        print(f"| {draw} | {len(cs)} | {sum(c['endpoints'][0]['met'] for c in cs)} | {sum(c['all'] for c in cs)} | "
              f"{sum(f[0] for _, f in items):.2f} | {sum(f[1] for _, f in items):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
