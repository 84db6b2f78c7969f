"""Training of the surrogate classifiers: TI on the training set, TD by distillation (TDKD).

TDKD (paper, Eq. 11): the TD classifier sees ``x_t = q_sample(x0, t, ε)`` of the
target's own synthetic images and learns to match the TI classifier's soft
prediction on the clean image, ``KL(p_TI(y|x0) ‖ p_TD(y|x_t, t))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .classifiers import ResNetClassifier
from .errors import Cancelled
from .image_rows import ImageRows, as_rows
from .progress import Progress


@dataclass
class TrainReport:
    accuracy: float
    held_out: str  # what the accuracy was measured on
    final_loss: float
    details: dict


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def _hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    if flip.any():
        x = x.clone()
        x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
    return x


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Pad-and-crop shift (edge pixels repeated): what a shifted copy looks like, unlike
    ``torch.roll``, which wraps pixels round the edge into views no copy takes."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Views a copy of a training image could take: flips, pad-and-crop shifts of up to
    ``max_shift`` pixels, mild Gaussian noise, and for RGB brightness/contrast jitter. Flips
    alone left the TI classifier overconfident and brittle (16 % accuracy at noise σ = 0.2)."""
    n = x.shape[0]
    x = _hflip(x, gen)
    if max_shift > 0:
        offs = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen).tolist()
        x = torch.stack([shift(x[i], dy, dx) for i, (dy, dx) in enumerate(offs)])
    if x.shape[1] == 3:
        c = (1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)).to(x.device)
        b = (0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)).to(x.device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * c + mean + b).clamp(-1, 1)
    sigma = (0.1 * torch.rand(n, 1, 1, 1, generator=gen)).to(x.device)
    return x + sigma * torch.randn(x.shape, generator=gen).to(x.device)


def copy_views(x: torch.Tensor) -> torch.Tensor:
    """Deterministic held-out views for K = N (nothing else to hold out): each image flipped,
    and shifted by 2 pixels with edges repeated."""
    return torch.cat([x.flip(-1), shift(x, 2, 2), shift(x.flip(-1), -2, 1)])


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: hold out ~``fraction`` of images, only from classes that keep at least one."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    budget = math.ceil(fraction * len(labels))
    for c in rng.permutation(np.unique(labels)):
        members = np.flatnonzero(labels == c)
        if len(members) >= 2:
            take = max(1, int(round(fraction * len(members))))
            held += list(rng.choice(members, size=min(take, len(members) - 1), replace=False))
        if len(held) >= budget:
            break
    held_arr = np.array(sorted(held[:budget]), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), held_arr)
    return train, held_arr


@torch.no_grad()
def accuracy(model: ResNetClassifier, x: torch.Tensor, y: torch.Tensor, batch: int = 256,
             t: torch.Tensor | None = None) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        logits = model(xb, t[i:i + batch]) if t is not None else model(xb)
        hits += int((logits.argmax(1) == y[i:i + batch]).sum())
    return hits / max(len(x), 1)


@torch.no_grad()
def rows_accuracy(model: ResNetClassifier, x: ImageRows, idx: np.ndarray, y: torch.Tensor,
                  view: Callable[[torch.Tensor], torch.Tensor] | None = None, batch: int = 256) -> float:
    """Accuracy on rows ``idx`` of ``x`` (labels ``y``, one per row of ``idx``), read a batch at a
    time; ``view`` turns a batch into the views measured (each row's views its label's)."""
    model.eval()
    device = next(model.parameters()).device
    hits = total = 0
    for at, (_, xb) in zip(range(0, len(idx), batch), x.batches(batch, idx, device)):
        yb = y[at:at + batch].to(device)
        if view is not None:
            xb = view(xb)
            yb = yb.repeat(len(xb) // len(yb))
        hits += int((model(xb).argmax(1) == yb).sum())
        total += len(yb)
    return hits / max(total, 1)


def ti_batch(n_images: int) -> int:
    """The TI classifier's batch: the whole set up to 64 images, at least 8."""
    return min(64, max(8, n_images))


def ti_epochs(n_fit: int, batch: int, epochs: int, min_steps: int) -> int:
    """Epochs the TI classifier trains: ``epochs``, or more to reach ``min_steps`` optimiser
    steps (at N = 32 an epoch is a single step). The duration estimate counts the same."""
    return max(epochs, math.ceil(min_steps / max(1, math.ceil(n_fit / batch))))


def ti_epochs_at_most(n_fit: int, batch: int, epochs: int, min_steps: int, fit: float, max_steps: int) -> int:
    """Epochs the TI classifier trains if the fit rule takes every block it may (``train_ti``'s
    loop): what the duration estimate gives as its upper end."""
    planned = ti_epochs(n_fit, batch, epochs, min_steps)
    if fit <= 0:
        return planned
    per_epoch = max(1, math.ceil(n_fit / batch))
    return planned * max(1, max_steps // (planned * per_epoch))


def train_ti(
    x: ImageRows | torch.Tensor,
    y: torch.Tensor,
    model: ResNetClassifier,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    progress: Progress,
    stage: str = "classifier",
    min_steps: int = 0,
    fit: float = 0.0,
    max_steps: int = 0,
) -> TrainReport:
    """Train the time-independent classifier on augmented views (``augment``); 10 % held out.
    At least ``min_steps`` optimiser steps: at N = 32 an epoch is a single step, and 60 steps
    leave the classifier barely trained. Then, while it labels fewer than ``fit`` of its own
    training images correctly, another block of the same length, up to ``max_steps`` in all:
    every image it confuses is a class guidance cannot aim at (close neighbours, such as patches
    of one photograph, needed twice the steps faces need). A classifier that fits after its
    planned steps is left exactly as it was.

    ``x`` is read a batch at a time (``ImageRows``: uint8 pixels stay uint8 until a batch is
    drawn), so memory does not grow with the training set beyond its stored pixels."""
    device = next(model.parameters()).device
    x = as_rows(x)
    train_idx, held_idx = holdout_split(y.cpu().numpy(), 0.10, seed)
    yt = y[train_idx].to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    # the fit rule's bound is the duration estimate's upper end: one formula for both
    most = ti_epochs_at_most(len(train_idx), batch, epochs, min_steps, fit, max_steps)
    epochs = ti_epochs(len(train_idx), batch, epochs, min_steps)
    per_epoch = math.ceil(len(train_idx) / batch)
    max_shift = max(1, x.shape[-1] // 16)
    planned, done, losses = epochs, 0, [math.nan]

    def train_epochs(n: int) -> None:
        nonlocal done, losses
        for _ in range(n):
            model.train()
            losses = []
            for idx in _batches(len(train_idx), batch, gen):
                xb = augment(x.take(train_idx[idx.numpy()], device), gen, max_shift)
                idx = idx.to(device)
                loss = F.cross_entropy(model(xb), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            done += 1
            progress.update(stage, done, epochs)
            progress.check()

    train_epochs(planned)
    model.eval()
    train_acc = rows_accuracy(model, x, train_idx, yt)
    blocks = 0
    while train_acc < fit and done + planned <= most:
        epochs += planned  # the progress bar's total grows with the block
        train_epochs(planned)
        blocks += 1
        model.eval()
        train_acc = rows_accuracy(model, x, train_idx, yt)
    loss_val = float(np.mean(losses))
    if len(held_idx):
        acc = rows_accuracy(model, x, held_idx, y[held_idx])
        what = f"{len(held_idx)} held-out training images (10 %, stratified)"
    else:
        # one image a class leaves nothing to hold out: measure on views a copy could take
        acc = rows_accuracy(model, x, train_idx, yt, view=copy_views)
        what = ("flipped and pad-and-crop shifted views of the training images (classes have single "
                "members)")
    noisy = rows_accuracy(model, x, train_idx, yt,
                          view=lambda xb: xb + 0.2 * torch.randn(xb.shape, generator=gen).to(xb.device))
    return TrainReport(acc, what, loss_val, {"train_accuracy": train_acc, "epochs": done,
                                             "steps": done * per_epoch, "planned_steps": planned * per_epoch,
                                             "fit_blocks": blocks,
                                             "noise_0.2_accuracy": noisy, "held_out_n": int(len(held_idx)),
                                             "measured_n": int(len(held_idx)) or 3 * len(train_idx)})


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


@torch.no_grad()
def soft_labels(ti: ResNetClassifier, x0: ImageRows | torch.Tensor, batch: int = 256,
                temperature: float = 1.0) -> torch.Tensor:
    """The TI classifier's class probabilities for every row (on the host: n x K floats), its
    logits divided by ``temperature`` first (Hinton et al.'s distillation temperature)."""
    ti.eval()
    device = next(ti.parameters()).device
    return torch.cat([F.softmax(ti(x).float() / temperature, 1).cpu()
                      for _, x in as_rows(x0).batches(batch, device=device)])


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the whole batch, across every process.

    Data-parallel training gives each rank a shard of a batch; plain BatchNorm would normalise
    each shard by its own statistics and train another network than one process does.
    ``nn.SyncBatchNorm`` does this on GPUs only; this does it on any backend (gloo too) with
    two differentiable all-reduces (sum, then centred sum of squares). Its state is BatchNorm's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), count]))
        total = stats[-1].detach()
        mean = stats[:-1] / total
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / total
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * total / max(float(total) - 1, 1.0))
        return centred * torch.rsqrt(var + self.eps).view(shape) * self.weight.view(shape) + self.bias.view(shape)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum of every rank's gradient (each rank's loss
    depends on every rank's input through the shared statistics)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


@contextmanager
def global_batch_stats(model: nn.Module) -> Iterator[nn.Module]:
    """While training data-parallel: every BatchNorm2d of ``model`` is a GlobalBatchNorm2d
    (the class is swapped in place, so parameters, buffers and the state dict stay as they are)."""
    swapped = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    for m in swapped:
        m.__class__ = GlobalBatchNorm2d
    try:
        yield model
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm2d


def shard(n: int, world: int, rank: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` rows (``np.array_split``'s sizes)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (rank < extra))


def td_holdout(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out, training) rows of a synthetic set of ``n`` as ``train_td`` splits it with
    ``seed``: 10 % held out (none below 10 images). The guide check measures on the same rows."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, n // 10) if n >= 10 else 0
    return perm[:n_hold], perm[n_hold:]


def train_td(
    td: ResNetClassifier,
    x0: ImageRows | torch.Tensor,
    targets: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    progress: Progress,
    stage: str = "tdkd",
    hard_labels: bool = False,
    log: Callable[[str], None] | None = None,
    stop: Callable[[bool], bool] | None = None,
    data_parallel: bool = True,
) -> TrainReport | None:
    """TDKD (soft targets, KL) or, for synthetic-clusters, cross-entropy on hard labels.

    10 % of the synthetic set is held out to report agreement of the TD classifier
    with its targets at t = 0, T/4, T/2, 3T/4.

    Inside a process group of several ranks, every rank calls this with the same arguments and
    trains data-parallel (DistributedDataParallel): each draws the whole batch's indices, times
    and noise from the shared seed and computes its shard; the loss is scaled so that the
    averaged gradient is the whole batch's, and BatchNorm takes whole-batch statistics
    (``global_batch_stats``) — the single-process training, up to the order of float sums.
    ``stop(cancelled)`` (every rank, every step) says whether rank 0 was asked to stop. Rank 0
    returns the report; the others return None. ``data_parallel=False``: this process trains
    alone even inside a process group (the owner, while the others wait)."""
    device = next(td.parameters()).device
    dtype = next(td.parameters()).dtype
    world = dist.get_world_size() if data_parallel and dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    T = len(alphas_cumprod)
    acp = alphas_cumprod.to(device, torch.promote_types(dtype, torch.float32))
    gen = torch.Generator().manual_seed(seed)
    x0 = as_rows(x0)
    n = len(x0)
    perm = torch.randperm(n, generator=gen)
    n_hold = max(1, n // 10) if n >= 10 else 0
    hold, train = perm[:n_hold], perm[n_hold:]
    x_tr, y_tr = _Rows(x0, train.numpy(), device, dtype), targets[train].to(device)
    with global_batch_stats(td) if world > 1 else nullcontext():
        loss_val = _fit_td(td, x_tr, y_tr, acp, epochs, lr, batch, gen, progress, stage, hard_labels, log, stop,
                           world, rank)
    td.eval()
    if rank != 0:
        return None
    agreement: dict[str, float] = {}
    if n_hold:
        yh = targets[hold]
        yh = (yh if hard_labels else yh.argmax(1)).to(device)
        g = torch.Generator().manual_seed(seed + 1)
        for frac in (0.0, 0.25, 0.5, 0.75):
            hits = 0
            for at, (_, xh) in zip(range(0, n_hold, 256), x0.batches(256, hold.numpy(), device, dtype)):
                t = torch.full((len(xh),), int(frac * (T - 1)), dtype=torch.long, device=device)
                xt = q_sample(xh, t, torch.randn(xh.shape, generator=g).to(device), acp)
                hits += round(accuracy(td, xt, yh[at:at + len(xh)], t=t) * len(xh))
            agreement[f"t={int(frac * (T - 1))}"] = hits / n_hold
    acc = agreement.get("t=0", math.nan)
    source = "cluster labels" if hard_labels else "TI classifier"
    what = f"agreement with the {source} on {n_hold} held-out synthetic images at t = 0"
    return TrainReport(acc, what, loss_val, {"agreement_by_t": agreement, "epochs": epochs, "measured_n": n_hold,
                                             "objective": "cross-entropy" if hard_labels else "KL (TDKD)"})


class _Rows:
    """The training rows of TDKD: ``x[rows[i]]`` for batch positions ``i``, made model inputs
    on ``device`` only when a batch asks for them."""

    def __init__(self, x: ImageRows, rows: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        self.x, self.rows, self.device, self.dtype = x, rows, device, dtype
        self.shape = (len(rows), *x.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x.take(self.rows[idx.cpu().numpy()], self.device, self.dtype)


def td_loss(model, x_tr, y_tr, idx, t, noise, acp, hard_labels: bool, world: int = 1, rank: int = 0):
    """This rank's share of one batch's TDKD loss, scaled so that the mean over ranks (what
    DDP's gradient averaging takes) is the whole batch's mean loss. ``x_tr`` is indexed by a
    batch's rows (a tensor, or ``_Rows`` that reads them as the batch asks)."""
    mine = shard(len(idx), world, rank)
    rows, t, noise = idx[mine], t[mine], noise[mine]
    x = x_tr[rows.to(x_tr.device) if isinstance(x_tr, torch.Tensor) else rows]
    rows = rows.to(y_tr.device)
    logits = model(q_sample(x, t, noise, acp), t)
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), 1)
    if hard_labels:
        loss = F.nll_loss(logp, y_tr[rows], reduction="sum")
    else:
        loss = F.kl_div(logp, y_tr[rows], reduction="sum")  # KL(p_TI ‖ p_TD)
    return loss * (world / len(idx))


def _no_buffer_sync() -> dict:
    """BatchNorm's running statistics are the same on every rank (``GlobalBatchNorm2d``): DDP
    need not copy them from rank 0 before every forward (the keyword changed in torch 2.13)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _fit_td(td, x_tr, y_tr, acp, epochs, lr, batch, gen, progress, stage, hard_labels, log, stop, world, rank):
    """The TDKD optimisation loop (see ``train_td``); returns the last epoch's mean loss."""
    from torch.nn.parallel import DistributedDataParallel

    device = acp.device
    T = len(acp)
    model = DistributedDataParallel(td, **_no_buffer_sync()) if world > 1 else td
    opt = torch.optim.AdamW(td.parameters(), lr=lr)
    loss_val = math.nan
    for epoch in range(epochs):
        td.train()
        total, steps = 0.0, 0
        for idx in _batches(len(x_tr), batch, gen):
            # the whole batch's random draws on every rank, then this rank's rows of them
            t = torch.randint(0, T, (len(idx),), generator=gen).to(device)
            noise = torch.randn((len(idx), *x_tr.shape[1:]), generator=gen).to(device)
            loss = td_loss(model, x_tr, y_tr, idx, t, noise, acp, hard_labels, world, rank)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
            _check(progress, stop)
        if world > 1:  # the ranks' scaled shares average to the whole batches' loss
            summed = torch.tensor([total], dtype=torch.float64, device=device)
            dist.all_reduce(summed)
            total = float(summed) / world
        loss_val = total / max(steps, 1)
        if log and (epoch + 1) % max(1, epochs // 5) == 0:
            log(f"{stage}: epoch {epoch + 1}/{epochs}, loss {loss_val:.4f}")
        progress.update(stage, epoch + 1, epochs)
    return loss_val


def _check(progress: Progress, stop: Callable[[bool], bool] | None) -> None:
    """Alone: raise if asked to stop. In a process group: only where every rank agrees (rank 0
    decides), never one rank alone — the others would wait for it in the next reduction."""
    if stop is None:
        progress.check()
    elif stop(progress.cancelled):
        raise Cancelled("audit stopped by the user; run it again to resume")
