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
