"""The engine on a worker thread, talking to the views by signals only."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import traceback

from PySide6.QtCore import QObject, QThread, Signal

from side_engine.audit import AuditRunner
from side_engine.errors import ERROR_PREFIX, Cancelled, SideError
from side_engine.progress import Progress
from side_engine.workspace import Workspace


def _stopped(ws: Workspace) -> bool:
    """Whether the run that just ended left a stage stopped (rather than the audit complete)."""
    from side_engine import storage

    db = storage.connect(ws.db_path)
    try:
        return any(r.get("status") == "stopped" for r in storage.stage_rows(db))
    finally:
        db.close()


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
    """Runs (or resumes) one audit. ``cancel()`` stops it at the next batch boundary.

    With ``processes`` > 1 (e.g. "all GPUs") the audit runs as ``side-audit run --nproc N`` in
    child processes started by torchrun; this thread relays what they store — stage progress
    from the database, lines of ``run.log`` — and a cancel becomes the workspace's stop request,
    which every process of the run sees."""

    POLL_S = 0.5

    def __init__(self, workspace: str, parent: QObject | None = None) -> None:
        super().__init__(workspace, parent)
        self.progress = QtProgress()

    def cancel(self) -> None:
        self.progress.cancel()

    def work(self) -> dict:
        processes = Workspace(self.workspace).load_config().processes
        if processes > 1:
            from side_engine.ranks import refuse_in_frozen_bundle

            refuse_in_frozen_bundle(processes)
            return self._work_in_processes(processes)
        return AuditRunner(self.workspace, self.progress).run()

    def _work_in_processes(self, n: int) -> dict:
        ws = Workspace(self.workspace)
        log_at = ws.log_path.stat().st_size if ws.log_path.exists() else 0
        seen: dict[str, tuple] = {}
        self._relay_db = None  # one read-only connection for every poll (opening one migrates the database)
        with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
            job = subprocess.Popen([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--nproc", str(n),
                                    "--quiet"], stdout=out, stderr=subprocess.STDOUT)
            stop_sent = False
            while True:
                done = job.poll() is not None
                if self.progress.cancelled and not stop_sent:
                    stop_sent = True
                    try:
                        ws.request_stop("the app")
                    except SideError as e:  # not a reason to leave the processes unwatched
                        self.progress.log(f"{e}; the run goes on")
                log_at = self._relay(ws, log_at, seen)
                if done:
                    break
                time.sleep(self.POLL_S)
            out.seek(0)
            tail = out.read()[-2000:].strip()
        if self._relay_db is not None:
            self._relay_db.close()
        if job.returncode != 0:
            if stop_sent:
                raise Cancelled("audit stopped by the user; run it again to resume")
            said = [line[len(ERROR_PREFIX):] for line in tail.splitlines() if line.startswith(ERROR_PREFIX)]
            if said:  # the run said why (once, from the process that owns the workspace)
                raise SideError(said[-1])
            raise SideError(f"the {n}-process run ended with exit status {job.returncode}: {tail or 'no output'}")
        if stop_sent and _stopped(ws):
            raise Cancelled("audit stopped by the user; run it again to resume")
        from side_engine import results, storage

        db = storage.connect(ws.db_path)
        try:
            return results.metrics_json(db)
        finally:
            db.close()

    def _relay(self, ws: Workspace, log_at: int, seen: dict) -> int:
        """New run.log lines and changed stage progress, as the in-process run would signal them."""
        from side_engine import storage

        try:
            with open(ws.log_path, encoding="utf-8", errors="replace") as f:
                f.seek(log_at)
                text = f.read()
                log_at = f.tell()
        except OSError:
            text = ""
        for line in text.splitlines():
            self.progress.log(line.split("  ", 1)[-1])
        if ws.db_path.exists():
            try:
                if self._relay_db is None:
                    self._relay_db = storage.connect(ws.db_path, readonly=True)
                rows = storage.stage_rows(self._relay_db)
            except Exception:  # noqa: BLE001 - not created or busy yet: the next poll reads it
                if self._relay_db is not None:
                    self._relay_db.close()
                self._relay_db, rows = None, []
            for row in rows:
                key = (row.get("status"), row.get("done"), row.get("total"))
                if seen.get(row["name"]) == key:
                    continue
                seen[row["name"]] = key
                if row.get("total"):
                    self.progress.update(row["name"], int(row.get("done") or 0), int(row["total"]))
                if row.get("status") == "done":
                    self.progress.stage_finished(row["name"], float(row.get("seconds") or 0.0))
        return log_at


class EstimateWorker(_EngineWorker):
    """Times the probe for one workspace (``estimate.estimate_workspace``); writes nothing."""

    def work(self) -> dict:
        from side_engine.estimate import estimate_workspace

        return estimate_workspace(self.workspace)


class LiveMetricsWorker(_EngineWorker):
    """The tables of an audit that is not complete, every interval computed from the samples
    stored so far (``results.live_metrics``), its training images at risk and the gallery's
    page for ``gallery_filters``: seconds at the paper's scale, so never on the window's thread.
    Reads through a connection of its own; writes nothing."""

    def __init__(self, workspace: str, gallery_filters: dict | None = None, parent: QObject | None = None) -> None:
        super().__init__(workspace, parent)
        self.gallery_filters = dict(gallery_filters or {})

    def work(self) -> dict:
        from side_engine import results, review, storage
        from side_engine.results.store import GALLERY_LIMIT

        t0 = time.perf_counter()
        db = storage.connect(Workspace(self.workspace).db_path, readonly=True)
        try:
            exposure = results.exposure(db)  # grouped from every pair so far: seconds at scale
            data = results.live_metrics(db, exposure)
            f = self.gallery_filters
            args = (f.get("band"), f.get("method"), f.get("lam"), f.get("train_idx"))
            rows = review.gallery_rows(db, *args, limit=GALLERY_LIMIT)
            total = review.gallery_count(db, *args) if len(rows) >= GALLERY_LIMIT else len(rows)
        finally:
            db.close()
        return {"workspace": self.workspace, "metrics": data, "exposure": exposure,
                "gallery": {"filters": f, "rows": rows, "total": total},
                "seconds": time.perf_counter() - t0}


class ExportWorker(_EngineWorker):
    """A report, written on a worker thread (data, charts, thumbnails: seconds at scale). A PDF's
    model is built here and laid out by Qt on the window's thread (``write_pdf``), the one part
    that needs it."""

    def __init__(self, workspace: str, fmt: str, out: str, parent: QObject | None = None) -> None:
        super().__init__(workspace, parent)
        self.fmt, self.out = fmt, out

    def work(self) -> dict:
        from side_engine.report import build_report, write_report

        if self.fmt == "pdf":
            return {"model": build_report(self.workspace), "out": self.out}
        return {"path": str(write_report(self.workspace, self.fmt, self.out)), "out": self.out}
