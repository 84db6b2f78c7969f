"""One pair large: generated and nearest training image with linked zoom, the other in-band
training images, and the decision buttons."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from .gallery import DECISION_KEYS


class LinkedView(QGraphicsView):
    """Zooms with the wheel and keeps its partner at the same zoom and position."""

    def __init__(self, pixmap: QPixmap) -> None:
        super().__init__()
        self.setScene(QGraphicsScene(self))
        item = QGraphicsPixmapItem(pixmap)
        item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.scene().addItem(item)
        self.partner: LinkedView | None = None
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setMinimumSize(300, 300)

    def fit(self) -> None:
        self.fitInView(self.scene().itemsBoundingRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def wheelEvent(self, event) -> None:  # noqa: N802
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        self.zoom(factor)

    def zoom(self, factor: float, follow: bool = True) -> None:
        self.scale(factor, factor)
        if follow and self.partner is not None:
            self.partner.zoom(factor, follow=False)


class DetailDialog(QDialog):
    decision_made = Signal(list, object)

    def __init__(self, row: dict, generated: str, training: str, others: list[dict], resolve_train,
                 parent=None) -> None:
        super().__init__(parent)
        self.row = row
        self.setWindowTitle(f"{row['method']} λ = {row['lam']:g}, seed {row['seed']} — score {row['best']:.4f}")
        self.left = LinkedView(QPixmap(generated))
        self.right = LinkedView(QPixmap(training))
        self.left.partner, self.right.partner = self.right, self.left
        images = QHBoxLayout()
        for title, view in ((f"generated ({row['method']}, λ = {row['lam']:g})", self.left),
                            (f"nearest training image: {row['train_path']}", self.right)):
            col = QVBoxLayout()
            col.addWidget(QLabel(title))
            col.addWidget(view)
            images.addLayout(col)
        self.others = QListWidget()
        for m in others:
            item = QListWidgetItem(f"#{m['train_idx']}  {m['path']}  score {m['score']:.4f}")
            pix = QPixmap(str(resolve_train(m["path"])))
            if not pix.isNull():
                item.setIcon(pix.scaled(48, 48))
            self.others.addItem(item)
        buttons = QHBoxLayout()
        self.status = QLabel(f"decision: {row.get('decision') or '—'}")
        for decision, key in DECISION_KEYS.items():
            b = QPushButton(f"{decision} ({key})")
            b.clicked.connect(lambda _=False, d=decision: self.decide(d))
            buttons.addWidget(b)
            QShortcut(QKeySequence(key), self, activated=lambda d=decision: self.decide(d))
        buttons.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(images, 1)
        layout.addWidget(QLabel("All training images in a band for this generated image"))
        layout.addWidget(self.others)
        layout.addLayout(buttons)
        self.resize(820, 640)

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self.left.fit()
        self.right.fit()

    def decide(self, decision: str) -> None:
        self.row["decision"] = decision
        self.status.setText(f"decision: {decision}")
        self.decision_made.emit([self.row["id"]], decision)
