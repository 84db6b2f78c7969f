"""What the audit's statistics read: one (method, λ) as hits and in-band pairs on sample positions.

Kept apart from ``statistics`` and ``unseen`` so that both read it and neither imports the other
for it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEED = 20240607  # fixed: an audit's resampled numbers are reproducible


@dataclass
class Arm:
    """One (method, λ) on aligned sample positions 0..n-1: which generated images hit the band
    (AMS) and which (position, training image) pairs lie in it (UMS)."""

    hit: np.ndarray  # (n,) bool
    pair_pos: np.ndarray  # (P,) int: position of the generated image of each in-band pair
    pair_train: np.ndarray  # (P,) int: its training image

    @property
    def n(self) -> int:
        return len(self.hit)

    def ams(self) -> float:
        return float(self.hit.mean()) if self.n else math.nan

    def distinct(self) -> int:
        """Training images with at least one in-band generated image."""
        return len(np.unique(self.pair_train))

    def ums(self) -> float:
        return self.distinct() / self.n if self.n else math.nan

    def sole_finds(self) -> np.ndarray:
        """(n,) for each generated image, the training images it alone reached: how many the
        distinct count loses when that image is left out (the delete-one jackknife's terms).
        With one pair a sample at most, their sum is the number of images found once."""
        out = np.zeros(self.n, np.int64)
        if not len(self.pair_train):
            return out
        pairs = np.unique(np.stack([self.pair_train, self.pair_pos]), axis=1)
        train, count = np.unique(pairs[0], return_counts=True)
        once = np.isin(pairs[0], train[count == 1])
        np.add.at(out, pairs[1][once], 1)
        return out

    def ums_resampled(self, counts: np.ndarray) -> np.ndarray:
        """(b,) UMS of each bootstrap draw: training images with an in-band pair whose generated
        image was drawn at least once, over n."""
        if not len(self.pair_train):
            return np.zeros(len(counts))
        order = np.argsort(self.pair_train, kind="stable")
        train_sorted = self.pair_train[order]
        starts = np.flatnonzero(np.r_[True, train_sorted[1:] != train_sorted[:-1]])
        drawn = (counts[:, self.pair_pos[order]] > 0).astype(np.uint8)
        reached = np.maximum.reduceat(drawn, starts, axis=1)
        return reached.sum(axis=1) / self.n

    def ams_resampled(self, counts: np.ndarray) -> np.ndarray:
        # the hit columns only (a few % of n): a product with the whole (b, n) matrix converted
        # it to float64 first, 100 MB a call at n = 50 000; the integer sums are exact either way
        return counts[:, np.flatnonzero(self.hit)].sum(axis=1, dtype=np.float64) / self.n


def budgets_for(n: int) -> list[int]:
    """Budgets from 8 up to N_G, doubling, always ending at N_G."""
    out, b = [], 8
    while b < n:
        out.append(b)
        b *= 2
    return out + [n] if n >= 2 else out
