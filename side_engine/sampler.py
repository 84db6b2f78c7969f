"""Classifier-guided DDIM / DDPM sampling (paper, Eq. 10), one batch at a time.

Per sample: its own seed (initial noise, target class, DDPM noise), its own
guidance scale ``lam`` and class ``cls``, so one batch mixes several λ and
any image is reproducible from ``(audit seed, index)`` alone. The UNet runs
without autograd; only the frozen classifier is differentiated, and only for
the rows with λ > 0 (λ = 0 is plain unconditional sampling, the Random
baseline). Step coefficients are Python floats and row indices are built
once per batch, so the step loop never waits on the device.

The UNet's ε and the classifier's gradient both depend on x_t alone, so with
guidance they run concurrently: the gradient on a helper thread (on CUDA, its
own stream) while the UNet runs on the caller's. The classifier is a folded
copy (``classifiers.for_guidance``); on CUDA, bf16 autocast covers both networks
and ``compile`` wraps them in ``torch.compile`` (eager again if that fails).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch.nn import functional as F

from .classifiers import prefers_channels_last
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
        overlap: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
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
        # timesteps reach the device once, not once per step (no host wait in the loop)
        self.t_device = torch.tensor(ts, device=self.device, dtype=torch.long)
        # concurrency needs a second core (CPU) or a second stream (CUDA)
        if overlap is None:
            overlap = self.device.type == "cuda" or (self.device.type == "cpu" and torch.get_num_threads() > 1)
        self.overlap = bool(overlap) and self.device.type in ("cpu", "cuda")
        self._pool: ThreadPoolExecutor | None = None
        self._side_stream = None
        self.compile = bool(compile) and self.device.type == "cuda"
        # channels_last for the UNet: slower eager (0.84x) and no gain compiled on an H200
        # (bench/RESULTS.md), so off unless asked for; the folded classifier keeps it (CPU gain)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            unet.to(memory_format=torch.channels_last)
        self.compile_error: str | None = None
        self._compiled: dict[int, tuple[torch.nn.Module, bool]] = {}  # id(module) -> (wrapper, ran once)
        self._layouts: dict[int, bool] = {}  # id(classifier) -> wants channels_last input

    # -----------------------------------------------------------------------
    def _eps(self, x: torch.Tensor, t_batch: torch.Tensor, a_t: float) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self._call(self.unet, x, t_batch).sample.float()
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "sample":
            return (x - math.sqrt(a_t) * out) / math.sqrt(1 - a_t)
        return math.sqrt(a_t) * out + math.sqrt(1 - a_t) * x  # v_prediction

    def _call(self, module: torch.nn.Module, *args):
        """``module(*args)``, through ``torch.compile`` when asked; a compile failure (no
        compiler, an unsupported op) falls back to eager once and is kept in ``compile_error``."""
        if not self.compile:
            return module(*args)
        key = id(module)
        if key not in self._compiled:
            self._compiled[key] = (torch.compile(module), False)
        wrapper, ran = self._compiled[key]
        if ran:
            return wrapper(*args)
        try:
            out = wrapper(*args)
        except Exception as e:  # only the first call: later errors are real errors
            self.compile_error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            warnings.warn(f"torch.compile failed, running eager: {self.compile_error}", stacklevel=2)
            self._compiled[key] = (module, True)
            return module(*args)
        self._compiled[key] = (wrapper, True)
        return out

    def _grad_log_prob(self, guide: Guide, x: torch.Tensor, t_batch: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """∇_x log softmax(f(x_t, t))[c] for the guide's rows."""
        with torch.enable_grad():
            xr = x.index_select(0, guide.rows)
            if self._channels_last_input(guide.classifier):
                xr = xr.contiguous(memory_format=torch.channels_last)
            xr = xr.detach().requires_grad_(True)
            with autocast(self.device, self.precision):
                if guide.time_dependent:
                    logits = self._call(guide.classifier, xr, t_batch.index_select(0, guide.rows))
                else:
                    logits = self._call(guide.classifier, xr)
            logp = F.log_softmax(logits.float(), dim=1)
            picked = logp.gather(1, cls.index_select(0, guide.rows)[:, None]).sum()
            (g,) = torch.autograd.grad(picked, xr)
        return g

    def _channels_last_input(self, classifier: torch.nn.Module) -> bool:
        """Looked up once per classifier, not once per step (the module walk is Python work
        in the step loop, which is launch-bound on a GPU)."""
        key = id(classifier)
        if key not in self._layouts:
            self._layouts[key] = prefers_channels_last(classifier)
        return self._layouts[key]

    def _guidance(self, x: torch.Tensor, t_batch: torch.Tensor, cls: torch.Tensor,
                  guides: Sequence[Guide]) -> torch.Tensor | None:
        """∇ log p for every guided row (zero elsewhere); None when no row is guided."""
        grad = None
        for guide in guides:
            g = self._grad_log_prob(guide, x, t_batch, cls)
            if grad is None:
                grad = torch.zeros_like(x)
            grad.index_copy_(0, guide.rows, g.to(grad.dtype))
        return grad

    def _guidance_async(self, x, t_batch, cls, guides) -> Future:
        """Start the guidance gradient on the helper thread (CUDA: on a side stream that
        first waits for x_t); ``_join`` makes the caller's stream wait for the result."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="side-guidance")
        if self.device.type != "cuda":
            return self._pool.submit(self._guidance, x, t_batch, cls, guides)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        ready = torch.cuda.current_stream(self.device).record_event()

        def work():
            with torch.cuda.device(self.device), torch.cuda.stream(self._side_stream):
                self._side_stream.wait_event(ready)
                g = self._guidance(x, t_batch, cls, guides)
                return g, self._side_stream.record_event()

        return self._pool.submit(work)

    def _join(self, fut: Future) -> torch.Tensor | None:
        if self.device.type != "cuda":
            return fut.result()
        g, done = fut.result()
        main = torch.cuda.current_stream(self.device)
        main.wait_event(done)
        if g is not None:
            g.record_stream(main)  # made on the side stream, read on this one
        return g

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

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
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lam = lam.to(self.device, torch.float32)
        cls = cls.to(self.device)
        scale = lam[:, None, None, None]
        stochastic = self.kind == "ddpm" or self.eta > 0
        if stochastic and generators is None:
            raise ValueError("stochastic sampling needs one generator per sample")
        guides = [g for g in guides if g.rows.numel() > 0]  # λ = 0 rows: the classifier never runs
        for i, (t, a_t, a_prev) in enumerate(self.schedule):
            if steps is not None and i >= steps:
                break
            t_batch = self.t_device[i].expand(x.shape[0])  # the classifier's per-row timesteps
            if guides and self.overlap:
                pending = self._guidance_async(x, t_batch, cls, guides)
                eps = self._eps(x, self.t_device[i], a_t)  # the UNet's: one 0-d tensor, as DDIMPipeline passes
                grad = self._join(pending)
            else:
                eps = self._eps(x, self.t_device[i], a_t)
                grad = self._guidance(x, t_batch, cls, guides) if guides else None
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
