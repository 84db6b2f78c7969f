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
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__, cpu, labels, results, storage
from .checkpoint import TargetModel, load_target
from .classifier_training import soft_labels, train_td, train_ti
from .classifiers import (
    ResNetClassifier,
    for_guidance,
    load_classifier,
    save_classifier,
    small_stem_for,
    time_dependent_from,
)
from .config import RESUMABLE_CHANGES, AuditConfig
from .devices import default_batch_size, describe, fit_batch_size, resolve_device
from .errors import Cancelled, InputError, WorkspaceError
from .neighbours import TrainIndex
from .progress import Progress, WorkspaceLog
from .sampler import SYNTHETIC_STREAM, Guide, GuidedSampler, sample_inputs, sample_seed, target_classes, to_uint8
from .scorers import bands_for, bands_setting, check_training_size, choose_scorer_name, make_scorer
from .training_set import (
    IMAGE_SUFFIXES,
    files_fingerprint,
    import_training_set,
    list_images,
    to_model_tensor_range,
)
from .workspace import Workspace

STAGES = ("import", "embed", "labels", "classifier", "synthetic", "tdkd", "sample", "score", "metrics")


def package_versions() -> dict[str, str]:
    import diffusers
    import faiss
    import sqlite_utils

    return {"side-audit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "numpy": np.__version__, "faiss": faiss.__version__,
            "sqlite-utils": getattr(sqlite_utils, "__version__", "4")}


@dataclass
class StageTimer:
    db: object
    name: str
    progress: Progress

    def __enter__(self):
        self.t0 = time.time()
        row = {r["name"]: r for r in storage.stage_rows(self.db)}.get(self.name, {})
        storage.set_stage(self.db, self.name, STAGES.index(self.name), status="running",
                          started=row.get("started") or self.t0, message="")
        return self

    def __exit__(self, exc_type, exc, tb):
        now = time.time()
        prev = {r["name"]: r for r in storage.stage_rows(self.db)}[self.name].get("seconds") or 0.0
        status = "done" if exc is None else ("stopped" if exc_type.__name__ == "Cancelled" else "failed")
        storage.set_stage(self.db, self.name, STAGES.index(self.name), status=status, ended=now,
                          seconds=prev + (now - self.t0), message="" if exc is None else str(exc)[:500])
        if exc is None:
            self.progress.stage_finished(self.name, prev + now - self.t0)
        return False


class _StoredProgress(Progress):
    """Forwards a training loop's progress to the runner, which also stores it."""

    def __init__(self, runner: AuditRunner) -> None:
        super().__init__()
        self.runner = runner

    def update(self, stage: str, done: int, total: int) -> None:
        self.runner._update(stage, done, total)

    def log(self, message: str) -> None:
        self.runner.progress.log(message)

    def check(self) -> None:
        self.runner.progress.check()


class AuditRunner:
    """Owns one run of one workspace; ``run()`` is safe to call again after a stop."""

    def __init__(self, workspace: Workspace | str | Path, progress: Progress | None = None) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.progress = WorkspaceLog(progress or Progress(), self.ws.log_path)

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
        self.target: TargetModel = load_target(cfg.checkpoint, cfg.scheduler_config, cfg.allow_pickle)
        self.target.unet.to(self.device)
        self.ws.ensure_dirs()
        self.db = storage.connect(self.ws.db_path)
        started, outcome = time.time(), "run failed"
        self.progress.write(f"run started: side-audit {__version__} on {describe(self.device)}, "
                            f"{self.threads} CPU threads")
        try:
            self._check_identity(cfg)
            self.scorer_name = choose_scorer_name(cfg.scorer, self.target.sample_size)
            self.bands = bands_for(getattr(cfg, bands_setting(self.scorer_name)))
            self._stage_import(cfg)
            check_training_size(self.scorer_name, len(self.train_pixels))
            self.batch = self._choose_batch(cfg)
            self._record_audit(cfg)
            self._log_estimate(cfg)
            self._stage_embed(cfg)
            synthetic_first = cfg.label_source == "synthetic-clusters"
            if synthetic_first:
                self._stage_synthetic(cfg, num_classes=0)
            self._stage_labels(cfg)
            if not synthetic_first:
                self._stage_classifier(cfg)
                self._stage_synthetic(cfg, num_classes=0)
            self._stage_tdkd(cfg)
            self._stage_sample(cfg)
            self._stage_metrics(cfg)
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
                    self.device, self.batch)
        est = estimate(per, cfg, len(self.train_pixels), left)
        storage.set_kv(self.db, "estimate", est)
        storage.set_kv(self.db, "estimate_device", describe(self.device))
        self.progress.log(f"estimated time left ≈ {describe_seconds(est['total'])} on {describe(self.device)} "
                          f"(probe: UNet {1e3 * per['unet']:.2f} ms, guidance {1e3 * per['guidance']:.2f} ms "
                          "per image and step)")

    # -- 1. import -------------------------------------------------------------------
    def _stage_import(self, cfg: AuditConfig) -> None:
        cache = self.ws.cache_dir / "train_pixels.npy"
        if self._done("import") and cache.exists():
            self.train_pixels = np.load(cache, mmap_mode="r")
            return
        with self._stage("import"):
            root = Path(cfg.train_data).expanduser()
            imported = import_training_set(
                root, self.target.sample_size, self.target.channels, cfg.labels_csv or None,
                on_progress=lambda d, t: (self._update("import", d, t), self.progress.check()))
            for path, why in imported.unreadable:
                self.progress.log(f"unreadable training image skipped: {root / path} ({why})")
            if imported.unreadable:
                self.progress.log(f"{len(imported.unreadable)} unreadable file(s) skipped, "
                                  f"{len(imported.paths)} imported")
            if imported.converted:
                mode = "grey" if self.target.channels == 1 else "RGB"
                self.progress.log(f"{imported.converted} training image(s) converted to {mode} "
                                  f"to match the model's {self.target.channels} channel(s)")
            dup = len(imported.hashes) - len(set(imported.hashes))
            if dup:
                self.progress.log(f"{dup} training image(s) are exact duplicates of another; kept (each is "
                                  "a separate training index)")
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, imported.pixels)
            tmp.replace(cache)
            with self.db.atomic():
                self.db["train_images"].delete_where()
                self.db["train_images"].insert_all(
                    {"idx": i, "path": p, "sha256": h, "label": lab, "surrogate": None}
                    for i, (p, h, lab) in enumerate(zip(imported.paths, imported.hashes, imported.labels)))
                storage.set_kv(self.db, "train_fingerprint", imported.fingerprint)
                storage.set_kv(self.db, "train_files_fingerprint", imported.files_fingerprint)
                storage.set_kv(self.db, "unreadable", imported.unreadable)
                storage.set_kv(self.db, "converted", imported.converted)
            self.train_pixels = imported.pixels

    def _train_tensor(self) -> torch.Tensor:
        return torch.from_numpy(to_model_tensor_range(np.asarray(self.train_pixels)))

    # -- 2. embed -----------------------------------------------------------------------
    def _stage_embed(self, cfg: AuditConfig) -> None:
        self.scorer = make_scorer(self.scorer_name, cfg.sscd_model, "cpu", self.threads)
        with self.db.atomic():
            self.db["audits"].update(1, {"scorer": self.scorer_name, "scorer_source": self.scorer.source,
                                         "scorer_sha256": self.scorer.sha256})
        cache = self.ws.cache_dir / f"train_{self.scorer_name}.npy"
        if self._done("embed") and cache.exists():
            vectors = np.load(cache)
        else:
            with self._stage("embed"):
                n = len(self.train_pixels)
                chunks = []
                for i in range(0, n, 256):
                    chunks.append(self.scorer.embed(np.asarray(self.train_pixels[i:i + 256])))
                    self._update("embed", min(i + 256, n), n)
                    self.progress.check()
                vectors = np.concatenate(chunks).astype(np.float32)
                tmp = cache.with_suffix(".tmp.npy")
                np.save(tmp, vectors)
                tmp.replace(cache)
        self.train_vectors = vectors
        self.index = TrainIndex(self.scorer, vectors, self.bands)

    # -- 3. labels ----------------------------------------------------------------------
    def _stage_labels(self, cfg: AuditConfig) -> None:
        if self._done("labels"):
            self.k = storage.get_kv(self.db, "k")
            self.surrogate = np.array([r["surrogate"] for r in self.db.query(
                "select surrogate from train_images order by idx")], dtype=np.int64)
            return
        with self._stage("labels"):
            rows = list(self.db.query("select path, label from train_images order by idx"))
            n = len(rows)
            source = cfg.label_source
            if source == "original":
                y, classes = labels.original_labels([r["label"] for r in rows], [r["path"] for r in rows])
                k = len(classes)
                self.progress.log(f"labels: {k} original classes")
            elif source == "clusters":
                k = labels.resolve_k(cfg.k, n)
                y, _ = labels.kmeans_labels(self.train_vectors, k, cfg.seed, spherical=self.scorer.higher_is_closer)
                self.progress.log(f"labels: k-means on {self.scorer_name} embeddings, K = {k}")
            elif source == "random":
                k = labels.resolve_k(cfg.k, n)
                y = labels.random_labels(n, k, cfg.seed)
                self.progress.log(f"labels: {k} random groups")
            else:  # synthetic-clusters: labels live on the synthetic set
                syn = self._load_synthetic(cfg)
                k_req = labels.resolve_k(cfg.k, len(syn)) if cfg.k else min(labels.default_k(n), len(syn))
                vecs = self.scorer.embed(syn)
                syn_y, k = labels.synthetic_cluster_labels(vecs, k_req, cfg.seed)
                np.save(self.ws.cache_dir / "synthetic_labels.npy", syn_y)
                y = np.full(n, -1, dtype=np.int64)
                self.progress.log(f"labels: {k} of {k_req} synthetic clusters kept (mean cosine >= 0.5)")
            self._update("labels", 1, 1)
            with self.db.atomic():
                for i, lab in enumerate(y.tolist()):
                    self.db.execute("update train_images set surrogate = ? where idx = ?", [lab, i])
                storage.set_kv(self.db, "k", int(k))
            self.k, self.surrogate = int(k), y

    # -- 4. TI classifier --------------------------------------------------------------
    def _classifier_path(self, name: str) -> Path:
        return self.ws.classifiers_dir / f"{name}.safetensors"

    def _stage_classifier(self, cfg: AuditConfig) -> None:
        path = self._classifier_path("ti")
        if self._done("classifier") and path.exists():
            self.ti = _frozen(load_classifier(path, self.device))
            return
        with self._stage("classifier"):
            torch.manual_seed(cfg.seed)
            model = ResNetClassifier(self.k, self.target.channels, cfg.resolved_width(self.target.sample_size),
                                     small_stem_for(self.target.sample_size, cfg.classifier_stem)).to(self.device)
            batch = min(64, max(8, len(self.surrogate)))
            report = train_ti(self._train_tensor(), torch.from_numpy(self.surrogate), model,
                              cfg.classifier_epochs, cfg.classifier_lr, batch, cfg.seed, _StoredProgress(self),
                              min_steps=cfg.classifier_min_steps)
            save_classifier(model, path, {"accuracy": report.accuracy})
            self._store_classifier("ti", path, report)
            self.progress.log(f"TI classifier: accuracy {report.accuracy:.3f} on {report.held_out}; "
                              f"train accuracy {report.details['train_accuracy']:.3f}, under noise σ = 0.2 "
                              f"{report.details['noise_0.2_accuracy']:.3f} ({report.details['steps']} steps)")
            self.ti = _frozen(model)

    def _store_classifier(self, name: str, path: Path, report) -> None:
        with self.db.atomic():
            self.db["classifiers"].upsert({
                "name": name, "path": str(path.relative_to(self.ws.root)), "accuracy": report.accuracy,
                "details": json.dumps({"measured_on": report.held_out, "final_loss": report.final_loss,
                                       **report.details}),
            }, pk="name")

    # -- 5a. synthetic set -----------------------------------------------------------------
    def _sampler(self, cfg: AuditConfig) -> GuidedSampler:
        sampler = GuidedSampler(self.target.unet, self.target.scheduler, cfg.sampler, cfg.steps, cfg.eta,
                                self.device, cfg.precision, compile=self._compile(cfg),
                                convention=cfg.sampler_convention)
        if cfg.guidance_max_t < 1:  # guidance at low noise only, where the TD classifier agrees with the TI one
            sampler.guidance_window = (0, int(cfg.guidance_max_t * (sampler.T - 1)))
        self._samplers.append(sampler)
        return sampler

    def _compile(self, cfg: AuditConfig) -> bool:
        """torch.compile pays off only over long runs: on an H200 compiling took ~75 s and then
        saved ~0.65 ms per image and step (128 px UNet, bf16), so break-even is ~110 000
        image-steps; ``auto`` asks for 150 000 (the paper's audits have millions)."""
        if cfg.compile == "auto":
            return self.device.type == "cuda" and len(cfg.grid()) * cfg.n_per_lambda * cfg.steps >= COMPILE_WORK
        return cfg.compile == "on"

    def _stage_synthetic(self, cfg: AuditConfig, num_classes: int) -> None:
        if self._done("synthetic"):
            return
        with self._stage("synthetic"):
            sampler = self._sampler(cfg)
            shape = (self.target.channels, self.target.sample_size, self.target.sample_size)
            n, b = self._n_syn(cfg), self.batch
            for start in range(0, n, b):
                chunk = self.ws.synthetic_dir / f"chunk_{start:08d}.npy"
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
                self._update("synthetic", min(start + b, n), n)
                self.progress.check()

    def _n_syn(self, cfg: AuditConfig) -> int:
        """The synthetic set's size: at least 20 images a class unless set (K known from the
        labels stage, or, for synthetic-clusters, its default from N)."""
        k = getattr(self, "k", None) or labels.resolve_k(cfg.k, len(self.train_pixels))
        return cfg.resolved_n_syn(k)

    def _load_synthetic(self, cfg: AuditConfig) -> np.ndarray:
        chunks = sorted(self.ws.synthetic_dir.glob("chunk_*.npy"))
        n_syn = self._n_syn(cfg)
        arr = np.concatenate([np.load(c) for c in chunks])[:n_syn]
        if len(arr) < n_syn:
            raise WorkspaceError(f"{self.ws.synthetic_dir}: {len(arr)} of {n_syn} synthetic images found; "
                                 "delete the folder and run again")
        return arr

    # -- 5b. TDKD -------------------------------------------------------------------------
    def _stage_tdkd(self, cfg: AuditConfig) -> None:
        path = self._classifier_path("td")
        needs_td = "side" in cfg.methods or cfg.label_source == "synthetic-clusters"
        if not needs_td:
            self.td = None
            return
        if self._done("tdkd") and path.exists():
            self.td = _frozen(load_classifier(path, self.device))
            return
        with self._stage("tdkd"):
            syn = self._load_synthetic(cfg)
            x0 = torch.from_numpy(to_model_tensor_range(syn))
            torch.manual_seed(cfg.seed + 1)
            if cfg.label_source == "synthetic-clusters":
                td = ResNetClassifier(self.k, self.target.channels, cfg.resolved_width(self.target.sample_size),
                                      small_stem_for(self.target.sample_size, cfg.classifier_stem),
                                      time_dependent=True).to(self.device)
                targets = torch.from_numpy(np.load(self.ws.cache_dir / "synthetic_labels.npy"))
                hard = True
            else:
                td = time_dependent_from(self.ti)
                targets = soft_labels(self.ti, x0.to(self.device)).cpu()
                hard = False
            td.requires_grad_(True)
            report = train_td(td, x0, targets, self.target.scheduler.alphas_cumprod, cfg.tdkd_epochs,
                              cfg.tdkd_lr, min(64, len(x0)), cfg.seed, _StoredProgress(self), hard_labels=hard,
                              log=self.progress.log)
            save_classifier(td, path, {"accuracy": report.accuracy})
            self._store_classifier("td", path, report)
            agree = ", ".join(f"{k}: {v:.2f}" for k, v in report.details["agreement_by_t"].items())
            self.progress.log(f"TD classifier ({report.details['objective']}): final loss {report.final_loss:.4f}; "
                              f"held-out agreement {agree}")
            if not hard and report.accuracy < AGREEMENT_WARN:
                self._warn(f"The TD classifier agrees with the TI classifier on only {100 * report.accuracy:.0f} % "
                           f"of held-out synthetic images at t = 0 (it starts at 100 %; below "
                           f"{100 * AGREEMENT_WARN:.0f} % guidance may steer towards the wrong images): raise "
                           "tdkd_epochs or tdkd_lr.")
            self.td = _frozen(td)

    # -- 6 + 7. sampling with streamed scoring ------------------------------------------------
    def plan(self, cfg: AuditConfig) -> list[tuple[str, float, int]]:
        """Every (method, λ, index) of the audit, ordered so that batches mix λ values and a
        partial run covers every λ evenly; TI-guided samples batch apart from TD-guided ones."""
        items = [(m, lam, i) for m, lam in cfg.grid() for i in range(cfg.n_per_lambda)]
        return sorted(items, key=lambda it: (it[0] == "ti", it[2], it[1], it[0]))

    def _stage_sample(self, cfg: AuditConfig) -> None:
        plan = self.plan(cfg)
        total = len(plan)
        have = {(r["method"], r["lam"], r["sample_index"]) for r in
                self.db.query("select method, lam, sample_index from samples")}
        pending = [p for p in plan if p not in have]
        if not pending and self._done("sample"):
            return
        sampler = self._sampler(cfg)
        shape = (self.target.channels, self.target.sample_size, self.target.sample_size)
        num_classes = self.k
        with self._stage("sample"), self._stage("score"):
            done = total - len(pending)
            self._update("sample", done, total)
            self._update("score", done, total)
            for start in range(0, len(pending), self.batch):
                self.progress.check()
                batch = pending[start:start + self.batch]
                self._sample_batch(cfg, sampler, batch, shape, num_classes)
                done += len(batch)
                self._update("sample", done, total)
                self._update("score", done, total)

    def _sample_batch(self, cfg, sampler, batch, shape, num_classes) -> None:
        seeds = [sample_seed(cfg.seed, i) for _, _, i in batch]
        inputs = [sample_inputs(s, shape, num_classes) for s in seeds]
        noise = torch.stack([x for x, _, _ in inputs])
        targets = self._targets(cfg, num_classes)
        cls = torch.tensor([int(targets[i]) for _, _, i in batch], dtype=torch.long)
        lam = torch.tensor([lam for _, lam, _ in batch], dtype=torch.float32)
        guides = []
        for method, clf, td in (("side", self._guiding("side"), True), ("ti", self._guiding("ti"), False)):
            rows = [r for r, (m, lv, _) in enumerate(batch) if m == method and lv > 0]
            if rows:
                guides.append(Guide(clf, torch.tensor(rows, device=self.device), td))
        x0 = sampler.sample(noise, lam, cls, guides, generators=[g for _, _, g in inputs])
        ratio = sampler.last_guidance_ratio.cpu().tolist() if sampler.last_guidance_ratio is not None else None
        steered = None
        if self._guiding("side") is not None:
            with torch.no_grad():  # measured in fp32 whatever the sampling precision
                t0 = torch.zeros(len(batch), dtype=torch.long, device=self.device)
                x0_cl = x0.contiguous(memory_format=torch.channels_last)
                steered = (self._guiding("side")(x0_cl, t0).argmax(1).cpu() == cls).tolist()
        images = to_uint8(x0)
        scores = self.index.score(self.scorer.embed(images))
        loose_hit = np.zeros(len(batch), bool)
        for r, _, _ in scores.pairs:
            loose_hit[r] = True
        rows = []
        for r, (method, lv, i) in enumerate(batch):
            png = None
            if loose_hit[r]:
                rel = Path("samples") / method / f"lam{lv:g}" / f"{i:06d}.png"
                self._write_png(images[r], self.ws.root / rel)
                png = rel.as_posix()
            rows.append({
                "method": method, "lam": lv, "sample_index": i, "seed": seeds[r],
                "cls": int(cls[r]) if method != "random" else None,
                "best": float(scores.best[r]), "nearest": int(scores.nearest[r]),
                "second": _f(scores.second[r]), "gu_ratio": _f(scores.gu_ratio[r]), "png": png,
                "steered": int(steered[r]) if steered is not None else None,
                "guidance_ratio": ratio[r] if ratio is not None and lv > 0 and method != "random" else None,
            })
        try:
            with self.db.atomic():  # one batch, one transaction: all of it or none of it
                ids = []
                for row in rows:
                    ids.append(self.db["samples"].insert(row).last_pk)
                self.db["matches"].insert_all(
                    {"sample_id": ids[r], "train_idx": j, "score": s} for r, j, s in scores.pairs)
        except sqlite3.OperationalError as e:
            raise WorkspaceError(f"{self.ws.db_path}: cannot store a batch ({e}); the database keeps every "
                                 "earlier batch — free space or fix permissions, then run again") from None

    def _targets(self, cfg: AuditConfig, num_classes: int) -> np.ndarray:
        """Stratified target classes of sample indices 0..N_G-1 (the same for every λ and method)."""
        key = (cfg.seed, cfg.n_per_lambda, num_classes)
        if getattr(self, "_targets_key", None) != key:
            self._targets_key, self._targets_cache = key, target_classes(cfg.seed, cfg.n_per_lambda, num_classes)
        return self._targets_cache

    def _guiding(self, method: str) -> torch.nn.Module | None:
        """The folded, channels_last copy of the TD (side) or TI classifier that sampling uses."""
        model = getattr(self, "td" if method == "side" else "ti", None)
        if model is None:
            return None
        cached = self._guiding_cache.get(method)
        if cached is None or cached[0] is not model:
            cached = self._guiding_cache[method] = (model, for_guidance(model))
        return cached[1]

    @staticmethod
    def _write_png(img: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = img[:, :, 0] if img.shape[-1] == 1 else img
        tmp = path.with_suffix(".tmp.png")
        try:
            Image.fromarray(arr).save(tmp, format="PNG")
            tmp.replace(path)
        except OSError as e:
            raise WorkspaceError(f"{path}: cannot write a generated image ({e.strerror or e})") from None

    def _warn(self, text: str) -> None:
        """A finding about the audit's own reliability: logged, stored, shown by the app and reports."""
        self.progress.log(f"WARNING: {text}")
        warnings = storage.get_kv(self.db, "warnings", [])
        if text not in warnings:
            storage.set_kv(self.db, "warnings", warnings + [text])

    # -- 8. metrics --------------------------------------------------------------------------
    def _stage_metrics(self, cfg: AuditConfig) -> None:
        with self._stage("metrics"):
            results.compute_and_store(self.db, cfg, self.scorer.higher_is_closer, self.bands,
                                      self.scorer_name)
            self._check_steering(cfg)
            self._update("metrics", 1, 1)

    def _check_steering(self, cfg: AuditConfig) -> None:
        """Log the guidance-to-ε ratio per λ, and say so when SIDE barely steers: under 3x chance
        of landing in the target class at the largest λ means the audit cannot show what
        guidance would find, whatever the rates say."""
        rows = list(self.db.query("select method, lam, target_accuracy, guidance_ratio from summary "
                                  "where method != 'random' order by method, lam"))
        for r in rows:
            if r["guidance_ratio"] is not None:
                self.progress.log(f"{r['method'].upper()} λ = {r['lam']:g}: guidance / ε RMS ratio "
                                  f"{r['guidance_ratio']:.3f}, steered {100 * (r['target_accuracy'] or 0):.1f} %")
        side = [r for r in rows if r["method"] == "side" and r["target_accuracy"] is not None]
        if not side:
            return
        top = max(side, key=lambda r: r["lam"])
        chance = 1 / max(self.k, 1)
        if top["target_accuracy"] < STEER_WARN * chance:
            self._warn(f"SIDE barely steers: at the largest λ = {top['lam']:g} only "
                       f"{100 * top['target_accuracy']:.1f} % of guided samples land in their target class "
                       f"(chance {100 * chance:.1f} %; guidance / ε {top['guidance_ratio'] or 0:.3f}). Its rates "
                       "cannot show what guidance would find: raise the largest λ, tdkd_epochs or "
                       "classifier_min_steps, then audit again.")


COMPILE_WORK = 150_000  # image-steps of sampling above which compile = auto compiles
AGREEMENT_WARN = 0.9  # TD/TI agreement at t = 0 below which the run warns (docs/method.md)
STEER_WARN = 3.0  # "steered" below this multiple of chance at the largest λ: SIDE barely steers


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Frozen and in eval mode: a trained classifier as later stages use it (sampling uses a
    folded copy of it, see ``AuditRunner._guiding``)."""
    return model.eval().requires_grad_(False)


def _f(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def init_workspace(root: str | Path, checkpoint: str, train_data: str, labels_csv: str = "",
                   overwrite: bool = False, **settings) -> Workspace:
    """Check the inputs enough to fail early, then write ``audit.toml`` with every default."""
    ws = Workspace(root)
    target = load_target(checkpoint, settings.get("scheduler_config", ""), settings.get("allow_pickle", False))
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
