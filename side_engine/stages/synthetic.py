"""The TDKD synthetic set: the target model's own samples, generated in resumable chunks.

For a latent model the set is latents (float32): TDKD trains the TD classifier on them; they
are decoded only where images are needed (synthetic-clusters labels).

Chunk file ``chunk_{start}.npy`` holds images ``start, start+1, …``; image ``i``'s noise comes
from its own seed (``SYNTHETIC_STREAM``), so a chunk is the same whichever process makes it and
when. What is missing is found by index, not by chunk name, so a resume with another batch size
(the batch is a resumable setting) fills exactly the gaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import labels, ranks
from ..config import AuditConfig
from ..errors import WorkspaceError
from ..image_rows import ImageRows, NpyFile
from ..sampler import SYNTHETIC_STREAM, sample_inputs, sample_seed, to_uint8
from .base import close_sampler, open_sampler

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("synthetic",)
SPLIT = "samples"  # chunks handed out by index, like guided samples


def compute_chunk(cfg: AuditConfig, sampler, span: tuple[int, int], shape, latent: bool = False) -> np.ndarray:
    """Unguided samples ``span[0]..span[1]-1``: uint8 images (N, H, W, C), or float32 latents
    (N, C, h, w) of a latent model."""
    idx = range(*span)
    inputs = [sample_inputs(sample_seed(cfg.seed, i, SYNTHETIC_STREAM), shape, 0) for i in idx]
    noise = torch.stack([x for x, _, _ in inputs])
    x0 = sampler.sample(noise, torch.zeros(len(idx)), torch.zeros(len(idx), dtype=torch.long),
                        generators=[g for _, _, g in inputs]).images
    return x0.float().cpu().numpy() if latent else to_uint8(x0)


def images(target, syn: ImageRows, device: torch.device, batch: int = 32) -> Iterator[np.ndarray]:
    """The synthetic set as uint8 images (decoded, for a latent model), ``batch`` at a time."""
    for i in range(0, len(syn), batch):
        rows = syn.rows(np.arange(i, min(i + batch, len(syn))))
        yield rows if syn.pixels else to_uint8(target.decode(torch.from_numpy(rows).to(device)))


def run(ctx: StageContext) -> None:
    """Produces the synthetic set in ``ctx.ws.synthetic_dir`` (read back with :func:`load`)."""
    if ctx.store.is_done("synthetic"):
        return
    with ctx.store.timed("synthetic"):
        sampler = open_sampler(ctx)
        try:
            _make(ctx, sampler)
        finally:
            close_sampler(ctx, sampler)


def _make(ctx: StageContext, sampler) -> None:
    cfg = ctx.cfg
    shape = (ctx.target.channels, ctx.target.sample_size, ctx.target.sample_size)
    latent = ctx.target.latent
    n, b = size(ctx), ctx.batch
    todo = _missing_spans(_stored_chunks(ctx.ws.synthetic_dir, n), n, b)
    done = n - sum(hi - lo for lo, hi in todo)
    ctx.report.update("synthetic", done, n)
    n_ranks = ranks.world_size()
    if n_ranks > 1 and todo:
        ranks.share_model(ctx)
    for start in range(0, len(todo), n_ranks):  # a round: one chunk for every rank
        ctx.report.check()
        mine = todo[start:start + n_ranks]
        if n_ranks > 1:
            chunks = ranks.run_round("synthetic", mine + [None] * (n_ranks - len(mine)),
                                     lambda sp: compute_chunk(cfg, sampler, sp, shape, latent))
        else:
            chunks = [compute_chunk(cfg, sampler, mine[0], shape, latent)]
        for span, images in zip(mine, chunks):
            _save_chunk(ctx.ws.synthetic_dir, span[0], images)
            done += span[1] - span[0]
        ctx.report.update("synthetic", done, n)


def size(ctx: StageContext) -> int:
    """The synthetic set's size: at least 20 images a class unless set (K known from the
    labels stage, or, for synthetic-clusters, its default from N)."""
    k = ctx.artifacts.k or labels.resolve_k(ctx.cfg.k, len(ctx.artifacts.train_pixels))
    return ctx.cfg.resolved_n_syn(k)


def load(ctx: StageContext) -> ImageRows:
    """The whole synthetic set in index order, read from its chunk files a batch at a time
    (TDKD at the paper's scale: 25 000 images, never all in memory as floats)."""
    return rows_of(ctx.ws.synthetic_dir, size(ctx))


def rows_of(folder: Path, n: int) -> ImageRows:
    chunks = _complete_chunks(folder, n)
    parts, at = [], 0
    for start, arr in sorted(chunks, key=lambda c: c[0]):
        if start != at:  # chunks that overlap (not written by this stage): one array instead
            return ImageRows(load_folder(folder, n))
        parts.append(arr if start + len(arr) <= n else arr[:n - start])  # a cut chunk: one batch, read
        at = start + len(parts[-1])
    return ImageRows(parts)


def _complete_chunks(folder: Path, n: int) -> list[tuple[int, np.ndarray]]:
    chunks = _stored_chunks(folder, n)
    if _missing_spans(chunks, n, n):
        have = len({i for start, arr in chunks for i in range(start, min(start + len(arr), n))})
        raise WorkspaceError(f"{folder}: {have} of {n} synthetic images found; delete the folder and run again")
    return chunks


def load_folder(folder: Path, n: int) -> np.ndarray:
    """The whole synthetic set as one array in index order, from whatever chunks hold it."""
    chunks = _complete_chunks(folder, n)
    out = None
    for start, arr in chunks:
        if out is None:
            out = np.empty((n, *arr.shape[1:]), arr.dtype)
        stop = min(start + len(arr), n)
        out[start:stop] = arr[:stop - start]
    return out


def _stored_chunks(folder: Path, n: int) -> list[tuple[int, np.ndarray]]:
    """(first index, images) of every chunk file, read from disk when asked (``NpyFile``)."""
    chunks = []
    for path in sorted(folder.glob("chunk_*.npy")):
        if path.name.endswith(".tmp.npy"):
            continue
        try:
            start = int(path.stem.split("_")[1])
            chunks.append((start, NpyFile(path)))
        except (ValueError, IndexError, OSError):
            raise WorkspaceError(f"{path}: not a synthetic chunk this audit wrote; delete it and run again") from None
    return [c for c in chunks if c[0] < n]


def _missing_spans(chunks, n: int, batch: int) -> list[tuple[int, int]]:
    """Runs of indices no chunk holds, cut into pieces of at most ``batch``."""
    covered = np.zeros(n, bool)
    for start, arr in chunks:
        covered[start:start + len(arr)] = True
    spans, i = [], 0
    while i < n:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < n and not covered[j] and j - i < batch:
            j += 1
        spans.append((i, j))
        i = j
    return spans


def _save_chunk(folder: Path, start: int, images: np.ndarray) -> None:
    chunk = folder / f"chunk_{start:08d}.npy"
    tmp = chunk.with_suffix(".tmp.npy")
    np.save(tmp, images)
    tmp.replace(chunk)
