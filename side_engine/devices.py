"""Device choice and the settings that follow from it."""

from __future__ import annotations

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


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for and supported; a no-op context otherwise."""
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def default_batch_size(device: torch.device, sample_size: int, channels: int) -> int:
    """A batch that fits: from free memory on CUDA, a cache-friendly size on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # guided sampling keeps the classifier's activations for one backward pass;
        # ~1.5 MB per 32x32x3 pixel-channel block is a conservative measured rule.
        per_image = 1.5e6 * (sample_size / 32) ** 2 * max(channels, 1) / 3 * 8
        return int(max(8, min(1024, free * 0.6 // per_image)))
    return 64 if sample_size <= 64 else 16
