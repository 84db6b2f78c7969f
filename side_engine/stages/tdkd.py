"""Time-dependent knowledge distillation: the TD classifier learns the TI classifier on noised synthetic images.

On several processes every rank trains together (data-parallel, ``train_td``): rank 0 prepares
the start — the TD network, the synthetic set and its targets — and broadcasts it; each rank
rebuilds the same network and they train it on shards of every batch.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import ranks
from ..classifier_training import TrainReport, soft_labels, train_td
from ..classifiers import (
    ResNetClassifier,
    load_classifier,
    save_classifier,
    small_stem_for,
    time_dependent_from,
)
from ..image_rows import as_rows
from ..progress import Progress
from . import synthetic
from .base import frozen

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("tdkd",)
AGREEMENT_WARN = 0.9  # TD/TI agreement at t = 0 below which the run warns (docs/method.md)
SPLIT = "data"  # every rank trains on a shard of each batch


def run(ctx: StageContext) -> None:
    """Produces ``artifacts.td``: distilled from ``artifacts.ti`` on the synthetic set, or, for
    synthetic-clusters, trained on the synthetic set's cluster labels."""
    art, cfg = ctx.artifacts, ctx.cfg
    path = ctx.ws.classifier_path("td")
    if ctx.store.is_done("tdkd") and path.exists():
        art.td = frozen(load_classifier(path, ctx.device))
        return

    with ctx.store.timed("tdkd"):
        syn = synthetic.load(ctx)
        torch.manual_seed(cfg.seed + 1)
        if cfg.label_policy.on_synthetic_set:
            size = ctx.target.sample_size
            td = ResNetClassifier(art.k, ctx.target.channels, cfg.resolved_width(size),
                                  small_stem_for(size, cfg.classifier_stem), time_dependent=True)
            targets = torch.from_numpy(np.load(ctx.ws.cache_dir / "synthetic_labels.npy"))
            hard = True
        else:
            td = time_dependent_from(art.ti)
            with ranks.owner_alone(ctx.device, cfg.threads):  # the others wait: their cores too
                targets = soft_labels(art.ti, syn, temperature=cfg.tdkd_temperature)
            hard = False
        n_ranks = ranks.world_size() if ranks.tdkd_data_parallel(ctx.device) else 1
        # one process reads the synthetic set from its chunks a batch at a time; other
        # processes (perhaps on other machines) are sent it as stored (uint8 for pixel models)
        job = {"syn": syn.stored() if n_ranks > 1 else syn, "targets": targets, "hparams": td.hparams,
               "state": {k: v.detach().cpu() for k, v in td.state_dict().items()},
               "alphas_cumprod": ctx.target.scheduler.alphas_cumprod, "epochs": cfg.tdkd_epochs,
               "lr": cfg.tdkd_lr, "batch": min(64, len(syn)), "seed": cfg.seed, "hard": hard}
        if n_ranks > 1:
            ranks.share_tdkd(job)
            ctx.report.log(f"TDKD training on {n_ranks} processes (data-parallel)")
        elif ranks.world_size() > 1:
            ctx.report.log("TDKD training on the owner with every core of this machine (the other processes wait): "
                           "the classifier a single process trains")
        with ranks.owner_alone(ctx.device, cfg.threads) if n_ranks == 1 else nullcontext():
            td, report = train_shared(job, ctx.device, ctx.report.for_training(), log=ctx.report.log,
                                      data_parallel=n_ranks > 1)
            report.details["trained_by"] = ranks.trained_by(ctx.device, n_ranks)
        save_classifier(td, path, {"accuracy": report.accuracy})
        ctx.store.store_classifier("td", path.relative_to(ctx.ws.root).as_posix(), report)
        agree = ", ".join(f"{k}: {v:.2f}" for k, v in report.details["agreement_by_t"].items())
        ctx.report.log(f"TD classifier ({report.details['objective']}): final loss {report.final_loss:.4f}; "
                       f"held-out agreement {agree}")
        if not hard and report.accuracy < AGREEMENT_WARN:
            ctx.report.warn(f"The TD classifier agrees with the TI classifier on only {100 * report.accuracy:.0f} % "
                            f"of held-out synthetic images at t = 0 (it starts at 100 %; below "
                            f"{100 * AGREEMENT_WARN:.0f} % guidance may steer towards the wrong images): raise "
                            "tdkd_epochs or tdkd_lr.")
        art.td = frozen(td)


def train_shared(job: dict, device: torch.device, progress: Progress | None,
                 log=None, data_parallel: bool = True) -> tuple[ResNetClassifier, TrainReport | None]:
    """Train the TD classifier from ``job`` on this process (and, in a process group with
    ``data_parallel``, with the others): every rank runs this with the same job."""

    dtype = job.get("dtype", torch.float32)  # float64: for checks that exclude rounding
    td = ResNetClassifier(**job["hparams"])
    td.load_state_dict(job["state"])
    td = td.to(device, dtype).requires_grad_(True)
    x0 = as_rows(job["syn"])
    targets = job["targets"] if job["hard"] else job["targets"].to(dtype)
    together = data_parallel and ranks.world_size() > 1
    stop = ranks.agree_to_stop if together else None
    report = train_td(td, x0, targets, job["alphas_cumprod"], job["epochs"], job["lr"], job["batch"],
                      job["seed"], progress or Progress(), hard_labels=job["hard"], log=log, stop=stop,
                      data_parallel=together)
    return td, report
