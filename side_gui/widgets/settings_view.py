"""An audit's settings in the app, as a form generated from the settings model.

Names, sections, help texts, choices and validation all come from
``side_engine.config.AuditConfig`` — the same model that writes and reads ``audit.toml`` —
so the form cannot drift from the file. Values are turned back into TOML and read with the
engine's own ``loads`` and ``validate``: a bad value gets the CLI's message and nothing is
written. Once the audit has started, settings that change results are read-only (changing
them would mix two audits in one workspace); the run settings that may change between a stop
and a resume stay editable.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from side_engine import config
from side_engine.errors import SideError


def _automatic_when_zero(field: dataclasses.Field, default) -> bool:
    """Settings where 0 asks the run to choose (k, widths, batch size, threads …): shown empty,
    with what was chosen as the placeholder, instead of a bare 0 that reads like a value."""
    return bool(field.metadata.get("automatic"))


class SettingsView(QWidget):
    saved = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = None
        self.started = False
        self.changeable: frozenset[str] = config.RESUMABLE_CHANGES  # what a started audit may change
        self._resolved_values: dict = {}  # what the run chose for the automatic settings
        self.editors: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        self.unused: dict[str, str] = {}  # idle under the form's current values, with why
        self.automatic: set[str] = set()  # settings where 0 lets the run choose
        body = QWidget()
        column = QVBoxLayout(body)
        forms: dict[str, QFormLayout] = {}
        for f in dataclasses.fields(config.AuditConfig):
            section = f.metadata["section"]
            if section not in forms:
                box = QGroupBox(f"[{section}]")
                forms[section] = QFormLayout(box)
                column.addWidget(box)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.metadata.get("choices"):
                editor = QComboBox()
                editor.addItems(list(f.metadata["choices"]))
            elif isinstance(default, bool):
                editor = QCheckBox()
            else:
                editor = QLineEdit()
                if _automatic_when_zero(f, default):
                    self.automatic.add(f.name)
                    editor.setPlaceholderText("automatic (0)")
            editor.setToolTip(f"{f.metadata['help']}\n(default: {config.toml_value(default)})")
            label = QLabel(f.name)
            label.setToolTip(editor.toolTip())
            forms[section].addRow(label, editor)
            self.editors[f.name] = editor
            self.labels[f.name] = label
        # the settings that decide which others are used (config.DECIDING): re-mark as they change
        for name in config.DECIDING:
            editor = self.editors[name]
            signal = editor.currentTextChanged if isinstance(editor, QComboBox) else editor.editingFinished
            signal.connect(self._mark_unused)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.state = QLabel("")
        self.state.setWordWrap(True)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020")
        self.save_button = QPushButton("Save to audit.toml")
        self.save_button.clicked.connect(self.save)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(self.load)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.error, 1)
        self.resolved = QLabel("")
        self.resolved.setWordWrap(True)
        self.idle_note = QLabel("")  # says what the greyed names mean, while there are any
        self.idle_note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.state)
        layout.addWidget(self.resolved)
        layout.addWidget(self.idle_note)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)

    # -- values <-> editors ---------------------------------------------------------------
    def set_workspace(self, workspace, started: bool, resolved: dict | None = None,
                      movable: frozenset[str] = frozenset()) -> None:
        """``resolved``: what the run chose for the automatic settings (0 = auto), as stored.
        ``movable``: the folders a started audit may point elsewhere (``config.movable``: the run
        verifies their content against its record before any stage and refuses another one)."""
        self.workspace, self.started = workspace, started
        self.changeable = config.RESUMABLE_CHANGES | (movable if started else frozenset())
        self._resolved_values = dict(resolved or {})
        self.resolved.setText("<b>Resolved at run time:</b> " + ", ".join(f"{k} = {v}" for k, v in resolved.items())
                              if resolved else "")
        self.resolved.setVisible(bool(resolved))
        self.load()

    def load(self) -> None:
        self.error.setText("")
        try:
            cfg = self.workspace.load_config()
        except SideError as e:
            self.error.setText(str(e))
            return
        for f in dataclasses.fields(cfg):
            value, editor = getattr(cfg, f.name), self.editors[f.name]
            if isinstance(editor, QComboBox):
                editor.setCurrentText(str(value))
            elif isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif value == 0 and f.name in self.automatic:  # say so, and what the run chose
                editor.setText("")
                chosen = self._resolved_values.get(f.name)
                editor.setPlaceholderText(f"automatic: {chosen}" if chosen is not None else "automatic (0)")
            else:
                editor.setText(value if isinstance(value, str) else config.toml_value(value))
            fixed = self.started and f.name not in self.changeable
            editor.setEnabled(not fixed)
        self._mark_unused()
        self.state.setText(
            "The audit has started: settings that change results are read-only (a change would mix two audits "
            "in one workspace; start a new audit instead). Run settings ("
            + ", ".join(sorted(config.RESUMABLE_CHANGES)) + ") may change before a resume" + (
                ", and the model or training folder may point to where it lies now (the run checks it holds the "
                "same files)." if self.changeable - config.RESUMABLE_CHANGES else ".") if self.started else
            "Settings of this audit, as in its audit.toml; hover a name for what it does and its default. "
            "Saved settings take effect when the audit starts.")

    def _mark_unused(self) -> None:
        """Grey the names of settings the form's values leave idle (``AuditConfig.unused_settings``);
        their editors stay editable, since a later change may use them again."""
        try:
            self.unused = config.loads(self.toml_text(), source="settings form").unused_settings()
        except SideError:
            return  # a value that does not parse yet: keep the last marking
        for name, label in self.labels.items():
            why = self.unused.get(name)
            label.setEnabled(not why)  # drawn in the palette's disabled colour; its tooltip still shows
            tip = self.editors[name].toolTip()
            label.setToolTip(f"Not used: {why}.\n\n{tip}" if why else tip)
        self.idle_note.setText(f"Names in grey ({len(self.unused)}) are not used by these settings; hover one for "
                               "why." if self.unused else "")
        self.idle_note.setVisible(bool(self.unused))

    def toml_text(self) -> str:
        """The form as audit.toml text (every setting, in its section)."""
        lines, section = [], None
        for f in dataclasses.fields(config.AuditConfig):
            if f.metadata["section"] != section:
                section = f.metadata["section"]
                lines.append(f"[{section}]")
            editor = self.editors[f.name]
            if isinstance(editor, QComboBox):
                literal = json.dumps(editor.currentText())
            elif isinstance(editor, QCheckBox):
                literal = "true" if editor.isChecked() else "false"
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                text = editor.text().strip() or ("0" if f.name in self.automatic else "")
                literal = json.dumps(text, ensure_ascii=False) if isinstance(default, str) else (text or '""')
                try:
                    tomllib.loads(f"v = {literal}")
                except tomllib.TOMLDecodeError:
                    raise SideError(f"setting '{f.name}' = {text!r}: not a value; write it as in audit.toml "
                                    f"(e.g. {config.toml_value(default)})") from None
            lines.append(f"{f.name} = {literal}")
        return "\n".join(lines) + "\n"

    def save(self) -> bool:
        """Validate with the engine's own rules; write only a valid whole."""
        self.error.setText("")
        try:
            text = self.toml_text()
            cfg = config.loads(text, source="settings form")
            cfg.validate()
            if self.started:
                stored = self.workspace.load_config()
                changed = [k for k, v in cfg.to_dict().items()
                           if k not in self.changeable and getattr(stored, k) != v]
                if changed:
                    raise SideError(f"the audit has started: {', '.join(changed)} cannot change")
            self.workspace.write_config(cfg, overwrite=True)
        except SideError as e:
            self.error.setText(str(e))
            return False
        self.error.setText("")
        self.state.setText(self.state.text().split(" Saved.")[0] + " Saved.")
        self.saved.emit()
        return True
