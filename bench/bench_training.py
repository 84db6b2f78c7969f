"""Classifier training speed on CPU: the layout the product trains in (channels_last) against
the standard one, for the TI classifier and for TDKD at the demo's sizes.

    OMP_NUM_THREADS=2 python bench/bench_training.py [--repeat 3] [--epochs 2] [--json OUT]

Each round runs every variant once, alternating which goes first, so a slow stretch of this
machine hits both alike; the table gives the best round and the median per optimiser step.
Synthetic inputs (random pixels, soft labels): speed does not depend on what the images show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import classifier_training as ct  # noqa: E402
from side_engine.classifiers import ResNetClassifier, time_dependent_from  # noqa: E402
from side_engine.demo import DEMO_SETTINGS  # noqa: E402
from side_engine.progress import Progress  # noqa: E402


@contextlib.contextmanager
def standard_layout(model):
    yield


def run(kind: str, layout: str, epochs: int, k: int, n_syn: int, n_train: int) -> tuple[float, int]:
    """Seconds per optimiser step of one training run, and its step count."""
    torch.manual_seed(0)
    width = DEMO_SETTINGS["classifier_width"]
    ti = ResNetClassifier(k, in_channels=1, width=width)
    patched = ct.cpu_training_layout
    if layout == "standard":
        ct.cpu_training_layout = standard_layout
    try:
        t0 = time.perf_counter()
        if kind == "ti":
            x = torch.rand(n_train, 1, 32, 32) * 2 - 1
            y = torch.arange(n_train) % k
            ct.train_ti(x, y, ti, epochs, 1e-3, 64, 0, Progress())
            steps = epochs * -(-int(n_train * 0.9) // 64)
        else:
            td = time_dependent_from(ti)
            x = torch.rand(n_syn, 1, 32, 32) * 2 - 1
            targets = torch.softmax(torch.randn(n_syn, k) * 4, 1)
            acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
            ct.train_td(td, x, targets, acp, epochs, 1e-3, 64, 0, Progress())
            steps = epochs * -(-(n_syn - n_syn // 10) // 64)
        return (time.perf_counter() - t0) / steps, steps
    finally:
        ct.cpu_training_layout = patched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    # TI: the demo trains on its 24 faces (one step an epoch, at least 400 steps); 512 rows here
    # give 8 steps an epoch. TDKD: the demo's 512 synthetic images, K = 24.
    variants = [(kind, layout) for kind in ("ti", "tdkd") for layout in ("standard", "channels_last")]
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for r in range(args.repeat):
        for kind in ("ti", "tdkd"):
            order = ("standard", "channels_last") if r % 2 == 0 else ("channels_last", "standard")
            for layout in order:
                s, _ = run(kind, layout, args.epochs, 24, 512, 512)
                times[(kind, layout)].append(s)
    print("| training | layout | s / step, best | median |")
    print("|---|---|---:|---:|")
    for (kind, layout), ts in times.items():
        print(f"| {kind} | {layout} | {min(ts):.3f} | {statistics.median(ts):.3f} |")
    for kind in ("ti", "tdkd"):
        ratio = min(times[(kind, "channels_last")]) / min(times[(kind, "standard")])
        print(f"{kind}: channels_last / standard = {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({f"{k}/{lay}": ts for (k, lay), ts in times.items()}, indent=1))


if __name__ == "__main__":
    main()
