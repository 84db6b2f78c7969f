"""How fast the desktop app answers on one stored audit: open, tab switches, filters, scrolls.

Run by ``bench_paper_scale.py`` in a process of its own (offscreen Qt); usable alone:

    QT_QPA_PLATFORM=offscreen python bench/app_latency.py WORKSPACE OUT.json

Each interaction is timed from the call to the moment the event loop has nothing left to do
and the affected view has painted (``repaint``: offscreen Qt paints only when asked). A live
refresh (``refresh_views`` of a finished audit: every view filled) is timed too, and what the
window does on its own thread when a running audit's live result arrives, with each tab on screen.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("SIDE_AUDIT_SETTINGS", str(Path(tempfile.mkdtemp()) / "settings.json"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtWidgets import QApplication  # noqa: E402

from side_gui.main_window import MainWindow  # noqa: E402
from side_gui.settings import AppSettings  # noqa: E402


def timed(app: QApplication, action, paint=None) -> float:
    t0 = time.perf_counter()
    action()
    app.processEvents()
    if paint is not None:
        paint.repaint()
    app.processEvents()
    return round(1000 * (time.perf_counter() - t0), 1)


def main() -> None:
    workspace, out = sys.argv[1], Path(sys.argv[2])
    app = QApplication.instance() or QApplication([])
    window = MainWindow(AppSettings())
    window.confirm_close = lambda: True
    window.resize(1400, 900)
    window.show()
    app.processEvents()
    ms: dict = {"open": timed(app, lambda: window.open_workspace(workspace), window)}
    tabs = window.tabs
    ms["tabs"] = {tabs.tabText(i): timed(app, lambda i=i: tabs.setCurrentIndex(i), tabs.widget(i))
                  for i in range(tabs.count())}
    g, r = window.gallery, window.risk
    tabs.setCurrentWidget(g)
    app.processEvents()
    ms["gallery filter high"] = timed(app, lambda: g.band.setCurrentIndex(g.band.findText("high")), g.view.viewport())
    ms["gallery filter all"] = timed(app, lambda: g.band.setCurrentIndex(0), g.view.viewport())
    bar = g.view.verticalScrollBar()
    ms["gallery scroll"] = max(timed(app, lambda v=v: bar.setValue(v), g.view.viewport())
                               for v in (bar.maximum() // 2, bar.maximum(), 0))
    tabs.setCurrentWidget(r)
    app.processEvents()
    ms["at-risk filter mid"] = timed(app, lambda: r.band.setCurrentIndex(r.band.findText("mid")), r.table.viewport())
    ms["at-risk filter any"] = timed(app, lambda: r.band.setCurrentIndex(0), r.table.viewport())
    if r.table.isSortingEnabled():
        order = r.table.horizontalHeader().sortIndicatorOrder()
        ms["at-risk sort"] = timed(app, lambda: r.table.sortByColumn(2, order), r.table.viewport())
    bar = r.table.verticalScrollBar()
    ms["at-risk scroll"] = max(timed(app, lambda v=v: bar.setValue(v), r.table.viewport())
                               for v in (bar.maximum() // 2, bar.maximum(), 0))
    ms["live refresh"] = timed(app, window.refresh_views)
    # what a running audit's window does on its own thread when the live worker answers: the
    # stored tables stand in for the worker's (the same shapes; the worker's own seconds are
    # spent off this thread and not timed here)
    store, cfg = window.store, window.store.config()
    f = g.filters()
    rows = store.gallery_rows(f["band"], f["method"], f["lam"], f["train_idx"])
    live = {"metrics": store.metrics(), "exposure": store.exposure(),
            "gallery": {"filters": f, "rows": rows, "total": store.gallery_count(
                f["band"], f["method"], f["lam"], f["train_idx"])}}
    ms["live result shown"] = {}
    for i in range(tabs.count()):
        tabs.setCurrentIndex(i)
        app.processEvents()
        ms["live result shown"][tabs.tabText(i)] = timed(
            app, lambda: window._show_live(dict(live), cfg), tabs.widget(i))
    ms["rows"] = {"gallery": g.model.rowCount(), "at-risk": r.model.rowCount()}
    out.write_text(json.dumps(ms))
    window.close()


if __name__ == "__main__":
    main()
