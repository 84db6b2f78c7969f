"""All a stage may touch: :class:`StageContext`, and the declared outputs of earlier stages, :class:`Artifacts`.

A stage is a module with ``run(ctx)``. It reads the settings, the device, the target model and
the workspace's folders from the context; says what it does through ``ctx.report`` (progress,
log lines, warnings, and ``check`` for a stop the user asked for); writes the database only
through ``ctx.store`` (:class:`~side_engine.run_store.RunStore`: ``is_done``, ``timed`` and one
method per thing a stage stores); and hands what later stages need on through ``ctx.artifacts``
— every such output is a field there, named with the stage that makes it. A finished stage is
never redone (``store.is_done``); on a resume it loads what it stored instead.

Sampling is the one piece of work computed by processes that do not own the workspace: it
reads only :class:`SamplingContext` (device, target model, artifacts), which both the owner's
``StageContext`` and a worker rank's context (``side_engine.ranks``) are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..classifiers import for_guidance
from ..config import AuditConfig
from ..image_rows import NpyFile
from ..progress import Progress
from ..sampler import target_classes

if TYPE_CHECKING:
    from ..checkpoint import TargetModel
    from ..guide_check import GuideCheck
    from ..neighbours import TrainIndex
    from ..run_store import RunStore
    from ..scorers import Band, Scorer
    from ..workspace import Workspace


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

    def __init__(self, cfg: AuditConfig, ws: Workspace, store: RunStore, device: torch.device, target: TargetModel,
                 progress: Progress, threads: int, scorer_name: str, bands: list[Band]) -> None:
        super().__init__()
        self.cfg, self.ws, self.store, self.device, self.target = cfg, ws, store, device, target
        self.report = Reporter(progress, store)
        self.threads = threads
        self.scorer_name, self.bands = scorer_name, bands
        self.batch = 0  # images per sampling batch: chosen once the training set is known
        self.artifacts = Artifacts()

    @classmethod
    def open(cls, cfg: AuditConfig, ws: Workspace, store: RunStore, device: torch.device, target: TargetModel,
             progress: Progress, threads: int) -> StageContext:
        """The context of these settings and model: the scorer they resolve to and its bands."""
        from ..scorers import bands_for, bands_setting, choose_scorer_name

        name = choose_scorer_name(cfg.scorer, target.image_size)
        return cls(cfg, ws, store, device, target, progress, threads, name,
                   bands_for(getattr(cfg, bands_setting(name))))


class Reporter:
    """What a stage says while it works: its progress (stored too, so the app and a resume see
    it), log lines, warnings about the audit's own reliability (stored: the app and the reports
    show them), and the user's request to stop (``check`` raises ``Cancelled``)."""

    def __init__(self, progress: Progress, store: RunStore) -> None:
        self.progress, self._store = progress, store

    def update(self, stage: str, done: int, total: int) -> None:
        self.progress.update(stage, done, total)
        self._store.set_progress(stage, done, total)

    def log(self, message: str) -> None:
        self.progress.log(message)

    def warn(self, text: str) -> None:
        self.progress.log(f"WARNING: {text}")
        self._store.add_warning(text)

    def check(self) -> None:
        self.progress.check()

    def for_training(self) -> Progress:
        """A progress for a training loop: its updates are stored like the stage's own."""
        return StoredProgress(self)


class StoredProgress(Progress):
    """Forwards a training loop's progress to the stage's reporter, which also stores it."""

    def __init__(self, report: Reporter) -> None:
        super().__init__()
        self.report = report

    def update(self, stage: str, done: int, total: int) -> None:
        self.report.update(stage, done, total)

    def log(self, message: str) -> None:
        self.report.log(message)

    @property
    def cancelled(self) -> bool:
        return self.report.progress.cancelled

    def check(self) -> None:
        self.report.check()
