"""What a newcomer sees with no audit selected: the three ways in, and the recent audits."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget


class WelcomeView(QWidget):
    demo_requested = Signal()
    new_requested = Signal()
    open_requested = Signal()
    recent_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("<h2>SIDE Audit</h2>")
        intro = QLabel(
            "Audit an unconditional diffusion model for training images it can reproduce. An audit "
            "trains classifiers on the training set, samples the model with and without classifier "
            "guidance, compares every generated image with every training image and reports how many "
            "training images were reproduced, with 95 % intervals and a paired comparison with the "
            "model's own sampler.")
        intro.setWordWrap(True)
        self.demo_button = QPushButton("Open the demo audit")
        self.demo_button.setToolTip("a small face model that memorised some of its 32 training faces; the audit "
                                    "runs in about 9 minutes on two CPU cores (seconds on a GPU) and its "
                                    "results appear as they are produced")
        self.new_button = QPushButton("New audit…")
        self.new_button.setToolTip("your own checkpoint (a diffusers folder) and its training images")
        self.open_button = QPushButton("Open workspace…")
        self.open_button.setToolTip("a folder holding an audit.toml, e.g. one made with side-audit init")
        for button, signal in ((self.demo_button, self.demo_requested), (self.new_button, self.new_requested),
                               (self.open_button, self.open_requested)):
            button.setMinimumHeight(36)
            button.clicked.connect(signal)
        self.recent = QListWidget()
        self.recent.itemActivated.connect(lambda item: self.recent_chosen.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.recent_label = QLabel("Recent audits (double-click to open)")
        column = QVBoxLayout()
        column.addWidget(title)
        column.addWidget(intro)
        column.addSpacing(12)
        for b in (self.demo_button, self.new_button, self.open_button):
            column.addWidget(b)
        column.addSpacing(12)
        column.addWidget(self.recent_label)
        column.addWidget(self.recent, 1)
        box = QWidget()
        box.setLayout(column)
        box.setMaximumWidth(640)
        outer = QVBoxLayout(self)
        outer.addWidget(box, 1, Qt.AlignmentFlag.AlignHCenter)

    def set_recent(self, workspaces: list[str]) -> None:
        self.recent.clear()
        for ws in workspaces:
            item = QListWidgetItem(f"{Path(ws).name} — {ws}")
            item.setData(Qt.ItemDataRole.UserRole, ws)
            self.recent.addItem(item)
        self.recent_label.setVisible(bool(workspaces))
        self.recent.setVisible(bool(workspaces))
