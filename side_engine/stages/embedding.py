"""Embed the training images once (for k-means labels and the scorer's index)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..config import AuditConfig
from ..neighbours import TrainIndex
from ..scorers import make_scorer

if TYPE_CHECKING:
    from ..audit import AuditRunner

NAMES = ("embed",)
SPLIT = "rank0"


def run(audit: AuditRunner, cfg: AuditConfig) -> None:
    audit.scorer = make_scorer(audit.scorer_name, cfg.sscd_model, "cpu", audit.threads)
    with audit.db.atomic():
        audit.db["audits"].update(1, {"scorer": audit.scorer_name, "scorer_source": audit.scorer.source,
                                     "scorer_sha256": audit.scorer.sha256})
    cache = audit.ws.cache_dir / f"train_{audit.scorer_name}.npy"
    if audit._done("embed") and cache.exists():
        vectors = np.load(cache)
    else:
        with audit._stage("embed"):
            n = len(audit.train_pixels)
            chunks = []
            for i in range(0, n, 256):
                chunks.append(audit.scorer.embed(np.asarray(audit.train_pixels[i:i + 256])))
                audit._update("embed", min(i + 256, n), n)
                audit.progress.check()
            vectors = np.concatenate(chunks).astype(np.float32)
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, vectors)
            tmp.replace(cache)
    audit.train_vectors = vectors
    audit.index = TrainIndex(audit.scorer, vectors, audit.bands)
