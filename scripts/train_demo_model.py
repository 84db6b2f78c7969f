"""Train the bundled demo model: a small DDPM that partly memorises LFW faces.

The demo must show SIDE's effect offline on two CPU cores, so the model is
trained on few faces until a *part* of its unguided samples are copies
(Gu et al.'s ratio nearest/second-nearest l2 < 1/3). A model that copies
every sample leaves guidance nothing to gain; one that copies none shows
nothing. Every ``--eval-every`` steps the EMA weights are sampled, scored
and snapshotted, and at the end the snapshot closest to ``--target``
memorisation (within ``--window``) is exported with its model card. The defaults
make today's demo model (``resources/demo``, the guidance study's faces2); the
other models' cards give their commands.

Resumable: ``--work`` keeps ``state.pt`` (our own file, loaded with
``weights_only=True``) and ``log.jsonl``; rerunning continues.

    python scripts/train_demo_model.py --work .demo-train
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def lfw_faces(n_faces: int, size: int = 32, first: int = 0) -> np.ndarray:
    """``n_faces`` LFW faces shipped by scikit-image from index ``first``, as uint8 HxW."""
    from skimage.data import lfw_subset

    faces = lfw_subset()[:100][first:first + n_faces]
    out = [
        np.asarray(
            Image.fromarray((f * 255).round().astype(np.uint8)).resize((size, size), Image.BICUBIC)
        )
        for f in faces
    ]
    return np.stack(out)


RGB_SOURCES = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
               "rocket", "stereo_motorcycle")


def rgb_patches(n: int, size: int = 32) -> np.ndarray:
    """``n`` colour patches (n <= 32) from the photographs bundled in scikit-image: the four
    quadrants of each photograph's centre square, resized (bicubic) to ``size``. Four patches of
    one photograph share its colours, so the training set has close neighbours (a harder case
    for the ratio than 32 unrelated faces). uint8 HxWx3."""
    import skimage.data

    out = []
    for name in RGB_SOURCES:
        img = getattr(skimage.data, name)()
        img = (img[0] if isinstance(img, tuple) else img)[..., :3]
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        half = side // 2
        for dy in (0, half):
            for dx in (0, half):
                crop = img[top + dy:top + dy + half, left + dx:left + dx + half]
                out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC)))
    if n > len(out):
        raise SystemExit(f"--faces {n}: the rgb-patches data has {len(out)} patches")
    return np.stack(out[:n])


def write_patches(out: Path, n: int) -> None:
    """The colour patches as trained on (32x32 RGB PNG): the audit's training folder."""
    out.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(rgb_patches(n)):
        Image.fromarray(p).save(out / f"patch_{i:03d}.png")


def write_faces(out: Path, n_faces: int, first: int = 0) -> None:
    """The training faces as shipped (25x25 grey PNG): the demo audit's training folder."""
    from skimage.data import lfw_subset

    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(lfw_subset()[:100][first:first + n_faces], start=first):
        Image.fromarray((f * 255).round().astype(np.uint8)).save(out / f"lfw_{i:03d}.png")


def make_unet(size: int = 32, widths: tuple[int, ...] = (32, 64, 64), channels: int = 1) -> UNet2DModel:
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(widths),
        norm_num_groups=math.gcd(32, *widths),  # 32 (diffusers' default) unless a width is narrower
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


@torch.no_grad()
def ddim_samples(unet: UNet2DModel, sched: DDPMScheduler, n: int, steps: int, seed: int) -> torch.Tensor:
    ddim = DDIMScheduler.from_config(sched.config)
    ddim.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=g)
    for t in ddim.timesteps:
        eps = unet(x, t).sample
        x = ddim.step(eps, t, x, eta=0.0).prev_sample
    return ((x.clamp(-1, 1) + 1) / 2)


def gu_memorised(samples: torch.Tensor, train: torch.Tensor) -> tuple[float, int]:
    """Fraction of samples with nearest/second-nearest l2 < 1/3, and distinct faces hit."""
    d = torch.cdist(samples.flatten(1), train.flatten(1))
    two = d.topk(2, largest=False).values
    mem = two[:, 0] / two[:, 1].clamp_min(1e-12) < 1 / 3
    nearest = d.argmin(1)
    return float(mem.float().mean()), int(nearest[mem].unique().numel())


def save_pipeline(unet: UNet2DModel, sched: DDPMScheduler, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(out, safe_serialization=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / ".demo-train")
    ap.add_argument("--data", choices=("lfw", "rgb-patches"), default="lfw",
                    help="grey LFW faces, or colour patches of scikit-image's photographs")
    ap.add_argument("--faces", type=int, default=24, help="training images")
    ap.add_argument("--first", type=int, default=40, help="index of the first LFW face trained on")
    ap.add_argument("--widths", type=int, nargs=3, default=(16, 32, 32), help="UNet block_out_channels")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-samples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.10)
    ap.add_argument("--window", type=float, nargs=2, default=(0.03, 0.30), metavar=("LO", "HI"),
                    help="export the snapshot closest to --target whose memorised fraction lies in [LO, HI]")
    ap.add_argument("--export", type=Path, default=ROOT / "resources" / "demo")
    ap.add_argument("--title", default="SIDE Audit demo model")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.data == "rgb-patches":
        faces = torch.from_numpy(rgb_patches(args.faces)).float().div(255).permute(0, 3, 1, 2)  # [0, 1]
    else:
        faces = torch.from_numpy(lfw_faces(args.faces, first=args.first)).float().div(255).unsqueeze(1)
    data = faces * 2 - 1
    unet = make_unet(widths=args.widths, channels=faces.shape[1])
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    state_path = args.work / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        unet.load_state_dict(st["unet"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step = int(st["step"])
        print(f"resumed at step {step}")
    log_path = args.work / "log.jsonl"
    acp = sched.alphas_cumprod
    losses: list[float] = []
    t0 = time.time()
    while step < args.steps:
        idx = torch.randint(len(data), (args.batch,), generator=gen)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % args.eval_every == 0 or step == args.steps:
            samples = ddim_samples(ema, sched, args.eval_samples, 25, seed=1234)
            frac, distinct = gu_memorised(samples, faces)
            rec = {
                "step": step,
                "loss": float(np.mean(losses[-args.eval_every:])),
                "memorised": frac,
                "distinct": distinct,
                "seconds": round(time.time() - t0, 1),
            }
            print(json.dumps(rec), flush=True)
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            save_pipeline(ema, sched, args.work / f"step{step:06d}")
            torch.save(
                {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                 "gen": gen.get_state(), "step": step},
                state_path,
            )
    export(args)


def export(args: argparse.Namespace) -> None:
    records = [json.loads(line) for line in (args.work / "log.jsonl").read_text().splitlines()]
    lo, hi = args.window
    in_range = [r for r in records if lo <= r["memorised"] <= hi]
    if not in_range:
        raise SystemExit(f"no snapshot has {100 * lo:.0f}-{100 * hi:.0f} % memorised samples; "
                         "train longer or change --faces/--lr")
    best = min(in_range, key=lambda r: (abs(r["memorised"] - args.target), -r["step"]))
    model_dir = args.export / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(args.work / f"step{best['step']:06d}", model_dir)
    rows = "\n".join(
        f"| {r['step']} | {r['loss']:.4f} | {100 * r['memorised']:.0f} % | {r['distinct']} |"
        + (" ← exported" if r is best else "")
        for r in records
    )
    rgb = args.data == "rgb-patches"
    n_params = sum(p.numel() for p in make_unet(widths=args.widths, channels=3 if rgb else 1).parameters())
    data_line = (f"{args.faces} colour patches of the photographs scikit-image ships ({', '.join(RGB_SOURCES)}):\n"
                 "  the four quadrants of each one's centre square, resized (bicubic) to 32×32 RGB" if rgb else
                 f"{args.faces} of the 100 LFW faces that scikit-image ships\n"
                 f"  (`skimage.data.lfw_subset()[{args.first}:{args.first + args.faces}]`), 25×25 grey, resized "
                 "(bicubic) to\n  32×32")
    noun = "patches" if rgb else "faces"
    why = ("a small UNet on few images and a high learning rate memorises within a CPU budget; the\n"
           "  photographs are the ones scikit-image bundles, so nothing is downloaded" if rgb else
           "on all 100 faces with lr 5e-4 no sample was memorised\n"
           "  after 4 000 steps; few faces and a high learning rate memorise within a\n  CPU budget")
    card = f"""# {args.title}

A small unconditional DDPM that **partly memorises** its training {noun}, so
that an audit has something to find and SIDE has something to gain
over random sampling.

- **Data**: {data_line}, scaled to [-1, 1]. No augmentation (memorisation is the point).
- **Architecture**: diffusers `UNet2DModel`, block_out_channels {tuple(args.widths)},
  one layer per block, attention at the lowest level, {3 if rgb else 1} channel(s) in/out,
  {n_params / 1e6:.2f} M parameters; `DDPMScheduler`, 1000 steps, linear betas.
- **Training**: AdamW lr {args.lr}, batch {args.batch}, ε-prediction MSE, EMA
  {args.ema} (the EMA weights are exported), seed {args.seed}, {args.threads} CPU threads
  ({platform.processor() or platform.machine()}).
- **Why these choices**: {why}. The exported snapshot is the one closest to {100 * args.target:.0f} %
  memorised unguided samples within {100 * lo:.0f}–{100 * hi:.0f} %.
- **Exported**: step {best['step']} — {100 * best['memorised']:.0f} % of {args.eval_samples}
  unguided DDIM-25 samples memorised (Gu et al.: nearest / second-nearest ℓ2 < 1/3),
  {best['distinct']} distinct {noun}.

Training is resumable (`--work` keeps the optimiser state) and may run in
segments with different CPU thread counts, which changes floating-point
rounding only; it can stop as soon as a snapshot lies in the {100 * lo:.0f}–{100 * hi:.0f} % window.

## Memorisation during training (from `log.jsonl`)

| step | mean loss | memorised | distinct {noun} |
|---:|---:|---:|---:|
{rows}

## Reproduce

```
python scripts/train_demo_model.py --data {args.data} --faces {args.faces} --first {args.first} \\
    --widths {' '.join(map(str, args.widths))} --steps {args.steps} --lr {args.lr} \\
    --batch {args.batch} --seed {args.seed} --threads {args.threads} --eval-every {args.eval_every} \\
    --eval-samples {args.eval_samples} --target {args.target} --window {lo} {hi}
```
"""
    (args.export / "MODEL_CARD.md").write_text(card)
    shutil.copy(args.work / "log.jsonl", args.export / "train_log.jsonl")
    if rgb:
        write_patches(args.export / "faces", args.faces)
    else:
        write_faces(args.export / "faces", args.faces, args.first)
    print(f"exported step {best['step']} to {model_dir}")


if __name__ == "__main__":
    main()
