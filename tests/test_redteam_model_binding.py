"""Red team: over the engine path (simulation, ``FlowerTransport``) nothing bound the global
model to the round's protocol session, so a server could show one hospital a different
(crafted) model and still complete the SecAgg round with it (issue 12 item 7; SECURITY.md
claims hospitals shown different models refuse each other's keys). Before the fix the
round below completed with all four contributors."""

from __future__ import annotations

import dataclasses

import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import bound_session_id, make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected, model_digest
from fedvault.protocols.driver import run_in_memory
from fedvault.protocols.errors import ProtocolError
from fedvault.protocols.secagg import simulation_identities
from fedvault.secagg import keys as K


def _round():
    cfg = from_dict({"seed": 11, "data": {"hospitals": 4, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0}, "aggregation": {"mode": "secagg"}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    idents = simulation_identities(b"redteam-model".ljust(32, b"\0"), ids.values())
    ikeys = {i: K.public_bytes(k) for i, k in idents.items()}
    hs = [Hospital(h, cfg, make, i, 1.0, party=i + 1, identity=idents[i + 1]) for i, h in enumerate(fd.hospitals)]
    w = models.get_vector(make())
    clip = max(h.n for h in fd.hospitals) * cfg.aggregation.update_clip  # what the engine sends (records × update_clip)
    setup, server = open_session(cfg, make_mode(cfg, ids), 1, "update", names, weights=w, clip=clip,
                                 identity_keys=ikeys)
    return hs, setup, server, w


def test_a_hospital_refuses_a_model_its_session_is_not_bound_to():
    hs, setup, server, w = _round()
    crafted = w + 5.0
    victim = dataclasses.replace(setup, weights=crafted, model_sha256=model_digest(crafted))
    with pytest.raises(SetupRejected, match="bound"):
        hs[0].join(victim)
    assert hs[0].ledger.events == ()  # refused before training


def test_a_split_model_round_never_completes_with_the_victim():
    hs, setup, server, w = _round()
    crafted = w + 5.0
    p = dataclasses.replace(setup.params, session_id=bound_session_id(setup.params.session_id[:16],
                                                                      model_digest(crafted)))
    victim = dataclasses.replace(setup, weights=crafted, model_sha256=model_digest(crafted), params=p)
    roles = {1: hs[0].join(victim), **{i + 1: hs[i].join(setup) for i in range(1, 4)}}
    try:
        run_in_memory(server, roles)
    except ProtocolError:
        return  # aborted: nothing released
    assert 1 not in server.result().contributors


def test_the_honest_round_completes():
    hs, setup, server, w = _round()
    run_in_memory(server, {i + 1: h.join(setup) for i, h in enumerate(hs)})
    assert server.result().contributors == (1, 2, 3, 4)
