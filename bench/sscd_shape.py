"""A network of SSCD's shape (ResNet-50 trunk, GeM pooling, 2048 -> 512 projection) with random
weights, saved as TorchScript: times the SSCD TorchScript scoring path where the official file
(https://github.com/facebookresearch/sscd-copy-detection) is not on disk. Speed only: its
descriptors mean nothing."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.down(x))


class SSCDShaped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for stage, n in enumerate((3, 4, 6, 3)):
            width = 64 * 2**stage
            for i in range(n):
                layers.append(Bottleneck(cin, width, 2 if (stage > 0 and i == 0) else 1))
                cin = width * 4
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(2048, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)  # GeM, p = 3
        return F.normalize(self.proj(h), dim=1)


def save(path: str) -> str:
    torch.manual_seed(0)
    torch.jit.script(SSCDShaped().eval()).save(path)
    return path
