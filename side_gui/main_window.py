"""The main window: audits on the left; Run, Results, Gallery and At-risk views on the right."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QTabWidget,
    QWidget,
)

from side_engine import config
from side_engine.errors import SideError
from side_engine.progress import read_log
from side_engine.results.store import GALLERY_LIMIT, AuditStore
from side_engine.stages import stage_names

from .settings import AppSettings
from .widgets.detail_dialog import DetailDialog
from .widgets.gallery import GalleryView
from .widgets.new_audit_dialog import NewAuditDialog
from .widgets.results_view import ResultsView
from .widgets.risk_view import RiskView
from .widgets.run_view import RunView
from .widgets.settings_view import SettingsView
from .widgets.summary_view import SummaryView
from .widgets.welcome_view import WelcomeView
from .workers import AuditWorker, EstimateWorker, ExportWorker, LiveMetricsWorker


class MainWindow(QMainWindow):
    def __init__(self, settings: AppSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("SIDE Audit")
        self.resize(1280, 820)
        self.settings = settings or AppSettings.load()
        self.store: AuditStore | None = None
        self.worker: AuditWorker | None = None
        self.estimate_worker: EstimateWorker | None = None
        # live tables of an unfinished audit: computed off the window's thread, at most a fifth
        # of the time (every interval over every stored sample takes seconds at the paper's scale)
        self.live_worker: LiveMetricsWorker | None = None
        self._live: dict[str, dict] = {}
        self._live_due = 0.0
        self.export_worker: ExportWorker | None = None
        self._estimate_root: Path | None = None  # the audit the running probe is for
        self.confirm_close = self._ask_close  # tests replace this
        self.audits = QListWidget()
        self.audits.currentItemChanged.connect(self._on_select)
        dock = QDockWidget("Audits", self)
        dock.setObjectName("audits")
        dock.setWidget(self.audits)
        dock.setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.run_view = RunView()
        self.summary = SummaryView()
        self.settings_view = SettingsView()
        self.results_view = ResultsView()
        self.gallery = GalleryView(self._resolve_pair)
        self.risk = RiskView(self._train_path, self._workspace_file)
        self.tabs = QTabWidget()
        for view, title in ((self.summary, "Summary"), (self.run_view, "Run"), (self.results_view, "Results"),
                            (self.gallery, "Gallery"), (self.risk, "Training images at risk"),
                            (self.settings_view, "Settings")):
            self.tabs.addTab(view, title)
        self.tabs.currentChanged.connect(self._on_tab)
        # live results waiting for their view to be shown (view -> how to fill it)
        self._pending: dict[QWidget, Callable[[], None]] = {}
        self._live_shown: dict | None = None  # the live result the views show
        # with no audit selected: what to do (the demo, a new audit, a workspace, recent ones)
        self.welcome = WelcomeView()
        self.welcome.demo_requested.connect(self.open_demo)
        self.welcome.new_requested.connect(self.new_audit)
        self.welcome.open_requested.connect(self.open_dialog)
        self.welcome.recent_chosen.connect(self.open_workspace)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.tabs)
        self.setCentralWidget(self.pages)
        self.run_view.start_requested.connect(self.start_run)
        self.run_view.cancel_requested.connect(self.cancel_run)
        self.run_view.estimate_requested.connect(self.estimate_run)
        self.gallery.filters_changed.connect(self._on_filters)
        self.gallery.decision_made.connect(self.record_decision)
        self.gallery.open_detail.connect(self.open_detail)
        self.risk.open_training_image.connect(self._show_training_image)
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(1500)
        self.refresh_timer.timeout.connect(self.refresh_views)
        self._build_menu()
        self.statusBar()
        self._fill_audits()
        self._show_page()
        if self.settings.current and (Path(self.settings.current) / "audit.toml").exists():
            self.open_workspace(self.settings.current)  # reopening restores the last audit and its filters

    # -- menu ------------------------------------------------------------------------
    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in (("&New audit…", QKeySequence.StandardKey.New, self.new_audit),
                                     ("&Open workspace…", QKeySequence.StandardKey.Open, self.open_dialog),
                                     ("&Export report…", None, self.export_report),
                                     ("&Quit", QKeySequence.StandardKey.Quit, self.close)):
            action = QAction(text, self)
            if shortcut:
                action.setShortcut(shortcut)
            action.triggered.connect(slot)
            file_menu.addAction(action)
            if slot == self.export_report:
                self.export_action = action

    # -- audits list -------------------------------------------------------------------
    def _fill_audits(self) -> None:
        self.audits.blockSignals(True)
        self.audits.clear()
        for ws in self.settings.recent:
            status = AuditStore(ws)
            try:
                text = status.status()
            except SideError:
                text = "unreadable"
            finally:
                status.close()
            item = QListWidgetItem(f"{Path(ws).name}\n{text}")
            item.setData(Qt.ItemDataRole.UserRole, ws)
            item.setToolTip(ws)
            self.audits.addItem(item)
        self.audits.blockSignals(False)
        self.welcome.set_recent(self.settings.recent)

    def _show_page(self) -> None:
        """The welcome page until an audit is selected; buttons that cannot act say why."""
        has_audit = self.store is not None
        self.pages.setCurrentWidget(self.tabs if has_audit else self.welcome)
        if not has_audit:
            # focus on the list would make Qt select its first audit and skip this page
            self.welcome.demo_button.setFocus()
        self.export_action.setEnabled(has_audit)
        self.export_action.setToolTip("" if has_audit else "select an audit first")

    def open_workspace(self, workspace: str) -> None:
        workspace = str(Path(workspace).expanduser().resolve())
        self.settings.add_recent(workspace)
        self.settings.save()
        self._fill_audits()
        for i in range(self.audits.count()):
            if self.audits.item(i).data(Qt.ItemDataRole.UserRole) == workspace:
                self.audits.setCurrentRow(i)
                return

    def _on_select(self, item, _previous=None) -> None:
        if item is None:
            return
        if self.worker is not None and self.worker.isRunning():
            self.statusBar().showMessage("an audit is running; it keeps running in the background", 5000)
        if self.store is not None:
            self.store.close()
        ws = item.data(Qt.ItemDataRole.UserRole)
        self.store = AuditStore(ws)
        self.run_view.show_estimate(None)
        self.settings.current = ws
        self.gallery.set_filters(self.settings.filters.get(ws, {}))
        self.setWindowTitle(f"SIDE Audit — {ws}")
        self._show_settings()
        self._show_page()
        self.refresh_views()
        # a finished audit opens on its verdict; one still to run, on Run
        self.tabs.setCurrentWidget(self.summary if self.store.complete() else self.run_view)

    def open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open an audit workspace")
        if path:
            if not (Path(path) / "audit.toml").exists():
                QMessageBox.warning(self, "Open workspace", f"{path} holds no audit.toml")
                return
            self.open_workspace(path)

    def open_demo(self) -> None:
        """Create the demo audit in the user's data folder (or reopen it) and start it if unfinished."""
        from side_engine import demo

        try:
            root, _ = demo.ensure_demo_workspace()
        except SideError as e:
            QMessageBox.warning(self, "Open the demo audit", str(e))
            return
        self.open_workspace(str(root))
        if self.store is not None and not self.store.complete():
            self.tabs.setCurrentWidget(self.run_view)
            self.start_run()

    def new_audit(self) -> None:
        dialog = NewAuditDialog(self)
        if dialog.exec():
            self.open_workspace(dialog.created_workspace())
            self.tabs.setCurrentWidget(self.run_view)

    # -- views ---------------------------------------------------------------------------
    def refresh_views(self) -> None:
        if self.store is None:
            return
        t0 = time.perf_counter()
        try:
            self._refresh_views()
        finally:
            # reading a large audit takes a while: refresh at most 10 % of the time, so the
            # live view never starves the event loop however big the audit grows
            spent_ms = 1000 * (time.perf_counter() - t0)
            self.refresh_timer.setInterval(max(1500, int(10 * spent_ms)))

    def _refresh_views(self) -> None:
        try:
            cfg = self.store.config()
            if cfg is not None:
                self.run_view.set_stages(stage_names(cfg))
            stages = self.store.stages()
            if not (self.worker and self.worker.isRunning()):
                self.run_view.show_stored(stages)
                self.run_view.show_log(read_log(self.store.ws.log_path), started=bool(stages))
            self.run_view.set_resumable(bool(stages), complete=self.store.complete())
            if not self.run_view.estimate.text():
                stored, device = self.store.estimate()
                self.run_view.show_estimate(stored, device, " (estimated at the last start)")
            if self.store.complete():
                self._pending.clear()
                self._live_shown = None
                self._show_metrics(self.store.metrics(), cfg)  # the tables the metrics stage stored
            else:  # live tables come from a worker; until its first answer the views are empty
                self._start_live()
                live = self._live.get(str(self.store.ws.root))
                if live is None:
                    self._show_metrics({"rows": []}, cfg)
                elif live is not self._live_shown:  # a timer tick re-applies nothing already shown
                    self._show_live(live, cfg)
        except SideError as e:
            self.statusBar().showMessage(str(e), 10000)

    def _show_metrics(self, data: dict, cfg, exposure: list[dict] | None = None) -> None:
        if data.get("audit"):
            bands, higher = self.store.bands()
            hist = data.get("best_histogram") or self.store.best_histogram()  # older audits stored none
            self.results_view.set_data(data, hist, bands, higher,
                                       draw=self.tabs.currentWidget() is self.results_view)
            exposure = self.store.exposure() if exposure is None else exposure
            self.risk.set_rows(exposure, data.get("extraction_n"))
            self.summary.set_data(data, exposure, bands, self._train_path, self._workspace_file)
            if cfg:
                self.gallery.set_lambdas([lam for _, lam in cfg.grid()])
            self._load_gallery()
        else:
            self.results_view.set_data({"rows": []}, None, [], True,
                                       draw=self.tabs.currentWidget() is self.results_view)

    def _show_live(self, live: dict, cfg) -> None:
        """A running audit's live result: only the view on screen is filled now, each other one
        when it is shown (filling all of them held the window ~0.4 s at the paper's scale)."""
        self._live_shown = live
        data = live["metrics"]
        if not data.get("audit"):
            self._show_metrics(data, cfg)
            return
        bands, higher = self.store.bands()
        self.results_view.set_data(data, data.get("best_histogram") or {}, bands, higher,
                                   draw=self.tabs.currentWidget() is self.results_view)
        exposure, gallery = live["exposure"], live.get("gallery")

        def fill_gallery() -> None:
            if cfg:
                self.gallery.set_lambdas([lam for _, lam in cfg.grid()])
            if gallery is not None and gallery["filters"] == self.gallery.filters():
                self.gallery.set_rows(gallery["rows"], gallery["total"])  # read on the worker
            else:
                self._load_gallery()

        self._pending = {
            self.risk: lambda: self.risk.set_rows(exposure, data.get("extraction_n")),
            self.summary: lambda: self.summary.set_data(data, exposure, bands, self._train_path,
                                                        self._workspace_file),
            self.gallery: fill_gallery}
        self._on_tab()

    def _on_tab(self, _index: int = -1) -> None:
        view = self.tabs.currentWidget()
        if view is self.results_view:
            self.results_view.ensure_drawn()
        fill = self._pending.pop(view, None)
        if fill is not None:
            try:
                fill()
            except SideError as e:
                self.statusBar().showMessage(str(e), 10000)

    def _start_live(self) -> None:
        """Live tables for the selected unfinished audit, on a worker, unless one is computing
        or the last one ended too recently (rate-limited by its own measured cost)."""
        if self.store is None or not self.store.started() or time.monotonic() < self._live_due:
            return
        if self.live_worker is not None and self.live_worker.isRunning():
            return
        self.live_worker = LiveMetricsWorker(str(self.store.ws.root), self.gallery.filters(), self)
        self.live_worker.succeeded.connect(self._live_ready)
        self.live_worker.start()

    @Slot(dict)
    def _live_ready(self, result: dict) -> None:
        self._live[result["workspace"]] = result
        self._live_due = time.monotonic() + 4 * result["seconds"]
        if self.store is None or str(self.store.ws.root) != result["workspace"] or self.store.complete():
            return
        try:
            self._show_live(result, self.store.config())
        except SideError as e:
            self.statusBar().showMessage(str(e), 10000)

    def _load_gallery(self) -> None:
        f = self.gallery.filters()
        rows = self.store.gallery_rows(f["band"], f["method"], f["lam"], f["train_idx"])
        total = self.store.gallery_count(f["band"], f["method"], f["lam"], f["train_idx"]) \
            if len(rows) >= GALLERY_LIMIT else len(rows)
        self.gallery.set_rows(rows, total)

    def _on_filters(self, f: dict) -> None:
        if self.store is None:
            return
        self.settings.filters[str(self.store.ws.root)] = f
        self.settings.save()
        if self.store.started():
            self._load_gallery()

    def _resolved(self) -> dict:
        """The values the run chose where a setting is 0 = automatic, from the stored audit."""
        if self.store is None or not self.store.started():
            return {}
        cfg = self.store.config()
        model = self.store.stored("model") or {}
        audit = self.store.audit_row()
        out = {}
        if model:
            out["image size"] = f"{model.get('resolution')} px × {model.get('channels')}"
            if model.get("space") == "latent":
                out["latent shape"] = "×".join(map(str, model.get("latent_shape", [])))
            if model.get("weights"):
                out["weights"] = model["weights"]
        if cfg is not None:
            out |= self.store.chosen_by_run(cfg)
        if audit:
            out["scorer"] = audit.get("scorer")
            out["device"] = audit.get("device")
        return out

    def _train_path(self, rel: str) -> Path:
        return self.store.train_image_path(rel)

    def _workspace_file(self, rel: str) -> Path:
        return self.store.ws.root / rel

    def _resolve_pair(self, row: dict) -> tuple[str, str]:
        ws = self.store.ws.root
        return str(ws / row["png"]), str(self.store.train_image_path(row["train_path"]))

    def _show_training_image(self, idx: int) -> None:
        self.gallery.set_filters({"train_idx": idx})
        self._on_filters(self.gallery.filters())
        self.tabs.setCurrentWidget(self.gallery)

    def record_decision(self, ids: list, decision) -> None:
        self.store.set_decision(list(ids), decision)
        self.gallery.model.update_decisions(set(ids), decision)

    def open_detail(self, row: dict) -> DetailDialog:
        gen, train = self._resolve_pair(row)
        others = self.store.sample_matches(row["id"])
        dialog = DetailDialog(row, gen, train, others, self.store.train_image_path, self)
        dialog.decision_made.connect(self.record_decision)
        dialog.show()
        return dialog

    def export_report(self) -> ExportWorker | None:
        """The report is written on a worker thread; a PDF's layout (Qt) on this one."""
        if self.store is None or (self.export_worker and self.export_worker.isRunning()):
            return None
        path, kind = QFileDialog.getSaveFileName(self, "Export report", str(self.store.ws.root / "report.html"),
                                                 "HTML (*.html);;PDF (*.pdf);;CSV zip (*.zip)")
        if not path:
            return None
        fmt = "pdf" if path.endswith(".pdf") else "csv" if path.endswith(".zip") else "html"
        self.statusBar().showMessage(f"writing {path}…")
        self.export_action.setEnabled(False)
        worker = self.export_worker = ExportWorker(str(self.store.ws.root), fmt, path, self)
        worker.succeeded.connect(self._export_done)
        worker.failed.connect(self._export_failed)
        worker.start()
        return worker

    @Slot(dict)
    def _export_done(self, result: dict) -> None:
        if "model" in result:
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # Qt's layout of the pages
            out = Path(result["out"])
            try:
                from .report_pdf import write_pdf

                out.parent.mkdir(parents=True, exist_ok=True)
                write_pdf(result["model"], out)
                if not out.is_file() or not out.stat().st_size:  # Qt's writer fails silently
                    raise OSError("Qt wrote nothing there")
            except (SideError, OSError) as e:
                self._export_failed(f"{out}: cannot write the report ({getattr(e, 'strerror', None) or e})")
                return
            finally:
                QApplication.restoreOverrideCursor()
        self.export_action.setEnabled(self.store is not None)
        self.statusBar().showMessage(f"wrote {result['out']}", 10000)

    @Slot(str)
    def _export_failed(self, message: str) -> None:
        self.export_action.setEnabled(self.store is not None)
        self.statusBar().clearMessage()
        QMessageBox.warning(self, "Export report", message)

    # -- running ------------------------------------------------------------------------
    def start_run(self) -> AuditWorker | None:
        if self.store is None or (self.worker and self.worker.isRunning()):
            return None
        self.store.close()  # the engine opens its own connection; ours reopens on demand
        self.worker = AuditWorker(str(self.store.ws.root), self)
        sig = self.worker.progress.signals
        sig.progress.connect(self.run_view.on_progress)
        sig.stage_finished.connect(self.run_view.on_stage_finished)
        sig.log.connect(self.run_view.append_log)
        # declared slots, never lambdas, for signals sent from the worker thread (see run_view)
        self.worker.succeeded.connect(self._run_succeeded)
        self.worker.failed.connect(self._run_failed)
        self.worker.cancelled.connect(self._run_cancelled)
        self.run_view.set_running(True)
        self.settings_view.set_workspace(self.store.ws, started=True)
        self.run_view.show_log(read_log(self.store.ws.log_path))  # earlier runs, then this one live
        self.refresh_timer.start()
        self.worker.start()
        return self.worker

    def estimate_run(self) -> EstimateWorker | None:
        """A short timed probe on a worker thread; the estimate appears beside the buttons."""
        if self.store is None or (self.worker and self.worker.isRunning()) or (
                self.estimate_worker and self.estimate_worker.isRunning()):
            return None
        worker = self.estimate_worker = EstimateWorker(str(self.store.ws.root), self)
        self._estimate_root = self.store.ws.root
        worker.succeeded.connect(self._estimate_done)
        worker.failed.connect(self._estimate_failed)
        self.run_view.estimate_button.setEnabled(False)
        self.run_view.status.setText("timing a short probe…")
        worker.start()
        return worker

    @Slot(dict)
    def _estimate_done(self, result: dict) -> None:
        self.run_view.estimate_button.setEnabled(True)
        if self.store is None or self.store.ws.root != self._estimate_root:
            return  # another audit was selected meanwhile
        note = " (for the work left)" if result["resumed"] else ""
        self.run_view.show_estimate(result["seconds"], result["device"], note)
        self.run_view.status.setText("")

    @Slot(str)
    def _estimate_failed(self, message: str) -> None:
        self.run_view.estimate_button.setEnabled(True)
        self.run_view.status.setText(f"estimate failed: {message}")

    @Slot(dict)
    def _run_succeeded(self, _result: dict) -> None:
        self._finished("audit complete")

    @Slot(str)
    def _run_failed(self, message: str) -> None:
        self._finished(f"failed: {message}")

    @Slot()
    def _run_cancelled(self) -> None:
        self._finished("stopped; Resume continues where it stopped")

    def cancel_run(self) -> None:
        if self.worker and self.worker.isRunning():
            self.worker.cancel()
            self.run_view.status.setText("stopping after the current batch…")

    def _show_settings(self) -> None:
        started = self.store.started()
        fingerprinted = bool(self.store.stored("train_files_fingerprint")) if started else False
        self.settings_view.set_workspace(self.store.ws, started=started, resolved=self._resolved(),
                                         movable=config.movable(fingerprinted))

    def _finished(self, message: str) -> None:
        self.refresh_timer.stop()
        self.run_view.set_running(False)
        self.run_view.status.setText(message)
        self.refresh_views()  # shows run.log, which now ends with this run's outcome
        if self.store is not None:  # what the run chose for the automatic settings
            self._show_settings()
        if self.store is not None and self.store.complete():
            self.tabs.setCurrentWidget(self.summary)  # a finished audit: its verdict
        self._fill_audits()

    # -- closing --------------------------------------------------------------------------
    def _ask_close(self) -> bool:
        answer = QMessageBox.question(self, "Quit SIDE Audit",
                                      "An audit is running. Stop it after the current batch and quit? "
                                      "Everything stored so far is kept; Resume continues later.")
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event) -> None:  # noqa: N802
        if self.worker and self.worker.isRunning():
            if not self.confirm_close():
                event.ignore()
                return
            self.worker.cancel()
            self.worker.wait()
        for worker in (self.estimate_worker, self.live_worker, self.export_worker):
            if worker is not None:
                worker.wait()  # a probe, the intervals or a report: seconds; they write nothing half-done
        self.refresh_timer.stop()
        if self.store is not None:
            self.store.close()
        self.settings.save()
        event.accept()
