"""The Gallery: (generated | nearest training) pairs, closest first, with the reviewer's decisions.

Model/view: one list model over plain row dicts, a delegate that paints both
thumbnails and the score, and an LRU pixmap cache, so 10 000 pairs cost no
more widgets than ten.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeySequence, QPainter, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from .rows_model import RowsMixin

THUMB = 96
DECISION_KEYS = {"memorised": "M", "not a copy": "N", "unsure": "U"}
DECISION_COLOURS = {"memorised": QColor(200, 40, 40), "not a copy": QColor(40, 150, 60),
                    "unsure": QColor(200, 150, 20)}



class ThumbnailCache:
    """Scaled pixmaps by path, least recently used dropped first."""

    def __init__(self, capacity: int = 2000, size: int = THUMB) -> None:
        self.capacity, self.size = capacity, size
        self._items: OrderedDict[str, QPixmap] = OrderedDict()

    def get(self, path: Path | str) -> QPixmap:
        key = str(path)
        pix = self._items.get(key)
        if pix is not None:
            self._items.move_to_end(key)
            return pix
        img = QImage(key)
        pix = QPixmap.fromImage(img.scaled(self.size, self.size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.FastTransformation)) if not img.isNull() else QPixmap()
        self._items[key] = pix
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return pix

    def __len__(self) -> int:
        return len(self._items)


class GalleryModel(RowsMixin, QAbstractListModel):
    RowRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == self.RowRole:
            return row
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{row['method']} λ={row['lam']:g} score {row['best']:.3f}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"generated: {row['method']}, λ = {row['lam']:g}, seed {row['seed']}\n"
                    f"nearest training image: {row['train_path']}\nscore {row['best']:.4f} ({row['band']})\n"
                    f"decision: {row.get('decision') or '—'}")
        return None

    def update_decisions(self, ids: set[int], decision: str | None) -> None:
        for i, row in enumerate(self.rows):
            if row["id"] in ids:
                row["decision"] = decision
                idx = self.index(i)
                self.dataChanged.emit(idx, idx)


class PairDelegate(QStyledItemDelegate):
    def __init__(self, resolve, parent=None) -> None:
        super().__init__(parent)
        self.resolve = resolve  # row -> (generated path, training path)
        self.cache = ThumbnailCache()

    def sizeHint(self, option, index) -> QSize:  # noqa: N802
        return QSize(2 * THUMB + 18, THUMB + 40)

    def paint(self, painter: QPainter, option, index) -> None:
        row = index.data(GalleryModel.RowRole)
        painter.save()
        r = option.rect
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(r, option.palette.highlight())
        gen, train = self.resolve(row)
        for k, path in enumerate((gen, train)):
            pix = self.cache.get(path)
            target = QRect(r.x() + 4 + k * (THUMB + 8), r.y() + 4, THUMB, THUMB)
            if not pix.isNull():
                painter.drawPixmap(target, pix)
            else:
                painter.drawRect(target)
        decision = row.get("decision")
        if decision:
            painter.fillRect(QRect(r.x() + 2, r.y() + THUMB + 8, 6, 26), DECISION_COLOURS[decision])
        painter.drawText(QRect(r.x() + 12, r.y() + THUMB + 6, r.width() - 14, 16), Qt.AlignmentFlag.AlignLeft,
                         f"{row['band']}  {row['best']:.3f}")
        painter.drawText(QRect(r.x() + 12, r.y() + THUMB + 21, r.width() - 14, 16), Qt.AlignmentFlag.AlignLeft,
                         f"{row['method']} λ={row['lam']:g}" + (f"  · {decision}" if decision else ""))
        painter.restore()


class GalleryView(QWidget):
    """Filters, the pair list, and decision buttons with shortcuts (M, N, U; bulk on a selection)."""

    decision_made = Signal(list, object)  # sample ids, decision (None clears)
    open_detail = Signal(dict)
    filters_changed = Signal(dict)

    def __init__(self, resolve, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = GalleryModel(self)
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setUniformItemSizes(True)
        self.view.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.view.setModel(self.model)
        self.delegate = PairDelegate(resolve, self.view)
        self.view.setItemDelegate(self.delegate)
        self.view.doubleClicked.connect(lambda idx: self.open_detail.emit(idx.data(GalleryModel.RowRole)))
        self.band = QComboBox()
        self.band.addItems(["all bands", "high", "mid", "low"])
        self.method = QComboBox()
        self.method.addItems(["all methods", "random", "side", "ti"])
        self.lam = QComboBox()
        self.lam.addItem("all λ")
        self.train_filter: int | None = None
        self.train_label = QLabel("")
        clear_train = QPushButton("all training images")
        clear_train.clicked.connect(lambda: self.set_train_filter(None))
        for combo in (self.band, self.method, self.lam):
            combo.currentIndexChanged.connect(lambda _: self.filters_changed.emit(self.filters()))
        self.count = QLabel("")
        bar = QHBoxLayout()
        for w in (QLabel("Band"), self.band, QLabel("Method"), self.method, QLabel("λ"), self.lam,
                  self.train_label, clear_train):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.count)
        decide = QHBoxLayout()
        self.buttons = {}
        for decision, key in DECISION_KEYS.items():
            b = QPushButton(f"{decision} ({key})")
            b.clicked.connect(lambda _=False, d=decision: self.decide(d))
            decide.addWidget(b)
            self.buttons[decision] = b
            QShortcut(QKeySequence(key), self.view, activated=lambda d=decision: self.decide(d))
        clear = QPushButton("clear decision (Del)")
        clear.clicked.connect(lambda: self.decide(None))
        QShortcut(QKeySequence(Qt.Key.Key_Delete), self.view, activated=lambda: self.decide(None))
        decide.addWidget(clear)
        decide.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        layout.addLayout(decide)

    # -- filters -------------------------------------------------------------------
    def filters(self) -> dict:
        band = self.band.currentText()
        method = self.method.currentText()
        lam = self.lam.currentText()
        return {"band": None if band.startswith("all") else band,
                "method": None if method.startswith("all") else method,
                "lam": None if lam.startswith("all") else float(lam), "train_idx": self.train_filter}

    def set_filters(self, f: dict) -> None:
        for combo, value in ((self.band, f.get("band")), (self.method, f.get("method"))):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(0, combo.findText(value)) if value else 0)
            combo.blockSignals(False)
        self.lam.blockSignals(True)
        lam = f.get("lam")
        self.lam.setCurrentIndex(max(0, self.lam.findText(f"{lam:g}")) if lam is not None else 0)
        self.lam.blockSignals(False)
        self.train_filter = f.get("train_idx")
        self.train_label.setText(f"training image #{self.train_filter}" if self.train_filter is not None else "")

    def set_train_filter(self, idx: int | None) -> None:
        self.train_filter = idx
        self.train_label.setText(f"training image #{idx}" if idx is not None else "")
        self.filters_changed.emit(self.filters())

    def set_lambdas(self, lambdas: list[float]) -> None:
        current = self.lam.currentText()
        self.lam.blockSignals(True)
        self.lam.clear()
        self.lam.addItem("all λ")
        self.lam.addItems([f"{v:g}" for v in sorted(set(lambdas))])
        self.lam.setCurrentIndex(max(0, self.lam.findText(current)))
        self.lam.blockSignals(False)

    def set_rows(self, rows: list[dict], total: int | None = None) -> None:
        self.model.set_rows(rows)
        if total is not None and total > len(rows):
            self.count.setText(f"the {len(rows):,} closest of {total:,} pairs: narrow the filters for the rest")
        else:
            self.count.setText(f"{len(rows):,} pairs")

    # -- decisions -----------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        return [i.data(GalleryModel.RowRole)["id"] for i in self.view.selectionModel().selectedIndexes()]

    def decide(self, decision: str | None) -> None:
        ids = self.selected_ids()
        if ids:
            self.decision_made.emit(ids, decision)
