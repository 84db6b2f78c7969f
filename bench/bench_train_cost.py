"""What a study model costs to train and to sample on this machine, by resolution and width: the
budget of the 64 px study (a training step of batch 32, and one image-step of sampling).

    python bench/bench_train_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from diffusers import DDPMScheduler  # noqa: E402
from train_demo_model import make_unet  # noqa: E402

SHAPES = ((32, (16, 32, 32)), (64, (16, 32, 32)), (64, (32, 64, 64)))


def main() -> None:
    torch.set_num_threads(2)
    sched = DDPMScheduler(num_train_timesteps=1000)
    for size, widths in SHAPES:
        unet = make_unet(size, widths, 3)
        params = sum(p.numel() for p in unet.parameters())
        opt = torch.optim.AdamW(unet.parameters(), 1e-3)
        x0 = torch.rand(32, 3, size, size) * 2 - 1

        def step(unet=unet, opt=opt, x0=x0) -> None:
            t = torch.randint(0, 1000, (32,))
            noise = torch.randn_like(x0)
            loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(3):  # warm-up
            step()
        t0 = time.perf_counter()
        for _ in range(15):
            step()
        train_s = (time.perf_counter() - t0) / 15
        with torch.no_grad():
            x = torch.randn(16, 3, size, size)
            t0 = time.perf_counter()
            unet(x, torch.full((16,), 500))
            sample_s = (time.perf_counter() - t0) / 16
        print(f"{size} px, widths {widths}: {params / 1e6:.2f} M parameters; {1e3 * train_s:.0f} ms a training step "
              f"(batch 32; 5 000 steps = {5000 * train_s / 3600:.2f} h); {1e3 * sample_s:.1f} ms an image-step of "
              "sampling", flush=True)


if __name__ == "__main__":
    main()
