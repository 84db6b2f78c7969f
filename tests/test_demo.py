"""The bundled demo: the model card tells the truth about its log, and a reduced demo runs end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from side_audit.cli import main
from side_engine.checkpoint import load_target
from side_engine.demo import RESOURCES

STUDY_MODELS = Path(__file__).resolve().parents[1] / "bench" / "models"


@pytest.mark.parametrize(("root", "faces", "window"), [
    (RESOURCES / "demo", 24, (0.03, 0.30)),  # partial: a few of its faces copied (SIDE's regime)
    (RESOURCES / "regime", 32, (0.02, 0.08)),  # the paper's regime: Random rarely finds a copy
    (STUDY_MODELS / "copier", 32, (0.10, 0.50)),  # saturated: a quarter of its samples copy
], ids=["demo", "regime", "copier"])
def test_bundled_models_are_small_safe_and_memorise_as_their_cards_say(root, faces, window):
    if not root.exists():
        pytest.skip(f"{root} is a checkout's study model, not part of an installed copy")
    model = root / "model"
    target = load_target(model)  # safetensors, unconditional
    assert target.sample_size == 32 and target.channels == 1
    size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    assert size <= 10 * 1024 * 1024
    assert len(list((root / "faces").glob("*.png"))) == faces
    log = [json.loads(line) for line in (root / "train_log.jsonl").read_text().splitlines()]
    card = (root / "MODEL_CARD.md").read_text()
    exported = int(re.search(r"\*\*Exported\*\*: step (\d+)", card).group(1))
    rec = next(r for r in log if r["step"] == exported)
    assert window[0] <= rec["memorised"] <= window[1]
    for r in log:  # every row of the card's table comes from the log
        assert f"| {r['step']} | {r['loss']:.4f} | {100 * r['memorised']:.0f} % | {r['distinct']} |" in card


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    ws = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-gui", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "Memorisation" in out and str(ws) in out
    # printed to a pipe, the table keeps its row labels and every digit of its intervals
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [c.strip() for c in rows[0].split("│")[1:4]] == ["random", "0", "high"] and "…" not in out
    assert main(["metrics", str(ws), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {(r["method"], r["lambda"]) for r in data["rows"]} == {("random", 0.0), ("side", 3.0)}
    assert all(r["n_generated"] == 8 for r in data["rows"])
    # what an unlimited budget would find, per strategy and band: at least what was found, at
    # most the training set; the count found is the UMS row's distinct images
    unseen = data["unseen"]
    assert {r["strategy"] for r in unseen["strategies"]} == {"random", "side", "side+random"}
    ums = {(r["method"], r["band"]): r["ums_cumulative"] for r in data["rows"]}
    for r in unseen["strategies"]:
        assert r["observed"] <= r["chao2_lo"] <= r["chao2"] <= r["chao2_hi"] <= data["audit"]["n_train"]
        if r["strategy"] == "random" and r["cumulative"]:
            assert r["observed"] == round(ums[("random", r["band"])] * r["generated"])
    assert [p["strategy"] for p in unseen["planner"]] == ["random", "side", "side+random"]
    assert all(p["budget"] is not None or p["beyond_cap"] or p["unreachable"] for p in unseen["planner"])
    # each training image at risk: its per-sample extraction probability per strategy and band,
    # hits / generated images, the hits counted again here from the stored pairs
    assert data["extraction_n"] == {"random": 8, "side": 8}
    from side_engine import results, storage

    db = storage.connect(ws / "audit.db")
    bands, higher = results.stored_bands(db)
    for e in data["exposure"][:5]:
        assert {(x["strategy"], x["band"]) for x in e["extraction"]} == {(m, b.name) for m in ("random", "side")
                                                                         for b in bands}
        for x in e["extraction"]:
            band = next(b for b in bands if b.name == x["band"])
            closer = ("m.score >= ?", band.lo) if higher else ("m.score < ?", band.hi)
            hits = db.execute("select count(*) from matches m join samples s on s.id = m.sample_id where "
                              f"m.train_idx = ? and s.method = ? and {closer[0]}",
                              [e["train_idx"], x["strategy"], closer[1]]).fetchone()[0]
            assert x["hits"] == hits and x["p"] == hits / 8 and x["lo"] <= x["p"] <= x["hi"]
    db.close()
    # running it again resumes (nothing to do) instead of starting over
    assert main(["demo", "--quick", "--no-gui", "--workspace", str(ws)]) == 0
    assert "resuming" in capsys.readouterr().err
