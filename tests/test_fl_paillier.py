"""`aggregation = "paillier"` in a federation: both key modes give the plaintext sum."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl.aggregation import PaillierAggregator, PlaintextAggregator
from fedvault.fl.config import from_dict


@pytest.mark.parametrize("keys", ["holder", "threshold"])
def test_paillier_aggregator_matches_plaintext(keys):
    cfg = from_dict({"aggregation": {"mode": "paillier", "keys": keys, "key_bits": 512, "slot_bits": 24}})
    names = [f"h{i}" for i in range(4)]
    rng = np.random.default_rng(0)
    inputs = {n: np.concatenate([rng.uniform(-50, 50, size=40), [float(rng.integers(20, 100))]]) for n in names}
    agg = PaillierAggregator(cfg, names)
    res = agg.aggregate(1, inputs, clip=128.0)
    exact = PlaintextAggregator().aggregate(1, inputs, clip=128.0).total
    # quantisation: each summand within clip / (2^b - 1)
    assert np.abs(res.total - exact).max() <= 4 * 128.0 / (2**24 - 1)
    assert sorted(res.contributors) == names
    assert set(res.upload_bytes) == set(names) and all(b > 0 for b in res.upload_bytes.values())
    assert {"client", "server", "decrypt"} <= set(res.seconds)  # client: encrypt + prove; server: verify + sum
    # a second round reuses the study's keys
    res2 = agg.aggregate(2, {n: inputs[n] for n in names[:3]}, clip=128.0)
    assert sorted(res2.contributors) == names[:3]


def test_paillier_federation_runs_and_records_costs():
    from fedvault.fl.simulation import run_federation

    cfg = from_dict({
        "seed": 2, "data": {"hospitals": 3},
        # reproducible: this test checks that training works, so its DP noise must not make it flaky
        "training": {"rounds": 2}, "privacy": {"noise_multiplier": 1.0, "reproducible": True},
        "aggregation": {"mode": "paillier", "keys": "holder", "key_bits": 512},
    })
    h = run_federation(cfg, baseline=False)
    r = h["rounds"][-1]
    assert len(r["participants"]) == 3
    assert all(b > 0 for b in r["upload_bytes"].values())
    assert {"client", "server", "decrypt", "wall"} <= set(r["protocol_seconds"])
    assert h["final"]["metrics"]["accuracy"] > 0.8
