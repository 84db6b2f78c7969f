"""Which targets does guidance help? Post-hoc reading of finished audits (no sampling).

For each guided λ: the share of guided samples whose nearest training image lies
in the target class and at ≥mid, split by whether Random (the model's own
sampler, same N_G) ever reached that class at ≥mid: "memorised" targets (Random
copies them) against targets the model does not copy unprompted. Also the share
of each λ's samples that land at ≥mid on *any* image vs on their target.

    python bench/analyse_targets.py bench/work/replication/regime-defaults-s*
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import storage  # noqa: E402
from side_engine.results import stored_bands  # noqa: E402


def analyse(ws: Path) -> list[str]:
    db = storage.connect(ws / "audit.db")
    try:
        bands, higher = stored_bands(db)
        mid = next(b for b in bands if b.name == "mid")
        close = (lambda s: s >= mid.lo) if higher else (lambda s: s < mid.hi)
        label = {r["idx"]: r["surrogate"] for r in db.query("select idx, surrogate from train_images")}
        rnd = [r for r in db.query("select nearest, best from samples where method = 'random'")]
        copied = {label[r["nearest"]] for r in rnd if close(r["best"])}
        k = len(set(label.values()))
        lines = [f"{ws.name}: K = {k}; Random reached {len(copied)} classes at ≥mid "
                 f"({sum(close(r['best']) for r in rnd)} of {len(rnd)} samples)"]
        for lam in [r[0] for r in db.execute("select distinct lam from samples where method = 'side' order by lam")]:
            rows = list(db.query("select cls, nearest, best from samples where method = 'side' and lam = ?", [lam]))
            groups = {"copied by Random": [r for r in rows if r["cls"] in copied],
                      "not copied by Random": [r for r in rows if r["cls"] not in copied]}
            parts = []
            for name, g in groups.items():
                on_target = sum(close(r["best"]) and label[r["nearest"]] == r["cls"] for r in g)
                anywhere = sum(close(r["best"]) for r in g)
                parts.append(f"{name}: {len(g)} samples, ≥mid on target {on_target} "
                             f"({100 * on_target / max(len(g), 1):.1f} %), ≥mid anywhere {anywhere}")
            new = {label[r["nearest"]] for r in rows if close(r["best"])} - copied
            lines.append(f"  λ = {lam:g}: " + "; ".join(parts) + f"; classes reached that Random missed: {len(new)}")
        return lines
    finally:
        db.close()


def main() -> None:
    for arg in sys.argv[1:]:
        print("\n".join(analyse(Path(arg))))


if __name__ == "__main__":
    main()
