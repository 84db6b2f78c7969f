"""Sampling speed: our unguided sampler vs diffusers' DDIMPipeline, and SIDE-guided vs unguided.

Same UNet, batch, steps and precision, measured in one process. On CPU: the
demo model with a demo-sized TD classifier. On CUDA: the diffusers default
unconditional 128x128 UNet2DModel config (random weights) with the ResNet-34
TD classifier, fp32 and bf16 autocast (+ channels_last, torch.compile).

    python bench/bench_sampling.py [--device cpu|cuda] [--batch 32] [--steps 25] [--repeat 3]

Prints a table; the last line is the guided/unguided ratio.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import DDIMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from side_engine.checkpoint import load_target  # noqa: E402
from side_engine.classifiers import ResNetClassifier, time_dependent_from  # noqa: E402
from side_engine.demo import DEMO_MODEL, DEMO_SETTINGS  # noqa: E402
from side_engine.sampler import Guide, GuidedSampler  # noqa: E402


def interleaved(variants: dict, device, repeat: int) -> dict:
    """Best of ``repeat`` rounds, the variants alternating within each round so that a slow
    stretch of the machine hits all of them alike."""
    for fn in variants.values():
        fn()  # warm-up (and compilation)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeat):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def models(device):
    if device.type == "cuda":
        unet = UNet2DModel(sample_size=128, in_channels=3, out_channels=3, layers_per_block=2,
                           block_out_channels=(128, 128, 256, 256, 512, 512),
                           down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)
        sched = DDPMScheduler(num_train_timesteps=1000)
        clf = time_dependent_from(ResNetClassifier(100, 3, 64, small_stem=False))
        return unet.to(device).eval().requires_grad_(False), sched, clf.to(device).eval().requires_grad_(False)
    target = load_target(DEMO_MODEL)
    clf = time_dependent_from(ResNetClassifier(32, 1, DEMO_SETTINGS["classifier_width"]))
    return target.unet, target.scheduler, clf.eval().requires_grad_(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    device = torch.device(args.device)
    unet, sched, clf = models(device)
    size, ch = unet.config.sample_size, unet.config.in_channels
    b = args.batch
    noise = torch.randn(b, ch, size, size, generator=torch.Generator().manual_seed(0))
    cls = torch.arange(b) % clf.hparams["num_classes"]
    rows = torch.arange(b, device=device)
    print(f"# {platform.machine()} {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else ''}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {size} px x{ch}, batch {b}, "
          f"{args.steps} DDIM steps, {time.strftime('%Y-%m-%d')}")
    variants = {}
    pipe = DDIMPipeline(unet=unet, scheduler=sched).to(device)
    pipe.set_progress_bar_config(disable=True)

    def diffusers_run():
        gen = torch.Generator(device="cpu").manual_seed(0)
        pipe(batch_size=b, num_inference_steps=args.steps, generator=gen, output_type="np")

    variants["diffusers DDIMPipeline fp32"] = diffusers_run
    for precision in (["fp32", "bf16"] if device.type == "cuda" else ["fp32"]):
        s = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, precision)
        variants[f"ours unguided {precision}"] = lambda s=s: s.sample(noise, torch.zeros(b), cls)
        variants[f"ours SIDE-guided {precision}"] = (
            lambda s=s: s.sample(noise, torch.full((b,), 3.0), cls, [Guide(clf, rows, True)]))
    if device.type == "cuda":
        try:
            unet_c = torch.compile(unet.to(memory_format=torch.channels_last))
            clf.to(memory_format=torch.channels_last)
            s = GuidedSampler(unet_c, sched, "ddim", args.steps, 0.0, device, "bf16")
            variants["ours unguided bf16+channels_last+compile"] = lambda s=s: s.sample(noise, torch.zeros(b), cls)
            variants["ours SIDE-guided bf16+channels_last+compile"] = (
                lambda s=s: s.sample(noise, torch.full((b,), 3.0), cls, [Guide(clf, rows, True)]))
        except Exception as e:  # compile is optional
            print(f"# torch.compile unavailable: {e}")
    results = interleaved(variants, device, args.repeat)
    print("| variant | s / batch | images/s |\n|---|---:|---:|")
    for name, sec in results.items():
        print(f"| {name} | {sec:.3f} | {b / sec:.1f} |")
    base = results["diffusers DDIMPipeline fp32"]
    print(f"ours unguided fp32 / DDIMPipeline fp32 speed: {base / results['ours unguided fp32']:.2f}")
    if "ours unguided bf16+channels_last+compile" in results:
        print(f"best ours unguided / DDIMPipeline fp32 speed: "
              f"{base / results['ours unguided bf16+channels_last+compile']:.2f}")
    print(f"guided/unguided: {results['ours SIDE-guided fp32'] / results['ours unguided fp32']:.2f}")


if __name__ == "__main__":
    main()
