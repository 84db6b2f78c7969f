"""The TDKD synthetic set: the target model's own samples, generated in resumable chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import AuditConfig
from ..sampler import SYNTHETIC_STREAM, sample_inputs, sample_seed, to_uint8

if TYPE_CHECKING:
    from ..audit import AuditRunner

NAMES = ("synthetic",)
SPLIT = "rank0"  # its images are indexed like samples and could be handed out the same way; not yet


def run(audit: AuditRunner, cfg: AuditConfig, num_classes: int) -> None:
    if audit._done("synthetic"):
        return
    with audit._stage("synthetic"):
        sampler = audit._sampler(cfg)
        shape = (audit.target.channels, audit.target.sample_size, audit.target.sample_size)
        n, b = audit._n_syn(cfg), audit.batch
        for start in range(0, n, b):
            chunk = audit.ws.synthetic_dir / f"chunk_{start:08d}.npy"
            if not chunk.exists():
                idx = range(start, min(start + b, n))
                inputs = [sample_inputs(sample_seed(cfg.seed, i, SYNTHETIC_STREAM), shape, 0) for i in idx]
                noise = torch.stack([x for x, _, _ in inputs])
                zeros = torch.zeros(len(idx))
                x0 = sampler.sample(noise, zeros, torch.zeros(len(idx), dtype=torch.long),
                                    generators=[g for _, _, g in inputs])
                tmp = chunk.with_suffix(".tmp.npy")
                np.save(tmp, to_uint8(x0))
                tmp.replace(chunk)
            audit._update("synthetic", min(start + b, n), n)
            audit.progress.check()
