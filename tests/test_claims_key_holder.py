"""Paillier holder mode against a server that supplies the PKI (SPEC P1: every party holds "the
identity public keys of every party (a PKI)"; SECURITY: the server obtains sums "of at least
min_clients distinct hospitals' uploads").

Attack on the engine path: the server lists a cohort of the victim and two "hospitals" whose identity
keys it made itself (sybils), uploads zeros in their names with valid proofs and signatures, and asks
the key holder to open the sum — which is the victim's update alone. The key holder counts
``min_clients`` distinct signed uploads because it takes the identity keys from the setup. A key holder
that pins its roster (like ``Hospital(roster_keys=...)``) refuses the setup before decrypting anything.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import KeyHolder, SetupRejected, client_role
from fedvault.protocols.driver import run_in_memory
from fedvault.protocols.paillier import MemoryDecryptLog, PaillierParams, setup_keys
from fedvault.protocols.secagg import simulation_identities
from fedvault.secagg import keys as K
from fedvault.secagg.paillier import seeded_random


def _round():
    cfg = from_dict({"seed": 3, "data": {"hospitals": 3}, "privacy": {"noise_multiplier": 1.0},
                     "aggregation": {"mode": "paillier", "keys": "holder", "key_bits": 512}})
    ids = {"victim": 1, "h2": 2, "h3": 3}
    real = simulation_identities(b"claims-holder-real".ljust(32, b"\0"), [0, 1, 2, 3])
    sybils = simulation_identities(b"claims-holder-sybil".ljust(32, b"\0"), [2, 3])
    p0 = PaillierParams(b"s", 0, (1, 2, 3), min_clients=2, keys="holder", key_bits=512, clip=1.0)
    ks = setup_keys(p0, rng=seeded_random(b"claims-holder"), holder=0)
    real_keys = {i: K.public_bytes(k) for i, k in real.items()}
    forged_keys = {**real_keys, **{i: K.public_bytes(k) for i, k in sybils.items()}}
    dim = 5
    setup, server = open_session(cfg, make_mode(cfg, ids, ks.public), 1, "update", list(ids),
                                 weights=np.zeros(dim - 1), clip=100.0, identity_keys=forged_keys)
    return setup, server, ks, real, sybils, real_keys, dim


def test_an_unpinned_key_holder_opens_a_sum_of_the_victim_and_sybils():
    """Documents the residual: without a roster the holder trusts the setup's identity keys."""
    setup, server, ks, real, sybils, _, dim = _round()
    victim_x = np.array([3.0, -1.5, 0.25, 7.0, 40.0])
    parties = {1: client_role(setup, 1, victim_x, None, real[1]),
               2: client_role(setup, 2, np.zeros(dim), None, sybils[2]),
               3: client_role(setup, 3, np.zeros(dim), None, sybils[3]),
               0: KeyHolder(0, ks.holder_key, real[0], decrypt_log=MemoryDecryptLog()).join(setup)}
    run_in_memory(server, parties)
    res = server.result()
    assert sorted(res.contributors) == [1, 2, 3]
    np.testing.assert_allclose(res.total, victim_x, atol=1e-3)  # the victim's update, alone


def test_a_key_holder_with_its_roster_refuses_sybil_identity_keys():
    setup, _, ks, real, _, real_keys, _ = _round()
    holder = KeyHolder(0, ks.holder_key, real[0], decrypt_log=MemoryDecryptLog(), roster_keys=real_keys)
    with pytest.raises(SetupRejected, match="roster"):
        holder.join(setup)
    assert holder.join(dataclasses.replace(setup, identity_keys=real_keys)) is not None
