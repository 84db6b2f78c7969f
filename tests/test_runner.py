"""Whole audits on a tiny random UNet and LFW faces through the runner: stages, resume,
identity checks, label sources, the estimate, offline."""

import json
import socket

import numpy as np
import pytest
import torch

from side_audit.cli import main
from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace, probe_step
from side_engine.errors import Cancelled, WorkspaceError
from side_engine.progress import RecordingProgress
from side_engine.stages import NAMES as STAGES

from .conftest import TINY_SETTINGS, stored_samples


def test_every_stage_runs_and_is_stored(tiny_workspace):
    progress = RecordingProgress()
    result = AuditRunner(tiny_workspace, progress).run()
    db = storage.connect(tiny_workspace.db_path)
    stages = {r["name"]: r for r in storage.stage_rows(db)}
    # every stage but heldout, which runs only with a held-out folder
    assert set(stages) == set(STAGES) - {"heldout"} and all(r["status"] == "done" for r in stages.values())
    assert stages["classifier"]["done"] == TINY_SETTINGS["classifier_epochs"]
    # each stage's own peak memory: at least the process it ran in (torch alone is > 100 MiB)
    assert all(100 < r["peak_rss_mb"] < 8192 for r in stages.values()), stages
    assert db["samples"].count == 3 * TINY_SETTINGS["n_per_lambda"]  # random + side at 2 and 5
    # the best-match histogram is stored with the tables (the app reads 40 counts, not every score)
    best = np.array([r["best"] for r in db["samples"].rows])
    counts, edges = np.histogram(best, bins=40)
    assert result["best_histogram"] == {"counts": counts.tolist(), "edges": edges.tolist()}
    assert {r["name"] for r in db["classifiers"].rows} == {"ti", "td"}
    threads = {json.loads(r["details"])["trained_by"] for r in db["classifiers"].rows}
    assert len(threads) == 1 and threads.pop().startswith("one process, ")  # the layout is part of the record
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
    a, b = stored_samples(whole), stored_samples(parted)
    assert a[0] == b[0] and a[1] == b[1]
    assert np.allclose([r[-4:] for r in a[2]], [r[-4:] for r in b[2]])
    # a second run of a finished audit changes nothing
    AuditRunner(parted).run()
    assert stored_samples(parted)[0] == b[0]
    # the workspace keeps every run's log, whichever front end ran it: three runs, their outcomes
    log = parted.log_path.read_text()
    assert log.count("run started") == 3
    outcomes = [line.split("  ", 1)[1].split(" after ")[0] for line in log.splitlines() if " after " in line
                and line.split("  ", 1)[1].startswith("run ")]
    assert outcomes == ["run stopped by the user (resumable)", "run complete", "run complete"]
    assert "stage classifier finished in" in log and "TI classifier: accuracy" in log
    assert all(m in log for m in progress.messages)  # every line the front end was shown
    # the duration probe runs once: the resume on the same machine estimates from the first one
    estimates = [line for line in log.splitlines() if "estimated time left" in line]
    assert len(estimates) == 2 and "(probe: UNet" in estimates[0] and "the run’s first probe" in estimates[1]

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
    from side_engine.report import build_report, render_html
    from side_engine.results import metrics_json

    data = metrics_json(db)
    if source == "synthetic-clusters":
        # no training image has a class: on target is the target's cluster, stored with every sample
        k = storage.get_kv(db, "k")
        clusters = [r[0] for r in db.execute("select cluster from samples").fetchall()]
        assert all(c is not None and 0 <= c < k for c in clusters)
        probe = storage.get_kv(db, "guide_check")["probe"]
        assert probe["on_target_defined"] is True and probe["on_target_by"] == "cluster"
        assert data["on_target_by"] == "cluster"
        hits = db.execute("select count(*) from samples where method = 'side' and cluster = cls").fetchone()[0]
        side = [s for s in data["summary"] if s["method"] == "side"]
        assert sum(round(s["on_target"] * s["n_generated"]) for s in side) == hits
        import html

        page = html.unescape(render_html(build_report(ws.root)))
        assert "in its target's cluster" in page and "Probe of" in page
    else:  # classes on training images: the nearest image's class decides, and the report says so
        assert data["on_target_by"] == "training image"
        assert db.execute("select count(*) from samples where cluster is not null").fetchone()[0] == 0
        assert "Probe of" in render_html(build_report(ws.root))
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
    ctx = runner.ctx
    for sampler in ("ddim", "ddpm"):
        ctx.cfg.sampler = sampler
        step, close = probe_step(ctx)
        x = step(3)
        close()
        size = ctx.target.sample_size
        assert x.shape == (3, ctx.target.channels, size, size) and bool(x.isfinite().all())

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
    # a classifier that fits after its planned steps is the very same network with the fit rule on
    easy = torch.eye(4).repeat_interleave(64, 1).view(4, 1, 16, 16).repeat(2, 1, 1, 1) * 2 - 1
    nets = []
    for fit in (0.0, 0.9):
        torch.manual_seed(0)
        nets.append(ResNetClassifier(4, 1, 4, True))
        got = train_ti(easy, torch.arange(8) % 4, nets[-1], 5, 1e-2, 8, 0, Progress(), min_steps=60, fit=fit,
                       max_steps=1000)
        assert got.details["train_accuracy"] >= 0.9 and got.details["steps"] == 60 and got.details["fit_blocks"] == 0
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    # a classifier that never fits takes every block it may: the estimate's upper end counts them
    cfg.classifier_epochs, cfg.classifier_min_steps, cfg.classifier_fit, cfg.classifier_max_steps = 5, 10, 0.9, 35
    torch.manual_seed(0)
    noise = train_ti(torch.randn(n, 1, 16, 16), torch.arange(n), ResNetClassifier(n, 1, 4, True), 5, 1e-4,
                     ti_batch(n), 0, Progress(), min_steps=10, fit=0.9, max_steps=35)
    assert noise.details["fit_blocks"] == 2 and noise.details["steps"] == 30
    est = estimate(per, cfg, n)
    assert est["classifier"] == pytest.approx(10 * n * 1e-3)
    assert est["classifier_at_most"] == pytest.approx(30 * n * 1e-3)
    cfg.classifier_fit = 0.0
    assert "classifier_at_most" not in estimate(per, cfg, n)

def test_the_estimate_counts_guidance_only_at_the_steps_it_acts(tiny_workspace):
    """With the settled stop the classifier runs on about half of the steps; the estimate counted
    it at every step and overstated the guided cost about twofold. Before the guide check it
    takes the low end of the settled steps the studies measured; after it, the measured step."""
    from side_engine.estimate import SETTLED_PRIOR, estimate, guided_steps

    per = {"unet": 1e-3, "guidance": 1e-2, "train": 1e-3}
    cfg = tiny_workspace.load_config()
    cfg.steps, cfg.lambdas, cfg.n_per_lambda = 50, [0, 5], 10
    cfg.guidance_stop = "end"
    assert guided_steps(cfg) == 50
    every = estimate(per, cfg, 32)["sample"]
    assert every == pytest.approx(50 * 20 * 1e-3 + 50 * 10 * 1e-2)
    cfg.guidance_stop = "settled"
    prior = guided_steps(cfg)  # t = 460 ... 980: the steps above the prior's settled step
    assert prior == sum(20 * k > int(SETTLED_PRIOR * 999) for k in range(50)) == 27
    assert estimate(per, cfg, 32)["sample"] == pytest.approx(50 * 20 * 1e-3 + prior * 10 * 1e-2)
    assert guided_steps(cfg, settled_t=900) == 4  # measured: t = 920, 940, 960, 980
    assert guided_steps(cfg, settled_t=-1) == 50  # never settled: guidance at every step, as sampled
    assert estimate(per, cfg, 32, {"settled_t": 900})["sample"] == pytest.approx(50 * 20 * 1e-3 + 4 * 10 * 1e-2)
    # after the guide check, the timesteps it stored are the sampler's own (here a trailing grid)
    trailing = list(range(999, 0, -20))
    assert guided_steps(cfg, settled_t=900, timesteps=trailing) == sum(t > 900 for t in trailing) == 5
    cfg.guidance_min_t = 0.95  # the interval setting narrows it further
    assert guided_steps(cfg) == 2


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
    second copy of it: each stage module names its stages, how its work divides, and takes the
    stage context alone."""
    import inspect

    from side_engine.pipeline import MODULES

    names = []
    for stage in MODULES:
        assert stage.SPLIT in ("rank0", "samples", "data"), stage.__name__
        assert list(inspect.signature(stage.run).parameters) == ["ctx"], stage.__name__
        names += list(stage.NAMES)
    assert sorted(names) == sorted(STAGES)  # every stage has exactly one home

def test_any_split_of_the_sample_indices_makes_the_same_samples(tmp_path, tiny_model, faces, monkeypatch):
    """What a multi-process run relies on: an image depends on its (seed, index) only, not on
    which batch or in which order it was made. Reversed order and other batch sizes, computed
    apart from the workspace (compute_batch) and stored after (store_batch), give the same audit."""
    from side_engine.stages import sampling

    ref = init_workspace(tmp_path / "ref", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(ref).run()
    original = sampling.plan
    monkeypatch.setattr(sampling, "plan", lambda cfg: list(reversed(original(cfg))))
    other = init_workspace(tmp_path / "other", str(tiny_model), str(faces), **dict(TINY_SETTINGS, batch_size=5))
    AuditRunner(other).run()
    a, b = stored_samples(ref), stored_samples(other)
    assert [r[:5] + (r[6],) for r in a[0]] == [r[:5] + (r[6],) for r in b[0]]  # same seeds, classes, nearest
    assert np.allclose([r[5] for r in a[0]], [r[5] for r in b[0]], atol=1e-5)  # same best scores
    assert [m[:4] for m in a[1]] == [m[:4] for m in b[1]]  # same in-band pairs


def test_a_resume_whose_guide_runs_in_another_precision_says_so(tmp_path, tiny_model, faces, monkeypatch):
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **TINY_SETTINGS, guide_precision="fp32")
    with pytest.raises(Cancelled):
        AuditRunner(ws, RecordingProgress(cancel_after=("sample", 16))).run()
    db = storage.connect(ws.db_path)
    try:
        guided = db.execute("select count(*) from samples where lam > 0").fetchone()[0]
        assert guided > 0 and storage.get_kv(db, "guide_precision") == "fp32"
    finally:
        db.close()
    cfg = ws.load_config()
    cfg.guide_precision = "bf16"  # a run setting: the resume is allowed, and the mix is said
    ws.write_config(cfg, overwrite=True)
    from side_engine import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    said_live = RecordingProgress()
    AuditRunner(ws, said_live).run()
    emulated = [m for m in said_live.messages if "without native bf16" in m]
    assert len(emulated) == 1  # bf16 where it is emulated is slower: the log says so, once a run
    db = storage.connect(ws.db_path)
    try:
        assert storage.get_kv(db, "guide_precision") == "bf16"
        said = [w for w in storage.get_kv(db, "warnings", []) if "guide_precision" in w]
        assert len(said) == 1 and f"in fp32 for the {guided} guided samples" in said[0]
    finally:
        db.close()
    from side_engine.report import build_report, render_html

    assert f"in fp32 for the {guided} guided samples" in render_html(build_report(ws.root))
