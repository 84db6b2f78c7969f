"""New audit: pick the checkpoint and the training folder, see what they hold, choose settings.

Defaults and choices come from the engine's :class:`AuditConfig`; every field
is validated by the engine before Start is enabled.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from side_engine.checkpoint import WEIGHTS, describe_checkpoint, inspect_checkpoint
from side_engine.config import LABEL_SOURCES, SCORERS, AuditConfig
from side_engine.devices import device_choices
from side_engine.errors import SideError
from side_engine.training_set import list_images

THUMBS = 8


class NewAuditDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New audit")
        d = AuditConfig()
        self.workspace = QLineEdit()
        self.checkpoint = QLineEdit()
        self.train_data = QLineEdit()
        self.model_info = QLabel("choose the model folder")
        self.data_info = QLabel("choose the training-image folder")
        for label in (self.model_info, self.data_info):
            label.setWordWrap(True)
        self.thumbs = QHBoxLayout()
        self.label_source = QComboBox()
        self.label_source.addItems(LABEL_SOURCES)
        self.label_source.setCurrentText(d.label_source)
        self.lambdas = QLineEdit(", ".join(f"{v:g}" for v in d.lambdas))
        self.n_per_lambda = QSpinBox()
        self.n_per_lambda.setRange(1, 10_000_000)
        self.n_per_lambda.setValue(d.n_per_lambda)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(d.steps)
        self.scorer = QComboBox()
        self.scorer.addItems(SCORERS)
        self.weights = QComboBox()
        self.weights.addItems(WEIGHTS)
        self.weights.setToolTip("which UNet weights to audit where the folder has both: auto = EMA where present")
        self.weights.currentTextChanged.connect(lambda _: (self._inspect_model(), self.validate()))
        self.device = QComboBox()
        for label, settings in device_choices():
            self.device.addItem(label, settings)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Workspace folder", self._with_browse(self.workspace))
        form.addRow("Checkpoint folder", self._with_browse(self.checkpoint))
        form.addRow("", self.model_info)
        form.addRow("UNet weights", self.weights)
        form.addRow("Training images", self._with_browse(self.train_data))
        form.addRow("", self.data_info)
        form.addRow("", self.thumbs)
        form.addRow("Label source", self.label_source)
        form.addRow("λ grid", self.lambdas)
        form.addRow("Samples per λ (N_G)", self.n_per_lambda)
        form.addRow("Sampler steps", self.steps)
        form.addRow("Scorer", self.scorer)
        form.addRow("Device", self.device)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Create")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.checkpoint.textChanged.connect(self._inspect_model)
        self.train_data.textChanged.connect(self._inspect_data)
        for w in (self.workspace, self.checkpoint, self.train_data, self.lambdas):
            w.textChanged.connect(self.validate)
        self.validate()

    def _with_browse(self, edit: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        b = QPushButton("Browse…")
        b.clicked.connect(lambda: self._browse(edit))
        row.addWidget(b)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text() or str(Path.home()))
        if path:
            edit.setText(path)

    def _inspect_model(self, text: str | None = None) -> None:
        """What the folder holds — pixel or latent, latent shape, autoencoder, EMA or raw weights."""
        text = self.checkpoint.text() if text is None else text
        try:
            info = inspect_checkpoint(text, weights=self.weights.currentText())
        except SideError as e:
            self.model_info.setText(f"✗ {e}")
            self._model_ok = False
            return
        self.model_info.setText(f"✓ {describe_checkpoint(info)}")
        self._model_ok = True

    def _inspect_data(self, text: str) -> None:
        while self.thumbs.count():
            item = self.thumbs.takeAt(0)
            if item.widget():  # hidden now: deleteLater waits for the event loop, and until then the
                item.widget().hide()  # widget would stay drawn where it was, over the new ones
                item.widget().deleteLater()
        try:
            files = list_images(Path(text).expanduser())
        except SideError as e:
            self.data_info.setText(f"✗ {e}")
            return
        unreadable = 0
        for i, f in enumerate(files):
            pix = QPixmap(str(f))
            if pix.isNull():
                unreadable += 1
            elif i < THUMBS * 4 and self.thumbs.count() < THUMBS:
                label = QLabel()
                label.setPixmap(pix.scaled(48, 48, Qt.AspectRatioMode.KeepAspectRatio))
                label.setToolTip(f.name)
                self.thumbs.addWidget(label)
            if i >= 2000:  # enough for a preview; the import stage reports every file
                break
        self.data_info.setText(f"✓ {len(files)} image files" + (f", {unreadable} unreadable (reported and "
                                                               "skipped by the import)" if unreadable else ""))

    def config(self) -> AuditConfig:
        try:
            lambdas = [float(v) for v in self.lambdas.text().replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise SideError(f"λ grid {self.lambdas.text()!r}: numbers separated by commas") from None
        cfg = AuditConfig(
            checkpoint=self.checkpoint.text().strip(), train_data=self.train_data.text().strip(),
            label_source=self.label_source.currentText(),
            lambdas=[int(v) if v.is_integer() else v for v in lambdas], n_per_lambda=self.n_per_lambda.value(),
            steps=self.steps.value(), scorer=self.scorer.currentText(), weights=self.weights.currentText(),
            **self.device.currentData())
        cfg.validate()
        return cfg

    def validate(self) -> bool:
        ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        try:
            if not self.workspace.text().strip():
                raise SideError("choose a workspace folder for the audit")
            if (Path(self.workspace.text()).expanduser() / "audit.toml").exists():
                raise SideError("that workspace already holds an audit; open it instead")
            self.config()
            inspect_checkpoint(self.checkpoint.text().strip(), weights=self.weights.currentText())
            list_images(Path(self.train_data.text().strip()).expanduser())
        except SideError as e:
            self.error.setText(str(e))
            ok_button.setEnabled(False)
            return False
        self.error.setText("")
        ok_button.setEnabled(True)
        return True

    def accept(self) -> None:
        if not self.validate():
            return
        from side_engine.audit import init_workspace

        cfg = self.config()
        try:
            init_workspace(self.workspace.text().strip(), cfg.checkpoint, cfg.train_data,
                           **{k: getattr(cfg, k) for k in ("label_source", "lambdas", "n_per_lambda", "steps",
                                                           "scorer", "device", "processes",
                                                           "weights")})
        except SideError as e:
            self.error.setText(str(e))
            return
        super().accept()

    def created_workspace(self) -> str:
        return str(Path(self.workspace.text().strip()).expanduser().resolve())
