"""On a lent GPU machine: the multi-process path on CUDA, and what it costs per rank.

Two audits of the demo model on CUDA — one process, then two processes sharing the GPU(s)
(`side-audit run --nproc 2`) — must store the same samples (within float tolerance), and their
sampling-stage times give the per-rank overhead. With one GPU the two ranks share it; NCCL
refuses two ranks on one device, so this check sets ``SIDE_DIST_BACKEND=gloo`` (tensors and
objects over gloo, computing on CUDA); with two or more GPUs it runs again on NCCL.

    python bench/gpu_dist_check.py [--n-per-lambda 256] [--steps 25] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import storage  # noqa: E402
from side_engine.audit import init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, QUICK_SETTINGS  # noqa: E402


def audit(nproc: int, settings: dict, env: dict) -> tuple[float, list]:
    ws = init_workspace(Path(tempfile.mkdtemp()) / f"ws{nproc}", str(DEMO_MODEL), str(DEMO_FACES), **settings)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--quiet", "--nproc", str(nproc)],
                   check=True, env=env)
    db = storage.connect(ws.db_path)
    seconds = {r["name"]: r["seconds"] for r in storage.stage_rows(db)}["sample"]
    rows = [tuple(r.values()) for r in db.query(
        "select method, lam, sample_index, seed, best from samples order by method, lam, sample_index")]
    db.close()
    print(f"{nproc} process(es): sampling {seconds:.1f} s, whole run {time.time() - t0:.0f} s", flush=True)
    return seconds, rows


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-per-lambda", type=int, default=256)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--json")
    args = ap.parse_args()
    settings = dict(QUICK_SETTINGS, n_per_lambda=args.n_per_lambda, steps=args.steps, lambdas=[0, 5],
                    device="cuda", batch_size=64)
    gpus = torch.cuda.device_count()
    out = {"gpus": gpus, "name": torch.cuda.get_device_name(0) if gpus else None}
    one_s, one = audit(1, settings, dict(os.environ))
    out["one_process_sample_s"] = one_s
    backends = ["gloo"] + (["nccl"] if gpus >= 2 else [])
    for backend in backends:
        env = dict(os.environ, SIDE_DIST_BACKEND=backend)
        two_s, two = audit(2, settings, env)
        same = [a[:4] for a in one] == [b[:4] for b in two]
        worst = float(np.max(np.abs(np.array([a[4] for a in one]) - np.array([b[4] for b in two]))))
        out[backend] = {"two_process_sample_s": two_s, "same_samples": same, "max_best_score_diff": worst,
                        "speed_up": one_s / two_s}
        print(f"{backend}: same samples {same}, max |Δ best| {worst:.2e}, speed-up {one_s / two_s:.2f} "
              f"({'one GPU shared' if gpus < 2 else 'two GPUs'})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
