"""A paper-scale rehearsal without a GPU: 25 000 training images at 128 px, 51 λ × 50 000 samples.

What a privacy team runs on a real checkpoint (the paper's CelebA-25000 study) is timed here
on a CPU for every step that does not need the target model's sampling:

1. ``N`` distinct synthetic training images (RGB, smooth random patterns) written as PNGs, and a
   tiny untrained 128 px UNet as the "checkpoint" (its weights do not matter to what is timed);
2. the product's own stages import, embed and labels (``AuditRunner.run(until="labels")``, in a
   process of its own, peak memory per stage as the product records it);
3. the rows the sampling stage would have written for 51 λ × 50 000 samples, made directly:
   samples with match distributions shaped like the paper's (a few % of samples in a band,
   Random lowest, SIDE rising with λ then falling, hits concentrated on a memorised subset of
   the training set), their in-band pairs, and PNGs for in-band samples (a pool of files);
4. then, each in a fresh process with its peak resident memory (``wait4``): the metrics stage's
   work (``results.compute_and_store``), ``side-audit metrics --json``, the HTML and the PDF
   report, and the desktop app opening the audit and answering a tab switch, a filter, a sort
   and scrolls (offscreen Qt; ``--no-app`` skips it).

    python bench/bench_paper_scale.py --json bench/results/paper-scale-cpu.json
    python bench/bench_paper_scale.py --n-train 1000 --n-per-lambda 1000 --lambdas 6   # a quick look

The workspace is kept (``--work``) and reused: a finished step is not redone unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- 1. inputs ---------------------------------------------------------------------------------

def training_images(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` distinct RGB images: random 8x8 colour patterns enlarged bilinearly, plus fine noise."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{n} {size}":
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size),
                                                                                          Image.BILINEAR)
        img = np.asarray(coarse, np.int16) + rng.integers(-10, 11, (size, size, 1))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.png", compress_level=1)
    done.write_text(f"{n} {size}")
    return folder


def tiny_model(path: Path, size: int) -> Path:
    """An untrained UNet at the paper's size and channels; nothing here samples from it."""
    if (path / "model_index.json").exists():
        return path
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return path


# -- 3. the sampling stage's rows, made directly -----------------------------------------------

def rates(method: str, lam: float) -> tuple[float, float, float]:
    """(high, mid, low) shares of samples in each band: the paper's shape (Random lowest; SIDE
    rising to λ ≈ 10, then falling as guidance degrades the images)."""
    base = np.array([0.002, 0.008, 0.03])
    if method == "random":
        return tuple(base)
    gain = 1 + 1.5 * (lam / 10) * np.exp(1 - lam / 10)
    return tuple(base * gain)


def fill_samples(ws, n_train: int, per_lambda: int, seed: int = 0, pool: int = 500) -> dict:
    """Samples and in-band pairs for every (method, λ) of the audit, as the sampling stage stores
    them (one transaction per (method, λ))."""
    from side_engine import storage
    from side_engine.sampler import AUDIT_STREAM, sample_seed, target_classes

    cfg = ws.load_config()
    db = storage.connect(ws.db_path)
    if db["samples"].count == len(cfg.grid()) * per_lambda:
        db.close()
        return {"skipped": True}
    bands = cfg.bands_sscd
    lo_high, lo_mid, lo_low = bands["high"][0], bands["mid"][0], bands["low"][0]
    rng = np.random.default_rng(seed)
    k = storage.get_kv(db, "k")
    pool_dir = ws.root / "samples" / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    for i in range(pool):
        path = pool_dir / f"{i:04d}.png"
        if not path.exists():
            img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(img).resize((128, 128), Image.BILINEAR).save(path, compress_level=1)
    # memorised images: 2 % of the training set draws the in-band hits, Zipf-like
    memorised = rng.choice(n_train, size=max(1, n_train // 50), replace=False)
    weight = 1 / np.arange(1, len(memorised) + 1) ** 0.8
    weight /= weight.sum()
    db.execute("delete from matches")
    db.execute("delete from samples")
    conn: sqlite3.Connection = db.conn
    t0 = time.time()
    next_id = 1
    for method, lam in cfg.grid():
        high, mid, low = rates(method, lam)
        u = rng.random(per_lambda)
        best = np.where(u < high, rng.uniform(lo_high, 0.9, per_lambda),
                        np.where(u < high + mid, rng.uniform(lo_mid, lo_high, per_lambda),
                                 np.where(u < high + mid + low, rng.uniform(lo_low, lo_mid, per_lambda),
                                          rng.uniform(0.05, lo_low, per_lambda))))
        in_band = best >= lo_low
        nearest = np.where(in_band, memorised[rng.choice(len(memorised), per_lambda, p=weight)],
                           rng.integers(0, n_train, per_lambda))
        cls = target_classes(cfg.seed, per_lambda, k) if method != "random" else None
        steered = rng.random(per_lambda) < 0.3
        ids = np.arange(next_id, next_id + per_lambda)
        next_id += per_lambda
        rows = [(int(ids[i]), method, lam, i, sample_seed(cfg.seed, i, AUDIT_STREAM),
                 int(cls[i]) if cls is not None else None, float(best[i]), int(nearest[i]), float(best[i]) - 0.05,
                 None, f"samples/pool/{i % pool:04d}.png" if in_band[i] else None,
                 int(steered[i]) if cls is not None else None, 0.05 if cls is not None else None)
                for i in range(per_lambda)]
        pairs = []
        for i in np.flatnonzero(in_band):
            pairs.append((int(ids[i]), int(nearest[i]), float(best[i])))
            extra = rng.integers(0, 3)  # a near neighbour or two above the loosest band's floor
            for j in rng.choice(n_train, extra, replace=False):
                if j != nearest[i]:
                    pairs.append((int(ids[i]), int(j), float(rng.uniform(lo_low, best[i]))))
        with db.atomic():  # one transaction per (method, λ), as the sampling stage's batches
            conn.executemany("insert into samples (id, method, lam, sample_index, seed, cls, best, nearest, "
                             "second, gu_ratio, png, steered, guidance_ratio) values (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             rows)
            conn.executemany("insert or ignore into matches (sample_id, train_idx, score) values (?,?,?)", pairs)
    from side_engine.stages import NAMES

    total = len(cfg.grid()) * per_lambda
    for stage in ("classifier", "synthetic", "tdkd", "sample", "score"):
        storage.set_stage(db, stage, NAMES.index(stage), status="done", done=total if stage in ("sample", "score")
                          else 1, total=total if stage in ("sample", "score") else 1, seconds=0.0)
    out = {"seconds": time.time() - t0, "samples": db["samples"].count, "matches": db["matches"].count}
    db.close()
    return out


# -- 4. the steps after sampling, each in a process of its own ---------------------------------

def measured(cmd: list[str], env: dict | None = None, stdout=subprocess.DEVNULL) -> dict:
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, **(env or {})), stdout=stdout,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{err[-3000:]}")
    return {"seconds": round(time.time() - t0, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "stderr": err}


def adopt_early_stages(base: Path, root: Path, n_per_lambda: int) -> None:
    """The base workspace's imported set, embeddings and labels, under this one's N_G."""
    import shutil

    from side_engine import storage

    shutil.copytree(base / "cache", root / "cache", dirs_exist_ok=True)
    db = storage.connect(base / "audit.db")
    db.execute("pragma wal_checkpoint(TRUNCATE)")
    db.close()
    shutil.copy2(base / "audit.db", root / "audit.db")
    db = storage.connect(root / "audit.db")
    row = list(db["audits"].rows)[0]
    cfg = json.loads(row["config"])
    cfg["n_per_lambda"] = n_per_lambda
    db["audits"].update(row["id"], {"config": json.dumps(cfg)})
    db.execute("delete from matches")
    db.execute("delete from samples")
    db.execute("delete from stages where name not in ('import', 'embed', 'labels')")
    db.close()


def early_stages(ws) -> dict:
    code = ("import sys; from side_engine.audit import AuditRunner; "
            f"AuditRunner({str(ws.root)!r}).run(until='labels')")
    out = measured([sys.executable, "-c", code])
    from side_engine import storage

    db = storage.connect(ws.db_path)
    try:
        out["stages"] = {r["name"]: {"seconds": round(r["seconds"] or 0, 1), "peak_rss_mb": r.get("peak_rss_mb")}
                         for r in storage.stage_rows(db) if r["name"] in ("import", "embed", "labels")}
    finally:
        db.close()
    return out


METRICS = """
import sys, time
from side_engine import results, storage
from side_engine.stages import NAMES
db = storage.connect(sys.argv[1])
info = results.audit_info(db)
from side_engine.config import AuditConfig
cfg = AuditConfig.from_stored(info["config"])
bands, higher = results.stored_bands(db)
t0 = time.time()
results.compute_and_store(db, cfg, higher, bands, info["scorer"])
storage.set_stage(db, "metrics", NAMES.index("metrics"), status="done", done=1, total=1, seconds=time.time() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=25_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lambdas", type=int, default=51, help="grid size: Random at 0, SIDE at 1..L-1")
    ap.add_argument("--n-per-lambda", type=int, default=50_000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "side-paper-scale")
    ap.add_argument("--fresh", action="store_true", help="remake the workspace's results")
    ap.add_argument("--no-app", action="store_true")
    ap.add_argument("--only", nargs="*", choices=("early", "fill", "metrics", "json", "html", "pdf", "app"),
                    help="steps to (re)run on the kept workspace")
    ap.add_argument("--base", type=Path, help="a workspace of this bench whose import, embed and labels to reuse "
                    "(same training set and grid; another N_G)")
    ap.add_argument("--json")
    args = ap.parse_args()

    from side_engine.audit import init_workspace
    from side_engine.workspace import Workspace

    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "n_train": args.n_train,
                    "size": args.size, "lambdas": args.lambdas, "n_per_lambda": args.n_per_lambda, "steps": {}}

    if args.json and Path(args.json).exists() and args.only:  # a partial rerun updates the record
        report["steps"] = json.loads(Path(args.json).read_text()).get("steps", {})

    def step(name: str, value: dict) -> None:
        value.pop("stderr", None)
        report["steps"][name] = value
        print(f"{name}: {json.dumps(value)}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))

    t0 = time.time()
    faces = training_images(args.work / f"train-{args.n_train}-{args.size}", args.n_train, args.size)
    model = tiny_model(args.work / f"model-{args.size}", args.size)
    step("inputs", {"seconds": round(time.time() - t0, 1)})
    root = args.work / f"ws-{args.n_train}-{args.lambdas}x{args.n_per_lambda}"
    if not (root / "audit.toml").exists():
        init_workspace(root, str(model), str(faces), methods=["random", "side"],
                       lambdas=list(range(args.lambdas)), n_per_lambda=args.n_per_lambda)
        if args.base:
            adopt_early_stages(args.base, root, args.n_per_lambda)
    ws = Workspace(root)
    todo = set(args.only or ("early", "fill", "metrics", "json", "html", "pdf", "app"))
    if "early" in todo:
        step("import, embed, labels", early_stages(ws))
    if args.fresh:
        from side_engine import storage

        db = storage.connect(ws.db_path)
        db.execute("delete from matches")
        db.execute("delete from samples")
        db.close()
    if "fill" in todo:
        step("stored results", fill_samples(ws, args.n_train, args.n_per_lambda))
    if "metrics" in todo:
        step("metrics stage", measured([sys.executable, "-c", METRICS, str(ws.db_path)]))
    if "json" in todo:
        step("metrics --json", measured([sys.executable, "-m", "side_audit.cli", "metrics", str(root), "--json"]))
    for fmt in ("html", "pdf"):
        if fmt in todo:
            out = args.work / f"report.{fmt}"
            step(f"report {fmt}", measured([sys.executable, "-m", "side_audit.cli", "report", str(root), "--format",
                                            fmt, "--out", str(out)], env={"QT_QPA_PLATFORM": "offscreen"}))
    step("database", {"mb": round(ws.db_path.stat().st_size / 2 ** 20)})
    if not args.no_app and "app" in todo:
        out = args.work / "app.json"
        app = measured([sys.executable, str(ROOT / "bench" / "app_latency.py"), str(root), str(out)],
                       env={"QT_QPA_PLATFORM": "offscreen"})
        step("app (ms)", {**json.loads(out.read_text()), "peak_rss_mb": app["peak_rss_mb"]})


if __name__ == "__main__":
    main()
