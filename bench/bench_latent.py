"""Latent diffusion: what a guided step costs next to an unguided one, what decoding adds, and
a small audit end to end — for a latent model and for a pixel model of the same image size.

Random weights, 64 px RGB images. Latent: an AutoencoderKL with 4× down-sampling (4 × 16 × 16
latents) and a UNet on the latents; pixel: a UNet of the same widths on the images. The TD
classifier (ResNet-34 layout, width 16) sees what the UNet models. Times are best of
``--repeat`` interleaved rounds.

    python bench/bench_latent.py [--batch 16] [--steps 10] [--repeat 3] [--audit] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_sampling import interleaved  # noqa: E402

from side_engine.checkpoint import load_target  # noqa: E402
from side_engine.classifiers import ResNetClassifier, for_guidance, time_dependent_from  # noqa: E402
from side_engine.sampler import Guide, GuidedSampler  # noqa: E402

WIDTHS = (32, 64, 64)


def make_models(root: Path) -> dict[str, Path]:
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = dict(block_out_channels=WIDTHS, layers_per_block=1, norm_num_groups=8,
                down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3)
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    latent = root / "latent"
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=WIDTHS, layers_per_block=1,
                  latent_channels=4, norm_num_groups=8, sample_size=64).save_pretrained(latent / "vae")
    UNet2DModel(sample_size=16, in_channels=4, out_channels=4, **unet).save_pretrained(latent / "unet")
    sched.save_pretrained(latent / "scheduler")
    pixel = root / "pixel"
    DDPMPipeline(unet=UNet2DModel(sample_size=64, in_channels=3, out_channels=3, **unet),
                 scheduler=DDIMScheduler(num_train_timesteps=1000, clip_sample=True)).save_pretrained(pixel)
    return {"latent": latent, "pixel": pixel}


def step_costs(path: Path, batch: int, steps: int, repeat: int) -> dict:
    target = load_target(path)
    torch.manual_seed(1)
    td = for_guidance(time_dependent_from(ResNetClassifier(100, target.channels, 16, True)).eval())
    sampler = GuidedSampler(target.unet, target.scheduler, "ddim", steps)
    noise = torch.randn(batch, target.channels, target.sample_size, target.sample_size)
    cls = torch.arange(batch) % 100
    z = sampler.sample(noise, torch.zeros(batch), cls).images
    variants = {
        "unguided": lambda: sampler.sample(noise, torch.zeros(batch), cls).images,
        "guided": lambda: sampler.sample(noise, torch.full((batch,), 5.0), cls,
                                         [Guide(td, torch.arange(batch), True)]).images,
        "decode": lambda: target.decode(z),
    }
    best = interleaved(variants, torch.device("cpu"), repeat)
    sampler.close()
    return {"per_batch_s": best, "guided_over_unguided": best["guided"] / best["unguided"],
            "decode_share_of_guided_batch": best["decode"] / (best["guided"] + best["decode"]),
            "latent_shape": [target.channels, target.sample_size, target.sample_size],
            "image_size": target.image_size}


def audit_seconds(path: Path, steps: int) -> dict:
    from side_engine import storage
    from side_engine.audit import AuditRunner, init_workspace
    from side_engine.demo import DEMO_FACES

    settings = dict(classifier_epochs=2, classifier_min_steps=60, classifier_fit=0.0, n_syn=128, tdkd_epochs=5,
                    lambdas=[0, 5],
                    n_per_lambda=64, steps=steps, batch_size=16, device="cpu", scorer="sscd", classifier_width=16)
    ws = init_workspace(Path(tempfile.mkdtemp()) / "ws", str(path), str(DEMO_FACES), **settings)
    t0 = time.time()
    AuditRunner(ws).run()
    db = storage.connect(ws.db_path)
    stages = {r["name"]: round(r["seconds"] or 0.0, 1) for r in storage.stage_rows(db)}
    db.close()
    return {"wall_s": round(time.time() - t0, 1), "stages_s": stages}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--audit", action="store_true", help="also a small audit of each model end to end")
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {"batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads()}
    paths = make_models(Path(tempfile.mkdtemp()))
    for name, path in paths.items():
        r = out[name] = step_costs(path, args.batch, args.steps, args.repeat)
        t = r["per_batch_s"]
        print(f"{name}: unguided {t['unguided']:.2f} s, guided {t['guided']:.2f} s a batch of {args.batch} "
              f"({args.steps} steps) — guided/unguided {r['guided_over_unguided']:.2f}; decode {t['decode']:.3f} s "
              f"({100 * r['decode_share_of_guided_batch']:.1f} % of a guided batch)", flush=True)
        if args.audit:
            r["audit"] = audit_seconds(path, args.steps)
            print(f"  audit end to end: {r['audit']['wall_s']} s; stages {r['audit']['stages_s']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
