"""Image sets read a batch at a time: the same rows, the same training, less memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from side_engine.image_rows import ImageRows
from side_engine.training_set import to_model_tensor_range


def _pixels(n: int, size: int = 8, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_rows_from_parts_are_the_rows_of_the_whole_in_any_order(tmp_path):
    whole = _pixels(23, channels=3)
    paths = []
    for lo, hi in ((0, 8), (8, 9), (9, 23)):  # memory-mapped parts of unequal length
        paths.append(tmp_path / f"p{lo}.npy")
        np.save(paths[-1], whole[lo:hi])
    rows = ImageRows([np.load(p, mmap_mode="r") for p in paths])
    assert len(rows) == 23 and rows.shape == (3, 8, 8) and rows.pixels
    idx = np.array([22, 0, 8, 8, 9, 3, 21])  # across parts, repeated, unordered
    assert np.array_equal(rows.rows(idx), whole[idx])
    expected = torch.from_numpy(to_model_tensor_range(whole[idx]))
    assert torch.equal(rows.take(idx), expected)
    got = torch.cat([x for _, x in rows.batches(5)])
    assert torch.equal(got, torch.from_numpy(to_model_tensor_range(whole)))
    with pytest.raises(IndexError, match="0..22"):
        rows.rows([23])


def test_float_rows_are_taken_as_they_are_and_parts_must_agree():
    latents = np.random.default_rng(1).standard_normal((6, 4, 2, 2)).astype(np.float32)
    rows = ImageRows(torch.from_numpy(latents))
    assert not rows.pixels and rows.shape == (4, 2, 2)
    assert torch.equal(rows.take([5, 1], dtype=torch.float64), torch.from_numpy(latents[[5, 1]]).double())
    with pytest.raises(ValueError, match="differ"):
        ImageRows([_pixels(2), _pixels(2, size=4)])
    with pytest.raises(ValueError, match="at least one"):
        ImageRows(np.zeros((0, 8, 8, 1), np.uint8))


def test_the_synthetic_set_is_read_from_its_chunks_as_one_array_would_be(tmp_path):
    from side_engine.stages import synthetic

    folder = tmp_path / "synthetic"
    folder.mkdir()
    full = _pixels(20)
    for lo, hi in ((0, 8), (8, 13), (13, 20)):
        synthetic._save_chunk(folder, lo, full[lo:hi])
    rows = synthetic.rows_of(folder, 18)  # fewer than the chunks hold: the last is cut
    assert len(rows) == 18
    assert np.array_equal(rows.stored(), synthetic.load_folder(folder, 18))
    assert np.array_equal(rows.stored(), full[:18])


def test_the_ti_classifier_trained_from_stored_pixels_is_the_one_trained_from_floats(tmp_path):
    """Streaming uint8 batches from a memory map is the same training as the whole set in
    memory as floats (the conversion is per pixel), weight for weight."""
    from side_engine.classifier_training import train_ti
    from side_engine.classifiers import ResNetClassifier
    from side_engine.progress import Progress

    pixels = _pixels(24, size=16)
    np.save(tmp_path / "train.npy", pixels)
    y = torch.arange(24) % 6
    nets = []
    stored = ImageRows(np.load(tmp_path / "train.npy", mmap_mode="r"))
    for x in (stored, torch.from_numpy(to_model_tensor_range(pixels))):
        torch.manual_seed(0)
        net = ResNetClassifier(6, 1, 4, True)
        report = train_ti(x, y, net, 3, 1e-3, 8, 0, Progress())
        nets.append((net.state_dict(), report))
    (a, ra), (b, rb) = nets
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ra.accuracy == rb.accuracy and ra.final_loss == rb.final_loss
    assert ra.details["noise_0.2_accuracy"] == rb.details["noise_0.2_accuracy"]


def test_an_npy_file_reads_rows_from_disk_as_the_array_holds_them(tmp_path):
    """Rows read with pread, never mapped (a memory map's read pages stay resident: the whole
    set again after one epoch): ints, slices and any rows, in any order."""
    from side_engine.image_rows import NpyFile

    a = _pixels(50, size=4, channels=3)
    np.save(tmp_path / "a.npy", a)
    f = NpyFile(tmp_path / "a.npy")
    assert len(f) == 50 and f.shape == a.shape and f.dtype == a.dtype
    assert np.array_equal(f[3], a[3]) and np.array_equal(f[-1], a[-1]) and np.array_equal(f[5:17], a[5:17])
    idx = np.array([7, 3, 4, 5, 49, 0, 3])
    assert np.array_equal(f[idx], a[idx]) and np.array_equal(ImageRows(f).rows(idx), a[idx])
    b = np.random.default_rng(0).standard_normal((10, 4, 2, 2)).astype(np.float32)
    np.save(tmp_path / "b.npy", b)
    assert np.array_equal(NpyFile(tmp_path / "b.npy")[[9, 1]], b[[9, 1]])
    with pytest.raises(IndexError):
        f[50]


def test_the_import_written_to_a_file_holds_the_pixels_it_would_keep_in_memory(tmp_path, faces):
    from side_engine.image_rows import NpyFile
    from side_engine.training_set import import_training_set

    (faces_dir := tmp_path / "f").mkdir()
    for p in sorted(faces.iterdir())[:6]:
        (faces_dir / p.name).write_bytes(p.read_bytes())
    (faces_dir / "broken.png").write_bytes(b"not an image")
    kept = import_training_set(faces_dir, 16, 1)
    written = import_training_set(faces_dir, 16, 1, into=tmp_path / "pixels.npy")
    assert isinstance(written.pixels, NpyFile) and written.paths == kept.paths and len(written.unreadable) == 1
    assert np.array_equal(written.pixels[0:len(written.pixels)], kept.pixels)
    assert np.array_equal(np.load(tmp_path / "pixels.npy"), kept.pixels)  # a plain .npy
    assert not (tmp_path / "pixels.raw").exists()


def test_freed_heap_goes_back_before_a_stage_measures_its_peak():
    """glibc keeps small freed blocks in the process (the duration probe left ~1 GB at 128 px,
    counted in every later stage's peak); ``memory.release`` hands them back."""
    import sys

    from side_engine import memory

    if not sys.platform.startswith("linux"):
        pytest.skip("VmRSS and malloc_trim are Linux's")

    def rss_mb() -> float:
        from pathlib import Path

        line = next(s for s in Path("/proc/self/status").read_text().splitlines() if s.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    memory.release()
    before = rss_mb()
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MiB in blocks below the mmap threshold
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touched: resident
    blocks.reverse()
    del blocks[1:]  # all but the last-allocated freed: glibc cannot shrink the heap's top past it
    held = rss_mb()
    memory.release()
    assert held - before > 200 and rss_mb() < held - 150
