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


def test_a_workspace_reads_what_its_classifier_was_trained_with_from_the_header(tmp_path):
    from side_engine.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.ensure_dirs()
    assert ws.classifier_hparams("td") is None  # none stored yet
    save_classifier(ResNetClassifier(3, 1, 4, time_dependent=True), ws.classifiers_dir / "td.safetensors")
    assert ws.classifier_hparams("td") == {"num_classes": 3, "in_channels": 1, "width": 4, "small_stem": True,
                                           "time_dependent": True}
    (ws.classifiers_dir / "ti.safetensors").write_bytes(b"\xff" * 64)  # not a safetensors file
    assert ws.classifier_hparams("ti") is None


def test_folded_guidance_copy_has_same_logits_and_input_gradient_and_leaves_original():
    from side_engine.classifiers import for_guidance, prefers_channels_last

    torch.manual_seed(1)
    for channels in (1, 3):
        ti = ResNetClassifier(6, channels, 8)
        ti.train()
        ti(torch.randn(32, channels, 32, 32) * 2 + 0.5)  # BatchNorm statistics far from (0, 1)
        td = time_dependent_from(ti.eval()).eval()
        with torch.no_grad():
            for block in td.blocks:
                block.time_proj.weight.normal_(0, 0.05)
        folded = for_guidance(td)
        assert prefers_channels_last(folded) and not prefers_channels_last(td)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in td.modules()) > 30  # original untouched
        assert not any(p.requires_grad for p in folded.parameters())
        x = torch.randn(4, channels, 32, 32)
        t = torch.tensor([0, 100, 500, 999])
        grads = []
        for model, xin in ((td, x), (folded, x.contiguous(memory_format=torch.channels_last))):
            xr = xin.clone().requires_grad_(True)
            logits = model(xr, t)
            (g,) = torch.autograd.grad(logits.log_softmax(1)[:, 2].sum(), xr)
            grads.append((logits.detach(), g))
        assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-4)
        assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-3, atol=1e-6 * grads[0][1].abs().max())


def test_a_distillation_temperature_softens_the_labels_and_keeps_their_order():
    from side_engine.classifier_training import soft_labels

    torch.manual_seed(0)
    ti = ResNetClassifier(6, 1, 8).eval()
    x = torch.randn(12, 1, 16, 16)
    plain, warm = soft_labels(ti, x), soft_labels(ti, x, temperature=4.0)
    with torch.no_grad():
        assert torch.allclose(plain, torch.softmax(ti(x), 1), atol=1e-6)
        assert torch.allclose(warm, torch.softmax(ti(x) / 4.0, 1), atol=1e-6)
    entropy = lambda p: -(p * p.log()).sum(1)  # noqa: E731
    assert bool((entropy(warm) > entropy(plain)).all()) and torch.equal(warm.argmax(1), plain.argmax(1))



def test_classifier_training_on_cpu_is_repeatable_weight_for_weight():
    """Two trainings from the same seed give the same classifier, stored in the standard layout.
    Training channels_last on CPU broke this: with torch 2.13's oneDNN the TI classifier's
    backward differed from run to run at this size, and at times aborted the process."""
    import copy

    from side_engine import classifier_training as ct
    from side_engine.progress import Progress

    x, y = torch.rand(24, 1, 16, 16) * 2 - 1, torch.arange(24) % 6
    ti = []
    for _ in range(2):
        torch.manual_seed(0)
        net = ResNetClassifier(6, 1, 4, True)
        ct.train_ti(x, y, net, 3, 1e-3, 8, 0, Progress())
        ti.append(net.state_dict())
    assert all(torch.equal(ti[0][k], ti[1][k]) for k in ti[0])

    torch.manual_seed(0)
    td = time_dependent_from(ResNetClassifier(4, 1, 8)).train()
    targets = torch.softmax(torch.randn(24, 4) * 3, 1)
    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    nets = [copy.deepcopy(td) for _ in range(2)]
    for net in nets:
        ct.train_td(net, x, targets, acp, 2, 1e-3, 8, 0, Progress())
    a, b = (net.state_dict() for net in nets)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], td.state_dict()["fc.weight"])  # it did train
    assert all(m.weight.is_contiguous() for m in nets[0].modules() if isinstance(m, torch.nn.Conv2d))
