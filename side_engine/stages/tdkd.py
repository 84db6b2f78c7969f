"""Time-dependent knowledge distillation: the TD classifier learns the TI classifier on noised synthetic images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..classifier_training import soft_labels, train_td
from ..classifiers import (
    ResNetClassifier,
    load_classifier,
    save_classifier,
    small_stem_for,
    time_dependent_from,
)
from ..config import AuditConfig
from ..training_set import to_model_tensor_range
from .base import StoredProgress, frozen

if TYPE_CHECKING:
    from ..audit import AuditRunner

NAMES = ("tdkd",)
AGREEMENT_WARN = 0.9  # TD/TI agreement at t = 0 below which the run warns (docs/method.md)
SPLIT = "rank0"


def run(audit: AuditRunner, cfg: AuditConfig) -> None:
    path = audit._classifier_path("td")
    needs_td = "side" in cfg.methods or cfg.label_source == "synthetic-clusters"
    if not needs_td:
        audit.td = None
        return
    if audit._done("tdkd") and path.exists():
        audit.td = frozen(load_classifier(path, audit.device))
        return
    with audit._stage("tdkd"):
        syn = audit._load_synthetic(cfg)
        x0 = torch.from_numpy(to_model_tensor_range(syn))
        torch.manual_seed(cfg.seed + 1)
        if cfg.label_source == "synthetic-clusters":
            td = ResNetClassifier(audit.k, audit.target.channels, cfg.resolved_width(audit.target.sample_size),
                                  small_stem_for(audit.target.sample_size, cfg.classifier_stem),
                                  time_dependent=True).to(audit.device)
            targets = torch.from_numpy(np.load(audit.ws.cache_dir / "synthetic_labels.npy"))
            hard = True
        else:
            td = time_dependent_from(audit.ti)
            targets = soft_labels(audit.ti, x0.to(audit.device)).cpu()
            hard = False
        td.requires_grad_(True)
        report = train_td(td, x0, targets, audit.target.scheduler.alphas_cumprod, cfg.tdkd_epochs,
                          cfg.tdkd_lr, min(64, len(x0)), cfg.seed, StoredProgress(audit), hard_labels=hard,
                          log=audit.progress.log)
        save_classifier(td, path, {"accuracy": report.accuracy})
        audit._store_classifier("td", path, report)
        agree = ", ".join(f"{k}: {v:.2f}" for k, v in report.details["agreement_by_t"].items())
        audit.progress.log(f"TD classifier ({report.details['objective']}): final loss {report.final_loss:.4f}; "
                          f"held-out agreement {agree}")
        if not hard and report.accuracy < AGREEMENT_WARN:
            audit._warn(f"The TD classifier agrees with the TI classifier on only {100 * report.accuracy:.0f} % "
                       f"of held-out synthetic images at t = 0 (it starts at 100 %; below "
                       f"{100 * AGREEMENT_WARN:.0f} % guidance may steer towards the wrong images): raise "
                       "tdkd_epochs or tdkd_lr.")
        audit.td = frozen(td)
