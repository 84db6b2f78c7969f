"""Surrogate labels y_I: the implicit informative labels that SIDE conditions on."""

from __future__ import annotations

import faiss
import numpy as np

from .errors import ConfigError, InputError


def default_k(n: int) -> int:
    """docs/method.md: one image a class while N <= 256, else max(100, N // 20)."""
    return n if n <= 256 else max(100, n // 20)


def resolve_k(k: int, n: int) -> int:
    k = k or default_k(n)
    if k > n:
        raise ConfigError(f"setting 'k' = {k} is larger than the number of training images ({n})")
    if k < 2:
        raise ConfigError(f"setting 'k' = {k}: SIDE needs at least 2 classes (informative labels)")
    return k


def original_labels(names: list[str | None], paths: list[str]) -> tuple[np.ndarray, list[str]]:
    missing = [p for p, n in zip(paths, names) if n is None]
    if missing:
        raise InputError(f"label_source 'original': no label for {missing[0]} (and {len(missing) - 1} more); "
                         "give 'labels_csv' or put images in one sub-folder per class")
    classes = sorted(set(names))  # type: ignore[arg-type]
    if len(classes) < 2:
        raise InputError("label_source 'original': the training set has a single label; SIDE needs at least 2")
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[n] for n in names], dtype=np.int64), classes


def kmeans_labels(vectors: np.ndarray, k: int, seed: int, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids); K = N is one image a class, no clustering needed."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if k == n:
        return np.arange(n, dtype=np.int64), x.copy()
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=spherical, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64), km.centroids


def random_labels(n: int, k: int, seed: int) -> np.ndarray:
    """K balanced random groups; K = N is the paper's one-label-per-image variant."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(n) % k).astype(np.int64)


def synthetic_cluster_labels(
    vectors: np.ndarray, k: int, seed: int, min_cosine: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Later paper version: cluster the synthetic set, keep tight clusters (mean cosine to the
    centroid >= 0.5), relabel every image by its nearest kept centroid. Returns (labels, the
    kept unit centroids): the centroids also say which cluster a generated image fell in."""
    x = _unit(vectors)
    assign, cents = kmeans_labels(x, k, seed, spherical=True)
    cents = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    keep = [c for c in range(len(cents))
            if (assign == c).any() and float((x[assign == c] @ cents[c]).mean()) >= min_cosine]
    if len(keep) < 2:
        raise InputError(f"label_source 'synthetic-clusters': only {len(keep)} of {k} clusters have mean cosine "
                         f">= {min_cosine}; use another label source or more synthetic images")
    kept = np.ascontiguousarray(cents[keep], dtype=np.float32)
    return nearest_cluster(x, kept), kept


def nearest_cluster(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The kept cluster of each embedding (largest cosine to a unit centroid), by the rule that
    labelled the synthetic set: a generated image is "in" a class as a synthetic one would be."""
    return np.argmax(_unit(vectors) @ centroids.T, axis=1).astype(np.int64)


def _unit(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
