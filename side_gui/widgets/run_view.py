"""The Run view: a progress bar per stage with ETA, a log pane, Start/Resume and Cancel."""

from __future__ import annotations

import time

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from side_engine.stages import STAGES  # the light list: titles and order, no torch


def format_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0:
        return ""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"≈ {seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"≈ {seconds // 60} min {seconds % 60} s"
    return f"≈ {seconds} s"


class RunView(QWidget):
    start_requested = Signal()
    cancel_requested = Signal()
    estimate_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bars: dict[str, QProgressBar] = {}
        self.etas: dict[str, QLabel] = {}
        self._first: dict[str, tuple[float, int]] = {}
        self.rows: dict[str, tuple[QWidget, ...]] = {}
        grid = QGridLayout()
        for row, info in enumerate(STAGES):
            stage = info.name
            title = QLabel(info.title)
            grid.addWidget(title, row, 0)
            bar = QProgressBar()
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("%v / %m")
            grid.addWidget(bar, row, 1)
            eta = QLabel("")
            eta.setMinimumWidth(110)
            grid.addWidget(eta, row, 2)
            self.bars[stage], self.etas[stage] = bar, eta
            self.rows[stage] = (title, bar, eta)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.estimate_button = QPushButton("Estimate duration")
        self.estimate_button.setToolTip("time a short probe of the networks on this device and scale it "
                                        "to the audit's work (runs nothing else)")
        self.start_button.clicked.connect(self.start_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.estimate_button.clicked.connect(self.estimate_requested)
        self.status = QLabel("")
        self.estimate = QLabel("")
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.estimate_button)
        buttons.addWidget(self.estimate)
        buttons.addWidget(self.status, 1)
        self.log_pane = QPlainTextEdit()
        self.log_pane.setReadOnly(True)
        self.log_pane.setMaximumBlockCount(5000)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Log"))
        layout.addWidget(self.log_pane, 1)

    def set_stages(self, names: list[str]) -> None:
        """Show the rows of the stages this audit runs (``side_engine.stages.stage_names``)."""
        for stage, widgets in self.rows.items():
            for w in widgets:
                w.setVisible(stage in names)

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.estimate_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self._first.clear()

    def set_resumable(self, resumable: bool, complete: bool = False) -> None:
        self.start_button.setText("Resume" if resumable else "Start")
        if not self.cancel_button.isEnabled():  # not running
            self.start_button.setEnabled(not complete)
            self.estimate_button.setEnabled(not complete)
        self.start_button.setToolTip("the audit is complete: nothing is left to run (its results are in the "
                                     "other tabs)" if complete else "run the audit; a stopped audit resumes "
                                     "where it stopped")

    # slots for the worker thread's signals: declared, so PySide queues them to this thread
    # (an undeclared receiver of a cross-thread signal is the pattern behind PySide 6.8+ crashes)
    @Slot(str, int, int)
    def on_progress(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            return
        bar.setRange(0, max(total, 1))
        bar.setValue(min(done, max(total, 1)))
        now = time.monotonic()
        first = self._first.setdefault(stage, (now, done))
        rate = (done - first[1]) / max(now - first[0], 1e-9)
        self.etas[stage].setText(format_eta((total - done) / rate) if rate > 0 and done < total else "")

    @Slot(str, float)
    def on_stage_finished(self, stage: str, seconds: float) -> None:
        if stage in self.bars:
            bar = self.bars[stage]
            bar.setValue(bar.maximum())
            self.etas[stage].setText(f"done in {seconds:.0f} s")

    def show_stored(self, stages: list[dict]) -> None:
        """Reflect what the database says (for an audit opened from disk)."""
        for bar in self.bars.values():
            bar.setRange(0, 1)
            bar.setValue(0)
        for label in self.etas.values():
            label.setText("")
        for row in stages:
            if row["name"] in self.bars:
                total = row["total"] or 1
                done = total if row["status"] == "done" else (row["done"] or 0)
                self.bars[row["name"]].setRange(0, total)
                self.bars[row["name"]].setValue(min(done, total))
                if row["status"] == "done" and row["seconds"]:
                    self.etas[row["name"]].setText(f"done in {row['seconds']:.0f} s")
                elif row["status"]:
                    self.etas[row["name"]].setText(row["status"])

    def show_estimate(self, seconds: dict | None, device: str = "", note: str = "") -> None:
        """``seconds``: the engine's per-stage estimate (``total`` included), or None to clear."""
        if not seconds:
            self.estimate.setText("")
            self.estimate.setToolTip("")
            return
        self.estimate.setText(f"{format_eta(seconds['total'])} on {device}{note}")
        names = {"classifier_at_most": "classifier, at most (trains on until it fits its images)"}
        self.estimate.setToolTip("\n".join(f"{names.get(k, k)}: {format_eta(v)}"
                                           for k, v in seconds.items() if k != "total"))

    @Slot(str)
    def append_log(self, text: str) -> None:
        self.log_pane.appendPlainText(text)

    def show_log(self, lines: list[str], started: bool = False) -> None:
        """The workspace's stored log (``run.log``: every run, from the CLI or any app window)."""
        empty = ("(no log stored: this audit ran before SIDE Audit kept run logs in the workspace)" if started
                 else "(no run yet: Start writes its log here and to run.log)")
        text = "\n".join(lines) if lines else empty
        if self.log_pane.toPlainText() != text:
            self.log_pane.setPlainText(text)
            self.log_pane.verticalScrollBar().setValue(self.log_pane.verticalScrollBar().maximum())
