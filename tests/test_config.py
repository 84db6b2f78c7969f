"""The settings: one typed dataclass, its file, and the form's metadata."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from side_engine import config
from side_engine.config import AuditConfig
from side_engine.errors import ConfigError


def test_every_choice_list_is_the_settings_own_type():
    """Validation, the file's comments and the app's drop-downs read ``choices``; they must be
    exactly the values the setting's ``Literal`` type allows."""
    hints = typing.get_type_hints(AuditConfig)
    literal = 0
    for f in dataclasses.fields(AuditConfig):
        kind = hints[f.name]
        if typing.get_origin(kind) is typing.Literal:
            literal += 1
            assert f.metadata["choices"] == typing.get_args(kind), f.name
            assert getattr(AuditConfig(), f.name) in typing.get_args(kind), f.name
        else:
            assert f.metadata["choices"] is None, f.name
    assert literal >= 10
    methods = typing.get_args(hints["methods"])[0]
    assert typing.get_args(methods) == config.METHODS


def test_automatic_settings_are_marked_and_default_to_zero():
    automatic = {f.name for f in dataclasses.fields(AuditConfig) if f.metadata["automatic"]}
    assert automatic == {"k", "classifier_width", "n_syn", "batch_size", "threads"}
    assert all(getattr(AuditConfig(), name) == 0 for name in automatic)


def test_the_file_round_trips_every_setting():
    cfg = AuditConfig(checkpoint="/m", train_data="/d", methods=["random", "ti"], label_source="clusters",
                      lambdas=[0, 1.5, 7],
                      bands_sscd={"low": [0.3, 0.5], "mid": [0.5, 0.7], "high": [0.7, 1.0]}, k=12, table_lambdas=[1, 7])
    again = config.loads(config.dumps(cfg))
    assert again == cfg
    again.validate()


@pytest.mark.parametrize(("text", "names"), [
    ("[sampling]\nsampler = 'euler'\n", "sampler"),
    ("[sampling]\nn_per_lambda = '12'\n", "n_per_lambda"),
    ("[labels]\nsteps = 3\n", "steps"),
    ("[run]\nwhatever = 1\n", "whatever"),
])
def test_a_bad_setting_is_refused_by_name(text, names):
    with pytest.raises(ConfigError, match=names):
        cfg = config.loads("[target]\ncheckpoint = 'm'\n[data]\ntrain_data = 'd'\n" + text)
        cfg.validate()


def test_settings_the_others_leave_idle_are_named_with_why():
    base = dict(checkpoint="m", train_data="d")
    syn = AuditConfig(**base).unused_settings()  # the defaults: synthetic-clusters, SIDE
    assert {"classifier_epochs", "classifier_fit", "tdkd_temperature", "labels_csv"} <= set(syn)
    assert "TI classifier" in syn["classifier_epochs"]
    assert not {"classifier_width", "tdkd_epochs", "tdkd_lr", "n_syn", "eta", "guidance_stop"} & set(syn)
    paper = AuditConfig(**base, **config.PRESETS["paper"]).unused_settings()
    assert not {"classifier_epochs", "tdkd_temperature", "n_syn"} & set(paper)
    ti_only = AuditConfig(**base, label_source="clusters", methods=["random", "ti"]).unused_settings()
    assert {"n_syn", "tdkd_epochs"} <= set(ti_only) and "classifier_epochs" not in ti_only
    random_only = AuditConfig(**base, label_source="clusters", methods=["random"], sampler="ddpm").unused_settings()
    assert {"classifier_width", "tdkd_lr", "guidance_schedule", "eta"} <= set(random_only)
    # Random alone needs no labels: no synthetic set, no clusters (a sample's noise does not depend on K)
    syn_random = AuditConfig(**base, methods=["random"]).unused_settings()
    assert {"n_syn", "label_source", "k", "tdkd_epochs", "classifier_width"} <= set(syn_random)
    assert "labels_csv" not in AuditConfig(**base, label_source="original").unused_settings()


def test_the_automatic_classifier_width_follows_the_image_size():
    base = dict(checkpoint="m", train_data="d")
    for cfg in (AuditConfig(**base), AuditConfig(**base, **config.PRESETS["paper"])):
        # 16 up to 32 px for either guide: widths 8 and 12 lost study cells (docs/method.md)
        assert [cfg.resolved_width(size) for size in (16, 32, 33, 64, 65, 256)] == [16, 16, 32, 32, 64, 64]
    assert AuditConfig(**base, classifier_width=8).resolved_width(256) == 8  # a set width is kept


def test_every_setting_declares_what_it_belongs_to():
    """One declaration per setting feeds the resume check, the fork's reuse and the idle marks:
    the declarations must name real stages, and a setting a resume may change can belong to no
    stage's stored result (else a resume would mix results of two settings)."""
    import dataclasses

    from side_engine.fork import REUSABLE
    from side_engine.stages import NAMES

    for f in dataclasses.fields(AuditConfig):
        meta = f.metadata
        assert set(meta["stages"]) <= set(NAMES), f.name
        assert meta["resume"] in ("fixed", "free", "moved") and meta["samples"] in ("", "random", "guided"), f.name
        if meta["resume"] == "free":
            assert not meta["stages"], f.name
    resumable = {"batch_size", "device", "precision", "guide_precision", "threads", "compile", "processes"}
    assert resumable == config.RESUMABLE_CHANGES and {"checkpoint", "train_data"} == config.MOVABLE
    assert dict(REUSABLE)["synthetic"] == {"n_syn", "sampler", "steps", "eta", "sampler_convention"}
    assert {"classifier_width", "classifier_stem"} <= dict(REUSABLE)["tdkd"]  # the TD network's shape
    assert "seed" in config.RANDOM_DEPENDS and "guidance_stop" in config.GUIDED_DEPENDS - config.RANDOM_DEPENDS
    assert {"methods", "label_source", "sampler"} <= config.DECIDING


def test_the_label_source_is_one_policy():
    from side_engine.label_sources import POLICIES

    assert set(POLICIES) == set(config.LABEL_SOURCES)
    syn = AuditConfig(checkpoint="m", train_data="d").label_policy
    assert syn.on_synthetic_set and not syn.trains_ti and syn.on_target_by == "cluster"
    original = AuditConfig(checkpoint="m", train_data="d", label_source="original").label_policy
    assert original.trains_ti and original.reads_labels_csv and original.on_target_by == "training image"
