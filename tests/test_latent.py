"""Latent diffusion models: loaded with their autoencoder, audited in latent space, scored on
decoded images; folders with parts the engine does not use are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from side_audit.cli import main
from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.checkpoint import describe_checkpoint, inspect_checkpoint, load_target
from side_engine.errors import Cancelled, InputError
from side_engine.progress import RecordingProgress

from .conftest import TINY_SETTINGS, make_tiny_latent_model

LATENT_SETTINGS = dict(TINY_SETTINGS, scorer="pixel")


def _reference_images(target, seeds, k, steps):
    """λ = 0 images made again from stored seeds with diffusers' own parts only: a DDIM loop of
    the scheduler over the UNet, then the pipeline's decode (LDMPipeline: ``vqvae.decode(z)``;
    a KL model: ``vae.decode(z / scaling_factor)``)."""
    from diffusers import DDIMScheduler

    from side_engine.sampler import sample_inputs

    sched = DDIMScheduler.from_config(target.scheduler.config)
    sched.set_timesteps(steps)
    shape = (target.channels, target.sample_size, target.sample_size)
    z = torch.stack([sample_inputs(s, shape, k)[0] for s in seeds])
    with torch.no_grad():
        for t in sched.timesteps:
            z = sched.step(target.unet(z, t).sample, t, z, eta=0.0).prev_sample
        if target.vae_kind == "VQModel":
            x = target.vae.decode(z).sample
        else:
            x = target.vae.decode(z / target.vae.config.scaling_factor).sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("model", ["tiny_ldm", "tiny_kl_model"])
def test_a_latent_model_audits_end_to_end_resumes_and_scores_its_decoded_images(model, request, tmp_path, faces,
                                                                                capsys):
    path = request.getfixturevalue(model)
    assert main(["init", str(tmp_path / "ws"), "--checkpoint", str(path), "--train-data", str(faces)]) == 0
    assert "latent model:" in capsys.readouterr().out
    ws = init_workspace(tmp_path / "ws2", str(path), str(faces), **LATENT_SETTINGS)
    with pytest.raises(Cancelled):
        AuditRunner(ws, RecordingProgress(cancel_after=("sample", 8))).run()
    AuditRunner(ws).run()  # resumes
    db = storage.connect(ws.db_path)
    target = load_target(path)
    model_info = storage.get_kv(db, "model")
    assert model_info["space"] == "latent" and model_info["latent_shape"] == [2, 16, 16]
    assert model_info["resolution"] == 32 and model_info["weights"] == "raw"
    cfg = ws.load_config()
    n_rows = len(cfg.grid()) * cfg.n_per_lambda
    rows = list(db.query("select method, lam, sample_index, seed, best, nearest from samples order by id"))
    assert len(rows) == n_rows == len({(r["method"], r["lam"], r["sample_index"]) for r in rows})
    # the training images the audit compares with are pixels at the decoded size
    train = np.load(ws.cache_dir / "train_pixels.npy")
    assert train.shape[1:] == (32, 32, 1)
    assert np.load(ws.cache_dir / "train_latents.npy").shape[1:] == (2, 16, 16)
    # λ = 0 scores equal those of images made again from the stored seeds by diffusers' own parts
    random = [r for r in rows if r["method"] == "random"]
    k = storage.get_kv(db, "k")
    images = _reference_images(target, [r["seed"] for r in random], k, cfg.steps)
    from side_engine.scorers import PixelScorer

    scorer = PixelScorer()
    ours = scorer.embed(images)
    ref = scorer.embed(train)
    dists = ((ours[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    assert [int(i) for i in dists.argmin(1)] == [r["nearest"] for r in random]
    best = [r["best"] for r in random]
    stored_png = [p["png"] for p in db.query("select png from samples where png is not null limit 1")]
    db.close()
    assert np.all(np.isfinite(best))
    out = tmp_path / "report.html"
    assert main(["report", str(ws.root), "--format", "html", "--out", str(out)]) == 0
    assert f"latent: {target.vae_kind} + UNet on 2×16×16 latents, decoded to 32 px × 1; raw weights" in out.read_text()
    if stored_png:  # an in-band image is stored as the decoded image
        from PIL import Image

        assert Image.open(ws.root / stored_png[0]).size == (32, 32)


def test_guidance_raises_the_target_class_in_latent_space(tiny_ldm):
    """The TD classifier is differentiated on z_t; guidance raises its target class there."""
    from side_engine.classifiers import ResNetClassifier, time_dependent_from
    from side_engine.sampler import Guide, GuidedSampler

    target = load_target(tiny_ldm)
    torch.manual_seed(0)
    td = time_dependent_from(ResNetClassifier(3, 2, 8, True)).eval()
    sampler = GuidedSampler(target.unet, target.scheduler, "ddim", 10)
    n = 6
    noise = torch.randn(n, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    cls = torch.arange(n) % 3
    plain = sampler.sample(noise, torch.zeros(n), cls, steps=4).images
    guided = sampler.sample(noise, torch.full((n,), 20.0), cls, [Guide(td, torch.arange(n), True)], steps=4).images
    t = torch.full((n,), sampler.timesteps[4], dtype=torch.long)
    with torch.no_grad():
        p_plain = F.softmax(td(plain, t), 1).gather(1, cls[:, None])
        p_guided = F.softmax(td(guided, t), 1).gather(1, cls[:, None])
    assert bool((p_guided > p_plain).all())
    assert target.decode(guided).shape == (n, 1, 32, 32)


def _edited_copy(src, dst, rel: str, **changes):
    """A copy of the model folder ``src`` with ``changes`` made to its JSON file ``rel``."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / rel).read_text())
    (dst / rel).write_text(json.dumps({**cfg, **changes}))
    return dst


def test_latent_folders_that_do_not_fit_together_are_refused_by_name(tmp_path, faces):
    ldm = make_tiny_latent_model(tmp_path / "ldm", "VQModel")
    # an autoencoder whose latent channels differ from the UNet's
    bad = _edited_copy(ldm, tmp_path / "bad_channels", "vqvae/config.json", latent_channels=3, vq_embed_dim=3)
    with pytest.raises(InputError, match=r"in_channels = 2 but the autoencoder .*latent_channels = 3"):
        inspect_checkpoint(bad)
    # an autoencoder declaring another image size than the UNet's latents decode to
    bad = _edited_copy(ldm, tmp_path / "bad_size", "vqvae/config.json", sample_size=64)
    with pytest.raises(InputError, match=r"decode to 32 px .* declares sample_size = 64"):
        load_target(bad)
    # a pipeline with a part the engine does not use
    extra = _edited_copy(ldm, tmp_path / "extra", "model_index.json", text_encoder=["transformers", "CLIPTextModel"])
    with pytest.raises(InputError, match="text_encoder — parts SIDE Audit does not use"):
        load_target(extra)
    # the UNet of a latent model given alone: its autoencoder would be ignored
    with pytest.raises(InputError, match="belongs to a latent model"):
        load_target(ldm / "unet", scheduler_config=str(ldm / "scheduler" / "scheduler_config.json"))
    with pytest.raises(InputError, match="belongs to a latent model"):
        init_workspace(tmp_path / "ws", str(ldm / "unet"), str(faces))


def test_a_text_conditioned_unet_is_refused_with_what_it_would_need(tmp_path):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    sd = tmp_path / "sd"
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                         layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                         attention_head_dim=2).save_pretrained(sd / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=100).save_pretrained(sd / "scheduler")
    (sd / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "safety_checker": [None, None]}))
    for load in (load_target, inspect_checkpoint):
        with pytest.raises(InputError, match="text-conditioned model .* SIDE audits unconditional models"):
            load(sd)


def test_ema_weights_are_chosen_recorded_and_refused_where_absent(tmp_path, faces):
    from diffusers import UNet2DModel

    model = make_tiny_latent_model(tmp_path / "kl", "AutoencoderKL")
    with pytest.raises(InputError, match="no EMA weights"):
        load_target(model, weights="ema")
    raw = load_target(model)
    assert raw.weights == "raw" and "raw weights" in describe_checkpoint(inspect_checkpoint(model))
    ema = UNet2DModel.from_pretrained(model / "unet")
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    ema.save_pretrained(model / "unet_ema", safe_serialization=True)  # as diffusers' training scripts do
    chosen = load_target(model)  # auto: the EMA weights
    assert chosen.weights == "ema" and chosen.sha256 != raw.sha256
    first = next(iter(chosen.unet.state_dict()))
    assert torch.allclose(chosen.unet.state_dict()[first], 0.5 * raw.unet.state_dict()[first])
    assert load_target(model, weights="raw").sha256 == raw.sha256
    info = inspect_checkpoint(model, weights="raw")
    assert info["ema_available"] and "set weights = 'ema'" in describe_checkpoint(info)
    ws = init_workspace(tmp_path / "ws", str(model), str(faces), **dict(LATENT_SETTINGS, weights="raw"))
    AuditRunner(ws).run()
    db = storage.connect(ws.db_path)
    assert storage.get_kv(db, "model")["weights"] == "raw"
    assert json.loads(db["audits"].get(1)["config"])["weights"] == "raw"
    db.close()
    cfg = ws.config_path.read_text().replace('weights = "raw"', 'weights = "ema"')
    ws.config_path.write_text(cfg)
    from side_engine.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match="changed since this audit started"):
        AuditRunner(ws).run()  # other weights are another model: never mixed into one audit


@pytest.mark.slow
def test_a_latent_audit_on_two_processes_equals_one(tmp_path, tiny_kl_model, faces):
    """The other rank rebuilds the autoencoder from the owner's broadcast and decodes its batches."""
    from .test_processes import _same_samples

    one = init_workspace(tmp_path / "one", str(tiny_kl_model), str(faces), **LATENT_SETTINGS)
    AuditRunner(one).run()
    two = init_workspace(tmp_path / "two", str(tiny_kl_model), str(faces), **LATENT_SETTINGS)
    assert main(["run", str(two.root), "--nproc", "2", "--quiet"]) == 0
    _same_samples(one, two)
    assert "sampling on 2 processes" in two.log_path.read_text()
