"""What moves SIDE's result? Variants of guidance on a finished audit's own networks.

Reuses a finished workspace's target model, TD classifier, labels and sample
seeds (sample i starts from the audit's noise and targets the audit's class), and
samples N images per variant: λ, and the native-timestep window in which
guidance acts (all steps, only low noise, only high noise). Reports, paired with
Random on the same noise: AMS ≥mid and high with Wilson intervals, McNemar's
exact p against Random (Holm over the variants), distinct training images at
≥mid, "steered" and how often the nearest image is the target.

    python bench/investigate_guidance.py bench/work/replication/regime-defaults-s0 --n 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import storage  # noqa: E402
from side_engine.checkpoint import load_target  # noqa: E402
from side_engine.classifiers import for_guidance, load_classifier  # noqa: E402
from side_engine.neighbours import TrainIndex  # noqa: E402
from side_engine.results import stored_bands  # noqa: E402
from side_engine.sampler import Guide, GuidedSampler, sample_inputs, sample_seed, target_classes, to_uint8  # noqa: E402
from side_engine.scorers import make_scorer  # noqa: E402
from side_engine.statistics import holm, mcnemar_exact, wilson  # noqa: E402
from side_engine.workspace import Workspace  # noqa: E402

VARIANTS = [  # (name, λ, window of native timesteps where guidance acts)
    ("Random", 0.0, (0, 1000)),
    ("λ 10, all steps", 10.0, (0, 1000)),
    ("λ 10, t < 500 only", 10.0, (0, 499)),
    ("λ 10, t ≥ 500 only", 10.0, (500, 1000)),
    ("λ 3, all steps", 3.0, (0, 1000)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    cfg = ws.load_config()
    db = storage.connect(ws.db_path)
    bands, higher = stored_bands(db)
    k = storage.get_kv(db, "k")
    labels = np.array([r["surrogate"] for r in db.query("select surrogate from train_images order by idx")])
    db.close()
    target = load_target(cfg.checkpoint, cfg.scheduler_config)
    td = load_classifier(ws.classifiers_dir / "td.safetensors", "cpu").eval().requires_grad_(False)
    guide_net = for_guidance(td)
    scorer = make_scorer("pixel")
    train = np.load(ws.cache_dir / "train_pixels.npy")
    index = TrainIndex(scorer, scorer.embed(train), bands)
    mid, high = (next(b for b in bands if b.name == n) for n in ("mid", "high"))
    shape = (target.channels, target.sample_size, target.sample_size)
    classes = target_classes(cfg.seed, cfg.n_per_lambda, k)
    results = {}
    for name, lam, window in VARIANTS:
        sampler = GuidedSampler(target.unet, target.scheduler, cfg.sampler, cfg.steps, cfg.eta,
                                convention=cfg.sampler_convention)
        sampler.guidance_window = window
        best, nearest, steered = [], [], []
        for start in range(0, args.n, args.batch):
            idx = range(start, min(start + args.batch, args.n))
            inputs = [sample_inputs(sample_seed(cfg.seed, i), shape, k) for i in idx]
            noise = torch.stack([x for x, _, _ in inputs])
            cls = torch.tensor([int(classes[i]) for i in idx])
            rows = torch.arange(len(idx)) if lam > 0 else torch.zeros(0, dtype=torch.long)
            x0 = sampler.sample(noise, torch.full((len(idx),), lam), cls, [Guide(guide_net, rows, True)],
                                generators=[g for _, _, g in inputs])
            with torch.no_grad():
                steered += (td(x0, torch.zeros(len(idx), dtype=torch.long)).argmax(1) == cls).tolist()
            s = index.score(scorer.embed(to_uint8(x0)))
            best += s.best.tolist()
            nearest += s.nearest.tolist()
        sampler.close()
        best, nearest = np.array(best), np.array(nearest)
        cls_all = classes[: args.n]
        results[name] = {"mid": best < mid.hi, "high": best < high.hi, "nearest": nearest,
                         "on_target": (labels[nearest] == cls_all) & (best < mid.hi),
                         "steered": float(np.mean(steered))}
        print(f"done: {name}", flush=True)
    rnd = results["Random"]
    ps = {name: mcnemar_exact(int((r["mid"] & ~rnd["mid"]).sum()), int((rnd["mid"] & ~r["mid"]).sum()))
          for name, r in results.items() if name != "Random"}
    adj = dict(zip(ps, holm(list(ps.values()))))
    print(f"\n{ws.root.name}, N = {args.n} per variant, {cfg.sampler.upper()} {cfg.steps} steps, K = {k}\n")
    print("| variant | AMS ≥mid | AMS high (Gu) | distinct ≥mid | on target ≥mid | steered | McNemar p (Holm) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        n = len(r["mid"])
        cells = []
        for key in ("mid", "high"):
            kk = int(r[key].sum())
            lo, hi = wilson(kk, n)
            cells.append(f"{100 * kk / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        distinct = len(np.unique(r["nearest"][r["mid"]]))
        p = "—" if name == "Random" else f"{adj[name]:.2g}"
        print(f"| {name} | {cells[0]} | {cells[1]} | {distinct} | {100 * r['on_target'].mean():.1f} % "
              f"| {100 * r['steered']:.1f} % | {p} |")


if __name__ == "__main__":
    main()
