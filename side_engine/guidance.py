"""Where and how strongly guidance acts: the plan a sampler is handed with each batch.

The sampler itself knows no settings; the sampling stage works the plan out once from the audit's
settings and what the guide check measured (the TD classifier's reliability by step and the step
by which the model's own samples settle), and passes it to every ``sample`` call. The duration
estimate asks the same rule before anything is measured (``guidance_bounds``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .sampler import GuidancePlan

if TYPE_CHECKING:
    from .config import AuditConfig
    from .guide_check import GuideCheck


def guidance_bounds(cfg: AuditConfig, T: int, settled_t: int | None) -> tuple[int, int]:
    """The native timesteps where guidance acts: the settings' interval, and with the ``settled``
    stop none at or below the step by which the model's own samples settled."""
    lo, hi = 0, T
    if cfg.guidance_max_t < 1 or cfg.guidance_min_t > 0:
        lo, hi = math.ceil(cfg.guidance_min_t * (T - 1)), int(cfg.guidance_max_t * (T - 1))
    if cfg.guidance_stop == "settled" and settled_t is not None and settled_t >= 0:
        lo = max(lo, int(settled_t) + 1)
    return lo, hi


def guidance_plan(cfg: AuditConfig, T: int, guide: GuideCheck | None, settled_t: int | None = None) -> GuidancePlan:
    """The plan of an audit's guided batches. ``settled_t``: the settled step when it is known
    before the guide check is complete (its probe's guided half); else the check's own."""
    if settled_t is None and guide is not None:
        settled_t = (guide.probe or {}).get("settled_t")
    weights = guide.weight_map() if guide is not None and cfg.guidance_schedule == "reliability" else {}
    return GuidancePlan(guidance_bounds(cfg, T, settled_t), weights)
