"""The workspace database: one SQLite file per audit, WAL mode, versioned migrations.

Writers commit one batch per transaction, so a stopped or killed run leaves
only whole batches; readers (the desktop app) open their own connection and
see committed work while the engine writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .errors import WorkspaceError

migrations = Migrations("side_audit")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["audits"].create({
        "id": int, "created": str, "config": str, "checkpoint_path": str, "checkpoint_sha256": str,
        "train_path": str, "train_fingerprint": str, "n_train": int, "versions": str, "device": str,
        "scorer": str, "scorer_source": str, "scorer_sha256": str,
    }, pk="id")
    db["stages"].create({
        "name": str, "position": int, "status": str, "done": int, "total": int,
        "started": float, "ended": float, "seconds": float, "message": str,
    }, pk="name")
    db["classifiers"].create({"name": str, "path": str, "accuracy": float, "details": str}, pk="name")
    db["train_images"].create({"idx": int, "path": str, "sha256": str, "label": str, "surrogate": int},
                              pk="idx")
    db["samples"].create({
        "id": int, "method": str, "lam": float, "sample_index": int, "seed": int, "cls": int,
        "best": float, "nearest": int, "second": float, "gu_ratio": float, "png": str, "steered": int,
    }, pk="id")
    db["samples"].create_index(["method", "lam", "sample_index"], unique=True)
    db["matches"].create({"sample_id": int, "train_idx": int, "score": float},
                         pk=("sample_id", "train_idx"), foreign_keys=[("sample_id", "samples", "id")])
    db["matches"].create_index(["train_idx"])
    db["metrics"].create({
        "method": str, "lam": float, "n_generated": int, "scorer": str, "band": str,
        "ams": float, "ums": float, "ams_cumulative": float, "ums_cumulative": float,
    }, pk=("method", "lam", "band"))
    db["topk"].create({"method": str, "lam": float, "fraction": float, "mean_best": float},
                      pk=("method", "lam", "fraction"))
    db["summary"].create({"method": str, "lam": float, "n_generated": int, "p95_best": float,
                          "gu_fraction": float, "mean_best": float, "target_accuracy": float},
                         pk=("method", "lam"))


@migrations()
def m002_decisions(db: sqlite_utils.Database) -> None:
    db["decisions"].create({"sample_id": int, "train_idx": int, "decision": str, "note": str,
                            "decided_at": str}, pk="sample_id")
    db["kv"].create({"key": str, "value": str}, pk="key")


@migrations()
def m003_measures(db: sqlite_utils.Database) -> None:
    """Guidance-to-ε ratio per sample; audits started before the product had the sampler
    convention and Gu's pixel measure keep what they were started with: the 'clipped-eps'
    sampler and Carlini's calibrated l2, now named 'pixel-carlini'."""
    db["samples"].add_column("guidance_ratio", float)
    for suffix in ("", "_cumulative"):
        for col in ("ams", "ums"):
            db["metrics"].add_column(f"{col}{suffix}_lo", float)
            db["metrics"].add_column(f"{col}{suffix}_hi", float)
    for col in ("gu_fraction_lo", "gu_fraction_hi", "target_accuracy_lo", "target_accuracy_hi", "guidance_ratio"):
        db["summary"].add_column(col, float)
    for row in list(db["audits"].rows):
        cfg = json.loads(row["config"])
        if "sampler_convention" in cfg:
            continue
        cfg["sampler_convention"] = "clipped-eps"
        cfg.setdefault("table_lambdas", [])
        scorer = row["scorer"]
        if scorer == "pixel":
            scorer = "pixel-carlini"
            cfg["scorer"] = "pixel-carlini"
            cfg["bands_pixel_carlini"] = cfg.get("bands_pixel")
            db.execute("update metrics set scorer = 'pixel-carlini' where scorer = 'pixel'")
        db["audits"].update(row["id"], {"config": json.dumps(cfg), "scorer": scorer})



@migrations()
def m004_stage_memory(db: sqlite_utils.Database) -> None:
    """Each stage's peak host memory (and CUDA device memory), as measured while it ran."""
    db["stages"].add_column("peak_rss_mb", float)
    db["stages"].add_column("peak_device_mb", float)


@migrations()
def m005_exposure(db: sqlite_utils.Database) -> None:
    """The training images at risk, ranked, as the metrics stage computed them: the app, the
    reports and the JSON read them instead of grouping every stored pair again."""
    db["exposure"].create({"rank": int, "train_idx": int, "high": int, "mid": int, "low": int, "total": int,
                           "best_score": float, "best_sample": int}, pk="rank")


@migrations()
def m006_gallery_index(db: sqlite_utils.Database) -> None:
    """The gallery reads the closest stored pairs first: an index over the samples kept as PNG,
    by score, answers that (and a band's range) without sorting 2.5 M rows at each filter."""
    db.execute("create index if not exists samples_gallery on samples (best, id) where png is not null")


@migrations()
def m007_sample_cluster(db: sqlite_utils.Database) -> None:
    """Under synthetic-clusters, the kept cluster each generated image falls in (by the scorer):
    the on-target measure there, where no training image carries a class."""
    db["samples"].add_column("cluster", int)


OPEN_TRIES = 40  # ~10 s of retries: see ``connect``


def connect(path: Path, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open (and migrate) the database; one connection per thread.

    Processes that open a workspace at the same moment (the app beside a starting run, the
    ranks' owner, a test polling) race to switch it to WAL and to migrate it. SQLite answers
    some of those races "database is locked" at once, without waiting out the busy timeout
    (a read transaction cannot be upgraded while another connection writes), find the table
    another one just created, or record a migration another one just recorded: measured, 41
    of 60 simultaneous first opens failed. Such an open is retried with a growing pause."""
    for attempt in range(OPEN_TRIES):
        conn = None
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=True, timeout=30)
                return sqlite_utils.Database(conn)
            conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            migrations.apply(db)
            return db
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            # the other opener got there first: it took the lock, created the table, added the
            # column, or recorded the migration both found pending (the later one's changes rolled back with it)
            opening = isinstance(e, sqlite3.OperationalError)
            racing = any(word in str(e) for word in ("locked", "already exists", "duplicate column")) if opening else (
                isinstance(e, sqlite3.IntegrityError) and "_sqlite_migrations" in str(e))
            if racing and attempt + 1 < OPEN_TRIES:
                time.sleep(min(0.5, 0.02 * (attempt + 1)))
                continue
            if opening:
                raise WorkspaceError(f"{path}: cannot open the workspace database ({e})") from None
            raise WorkspaceError(f"{path}: not a SIDE Audit database or corrupt ({e})") from None
    raise AssertionError("unreachable")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- stages --------------------------------------------------------------------

def stage_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    if "stages" not in db.table_names():
        return []
    return list(db.query("select * from stages order by position"))


def set_stage(db: sqlite_utils.Database, name: str, position: int, **values: Any) -> None:
    with db.atomic():
        row = {"name": name, "position": position, **values}
        db["stages"].upsert(row, pk="name")


def get_kv(db: sqlite_utils.Database, key: str, default: Any = None) -> Any:
    rows = list(db.query("select value from kv where key = ?", [key]))
    return json.loads(rows[0]["value"]) if rows else default


def set_kv(db: sqlite_utils.Database, key: str, value: Any) -> None:
    with db.atomic():
        db["kv"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
