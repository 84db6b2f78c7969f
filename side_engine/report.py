"""Reports for privacy reviewers: one report model, rendered to HTML, PDF and CSV.

``--redact`` keeps every training-image pixel on the machine: pairs are shown
by training index, file hash and score only, and generated images are left out
too (a memorised generation *is* training pixels). Charts carry no pixels.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from . import __version__, charts, resources, results, review, storage
from .errors import ConfigError, WorkspaceError
from .workspace import Workspace

BAND_WORDS = {"high": "near-identical copies", "mid": "close copies", "low": "loose resemblances"}


def _b64(data: bytes, name: str = "") -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def build_report(workspace: str | Path, redact: bool = False, top: int = 24) -> dict:
    """Everything a report shows, read from the workspace database."""
    ws = Workspace(workspace)
    if not ws.db_path.exists():
        raise WorkspaceError(f"{ws.root}: no audit database; run the audit first")
    db = storage.connect(ws.db_path)
    try:
        data = results.metrics_json(db)
        if not data["rows"]:
            raise WorkspaceError(f"{ws.root}: the audit has no metrics yet; finish it with `side-audit run`")
        info = results.audit_info(db)
        bands, higher = results.stored_bands(db)
        stages = storage.stage_rows(db)
        n_train = info["n_train"]
        exposure = results.exposure(db)
        decisions = {r["sample_id"]: r["decision"] for r in db["decisions"].rows}
        pairs = review.gallery_rows(db)
        pairs.sort(key=lambda r: (r["decision"] is None, -r["best"] if higher else r["best"]))
        pairs = pairs[:top]
        train_hash = {r["idx"]: r["sha256"] for r in db.query("select idx, sha256 from train_images")}
        best_all = results.best_scores(db)
        model = {
            "tool": f"SIDE Audit {__version__}", "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "workspace": str(ws.root), "redacted": redact, "audit": info, "config": info["config"],
            "bands": [{"name": b.name, "lo": b.lo, "hi": b.hi} for b in bands], "higher_is_closer": higher,
            "stages": [{"name": s["name"], "seconds": s["seconds"] or 0.0, "status": s["status"],
                        "peak_rss_mb": s.get("peak_rss_mb"), "peak_device_mb": s.get("peak_device_mb")}
                       for s in stages],
            "rows": data["rows"], "topk": data["topk"], "summary": data["summary"],
            "classifiers": data["classifiers"], "n_train": n_train,
        }
        from .config import AuditConfig, method_name

        cfg = AuditConfig.from_stored(info["config"])
        model["config"], model["unused"], model["method_name"] = cfg.to_dict(), cfg.unused_settings(), method_name(cfg)
        model["automatic"] = results.chosen_by_run(ws, db, cfg)
        model["on_target_chance"] = data.get("on_target_chance")
        from .results import on_target_meaning

        model["on_target_meaning"] = on_target_meaning(data.get("on_target_by"))
        model["guide_check"] = data.get("guide_check")
        g = model["guide_check"] or {}
        model["guide_rows"] = [{"t": t, "agreement": a, "weight": w} for t, a, w in
                               list(zip(g.get("timesteps", []), g.get("smoothed", []), g.get("weights", [])))[::7]]
        model["resized"] = storage.get_kv(db, "resized", 0)
        model["forked_from"] = storage.get_kv(db, "forked_from")
        model["headline"] = headline(data, exposure, n_train, bands)
        model["table1"] = _table1(data)
        model["comparisons"] = _comparisons(data)
        from .statistics import clopper_pearson

        for c in model["classifiers"]:  # accuracy is a rate too: with its exact interval when n is known
            n = c["details"].get("measured_n")
            c["interval"] = (clopper_pearson(round(c["accuracy"] * n), n) if n and c["accuracy"] is not None else None)
        model["comparison"] = data.get("comparison") or {}
        model["measure"] = data["audit"].get("measure", "")
        info["model"] = data["audit"].get("model", "")
        model["exposure"] = [
            {**e, "hash": train_hash.get(e["train_idx"], ""), "path": None if redact else e["path"]}
            for e in exposure[:50]]
        model["pairs"] = []
        for r in pairs:
            item = {"id": r["id"], "method": r["method"], "lam": r["lam"], "seed": r["seed"], "score": r["best"],
                    "band": r["band"], "train_idx": r["nearest"], "train_hash": train_hash.get(r["nearest"], ""),
                    "train_path": None if redact else r["train_path"], "decision": decisions.get(r["id"])}
            if not redact:
                item["generated_png"] = (ws.root / r["png"]).read_bytes()
                item["training_png"] = _thumbnail(Path(info["train_path"]) / r["train_path"])
            model["pairs"].append(item)
        model["charts"] = _charts(data["rows"], best_all, bands, higher, info.get("scorer"))
        model["unseen"] = data.get("unseen") or {}
        model["calibration"] = data.get("calibration") or {"calibrated": False}
        if model["unseen"].get("strategies"):
            model["charts"]["budget"] = _budget_chart(model["unseen"])
        return model
    finally:
        db.close()


def _thumbnail(path: Path, size: int = 128) -> bytes | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = size / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.NEAREST)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()
    except OSError:
        return None


def _ci(v, lo, hi, pct: bool = True) -> str:
    """'12.3 % [9.1, 16.0]': a rate with its 95 % interval, as every number shown carries one."""
    return results.with_interval(v, lo, hi, percent=pct)


def verdict_line(c: dict, key: str, band: str, random_word: str = "Random") -> str:
    name = c["method"].upper()
    metric = key.upper()
    lams = ", ".join(f"{x:g}" for x in c.get("lambdas", [c.get("lambda")]))
    p = c.get(f"{key}_p_holm", c.get(f"{key}_p"))
    mine = _ci(c[f"{key}_method"], c.get(f"{key}_method_lo"), c.get(f"{key}_method_hi"))
    theirs = _ci(c[f"{key}_random"], c.get(f"{key}_random_lo"), c.get(f"{key}_random_hi"))
    ratio = c[f"{key}_ratio"]
    if ratio is None or ratio != ratio:  # NaN: both found nothing, so no ratio exists
        ratio_text = "no ratio (neither found any image in the band)"
    else:
        ratio_text = f"ratio {_ci(ratio, c[f'{key}_ratio_lo'], c[f'{key}_ratio_hi'], pct=False)}"
    return (f"{name} {metric} ≥{band} (mean over λ = {lams}): {mine} vs {random_word} {theirs};"
            f" {ratio_text},"
            f" {c[f'{key}_test']} p = {p:.3g}: {c[f'{key}_verdict']}.")


def headline(data: dict, exposure: list[dict], n_train: int, bands) -> list[str]:
    """Plain-language findings: what was reproduced (closest band first), then whether the guided
    method beats Random over the declared λ range (one pre-declared paired test; no best-λ pick)."""
    lines = []
    rows = data["rows"]
    cal = data.get("calibration") or {}
    for band in reversed([b.name for b in bands]):
        hits = [e for e in exposure if e[band] > 0]
        text = (f"{len(hits)} of {n_train} training images were reproduced as {BAND_WORDS.get(band, band)} "
                f"({band} band) by at least one generated image.")
        rnd = next((r for r in rows if r["band"] == band and r["method"] == "random"), None)
        if rnd:
            text += (f" Random sampling: AMS {_ci(rnd['ams'], rnd.get('ams_lo'), rnd.get('ams_hi'))}, "
                     f"UMS {_ci(rnd['ums'], rnd.get('ums_lo'), rnd.get('ums_hi'))} of {rnd['n_generated']} images.")
        text += calibration_words(cal, band)
        lines.append(text)
    comp = data.get("comparison") or {}
    for c in comp.get("range", []):
        if c["cumulative"] and c["band"] == "mid":
            lines.append(verdict_line(c, "ums", "mid"))
            lines.append(verdict_line(c, "ams", "mid"))
    if comp.get("range") and comp.get("conditional_on"):
        lines.append(f"Brackets are 95 % intervals, conditional on {comp['conditional_on']}; each verdict is its "
                     "ratio interval's (\"more\" exactly when it lies above 1).")
    for cov in comp.get("coverage", []):
        if cov["band"] == "mid" and cov["points"]:
            pt = cov["points"][-1]
            lines.append(
                f"At an equal budget of {pt['budget']} generated images, Random alone reached "
                f"{pt['random']:.1f} [{pt['random_lo']:.0f}, {pt['random_hi']:.0f}] distinct training images at "
                f"≥mid; half Random + half {cov['method'].upper()} reached {pt['mixed']:.1f} "
                f"[{pt['mixed_lo']:.0f}, {pt['mixed_hi']:.0f}]; {cov['method'].upper()} alone "
                f"{pt['method']:.1f} [{pt['method_lo']:.0f}, {pt['method_hi']:.0f}].")
    lines += unseen_lines(data.get("unseen"))
    if not cal.get("calibrated"):
        lines.append("The bands are uncalibrated: no held-out images were given (setting heldout_data), so how often "
                     "an image the model never trained on lands in each band is not known.")
    lines += data.get("warnings", [])
    return lines


def calibration_words(cal: dict, band: str) -> str:
    """The band's false-alarm rate, and whether the audit's rates there rise above it."""
    if not cal.get("calibrated"):
        return ""
    row = next((r for r in cal["bands"] if r["band"] == band and not r["cumulative"]), None)
    if row is None:
        return ""
    fa = _ci(row["false_alarm"], row["false_alarm_lo"], row["false_alarm_hi"])
    text = f" Held-out non-members land in this band {fa} of the time ({cal['n']} images)"
    above = [a for a in row["against"] if a["above"]]
    if not row["against"]:
        return text + "."
    if not above:
        return text + ("; no method's rate here is above that, so this band's matches are not evidence of "
                       "copying.")
    names = ", ".join("Random" if a["method"] == "random" else a["method"].upper() for a in above)
    rest = [a for a in row["against"] if not a["above"]]
    tail = ("; not above it: " + ", ".join("Random" if a["method"] == "random" else a["method"].upper()
                                           for a in rest)) if rest else ""
    return text + f"; above it: {names}{tail}."


STRATEGY_WORDS = {"random": "Random sampling", "side": "SIDE", "ti": "TI guidance",
                  "side+random": "half Random, half SIDE", "ti+random": "half Random, half TI guidance"}


def unseen_lines(unseen: dict | None, band: str = "mid") -> list[str]:
    """The unlimited-budget estimate at ≥``band`` per strategy, and the budget planner, in words."""
    if not unseen:
        return []
    est = unseen.get("estimator", "chao2")
    rows = [r for r in unseen.get("strategies", []) if r["band"] == band and r["cumulative"]]
    lines = []
    for r in rows:
        if r.get("no_detections"):
            lines.append(f"{STRATEGY_WORDS.get(r['strategy'], r['strategy'])}: no training image found at ≥{band} in "
                         f"{r['generated']} generated images; with none found the estimate cannot say how many a "
                         f"larger budget would find (anywhere up to all {r.get('ceiling', 'the')} training images).")
            continue
        lines.append(f"{STRATEGY_WORDS.get(r['strategy'], r['strategy'])}: {r['observed']} training images found "
                     f"at ≥{band} in {r['generated']} generated images; with an unlimited budget an estimated "
                     f"{r[est]:.0f} ({ESTIMATOR_WORDS.get(est, est)}), and anywhere up to all "
                     f"{r.get('ceiling', 'the')} training images: the counts cannot bound how many rarely generated "
                     f"ones remain.")
    plan = [p for p in unseen.get("planner", []) if p["band"] == band]
    if plan:
        parts = []
        for p in plan:
            who = STRATEGY_WORDS.get(p["strategy"], p["strategy"])
            if p.get("unreachable"):
                parts.append(f"{who} does not get there (its own estimate, {p['own_estimate']:.0f}, is below the goal)")
            elif p.get("budget") is None:
                parts.append(f"{who} more than {p['at_least']} (beyond what the estimate can extrapolate)")
            else:
                hours = f" (≈ {_duration(p['seconds'])})" if p.get("seconds") else ""
                parts.append(f"{who} ≈ {p['budget']}{hours}")
        lines.append(f"To reach ≈ {100 * unseen.get('share', 0.9):.0f} % of the {plan[0]['target']:.0f} training "
                     f"images this audit's samples put within reach at ≥{band}, generated images needed: "
                     + "; ".join(parts) + ".")
    return lines


ESTIMATOR_WORDS = {"chao2": "Chao2 estimate, itself a lower bound",
                   "ichao2": "iChao2 estimate, itself a lower bound: on small audits it fell 17-37 % short "
                             "of what large runs reached"}


def _duration(seconds: float) -> str:
    from .estimate import describe_seconds

    return describe_seconds(seconds) + " on this audit's device"


def _table1(data: dict) -> list[dict]:
    """Random, and each guided method averaged over the declared λ range (the paper averages
    over λ 5-9; never the best λ), with 95 % intervals, as in the paper's Table 1."""
    rows = data["rows"]
    out = []
    rnd = {r["band"]: r for r in rows if r["method"] == "random"}
    if rnd:
        out.append({"method": "random", "lambdas": "0", "n_generated": next(iter(rnd.values()))["n_generated"],
                    "bands": {b: {"ams": _ci(r["ams"], r.get("ams_lo"), r.get("ams_hi")),
                                  "ums": _ci(r["ums"], r.get("ums_lo"), r.get("ums_hi"))} for b, r in rnd.items()}})
    comp = data.get("comparison") or {}
    for method in ("ti", "side"):
        ranged = [c for c in comp.get("range", []) if c["method"] == method and not c["cumulative"]]
        if not ranged:
            continue
        out.append({"method": method, "lambdas": ", ".join(f"{x:g}" for x in ranged[0]["lambdas"]),
                    "n_generated": ranged[0]["n"],
                    "bands": {c["band"]: {k: _ci(c[f"{k}_method"], c[f"{k}_method_lo"], c[f"{k}_method_hi"])
                                          for k in ("ams", "ums")} for c in ranged}})
    return out


def _comparisons(data: dict) -> list[dict]:
    """Per λ and over the declared range: the method against Random on the cumulative bands."""
    comp = data.get("comparison") or {}
    out = []
    for c in comp.get("per_lambda", []) + comp.get("range", []):
        if not c["cumulative"]:
            continue
        lam = f"{c['lambda']:g}" if "lambda" in c else "range " + ", ".join(f"{x:g}" for x in c["lambdas"])
        for key in ("ams", "ums"):
            out.append({"method": c["method"].upper(), "lambda": lam, "band": c["band"], "metric": key.upper(),
                        "method_rate": _ci(c[f"{key}_method"], c.get(f"{key}_method_lo"), c.get(f"{key}_method_hi")),
                        "random_rate": _ci(c[f"{key}_random"], c.get(f"{key}_random_lo"), c.get(f"{key}_random_hi")),
                        # a ratio of two zero rates does not exist: "–", explained above the table
                        "ratio": ("–" if c[f"{key}_ratio"] is not None and c[f"{key}_ratio"] != c[f"{key}_ratio"]
                                  else _ci(c[f"{key}_ratio"], c[f"{key}_ratio_lo"], c[f"{key}_ratio_hi"], pct=False)),
                        "test": c[f"{key}_test"], "p": c[f"{key}_p"], "p_holm": c.get(f"{key}_p_holm"),
                        "verdict": c[f"{key}_verdict"]})
    return out


def _charts(rows, best_all, bands, higher, scorer) -> dict[str, bytes]:
    out = {}
    for metric in ("ams", "ums"):
        series, hlines = [], []
        for method in sorted({r["method"] for r in rows} - {"random"}):
            for b in bands:
                pts = sorted((r["lambda"], r) for r in rows if r["method"] == method and r["band"] == b.name)
                if pts:
                    series.append({"label": f"{method.upper()} {b.name}", "x": [p[0] for p in pts],
                                   "y": [100 * p[1][metric] for p in pts],
                                   "lo": [_pct(p[1].get(f"{metric}_lo")) for p in pts],
                                   "hi": [_pct(p[1].get(f"{metric}_hi")) for p in pts],
                                   "colour": charts.COLOURS[b.name]})
        for b in bands:
            ref = [r for r in rows if r["method"] == "random" and r["band"] == b.name]
            if ref:
                hlines.append({"label": f"Random {b.name}", "y": 100 * ref[0][metric],
                               "lo": _pct(ref[0].get(f"{metric}_lo")), "hi": _pct(ref[0].get(f"{metric}_hi")),
                               "colour": charts.COLOURS[b.name]})
        out[metric] = charts.line_chart(series, f"{metric.upper()} vs guidance scale (95 % intervals)", "λ",
                                        "% of N_G", hlines)
    edges = [{"label": b.name, "x": b.lo if higher else b.hi, "colour": charts.COLOURS[b.name]} for b in bands]
    what = {"sscd": "cosine (higher = closer)", "pixel": "Gu ratio nearest / second-nearest (lower = closer)",
            "pixel-carlini": "calibrated l2 ratio (lower = closer)"}.get(scorer, "")
    out["hist"] = charts.histogram(best_all, edges, f"Best match of every generated image ({scorer})", what)
    return out


CURVE_COLOURS = {"random": "#555555", "side": "#d23c3c", "ti": "#4c9bd9", "side+random": "#e8a317",
                 "ti+random": "#7a5cc2"}


def _budget_chart(unseen: dict, band: str = "mid") -> bytes:
    est = unseen.get("estimator", "chao2")
    curves = [{"label": STRATEGY_WORDS.get(r["strategy"], r["strategy"]), "colour": CURVE_COLOURS.get(r["strategy"],
               "#333333"), "points": r["curve"], "asymptote": r[est]}
              for r in unseen["strategies"] if r["band"] == band and r["cumulative"]]
    return charts.budget_chart(curves, f"Training images found at ≥{band}, by budget",
                               "generated images (budget)", "training images")


def _pct(v):
    return None if v is None else 100 * v


# -- rendering ---------------------------------------------------------------------------

def render_html(model: dict, image_src=_b64) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(resources.path("templates"))),
                      autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.2f} %"
    env.filters["num"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}"
    env.filters["duration"] = lambda v: "—" if v is None else _duration(v).replace(" on this audit's device", "")
    env.filters["img"] = lambda data, name="": image_src(data, name)
    env.filters["ci"] = lambda row, key: _ci(row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi"))
    return env.get_template("report.html.j2").render(m=model, json=json)


def write_csv(model: dict, workspace: str | Path, out: Path) -> Path:
    """A zip with one CSV per table (headers included) and the audit's identification."""
    ws = Workspace(workspace)
    db = storage.connect(ws.db_path)
    try:
        tables = {
            "samples": "select id, method, lam, sample_index, seed, cls, best, nearest, second, gu_ratio, png, steered "
                       "from samples order by id",
            "matches": "select sample_id, train_idx, score from matches order by sample_id, train_idx",
            "metrics": "select * from metrics order by method, lam, band",
            "topk": "select * from topk order by method, lam, fraction",
            "summary": "select * from summary order by method, lam",
            "decisions": "select sample_id, train_idx, decision, note, decided_at from decisions order by sample_id",
        }
        if out.suffix != ".zip":
            out = out.with_suffix(".zip")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for name, query in tables.items():
                cur = db.execute(query)
                z.writestr(f"{name}.csv", _csv([c[0] for c in cur.description], cur.fetchall()))
            exp = model["exposure_all"]
            cols = ["train_idx", "hash", "high", "mid", "low", "total", "best_score", "best_sample"]
            if not model["redacted"]:
                cols.insert(1, "path")
            # per strategy and band (at least as close): hits, and the per-sample extraction
            # probability hits / generated images with its exact 95 % interval
            n = results.extraction_n(db)
            keys = [f"{e['strategy']}_{e['band']}" for e in results.extraction(exp[0], n)] if exp else []
            extra = [f"{k}_{part}" for k in keys for part in ("hits", "p", "p_lo", "p_hi")]

            def extraction_cells(e: dict) -> list:
                by = {f"{x['strategy']}_{x['band']}": x for x in results.extraction(e, n)}
                return [v for k in keys for v in (by[k]["hits"], by[k]["p"], by[k]["lo"], by[k]["hi"])]

            z.writestr("exposure.csv", _csv(cols + extra, [[e.get(c) for c in cols] + extraction_cells(e)
                                                           for e in exp]))
            ident = {k: model[k] for k in ("tool", "date", "workspace", "redacted", "config", "bands", "stages")}
            ident["audit"] = {k: v for k, v in model["audit"].items() if k != "config"}
            if model["redacted"]:
                ident["audit"]["train_path"] = "(redacted)"
            z.writestr("audit.json", json.dumps(ident, indent=2, default=str))
        return out
    finally:
        db.close()


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_report(workspace: str | Path, fmt: str, out: str | Path, redact: bool = False, top: int = 24,
                 pdf_writer: Callable[[dict, Path], Path] | None = None) -> Path:
    """HTML and CSV are written here; PDF by ``pdf_writer(model, out)``, which a front end passes
    (the Qt renderer lives in side_gui: the engine imports no GUI code)."""
    out = Path(out).expanduser()
    if fmt not in ("html", "pdf", "csv"):
        raise ConfigError(f"--format {fmt!r}: choose html, pdf or csv")
    model = build_report(workspace, redact=redact, top=top)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "html":
            out.write_text(render_html(model), encoding="utf-8")
            return out
        if fmt == "csv":
            db = storage.connect(Workspace(workspace).db_path)
            try:
                exp = results.exposure(db)
                hashes = {r["idx"]: r["sha256"] for r in db.query("select idx, sha256 from train_images")}
            finally:
                db.close()
            model["exposure_all"] = [{**e, "hash": hashes.get(e["train_idx"], "")} for e in exp]
            return write_csv(model, workspace, out)
        if pdf_writer is None:
            raise ConfigError("PDF export needs the desktop app's renderer (PySide6); use --format html or csv")
        return pdf_writer(model, out)
    except OSError as e:
        raise WorkspaceError(f"{out}: cannot write the report ({e.strerror or e})") from None
