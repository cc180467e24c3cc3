"""Feature statistics are released with the configured noise, within the stated sensitivity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedvault.dp.ledger import PrivacyLedger
from fedvault.fl import stats
from fedvault.fl.config import demo_config


def test_released_statistics_carry_the_configured_noise():
    """Variance test: over many releases the noise per coordinate has std z·√(2d)."""
    rng = np.random.default_rng(1)
    U = rng.random((50, 6))
    z, d = 4.0, 6
    exact = np.concatenate([[50.0], U.sum(0), (U**2).sum(0)])
    gen = np.random.Generator(np.random.PCG64(7))
    draws = np.array([stats.private_statistics(U, z, gen) for _ in range(4000)])
    assert np.all(draws[:, 0] == 50.0)  # the count is exact (free under replace-one only)
    noise = draws[:, 1:] - exact[1:]
    want = z * math.sqrt(2 * d)
    sd = noise.std(axis=0, ddof=1)
    # 4000 draws: the sample sd is within ~3.5 % of the truth with overwhelming probability
    assert np.all(np.abs(sd / want - 1) < 0.06), sd / want
    assert np.all(np.abs(noise.mean(axis=0)) < 4 * want / math.sqrt(4000))
    ev = stats.statistics_event(d, z)
    assert ev.std == pytest.approx(want) and ev.noise_multiplier("replace_one") == pytest.approx(z)
    assert ev.sensitivity_add_remove == math.inf  # the exact count: add/remove is not private


@settings(max_examples=40, deadline=None)
@given(
    X=arrays(np.float64, (8, 5), elements=st.floats(-100, 100)),
    row=arrays(np.float64, (5,), elements=st.floats(-1e6, 1e6)),
    i=st.integers(0, 7),
)
def test_replacing_one_record_moves_the_sums_by_at_most_the_sensitivity(X, row, i):
    lo, hi = np.full(5, -10.0), np.full(5, 30.0)
    U = stats.to_unit(X, lo, hi)
    X2 = X.copy()
    X2[i] = row
    U2 = stats.to_unit(X2, lo, hi)
    v = np.concatenate([U.sum(0), (U**2).sum(0)])
    v2 = np.concatenate([U2.sum(0), (U2**2).sum(0)])
    assert np.linalg.norm(v - v2) <= math.sqrt(2 * 5) + 1e-9


def test_the_release_is_charged_and_composes_with_dp_sgd():
    led = PrivacyLedger("h", 1e-5, relation="replace_one")
    led.record(stats.statistics_event(30, 10.0))
    e_stats = led.epsilon()
    assert 0 < e_stats < 0.6
    assert led.events[0].purpose == "feature_statistics" and led.events[0].relation == "replace_one"


def test_standardisation_from_noised_totals_is_clamped():
    d = 3
    tot = np.array([10.0, -50.0, 5.0, 200.0, -80.0, 2.0, 1e6])
    mean, std = stats.standardisation_from_total(tot, d)
    assert np.all((0 <= mean) & (mean <= 1))
    assert np.all((std >= stats.STD_MIN) & (std <= 0.5))


def test_public_ranges_for_builtin_data_and_refusal_without_them():
    cfg = demo_config()
    lo, hi = stats.public_ranges(cfg, 30)
    assert len(lo) == 30 and np.all(hi > lo)
    csv_cfg = cfg.replace(data={"dataset": "csv", "csv": ["a.csv", "b.csv"], "label": "y", "hospitals": 2})
    problems = stats.range_problems(csv_cfg, 8)
    assert problems and "feature_low" in problems[0]
    ok = csv_cfg.replace(privacy={"feature_low": [0.0] * 8, "feature_high": [1.0] * 8})
    assert stats.range_problems(ok, 8) == []
    assert stats.range_problems(csv_cfg.replace(privacy={"standardise": "none"}), 8) == []


def test_a_run_states_one_relation_and_verify_certifies_it():
    """End to end: every ε names replace-one, the statistics release is in every ledger, the
    inventory is in history, and verify certifies the run (and refuses the reproducible one)."""
    from fedvault.dp.verify import REPRODUCIBLE_REFUSAL, verify
    from fedvault.fl.config import from_dict
    from fedvault.fl.simulation import run_federation

    raw = {"seed": 5, "data": {"hospitals": 3}, "training": {"rounds": 2, "batch_size": 16},
           "privacy": {"target_epsilon": 3.0}, "aggregation": {"mode": "secagg"}}
    h = run_federation(from_dict(raw), baseline=False)
    assert h["privacy_relation"]["record"] == "replace_one"
    assert all(r["epsilon_relation"] == "replace_one" for r in h["rounds"])
    assert "site_metrics" not in h["rounds"][-1]  # not released by default
    assert {r["value"]: r["protection"] for r in h["releases"]}["feature_statistics"] == "dp"
    for led in h["privacy"].values():
        assert led["relation"] == "replace_one" and led["epsilon"] <= 3.0
        assert led["events"][0]["purpose"] == "feature_statistics" and led["events"][0]["round"] == 0
    rep = verify(h)
    assert rep.ok, rep.problems
    raw["privacy"]["reproducible"] = True
    rep = verify(run_federation(from_dict(raw), baseline=False))
    assert not rep.ok and rep.refusal is not None and "reproducible" in rep.refusal


def test_statistics_noise_is_a_csprng_stream_with_the_declared_variance():
    rng = stats.stats_generator(False, 0, 0)
    assert isinstance(rng, stats.StreamNormal)  # AES-CTR keyed by os.urandom, not a seeded PCG64
    U = np.zeros((10, 50_000))
    noised = stats.private_statistics(U, 2.0, rng)
    d = U.shape[1]
    sums, squares = noised[1 : 1 + d], noised[1 + d :]
    s = 2.0 * np.sqrt(2 * d)  # the declared std: noise_multiplier x the L2 sensitivity sqrt(2d) in [0, 1]^d
    assert float(np.std(sums)) == pytest.approx(s, rel=0.03) and np.std(squares) == pytest.approx(s, rel=0.03)
    assert abs(float(np.mean(sums))) < 5 * s / np.sqrt(d)
    other = stats.private_statistics(U, 2.0, stats.stats_generator(False, 0, 0))
    assert not np.allclose(other, noised)  # a fresh secret stream every time: nothing replayable
    again = stats.private_statistics(U, 2.0, stats.stats_generator(True, 0, 0))
    assert np.array_equal(again, stats.private_statistics(U, 2.0, stats.stats_generator(True, 0, 0)))
