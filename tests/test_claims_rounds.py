"""Round-level claims of README/SECURITY, attacked through the real engine.

* README history.json: "A round whose secure aggregation aborts ... nothing was revealed and the
  model is unchanged", and "ε still charged" (the demo output section).
* README ``[privacy] reproducible``: the protocols' secrets (masks, ephemeral keys, encryption
  nonces) come from the config seed *only* when ``reproducible`` is set — otherwise a party that
  knows the (public) config cannot replay a hospital's ephemeral keys or masks.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl.config import from_dict


def _cfg(**over):
    raw = {"seed": 7, "data": {"hospitals": 4}, "training": {"rounds": 1},
           "privacy": {"noise_multiplier": 1.0, "standardise": "public"}, "aggregation": {"mode": "secagg"}}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v}
    return from_dict(raw)


def test_an_aborted_round_reveals_nothing_keeps_the_model_and_still_charges(monkeypatch):
    """Every hospital but one vanishes after sharing its keys: the server cannot unmask, so it
    must learn no sum, keep the model it sent, and every hospital that trained stays charged."""
    from fedvault.fl.hospital import Hospital
    from fedvault.fl.models import get_vector
    from fedvault.fl.simulation import federate

    sent: dict[int, np.ndarray] = {}
    join = Hospital.join

    class Vanish:
        """The role of a hospital that trained and then lost its connection before its masked input."""

        def __init__(self, inner):
            self.inner = inner

        stage = property(lambda self: self.inner.stage)
        done = property(lambda self: False)

        def start(self):
            return list(self.inner.start())

        def receive(self, data):
            out = self.inner.receive(data)
            if self.inner.stage.name == "AWAIT_CONSISTENCY":  # it just produced its masked input ...
                return []  # ... which never arrives
            return out

    def joined(self, setup):
        role = join(self, setup)
        if setup.purpose != "update":
            return role
        sent[setup.round] = np.array(setup.weights)
        return role if self.name == "hospital_0" else Vanish(role)

    monkeypatch.setattr(Hospital, "join", joined)
    run = federate(_cfg(), baseline=False)
    (row,) = run.history["rounds"]
    assert row.get("aborted"), row
    assert row["participants"] == []
    assert 1 not in run.aggregates  # the server learned no sum
    np.testing.assert_array_equal(get_vector(run.model), sent[1])  # the model is the one it sent
    for h in run.hospitals:  # every hospital trained (and released masked shares): it stays charged
        assert [e.round for e in h.ledger.events if e.kind == "poisson_sampled_gaussian"] == [1], h.name
        assert row["epsilon"][h.name] > 0


def _advertised_keys(cfg) -> dict[int, bytes]:
    from fedvault.fl.simulation import federate

    transcript: list = []
    federate(cfg, baseline=False, transcript=transcript)
    keys = {}
    for direction, party, data in transcript:
        if direction == "up" and data[:4] == b"FVSA" and data[5] == 1:  # ADVERTISE_KEYS: c_pk ‖ s_pk ‖ commit
            keys[party] = bytes(data[32:128])
    assert keys, "no advertisement in the transcript"
    return keys


def test_protocol_secrets_are_fresh_unless_reproducible(monkeypatch):
    """Same config (same public seed) twice, and a server that reuses its session ids (it chooses
    them): the hospitals' ephemeral keys and graph commitments still differ unless
    ``privacy.reproducible`` is set — then (and only then) they replay."""
    import hashlib

    import fedvault.fl.engine as engine

    monkeypatch.setattr(engine, "session_id", lambda cfg, label: hashlib.sha256(label.encode()).digest()[:16])
    a, b = _advertised_keys(_cfg()), _advertised_keys(_cfg())
    assert a.keys() == b.keys() and all(a[i] != b[i] for i in a)
    ra, rb = _advertised_keys(_cfg(privacy={"reproducible": True})), _advertised_keys(_cfg(privacy={"reproducible": True}))
    assert ra == rb


def test_a_hospital_trains_at_most_once_per_round_even_under_a_new_session():
    """SECURITY (Flower deployments): "a (session, round) a hospital trained for is refused thereafter"
    — on the engine path too, and under a fresh session id: a server that restarts round 1 (new session,
    another model) would otherwise get a second, differently-noised update of the same round."""
    from fedvault.dp.errors import PrivacyError
    from fedvault.fl.engine import make_mode, open_session
    from fedvault.fl.models import get_vector
    from fedvault.fl.simulation import federate, simulation_identities
    from fedvault.secagg import keys as K

    cfg = _cfg()
    run = federate(cfg, baseline=False)
    h = run.hospitals[0]
    before = list(h.ledger.events)
    names = [x.name for x in run.hospitals]
    ids = {x.name: x.party for x in run.hospitals}
    keys = {i: K.public_bytes(k) for i, k in simulation_identities(cfg, ids).items()}
    w = get_vector(run.model)
    again, _ = open_session(cfg, make_mode(cfg, ids), 1, "update", names, weights=w,
                            clip=max(x.data.n for x in run.hospitals) * cfg.aggregation.update_clip, identity_keys=keys)
    with pytest.raises(PrivacyError, match="at most once per round"):
        h.join(again)
    assert list(h.ledger.events) == before
