"""The metric tables, the paired comparison with Random, and the audit's steering check."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("metrics",)
STEER_WARN = 3.0  # "steered" below this multiple of chance at the largest λ: SIDE barely steers
SPLIT = "rank0"


def run(ctx: StageContext) -> None:
    """Produces the stored metric tables (``results``)."""
    with ctx.store.timed("metrics"):
        ctx.store.store_metrics(ctx.cfg, ctx.artifacts.scorer.higher_is_closer, ctx.bands, ctx.scorer_name)
        _check_steering(ctx)
        ctx.report.update("metrics", 1, 1)


def _check_steering(ctx: StageContext) -> None:
    """Log the guidance-to-ε ratio per λ, and say so when SIDE barely steers: under 3x chance
    of landing in the target class at the largest λ means the audit cannot show what
    guidance would find, whatever the rates say."""
    rows = ctx.store.guided_summary()
    for r in rows:
        if r["guidance_ratio"] is not None:
            ctx.report.log(f"{r['method'].upper()} λ = {r['lam']:g}: guidance / ε RMS ratio "
                           f"{r['guidance_ratio']:.3f}, steered {100 * (r['target_accuracy'] or 0):.1f} %")
    side = [r for r in rows if r["method"] == "side" and r["target_accuracy"] is not None]
    if not side:
        return
    top = max(side, key=lambda r: r["lam"])
    chance = 1 / max(ctx.artifacts.k, 1)
    if top["target_accuracy"] < STEER_WARN * chance:
        ctx.report.warn(f"SIDE barely steers: at the largest λ = {top['lam']:g} only "
                        f"{100 * top['target_accuracy']:.1f} % of guided samples land in their target class "
                        f"(chance {100 * chance:.1f} %; guidance / ε {top['guidance_ratio'] or 0:.3f}). Its rates "
                        "cannot show what guidance would find: raise the largest λ, tdkd_epochs or "
                        "classifier_min_steps, then audit again.")
