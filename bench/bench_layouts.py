"""Does the process layout change the audit? One demo audit run as one process with 2 threads,
two processes (torchrun, 1 thread each), one process with 1 thread, and two processes whose
TDKD is data-parallel (as on GPUs; forced here), each from the start.

What is equal by construction — every sample's noise, seed and target class, so the Random
rows — is checked; what is not — the classifiers, trained with another summation order
(another thread count for the TI classifier, data-parallel reductions for the TD one), and
with them SIDE's rows — is measured: TI accuracy, TD agreement, and SIDE's AMS/UMS ≥mid per λ
of each layout against the first, paired on the same samples (the product's own paired test).

    python bench/bench_layouts.py --json bench/results/layouts-cpu.json
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import results, statistics, storage  # noqa: E402
from side_engine.audit import init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, DEMO_SETTINGS  # noqa: E402

SETTINGS = dict(DEMO_SETTINGS, n_per_lambda=128, tdkd_epochs=30, n_syn=256, device="cpu")
LAYOUTS = {"1 process, 2 threads": (1, 2, {}), "2 processes, 1 thread each": (2, 1, {}),
           "1 process, 1 thread": (1, 1, {}),
           # what a GPU run does: TDKD over both ranks (forced here on the CPU)
           "2 processes, data-parallel TDKD": (2, 1, {"SIDE_TDKD_DATA_PARALLEL": "1"})}


def run_layout(work: Path, name: str) -> Path:
    nproc, threads, env = LAYOUTS[name]
    root = work / name.replace(" ", "-").replace(",", "")
    shutil.rmtree(root, ignore_errors=True)
    ws = init_workspace(root, str(DEMO_MODEL), str(DEMO_FACES), **dict(SETTINGS, threads=threads if nproc == 1 else 0))
    cmd = [sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--quiet"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=dict(os.environ, **env))
    return root


def arms(root: Path) -> tuple[dict, dict]:
    db = storage.connect(root / "audit.db", readonly=True)
    try:
        info = results.audit_info(db)
        bands, higher = results.stored_bands(db)
        mid = next(m for name, cum, m in results.band_masks(bands, higher) if name == "mid" and cum)
        out = {}
        for method, lam in [("random", 0.0)] + [("side", float(v)) for v in SETTINGS["lambdas"] if v > 0]:
            out[(method, lam)] = results.arm(results.arm_data(db, method, lam), mid, None, False)
        clf = {r["name"]: r["accuracy"] for r in db.query("select name, accuracy from classifiers")}
        rows = list(db.query("select method, lam, sample_index, seed, cls from samples order by method, lam, "
                             "sample_index"))
        return out, {"classifiers": clf, "keys": [tuple(r.values()) for r in rows], "device": info.get("device")}
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "side-bench-layouts")
    ap.add_argument("--json")
    args = ap.parse_args()
    report = {"settings": SETTINGS, "layouts": {}}
    first = None
    for name in LAYOUTS:
        t0 = time.time()
        root = run_layout(args.work, name)
        a, meta = arms(root)
        row = {"seconds": round(time.time() - t0), "ti_accuracy": meta["classifiers"].get("ti"),
               "td_agreement_t0": meta["classifiers"].get("td"), "rates": {}}
        for (method, lam), arm in a.items():
            r = statistics.rate_intervals(arm)
            row["rates"][f"{method} {lam:g}"] = {k: round(100 * r[k], 2) for k in ("ams", "ams_lo", "ams_hi", "ums",
                                                                                  "ums_lo", "ums_hi")}
        if first is None:
            first = (name, a, meta)
        else:
            base_name, base, base_meta = first
            row["same_samples_as_first"] = meta["keys"] == base_meta["keys"]
            row["random_hits_equal"] = bool(np.array_equal(a[("random", 0.0)].hit, base[("random", 0.0)].hit))
            row["against_first"] = {}
            for key in a:
                if key[0] == "random":
                    continue
                c = statistics.paired_comparison([a[key]], base[key])
                row["against_first"][f"side {key[1]:g}"] = {
                    "ams_diff": round(100 * c["ams_diff"], 2), "ams_diff_lo": round(100 * c["ams_diff_lo"], 2),
                    "ams_diff_hi": round(100 * c["ams_diff_hi"], 2), "ams_p": round(c["ams_p"], 3),
                    "ums_diff": round(100 * c["ums_diff"], 2), "ums_diff_lo": round(100 * c["ums_diff_lo"], 2),
                    "ums_diff_hi": round(100 * c["ums_diff_hi"], 2), "ums_p": round(c["ums_p"], 3)}
        report["layouts"][name] = row
        print(name, json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
