"""How results are said: one formatter for a number with its interval, and the verdict words."""

from __future__ import annotations

import math

from ..statistics import ALPHA

MISSING = "—"  # a value that is not defined (no sample, no interval)


def with_interval(value: float | None, lo: float | None, hi: float | None, percent: bool = True,
                  unit: str | None = None, missing: str = MISSING) -> str:
    """"12.3 % [9.1, 16.0]" (a share, shown in per cent) or "1.23 [0.91, 1.66]" (a ratio, "∞" for
    an unbounded end): every number shown carries its 95 % interval. NaN is a ratio of two zero
    rates; an interval that is not given is left out rather than invented."""
    if value is None:
        return missing
    if value != value:
        return "none found by either"
    unit = (" %" if percent else "") if unit is None else unit

    def f(x: float) -> str:
        if percent:
            return f"{100 * x:.1f}"
        return "∞" if x == float("inf") else f"{x:.2f}"

    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{f(value)}{unit}"
    return f"{f(value)}{unit} [{f(lo)}, {f(hi)}]"


# what "on target" means, by ``on_target_by``: one wording for the app, the report and the CLI
ON_TARGET = {
    "training image": "On target: the scorer's nearest training image carries the sample's target class.",
    "cluster": "On target: the scorer puts the image in its target's cluster (labels from clusters of the "
               "model's own samples: no training image carries a class).",
    None: "On target: the scorer's verdict on whether the image reached its target class.",
}


def verdict(diff: float, p_adjusted: float) -> str:
    if p_adjusted is None or math.isnan(p_adjusted) or p_adjusted >= ALPHA:
        return "no difference shown"
    return "more than Random" if diff > 0 else "fewer than Random"


def on_target_meaning(by: str | None) -> str:
    return ON_TARGET.get(by, ON_TARGET[None])
