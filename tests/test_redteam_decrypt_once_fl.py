"""Red team (residual, owner A/C): the fl layer's decryptors keep "decrypt once per round" in
memory (``fl.hospital._memory_log``), although the protocol has a durable
``DirectoryDecryptLog``.  A key holder (or a threshold share-holding hospital) whose process
restarts — a SuperNode may start one process per message, and ``EngineNode`` rebuilds the party
with ``load_party`` — answers a second, different contributor set for the same round; the
difference of the two sums is one hospital's exact update (issue 12 item 5, over the engine
path).  Fixed: the decrypt-once record is bound to the decryption key, not to the process
(``fl.hospital.key_decrypt_log``: a ``DirectoryDecryptLog`` per key under the state directory).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import KeyHolder, VectorParticipant
from fedvault.fl.simulation import simulation_identities
from fedvault.protocols.errors import ProtocolError
from fedvault.protocols.paillier import PaillierParams, setup_keys
from fedvault.secagg import keys as K


def test_a_restarted_key_holder_never_answers_a_second_set_for_a_round():
    cfg = from_dict({"seed": 5, "data": {"hospitals": 3}, "privacy": {"enabled": False},
                     "aggregation": {"mode": "paillier", "key_bits": 512}})
    ids = {"a": 1, "b": 2, "c": 3}
    idents = simulation_identities(cfg, {**ids, "key_holder": 0})
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    p0 = PaillierParams(session_id=b"setup", round=0, clients=(1, 2, 3), min_clients=2, keys="holder", key_bits=512)
    ks = setup_keys(p0, rng=os.urandom, holder=0)
    mode = make_mode(cfg, ids, ks.public)
    w = np.zeros(5)
    setup, _ = open_session(cfg, mode, 1, "update", list(ids), weights=w, clip=1.0, identity_keys=keys)
    vecs = {i: np.linspace(-0.5, 0.5, 6) * i for i in ids.values()}
    uploads = {i: VectorParticipant(n, i, lambda r, w, i=i: vecs[i], cfg, i - 1, identity=idents[i]).join(setup)
               .start()[0].encode() for n, i in ids.items()}

    def request(who):
        server = mode.server(setup.params, keys)
        for i in who:
            server.receive(uploads[i])
        return server.advance()[0].encode()

    KeyHolder(0, ks.holder_key, idents[0]).join(setup).receive(request((1, 2, 3)))
    restarted = KeyHolder(0, ks.holder_key, idents[0])  # the same key holder after a restart
    with pytest.raises(ProtocolError):  # AlreadyAnsweredError with a durable log
        restarted.join(setup).receive(request((1, 2)))
