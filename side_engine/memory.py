"""Peak memory of a stage: what a team sizes its machine by.

On Linux the kernel keeps the process's peak resident set (``VmHWM``) and lets the process
reset it (``/proc/self/clear_refs``, value 5), so each stage's own peak can be measured in one
process; elsewhere the peak is the process's whole-life maximum (``ru_maxrss``), an upper bound.
On CUDA, torch's allocator keeps the device peak the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def release() -> None:
    """Hand freed heap back to the operating system. glibc keeps what a large computation freed
    (the duration probe's training step at 128 px: ~1.3 GB) in the process, so every later
    stage's resident set — and its recorded peak — carried it; ``malloc_trim`` returns it."""
    # no gc.collect(): it holds the GIL for a tenth of a second on a large heap, which froze the
    # app's window once a stage (the engine runs on its worker thread); ctypes releases the GIL
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def reset_peak(device: torch.device | None = None) -> bool:
    """Start a new peak here, on the memory the stage starts with (freed heap handed back
    first: ``release``); True where the host peak could be reset (not: a lifetime peak)."""
    release()
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory since the last reset (MiB)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 ** 2 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def peak_device_mb(device: torch.device | None) -> float | None:
    """Peak memory torch allocated on a CUDA device since the last reset (MiB); None elsewhere."""
    if device is None or device.type != "cuda" or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated(device) / 1024 ** 2
