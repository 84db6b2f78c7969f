"""Whole audits on a tiny random UNet and LFW faces: stages, resume, identity checks, offline."""

import json
import socket

import numpy as np
import pytest
import torch

from side_engine import storage
from side_engine.audit import STAGES, AuditRunner, init_workspace
from side_engine.cli import main
from side_engine.errors import Cancelled, WorkspaceError
from side_engine.progress import RecordingProgress

from .conftest import TINY_SETTINGS


def _samples(ws):
    db = storage.connect(ws.db_path)
    rows = [tuple(r.values()) for r in db.query(
        "select method, lam, sample_index, seed, cls, best, nearest, png from samples "
        "order by method, lam, sample_index")]
    matches = [tuple(r.values()) for r in db.query(
        "select s.method, s.lam, s.sample_index, m.train_idx, m.score from matches m join samples s "
        "on s.id = m.sample_id order by 1, 2, 3, 4")]
    metrics = [tuple(r.values()) for r in db.query("select * from metrics order by method, lam, band")]
    db.close()
    return rows, matches, metrics


def test_every_stage_runs_and_is_stored(tiny_workspace):
    progress = RecordingProgress()
    result = AuditRunner(tiny_workspace, progress).run()
    db = storage.connect(tiny_workspace.db_path)
    stages = {r["name"]: r for r in storage.stage_rows(db)}
    assert set(stages) == set(STAGES) and all(r["status"] == "done" for r in stages.values())
    assert stages["classifier"]["done"] == TINY_SETTINGS["classifier_epochs"]
    assert db["samples"].count == 3 * TINY_SETTINGS["n_per_lambda"]  # random + side at 2 and 5
    assert {r["name"] for r in db["classifiers"].rows} == {"ti", "td"}
    audit = list(db["audits"].rows)[0]
    assert audit["scorer"] == "pixel" and len(audit["train_fingerprint"]) == 64
    assert {(r["method"], r["lambda"]) for r in result["rows"]} == {("random", 0.0), ("side", 2.0), ("side", 5.0)}
    for r in result["rows"]:
        assert set(r) >= {"method", "lambda", "n_generated", "scorer", "band", "ams", "ums",
                          "ams_cumulative", "ums_cumulative"}
    # progress went through one interface, in stage order
    seen = [s for s, _, _ in progress.events]
    assert seen.index("import") < seen.index("classifier") < seen.index("tdkd") < seen.index("sample")
    assert (tiny_workspace.classifiers_dir / "td.safetensors").exists()
    # a PNG is kept exactly for the samples in a band
    for r in db.query("select s.png, count(m.train_idx) n from samples s left join matches m "
                      "on m.sample_id = s.id group by s.id"):
        assert (r["png"] is not None) == (r["n"] > 0)
    db.close()


def test_cancel_mid_sampling_then_resume_equals_uninterrupted(tmp_path, tiny_model, faces):
    whole = init_workspace(tmp_path / "whole", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(whole).run()
    parted = init_workspace(tmp_path / "parted", str(tiny_model), str(faces), **TINY_SETTINGS)
    with pytest.raises(Cancelled):
        AuditRunner(parted, RecordingProgress(cancel_after=("sample", 8))).run()
    db = storage.connect(parted.db_path)
    assert db["samples"].count == 8  # exactly the committed batch
    assert {r["name"]: r["status"] for r in storage.stage_rows(db)}["sample"] == "stopped"
    db.close()
    progress = RecordingProgress()
    AuditRunner(parted, progress).run()
    assert "classifier" not in {s for s, _, _ in progress.events}  # finished stages are not redone
    a, b = _samples(whole), _samples(parted)
    assert a[0] == b[0] and a[1] == b[1]
    assert np.allclose([r[-4:] for r in a[2]], [r[-4:] for r in b[2]])
    # a second run of a finished audit changes nothing
    AuditRunner(parted).run()
    assert _samples(parted)[0] == b[0]
    # the workspace keeps every run's log, whichever front end ran it: three runs, their outcomes
    log = parted.log_path.read_text()
    assert log.count("run started") == 3
    outcomes = [line.split("  ", 1)[1].split(" after ")[0] for line in log.splitlines() if " after " in line
                and line.split("  ", 1)[1].startswith("run ")]
    assert outcomes == ["run stopped by the user (resumable)", "run complete", "run complete"]
    assert "stage classifier finished in" in log and "TI classifier: accuracy" in log
    assert all(m in log for m in progress.messages)  # every line the front end was shown


def test_resume_refuses_changed_checkpoint_or_settings(tmp_path, tiny_model, faces):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    ws = init_workspace(tmp_path / "ws", str(model), str(faces), **TINY_SETTINGS)
    with pytest.raises(Cancelled):
        AuditRunner(ws, RecordingProgress(cancel_after=("sample", 1))).run()
    text = ws.config_path.read_text()
    ws.config_path.write_text(text.replace("n_per_lambda = 6", "n_per_lambda = 7"))
    with pytest.raises(WorkspaceError, match="n_per_lambda"):
        AuditRunner(ws).run()
    ws.config_path.write_text(text.replace("batch_size = 8", "batch_size = 4"))  # allowed
    sched = model / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched.read_text())
    cfg["beta_end"] = 0.03
    sched.write_text(json.dumps(cfg))
    with pytest.raises(WorkspaceError, match="checkpoint .* changed"):
        AuditRunner(ws).run()
    assert main(["run", str(ws.root), "--quiet"]) == 3


def test_whole_audit_runs_offline(tiny_workspace, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    result = AuditRunner(tiny_workspace).run()
    assert result["rows"]


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


@pytest.mark.parametrize("source", ["random", "original", "synthetic-clusters"])
def test_other_label_sources(tmp_path, tiny_model, faces, source):
    import shutil

    data = tmp_path / "data"
    for i, p in enumerate(sorted(faces.iterdir())):
        (data / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, data / f"class{i % 3}" / p.name)
    settings = dict(TINY_SETTINGS, label_source=source, k=3)
    if source == "synthetic-clusters":
        settings.update(k=2, n_syn=24)
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(data), **settings)
    progress = RecordingProgress()
    AuditRunner(ws, progress).run()
    db = storage.connect(ws.db_path)
    assert db["samples"].count == 18
    if source == "original":
        assert storage.get_kv(db, "k") == 3
    db.close()


def test_estimate_is_stored_and_the_batch_probe_step_runs(tiny_workspace):
    # the CUDA batch probe cannot run here; its step (one guided step with the audit's own
    # networks and settings) can, for DDPM too
    runner = AuditRunner(tiny_workspace)
    runner.run()
    db = storage.connect(tiny_workspace.db_path)
    est = storage.get_kv(db, "estimate")
    assert set(est) >= {"classifier", "synthetic", "tdkd", "sample", "total"}
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))
    assert est["import"] == 0.0  # done before the estimate: nothing left of it
    assert all(est[k] > 0 for k in ("classifier", "synthetic", "tdkd", "sample")), est
    db.close()
    for sampler in ("ddim", "ddpm"):
        cfg = tiny_workspace.load_config()
        cfg.sampler = sampler
        step, close = runner._probe_step(cfg)
        x = step(3)
        close()
        size = runner.target.sample_size
        assert x.shape == (3, runner.target.channels, size, size) and bool(x.isfinite().all())


def test_the_estimate_counts_the_classifier_steps_the_stage_trains(tiny_workspace):
    """The TI classifier trains at least classifier_min_steps steps (at N = 32 an epoch is one
    step); the estimate counts those epochs, not classifier_epochs alone (it understated the
    demo's classifier stage 2.5×)."""
    from side_engine.classifier_training import ti_batch, ti_epochs, train_ti
    from side_engine.classifiers import ResNetClassifier
    from side_engine.estimate import estimate
    from side_engine.progress import Progress

    per = {"unet": 1e-3, "guidance": 1e-3, "train": 1e-3}
    cfg = tiny_workspace.load_config()
    cfg.classifier_epochs, cfg.classifier_min_steps = 5, 40
    n = 32
    assert estimate(per, cfg, n)["classifier"] == pytest.approx(40 * n * 1e-3)  # one step an epoch
    cfg.classifier_min_steps = 0
    assert estimate(per, cfg, n)["classifier"] == pytest.approx(5 * n * 1e-3)
    # the stage trains what the estimate counts
    x, y = torch.randn(n, 1, 16, 16), torch.arange(n) % 4
    report = train_ti(x, y, ResNetClassifier(4, 1, 4, True), 5, 1e-3, ti_batch(n), 0, Progress(), min_steps=40)
    assert report.details["epochs"] == ti_epochs(n, ti_batch(n), 5, 40) == 40 and report.details["steps"] == 40


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


def test_a_workspace_from_before_the_measures_keeps_its_sampler_and_carlini_measure(tmp_path):
    """Audits started before Gu's ratio and the pipeline sampler existed keep what they ran with."""
    import sqlite3

    import sqlite_utils

    from side_engine.config import AuditConfig
    from side_engine.results import stored_bands

    path = tmp_path / "audit.db"
    db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    storage.migrations.apply(db, stop_before="m003_measures")
    old = AuditConfig(checkpoint="m", train_data="d").to_dict()
    carlini = {"low": [2 / 3, 1.0], "mid": [1 / 3, 2 / 3], "high": [0.0, 1 / 3]}
    for key in ("sampler_convention", "table_lambdas", "bands_pixel_carlini", "classifier_min_steps"):
        old.pop(key)
    old["bands_pixel"] = carlini
    db["audits"].insert({"id": 1, "config": json.dumps(old), "scorer": "pixel", "versions": "{}"})
    db["metrics"].insert({"method": "random", "lam": 0.0, "band": "mid", "scorer": "pixel", "ams": 0.5})
    db.conn.close()
    db = storage.connect(path)  # applies the pending migration
    audit = list(db["audits"].rows)[0]
    cfg = json.loads(audit["config"])
    assert audit["scorer"] == "pixel-carlini" and cfg["scorer"] == "pixel-carlini"
    assert cfg["sampler_convention"] == "clipped-eps" and cfg["bands_pixel_carlini"] == carlini
    assert [r["scorer"] for r in db["metrics"].rows] == ["pixel-carlini"]
    bands, higher = stored_bands(db)
    assert [(b.name, b.lo, b.hi) for b in bands][1] == ("mid", 1 / 3, 2 / 3) and not higher
    assert "guidance_ratio" in db["samples"].columns_dict
    db.close()


def test_every_stage_is_a_module_behind_the_stage_protocol():
    """Running a stage on one process or many is a property of the stage (its SPLIT), not a
    second copy of it: each stage module names its stages and how its work divides."""
    import importlib
    import inspect

    from side_engine.stages.base import STAGES

    names = []
    for mod in ("training_data", "embedding", "surrogate_labels", "classifier", "synthetic", "tdkd", "sampling",
                "metrics"):
        stage = importlib.import_module(f"side_engine.stages.{mod}")
        assert stage.SPLIT in ("rank0", "samples", "data"), mod
        assert list(inspect.signature(stage.run).parameters)[:2] == ["audit", "cfg"], mod
        names += list(stage.NAMES)
    assert sorted(names) == sorted(STAGES)  # every stage has exactly one home
    from side_engine import audit

    assert not [m for m in vars(audit.AuditRunner) if m.startswith("_stage_")]  # none left in the runner


def test_any_split_of_the_sample_indices_makes_the_same_samples(tmp_path, tiny_model, faces, monkeypatch):
    """What a multi-process run relies on: an image depends on its (seed, index) only, not on
    which batch or in which order it was made. Reversed order and other batch sizes, computed
    apart from the workspace (compute_batch) and stored after (store_batch), give the same audit."""
    from side_engine.stages import sampling

    ref = init_workspace(tmp_path / "ref", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(ref).run()
    original = sampling.plan
    monkeypatch.setattr(sampling, "plan", lambda audit, cfg: list(reversed(original(audit, cfg))))
    other = init_workspace(tmp_path / "other", str(tiny_model), str(faces), **dict(TINY_SETTINGS, batch_size=5))
    AuditRunner(other).run()
    a, b = _samples(ref), _samples(other)
    assert [r[:5] + (r[6],) for r in a[0]] == [r[:5] + (r[6],) for r in b[0]]  # same seeds, classes, nearest
    assert np.allclose([r[5] for r in a[0]], [r[5] for r in b[0]], atol=1e-5)  # same best scores
    assert [m[:4] for m in a[1]] == [m[:4] for m in b[1]]  # same in-band pairs


@pytest.mark.slow
def test_two_processes_through_torchrun_make_the_single_process_audit_and_resume_a_stopped_one(
        tmp_path, tiny_model, faces):
    """`side-audit run WS --nproc 2` on CPU (gloo): rank 0 owns the workspace, rank 1 computes
    its share of the synthetic set, TDKD and sampling from what rank 0 broadcast; the audit
    equals a single-process one — also when two torchrun agents meet at a c10d rendezvous and
    resume an audit that a single process stopped mid-sampling."""
    import os
    import subprocess
    import sys

    from tests.test_distributed import _free_port

    whole = init_workspace(tmp_path / "whole", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(whole).run()
    two = init_workspace(tmp_path / "two", str(tiny_model), str(faces), **TINY_SETTINGS)
    assert main(["run", str(two.root), "--nproc", "2", "--quiet"]) == 0
    _same_samples(whole, two)
    log = two.log_path.read_text()
    remote = int(log.split("sampling on 2 processes: ")[1].split(" of ")[0])
    assert remote >= 1  # rank 1 really computed batches
    assert "TDKD training on 2 processes" in log
    stopped = init_workspace(tmp_path / "stopped", str(tiny_model), str(faces), **TINY_SETTINGS)
    with pytest.raises(Cancelled):
        AuditRunner(stopped, RecordingProgress(cancel_after=("sample", 8))).run()
    # the cluster form, as far as one machine allows: two "nodes" (two torchrun agents) meet at a
    # c10d rendezvous on localhost; only one of them sees the workspace (a relative path from
    # its own folder), as on a cluster without a shared file system, and its rank owns the audit
    port = _free_port()
    elsewhere = tmp_path / "node-without-the-workspace"
    elsewhere.mkdir()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
              "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=side-test",
              "-m", "side_engine.distributed", "stopped", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen(launch, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for cwd in (tmp_path, elsewhere)]
    outs = [node.communicate(timeout=300)[0].decode(errors="replace") for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    _same_samples(whole, stopped)
    assert "sampling on 2 processes" in stopped.log_path.read_text().split("run started")[-1]


def _same_samples(ws_a, ws_b, atol: float = 2e-4) -> None:
    """Two audits made the same samples, within float tolerance: processes with other thread
    counts sum in another order, and over guided steps scores drift by up to ~5e-5 (measured);
    that may flip the nearest of two training images at an exact tie (Gu ratio ~1), so the
    nearest is compared only where it is not a tie."""
    def rows(ws):
        db = storage.connect(ws.db_path)
        out = [tuple(r.values()) for r in db.query(
            "select method, lam, sample_index, seed, cls, best, nearest, gu_ratio from samples "
            "order by method, lam, sample_index")]
        db.close()
        return out

    a, b = rows(ws_a), rows(ws_b)
    assert [r[:5] for r in a] == [r[:5] for r in b]  # the same samples, seeds and target classes
    assert np.allclose([r[5] for r in a], [r[5] for r in b], atol=atol)
    assert all(x[6] == y[6] for x, y in zip(a, b) if (x[7] or 0) < 0.999)
    assert _samples(ws_a)[1] == _samples(ws_b)[1]  # the same in-band pairs


def _once_stored(job, ws, n: int, timeout: float = 240) -> bool:
    """Wait (polling read-only) until the running ``job`` has stored ``n`` samples; False if it
    ended or the time ran out first."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and job.poll() is None:
        if ws.db_path.exists():
            try:
                db = storage.connect(ws.db_path, readonly=True)
                try:
                    stored = db["samples"].count if "samples" in db.table_names() else 0
                finally:
                    db.close()
            except WorkspaceError:  # not created yet
                stored = 0
            if stored >= n:
                return True
        time.sleep(0.2)
    return False


def _rank_pids(rank: int) -> list[int]:
    """Processes of `side_engine.distributed` started by torchrun with this RANK."""
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"side_engine.distributed" in cmd and f"RANK={rank}".encode() in env:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="needs /proc to find the rank")
def test_a_rank_killed_mid_sampling_loses_nothing_stored_and_a_resume_completes_the_audit(
        tmp_path, tiny_model, faces):
    import os
    import signal
    import subprocess
    import sys

    settings = dict(TINY_SETTINGS, n_per_lambda=40, steps=10)
    whole = init_workspace(tmp_path / "whole", str(tiny_model), str(faces), **settings)
    AuditRunner(whole).run()
    ws = init_workspace(tmp_path / "killed", str(tiny_model), str(faces), **settings)
    job = subprocess.Popen([sys.executable, "-m", "side_engine.cli", "run", str(ws.root), "--nproc", "2", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    if _once_stored(job, ws, 16) and (pids := _rank_pids(1)):
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed = True
    assert killed, "the job finished before a rank could be killed"
    assert job.wait(timeout=240) != 0  # the job stops: a rank is gone
    db = storage.connect(ws.db_path)
    stored = db["samples"].count
    keys = [tuple(r.values()) for r in db.query("select method, lam, sample_index from samples")]
    db.close()
    assert 16 <= stored < 120 and len(keys) == len(set(keys))  # whole batches kept, none twice
    assert main(["run", str(ws.root), "--quiet"]) == 0  # a resume (any number of processes) completes it
    _same_samples(whole, ws)


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


@pytest.mark.slow
def test_ctrl_c_on_a_multi_process_run_stops_it_cleanly_after_its_batch(tmp_path, tiny_model, faces):
    """Ctrl-C in a terminal signals the terminal's process group: the CLI (torchrun and the ranks
    run in a group of their own) asks the run to stop through the workspace's stop request, the
    owner stops after its batch and tells the others, the CLI waits for that and exits 130 with
    no launcher traceback, the run log says "stopped", and a resume completes the audit."""
    import os
    import signal
    import subprocess
    import sys

    settings = dict(TINY_SETTINGS, n_per_lambda=40, steps=10)
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **settings)
    job = subprocess.Popen([sys.executable, "-m", "side_engine.cli", "run", str(ws.root), "--nproc", "2", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    sent = False
    if _once_stored(job, ws, 16):
        os.killpg(job.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        sent = True
    assert sent, "the job finished before it could be interrupted"
    err = job.communicate(timeout=120)[1].decode(errors="replace")
    assert job.returncode == 130  # stopped by the user, resumable (as a single-process run)
    assert "stopping after the current batch" in err and "Traceback" not in err  # torchrun is not signalled
    assert "run stopped by the user (resumable)" in ws.log_path.read_text()
    db = storage.connect(ws.db_path)
    keys = [tuple(r.values()) for r in db.query("select method, lam, sample_index from samples")]
    stages = {r["name"]: r["status"] for r in storage.stage_rows(db)}
    db.close()
    assert 16 <= len(keys) < len(ws.load_config().grid()) * 40 and len(set(keys)) == len(keys)
    assert stages["sample"] == "stopped"
    assert main(["run", str(ws.root), "--quiet"]) == 0


def test_several_processes_from_a_frozen_bundle_are_refused_clearly(tiny_workspace, monkeypatch, capsys):
    """A PyInstaller bundle cannot start `python -m torch.distributed.run`: say so, run nothing."""
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert main(["run", str(tiny_workspace.root), "--nproc", "2"]) == 2
    assert "runs one process" in capsys.readouterr().err
    assert not tiny_workspace.db_path.exists()


def test_a_multi_process_run_of_a_missing_or_broken_workspace_is_refused_once_before_torchrun(
        tmp_path, tiny_model, faces, capsys):
    """The CLI reads the workspace before it starts torchrun: one error naming the folder or
    setting, not one from every rank followed by the launcher's traceback. An error only the
    run can find (unreadable weights) is said once, by the process that owns the workspace, with
    its exit status, and torchrun adds no traceback below it."""
    import shutil
    import subprocess
    import sys

    assert main(["run", str(tmp_path / "nothing"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("nothing: no such folder") == 1 and "Traceback" not in err
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    ws = init_workspace(tmp_path / "ws", str(broken), str(faces), **TINY_SETTINGS)
    next(broken.rglob("*.safetensors")).write_bytes(b"not a safetensors file")  # damaged after init
    toml = ws.config_path
    good = toml.read_text()
    toml.write_text(good.replace("\nsteps = ", "\nsteps = -"))
    assert main(["run", str(ws.root), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and "Traceback" not in err
    toml.write_text(good)
    job = subprocess.run([sys.executable, "-m", "side_engine.cli", "run", str(ws.root), "--nproc", "2"],
                         capture_output=True, text=True, timeout=240)
    assert job.returncode == 2
    assert job.stderr.count("unreadable safetensors file") == 1, job.stderr
    assert "Traceback" not in job.stderr and "ChildFailedError" not in job.stderr
