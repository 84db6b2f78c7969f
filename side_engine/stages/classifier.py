"""The time-independent (TI) classifier, trained on augmented training images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import ranks
from ..classifier_training import ti_batch, train_ti
from ..classifiers import (
    ResNetClassifier,
    load_classifier,
    save_classifier,
    small_stem_for,
)
from .base import frozen, train_rows

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("classifier",)
SPLIT = "rank0"
# Share of its own training images the TI classifier must label right, below which the run warns:
# every image it confuses is a class guidance cannot aim at (docs/method.md, "Classifiers").
FIT_WARN = 0.9


def run(ctx: StageContext) -> None:
    """Produces ``artifacts.ti``."""
    art, cfg = ctx.artifacts, ctx.cfg
    path = ctx.ws.classifier_path("ti")
    if ctx.store.is_done("classifier") and path.exists():
        art.ti = frozen(load_classifier(path, ctx.device))
        return
    with ctx.store.timed("classifier"):
        torch.manual_seed(cfg.seed)
        size = ctx.target.sample_size
        model = ResNetClassifier(art.k, ctx.target.channels, cfg.resolved_width(size),
                                 small_stem_for(size, cfg.classifier_stem)).to(ctx.device)
        batch = ti_batch(len(art.surrogate))

        # the owner alone (others wait): with a single process's thread count, its classifier
        with ranks.owner_alone(ctx.device, cfg.threads):
            report = train_ti(train_rows(ctx), torch.from_numpy(art.surrogate), model,
                              cfg.classifier_epochs, cfg.classifier_lr, batch, cfg.seed, ctx.report.for_training(),
                              min_steps=cfg.classifier_min_steps, fit=cfg.classifier_fit,
                              max_steps=cfg.classifier_max_steps)
            report.details["trained_by"] = ranks.trained_by(ctx.device)
        save_classifier(model, path, {"accuracy": report.accuracy})
        ctx.store.store_classifier("ti", path.relative_to(ctx.ws.root).as_posix(), report)
        ctx.report.log(f"TI classifier: accuracy {report.accuracy:.3f} on {report.held_out}; "
                       f"train accuracy {report.details['train_accuracy']:.3f}, under noise σ = 0.2 "
                       f"{report.details['noise_0.2_accuracy']:.3f} ({report.details['steps']} steps"
                       + (f"; {report.details['steps'] - report.details['planned_steps']} more than planned to reach "
                          f"classifier_fit = {cfg.classifier_fit:g}" if report.details["fit_blocks"] else "") + ")")
        fit = report.details["train_accuracy"]
        if fit < FIT_WARN:
            ctx.report.warn(f"The TI classifier labels only {100 * fit:.0f} % of the training images it was trained "
                            f"on correctly (below {100 * FIT_WARN:.0f} %): the others' labels, which the TD classifier "
                            "learns and guidance steers towards, are wrong, so SIDE cannot aim at those images; "
                            f"raise classifier_max_steps (it trained {report.details['steps']} steps) or "
                            "classifier_min_steps.")
        art.ti = frozen(model)
