"""``side-audit gui`` / ``side-audit-gui``: the QApplication and the screenshot mode."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from side_engine import cpu, resources  # noqa: E402

cpu.prefer_passive_waits()  # before torch loads (side_engine.cpu says why)

from PySide6.QtGui import QIcon  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

ICON = resources.path("icons", "side-audit.svg")


class SideAuditApp(QApplication):
    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.setApplicationName("SIDE Audit")
        self.setOrganizationName("side-audit")
        self.setDesktopFileName("side-audit")
        if ICON.exists():
            self.setWindowIcon(QIcon(str(ICON)))


def screenshot(window, out: Path) -> list[Path]:
    """Render each main view of the current audit to a PNG."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    app = QApplication.instance()
    for i in range(window.tabs.count()):
        window.tabs.setCurrentIndex(i)
        for _ in range(3):
            app.processEvents()
        name = window.tabs.tabText(i).lower().replace(" ", "-")
        path = out / f"{i + 1}-{name}.png"
        window.grab().save(str(path))
        paths.append(path)
        if window.tabs.currentWidget() is window.results_view:  # also the paired comparison with Random
            tables = window.results_view.tables
            tables.setCurrentWidget(window.results_view.compare)
            for _ in range(3):
                app.processEvents()
            path = out / f"{i + 1}b-{name}-against-random.png"
            window.grab().save(str(path))
            paths.append(path)
            tables.setCurrentIndex(0)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side-audit gui")
    parser.add_argument("workspace", nargs="?")
    parser.add_argument("--screenshot", help="render each main view to PNGs in this folder and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from side_engine.desktop_check import gui_problem, has_display

    if args.screenshot and not has_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # pictures need no screen
    if QApplication.instance() is None and (problem := gui_problem()):
        # Qt would abort the process here with a message that names no library or package
        print(f"side-audit gui: error: {problem}", file=sys.stderr)
        return 2
    from .main_window import MainWindow

    app = QApplication.instance() or SideAuditApp(sys.argv[:1])
    window = MainWindow()
    if args.workspace:
        if not (Path(args.workspace) / "audit.toml").exists():
            print(f"side-audit gui: error: {args.workspace} holds no audit.toml", file=sys.stderr)
            return 2
        window.open_workspace(args.workspace)
    window.show()
    if args.screenshot:
        for p in screenshot(window, Path(args.screenshot)):
            print(p)
        window.close()
        return 0
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
