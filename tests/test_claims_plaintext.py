"""Claims about plaintext aggregation, attacked as a malicious hospital would.

SECURITY.md, "Not protected (yet)": "Malicious hospitals can poison the model: in
``plaintext`` mode within their clipped update (L2 clipping bounds their influence ...)".
The server sees every weighted update ``[n_k Δ_k, n_k]`` in plaintext mode, so it can hold a
participant to that bound; these tests play a participant that does not clip and lies about
its record count, and check that the global model still moves by at most what honest,
clipped updates allow: ``server_lr · update_clip`` in L2 (a weighted mean of vectors of
norm ≤ update_clip has norm ≤ update_clip).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl.config import from_dict


def _cfg() -> object:
    return from_dict({"seed": 5, "data": {"hospitals": 3}, "training": {"rounds": 1},
                      "privacy": {"noise_multiplier": 1.0}, "aggregation": {"mode": "plaintext"}})


class Mallory:
    """An extra participant that sends ``make(weights)`` instead of a clipped, weighted update."""

    names = ["mallory"]

    def __init__(self, make):
        self.make, self.seen = make, {}

    def __call__(self, round: int, weights: np.ndarray):
        self.seen[round] = np.array(weights, dtype=np.float64)
        return {"mallory": self.make(weights)}


def _run(make):
    from fedvault.fl.models import get_vector
    from fedvault.fl.simulation import federate

    cfg = _cfg()
    mallory = Mallory(make)
    run = federate(cfg, extra_participants=mallory, baseline=False)
    before, after = mallory.seen[1], get_vector(run.model)
    return cfg, run, float(np.linalg.norm(after - before))


def _honest_sum_of_weights() -> float:
    from fedvault.fl import data as data_mod

    return float(sum(h.n for h in data_mod.load(_cfg()).hospitals))


@pytest.mark.parametrize("attack", ["unclipped", "negative_weight", "zero_weight"])
def test_a_malicious_plaintext_participant_moves_the_model_at_most_by_a_clipped_update(attack):
    """SECURITY.md: in plaintext mode a malicious hospital's influence is bounded by L2 clipping.

    ``unclipped``: a delta of norm far above ``update_clip`` with an honest-looking weight;
    ``negative_weight``: a weight that cancels the honest weights, so the server divides the
    honest sum by 1 instead of Σn_k; ``zero_weight``: a large delta that claims no records.
    Either the server refuses the upload (and names the sender) or the step stays bounded.
    """
    total_n = _honest_sum_of_weights()

    def make(weights: np.ndarray) -> np.ndarray:
        d = weights.size
        if attack == "unclipped":
            return np.concatenate([np.full(d, 1000.0), [50.0]])  # ||Δ|| = 20·sqrt(d) ≫ update_clip
        if attack == "negative_weight":
            return np.concatenate([np.zeros(d), [1.0 - total_n]])  # Σ weights = 1
        return np.concatenate([np.full(d, 500.0), [0.0]])

    cfg, run, moved = _run(make)
    row = run.history["rounds"][0]
    bound = cfg.training.server_lr * cfg.aggregation.update_clip
    assert moved <= bound * (1 + 1e-9), (attack, moved, bound)
    if "mallory" in row["participants"]:
        pytest.fail(f"{attack}: a malicious update entered the sum ({row['participants']})")
    assert "mallory" in (row.get("blamed") or {}), row.get("blamed")


def test_an_honest_extra_participant_at_the_clip_is_still_summed():
    """The bound refuses nothing an honest hospital sends: ‖nΔ‖ = n·update_clip exactly, n = weight cap."""
    from fedvault.fl import data as data_mod

    fd = data_mod.load(_cfg())
    cap = float(2 ** np.ceil(np.log2(max(h.n for h in fd.hospitals) + 1)))

    def make(weights: np.ndarray) -> np.ndarray:
        u = np.ones(weights.size) / np.sqrt(weights.size)
        return np.concatenate([cap * 10.0 * u, [cap]])  # update_clip = 10 (default)

    cfg, run, moved = _run(make)
    row = run.history["rounds"][0]
    assert "mallory" in row["participants"] and not row.get("blamed")
    assert moved <= cfg.training.server_lr * cfg.aggregation.update_clip * (1 + 1e-9)


def test_whatever_the_participants_send_the_accepted_weighted_mean_is_a_clipped_update():
    """Property (hypothesis): over random uploads — honest ones and arbitrary ones — the weighted mean
    of what the bounded server accepts has L2 norm ≤ update_clip."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fedvault.fl.engine import BoundedUpdateServer
    from fedvault.protocols.errors import AbortError, ProtocolError
    from fedvault.protocols.plaintext import PlaintextClient, PlaintextParams, PlaintextServer

    clip, cap, d = 10.0, 64.0, 5
    vec = st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=d + 1, max_size=d + 1)

    @settings(max_examples=150, deadline=None)
    @given(st.lists(vec, min_size=2, max_size=6))
    def prop(uploads):
        ids = tuple(range(1, len(uploads) + 1))
        params = PlaintextParams(b"claims", 1, ids, clip=clip * cap)
        server = BoundedUpdateServer(PlaintextServer(params), update_clip=clip, weight_cap=cap)
        for i, v in zip(ids, uploads):
            (up,) = PlaintextClient(params, i, np.array(v, dtype=np.float64)).start()
            try:
                server.receive(up.encode())
            except ProtocolError:
                pass
        try:
            server.advance()
        except AbortError:  # fewer accepted uploads than min_clients: nothing is summed
            return
        total = np.sum(list(server.individual_vectors().values()), axis=0)
        assert total[-1] >= 1.0
        assert np.linalg.norm(total[:-1] / total[-1]) <= clip * (1 + 1e-6)

    prop()
