"""The report's charts, drawn with matplotlib's Agg canvas (no display, no pyplot state, so
safe on any thread): the same PNGs go into the HTML and the PDF.

What a reader must be able to see: each point's 95 % interval (error bars), Random as a shaded
interval with its estimate dashed — the reference a method is judged against —, λ written as
λ, and legends outside the data so no curve hides behind one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

COLOURS = {"low": "#4c9bd9", "mid": "#e8a317", "high": "#d23c3c"}
SIZE = (6.8, 3.4)  # inches; 150 dpi gives ~1000 px: sharp in the PDF, light in the HTML


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    return buf.getvalue()


def _err(y: Sequence[float], lo: Sequence[float | None] | None, hi: Sequence[float | None] | None):
    """Asymmetric error bars from interval ends; a missing end draws no bar."""
    if not lo or not hi:
        return None
    below = [max(v - (a if a is not None else v), 0.0) for v, a in zip(y, lo)]
    above = [max((b if b is not None else v) - v, 0.0) for v, b in zip(y, hi)]
    return [below, above]


def line_chart(series: Sequence[dict], title: str, xlabel: str, ylabel: str, hlines: Sequence[dict] = ()) -> bytes:
    """series: {label, x, y, colour, lo?, hi?} drawn with 95 % error bars; hlines: {label, y,
    colour, lo?, hi?}, reference values (Random) drawn dashed over their shaded interval."""
    fig, ax = _figure()
    for h in hlines:
        if h.get("lo") is not None and h.get("hi") is not None:
            ax.axhspan(h["lo"], h["hi"], color=h["colour"], alpha=0.12, linewidth=0)
        ax.axhline(h["y"], color=h["colour"], linestyle="--", linewidth=1.2, label=h["label"])
    for s in series:
        ax.errorbar(s["x"], s["y"], yerr=_err(s["y"], s.get("lo"), s.get("hi")), color=s["colour"], marker="o",
                    markersize=4, linewidth=1.6, capsize=3, elinewidth=1, label=s["label"])
    xs = sorted({x for s in series for x in s["x"]})
    if xs:
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series or hlines:
        # "outside": constrained layout reserves the legend's room beside the axes
        fig.legend(loc="outside right upper", fontsize=7.5, frameon=False)
    return _png(fig)


def histogram(values: Sequence[float], edges: Sequence[dict], title: str, xlabel: str, bins: int = 40) -> bytes:
    """Counts of ``values`` with a vertical line at each band threshold ({label, x, colour}),
    named in the legend rather than on the plot, where labels of close thresholds collide."""
    import numpy as np

    fig, ax = _figure()
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v):
        ax.hist(v, bins=bins, color="#9696be", edgecolor="#5a5a78", linewidth=0.5)
    for e in edges:
        ax.axvline(e["x"], color=e["colour"], linewidth=1.6, label=f"{e['label']} band threshold ({e['x']:.3g})")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("generated images")
    if edges:
        fig.legend(loc="outside right upper", fontsize=7.5, frameon=False)
    return _png(fig)


def budget_chart(curves: Sequence[dict], title: str, xlabel: str, ylabel: str) -> bytes:
    """Expected distinct training images as the budget grows, one curve per strategy ({label,
    colour, points: [{budget, expected, lo, hi, extrapolated}], asymptote?}): solid where it was
    observed, dashed where extrapolated, each over its shaded 95 % interval; the unlimited-budget
    estimate as a dotted level. One legend entry a strategy: the styles are said in the title."""
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure()
    for c in curves:
        pts = c["points"]
        for extrapolated, style in ((False, "-"), (True, "--")):
            # the dashed part starts at the observed end so the two parts join
            seg = [p for i, p in enumerate(pts) if p["extrapolated"] == extrapolated
                   or (extrapolated and i + 1 < len(pts) and pts[i + 1]["extrapolated"] and not p["extrapolated"])]
            if not seg:
                continue
            x = [p["budget"] for p in seg]
            if not extrapolated:  # the extrapolation is an estimate with no validated range
                ax.fill_between(x, [p["lo"] for p in seg], [p["hi"] for p in seg], color=c["colour"], alpha=0.12,
                                linewidth=0)
            ax.plot(x, [p["expected"] for p in seg], style, color=c["colour"], linewidth=1.6,
                    label=None if extrapolated else c["label"])
        if c.get("asymptote") is not None:
            ax.axhline(c["asymptote"], color=c["colour"], linestyle=":", linewidth=1.0)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if curves:
        fig.legend(loc="outside right upper", fontsize=7.5, frameon=False)
    return _png(fig)
