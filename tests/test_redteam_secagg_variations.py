"""Red team: variations of issue 12's SecAgg attacks that the landed tests do not play."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedvault.protocols.errors import ProtocolError
from fedvault.protocols.secagg import SecAggParams
from fedvault.protocols.secagg.binding import seal
from fedvault.protocols.secagg.messages import ForwardedShares, UnmaskRequest

from _secagg_attack import Harness


def test_forged_mask_key_share_of_a_dropped_hospital_is_detected_and_excluded():
    """Attack 8 for the other kind: a malicious holder alters its share of a DROPPED hospital's
    mask key (kind 1) at unmask. The sum must still be exact and the holder blamed."""
    params = SecAggParams(b"rt-8b", 1, tuple(range(7)))
    h = Harness(params)
    dropped = 6
    for i, c in h.clients.items():
        h._up(i, c.start())
    while True:
        out = h.server.advance()
        if any(isinstance(m, UnmaskRequest) for m in out.values()):
            break
        for i, m in out.items():
            if isinstance(m, ForwardedShares) and i == dropped:
                continue  # hospital 6 drops before sending its masked input
            h._up(i, h.clients[i].receive(m.encode()))
    bad_holder = 0
    forged_any = False
    for i, m in out.items():
        (reply,) = h.clients[i].receive(m.encode())
        if i == bad_holder:
            entries = list(reply.entries)
            for k, e in enumerate(entries):
                if e.owner == dropped and int(e.kind) == 1:
                    entries[k] = e._replace(share=bytes([e.share[0] ^ 1]) + e.share[1:])
                    forged_any = True
            reply = seal(replace(reply, entries=tuple(entries)), h.clients[i]._bind)
            try:
                h.server.receive(reply.encode())
            except ProtocolError:
                pass
            continue
        h.server.receive(reply.encode())
    assert forged_any
    h.server.advance()
    survivors = h.server.survivors
    assert dropped not in survivors
    expect = sum(h.inputs[i] for i in survivors)
    got = h.params.encoder.decode_sum(h.server.result, len(survivors))
    np.testing.assert_allclose(got, expect, atol=h.params.encoder.error_bound(7) + 1e-9)
    assert bad_holder in h.server.blame
