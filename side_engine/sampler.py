"""Classifier-guided DDIM / DDPM sampling (paper, Eq. 10), one batch at a time.

Per sample: its own seed (initial noise, target class, DDPM noise), its own
guidance scale ``lam`` and class ``cls``, so one batch mixes several λ and
any image is reproducible from ``(audit seed, index)`` alone. The UNet runs
without autograd; only the frozen classifier is differentiated, and only for
the rows with λ > 0 (λ = 0 is plain unconditional sampling, the Random
baseline). Step coefficients are Python floats and row indices are built
once per batch, so the step loop never waits on the device.

λ = 0 is the model's own sampler: from the same noise it gives what the
checkpoint's diffusers scheduler gives with its defaults (``DDIMScheduler.step``
as ``DDIMPipeline`` calls it, ``DDPMScheduler.step``). Guidance is added to that
update as the change Eq. 10's ε̂ makes in the *unclipped* update, a positive
multiple of the gradient that x0 clipping cannot reverse and that vanishes as
λ → 0 (derivation: docs/method.md, "Guided update").

The UNet's ε and the classifier's gradient both depend on x_t alone, so with
guidance they can run concurrently: the gradient on a helper thread (on CUDA, its
own stream) while the UNet runs on the caller's. On CUDA that always pays; on a
CPU only while cores are free, so there the sampler times both ways on real
batches and keeps the faster (``OverlapChoice``): a second busy process turns
the gain into a loss. The classifier is a folded
copy (``classifiers.for_guidance``); on CUDA, bf16 autocast covers both networks
and ``compile`` wraps them in ``torch.compile`` (eager again if that fails). The
classifier's gradient may run in bf16 while the UNet stays fp32 (``guide_precision``:
on a CPU with native bf16 it halves the guide's cost), so λ = 0 never changes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch.nn import functional as F

from .classifiers import prefers_channels_last
from .devices import autocast, guide_precision
from .errors import InputError

if TYPE_CHECKING:
    from .config import AuditConfig

SYNTHETIC_STREAM = 1  # seeds of the TDKD synthetic set never collide with audit samples
AUDIT_STREAM = 0
TARGET_STREAM = 2  # the permutation behind the stratified target classes

# How the unguided step treats ε when x0 is clipped (a setting recorded in the audit):
# "pipeline": the checkpoint's own diffusers step (DDIMScheduler.step defaults, as DDIMPipeline
#   calls it): x0 is clipped, the direction term keeps the model's ε. The Random baseline.
# "clipped-eps": ε re-derived from the clipped x0 (guided-diffusion; diffusers'
#   use_clipped_model_output=True). On some models this erases memorisation (docs/method.md).
CONVENTIONS = ("pipeline", "clipped-eps")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")


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


def classes_drawn(k: int | None) -> int:
    """The K a generated sample draws its class number from. An audit without labels (Random
    only) draws from one class: the draw takes the same from the generator as any K below 2**32,
    so every sample's noise is the one it has in an audit with labels, whatever their K."""
    return int(k) if k else 1


def target_classes(audit_seed: int, n: int, num_classes: int) -> np.ndarray:
    """Stratified targets: sample i gets ``perm(i) mod K`` for a permutation fixed by the
    audit seed, so every class is targeted equally often (±1) and UMS varies less than
    with i.i.d. draws; the class of any sample follows from (audit seed, N_G, index)."""
    if num_classes <= 0:
        return np.full(n, -1, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([audit_seed, TARGET_STREAM, n]))
    return (rng.permutation(n) % num_classes).astype(np.int64)


class OverlapChoice:
    """Run guidance on the helper thread or not, decided by measured time per image-step.

    The first batch warms up (not timed); the next two are timed with and without the
    helper thread; from then on the faster way runs, and every ``recheck``-th batch runs
    the other way once more, so the choice follows the machine when other work starts or
    stops. Results do not depend on the choice (the same operations in the same order).
    """

    def __init__(self, recheck: int = 8) -> None:
        self.recheck = recheck
        self.seconds: dict[bool, float] = {}
        self.calls = 0

    def next(self) -> bool:
        n = self.calls
        self.calls += 1
        if n <= 1:
            return True  # warm-up, then the concurrent measurement
        if False not in self.seconds:
            return False
        best = min(self.seconds, key=self.seconds.get)
        return (not best) if n % self.recheck == 0 else best

    def record(self, overlap: bool, seconds_per_image_step: float) -> None:
        if self.calls > 1:  # the warm-up batch is not a measurement
            self.seconds[overlap] = seconds_per_image_step


@dataclass
class Guide:
    """A classifier steering the rows ``rows`` of a batch towards their classes."""

    classifier: torch.nn.Module
    rows: torch.Tensor  # long, on the device
    time_dependent: bool


@dataclass(frozen=True)
class GuidancePlan:
    """Where guidance acts and how strongly, for one ``sample`` call: at native timesteps
    ``window[0] <= t <= window[1]`` only, with λ_t = λ · ``weights.get(t, 1)`` (a weight of 0
    skips the classifier at that step). The default: every step, the paper's constant λ."""

    window: tuple[int, int] = (0, 1 << 30)
    weights: dict[int, float] = field(default_factory=dict)


@dataclass
class SamplerOutput:
    """What one ``sample`` call made: the images (x_0 in [-1, 1], or x after ``steps``), each row's
    guidance-to-ε RMS ratio averaged over its guided steps (None when nothing was guided), and how
    many steps the classifier acted at."""

    images: torch.Tensor
    guidance_ratio: torch.Tensor | None = None
    guided_steps: int = 0


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
        convention: str = "pipeline",
        guide_precision: str | None = None,
    ) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown sampler convention {convention!r}: one of {', '.join(CONVENTIONS)}")
        self.convention = convention
        self.unet = unet
        self.kind = kind
        self.eta = float(eta)
        self.device = torch.device(device)
        self.precision = precision
        # the classifier's gradient: its own precision (devices.guide_precision; bf16 autocast on a
        # CPU too), the UNet's otherwise. Guidance is a direction, the UNet's ε is the model itself
        self.guide_precision = guide_precision or precision
        cfg = scheduler.config
        self.T = int(cfg.num_train_timesteps)
        self.prediction_type = cfg.prediction_type
        self.clip = bool(cfg.get("clip_sample", True))
        self.clip_range = float(cfg.get("clip_sample_range", 1.0))
        if cfg.get("thresholding", False):
            raise InputError("the checkpoint's scheduler config uses dynamic thresholding (thresholding = true), "
                             "which this sampler does not reproduce: its λ = 0 would not be the model's own sampler")
        self.variance_type = cfg.get("variance_type", "fixed_small") or "fixed_small"
        if kind == "ddpm" and self.variance_type not in VARIANCE_TYPES:
            raise InputError(f"the checkpoint's scheduler variance_type {self.variance_type!r} (a learned variance) "
                             "is not supported by the DDPM sampler; use sampler = 'ddim'")
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
        # concurrency needs a second stream (CUDA) or a free core (CPU: measured, OverlapChoice)
        self.overlap_choice: OverlapChoice | None = None
        if overlap is None:
            overlap = self.device.type == "cuda" or (self.device.type == "cpu" and torch.get_num_threads() > 1)
            if self.device.type == "cpu" and overlap:
                self.overlap_choice = OverlapChoice()
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
            with autocast(self.device, self.guide_precision, cpu=True):
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
        on_step: Callable[[int, torch.Tensor], None] | None = None,
        plan: GuidancePlan = GuidancePlan(),
    ) -> SamplerOutput:
        """Run the reverse process from ``noise``, guided where ``plan`` says. ``on_step(t, x0)``:
        the model's clean-image prediction at each step, before its update (the guide check
        watches when each sample settles on its training image)."""
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
        ratio_sum = torch.zeros(x.shape[0], device=self.device) if guides else None
        n_steps = 0
        choice = self.overlap_choice if guides else None
        if choice is not None:
            self.overlap = choice.next()
        t_guided = 0.0
        for i, (t, a_t, a_prev) in enumerate(self.schedule):
            if steps is not None and i >= steps:
                break
            t_batch = self.t_device[i].expand(x.shape[0])  # the classifier's per-row timesteps
            weight = plan.weights.get(t, 1.0)
            in_window = plan.window[0] <= t <= plan.window[1]
            step_guides = guides if in_window and weight > 0 else []
            t0 = time.perf_counter()
            if step_guides and self.overlap:
                pending = self._guidance_async(x, t_batch, cls, step_guides)
                eps = self._eps(x, self.t_device[i], a_t)  # the UNet's: one 0-d tensor, as DDIMPipeline passes
                grad = self._join(pending)
            else:
                eps = self._eps(x, self.t_device[i], a_t)
                grad = self._guidance(x, t_batch, cls, step_guides) if step_guides else None
            if step_guides:
                t_guided += time.perf_counter() - t0
            if grad is not None:
                grad = grad * (scale * weight if weight != 1.0 else scale)
                # RMS of the ε shift λ·sqrt(1-ᾱ)·g over RMS of ε, per row: says whether λ is in a useful range
                ratio_sum += (math.sqrt(1 - a_t) * grad.flatten(1).pow(2).mean(1).sqrt()
                              / eps.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12))
                n_steps += 1
            z = None
            if stochastic:  # per-sample CPU generators keep images device-independent
                z = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
                if self.device.type == "cuda":  # pinned + non_blocking: no wait on the device
                    z = z.pin_memory().to(self.device, non_blocking=True)
                else:
                    z = z.to(self.device)
            if on_step is not None:
                x0_pred = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
                on_step(t, x0_pred.clamp(-self.clip_range, self.clip_range) if self.clip else x0_pred)
            x = self._step(x, eps, grad, a_t, a_prev, t, z)
        if choice is not None and n_steps:
            choice.record(self.overlap, t_guided / (n_steps * x.shape[0]))
        return SamplerOutput(x.clamp(-1, 1) if steps is None else x,
                             ratio_sum / max(n_steps, 1) if ratio_sum is not None else None, n_steps)

    def _step(self, x, eps, grad, a_t, a_prev, t, z):
        """One reverse step: the scheduler's own update, then λ·(its response to Eq. 10's ε̂).

        DDIM, σ the η-noise scale and c = sqrt(1 - ᾱ_prev - σ²):
            unguided  x' = sqrt(ᾱ_prev)·clip(x0(ε)) + c·ε + σ z        (DDIMScheduler.step)
            guided    x' = unguided + k_t·sqrt(1 - ᾱ_t)·g,  g = λ ∇log p,
                      k_t = sqrt(ᾱ_prev)·sqrt(1 - ᾱ_t)/sqrt(ᾱ_t) - c  > 0  (ᾱ_prev > ᾱ_t),
        which is exactly the unclipped DDIM update with ε̂ = ε − λ sqrt(1 - ᾱ_t) ∇log p; x0
        clipping acts on the model's prediction only, so it can neither erase nor reverse
        the guided shift (clipping the guided x0 would keep only the −c·(ε̂ − ε) part, which
        points away from the class). DDPM: μ̂ = μ + σ_t²·g on DDPMScheduler.step's mean.
        """
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if self.clip:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
            if self.convention == "clipped-eps":
                eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        if self.kind == "ddim":
            sigma = 0.0
            if self.eta > 0:
                sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            c = math.sqrt(max(1 - a_prev - sigma**2, 0.0))
            x = math.sqrt(a_prev) * x0 + c * eps
            if grad is not None:
                k = math.sqrt(a_prev) * math.sqrt(1 - a_t) / math.sqrt(a_t) - c
                x = x + (k * math.sqrt(1 - a_t)) * grad
            if sigma > 0:
                x = x + sigma * z
            return x
        # DDPM ancestral step, as DDPMScheduler.step (its variance_type), μ̂ = μ + λ·σ²·∇log p
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + (math.sqrt(alpha_t) * (1 - a_prev) / (1 - a_t)) * x
        var = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
        if self.variance_type in ("fixed_large", "fixed_large_log"):
            var = beta_t
        if grad is not None:
            mean = mean + var * grad
        if t > 0:
            mean = mean + math.sqrt(var) * z
        return mean


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC on the host (one transfer per batch)."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_sampler(target, cfg: AuditConfig, device: torch.device, compile: bool) -> GuidedSampler:
    """The sampler of an audit's target model with its settings (where guidance acts comes with
    each batch: ``guidance.guidance_plan``)."""
    return GuidedSampler(target.unet, target.scheduler, cfg.sampler, cfg.steps, cfg.eta, device, cfg.precision,
                         compile=compile, convention=cfg.sampler_convention,
                         guide_precision=guide_precision(cfg.guide_precision, cfg.precision, device))
