"""Training images at risk, as pictures: each training image beside its closest generated image,
with its matches per band; filter by band; double-click opens every generated image that matched
it in the gallery (closest first, the gallery's decision keys)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QSize, Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QTableView, QVBoxLayout, QWidget

from .gallery import ThumbnailCache
from .rows_model import _ROOT, RowsMixin

THUMB = 72
COLUMNS = ("train_thumb", "copy_thumb", "train_idx", "path", "high", "mid", "low", "total", "best_score",
           "random_mid", "side_mid")
TITLES = ("training image", "closest copy", "#", "file", "high", "mid", "low", "matches", "best score",
          "per sample ≥mid: Random", "per sample ≥mid: SIDE")


def probability_text(hits: int | None, n: int | None) -> str:
    """hits / n as a percentage with its exact (Clopper–Pearson) 95 % interval: the image's extraction probability."""
    if hits is None or not n:
        return ""
    from side_engine.statistics import clopper_pearson

    lo, hi = clopper_pearson(hits, n)
    return f"{100 * hits / n:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}]"


class ExposureModel(RowsMixin, QAbstractTableModel):
    def __init__(self, resolve_train: Callable[[str], Path] | None = None,
                 resolve_png: Callable[[str], Path] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []
        self.n: dict[str, int] = {}  # generated images behind each strategy's counts
        self.resolve_train, self.resolve_png = resolve_train, resolve_png
        self.thumbs = ThumbnailCache(size=THUMB)

    def columnCount(self, parent=_ROOT) -> int:  # noqa: N802
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return TITLES[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = self.rows[index.row()], COLUMNS[index.column()]
        if col.endswith("_thumb"):
            if role != Qt.ItemDataRole.DecorationRole:
                return None
            if col == "train_thumb" and self.resolve_train:
                return self.thumbs.get(self.resolve_train(row["path"]))
            if col == "copy_thumb" and self.resolve_png and row.get("best_png"):
                return self.thumbs.get(self.resolve_png(row["best_png"]))
            return None
        if role == Qt.ItemDataRole.ToolTipRole and col in ("random_mid", "side_mid"):
            strategy = col.split("_")[0]
            return (f"{row.get(col)} of {self.n.get(strategy)} {strategy} generated images matched it at ≥mid: its "
                    "per-sample extraction probability, 95 % exact interval")
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if col in ("random_mid", "side_mid"):
            return probability_text(row.get(col), self.n.get(col.split("_")[0]))
        v = row[col]
        return f"{v:.4f}" if isinstance(v, float) else str(v)


class RiskView(QWidget):
    open_training_image = Signal(int)

    def __init__(self, resolve_train: Callable[[str], Path] | None = None,
                 resolve_png: Callable[[str], Path] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.all_rows: list[dict] = []
        self.model = ExposureModel(resolve_train, resolve_png, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.table.verticalHeader().hide()
        # column widths from the first rows only: every row's thumbnail loaded to measure it
        # took seconds at the paper's scale (tens of thousands of training images at risk)
        self.table.horizontalHeader().setResizeContentsPrecision(64)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.doubleClicked.connect(
            lambda idx: self.open_training_image.emit(self.model.rows[idx.row()]["train_idx"]))
        self.band = QComboBox()
        self.band.addItems(["any band", "high", "mid", "low"])
        self.band.setToolTip("show only training images matched in this band")
        self.band.currentTextChanged.connect(lambda _: self._apply())
        top = QHBoxLayout()
        top.addWidget(QLabel("Training images with generated images in a band, most exposed first (closest band "
                             "first). Double-click one to review every generated image that matched it."), 1)
        top.addWidget(QLabel("band:"))
        top.addWidget(self.band)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table)

    def set_rows(self, rows: list[dict], n: dict[str, int] | None = None) -> None:
        """``n``: the generated images behind each strategy's counts (the probabilities' denominators)."""
        self.all_rows = rows
        self.model.n = dict(n or {})
        self._apply()

    def _apply(self) -> None:
        band = self.band.currentText()
        rows = self.all_rows if band == "any band" else [r for r in self.all_rows if r.get(band, 0) > 0]
        self.model.set_rows(rows)
        self.table.resizeColumnsToContents()
        for col in (0, 1):
            self.table.setColumnWidth(col, max(THUMB + 12, self.table.columnWidth(col)))
