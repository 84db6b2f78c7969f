"""Gallery at scale: 10 000 (generated, nearest training) pairs in the desktop app's Gallery.

Runs a quick demo audit, then copies its stored pairs until the samples table holds
``--rows`` in-band rows (each copy a distinct (method, λ, index), pointing at the real PNGs),
and times what a reviewer waits for: the query, filling the model, the first paint,
scrolling to the end, a filter change, and a bulk decision on 1 000 pairs. Offscreen Qt.

    QT_QPA_PLATFORM=offscreen python bench/bench_gallery.py [--rows 10000]

Last line: the slowest interaction in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("SIDE_AUDIT_SETTINGS", str(Path(tempfile.mkdtemp()) / "settings.json"))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtWidgets import QApplication  # noqa: E402

from side_engine import storage  # noqa: E402
from side_engine.audit import AuditRunner, init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, QUICK_SETTINGS  # noqa: E402


def timed(label: str, fn, rows: list) -> object:
    t0 = time.perf_counter()
    out = fn()
    QApplication.processEvents()
    ms = 1e3 * (time.perf_counter() - t0)
    rows.append((label, ms))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp())
    ws = init_workspace(tmp / "ws", str(DEMO_MODEL), str(DEMO_FACES),
                        **dict(QUICK_SETTINGS, n_per_lambda=32, lambdas=[0, 5]))
    AuditRunner(ws).run()
    db = storage.connect(ws.db_path)
    seed_rows = list(db.query("select * from samples where png is not null"))
    if not seed_rows:
        raise SystemExit("the quick audit stored no in-band pair to copy")
    have = db["samples"].count
    with db.atomic():
        i = 0
        while db.execute("select count(*) from samples where png is not null").fetchone()[0] < args.rows:
            batch = []
            for r in seed_rows:
                r = dict(r, sample_index=100_000 + i, lam=float(1000 + i % 7))
                r.pop("id")
                batch.append(r)
                i += 1
            db["samples"].insert_all(batch)
    n = db.execute("select count(*) from samples where png is not null").fetchone()[0]
    print(f"# {time.strftime('%Y-%m-%d')}; {n} stored pairs ({have} from the audit, the rest copies), "
          f"{len({r['png'] for r in seed_rows})} distinct PNGs")

    from side_gui.main_window import MainWindow

    win = MainWindow()
    win.resize(1400, 900)
    win.show()
    rows: list[tuple[str, float]] = []
    timed("open the workspace (every view)", lambda: win.open_workspace(str(ws.root)), rows)
    win.tabs.setCurrentWidget(win.gallery)
    pairs = timed("query all pairs (review.gallery_rows)", lambda: win.store.gallery_rows(), rows)
    timed("fill the model (set_rows)", lambda: win.gallery.set_rows(pairs), rows)
    timed("first paint", lambda: win.gallery.view.viewport().repaint(), rows)
    timed("scroll to the end and paint", lambda: (win.gallery.view.scrollToBottom(),
                                                  win.gallery.view.viewport().repaint()), rows)
    timed("filter: band = high (query + fill + paint)",
          lambda: (win.gallery.band.setCurrentIndex(1), win.gallery.view.viewport().repaint()), rows)
    win.gallery.band.setCurrentIndex(0)
    QApplication.processEvents()
    ids = [r["id"] for r in win.gallery.model.rows[:1000]]
    timed("decide 'unsure' for 1 000 pairs (stored + repainted)",
          lambda: (win.record_decision(ids, "unsure"), win.gallery.view.viewport().repaint()), rows)
    stored = db.execute("select count(*) from decisions where decision = 'unsure'").fetchone()[0]
    print("| interaction | ms |\n|---|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:.0f} |")
    print(f"decisions stored: {stored}; thumbnails cached: {len(win.gallery.delegate.cache)}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    win.close()
    app.processEvents()
    print(f"slowest interaction ms: {max(ms for _, ms in rows):.0f}")


if __name__ == "__main__":
    main()
