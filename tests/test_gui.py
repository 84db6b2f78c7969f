"""The desktop app, offscreen: dialog validation, a run through the worker, review, cancel/resume."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QItemSelectionModel, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialogButtonBox  # noqa: E402

from side_engine import results, storage  # noqa: E402
from side_engine.audit import AuditRunner, init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, QUICK_SETTINGS  # noqa: E402
from side_gui.main_window import MainWindow  # noqa: E402
from side_gui.settings import AppSettings  # noqa: E402
from side_gui.widgets.new_audit_dialog import NewAuditDialog  # noqa: E402

GUI_SETTINGS = dict(QUICK_SETTINGS, n_per_lambda=12, lambdas=[0, 2], batch_size=8)


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDE_AUDIT_SETTINGS", str(tmp_path / "settings.json"))


@pytest.fixture(autouse=True)
def no_leaks(qapp):
    before = set(QApplication.topLevelWidgets())
    yield
    for _ in range(3):
        qapp.processEvents()
    leaked = [w for w in QApplication.topLevelWidgets() if w not in before and w.isVisible()]
    assert not leaked, f"widgets left open: {leaked}"


@pytest.fixture()
def window(qtbot):
    w = MainWindow(AppSettings())
    qtbot.addWidget(w)
    w.confirm_close = lambda: True
    yield w
    if w.worker is not None:
        w.worker.cancel()
        w.worker.wait(60_000)
        assert not w.worker.isRunning()
    w.close()


@pytest.fixture()
def demo_workspace(tmp_path):
    return init_workspace(tmp_path / "ws", str(DEMO_MODEL), str(DEMO_FACES), **GUI_SETTINGS)


def test_new_audit_dialog_rejects_bad_input_and_creates_workspace(qtbot, tmp_path, tiny_model, faces):
    d = NewAuditDialog()
    qtbot.addWidget(d)
    ok = d.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    d.workspace.setText(str(tmp_path / "new"))
    d.checkpoint.setText(str(tmp_path / "missing"))
    d.train_data.setText(str(faces))
    assert not ok.isEnabled() and "no such folder" in d.error.text()
    assert d.model_info.text().startswith("✗")
    d.checkpoint.setText(str(tiny_model))
    assert "16 px, 1 channel" in d.model_info.text()
    assert "12 image files" in d.data_info.text() and d.thumbs.count() == 8
    d.lambdas.setText("0, -3")
    assert not ok.isEnabled() and "'lambdas' holds -3" in d.error.text()
    d.lambdas.setText("0, 2, 5")
    assert ok.isEnabled()
    d.accept()
    assert (tmp_path / "new" / "audit.toml").exists()
    assert "lambdas = [0, 2, 5]" in (tmp_path / "new" / "audit.toml").read_text()


def test_run_through_worker_then_review(qtbot, window, demo_workspace):
    window.open_workspace(str(demo_workspace.root))
    worker = window.start_run()
    with qtbot.waitSignal(worker.succeeded, timeout=240_000):
        pass
    worker.wait()
    assert window.tabs.currentWidget() is window.summary  # a finished run lands on its verdict
    window.refresh_views()
    # the Run view shows the workspace's stored log, which ends with this run's outcome
    log = window.run_view.log_pane.toPlainText()
    assert "run started" in log and log.splitlines()[-1].split("  ", 1)[1].startswith("run complete")
    assert log == demo_workspace.log_path.read_text().rstrip("\n")
    db = storage.connect(demo_workspace.db_path)
    stored = {(r["method"], r["lam"], r["band"]): r for r in db["metrics"].rows}
    # plots hold the stored points and their 95 % intervals (drawn when the Results tab is shown)
    window.tabs.setCurrentWidget(window.results_view)
    x, y, lo, hi = window.results_view.ams_plot.points[("side", "low")]
    row = stored[("side", 2.0, "low")]
    assert list(x) == [2.0] and y[0] == pytest.approx(100 * row["ams"])
    assert (lo[0], hi[0]) == pytest.approx((100 * row["ams_lo"], 100 * row["ams_hi"]))
    # Random is a shaded 95 % interval; the legend row toggles series in both plots
    plot = window.results_view.ams_plot
    region = plot.curves[("random", "low", "region")]
    random_low = stored[("random", 0.0, "low")]
    assert region.getRegion() == pytest.approx((100 * random_low["ams_lo"], 100 * random_low["ams_hi"]))
    window.results_view.toggles["low"].setChecked(False)
    assert not plot.curves[("side", "low")].isVisible() and not region.isVisible()
    assert not window.results_view.ums_plot.curves[("side", "low")].isVisible()
    window.results_view.toggles["low"].setChecked(True)
    assert plot.curves[("side", "low")].isVisible()
    assert window.results_view.table1.rowCount() == 2
    assert window.results_view.table1.text(1, 3).endswith("]")  # a rate with its interval
    assert window.results_view.compare.rowCount() > 0  # the paired comparison with Random
    # gallery holds the stored pairs (samples kept as PNG), closest first
    n_pairs = db.execute("select count(*) from samples where png is not null").fetchone()[0]
    assert n_pairs > 0, "the demo model should yield some in-band pairs"
    assert window.gallery.model.rowCount() == n_pairs
    scores = [r["best"] for r in window.gallery.model.rows]
    assert scores == sorted(scores)  # pixel ratio: lower is closer
    # decisions: bulk on a selection, stored, and restored by a new window
    sel = window.gallery.view.selectionModel()
    for i in range(min(2, n_pairs)):
        sel.select(window.gallery.model.index(i), QItemSelectionModel.SelectionFlag.Select)
    window.gallery.decide("memorised")
    decided = {r["sample_id"]: r["decision"] for r in db["decisions"].rows}
    assert set(decided.values()) == {"memorised"} and len(decided) == min(2, n_pairs)
    window.gallery.band.setCurrentText(window.gallery.model.rows[0]["band"])
    band = window.gallery.filters()["band"]
    window.close()
    again = MainWindow(AppSettings.load())
    qtbot.addWidget(again)
    assert again.store is not None and str(again.store.ws.root) == str(demo_workspace.root)
    assert again.gallery.filters()["band"] == band
    assert all(r["band"] == band for r in again.gallery.model.rows)
    assert {r["id"] for r in again.gallery.model.rows if r["decision"] == "memorised"} <= set(decided)
    # the detail view shows the pair and records a decision
    first = again.gallery.model.rows[0]
    dialog = again.open_detail(first)
    qtbot.addWidget(dialog)
    # the absolute difference of exactly the stored pair, and a blink that swaps in the generated image
    import numpy as np
    from PIL import Image

    gen_path, train_path = again._resolve_pair(first)
    gen = np.asarray(Image.open(gen_path).convert("L"), dtype=float)
    train = np.asarray(Image.open(train_path).convert("L").resize(gen.shape[::-1], Image.BICUBIC), dtype=float)
    assert dialog.mean_abs_diff == pytest.approx(np.abs(gen - train).mean(), abs=0.5)
    dialog.blink_button.click()
    assert dialog.right.scene().items()[0].pixmap().cacheKey() == dialog.generated_pix.cacheKey()
    dialog.blink_button.click()
    assert dialog.right.scene().items()[0].pixmap().cacheKey() == dialog.training_pix.cacheKey()
    dialog.left.zoom(2.0)
    assert dialog.diff.transform().m11() == pytest.approx(dialog.left.transform().m11())
    dialog.decide("not a copy")
    assert again.store.gallery_rows()[0]["decision"] in ("not a copy", "memorised")
    dialog.close()
    # training images at risk open their generations
    if again.risk.model.rows:
        idx = again.risk.model.rows[0]["train_idx"]
        again._show_training_image(idx)
        ids = {r["id"] for r in again.gallery.model.rows}
        matched = {r[0] for r in db.execute("select sample_id from matches where train_idx = ?", [idx])}
        assert ids and ids <= matched
    again.close()
    db.close()


def test_cancel_mid_run_keeps_ui_responsive_and_resumes(qtbot, window, demo_workspace):
    window.open_workspace(str(demo_workspace.root))
    worker = window.start_run()
    latencies: list[float] = []
    startup: list[float] = []  # before guided sampling begins
    sampling = [False]
    worker.progress.signals.progress.connect(
        lambda stage, done, total: sampling.__setitem__(0, sampling[0] or stage == "sample"))
    last = [time.monotonic()]

    def tick():
        now = time.monotonic()
        (latencies if sampling[0] else startup).append(now - last[0] - 0.02)
        last[0] = now

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    timer.start()
    with qtbot.waitSignal(worker.progress.signals.progress, timeout=120_000,
                          check_params_cb=lambda stage, done, total: stage == "sample" and done > 0):
        pass
    window.cancel_run()
    with qtbot.waitSignal(worker.cancelled, timeout=120_000):
        pass
    timer.stop()
    worker.wait()
    assert latencies and max(latencies) < 0.1, f"event loop blocked for {max(latencies):.3f} s"
    # known, open: under pytest only, once per run before sampling, the event loop stalls for
    # 0.25-0.35 s (since guidance became concurrent). The same start-up in a plain process
    # (bench/bench_gui_latency.py, app.exec or a nested QEventLoop) stays under 10 ms; the
    # cause was not found. It must stay an isolated hiccup
    assert startup and max(startup) < 0.5, f"event loop blocked for {max(startup):.3f} s before sampling"
    assert sum(x > 0.1 for x in startup) <= 1
    assert "stopped" in window.run_view.status.text()
    assert window.run_view.start_button.text() == "Resume"
    db = storage.connect(demo_workspace.db_path)
    partial = db["samples"].count
    db.close()
    assert 0 < partial < 24
    AuditRunner(demo_workspace).run()  # resumes to completion
    db = storage.connect(demo_workspace.db_path)
    assert db["samples"].count == 24
    db.close()


def test_close_during_run_cancels_cleanly(qtbot, demo_workspace):
    w = MainWindow(AppSettings())
    qtbot.addWidget(w)
    w.confirm_close = lambda: True
    w.open_workspace(str(demo_workspace.root))
    worker = w.start_run()
    with qtbot.waitSignal(worker.progress.signals.progress, timeout=120_000):
        pass
    w.close()
    assert not worker.isRunning()


def test_screenshot_mode(tmp_path, demo_workspace):
    from side_gui.app import main

    AuditRunner(demo_workspace).run()
    assert main([str(demo_workspace.root), "--screenshot", str(tmp_path / "shots")]) == 0
    shots = sorted(p.name for p in (tmp_path / "shots").glob("*.png"))
    assert shots == ["1-summary.png", "2-run.png", "3-results.png", "3b-results-against-random.png",
                     "4-gallery.png", "5-training-images-at-risk.png", "6-settings.png"]


def test_estimate_button_probes_without_running_the_audit(qtbot, window, demo_workspace):
    window.open_workspace(str(demo_workspace.root))
    assert window.run_view.estimate.text() == ""
    window.run_view.estimate_button.click()
    worker = window.estimate_worker
    assert worker is not None and not window.run_view.estimate_button.isEnabled()
    with qtbot.waitSignal(worker.succeeded, timeout=120_000):
        pass
    worker.wait()
    qtbot.waitUntil(lambda: "on cpu" in window.run_view.estimate.text(), timeout=5_000)
    assert window.run_view.estimate.text().startswith("≈")
    assert "tdkd" in window.run_view.estimate.toolTip()
    assert window.run_view.estimate_button.isEnabled()
    assert not demo_workspace.db_path.exists()  # nothing was run or stored


def test_first_start_shows_the_ways_in_and_the_demo_button_creates_and_starts_the_demo(qtbot, tmp_path,
                                                                                        monkeypatch):
    from side_engine import demo

    w = MainWindow(AppSettings())
    qtbot.addWidget(w)
    assert w.pages.currentWidget() is w.welcome  # no audit: the welcome page, not nine empty bars
    assert not w.export_action.isEnabled() and "select an audit" in w.export_action.toolTip()
    assert w.welcome.recent.isHidden()  # nothing recent yet: no empty list either
    monkeypatch.setattr(demo, "default_workspace", lambda quick: tmp_path / "demo-ws")
    started = []
    monkeypatch.setattr(w, "start_run", lambda: started.append(True))
    qtbot.mouseClick(w.welcome.demo_button, Qt.MouseButton.LeftButton)
    assert (tmp_path / "demo-ws" / "audit.toml").exists()
    assert "n_syn = 512" in (tmp_path / "demo-ws" / "audit.toml").read_text()  # the demo's settings
    assert started == [True] and w.pages.currentWidget() is w.tabs and w.tabs.currentWidget() is w.run_view
    assert w.export_action.isEnabled()
    assert w.welcome.recent.count() == 1 and not w.welcome.recent.isHidden()  # now a recent audit
    w.close()


def test_settings_form_comes_from_the_settings_model_and_validates_like_the_cli(qtbot, window, demo_workspace):
    import dataclasses

    from side_engine import config

    window.open_workspace(str(demo_workspace.root))
    form = window.settings_view
    cfg = demo_workspace.load_config()
    assert set(form.editors) == {f.name for f in dataclasses.fields(config.AuditConfig)}  # one source
    assert form.editors["n_per_lambda"].text() == str(cfg.n_per_lambda)
    assert form.editors["label_source"].currentText() == cfg.label_source
    assert "surrogate labels" in form.editors["label_source"].toolTip()
    before = demo_workspace.config_path.read_text()
    form.editors["n_per_lambda"].setText("-3")
    assert not form.save() and "'n_per_lambda' = -3: must be a positive integer" in form.error.text()
    form.editors["n_per_lambda"].setText("abc")
    assert not form.save() and "'n_per_lambda'" in form.error.text()
    assert demo_workspace.config_path.read_text() == before  # nothing written on a bad value
    form.editors["n_per_lambda"].setText("24")
    form.editors["lambdas"].setText("[0, 3, 6]")
    assert form.save(), form.error.text()
    saved = demo_workspace.load_config()
    assert saved.n_per_lambda == 24 and saved.lambdas == [0, 3, 6]
    assert saved.classifier_epochs == cfg.classifier_epochs  # the rest as it was
    # settings the others leave idle are greyed, with why; they stay editable
    form.editors["label_source"].setCurrentText("clusters")
    assert form.labels["classifier_epochs"].isEnabled()
    form.editors["label_source"].setCurrentText("synthetic-clusters")
    assert not form.labels["classifier_epochs"].isEnabled() and form.editors["classifier_epochs"].isEnabled()
    assert "trains no TI classifier" in form.labels["classifier_epochs"].toolTip()
    assert "not used by these settings" in form.idle_note.text()
    assert form.labels["tdkd_epochs"].isEnabled() and form.labels["classifier_width"].isEnabled()
    form.editors["label_source"].setCurrentText("clusters")
    assert form.labels["classifier_epochs"].isEnabled() and not form.labels["labels_csv"].isEnabled()


def test_a_complete_audit_opens_on_its_verdict_and_cannot_be_started_again(qtbot, window, demo_workspace):
    from side_engine.report import headline

    AuditRunner(demo_workspace).run()
    window.open_workspace(str(demo_workspace.root))
    assert window.tabs.currentWidget() is window.summary
    db = storage.connect(demo_workspace.db_path)
    data, exposure = results.metrics_json(db), results.exposure(db)
    bands, _ = results.stored_bands(db)
    # the verdict is the engine's, from what is stored: the same sentences the report opens with
    expected = headline(dict(data, warnings=[]), exposure, data["audit"]["n_train"], bands)
    assert window.summary.sentences == expected
    assert f"of {data['audit']['n_train']} training images were reproduced" in window.summary.verdict.text()
    assert "[" in window.summary.steering.text()  # steering with its interval
    # the most exposed training images, each with its closest generated image, as pictures
    shown = window.summary.at_risk
    assert shown, "the demo model should put some training images at risk"
    assert [e["train_idx"] for e in shown] == [e["train_idx"] for e in exposure[:8]]
    pictures = [window.summary.risk_grid.itemAt(i).widget() for i in range(window.summary.risk_grid.count())]
    pixmaps = [w.pixmap() for w in pictures if w.pixmap() is not None and not w.pixmap().isNull()]
    assert len(pixmaps) == 2 * len(shown)
    assert data["audit"]["checkpoint_sha256"] in window.summary.provenance.text()
    # at-risk view: every stored exposure row, each with both pictures; the band filter narrows it
    risk = window.risk
    assert [r["train_idx"] for r in risk.model.rows] == [e["train_idx"] for e in exposure]
    for col in (0, 1):
        pix = risk.model.data(risk.model.index(0, col), Qt.ItemDataRole.DecorationRole)
        assert pix is not None and not pix.isNull()
    risk.band.setCurrentText("high")
    assert [r["train_idx"] for r in risk.model.rows] == [e["train_idx"] for e in exposure if e["high"] > 0]
    risk.band.setCurrentText("any band")
    db.close()
    # a started audit: result-affecting settings read-only, run settings editable
    form = window.settings_view
    db = storage.connect(demo_workspace.db_path)
    k = storage.get_kv(db, "k")
    db.close()
    assert f"k = {k}" in form.resolved.text() and "classifier_width = 16" in form.resolved.text()
    # k = 0 (automatic) reads as what the run chose, not as a bare 0
    assert form.editors["k"].text() == "" and form.editors["k"].placeholderText() == f"automatic: {k}"
    assert not form.editors["n_per_lambda"].isEnabled() and not form.editors["lambdas"].isEnabled()
    assert form.editors["batch_size"].isEnabled() and form.editors["threads"].isEnabled()
    form.editors["threads"].setText("1")
    assert form.save(), form.error.text()
    assert demo_workspace.load_config().threads == 1 and demo_workspace.load_config().k == 0  # still automatic
    # the model and training folders may point to where they lie now: the run verifies their content
    import shutil

    assert form.editors["checkpoint"].isEnabled() and form.editors["train_data"].isEnabled()
    assert "same files" in form.state.text()
    moved = demo_workspace.root.parent / "faces-moved"
    shutil.copytree(demo_workspace.load_config().train_data, moved)
    form.editors["train_data"].setText(str(moved))
    assert form.save(), form.error.text()
    assert demo_workspace.load_config().train_data == str(moved)
    AuditRunner(demo_workspace).run()  # the same files elsewhere: the finished audit stays as it was
    assert not window.run_view.start_button.isEnabled()
    assert "complete" in window.run_view.start_button.toolTip()
    assert window.run_view.log_pane.toPlainText().splitlines()[-1].split("  ", 1)[1].startswith("run complete")
    # a running audit's live result (the worker's own, computed here in-thread): the view on
    # screen is filled at once, every other view when it is shown, the gallery from the rows
    # the worker read for the filters in effect
    from side_gui.workers import LiveMetricsWorker

    live = LiveMetricsWorker(str(demo_workspace.root), window.gallery.filters()).work()
    assert live["gallery"]["total"] == len(live["gallery"]["rows"]) > 0
    live["exposure"], live["gallery"]["rows"] = live["exposure"][:1], live["gallery"]["rows"][:2]
    window.tabs.setCurrentWidget(window.run_view)
    window._show_live(live, demo_workspace.load_config())
    assert len(risk.model.rows) == len(exposure) > 1  # not on screen: not refilled yet
    window.tabs.setCurrentWidget(window.risk)
    assert [r["train_idx"] for r in risk.model.rows] == [exposure[0]["train_idx"]]
    window.tabs.setCurrentWidget(window.gallery)
    assert [r["id"] for r in window.gallery.model.rows] == [r["id"] for r in live["gallery"]["rows"]]


def test_device_choice_offers_all_gpus_where_there_are_several(monkeypatch):
    """"all GPUs (N)" stands for device cuda on N processes; with one GPU or none it is absent."""
    import torch

    from side_engine.devices import device_choices

    assert [label for label, _ in device_choices()][:1] == ["auto"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    choices = dict(device_choices())
    assert choices["all GPUs (4)"] == {"device": "cuda", "processes": 4}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert not [label for label, _ in device_choices() if label.startswith("all GPUs")]


@pytest.mark.slow
def test_a_multi_process_audit_from_the_app_relays_progress_stops_and_resumes(qtbot, window, tmp_path,
                                                                                tiny_model, faces):
    """With processes = 2 the app runs `side-audit run --nproc 2` (torchrun) and relays what the
    processes store; Stop becomes the workspace's stop request, which stops every rank after its
    batch; Resume finishes the audit. Eighteen rounds of sampling on the tiny model (the demo
    model's training and sampling took a minute of this test and tested nothing more): the stop,
    sent within a poll or two of the first relayed batch, must land before the run could finish
    on a fast machine (with three rounds CI once finished the audit before the request was read)."""
    from tests.conftest import TINY_SETTINGS

    ws = init_workspace(tmp_path / "ws2", str(tiny_model), str(faces),
                        **dict(TINY_SETTINGS, n_per_lambda=144, lambdas=[0, 2], processes=2))
    window.open_workspace(str(ws.root))
    worker = window.start_run()
    with qtbot.waitSignal(worker.progress.signals.progress, timeout=180_000,
                          check_params_cb=lambda stage, done, total: stage == "sample" and done > 0):
        pass
    window.cancel_run()
    with qtbot.waitSignal(worker.cancelled, timeout=120_000):
        pass
    worker.wait()
    assert "stopped" in window.run_view.status.text()
    assert "run started" in window.run_view.log_pane.toPlainText()  # run.log relayed live
    db = storage.connect(ws.db_path)
    partial = db["samples"].count
    keys = [tuple(r.values()) for r in db.query("select method, lam, sample_index from samples")]
    db.close()
    assert 0 < partial < 288 and len(set(keys)) == len(keys)
    assert not ws.stop_path.exists()
    worker = window.start_run()
    with qtbot.waitSignal(worker.succeeded, timeout=240_000):
        pass
    worker.wait()
    db = storage.connect(ws.db_path)
    assert db["samples"].count == 288
    db.close()
    assert "sampling on 2 processes" in ws.log_path.read_text()


@pytest.mark.slow
def test_a_multi_process_run_that_fails_shows_its_reason_not_the_launchers_traceback(qtbot, window, tmp_path):
    """The app shows the tail of `side-audit run --nproc N`'s output when it fails: that tail is the
    engine's one-line reason (damaged weights here), not torchrun's ChildFailedError report."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, model)
    ws = init_workspace(tmp_path / "ws", str(model), str(DEMO_FACES), **dict(GUI_SETTINGS, processes=2))
    next(model.rglob("*.safetensors")).write_bytes(b"damaged")
    window.open_workspace(str(ws.root))
    worker = window.start_run()
    with qtbot.waitSignal(worker.failed, timeout=120_000) as failed:
        pass
    worker.wait()
    message = failed.args[0]
    assert message.startswith(str(next(model.rglob("*.safetensors")))) and "unreadable safetensors" in message
    assert "ChildFailedError" not in message and "exit status" not in message
    assert "unreadable safetensors" in window.run_view.status.text()


def test_export_report_runs_on_a_worker_and_says_what_it_wrote_or_why_not(qtbot, window, tmp_path, monkeypatch,
                                                                          tiny_model, faces):
    """A report takes seconds at the paper's scale: its data, charts and thumbnails are gathered
    on a worker thread while the window keeps answering, a PDF is then laid out by Qt; what was
    written, or why not, is shown, and the menu item comes back either way."""
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    from tests.conftest import TINY_SETTINGS

    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(ws).run()
    window.open_workspace(str(ws.root))
    (tmp_path / "out").mkdir()
    for name in ("r.pdf", "r.html", "r.zip"):
        target = tmp_path / "out" / name
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, t=target, **k: (str(t), ""))
        worker = window.export_report()
        assert worker is not None and not window.export_action.isEnabled()
        qtbot.waitUntil(lambda t=target: window.statusBar().currentMessage() == f"wrote {t}", timeout=60_000)
        worker.wait()
        assert target.stat().st_size > 0 and window.export_action.isEnabled()
        assert QApplication.overrideCursor() is None
    assert (tmp_path / "out" / "r.pdf").read_bytes()[:5] == b"%PDF-"
    assert "<html" in (tmp_path / "out" / "r.html").read_text()[:200].lower()
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: warnings.append(text))
    blocked = tmp_path / "a file"
    blocked.write_text("")
    for name in ("r.html", "r.pdf"):
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, n=name, **k: (str(blocked / n), ""))
        before = len(warnings)
        window.export_report()
        qtbot.waitUntil(lambda b=before: len(warnings) == b + 1, timeout=60_000)
        window.export_worker.wait()
        assert "a file" in warnings[-1] and window.export_action.isEnabled()
        assert QApplication.overrideCursor() is None


def test_several_processes_from_a_frozen_bundle_are_refused_in_the_app_too(qtbot, window, demo_workspace,
                                                                          monkeypatch):
    """The same refusal as the CLI's (one function): the run fails at once, saying what to set."""
    import sys

    toml = demo_workspace.config_path
    toml.write_text(toml.read_text().replace("processes = 1", "processes = 2"))
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    window.open_workspace(str(demo_workspace.root))
    worker = window.start_run()
    # the refusal is immediate: it can be emitted before a waitSignal here connects (it once
    # was, on two workers), so wait for what the window shows of it, connected before the start
    qtbot.waitUntil(lambda: "runs one process" in window.run_view.status.text(), timeout=30_000)
    worker.wait()
    message = window.run_view.status.text()
    assert "runs one process" in message and "processes = 1" in message
    assert not demo_workspace.db_path.exists()


def test_new_audit_dialog_says_what_a_latent_folder_holds_and_which_weights(qtbot, tmp_path, tiny_ldm, faces):
    d = NewAuditDialog()
    qtbot.addWidget(d)
    d.workspace.setText(str(tmp_path / "new"))
    d.train_data.setText(str(faces))
    d.checkpoint.setText(str(tiny_ldm))
    assert "latent model: VQModel + UNet on 2×16×16 latents, 32 px images" in d.model_info.text()
    assert "raw weights" in d.model_info.text()
    d.weights.setCurrentText("ema")  # this folder has none: said, and the dialog cannot be accepted
    assert "no EMA weights" in d.model_info.text() or "no EMA weights" in d.error.text()
    assert not d.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    d.weights.setCurrentText("auto")
    assert d.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    d.accept()
    assert 'weights = "auto"' in (tmp_path / "new" / "audit.toml").read_text()


def test_summary_refilled_leaves_no_earlier_thumbnails_drawn(qtbot, tmp_path):
    """Opening another audit refills the at-risk grid: the previous audit's thumbnails are
    hidden at once, not left drawn over the new page until Qt gets round to deleting them."""
    from PySide6.QtWidgets import QLabel

    from side_engine.scorers import Band
    from side_gui.widgets.summary_view import SummaryView

    view = SummaryView()
    qtbot.addWidget(view)
    view.show()
    bands = [Band("low", 0.5, 1.0), Band("mid", 0.3, 0.5), Band("high", 0.0, 0.3)]
    rows = [{"path": f"face_{i}.png", "best_png": None, "total": 3, "best_score": 0.2, "low": 1, "mid": 1,
             "high": 1} for i in range(3)]
    view.set_data({}, rows, bands, lambda rel: tmp_path / rel, lambda rel: tmp_path / rel)
    QApplication.processEvents()  # a layout shows newly added widgets from the event loop
    captions = [w for w in view.findChildren(QLabel) if "matched by" in w.text()]
    assert len(captions) == 3 and all(w.isVisible() for w in captions)
    view.set_data({}, [], bands, lambda rel: tmp_path / rel, lambda rel: tmp_path / rel)  # no event loop between
    assert not [w for w in view.findChildren(QLabel) if "matched by" in w.text() and w.isVisible()]
    assert not view.risk_title.isVisible()


def test_a_latent_model_audits_from_the_app(qtbot, window, tmp_path, tiny_ldm, faces):
    """The app runs a latent audit like a pixel one and says what was audited."""
    from tests.conftest import TINY_SETTINGS

    ws = init_workspace(tmp_path / "lat", str(tiny_ldm), str(faces), **dict(TINY_SETTINGS, scorer="pixel"))
    window.open_workspace(str(ws.root))
    worker = window.start_run()
    with qtbot.waitSignal(worker.succeeded, timeout=240_000):
        pass
    worker.wait()
    window.refresh_views()
    assert "latent: VQModel + UNet on 2×16×16 latents" in window.summary.provenance.text()
    assert "latent shape = 2×16×16" in window.settings_view.resolved.text()


def test_the_budget_tab_reads_a_strategy_that_found_nothing(qtbot):
    import numpy as np

    from side_engine import unseen
    from side_gui.widgets.results_view import ResultsView

    view = ResultsView()
    qtbot.addWidget(view)
    found = unseen.estimate(unseen.Incidence(np.array([1, 1, 2, 4]), 64), ceiling=50, resamples=20)
    none = unseen.estimate(unseen.Incidence(np.zeros(0, np.int64), 64), ceiling=50)
    view._fill_unseen({"estimator": "chao2", "cap": 3.0, "lambdas": [5.0],
                       "strategies": [{"strategy": "random", "band": "mid", "cumulative": True, **found},
                                      {"strategy": "side", "band": "mid", "cumulative": True, **none}]})
    assert view.unseen_table.rowCount() == 2
    assert view.unseen_table.text(1, 4) == "none found: no estimate (0 to 50)"
    assert view.unseen_table.text(0, 4).startswith(f"{found['chao2']:.1f} [")
    assert set(view.budget.curves) == {"random", "side"}
