"""What a multi-process audit adds to every round besides sampling, measured on this machine:

1. communication — rank 0 broadcasts the round's batch assignment and gathers every rank's
   ``BatchResult`` (``ranks.run_round``), with batches of paper size (64 images of
   128 × 128 × 3, all of them in band, the worst case for the payload), on W gloo ranks;
2. the owner's storing — ``stages.sampling.store_batch`` (the in-band images' PNG files, then
   the batch's rows and matches in one SQLite transaction), per batch; since it runs on the
   owner's writer thread (``BatchWriter``) it is off the ranks' critical path unless it is
   slower than a round;
3. PNG encoding of an image (done by the rank that made it, inside its batch time).

Both feed the 8-GPU projection in bench/RESULTS.md §7.

    python bench/bench_comm.py [--ranks 2,4] [--rounds 20] [--json bench/results/comm-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH, SIZE = 64, 128


def face_like(rng) -> np.ndarray:
    """Smooth blocks plus mild noise: compresses about as photographs do, unlike white noise."""
    coarse = rng.integers(0, 248, (16, 16, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((8, 8, 1), np.uint8)) + rng.integers(0, 8, (SIZE, SIZE, 3), dtype=np.uint8)


def fake_result(in_band: int, seed: int = 0):
    """A paper-size BatchResult: 64 rows, ``in_band`` PNG-ready images (face-like smooth noise
    compresses as photographs do, unlike white noise) and 3 matches each."""
    from side_engine.stages.sampling import BatchResult, encode_png

    rng = np.random.default_rng(seed)
    rows = [{"method": "side", "lam": 5.0, "sample_index": seed * BATCH + i, "seed": int(rng.integers(1 << 62)),
             "cls": i % 100, "best": float(rng.random()), "nearest": int(rng.integers(50_000)),
             "second": float(rng.random()), "gu_ratio": float(rng.random()), "png": None, "steered": 1,
             "guidance_ratio": float(rng.random())}
            for i in range(BATCH)]
    pngs = {}
    for i in range(in_band):
        img = face_like(rng)
        pngs[f"samples/side/lam5/{seed:03d}{i:06d}.png"] = encode_png(img)
        rows[i]["png"] = f"samples/side/lam5/{seed:03d}{i:06d}.png"
    pairs = [(i, int(rng.integers(50_000)), float(rng.random())) for i in range(in_band) for _ in range(3)]
    return BatchResult(rows, pairs, pngs)


def time_store(in_band: int, batches: int) -> float:
    from side_engine.run_store import RunStore
    from side_engine.stages.sampling import store_batch
    from side_engine.workspace import Workspace

    ws = Workspace(tempfile.mkdtemp())
    ws.ensure_dirs()
    ctx = SimpleNamespace(ws=ws, store=RunStore.open(ws.db_path))  # what store_batch reads of a StageContext
    results = [fake_result(in_band, seed=b) for b in range(batches)]
    t0 = time.perf_counter()
    for r in results:
        store_batch(ctx, r)
    return (time.perf_counter() - t0) / batches


def _rank(rank: int, world: int, port: int, rounds: int, in_band: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from side_engine import rank_worker, ranks

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    result = fake_result(in_band)
    try:
        if rank == 0:
            times = []
            for _ in range(rounds + 2):
                t0 = time.perf_counter()
                ranks.run_round("bench", [[1]] * world, lambda b: result)
                times.append(time.perf_counter() - t0)
            ranks.send({"op": ranks.STOP})
            Path(out).write_text(json.dumps(sorted(times[2:])))
        else:
            rank_worker.WORK["bench"] = lambda ctx, b: result
            rank_worker.worker_loop(torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def time_rounds(world: int, rounds: int, in_band: int) -> list[float]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mktemp(suffix=".json")
    mp.spawn(_rank, args=(world, port, rounds, in_band, out), nprocs=world, join=True)
    return json.loads(Path(out).read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = {"batch": BATCH, "size": SIZE, "store": {}, "rounds": {}}
    from side_engine.stages.sampling import encode_png

    img = face_like(np.random.default_rng(0))
    t0 = time.perf_counter()
    for _ in range(50):
        encode_png(img)
    out["encode_png_s"] = (time.perf_counter() - t0) / 50
    print(f"encode_png, {SIZE} px RGB (face-like): {1e3 * out['encode_png_s']:.1f} ms", flush=True)
    for in_band in (0, 16, 64):
        per = time_store(in_band, 10)
        out["store"][in_band] = per
        print(f"store_batch, {in_band:2d} of 64 images in band: {1e3 * per:7.1f} ms per batch", flush=True)
    for world in [int(w) for w in args.ranks.split(",")]:
        for in_band in (0, 64):
            times = time_rounds(world, args.rounds, in_band)
            med = times[len(times) // 2]
            payload = len(__import__("pickle").dumps(fake_result(in_band)))
            out["rounds"][f"{world}x{in_band}"] = {"median_s": med, "payload_bytes": payload}
            print(f"round on {world} gloo ranks, {in_band:2d} images in band ({payload / 1e6:.2f} MB a rank): "
                  f"median {1e3 * med:.1f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
