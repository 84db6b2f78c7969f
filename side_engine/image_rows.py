"""Image sets that reach a network a batch at a time.

The training set (25 000 images at the paper's scale) and the TDKD synthetic set are kept as
they are stored — uint8 pixels, memory-mapped, or a latent model's float32 latents — and turned
into float32 model tensors only for the rows of one batch. A float32 copy of a whole set is
four times its pixels, and at 128 px RGB that is gigabytes per set on the host and on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch


class ImageRows:
    """Rows of an image set, in index order, from one array or from consecutive parts.

    Each part is uint8 (n, H, W, C) pixels (converted to [-1, 1], channels first) or float32
    (n, C, h, w) rows already as the model takes them (latents, or a tensor of model inputs).
    Parts may be memory-mapped: only the rows asked for are read."""

    def __init__(self, parts: np.ndarray | torch.Tensor | NpyFile | Sequence[np.ndarray | NpyFile]) -> None:
        if isinstance(parts, torch.Tensor):
            parts = [parts.detach().cpu().numpy()]
        elif isinstance(parts, (np.ndarray, NpyFile)):
            parts = [parts]
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("an image set needs at least one image")
        kinds = {(p.dtype == np.uint8, p.shape[1:]) for p in parts}
        if len(kinds) != 1:
            raise ValueError(f"parts of an image set differ in type or shape: {sorted(map(str, kinds))}")
        self._parts = list(parts)
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        self.pixels = parts[0].dtype == np.uint8
        shape = parts[0].shape[1:]
        self.shape = (shape[2], shape[0], shape[1]) if self.pixels else tuple(shape)  # as the model takes them

    def __len__(self) -> int:
        return int(self._starts[-1])

    def rows(self, idx: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        """The stored rows ``idx`` (any order, repeats allowed), read from their parts."""
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        if len(self._parts) == 1:
            if isinstance(self._parts[0], NpyFile):
                return self._parts[0][idx]
            order = np.argsort(idx, kind="stable")  # sorted reads of a memory map touch each page once
            out = np.empty((len(idx), *self._parts[0].shape[1:]), self._parts[0].dtype)
            out[order] = self._parts[0][idx[order]]
            return out
        which = np.searchsorted(self._starts, idx, side="right") - 1
        out = np.empty((len(idx), *self._parts[0].shape[1:]), self._parts[0].dtype)
        for part in np.unique(which):
            mine = np.flatnonzero(which == part)
            out[mine] = self._parts[part][idx[mine] - self._starts[part]]
        return out

    def take(self, idx, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows ``idx`` as model inputs (float, channels first) on ``device``."""
        raw = self.rows(idx)
        x = torch.from_numpy(to_model_tensor_range(raw) if self.pixels else np.ascontiguousarray(raw, np.float32))
        return x.to(device, dtype)

    def batches(self, batch: int, idx=None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(row indices, model inputs) of ``idx`` (default: every row) in order, ``batch`` at a time."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64).reshape(-1)
        for i in range(0, len(idx), batch):
            part = idx[i:i + batch]
            yield part, self.take(part, device, dtype)

    def stored(self) -> np.ndarray:
        """Every row as stored (one array: for a broadcast to other processes)."""
        return self.rows(np.arange(len(self)))


class NpyFile:
    """A ``.npy`` file's rows, read from disk when asked (``os.pread``), never mapped.

    A memory map of the training set is as cheap to read, but every page it has read stays in
    the process's resident memory: after one epoch the whole set counts again, 1.2 GB at the
    paper's 25 000 images of 128 px. Rows read with ``pread`` are the caller's, and freed with
    it. Indexing takes an int, a slice (step 1) or an array of rows; ``shape``, ``dtype`` and
    ``len`` as an array's."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self._offset = f.tell()
        if fortran:
            raise ValueError(f"{self.path}: a Fortran-ordered array; rows cannot be read in place")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None

    def _read(self, start: int, stop: int) -> np.ndarray:
        count = max(0, stop - start)
        data = os.pread(self._fd, count * self._row, self._offset + start * self._row)
        if len(data) != count * self._row:
            raise OSError(f"{self.path}: truncated (rows {start}..{stop - 1} not all there)")
        return np.frombuffer(data, self.dtype).reshape(count, *self.shape[1:])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range")
            return self._read(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("slices of an NpyFile take step 1")
            return self._read(start, stop)  # read-only, like a read-only memory map's rows
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        if not len(idx):
            return out
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        # runs of consecutive rows are one read each
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            block = self._read(int(rows[lo]), int(rows[hi - 1]) + 1)
            out[order[lo:hi]] = block
        return out


def as_rows(x: ImageRows | np.ndarray | torch.Tensor) -> ImageRows:
    return x if isinstance(x, ImageRows) else ImageRows(x)


def to_model_tensor_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW in [-1, 1], the model's input range.

    Contiguous on purpose: a transposed view reaches torch as a channels_last-strided
    tensor, and with 3 channels torch 2.13's oneDNN convolution backward crashed
    (SIGSEGV/SIGABRT) on such inputs during TDKD."""
    x = np.ascontiguousarray(pixels.astype(np.float32).transpose(0, 3, 1, 2))
    return x / 127.5 - 1.0
