"""The run checks its own guide before it spends the sampling budget.

After TDKD the audit knows how reliable its TD classifier is at every noise level: on the
synthetic images TDKD held out, noised to each timestep the sampler visits, how often does
the TD classifier name the class the TI classifier (or the cluster labels) gave the clean
image? Where it is at chance its gradient steers towards arbitrary images. That measurement
is the ``reliability`` guidance schedule, λ_t = λ · w(t) with

    w(t) = clip((a(t) − 1/K) / (1 − 1/K), 0, 1),

a(t) the agreement smoothed over neighbouring sampler steps: full guidance where the TD
classifier is always right, none where it is at chance. A small probe then samples the same
noise with and without guidance and asks the scorer — not the classifier that steered —
whether the nearest training image belongs to the target class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

SMOOTH = 5  # sampler steps averaged for a(t): ~5x the held-out images behind every weight
PROBE = 32  # samples of the probe, each with and without guidance
FLAT = 0.05  # the largest weight below which the run says guidance cannot help
SETTLED_SHARE = 0.5  # the settled stop: where half of the unguided probe samples have settled


@dataclass
class GuideCheck:
    """What the check measured; stored (kv ``guide_check``), logged, shown and reported."""

    timesteps: list[int]
    agreement: list[float]  # raw, per sampler timestep
    smoothed: list[float]
    weights: list[float]  # the reliability schedule's w(t)
    chance: float
    held_out: int
    probe: dict = field(default_factory=dict)  # n, lam, on_target guided / unguided, steered

    def weight_map(self) -> dict[int, float]:
        return dict(zip(self.timesteps, self.weights))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GuideCheck:
        return cls(**d)


def smooth(values: list[float], width: int = SMOOTH) -> list[float]:
    """Centred moving average, shrinking at the ends (no padding that invents values)."""
    out, half = [], width // 2
    for i in range(len(values)):
        part = values[max(0, i - half): i + half + 1]
        out.append(float(sum(part) / len(part)))
    return out


def weights_from(agreement: list[float], chance: float) -> list[float]:
    """w(t) from smoothed agreement: 0 at chance, 1 at perfect agreement."""
    if chance >= 1:
        return [0.0] * len(agreement)
    return [float(min(1.0, max(0.0, (a - chance) / (1 - chance)))) for a in agreement]


@torch.no_grad()
def agreement_by_step(td: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, timesteps: list[int],
                      alphas_cumprod: torch.Tensor, seed: int, batch: int = 256) -> list[float]:
    """Share of held-out images ``x0`` whose noised version at each timestep the TD classifier
    puts in ``labels`` (fresh noise per timestep, fixed by ``seed``)."""
    device = next(td.parameters()).device
    acp = alphas_cumprod.to(device, torch.float32)
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in timesteps:
        hits = 0
        for i in range(0, len(x0), batch):
            xb = x0[i:i + batch].to(device)
            noise = torch.randn(xb.shape, generator=g).to(device)
            a = acp[t]
            tt = torch.full((len(xb),), int(t), dtype=torch.long, device=device)
            xt = a.sqrt() * xb + (1 - a).sqrt() * noise
            hits += int((td(xt, tt).argmax(1).cpu() == labels[i:i + batch].cpu()).sum())
        out.append(hits / max(len(x0), 1))
    return out


def measure(td: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, timesteps: list[int],
            alphas_cumprod: torch.Tensor, k: int, seed: int) -> GuideCheck:
    raw = agreement_by_step(td, x0, labels, timesteps, alphas_cumprod, seed)
    sm = smooth(raw)
    chance = 1 / max(k, 1)
    return GuideCheck(list(map(int, timesteps)), raw, sm, weights_from(sm, chance), chance, len(x0))


def guided_weight(check: GuideCheck, window: tuple[int, int], schedule: str) -> float:
    """The largest reliability above chance (0..1) at a step where the schedule guides."""
    best = 0.0
    for t, w in zip(check.timesteps, check.weights):
        if not window[0] <= t <= window[1]:
            continue
        if schedule == "reliability" and w <= 0:
            continue
        best = max(best, w)
    return best


def findings(check: GuideCheck, window: tuple[int, int], schedule: str) -> list[str]:
    """What the check says a reviewer must know, in words (empty: nothing to say)."""
    out = []
    if not any(window[0] <= t <= window[1] for t in check.timesteps):
        settled = check.probe.get("settled_t")
        why = (f"; half of the model's own probe samples had settled by t = {settled}, where the settled stop "
               "ends guidance" if settled is not None and settled >= 0 and window[0] == settled + 1 else "")
        out.append(f"Guidance acts at no sampler step (native t {window[0]}–{window[1]}{why}): SIDE's rows are "
                   "unguided samples.")
        return out
    reach = guided_weight(check, window, schedule)
    if reach < FLAT:
        out.append(f"The TD classifier is at chance (agreement ≤ {100 * (check.chance + FLAT):.0f} %, "
                   f"chance {100 * check.chance:.1f} %) at every step where guidance acts: guidance cannot "
                   "steer towards the target images, so SIDE's rows measure sampling noise, not the method. "
                   "Raise tdkd_epochs or classifier_min_steps.")
    p = check.probe
    # under synthetic-clusters, on target is the target's cluster; before clusters were stored per
    # sample no training image carried a class there and the rate was not defined
    if p.get("n") and p.get("on_target_defined", True):
        guided, unguided = p["on_target_guided"], p["on_target_unguided"]
        where = ("the scorer put the image in the target's cluster" if p.get("on_target_by") == "cluster"
                 else "the scorer's nearest training image was in the target class")
        if guided <= unguided:
            out.append(f"In a probe of {p['n']} samples at λ = {p['lam']:g}, {where} no more often with "
                       f"guidance than without ({guided} vs "
                       f"{unguided} of {p['n']}; chance ≈ {check.chance * p['n']:.1f}): guidance may spread "
                       "samples over more training images, but it is not seen reaching its targets.")
    return out


def commit_curve(nearest: np.ndarray) -> list[float]:
    """Share of samples already committed at each sampler step. ``nearest`` [samples, steps + 1]:
    the nearest training image of the model's clean-image prediction at each step, then of the
    finished sample. Committed at step i: the nearest image at i and at every later step is the
    final one — from there on the sample's identity is settled and guidance can only change how
    exactly it copies that image."""
    nearest = np.asarray(nearest)
    if nearest.size == 0:
        return []
    same = nearest[:, :-1] == nearest[:, -1:]
    # committed from step i: every step from i to the end agrees (reverse cumulative AND)
    settled = np.flip(np.logical_and.accumulate(np.flip(same, 1), axis=1), 1)
    return [float(v) for v in settled.mean(0)]


def settled_timestep(curve: list[float], timesteps: list[int], share: float = SETTLED_SHARE) -> int:
    """The largest sampler timestep by which ``share`` of the samples have settled (``curve`` from
    ``commit_curve``, one value per step, noisiest first); -1 when that share never settles."""
    for t, c in zip(timesteps, curve):
        if c >= share:
            return int(t)
    return -1


def on_target(nearest: np.ndarray, surrogate: np.ndarray, cls: np.ndarray,
              cluster: np.ndarray | None = None) -> np.ndarray:
    """Whether each sample reached its target class, by the scorer: its nearest training image
    carries the class; or, given ``cluster`` (synthetic-clusters, where no training image has a
    class: -1), the kept cluster the image falls in is the target."""
    if cluster is not None:
        return np.asarray(cluster, dtype=np.int64) == np.asarray(cls)
    lab = surrogate[np.asarray(nearest, dtype=np.int64)]
    return (lab >= 0) & (lab == np.asarray(cls))


def chance_of(surrogate: np.ndarray, k: int) -> float:
    """Chance of landing on the target class for a uniformly nearest training image: stratified
    targets make it the mean class share, 1/K."""
    valid = surrogate[surrogate >= 0]
    return 1 / k if len(valid) and k > 0 else math.nan
