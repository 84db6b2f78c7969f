"""The Results view: AMS/UMS vs λ per band, the best-similarity histogram, Table-1/2 style tables."""

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


class CurvePlot(pg.PlotWidget):
    """One metric (AMS or UMS) vs λ: SIDE per band, Random as a dashed reference line."""

    def __init__(self, metric: str, parent=None) -> None:
        super().__init__(parent)
        self.metric = metric
        self.setBackground("w")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("bottom", "guidance scale λ")
        self.setLabel("left", f"{metric.upper()} (% of N_G)")
        self.addLegend(offset=(-10, 10))
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
        self.plotItem.legend.clear()
        key = f"{self.metric}_cumulative" if cumulative else self.metric
        for method in sorted({r["method"] for r in rows} - {"random"}):
            for band in BANDS:
                pts = sorted((r["lambda"], 100 * r[key]) for r in rows if r["method"] == method and r["band"] == band)
                if not pts:
                    continue
                x, y = np.array(pts).T
                style = Qt.PenStyle.SolidLine if method == "side" else Qt.PenStyle.DotLine
                pen = pg.mkPen(BAND_COLOURS[band], width=2, style=style)
                name = f"{method.upper()} {'≥ ' if cumulative else ''}{band}"
                item = self.plot(x, y, pen=pen, symbol="o", symbolSize=7, symbolBrush=BAND_COLOURS[band], name=name)
                self.curves[(method, band)] = item
                self.points[(method, band)] = (x, y)
        for band in BANDS:
            ref = [100 * r[key] for r in rows if r["method"] == "random" and r["band"] == band]
            if ref:
                line = pg.InfiniteLine(pos=ref[0], angle=0, pen=pg.mkPen(BAND_COLOURS[band], width=1,
                                                                          style=Qt.PenStyle.DashLine))
                self.addItem(line)
                self.curves[("random", band)] = line
                self.points[("random", band)] = (np.array([0.0]), np.array([ref[0]]))
                self.plotItem.legend.addItem(pg.PlotDataItem(pen=line.pen), f"Random {band} (λ = 0)")

    def _on_move(self, pos) -> None:
        if not self.points:
            return
        p = self.plotItem.vb.mapSceneToView(pos)
        best, text = None, ""
        for (method, band), (xs, ys) in self.points.items():
            for x, y in zip(xs, ys):
                d = abs(x - p.x()) / max(1.0, abs(p.x()) + 1) + abs(y - p.y()) / max(1.0, abs(y) + 1)
                if best is None or d < best:
                    best, text = d, f"{method} {band}: λ = {x:g}, {self.metric.upper()} = {y:.2f} %"
        self.hover.setText(text)
        self.hover.setPos(p.x(), p.y())


class ResultsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ams_plot = CurvePlot("ams")
        self.ums_plot = CurvePlot("ums")
        self.hist = pg.PlotWidget(background="w")
        self.hist.setLabel("bottom", "best similarity of each generated image")
        self.hist.setLabel("left", "images")
        self.cumulative = QCheckBox("cumulative (at least the band)")
        self.cumulative.toggled.connect(lambda _: self._redraw())
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.table1 = QTableWidget()
        self.table2 = QTableWidget()
        tables = QTabWidget()
        tables.addTab(self.table1, "AMS / UMS per band (Table 1)")
        tables.addTab(self.table2, "Top-k % mean similarity (Table 2)")
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.ams_plot)
        plots.addWidget(self.ums_plot)
        plots.addWidget(self.hist)
        top = QHBoxLayout()
        top.addWidget(self.cumulative)
        top.addWidget(self.note, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(plots)
        split.addWidget(tables)
        layout.addWidget(split, 1)
        self._data: dict = {"rows": []}
        self._best = np.zeros(0)
        self._bands: list = []
        self._higher = True
        self._dirty = False

    def set_data(self, data: dict, best: np.ndarray, bands: list, higher: bool, draw: bool = True) -> None:
        """Keep the data; draw now only if ``draw`` (the view is on screen). Rebuilding the plots
        is the costliest part of a live refresh, and under a running audit's load it held the
        event loop for a quarter of a second: a hidden view draws when it is shown."""
        self._data, self._best, self._bands, self._higher = data, best, bands, higher
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
        scorer = self._data.get("audit", {}).get("scorer") or ""
        self.note.setText(f"scorer {scorer}; N_G = {n} per (method, λ). UMS depends on N_G: compare only at "
                          "equal N_G." if rows else "no metrics yet")
        self._draw_hist()
        self._fill_table1(rows)
        self._fill_table2(self._data.get("topk", []))

    def _draw_hist(self) -> None:
        self.hist.clear()
        self.hist.setLabel("bottom", "best match: cosine (higher = closer)" if self._higher
                           else "best match: calibrated l2 ratio (lower = closer)")
        best = self._best[np.isfinite(self._best)] if len(self._best) else self._best
        if not len(best):
            return
        y, x = np.histogram(best, bins=40)
        self.hist.plot(x, y, stepMode="center", fillLevel=0, brush=(120, 120, 160, 120), pen=pg.mkPen("k"))
        for b in self._bands:
            edge = b.lo if self._higher else b.hi
            self.hist.addItem(pg.InfiniteLine(pos=edge, angle=90, pen=pg.mkPen(BAND_COLOURS[b.name], width=2),
                                              label=b.name, labelOpts={"position": 0.9, "color": BAND_COLOURS[b.name]}))

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
                values += [f"{100 * c['ams']:.2f} %", f"{100 * c['ums']:.2f} %"] if c else ["", ""]
            for j, v in enumerate(values):
                self.table1.setItem(i, j, QTableWidgetItem(v))
        self.table1.resizeColumnsToContents()

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
                v = next((r["mean_best"] for r in topk
                          if (r["method"], r["lambda"], r["fraction"]) == (method, lam, f)), None)
                self.table2.setItem(i, 2 + j, QTableWidgetItem("" if v is None else f"{v:.3f}"))
        self.table2.resizeColumnsToContents()
