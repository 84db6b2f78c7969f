"""The Results view: AMS/UMS vs λ per band with 95 % error bars, the best-similarity histogram,
Table-1/2 style tables with intervals, and the paired comparison with Random."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from side_engine.results import with_interval

from .rows_model import _ROOT

BAND_COLOURS = {"low": (90, 160, 220), "mid": (240, 170, 40), "high": (220, 60, 60)}
BANDS = ("low", "mid", "high")


def ci_text(value, lo, hi, pct: bool = True) -> str:
    """A rate with its 95 % interval: every number the app shows carries one."""
    return with_interval(value, lo, hi, percent=pct)


class TextTableModel(QAbstractTableModel):
    """Rows of ready-made text: a model, not one QTableWidgetItem per cell (the comparison table
    of a 51-λ audit is ~3 000 cells, and making the items took a third of the view's redraw)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.headers: list[str] = []
        self.cells: list[list[str]] = []

    def set_cells(self, headers: list[str], cells: list[list[str]]) -> None:
        self.beginResetModel()
        self.headers, self.cells = headers, cells
        self.endResetModel()

    def rowCount(self, parent=_ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.cells)

    def columnCount(self, parent=_ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.headers)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and index.isValid():
            row = self.cells[index.row()]
            return row[index.column()] if index.column() < len(row) else ""
        return None

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section] if section < len(self.headers) else None
        return super().headerData(section, orientation, role)


class TextTable(QTableView):
    """A read-only table of text whose columns fit their contents (measured on the first rows)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setModel(TextTableModel(self))
        self.horizontalHeader().setResizeContentsPrecision(64)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)

    def set_cells(self, headers: list[str], cells: list[list[str]]) -> None:
        self.model().set_cells(headers, cells)
        # fitting the columns measures every cell shown: a hidden tab's table does it when shown
        self._fit = True
        if self.isVisible():
            self._fit_columns()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._fit_columns()

    def _fit_columns(self) -> None:
        if getattr(self, "_fit", False):
            self._fit = False
            self.resizeColumnsToContents()

    def rowCount(self) -> int:  # noqa: N802
        return self.model().rowCount()

    def text(self, row: int, column: int) -> str:
        return self.model().cells[row][column]


def fix_axes(plot: pg.PlotWidget) -> None:
    """Axes of a fixed size that fits their labels: sized by their tick labels, each axis re-laid
    the plot out after its first paint, which painted it three times more."""
    fm = plot.fontMetrics()
    plot.getAxis("left").setWidth(fm.horizontalAdvance("100.00") + fm.height() + 16)
    plot.getAxis("bottom").setHeight(2 * fm.height() + 14)
    for side in ("left", "bottom"):  # similarities and percentages read as they are, never "(x0.001)"
        plot.getAxis(side).enableAutoSIPrefix(False)


class CurvePlot(pg.PlotWidget):
    """One metric (AMS or UMS) vs λ: SIDE per band with 95 % error bars; Random as a dashed line
    over its shaded 95 % interval. The legend is the row of toggles under the plots (outside the
    data); ``hidden`` holds the series switched off there."""

    def __init__(self, metric: str, parent=None) -> None:
        super().__init__(parent)
        self.metric = metric
        self.setBackground("w")
        # an opaque light grid item: the axes' own translucent grid cost ~10 ms a paint (of ~13)
        grid = pg.GridItem(pen=pg.mkPen((225, 225, 225)), textPen=None)
        grid.setTickSpacing(x=[None], y=[None])
        grid.setZValue(-20)
        self.addItem(grid, ignoreBounds=True)
        self.setLabel("bottom", "guidance scale λ")
        self.setLabel("left", f"{metric.upper()} (% of N_G)")
        self.setTitle(f"{metric.upper()} vs guidance scale λ (95 % intervals)", size="10pt")
        fix_axes(self)
        self.hidden: set[str] = set()
        self.curves: dict[tuple[str, ...], pg.GraphicsObject] = {}
        self.points: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}
        self.hover = pg.TextItem(color=(20, 20, 20), anchor=(0, 1))
        self.addItem(self.hover)
        # the range is set from the data (fit_range): auto-ranging re-ran after every paint and
        # painted each plot four times over on a 51-λ audit
        self.plotItem.vb.disableAutoRange()
        self.scene().sigMouseMoved.connect(self._on_move)

    def set_rows(self, rows: list[dict], cumulative: bool) -> None:
        """Update the series in place: items are made once per (method, band) and given new data
        on each refresh (making ~25 items a plot took most of a redraw)."""
        key = f"{self.metric}_cumulative" if cumulative else self.metric

        def pct(r, k):
            return 100 * r[k] if r.get(k) is not None else np.nan

        by_series: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            by_series.setdefault((r["method"], r["band"]), []).append(r)
        points: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}
        for (method, band), mine in by_series.items():
            if band not in BAND_COLOURS:
                continue
            mine.sort(key=lambda r: r["lambda"])
            if method == "random":
                mine = mine[:1]
            x = np.array([0.0 if method == "random" else r["lambda"] for r in mine], float)
            points[(method, band)] = (x, np.array([pct(r, key) for r in mine]),
                                      np.array([pct(r, f"{key}_lo") for r in mine]),
                                      np.array([pct(r, f"{key}_hi") for r in mine]))
        for k in [k for k in self.curves if k[:2] not in points]:
            self.removeItem(self.curves.pop(k))
        for (method, band), (x, y, lo, hi) in points.items():
            if method == "random":
                self._set_reference(band, y[0], lo[0], hi[0])
            else:
                self._set_series(method, band, x, y, lo, hi)
        self.points = points
        self.apply_visibility()
        self.fit_range()

    def _set_series(self, method: str, band: str, x, y, lo, hi) -> None:
        colour = BAND_COLOURS[band]
        item = self.curves.get((method, band))
        if item is None:
            style = Qt.PenStyle.SolidLine if method == "side" else Qt.PenStyle.DotLine
            item = self.plot(pen=pg.mkPen(colour, width=2, style=style), symbol="o", symbolSize=7,
                             symbolBrush=colour)
            self.curves[(method, band)] = item
            bars = pg.ErrorBarItem(x=x, y=y, beam=0.3, pen=pg.mkPen(colour, width=1))
            self.addItem(bars)
            self.curves[(method, band, "bars")] = bars
        item.setData(x, y)
        self.curves[(method, band, "bars")].setData(x=x, y=y, top=np.nan_to_num(hi - y),
                                                    bottom=np.nan_to_num(y - lo))

    def _set_reference(self, band: str, y: float, lo: float, hi: float) -> None:
        """Random: a dashed line at its rate over its shaded 95 % interval."""
        colour = BAND_COLOURS[band]
        line = self.curves.get(("random", band))
        if line is None:
            line = pg.InfiniteLine(angle=0, pen=pg.mkPen(colour, width=1, style=Qt.PenStyle.DashLine))
            self.addItem(line)
            self.curves[("random", band)] = line
        line.setValue(y if np.isfinite(y) else 0.0)
        region = self.curves.get(("random", band, "region"))
        if np.isfinite(lo) and np.isfinite(hi):
            if region is None:
                region = pg.LinearRegionItem(orientation="horizontal", movable=False,
                                             brush=pg.mkBrush(*colour, 40), pen=pg.mkPen(None))
                region.setZValue(-10)
                self.addItem(region)
                self.curves[("random", band, "region")] = region
            region.setRegion((lo, hi))
        elif region is not None:
            self.removeItem(self.curves.pop(("random", band, "region")))

    def fit_range(self) -> None:
        """λ from 0 to the grid's largest, the rate from 0 to the highest interval bound."""
        x_max = max((float(np.max(x)) for x, *_ in self.points.values()), default=1.0)
        tops = [float(np.nanmax(np.r_[y, hi])) for _, y, _, hi in self.points.values()
                if np.isfinite(np.r_[y, hi]).any()]
        self.setRange(xRange=(0.0, max(x_max, 1.0)), yRange=(0.0, max(tops, default=1.0) or 1.0), padding=0.05)

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


CURVE_COLOURS = {"random": (85, 85, 85), "side": (210, 60, 60), "ti": (76, 155, 217), "side+random": (232, 163, 23),
                 "ti+random": (122, 92, 194)}


class BudgetPlot(pg.PlotWidget):
    """Distinct training images at ≥mid as the budget grows, per strategy: solid where the audit
    observed it, dashed where extrapolated (to the estimator's cap), each over its 95 % band;
    the unlimited-budget estimate dotted. x is log2 of the budget, labelled in budgets."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setLabel("bottom", "generated images (budget)")
        self.setLabel("left", "training images")
        self.setTitle("Training images found at ≥mid, by budget", size="10pt")
        fix_axes(self)
        self.curves: dict[str, list] = {}

    def set_unseen(self, unseen: dict, band: str = "mid") -> None:
        self.clear()
        self.curves = {}
        est = unseen.get("estimator", "chao2")
        budgets: set[int] = set()
        for r in unseen.get("strategies", []):
            if r["band"] != band or not r["cumulative"]:
                continue
            colour = CURVE_COLOURS.get(r["strategy"], (60, 60, 60))
            pts = r["curve"]
            items = []
            for extrapolated, style in ((False, Qt.PenStyle.SolidLine), (True, Qt.PenStyle.DashLine)):
                # the dashed part starts at the observed end, so the two parts join
                seg = [p for i, p in enumerate(pts) if p["extrapolated"] == extrapolated
                       or (extrapolated and not p["extrapolated"] and i + 1 < len(pts) and pts[i + 1]["extrapolated"])]
                if not seg:
                    continue
                budgets.update(p["budget"] for p in seg)
                x = np.log2([p["budget"] for p in seg])
                if not extrapolated:  # the extrapolation is an estimate with no validated range
                    fill = pg.FillBetweenItem(pg.PlotCurveItem(x, [p["lo"] for p in seg]),
                                              pg.PlotCurveItem(x, [p["hi"] for p in seg]),
                                              brush=pg.mkBrush(*colour, 35))
                    self.addItem(fill)
                    items.append(fill)
                items.append(self.plot(x, [p["expected"] for p in seg], pen=pg.mkPen(colour, width=2, style=style)))
            level = pg.InfiniteLine(pos=r[est], angle=0, pen=pg.mkPen(colour, width=1, style=Qt.PenStyle.DotLine))
            self.addItem(level)
            self.curves[r["strategy"]] = [*items, level]
        ticks = sorted(b for b in budgets if b & (b - 1) == 0)  # powers of two: evenly spaced, never crowded
        self.getAxis("bottom").setTicks([[(float(np.log2(b)), f"{b}") for b in ticks]])


class ResultsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ams_plot = CurvePlot("ams")
        self.ums_plot = CurvePlot("ums")
        self.hist = pg.PlotWidget(background="w")
        self.hist.setLabel("bottom", "best similarity of each generated image")
        self.hist.setLabel("left", "generated images")
        self.hist.setTitle("Best match of each generated image", size="10pt")
        fix_axes(self.hist)
        self.cumulative = QCheckBox("cumulative (at least the band)")
        self.cumulative.toggled.connect(lambda _: self._redraw())
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.warnings = QLabel("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #a00000;")
        self.warnings.hide()
        self.table1 = TextTable()
        self.table2 = TextTable()
        self.compare = TextTable()
        self.unseen_table = TextTable()
        self.budget = BudgetPlot()
        self.unseen_note = QLabel("")
        self.unseen_note.setWordWrap(True)
        unseen_page = QWidget()
        unseen_layout = QHBoxLayout(unseen_page)
        unseen_side = QVBoxLayout()
        unseen_side.addWidget(self.unseen_note)
        unseen_side.addWidget(self.unseen_table, 1)
        unseen_layout.addLayout(unseen_side, 3)
        unseen_layout.addWidget(self.budget, 2)
        self.tables = tables = QTabWidget()
        tables.addTab(self.table1, "AMS / UMS per band, 95 % intervals (Table 1)")
        tables.addTab(self.compare, "Against Random (paired, Holm)")
        tables.addTab(self.table2, "Top-k % mean similarity (Table 2)")
        tables.addTab(unseen_page, "Beyond the budget (unlimited-budget estimate)")
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
                "intervals (AMS exact; UMS the expected distinct count at this N_G), conditional on this audit's "
                "classifiers — another training of them moves SIDE's rows too. UMS depends on N_G: compare only "
                "at equal N_G. A verdict is its ratio interval's: \"more\" exactly when it lies above 1 (per λ: "
                "also after Holm over the λ grid of one endpoint and band).")
        self.note.setText(note if rows else "no metrics yet")
        warnings = self._data.get("warnings") or []
        self.warnings.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.warnings.setVisible(bool(warnings))
        self._draw_hist()
        self._fill_table1(rows)
        self._fill_compare(self._data.get("comparison") or {})
        self._fill_table2(self._data.get("topk", []))
        self._fill_unseen(self._data.get("unseen") or {})

    def _draw_hist(self) -> None:
        self.hist.clear()
        scorer = self._data.get("audit", {}).get("scorer") or ""
        self.hist.setLabel("bottom", "best match: cosine (higher = closer)" if self._higher
                           else "best match: Gu ratio (lower = closer)" if scorer == "pixel"
                           else "best match: calibrated l2 ratio (lower = closer)")
        y, x = np.asarray(self._hist.get("counts") or []), np.asarray(self._hist.get("edges") or [])
        if not len(y):
            return
        self.hist.plot(x, y, stepMode="center", fillLevel=0, brush=(120, 120, 160, 120), pen=pg.mkPen("k"))
        for i, b in enumerate(self._bands):
            edge = b.lo if self._higher else b.hi
            # labels at staggered heights: thresholds close together would print over each other
            self.hist.addItem(pg.InfiniteLine(pos=edge, angle=90, pen=pg.mkPen(BAND_COLOURS[b.name], width=2),
                                              label=f"{b.name} band", labelOpts={
                                                  "position": 0.92 - 0.1 * i, "color": BAND_COLOURS[b.name],
                                                  "fill": (255, 255, 255, 220)}))  # readable over bars

    def _fill_table1(self, rows: list[dict]) -> None:
        cells: dict[tuple[str, float], dict[str, dict]] = {}
        for r in rows:
            cells.setdefault((r["method"], r["lambda"]), {})[r["band"]] = r
        keys = sorted(cells, key=lambda k: (k[0] != "random", k[0], k[1]))
        headers = ["method", "λ", "N_G"] + [f"{m} {b}" for b in BANDS for m in ("AMS", "UMS")]
        table = []
        for method, lam in keys:
            bands = cells[(method, lam)]
            values = [method, f"{lam:g}", str(next(iter(bands.values()))["n_generated"])]
            for b in BANDS:
                c = bands.get(b)
                values += ([ci_text(c["ams"], c.get("ams_lo"), c.get("ams_hi")),
                            ci_text(c["ums"], c.get("ums_lo"), c.get("ums_hi"))] if c else ["", ""])
            table.append(values)
        cal = self._data.get("calibration") or {}
        if cal.get("calibrated"):  # the false-alarm rate of each band, as a row of its own
            fa = {r["band"]: r for r in cal["bands"] if not r["cumulative"]}
            values = ["held-out (false alarms)", "—", str(cal["n"])]
            for b in BANDS:
                r = fa.get(b)
                values += [ci_text(r["false_alarm"], r["false_alarm_lo"], r["false_alarm_hi"]) if r else "", ""]
            table.append(values)
        self.table1.set_cells(headers, table)

    def _fill_compare(self, comp: dict) -> None:
        """Each guided method against Random on the cumulative bands, per λ and over the declared range."""
        rows = [c for c in comp.get("per_lambda", []) + comp.get("range", []) if c["cumulative"]]
        headers = ["method", "λ", "band", "metric", "method rate", "Random", "ratio", "verdict", "p (Holm)", "p"]
        table = []
        for c in rows:
            lam = f"{c['lambda']:g}" if "lambda" in c else "range " + ", ".join(f"{x:g}" for x in c["lambdas"])
            for key in ("ams", "ums"):
                holm_p = c.get(f"{key}_p_holm")
                table.append([c["method"].upper(), lam, f"≥ {c['band']}", key.upper(),
                              ci_text(c[f"{key}_method"], c.get(f"{key}_method_lo"), c.get(f"{key}_method_hi")),
                              ci_text(c[f"{key}_random"], c.get(f"{key}_random_lo"), c.get(f"{key}_random_hi")),
                              ci_text(c[f"{key}_ratio"], c[f"{key}_ratio_lo"], c[f"{key}_ratio_hi"], pct=False),
                              c[f"{key}_verdict"], "single declared test" if holm_p is None else f"{holm_p:.3g}",
                              f"{c[f'{key}_p']:.3g} ({c[f'{key}_test']})"])
        self.compare.set_cells(headers, table)

    def _fill_unseen(self, unseen: dict) -> None:
        """What an unlimited budget would find, per strategy and band, and the extrapolated
        coverage: stored by the metrics stage at the end of a run."""
        if not unseen.get("strategies"):
            self.unseen_note.setText("No estimate yet: it is made by the metrics stage at the end of the run.")
            self.unseen_table.set_cells([], [])
            self.budget.set_unseen({})
            return
        est = unseen.get("estimator", "chao2")
        cap = unseen.get("cap", 3.0)
        self.unseen_note.setText(
            f"Training images each strategy found, and how many it would find with an unlimited budget "
            f"({'Chao2' if est == 'chao2' else 'iChao2'} on how often each image was found, itself a lower "
            "bound: on small audits it fell 17-37 % short of large runs). Brackets: what was found, and the "
            "training set's size as the upper end — the counts cannot bound how many rarely generated images "
            "remain. Within the budget the shaded range is what a new audit of that budget would reach; "
            f"the curve is extrapolated to {cap:g}× the budget, no further, as an estimate with no range. "
            f"Guided strategies pool λ "
            f"{', '.join(f'{x:g}' for x in unseen.get('lambdas', []))}. Curves: Random grey, SIDE red, half and "
            "half orange; solid observed, dashed extrapolated, dotted the unlimited-budget estimate.")
        alt = "chao2" if est == "ichao2" else "ichao2"  # the other estimator, beside it
        headers = ["strategy", "band", "found", "in N", "unlimited budget", "Chao2" if alt == "chao2" else "iChao2",
                   "at 2×", "at 5×", "at 10×"]
        rows = []
        for r in unseen["strategies"]:
            if not r["cumulative"]:
                continue
            cells = [r["strategy"], f"≥ {r['band']}", str(r["observed"]), str(r["generated"])]
            if r.get("no_detections"):  # nothing to estimate from: no certain zero either
                cells += [f"none found: no estimate (0 to {r.get('ceiling', '?')})", ""]
            else:
                cells += [f"{r[est]:.1f} [{r[est + '_lo']:.1f}, {r[est + '_hi']:.1f}]",
                          f"{r[alt]:.1f} [{r[alt + '_lo']:.1f}, {r[alt + '_hi']:.1f}]"]
            cells += [f"beyond {cap:g}×" if m["beyond_cap"] else "—" if m["expected"] is None
                      else f"≈ {m['expected']:.1f}" if m["lo"] is None
                      else f"{m['expected']:.1f} [{m['lo']:.1f}, {m['hi']:.1f}]" for m in r["multiples"]]
            rows.append(cells)
        self.unseen_table.set_cells(headers, rows)
        self.budget.set_unseen(unseen)

    def _fill_table2(self, topk: list[dict]) -> None:
        fracs = sorted({r["fraction"] for r in topk})
        by_key: dict[tuple[str, float], dict[float, dict]] = {}
        for r in topk:
            by_key.setdefault((r["method"], r["lambda"]), {})[r["fraction"]] = r
        keys = sorted(by_key, key=lambda k: (k[0] != "random", k[0], k[1]))
        table = []
        for method, lam in keys:
            values = [method, f"{lam:g}"]
            for f in fracs:
                r = by_key[(method, lam)].get(f)
                values.append("" if r is None or r["mean_best"] is None else (
                    f"{r['mean_best']:.3f} [{r['mean_best_lo']:.3f}, {r['mean_best_hi']:.3f}]"
                    if r.get("mean_best_lo") is not None else f"{r['mean_best']:.3f}"))
            table.append(values)
        self.table2.set_cells(["method", "λ"] + [f"top {100 * f:g} %" for f in fracs], table)
