"""Surrogate labels: the original classes, k-means clusters, random groups, or clusters of synthetic images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import labels, storage
from ..config import AuditConfig
from . import synthetic

if TYPE_CHECKING:
    from ..audit import AuditRunner

NAMES = ("labels",)
SPLIT = "rank0"


def run(audit: AuditRunner, cfg: AuditConfig) -> None:
    if audit._done("labels"):
        audit.k = storage.get_kv(audit.db, "k")
        audit.surrogate = np.array([r["surrogate"] for r in audit.db.query(
            "select surrogate from train_images order by idx")], dtype=np.int64)
        return
    with audit._stage("labels"):
        rows = list(audit.db.query("select path, label from train_images order by idx"))
        n = len(rows)
        source = cfg.label_source
        if source == "original":
            y, classes = labels.original_labels([r["label"] for r in rows], [r["path"] for r in rows])
            k = len(classes)
            audit.progress.log(f"labels: {k} original classes")
        elif source == "clusters":
            k = labels.resolve_k(cfg.k, n)
            y, _ = labels.kmeans_labels(audit.train_vectors, k, cfg.seed, spherical=audit.scorer.higher_is_closer)
            audit.progress.log(f"labels: k-means on {audit.scorer_name} embeddings, K = {k}")
        elif source == "random":
            k = labels.resolve_k(cfg.k, n)
            y = labels.random_labels(n, k, cfg.seed)
            audit.progress.log(f"labels: {k} random groups")
        else:  # synthetic-clusters: labels live on the synthetic set
            syn = audit._load_synthetic(cfg)
            k_req = labels.resolve_k(cfg.k, len(syn)) if cfg.k else min(labels.default_k(n), len(syn))
            vecs = audit.scorer.embed(synthetic.images(audit.target, syn, audit.device))
            syn_y, k = labels.synthetic_cluster_labels(vecs, k_req, cfg.seed)
            np.save(audit.ws.cache_dir / "synthetic_labels.npy", syn_y)
            y = np.full(n, -1, dtype=np.int64)
            audit.progress.log(f"labels: {k} of {k_req} synthetic clusters kept (mean cosine >= 0.5)")
        audit._update("labels", 1, 1)
        with audit.db.atomic():
            for i, lab in enumerate(y.tolist()):
                audit.db.execute("update train_images set surrogate = ? where idx = ?", [lab, i])
            storage.set_kv(audit.db, "k", int(k))
        audit.k, audit.surrogate = int(k), y
