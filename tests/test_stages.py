"""The stage seam: the pipeline each setting gets, single stages on a small context, and the
rule that the engine never imports Qt."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.checkpoint import load_target
from side_engine.config import AuditConfig
from side_engine.pipeline import stage_order
from side_engine.progress import Progress
from side_engine.run_store import RunStore
from side_engine.stages import NAMES, embedding, stage_names, surrogate_labels, training_data
from side_engine.stages.context import StageContext

from .conftest import TINY_SETTINGS


def test_the_run_view_reads_the_stage_list_without_loading_the_engine():
    code = ("import sys; import side_gui.widgets.run_view as v; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, sorted(sys.modules); "
            "print([s.name for s in v.STAGES])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'import'" in out.stdout and "'metrics'" in out.stdout


@pytest.mark.parametrize(("methods", "source", "expected"), [
    (["random", "side"], "clusters", ["labels", "classifier", "synthetic", "tdkd"]),
    (["random", "ti"], "clusters", ["labels", "classifier"]),
    (["random"], "original", []),
    (["random", "side", "ti"], "random", ["labels", "classifier", "synthetic", "tdkd"]),
    (["random", "side"], "synthetic-clusters", ["synthetic", "labels", "tdkd"]),
    (["random"], "synthetic-clusters", []),  # no labels: a sample's noise does not depend on K
])
def test_the_pipeline_holds_only_what_the_settings_need(methods, source, expected):
    cfg = AuditConfig(checkpoint="x", train_data="y", methods=methods, label_source=source)
    names = stage_names(cfg)
    assert names == ["import", "embed", *expected, "sample", "score", "metrics"]
    modules = stage_order(cfg)
    assert len(modules) == len(set(modules)) == len(names) - 1  # sample and score: one module
    assert [n for m in modules for n in m.NAMES] == names


def test_an_audit_without_side_makes_no_synthetic_set(tmp_path, tiny_model, faces):
    """Random and TI guidance need no TD classifier: no synthetic set is generated for them, the
    estimate counts none, and the stored stages are exactly the pipeline's."""
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **dict(TINY_SETTINGS, methods=["random", "ti"]))
    runner = AuditRunner(ws)
    runner.run()
    db = storage.connect(ws.db_path)
    try:
        stored = [r["name"] for r in storage.stage_rows(db)]
        assert stored == stage_names(ws.load_config()) and "synthetic" not in stored
        assert not list(ws.synthetic_dir.glob("chunk_*.npy"))
        assert storage.get_kv(db, "estimate")["synthetic"] == 0.0
        assert {r["method"] for r in db.query("select distinct method from samples")} == {"random", "ti"}
        assert {r["name"] for r in db["classifiers"].rows} == {"ti"}
    finally:
        db.close()
    art = runner.ctx.artifacts
    assert art.ti is not None and art.td is None


def small_context(ws, db) -> StageContext:
    """A stage context over ``db`` (the test's connection: it reads what the stages store)."""
    cfg = ws.load_config()
    store = RunStore(db, ws.db_path, Progress(), torch.device("cpu"))
    return StageContext.open(cfg, ws, store, torch.device("cpu"), load_target(cfg.checkpoint), Progress(), 1)


@pytest.fixture()
def workspace_db(tiny_workspace):
    """(workspace, its database) of a tiny audit that has not run."""
    tiny_workspace.ensure_dirs()
    db = storage.connect(tiny_workspace.db_path)
    yield tiny_workspace, db
    db.close()


def test_single_stages_run_on_a_small_context_and_hand_on_their_artifacts(workspace_db):
    ws, db = workspace_db
    ctx = small_context(ws, db)
    assert ctx.artifacts.train_pixels is None
    training_data.run(ctx)
    pixels = ctx.artifacts.train_pixels
    assert pixels.dtype == np.uint8 and pixels.shape == (12, 16, 16, 1)
    assert ctx.store.is_done("import") and not ctx.store.is_done("embed")
    AuditRunner(ws).prepare(ctx)  # what the runner does once the training set is known
    assert ctx.batch == TINY_SETTINGS["batch_size"] and db["audits"].count == 1
    embedding.run(ctx)
    assert ctx.artifacts.train_vectors.shape[0] == 12 and ctx.artifacts.index is not None
    surrogate_labels.run(ctx)
    assert ctx.artifacts.k == TINY_SETTINGS["k"]
    assert sorted(set(ctx.artifacts.surrogate.tolist())) == list(range(TINY_SETTINGS["k"]))
    # a second context (a resumed run) loads what the stages stored instead of redoing them
    again = small_context(ws, db)
    for stage in (training_data, embedding, surrogate_labels):
        stage.run(again)
    assert np.array_equal(again.artifacts.train_pixels, pixels)
    assert np.array_equal(again.artifacts.surrogate, ctx.artifacts.surrogate)
    assert [r["status"] for r in storage.stage_rows(db)] == ["done"] * 3


def test_warnings_are_stored_once_and_the_stage_timer_records_a_failure(workspace_db):
    ws, db = workspace_db
    ctx = small_context(ws, db)
    ctx.report.warn("the guide is weak")
    ctx.report.warn("the guide is weak")
    assert storage.get_kv(db, "warnings") == ["the guide is weak"]
    with pytest.raises(RuntimeError), ctx.store.timed("embed"):
        raise RuntimeError("disk full")
    row = {r["name"]: r for r in storage.stage_rows(db)}["embed"]
    assert row["status"] == "failed" and "disk full" in row["message"] and row["position"] == NAMES.index("embed")


def test_a_ti_classifier_that_cannot_tell_its_training_images_apart_is_named_in_the_warnings(workspace_db):
    """Every training image the TI classifier labels wrong is a class guidance cannot aim at;
    the run says so when that is more than a tenth of them, and not when the classifier fits."""
    from side_engine.stages import classifier

    ws, db = workspace_db
    ctx = small_context(ws, db)
    training_data.run(ctx)
    AuditRunner(ws).prepare(ctx)
    embedding.run(ctx)
    surrogate_labels.run(ctx)

    def ti_warnings(min_steps: int, fit: float = 0.0, max_steps: int = 0) -> tuple[dict, list[str]]:
        storage.set_kv(db, "warnings", [])
        db.execute("delete from stages where name = 'classifier'")
        ctx.ws.classifier_path("ti").unlink(missing_ok=True)
        ctx.cfg.classifier_epochs, ctx.cfg.classifier_min_steps, ctx.cfg.classifier_lr = 1, min_steps, 1e-2
        ctx.cfg.classifier_fit, ctx.cfg.classifier_max_steps = fit, max_steps
        classifier.run(ctx)
        details = json.loads(db["classifiers"].get("ti")["details"])
        return details, [w for w in storage.get_kv(db, "warnings", []) if "TI classifier labels only" in w]

    got, warned = ti_warnings(1)  # one optimiser step and no fit rule: barely better than chance
    acc = got["train_accuracy"]
    assert acc < classifier.FIT_WARN and len(warned) == 1 and f"{100 * acc:.0f} %" in warned[0]
    assert "it trained 1 steps" in warned[0]
    got, warned = ti_warnings(300)
    assert got["train_accuracy"] >= classifier.FIT_WARN and warned == [] and got["fit_blocks"] == 0
    # the fit rule: 20 planned steps do not fit; blocks of 20 more follow until it does
    got, warned = ti_warnings(20, fit=classifier.FIT_WARN, max_steps=600)
    assert got["planned_steps"] == 20 and got["fit_blocks"] >= 1 and got["steps"] == 20 * (1 + got["fit_blocks"])
    assert got["train_accuracy"] >= classifier.FIT_WARN and got["steps"] <= 600 and warned == []
    # ... but never past classifier_max_steps, and the warning names what it took
    got, warned = ti_warnings(1, fit=1.0, max_steps=3)
    assert got["steps"] == 3 and got["fit_blocks"] == 2 and len(warned) == 1 and "it trained 3 steps" in warned[0]


@pytest.mark.parametrize("source", ["synthetic-clusters", "clusters"])
def test_a_random_only_audit_makes_no_labels_and_the_same_random_images(tmp_path, tiny_model, faces, source):
    """Random alone needs no surrogate labels, so no synthetic set: its images are the ones the
    same seed gives beside SIDE (a sample's noise does not depend on K)."""
    settings = dict(TINY_SETTINGS, label_source=source, k=3)
    both = init_workspace(tmp_path / "both", str(tiny_model), str(faces), **settings)
    alone = init_workspace(tmp_path / "alone", str(tiny_model), str(faces),
                           **dict(settings, methods=["random"], lambdas=[0]))
    AuditRunner(both).run()
    AuditRunner(alone).run()
    rows = {}
    for name, ws in (("both", both), ("alone", alone)):
        db = storage.connect(ws.db_path)
        try:
            rows[name] = [(r["sample_index"], r["seed"], r["best"], r["nearest"]) for r in db.query(
                "select * from samples where method = 'random' order by sample_index")]
            if name == "alone":
                assert [r["name"] for r in storage.stage_rows(db)] == ["import", "embed", "sample", "score", "metrics"]
                assert storage.get_kv(db, "k") is None
        finally:
            db.close()
    assert not list(alone.synthetic_dir.glob("*"))
    assert len(rows["alone"]) == settings["n_per_lambda"] and rows["alone"] == rows["both"]
