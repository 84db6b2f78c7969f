"""Device choice and the settings that follow from it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("setting 'device' = 'cuda': no CUDA device is available on this machine")
        return torch.device("cuda")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("setting 'device' = 'mps': Apple MPS is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"setting 'device' = {name!r}: must be auto, cuda, mps or cpu")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def autocast(device: torch.device, precision: str, cpu: bool = False):
    """bf16 autocast where asked for and supported; a no-op context otherwise. ``cpu``: on a
    CPU too (the guide's gradient, ``guide_precision``); the UNet never, so that Random stays
    the checkpoint's own fp32 sampler there."""
    enabled = precision == "bf16" and (device.type == "cuda" or (cpu and device.type == "cpu"))
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: where oneDNN runs bf16 convolutions in hardware (measured 2x the fp32
    speed for the guide's gradient on the demo). Elsewhere bf16 is emulated and slower."""
    import torch.cpu as cpu  # private probes, stable since torch 2.1; absent means no

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def guide_precision(setting: str, precision: str, device: torch.device) -> str:
    """What the classifier's gradient runs in (``guide_precision``): ``auto`` is bf16 on a CPU
    with native bf16 and the run's ``precision`` elsewhere; ``same`` is ``precision``. On MPS
    the guide follows ``precision`` (no bf16 autocast there)."""
    if setting == "same" or (setting == "bf16" and device.type == "mps"):
        return precision
    if setting == "auto":
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else precision
    if setting in ("fp32", "bf16"):
        return setting
    from .config import GUIDE_PRECISIONS

    raise ConfigError(f"setting 'guide_precision' = {setting!r}: must be one of {', '.join(GUIDE_PRECISIONS)}")


def default_batch_size(device: torch.device, sample_size: int, channels: int) -> int:
    """CPU and MPS, where no memory probe runs: a cache-friendly size (CUDA: ``fit_batch_size``)."""
    return 64 if sample_size <= 64 else 16


def fit_batch_size(step: Callable[[int], object], device: torch.device, cap: int = 256,
                   share: float = 0.6, probe: tuple[int, int] = (2, 6)) -> tuple[int, dict]:
    """The largest batch whose measured memory fits ``share`` of the free CUDA memory.

    ``step(b)`` runs one guided sampling step at batch ``b``. Peak memory at two small
    batches gives a fixed part and a per-image part (activations grow linearly with the
    batch); the batch is what fits the free memory with that line, rounded down to a
    multiple of 8 and capped (larger batches gain little throughput and make
    cancellation slower). On an H200 the real peak at batch 256 was 1.33x the line's
    prediction (cuDNN workspaces grow with the batch), hence 0.6 of the free memory.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    peaks = []
    for b in probe:
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(b)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    batch, per_image, fixed = batch_from_peaks(peaks, probe, free, share, cap)
    return batch, {"per_image_mb": per_image / 2**20, "fixed_mb": fixed / 2**20, "free_mb": free / 2**20,
                   "total_mb": total / 2**20}


def batch_from_peaks(peaks: list[float], probe: tuple[int, int], free: float, share: float = 0.6,
                     cap: int = 256) -> tuple[int, float, float]:
    """(batch, bytes per image, fixed bytes) from peak memory measured at two batch sizes."""
    per_image = max((peaks[1] - peaks[0]) / (probe[1] - probe[0]), 1.0)
    fixed = max(peaks[0] - probe[0] * per_image, 0.0)
    fits = int((free * share - fixed) // per_image)
    batch = max(1, min(cap, fits))
    if batch >= 16:
        batch -= batch % 8
    return batch, per_image, fixed


def device_choices() -> list[tuple[str, dict]]:
    """What a front end offers for the device: each label with the settings it stands for; with
    several GPUs, also every GPU at once (one process each, through torchrun)."""
    choices = [(name, {"device": name, "processes": 1}) for name in ("auto", "cuda", "mps", "cpu")]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1:
        choices.insert(1, (f"all GPUs ({gpus})", {"device": "cuda", "processes": gpus}))
    return choices


COMPILE_WORK = 150_000  # image-steps of sampling above which compile = auto compiles


def compiles(cfg, device: torch.device) -> bool:
    """Whether an audit's sampling runs through torch.compile (its ``compile`` setting). It pays
    off only over long runs: on an H200 compiling took ~75 s and then saved ~0.65 ms per image
    and step (128 px UNet, bf16), so break-even is ~110 000 image-steps; ``auto`` asks for
    150 000 (the paper's audits have millions)."""
    if cfg.compile == "auto":
        return device.type == "cuda" and len(cfg.grid()) * cfg.n_per_lambda * cfg.steps >= COMPILE_WORK
    return cfg.compile == "on"
