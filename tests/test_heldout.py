"""How sure a band is: held-out faces the demo model never saw, scored as generated images are,
give each band its false-alarm rate; a training image among them is left out, and said so."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from side_audit.cli import main
from side_engine import results, storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.demo import DEMO_FACES, DEMO_MODEL, QUICK_SETTINGS
from side_engine.errors import InputError
from side_engine.report import headline

RANDOM_ONLY = dict(QUICK_SETTINGS, methods=["random"], lambdas=[0], n_per_lambda=16)


@pytest.fixture()
def heldout_faces(tmp_path):
    """20 LFW faces the demo model was not trained on (it saw 40-63), and one it was."""
    skimage_data = pytest.importorskip("skimage.data")
    folder = tmp_path / "heldout"
    folder.mkdir()
    for i, face in enumerate(skimage_data.lfw_subset()[:20]):
        Image.fromarray((255 * face).round().astype(np.uint8)).save(folder / f"face_{i:02d}.png")
    first = sorted(DEMO_FACES.glob("*.png"))[0]
    shutil.copy(first, folder / "actually_a_training_image.png")
    return folder


def test_held_out_faces_give_each_band_its_false_alarm_rate(tmp_path, heldout_faces):
    ws = init_workspace(tmp_path / "ws", str(DEMO_MODEL), str(DEMO_FACES), heldout_data=str(heldout_faces),
                        **RANDOM_ONLY)
    runner = AuditRunner(ws)
    runner.run()
    db = storage.connect(ws.db_path)
    held = storage.get_kv(db, "heldout")
    assert held["n"] == 20 and held["n_training_images_left_out"] == 1
    assert held["training_images_left_out"] == ["actually_a_training_image.png"]
    assert any("are training images" in w for w in storage.get_kv(db, "warnings", []))
    # scored exactly as a generated image: the same scorer and index give the same best match
    from side_engine.checkpoint import load_target
    from side_engine.neighbours import TrainIndex
    from side_engine.scorers import make_scorer
    from side_engine.training_set import to_model_pixels

    cfg = ws.load_config()
    target = load_target(cfg.checkpoint)
    bands, higher = results.stored_bands(db)
    scorer = make_scorer(results.audit_info(db)["scorer"])
    index = TrainIndex(scorer, np.load(ws.cache_dir / f"train_{scorer.name}.npy"), bands)
    pixels = [to_model_pixels(Image.open(heldout_faces / r["path"]), target.image_size, target.image_channels,
                              cfg.resize_filter)[0] for r in held["images"]]
    again = index.score(scorer.embed(np.stack(pixels)))
    assert [r["best"] for r in held["images"]] == pytest.approx(again.best.tolist(), rel=1e-6)
    # each band's rate is the share of held-out images whose best match lies in it
    best = np.array([r["best"] for r in held["images"]])
    for row in held["bands"]:
        band = next(b for b in bands if b.name == row["band"])
        inside = (best < band.hi) if row["cumulative"] else ((best >= band.lo) & (best < band.hi))
        assert row["count"] == int(inside.sum()) and row["lo"] <= row["rate"] <= row["hi"]
    # the metrics stage sets Random's rate beside it; the verdict says it in every band
    data = results.metrics_json(db)
    cal = data["calibration"]
    assert cal["calibrated"] and cal["n"] == 20 and len(cal["bands"]) == 2 * len(bands)
    for row in cal["bands"]:
        (a,) = row["against"]
        assert a["method"] == "random" and a["difference_lo"] <= a["difference"] <= a["difference_hi"]
        assert a["above"] == (a["difference_lo"] > 0)
    lines = headline(data, results.exposure(db), data["audit"]["n_train"], bands)
    assert sum("Held-out non-members land in this band" in line for line in lines) == len(bands)
    assert not any("uncalibrated" in line for line in lines)
    db.close()


def test_a_missing_held_out_folder_is_refused_before_any_sampling(tmp_path):
    ws = init_workspace(tmp_path / "ws", str(DEMO_MODEL), str(DEMO_FACES), heldout_data=str(tmp_path / "nope"),
                        **RANDOM_ONLY)
    with pytest.raises(InputError, match="setting 'heldout_data' = .*nope: no such folder"):
        AuditRunner(ws).run()
    db = storage.connect(ws.db_path)
    assert db["samples"].count == 0  # nothing spent on it
    db.close()


def test_without_held_out_images_the_bands_are_said_to_be_uncalibrated(tmp_path, capsys):
    ws = init_workspace(tmp_path / "ws", str(DEMO_MODEL), str(DEMO_FACES), **RANDOM_ONLY)
    AuditRunner(ws).run()
    assert main(["metrics", str(ws.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calibration"] == {"calibrated": False} and data["heldout"] is None
    db = storage.connect(ws.db_path)
    bands, _ = results.stored_bands(db)
    lines = headline(data, results.exposure(db), data["audit"]["n_train"], bands)
    db.close()
    assert any(line.startswith("The bands are uncalibrated") for line in lines)
