"""Replication study: does our SIDE extract more than random sampling, as the paper claims?

Runs complete audits of the bundled demo model (the engine, unchanged) for
several seeds and label granularities K, with Random (λ = 0), SIDE (TD
guidance) and TI (guidance by the time-independent classifier) over a λ grid,
all at equal N_G, and writes ``bench/results/replication.md`` (mean ± sd over
seeds) and ``replication.png`` (AMS/UMS vs λ).

    python bench/replicate.py --seeds 0 1 2 --k 32 8 --n 96 --lambdas 0,1,2,3,5,10

Slow (about 5 minutes per audit on two CPU cores): a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import charts, storage  # noqa: E402
from side_engine.audit import AuditRunner, init_workspace  # noqa: E402
from side_engine.demo import DEMO_FACES, DEMO_MODEL, DEMO_SETTINGS  # noqa: E402
from side_engine.progress import Progress  # noqa: E402
from side_engine.results import metrics_json  # noqa: E402


def run_one(work: Path, k: int, seed: int, n: int, lambdas: list[float], methods: list[str]) -> dict:
    ws_dir = work / f"k{k}-s{seed}"
    if not (ws_dir / "audit.toml").exists():
        settings = dict(DEMO_SETTINGS, k=k, seed=seed, n_per_lambda=n, lambdas=lambdas, methods=methods)
        init_workspace(ws_dir, str(DEMO_MODEL), str(DEMO_FACES), **settings)
        # the synthetic set depends on the model and the seed only: share it across K
        donor = next((p for p in work.glob(f"k*-s{seed}/synthetic") if p.parent != ws_dir
                      and len(list(p.glob("chunk_*.npy"))) * DEMO_SETTINGS["batch_size"] >= DEMO_SETTINGS["n_syn"]),
                     None)
        if donor:
            shutil.copytree(donor, ws_dir / "synthetic", dirs_exist_ok=True)
    t0 = time.time()
    AuditRunner(ws_dir, Progress()).run()
    db = storage.connect(ws_dir / "audit.db")
    try:
        data = metrics_json(db)
        stages = {r["name"]: r["seconds"] for r in storage.stage_rows(db)}
    finally:
        db.close()
    data["wall"] = time.time() - t0
    data["stages"] = stages
    return data


def mean_sd(values: list[float]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    m = statistics.mean(v)
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, nargs="+", default=[32, 8])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--lambdas", default="0,1,2,3,5,10")
    ap.add_argument("--methods", default="random,side,ti")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "replication")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    lambdas = [int(x) if float(x).is_integer() else float(x) for x in args.lambdas.split(",")]
    methods = args.methods.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[int, int], dict] = {}
    t_all = time.time()
    for k in args.k:
        for seed in args.seeds:
            print(f"K = {k}, seed {seed} …", flush=True)
            runs[(k, seed)] = run_one(args.work, k, seed, args.n, lambdas, methods)
    (args.out / "replication.json").write_text(json.dumps(
        {f"k{k}-s{s}": {kk: v for kk, v in d.items() if kk in ("rows", "summary", "classifiers", "stages", "wall")}
         for (k, s), d in runs.items()}, indent=1, default=str))
    write_markdown(args, runs, lambdas, time.time() - t_all)


def _grid(runs, k, seeds):
    keys = []
    for r in runs[(k, seeds[0])]["rows"]:
        key = (r["method"], r["lambda"])
        if key not in keys:
            keys.append(key)
    return keys


def _values(runs, k, seeds, method, lam, band, field):
    out = []
    for s in seeds:
        row = next(r for r in runs[(k, s)]["rows"] if (r["method"], r["lambda"], r["band"]) == (method, lam, band))
        out.append(row[field])
    return out


def _summary(runs, k, seeds, method, lam, field):
    return [next(r for r in runs[(k, s)]["summary"] if (r["method"], r["lambda"]) == (method, lam))[field]
            for s in seeds]


def write_markdown(args, runs, lambdas, wall) -> None:
    import torch

    seeds = args.seeds
    audit_seconds = sum(sum(v or 0 for k, v in d["stages"].items() if k != "score") for d in runs.values())
    lines = ["# Replication study: SIDE vs Random vs TI on the demo model", "",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, Python "
             f"{platform.python_version()}, torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; "
             f"audit time {audit_seconds / 60:.0f} min in all (stored stage times; a rerun over "
             "finished workspaces only re-aggregates).", "",
             "Command:", "", "```",
             f"python bench/replicate.py --seeds {' '.join(map(str, seeds))} --k {' '.join(map(str, args.k))} "
             f"--n {args.n} --lambdas {args.lambdas} --methods {args.methods}", "```", "",
             f"Every audit uses the demo settings (`side_engine/demo.py`) except K, seed, λ grid and "
             f"N_G = {args.n} generated images per (method, λ). Pixel scorer (32 px). Values are % of N_G, "
             f"mean ± sd over {len(seeds)} seeds. `≥mid` = cumulative (mid or high). Gu = share of samples "
             "with nearest / second-nearest ℓ2 < 1/3. *steered* = share of guided samples the TD classifier "
             "assigns to their target class (chance 1/K).", ""]
    for k in args.k:
        lines += [f"## K = {k}", "",
                  "| method | λ | AMS ≥mid | UMS ≥mid | AMS high | UMS high | AMS ≥low | UMS ≥low | Gu | steered |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for method, lam in _grid(runs, k, seeds):
            cells = [mean_sd(_values(runs, k, seeds, method, lam, "mid", "ams_cumulative")),
                     mean_sd(_values(runs, k, seeds, method, lam, "mid", "ums_cumulative")),
                     mean_sd(_values(runs, k, seeds, method, lam, "high", "ams")),
                     mean_sd(_values(runs, k, seeds, method, lam, "high", "ums")),
                     mean_sd(_values(runs, k, seeds, method, lam, "low", "ams_cumulative")),
                     mean_sd(_values(runs, k, seeds, method, lam, "low", "ums_cumulative")),
                     mean_sd(_summary(runs, k, seeds, method, lam, "gu_fraction")),
                     mean_sd(_summary(runs, k, seeds, method, lam, "target_accuracy"))]
            lines.append(f"| {method.upper()} | {lam:g} | " + " | ".join(cells) + " |")
        accs = {name: [next(c for c in runs[(k, s)]["classifiers"] if c["name"] == name) for s in seeds]
                for name in ("ti", "td")}
        lines += ["", f"Classifiers (K = {k}): TI accuracy {mean_sd([c['accuracy'] for c in accs['ti']])} % "
                  f"({accs['ti'][0]['details']['measured_on']}); TD agreement with TI at t = 0 "
                  f"{mean_sd([c['accuracy'] for c in accs['td']])} %, TDKD final KL "
                  f"{statistics.mean(c['details']['final_loss'] for c in accs['td']):.3f}.", ""]
    # plot: SIDE and TI cumulative-mid AMS/UMS vs λ per K, Random as reference
    series, hlines = [], []
    palette = [(220, 60, 60), (60, 120, 220), (40, 160, 80), (160, 80, 200)]
    for i, k in enumerate(args.k):
        for method in ("side", "ti"):
            pts = [lam for m, lam in _grid(runs, k, seeds) if m == method]
            if not pts:
                continue
            ys = [100 * statistics.mean(_values(runs, k, seeds, method, lam, "mid", "ums_cumulative")) for lam in pts]
            series.append({"label": f"{method.upper()} K={k}", "x": pts, "y": ys,
                           "colour": palette[i % 4] if method == "side" else tuple(c // 2 for c in palette[i % 4])})
        ref = statistics.mean(_values(runs, k, seeds, "random", 0.0, "mid", "ums_cumulative"))
        hlines.append({"label": f"Random K={k}", "y": 100 * ref, "colour": palette[i % 4]})
    png = charts.line_chart(series, "UMS (mid or closer) vs λ, mean over seeds", "λ", "% of N_G", hlines,
                            size=(720, 420))
    (args.out / "replication.png").write_bytes(png)
    lines += ["![UMS vs λ](replication.png)", ""]
    (args.out / "replication.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
