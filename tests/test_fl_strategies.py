"""Server strategies against independent reference computations; early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl import strategies
from fedvault.fl.config import from_dict
from fedvault.fl.errors import ConfigError
from fedvault.fl.simulation import EarlyStopping


def weighted(deltas, ns):
    return np.concatenate([np.sum([n * d for d, n in zip(deltas, ns)], axis=0), [sum(ns)]])


RNG = np.random.default_rng(0)
DELTAS = [RNG.normal(size=6) for _ in range(5)]
NS = [10, 30, 5, 50, 20]
TOTAL = weighted(DELTAS, NS)
W0 = RNG.normal(size=6)


def test_fedavg_is_the_weighted_mean():
    mean = sum(n * d for d, n in zip(DELTAS, NS)) / sum(NS)
    np.testing.assert_allclose(strategies.FedAvg(0.7).step(W0, TOTAL), W0 + 0.7 * mean)


def test_fedavgm_reference():
    s = strategies.FedAvgM(server_lr=0.5, momentum=0.8)
    mean = TOTAL[:-1] / TOTAL[-1]
    w1 = s.step(W0, TOTAL)
    w2 = s.step(w1, 2 * TOTAL)  # same mean: the doubled sum has a doubled weight
    v1 = mean
    v2 = 0.8 * v1 + mean
    np.testing.assert_allclose(w1, W0 + 0.5 * v1)
    np.testing.assert_allclose(w2, W0 + 0.5 * v1 + 0.5 * v2)


@pytest.mark.parametrize("yogi", [False, True])
def test_fedadam_and_fedyogi_reference(yogi):
    b1, b2, tau, eta = 0.9, 0.99, 1e-3, 0.1
    s = strategies.FedAdam(eta, b1, b2, tau, yogi=yogi)
    w = W0.copy()
    m = np.zeros(6)
    v = np.full(6, tau**2)
    ref = W0.copy()
    for scale in (1.0, -0.5, 2.0):
        tot = TOTAL.copy()
        tot[:-1] *= scale
        w = s.step(w, tot)
        d = tot[:-1] / tot[-1]
        m = b1 * m + (1 - b1) * d
        if yogi:
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        else:
            v = b2 * v + (1 - b2) * d**2
        ref = ref + eta * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(w, ref, rtol=1e-12)


def test_fedmedian_and_trimmed_mean_match_numpy():
    ups = [np.concatenate([n * d, [n]]) for d, n in zip(DELTAS, NS)]
    D = np.stack(DELTAS)
    np.testing.assert_allclose(strategies.FedMedian(1.0).step_individual(W0, ups), W0 + np.median(D, axis=0))
    tm = strategies.TrimmedMean(1.0, trim=0.2).step_individual(W0, ups)
    srt = np.sort(D, axis=0)[1:-1]
    np.testing.assert_allclose(tm, W0 + srt.mean(axis=0))
    from scipy.stats import trim_mean

    np.testing.assert_allclose(tm, W0 + trim_mean(D, 0.2, axis=0))


@pytest.mark.parametrize("strategy", ["fedmedian", "trimmed_mean"])
@pytest.mark.parametrize("mode", ["masked", "secagg", "paillier"])
def test_robust_strategies_refused_under_secure_aggregation(strategy, mode):
    with pytest.raises(ConfigError, match="individual update"):
        from_dict({"training": {"strategy": strategy}, "aggregation": {"mode": mode}})
    from_dict({"training": {"strategy": strategy}, "aggregation": {"mode": "plaintext"}})  # allowed


def test_early_stopping_on_target():
    s = EarlyStopping(target=0.9, patience=None)
    seq = [0.5, 0.7, 0.85, 0.91, 0.95]
    stops = [s.update(r, v) for r, v in enumerate(seq, start=1)]
    assert stops[:3] == [None, None, None]
    assert stops[3] is not None and "round 4" in stops[3]


def test_early_stopping_on_plateau():
    s = EarlyStopping(target=None, patience=3, min_delta=0.01)
    seq = [0.5, 0.6, 0.605, 0.608, 0.609, 0.7]  # best 0.6 in round 2, then 3 rounds without +0.01
    stops = [s.update(r, v) for r, v in enumerate(seq, start=1)]
    assert stops[:4] == [None] * 4
    assert stops[4] is not None and "round 5" in stops[4]
