"""Red team: a malicious server proposes protocol parameters weaker than the hospital's own config.

Over Flower (``fl.integrations.flower.transport.setup_from``) a hospital rebuilds the
round's protocol parameters from the *server's* record: the threat model, threshold and
cohort in it are the server's claim.  Before the fix ``Hospital.join`` checked the model
hash, protocol, clip and client noise only, and trained and masked its update for

* SecAgg with a threshold derived from "0 colluders" while the hospital's config declares
  one (complete graph, n = 6: t = 3 instead of 4, so 2t <= d + C and the split view works
  with that one colluder), and
* a cohort of two (the victim and a colluder: the "sum" is the victim's update).
"""

from __future__ import annotations

import dataclasses

import numpy as np

import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected
from fedvault.protocols.secagg import SecAggParams, simulation_identities
from fedvault.protocols.secagg.threat import ThreatModel
from fedvault.secagg import keys as K


def _study(mode: str = "secagg"):
    agg = {"mode": mode, **({"key_bits": 512} if mode == "paillier" else {})}
    cfg = from_dict({"seed": 11, "data": {"hospitals": 6, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0}, "aggregation": agg, "threat_model": {"colluders": 1}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    idents = simulation_identities(b"redteam-identities".ljust(32, b"\0"), ids.values())
    ikeys = {i: K.public_bytes(k) for i, k in idents.items()}
    hospital = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1])
    return cfg, make, names, ids, ikeys, hospital


def test_secagg_threshold_weaker_than_the_hospitals_threat_model_is_refused():
    cfg, make, names, ids, ikeys, h = _study()
    mode = make_mode(cfg, ids)
    honest, _ = open_session(cfg, mode, 1, "update", names, weights=models.get_vector(make()), clip=1000.0,
                             identity_keys=ikeys)
    assert honest.params.t == 4  # C = 1, d = 5: 2t >= d + C + 1
    p = honest.params
    weak = SecAggParams(session_id=p.session_id, round=p.round, clients=p.clients, graph="complete", bits=p.bits,
                        clip=p.clip, threat_model=ThreatModel(colluders=0)).with_dim(p.dim)
    assert weak.t == 3 and 2 * weak.t <= weak.effective_degree + 1  # split view with one colluder
    with pytest.raises(SetupRejected, match="threat model"):
        h.join(dataclasses.replace(honest, params=weak))
    assert h.ledger.events == ()  # refused before training: nothing spent


def test_secagg_cohort_of_two_is_refused():
    cfg, make, names, ids, ikeys, h = _study()
    mode = make_mode(cfg, ids)
    honest, _ = open_session(cfg, mode, 1, "update", names, weights=models.get_vector(make()), clip=1000.0,
                             identity_keys=ikeys)
    p = honest.params
    pair = SecAggParams(session_id=p.session_id, round=p.round, clients=(1, 2), graph="complete", bits=p.bits,
                        clip=p.clip).with_dim(p.dim)
    bad = dataclasses.replace(honest, params=pair, parties={names[0]: 1, names[1]: 2}, contributors=frozenset({1, 2}))
    with pytest.raises(SetupRejected):
        h.join(bad)
    assert h.ledger.events == ()


def test_the_honest_setup_is_still_accepted():
    cfg, make, names, ids, ikeys, h = _study()
    mode = make_mode(cfg, ids)
    honest, _ = open_session(cfg, mode, 1, "update", names, weights=models.get_vector(make()), clip=1000.0,
                             identity_keys=ikeys)
    role = h.join(honest)
    assert role.start()  # advertises its keys


# -- the Paillier key holder judges min_clients by its own config (issue 12, Paillier holder) -----------------
def _holder_study(tmp_path):
    """Six hospitals, Paillier with a key holder; the consortium's config says training.min_clients = 4."""
    import os

    from fedvault.fl.hospital import KeyHolder
    from fedvault.protocols.paillier import PaillierParams, setup_keys

    cfg = from_dict({"seed": 5, "data": {"hospitals": 6}, "privacy": {"enabled": False},
                     "training": {"min_clients": 4}, "aggregation": {"mode": "paillier", "key_bits": 512}})
    names = [f"h{i}" for i in range(1, 7)]
    ids = {n: i for i, n in enumerate(names, start=1)}
    idents = simulation_identities(b"redteam-holder".ljust(32, b"\0"), [0, *ids.values()])
    ikeys = {i: K.public_bytes(k) for i, k in idents.items()}
    p0 = PaillierParams(session_id=b"setup", round=0, clients=tuple(ids.values()), min_clients=4, keys="holder",
                        key_bits=512)
    ks = setup_keys(p0, rng=os.urandom, holder=0)
    holder = KeyHolder(0, ks.holder_key, idents[0], state_dir=tmp_path,
                       min_clients=max(2, cfg.training.min_clients))
    return cfg, names, ids, ikeys, ks, holder


def test_paillier_key_holder_refuses_a_lowered_min_clients(tmp_path):
    cfg, names, ids, ikeys, ks, holder = _holder_study(tmp_path)
    mode = make_mode(cfg, ids, ks.public)
    honest, _ = open_session(cfg, mode, 1, "update", names, weights=np.zeros(4), clip=1.0, identity_keys=ikeys)
    assert honest.params.min_clients == 4
    # the server's record says min_clients = 2: the holder would open the sum of a victim and one colluder
    low = dataclasses.replace(honest, params=dataclasses.replace(honest.params, min_clients=2))
    with pytest.raises(SetupRejected, match=r"min_clients = 2 .*needs min_clients >= 4"):
        holder.join(low)
    # a server that picks a cohort of two (a victim and a colluder) is refused too, whatever it claims
    pair, _ = open_session(cfg, mode, 2, "update", names[:2], weights=np.zeros(4), clip=1.0, identity_keys=ikeys)
    assert pair.params.min_clients == 2
    with pytest.raises(SetupRejected, match="cohort of 2 .*at least 4"):
        holder.join(pair)
    # the honest setup is accepted: the holder's decryption role awaits the server's request
    assert holder.join(honest) is not None


def test_paillier_key_holder_default_and_invalid_policy(tmp_path):
    from fedvault.fl.hospital import KeyHolder

    cfg, names, ids, ikeys, ks, _ = _holder_study(tmp_path)
    assert KeyHolder(0, ks.holder_key, None).min_clients == 2  # the config default, never below the protocol's 2
    with pytest.raises(SetupRejected, match=">= 2"):
        KeyHolder(0, ks.holder_key, None, min_clients=1)


def test_paillier_threshold_share_holder_hospital_refuses_a_lowered_min_clients():
    """The hospitals holding threshold key shares already judge min_clients by their own config
    (``Hospital._check_protocol_policy``): a regression test next to the key holder's."""
    import os

    from fedvault.protocols.paillier import PaillierParams, setup_keys

    cfg = from_dict({"seed": 11, "data": {"hospitals": 5, "min_records": 20},
                     "training": {"rounds": 1, "min_clients": 4}, "privacy": {"noise_multiplier": 1.0},
                     "aggregation": {"mode": "paillier", "keys": "threshold", "key_bits": 512}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    idents = simulation_identities(b"redteam-threshold".ljust(32, b"\0"), ids.values())
    ikeys = {i: K.public_bytes(k) for i, k in idents.items()}
    p0 = PaillierParams(session_id=b"setup", round=0, clients=tuple(ids.values()), min_clients=4, keys="threshold",
                        key_bits=512)
    ks = setup_keys(p0, rng=os.urandom)
    h = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1], key_share=ks.shares[1])
    mode = make_mode(cfg, ids, ks.public)
    honest, _ = open_session(cfg, mode, 1, "update", names, weights=models.get_vector(make()), clip=1000.0,
                             identity_keys=ikeys)
    assert honest.params.min_clients == 4
    low = dataclasses.replace(honest, params=dataclasses.replace(honest.params, min_clients=2))
    with pytest.raises(SetupRejected, match="min_clients >= 4"):
        h.join(low)
    assert h.ledger.events == ()  # refused before training: nothing spent
