"""One progress/cancel interface for every engine stage.

Stages call :meth:`Progress.update` after each batch and :meth:`Progress.check`
between batches, so a front end (CLI bars, Qt signals, tests) only has to
subclass this and a cancel request takes effect at the next batch boundary.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .errors import Cancelled


class Progress:
    """Base reporter: records nothing, never cancels unless asked."""

    def __init__(self) -> None:
        self._cancel = threading.Event()

    # -- reporting -------------------------------------------------------
    def update(self, stage: str, done: int, total: int) -> None:
        """A stage advanced to ``done`` of ``total`` units."""

    def log(self, message: str) -> None:
        """A line for the user (warnings, choices the engine made)."""

    def stage_finished(self, stage: str, seconds: float) -> None:
        """A stage completed."""

    # -- cancellation ----------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if a stop was requested."""
        if self._cancel.is_set():
            raise Cancelled("audit stopped by the user; run it again to resume")


class RecordingProgress(Progress):
    """Keeps every event; used by tests and as a base for simple front ends."""

    def __init__(self, cancel_after: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.events: list[tuple[str, int, int]] = []
        self.messages: list[str] = []
        self._cancel_after = cancel_after

    def update(self, stage: str, done: int, total: int) -> None:
        self.events.append((stage, done, total))
        if self._cancel_after and stage == self._cancel_after[0] and done >= self._cancel_after[1]:
            self.cancel()

    def log(self, message: str) -> None:
        self.messages.append(message)


class WorkspaceLog(Progress):
    """Passes everything to the front end's reporter and appends each log line, each finished
    stage and the run's start and end to the workspace's ``run.log`` — the log outlives the
    window or terminal that ran the audit. Cancellation is the front end's, or a stop request
    file (``stop_file``) that any other process may write."""

    def __init__(self, inner: Progress, path: Path, stop_file: Path | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.path = Path(path)
        self.stop_file = Path(stop_file) if stop_file else None
        self._lock = threading.Lock()

    def write(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
            except OSError:
                pass  # a log that cannot be written never stops an audit; the database is the record

    def update(self, stage: str, done: int, total: int) -> None:
        self.inner.update(stage, done, total)

    def log(self, message: str) -> None:
        self.write(message)
        self.inner.log(message)

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.write(f"stage {stage} finished in {seconds:.1f} s")
        self.inner.stage_finished(stage, seconds)

    def cancel(self) -> None:
        self.inner.cancel()

    @property
    def cancelled(self) -> bool:
        if self.stop_file is not None and not self.inner.cancelled and self.stop_file.exists():
            self.inner.cancel()
        return self.inner.cancelled

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("audit stopped by the user; run it again to resume")


def read_log(path: Path, max_lines: int = 5000) -> list[str]:
    """The last ``max_lines`` lines of a workspace's run log (none before the first run)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-max_lines:]
