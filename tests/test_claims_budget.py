"""README "Running on Flower": "A proposal that does not fit a hospital (model size; clip below
max-records × update-clip) is refused when the round is advertised, before anyone trains or is
charged" — here on the round engine's hospital (the same ``Hospital.join`` the Flower engine node
runs). A server that proposes a per-coordinate clip too small for the hospital's weighted update
would otherwise make it train, spend ε, and then fail to encode: a budget drain with no release.
"""

from __future__ import annotations

import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected
from fedvault.protocols.secagg import simulation_identities
from fedvault.secagg import keys as K


@pytest.mark.parametrize("mode", ["secagg", "paillier"])
def test_a_clip_too_small_for_the_update_is_refused_before_training(mode):
    agg = {"mode": mode, **({"key_bits": 512} if mode == "paillier" else {})}
    cfg = from_dict({"seed": 11, "data": {"hospitals": 4, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0, "standardise": "public"}, "aggregation": agg})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    idents = simulation_identities(b"claims-budget".ljust(32, b"\0"), ids.values())
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    public = None
    if mode == "paillier":
        import os

        from fedvault.protocols.paillier import PaillierParams, setup_keys

        p0 = PaillierParams(session_id=b"s", round=0, clients=tuple(sorted(ids.values())), min_clients=2,
                            keys="holder", key_bits=512, clip=1.0)
        public = setup_keys(p0, rng=os.urandom, holder=0).public
    h = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1, identity=idents[1])
    w = models.get_vector(make())
    small, _ = open_session(cfg, make_mode(cfg, ids, public), 1, "update", names, weights=w, clip=1.0,
                            identity_keys=keys)
    with pytest.raises(SetupRejected, match="clip"):
        h.join(small)
    assert h.ledger.events == ()  # nothing trained, nothing spent
    fits, _ = open_session(cfg, make_mode(cfg, ids, public), 1, "update", names, weights=w,
                           clip=fd.hospitals[0].n * cfg.aggregation.update_clip, identity_keys=keys)
    assert h.join(fits) is not None and [e.round for e in h.ledger.events] == [1]
