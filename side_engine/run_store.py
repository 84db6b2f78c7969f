"""The one object through which a run writes its workspace database.

A stage never sees SQL: it asks the store whether it is done, runs inside ``store.timed(...)``,
and hands over what it produced (the training images' rows, the labels, a classifier's record,
a batch of samples); the store owns the tables, the transactions and the key-value record. What
a stage writes as files (caches, synthetic chunks, PNGs, classifier weights) stays the stage's,
under the workspace's folders. The runner (``side_engine.audit``) writes the audit's own record
through the same object.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import memory, storage
from .errors import WorkspaceError
from .stages import NAMES

if TYPE_CHECKING:
    import sqlite_utils

    from .progress import Progress


class RunStore:
    """The workspace database of one run: every write of the stages and of the runner. A stage's
    timing tells ``progress`` when it ends and records the peak memory of ``device``."""

    def __init__(self, db: sqlite_utils.Database, path: Path, progress: Progress | None = None,
                 device: torch.device | None = None) -> None:
        from .progress import Progress

        self._db, self.path = db, path
        self.progress, self.device = progress or Progress(), device

    @classmethod
    def open(cls, path: Path, progress: Progress | None = None, device: torch.device | None = None) -> RunStore:
        return cls(storage.connect(path), path, progress, device)

    def on_this_thread(self) -> RunStore:
        """A store on a connection of its own, for a thread that writes beside the run's."""
        return RunStore.open(self.path, self.progress, self.device)

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite_utils.Database:
        """For the engine's readers of stored results (``results``, ``estimate``), not for stages."""
        return self._db

    # -- stages ------------------------------------------------------------------------------
    def stage_row(self, stage: str) -> dict[str, Any]:
        return {r["name"]: r for r in storage.stage_rows(self._db)}.get(stage, {})

    def is_done(self, stage: str) -> bool:
        return self.stage_row(stage).get("status") == "done"

    def set_progress(self, stage: str, done: int, total: int) -> None:
        storage.set_stage(self._db, stage, NAMES.index(stage), done=done, total=total)

    def timed(self, stage: str) -> StageTimer:
        """``with store.timed(name):`` stores the stage as running, then done, stopped or failed."""
        return StageTimer(self, stage)

    # -- the key-value record ---------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return storage.get_kv(self._db, key, default)

    def put(self, key: str, value: Any) -> None:
        storage.set_kv(self._db, key, value)

    def add_warning(self, text: str) -> None:
        warnings = self.get("warnings", [])
        if text not in warnings:
            self.put("warnings", warnings + [text])

    # -- the audit's own record (the runner's) ----------------------------------------------------
    def audit_record(self) -> dict | None:
        rows = list(self._db["audits"].rows)
        return rows[0] if rows else None

    def create_audit_record(self, record: dict, model_summary: dict) -> None:
        with self._db.atomic():
            self._db["audits"].insert({"id": 1, "created": storage.now(), **record,
                                       "train_fingerprint": self.get("train_fingerprint"),
                                       "n_train": self._db["train_images"].count})
            self.put("model", model_summary)

    def update_audit_record(self, values: dict) -> None:
        with self._db.atomic():
            self._db["audits"].update(1, values)

    # -- training images ----------------------------------------------------------------------
    def replace_training_images(self, rows: list[dict], record: dict[str, Any]) -> None:
        """The imported set's rows (index, path, SHA-256, given label) and what the import
        recorded about it, in one transaction."""
        with self._db.atomic():
            self._db["train_images"].delete_where()
            self._db["train_images"].insert_all({**r, "surrogate": None} for r in rows)
            for key, value in record.items():
                self.put(key, value)

    def training_images(self) -> list[dict]:
        """(path, given label) of every training image, in index order."""
        return list(self._db.query("select path, label from train_images order by idx"))

    def training_sha256(self) -> set[str]:
        return {r[0] for r in self._db.execute("select sha256 from train_images")}

    # -- labels ------------------------------------------------------------------------------------
    def store_labels(self, labels: np.ndarray, k: int) -> None:
        with self._db.atomic():
            for i, label in enumerate(labels.tolist()):
                self._db.execute("update train_images set surrogate = ? where idx = ?", [label, i])
            self.put("k", int(k))

    def stored_labels(self) -> tuple[int | None, np.ndarray]:
        """(K, the surrogate class of every training image)."""
        classes = np.array([r["surrogate"] for r in self._db.query("select surrogate from train_images order by idx")],
                           dtype=np.int64)
        return self.get("k"), classes

    # -- classifiers --------------------------------------------------------------------------------
    def store_classifier(self, name: str, relative_path: str, report) -> None:
        with self._db.atomic():
            self._db["classifiers"].upsert({
                "name": name, "path": relative_path, "accuracy": report.accuracy,
                "details": json.dumps({"measured_on": report.held_out, "final_loss": report.final_loss,
                                       **report.details}),
            }, pk="name")

    # -- samples ------------------------------------------------------------------------------------
    def stored_samples(self) -> set[tuple[str, float, int]]:
        """(method, λ, index) of every stored sample."""
        return {(r["method"], r["lam"], r["sample_index"]) for r in
                self._db.query("select method, lam, sample_index from samples")}

    def guided_count(self) -> int:
        if "samples" not in self._db.table_names():
            return 0
        return self._db.execute("select count(*) from samples where lam > 0").fetchone()[0]

    def store_samples(self, rows: list[dict], pairs: list[tuple[int, int, float]]) -> None:
        """A batch's samples and their in-band matches (row, training index, score), all of it or
        none of it."""
        try:
            with self._db.atomic():
                ids = [self._db["samples"].insert(row).last_pk for row in rows]
                self._db["matches"].insert_all({"sample_id": ids[r], "train_idx": j, "score": s} for r, j, s in pairs)
        except sqlite3.OperationalError as e:
            raise WorkspaceError(f"{self.path}: cannot store a batch ({e}); the database keeps every "
                                 "earlier batch — free space or fix permissions, then run again") from None

    # -- metrics ------------------------------------------------------------------------------------
    def store_metrics(self, cfg, higher_is_closer: bool, bands, scorer_name: str) -> None:
        from . import results

        results.compute_and_store(self._db, cfg, higher_is_closer, bands, scorer_name)

    def guided_summary(self) -> list[dict]:
        """Per guided method and λ: how often guidance reached its target, and its ratio to ε."""
        return list(self._db.query("select method, lam, target_accuracy, guidance_ratio from summary "
                                   "where method != 'random' order by method, lam"))


@dataclass
class StageTimer:
    """Stores a stage's status and accumulated seconds around its work."""

    store: RunStore
    name: str
    t0: float = field(default=0.0, init=False)

    def __enter__(self):
        self.t0 = time.time()
        memory.reset_peak(self.store.device)
        row = self.store.stage_row(self.name)
        storage.set_stage(self.store.connection, self.name, NAMES.index(self.name), status="running",
                          started=row.get("started") or self.t0, message="")
        return self

    def __exit__(self, exc_type, exc, tb):
        now = time.time()
        row = self.store.stage_row(self.name)
        prev = row.get("seconds") or 0.0
        status = "done" if exc is None else ("stopped" if exc_type.__name__ == "Cancelled" else "failed")
        # a resumed stage keeps the largest peak of its runs
        peaks = {key: max(v, row.get(key) or 0.0) for key, v in
                 (("peak_rss_mb", memory.peak_rss_mb()), ("peak_device_mb", memory.peak_device_mb(self.store.device)))
                 if v is not None}
        storage.set_stage(self.store.connection, self.name, NAMES.index(self.name), status=status, ended=now,
                          seconds=prev + (now - self.t0), message="" if exc is None else str(exc)[:500], **peaks)
        if exc is None:
            self.store.progress.stage_finished(self.name, prev + now - self.t0)
        return False
