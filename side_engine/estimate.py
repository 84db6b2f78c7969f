"""How long will an audit take? A short timed probe of the real networks on this device.

Times one UNet forward, one classifier input-gradient (guidance) and one
classifier training step on a small batch, then scales by the work each
stage has left. A rough guide (batching and warm caches change it), shown before a run.
"""

from __future__ import annotations

import time

import torch

from .classifiers import ResNetClassifier, small_stem_for
from .config import AuditConfig


def _timed(fn, device: torch.device, repeat: int = 5) -> float:
    """Seconds per call: the fastest of ``repeat`` timed calls after a warm-up (allocations,
    kernels, autotuning). Load from elsewhere only ever adds time, and a probe lasts a second:
    the median of three once read the UNet 4x slow (21.6 vs 5.0 ms an image-step, the same
    model and machine minutes apart) and estimated 15 min for an audit that took 5
    (``bench/bench_estimate.py``)."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def probe(unet, scheduler, cfg: AuditConfig, k: int, channels: int, size: int, device: torch.device,
          batch: int, decode=None) -> dict:
    """Seconds per image: sampler step (unguided), guidance's extra per step, classifier training
    step, and for a latent model (``decode``) decoding a final latent once.

    The sampling part runs the audit's own sampler (folded classifier, concurrent guidance,
    the configured precision; eager, since compiling would dominate a probe), so the
    estimate follows what the run will do rather than a model of it.
    """
    from .classifiers import for_guidance
    from .devices import guide_precision
    from .sampler import Guide, GuidedSampler

    b = max(1, min(batch, 32 if device.type == "cpu" else 64))
    x = torch.randn(b, channels, size, size, device=device)
    clf = ResNetClassifier(max(k, 2), channels, cfg.resolved_width(size), small_stem_for(size, cfg.classifier_stem),
                           time_dependent=True).to(device)
    sampler = GuidedSampler(unet, scheduler, "ddim", max(cfg.steps, 2), 0.0, device, cfg.precision,
                            convention=cfg.sampler_convention,
                            guide_precision=guide_precision(cfg.guide_precision, cfg.precision, device))
    zeros, ones = torch.zeros(b), torch.ones(b)
    cls = torch.zeros(b, dtype=torch.long)
    guide = Guide(for_guidance(clf), torch.arange(b, device=device), True)
    try:
        unet_s = _timed(lambda: sampler.sample(x, zeros, cls, steps=2).images, device) / (2 * b)
        guided_s = _timed(lambda: sampler.sample(x, ones, cls, [guide], steps=2).images, device) / (2 * b)
    finally:
        sampler.close()
    clf.train().requires_grad_(True)
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-4)

    # at TDKD's batch (64: the stage that trains longest), not the sampling probe's: per image a
    # CPU trains a 64-batch markedly faster than a 32-batch, and the 32-batch probe overstated
    # the demo's TDKD by a quarter
    xt = torch.randn(64, channels, size, size, device=device)
    tt = torch.full((64,), 500, device=device, dtype=torch.long)

    def step():
        loss = clf(xt, tt).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    # two timed steps, not five: one 64-image step is long beside a load blip (0.5 s on the demo's
    # CPU), and five of them were 3.2 of the probe's 5 s
    train_s = _timed(step, device, repeat=2) / len(xt)
    decode_s = _timed(lambda: decode(x), device, repeat=1) / b if decode is not None else 0.0
    return {"unet": unet_s, "guidance": max(guided_s - unet_s, 0.0), "train": train_s, "decode": decode_s}


def scoring_probe(scorer_name: str, sscd_model: str, threads: int, images, n_train: int) -> dict:
    """Seconds per image of scoring: the scorer's embedding (timed on a few training images) and
    the exact search of an index of ``n_train`` vectors (timed on a smaller index of the same
    width, scaled: a flat search costs in proportion to the index). At the paper's scale the
    SSCD embedding on the CPU costs as much as sampling on a GPU; the estimate left it out."""
    import faiss
    import numpy as np

    from .scorers import make_scorer

    scorer = make_scorer(scorer_name, sscd_model, "cpu", threads)
    sample = np.asarray(images[:8])
    vec = scorer.embed(sample)  # warm-up (a session's first call allocates)
    t0 = time.perf_counter()
    vec = scorer.embed(sample)
    embed_s = (time.perf_counter() - t0) / len(sample)
    rows = min(n_train, 4096)
    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(vec.shape[1]) if scorer.higher_is_closer else faiss.IndexFlatL2(vec.shape[1])
    index.add(rng.standard_normal((rows, vec.shape[1])).astype(np.float32))
    queries = rng.standard_normal((64, vec.shape[1])).astype(np.float32)
    k = min(rows, 64)
    index.search(queries, k)
    t0 = time.perf_counter()
    index.search(queries, k)
    search_s = (time.perf_counter() - t0) / len(queries) * n_train / rows
    return {"embed": embed_s, "search": search_s}


# Before the guide check has probed, the settled stop's step is unknown: it lay at t = 460-580 of
# 1 000 on every model and seed measured (bench/results/replication.md). The estimate takes the
# low end (the most guided steps), so that it errs long rather than short.
SETTLED_PRIOR = 0.46


def guided_steps(cfg: AuditConfig, settled_t: int | None = None, T: int = 1000,
                 timesteps: list[int] | None = None) -> int:
    """Sampler steps at which guidance acts (the classifier's cost), from the guidance window and
    the settled stop: about half of the steps with the default stop, every step with the paper's.
    ``timesteps``: the ones the sampler visits, as the guide check stored them; before it has run,
    DDIM's default "leading" spacing (0, T/steps, ...) stands in for them."""
    from .guidance import guidance_bounds

    if cfg.guidance_stop == "settled" and settled_t is None:
        settled_t = int(SETTLED_PRIOR * (T - 1))
    lo, hi = guidance_bounds(cfg, T, settled_t)
    if timesteps is None:
        stride = max(T // max(cfg.steps, 1), 1)
        timesteps = [k * stride for k in range(cfg.steps)]
    return sum(lo <= t <= hi for t in timesteps)


def estimate(per_image: dict, cfg: AuditConfig, n_train: int, pending: dict | None = None) -> dict:
    """Seconds per stage. ``pending`` may give the work left per stage (a resumed run), and what
    its guide check measured: the settled step (``settled_t``) and the sampler's ``timesteps``."""
    pending = pending or {}
    guided = sum(cfg.n_per_lambda for m, lam in cfg.grid() if lam > 0)
    total = len(cfg.grid()) * cfg.n_per_lambda
    frac = pending.get("sample", total) / max(total, 1)
    from .classifier_training import ti_batch, ti_epochs, ti_epochs_at_most
    from .labels import default_k

    # the epochs the stage will train, minimum steps included (up to 10 % of the images are held
    # out; counting them all errs long by at most that much)
    ti = 0 if not cfg.label_policy.trains_ti else ti_epochs(
        n_train, ti_batch(n_train), cfg.classifier_epochs, cfg.classifier_min_steps)
    n_syn = cfg.resolved_n_syn(cfg.k or default_k(max(n_train, 2)))
    score = per_image.get("embed", 0.0) + per_image.get("search", 0.0)  # per generated image
    stages = {
        "embed": n_train * per_image.get("embed", 0.0),
        "classifier": ti * n_train * per_image["train"],
        "synthetic": n_syn * cfg.steps * per_image["unet"],
        "tdkd": cfg.tdkd_epochs * n_syn * 0.9 * per_image["train"],
        "sample": frac * (cfg.steps * total * per_image["unet"]
                          + guided_steps(cfg, pending.get("settled_t"), timesteps=pending.get("timesteps"))
                          * guided * per_image["guidance"]
                          + total * (per_image.get("decode", 0.0) + score)),
    }
    from .stages import stage_names

    runs = stage_names(cfg)  # a stage these settings skip costs nothing
    for name in [*pending.get("done", ()), *(n for n in stages if n not in runs)]:
        stages[name] = 0.0
    stages["total"] = sum(stages.values())
    # the fit rule may train the TI classifier on for up to classifier_max_steps: the planned steps
    # are the estimate, this is its upper end (said beside it; the total stays the likely case)
    if stages["classifier"] > 0 and cfg.classifier_fit > 0:
        most = ti_epochs_at_most(n_train, ti_batch(n_train), cfg.classifier_epochs, cfg.classifier_min_steps,
                                 cfg.classifier_fit, cfg.classifier_max_steps)
        stages["classifier_at_most"] = most * n_train * per_image["train"]
    return stages


def per_sample_seconds(db, cfg: AuditConfig) -> dict | None:
    """Seconds one generated image costs per method on the audit's device: the probe's split
    (UNet steps, guidance's extra, decoding, scoring) scaled so that the whole matches what the
    sampling stage measured. None when the audit kept no probe."""
    from . import storage

    per = storage.get_kv(db, "estimate_per_image")
    if not per:
        return None
    score = per.get("decode", 0.0) + per.get("embed", 0.0) + per.get("search", 0.0)
    out = {"random": cfg.steps * per["unet"] + score}
    steps = guided_steps(cfg, **_guide_steps(db))
    for method in ("side", "ti"):
        out[method] = cfg.steps * per["unet"] + steps * per["guidance"] + score
    stage = {r["name"]: r for r in storage.stage_rows(db)}.get("sample")
    counts = dict(db.execute("select method, count(*) from samples group by method").fetchall())
    predicted = sum(out.get(m, 0.0) * n for m, n in counts.items())
    if stage and stage.get("seconds") and predicted > 0:
        scale = stage["seconds"] / predicted
        out = {m: v * scale for m, v in out.items()}
    return out


def work_left(db, cfg: AuditConfig) -> dict:
    """What a (resumed) run still has to do, from what the workspace database holds."""
    from . import storage

    done = [r["name"] for r in storage.stage_rows(db) if r["status"] == "done"]
    total = len(cfg.grid()) * cfg.n_per_lambda
    stored = db["samples"].count if "samples" in db.table_names() else 0
    return {"sample": total - stored, "done": done, **_guide_steps(db)}


def _guide_steps(db) -> dict:
    """What the audit's guide check measured, if it has run: the settled step (-1: never settled)
    and the sampler's timesteps; empty before it."""
    from . import storage

    check = storage.get_kv(db, "guide_check") or {}
    settled = (check.get("probe") or {}).get("settled_t")
    out = {"settled_t": int(settled)} if settled is not None else {}
    if check.get("timesteps"):
        out["timesteps"] = [int(t) for t in check["timesteps"]]
    return out


def estimate_workspace(root) -> dict:
    """The estimate without running anything: settings, model and training-image count from
    the workspace, the probe on the configured device. Writes nothing. A started audit is
    estimated for the work it has left."""
    from pathlib import Path

    from . import cpu, labels, storage
    from .checkpoint import load_target
    from .devices import default_batch_size, describe, resolve_device
    from .errors import InputError
    from .scorers import choose_scorer_name
    from .training_set import list_images
    from .workspace import Workspace

    ws = Workspace(root)
    cfg = ws.load_config()
    cpu.set_torch_threads(cfg.threads)
    device = resolve_device(cfg.device)
    target = load_target(cfg.checkpoint, cfg.scheduler_config, cfg.allow_pickle, cfg.weights).to(device)
    train = Path(cfg.train_data).expanduser()
    n = len(list_images(train)) if train.is_dir() else 0
    if n == 0:
        raise InputError(f"training data {cfg.train_data}: no image file found")
    left = None
    if ws.db_path.exists():
        db = storage.connect(ws.db_path)
        try:
            left = work_left(db, cfg)
        finally:
            db.close()
    batch = cfg.batch_size or default_batch_size(device, target.sample_size, target.channels)
    per = probe(target.unet, target.scheduler, cfg, cfg.k or labels.default_k(n), target.channels,
                target.sample_size, device, batch, target.decode if target.latent else None)
    per.update(scoring_probe(choose_scorer_name(cfg.scorer, target.image_size), cfg.sscd_model, cfg.threads,
                             _some_training_images(train, target), n))
    return {"seconds": estimate(per, cfg, n, left), "device": describe(device), "n_train": n,
            "per_image_step": per, "resumed": left is not None}


def describe_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _some_training_images(root, target, n: int = 8):
    """A few training images as the import prepares them (``to_model_pixels``), for timing the
    scorer: the estimate runs before the import."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from .training_set import list_images, to_model_pixels

    size, channels = target.image_size, target.image_channels
    out = []
    for path in list_images(Path(root))[:n]:
        try:
            with Image.open(path) as img:
                out.append(to_model_pixels(img, size, channels)[0])
        except OSError:
            continue
    return np.stack(out) if out else np.zeros((1, size, size, channels), np.uint8)
