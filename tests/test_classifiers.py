import torch

from side_engine.classifiers import (
    ResNetClassifier,
    load_classifier,
    save_classifier,
    small_stem_for,
    time_dependent_from,
)


def test_resnet34_layout_and_stems():
    m = ResNetClassifier(10, 3, 8)
    assert len(m.blocks) == 3 + 4 + 6 + 3
    assert small_stem_for(32, "auto") and small_stem_for(64, "auto") and not small_stem_for(128, "auto")
    big = ResNetClassifier(5, 3, 8, small_stem=False).eval()
    assert big(torch.randn(2, 3, 128, 128)).shape == (2, 5)


def test_td_classifier_equals_ti_at_initialisation_for_every_t():
    torch.manual_seed(0)
    ti = ResNetClassifier(7, 1, 8)
    # make BatchNorm statistics non-trivial, then compare in eval mode
    ti.train()
    ti(torch.randn(16, 1, 32, 32))
    ti.eval()
    td = time_dependent_from(ti).eval()
    x = torch.randn(5, 1, 32, 32)
    for t in (0, 10, 999):
        assert torch.equal(ti(x), td(x, torch.full((5,), t)))
    assert all(torch.count_nonzero(b.time_proj.weight) == 0 for b in td.blocks)


def test_save_and_load_roundtrip(tmp_path):
    ti = ResNetClassifier(3, 1, 4).eval()
    td = time_dependent_from(ti).eval()
    save_classifier(td, tmp_path / "td.safetensors", {"accuracy": 0.5})
    back = load_classifier(tmp_path / "td.safetensors")
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 40])
    assert back.time_dependent and torch.equal(back(x, t), td(x, t))
