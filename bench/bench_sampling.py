"""Sampling speed: our unguided sampler vs diffusers' DDIMPipeline, and SIDE-guided vs unguided.

Same UNet, batch, steps and precision, measured in one process. On CPU: the
demo model with a demo-sized TD classifier. On CUDA: the diffusers default
unconditional 128x128 UNet2DModel config (random weights) with the ResNet-34
TD classifier, fp32 and bf16 autocast, channels_last, torch.compile.

    python bench/bench_sampling.py [--device cpu|cuda] [--batch 32] [--steps 25] [--repeat 7] [--widths 8 12]

Prints a table; the last line is the guided/unguided ratio of the product's
default path (folded classifier, guidance concurrent with the UNet).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import DDIMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from side_engine.checkpoint import load_target  # noqa: E402
from side_engine.classifiers import ResNetClassifier, for_guidance, time_dependent_from  # noqa: E402
from side_engine.config import AuditConfig  # noqa: E402
from side_engine.demo import DEMO_MODEL, DEMO_SETTINGS  # noqa: E402
from side_engine.devices import autocast, cpu_has_native_bf16  # noqa: E402
from side_engine.sampler import GuidancePlan, Guide, GuidedSampler  # noqa: E402

SETTLED_T = 500  # a typical settled step (the guide check measures it per run)


def interleaved(variants: dict, device, repeat: int) -> dict:
    """Best of ``repeat`` rounds, the variants alternating within each round so that a slow
    stretch of the machine hits all of them alike."""
    for name, fn in variants.items():
        t0 = time.perf_counter()
        fn()  # warm-up (and compilation)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"# warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
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


def td_classifier(width: int, channels: int) -> ResNetClassifier:
    """The demo's TD classifier layout (K = 32) at ``width``; the time projections start at zero,
    which costs what trained ones cost."""
    return time_dependent_from(ResNetClassifier(32, channels, width)).eval().requires_grad_(False)


def models(device, model: Path):
    if device.type == "cuda":
        unet = UNet2DModel(sample_size=128, in_channels=3, out_channels=3, layers_per_block=2,
                           block_out_channels=(128, 128, 256, 256, 512, 512),
                           down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)
        sched = DDPMScheduler(num_train_timesteps=1000)
        clf = time_dependent_from(ResNetClassifier(100, 3, 64, small_stem=False))
        return unet.to(device).eval().requires_grad_(False), sched, clf.to(device).eval().requires_grad_(False)
    target = load_target(model)
    # the demo's TD classifier layout, its width as the demo resolves it (16 at 32 px)
    width = AuditConfig(**DEMO_SETTINGS).resolved_width(target.unet.config.sample_size)
    return target.unet, target.scheduler, td_classifier(width, target.channels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--compile", choices=["no", "also", "only"], default="also",
                    help="CUDA: torch.compile variants (only: just them and their eager twins)")
    ap.add_argument("--json", help="also write the timings here")
    ap.add_argument("--widths", type=int, nargs="*", default=[],
                    help="CPU: the default path also with TD classifiers of these widths (the demo resolves its own)")
    ap.add_argument("--model", type=Path, default=DEMO_MODEL,
                    help="CPU: the diffusers folder sampled (default: the demo model; "
                         "bench/models/copier is the 1.11 M-parameter UNet measured before 2026-12-02)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    unet, sched, clf = models(device, args.model)
    folded = for_guidance(clf)
    size, ch = unet.config.sample_size, unet.config.in_channels
    b = args.batch
    noise = torch.randn(b, ch, size, size, generator=torch.Generator().manual_seed(0))
    cls = torch.arange(b) % clf.hparams["num_classes"]
    rows = torch.arange(b, device=device)
    zeros, guided_lam = torch.zeros(b), torch.full((b,), 3.0)
    print(f"# {platform.machine()} {device} ({torch.cuda.get_device_name() if cuda else ''}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {size} px x{ch}, batch {b}, "
          f"{args.steps} DDIM steps, {time.strftime('%Y-%m-%d')}", flush=True)
    variants = {}
    pipe = DDIMPipeline(unet=unet, scheduler=sched).to(device)
    pipe.set_progress_bar_config(disable=True)

    def pipeline(precision):
        def run():
            gen = torch.Generator(device="cpu").manual_seed(0)
            with autocast(device, precision):
                pipe(batch_size=b, num_inference_steps=args.steps, generator=gen, output_type="np")
        return run

    def ours(s, guided, clf_=folded, plan=None):
        plan = plan or GuidancePlan()
        if guided:
            return lambda: s.sample(noise, guided_lam, cls, [Guide(clf_, rows, True)], plan=plan).images
        return lambda: s.sample(noise, zeros, cls).images

    variants["diffusers DDIMPipeline fp32"] = pipeline("fp32")
    if not cuda:
        s = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "fp32")
        s_seq = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "fp32", overlap=False)
        variants["ours unguided fp32"] = ours(s, False)
        variants["ours SIDE-guided fp32"] = ours(s, True)
        # the default schedule: λ scaled per step by the guide check's weights (a typical profile,
        # 0.7 at t = 0 falling to 0.1 at t = 999; none is 0, so the classifier runs at every step)
        s_rel = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "fp32")
        weights = {t: 0.7 - 0.6 * t / (s_rel.T - 1) for t in range(s_rel.T)}
        variants["ours SIDE-guided fp32, reliability weights"] = ours(s_rel, True, plan=GuidancePlan(weights=weights))
        # the default since 2026-12-04: those weights, and the settled stop, which ends guidance
        # where half of the guide check's unguided probe samples have settled (t = 460-580 measured
        # on the study's three models; 500 here): the classifier runs on about half of the steps
        s_def = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "fp32")
        default = GuidancePlan((SETTLED_T + 1, s_def.T), weights)
        variants["ours SIDE-guided fp32, reliability weights, settled stop (the default)"] = ours(s_def, True,
                                                                                                  plan=default)
        # the seventeenth study's candidate: the same, with the classifier's gradient in bf16
        # (guide_precision; the UNet stays fp32). Where the CPU has no native bf16 it is emulated
        s_bf16 = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "fp32", guide_precision="bf16")
        variants["ours SIDE-guided, settled stop, bf16 guide"] = ours(s_bf16, True, plan=default)
        for w in args.widths:
            variants[f"ours SIDE-guided fp32, settled stop, width {w}"] = ours(
                s_def, True, for_guidance(td_classifier(w, ch)), plan=default)
        variants["ours SIDE-guided fp32, sequential"] = ours(s_seq, True)
        variants["ours SIDE-guided fp32, sequential, unfolded"] = ours(s_seq, True, clf)
        default_u, default_g = "ours unguided fp32", "ours SIDE-guided fp32"
    else:
        variants["diffusers DDIMPipeline bf16 autocast"] = pipeline("bf16")
        # a sampler with channels_last converts its UNet in place: those variants get a copy
        unet_cl = copy.deepcopy(unet)
        s32 = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "fp32", channels_last=False)
        s16 = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "bf16", channels_last=False)
        s16seq = GuidedSampler(unet, sched, "ddim", args.steps, 0.0, device, "bf16", overlap=False,
                               channels_last=False)
        s16cl = GuidedSampler(unet_cl, sched, "ddim", args.steps, 0.0, device, "bf16", channels_last=True)
        variants["ours unguided fp32"] = ours(s32, False)
        variants["ours unguided bf16"] = ours(s16, False)
        variants["ours SIDE-guided bf16"] = ours(s16, True)
        variants["ours SIDE-guided bf16, sequential"] = ours(s16seq, True)
        variants["ours unguided bf16 channels_last"] = ours(s16cl, False)
        variants["ours SIDE-guided bf16 channels_last"] = ours(s16cl, True)
        default_u, default_g = "ours unguided bf16", "ours SIDE-guided bf16"
        if args.compile == "only":
            variants = {k: v for k, v in variants.items() if k in (default_u, default_g)}
        if args.compile != "no":
            for cl in (False, True):
                sc = GuidedSampler(copy.deepcopy(unet), sched, "ddim", args.steps, 0.0, device, "bf16",
                                   compile=True, channels_last=cl)
                tag = " channels_last" if cl else ""
                variants[f"ours unguided bf16{tag} compile"] = ours(sc, False)
                variants[f"ours SIDE-guided bf16{tag} compile"] = ours(sc, True, for_guidance(clf))
    results = interleaved(variants, device, args.repeat)
    if cuda and args.compile != "no" and sc.compile_error:
        print(f"# torch.compile fell back to eager: {sc.compile_error}")
    print(f"# sampler defaults on {device}: overlap {GuidedSampler(unet, sched, device=device).overlap}")
    print("| variant | s / batch | images/s |\n|---|---:|---:|")
    for name, sec in results.items():
        print(f"| {name} | {sec:.3f} | {b / sec:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": b, "steps": args.steps, "device": str(device),
                                               "seconds": results}, indent=1))

    def ratio(label: str, slow: str, fast: str) -> None:
        if slow in results and fast in results:
            print(f"{label}: {results[slow] / results[fast]:.2f}")

    pipe32 = "diffusers DDIMPipeline fp32"
    ratio("ours unguided fp32 / DDIMPipeline fp32 speed", pipe32, "ours unguided fp32")
    if cuda:
        ratio("ours unguided bf16 / DDIMPipeline bf16 speed", "diffusers DDIMPipeline bf16 autocast", default_u)
        for name in sorted(k for k in results if k.startswith("ours unguided bf16")):
            ratio(f"{name} / DDIMPipeline fp32 speed", pipe32, name)
        ratio("guided/unguided (sequential)", "ours SIDE-guided bf16, sequential", default_u)
        for tag in ("", " channels_last"):
            ratio(f"guided/unguided{tag} (compile)", f"ours SIDE-guided bf16{tag} compile",
                  f"ours unguided bf16{tag} compile")
    else:
        ratio("guided/unguided before (sequential, unfolded)", "ours SIDE-guided fp32, sequential, unfolded",
              default_u)
        ratio("guided/unguided, reliability weights (every step)",
              "ours SIDE-guided fp32, reliability weights", default_u)
        ratio("guided/unguided, the product's default (reliability weights, settled stop)",
              "ours SIDE-guided fp32, reliability weights, settled stop (the default)", default_u)
        ratio(f"guided/unguided, settled stop, bf16 guide (native bf16 on this CPU: {cpu_has_native_bf16()})",
              "ours SIDE-guided, settled stop, bf16 guide", default_u)
        for w in args.widths:
            ratio(f"guided/unguided, settled stop, width {w}", f"ours SIDE-guided fp32, settled stop, width {w}",
                  default_u)
    ratio("guided/unguided", default_g, default_u)

if __name__ == "__main__":
    main()
