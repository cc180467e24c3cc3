"""The PKI behind SecAgg and Paillier (SPEC §1: each hospital holds "the identity public keys of the
whole cohort (a PKI)"): a hospital trusts identity keys from its own roster, never from the server.

Attack: the server swaps every other hospital's identity key in the round setup for keys it holds
(sybils). The victim would then mask (or encrypt) with parties the server plays itself, and the
"sum" of the round is the victim's update. A hospital that pinned its roster refuses before training.
"""

from __future__ import annotations

import dataclasses

import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected
from fedvault.protocols.secagg import simulation_identities
from fedvault.secagg import keys as K


def test_a_hospital_with_its_roster_refuses_a_round_of_sybils():
    cfg = from_dict({"seed": 11, "data": {"hospitals": 4, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0, "standardise": "public"}, "aggregation": {"mode": "secagg"}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    real = {i: K.public_bytes(k) for i, k in simulation_identities(b"claims-roster".ljust(32, b"\0"), ids.values()).items()}
    sybil = {i: K.public_bytes(k) for i, k in simulation_identities(b"server-sybils".ljust(32, b"\0"), ids.values()).items()}
    idents = simulation_identities(b"claims-roster".ljust(32, b"\0"), ids.values())
    clip = max(h.n for h in fd.hospitals) * cfg.aggregation.update_clip
    honest, _ = open_session(cfg, make_mode(cfg, ids), 1, "update", names, weights=models.get_vector(make()),
                             clip=clip, identity_keys=real)
    forged = dataclasses.replace(honest, identity_keys={**sybil, 1: real[1]})  # everyone but the victim
    pinned = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1], roster_keys=real)
    with pytest.raises(SetupRejected, match="roster"):
        pinned.join(forged)
    assert pinned.ledger.events == ()  # nothing trained, nothing spent
    assert pinned.join(honest) is not None
    # Residual (documented): without a pinned roster the hospital trusts the transport's keys.
    trusting = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1])
    assert trusting.join(forged) is not None
