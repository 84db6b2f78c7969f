"""The guided sampler: equals diffusers when unguided, guidance raises the target class."""

import math

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from torch.nn import functional as F

from side_engine.classifiers import ResNetClassifier, for_guidance, time_dependent_from
from side_engine.sampler import GuidancePlan, Guide, GuidedSampler, sample_inputs, sample_seed


def _unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def _clipping_scheduler(cls=DDPMScheduler):
    # a random UNet's x0 estimates lie far outside [-1, 1]: every step clips, the case where the
    # sampler conventions differ (a trained model clips less, but does: docs/method.md)
    return cls(num_train_timesteps=100, clip_sample=True)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_lambda_zero_is_the_checkpoints_own_ddim_pipeline(eta):
    unet, sched = _unet(), _clipping_scheduler()
    seeds = [11, 12, 13]
    ref = DDIMPipeline(unet=unet, scheduler=sched)(
        batch_size=3, generator=[torch.Generator().manual_seed(s) for s in seeds], num_inference_steps=10,
        eta=eta, output_type="np").images  # NHWC on [0, 1]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    ours = GuidedSampler(unet, sched, "ddim", 10, eta).sample(noise, torch.zeros(3), torch.zeros(3, dtype=torch.long),
                                                               generators=gens).images
    ours = (ours / 2 + 0.5).permute(0, 2, 3, 1).numpy()
    assert abs(ours - ref).max() < 1e-5


def test_lambda_zero_is_the_checkpoints_own_ddpm_pipeline():
    unet, sched = _unet(), _clipping_scheduler()
    seeds = [21, 22]
    sched.set_timesteps(10)  # DDPMPipeline takes the step count as an argument
    ref = DDPMPipeline(unet=unet, scheduler=sched)(
        batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds], num_inference_steps=10,
        output_type="np").images
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    ours = GuidedSampler(unet, sched, "ddpm", 10).sample(noise, torch.zeros(2), torch.zeros(2, dtype=torch.long),
                                                          generators=gens).images
    ours = (ours / 2 + 0.5).permute(0, 2, 3, 1).numpy()
    assert abs(ours - ref).max() < 1e-5


def test_clipped_eps_convention_is_diffusers_use_clipped_model_output_and_differs():
    unet, sched = _unet(), _clipping_scheduler()
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    zeros, cls = torch.zeros(3), torch.zeros(3, dtype=torch.long)
    ours = GuidedSampler(unet, sched, "ddim", 10, convention="clipped-eps").sample(noise, zeros, cls).images
    ref = DDIMScheduler.from_config(sched.config)
    ref.set_timesteps(10)
    x = noise.clone()
    for t in ref.timesteps:
        with torch.no_grad():
            x = ref.step(unet(x, t).sample, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    assert torch.allclose(ours, x.clamp(-1, 1), atol=1e-4)
    pipeline = GuidedSampler(unet, sched, "ddim", 10).sample(noise, zeros, cls).images
    assert (pipeline - ours).abs().max() > 0.05  # the setting matters on a clipping model
    with pytest.raises(ValueError, match="convention"):
        GuidedSampler(unet, sched, "ddim", 10, convention="bogus")
    from side_engine.errors import InputError

    with pytest.raises(InputError, match="thresholding"):
        GuidedSampler(unet, DDPMScheduler(num_train_timesteps=100, thresholding=True), "ddim", 10)
    with pytest.raises(InputError, match="learned"):
        GuidedSampler(unet, DDPMScheduler(num_train_timesteps=100, variance_type="learned_range"), "ddpm", 10)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_guidance_is_continuous_and_linear_as_lambda_goes_to_zero(kind):
    unet, sched = _unet(), _clipping_scheduler()
    td = _td_classifier()
    sampler = GuidedSampler(unet, sched, kind, 6)
    n = 3
    noise = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    cls, rows = torch.arange(n) % 3, torch.arange(n)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(n)]  # noqa: E731

    def one_step(lam):
        return sampler.sample(noise, torch.full((n,), lam), cls, [Guide(td, rows, True)], generators=gens(),
                              steps=1).images

    base = sampler.sample(noise, torch.zeros(n), cls, generators=gens(), steps=1).images
    d_small, d_double = one_step(1e-3) - base, one_step(2e-3) - base
    assert d_small.abs().max() > 0  # guidance acts at any λ > 0 ...
    assert d_small.abs().max() < 1e-3  # ... and fades with λ, clipping or not
    assert torch.allclose(d_double, 2 * d_small, atol=1e-6)  # one step is linear in λ


def _td_classifier(k=3):
    torch.manual_seed(3)
    ti = ResNetClassifier(k, 1, 4).eval()
    td = time_dependent_from(ti).eval().requires_grad_(False)
    with torch.no_grad():  # give time a real effect so the test is not about the TI network only
        for block in td.blocks:
            block.time_proj.weight.normal_(0, 0.01)
        td.fc.weight.mul_(50)  # a confident classifier, as a trained one is
    return td


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_guidance_raises_target_class_probability(clip, kind):
    # with clipping too: a random UNet's x0 estimates lie far outside [-1, 1], the case where
    # clipping after guidance would reverse the guided step
    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100, clip_sample=clip)
    td = _td_classifier()
    sampler = GuidedSampler(unet, sched, kind, 10)
    n = 6
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(n)]  # noqa: E731
    noise = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    cls = torch.arange(n) % 3
    rows = torch.arange(n)
    plain = sampler.sample(noise, torch.zeros(n), cls, steps=4, generators=gens()).images
    guided = sampler.sample(noise, torch.full((n,), 20.0), cls, [Guide(td, rows, True)], steps=4,
                            generators=gens()).images
    t = torch.full((n,), sampler.timesteps[4], dtype=torch.long)
    with torch.no_grad():
        p_plain = F.softmax(td(plain, t), 1).gather(1, cls[:, None])
        p_guided = F.softmax(td(guided, t), 1).gather(1, cls[:, None])
    assert (p_guided > p_plain).all(), (p_plain.ravel(), p_guided.ravel())
    # the opposite sign must lower it: the sign is what makes SIDE work
    away = sampler.sample(noise, torch.full((n,), -20.0), cls, [Guide(td, rows, True)], steps=4,
                          generators=gens()).images
    with torch.no_grad():
        p_away = F.softmax(td(away, t), 1).gather(1, cls[:, None])
    assert (p_away < p_plain).all()


def test_mixed_lambda_batch_equals_separate_batches_and_lambda_zero_is_unguided():
    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100)
    td = _td_classifier()
    sampler = GuidedSampler(unet, sched, "ddim", 5)
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    cls = torch.tensor([0, 1, 2, 0])
    lam = torch.tensor([0.0, 3.0, 0.0, 6.0])
    rows = torch.nonzero(lam > 0).ravel()
    mixed = sampler.sample(noise, lam, cls, [Guide(td, rows, True)]).images
    for i in range(4):
        alone_rows = torch.arange(1) if lam[i] > 0 else torch.zeros(0, dtype=torch.long)
        alone = sampler.sample(noise[i:i + 1], lam[i:i + 1], cls[i:i + 1], [Guide(td, alone_rows, True)]).images
        assert torch.allclose(alone, mixed[i:i + 1], atol=1e-4)
    plain = sampler.sample(noise, torch.zeros(4), cls).images
    assert torch.allclose(plain[[0, 2]], mixed[[0, 2]], atol=1e-5)
    assert not torch.allclose(plain[[1, 3]], mixed[[1, 3]], atol=1e-3)


def test_per_sample_seed_fixes_noise_class_and_ddpm_path():
    s = sample_seed(0, 12)
    assert s == sample_seed(0, 12) and s != sample_seed(0, 13) and s != sample_seed(1, 12)
    assert 0 <= s < 2**63
    a, ca, ga = sample_inputs(s, (1, 16, 16), 10)
    b, cb, gb = sample_inputs(s, (1, 16, 16), 10)
    assert torch.equal(a, b) and ca == cb
    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100)
    sampler = GuidedSampler(unet, sched, "ddpm", 6)
    x1 = sampler.sample(a[None], torch.zeros(1), torch.zeros(1, dtype=torch.long), generators=[ga]).images
    other, _, go = sample_inputs(sample_seed(0, 99), (1, 16, 16), 10)
    x2 = sampler.sample(torch.stack([other, b]), torch.zeros(2), torch.zeros(2, dtype=torch.long),
                        generators=[go, gb]).images
    assert torch.allclose(x1[0], x2[1], atol=1e-5)  # same image whatever the batch


def test_concurrent_guidance_equals_sequential_and_skips_the_classifier_at_lambda_zero():
    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100)
    td = _td_classifier()
    calls = []
    td.register_forward_hook(lambda *a: calls.append(1))
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    cls = torch.tensor([0, 1, 2, 1])
    lam = torch.tensor([0.0, 4.0, 0.0, 8.0])
    rows = torch.nonzero(lam > 0).ravel()
    seq = GuidedSampler(unet, sched, "ddim", 6, overlap=False)
    conc = GuidedSampler(unet, sched, "ddim", 6, overlap=True)
    assert conc.overlap and not seq.overlap
    a = seq.sample(noise, lam, cls, [Guide(td, rows, True)]).images
    b = conc.sample(noise, lam, cls, [Guide(td, rows, True)]).images
    conc.close()
    assert torch.allclose(a, b, atol=1e-6)
    assert len(calls) == 12  # one classifier pass per step per sampler
    calls.clear()
    conc.sample(noise, torch.zeros(4), cls, [Guide(td, torch.zeros(0, dtype=torch.long), True)])
    assert calls == []  # no guided row: the classifier never runs


def test_cpu_helper_thread_is_kept_only_while_it_is_measured_faster():
    from side_engine.sampler import OverlapChoice

    c = OverlapChoice(recheck=4)
    seen = []
    for _ in range(12):
        use = c.next()
        seen.append(use)
        c.record(use, 1.0 if use else 0.5)  # sequential measured faster (cores are busy elsewhere)
    # warm-up and first measurement concurrent, then one sequential batch, then sequential,
    # with the concurrent way re-measured every 4th batch
    assert seen == [True, True, False, False, True, False, False, False, True, False, False, False]
    c.record(True, 0.1)  # other work stopped: concurrent is faster again
    assert [c.next(), c.next()] == [False, True]  # (the 12th is a re-check of the other way)


def test_auto_overlap_on_cpu_gives_the_same_images_either_way():
    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100)
    td = _td_classifier()
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    cls, lam = torch.tensor([0, 1, 2, 1]), torch.tensor([2.0, 4.0, 0.0, 8.0])
    guides = [Guide(td, torch.nonzero(lam > 0).ravel(), True)]
    ref = GuidedSampler(unet, sched, "ddim", 4, overlap=False).sample(noise, lam, cls, guides).images
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        auto = GuidedSampler(unet, sched, "ddim", 4)
    finally:
        torch.set_num_threads(before)
    assert auto.overlap_choice is not None
    ways = set()
    for _ in range(4):
        out = auto.sample(noise, lam, cls, guides).images
        ways.add(auto.overlap)
        assert torch.allclose(out, ref, atol=1e-6)
    auto.close()
    assert ways == {True, False}  # both ways were timed
    assert set(auto.overlap_choice.seconds) == {True, False}


def test_compile_failure_falls_back_to_eager(monkeypatch):
    class Broken:
        def __init__(self, module):
            pass

        def __call__(self, *args):
            raise RuntimeError("no C++ compiler found\nlong trace")

    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100)
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    ref = GuidedSampler(unet, sched, "ddim", 4).sample(noise, torch.zeros(2), torch.zeros(2, dtype=torch.long)).images
    monkeypatch.setattr(torch, "compile", Broken)
    s = GuidedSampler(unet, sched, "ddim", 4)
    s.compile = True  # compile is only honoured on CUDA; force the path here
    with pytest.warns(UserWarning, match="torch.compile failed"):
        out = s.sample(noise, torch.zeros(2), torch.zeros(2, dtype=torch.long)).images
    assert s.compile_error == "RuntimeError: no C++ compiler found"
    assert torch.equal(out, ref)


def test_batch_from_peaks_fits_the_free_memory_line():
    from side_engine.devices import batch_from_peaks

    mb = 2**20
    # 100 MB fixed + 50 MB per image, measured at batches 2 and 6; 10 GB free, 60 % used
    batch, per, fixed = batch_from_peaks([200 * mb, 400 * mb], (2, 6), 10_000 * mb, 0.6, cap=1024)
    assert per == 50 * mb and fixed == 100 * mb
    assert batch == 112  # (6000 - 100) / 50 = 118 -> a multiple of 8
    assert batch_from_peaks([200 * mb, 400 * mb], (2, 6), 10**12, 0.6, cap=256)[0] == 256
    assert batch_from_peaks([200 * mb, 400 * mb], (2, 6), 300 * mb, 0.6)[0] == 1  # never 0


def test_guidance_window_limits_guidance_to_low_noise_steps():
    unet, sched = _unet(), _clipping_scheduler()
    td = _td_classifier()
    n = 3
    noise = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    cls, rows, lam = torch.arange(n) % 3, torch.arange(n), torch.full((n,), 10.0)
    sampler = GuidedSampler(unet, sched, "ddim", 6)
    plain = sampler.sample(noise, torch.zeros(n), cls).images
    everywhere = sampler.sample(noise, lam, cls, [Guide(td, rows, True)]).images
    never = sampler.sample(noise, lam, cls, [Guide(td, rows, True)], plan=GuidancePlan((0, -1)))  # no step
    assert torch.equal(never.images, plain) and never.guided_steps == 0 and never.guidance_ratio is not None
    low = sampler.sample(noise, lam, cls, [Guide(td, rows, True)], plan=GuidancePlan((0, 49)))  # low-noise half
    assert 0 < low.guided_steps < 6
    low = low.images
    assert not torch.allclose(low, plain, atol=1e-4) and not torch.allclose(low, everywhere, atol=1e-4)
    from side_engine.config import AuditConfig
    from side_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="guidance_max_t"):
        AuditConfig(checkpoint="m", train_data="d", guidance_max_t=0.0).validate()
    # the high-noise half: the last steps run unguided
    high = sampler.sample(noise, lam, cls, [Guide(td, rows, True)], plan=GuidancePlan((50, 99))).images
    assert not torch.allclose(high, plain, atol=1e-4) and not torch.allclose(high, low, atol=1e-4)
    for bad in ({"guidance_min_t": -0.1}, {"guidance_min_t": 0.6, "guidance_max_t": 0.5}):
        with pytest.raises(ConfigError, match="guidance_min_t"):
            AuditConfig(checkpoint="m", train_data="d", **bad).validate()


def test_guidance_min_t_leaves_the_last_steps_unguided():
    """The audit's interval reaches the sampler: native t below guidance_min_t·(T-1) unguided."""
    from types import SimpleNamespace

    from side_engine.config import AuditConfig
    from side_engine.guidance import guidance_plan
    from side_engine.sampler import make_sampler

    target = SimpleNamespace(unet=_unet(), scheduler=_clipping_scheduler())
    cfg = AuditConfig(checkpoint="m", train_data="d", guidance_min_t=0.2, steps=6)
    sampler = make_sampler(target, cfg, torch.device("cpu"), compile=False)
    assert guidance_plan(cfg, sampler.T, None).window == (math.ceil(0.2 * (sampler.T - 1)), sampler.T - 1)
    assert guidance_plan(AuditConfig(checkpoint="m", train_data="d", steps=6), sampler.T, None).window \
        == (0, sampler.T)


def test_a_bf16_guide_leaves_lambda_zero_exact_and_keeps_the_guided_direction():
    # guide_precision = bf16: the classifier's gradient under autocast, the UNet in fp32, so Random
    # is the same image bit for bit and a guided image moves the same way, up to bf16 rounding
    unet, sched = _unet(), DDPMScheduler(num_train_timesteps=100)
    td = for_guidance(_td_classifier())
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    cls = torch.tensor([0, 1, 2, 1])
    lam = torch.tensor([0.0, 6.0, 0.0, 6.0])
    rows = torch.nonzero(lam > 0).ravel()
    full = GuidedSampler(unet, sched, "ddim", 6, overlap=False)
    half = GuidedSampler(unet, sched, "ddim", 6, overlap=False, guide_precision="bf16")
    assert full.guide_precision == "fp32" and half.guide_precision == "bf16"
    plain = full.sample(noise, torch.zeros(4), cls).images
    a = full.sample(noise, lam, cls, [Guide(td, rows, True)]).images
    b = half.sample(noise, lam, cls, [Guide(td, rows, True)]).images
    assert torch.equal(a[[0, 2]], b[[0, 2]]) and torch.equal(a[[0, 2]], plain[[0, 2]])
    assert not torch.equal(a[[1, 3]], b[[1, 3]])  # bf16 did run
    shift_a, shift_b = (a - plain)[[1, 3]].flatten(1), (b - plain)[[1, 3]].flatten(1)
    assert (F.cosine_similarity(shift_a, shift_b) > 0.95).all()
    assert torch.allclose(shift_a.norm(dim=1), shift_b.norm(dim=1), rtol=0.1)


def test_guide_precision_auto_is_bf16_only_on_a_cpu_that_has_it_natively(monkeypatch):
    from side_engine import devices
    from side_engine.config import AuditConfig
    from side_engine.errors import ConfigError

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.guide_precision("auto", "fp32", cpu) == "bf16"
    assert devices.guide_precision("auto", "fp32", cuda) == "fp32"  # CUDA: as precision
    assert devices.guide_precision("auto", "bf16", cuda) == "bf16"
    assert devices.guide_precision("auto", "fp32", mps) == "fp32"
    assert devices.guide_precision("same", "fp32", cpu) == "fp32"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.guide_precision("auto", "fp32", cpu) == "fp32"  # emulated bf16 would be slower
    assert devices.guide_precision("bf16", "fp32", cpu) == "bf16"  # asked for: given
    assert devices.guide_precision("fp32", "bf16", cuda) == "fp32"
    assert devices.guide_precision("bf16", "fp32", mps) == "fp32"  # no bf16 autocast on MPS
    with pytest.raises(ConfigError, match="guide_precision"):
        devices.guide_precision("fp16", "fp32", cpu)
    with pytest.raises(ConfigError, match="'guide_precision' = 'fp16'"):
        AuditConfig(checkpoint="m", train_data="d", guide_precision="fp16").validate()
