"""The weight coordinate under secure aggregation, attacked by a malicious participant.

SECURITY.md, Paillier: a malicious hospital moves "each coordinate of the decoded sum ... anywhere in
[−K·clip, K·clip] — up to K times an honest hospital's influence"; "Malicious hospitals can poison
the model ... in paillier mode as stated in the Paillier bullet". The strategy divides the decoded
update sum by its last coordinate, the summed record counts Σn_k. A participant that encodes a
weight of 1 − Σn_k (well inside [−clip, clip]) makes that divisor 1, so every honest update is
multiplied by Σn_k: the model moves hundreds of times further than any clipped update allows,
though each decoded coordinate stayed in range. The record counts are released exactly (history
``hospitals``), so the server knows Σn_k of the contributors: it must never divide by a decoded
weight that differs from them (nor let the hospital veto the round unattributed).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl.config import from_dict


def _cfg(mode: str):
    agg = {"mode": "secagg" if mode == "secagg-client-level" else mode}
    privacy = {"noise_multiplier": 1.0, "standardise": "public"}
    if mode == "paillier":
        agg.update(keys="holder", key_bits=512)
    if mode == "secagg-client-level":  # unweighted [Δ_k, 1]: the divisor is the number of contributors
        privacy["client_noise_multiplier"] = 0.01
    return from_dict({"seed": 5, "data": {"hospitals": 3}, "training": {"rounds": 1},
                      "privacy": privacy, "aggregation": agg})


def _flower(parties, **kw):
    from fedvault.fl.integrations.flower.local import FlowerInProcess

    return FlowerInProcess(parties, **kw)


def _run_with_malicious_hospital_0(monkeypatch, cfg, weight_of, transport=None):
    """hospital_0 trains as usual but contributes ``[0, ..., 0, weight_of(others' Σn)]``."""
    from fedvault.fl.hospital import Hospital, LocalResult
    from fedvault.fl.simulation import federate

    fit, sent = Hospital.fit, {}

    def malicious_fit(self, global_vec, round, **kw):
        res = fit(self, global_vec, round, **kw)
        sent[round] = np.array(global_vec)
        if self.name != "hospital_0":
            return res
        others = float(sum(h.n for h in run_hospitals if h.name != "hospital_0"))
        vec = np.concatenate([np.zeros(global_vec.size), [weight_of(others)]])
        return LocalResult(vector=vec, steps=res.steps, epsilon=res.epsilon, loss=res.loss)

    from fedvault.fl import data as data_mod

    run_hospitals = data_mod.load(cfg).hospitals
    monkeypatch.setattr(Hospital, "fit", malicious_fit)
    return federate(cfg, baseline=False, transport=transport), sent


@pytest.mark.parametrize("mode", ["paillier", "secagg", "secagg-client-level", "secagg-over-flower"])
def test_a_hospital_cannot_cancel_the_weights_and_amplify_every_update(monkeypatch, mode):
    from fedvault.fl.models import get_vector

    transport = _flower if mode == "secagg-over-flower" else None
    mode = "secagg" if mode == "secagg-over-flower" else mode
    cfg = _cfg(mode)
    client_level = cfg.privacy.client_noise_multiplier is not None
    run, sent = _run_with_malicious_hospital_0(monkeypatch, cfg,
                                               lambda others: (-1.99 if client_level else 1.0 - others), transport)
    (row,) = run.history["rounds"]
    moved = float(np.linalg.norm(get_vector(run.model) - sent[1]))
    # Honest hospitals' clipped updates move the model by at most server_lr · update_clip; Mallory's
    # own vector part is zero, so anything beyond that bound is the amplified honest sum.
    bound = cfg.training.server_lr * cfg.aggregation.update_clip
    assert moved <= bound * (1 + 1e-6), (mode, moved, bound, row.get("aborted"))
    # detected (not attributable: nobody is blamed), and the update divided by the released counts
    assert not row.get("aborted") and "weight_check" in row, row.get("aborted")
    assert row["weight_check"]["expected"] != pytest.approx(row["weight_check"]["decoded"])
    assert run.aggregates[1][-1] == row["weight_check"]["expected"]


@pytest.mark.parametrize("mode", ["paillier", "secagg"])
def test_an_honest_weight_passes_the_check(monkeypatch, mode):
    """The check tolerates the encoding's rounding: an honest round (hospital_0 sending its true
    count with a zero delta) completes."""
    cfg = _cfg(mode)
    from fedvault.fl import data as data_mod

    n0 = next(h.n for h in data_mod.load(cfg).hospitals if h.name == "hospital_0")
    run, _ = _run_with_malicious_hospital_0(monkeypatch, cfg, lambda others: float(n0))
    (row,) = run.history["rounds"]
    assert not row.get("aborted") and "hospital_0" in row["participants"] and "weight_check" not in row
