"""Paillier: the key a hospital encrypts under is the study key, not the server's.

SECURITY.md Paillier: the server "holds only ciphertexts"; in holder mode the key holder "must not
collude with the server". A server that hands hospitals a public key of its own (it knows the secret)
in the round setup would decrypt every single upload — so a hospital must encrypt only under the key
it holds: its threshold share's key, or the public setup it pinned at the key ceremony. The refusal
must come before training (nothing spent).
"""

from __future__ import annotations

import dataclasses

import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected
from fedvault.protocols.paillier import PaillierParams, setup_keys
from fedvault.protocols.secagg import simulation_identities
from fedvault.secagg import keys as K
from fedvault.secagg.paillier import seeded_random


def _keys(mode: str, ids, label: bytes):
    p0 = PaillierParams(b"s", 0, tuple(sorted(ids.values())), min_clients=2, keys=mode, key_bits=512, clip=1.0)
    return setup_keys(p0, rng=seeded_random(label), holder=0 if mode == "holder" else None)


@pytest.mark.parametrize("mode", ["threshold", "holder"])
def test_a_hospital_refuses_to_encrypt_under_the_servers_own_key(mode):
    cfg = from_dict({"seed": 11, "data": {"hospitals": 4, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0, "standardise": "public"},
                     "aggregation": {"mode": "paillier", "keys": mode, "key_bits": 512}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    idents = simulation_identities(b"claims-key".ljust(32, b"\0"), [0, *ids.values()])
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    study, servers = _keys(mode, ids, b"study"), _keys(mode, ids, b"server")
    pin = {"paillier_public": study.public} if mode == "holder" else {}
    h = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1], key_share=study.shares.get(1),
                 **pin)
    clip = fd.hospitals[0].n * cfg.aggregation.update_clip
    w = models.get_vector(make())
    honest, _ = open_session(cfg, make_mode(cfg, ids, study.public), 1, "update", names, weights=w, clip=clip,
                             identity_keys=keys)
    forged = dataclasses.replace(honest, public=servers.public)
    with pytest.raises(SetupRejected, match="Paillier public key"):
        h.join(forged)
    assert h.ledger.events == ()  # refused before training: nothing spent
    assert h.join(honest) is not None and [e.round for e in h.ledger.events] == [1]
