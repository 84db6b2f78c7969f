"""Event-loop latency of the desktop app while an audit runs, outside any test harness.

Opens a quick demo workspace in the main window, starts the run through the app's worker
and ticks a 20 ms QTimer until the run ends; prints the late ticks. Offscreen Qt.

    QT_QPA_PLATFORM=offscreen python bench/bench_gui_latency.py

Last line: the largest delay of a tick, in milliseconds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("SIDE_AUDIT_SETTINGS", str(Path(tempfile.mkdtemp()) / "settings.json"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from side_engine.audit import init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, QUICK_SETTINGS  # noqa: E402
from side_gui.main_window import MainWindow  # noqa: E402
from side_gui.settings import AppSettings  # noqa: E402


def main() -> None:
    app = QApplication.instance() or QApplication([])
    ws = init_workspace(Path(tempfile.mkdtemp()) / "ws", str(DEMO_MODEL), str(DEMO_FACES),
                        **dict(QUICK_SETTINGS, n_per_lambda=24, lambdas=[0, 2], batch_size=8))
    window = MainWindow(AppSettings())
    window.confirm_close = lambda: True
    window.open_workspace(str(ws.root))
    delays: list[tuple[float, float]] = []
    t0 = last = time.monotonic()

    def tick() -> None:
        nonlocal last
        now = time.monotonic()
        delays.append((now - t0, now - last - 0.02))
        last = now

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    worker = window.start_run()
    timer.start()
    worker.finished.connect(app.quit)
    app.exec()
    timer.stop()
    window.close()
    late = [(round(t, 2), round(1e3 * d)) for t, d in delays if d > 0.05]
    print(f"# {time.strftime('%Y-%m-%d')}; {len(delays)} ticks over {delays[-1][0]:.1f} s of a quick audit")
    print(f"ticks later than 50 ms (s into the run, ms late): {late or 'none'}")
    print(f"max tick delay ms: {1e3 * max(d for _, d in delays):.0f}")


if __name__ == "__main__":
    main()
