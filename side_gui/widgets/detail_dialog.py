"""One pair large: generated and nearest training image with linked zoom, the other in-band
training images, and the decision buttons."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
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
    """Zooms with the wheel and keeps its partners at the same zoom."""

    def __init__(self, pixmap: QPixmap) -> None:
        super().__init__()
        self.setScene(QGraphicsScene(self))
        item = QGraphicsPixmapItem(pixmap)
        item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.scene().addItem(item)
        self.partners: list[LinkedView] = []
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setMinimumSize(300, 300)

    def fit(self) -> None:
        self.fitInView(self.scene().itemsBoundingRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def wheelEvent(self, event) -> None:  # noqa: N802
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        self.zoom(factor)

    def zoom(self, factor: float, follow: bool = True) -> None:
        self.scale(factor, factor)
        if follow:
            for view in self.partners:
                view.zoom(factor, follow=False)


def difference(generated: str, training: str, gain: float = 4.0) -> tuple[QPixmap, float]:
    """|generated − training| per pixel (the training image at the generated image's size and
    mode), amplified ``gain``× for the eye, and the mean absolute difference in 0–255 units:
    a copy is near-black, a look-alike lights up where it differs."""
    gen = Image.open(generated)
    gen = gen.convert("RGB" if gen.mode not in ("L",) else "L")
    train = Image.open(training).convert(gen.mode).resize(gen.size, Image.BICUBIC)
    diff = np.abs(np.asarray(gen, dtype=np.int16) - np.asarray(train, dtype=np.int16))
    shown = Image.fromarray(np.clip(diff * gain, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    shown.save(buf, "PNG")
    pix = QPixmap()
    pix.loadFromData(buf.getvalue(), "PNG")
    return pix, float(diff.mean())


class DetailDialog(QDialog):
    decision_made = Signal(list, object)

    def __init__(self, row: dict, generated: str, training: str, others: list[dict], resolve_train,
                 parent=None) -> None:
        super().__init__(parent)
        self.row = row
        self.setWindowTitle(f"{row['method']} λ = {row['lam']:g}, seed {row['seed']} — score {row['best']:.4f}")
        self.generated_pix, self.training_pix = QPixmap(generated), QPixmap(training)
        self.left = LinkedView(self.generated_pix)
        self.right = LinkedView(self.training_pix)
        diff_pix, self.mean_abs_diff = difference(generated, training)
        self.diff = LinkedView(diff_pix)
        views = (self.left, self.right, self.diff)
        for view in views:  # one zoom for the three
            view.partners = [v for v in views if v is not view]
        images = QHBoxLayout()
        self.right_title = QLabel(f"nearest training image: {row['train_path']}")
        for title, view in ((QLabel(f"generated ({row['method']}, λ = {row['lam']:g})"), self.left),
                            (self.right_title, self.right),
                            (QLabel(f"|difference| ×4 — mean {self.mean_abs_diff:.1f} of 255"), self.diff)):
            col = QVBoxLayout()
            col.addWidget(title)
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
        self.blink_button = QPushButton("Blink (B)")
        self.blink_button.setCheckable(True)
        self.blink_button.setToolTip("show the generated image in place of the training image: a copy barely "
                                     "changes, a look-alike jumps")
        self.blink_button.toggled.connect(self.blink)
        QShortcut(QKeySequence("B"), self, activated=self.blink_button.toggle)
        buttons.addWidget(self.blink_button)
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
        self.resize(1100, 640)

    def blink(self, generated: bool) -> None:
        item = self.right.scene().items()[0]
        item.setPixmap(self.generated_pix if generated else self.training_pix)
        self.right_title.setText("generated image (blink)" if generated
                                 else f"nearest training image: {self.row['train_path']}")

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        for view in (self.left, self.right, self.diff):
            view.fit()

    def decide(self, decision: str) -> None:
        self.row["decision"] = decision
        self.status.setText(f"decision: {decision}")
        self.decision_made.emit([self.row["id"]], decision)
