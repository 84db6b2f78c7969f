"""The audit's pipeline: the stage modules these settings run, in order.

Which stages run is decided once, by :func:`side_engine.stages.stage_names` (light, so the
app's run view reads the same list without loading torch); this maps those names to the
modules that do the work. ``sample`` and ``score`` are one module (scoring is streamed with
sampling), so it appears once.
"""

from __future__ import annotations

from .config import AuditConfig
from .stages import (
    classifier,
    embedding,
    heldout,
    metrics,
    sampling,
    stage_names,
    surrogate_labels,
    synthetic,
    tdkd,
    training_data,
)
from .stages.base import Stage

MODULES: tuple[Stage, ...] = (training_data, embedding, surrogate_labels, classifier, synthetic, tdkd, sampling,
                              heldout, metrics)
BY_NAME: dict[str, Stage] = {name: module for module in MODULES for name in module.NAMES}


def stage_order(cfg: AuditConfig) -> list[Stage]:
    """The stage modules of an audit with these settings, in run order, each once."""
    order: list[Stage] = []
    for name in stage_names(cfg):
        if BY_NAME[name] not in order:
            order.append(BY_NAME[name])
    return order
