"""Run (or resume) a whole SIDE audit, stage by stage, storing results as they come.

Stages: import → embed → labels → classifier (TI) → synthetic → tdkd (TD) →
sample (+ streamed scoring) → metrics. A finished stage is never redone; the
sampling stage commits one batch per transaction (samples and their matches
together), so a stopped or killed run resumes without redoing or duplicating
work. Before resuming, the checkpoint and training-set hashes and the
result-affecting settings are compared with those the audit started with.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, cpu, labels, results, storage
from .checkpoint import TargetModel, load_target
from .classifiers import (
    ResNetClassifier,
    for_guidance,
    small_stem_for,
)
from .config import RESUMABLE_CHANGES, AuditConfig
from .devices import default_batch_size, describe, fit_batch_size, resolve_device
from .errors import Cancelled, InputError, WorkspaceError
from .progress import Progress, WorkspaceLog
from .sampler import Guide, GuidedSampler
from .scorers import bands_for, bands_setting, check_training_size, choose_scorer_name
from .stages import classifier, embedding, metrics, sampling, surrogate_labels, synthetic, tdkd, training_data
from .stages.base import STAGES, StageTimer
from .training_set import (
    IMAGE_SUFFIXES,
    files_fingerprint,
    list_images,
    to_model_tensor_range,
)
from .workspace import Workspace


def package_versions() -> dict[str, str]:
    import diffusers
    import faiss
    import sqlite_utils

    return {"side-audit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "numpy": np.__version__, "faiss": faiss.__version__,
            "sqlite-utils": getattr(sqlite_utils, "__version__", "4")}


class AuditRunner(sampling.SamplingContext):
    """Owns one run of one workspace; ``run()`` is safe to call again after a stop."""

    def __init__(self, workspace: Workspace | str | Path, progress: Progress | None = None) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.progress = WorkspaceLog(progress or Progress(), self.ws.log_path, self.ws.stop_path)

    # -- helpers ---------------------------------------------------------------
    def _update(self, stage: str, done: int, total: int) -> None:
        self.progress.update(stage, done, total)
        storage.set_stage(self.db, stage, STAGES.index(stage), done=done, total=total)

    def _done(self, stage: str) -> bool:
        rows = {r["name"]: r for r in storage.stage_rows(self.db)}
        return rows.get(stage, {}).get("status") == "done"

    def _stage(self, name: str) -> StageTimer:
        return StageTimer(self.db, name, self.progress)

    # -- entry point -------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.ws.load_config()
        self.cfg = cfg
        self._samplers: list[GuidedSampler] = []
        self._guiding_cache: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        # `threads` > 0: exactly that many; 0: one per core this process may use (affinity,
        # cgroup quota), not per core of the machine
        self.threads = cpu.set_torch_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.target: TargetModel = load_target(cfg.checkpoint, cfg.scheduler_config, cfg.allow_pickle, cfg.weights)
        self.target.to(self.device)
        self.ws.ensure_dirs()
        self.ws.stop_path.unlink(missing_ok=True)  # a request to stop an earlier run is not for this one
        self.db = storage.connect(self.ws.db_path)
        started, outcome = time.time(), "run failed"
        self.progress.write(f"run started: side-audit {__version__} on {describe(self.device)}, "
                            f"{self.threads} CPU threads")
        try:
            self._check_identity(cfg)
            self.scorer_name = choose_scorer_name(cfg.scorer, self.target.image_size)
            self.bands = bands_for(getattr(cfg, bands_setting(self.scorer_name)))
            training_data.run(self, cfg)
            check_training_size(self.scorer_name, len(self.train_pixels))
            self.batch = self._choose_batch(cfg)
            self._record_audit(cfg)
            self._log_estimate(cfg)
            embedding.run(self, cfg)
            synthetic_first = cfg.label_source == "synthetic-clusters"
            if synthetic_first:
                synthetic.run(self, cfg, num_classes=0)
            surrogate_labels.run(self, cfg)
            if not synthetic_first:
                classifier.run(self, cfg)
                synthetic.run(self, cfg, num_classes=0)
            tdkd.run(self, cfg)
            sampling.run(self, cfg)
            metrics.run(self, cfg)
            outcome = "run complete"
            return results.metrics_json(self.db)
        except (Cancelled, KeyboardInterrupt):
            outcome = "run stopped by the user (resumable)"
            raise
        except Exception as e:
            outcome = f"run failed: {e}"
            raise
        finally:
            self.progress.write(f"{outcome} after {time.time() - started:.0f} s")
            self.ws.stop_path.unlink(missing_ok=True)  # a stop request ends with the run it stopped
            for sampler in self._samplers:
                if sampler.compile_error:
                    self.progress.log(f"torch.compile was not used: {sampler.compile_error}")
                sampler.close()
            self.db.close()

    # -- identity ------------------------------------------------------------------
    def _check_identity(self, cfg: AuditConfig) -> None:
        """A resumed audit must see the same model, data and result-affecting settings."""
        rows = list(self.db["audits"].rows)
        if not rows:
            return
        audit = rows[0]
        if audit["checkpoint_sha256"] != self.target.sha256:
            raise WorkspaceError(f"checkpoint {cfg.checkpoint} changed since this audit started "
                                 f"(SHA-256 {audit['checkpoint_sha256'][:12]}… → {self.target.sha256[:12]}…); "
                                 "start a new workspace instead of mixing results")
        stored_files = storage.get_kv(self.db, "train_files_fingerprint")
        if stored_files and files_fingerprint(Path(cfg.train_data).expanduser()) != stored_files:
            raise WorkspaceError(f"training data {cfg.train_data} changed since this audit started; "
                                 "start a new workspace instead of mixing results")
        old = json.loads(audit["config"])
        changed = [k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and old.get(k) != v]
        if changed:
            was = "; ".join(f"{k} = {json.dumps(old.get(k))}" for k in changed)
            raise WorkspaceError(f"{self.ws.config_path}: settings changed since this audit started: "
                                 f"{', '.join(changed)}; restore them ({was}) or start a new workspace")

    def _record_audit(self, cfg: AuditConfig) -> None:
        if list(self.db["audits"].rows):
            with self.db.atomic():
                self.db["audits"].update(1, {"device": describe(self.device)})
            return
        with self.db.atomic():
            self.db["audits"].insert({
                "id": 1, "created": storage.now(), "config": json.dumps(cfg.to_dict()),
                "checkpoint_path": str(self.target.path), "checkpoint_sha256": self.target.sha256,
                "train_path": str(Path(cfg.train_data).expanduser().resolve()),
                "train_fingerprint": storage.get_kv(self.db, "train_fingerprint"),
                "n_train": self.db["train_images"].count, "versions": json.dumps(package_versions()),
                "device": describe(self.device), "scorer": self.scorer_name, "scorer_source": "",
                "scorer_sha256": "",
            })
            storage.set_kv(self.db, "model", self.target.summary())

    def _choose_batch(self, cfg: AuditConfig) -> int:
        """The configured batch, else on CUDA the largest that fits free memory by a probe of
        one guided step (``devices.fit_batch_size``), else a fixed CPU/MPS size."""
        if cfg.batch_size:
            return cfg.batch_size
        if self.device.type != "cuda":
            return default_batch_size(self.device, self.target.sample_size, self.target.channels)
        step, close = self._probe_step(cfg)
        try:
            batch, info = fit_batch_size(step, self.device)
        finally:
            close()
        self.progress.log(f"batch size {batch}, chosen from free GPU memory ({info['free_mb']:.0f} MB free; "
                          f"{info['per_image_mb']:.1f} MB per image, {info['fixed_mb']:.0f} MB fixed)")
        return batch

    def _probe_step(self, cfg: AuditConfig):
        """(step(b): one guided sampling step at batch b with this audit's networks and settings,
        close()). The classifier is untrained but of the audit's shape: memory is what counts."""
        size, ch = self.target.sample_size, self.target.channels
        k = max(2, cfg.k or labels.default_k(max(len(self.train_pixels), 2)))
        clf = for_guidance(ResNetClassifier(k, ch, cfg.resolved_width(size), small_stem_for(size, cfg.classifier_stem),
                                            time_dependent=True).to(self.device))
        sampler = GuidedSampler(self.target.unet, self.target.scheduler, cfg.sampler, cfg.steps, cfg.eta,
                                self.device, cfg.precision, convention=cfg.sampler_convention)

        def step(b: int) -> torch.Tensor:
            noise = torch.randn(b, ch, size, size, device=self.device)
            gens = [torch.Generator().manual_seed(i) for i in range(b)]
            return sampler.sample(noise, torch.ones(b), torch.zeros(b, dtype=torch.long),
                                  [Guide(clf, torch.arange(b, device=self.device), True)], generators=gens, steps=1)

        return step, sampler.close

    def _log_estimate(self, cfg: AuditConfig) -> None:
        """Before the long stages: a timed probe of this device, scaled to the work left."""
        from .estimate import describe_seconds, estimate, probe, work_left

        left = work_left(self.db, cfg)
        if "metrics" in left["done"]:
            return
        k = cfg.k or labels.default_k(len(self.train_pixels))
        per = probe(self.target.unet, self.target.scheduler, cfg, k, self.target.channels, self.target.sample_size,
                    self.device, self.batch, self.target.decode if self.target.latent else None)
        est = estimate(per, cfg, len(self.train_pixels), left)
        storage.set_kv(self.db, "estimate", est)
        storage.set_kv(self.db, "estimate_device", describe(self.device))
        self.progress.log(f"estimated time left ≈ {describe_seconds(est['total'])} on {describe(self.device)} "
                          f"(probe: UNet {1e3 * per['unet']:.2f} ms, guidance {1e3 * per['guidance']:.2f} ms "
                          "per image and step)")

    # -- helpers the stages share (side_engine/stages/) ----------------------------------
    def _train_tensor(self) -> torch.Tensor:
        """The training images as the UNet models them: pixels in [-1, 1], or for a latent model
        their latents (encoded once, in batches, and cached in the workspace)."""
        if not self.target.latent:
            return torch.from_numpy(to_model_tensor_range(np.asarray(self.train_pixels)))
        cache = self.ws.cache_dir / "train_latents.npy"
        if cache.exists():
            return torch.from_numpy(np.load(cache))
        chunks = []
        for i in range(0, len(self.train_pixels), 32):
            x = torch.from_numpy(to_model_tensor_range(np.asarray(self.train_pixels[i:i + 32])))
            chunks.append(self.target.encode(x.to(self.device)).float().cpu())
            self.progress.check()
        latents = torch.cat(chunks)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, latents.numpy())
        tmp.replace(cache)
        return latents

    def _classifier_path(self, name: str) -> Path:
        return self.ws.classifiers_dir / f"{name}.safetensors"

    def _store_classifier(self, name: str, path: Path, report) -> None:
        with self.db.atomic():
            self.db["classifiers"].upsert({
                "name": name, "path": str(path.relative_to(self.ws.root)), "accuracy": report.accuracy,
                "details": json.dumps({"measured_on": report.held_out, "final_loss": report.final_loss,
                                       **report.details}),
            }, pk="name")

    def _sampler(self, cfg: AuditConfig) -> GuidedSampler:
        sampler = sampling.make_sampler(self.target, cfg, self.device, self._compile(cfg))
        self._samplers.append(sampler)
        return sampler

    def _compile(self, cfg: AuditConfig) -> bool:
        """torch.compile pays off only over long runs: on an H200 compiling took ~75 s and then
        saved ~0.65 ms per image and step (128 px UNet, bf16), so break-even is ~110 000
        image-steps; ``auto`` asks for 150 000 (the paper's audits have millions)."""
        if cfg.compile == "auto":
            return self.device.type == "cuda" and len(cfg.grid()) * cfg.n_per_lambda * cfg.steps >= COMPILE_WORK
        return cfg.compile == "on"


    def _n_syn(self, cfg: AuditConfig) -> int:
        """The synthetic set's size: at least 20 images a class unless set (K known from the
        labels stage, or, for synthetic-clusters, its default from N)."""
        k = getattr(self, "k", None) or labels.resolve_k(cfg.k, len(self.train_pixels))
        return cfg.resolved_n_syn(k)

    def _load_synthetic(self, cfg: AuditConfig) -> np.ndarray:
        return synthetic.load(self, cfg)

    def _warn(self, text: str) -> None:
        """A finding about the audit's own reliability: logged, stored, shown by the app and reports."""
        self.progress.log(f"WARNING: {text}")
        warnings = storage.get_kv(self.db, "warnings", [])
        if text not in warnings:
            storage.set_kv(self.db, "warnings", warnings + [text])


COMPILE_WORK = 150_000  # image-steps of sampling above which compile = auto compiles


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
