"""Small PNG charts for reports, drawn with Pillow (no plotting stack needed offline)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"low": (90, 160, 220), "mid": (240, 170, 40), "high": (220, 60, 60)}


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # old Pillow
        return ImageFont.load_default()


def _plain(text: str) -> str:
    """Pillow's built-in font has no Greek: spell λ out."""
    return text.replace("λ", "lambda")


def _frame(w: int, h: int, title: str, xlabel: str, ylabel: str):
    title, xlabel, ylabel = _plain(title), _plain(xlabel), _plain(ylabel)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    box = (60, 30, w - 20, h - 45)
    d.rectangle(box, outline=(80, 80, 80))
    d.text((w // 2, 8), title, fill="black", font=_font(14), anchor="ma")
    d.text(((box[0] + box[2]) // 2, h - 18), xlabel, fill="black", font=_font(), anchor="ma")
    d.text((6, (box[1] + box[3]) // 2), ylabel, fill="black", font=_font(11), anchor="lm")
    return img, d, box


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def line_chart(series: Sequence[dict], title: str, xlabel: str, ylabel: str, hlines: Sequence[dict] = (),
               size: tuple[int, int] = (560, 330)) -> bytes:
    """series: {label, x, y, colour, lo?, hi?}; hlines: {label, y, colour, lo?, hi?} (reference lines).
    ``lo``/``hi`` are 95 % intervals: error bars on a series, a dotted band around a reference."""
    img, d, (x0, y0, x1, y1) = _frame(*size, title, xlabel, ylabel)
    xs = [x for s in series for x in s["x"]] or [0, 1]
    ys = ([y for s in series for y in s["y"]] + [h["y"] for h in hlines] + [0]
          + [v for s in series for v in s.get("hi") or [] if v is not None]
          + [h["hi"] for h in hlines if h.get("hi") is not None])
    xmin, xmax = min(xs + [0]), max(xs) if max(xs) > min(xs + [0]) else min(xs + [0]) + 1
    ymax = max(ys) * 1.1 if max(ys) > 0 else 1
    fx = lambda x: x0 + (x - xmin) / (xmax - xmin) * (x1 - x0)  # noqa: E731
    fy = lambda y: y1 - y / ymax * (y1 - y0)  # noqa: E731
    for t in _ticks(0, ymax):
        d.line([(x0, fy(t)), (x1, fy(t))], fill=(235, 235, 235))
        d.text((x0 - 4, fy(t)), f"{t:.3g}", fill="black", font=_font(11), anchor="rm")
    for t in sorted(set(xs)):
        d.text((fx(t), y1 + 4), f"{t:g}", fill="black", font=_font(11), anchor="ma")
    for h in hlines:
        y = fy(h["y"])
        for xa in range(int(x0), int(x1), 10):
            d.line([(xa, y), (min(xa + 5, x1), y)], fill=h["colour"], width=1)
        for edge in (h.get("lo"), h.get("hi")):
            if edge is not None:
                for xa in range(int(x0), int(x1), 6):
                    d.point((xa, fy(edge)), fill=h["colour"])
    for s in series:
        pts = [(fx(x), fy(y)) for x, y in zip(s["x"], s["y"])]
        for px, lo, hi in zip(pts, s.get("lo") or [], s.get("hi") or []):
            if lo is not None and hi is not None:
                d.line([(px[0], fy(lo)), (px[0], fy(hi))], fill=s["colour"], width=1)
                for yv in (fy(lo), fy(hi)):
                    d.line([(px[0] - 3, yv), (px[0] + 3, yv)], fill=s["colour"], width=1)
        if len(pts) > 1:
            d.line(pts, fill=s["colour"], width=2)
        for px, py in pts:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=s["colour"])
    ly = y0 + 6
    for entry in list(series) + list(hlines):
        d.line([(x1 - 150, ly + 6), (x1 - 130, ly + 6)], fill=entry["colour"], width=2)
        d.text((x1 - 126, ly), _plain(entry["label"]), fill="black", font=_font(11))
        ly += 15
    return _png(img)


def histogram(values: Sequence[float], edges: Sequence[dict], title: str, xlabel: str,
              bins: int = 40, size: tuple[int, int] = (560, 330)) -> bytes:
    """Counts of ``values`` with vertical lines at band ``edges`` ({label, x, colour})."""
    import numpy as np

    img, d, (x0, y0, x1, y1) = _frame(*size, title, xlabel, "images")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo = min([float(v.min()) if len(v) else 0.0] + [e["x"] for e in edges])
    hi = max([float(v.max()) if len(v) else 1.0] + [e["x"] for e in edges])
    if len(v):
        counts, bin_edges = np.histogram(v, bins=bins, range=(lo, hi))
    else:
        counts, bin_edges = np.zeros(bins), np.linspace(lo, hi, bins + 1)
    top = max(int(counts.max()), 1)
    fx = lambda x: x0 + (x - lo) / ((hi - lo) or 1) * (x1 - x0)  # noqa: E731
    for c, a, b in zip(counts, bin_edges[:-1], bin_edges[1:]):
        d.rectangle([fx(a), y1 - c / top * (y1 - y0), fx(b), y1], fill=(150, 150, 190), outline=(90, 90, 120))
    for t in _ticks(lo, hi):
        d.text((fx(t), y1 + 4), f"{t:.2f}", fill="black", font=_font(11), anchor="ma")
    d.text((x0 - 4, y0), str(top), fill="black", font=_font(11), anchor="rm")
    for e in edges:
        d.line([(fx(e["x"]), y0), (fx(e["x"]), y1)], fill=e["colour"], width=2)
        d.text((fx(e["x"]) + 3, y0 + 3), e["label"], fill=e["colour"], font=_font(11))
    return _png(img)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
