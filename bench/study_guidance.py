"""Study: which guidance schedule makes SIDE find more than the model's own sampler?

Through the product's own seams: one audit per model trains the classifiers (its stages,
unchanged: ``--base``); every arm is then a *fork* of it (``side_engine.fork``) with the arm's
settings and a sampling seed, run by the product's runner. The constant (paper) arm forks the
reliability arm of the same seed and keeps its Random samples, so both are paired with the same
Random images. The comparison is declared in ``bench/results/study-guidance-declared.md``
before any arm ran; this script only executes it and tabulates what the product stored.

    python bench/study_guidance.py --models regime copier faces2 --seeds 0 1 2 --n 512
    python bench/study_guidance.py --models regime --arms constant --seeds 0   # an extra arm later
    python bench/study_guidance.py --models copier --seeds 0 --arms reliability,unguided-finish \
        --out bench/results/study-pilot-unguided-finish.json      # the fourth study (a pilot)

Slow (minutes per arm on two CPU cores): a benchmark, not a test. Resumable: a finished arm
is read back, an interrupted one resumes.
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
from side_engine.fork import fork  # noqa: E402
from side_engine.progress import Progress  # noqa: E402
from side_engine.results import metrics_json, with_interval  # noqa: E402

# faces2 was trained for the study and has been the demo model since; the copier was the demo before
MODELS = {"copier": ROOT / "bench" / "models" / "copier", "regime": ROOT / "resources" / "regime",
          "faces2": ROOT / "resources" / "demo",
          # the sixth study: a colour model of photograph patches, trained after its declaration
          "patches": ROOT / "bench" / "models" / "patches",
          # the tenth study: grey faces no earlier model saw, trained after its declaration
          "faces3": ROOT / "bench" / "models" / "faces3"}
WORK = ROOT / "bench" / "work" / "study"
# the base audit trains the classifiers; its own sampling is a token 8 images. The studies up to
# the eighth trained the TI classifier for its planned steps only (no fit rule)
BASE = {"n_per_lambda": 8, "lambdas": [0, 5], "seed": 0, "classifier_fit": 0.0,
        # every base distils from the TI classifier on k-means labels, the default until the
        # fourteenth study; the synthetic-clusters arms set their own label source
        "label_source": "clusters"}
# a tagged base: another way of training the classifiers, with its own workspaces (``--tag``)
TAGS = {"fit": {"classifier_fit": 0.9}}  # the ninth study: the TI classifier trained until it fits
# each arm's declared guided λ (its range is their span; study-guidance-declared.md)
ARMS = {"reliability": ("reliability", [5.0, 10.0]), "constant": ("constant", [5.0, 10.0]),
        "reliability-hi": ("reliability", [10.0, 20.0]), "temperature": ("reliability", [5.0, 10.0]),
        "unguided-finish": ("reliability", [5.0, 10.0]), "settled": ("reliability", [5.0, 10.0]),
        "settled-hi": ("reliability", [10.0, 20.0]), "syn-clusters": ("reliability", [5.0, 10.0]),
        "syn-clusters-hi": ("reliability", [10.0, 20.0]), "syn-narrow": ("reliability", [10.0, 20.0]),
        "syn-w12": ("reliability", [10.0, 20.0]), "syn-default": ("reliability", [10.0, 20.0]),
        "syn-bf16": ("reliability", [10.0, 20.0])}
# arms that change the guide itself: the fork retrains TDKD (seeded by the arm's seed, so every
# seed is another draw of the TD classifier) and keeps the reliability arm's Random samples
EXTRA = {"temperature": {"tdkd_temperature": 4.0},
         # the fourth study (a pilot): the last fifth of the noise range unguided; same guide
         "unguided-finish": {"guidance_min_t": 0.2},
         # the fifth study (a pilot): guidance stops where half of the model's own probe samples settled
         "settled": {"guidance_stop": "settled"},
         # the eighth study (a pilot): the default's stop at λ 10-20
         "settled-hi": {"guidance_stop": "settled"},
         # the twelfth study: the default with labels from clusters of the model's own samples
         # (the paper's later version); the fork makes new labels and trains the TD classifier on them
         "syn-clusters": {"guidance_stop": "settled", "label_source": "synthetic-clusters"},
         # the thirteenth study: the same guide at λ 10-20 (its own λ 10 images kept, λ 20 sampled)
         "syn-clusters-hi": {"guidance_stop": "settled", "label_source": "synthetic-clusters"},
         # the fifteenth study: the defaults with a TD classifier half as wide (a quarter of the
         # convolutions' work), for the speed of guided sampling on small models
         "syn-narrow": {"guidance_stop": "settled", "label_source": "synthetic-clusters", "classifier_width": 8},
         # the sixteenth study: width 12, the widest that met the speed target (1.29)
         "syn-w12": {"guidance_stop": "settled", "label_source": "synthetic-clusters", "classifier_width": 12},
         # the seventeenth study: the defaults forked from the base in one step (syn-clusters-hi's
         # settings), and the same classifiers with the guide's gradient in bf16 (a fork of it)
         "syn-default": {"guidance_stop": "settled", "label_source": "synthetic-clusters"},
         "syn-bf16": {"guidance_stop": "settled", "label_source": "synthetic-clusters", "guide_precision": "bf16"}}
# arms forked from another arm of the same seed than the reliability arm (keeping its samples)
PARENT = {"settled-hi": "settled", "syn-clusters": "settled", "syn-clusters-hi": "syn-clusters",
          "syn-bf16": "syn-default"}


def draw(classifier_seed: int, tag: str = "") -> str:
    """Workspace-name suffix of a classifier draw: the first draw (seed 0) has none; a tagged
    base (``TAGS``) adds its tag."""
    return (f"-c{classifier_seed}" if classifier_seed else "") + (f"-{tag}" if tag else "")


def base_workspace(model: str, classifier_seed: int = 0, tag: str = "") -> Path:
    """The audit that trains a model's classifiers (TI, synthetic set, TDKD), seeded by
    ``classifier_seed``: another seed is another draw of the classifiers on the same model."""
    ws = WORK / f"{model}-base{draw(classifier_seed, tag)}"
    if not (ws / "audit.toml").exists():
        root = MODELS[model]
        init_workspace(ws, str(root / "model"), str(root / "faces"),
                       **{**BASE, "seed": classifier_seed, **TAGS.get(tag, {})})
    AuditRunner(ws, Progress()).run()
    return ws


def located(model: str) -> dict:
    """The model and its faces where they lie now (the copier's base audit ran when it was the
    demo): the runner verifies they are the same content, so a fork still reuses the classifiers."""
    return {"checkpoint": str(MODELS[model] / "model"), "train_data": str(MODELS[model] / "faces")}


def arm_settings(model: str, arm: str, seed: int, n: int) -> dict:
    schedule, lambdas = ARMS[arm]
    return {**located(model), "seed": seed, "n_per_lambda": n, "lambdas": [0, *lambdas], "methods": ["random", "side"],
            "guidance_schedule": schedule, "guidance_max_t": 1.0, "table_lambdas": [min(lambdas), max(lambdas)],
            # every study before the seventeenth ran its guide in fp32 (then the only CPU precision):
            # arms keep it unless they vary it, whatever this machine's "auto" resolves to
            "guide_precision": "fp32", **EXTRA.get(arm, {})}


def run_arm(model: str, arm: str, seed: int, n: int, from_base: bool = False, classifier_seed: int = 0,
            tag: str = "") -> dict:
    c = draw(classifier_seed, tag)
    ws = WORK / f"{model}-{arm}{c}-s{seed}"
    if not (ws / "audit.toml").exists():
        # every other arm forks the reliability arm of its seed: the same Random images, and
        # reliability-hi keeps its λ 10 samples too (the same images; the fork samples λ 20 only).
        # from_base: an arm that redraws its guided samples forks the base audit instead and
        # samples its Random images again — the same images (every sample follows from the seed
        # and the classifiers, which training reproduces bit for bit), at a third of the cost of
        # running the reliability arm first; the reliability arm's rows are then the stored ones
        parent = PARENT.get(arm, "reliability")
        src = WORK / f"{model}-{parent}{c}-s{seed}" if arm != "reliability" else WORK / f"{model}-base{c}"
        if arm in PARENT and not (src / "audit.db").exists():
            run_arm(model, parent, seed, n, from_base, classifier_seed, tag)
        elif from_base and not (src / "audit.db").exists():
            src = WORK / f"{model}-base{c}"
        elif arm != "reliability" and not (src / "audit.db").exists():
            run_arm(model, "reliability", seed, n, classifier_seed=classifier_seed, tag=tag)
        fork(src, ws, arm_settings(model, arm, seed, n))
    t0 = time.time()
    AuditRunner(ws, Progress()).run()
    db = storage.connect(ws / "audit.db")
    try:
        data = metrics_json(db)
        data["stages"] = {r["name"]: r["seconds"] for r in storage.stage_rows(db)}
        data["forked_from"] = storage.get_kv(db, "forked_from")
    finally:
        db.close()
    data["wall"] = time.time() - t0
    return data


def pick(d: dict, kind: str, band: str, lam: float | None = None) -> dict | None:
    comp = d["comparison"]
    rows = comp["range"] if kind == "range" else comp["per_lambda"]
    for c in rows:
        if c["band"] == band and c["cumulative"] and (lam is None or c["lambda"] == lam):
            return c
    return None


def ci(v, lo, hi, pct=True) -> str:
    return with_interval(v, lo, hi, percent=pct, unit="")


def pct(v: float | None) -> str:
    """A share in per cent; "—" where it is not defined (synthetic-clusters: no training image
    has a class, so no sample can be on target)."""
    return "—" if v is None else f"{100 * v:.1f} %"


def row(model: str, arm: str, seed: int, d: dict) -> dict:
    """One Table-1-style row: the declared range's paired comparison with Random."""
    mid, high = pick(d, "range", "mid"), pick(d, "range", "high")
    side = [s for s in d["summary"] if s["method"] == "side"]
    rnd = next(s for s in d["summary"] if s["method"] == "random")
    cov = next((c for c in d["comparison"]["coverage"] if c["band"] == "mid"), None)
    last = (cov or {}).get("points", [{}])[-1]
    on = [s["on_target"] for s in side if s.get("on_target") is not None]
    return {"model": model, "arm": arm, "seed": seed, "lambdas": ARMS[arm][1], "mid": mid, "high": high,
            "on_target_side": sum(on) / len(on) if on else None, "on_target_random": rnd.get("on_target"),
            "steered": [s["target_accuracy"] for s in side], "guidance_ratio": [s["guidance_ratio"] for s in side],
            "coverage": last, "guide": d.get("guide_check"), "warnings": d.get("warnings", []),
            "seconds": {k: v for k, v in d["stages"].items() if v}}


def table(rows: list[dict]) -> list[str]:
    out = ["| model | arm | seed | UMS ≥mid ratio | p | AMS ≥mid ratio | p | AMS high: Random → SIDE | ratio | p "
           "| verdict (UMS) | on target (scorer) SIDE / Random | distinct ≥mid at N: Random / SIDE |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        m, h, c = r["mid"], r["high"], r["coverage"]
        if m is None:
            continue
        out.append(
            f"| {r['model']} | {r['arm']} | {r['seed']} "
            f"| {ci(m['ums_ratio'], m['ums_ratio_lo'], m['ums_ratio_hi'], False)} | {m['ums_p']:.2g} "
            f"| {ci(m['ams_ratio'], m['ams_ratio_lo'], m['ams_ratio_hi'], False)} | {m['ams_p']:.2g} "
            f"| {100 * h['ams_random']:.1f} → {100 * h['ams_method']:.1f} "
            f"| {ci(h['ams_ratio'], h['ams_ratio_lo'], h['ams_ratio_hi'], False)} | {h['ams_p']:.2g} "
            f"| {m['ums_verdict']} "
            f"| {pct(r['on_target_side'])} / {pct(r['on_target_random'])} "
            f"| {c.get('random', 0):.1f} / {c.get('method', 0):.1f} |")
    return out


def endpoints(r: dict) -> dict[str, bool]:
    """The declared endpoints of one row (study-guidance-declared.md)."""
    m, h = r["mid"], r["high"]
    return {"UMS ≥mid gain (lower bound > 1)": m["ums_ratio_lo"] > 1,
            "AMS ≥mid not below (upper bound ≥ 1)": m["ams_ratio_hi"] >= 1,
            "high band not fewer (upper bound ≥ 1)": h["ams_ratio_hi"] is None or h["ams_ratio_hi"] >= 1
            or h["ams_ratio"] != h["ams_ratio"]}


def markdown(stored: dict) -> list[str]:
    rows = sorted(stored["rows"], key=lambda r: (r["model"], r["arm"], r["seed"]))
    out = table(rows) + ["", "Declared endpoints met, seeds meeting / seeds run:", "",
                         "| model | arm | " + " | ".join(endpoints(rows[0])) + " |",
                         "|---|---|" + "---:|" * len(endpoints(rows[0]))]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["arm"]), []).append(endpoints(r))
    for (model, arm), eps in groups.items():
        met = [f"{sum(e[k] for e in eps)} / {len(eps)}" for k in eps[0]]
        out.append(f"| {model} | {arm} | " + " | ".join(met) + " |")
    out += ["", "Per λ (paired with Random; p Holm-corrected over the λ grid; on target = the scorer's nearest "
            "training image in the target class):", "",
            "| model | arm | seed | λ | UMS ≥mid ratio | p | AMS ≥mid ratio | p | AMS high ratio | p | on target "
            "| steered (TD) | guidance / ε |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        suffix = draw(r.get("classifier_seed", 0), r.get("tag", ""))
        path = WORK / f"{r['model']}-{r['arm']}{suffix}-s{r['seed']}" / "audit.db"
        if not path.exists():
            continue
        db = storage.connect(path, readonly=True)
        try:
            d = metrics_json(db)
        finally:
            db.close()
        for lam in sorted({c["lambda"] for c in d["comparison"]["per_lambda"]}):
            m, h = pick(d, "per", "mid", lam), pick(d, "per", "high", lam)
            s = next(x for x in d["summary"] if x["method"] == "side" and x["lambda"] == lam)
            out.append(f"| {r['model']} | {r['arm']} | {r['seed']} | {lam:g} "
                       f"| {ci(m['ums_ratio'], m['ums_ratio_lo'], m['ums_ratio_hi'], False)} | {m['ums_p_holm']:.2g} "
                       f"| {ci(m['ams_ratio'], m['ams_ratio_lo'], m['ams_ratio_hi'], False)} | {m['ams_p_holm']:.2g} "
                       f"| {ci(h['ams_ratio'], h['ams_ratio_lo'], h['ams_ratio_hi'], False)} | {h['ams_p_holm']:.2g} "
                       f"| {ci(s['on_target'], s['on_target_lo'], s['on_target_hi'])} "
                       f"| {100 * s['target_accuracy']:.1f} | {s['guidance_ratio']:.3f} |")
    shown: set[str] = set()
    out += ["", "Guide check (seed 0 of each model): smoothed TD agreement a(t) and weight w(t):", "",
            "| model | chance | " + " | ".join(f"t ≈ {t}" for t in (0, 250, 500, 750, 980)) + " | probe on target "
            "guided / unguided |", "|---|---:|" + "---:|" * 6]
    for r in sorted(rows, key=lambda r: r["arm"] != "reliability"):  # the default arm's probe where it ran
        g = r.get("guide")
        if not g or r["seed"] != 0 or r["model"] in shown:  # one per model: every arm shares its classifiers
            continue
        shown.add(r["model"])
        cells = []
        for want in (0, 250, 500, 750, 980):
            i = min(range(len(g["timesteps"])), key=lambda j: abs(g["timesteps"][j] - want))
            cells.append(f"{100 * g['smoothed'][i]:.0f} % / {g['weights'][i]:.2f}")
        pr = g.get("probe") or {}
        out.append(f"| {r['model']} | {100 * g['chance']:.1f} % | " + " | ".join(cells)
                   + f" | {pr.get('on_target_guided')} / {pr.get('on_target_unguided')} of {pr.get('n')} |")
    return out


def versus(candidate: list[dict], comparator: list[dict], arm: str = "reliability") -> list[str]:
    """Each candidate cell beside the comparator arm's cell of the same model and seed (paired on the
    same Random images), with the declared endpoints each meets, and the tally of the rule."""
    by = {(r["model"], r["seed"]): r for r in comparator if r["arm"] == arm}
    out = ["| model | seed | arm | UMS ≥mid ratio | AMS ≥mid ratio | AMS high ratio | endpoints met "
           "| on target (scorer) | distinct ≥mid at N: Random / SIDE | guided steps |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    tally = {"candidate": [0, 0, 0, 0], "comparator": [0, 0, 0, 0]}
    # a candidate of the same arm is another classifier draw of it (--classifier-seed) or a base
    # trained another way (--tag)
    rows = [r for r in candidate if r["arm"] != arm or r.get("classifier_seed") or r.get("tag")]
    for r in sorted(rows, key=lambda r: (r["seed"], r["model"])):
        a = by.get((r["model"], r["seed"]))
        if a is None:
            continue
        for who, x in (("comparator", a), ("candidate", r)):
            m, h, e = x["mid"], x["high"], endpoints(x)
            met = list(e.values())
            t = tally[who]
            t[0] += met[0]
            t[1] += met[1] + met[2]
            t[2] += 1
            t[3] += (who == "candidate" and met[2] is False and endpoints(a)["high band not fewer (upper bound ≥ 1)"])
            probe = (x.get("guide") or {}).get("probe") or {}
            steps = (x.get("guide") or {}).get("timesteps") or []
            settled = probe.get("settled_t")
            stops = EXTRA.get(x["arm"], {}).get("guidance_stop") == "settled" and settled is not None and settled >= 0
            guided = sum(1 for t_ in steps if t_ > settled) if stops else len(steps)
            label = x["arm"] + (f" (classifiers {x['classifier_seed']})" if x.get("classifier_seed") else "") \
                + (f" ({x['tag']})" if x.get("tag") else "")
            out.append(f"| {x['model']} | {x['seed']} | {label} "
                       f"| {ci(m['ums_ratio'], m['ums_ratio_lo'], m['ums_ratio_hi'], False)} "
                       f"| {ci(m['ams_ratio'], m['ams_ratio_lo'], m['ams_ratio_hi'], False)} "
                       f"| {ci(h['ams_ratio'], h['ams_ratio_lo'], h['ams_ratio_hi'], False)} "
                       f"| {sum(met)} / 3 | {pct(x['on_target_side'])} "
                       f"| {x['coverage'].get('random', 0):.1f} / {x['coverage'].get('method', 0):.1f} "
                       f"| {guided} of {len(steps)}" + (f" (t > {settled})" if stops else "") + " |")
    c, a = tally["candidate"], tally["comparator"]
    out += ["", f"Cells: {c[2]}. Primary endpoint met: candidate {c[0]}, {arm} {a[0]}. Secondary endpoint cells "
            f"met: candidate {c[1]}, {arm} {a[1]}. High-band cells lost that {arm} met: {c[3]}."]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["regime", "copier", "faces2"], choices=sorted(MODELS))
    ap.add_argument("--arms", default="reliability", help="comma-separated: " + ", ".join(
        f"{a} (λ {lam[0]:g}-{lam[1]:g})" for a, (_, lam) in ARMS.items()))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--base-only", action="store_true", help="train every model's classifiers, then stop")
    ap.add_argument("--from-base", action="store_true",
                    help="an arm whose seed has no reliability arm forks the base audit (Random sampled again)")
    ap.add_argument("--classifier-seed", type=int, default=0,
                    help="train the classifiers with this seed (another draw; its own workspaces and rows)")
    ap.add_argument("--tag", default="", choices=["", *TAGS],
                    help="a base trained another way (TAGS; its own workspaces and rows): fit = the ninth study")
    ap.add_argument("--versus-arm", default="reliability", help="with --versus: the comparator arm")
    ap.add_argument("--markdown", action="store_true", help="print the tables of what is stored, run nothing")
    ap.add_argument("--versus", type=Path, nargs="+", help="with --markdown: the stored rows of other files (the "
                    "default arm's) beside each of --out's cells, with the declared endpoints and the rule's tally")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "study-guidance.json")
    args = ap.parse_args()
    stored = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    rows = {(r["model"], r["arm"], r["seed"]): r for r in stored["rows"]}
    if args.markdown:
        if args.versus:
            other = [r for path in args.versus for r in json.loads(path.read_text())["rows"]]
            print("\n".join(versus(stored["rows"], other, args.versus_arm)))
            return
        print("\n".join(markdown(stored)))
        return
    for model in args.models:
        print(f"{model}: base audit (classifiers) …", flush=True)
        base_workspace(model, args.classifier_seed, args.tag)
    if args.base_only:
        return
    for seed in args.seeds:  # seeds outermost: a short session still covers every model
        for model in args.models:
            for arm in args.arms.split(","):
                print(f"{model} {arm} seed {seed} …", flush=True)
                d = run_arm(model, arm, seed, args.n, args.from_base, args.classifier_seed, args.tag)
                rows[(model, arm, seed)] = row(model, arm, seed, d) | {"classifier_seed": args.classifier_seed,
                                                                       "tag": args.tag}
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.python_version()}",
                                                "n": args.n,
                                                "rows": list(rows.values())}, indent=1, default=str))
                print("\n".join(table([rows[(model, arm, seed)]])), flush=True)
    print("\n".join(table(sorted(rows.values(), key=lambda r: (r["model"], r["arm"], r["seed"])))))


if __name__ == "__main__":
    main()
