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


@dataclass
class TargetModel:
    unet: UNet2DModel
    scheduler: DDPMScheduler
    path: Path
    sha256: str
    files: list[Path]

    @property
    def sample_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, list | tuple) else s)

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "resolution": self.sample_size,
            "channels": self.channels,
            "parameters": self.num_parameters,
            "scheduler": self.scheduler.config.get("_class_name", type(self.scheduler).__name__),
            "train_timesteps": int(self.scheduler.config.num_train_timesteps),
            "prediction_type": self.scheduler.config.prediction_type,
        }


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


def _locate(path: Path, scheduler_config: str) -> tuple[Path, Path]:
    """(unet folder, scheduler config file) of a pipeline or bare-UNet folder."""
    if not path.exists():
        raise InputError(f"checkpoint {path}: no such folder")
    if not path.is_dir():
        raise InputError(f"checkpoint {path}: not a folder (give the diffusers model folder)")
    if (path / "model_index.json").exists():
        index = _read_json(path / "model_index.json")
        if "unet" not in index:
            raise InputError(f"{path / 'model_index.json'}: the pipeline has no 'unet'")
        unet_dir = path / "unet"
        sched = Path(scheduler_config) if scheduler_config else path / "scheduler" / "scheduler_config.json"
    elif (path / "config.json").exists():
        unet_dir = path
        candidates = [Path(scheduler_config)] if scheduler_config else [
            path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
            path.parent / "scheduler" / "scheduler_config.json"]
        sched = next((c for c in candidates if c.exists()), candidates[0])
    else:
        raise InputError(f"checkpoint {path}: neither model_index.json nor config.json found")
    if not sched.exists():
        raise InputError(f"checkpoint {path}: missing scheduler config {sched} (set 'scheduler_config')")
    return unet_dir, sched


def _unet_config(unet_dir: Path) -> dict:
    cfg = _read_json(unet_dir / "config.json")
    name = cfg.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise InputError(f"{unet_dir / 'config.json'}: {name} is a conditional (text/class) model; "
                         "SIDE audits unconditional UNet2DModel checkpoints")
    if cfg.get("num_class_embeds") or cfg.get("class_embed_type"):
        raise InputError(f"{unet_dir / 'config.json'}: the UNet has class embeddings (conditional model); "
                         "SIDE audits unconditional checkpoints")
    return cfg


def _load_state(unet_dir: Path, allow_pickle: bool) -> tuple[dict, Path]:
    for name in SAFE_WEIGHTS:
        p = unet_dir / name
        if p.exists():
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                return load_file(str(p)), p
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise InputError(f"{p}: unreadable safetensors file ({e})") from None
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


def load_target(path: str | Path, scheduler_config: str = "", allow_pickle: bool = False) -> TargetModel:
    path = Path(path).expanduser()
    unet_dir, sched_path = _locate(path, scheduler_config)
    cfg = _unet_config(unet_dir)
    try:
        unet = UNet2DModel.from_config(cfg)
    except Exception as e:
        raise InputError(f"{unet_dir / 'config.json'}: not a valid UNet2DModel config ({e})") from None
    state, weights = _load_state(unet_dir, allow_pickle)
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise InputError(f"{weights}: weights do not match {unet_dir / 'config.json'} ({first})") from None
    sched_cfg = _read_json(sched_path)
    try:
        scheduler = DDPMScheduler.from_config(sched_cfg)
    except Exception as e:
        raise InputError(f"{sched_path}: not a usable noise-schedule config ({e})") from None
    if scheduler.config.prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise InputError(f"{sched_path}: prediction_type {scheduler.config.prediction_type!r} is not supported")
    unet.eval().requires_grad_(False)
    files = [unet_dir / "config.json", weights, sched_path]
    return TargetModel(unet, scheduler, path, sha256_files(files), files)


def inspect_checkpoint(path: str | Path, scheduler_config: str = "", allow_pickle: bool = False) -> dict:
    """What a checkpoint folder holds, from its configs and the safetensors header only
    (no weights are read), so the desktop app can describe it instantly."""
    path = Path(path).expanduser()
    unet_dir, sched_path = _locate(path, scheduler_config)
    cfg = _unet_config(unet_dir)
    sched = _read_json(sched_path)
    params = None
    for name in SAFE_WEIGHTS:
        p = unet_dir / name
        if p.exists():
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(p), "pt") as f:
                    params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118
            except (SafetensorError, OSError, ValueError) as e:
                raise InputError(f"{p}: unreadable safetensors file ({e})") from None
            break
    else:
        if not any((unet_dir / n).exists() for n in PICKLE_WEIGHTS):
            raise InputError(f"{unet_dir}: no weights found (expected {SAFE_WEIGHTS[0]})")
        if not allow_pickle:
            raise InputError(f"{unet_dir}: pickle weights are refused (they can run code); convert to .safetensors")
    size = cfg.get("sample_size", 0)
    return {"resolution": int(size[0] if isinstance(size, list) else size), "channels": int(cfg.get("in_channels", 3)),
            "parameters": params, "scheduler": sched.get("_class_name", "?"),
            "train_timesteps": int(sched.get("num_train_timesteps", 1000)),
            "prediction_type": sched.get("prediction_type", "epsilon")}
