"""Training of the surrogate classifiers: TI on the training set, TD by distillation (TDKD).

TDKD (paper, Eq. 11): the TD classifier sees ``x_t = q_sample(x0, t, ε)`` of the
target's own synthetic images and learns to match the TI classifier's soft
prediction on the clean image, ``KL(p_TI(y|x0) ‖ p_TD(y|x_t, t))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .classifiers import ResNetClassifier
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


def train_ti(
    x: torch.Tensor,
    y: torch.Tensor,
    model: ResNetClassifier,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    progress: Progress,
    stage: str = "classifier",
    min_steps: int = 0,
) -> TrainReport:
    """Train the time-independent classifier on augmented views (``augment``); 10 % held out.
    At least ``min_steps`` optimiser steps: at N = 32 an epoch is a single step, and 60 steps
    leave the classifier barely trained."""
    device = next(model.parameters()).device
    train_idx, held_idx = holdout_split(y.cpu().numpy(), 0.10, seed)
    xt, yt = x[train_idx].to(device), y[train_idx].to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_val = math.nan
    per_epoch = math.ceil(len(xt) / batch)
    epochs = max(epochs, math.ceil(min_steps / per_epoch))
    max_shift = max(1, x.shape[-1] // 16)
    for epoch in range(epochs):
        model.train()
        losses = []
        for idx in _batches(len(xt), batch, gen):
            idx = idx.to(device)
            xb = augment(xt[idx], gen, max_shift)
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        loss_val = float(np.mean(losses))
        progress.update(stage, epoch + 1, epochs)
        progress.check()
    model.eval()
    train_acc = accuracy(model, xt, yt)
    if len(held_idx):
        acc = accuracy(model, x[held_idx].to(device), y[held_idx].to(device))
        what = f"{len(held_idx)} held-out training images (10 %, stratified)"
    else:
        # one image a class leaves nothing to hold out: measure on views a copy could take
        acc = accuracy(model, copy_views(xt), yt.repeat(3))
        what = ("flipped and pad-and-crop shifted views of the training images (classes have single "
                "members)")
    noisy = accuracy(model, xt + 0.2 * torch.randn(xt.shape, generator=gen).to(device), yt)
    return TrainReport(acc, what, loss_val, {"train_accuracy": train_acc, "epochs": epochs,
                                             "steps": epochs * per_epoch, "noise_0.2_accuracy": noisy,
                                             "held_out_n": int(len(held_idx)),
                                             "measured_n": int(len(held_idx)) or 3 * len(xt)})


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


@torch.no_grad()
def soft_labels(ti: ResNetClassifier, x0: torch.Tensor, batch: int = 256) -> torch.Tensor:
    ti.eval()
    return torch.cat([F.softmax(ti(x0[i:i + batch]).float(), 1) for i in range(0, len(x0), batch)])


def train_td(
    td: ResNetClassifier,
    x0: torch.Tensor,
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
) -> TrainReport:
    """TDKD (soft targets, KL) or, for synthetic-clusters, cross-entropy on hard labels.

    10 % of the synthetic set is held out to report agreement of the TD classifier
    with its targets at t = 0, T/4, T/2, 3T/4."""
    device = next(td.parameters()).device
    T = len(alphas_cumprod)
    acp = alphas_cumprod.to(device, torch.float32)
    gen = torch.Generator().manual_seed(seed)
    n = len(x0)
    perm = torch.randperm(n, generator=gen)
    n_hold = max(1, n // 10) if n >= 10 else 0
    hold, train = perm[:n_hold], perm[n_hold:]
    x_tr, y_tr = x0[train].to(device), targets[train].to(device)
    opt = torch.optim.AdamW(td.parameters(), lr=lr)
    loss_val = math.nan
    for epoch in range(epochs):
        td.train()
        losses = []
        for idx in _batches(len(x_tr), batch, gen):
            idx = idx.to(device)
            xb = x_tr[idx]
            t = torch.randint(0, T, (len(idx),), generator=gen).to(device)
            noise = torch.randn(xb.shape, generator=gen).to(device)
            logp = F.log_softmax(td(q_sample(xb, t, noise, acp), t).float(), 1)
            if hard_labels:
                loss = F.nll_loss(logp, y_tr[idx])
            else:
                loss = F.kl_div(logp, y_tr[idx], reduction="batchmean")  # KL(p_TI ‖ p_TD)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        loss_val = float(np.mean(losses))
        if log and (epoch + 1) % max(1, epochs // 5) == 0:
            log(f"{stage}: epoch {epoch + 1}/{epochs}, loss {loss_val:.4f}")
        progress.update(stage, epoch + 1, epochs)
        progress.check()
    td.eval()
    agreement: dict[str, float] = {}
    if n_hold:
        xh = x0[hold].to(device)
        yh = targets[hold].to(device)
        yh = yh if hard_labels else yh.argmax(1)
        g = torch.Generator().manual_seed(seed + 1)
        for frac in (0.0, 0.25, 0.5, 0.75):
            t = torch.full((len(xh),), int(frac * (T - 1)), dtype=torch.long, device=device)
            xt = q_sample(xh, t, torch.randn(xh.shape, generator=g).to(device), acp)
            agreement[f"t={int(frac * (T - 1))}"] = accuracy(td, xt, yh, t=t)
    acc = agreement.get("t=0", math.nan)
    source = "cluster labels" if hard_labels else "TI classifier"
    what = f"agreement with the {source} on {n_hold} held-out synthetic images at t = 0"
    return TrainReport(acc, what, loss_val, {"agreement_by_t": agreement, "epochs": epochs, "measured_n": n_hold,
                                             "objective": "cross-entropy" if hard_labels else "KL (TDKD)"})
