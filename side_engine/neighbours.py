"""Nearest-neighbour search of generated images against the training set (faiss, exact).

One batch of generated vectors at a time: memory is bounded by the batch,
never by the number of generated images.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from .scorers import Band, Scorer


@dataclass
class BatchScores:
    best: np.ndarray  # (B,) native score of the nearest training image
    nearest: np.ndarray  # (B,) its index
    second: np.ndarray  # (B,) score of the second nearest (nan if N == 1)
    gu_ratio: np.ndarray  # (B,) l2 nearest / l2 second-nearest in the scorer's space
    pairs: list[tuple[int, int, float]]  # (row, train index, score) within the loosest band


class TrainIndex:
    """Exact faiss index over training vectors, answering in the scorer's native units."""

    def __init__(self, scorer: Scorer, train_vectors: np.ndarray, bands: list[Band]) -> None:
        self.scorer = scorer
        self.dim = train_vectors.shape[1]
        self.n = train_vectors.shape[0]
        vecs = np.ascontiguousarray(train_vectors, dtype=np.float32)
        if scorer.higher_is_closer:
            self.index = faiss.IndexFlatIP(self.dim)
            self.loose = min(b.lo for b in bands)  # pairs with cosine >= loose are kept
        else:
            self.index = faiss.IndexFlatL2(self.dim)
            self.loose = max(b.hi for b in bands)  # pairs with ratio < loose are kept
        self.index.add(vecs)

    def score(self, vectors: np.ndarray) -> BatchScores:
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.scorer.higher_is_closer:
            return self._score_cosine(q)
        return self._score_pixel(q)

    TOP_K = 16  # cosine: neighbours fetched per query; enough to hold every in-band pair nearly always

    def _score_cosine(self, q: np.ndarray) -> BatchScores:
        """One exact top-k search gives the two nearest (Gu ratio) and, for every row whose k-th
        neighbour is already outside the loosest band, all its in-band pairs; only rows with k
        or more in-band neighbours need the range search. The usual case is then one pass over
        the training set instead of two (search + range search)."""
        k = min(self.TOP_K, self.n)
        sims, idx = self.index.search(q, k)
        best, nearest = sims[:, 0], idx[:, 0]
        second = sims[:, 1] if k > 1 else np.full(len(q), np.nan, np.float32)
        d1 = np.sqrt(np.maximum(2 - 2 * best, 0))
        d2 = np.sqrt(np.maximum(2 - 2 * second, 0))
        gu = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1), np.nan) if k > 1 else np.full(len(q), np.nan)
        full = sims[:, -1] >= self.loose  # the top k may not hold all of this row's pairs
        if k == self.n:
            full[:] = False
        pairs = []
        for row in np.flatnonzero(~full):
            for j in np.flatnonzero(sims[row] >= self.loose):
                pairs.append((int(row), int(idx[row, j]), float(sims[row, j])))
        rows = np.flatnonzero(full)
        if len(rows):
            # range search returns every training image with inner product > radius
            lims, dist, labels = self.index.range_search(q[rows], float(self.loose) - 1e-6)
            for i, row in enumerate(rows):
                for j in range(lims[i], lims[i + 1]):
                    if dist[j] >= self.loose:
                        pairs.append((int(row), int(labels[j]), float(dist[j])))
            pairs.sort(key=lambda p: p[0])
        return BatchScores(best, nearest, second, gu.astype(np.float32), pairs)

    def _score_pixel(self, q: np.ndarray) -> BatchScores:
        """Carlini et al.: ratio to half the mean l2 of the 50 nearest. Any training image
        with ratio < 1 lies closer than that mean, hence among those 50: one top-k search
        gives both the calibration and every in-band pair."""
        k = min(50, self.n)
        d2, idx = self.index.search(q, k)
        rms = np.sqrt(np.maximum(d2, 0) / self.dim)
        denom = 0.5 * rms.mean(axis=1)
        ratio = rms / np.maximum(denom, 1e-12)[:, None]
        best, nearest = ratio[:, 0], idx[:, 0]
        second = ratio[:, 1] if k > 1 else np.full(len(q), np.nan, np.float32)
        gu = np.where(rms[:, 1] > 0, rms[:, 0] / np.maximum(rms[:, 1], 1e-12), np.nan) if k > 1 else second
        rows, cols = np.nonzero(ratio < self.loose)
        pairs = [(int(r), int(idx[r, c]), float(ratio[r, c])) for r, c in zip(rows, cols)]
        return BatchScores(best.astype(np.float32), nearest, second.astype(np.float32),
                           np.asarray(gu, np.float32), pairs)
