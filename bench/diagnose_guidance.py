"""Why does (or doesn't) SIDE beat Random? Probe one audited workspace's TD classifier.

For n samples on the audit's own seeds, at each λ: how often guidance steers to the target
class, how often the nearest training image is the target, the Gu-memorised share, and the
share (and distinct count) of samples at mid or closer under the pixel scorer — on raw
images and after a light Gaussian blur (σ = 1 px) of both sides, which separates "guided
images lose fine detail" from "guided images reproduce nothing".

    python bench/diagnose_guidance.py bench/work/replication/k32-s0 --lambdas 0,5,10 --n 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from side_engine.checkpoint import load_target  # noqa: E402
from side_engine.classifiers import load_classifier  # noqa: E402
from side_engine.config import AuditConfig  # noqa: E402
from side_engine.neighbours import TrainIndex  # noqa: E402
from side_engine.sampler import Guide, GuidedSampler, sample_inputs, sample_seed, to_uint8  # noqa: E402
from side_engine.scorers import PixelScorer, bands_for  # noqa: E402
from side_engine.workspace import Workspace  # noqa: E402


def blur(images: np.ndarray) -> np.ndarray:
    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).filter(ImageFilter.GaussianBlur(1.0))
        arr = np.asarray(pil)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace")
    ap.add_argument("--lambdas", default="0,5,10")
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    cfg = ws.load_config()
    target = load_target(cfg.checkpoint)
    td = load_classifier(ws.classifiers_dir / "td.safetensors").requires_grad_(False)
    k = td.hparams["num_classes"]
    train = np.load(ws.cache_dir / "train_pixels.npy")
    scorer, bands = PixelScorer(), bands_for(AuditConfig().bands_pixel)
    raw_index = TrainIndex(scorer, scorer.embed(train), bands)
    blur_index = TrainIndex(scorer, scorer.embed(blur(train)), bands)
    sampler = GuidedSampler(target.unet, target.scheduler, cfg.sampler, cfg.steps, cfg.eta)
    shape = (target.channels, target.sample_size, target.sample_size)
    inputs = [sample_inputs(sample_seed(cfg.seed, i), shape, k) for i in range(args.n)]
    noise = torch.stack([x for x, _, _ in inputs])
    cls = torch.tensor([c for _, c, _ in inputs])
    mid = bands[1].hi  # "mid or closer": ratio below the mid band's upper edge
    print("| λ | steered | nearest = target | Gu | ≥mid raw | distinct ≥mid raw | ≥mid blurred "
          "| distinct ≥mid blurred |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lam in [float(v) for v in args.lambdas.split(",")]:
        guides = [Guide(td, torch.arange(args.n), True)] if lam else []
        x0 = sampler.sample(noise, torch.full((args.n,), lam), cls, guides,
                            generators=[g for _, _, g in inputs])
        with torch.no_grad():
            steered = (td(x0, torch.zeros(args.n, dtype=torch.long)).argmax(1) == cls).float().mean().item()
        images = to_uint8(x0)
        raw = raw_index.score(scorer.embed(images))
        blurred = blur_index.score(scorer.embed(blur(images)))
        print(f"| {lam:g} | {steered:.2f} | {np.mean(raw.nearest == cls.numpy()):.2f} | "
              f"{np.nanmean(raw.gu_ratio < 1 / 3):.2f} | {np.mean(raw.best < mid):.2f} | "
              f"{len(set(raw.nearest[raw.best < mid]))} | {np.mean(blurred.best < mid):.2f} | "
              f"{len(set(blurred.nearest[blurred.best < mid]))} |")


if __name__ == "__main__":
    main()
