"""The surrogate classifiers: ResNet-34 layout, time-independent and time-dependent.

The time-dependent (TD) network adds one time module per BasicBlock, right
after its first BatchNorm (paper, Appendix C): ``h = bn1(conv1(x)) + W·emb(t)``.
``W`` starts at zero and every other weight is copied from the TI network,
so a fresh TD classifier computes exactly what the TI classifier computes.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

BLOCKS = (3, 4, 6, 3)  # ResNet-34


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in DDPM/ADM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, emb_dim: int | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.time_proj = None
        if emb_dim is not None:
            self.time_proj = nn.Linear(emb_dim, cout)
            nn.init.zeros_(self.time_proj.weight)
            nn.init.zeros_(self.time_proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        if self.time_proj is not None:
            h = h + self.time_proj(emb)[:, :, None, None]
        h = F.relu(h)
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """ResNet-34 layout; ``time_dependent`` adds the per-block time modules."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        small_stem: bool = True,
        time_dependent: bool = False,
        emb_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.hparams = {"num_classes": num_classes, "in_channels": in_channels, "width": width,
                        "small_stem": small_stem, "time_dependent": time_dependent}
        self.time_dependent = time_dependent
        self.emb_dim = emb_dim or 4 * width
        if small_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        if time_dependent:
            self.time_embed = nn.Sequential(nn.Linear(width, self.emb_dim), nn.SiLU(),
                                            nn.Linear(self.emb_dim, self.emb_dim))
        blocks: list[BasicBlock] = []
        cin = width
        for stage, n in enumerate(BLOCKS):
            cout = width * 2**stage
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, self.emb_dim if time_dependent else None))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.time_dependent:
            if t is None:
                raise ValueError("a time-dependent classifier needs timesteps")
            if t.ndim == 0:
                t = t.expand(x.shape[0])
            emb = self.time_embed(timestep_embedding(t, self.hparams["width"]).to(x.dtype))
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def time_dependent_from(ti: ResNetClassifier) -> ResNetClassifier:
    """A TD classifier that starts equal to ``ti`` (time projections are zero)."""
    hp = dict(ti.hparams, time_dependent=True)
    td = ResNetClassifier(**hp)
    missing, unexpected = td.load_state_dict(ti.state_dict(), strict=False)
    assert not unexpected and all("time_" in k for k in missing), (missing, unexpected)
    return td.to(next(ti.parameters()).device)


def for_guidance(model: ResNetClassifier, channels_last: bool = True) -> ResNetClassifier:
    """A frozen copy for sampling: eval BatchNorm folded into the convolutions before it.

    Guidance differentiates the classifier ~50 times per image; folding removes every
    BatchNorm pass (forward and backward) and computes the same function (up to rounding:
    an eval-mode BatchNorm is a per-channel affine map). channels_last suits oneDNN and
    cuDNN; inputs are converted to match in the sampler. The original stays untouched
    (TDKD copies its state dict, which the folded copy no longer matches).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    stem = list(fused.stem)
    fused.stem = nn.Sequential(fuse_conv_bn_eval(stem[0], stem[1]), *stem[2:])
    for block in fused.blocks:
        block.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
        block.bn1 = nn.Identity()
        block.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
        block.bn2 = nn.Identity()
        if len(block.shortcut):
            block.shortcut = nn.Sequential(fuse_conv_bn_eval(block.shortcut[0], block.shortcut[1]))
    fused.requires_grad_(False)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused


def prefers_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolutions are stored channels_last (judged on one with C_in > 1,
    where the two layouts differ)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1:
            return m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()
    return False


def small_stem_for(sample_size: int, choice: str) -> bool:
    """docs/method.md: 3x3 stride-1 stem without max-pool up to 64 px, else the ImageNet stem."""
    if choice == "small":
        return True
    if choice == "large":
        return False
    return sample_size <= 64


def save_classifier(model: ResNetClassifier, path, extra: dict | None = None) -> None:
    """safetensors weights plus the hyper-parameters as metadata."""
    import json

    from safetensors.torch import save_file

    meta = {"hparams": json.dumps(model.hparams), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = str(path) + ".tmp"
    save_file(state, tmp, metadata=meta)
    import os

    os.replace(tmp, path)


def load_classifier(path, device: torch.device | str = "cpu") -> ResNetClassifier:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        hp = json.loads(f.metadata()["hparams"])
    model = ResNetClassifier(**hp)
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()
