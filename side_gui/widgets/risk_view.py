"""Training images at risk: ranked by matches per band; opening one shows its generations."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, Qt, Signal
from PySide6.QtWidgets import QLabel, QTableView, QVBoxLayout, QWidget

from .rows_model import _ROOT, RowsMixin

COLUMNS = ("train_idx", "path", "high", "mid", "low", "total", "best_score")
TITLES = ("#", "training image", "high", "mid", "low", "matches", "best score")



class ExposureModel(RowsMixin, QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []

    def columnCount(self, parent=_ROOT) -> int:  # noqa: N802
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return TITLES[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        v = self.rows[index.row()][COLUMNS[index.column()]]
        return f"{v:.4f}" if isinstance(v, float) else str(v)


class RiskView(QWidget):
    open_training_image = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ExposureModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.doubleClicked.connect(
            lambda idx: self.open_training_image.emit(self.model.rows[idx.row()]["train_idx"]))
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Training images with generated images in a band, most exposed first "
                                "(closest band first). Double-click to see the generated images."))
        layout.addWidget(self.table)

    def set_rows(self, rows: list[dict]) -> None:
        self.model.set_rows(rows)
        self.table.resizeColumnsToContents()
