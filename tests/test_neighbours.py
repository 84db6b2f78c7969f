"""The training-set search equals brute force: nearest two, and every pair in the loosest band."""

import numpy as np

from side_engine.neighbours import TrainIndex
from side_engine.scorers import Band, Scorer


class Cosine(Scorer):
    higher_is_closer = True


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_cosine_search_equals_brute_force_including_rows_with_many_in_band_pairs():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((400, 32))
    train[100:140] = train[100] + 0.3 * rng.standard_normal((40, 32))  # a cluster of 40 near-twins
    train = _unit(train)
    q = rng.standard_normal((50, 32))
    q[0] = train[7] + 0.05 * rng.standard_normal(32)  # one near-copy
    q[1] = train[100]  # inside the cluster: more in-band pairs than the top-k holds
    q[2] = train[120]
    q = _unit(q)
    bands = [Band("low", 0.4, 0.5), Band("mid", 0.5, 0.6), Band("high", 0.6, 1.0)]
    index = TrainIndex(Cosine(), train, bands)
    got = index.score(q)
    sims = q @ train.T
    order = np.argsort(-sims, axis=1)
    assert np.array_equal(got.nearest, order[:, 0])
    assert np.allclose(got.best, sims[np.arange(50), order[:, 0]], atol=1e-5)
    assert np.allclose(got.second, sims[np.arange(50), order[:, 1]], atol=1e-5)
    want = {(int(r), int(c)) for r, c in zip(*np.nonzero(sims >= 0.4 + 1e-5))}
    have = {(r, c) for r, c, _ in got.pairs}
    borderline = {(int(r), int(c)) for r, c in zip(*np.nonzero(np.abs(sims - 0.4) <= 1e-5))}
    assert want <= have and have - want <= borderline
    assert sum(1 for r, _, _ in got.pairs if r == 1) > TrainIndex.TOP_K  # the range-search path ran
    assert all(s >= 0.4 for _, _, s in got.pairs)
    assert [r for r, _, _ in got.pairs] == sorted(r for r, _, _ in got.pairs)
