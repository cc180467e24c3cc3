"""Distributed discrete Gaussian: sampler, dropout-robust scale, wrap-around, accounting."""

from __future__ import annotations

import dataclasses

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedvault.dp.noise import (
    DDG_ORDERS,
    DDGEvent,
    client_sigma,
    ddg_epsilon,
    ddg_sigma_for,
    discrete_gaussian,
    discrete_gaussian_variance,
    noise_mod,
    secure_generator,
    wraparound_probability,
)


def test_discrete_gaussian_pmf_and_variance():
    rng = secure_generator(1)
    for sigma in (0.6, 2.3, 37.0):
        x = discrete_gaussian(200_000, sigma, rng)
        assert x.dtype == np.int64
        v = discrete_gaussian_variance(sigma)
        sd = v * math.sqrt(2 / len(x))  # std of the sample variance (≈ Gaussian kurtosis)
        assert abs(x.var() - v) < 5 * sd
        assert abs(x.mean()) < 5 * math.sqrt(v / len(x))
    # pmf of a small σ against exp(−k²/2σ²)/Z
    sigma = 1.5
    x = discrete_gaussian(200_000, sigma, rng)
    ks = np.arange(-6, 7)
    p = np.exp(-ks**2 / (2 * sigma**2))
    p /= np.exp(-np.arange(-40, 41) ** 2 / (2 * sigma**2)).sum()
    freq = np.array([(x == k).mean() for k in ks])
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / len(x)) + 1e-6)
    assert discrete_gaussian_variance(0.5) < 0.25  # Var(N_Z(0, σ²)) < σ² for small σ


def test_sampler_is_seeded_and_defaults_to_os_entropy():
    a = discrete_gaussian(1000, 3.0, secure_generator(7))
    b = discrete_gaussian(1000, 3.0, secure_generator(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(discrete_gaussian(1000, 3.0), discrete_gaussian(1000, 3.0))
    assert np.all(discrete_gaussian((3, 4), 0.0) == 0)


def _secure_sum_noise(n_clients, survivors, target_sigma, threshold, d, bits, rng):
    """Each client encodes an integer vector + noise mod 2^bits; the sum over survivors is
    decoded (centred) and the true sum subtracted: what is left is the noise the server sees."""
    mod = 1 << bits
    sc = client_sigma(target_sigma, threshold)
    xs = rng.integers(-1000, 1000, size=(n_clients, d))
    uploads = [(x.astype(np.uint64) + noise_mod(d, sc, bits, rng)) & np.uint64(mod - 1) for x in xs]
    total = np.zeros(d, dtype=np.uint64)
    for k in survivors:
        total = (total + uploads[k]) & np.uint64(mod - 1)
    centred = total.astype(np.int64)
    centred[centred >= mod // 2] -= mod
    return centred - xs[list(survivors)].sum(axis=0), sc


@pytest.mark.parametrize("n_survivors", [10, 8, 6])
def test_noised_sum_variance_meets_target_down_to_threshold(n_survivors):
    rng = secure_generator(3)
    target, threshold, d = 40.0, 6, 40_000
    noise, sc = _secure_sum_noise(10, range(n_survivors), target, threshold, d, 32, rng)
    expected = n_survivors * discrete_gaussian_variance(sc)
    sd = expected * math.sqrt(2 / d)
    assert abs(noise.var() - expected) < 5 * sd  # matches within sampling error
    assert expected >= target**2 * (1 - 1e-12)  # never below target with ≥ threshold survivors
    assert noise.var() > target**2 - 5 * sd


@settings(max_examples=30, deadline=None)
@given(target=st.floats(0.3, 500.0), threshold=st.integers(1, 50))
def test_client_sigma_never_undershoots(target, threshold):
    sc = client_sigma(target, threshold)
    assert threshold * discrete_gaussian_variance(sc) >= target**2 * (1 - 1e-9)
    assert sc <= target / math.sqrt(threshold) * 1.5 + 0.5


def test_wraparound_bound_holds_empirically():
    rng = secure_generator(5)
    bits, n, sc, d = 9, 4, 30.0, 500_000  # half range 256 vs noise std 60
    z = sum(discrete_gaussian(d, sc, rng) for _ in range(n))
    empirical = np.mean(np.abs(z) >= 255)
    bound = wraparound_probability(bits, n, 1, sc, 0.0)
    assert 0 < empirical <= bound
    assert wraparound_probability(32, 10, 100_000, 500.0, 10 * 1001) < 1e-9
    assert wraparound_probability(8, 10, 10, 1.0, 200.0) == 1.0


def test_ddg_accounting_reduces_to_gaussian_rdp():
    """τ ≈ 0 (σ_c large) and no rounding error: DDG ε equals the Gaussian mechanism's."""
    import dp_accounting as dpa
    from dp_accounting.rdp import RdpAccountant

    for q in (1.0, 0.3, 0.05):
        ev = DDGEvent(round=0, sigma_client=3000.0, threshold=4, clip_norm=1.0, scale=5000.0,
                      dimension=100, sample_rate=q, coord_error=0.0)
        ours = ddg_epsilon([ev] * 20, 1e-5)
        acc = RdpAccountant(orders=[float(o) for o in DDG_ORDERS])
        z = math.sqrt(4) * 3000.0 / 5000.0
        acc.compose(dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), 20))
        tight = acc.get_epsilon(1e-5)
        if q == 1.0:
            assert ours == pytest.approx(tight, rel=1e-9)
        else:  # general subsampling bound: valid (not below the tight one) and not absurd
            assert tight <= ours <= 1.5 * tight


def test_ddg_epsilon_monotone_and_calibration():
    base = DDGEvent(round=0, sigma_client=200.0, threshold=5, clip_norm=1.0, scale=1000.0,
                    dimension=1000, sample_rate=0.5, coord_error=0.5)
    e1 = ddg_epsilon([base], 1e-5)
    e5 = ddg_epsilon([base] * 5, 1e-5)
    noisier = dataclasses.replace(base, sigma_client=400.0)
    assert 0 < e1 < e5 and ddg_epsilon([noisier] * 5, 1e-5) < e5
    assert ddg_epsilon([], 1e-5) == 0.0
    s = ddg_sigma_for(3.0, 1e-5, 10, base)
    at = ddg_epsilon([dataclasses.replace(base, sigma_client=s)] * 10, 1e-5)
    below = ddg_epsilon([dataclasses.replace(base, sigma_client=s * 0.99)] * 10, 1e-5)
    assert at <= 3.0 < below
