"""protocols/driver.py: the one in-memory loop (bytes counted, drops and refusals attributed)."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.protocols.driver import run_in_memory
from fedvault.protocols.errors import UsageError
from fedvault.protocols.secagg import Client, SecAggParams, Server, simulation_identities
from fedvault.protocols.secagg.threat import ThreatModel
from fedvault.secagg import keys as K
from fedvault.secagg.prg import DeterministicRandom


def _round(n=4, t=2):
    params = SecAggParams(b"driver", 1, tuple(range(1, n + 1)), threshold=t, bits=32,
                          threat_model=ThreatModel(colluders=0)).with_dim(3)
    ids = simulation_identities(b"s" * 32, params.clients)
    pub = {i: K.public_bytes(k) for i, k in ids.items()}
    root = DeterministicRandom(b"s" * 32, b"driver")
    clients = {}
    for i in params.clients:
        c = Client(params, i, ids[i], pub, root.child(b"%d" % i))
        c.set_input(np.full(3, 0.125 * i))
        clients[i] = c
    return params, Server(params, pub), clients


class Garbage:
    """A hospital that sends bytes that are not a message, then behaves honestly."""

    def __init__(self, inner):
        self.inner = inner

    stage = property(lambda self: self.inner.stage)
    done = property(lambda self: self.inner.done)

    def start(self):
        return [b"FVSA garbage"] + self.inner.start()

    def receive(self, data):
        return self.inner.receive(data)


def test_bytes_transcript_drops_and_stages_are_recorded():
    params, server, clients = _round()
    transcript = []
    st = run_in_memory(server, clients, drop={"masked_input": [4]}, transcript=transcript)
    assert server.done and server.survivors == (1, 2, 3)
    enc = params.encoder
    assert np.allclose(enc.decode_sum(server.result, 3), 0.125 * 6)
    for i in clients:
        assert st.upload_bytes[i] == sum(len(b) for d, c, b in transcript if d == "up" and c == i)
        assert st.download_bytes[i] == sum(len(b) for d, c, b in transcript if d == "down" and c == i)
    assert st.dropped == {"masked_input": [4]}
    assert st.stages == ["advertise", "reveal", "share", "masked_input", "consistency", "unmask", "done"]
    assert not st.refused and not st.aborted


def test_garbage_is_refused_and_attributed_without_stopping_the_round():
    params, server, clients = _round()
    clients[2] = Garbage(clients[2])
    st = run_in_memory(server, clients)
    assert list(st.refused) == [2] and len(st.refused[2]) == 1
    assert st.refused[2][0].startswith(("TruncatedError", "HeaderError", "DecodeError"))
    assert server.survivors == (1, 2, 3, 4)


def test_unknown_stage_name_is_a_usage_error():
    _, server, clients = _round()
    with pytest.raises(UsageError):
        run_in_memory(server, clients, drop={"nope": [1]})
