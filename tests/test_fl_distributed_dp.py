"""Client-level DP inside SecAgg: the server's decoded sum carries at least the target noise."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl.aggregation import SecAggAggregator
from fedvault.fl.config import from_dict
from fedvault.fl.errors import ConfigError


class ScriptedDrops(SecAggAggregator):
    """The same aggregator with a fixed dropout pattern."""

    def __init__(self, cfg, names, drops):
        super().__init__(cfg, names)
        self.fixed = drops

    def _drops(self, ids, stages):
        return self.fixed


def noise_only_sums(drops, rounds=3, d=4000, n=6, z=1.0, C=0.5):
    cfg = from_dict({
        "privacy": {"noise_multiplier": 1.0, "client_noise_multiplier": z},
        "aggregation": {"mode": "secagg", "update_clip": C, "threshold": 3},
        "threat_model": {"colluders": 0},  # t = 3 of 5 neighbours is safe only without colluders
    })
    names = [f"h{i}" for i in range(n)]
    agg = ScriptedDrops(cfg, names, drops)
    out = []
    for r in range(1, rounds + 1):
        inputs = {k: np.concatenate([np.zeros(d), [1.0]]) for k in names}  # noise only
        res = agg.aggregate(r, inputs, clip=C)
        assert res.noise is not None and res.noise.wraparound_probability < 1e-9
        out.append((res.total, res.noise, len(res.contributors)))
    return out, z * C


def test_noise_variance_matches_target_with_everyone():
    out, target = noise_only_sums({})
    for total, plan, survivors in out:
        assert survivors == 6 and total[-1] == pytest.approx(6.0, abs=1e-6)
        var = total[:-1].var()
        expected = target**2 * survivors / plan.threshold  # each client adds target^2 / t
        # sample variance of d = 4000 normals: relative sd sqrt(2/d) ~ 2.2%; allow 5 sd
        assert var == pytest.approx(expected, rel=5 * np.sqrt(2 / 4000))


def test_noise_never_below_target_down_to_the_threshold():
    # 6 clients, t = 3: two vanish before their masked input; 4 remain (each keeps t live
    # neighbours, the fewest the protocol accepts; the noise is sized for t).
    out, target = noise_only_sums({"masked_input": [1, 2]})
    for total, plan, survivors in out:
        assert plan.threshold == 3 and survivors == 4
        var = total[:-1].var()
        expected = target**2 * survivors / plan.threshold
        assert expected >= target**2 - 1e-12
        assert var == pytest.approx(expected, rel=5 * np.sqrt(2 / 4000))
        assert var >= target**2 * (1 - 5 * np.sqrt(2 / 4000))


def test_client_level_dp_refused_without_secure_aggregation():
    with pytest.raises(ConfigError, match="client_noise_multiplier"):
        from_dict({"privacy": {"client_noise_multiplier": 1.0}, "aggregation": {"mode": "plaintext"}})


def test_federation_reports_both_privacy_levels():
    from fedvault.fl.simulation import run_federation

    cfg = from_dict({
        "seed": 1, "data": {"hospitals": 6, "min_records": 30},
        "training": {"rounds": 2, "client_fraction": 0.9},
        "privacy": {"noise_multiplier": 1.0, "client_noise_multiplier": 1.0},
        "aggregation": {"mode": "secagg", "update_clip": 1.0},
    })
    h = run_federation(cfg, baseline=False)
    cl = h["client_level"]
    assert len(cl["events"]) == len(h["rounds"]) >= 1
    assert 0 < cl["epsilon"] <= cl["epsilon_vs_server"]
    assert all(r["client_epsilon"] > 0 for r in h["rounds"])
    assert h["privacy"]  # record-level ledgers too
