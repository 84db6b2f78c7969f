"""Sampling on 1, 2, … processes (torchrun, gloo on CPU / NCCL on GPUs): images per second of
the sampling stage and the scaling efficiency (speed-up ÷ processes).

The same small audit of the demo model is made once per process count in its own workspace;
the sampling stage's wall time comes from the workspace's stage table (what the product
records), so start-up, the broadcast of the model and classifiers, and rank 0's storing are
all inside it.

    python bench/bench_scaling.py [--nproc 1,2] [--n-per-lambda 96] [--steps 25]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import storage  # noqa: E402
from side_engine.audit import init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, QUICK_SETTINGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", default="1,2")
    ap.add_argument("--n-per-lambda", type=int, default=96)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json")
    args = ap.parse_args()
    settings = dict(QUICK_SETTINGS, n_per_lambda=args.n_per_lambda, steps=args.steps, batch_size=args.batch,
                    lambdas=[0, 5])
    rows = []
    base = None
    for n in [int(x) for x in args.nproc.split(",")]:
        ws = init_workspace(Path(tempfile.mkdtemp()) / f"ws{n}", str(DEMO_MODEL), str(DEMO_FACES), **settings)
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--quiet", "--nproc", str(n)],
                       check=True, stdout=subprocess.DEVNULL)
        db = storage.connect(ws.db_path)
        seconds = {r["name"]: r["seconds"] for r in storage.stage_rows(db)}["sample"]
        images = db["samples"].count
        db.close()
        rate = images / seconds
        base = base or rate
        rows.append({"nproc": n, "images": images, "sample_seconds": seconds, "images_per_s": rate,
                     "efficiency": rate / (base * n), "wall_s": time.time() - t0})
        print(f"{n} process(es): {images} images in {seconds:.1f} s of sampling = {rate:.1f} images/s; "
              f"efficiency {rows[-1]['efficiency']:.2f} (whole run {rows[-1]['wall_s']:.0f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
