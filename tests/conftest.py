"""Small real inputs: a tiny random-init UNet2DModel pipeline and LFW faces from scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the suite runs on two workers (pyproject: pytest-xdist): OpenMP threads that spin while they
# wait would take the other worker's core (two spinning torch processes were measured ~40x slower
# each); set before torch loads OpenMP, and inherited by every process a test starts
from side_engine.cpu import prefer_passive_waits  # noqa: E402 - imports no torch

prefer_passive_waits()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(int(os.environ.get("SIDE_TEST_THREADS", max(1, (os.cpu_count() or 2) // _WORKERS))))


def make_tiny_pipeline(path: Path, channels: int = 1, size: int = 16, seed: int = 0) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(
        path, safe_serialization=True)
    return path


def make_tiny_latent_model(path: Path, kind: str = "VQModel", channels: int = 1, image_size: int = 32,
                           seed: int = 0) -> Path:
    """A tiny random latent model: an ``LDMPipeline`` folder (VQModel) or a folder of vae/ +
    unet/ + scheduler/ (AutoencoderKL, as diffusers' training scripts leave), 2 latent channels
    at half the image size."""
    from diffusers import AutoencoderKL, DDIMScheduler, LDMPipeline, UNet2DModel, VQModel

    torch.manual_seed(seed)
    ae = dict(in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 2,
              up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
              latent_channels=2, norm_num_groups=4, sample_size=image_size)
    vae = VQModel(**ae, num_vq_embeddings=64, vq_embed_dim=2) if kind == "VQModel" else AutoencoderKL(**ae)
    unet = UNet2DModel(sample_size=image_size // 2, in_channels=2, out_channels=2, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    if kind == "VQModel":
        LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler).save_pretrained(path, safe_serialization=True)
    else:
        vae.save_pretrained(path / "vae", safe_serialization=True)
        unet.save_pretrained(path / "unet", safe_serialization=True)
        scheduler.save_pretrained(path / "scheduler")
    return path


def write_faces(folder: Path, n: int = 12, size: int | None = None, mode: str = "L") -> Path:
    from PIL import Image
    from skimage.data import lfw_subset

    folder.mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(lfw_subset()[:n]):
        img = Image.fromarray((face * 255).round().astype(np.uint8))
        if size:
            img = img.resize((size, size))
        img.convert(mode).save(folder / f"face_{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("model") / "pipe")


@pytest.fixture(scope="session")
def tiny_rgb_model(tmp_path_factory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("model") / "pipe_rgb", channels=3)


@pytest.fixture(scope="session")
def tiny_ldm(tmp_path_factory) -> Path:
    return make_tiny_latent_model(tmp_path_factory.mktemp("model") / "ldm", "VQModel")


@pytest.fixture(scope="session")
def tiny_kl_model(tmp_path_factory) -> Path:
    return make_tiny_latent_model(tmp_path_factory.mktemp("model") / "kl", "AutoencoderKL")


@pytest.fixture(scope="session")
def faces(tmp_path_factory) -> Path:
    return write_faces(tmp_path_factory.mktemp("data") / "faces")


# the tiny audits label training images by k-means (K = 4) and train the TI classifier, so that
# every stage runs; the default label source (synthetic-clusters) has its own runs
TINY_SETTINGS = dict(
    label_source="clusters", classifier_width=4, classifier_epochs=2, classifier_min_steps=0, classifier_fit=0.0,
    n_syn=16, tdkd_epochs=1,
    lambdas=[0, 2, 5], n_per_lambda=6, steps=4, batch_size=8, device="cpu", k=4,
)


@pytest.fixture()
def tiny_workspace(tmp_path, tiny_model, faces):
    from side_engine.audit import init_workspace

    return init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **TINY_SETTINGS)


def stored_samples(ws):
    """(samples, in-band pairs, metric rows) of a workspace, in a stable order: for comparing audits."""
    from side_engine import storage

    db = storage.connect(ws.db_path)
    rows = [tuple(r.values()) for r in db.query(
        "select method, lam, sample_index, seed, cls, best, nearest, png from samples "
        "order by method, lam, sample_index")]
    matches = [tuple(r.values()) for r in db.query(
        "select s.method, s.lam, s.sample_index, m.train_idx, m.score from matches m join samples s "
        "on s.id = m.sample_id order by 1, 2, 3, 4")]
    metrics = [tuple(r.values()) for r in db.query("select * from metrics order by method, lam, band")]
    db.close()
    return rows, matches, metrics
