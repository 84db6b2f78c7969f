"""The verdict first: what was reproduced, SIDE against Random, how well guidance steered, the
training images most at risk beside their closest copies, and where the numbers came from.

Every sentence is the engine's (``side_engine.report.headline``), the same the report opens
with, so the app and the report cannot disagree.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from side_engine.results import on_target_meaning

from .gallery import ThumbnailCache

THUMB = 112


class SummaryView(QScrollArea):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        body = QWidget()
        self.layout_ = QVBoxLayout(body)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        self.steering = QLabel()
        self.steering.setWordWrap(True)
        self.warnings = QLabel()
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #b00020")
        self.risk_title = QLabel("<b>Training images most at risk</b> — each beside its closest generated image "
                                 "(double-click a row in <i>Training images at risk</i> for all of them)")
        self.risk_title.setWordWrap(True)
        self.risk_grid = QGridLayout()
        self.provenance_button = QToolButton()
        self.provenance_button.setText("Provenance ▸")
        self.provenance_button.setCheckable(True)
        self.provenance = QLabel()
        self.provenance.setWordWrap(True)
        self.provenance.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.provenance.setVisible(False)
        self.provenance_button.toggled.connect(self._fold)
        for w in (self.verdict, self.steering, self.warnings, self.risk_title):
            self.layout_.addWidget(w)
        self.layout_.addLayout(self.risk_grid)
        self.layout_.addWidget(self.provenance_button)
        self.layout_.addWidget(self.provenance)
        self.layout_.addStretch(1)
        self.setWidget(body)
        self.sentences: list[str] = []
        self.at_risk: list[dict] = []
        self.thumbs = ThumbnailCache(size=THUMB)  # the gallery's scaled-pixmap cache

    def _fold(self, shown: bool) -> None:
        self.provenance.setVisible(shown)
        self.provenance_button.setText("Provenance ▾" if shown else "Provenance ▸")

    def set_data(self, data: dict, exposure: list[dict], bands, train_path: Callable[[str], Path],
                 workspace_file: Callable[[str], Path], top: int = 8) -> None:
        from side_engine.report import headline

        audit = data.get("audit") or {}
        if not data.get("rows"):
            self.verdict.setText("<i>No results yet: the verdict appears here when the audit has generated and "
                                 "scored images.</i>")
            self.sentences = []
        else:
            self.sentences = headline(dict(data, warnings=[]), exposure, int(audit.get("n_train") or 0), bands)
            first, rest = self.sentences[0], self.sentences[1:]
            self.verdict.setText(f"<h3>Verdict</h3><p><b>{html.escape(first)}</b></p>"
                                 + "".join(f"<p>{html.escape(s)}</p>" for s in rest))
        steer = [s for s in data.get("summary", []) if s.get("target_accuracy") is not None]
        on = {(s["method"], s["lambda"]): s for s in data.get("summary", []) if s.get("on_target") is not None}

        def reached(s: dict) -> str:
            r = on.get((s["method"], s["lambda"]))
            if r is None:
                return ""
            return (f"on target {100 * r['on_target']:.1f} % [{100 * r['on_target_lo']:.1f}, "
                    f"{100 * r['on_target_hi']:.1f}], ")

        rnd = on.get(("random", 0.0))
        chance = (f" Random, scored against the same targets: {100 * rnd['on_target']:.1f} % "
                  f"[{100 * rnd['on_target_lo']:.1f}, {100 * rnd['on_target_hi']:.1f}] (chance).") if rnd else ""
        self.steering.setText(
            "<b>Did guidance reach its targets?</b> " + on_target_meaning(data.get("on_target_by"))
            + " Steered: the TD classifier's own verdict (a diagnostic). 95 % intervals. "
            + "; ".join(f"{s['method'].upper()} λ = {s['lambda']:g}: {reached(s)}steered "
                        f"{100 * s['target_accuracy']:.1f} % [{100 * s['target_accuracy_lo']:.1f}, "
                        f"{100 * s['target_accuracy_hi']:.1f}]" for s in steer) + "." + chance
            if steer else "")
        check = data.get("guide_check") or {}
        if check.get("timesteps"):
            pts = list(zip(check["timesteps"], check["smoothed"], check["weights"]))
            picks = [pts[-1], pts[len(pts) // 2], pts[0]]  # low, middle and high noise
            probe = check.get("probe") or {}
            self.steering.setText(self.steering.text() + "<br><b>Guide check</b> (before sampling): TD agreement "
                                  + ", ".join(f"t = {t}: {100 * a:.0f} % (weight {w:.2f})" for t, a, w in picks)
                                  + f"; chance {100 * check['chance']:.1f} %."
                                  + (f" Probe of {probe['n']} at λ = {probe['lam']:g}: on target "
                                     f"{probe['on_target_guided']} guided vs {probe['on_target_unguided']} unguided."
                                     if probe.get("n") and probe.get("on_target_defined", True) else "")
                                  + (f" Half of the model's own probe samples had settled on their training image by "
                                     f"t = {probe['settled_t']}"
                                     + (": guidance stopped there." if (data.get("audit") or {}).get("config", {})
                                        .get("guidance_stop") == "settled" else ".")
                                     if probe.get("settled_t") is not None and probe["settled_t"] >= 0 else ""))
        self.steering.setVisible(bool(steer))
        warnings = data.get("warnings") or []
        self.warnings.setText("".join(f"<p>⚠ {html.escape(w)}</p>" for w in warnings))
        self.warnings.setVisible(bool(warnings))
        self._fill_risk(exposure[:top], [b.name for b in bands], train_path, workspace_file)
        self.provenance.setText(self._provenance(audit))

    def _fill_risk(self, rows: list[dict], band_names: list[str], train_path, workspace_file) -> None:
        while self.risk_grid.count():
            item = self.risk_grid.takeAt(0)
            if item.widget():  # hidden now: deleteLater waits for the event loop, and until then the
                item.widget().hide()  # widget would stay drawn where it was, over the new ones
                item.widget().deleteLater()
        self.at_risk = rows
        self.risk_title.setVisible(bool(rows))
        for i, e in enumerate(rows):
            r, c = divmod(i, 2)
            train = QLabel()
            train.setPixmap(self.thumbs.get(train_path(e["path"])))
            train.setToolTip(f"training image {e['path']}")
            copy = QLabel()
            png = e.get("best_png")
            copy.setPixmap(self.thumbs.get(workspace_file(png)) if png else QPixmap())
            copy.setToolTip("its closest generated image")
            counts = ", ".join(f"{b} {e[b]}" for b in reversed(band_names))
            caption = QLabel(f"<b>{html.escape(e['path'])}</b><br>matched by {e['total']} generated images"
                             f"<br>({counts})<br>closest: {e['best_score']:.3f}")
            caption.setWordWrap(True)
            self.risk_grid.addWidget(train, r, 3 * c)
            self.risk_grid.addWidget(copy, r, 3 * c + 1)
            self.risk_grid.addWidget(caption, r, 3 * c + 2)

    @staticmethod
    def _provenance(audit: dict) -> str:
        if not audit:
            return ""
        versions = audit.get("versions")
        if isinstance(versions, str):
            versions = json.loads(versions)
        rows = [("started", audit.get("created")), ("checkpoint", audit.get("checkpoint_path")),
                ("checkpoint SHA-256", audit.get("checkpoint_sha256")), ("model", audit.get("model")),
                ("training data", audit.get("train_path")),
                ("training images", audit.get("n_train")), ("training-set fingerprint", audit.get("train_fingerprint")),
                ("device", audit.get("device")),
                ("scorer", f"{audit.get('scorer')} {audit.get('scorer_source') or ''}"),
                ("versions", ", ".join(f"{k} {v}" for k, v in (versions or {}).items()))]
        return "<table>" + "".join(f"<tr><td><b>{html.escape(k)}</b>&nbsp;</td><td>{html.escape(str(v))}</td></tr>"
                                   for k, v in rows if v not in (None, "")) + "</table>"
