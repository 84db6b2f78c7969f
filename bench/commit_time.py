"""When does a model's own sampler settle on the training image it ends nearest to?

For unguided DDIM samples (the Random arm's noise), at every step the model's clean-image
prediction x̂0 is matched to its nearest training image (RMS ℓ2 on the model's pixels, the pixel
scorer's distance); a sample is *committed* at step t when that nearest image is its final one at t
and at every later step. After a sample has committed, guidance can no longer change which
training image it becomes, only how exactly it copies it. Characterises models; chooses nothing.

    python bench/commit_time.py --models faces2 regime copier --n 128

Minutes on two CPU cores (the UNet's steps only); a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.study_guidance import MODELS  # noqa: E402
from side_engine.checkpoint import load_target  # noqa: E402
from side_engine.guide_check import commit_curve  # noqa: E402
from side_engine.sampler import GuidedSampler, sample_inputs, sample_seed  # noqa: E402
from side_engine.training_set import import_training_set, to_model_tensor_range  # noqa: E402


def measure(model: str, n: int, seed: int, batch: int = 64) -> dict:
    target = load_target(MODELS[model] / "model")
    size, ch = target.sample_size, target.channels
    train = torch.from_numpy(to_model_tensor_range(import_training_set(MODELS[model] / "faces", size, ch).pixels))
    sampler = GuidedSampler(target.unet, target.scheduler, "ddim", 50, 0.0, "cpu", overlap=False)
    nearest, ratios = [], []
    for s in range(0, n, batch):
        idx = range(s, min(n, s + batch))
        noise = torch.stack([sample_inputs(sample_seed(seed, i), (ch, size, size), 0)[0] for i in idx])
        steps: list[np.ndarray] = []

        def watch(t: int, x0: torch.Tensor, steps=steps) -> None:
            steps.append(torch.cdist(x0.flatten(1), train.flatten(1)).argmin(1).numpy())

        x = sampler.sample(noise, torch.zeros(len(idx)), torch.full((len(idx),), -1), on_step=watch).images
        d = torch.cdist(x.flatten(1), train.flatten(1))
        two = d.topk(2, largest=False)
        steps.append(two.indices[:, 0].numpy())
        nearest.append(np.stack(steps, 1))
        ratios.append((two.values[:, 0] / two.values[:, 1]).numpy())
    nn = np.concatenate(nearest)
    ratio = np.concatenate(ratios)
    out = {"model": model, "n": n, "timesteps": sampler.timesteps}
    for name, keep in (("all", np.ones(len(ratio), bool)), ("ge_mid", ratio < 0.5), ("high", ratio < 1 / 3)):
        curve = commit_curve(nn[keep])
        out[name] = {"n": int(keep.sum()), "committed": curve}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = []
    for m in a.models:
        r = measure(m, a.n, a.seed)
        rows.append(r)
        ts = r["timesteps"]
        print(f"\n{m}: share of samples committed to their final nearest training image, by sampler step")
        print("t      " + " ".join(f"{t:>5d}" for t in ts[::5]))
        for name in ("all", "ge_mid", "high"):
            c = r[name]["committed"]
            print(f"{name:6s} " + " ".join(f"{100 * v:5.0f}" for v in c[::5]) + f"   (n = {r[name]['n']})")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
