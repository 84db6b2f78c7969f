"""Guided sampling with streamed scoring: one batch per transaction (samples and their matches together)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .. import ranks
from ..config import AuditConfig
from ..errors import WorkspaceError
from ..guidance import guidance_plan
from ..labels import nearest_cluster
from ..sampler import GuidancePlan, Guide, GuidedSampler, classes_drawn, sample_inputs, sample_seed, to_uint8
from .base import close_sampler, finite_or_none, open_sampler, train_rows

if TYPE_CHECKING:
    from ..run_store import RunStore
    from .context import SamplingContext, StageContext

NAMES = ("sample", "score")
SPLIT = "samples"


def plan(cfg: AuditConfig) -> list[tuple[str, float, int]]:
    """Every (method, λ, index) of the audit, ordered so that batches mix λ values and a
    partial run covers every λ evenly; TI-guided samples batch apart from TD-guided ones."""
    items = [(m, lam, i) for m, lam in cfg.grid() for i in range(cfg.n_per_lambda)]
    return sorted(items, key=lambda it: (it[0] == "ti", it[2], it[1], it[0]))


def run(ctx: StageContext) -> None:
    """Produces the stored samples and their matches, one transaction per batch."""
    cfg = ctx.cfg
    work = plan(cfg)
    total = len(work)
    have = ctx.store.stored_samples()
    pending = [p for p in work if p not in have]
    if not pending and ctx.store.is_done("sample"):
        return
    sampler = open_sampler(ctx)
    try:
        _sample(ctx, sampler, pending, total)
    finally:
        close_sampler(ctx, sampler)


def _sample(ctx: StageContext, sampler: GuidedSampler, pending: list, total: int) -> None:
    cfg = ctx.cfg
    shape = (ctx.target.channels, ctx.target.sample_size, ctx.target.sample_size)
    num_classes = classes_drawn(ctx.artifacts.k)
    if "side" in cfg.methods and ctx.artifacts.td is not None:
        check_guide(ctx, sampler, shape)
    plan = guidance_plan(cfg, sampler.T, ctx.artifacts.guide)
    n_ranks = ranks.world_size()
    with ctx.store.timed("sample"), ctx.store.timed("score"):
        done = total - len(pending)
        ctx.report.update("sample", done, total)
        ctx.report.update("score", done, total)
        if n_ranks > 1:
            ranks.share_sampling_context(ctx, plan)
        step = ctx.batch * n_ranks  # a round: one batch for every rank, handed out by sample index
        remote = 0
        writer = BatchWriter(ctx, done, total, depth=2 * n_ranks) if n_ranks > 1 else None
        try:
            for start in range(0, len(pending), step):
                ctx.report.check()
                batches = [pending[s:s + ctx.batch] for s in range(start, start + step, ctx.batch)]
                if n_ranks > 1:
                    results = ranks.run_round(
                        "sample", batches, lambda b: compute_batch(ctx, cfg, sampler, b, shape, num_classes, plan))
                else:
                    results = [compute_batch(ctx, cfg, sampler, batches[0], shape, num_classes, plan)]
                for rank, result in enumerate(results):  # stored in plan order, one transaction per batch
                    if result is None:
                        continue
                    remote += rank != ranks.owner()
                    if writer is not None:
                        writer.put(result)
                        continue
                    store_batch(ctx, result)
                    done += len(result.rows)
                if writer is None:
                    ctx.report.update("sample", done, total)
                    ctx.report.update("score", done, total)
        finally:
            if writer is not None:
                writer.close()  # every gathered batch stored (or the storing error raised) first
        if n_ranks > 1:
            ctx.report.log(f"sampling on {n_ranks} processes: {remote} of {-(-len(pending) // ctx.batch)} "
                           f"batches computed by ranks other than the owner (rank {ranks.owner()})")


def check_guide(ctx: StageContext, sampler: GuidedSampler, shape) -> None:
    """Before the budget is spent: the TD classifier's reliability at every sampler step (the
    ``reliability`` schedule's weights) and a small probe judged by the scorer; stored, logged,
    and a warning where guidance cannot help. Measured once; a resume reads it back."""
    from .. import guide_check
    from ..classifier_training import soft_labels, td_holdout
    from . import synthetic

    cfg, art = ctx.cfg, ctx.artifacts
    stored = ctx.store.get("guide_check")
    if stored is not None:
        art.guide = guide_check.GuideCheck.from_dict(stored)
        return
    syn = synthetic.load(ctx)
    seed = ctx.store.get("tdkd_seed", cfg.seed)  # a fork keeps the classifiers' own seed
    hold, _ = td_holdout(len(syn), seed)
    x0 = syn.take(hold)
    if cfg.label_policy.on_synthetic_set:
        labels = torch.from_numpy(np.load(ctx.ws.cache_dir / "synthetic_labels.npy"))[hold]
    else:
        labels = soft_labels(art.ti, x0.to(ctx.device)).argmax(1).cpu()
    check = guide_check.measure(art.td, x0, labels, sampler.timesteps, ctx.target.scheduler.alphas_cumprod,
                                art.k, seed + 2)
    check.probe = _probe(ctx, sampler, shape, check)
    art.guide = check
    ctx.store.put("guide_check", check.to_dict())
    rows = ", ".join(f"t={t}: {100 * a:.0f} %" for t, a in list(zip(check.timesteps, check.smoothed))[::10])
    ctx.report.log(f"guide check: TD agreement on {check.held_out} held-out synthetic images by step ({rows}; "
                   f"chance {100 * check.chance:.1f} %)" + (
                       f"; probe on target (scorer) {check.probe.get('on_target_guided')} guided vs "
                       f"{check.probe.get('on_target_unguided')} unguided of {check.probe.get('n')}"
                       if check.probe.get("on_target_defined", True) else ""))
    window = guidance_plan(cfg, sampler.T, check).window
    if cfg.guidance_stop == "settled":
        ctx.report.log(f"settled stop: half of the {check.probe.get('n')} unguided probe samples had settled on the "
                       f"training image they end nearest to by t = {check.probe.get('settled_t')}; guidance acts at "
                       f"native t {window[0]} and above")
    for text in guide_check.findings(check, window, cfg.guidance_schedule):
        ctx.report.warn(text)


def _probe(ctx: StageContext, sampler: GuidedSampler, shape, check) -> dict:
    """The same noise without and then with guidance at the declared range's middle λ: how often
    the scorer's nearest training image carries the target class (not stored as samples). The
    unguided half also says by which step the model's own samples settle on the training image
    they end nearest to (``settled``: the ``settled`` guidance stop), measured before the guided
    half runs so that it already stops there."""
    from .. import guide_check

    cfg, art = ctx.cfg, ctx.artifacts
    grid = cfg.table_grid()
    if not grid or art.surrogate is None or art.k is None:
        return {}
    lam = grid[len(grid) // 2]
    n = min(guide_check.PROBE, cfg.n_per_lambda)
    # on target: the nearest training image carries the target class, or, under synthetic-clusters
    # (no training image has a class), the image falls in the target's cluster
    by_cluster = art.centroids is not None
    out = {"n": n, "lam": lam, "on_target_guided": 0, "on_target_unguided": 0, "steered": 0,
           "on_target_defined": by_cluster or bool((art.surrogate >= 0).any()),
           "on_target_by": "cluster" if by_cluster else "training image"}
    num_classes = art.k
    targets = ctx.targets(cfg, num_classes)
    reference = _settling_reference(ctx)
    nearest: list[np.ndarray] = []
    for method, lv in (("random", 0.0), ("side", lam)):
        # the guided half already stops where the unguided half settled (the settled stop)
        plan = guidance_plan(cfg, sampler.T, check, out.get("settled_t"))
        batch = [(method, lv, i) for i in range(n)]
        for s in range(0, len(batch), max(ctx.batch, 1)):
            part = batch[s:s + ctx.batch]
            steps: list[np.ndarray] = []
            watch = None
            if method == "random":
                def watch(t: int, x0: torch.Tensor, steps=steps) -> None:
                    steps.append(_nearest_rows(x0, reference))
            result = compute_batch(ctx, cfg, sampler, part, shape, num_classes, plan, on_step=watch, final=watch)
            if steps:
                nearest.append(np.stack(steps, 1))
            for (_, _, i), row in zip(part, result.rows):
                hit = bool(guide_check.on_target([row["nearest"]], art.surrogate, [targets[i]],
                                                 [row["cluster"]] if by_cluster else None)[0])
                out["on_target_guided" if method == "side" else "on_target_unguided"] += hit
                if method == "side" and row["steered"]:
                    out["steered"] += 1
            ctx.report.check()
        if method == "random" and nearest:
            curve = guide_check.commit_curve(np.concatenate(nearest))
            out["settled_curve"] = curve
            out["settled_t"] = guide_check.settled_timestep(curve, sampler.timesteps)
    return out


def _settling_reference(ctx: StageContext) -> torch.Tensor:
    """The training images as the UNet models them, average-pooled to at most 16 x 16: enough to
    tell which training image a clean-image prediction is nearest to, at a cost that stays small
    at the paper's 25 000 images (read in chunks: never the whole set at full size)."""
    rows = train_rows(ctx)
    parts = [_pooled(rows.take(np.arange(i, min(len(rows), i + 512)), ctx.device))
             for i in range(0, len(rows), 512)]
    return torch.cat(parts)


def _pooled(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), min(16, x.shape[-1])).flatten(1)


def _nearest_rows(x0: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    return torch.cdist(_pooled(x0), reference).argmin(1).cpu().numpy()


@dataclass
class BatchResult:
    """One batch's outcome, computed without touching the workspace: the seam between the
    processes that compute batches and the one that owns the database and files."""

    rows: list[dict]  # one per sample, ready for the samples table (no id yet)
    pairs: list[tuple[int, int, float]]  # (row, training index, score) for every in-band pair
    pngs: dict[str, bytes] = field(default_factory=dict)  # workspace-relative path -> encoded PNG


def compute_batch(ctx: SamplingContext, cfg: AuditConfig, sampler: GuidedSampler, batch, shape,
                  num_classes: int, plan: GuidancePlan, on_step=None, final=None) -> BatchResult:
    """Generate and score ``batch`` [(method, λ, index)]; each image depends only on (seed, index).
    ``on_step(t, x0)`` sees each step's clean-image prediction and ``final(-1, x0)`` the result."""
    seeds = [sample_seed(cfg.seed, i) for _, _, i in batch]
    inputs = [sample_inputs(s, shape, num_classes) for s in seeds]
    noise = torch.stack([x for x, _, _ in inputs])
    targets = ctx.targets(cfg, num_classes)
    cls = torch.tensor([int(targets[i]) for _, _, i in batch], dtype=torch.long)
    lam = torch.tensor([lam for _, lam, _ in batch], dtype=torch.float32)
    guides = []
    for method, clf, td in (("side", ctx.guiding("side"), True), ("ti", ctx.guiding("ti"), False)):
        rows = [r for r, (m, lv, _) in enumerate(batch) if m == method and lv > 0]
        if rows:
            guides.append(Guide(clf, torch.tensor(rows, device=ctx.device), td))
    out = sampler.sample(noise, lam, cls, guides, generators=[g for _, _, g in inputs], on_step=on_step, plan=plan)
    x0 = out.images
    if final is not None:
        final(-1, x0)
    ratio = out.guidance_ratio.cpu().tolist() if out.guidance_ratio is not None else None
    steered = None
    if ctx.guiding("side") is not None:
        with torch.no_grad():  # measured in fp32 whatever the sampling precision
            t0 = torch.zeros(len(batch), dtype=torch.long, device=ctx.device)
            x0_cl = x0.contiguous(memory_format=torch.channels_last)
            steered = (ctx.guiding("side")(x0_cl, t0).argmax(1).cpu() == cls).tolist()
    images = to_uint8(ctx.target.decode(x0))  # a latent model's images: decoded once per batch
    vectors = ctx.artifacts.scorer.embed(images)
    scores = ctx.artifacts.index.score(vectors)
    # synthetic-clusters: the kept cluster each image falls in, by the rule that labelled the
    # synthetic set — the scorer's verdict on whether guidance reached its target class
    cents = ctx.artifacts.centroids
    cluster = nearest_cluster(vectors, cents) if cents is not None else None
    loose_hit = np.zeros(len(batch), bool)
    for r, _, _ in scores.pairs:
        loose_hit[r] = True
    rows, pngs = [], {}
    for r, (method, lv, i) in enumerate(batch):
        png = None
        if loose_hit[r]:
            png = (Path("samples") / method / f"lam{lv:g}" / f"{i:06d}.png").as_posix()
            pngs[png] = encode_png(images[r])
        rows.append({
            "method": method, "lam": lv, "sample_index": i, "seed": seeds[r],
            "cls": int(cls[r]) if method != "random" else None,
            "best": float(scores.best[r]), "nearest": int(scores.nearest[r]),
            "second": finite_or_none(scores.second[r]), "gu_ratio": finite_or_none(scores.gu_ratio[r]), "png": png,
            "steered": int(steered[r]) if steered is not None else None,
            "guidance_ratio": ratio[r] if ratio is not None and lv > 0 and method != "random" else None,
            "cluster": int(cluster[r]) if cluster is not None else None,
        })
    return BatchResult(rows, [(int(r), int(j), float(sc)) for r, j, sc in scores.pairs], pngs)


def store_batch(ctx: StageContext, result: BatchResult, store: RunStore | None = None) -> None:
    """The workspace owner's half: the in-band images' PNG files, then the batch's samples and
    matches in one transaction (all of it or none of it). ``store``: the calling thread's
    (``BatchWriter``), else the run's."""
    for rel, data in result.pngs.items():
        _write_file(data, ctx.ws.root / rel)
    (store or ctx.store).store_samples(result.rows, result.pairs)


def encode_png(img: np.ndarray) -> bytes:
    """Lossless PNG at zlib level 1: 3× faster than PIL's default level 6 for ~15 % more bytes
    (128 px RGB: 3.5 vs 10 ms), done by the process that made the image."""
    arr = img[:, :, 0] if img.shape[-1] == 1 else img
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _write_file(data: bytes, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        raise WorkspaceError(f"{path}: cannot write a generated image ({e.strerror or e})") from None


class BatchWriter:
    """The owner's storing on a thread of its own, off the path every rank waits on.

    On several processes the owner gathers a round of batches and, without this, stores them
    one by one while every other rank waits (measured: 4.5 ms a batch for the SQLite rows, and
    PNG files on top; bench/RESULTS.md §7). The writer stores them in order, one transaction a
    batch, on its own SQLite connection, while the next round computes; at most ``depth``
    batches wait. The main thread touches the database only after ``close()``. A storing error
    comes back at the next ``put`` or at ``close``; whatever was stored stays stored."""

    def __init__(self, ctx: StageContext, done: int, total: int, depth: int) -> None:
        import queue
        import threading

        self.ctx, self.done, self.total = ctx, done, total
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="side-batch-writer", daemon=True)
        self.thread.start()

    def put(self, result: BatchResult) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(result)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        store = None
        try:
            store = self.ctx.store.on_this_thread()
            while (result := self.queue.get()) is not None:
                if self.error is None:
                    store_batch(self.ctx, result, store)
                    self.done += len(result.rows)
                    for stage in ("sample", "score"):
                        store.set_progress(stage, self.done, self.total)
                        self.ctx.report.progress.update(stage, self.done, self.total)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
            while self.queue.get() is not None:  # let put() and close() return
                pass
        finally:
            if store is not None:
                store.close()
