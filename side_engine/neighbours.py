"""Nearest-neighbour search of generated images against the training set (faiss, exact).

One batch of generated vectors at a time: memory is bounded by the batch,
never by the number of generated images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import faiss
import numpy as np

from .scorers import Band, Scorer


def content_groups(vectors: np.ndarray) -> np.ndarray:
    """One id per distinct vector: exact duplicates in the training set share it and count
    once as "the second-nearest distinct image" (Gu et al.)."""
    # a 128-bit digest of each row's bytes, not a sorted copy of the rows: 16 bytes a training
    # image instead of a float32 copy of the set (a collision of distinct rows: ~2^-128)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    keys = np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in v], dtype="S16")
    _, groups = np.unique(keys, return_inverse=True)
    return groups.ravel()


@dataclass
class BatchScores:
    best: np.ndarray  # (B,) native score of the nearest training image
    nearest: np.ndarray  # (B,) its index
    second: np.ndarray  # (B,) cosine (sscd) or RMS l2 (pixel scorers) of the second-nearest distinct image
    gu_ratio: np.ndarray  # (B,) l2 nearest / l2 second-nearest distinct, in the scorer's space
    pairs: list[tuple[int, int, float]]  # (row, train index, score) within the loosest band


class TrainIndex:
    """Exact faiss index over training vectors, answering in the scorer's native units."""

    def __init__(self, scorer: Scorer, train_vectors: np.ndarray, bands: list[Band],
                 groups: np.ndarray | None = None) -> None:
        self.scorer = scorer
        self.dim = train_vectors.shape[1]
        self.n = train_vectors.shape[0]
        vecs = np.ascontiguousarray(train_vectors, dtype=np.float32)
        self.groups = content_groups(vecs) if groups is None else np.asarray(groups)
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
        if self.scorer.name == "pixel-carlini":
            return self._score_carlini(q)
        return self._score_gu(q)

    TOP_K = 16  # cosine: neighbours fetched per query; enough to hold every in-band pair nearly always

    def _score_cosine(self, q: np.ndarray) -> BatchScores:
        """One exact top-k search gives the two nearest (Gu ratio) and, for every row whose k-th
        neighbour is already outside the loosest band, all its in-band pairs; only rows with k
        or more in-band neighbours need the range search. The usual case is then one pass over
        the training set instead of two (search + range search)."""
        k = min(self.TOP_K, self.n)
        sims, idx = self.index.search(q, k)
        best, nearest = sims[:, 0], idx[:, 0]
        second = self._second_distinct(q, sims, idx)
        d1 = np.sqrt(np.maximum(2 - 2 * best, 0))
        d2 = np.sqrt(np.maximum(2 - 2 * second, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            gu = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1), np.nan)
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

    def _second_distinct(self, q: np.ndarray, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Per row, the score of the nearest training image whose content group differs from the
        nearest's; from the top-k already searched, else (many duplicates) a full search of
        that row. NaN when the set holds one distinct image."""
        out = np.full(len(q), np.nan, np.float32)
        g = self.groups[idx]
        other = g != g[:, :1]
        found = other.any(axis=1)
        first = other.argmax(axis=1)
        out[found] = dist[found, first[found]]
        missing = np.flatnonzero(~found)
        if len(missing) and idx.shape[1] < self.n:
            d_all, i_all = self.index.search(q[missing], self.n)
            for r, dr, ir in zip(missing, d_all, i_all):
                o = np.flatnonzero(self.groups[ir] != self.groups[ir[0]])
                if len(o):
                    out[r] = dr[o[0]]
        return out

    def _score_gu(self, q: np.ndarray) -> BatchScores:
        """Gu et al.: RMS l2 to the nearest over RMS l2 to the second-nearest distinct image. Only
        the nearest image can lie in a band (its ratio is the sample's score)."""
        k = min(self.TOP_K, self.n)
        d2, idx = self.index.search(q, k)
        rms = np.sqrt(np.maximum(d2, 0) / self.dim)
        second = self._second_distinct(q, rms, idx)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(second > 0, rms[:, 0] / np.where(second > 0, second, 1), np.nan)
        nearest = idx[:, 0]
        rows = np.flatnonzero(ratio < self.loose)
        pairs = [(int(r), int(nearest[r]), float(ratio[r])) for r in rows]
        return BatchScores(ratio.astype(np.float32), nearest, second.astype(np.float32),
                           ratio.astype(np.float32), pairs)

    def _score_carlini(self, q: np.ndarray) -> BatchScores:
        """Carlini et al.: ratio to half the mean l2 of the 50 nearest. Any training image
        with ratio < 1 lies closer than that mean, hence among those 50: one top-k search
        gives both the calibration and every in-band pair."""
        k = min(50, self.n)
        d2, idx = self.index.search(q, k)
        rms = np.sqrt(np.maximum(d2, 0) / self.dim)
        denom = 0.5 * rms.mean(axis=1)
        ratio = rms / np.maximum(denom, 1e-12)[:, None]
        best, nearest = ratio[:, 0], idx[:, 0]
        second = self._second_distinct(q, rms, idx)
        with np.errstate(invalid="ignore", divide="ignore"):
            gu = np.where(second > 0, rms[:, 0] / np.where(second > 0, second, 1), np.nan)
        rows, cols = np.nonzero(ratio < self.loose)
        pairs = [(int(r), int(idx[r, c]), float(ratio[r, c])) for r, c in zip(rows, cols)]
        return BatchScores(best.astype(np.float32), nearest, second.astype(np.float32),
                           np.asarray(gu, np.float32), pairs)
