"""Replication study: does SIDE reach more training images than the model's own sampler?

Runs complete audits (the engine, unchanged) of a bundled model for several
seeds, with the *product defaults* (only the λ grid and N_G set, as a new user
would) or with the demo's tuned settings (``--profile demo``, a separate,
labelled row), and writes a Markdown fragment with Table-1-style rows, every
rate with its 95 % interval, the paired comparison with Random (McNemar exact /
paired bootstrap, Holm over λ) and coverage at equal budget, per seed.

    python bench/replicate.py --model regime --seeds 0 1 2 --n 512 --lambdas 0,10,30

Slow (15-30 minutes per audit on two CPU cores): a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from side_engine import storage  # noqa: E402
from side_engine.audit import AuditRunner, init_workspace  # noqa: E402
from side_engine.demo import DEMO_SETTINGS  # noqa: E402
from side_engine.progress import Progress  # noqa: E402
from side_engine.results import metrics_json, with_interval  # noqa: E402

MODELS = {"demo": ROOT / "resources" / "demo", "regime": ROOT / "resources" / "regime"}


def run_one(ws_dir: Path, model: Path, settings: dict) -> dict:
    if not (ws_dir / "audit.toml").exists():
        init_workspace(ws_dir, str(model / "model"), str(model / "faces"), **settings)
    t0 = time.time()
    AuditRunner(ws_dir, Progress()).run()
    db = storage.connect(ws_dir / "audit.db")
    try:
        data = metrics_json(db)
        data["stages"] = {r["name"]: r["seconds"] for r in storage.stage_rows(db)}
    finally:
        db.close()
    data["wall"] = time.time() - t0
    return data


def ci(v, lo, hi, pct=True) -> str:
    return with_interval(v, lo, hi, percent=pct, unit="")


def fragment(args, runs: dict[int, dict]) -> list[str]:
    import torch

    title = f"{args.model} model, {'product defaults' if args.profile == 'defaults' else 'demo tuned settings'}"
    if args.set:
        title += " with " + ", ".join(args.set)
    wall = sum(sum(v or 0 for k, v in d["stages"].items() if k != "score") for d in runs.values())
    cfg = next(iter(runs.values()))["audit"]["config"]
    sets = "".join(f" --set {kv}" for kv in args.set)
    lines = [f"### {title}", "",
             f"`python bench/replicate.py --model {args.model} --profile {args.profile} --seeds "
             f"{' '.join(map(str, runs))} --n {args.n} --lambdas {args.lambdas}{sets}`  ",
             f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"{time.strftime('%Y-%m-%d')}; {wall / 60:.0f} min of audits. Settings: width "
             f"{cfg['classifier_width'] or 'auto'}, TI lr {cfg['classifier_lr']:g} "
             f"(≥ {cfg.get('classifier_min_steps', 0)} steps), TDKD {cfg['tdkd_epochs']} epochs lr {cfg['tdkd_lr']:g}, "
             f"N_syn {cfg['n_syn'] or 'auto'}, {cfg['sampler'].upper()} {cfg['steps']} steps "
             f"({cfg['sampler_convention']}), N_G = {cfg['n_per_lambda']}, "
             f"scorer {next(iter(runs.values()))['audit']['scorer']}.", "",
             "| seed | Random AMS ≥mid | SIDE AMS ≥mid (range) | ratio | p | Random UMS ≥mid | SIDE UMS ≥mid | ratio "
             "| p | verdict (UMS) | Random Gu | TI acc. | TD agr. t=0 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for seed, d in runs.items():
        rng = next((c for c in d["comparison"]["range"] if c["band"] == "mid" and c["cumulative"]), None)
        rnd = next(s for s in d["summary"] if s["method"] == "random")
        acc = {c["name"]: c["accuracy"] for c in d["classifiers"]}
        if rng is None:
            continue
        lines.append(
            f"| {seed} | {ci(rng['ams_random'], rng['ams_random_lo'], rng['ams_random_hi'])} "
            f"| {ci(rng['ams_method'], rng['ams_method_lo'], rng['ams_method_hi'])} "
            f"| {ci(rng['ams_ratio'], rng['ams_ratio_lo'], rng['ams_ratio_hi'], False)} | {rng['ams_p']:.2g} "
            f"| {ci(rng['ums_random'], rng['ums_random_lo'], rng['ums_random_hi'])} "
            f"| {ci(rng['ums_method'], rng['ums_method_lo'], rng['ums_method_hi'])} "
            f"| {ci(rng['ums_ratio'], rng['ums_ratio_lo'], rng['ums_ratio_hi'], False)} | {rng['ums_p']:.2g} "
            f"| {rng['ums_verdict']} | {ci(rnd['gu_fraction'], rnd['gu_fraction_lo'], rnd['gu_fraction_hi'])} "
            f"| {100 * acc.get('ti', float('nan')):.0f} % | {100 * acc.get('td', float('nan')):.0f} % |")
    lines += ["", "Per λ (paired with Random; p Holm-corrected over the λ grid):", "",
              "| seed | λ | steered | guidance/ε | AMS ≥mid | ratio | p (Holm) | UMS ≥mid | ratio | p (Holm) "
              "| AMS high | ratio | p (Holm) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, d in runs.items():
        for c in d["comparison"]["per_lambda"]:
            if c["band"] != "mid" or not c["cumulative"]:
                continue
            s = next(x for x in d["summary"] if x["method"] == c["method"] and x["lambda"] == c["lambda"])
            hi = next(x for x in d["comparison"]["per_lambda"] if x["band"] == "high" and x["cumulative"]
                      and x["lambda"] == c["lambda"] and x["method"] == c["method"])
            steered = ci(s["target_accuracy"], s["target_accuracy_lo"], s["target_accuracy_hi"])
            lines.append(
                f"| {seed} | {c['lambda']:g} | {steered} "
                f"| {s['guidance_ratio'] or 0:.3f} | {ci(c['ams_method'], c['ams_method_lo'], c['ams_method_hi'])} "
                f"| {ci(c['ams_ratio'], c['ams_ratio_lo'], c['ams_ratio_hi'], False)} | {c['ams_p_holm']:.2g} "
                f"| {ci(c['ums_method'], c['ums_method_lo'], c['ums_method_hi'])} "
                f"| {ci(c['ums_ratio'], c['ums_ratio_lo'], c['ums_ratio_hi'], False)} | {c['ums_p_holm']:.2g} "
                f"| {ci(hi['ams_method'], hi['ams_method_lo'], hi['ams_method_hi'])} "
                f"| {ci(hi['ams_ratio'], hi['ams_ratio_lo'], hi['ams_ratio_hi'], False)} | {hi['ams_p_holm']:.2g} |")
    lines += ["", "Distinct training images reached at ≥mid with an equal budget (mean [2.5, 97.5 %] of 200 draws):",
              "", "| seed | budget | Random | SIDE | half Random + half SIDE |", "|---:|---:|---:|---:|---:|"]
    for seed, d in runs.items():
        cov = next((c for c in d["comparison"]["coverage"] if c["band"] == "mid"), None)
        for p in (cov or {}).get("points", []):
            if p["budget"] in (64, 128, 256, args.n):
                lines.append(f"| {seed} | {p['budget']} "
                             f"| {p['random']:.1f} [{p['random_lo']:.0f}, {p['random_hi']:.0f}] "
                             f"| {p['method']:.1f} [{p['method_lo']:.0f}, {p['method_hi']:.0f}] "
                             f"| {p['mixed']:.1f} [{p['mixed_lo']:.0f}, {p['mixed_hi']:.0f}] |")
    warnings = {w for d in runs.values() for w in d.get("warnings", [])}
    if warnings:
        lines += ["", "Warnings the audits raised:", ""] + [f"- {w}" for w in sorted(warnings)]
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="regime")
    ap.add_argument("--profile", choices=("defaults", "demo"), default="defaults")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--lambdas", default="0,10,30")
    ap.add_argument("--methods", default="random,side")
    ap.add_argument("--scorer", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another setting (JSON value), e.g. --set guidance_max_t=0.5; it names the run")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "replication")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    lambdas = [int(x) if float(x).is_integer() else float(x) for x in args.lambdas.split(",")]
    settings = dict(n_per_lambda=args.n, lambdas=lambdas, methods=args.methods.split(","), scorer=args.scorer)
    if args.profile == "demo":
        settings = dict(DEMO_SETTINGS, **settings)
    extra = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
    settings.update(extra)
    tag = f"{args.model}-{args.profile}" + "".join(f"-{k}{v}" for k, v in extra.items())
    runs = {}
    for seed in args.seeds:
        print(f"{tag}, seed {seed} …", flush=True)
        runs[seed] = run_one(args.work / f"{tag}-s{seed}", MODELS[args.model], dict(settings, seed=seed))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"replication-{tag}.json").write_text(json.dumps(
            {s: {k: v for k, v in d.items() if k in ("audit", "rows", "summary", "classifiers", "comparison",
                                                      "warnings", "stages", "wall")} for s, d in runs.items()},
            indent=1, default=str))
        (args.out / f"replication-{tag}.md").write_text("\n".join(fragment(args, runs)) + "\n")
    print((args.out / f"replication-{tag}.md").read_text())


if __name__ == "__main__":
    main()
