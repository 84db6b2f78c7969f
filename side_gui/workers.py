"""The engine on a worker thread, talking to the views by signals only."""

from __future__ import annotations

import traceback

from PySide6.QtCore import QObject, QThread, Signal

from side_engine.audit import AuditRunner
from side_engine.errors import Cancelled, SideError
from side_engine.progress import Progress


class _Emitter(QObject):
    progress = Signal(str, int, int)
    log = Signal(str)
    stage_finished = Signal(str, float)


class QtProgress(Progress):
    """Engine progress → Qt signals (queued across threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.signals = _Emitter()

    def update(self, stage: str, done: int, total: int) -> None:
        self.signals.progress.emit(stage, done, total)

    def log(self, message: str) -> None:
        self.signals.log.emit(message)

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.signals.stage_finished.emit(stage, seconds)


class _EngineWorker(QThread):
    """One engine call on a worker thread; its result or error comes back as a signal."""

    succeeded = Signal(dict)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, workspace: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace

    def work(self) -> dict:
        raise NotImplementedError

    def run(self) -> None:  # worker thread
        try:
            result = self.work()
        except Cancelled:
            self.cancelled.emit()
        except SideError as e:
            self.failed.emit(str(e))
        except Exception as e:  # a bug: show it rather than die silently
            self.failed.emit(f"unexpected error: {e}\n{traceback.format_exc(limit=3)}")
        else:
            self.succeeded.emit(result)


class AuditWorker(_EngineWorker):
    """Runs (or resumes) one audit. ``cancel()`` stops it at the next batch boundary."""

    def __init__(self, workspace: str, parent: QObject | None = None) -> None:
        super().__init__(workspace, parent)
        self.progress = QtProgress()

    def cancel(self) -> None:
        self.progress.cancel()

    def work(self) -> dict:
        return AuditRunner(self.workspace, self.progress).run()


class EstimateWorker(_EngineWorker):
    """Times the probe for one workspace (``estimate.estimate_workspace``); writes nothing."""

    def work(self) -> dict:
        from side_engine.estimate import estimate_workspace

        return estimate_workspace(self.workspace)
