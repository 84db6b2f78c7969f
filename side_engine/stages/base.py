"""What the stage modules share: the ``Stage`` protocol and two small helpers.

``SPLIT`` says how a stage's work divides between processes: ``"rank0"`` (too small to gain:
one process does it), ``"samples"`` (handed out by sample index, each sample's seed fixed by
``(audit seed, index)`` so any split makes the same images) or ``"data"`` (every rank trains on
a shard of each batch) — the seam a multi-process run uses (``side_engine.ranks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from .context import StageContext


class Stage(Protocol):
    """A stage module: its name(s) in ``stages.NAMES``, how its work splits, and ``run``."""

    NAMES: tuple[str, ...]
    SPLIT: Literal["rank0", "samples", "data"]

    def run(self, ctx: StageContext) -> None: ...


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Frozen and in eval mode: a trained classifier as later stages use it (sampling uses a
    folded copy of it, see ``SamplingContext.guiding``)."""
    return model.eval().requires_grad_(False)


def finite_or_none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v
