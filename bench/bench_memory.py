"""Peak memory as the training set (N) and the TDKD synthetic set (n_syn) grow ×1, ×4, ×16.

Each point is one small audit of the demo model (32 px grey) in a fresh process, against N
distinct synthetic training images (smooth random patterns, written as PNGs), with budgets
so small that the classifier stages, import and embedding dominate: K = 100 classes, one TI
epoch, one TDKD epoch, 16 samples a λ at 5 steps. What is reported is what the product
records — each stage's peak resident memory (``stages.peak_rss_mb``) — and the whole
process's peak (``wait4``). ``--code DIR`` runs another checkout's engine on the same
workspaces (the "before" of a change; it may not record per-stage peaks).

    python bench/bench_memory.py --json bench/results/memory-cpu.json
    python bench/bench_memory.py --code /tmp/old --json /tmp/memory-old.json
    python bench/bench_memory.py --size 128 --n 250,1000,4000 --n-syn 250,1000,4000   # RGB, paper size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from side_engine import storage  # noqa: E402
from side_engine.audit import init_workspace  # noqa: E402
from side_engine.demo import DEMO_MODEL  # noqa: E402

SETTINGS = {"methods": ["random", "side"], "lambdas": [0, 5], "n_per_lambda": 16, "steps": 5, "k": 100,
            "classifier_epochs": 1, "classifier_min_steps": 0, "classifier_fit": 0.0, "tdkd_epochs": 1,
            "batch_size": 64, "label_source": "clusters"}


def training_images(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """``n`` distinct grey images: random 8x8 patterns, bilinearly enlarged, plus fine noise."""
    if folder.exists() and len(list(folder.glob("*.png"))) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
        img = np.asarray(coarse, np.int16) + rng.integers(-12, 13, (size, size))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.png")
    return folder


def run_point(work: Path, n: int, n_syn: int, code: Path, size: int = 32) -> dict:
    if size == 32:
        faces, model, extra = training_images(work / f"train{n}", n), DEMO_MODEL, {}
    else:  # RGB at the paper's size: an untrained tiny UNet (its weights do not matter to memory),
        # the pixel scorer (its index is the training set as float32: one of the copies allowed)
        import bench_paper_scale as paper

        faces = paper.training_images(work / f"train{n}-{size}", n, size)
        model = paper.tiny_model(work / f"model-{size}", size)
        extra = {"scorer": "pixel", "classifier_width": 16, "steps": 2}  # steps cost time, not memory
    root = work / f"ws-{code.name}-{size}-{n}-{n_syn}"
    shutil.rmtree(root, ignore_errors=True)  # every point is measured from the start
    ws = init_workspace(root, str(model), str(faces), n_syn=n_syn, **{**SETTINGS, **extra})
    env = dict(os.environ, PYTHONPATH=str(code))
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--quiet"],
                            cwd=code, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"audit N={n} n_syn={n_syn} failed ({proc.returncode})")
    db = storage.connect(ws.db_path)
    try:
        stages = {r["name"]: {"seconds": round(r["seconds"] or 0, 1), "peak_rss_mb": r.get("peak_rss_mb")}
                  for r in storage.stage_rows(db)}
    finally:
        db.close()
    # the kernel's lifetime peak forgets what came before a stage reset its peak: the larger of the two
    peaks = [usage.ru_maxrss / 1024] + [v["peak_rss_mb"] for v in stages.values() if v["peak_rss_mb"]]
    return {"size": size, "n_train": n, "n_syn": n_syn, "process_peak_mb": max(peaks), "wall_s": time.time() - t0,
            "stages": stages, "code": str(code)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="1000,4000,16000", help="training-set sizes (n_syn at its first value)")
    ap.add_argument("--n-syn", default="512,2048,8192", help="synthetic-set sizes (N at its first value)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose engine runs the audits")
    ap.add_argument("--size", type=int, default=32, help="32: the demo model, grey; else RGB at this size")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "side-bench-memory")
    ap.add_argument("--json")
    args = ap.parse_args()
    ns, syns = [int(x) for x in args.n.split(",")], [int(x) for x in args.n_syn.split(",")]
    points = [(n, syns[0]) for n in ns] + [(ns[0], s) for s in syns[1:]]
    rows = []
    for n, n_syn in points:
        row = run_point(args.work, n, n_syn, args.code.resolve(), args.size)
        rows.append(row)
        per = ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in row["stages"].items() if v["peak_rss_mb"])
        print(f"N {n:>6}, n_syn {n_syn:>5}: process peak {row['process_peak_mb']:.0f} MiB "
              f"({row['wall_s']:.0f} s){'; per stage (MiB): ' + per if per else ''}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": SETTINGS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
