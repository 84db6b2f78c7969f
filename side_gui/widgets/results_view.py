"""The Results view: AMS/UMS vs λ per band with 95 % error bars, the best-similarity histogram,
Table-1/2 style tables with intervals, and the paired comparison with Random."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

BAND_COLOURS = {"low": (90, 160, 220), "mid": (240, 170, 40), "high": (220, 60, 60)}
BANDS = ("low", "mid", "high")


def ci_text(value, lo, hi, pct: bool = True) -> str:
    """A rate with its 95 % interval: every number the app shows carries one."""
    if value is None:
        return ""
    if value != value:  # NaN: a ratio of two zero rates
        return "none found by either"
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: "∞" if v == float("inf") else f"{v:.2f}")
    unit = " %" if pct else ""
    return f"{f(value)}{unit} [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None else f"{f(value)}{unit}"


class CurvePlot(pg.PlotWidget):
    """One metric (AMS or UMS) vs λ: SIDE per band with 95 % error bars; Random as a dashed line
    over its shaded 95 % interval. The legend is the row of toggles under the plots (outside the
    data); ``hidden`` holds the series switched off there."""

    def __init__(self, metric: str, parent=None) -> None:
        super().__init__(parent)
        self.metric = metric
        self.setBackground("w")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("bottom", "guidance scale λ")
        self.setLabel("left", f"{metric.upper()} (% of N_G)")
        self.setTitle(f"{metric.upper()} vs guidance scale λ (95 % intervals)", size="10pt")
        self.hidden: set[str] = set()
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.points: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.hover = pg.TextItem(color=(20, 20, 20), anchor=(0, 1))
        self.addItem(self.hover)
        self.scene().sigMouseMoved.connect(self._on_move)

    def set_rows(self, rows: list[dict], cumulative: bool) -> None:
        for item in list(self.curves.values()):
            self.removeItem(item)
        self.curves.clear()
        self.points.clear()
        key = f"{self.metric}_cumulative" if cumulative else self.metric

        def pct(r, k):
            return 100 * r[k] if r.get(k) is not None else np.nan

        for method in sorted({r["method"] for r in rows} - {"random"}):
            for band in BANDS:
                mine = sorted((r for r in rows if r["method"] == method and r["band"] == band),
                              key=lambda r: r["lambda"])
                if not mine:
                    continue
                x = np.array([r["lambda"] for r in mine], float)
                y = np.array([pct(r, key) for r in mine])
                lo = np.array([pct(r, f"{key}_lo") for r in mine])
                hi = np.array([pct(r, f"{key}_hi") for r in mine])
                style = Qt.PenStyle.SolidLine if method == "side" else Qt.PenStyle.DotLine
                pen = pg.mkPen(BAND_COLOURS[band], width=2, style=style)
                name = f"{method.upper()} {'≥ ' if cumulative else ''}{band}"
                item = self.plot(x, y, pen=pen, symbol="o", symbolSize=7, symbolBrush=BAND_COLOURS[band], name=name)
                bars = pg.ErrorBarItem(x=x, y=y, top=np.nan_to_num(hi - y), bottom=np.nan_to_num(y - lo),
                                       beam=0.3, pen=pg.mkPen(BAND_COLOURS[band], width=1))
                self.addItem(bars)
                self.curves[(method, band)] = item
                self.curves[(method, band, "bars")] = bars
                self.points[(method, band)] = (x, y, lo, hi)
        for band in BANDS:
            ref = [r for r in rows if r["method"] == "random" and r["band"] == band]
            if ref:
                y, lo, hi = pct(ref[0], key), pct(ref[0], f"{key}_lo"), pct(ref[0], f"{key}_hi")
                line = pg.InfiniteLine(pos=y, angle=0, pen=pg.mkPen(BAND_COLOURS[band], width=1,
                                                                     style=Qt.PenStyle.DashLine))
                self.addItem(line)
                self.curves[("random", band)] = line
                if np.isfinite(lo) and np.isfinite(hi):  # Random's 95 % interval, shaded
                    region = pg.LinearRegionItem(values=(lo, hi), orientation="horizontal", movable=False,
                                                 brush=pg.mkBrush(*BAND_COLOURS[band], 40),
                                                 pen=pg.mkPen(None))
                    region.setZValue(-10)
                    self.addItem(region)
                    self.curves[("random", band, "region")] = region
                self.points[("random", band)] = (np.array([0.0]), np.array([y]), np.array([lo]), np.array([hi]))
        self.apply_visibility()

    def set_hidden(self, series: str, hidden: bool) -> None:
        """``series``: a band name, or "random" for the reference lines and their intervals."""
        (self.hidden.add if hidden else self.hidden.discard)(series)
        self.apply_visibility()

    def apply_visibility(self) -> None:
        for key, item in self.curves.items():
            off = key[1] in self.hidden or (key[0] == "random" and "random" in self.hidden)
            item.setVisible(not off)

    def _on_move(self, pos) -> None:
        if not self.points:
            return
        p = self.plotItem.vb.mapSceneToView(pos)
        best, text = None, ""
        for (method, band), (xs, ys, los, his) in self.points.items():
            if band in self.hidden or (method == "random" and "random" in self.hidden):
                continue
            for x, y, lo, hi in zip(xs, ys, los, his):
                d = abs(x - p.x()) / max(1.0, abs(p.x()) + 1) + abs(y - p.y()) / max(1.0, abs(y) + 1)
                if best is None or d < best:
                    best, text = d, (f"{method} {band}: λ = {x:g}, {self.metric.upper()} = {y:.1f} % "
                                     f"[{lo:.1f}, {hi:.1f}] (95 %)")
        self.hover.setText(text)
        self.hover.setPos(p.x(), p.y())


class ResultsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ams_plot = CurvePlot("ams")
        self.ums_plot = CurvePlot("ums")
        self.hist = pg.PlotWidget(background="w")
        self.hist.setLabel("bottom", "best similarity of each generated image")
        self.hist.setLabel("left", "generated images")
        self.hist.setTitle("Best match of each generated image", size="10pt")
        self.cumulative = QCheckBox("cumulative (at least the band)")
        self.cumulative.toggled.connect(lambda _: self._redraw())
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.warnings = QLabel("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #a00000;")
        self.warnings.hide()
        self.table1 = QTableWidget()
        self.table2 = QTableWidget()
        self.compare = QTableWidget()
        self.tables = tables = QTabWidget()
        tables.addTab(self.table1, "AMS / UMS per band, 95 % intervals (Table 1)")
        tables.addTab(self.compare, "Against Random (paired, Holm)")
        tables.addTab(self.table2, "Top-k % mean similarity (Table 2)")
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.ams_plot)
        plots.addWidget(self.ums_plot)
        plots.addWidget(self.hist)
        top = QHBoxLayout()
        top.addWidget(self.cumulative)
        top.addWidget(self.note, 1)
        # the legend, outside the data: one toggle per series, in the series' colour
        legend = QHBoxLayout()
        legend.addWidget(QLabel("show:"))
        self.toggles: dict[str, QCheckBox] = {}
        for series, text in (("high", "high band"), ("mid", "mid band"), ("low", "low band"),
                             ("random", "Random (λ = 0): dashed, 95 % interval shaded")):
            box = QCheckBox(text)
            box.setChecked(True)
            colour = BAND_COLOURS.get(series, (90, 90, 90))
            box.setStyleSheet(f"QCheckBox {{ color: rgb{colour}; font-weight: bold; }}")
            box.toggled.connect(lambda on, s=series: self._toggle(s, on))
            legend.addWidget(box)
            self.toggles[series] = box
        legend.addWidget(QLabel("(solid: SIDE with 95 % error bars; dotted: other guided methods)"), 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.warnings)
        split = QSplitter(Qt.Orientation.Vertical)
        plot_area = QWidget()
        plot_layout = QVBoxLayout(plot_area)
        plot_layout.setContentsMargins(0, 0, 0, 0)
        plot_layout.addWidget(plots, 1)
        plot_layout.addLayout(legend)
        split.addWidget(plot_area)
        split.addWidget(tables)
        layout.addWidget(split, 1)
        self._data: dict = {"rows": []}
        self._hist: dict = {}  # best-match counts and bin edges (results.best_histogram)
        self._bands: list = []
        self._higher = True
        self._dirty = False

    def _toggle(self, series: str, shown: bool) -> None:
        for plot in (self.ams_plot, self.ums_plot):
            plot.set_hidden(series, not shown)

    def set_data(self, data: dict, hist: dict | None, bands: list, higher: bool, draw: bool = True) -> None:
        """Keep the data; draw now only if ``draw`` (the view is on screen). Rebuilding the plots
        is the costliest part of a live refresh, and under a running audit's load it held the
        event loop for a quarter of a second: a hidden view draws when it is shown."""
        self._data, self._hist, self._bands, self._higher = data, hist or {}, bands, higher
        self._dirty = True
        if draw:
            self.ensure_drawn()

    def ensure_drawn(self) -> None:
        if self._dirty:
            self._dirty = False
            self._redraw()

    def _redraw(self) -> None:
        rows = self._data.get("rows", [])
        cum = self.cumulative.isChecked()
        self.ams_plot.set_rows(rows, cum)
        self.ums_plot.set_rows(rows, cum)
        n = rows[0]["n_generated"] if rows else 0
        audit = self._data.get("audit", {})
        scorer = audit.get("scorer") or ""
        note = (f"scorer {scorer} ({audit.get('measure', '')}); N_G = {n} per (method, λ); error bars: 95 % "
                "intervals. UMS depends on N_G: compare only at equal N_G.")
        self.note.setText(note if rows else "no metrics yet")
        warnings = self._data.get("warnings") or []
        self.warnings.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.warnings.setVisible(bool(warnings))
        self._draw_hist()
        self._fill_table1(rows)
        self._fill_compare(self._data.get("comparison") or {})
        self._fill_table2(self._data.get("topk", []))

    def _draw_hist(self) -> None:
        self.hist.clear()
        scorer = self._data.get("audit", {}).get("scorer") or ""
        self.hist.setLabel("bottom", "best match: cosine (higher = closer)" if self._higher
                           else "best match: Gu ratio nearest / second-nearest (lower = closer)" if scorer == "pixel"
                           else "best match: calibrated l2 ratio (lower = closer)")
        y, x = np.asarray(self._hist.get("counts") or []), np.asarray(self._hist.get("edges") or [])
        if not len(y):
            return
        self.hist.plot(x, y, stepMode="center", fillLevel=0, brush=(120, 120, 160, 120), pen=pg.mkPen("k"))
        for i, b in enumerate(self._bands):
            edge = b.lo if self._higher else b.hi
            # labels at staggered heights: thresholds close together would print over each other
            self.hist.addItem(pg.InfiniteLine(pos=edge, angle=90, pen=pg.mkPen(BAND_COLOURS[b.name], width=2),
                                              label=f"{b.name} band", labelOpts={"position": 0.92 - 0.1 * i,
                                                                                 "color": BAND_COLOURS[b.name]}))

    def _fill_table1(self, rows: list[dict]) -> None:
        keys = sorted({(r["method"], r["lambda"]) for r in rows}, key=lambda k: (k[0] != "random", k[0], k[1]))
        headers = ["method", "λ", "N_G"] + [f"{m} {b}" for b in BANDS for m in ("AMS", "UMS")]
        self.table1.clear()
        self.table1.setColumnCount(len(headers))
        self.table1.setHorizontalHeaderLabels(headers)
        self.table1.setRowCount(len(keys))
        for i, (method, lam) in enumerate(keys):
            cells = {r["band"]: r for r in rows if r["method"] == method and r["lambda"] == lam}
            values = [method, f"{lam:g}", str(next(iter(cells.values()))["n_generated"])]
            for b in BANDS:
                c = cells.get(b)
                values += ([ci_text(c["ams"], c.get("ams_lo"), c.get("ams_hi")),
                            ci_text(c["ums"], c.get("ums_lo"), c.get("ums_hi"))] if c else ["", ""])
            for j, v in enumerate(values):
                self.table1.setItem(i, j, QTableWidgetItem(v))
        self.table1.resizeColumnsToContents()

    def _fill_compare(self, comp: dict) -> None:
        """Each guided method against Random on the cumulative bands, per λ and over the declared range."""
        rows = [c for c in comp.get("per_lambda", []) + comp.get("range", []) if c["cumulative"]]
        headers = ["method", "λ", "band", "metric", "method rate", "Random", "ratio", "verdict", "p (Holm)", "p"]
        self.compare.clear()
        self.compare.setColumnCount(len(headers))
        self.compare.setHorizontalHeaderLabels(headers)
        self.compare.setRowCount(2 * len(rows))
        i = 0
        for c in rows:
            lam = f"{c['lambda']:g}" if "lambda" in c else "range " + ", ".join(f"{x:g}" for x in c["lambdas"])
            for key in ("ams", "ums"):
                holm_p = c.get(f"{key}_p_holm")
                values = [c["method"].upper(), lam, f"≥ {c['band']}", key.upper(),
                          ci_text(c[f"{key}_method"], c.get(f"{key}_method_lo"), c.get(f"{key}_method_hi")),
                          ci_text(c[f"{key}_random"], c.get(f"{key}_random_lo"), c.get(f"{key}_random_hi")),
                          ci_text(c[f"{key}_ratio"], c[f"{key}_ratio_lo"], c[f"{key}_ratio_hi"], pct=False),
                          c[f"{key}_verdict"], "single declared test" if holm_p is None else f"{holm_p:.3g}",
                          f"{c[f'{key}_p']:.3g} ({c[f'{key}_test']})"]
                for j, v in enumerate(values):
                    self.compare.setItem(i, j, QTableWidgetItem(v))
                i += 1
        self.compare.resizeColumnsToContents()

    def _fill_table2(self, topk: list[dict]) -> None:
        fracs = sorted({r["fraction"] for r in topk})
        keys = sorted({(r["method"], r["lambda"]) for r in topk}, key=lambda k: (k[0] != "random", k[0], k[1]))
        self.table2.clear()
        self.table2.setColumnCount(2 + len(fracs))
        self.table2.setHorizontalHeaderLabels(["method", "λ"] + [f"top {100 * f:g} %" for f in fracs])
        self.table2.setRowCount(len(keys))
        for i, (method, lam) in enumerate(keys):
            self.table2.setItem(i, 0, QTableWidgetItem(method))
            self.table2.setItem(i, 1, QTableWidgetItem(f"{lam:g}"))
            for j, f in enumerate(fracs):
                r = next((r for r in topk if (r["method"], r["lambda"], r["fraction"]) == (method, lam, f)), None)
                text = "" if r is None or r["mean_best"] is None else (
                    f"{r['mean_best']:.3f} [{r['mean_best_lo']:.3f}, {r['mean_best_hi']:.3f}]"
                    if r.get("mean_best_lo") is not None else f"{r['mean_best']:.3f}")
                self.table2.setItem(i, 2 + j, QTableWidgetItem(text))
        self.table2.resizeColumnsToContents()
