"""Embed the training images once (for k-means labels and the scorer's index)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..neighbours import TrainIndex
from ..scorers import make_scorer

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("embed",)
SPLIT = "rank0"


def run(ctx: StageContext) -> None:
    """Produces ``artifacts.scorer``, ``train_vectors`` and ``index``."""
    art = ctx.artifacts
    art.scorer = make_scorer(ctx.scorer_name, ctx.cfg.sscd_model, "cpu", ctx.threads)
    ctx.store.update_audit_record({"scorer": ctx.scorer_name, "scorer_source": art.scorer.source,
                                   "scorer_sha256": art.scorer.sha256})
    cache = ctx.ws.cache_dir / f"train_{ctx.scorer_name}.npy"
    if ctx.store.is_done("embed") and cache.exists():
        vectors = np.load(cache)
    else:
        with ctx.store.timed("embed"):
            n = len(art.train_pixels)
            vectors = None  # filled in place: one float32 copy of the embeddings, not two
            for i in range(0, n, 256):
                part = art.scorer.embed(np.asarray(art.train_pixels[i:i + 256]))
                if vectors is None:
                    vectors = np.empty((n, part.shape[1]), np.float32)
                vectors[i:i + len(part)] = part
                ctx.report.update("embed", min(i + 256, n), n)
                ctx.report.check()
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, vectors)
            tmp.replace(cache)
    art.train_vectors = vectors
    art.index = TrainIndex(art.scorer, vectors, ctx.bands)
