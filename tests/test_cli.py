"""The command line over whole tiny audits: status, metrics --json, estimate, stop."""

import json

import pytest

from side_audit.cli import main
from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.errors import Cancelled
from side_engine.progress import RecordingProgress

from .conftest import TINY_SETTINGS


def test_cli_status_and_metrics_json(tiny_workspace, capsys):
    assert main(["status", str(tiny_workspace.root)]) == 0
    assert "not started" in capsys.readouterr().out
    assert main(["run", str(tiny_workspace.root), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["metrics", str(tiny_workspace.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"audit", "rows", "topk", "exposure"}
    assert data["audit"]["checkpoint_sha256"] and data["rows"][0]["scorer"] == "pixel"
    db = storage.connect(tiny_workspace.db_path)
    stored = {(r["method"], r["lam"], r["band"]): r["ums"] for r in db["metrics"].rows}
    db.close()
    assert {(r["method"], r["lambda"], r["band"]): r["ums"] for r in data["rows"]} == stored
    for r in data["rows"]:  # every rate carries its interval
        for key in ("ams", "ums", "ams_cumulative", "ums_cumulative"):
            assert r[f"{key}_lo"] <= r[key] + 1e-12 and r[key] <= r[f"{key}_hi"] + 1e-12, (key, r)
    assert "Gu et al." in data["audit"]["measure"]
    comp = data["comparison"]
    assert comp["table_lambdas"] == [2.0, 5.0] and not comp["declared"]
    per = [c for c in comp["per_lambda"] if c["band"] == "mid" and c["cumulative"]]
    assert sorted(c["lambda"] for c in per) == [2.0, 5.0] and all(c["n"] == 6 for c in per)
    for c in per:
        assert c["ams_p_holm"] >= c["ams_p"] and c["ams_test"] == "McNemar exact"
        assert c["ums_verdict"] in ("no difference shown", "more than Random", "fewer than Random")
    assert [r["lambdas"] for r in comp["range"] if r["band"] == "mid" and r["cumulative"]] == [[2.0, 5.0]]
    cov = [c for c in comp["coverage"] if c["band"] == "mid"][0]
    assert cov["points"][-1]["budget"] == 6
    assert main(["status", str(tiny_workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "samples stored: 18 of 18" in out
    assert "peak memory" in out and "MiB" in out.split("tdkd", 1)[1].splitlines()[0]

def test_cli_estimate_whole_audit_then_only_the_work_left(tiny_workspace, capsys):
    assert main(["estimate", str(tiny_workspace.root), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert not before["resumed"] and before["n_train"] == 12 and before["device"] == "cpu"
    assert before["seconds"]["total"] > before["seconds"]["sample"] > 0
    assert not tiny_workspace.db_path.exists()  # an estimate writes nothing
    AuditRunner(tiny_workspace).run()
    assert main(["estimate", str(tiny_workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "for the work left" in out and "on cpu" in out
    assert main(["estimate", str(tiny_workspace.root), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["resumed"] and after["seconds"]["total"] == 0.0

def test_side_audit_stop_stops_a_running_audit_after_its_batch_and_run_resumes(tmp_path, tiny_model, faces, capsys):
    """The stop request file (what `side-audit stop` writes, from any shell or node) stops the
    run at its next check; the request ends with that run; a resume completes the audit."""

    class StopFromElsewhere(RecordingProgress):
        def update(self, stage, done, total):
            super().update(stage, done, total)
            if stage == "sample" and done >= 8:
                assert main(["stop", str(ws.root)]) == 0

    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **TINY_SETTINGS)
    with pytest.raises(Cancelled):
        AuditRunner(ws, StopFromElsewhere()).run()
    assert "asked the audit running in" in capsys.readouterr().out
    assert not ws.stop_path.exists()
    total = len(ws.load_config().grid()) * TINY_SETTINGS["n_per_lambda"]
    db = storage.connect(ws.db_path)
    assert 8 <= db["samples"].count < total
    db.close()
    ws.stop_path.write_text("stale")  # a request left from before does not stop a new run
    AuditRunner(ws).run()
    db = storage.connect(ws.db_path)
    assert db["samples"].count == total
    db.close()
    assert main(["stop", str(tmp_path / "nothing")]) != 0
    assert "not an audit workspace" in capsys.readouterr().err


def test_cli_init_preset_and_fork_with_settings(tmp_path, tiny_model, faces, capsys):
    from side_engine.config import PRESETS
    from side_engine.workspace import Workspace

    ws = tmp_path / "paper"
    assert main(["init", str(ws), "--checkpoint", str(tiny_model), "--train-data", str(faces),
                 "--preset", "paper"]) == 0
    cfg = Workspace(ws).load_config()
    assert all(getattr(cfg, k) == v for k, v in PRESETS["paper"].items())
    base = init_workspace(tmp_path / "base", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(base).run()
    capsys.readouterr()
    assert main(["fork", str(base.root), str(tmp_path / "f"), "--set", "lambdas=[0, 4]",
                 "--set", "guidance_schedule=constant"]) == 0
    out = capsys.readouterr().out
    assert "reuses import, embed, labels, classifier, synthetic, tdkd" in out and "guidance_schedule" in out
    assert "carried over" in out and "guided" not in out.split("carried over")[1].split("\n")[0]  # schedule changed
    forked = Workspace(tmp_path / "f").load_config()
    assert forked.lambdas == [0, 4] and forked.guidance_schedule == "constant"
    assert main(["fork", str(base.root), str(tmp_path / "g"), "--set", "lambdas"]) != 0
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["fork", str(base.root), str(tmp_path / "h"), "--set", "guidance_schedule=sometimes"]) != 0
    assert "'guidance_schedule' = 'sometimes'" in capsys.readouterr().err
    assert not (tmp_path / "h" / "audit.toml").exists()  # a refused fork writes nothing
