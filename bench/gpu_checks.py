"""CUDA checks the CPU test suite cannot make; run on a GPU machine, prints a table.

    python bench/gpu_checks.py [--out DIR]

1. The concurrent guidance (side stream) gives the same images as sequential
   guidance; bf16 stays close to fp32; the folded classifier equals the original.
2. No host-device synchronisation inside the step loop:
   ``torch.cuda.set_sync_debug_mode("error")`` around DDIM-guided and DDPM sampling.
3. Batch size from free memory (``devices.fit_batch_size``) on the 128 px default
   UNet with the ResNet-34 TD classifier, then one guided batch of that size: its
   peak memory against the card's.
4. The duration probe (``estimate.probe``) against a timed run of the same work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sampling import models  # noqa: E402

from side_engine.classifiers import for_guidance  # noqa: E402
from side_engine.config import AuditConfig  # noqa: E402
from side_engine.devices import fit_batch_size  # noqa: E402
from side_engine.estimate import probe  # noqa: E402
from side_engine.sampler import Guide, GuidedSampler  # noqa: E402

ROWS: list[tuple[str, str]] = []


def row(what: str, result) -> None:
    ROWS.append((what, str(result)))
    print(f"{what}: {result}", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of checks 1 and 4 on the demo model")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    unet, sched, clf = models(dev)
    folded = for_guidance(clf)
    size, ch, b = unet.config.sample_size, unet.config.in_channels, 8
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(b, ch, size, size, generator=g)
    k = clf.hparams["num_classes"]
    cls = torch.randint(0, k, (b,), generator=g)
    lam = torch.tensor([0.0, 2.0, 5.0, 10.0] * (b // 4))
    rows = torch.nonzero(lam > 0).flatten().to(dev)
    row("device", f"{torch.cuda.get_device_name() if cuda else 'cpu'} ({torch.__version__}, CUDA {torch.version.cuda})")

    # 1. equivalences --------------------------------------------------------------
    x = torch.randn(b, ch, size, size, device=dev)
    t = torch.full((b,), 400, device=dev)
    with torch.enable_grad():
        xa = x.clone().requires_grad_(True)
        ga = torch.autograd.grad(clf(xa, t).log_softmax(1)[:, 0].sum(), xa)[0]
        xb = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        gb = torch.autograd.grad(folded(xb, t).log_softmax(1)[:, 0].sum(), xb)[0]
    row("folded classifier gradient, rel. diff vs original (fp32/tf32)", f"{rel(gb, ga):.2e}")
    out = {}
    for name, kw in {"fp32 sequential": dict(precision="fp32", overlap=False),
                     "fp32 concurrent": dict(precision="fp32", overlap=True),
                     "bf16 concurrent": dict(precision="bf16", overlap=True)}.items():
        s = GuidedSampler(unet, sched, "ddim", 20, 0.0, dev, **kw)
        out[name] = s.sample(noise, lam, cls, [Guide(folded, rows, True)]).images.float().cpu()
        s.close()
    row("concurrent vs sequential guidance, rel. diff (fp32)",
        f"{rel(out['fp32 concurrent'], out['fp32 sequential']):.2e}")
    row("bf16 vs fp32 guided images, rel. diff", f"{rel(out['bf16 concurrent'], out['fp32 sequential']):.2e}")

    # 2. no host-device sync in the step loop ------------------------------------------
    for kind in ("ddim", "ddpm") if cuda else ():
        s = GuidedSampler(unet, sched, kind, 10, 0.0, dev, "bf16")
        gens = [torch.Generator().manual_seed(i) for i in range(b)]
        nd, ld, cd = noise.to(dev), lam.to(dev), cls.to(dev)
        s.sample(nd, ld, cd, [Guide(folded, rows, True)], generators=gens)  # warm-up
        torch.cuda.synchronize()
        try:
            torch.cuda.set_sync_debug_mode("error")
            s.sample(nd, ld, cd, [Guide(folded, rows, True)], generators=gens)
            verdict = "none"
        except RuntimeError as e:
            verdict = "SYNC: " + str(e).splitlines()[0]
            traceback.print_exc()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            s.close()
        row(f"host-device syncs in a guided {kind} run (sync_debug_mode=error)", verdict)

    # 3. batch size from free memory ---------------------------------------------------------
    s = GuidedSampler(unet, sched, "ddim", 50, 0.0, dev, "bf16")

    def step(n: int) -> None:
        s.sample(torch.randn(n, ch, size, size, device=dev), torch.ones(n), torch.zeros(n, dtype=torch.long),
                 [Guide(folded, torch.arange(n, device=dev), True)], steps=1)

    t0 = time.perf_counter()
    batch, info = fit_batch_size(step, dev) if cuda else (8, {"total_mb": 0.0})
    row("fit_batch_size (bf16, guided)", f"{batch} in {time.perf_counter() - t0:.1f} s; "
        + ", ".join(f"{k} {v:.0f}" for k, v in info.items()))
    try:
        if not cuda:
            raise StopIteration
        torch.cuda.reset_peak_memory_stats()
        step(batch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        row("one guided step at that batch: peak / card memory", f"{peak:.0f} MB / {info['total_mb']:.0f} MB")
    except torch.OutOfMemoryError as e:
        row("one guided step at that batch", f"OUT OF MEMORY: {e}")
    except StopIteration:
        pass
    s.close()

    # 4. the duration probe vs a timed run --------------------------------------------------------
    prec = "bf16" if cuda else "fp32"
    cfg = AuditConfig(checkpoint="-", train_data="-", classifier_width=clf.hparams["width"],
                      classifier_stem="small" if clf.hparams["small_stem"] else "large", steps=25, precision=prec)
    n = 64 if cuda else 32
    per = probe(unet, sched, cfg, k, ch, size, dev, n)
    s = GuidedSampler(unet, sched, "ddim", 25, 0.0, dev, prec)
    nz = torch.randn(n, ch, size, size)
    for lam_value in (0.0, 5.0):
        lam_n = torch.full((n,), lam_value)
        guides = [Guide(folded, torch.arange(n, device=dev), True)] if lam_value else []
        s.sample(nz, lam_n, torch.zeros(n, dtype=torch.long), guides)
        _sync(dev)
        t0 = time.perf_counter()
        s.sample(nz, lam_n, torch.zeros(n, dtype=torch.long), guides)
        _sync(dev)
        took = time.perf_counter() - t0
        predicted = 25 * n * (per["unet"] + (per["guidance"] if lam_value else 0.0))
        row(f"probe vs timed, {n} images x 25 steps, lambda {lam_value:g}",
            f"predicted {predicted:.2f} s, took {took:.2f} s")
    s.close()
    Path(args.out, "gpu_checks.json").write_text(json.dumps(ROWS, indent=1))
    print("| check | result |\n|---|---|")
    for what, result in ROWS:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
