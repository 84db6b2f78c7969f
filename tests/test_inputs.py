"""Every bad input gets one clear error naming the file or setting, and the right exit code."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from side_audit.cli import main
from side_engine import config
from side_engine.checkpoint import load_target
from side_engine.errors import ConfigError, InputError
from side_engine.training_set import import_training_set


def test_loads_pipeline_and_bare_unet(tiny_model, tmp_path):
    t = load_target(tiny_model)
    assert (t.sample_size, t.channels) == (16, 1) and len(t.sha256) == 64
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model / "unet", bare)
    with pytest.raises(InputError, match="scheduler"):
        load_target(bare)
    shutil.copy(tiny_model / "scheduler" / "scheduler_config.json", bare)
    assert load_target(bare).sha256 != ""


def test_missing_and_malformed_checkpoint(tiny_model, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_target(tmp_path / "nope")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    (bad / "unet" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config\.json: malformed JSON"):
        load_target(bad)


def test_truncated_safetensors(tiny_model, tmp_path):
    bad = tmp_path / "trunc"
    shutil.copytree(tiny_model, bad)
    w = bad / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    with pytest.raises(InputError, match="safetensors"):
        load_target(bad)


def test_conditional_unet_refused(tiny_model, tmp_path):
    bad = tmp_path / "cond"
    shutil.copytree(tiny_model, bad)
    cfg = json.loads((bad / "unet" / "config.json").read_text())
    cfg["num_class_embeds"] = 10
    (bad / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="conditional"):
        load_target(bad)
    cfg["_class_name"] = "UNet2DConditionModel"
    (bad / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="conditional"):
        load_target(bad)


class Boom:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_refused_by_default_and_never_executed(tiny_model, tmp_path):
    bad = tmp_path / "pickled"
    shutil.copytree(tiny_model, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"x": Boom(str(marker))}, bad / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(InputError, match="pickle weights are refused"):
        load_target(bad)
    with pytest.raises(InputError, match="weights_only"):
        load_target(bad, allow_pickle=True)
    assert not marker.exists()


def test_plain_pickled_state_dict_loads_when_allowed(tiny_model, tmp_path):
    ok = tmp_path / "bin"
    shutil.copytree(tiny_model, ok)
    state = load_target(tiny_model).unet.state_dict()
    (ok / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, ok / "unet" / "diffusion_pytorch_model.bin")
    assert load_target(ok, allow_pickle=True).sha256


def test_training_set_resize_crop_convert_and_report(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub dir ü").mkdir(parents=True)
    Image.new("RGB", (40, 20), (255, 0, 0)).save(root / "wide.png")
    Image.new("L", (3, 3), 128).save(root / "tiny.png")
    palette = Image.new("RGB", (30, 30), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE)
    palette.save(root / "sub dir ü" / "palette.bmp")
    (root / "zero.png").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8garbage")
    (root / "notes.txt").write_text("not an image")
    s = import_training_set(root, 16, 3)
    assert s.pixels.shape == (3, 16, 16, 3) and s.pixels.dtype == np.uint8
    assert sorted(p for p, _ in s.unreadable) == ["corrupt.jpg", "zero.png"]
    assert s.converted == 1  # the grey one; the palette image is colour
    assert s.labels[s.paths.index("sub dir ü/palette.bmp")] == "sub dir ü"
    grey = import_training_set(root, 8, 1)
    assert grey.pixels.shape == (3, 8, 8, 1) and grey.converted == 2


def test_empty_and_unreadable_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        import_training_set(tmp_path / "empty", 16, 1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="none of 1 image files is readable"):
        import_training_set(tmp_path / "bad", 16, 1)


def test_config_errors_name_the_setting():
    good = config.dumps(config.AuditConfig(checkpoint="m", train_data="d"))
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.loads(good + "\n[[[")
    with pytest.raises(ConfigError, match="unknown setting 'run.bogus'"):
        config.loads(good.replace("seed = 0", "seed = 0\nbogus = 1"))
    with pytest.raises(ConfigError, match="belongs in \\[run\\]"):
        config.loads(good.replace("[sampling]", "[sampling]\nseed = 3"))
    for bad, match in [("lambdas = []", "'lambdas' is empty"), ("lambdas = [0, -1]", "'lambdas' holds -1"),
                       ('device = "tpu"', "'device'"), ('lambdas = ["a"]', "'lambdas' holds 'a'")]:
        text = good
        key = bad.split(" =")[0]
        text = "\n".join(bad if line.startswith(key + " =") else line for line in text.splitlines())
        with pytest.raises(ConfigError, match=match):
            config.loads(text).validate()
    with pytest.raises(ConfigError, match="should be of type int"):
        config.loads(good.replace("seed = 0", 'seed = "zero"'))


def test_cli_exit_codes_for_bad_input(tmp_path, tiny_model, faces, capsys):
    assert main(["run", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "w"), "--checkpoint", str(tmp_path / "x"), "--train-data", str(faces)]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "w"), "--checkpoint", str(tiny_model), "--train-data",
                 str(faces), "--lambdas", "0,-2"]) == 2
    assert "'lambdas' holds -2" in capsys.readouterr().err
    ws = tmp_path / "w2"
    assert main(["init", str(ws), "--checkpoint", str(tiny_model), "--train-data", str(faces)]) == 0
    text = (ws / "audit.toml").read_text().replace("k = 0", "k = 500")
    (ws / "audit.toml").write_text(text)
    assert main(["run", str(ws), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'k' = 500 is larger than the number of training images (12)" in err
    (ws / "audit.toml").write_text(text.replace("k = 500", "k = 0").replace('device = "auto"', 'device = "cuda"'))
    if not torch.cuda.is_available():
        assert main(["run", str(ws), "--quiet"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
