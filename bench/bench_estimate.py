"""How wrong is the duration estimate? Measured runs over a spread of settings against the
estimate each run stored at its start.

Every case is a small audit of the demo model (32 px grey) against distinct synthetic training
images (``bench_memory.training_images``), run from the start in a process of its own by
``side-audit run``. The run stores its estimate per stage (kv ``estimate``, made right after
the import, before the long stages) and each stage's measured seconds; the ratio measured /
estimated is reported per stage and for the total the estimate covers (embedding, classifier,
synthetic, TDKD, sampling with scoring). One factor changes at a time from the base case.

    python bench/bench_estimate.py --json bench/results/estimate-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_memory import training_images  # noqa: E402

from side_engine import storage  # noqa: E402
from side_engine.audit import init_workspace  # noqa: E402
from side_engine.demo import DEMO_MODEL  # noqa: E402

BASE = {"n_train": 256, "nproc": 1, "settings": {
    "methods": ["random", "side"], "lambdas": [0, 5], "n_per_lambda": 32, "steps": 10, "classifier_epochs": 20,
    "classifier_fit": 0.0, "classifier_min_steps": 20, "tdkd_epochs": 10, "batch_size": 16, "k": 32}}  # K 32: n_syn 640
CASES = {
    "base": {},
    "steps 25": {"settings": {"steps": 25}},
    "N_G 128": {"settings": {"n_per_lambda": 128}},
    "N 1024": {"n_train": 1024},
    "K 96": {"settings": {"k": 96}},
    "2 processes": {"nproc": 2},
}
COVERED = ("embed", "classifier", "synthetic", "tdkd", "sample")


def run_case(name: str, work: Path) -> dict:
    case = {**BASE, **{k: v for k, v in CASES[name].items() if k != "settings"}}
    settings = {**BASE["settings"], **CASES[name].get("settings", {})}
    faces = training_images(work / f"train{case['n_train']}", case["n_train"])
    root = work / name.replace(" ", "-")
    shutil.rmtree(root, ignore_errors=True)
    ws = init_workspace(root, str(DEMO_MODEL), str(faces), **settings)
    cmd = [sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--quiet"]
    env = dict(os.environ)
    if case["nproc"] > 1:
        cmd += ["--nproc", str(case["nproc"])]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    db = storage.connect(ws.db_path)
    try:
        est = storage.get_kv(db, "estimate")
        seconds = {r["name"]: r["seconds"] or 0.0 for r in storage.stage_rows(db)}
    finally:
        db.close()
    stages = {s: {"estimated": round(est.get(s, 0.0), 1), "measured": round(seconds.get(s, 0.0), 1)}
              for s in COVERED if est.get(s) or seconds.get(s)}
    for v in stages.values():
        v["ratio"] = round(v["measured"] / v["estimated"], 2) if v["estimated"] else None
    measured = sum(seconds.get(s, 0.0) for s in COVERED)
    return {"case": name, "n_train": case["n_train"], "nproc": case["nproc"], "settings": settings,
            "stages": stages, "estimated_total": round(est["total"], 1), "measured_total": round(measured, 1),
            "ratio": round(measured / est["total"], 2) if est["total"] else None, "wall": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to run (default: all)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "side-bench-estimate")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name in args.only or CASES:
        row = run_case(name, args.work)
        rows.append(row)
        per = ", ".join(f"{s} {v['measured']:.0f}/{v['estimated']:.0f} s" for s, v in row["stages"].items())
        print(f"{name:<15} measured/estimated {row['ratio']}: {row['measured_total']:.0f} s vs "
              f"{row['estimated_total']:.0f} s ({per})", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                                   "base": BASE, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
