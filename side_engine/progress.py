"""One progress/cancel interface for every engine stage.

Stages call :meth:`Progress.update` after each batch and :meth:`Progress.check`
between batches, so a front end (CLI bars, Qt signals, tests) only has to
subclass this and a cancel request takes effect at the next batch boundary.
"""

from __future__ import annotations

import threading

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
