"""The time-independent (TI) classifier, trained on augmented training images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..classifier_training import ti_batch, train_ti
from ..classifiers import (
    ResNetClassifier,
    load_classifier,
    save_classifier,
    small_stem_for,
)
from ..config import AuditConfig
from .base import StoredProgress, frozen

if TYPE_CHECKING:
    from ..audit import AuditRunner

NAMES = ("classifier",)
SPLIT = "rank0"


def run(audit: AuditRunner, cfg: AuditConfig) -> None:
    path = audit._classifier_path("ti")
    if audit._done("classifier") and path.exists():
        audit.ti = frozen(load_classifier(path, audit.device))
        return
    with audit._stage("classifier"):
        torch.manual_seed(cfg.seed)
        model = ResNetClassifier(audit.k, audit.target.channels, cfg.resolved_width(audit.target.sample_size),
                                 small_stem_for(audit.target.sample_size, cfg.classifier_stem)).to(audit.device)
        batch = ti_batch(len(audit.surrogate))
        report = train_ti(audit._train_tensor(), torch.from_numpy(audit.surrogate), model,
                          cfg.classifier_epochs, cfg.classifier_lr, batch, cfg.seed, StoredProgress(audit),
                          min_steps=cfg.classifier_min_steps)
        save_classifier(model, path, {"accuracy": report.accuracy})
        audit._store_classifier("ti", path, report)
        audit.progress.log(f"TI classifier: accuracy {report.accuracy:.3f} on {report.held_out}; "
                          f"train accuracy {report.details['train_accuracy']:.3f}, under noise σ = 0.2 "
                          f"{report.details['noise_0.2_accuracy']:.3f} ({report.details['steps']} steps)")
        audit.ti = frozen(model)
