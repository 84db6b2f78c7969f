"""All a stage may touch: :class:`StageContext`, and the declared outputs of earlier stages, :class:`Artifacts`.

A stage is a module with ``run(ctx)``. It reads the settings, the workspace and its database,
the device and the target model from the context, reports through ``update``/``log``/``warn``,
honours a stop through ``check``, and hands what later stages need on through
``ctx.artifacts`` — every such output is a field there, named with the stage that makes it.
A finished stage is never redone (``is_done``); on a resume it loads what it stored instead.

Sampling is the one piece of work computed by processes that do not own the workspace: it
reads only :class:`SamplingContext` (device, target model, artifacts), which both the owner's
``StageContext`` and a worker rank's context (``side_engine.ranks``) are.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import labels, memory, storage
from ..classifiers import for_guidance
from ..config import AuditConfig
from ..image_rows import ImageRows, NpyFile, to_model_tensor_range
from ..progress import Progress
from ..sampler import target_classes
from . import NAMES

if TYPE_CHECKING:
    from ..checkpoint import TargetModel
    from ..guide_check import GuideCheck
    from ..neighbours import TrainIndex
    from ..sampler import GuidedSampler
    from ..scorers import Band, Scorer
    from ..workspace import Workspace

COMPILE_WORK = 150_000  # image-steps of sampling above which compile = auto compiles


@dataclass
class Artifacts:
    """What stages hand to the stages after them. None until the producing stage has run (or
    has loaded what it stored on an earlier run)."""

    train_pixels: np.ndarray | NpyFile | None = None  # import: uint8 (N, H, W, C) at the model's size, on disk
    scorer: Scorer | None = None  # embed: the scorer that embeds generated and training images
    train_vectors: np.ndarray | None = None  # embed: the training images' embeddings (N, D)
    index: TrainIndex | None = None  # embed: the nearest-neighbour index over them
    k: int | None = None  # labels: number of surrogate classes K
    surrogate: np.ndarray | None = None  # labels: class of each training image (-1 under synthetic-clusters)
    centroids: np.ndarray | None = None  # labels, synthetic-clusters only: the kept clusters' unit centroids (K, D)
    ti: torch.nn.Module | None = None  # classifier: the frozen time-independent classifier
    td: torch.nn.Module | None = None  # tdkd: the frozen time-dependent classifier that SIDE guides with
    guide: GuideCheck | None = None  # sample (its check): the TD classifier's reliability by step


class SamplingContext:
    """What computing a sampling batch reads, in whichever process it runs."""

    device: torch.device
    target: TargetModel
    artifacts: Artifacts

    def __init__(self) -> None:
        self._guiding_cache: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        self._targets_key: tuple | None = None
        self._targets_cache: np.ndarray | None = None

    def targets(self, cfg: AuditConfig, num_classes: int) -> np.ndarray:
        """Stratified target classes of sample indices 0..N_G-1 (the same for every λ and method)."""
        key = (cfg.seed, cfg.n_per_lambda, num_classes)
        if self._targets_key != key:
            self._targets_key, self._targets_cache = key, target_classes(cfg.seed, cfg.n_per_lambda, num_classes)
        return self._targets_cache

    def guiding(self, method: str) -> torch.nn.Module | None:
        """The folded, channels_last copy of the TD (side) or TI classifier that sampling uses."""
        model = self.artifacts.td if method == "side" else self.artifacts.ti
        if model is None:
            return None
        cached = self._guiding_cache.get(method)
        if cached is None or cached[0] is not model:
            cached = self._guiding_cache[method] = (model, for_guidance(model))
        return cached[1]


class StageContext(SamplingContext):
    """One run of one workspace, as the stages see it. Made by ``AuditRunner.run``."""

    def __init__(self, cfg: AuditConfig, ws: Workspace, db, device: torch.device, target: TargetModel,
                 progress: Progress, threads: int, scorer_name: str, bands: list[Band]) -> None:
        super().__init__()
        self.cfg, self.ws, self.db, self.device, self.target = cfg, ws, db, device, target
        self.progress, self.threads = progress, threads
        self.scorer_name, self.bands = scorer_name, bands
        self.batch = 0  # images per sampling batch: chosen once the training set is known
        self.artifacts = Artifacts()
        self.model_shared = False  # the target model has been sent to the other processes
        self._samplers: list[GuidedSampler] = []

    @classmethod
    def open(cls, cfg: AuditConfig, ws: Workspace, db, device: torch.device, target: TargetModel,
             progress: Progress, threads: int) -> StageContext:
        """The context of these settings and model: the scorer they resolve to and its bands."""
        from ..scorers import bands_for, bands_setting, choose_scorer_name

        name = choose_scorer_name(cfg.scorer, target.image_size)
        return cls(cfg, ws, db, device, target, progress, threads, name, bands_for(getattr(cfg, bands_setting(name))))

    # -- the stage's own bookkeeping ---------------------------------------------------------
    def is_done(self, stage: str) -> bool:
        rows = {r["name"]: r for r in storage.stage_rows(self.db)}
        return rows.get(stage, {}).get("status") == "done"

    def timed(self, stage: str) -> StageTimer:
        """``with ctx.timed(name):`` stores the stage as running, then done, stopped or failed."""
        return StageTimer(self.db, stage, self.progress, self.device)

    def update(self, stage: str, done: int, total: int) -> None:
        self.progress.update(stage, done, total)
        storage.set_stage(self.db, stage, NAMES.index(stage), done=done, total=total)

    def log(self, message: str) -> None:
        self.progress.log(message)

    def check(self) -> None:
        """Raise ``Cancelled`` if the user asked the run to stop."""
        self.progress.check()

    def warn(self, text: str) -> None:
        """A finding about the audit's own reliability: logged, stored, shown by the app and reports."""
        self.progress.log(f"WARNING: {text}")
        warnings = storage.get_kv(self.db, "warnings", [])
        if text not in warnings:
            storage.set_kv(self.db, "warnings", warnings + [text])

    def trainer_progress(self) -> Progress:
        """A progress for a training loop: its updates are stored like the stage's own."""
        return StoredProgress(self)

    # -- shared work -------------------------------------------------------------------------
    def new_sampler(self) -> GuidedSampler:
        """A sampler of the target model with this audit's settings, closed when the run ends."""
        from .sampling import make_sampler

        sampler = make_sampler(self.target, self.cfg, self.device, self.compiles())
        if not self._samplers and sampler.guide_precision == "bf16" and self.device.type == "cpu":
            from ..devices import cpu_has_native_bf16

            if not cpu_has_native_bf16():
                # said, not stored: it changes the run's speed, not its results
                self.log("guide_precision = 'bf16' on a CPU without native bf16 (AMX or AVX512-BF16): emulated, "
                         "so the guide runs slower than in fp32 (the demo: 2.0× unguided sampling against 1.1–1.3× "
                         "in fp32); 'auto' chooses fp32 on such a CPU")
        self._samplers.append(sampler)
        self._record_guide_precision(sampler.guide_precision)
        return sampler

    def _record_guide_precision(self, used: str) -> None:
        """Store what the guide's gradient ran in (``guide_precision`` = auto resolves by machine);
        a resume that resolves otherwise is said, since its guided images differ in rounding."""
        before = storage.get_kv(self.db, "guide_precision")
        if before and before != used:
            guided = self.db.execute("select count(*) from samples where lam > 0").fetchone()[0] \
                if "samples" in self.db.table_names() else 0
            if guided:
                self.warn(f"the classifier's gradient ran in {before} for the {guided} guided samples stored before "
                          f"this run and in {used} from now on (guide_precision = {self.cfg.guide_precision!r} "
                          "resolved otherwise on this machine, or was changed): their rounding differs")
        storage.set_kv(self.db, "guide_precision", used)

    def close_samplers(self) -> None:
        for sampler in self._samplers:
            if sampler.compile_error:
                self.progress.log(f"torch.compile was not used: {sampler.compile_error}")
            sampler.close()
        self._samplers.clear()

    def compiles(self) -> bool:
        """torch.compile pays off only over long runs: on an H200 compiling took ~75 s and then
        saved ~0.65 ms per image and step (128 px UNet, bf16), so break-even is ~110 000
        image-steps; ``auto`` asks for 150 000 (the paper's audits have millions)."""
        cfg = self.cfg
        if cfg.compile == "auto":
            return self.device.type == "cuda" and len(cfg.grid()) * cfg.n_per_lambda * cfg.steps >= COMPILE_WORK
        return cfg.compile == "on"

    def train_rows(self) -> ImageRows:
        """The training images as the UNet models them, read a batch at a time: the stored
        uint8 pixels (memory-mapped), or for a latent model their latents (encoded once, in
        batches, into a memory-mapped cache in the workspace)."""
        pixels = self.artifacts.train_pixels
        if not self.target.latent:
            return ImageRows(pixels)
        cache = self.ws.cache_dir / "train_latents.npy"
        if cache.exists():
            return ImageRows(NpyFile(cache))
        tmp = cache.with_suffix(".tmp.npy")
        out = None
        for i in range(0, len(pixels), 32):
            x = torch.from_numpy(to_model_tensor_range(np.asarray(pixels[i:i + 32])))
            z = self.target.encode(x.to(self.device)).float().cpu().numpy()
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(pixels), *z.shape[1:]))
            out[i:i + len(z)] = z
            self.check()
        out.flush()
        del out
        tmp.replace(cache)
        return ImageRows(NpyFile(cache))

    def n_syn(self) -> int:
        """The synthetic set's size: at least 20 images a class unless set (K known from the
        labels stage, or, for synthetic-clusters, its default from N)."""
        k = self.artifacts.k or labels.resolve_k(self.cfg.k, len(self.artifacts.train_pixels))
        return self.cfg.resolved_n_syn(k)

    def classifier_path(self, name: str) -> Path:
        return self.ws.classifiers_dir / f"{name}.safetensors"

    def store_classifier(self, name: str, path: Path, report) -> None:
        with self.db.atomic():
            self.db["classifiers"].upsert({
                "name": name, "path": str(path.relative_to(self.ws.root)), "accuracy": report.accuracy,
                "details": json.dumps({"measured_on": report.held_out, "final_loss": report.final_loss,
                                       **report.details}),
            }, pk="name")


@dataclass
class StageTimer:
    """Stores a stage's status and accumulated seconds around its work."""

    db: object
    name: str
    progress: Progress
    device: torch.device | None = None
    t0: float = field(default=0.0, init=False)

    def __enter__(self):
        self.t0 = time.time()
        memory.reset_peak(self.device)
        row = {r["name"]: r for r in storage.stage_rows(self.db)}.get(self.name, {})
        storage.set_stage(self.db, self.name, NAMES.index(self.name), status="running",
                          started=row.get("started") or self.t0, message="")
        return self

    def __exit__(self, exc_type, exc, tb):
        now = time.time()
        row = {r["name"]: r for r in storage.stage_rows(self.db)}[self.name]
        prev = row.get("seconds") or 0.0
        status = "done" if exc is None else ("stopped" if exc_type.__name__ == "Cancelled" else "failed")
        # a resumed stage keeps the largest peak of its runs
        peaks = {key: max(v, row.get(key) or 0.0) for key, v in
                 (("peak_rss_mb", memory.peak_rss_mb()), ("peak_device_mb", memory.peak_device_mb(self.device)))
                 if v is not None}
        storage.set_stage(self.db, self.name, NAMES.index(self.name), status=status, ended=now,
                          seconds=prev + (now - self.t0), message="" if exc is None else str(exc)[:500], **peaks)
        if exc is None:
            self.progress.stage_finished(self.name, prev + now - self.t0)
        return False


class StoredProgress(Progress):
    """Forwards a training loop's progress to the context, which also stores it."""

    def __init__(self, ctx: StageContext) -> None:
        super().__init__()
        self.ctx = ctx

    def update(self, stage: str, done: int, total: int) -> None:
        self.ctx.update(stage, done, total)

    def log(self, message: str) -> None:
        self.ctx.log(message)

    @property
    def cancelled(self) -> bool:
        return self.ctx.progress.cancelled

    def check(self) -> None:
        self.ctx.check()
