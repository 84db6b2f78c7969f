"""Is the folded classifier's CUDA gradient difference rounding (TF32) or a bug?

    python bench/gpu_fold_check.py

The input gradient of the ResNet-34 TD classifier (128 px, ImageNet stem) on CUDA,
original and folded, with TF32 convolutions on (torch's default) and off, each
against a float64 CPU reference of the original. Prints relative errors.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from side_engine.classifiers import ResNetClassifier, for_guidance, time_dependent_from  # noqa: E402


def grad(model, x, t):
    xr = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(xr, t).log_softmax(1)[:, 0].sum(), xr)[0]


def main() -> None:
    torch.manual_seed(0)
    clf = time_dependent_from(ResNetClassifier(100, 3, 64, small_stem=False)).eval().requires_grad_(False)
    x, t = torch.randn(8, 3, 128, 128), torch.full((8,), 400)
    ref = grad(copy.deepcopy(clf).double(), x.double(), t)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folded = for_guidance(clf).to(dev)
    orig = clf.to(dev)
    xd, td = x.to(dev), t.to(dev)
    print(f"device {dev}; relative error of the input gradient vs float64 original")
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        xcl = xd.contiguous(memory_format=torch.channels_last)
        for name, m, xin in (("original", orig, xd), ("folded", folded, xcl)):
            g = grad(m, xin, td).double().cpu()
            print(f"tf32 {'on ' if tf32 else 'off'} {name:8s}: {float((g - ref).norm() / ref.norm()):.2e}")


if __name__ == "__main__":
    main()
