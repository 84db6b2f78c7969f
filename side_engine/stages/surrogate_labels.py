"""Surrogate labels: the original classes, k-means clusters, random groups, or clusters of synthetic images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import labels
from . import synthetic

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("labels",)
SPLIT = "rank0"


def run(ctx: StageContext) -> None:
    """Produces ``artifacts.k`` and ``artifacts.surrogate`` (and, for synthetic-clusters, the
    synthetic set's labels in ``cache/synthetic_labels.npy`` and the kept clusters' centroids in
    ``cache/synthetic_centroids.npy``, ``artifacts.centroids``)."""
    art, cfg = ctx.artifacts, ctx.cfg
    centroids = ctx.ws.cache_dir / "synthetic_centroids.npy"
    if ctx.store.is_done("labels"):
        art.k, art.surrogate = ctx.store.stored_labels()
        # audits labelled before the centroids were kept have none: their samples carry no cluster
        if cfg.label_policy.on_synthetic_set and centroids.exists():
            art.centroids = np.load(centroids)
        return
    with ctx.store.timed("labels"):
        rows = ctx.store.training_images()
        n = len(rows)
        source = cfg.label_source
        if source == "original":
            y, classes = labels.original_labels([r["label"] for r in rows], [r["path"] for r in rows])
            k = len(classes)
            ctx.report.log(f"labels: {k} original classes")
        elif source == "clusters":
            k = labels.resolve_k(cfg.k, n)
            y, _ = labels.kmeans_labels(art.train_vectors, k, cfg.seed, spherical=art.scorer.higher_is_closer)
            ctx.report.log(f"labels: k-means on {ctx.scorer_name} embeddings, K = {k}")
        elif source == "random":
            k = labels.resolve_k(cfg.k, n)
            y = labels.random_labels(n, k, cfg.seed)
            ctx.report.log(f"labels: {k} random groups")
        else:  # synthetic-clusters: labels live on the synthetic set
            syn = synthetic.load(ctx)
            k_req = labels.resolve_k(cfg.k, len(syn)) if cfg.k else min(labels.default_k(n), len(syn))
            vecs = np.concatenate([art.scorer.embed(part) for part in synthetic.images(ctx.target, syn, ctx.device)])
            syn_y, art.centroids = labels.synthetic_cluster_labels(vecs, k_req, cfg.seed)
            k = len(art.centroids)
            np.save(ctx.ws.cache_dir / "synthetic_labels.npy", syn_y)
            np.save(centroids, art.centroids)
            y = np.full(n, -1, dtype=np.int64)
            ctx.report.log(f"labels: {k} of {k_req} synthetic clusters kept (mean cosine >= 0.5)")
        ctx.report.update("labels", 1, 1)
        ctx.store.store_labels(y, k)
        art.k, art.surrogate = int(k), y
