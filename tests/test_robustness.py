"""Crash safety (SIGKILL mid-run), changed inputs on resume, and the bad-input corpus."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from side_audit.cli import main
from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.errors import WorkspaceError
from side_engine.training_set import import_training_set

from .conftest import TINY_SETTINGS, write_faces

KILL_SETTINGS = dict(TINY_SETTINGS, n_per_lambda=24, batch_size=4, steps=8)


def _final(ws):
    db = sqlite3.connect(ws.db_path)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    keys = db.execute("select method, lam, sample_index, count(*) from samples group by 1, 2, 3 "
                      "having count(*) > 1").fetchall()
    assert not keys, f"duplicated samples: {keys}"
    samples = db.execute("select method, lam, sample_index, seed, best, nearest from samples "
                         "order by 1, 2, 3").fetchall()
    metrics = db.execute("select method, lam, band, ams, ums from metrics order by 1, 2, 3").fetchall()
    db.close()
    return samples, metrics


def _count(ws) -> int:
    try:
        db = sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True, timeout=1)
        n = db.execute("select count(*) from samples").fetchone()[0]
        db.close()
        return n
    except sqlite3.Error:
        return 0


def test_sigkill_during_sampling_and_scoring_then_resume(tmp_path, tiny_model, faces):
    ref = init_workspace(tmp_path / "ref", str(tiny_model), str(faces), **KILL_SETTINGS)
    AuditRunner(ref).run()
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **KILL_SETTINGS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for kill_after in (4, 32):  # once early in sampling, once well into scoring of later batches
        proc = subprocess.Popen([sys.executable, "-m", "side_audit", "run", str(ws.root), "--quiet"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while _count(ws) < kill_after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < _count(ws) < 72
    assert main(["run", str(ws.root), "--quiet"]) == 0
    got, want = _final(ws), _final(ref)
    assert got[0] == want[0]
    assert np.allclose([r[3:] for r in got[1]], [r[3:] for r in want[1]])


def test_resume_refuses_changed_training_images(tmp_path, tiny_model):
    data = write_faces(tmp_path / "faces", n=8)
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(data), **dict(TINY_SETTINGS, k=2))
    from side_engine.errors import Cancelled
    from side_engine.progress import RecordingProgress

    with pytest.raises(Cancelled):
        AuditRunner(ws, RecordingProgress(cancel_after=("sample", 1))).run()
    db = storage.connect(ws.db_path)
    before = db["samples"].count
    db.close()
    Image.new("L", (25, 25), 7).save(data / "face_000.png")
    with pytest.raises(WorkspaceError, match="training data .* changed"):
        AuditRunner(ws).run()
    db = storage.connect(ws.db_path)
    assert db["samples"].count == before  # nothing stored was lost
    db.close()


def _png_with_header(path, width, height):
    """A PNG that declares a huge size (a decompression bomb) without holding the pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_bad_image_corpus_is_reported_by_path(tmp_path):
    root = tmp_path / "corpus with spaces ✓"
    root.mkdir()
    Image.new("RGB", (64, 20), (10, 20, 30)).save(root / "non-square.png")
    Image.new("RGB", (2, 2), (200, 0, 0)).save(root / "tiny.jpg")
    Image.new("RGB", (40, 40), (1, 2, 3)).convert("P", palette=Image.ADAPTIVE).save(root / "palette.png")
    Image.new("L", (30, 30), 99).save(root / "grey.webp")
    shutil.copy(root / "non-square.png", root / "duplicate.png")
    (root / "zero.png").write_bytes(b"")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "text.bmp").write_text("hello")
    _png_with_header(root / "bomb.png", 40_000, 40_000)
    s = import_training_set(root, 16, 3)
    assert sorted(s.paths) == ["duplicate.png", "grey.webp", "non-square.png", "palette.png", "tiny.jpg"]
    assert sorted(p for p, _ in s.unreadable) == ["bomb.png", "corrupt.png", "text.bmp", "zero.png"]
    assert s.pixels.shape == (5, 16, 16, 3)
    assert len(set(s.hashes)) == 4  # the duplicate is kept and recognisable


def test_grey_data_for_rgb_model_is_converted_and_said(tmp_path, tiny_rgb_model, faces):
    # Through the CLI, in its own process, with the default 2 threads: this is how an RGB
    # audit crashed (SIGSEGV in TDKD backward on channels_last-strided input) before the
    # training tensors were made contiguous.
    ws = init_workspace(tmp_path / "ws", str(tiny_rgb_model), str(faces), **TINY_SETTINGS)
    out = subprocess.run([sys.executable, "-m", "side_audit", "run", str(ws.root)], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, COLUMNS="200"))
    assert out.returncode == 0, out.stderr
    assert "converted to RGB" in out.stderr
    assert np.load(ws.cache_dir / "train_pixels.npy").shape[-1] == 3


def test_one_image_folder_and_k_too_large_are_clear(tmp_path, tiny_model, capsys):
    one = tmp_path / "one"
    one.mkdir()
    Image.new("L", (20, 20), 50).save(one / "only.png")
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(one), **dict(TINY_SETTINGS, k=0))
    assert main(["run", str(ws.root), "--quiet"]) == 2
    assert "at least 2 classes" in capsys.readouterr().err


def test_unwritable_database_is_a_clear_error_and_keeps_data(tiny_workspace, monkeypatch, capsys):
    from side_engine.errors import Cancelled
    from side_engine.progress import RecordingProgress

    with pytest.raises(Cancelled):
        AuditRunner(tiny_workspace, RecordingProgress(cancel_after=("sample", 8))).run()

    real_insert = storage.sqlite_utils.db.Table.insert_all

    def full_disk(self, *a, **k):
        if self.name == "matches":
            raise sqlite3.OperationalError("database or disk is full")
        return real_insert(self, *a, **k)

    monkeypatch.setattr(storage.sqlite_utils.db.Table, "insert_all", full_disk)
    assert main(["run", str(tiny_workspace.root), "--quiet"]) == 3
    assert "cannot store a batch (database or disk is full)" in capsys.readouterr().err
    monkeypatch.undo()
    db = storage.connect(tiny_workspace.db_path)
    assert db["samples"].count == 8  # the failed batch rolled back whole
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.close()
    assert main(["run", str(tiny_workspace.root), "--quiet"]) == 0


def test_processes_opening_a_new_workspace_database_at_once_all_succeed(tmp_path):
    """The app, a starting run and a multi-process job may open (and migrate) a workspace's
    database at the same moment; SQLite answers some of those races "database is locked" at once
    (measured: 41 of 60 such opens failed) — each open retries instead of failing the run."""
    import multiprocessing as mp
    import time

    from tests._open_db import open_at

    with mp.get_context("spawn").Pool(6) as pool:
        for trial in range(3):
            path = str(tmp_path / f"a{trial}.db")
            start = time.time() + 1.5
            assert pool.starmap(open_at, [(path, start)] * 6) == ["ok"] * 6
