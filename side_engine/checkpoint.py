"""Load the audited model safely: diffusers folders, safetensors first, never unpickle.

A checkpoint is either a pipeline folder (``model_index.json``, ``unet/``,
``scheduler/``) or a bare ``UNet2DModel`` folder plus a scheduler config.
The UNet is built from its ``config.json`` and the weights are read with
safetensors; pickle files are refused unless the user allows them, and even
then loaded with ``torch.load(weights_only=True)`` so no code can run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from .errors import InputError

SAFE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")
PICKLE_WEIGHTS = ("diffusion_pytorch_model.bin", "pytorch_model.bin", "model.pt", "model.ckpt")
SCHEDULER_FILES = ("scheduler_config.json",)


AUTOENCODERS = ("VQModel", "AutoencoderKL")
PARTS = ("unet", "scheduler", "vqvae", "vae")  # the pipeline components SIDE Audit uses
# components of other pipelines: auditing without them would audit another model
OTHER_PARTS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "image_encoder", "safety_checker",
               "feature_extractor", "transformer", "prior", "controlnet", "movq", "decoder", "super_res")
EMA_VARIANT = "diffusion_pytorch_model.ema.safetensors"  # diffusers' variant="ema" file name
WEIGHTS = ("auto", "ema", "raw")


@dataclass
class TargetModel:
    """The audited model. For a latent model the UNet, the classifiers and the sampler work on
    latents (``channels``, ``sample_size``); images (``image_channels``, ``image_size``) come from
    ``decode`` and training images go in through ``encode``."""

    unet: UNet2DModel
    scheduler: DDPMScheduler
    path: Path
    sha256: str
    files: list[Path]
    vae: torch.nn.Module | None = None
    vae_kind: str = ""  # "VQModel" | "AutoencoderKL" | ""
    latent_scale: float = 1.0
    weights: str = "raw"  # which UNet weights: "raw" or "ema"

    @property
    def sample_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, list | tuple) else s)

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent(self) -> bool:
        return self.vae is not None

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.latent else 1

    @property
    def image_size(self) -> int:
        return self.sample_size * self.downsample

    @property
    def image_channels(self) -> int:
        return int(self.vae.config.in_channels) if self.latent else self.channels

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def to(self, device: torch.device) -> TargetModel:
        self.unet.to(device)
        if self.vae is not None:
            self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → what the UNet models: the latents the autoencoder's encoder gives
        (deterministic: a VQ model's pre-quantisation latents, as LDM trains on; a KL model's
        posterior mode, times its scaling factor), or the images themselves."""
        if not self.latent:
            return x
        dev = next(self.vae.parameters()).device
        out = self.vae.encode(x.to(dev, torch.float32))
        z = out.latents if self.vae_kind == "VQModel" else out.latent_dist.mode()
        return z * self.latent_scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """What the UNet made → images in [-1, 1] (unclamped), as the model's own pipeline decodes
        (LDMPipeline: ``vqvae.decode(z)``, which quantises; a KL model: ``vae.decode(z / s)``)."""
        if not self.latent:
            return z
        return self.vae.decode(z.float() / self.latent_scale).sample

    def summary(self) -> dict:
        out = {
            "path": str(self.path),
            "sha256": self.sha256,
            "resolution": self.image_size,
            "channels": self.image_channels,
            "parameters": self.num_parameters,
            "scheduler": self.scheduler.config.get("_class_name", type(self.scheduler).__name__),
            "train_timesteps": int(self.scheduler.config.num_train_timesteps),
            "prediction_type": self.scheduler.config.prediction_type,
            "space": "latent" if self.latent else "pixel",
            "weights": self.weights,
        }
        if self.latent:
            shape = [self.channels, self.sample_size, self.sample_size]
            out.update({"autoencoder": self.vae_kind, "latent_shape": shape, "latent_scale": self.latent_scale,
                        "autoencoder_parameters": sum(p.numel() for p in self.vae.parameters())})
        return out


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: malformed config (expected a JSON object)")
    return data


def sha256_files(paths: list[Path]) -> str:
    """One digest over the files, in name order, so any changed byte changes it."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class Layout:
    """Where a checkpoint folder keeps its parts."""

    unet_dir: Path
    scheduler: Path
    vae_dir: Path | None = None
    ema: Path | None = None  # a UNet folder (``unet_ema/``) or file (the ``ema`` variant) of EMA weights


def _present(index: dict, name: str) -> bool:
    """A pipeline component is there unless absent or ``[null, null]`` (an optional one left out)."""
    v = index.get(name)
    return v is not None and not (isinstance(v, list) and all(x is None for x in v))


def _locate(path: Path, scheduler_config: str) -> Layout:
    """The parts of a pipeline folder (``model_index.json``), a folder of component folders
    (``unet/``, ``scheduler/``, optionally ``vae/`` or ``vqvae/``) or a bare UNet folder."""
    if not path.exists():
        raise InputError(f"checkpoint {path}: no such folder")
    if not path.is_dir():
        raise InputError(f"checkpoint {path}: not a folder (give the diffusers model folder)")
    index_path = path / "model_index.json"
    if index_path.exists() or (path / "unet").is_dir():
        if index_path.exists():
            index = _read_json(index_path)
            where = index_path
            names = {k for k in index if not k.startswith("_") and _present(index, k)}
        else:
            where = path
            names = {d.name for d in path.iterdir() if d.is_dir() and d.name in PARTS + OTHER_PARTS}
        if "unet" not in names:
            raise InputError(f"{where}: the pipeline has no 'unet'")
        _unet_config(path / "unet")  # a conditional UNet says so first, with what it would need
        unused = sorted(names - set(PARTS))
        if unused:
            raise InputError(f"{where}: the pipeline has {', '.join(unused)} — parts SIDE Audit does not use; "
                             "auditing the UNet without them would audit another model. SIDE audits "
                             "unconditional models: a UNet and a scheduler, with a vqvae/ or vae/ for a latent model")
        if {"vae", "vqvae"} <= names:
            raise InputError(f"{where}: both vae and vqvae; a latent model has one autoencoder")
        vae = next((path / n for n in ("vqvae", "vae") if n in names), None)
        if vae is not None and not vae.is_dir():
            raise InputError(f"{where}: names a {vae.name} but {vae} is missing")
        unet_dir = path / "unet"
        sched = Path(scheduler_config) if scheduler_config else path / "scheduler" / "scheduler_config.json"
    elif (path / "config.json").exists():
        unet_dir, vae = path, None
        sibling = next((path.parent / n for n in ("vqvae", "vae") if (path.parent / n).is_dir()), None)
        if sibling is not None and path.name.startswith("unet"):
            raise InputError(f"checkpoint {path}: this UNet belongs to a latent model ({sibling} beside it); "
                             f"give the folder above, {path.parent}, so that its autoencoder is used")
        candidates = [Path(scheduler_config)] if scheduler_config else [
            path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
            path.parent / "scheduler" / "scheduler_config.json"]
        sched = next((c for c in candidates if c.exists()), candidates[0])
    else:
        raise InputError(f"checkpoint {path}: neither model_index.json nor config.json found")
    if not sched.exists():
        raise InputError(f"checkpoint {path}: missing scheduler config {sched} (set 'scheduler_config')")
    ema = None
    if (unet_dir.parent / "unet_ema" / "config.json").exists() and unet_dir != path:
        ema = unet_dir.parent / "unet_ema"
    elif (unet_dir / EMA_VARIANT).exists():
        ema = unet_dir / EMA_VARIANT
    return Layout(unet_dir, sched, vae, ema)


def _unet_config(unet_dir: Path) -> dict:
    cfg = _read_json(unet_dir / "config.json")
    name = cfg.get("_class_name", "UNet2DModel")
    if name == "UNet2DConditionModel" or "cross_attention_dim" in cfg:
        raise InputError(f"{unet_dir / 'config.json'}: {name} is a text-conditioned model (e.g. Stable Diffusion). "
                         "SIDE audits unconditional models: it trains its own classifier to steer an "
                         "unconditional sampler. A text-conditioned model would need prompts and its text "
                         "encoder to sample, and an extraction method for conditional models")
    if name != "UNet2DModel":
        raise InputError(f"{unet_dir / 'config.json'}: {name} is not an unconditional UNet2DModel; "
                         "SIDE audits unconditional UNet2DModel checkpoints (pixel or latent)")
    if cfg.get("num_class_embeds") or cfg.get("class_embed_type"):
        raise InputError(f"{unet_dir / 'config.json'}: the UNet has class embeddings (conditional model); "
                         "SIDE audits unconditional checkpoints")
    return cfg


def _load_file(p: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{p}: unreadable safetensors file ({e})") from None


def _load_state(unet_dir: Path, allow_pickle: bool) -> tuple[dict, Path]:
    for name in SAFE_WEIGHTS:
        p = unet_dir / name
        if p.exists():
            return _load_file(p), p
    for name in PICKLE_WEIGHTS:
        p = unet_dir / name
        if p.exists():
            if not allow_pickle:
                raise InputError(f"{p}: pickle weights are refused (they can run code); convert to "
                                 ".safetensors or set 'allow_pickle = true' (loaded with weights_only=True)")
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises UnpicklingError and others
                raise InputError(f"{p}: refused by the safe loader (weights_only=True): "
                                 f"{str(e).splitlines()[0]}") from None
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise InputError(f"{p}: does not hold a state dict")
            return state, p
    raise InputError(f"{unet_dir}: no weights found (expected {SAFE_WEIGHTS[0]})")


def _choose_weights(layout: Layout, weights: str) -> tuple[Path, str]:
    """(folder or file of the UNet weights to audit, "raw" | "ema") for the ``weights`` setting:
    ``auto`` takes EMA weights where the folder has them (what training scripts publish)."""
    if weights not in WEIGHTS:
        raise InputError(f"setting 'weights' = {weights!r}: must be auto, ema or raw")
    if weights == "ema" and layout.ema is None:
        raise InputError(f"setting 'weights' = 'ema': {layout.unet_dir.parent} has no EMA weights "
                         f"(looked for unet_ema/ and {layout.unet_dir / EMA_VARIANT}); set weights = 'raw'")
    if weights in ("ema", "auto") and layout.ema is not None:
        return layout.ema, "ema"
    has_raw = any((layout.unet_dir / n).exists() for n in SAFE_WEIGHTS + PICKLE_WEIGHTS)
    if weights == "raw" and not has_raw and layout.ema is not None:
        raise InputError(f"setting 'weights' = 'raw': {layout.unet_dir} holds only EMA weights; set weights = 'ema'")
    return layout.unet_dir, "raw"


def _autoencoder_config(vae_dir: Path) -> tuple[dict, str]:
    """(raw config, class) of an autoencoder folder; a class SIDE Audit cannot decode with is refused."""
    cfg = _read_json(vae_dir / "config.json")
    kind = cfg.get("_class_name", "")
    if kind not in AUTOENCODERS:
        raise InputError(f"{vae_dir / 'config.json'}: autoencoder {kind or '(no _class_name)'} is not supported; "
                         f"SIDE Audit decodes with {' or '.join(AUTOENCODERS)}")
    return cfg, kind


def _setting(kind: str, cfg: dict, name: str):
    """A config value, or the class's default where the file leaves it out."""
    if name in cfg:
        return cfg[name]
    import inspect

    from diffusers import AutoencoderKL, VQModel

    return inspect.signature((VQModel if kind == "VQModel" else AutoencoderKL).__init__).parameters[name].default


def _check_latent_pair(unet_cfg: dict, unet_cfg_path: Path, vae_cfg: dict, kind: str, vae_dir: Path) -> int:
    """An autoencoder and a UNet that do not fit together are refused by name (from the configs
    alone: ``init`` and the app check before any weight is read). Returns the image size."""
    latent = int(_setting(kind, vae_cfg, "latent_channels"))
    channels = int(unet_cfg.get("in_channels", 3))
    if channels != latent:
        raise InputError(f"{unet_cfg_path}: in_channels = {channels} but the autoencoder "
                         f"{vae_dir / 'config.json'} has latent_channels = {latent}; they are not one model")
    size = unet_cfg.get("sample_size", 0)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    factor = 2 ** (len(_setting(kind, vae_cfg, "block_out_channels")) - 1)
    declared = vae_cfg.get("sample_size")
    declared = declared[0] if isinstance(declared, list) else declared
    if declared and int(declared) != size * factor:
        raise InputError(f"{unet_cfg_path}: sample_size = {size} latents decode to {size * factor} px with "
                         f"the autoencoder's {factor}× upsampling, but {vae_dir / 'config.json'} declares "
                         f"sample_size = {declared}; they are not one model")
    return size * factor


def _load_autoencoder(vae_dir: Path, cfg: dict, kind: str, allow_pickle: bool) -> tuple[torch.nn.Module, list[Path]]:
    from diffusers import AutoencoderKL, VQModel

    try:
        vae = (VQModel if kind == "VQModel" else AutoencoderKL).from_config(cfg)
    except Exception as e:
        raise InputError(f"{vae_dir / 'config.json'}: not a valid {kind} config ({e})") from None
    state, weights = _load_state(vae_dir, allow_pickle)
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{weights}: weights do not match {vae_dir / 'config.json'} "
                         f"({str(e).splitlines()[0]})") from None
    return vae.eval().requires_grad_(False), [vae_dir / "config.json", weights]


def load_target(path: str | Path, scheduler_config: str = "", allow_pickle: bool = False,
                weights: str = "auto") -> TargetModel:
    path = Path(path).expanduser()
    layout = _locate(path, scheduler_config)
    unet_dir = layout.unet_dir
    chosen, which = _choose_weights(layout, weights)
    cfg_path = (chosen if chosen.is_dir() else unet_dir) / "config.json"
    cfg = _unet_config(cfg_path.parent)
    try:
        unet = UNet2DModel.from_config(cfg)
    except Exception as e:
        raise InputError(f"{cfg_path}: not a valid UNet2DModel config ({e})") from None
    if chosen.is_dir():
        state, weights_file = _load_state(chosen, allow_pickle)
    else:
        state, weights_file = _load_file(chosen), chosen
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise InputError(f"{weights_file}: weights do not match {cfg_path} ({first})") from None
    sched_cfg = _read_json(layout.scheduler)
    try:
        scheduler = DDPMScheduler.from_config(sched_cfg)
    except Exception as e:
        raise InputError(f"{layout.scheduler}: not a usable noise-schedule config ({e})") from None
    if scheduler.config.prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise InputError(f"{layout.scheduler}: prediction_type {scheduler.config.prediction_type!r} is not supported")
    unet.eval().requires_grad_(False)
    files = [cfg_path, weights_file, layout.scheduler]
    vae, kind, scale = None, "", 1.0
    if layout.vae_dir is not None:
        vae_cfg, kind = _autoencoder_config(layout.vae_dir)
        _check_latent_pair(cfg, cfg_path, vae_cfg, kind, layout.vae_dir)
        vae, vae_files = _load_autoencoder(layout.vae_dir, vae_cfg, kind, allow_pickle)
        # LDMPipeline decodes VQ latents unscaled; a KL autoencoder's latents carry its scaling_factor
        scale = float(vae.config.get("scaling_factor", 0.18215)) if kind == "AutoencoderKL" else 1.0
        files += vae_files
    return TargetModel(unet, scheduler, path, sha256_files(files), files, vae, kind, scale, which)


def _count_params(folder: Path, allow_pickle: bool) -> int | None:
    for name in SAFE_WEIGHTS:
        p = folder / name
        if p.exists():
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(p), "pt") as f:
                    return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118
            except (SafetensorError, OSError, ValueError) as e:
                raise InputError(f"{p}: unreadable safetensors file ({e})") from None
    if not any((folder / n).exists() for n in PICKLE_WEIGHTS):
        raise InputError(f"{folder}: no weights found (expected {SAFE_WEIGHTS[0]})")
    if not allow_pickle:
        raise InputError(f"{folder}: pickle weights are refused (they can run code); convert to .safetensors")
    return None


def inspect_checkpoint(path: str | Path, scheduler_config: str = "", allow_pickle: bool = False,
                       weights: str = "auto") -> dict:
    """What a checkpoint folder holds, from its configs and the safetensors headers only
    (no weights are read), so ``init`` and the desktop app can describe it instantly: pixel or
    latent, the latent shape and autoencoder, which UNet weights (EMA or raw) would be audited."""
    path = Path(path).expanduser()
    layout = _locate(path, scheduler_config)
    chosen, which = _choose_weights(layout, weights)
    cfg = _unet_config(chosen if chosen.is_dir() else layout.unet_dir)
    sched = _read_json(layout.scheduler)
    params = _count_params(chosen if chosen.is_dir() else layout.unet_dir, allow_pickle)
    size = cfg.get("sample_size", 0)
    size = int(size[0] if isinstance(size, list) else size)
    channels = int(cfg.get("in_channels", 3))
    out = {"space": "pixel", "resolution": size, "channels": channels, "parameters": params,
           "scheduler": sched.get("_class_name", "?"), "train_timesteps": int(sched.get("num_train_timesteps", 1000)),
           "prediction_type": sched.get("prediction_type", "epsilon"), "weights": which,
           "ema_available": layout.ema is not None}
    if layout.vae_dir is not None:
        vae_cfg, kind = _autoencoder_config(layout.vae_dir)
        unet_cfg_path = (chosen if chosen.is_dir() else layout.unet_dir) / "config.json"
        image_size = _check_latent_pair(cfg, unet_cfg_path, vae_cfg, kind, layout.vae_dir)
        out.update({"space": "latent", "autoencoder": kind, "latent_shape": [channels, size, size],
                    "resolution": image_size, "channels": int(_setting(kind, vae_cfg, "in_channels"))})
    return out


def describe_checkpoint(info: dict) -> str:
    """One line for ``init`` and the New-audit dialog."""
    what = (f"latent model: {info['autoencoder']} + UNet on {'×'.join(map(str, info['latent_shape']))} latents, "
            f"{info['resolution']} px images" if info["space"] == "latent"
            else f"pixel model: {info['resolution']} px, {info['channels']} channel(s)")
    params = f", {info['parameters'] / 1e6:.3g} M UNet parameters" if info.get("parameters") else ""
    ema = ("EMA weights" if info["weights"] == "ema" else
           "raw weights" + (" (EMA weights also present: set weights = 'ema')" if info["ema_available"] else ""))
    return f"{what}{params}; {info['scheduler']}, {info['train_timesteps']} steps, {info['prediction_type']}; {ema}"


def model_line(summary: dict) -> str:
    """The audited model in one line, from ``TargetModel.summary()`` as stored with the audit."""
    if not summary:
        return ""
    weights = {"ema": "EMA weights", "raw": "raw weights"}.get(summary.get("weights", "raw"), "")
    if summary.get("space") == "latent":
        shape = "×".join(map(str, summary.get("latent_shape", [])))
        what = (f"latent: {summary.get('autoencoder')} + UNet on {shape} latents, decoded to "
                f"{summary.get('resolution')} px × {summary.get('channels')}")
    else:
        what = f"pixel: UNet on {summary.get('resolution')} px × {summary.get('channels')}"
    return f"{what}; {weights}"
