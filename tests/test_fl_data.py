"""Data loading, Dirichlet split and federated standardisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedvault.fl import data as data_mod
from fedvault.fl.aggregation import PlaintextAggregator
from fedvault.fl.config import from_dict
from fedvault.fl.errors import DataError
from fedvault.fl.stats import federated_standardise


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(60, 400),
    k=st.integers(2, 8),
    alpha=st.floats(0.1, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_partition_is_a_partition(n, k, alpha, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    try:
        parts = data_mod.dirichlet_partition(y, k, alpha, 5, rng)
    except DataError:
        return  # could not meet min_records: refused, not silently wrong
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n))
    assert all(len(p) >= 5 for p in parts)


def test_small_alpha_is_skewed_large_alpha_is_not():
    y = np.repeat([0, 1], 500)

    def spread(alpha):
        parts = data_mod.dirichlet_partition(y, 5, alpha, 10, np.random.default_rng(0))
        fr = [y[p].mean() for p in parts]
        return max(fr) - min(fr)

    assert spread(0.3) > 0.4
    assert spread(1000.0) < 0.1


def test_builtin_split_is_seeded_and_disjoint():
    cfg = from_dict({"seed": 3, "data": {"hospitals": 4}})
    a, b = data_mod.load(cfg), data_mod.load(cfg)
    for ha, hb in zip(a.hospitals, b.hospitals):
        assert np.array_equal(ha.X, hb.X) and np.array_equal(ha.y, hb.y)
    total = sum(h.n + len(h.y_val) for h in a.hospitals) + len(a.y_test)
    assert total == 569
    assert a.n_classes == 2 and a.n_features == 30


def test_federated_standardisation_equals_pooled_statistics():
    cfg = from_dict({"seed": 5, "data": {"hospitals": 4}})
    fd = data_mod.load(cfg)
    pooled = np.concatenate([h.X for h in fd.hospitals])
    mean, std = federated_standardise(fd, PlaintextAggregator())
    np.testing.assert_allclose(mean, pooled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, pooled.std(0), rtol=1e-6)
    z = np.concatenate([h.X for h in fd.hospitals])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_too_many_hospitals_is_refused():
    cfg = from_dict({"data": {"hospitals": 50, "min_records": 40}})
    with pytest.raises(DataError, match="fewer hospitals"):
        data_mod.load(cfg)
