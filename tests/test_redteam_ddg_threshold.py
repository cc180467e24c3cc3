"""Red team: client-level DP noise (distributed discrete Gaussian) was calibrated for the SecAgg
threshold ``t`` honest noise shares, but the declared threat model lets the server collude with
``C`` hospitals, who subtract their own noise: a sum the server unmasks is only guaranteed to hold
``min_sum = t - C + 1`` honest updates (complete graph, n = 10: t = 7, min_sum = 5). The ledger's
client-level ε then understated the loss against the adversary fedvault says it withstands."""

from __future__ import annotations

import numpy as np

from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.protocols.secagg import simulation_identities
from fedvault.secagg import keys as K


def test_client_level_noise_is_calibrated_for_the_honest_hospitals_the_guarantee_promises():
    n = 10
    cfg = from_dict({"seed": 1, "data": {"hospitals": n}, "privacy": {"noise_multiplier": 1.0,
                                                                      "client_noise_multiplier": 1.0},
                     "aggregation": {"mode": "secagg"}})
    ids = {f"h{k}": k + 1 for k in range(n)}
    idents = simulation_identities(b"ddg".ljust(32, b"\0"), ids.values())
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    setup, _ = open_session(cfg, make_mode(cfg, ids), 1, "update", list(ids), weights=np.zeros(20), clip=10.0,
                            identity_keys=keys)
    g = setup.params.guarantee()
    assert g.colluders >= 2 and g.min_sum < setup.params.t  # the case that matters
    assert setup.client_noise.threshold <= g.min_sum, (setup.client_noise.threshold, g.min_sum)
