"""End to end: the demo audit's wall time per stage and peak RSS, and peak RSS with N_G x1 and x4
(generated images stream through scoring, so it must stay flat).

    python bench/bench_e2e.py [--n 160] [--skip-demo]

Each audit runs in a fresh subprocess so peak RSS is its own. Last line: RSS ratio x4 / x1.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from side_engine.audit import AuditRunner, init_workspace
from side_engine.demo import DEMO_FACES, DEMO_MODEL, DEMO_SETTINGS
from side_engine import storage
settings = dict(DEMO_SETTINGS, **json.loads(sys.argv[2]))
ws = init_workspace(sys.argv[1], str(DEMO_MODEL), str(DEMO_FACES), **settings)
t0 = time.time()
AuditRunner(ws).run()
db = storage.connect(ws.db_path)
stages = {r["name"]: round(r["seconds"], 1) for r in storage.stage_rows(db)}
print(json.dumps({"wall": time.time() - t0, "stages": stages,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(settings: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "ws"), json.dumps(settings)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=160, help="N_G per λ of the RSS comparison")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {resource.getpagesize()} B pages")
    if not args.skip_demo:
        demo = run({})
        print(f"demo audit: {demo['wall']:.0f} s wall, peak RSS {demo['peak_rss_mb']:.0f} MB")
        print("| stage | seconds |\n|---|---:|")
        for k, v in demo["stages"].items():
            print(f"| {k} | {v} |")
    # RSS vs N_G: cheap classifiers, only the sampling/scoring volume changes
    small = {"classifier_epochs": 2, "classifier_fit": 0.0, "n_syn": 64, "tdkd_epochs": 1, "lambdas": [0, 2],
             "steps": 10}
    one = run(dict(small, n_per_lambda=args.n))
    four = run(dict(small, n_per_lambda=4 * args.n))
    print("| N_G per λ | samples | peak RSS MB | sampling s |\n|---:|---:|---:|---:|")
    print(f"| {args.n} | {2 * args.n} | {one['peak_rss_mb']:.0f} | {one['stages']['sample']} |")
    print(f"| {4 * args.n} | {8 * args.n} | {four['peak_rss_mb']:.0f} | {four['stages']['sample']} |")
    print(f"peak RSS x4/x1: {four['peak_rss_mb'] / one['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
