"""The guide check, the reliability schedule, the scorer-judged on-target rate and forks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from side_engine import guide_check, storage
from side_engine.audit import AuditRunner
from side_engine.config import PRESETS, AuditConfig, method_name
from side_engine.errors import ConfigError, WorkspaceError
from side_engine.fork import fork, reusable_stages
from side_engine.sampler import GuidancePlan, Guide, GuidedSampler
from side_engine.workspace import Workspace

from .conftest import stored_samples
from .test_sampler import _clipping_scheduler, _td_classifier, _unet


def test_weights_are_zero_at_chance_and_one_at_perfect_agreement():
    assert guide_check.weights_from([1.0, 0.25, 0.1, 0.0], chance=0.25) == [1.0, 0.0, 0.0, 0.0]
    assert guide_check.weights_from([0.625], chance=0.25) == [0.5]
    sm = guide_check.smooth([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert len(sm) == 6 and sm[0] == pytest.approx(1 / 3) and sm[2] == pytest.approx(0.4)


def test_a_weight_scales_guidance_exactly_and_zero_weight_skips_it():
    unet, sched = _unet(), _clipping_scheduler()
    td = _td_classifier()
    n = 3
    noise = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    cls, rows = torch.arange(n) % 3, torch.arange(n)
    sampler = GuidedSampler(unet, sched, "ddim", 6)
    plain = sampler.sample(noise, torch.zeros(n), cls).images
    half_lambda = sampler.sample(noise, torch.full((n,), 4.0), cls, [Guide(td, rows, True)]).images
    half = GuidancePlan(weights={t: 0.5 for t in sampler.timesteps})
    half_weight = sampler.sample(noise, torch.full((n,), 8.0), cls, [Guide(td, rows, True)], plan=half).images
    assert torch.allclose(half_weight, half_lambda, atol=1e-5)
    none = sampler.sample(noise, torch.full((n,), 8.0), cls, [Guide(td, rows, True)],
                          plan=GuidancePlan(weights={t: 0.0 for t in sampler.timesteps}))
    assert torch.equal(none.images, plain)
    assert none.guided_steps == 0 and (none.guidance_ratio is None or float(none.guidance_ratio.abs().sum()) == 0.0)


def test_on_target_needs_the_nearest_image_in_the_target_class():
    sur = np.array([0, 0, 1, 2, -1])
    assert guide_check.on_target(np.array([0, 2, 3, 4]), sur, np.array([0, 1, 1, 2])).tolist() == \
        [True, True, False, False]


def test_findings_say_when_the_guide_is_at_chance_where_it_acts():
    check = guide_check.GuideCheck([0, 500, 900], [0.9, 0.1, 0.1], [0.9, 0.1, 0.1], [0.9, 0.0, 0.0], 0.1, 50)
    assert guide_check.findings(check, (0, 1000), "constant") == []
    assert "at chance" in guide_check.findings(check, (400, 1000), "constant")[0]
    check.probe = {"n": 32, "lam": 5.0, "on_target_guided": 1, "on_target_unguided": 2, "steered": 20}
    assert any("not seen reaching its targets" in f for f in guide_check.findings(check, (0, 1000), "reliability"))
    # synthetic-clusters: no training image has a class, so a probe's 0 vs 0 says nothing
    check.probe |= {"on_target_guided": 0, "on_target_unguided": 0, "on_target_defined": False}
    assert not any("targets" in f for f in guide_check.findings(check, (0, 1000), "reliability"))
    check.probe["on_target_defined"] = True
    check.probe["settled_t"] = 900  # the settled stop past the noisiest step: guidance acts nowhere, said why
    assert "settled stop ends guidance" in guide_check.findings(check, (901, 1000), "reliability")[0]
    assert "settled" not in guide_check.findings(check, (950, 1000), "reliability")[0]


def test_a_sample_settles_where_its_nearest_image_stops_changing():
    # rows: samples; columns: the nearest training image at each step, then the finished sample's
    nearest = np.array([[3, 1, 1, 1, 1],   # settled from step 1
                        [1, 2, 1, 2, 2],   # settled from step 3 (step 1 agreed, then left again)
                        [0, 0, 0, 0, 0],   # settled from the start
                        [4, 4, 4, 4, 5]])  # only the finished sample: never at a step
    curve = guide_check.commit_curve(nearest)
    assert curve == [0.25, 0.5, 0.5, 0.75]
    assert guide_check.settled_timestep(curve, [900, 600, 300, 0]) == 600  # half settled by t = 600
    assert guide_check.settled_timestep(curve, [900, 600, 300, 0], share=0.8) == -1
    assert guide_check.commit_curve(np.zeros((0, 5), int)) == []


def test_the_sampler_shows_each_steps_clean_image_prediction_without_changing_the_sample():
    unet, sched = _unet(), _clipping_scheduler()
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    sampler = GuidedSampler(unet, sched, "ddim", 5)
    seen = []
    watched = sampler.sample(noise, torch.zeros(2), torch.zeros(2, dtype=torch.long),
                             on_step=lambda t, x0: seen.append((t, x0.clone()))).images
    assert torch.equal(watched, sampler.sample(noise, torch.zeros(2), torch.zeros(2, dtype=torch.long)).images)
    assert [t for t, _ in seen] == sampler.timesteps
    assert all(x0.abs().max() <= 1 for _, x0 in seen)  # clipped, as the scheduler clips it
    # the last prediction is the step's x0 and the DDIM step to t = -1 lands on it
    assert torch.allclose(seen[-1][1], watched, atol=1e-5)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model, faces):
    """A tiny audit run to the end with the reliability schedule, guided down to the last step."""
    from side_engine.audit import init_workspace

    from .conftest import TINY_SETTINGS

    ws = init_workspace(tmp_path_factory.mktemp("guide") / "base", str(tiny_model), str(faces),
                        **dict(TINY_SETTINGS, guidance_schedule="reliability", guidance_stop="end"))
    AuditRunner(ws).run()
    return ws


def test_the_run_checks_its_guide_and_reports_the_on_target_rate(finished):
    db = storage.connect(finished.db_path)
    try:
        from side_engine.results import metrics_json

        data = metrics_json(db)
    finally:
        db.close()
    check = data["guide_check"]
    assert check["timesteps"] == sorted(check["timesteps"], reverse=True) and len(check["timesteps"]) == 4
    assert all(0 <= w <= 1 for w in check["weights"]) and check["chance"] == pytest.approx(1 / 4)
    assert check["probe"]["n"] == 6 and 0 <= check["probe"]["on_target_guided"] <= 6
    for s in data["summary"]:
        assert 0 <= s["on_target_lo"] <= s["on_target"] <= s["on_target_hi"] <= 1
        assert s["on_target_mid"] <= s["on_target"]
    assert data["on_target_chance"] == pytest.approx(1 / 4)


def test_a_fork_reuses_the_classifiers_and_random_and_samples_the_rest(finished, tmp_path):
    new = tmp_path / "fork"
    record = fork(finished.root, new, {"guidance_schedule": "constant", "lambdas": [0, 3]})
    assert record["reused"] == ["import", "embed", "labels", "classifier", "synthetic", "tdkd"]
    assert record["random_kept"] == 6
    AuditRunner(new).run()
    base_rows, _, _ = stored_samples(finished)
    rows, _, _ = stored_samples(Workspace(new))
    assert [r for r in rows if r[0] == "random"] == [r for r in base_rows if r[0] == "random"]
    assert {r[1] for r in rows if r[0] == "side"} == {3.0}
    db = storage.connect(Workspace(new).db_path)
    try:
        cfg = AuditConfig.from_stored(json.loads(db["audits"].get(1)["config"]))
        assert cfg.guidance_schedule == "constant" and storage.get_kv(db, "forked_from")["base"] == str(finished.root)
        assert storage.get_kv(db, "guide_check")["probe"]["lam"] == 3.0  # checked again, for this fork's λ
    finally:
        db.close()
    from side_engine.report import build_report, render_html

    html = render_html(build_report(new))
    assert "classifiers from" in html and "guidance schedule constant" in html


def test_the_settled_stop_guides_only_above_the_step_the_model_settled_by(finished, tmp_path):
    from side_engine.guidance import guidance_plan

    new = tmp_path / "settled"
    record = fork(finished.root, new, {"guidance_stop": "settled"})
    assert record["random_kept"] == 6 and record.get("guided_kept", 0) == 0  # the guided samples are redrawn
    AuditRunner(new).run()
    db = storage.connect(Workspace(new).db_path)
    try:
        check = guide_check.GuideCheck.from_dict(storage.get_kv(db, "guide_check"))
        cfg = AuditConfig.from_stored(json.loads(db["audits"].get(1)["config"]))
    finally:
        db.close()
    probe = check.probe
    assert len(probe["settled_curve"]) == len(check.timesteps) and probe["settled_curve"][-1] >= 0.5
    assert probe["settled_t"] == guide_check.settled_timestep(probe["settled_curve"], check.timesteps)
    lo, hi = guidance_plan(cfg, 1000, check).window
    assert lo == probe["settled_t"] + 1 and hi == 1000
    assert guidance_plan(AuditConfig(checkpoint="m", train_data="d", guidance_stop="end"), 1000, check).window \
        == (0, 1000)
    base_rows, _, _ = stored_samples(finished)
    rows, _, _ = stored_samples(Workspace(new))
    assert [r for r in rows if r[0] == "random"] == [r for r in base_rows if r[0] == "random"]
    from side_engine.report import build_report, render_html

    html = render_html(build_report(new))
    assert f"settled on the training image they end nearest to by t = {probe['settled_t']}" in html
    assert "guidance stopped there" in html


def test_a_fork_that_changes_only_the_guides_precision_keeps_random_and_redraws_the_guided(finished, tmp_path):
    db = storage.connect(finished.db_path)
    try:
        used = storage.get_kv(db, "guide_precision")  # what "auto"/"same" resolved to on this machine
    finally:
        db.close()
    assert used in ("fp32", "bf16")
    setting = finished.load_config().guide_precision
    from side_engine.report import build_report, render_html

    html = render_html(build_report(finished.root)).replace("&#34;", '"')
    assert f'guide_precision = "{setting}" (automatic: {used})' in html
    other = "fp32" if used == "bf16" else "bf16"
    new = tmp_path / "precision"
    record = fork(finished.root, new, {"guide_precision": other})
    assert record["reused"] == ["import", "embed", "labels", "classifier", "synthetic", "tdkd"]
    assert record["random_kept"] == 6 and not record.get("guided_kept")
    AuditRunner(new).run()
    base_rows, _, _ = stored_samples(finished)
    rows, _, _ = stored_samples(Workspace(new))
    assert [r for r in rows if r[0] == "random"] == [r for r in base_rows if r[0] == "random"]
    assert sorted(r[:3] for r in rows if r[0] == "side") == sorted(r[:3] for r in base_rows if r[0] == "side")
    db = storage.connect(Workspace(new).db_path)
    try:
        assert storage.get_kv(db, "guide_precision") == other
    finally:
        db.close()
    html = render_html(build_report(new)).replace("&#34;", '"')
    assert f'guide_precision = "{other}"<br>' in html  # chosen, so no "automatic" beside it


def test_a_fork_that_widens_the_grid_keeps_the_guided_samples_it_would_redraw(finished, tmp_path):
    widened = tmp_path / "widened"
    record = fork(finished.root, widened, {"lambdas": [0, 5, 8]})
    assert record["random_kept"] == 6 and record["guided_kept"] == 6  # λ 5 kept; λ 2 is not in the grid
    AuditRunner(widened).run()
    # the same grid with a change that alters no image (guidance at every sampler step either way)
    # forces λ 5 to be drawn again: the kept rows are the rows a rerun makes
    redrawn = tmp_path / "redrawn"
    assert "guided_kept" not in fork(finished.root, redrawn, {"lambdas": [0, 5, 8], "guidance_max_t": 0.999})
    AuditRunner(redrawn).run()
    base_rows, _, _ = stored_samples(finished)
    kept, _, _ = stored_samples(Workspace(widened))
    again, _, _ = stored_samples(Workspace(redrawn))
    at = {(m, lam) for m, lam, *_ in kept}
    assert at == {("random", 0.0), ("side", 5.0), ("side", 8.0)}
    assert [r for r in kept if r[:2] == ("side", 5.0)] == [r for r in base_rows if r[:2] == ("side", 5.0)]
    assert [r[:7] for r in kept] == [r[:7] for r in again]
    for rel in (r[7] for r in kept if r[7]):
        assert (widened / rel).exists()
    from side_engine.report import build_report, render_html

    assert "samples carried over: 6 Random, 6 guided" in render_html(build_report(widened))


def test_a_fork_retrains_what_its_changes_touch_and_refuses_bad_requests(finished, tmp_path):
    base = AuditConfig.from_stored(finished.load_config().to_dict())
    done = {"import", "embed", "labels", "classifier", "synthetic", "tdkd"}
    changed = AuditConfig.from_stored(dict(base.to_dict(), tdkd_lr=5e-4))
    assert reusable_stages(base, changed, done)[-1] == "synthetic"
    reseeded = AuditConfig.from_stored(dict(base.to_dict(), seed=7))
    assert reusable_stages(base, reseeded, done)[-1] == "tdkd"  # the classifiers stay; Random does not
    # under synthetic-clusters no TI classifier is trained: the TD network's width still retrains it
    syn_done = {"import", "embed", "synthetic", "labels", "tdkd"}
    syn = AuditConfig.from_stored(dict(base.to_dict(), label_source="synthetic-clusters"))
    assert reusable_stages(syn, syn, syn_done)[-1] == "tdkd"
    assert reusable_stages(syn, AuditConfig.from_stored(dict(syn.to_dict(), classifier_width=8)),
                           syn_done)[-1] == "labels"
    record = fork(finished.root, tmp_path / "s7", {"seed": 7})
    assert "random_kept" not in record
    with pytest.raises(WorkspaceError, match="already holds an audit"):
        fork(finished.root, tmp_path / "s7", {"seed": 8})
    with pytest.raises(ConfigError, match="unknown setting.*guidance_scale"):
        fork(finished.root, tmp_path / "x", {"guidance_scale": 3})
    with pytest.raises(WorkspaceError, match="no audit database"):
        fork(tmp_path / "nothing", tmp_path / "y", {})


def test_moved_folders_keep_the_audit_and_changed_content_is_refused(finished, tiny_model, faces, tmp_path):
    import shutil

    model, data = tmp_path / "model", tmp_path / "faces"
    shutil.copytree(tiny_model, model)
    shutil.copytree(faces, data)
    record = fork(finished.root, tmp_path / "moved", {"seed": 7, "checkpoint": str(model), "train_data": str(data)})
    assert record["reused"][-1] == "tdkd"  # the same content elsewhere: nothing retrained
    moved = Workspace(tmp_path / "moved")
    AuditRunner(moved).run(until="tdkd")
    again = tmp_path / "again"  # and a finished audit resumed after its model moved once more
    shutil.copytree(model, again)
    cfg = AuditConfig.from_stored(dict(moved.load_config().to_dict(), checkpoint=str(again)))
    moved.write_config(cfg, overwrite=True)
    AuditRunner(moved).run(until="tdkd")
    db = storage.connect(moved.db_path)
    try:
        audit = next(iter(db["audits"].rows))
    finally:
        db.close()
    assert audit["checkpoint_path"] == str(again) and audit["train_path"] == str(data.resolve())
    assert json.loads(audit["config"])["checkpoint"] == str(again)
    assert "checkpoint moved" in moved.log_path.read_text()
    first = sorted(data.iterdir())[0]
    first.write_bytes(sorted(faces.iterdir())[1].read_bytes())
    with pytest.raises(WorkspaceError, match="training data .* changed"):
        AuditRunner(moved).run(until="tdkd")


def test_the_paper_preset_is_named_and_older_audits_keep_what_they_ran_with():
    cfg = AuditConfig(checkpoint="m", train_data="d", **PRESETS["paper"])
    assert "paper" in method_name(cfg)
    assert method_name(AuditConfig()) == "SIDE with the product defaults"
    old = AuditConfig.from_stored({"checkpoint": "m", "train_data": "d", "retired_setting": 1})
    assert old.guidance_schedule == "constant" and old.resize_filter == "bicubic"
    with pytest.raises(ConfigError, match="resize_filter"):
        AuditConfig(checkpoint="m", train_data="d", resize_filter="cubic").validate()


def test_the_resize_filter_is_applied_and_named(tmp_path):
    from PIL import Image

    from side_engine.training_set import import_training_set

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (25, 25), dtype=np.uint8)).save(tmp_path / f"f{i}.png")
    cubic = import_training_set(tmp_path, 32, 1)
    linear = import_training_set(tmp_path, 32, 1, resize_filter="bilinear")
    assert cubic.resized == 3 and not np.array_equal(cubic.pixels, linear.pixels)
    same = import_training_set(tmp_path, 25, 1, resize_filter="bilinear")
    assert same.resized == 0 and np.array_equal(same.pixels, import_training_set(tmp_path, 25, 1).pixels)


def test_an_audit_from_before_a_setting_existed_resumes_with_what_it_ran_with(finished, tmp_path):
    """Its audit.toml and stored settings lack guidance_schedule: it ran with constant guidance,
    and a resume must neither refuse ('settings changed') nor switch to today's default."""
    new = tmp_path / "old"
    fork(finished.root, new, {"guidance_schedule": "constant"})
    ws = Workspace(new)
    text = "\n".join(line for line in ws.config_path.read_text().splitlines()
                     if not line.startswith(("guidance_schedule", "resize_filter")))
    ws.config_path.write_text(text + "\n")
    db = storage.connect(ws.db_path)
    try:
        stored = json.loads(db["audits"].get(1)["config"])
        for key in ("guidance_schedule", "resize_filter"):
            stored.pop(key)
        db["audits"].update(1, {"config": json.dumps(stored)})
    finally:
        db.close()
    runner = AuditRunner(ws)
    runner.run()
    assert runner.ctx.cfg.guidance_schedule == "constant" and runner.ctx.cfg.resize_filter == "bicubic"


def test_a_generated_image_falls_in_a_synthetic_cluster_by_the_rule_that_labelled_the_set():
    from side_engine.labels import nearest_cluster, synthetic_cluster_labels

    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)[:3]
    vecs = np.concatenate([a + 0.05 * rng.standard_normal((20, 8)).astype(np.float32) for a in axes])
    y, cents = synthetic_cluster_labels(vecs, 3, seed=0)
    assert cents.shape == (3, 8) and np.allclose(np.linalg.norm(cents, axis=1), 1, atol=1e-5)
    assert nearest_cluster(vecs, cents).tolist() == y.tolist()
    assert len(set(y[:20])) == len(set(y[20:40])) == len(set(y[40:])) == 1 and len(set(y)) == 3
    # cosine, not distance: a longer vector in the same direction is in the same cluster
    assert nearest_cluster(5 * vecs[:1], cents)[0] == y[0]
