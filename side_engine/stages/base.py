"""What the stage modules share: the ``Stage`` protocol, the sampler a stage opens, the
training images as the UNet models them, and two small helpers.

``SPLIT`` says how a stage's work divides between processes: ``"rank0"`` (too small to gain:
one process does it), ``"samples"`` (handed out by sample index, each sample's seed fixed by
``(audit seed, index)`` so any split makes the same images) or ``"data"`` (every rank trains on
a shard of each batch) — the seam a multi-process run uses (``side_engine.ranks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch

from ..devices import compiles
from ..image_rows import ImageRows, NpyFile, to_model_tensor_range

if TYPE_CHECKING:
    from ..sampler import GuidedSampler
    from .context import StageContext


class Stage(Protocol):
    """A stage module: its name(s) in ``stages.NAMES``, how its work splits, and ``run``."""

    NAMES: tuple[str, ...]
    SPLIT: Literal["rank0", "samples", "data"]

    def run(self, ctx: StageContext) -> None: ...


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Frozen and in eval mode: a trained classifier as later stages use it (sampling uses a
    folded copy of it, see ``SamplingContext.guiding``)."""
    return model.eval().requires_grad_(False)


def finite_or_none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def open_sampler(ctx: StageContext) -> GuidedSampler:
    """A sampler of the target model with this audit's settings (the caller closes it with
    :func:`close_sampler`); what its guide's gradient runs in is stored, and a resume that
    resolves it otherwise is said."""
    from ..sampler import make_sampler

    cfg = ctx.cfg
    sampler = make_sampler(ctx.target, cfg, ctx.device, compiles(cfg, ctx.device))
    if sampler.guide_precision == "bf16" and ctx.device.type == "cpu":
        from ..devices import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            # said, not stored: it changes the run's speed, not its results
            ctx.report.log("guide_precision = 'bf16' on a CPU without native bf16 (AMX or AVX512-BF16): emulated, "
                           "so the guide runs slower than in fp32 (the demo: 2.0× unguided sampling against 1.1–1.3× "
                           "in fp32); 'auto' chooses fp32 on such a CPU")
    used, before = sampler.guide_precision, ctx.store.get("guide_precision")
    if before and before != used and (guided := ctx.store.guided_count()):
        ctx.report.warn(f"the classifier's gradient ran in {before} for the {guided} guided samples stored before "
                        f"this run and in {used} from now on (guide_precision = {cfg.guide_precision!r} "
                        "resolved otherwise on this machine, or was changed): their rounding differs")
    ctx.store.put("guide_precision", used)
    return sampler


def close_sampler(ctx: StageContext, sampler: GuidedSampler) -> None:
    if sampler.compile_error:
        ctx.report.log(f"torch.compile was not used: {sampler.compile_error}")
    sampler.close()


def train_rows(ctx: StageContext) -> ImageRows:
    """The training images as the UNet models them, read a batch at a time: the stored uint8
    pixels (memory-mapped), or for a latent model their latents (encoded once, in batches, into
    a memory-mapped cache in the workspace)."""
    pixels = ctx.artifacts.train_pixels
    if not ctx.target.latent:
        return ImageRows(pixels)
    cache = ctx.ws.cache_dir / "train_latents.npy"
    if cache.exists():
        return ImageRows(NpyFile(cache))
    tmp = cache.with_suffix(".tmp.npy")
    out = None
    for i in range(0, len(pixels), 32):
        x = torch.from_numpy(to_model_tensor_range(np.asarray(pixels[i:i + 32])))
        z = ctx.target.encode(x.to(ctx.device)).float().cpu().numpy()
        if out is None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(pixels), *z.shape[1:]))
        out[i:i + len(z)] = z
        ctx.report.check()
    out.flush()
    del out
    tmp.replace(cache)
    return ImageRows(NpyFile(cache))
