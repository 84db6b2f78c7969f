"""The workspace database: migrations, stage rows and stored values."""

from __future__ import annotations

from side_engine import storage


def test_a_new_database_has_every_table_and_reopening_keeps_the_data(tmp_path):
    path = tmp_path / "audit.db"
    db = storage.connect(path)
    tables = set(db.table_names())
    assert {"audits", "train_images", "samples", "matches", "metrics", "topk", "summary", "classifiers",
            "decisions", "stages", "kv"} <= tables
    storage.set_kv(db, "k", 7)
    storage.set_kv(db, "model", {"space": "pixel", "latent_shape": [2, 8, 8]})
    storage.set_stage(db, "embed", 1, status="done", seconds=2.5)
    storage.set_stage(db, "import", 0, status="done")
    db.close()
    again = storage.connect(path)
    assert set(again.table_names()) == tables  # the migrations ran once
    assert storage.get_kv(again, "k") == 7 and storage.get_kv(again, "model")["latent_shape"] == [2, 8, 8]
    assert storage.get_kv(again, "missing", "default") == "default"
    assert [r["name"] for r in storage.stage_rows(again)] == ["import", "embed"]  # by position
    storage.set_stage(again, "embed", 1, done=3, total=4)  # an update keeps what it does not name
    row = {r["name"]: r for r in storage.stage_rows(again)}["embed"]
    assert (row["status"], row["seconds"], row["done"], row["total"]) == ("done", 2.5, 3, 4)
    again.close()


def test_a_read_only_connection_cannot_write(tmp_path):
    import sqlite3

    import pytest

    path = tmp_path / "audit.db"
    storage.connect(path).close()
    ro = storage.connect(path, readonly=True)
    with pytest.raises(sqlite3.OperationalError):
        storage.set_kv(ro, "k", 1)
    ro.close()
