"""What every stage shares: the order of stages, the timer that stores a stage's status, the
progress relay for training loops, and the ``Stage`` protocol.

A stage is a small module with a ``run(audit, cfg)`` function. ``audit`` is the
:class:`~side_engine.audit.AuditRunner`: the context every stage reads (settings, device,
target model, database, training pixels, classifiers) and the helpers they share (``_stage``
timer, ``_update`` progress, ``_warn``). What a stage stores it writes through ``audit.db``; a
finished stage is never redone (``audit._done``). ``SPLIT`` says how its work divides between
processes: ``"rank0"`` (too small to gain: one process does it), ``"samples"`` (handed out
by sample index, each sample's seed fixed by ``(audit seed, index)`` so any split makes the same
images) or ``"data"`` (every rank trains on a shard of each batch) — the seam a multi-process
run uses (``side_engine.distributed``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch

from .. import storage
from ..config import AuditConfig
from ..progress import Progress

if TYPE_CHECKING:
    from ..audit import AuditRunner

STAGES = ("import", "embed", "labels", "classifier", "synthetic", "tdkd", "sample", "score", "metrics")


class Stage(Protocol):
    """A stage module: its name(s) in ``STAGES``, how its work splits, and ``run``."""

    NAMES: tuple[str, ...]
    SPLIT: Literal["rank0", "samples", "data"]

    def run(self, audit: AuditRunner, cfg: AuditConfig) -> None: ...


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


class StoredProgress(Progress):
    """Forwards a training loop's progress to the runner, which also stores it."""

    def __init__(self, runner: AuditRunner) -> None:
        super().__init__()
        self.runner = runner

    def update(self, stage: str, done: int, total: int) -> None:
        self.runner._update(stage, done, total)

    def log(self, message: str) -> None:
        self.runner.progress.log(message)

    @property
    def cancelled(self) -> bool:
        return self.runner.progress.cancelled

    def check(self) -> None:
        self.runner.progress.check()


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Frozen and in eval mode: a trained classifier as later stages use it (sampling uses a
    folded copy of it, see ``AuditRunner._guiding``)."""
    return model.eval().requires_grad_(False)


def finite_or_none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


