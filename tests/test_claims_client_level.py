"""SECURITY.md "Client-level DP": the noise "is calibrated for the fewest *honest* hospitals in any
sum the server can unmask under the declared threat model (the guarantee's ``min_sum``)".

The declared threat model is the hospital's own ``[threat_model]``, not the server's claim. A
server that proposes the same graph and threshold but claims fewer colluders raises ``min_sum``
to ``t``, so every hospital would add the noise for ``t`` honest shares (less) and record a
client-level ε that understates the loss against the adversary the hospital declared.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected, noise_threshold, plan_client_noise
from fedvault.protocols.secagg import SecAggParams, simulation_identities
from fedvault.protocols.secagg.threat import ThreatModel
from fedvault.secagg import keys as K


def _study():
    n = 10
    cfg = from_dict({"seed": 2, "data": {"hospitals": n, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0, "client_noise_multiplier": 1.0, "standardise": "public"},
                     "aggregation": {"mode": "secagg"}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {nm: i + 1 for i, nm in enumerate(names)}
    idents = simulation_identities(b"claims-ddg".ljust(32, b"\0"), ids.values())
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    setup, _ = open_session(cfg, make_mode(cfg, ids), 1, "update", names, weights=models.get_vector(make()),
                            clip=cfg.aggregation.update_clip, identity_keys=keys)
    hospital = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1])
    return cfg, setup, hospital


def test_a_server_claiming_fewer_colluders_cannot_shrink_the_client_level_noise():
    cfg, honest, h = _study()
    p = honest.params
    g = p.guarantee()
    assert g.colluders == 3 and g.min_sum < p.t  # n = 10 complete, default C = 3: t = 7, min_sum = 5
    forged = SecAggParams(session_id=p.session_id, round=p.round, clients=p.clients, graph=p.graph, bits=p.bits,
                          clip=p.clip, frac_bits=p.frac_bits, threshold=p.t,
                          threat_model=ThreatModel(colluders=0)).with_dim(p.dim)
    assert forged.t == p.t and forged.guarantee().min_sum > g.min_sum  # same graph and t, fewer colluders
    less = plan_client_noise(cfg.privacy.client_noise_multiplier, honest.update_clip, p.bits, len(p.clients),
                             noise_threshold(forged), len(honest.weights))
    real = lambda noise: noise.sigma_client / 2.0 ** noise.frac_bits  # noqa: E731  (σ in model units)
    assert real(less) < 0.9 * real(honest.client_noise)  # what the server gains
    with pytest.raises(SetupRejected, match="colluders"):
        h.join(dataclasses.replace(honest, params=forged, client_noise=less))
    assert h.ledger.events == ()  # refused before training: nothing spent


def test_the_honest_client_level_setup_is_accepted():
    _, honest, h = _study()
    role = h.join(honest)
    assert role is not None
    (ddg,) = [e for e in h.ledger.events if e.kind == "distributed_discrete_gaussian"]
    assert ddg.threshold == honest.params.guarantee().min_sum
