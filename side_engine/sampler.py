"""Classifier-guided DDIM / DDPM sampling (paper, Eq. 10), one batch at a time.

Per sample: its own seed (initial noise, target class, DDPM noise), its own
guidance scale ``lam`` and class ``cls``, so one batch mixes several λ and
any image is reproducible from ``(audit seed, index)`` alone. The UNet runs
without autograd; only the frozen classifier is differentiated, and only for
the rows with λ > 0 (λ = 0 is plain unconditional sampling, the Random
baseline). Step coefficients are Python floats and row indices are built
once per batch, so the step loop never waits on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch.nn import functional as F

from .devices import autocast

SYNTHETIC_STREAM = 1  # seeds of the TDKD synthetic set never collide with audit samples
AUDIT_STREAM = 0


def sample_seed(audit_seed: int, index: int, stream: int = AUDIT_STREAM) -> int:
    """A 63-bit seed per sample; the same index gets the same seed for every λ and method
    (common random numbers: methods are compared on identical starting noise)."""
    words = np.random.SeedSequence([audit_seed, stream, index]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def sample_inputs(seed: int, shape: tuple[int, ...], num_classes: int) -> tuple[torch.Tensor, int, torch.Generator]:
    """(initial noise, target class, the generator that continues for DDPM noise)."""
    g = torch.Generator().manual_seed(seed)
    cls = int(torch.randint(num_classes, (1,), generator=g)) if num_classes > 0 else -1
    noise = torch.randn(shape, generator=g)
    return noise, cls, g


@dataclass
class Guide:
    """A classifier steering the rows ``rows`` of a batch towards their classes."""

    classifier: torch.nn.Module
    rows: torch.Tensor  # long, on the device
    time_dependent: bool


class GuidedSampler:
    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DDPMScheduler,
        kind: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.unet = unet
        self.kind = kind
        self.eta = float(eta)
        self.device = torch.device(device)
        self.precision = precision
        cfg = scheduler.config
        self.T = int(cfg.num_train_timesteps)
        self.prediction_type = cfg.prediction_type
        self.clip = bool(cfg.get("clip_sample", True))
        self.clip_range = float(cfg.get("clip_sample_range", 1.0))
        acp = scheduler.alphas_cumprod.double().cpu().numpy()
        if kind == "ddim":
            s = DDIMScheduler.from_config(cfg)
            s.set_timesteps(steps)
            ts = [int(t) for t in s.timesteps]
            stride = self.T // steps
            prevs = [t - stride for t in ts]
            final = float(s.final_alpha_cumprod)
        elif kind == "ddpm":
            s = DDPMScheduler.from_config(cfg)
            s.set_timesteps(steps)
            ts = [int(t) for t in s.timesteps]
            prevs = ts[1:] + [-1]
            final = 1.0
        else:
            raise ValueError(f"unknown sampler {kind!r}")
        self.timesteps = ts
        # per step: (t, alpha_bar_t, alpha_bar_prev) as Python floats
        self.schedule = [(t, float(acp[t]), float(acp[p]) if p >= 0 else final) for t, p in zip(ts, prevs)]

    # -----------------------------------------------------------------------
    def _eps(self, x: torch.Tensor, t_batch: torch.Tensor, a_t: float) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self.unet(x, t_batch).sample.float()
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "sample":
            return (x - math.sqrt(a_t) * out) / math.sqrt(1 - a_t)
        return math.sqrt(a_t) * out + math.sqrt(1 - a_t) * x  # v_prediction

    @staticmethod
    def _grad_log_prob(guide: Guide, x: torch.Tensor, t_batch: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """∇_x log softmax(f(x_t, t))[c] for the guide's rows."""
        with torch.enable_grad():
            # default layout: channels_last was ~15 % faster for this step on CPU, but torch
            # 2.13's oneDNN crashed in convolution backward on channels_last-strided RGB input
            # (see training_set.to_model_tensor_range); not worth the risk here
            xr = x.index_select(0, guide.rows).detach().requires_grad_(True)
            if guide.time_dependent:
                logits = guide.classifier(xr, t_batch.index_select(0, guide.rows))
            else:
                logits = guide.classifier(xr)
            logp = F.log_softmax(logits.float(), dim=1)
            picked = logp.gather(1, cls.index_select(0, guide.rows)[:, None]).sum()
            (g,) = torch.autograd.grad(picked, xr)
        return g

    def sample(
        self,
        noise: torch.Tensor,
        lam: torch.Tensor,
        cls: torch.Tensor,
        guides: Sequence[Guide] = (),
        generators: Sequence[torch.Generator] | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Run the reverse process from ``noise``; returns x_0 in [-1, 1] (or x after ``steps``)."""
        x = noise.to(self.device, torch.float32)
        lam = lam.to(self.device, torch.float32)
        cls = cls.to(self.device)
        scale = lam[:, None, None, None]
        stochastic = self.kind == "ddpm" or self.eta > 0
        if stochastic and generators is None:
            raise ValueError("stochastic sampling needs one generator per sample")
        # timesteps reach the device once per batch, not once per step (no host wait in the loop)
        t_device = torch.tensor(self.timesteps, device=self.device, dtype=torch.long)
        for i, (t, a_t, a_prev) in enumerate(self.schedule):
            if steps is not None and i >= steps:
                break
            t_batch = t_device[i].expand(x.shape[0])  # the classifier's per-row timesteps
            eps = self._eps(x, t_device[i], a_t)  # the UNet's: one 0-d tensor, as DDIMPipeline passes
            grad = None
            for guide in guides:
                if guide.rows.numel() == 0:
                    continue
                g = self._grad_log_prob(guide, x, t_batch, cls)
                if grad is None:
                    grad = torch.zeros_like(x)
                grad.index_copy_(0, guide.rows, g)
            if grad is not None:
                grad = grad * scale
            z = None
            if stochastic:  # per-sample CPU generators keep images device-independent
                z = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
                if self.device.type == "cuda":  # pinned + non_blocking: no wait on the device
                    z = z.pin_memory().to(self.device, non_blocking=True)
                else:
                    z = z.to(self.device)
            x = self._step(x, eps, grad, a_t, a_prev, t, z)
        return x.clamp(-1, 1) if steps is None else x

    def _step(self, x, eps, grad, a_t, a_prev, t, z):
        # x0 clipping applies to the model's own prediction, and ε is re-derived from the
        # clipped x0 before guidance (as guided-diffusion does; diffusers' DDIM with
        # use_clipped_model_output=True). Clipping *after* guidance would clamp away the
        # x0 part of the guided step and leave only the ε part, which points the wrong way.
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if self.clip:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        if self.kind == "ddim":
            if grad is not None:
                eps = eps - math.sqrt(1 - a_t) * grad  # Eq. 10: ε̂ = ε − λ·sqrt(1−ᾱ_t)·∇log p
                x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            sigma = 0.0
            if self.eta > 0:
                sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * z
            return x
        # DDPM ancestral step (fixed_small variance), μ̂ = μ + λ·σ²·∇log p
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + (math.sqrt(alpha_t) * (1 - a_prev) / (1 - a_t)) * x
        var = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
        if grad is not None:
            mean = mean + var * grad
        if t > 0:
            mean = mean + math.sqrt(var) * z
        return mean


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC on the host (one transfer per batch)."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
