"""The audit's stages, one module each, and the pipeline as one list.

This module is light on purpose (no torch, no diffusers): the app's run view reads the stage
titles and the stages an audit runs from here without loading the engine. The modules
themselves (``training_data``, ``embedding``, ``surrogate_labels``, ``classifier``,
``synthetic``, ``tdkd``, ``sampling``, ``heldout``, ``metrics``) each have a ``run(ctx)`` taking the
:class:`~side_engine.stages.context.StageContext`, the only thing a stage may touch;
:func:`side_engine.pipeline.stage_order` maps :func:`stage_names` to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import AuditConfig


@dataclass(frozen=True)
class StageInfo:
    name: str  # the stage's row in the workspace database
    title: str  # what the app and the logs call it


# Every stage an audit may run, in run order; a stage's position is its stored ordinal.
STAGES: tuple[StageInfo, ...] = (
    StageInfo("import", "Import training set"),
    StageInfo("embed", "Embed training set"),
    StageInfo("labels", "Surrogate labels"),
    StageInfo("classifier", "TI classifier"),
    StageInfo("synthetic", "Synthetic set"),
    StageInfo("tdkd", "TDKD (TD classifier)"),
    StageInfo("sample", "Guided sampling"),
    StageInfo("score", "Scoring"),
    StageInfo("heldout", "Held-out images (false alarms)"),
    StageInfo("metrics", "Metrics"),
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
TITLES: dict[str, str] = {s.name: s.title for s in STAGES}


def stage_names(cfg: AuditConfig) -> list[str]:
    """The stages these settings need, in the order they run: the one place that decides it.

    Labels are made only for a guided method: ``synthetic-clusters`` labels live on the synthetic
    set, so it is made before the labels and no TI classifier is trained (the TD classifier
    learns the cluster labels). Otherwise the TI classifier is trained when a method guides (TI
    guidance uses it, SIDE distils it), and the synthetic set and TDKD only when SIDE is among the
    methods. A Random-only audit needs none of it: a sample's noise does not depend on K
    (``sampler.classes_drawn``).
    """
    guided = [m for m in cfg.methods if m != "random"]
    if not guided:
        middle: list[str] = []
    elif cfg.label_policy.on_synthetic_set:
        middle = ["synthetic", "labels", *(["tdkd"] if "side" in cfg.methods else [])]
    else:
        middle = ["labels", "classifier"]
        if "side" in cfg.methods:
            middle += ["synthetic", "tdkd"]
    # held-out images (given): scored after the samples, so a fork that adds a folder reuses the rest
    heldout = ["heldout"] if cfg.heldout_data else []
    return ["import", "embed", *middle, "sample", "score", *heldout, "metrics"]


def why_not_run(stage: str, cfg: AuditConfig) -> str | None:
    """Why these settings leave ``stage`` out, in words (None where it runs, or where the
    setting that would start it is simply not given: held-out images)."""
    if stage in stage_names(cfg) or stage == "heldout":
        return None
    if not any(m != "random" for m in cfg.methods):
        return "no guided method: only Random runs"
    if stage == "classifier":
        return (f"label_source {cfg.label_source} trains no TI classifier (the TD classifier learns cluster "
                "labels)")
    if stage in ("synthetic", "tdkd"):
        return "no SIDE guidance: no synthetic set and no TD classifier"
    return None
