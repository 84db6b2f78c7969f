"""Screen: what would other target distributions have given? Re-weighting of finished audits.

Every guided sample stores its target class, and targets are stratified (N_G / K samples aimed
at each class, per λ). An endpoint under another target distribution q is then estimated as
Σ_k q_k · (the rate among the stored samples aimed at k); distinct images (UMS) by drawing N_G
targets from q and, for each, one stored sample aimed at it. Random is the stored Random arm,
resampled the same way. No sampling, no intervals: with N_G / K stored samples per class it is a
screen that says which rules are worth a study, not a result (``study-guidance-declared.md``).

Rules screened, each built from what a run knows before it spends its budget — the guide check's
probe, whose unguided half is Random's samples 0–31 (the same noise) — or, as a ceiling, from all
of Random's samples:

    uniform      the default: every class alike
    probe        the classes of the probe's samples' nearest training images
    half-high    half uniform, half the classes of the probe's high-band copies
    half-mid     half uniform, half the classes of the probe's ≥mid copies
    third-high   70 % uniform, 30 % the classes of the probe's high-band copies
    half-high-N  half-high from all of Random's samples instead of the probe's 32

    python bench/screen_targets.py bench/work/study/patches-settled-s* bench/work/study/regime-settled-c1-s*
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import storage  # noqa: E402
from side_engine.guide_check import PROBE  # noqa: E402
from side_engine.results import stored_bands  # noqa: E402

DRAWS = 200  # Monte Carlo draws of N_G targets for the distinct-image estimate


def shares(classes: np.ndarray, k: int) -> np.ndarray:
    """Class distribution of ``classes`` (uniform where there are none)."""
    c = np.bincount(classes, minlength=k).astype(float)
    return c / c.sum() if c.sum() else np.full(k, 1 / k)


def screen(ws: Path, rng: np.random.Generator) -> list[str]:
    db = storage.connect(ws / "audit.db")
    try:
        bands, higher = stored_bands(db)
        edge = {b.name: (b.lo if higher else b.hi) for b in bands}

        def within(score: np.ndarray, band: str) -> np.ndarray:
            return score >= edge[band] if higher else score < edge[band]

        label = np.array([r["surrogate"] for r in db.query("select surrogate from train_images order by idx")])
        k = int(label.max()) + 1
        rnd = list(db.query("select nearest, best from samples where method = 'random' order by sample_index"))
        r_cls = label[np.array([r["nearest"] for r in rnd])]
        r_score = np.array([r["best"] for r in rnd])
        r_mid, r_high = within(r_score, "mid"), within(r_score, "high")
        r_near = np.array([r["nearest"] for r in rnd])
        boot = [rng.integers(0, len(rnd), len(rnd)) for _ in range(DRAWS)]
        r_distinct = np.mean([len(set(r_near[i][r_mid[i]])) for i in boot])
        n = min(PROBE, len(rnd))
        rules = {"uniform": np.full(k, 1 / k), "probe": shares(r_cls[:n], k),
                 "half-high": 0.5 / k + 0.5 * shares(r_cls[:n][r_high[:n]], k),
                 "half-mid": 0.5 / k + 0.5 * shares(r_cls[:n][r_mid[:n]], k),
                 "third-high": 0.7 / k + 0.3 * shares(r_cls[:n][r_high[:n]], k),
                 "half-high-N": 0.5 / k + 0.5 * shares(r_cls[r_high], k)}
        lines = [f"| {ws.name} | λ | rule | UMS ≥mid ratio | AMS ≥mid ratio | AMS high ratio |",
                 "|---|---:|---|---:|---:|---:|"]
        for lam in [r[0] for r in db.execute("select distinct lam from samples where method = 'side' order by lam")]:
            rows = list(db.query("select cls, nearest, best from samples where method = 'side' and lam = ?", [lam]))
            cls = np.array([r["cls"] for r in rows])
            near = np.array([r["nearest"] for r in rows])
            score = np.array([r["best"] for r in rows])
            mid, high = within(score, "mid"), within(score, "high")
            by = [np.flatnonzero(cls == c) for c in range(k)]
            m_k = np.array([mid[i].mean() if len(i) else 0.0 for i in by])
            h_k = np.array([high[i].mean() if len(i) else 0.0 for i in by])
            for name, q in rules.items():
                q = np.where([len(i) > 0 for i in by], q, 0.0)
                q = q / q.sum()
                distinct = []
                for _ in range(DRAWS):
                    pick = np.array([by[c][rng.integers(len(by[c]))] for c in rng.choice(k, len(rows), p=q)])
                    distinct.append(len(set(near[pick][mid[pick]])))
                ams = (q * m_k).sum() / max(r_mid.mean(), 1e-12)
                hi = (q * h_k).sum() / max(r_high.mean(), 1e-12)
                lines.append(f"| | {lam:g} | {name} | {np.mean(distinct) / r_distinct:.2f} | {ams:.2f} | {hi:.2f} |")
        return lines
    finally:
        db.close()


def main() -> None:
    rng = np.random.default_rng(0)
    for arg in sys.argv[1:]:
        print("\n".join(screen(Path(arg), rng)) + "\n")


if __name__ == "__main__":
    main()
