"""Run (or resume) a whole SIDE audit, stage by stage, storing results as they come.

Stages (``side_engine.pipeline``, as the settings need them): import → embed → labels →
classifier (TI) → synthetic → tdkd (TD) → sample (+ streamed scoring) → metrics. A finished
stage is never redone; the
sampling stage commits one batch per transaction (samples and their matches
together), so a stopped or killed run resumes without redoing or duplicating
work. Before resuming, the checkpoint and training-set hashes and the
result-affecting settings are compared with those the audit started with.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, cpu, labels, results
from .checkpoint import TargetModel, load_target
from .classifiers import (
    ResNetClassifier,
    for_guidance,
    small_stem_for,
)
from .config import RESUMABLE_CHANGES, AuditConfig, adopt_legacy, movable
from .devices import default_batch_size, describe, fit_batch_size, guide_precision, resolve_device
from .errors import Cancelled, ConfigError, InputError, WorkspaceError
from .pipeline import stage_order
from .progress import Progress, WorkspaceLog
from .run_store import RunStore
from .sampler import Guide, GuidedSampler
from .scorers import check_training_size
from .stages import stage_names, training_data
from .stages.context import StageContext
from .training_set import IMAGE_SUFFIXES, files_fingerprint, list_images
from .workspace import Workspace


def package_versions() -> dict[str, str]:
    import diffusers
    import faiss
    import sqlite_utils

    return {"side-audit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "numpy": np.__version__, "faiss": faiss.__version__,
            "sqlite-utils": getattr(sqlite_utils, "__version__", "4")}


class AuditRunner:
    """Owns one run of one workspace; ``run()`` is safe to call again after a stop.

    The runner builds the :class:`~side_engine.stages.context.StageContext` and runs the stages
    of :func:`~side_engine.pipeline.stage_order` in turn; what the stages produced is on
    ``runner.ctx.artifacts`` afterwards. Between the import and the stages after it, the runner
    does the checks that need the training set: its size for the scorer, the batch size, the
    audit's record and the duration estimate."""

    def __init__(self, workspace: Workspace | str | Path, progress: Progress | None = None) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.progress = WorkspaceLog(progress or Progress(), self.ws.log_path, self.ws.stop_path)
        self.ctx: StageContext | None = None

    # -- entry point -------------------------------------------------------------
    def run(self, until: str | None = None) -> dict:
        """Run (or resume) the audit; ``until``: stop after that stage (a benchmark's or a
        planner's partial run: the stages after it run on the next call). Returns the stored
        metrics, or {} when stopped early."""
        cfg = self.ws.load_config()
        if until is not None and until not in stage_names(cfg):
            raise ConfigError(f"until = {until!r}: not a stage of this audit ({', '.join(stage_names(cfg))})")
        # `threads` > 0: exactly that many; 0: one per core this process may use (affinity,
        # cgroup quota), not per core of the machine
        threads = cpu.set_torch_threads(cfg.threads)
        device = resolve_device(cfg.device)
        target: TargetModel = load_target(cfg.checkpoint, cfg.scheduler_config, cfg.allow_pickle, cfg.weights)
        target.to(device)
        self.ws.ensure_dirs()
        self.ws.stop_path.unlink(missing_ok=True)  # a request to stop an earlier run is not for this one
        store = RunStore.open(self.ws.db_path, self.progress, device)
        started, outcome = time.time(), "run failed"
        self.progress.write(f"run started: side-audit {__version__} on {describe(device)}, {threads} CPU threads")
        try:
            ctx = self.ctx = StageContext.open(cfg, self.ws, store, device, target, self.progress, threads)
            self._check_identity(ctx)
            for stage in stage_order(cfg):
                stage.run(ctx)
                if stage is training_data:
                    self.prepare(ctx)
                if until is not None and until in stage.NAMES:
                    outcome = f"run stopped after {until}, as asked (resumable)"
                    return {}
            outcome = "run complete"
            return results.metrics_json(store.connection)
        except (Cancelled, KeyboardInterrupt):
            outcome = "run stopped by the user (resumable)"
            raise
        except Exception as e:
            outcome = f"run failed: {e}"
            raise
        finally:
            self.progress.write(f"{outcome} after {time.time() - started:.0f} s")
            self.ws.stop_path.unlink(missing_ok=True)  # a stop request ends with the run it stopped
            store.close()

    def prepare(self, ctx: StageContext) -> None:
        """What needs the imported training set before any long stage: the scorer's minimum
        set size, the batch, the audit's record and the duration estimate."""
        check_training_size(ctx.scorer_name, len(ctx.artifacts.train_pixels))
        if ctx.cfg.heldout_data:  # a wrong folder is said now, not after the sampling budget is spent
            from .stages.heldout import list_heldout

            list_heldout(Path(ctx.cfg.heldout_data).expanduser())
        ctx.batch = self._choose_batch(ctx)
        self._record_audit(ctx)
        self._log_estimate(ctx)

    # -- identity ------------------------------------------------------------------
    def _check_identity(self, ctx: StageContext) -> None:
        """A resumed audit must see the same model, data and result-affecting settings."""
        cfg, store = ctx.cfg, ctx.store
        audit = store.audit_record()
        if audit is None:
            return
        if audit["checkpoint_sha256"] != ctx.target.sha256:
            raise WorkspaceError(f"checkpoint {cfg.checkpoint} changed since this audit started "
                                 f"(SHA-256 {audit['checkpoint_sha256'][:12]}… → {ctx.target.sha256[:12]}…); "
                                 "start a new workspace instead of mixing results")
        stored_files = store.get("train_files_fingerprint")
        if stored_files and files_fingerprint(Path(cfg.train_data).expanduser()) != stored_files:
            raise WorkspaceError(f"training data {cfg.train_data} changed since this audit started; "
                                 "start a new workspace instead of mixing results")
        stored = json.loads(audit["config"])
        adopt_legacy(cfg, stored)
        old = AuditConfig.from_stored(stored).to_dict()
        verified = movable(bool(stored_files))  # content verified just above
        changed = [k for k, v in cfg.to_dict().items()
                   if k not in RESUMABLE_CHANGES | verified and old.get(k) != v]
        if changed:
            was = "; ".join(f"{k} = {json.dumps(old.get(k))}" for k in changed)
            raise WorkspaceError(f"{self.ws.config_path}: settings changed since this audit started: "
                                 f"{', '.join(changed)}; restore them ({was}) or start a new workspace")
        moved = sorted(k for k in verified if old.get(k) != getattr(cfg, k))
        if moved:
            self._record_move(ctx, stored, moved)

    def _record_move(self, ctx: StageContext, stored: dict, moved: list[str]) -> None:
        """Point the audit's record at the folders where the same model and images now lie
        (the report finds training thumbnails through it); the log says what moved."""
        cfg = ctx.cfg
        for key in moved:
            self.progress.write(f"{key} moved: {stored.get(key)} -> {getattr(cfg, key)} (same content, verified)")
            stored[key] = getattr(cfg, key)
        ctx.store.update_audit_record({"config": json.dumps(stored), "checkpoint_path": str(ctx.target.path),
                                       "train_path": str(Path(cfg.train_data).expanduser().resolve())})

    def _record_audit(self, ctx: StageContext) -> None:
        cfg, store = ctx.cfg, ctx.store
        if store.audit_record() is not None:
            store.update_audit_record({"device": describe(ctx.device)})
            return
        store.create_audit_record({
            "config": json.dumps(cfg.to_dict()),
            "checkpoint_path": str(ctx.target.path), "checkpoint_sha256": ctx.target.sha256,
            "train_path": str(Path(cfg.train_data).expanduser().resolve()),
            "versions": json.dumps(package_versions()),
            "device": describe(ctx.device), "scorer": ctx.scorer_name, "scorer_source": "",
            "scorer_sha256": "",
        }, ctx.target.summary())

    def _choose_batch(self, ctx: StageContext) -> int:
        """The configured batch, else on CUDA the largest that fits free memory by a probe of
        one guided step (``devices.fit_batch_size``), else a fixed CPU/MPS size."""
        cfg = ctx.cfg
        if cfg.batch_size:
            return cfg.batch_size
        if ctx.device.type != "cuda":
            return default_batch_size(ctx.device, ctx.target.sample_size, ctx.target.channels)
        step, close = probe_step(ctx)
        try:
            batch, info = fit_batch_size(step, ctx.device)
        finally:
            close()
        ctx.report.log(f"batch size {batch}, chosen from free GPU memory ({info['free_mb']:.0f} MB free; "
                       f"{info['per_image_mb']:.1f} MB per image, {info['fixed_mb']:.0f} MB fixed)")
        return batch

    def _log_estimate(self, ctx: StageContext) -> None:
        """Before the long stages: a timed probe of this device, scaled to the work left."""
        from .estimate import describe_seconds, estimate, probe, scoring_probe, work_left

        cfg, target, n = ctx.cfg, ctx.target, len(ctx.artifacts.train_pixels)
        left = work_left(ctx.store.connection, cfg)
        if "metrics" in left["done"]:
            return
        k = cfg.k or labels.default_k(n)
        # a resumed run on the same machine, device, threads and batch reuses its first probe: the
        # probe takes seconds (5 s for the demo on a CPU), every resume paid them again, and what it
        # measures has not changed (a fork clears it with the other stored estimates)
        key = {"device": describe(ctx.device), "host": platform.node(), "cpus": os.cpu_count(),
               "threads": ctx.threads, "batch": ctx.batch, "k": k}
        per = ctx.store.get("estimate_per_image")
        reused = bool(per) and ctx.store.get("estimate_probe") == key
        if not reused:
            per = probe(target.unet, target.scheduler, cfg, k, target.channels, target.sample_size,
                        ctx.device, ctx.batch, target.decode if target.latent else None)
            per.update(scoring_probe(ctx.scorer_name, cfg.sscd_model, ctx.threads, ctx.artifacts.train_pixels, n))
            from .memory import release

            release()  # the probe's training step freed ~1 GB at 128 px: give it back before the stages
        est = estimate(per, cfg, n, left)
        ctx.store.put("estimate_probe", key)
        ctx.store.put("estimate", est)
        ctx.store.put("estimate_per_image", per)  # the budget planner's seconds per image
        ctx.store.put("estimate_device", describe(ctx.device))
        ctx.report.log(f"estimated time left ≈ {describe_seconds(est['total'])} on {describe(ctx.device)} "
                       f"({'the run’s first probe' if reused else 'probe'}: UNet {1e3 * per['unet']:.2f} ms, "
                       f"guidance {1e3 * per['guidance']:.2f} ms per image and step)")
        if est.get("classifier_at_most", 0.0) > est["classifier"]:
            ctx.report.log("the TI classifier may train on until it fits its own images (classifier_fit): up to "
                           f"{describe_seconds(est['classifier_at_most'])} instead of "
                           f"{describe_seconds(est['classifier'])}")


def probe_step(ctx: StageContext):
    """(step(b): one guided sampling step at batch b with this audit's networks and settings,
    close()). The classifier is untrained but of the audit's shape: memory is what counts."""
    cfg, device = ctx.cfg, ctx.device
    size, ch = ctx.target.sample_size, ctx.target.channels
    k = max(2, cfg.k or labels.default_k(max(len(ctx.artifacts.train_pixels), 2)))
    clf = for_guidance(ResNetClassifier(k, ch, cfg.resolved_width(size), small_stem_for(size, cfg.classifier_stem),
                                        time_dependent=True).to(device))
    sampler = GuidedSampler(ctx.target.unet, ctx.target.scheduler, cfg.sampler, cfg.steps, cfg.eta,
                            device, cfg.precision, convention=cfg.sampler_convention,
                            guide_precision=guide_precision(cfg.guide_precision, cfg.precision, device))

    def step(b: int) -> torch.Tensor:
        noise = torch.randn(b, ch, size, size, device=device)
        gens = [torch.Generator().manual_seed(i) for i in range(b)]
        return sampler.sample(noise, torch.ones(b), torch.zeros(b, dtype=torch.long),
                              [Guide(clf, torch.arange(b, device=device), True)], generators=gens, steps=1).images

    return step, sampler.close


def init_workspace(root: str | Path, checkpoint: str, train_data: str, labels_csv: str = "",
                   overwrite: bool = False, **settings) -> Workspace:
    """Check the inputs enough to fail early, then write ``audit.toml`` with every default."""
    ws = Workspace(root)
    target = load_target(checkpoint, settings.get("scheduler_config", ""), settings.get("allow_pickle", False),
                         settings.get("weights", "auto"))
    files = list_images(Path(train_data).expanduser())
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        raise InputError(f"training data {train_data}: no images")
    cfg = AuditConfig(checkpoint=str(Path(checkpoint).expanduser().resolve()),
                      train_data=str(Path(train_data).expanduser().resolve()),
                      labels_csv=str(Path(labels_csv).expanduser().resolve()) if labels_csv else "", **settings)
    cfg.validate()
    ws.write_config(cfg, overwrite=overwrite)
    del target
    return ws
