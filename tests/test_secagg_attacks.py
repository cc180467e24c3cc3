"""Issue 12, SecAgg/SecAgg+ attack classes, replayed against honest state machines.

Each test plays the attacker over the wire format (a malicious server, colluding or
malicious hospitals) and asserts the attack fails; each failed on b8a9b93.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedvault.protocols.driver import run_in_memory
from fedvault.protocols.errors import InvalidKeyError, ProtocolError
from fedvault.protocols.secagg import Client, SecAggParams, Server, simulation_identities
from fedvault.protocols.secagg.messages import AdvertiseKeys, KeyBroadcast, KeyEntry
from fedvault.secagg import keys as K
from fedvault.secagg.prg import DeterministicRandom

from _secagg_attack import Harness, split_view_attack

# An X25519 point of order 8 (RFC 7748 section 6.1 lists the low-order points).
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


# -- attack 1: SecAgg+ split view, no colluding hospital ------------------------------------
@pytest.mark.parametrize("victim", [0, 7])
def test_sparse_split_view_without_colluders_recovers_nothing(victim):
    params = SecAggParams(b"attack-1", 1, tuple(range(20)), graph="sparse")
    h = Harness(params)
    b, s, recovered = split_view_attack(h, victim)
    assert recovered is None, f"server recovered hospital {victim}'s update {recovered}"
    assert not (len(b) >= params.t and len(s) >= params.t)


# -- attack 2: default threshold too low against colluders (complete graph) --------------------
@pytest.mark.parametrize("n", [6, 7, 8, 9])
def test_complete_split_view_with_old_default_colluders_fails(n):
    """t_old = floor((n-1)/2) + 1; the attack uses t_old - 1 colluders, which broke the old default."""
    colluders = set(range(n - ((n - 1) // 2), n))  # t_old - 1 of them
    assert len(colluders) == (n - 1) // 2
    params = SecAggParams(b"attack-2", 1, tuple(range(n)))
    h = Harness(params)
    b, s, recovered = split_view_attack(h, 0, colluders)
    assert recovered is None, f"server + {len(colluders)} colluders recovered an update: {recovered}"


# -- attack 10: low-order X25519 key from a malicious hospital ---------------------------------
def _low_order_advert(params: SecAggParams, identity, i: int, good: AdvertiseKeys) -> AdvertiseKeys:
    sig = K.sign(identity, params.advertise_message(i, good.channel_pk, LOW_ORDER, good.graph_commit))
    return replace(good, mask_pk=LOW_ORDER, signature=sig)


def test_server_refuses_low_order_key_with_typed_error():
    params = SecAggParams(b"attack-10", 1, tuple(range(5))).with_dim(3)
    h = Harness(params, dim=3)
    good = h.clients[4].start()[0]
    bad = _low_order_advert(h.params, h.ids[4], 4, good)
    with pytest.raises(InvalidKeyError, match="client 4"):
        h.server.receive(bad.encode())


def test_client_refuses_low_order_key_forwarded_by_a_colluding_server():
    params = SecAggParams(b"attack-10", 1, tuple(range(5))).with_dim(3)
    h = Harness(params, dim=3)
    out = h.run_until(KeyBroadcast)
    m = out[0]
    e4 = next(e for e in m.entries if e.client == 4)
    sig = K.sign(h.ids[4], h.params.advertise_message(4, e4.channel_pk, LOW_ORDER, e4.graph_commit))
    bad = e4._replace(mask_pk=LOW_ORDER, signature=sig)
    msg = replace(m, entries=tuple(bad if e.client == 4 else e for e in m.entries))
    with pytest.raises(InvalidKeyError, match="client 4"):
        h.clients[0].receive(msg.encode())


class _LowOrderHospital:
    """A malicious hospital that advertises a (properly signed) low-order mask key."""

    def __init__(self, client: Client, identity, params) -> None:
        self.c, self.identity, self.params = client, identity, params

    stage = property(lambda self: self.c.stage)
    done = property(lambda self: self.c.done)

    def start(self):
        good = self.c.start()[0]
        return [_low_order_advert(self.params, self.identity, self.c.id, good)]

    def receive(self, data):
        return self.c.receive(data)


def test_low_order_key_does_not_crash_the_round_and_is_attributed():
    params = SecAggParams(b"attack-10", 2, tuple(range(6))).with_dim(3)
    ids = simulation_identities(b"x" * 32, params.clients)
    pub = {i: K.public_bytes(k) for i, k in ids.items()}
    root = DeterministicRandom(b"y" * 32)
    clients = {i: Client(params, i, ids[i], pub, root.child(b"%d" % i)) for i in params.clients}
    for i, c in clients.items():
        c.set_input(np.full(3, 0.25))
    parties = dict(clients)
    parties[5] = _LowOrderHospital(clients[5], ids[5], params)
    server = Server(params, pub)
    stats = run_in_memory(server, parties)
    assert server.survivors == (0, 1, 2, 3, 4)
    assert "InvalidKeyError" in stats.refused[5][0]
    np.testing.assert_allclose(params.encoder.decode_sum(server.result, 5), np.full(3, 1.25))


# -- attack 3: server-ground graph -------------------------------------------------------------
def test_grinding_session_ids_does_not_steer_the_graph():
    """The server grinds session ids until 4 colluders (at least the threshold) are the victim's
    neighbours in the graph it can predict, runs the round, and the colluders pool their shares of
    the victim.  The round's real graph comes from the hospitals' committed randomness (drawn after
    the server fixed everything it chooses), so the ground graph is not the one used."""
    from fedvault.protocols.secagg.messages import ConsistencyRequest
    from fedvault.secagg import shamir

    from _secagg_attack import recover_input

    ids, victim, colluders = tuple(range(20)), 0, {16, 17, 18, 19}
    for s in range(20000):
        params = SecAggParams(b"grind-%d" % s, 1, ids, graph="sparse")
        if params.t <= len(colluders) and colluders <= params.neighbourhood.neighbours[victim]:
            break
    else:
        pytest.skip("no ground session id found")
    h = Harness(params)
    h.run_until(ConsistencyRequest)
    held = {c + 1: h.clients[c]._received[victim] for c in colluders if victim in h.clients[c]._received}
    recovered = None
    if len(held) >= params.t:
        s_sk = shamir.combine({x: v[0] for x, v in held.items()}, params.t)
        b = shamir.combine({x: v[1] for x, v in held.items()}, params.t)
        recovered = recover_input(h, victim, b, s_sk)
    assert recovered is None, f"4 colluders on a ground graph recovered the victim's update {recovered}"
    assert len(held) < params.t


# -- attack 9: client messages not bound to their sender / round --------------------------------
def _to_masked_stage(h: Harness):
    from fedvault.protocols.secagg.messages import ForwardedShares

    return h.run_until(ForwardedShares)


def test_a_hospital_cannot_submit_as_another():
    from fedvault.protocols.errors import ProtocolError as PE

    params = SecAggParams(b"attack-9", 1, tuple(range(6)))
    h = Harness(params)
    out = _to_masked_stage(h)
    mine = h.clients[2].receive(out[2].encode())[0]  # hospital 2's own masked input
    forged = replace(mine, sender=3)  # ... submitted as hospital 3 (before 3's real one)
    with pytest.raises(PE):
        h.server.receive(forged.encode())


def test_an_old_rounds_masked_vector_with_a_rewritten_header_is_refused():
    from fedvault.protocols.errors import ProtocolError as PE

    old = Harness(SecAggParams(b"attack-9b", 1, tuple(range(6))))
    out = _to_masked_stage(old)
    stale = old.clients[1].receive(out[1].encode())[0]
    new = Harness(SecAggParams(b"attack-9b", 2, tuple(range(6))), seed=b"n" * 32)
    _to_masked_stage(new)
    with pytest.raises(PE):
        new.server.receive(replace(stale, round=2).encode())


# -- attack 8: a forged self-mask-seed share at unmask -------------------------------------------
def test_forged_self_mask_seed_share_is_detected_attributed_and_excluded():
    from fedvault.protocols.errors import ProtocolError as PE
    from fedvault.protocols.secagg.messages import UnmaskRequest, UnmaskShares

    params = SecAggParams(b"attack-8", 1, tuple(range(7)))  # t = 5 of 6 neighbours: one spare holder each
    h = Harness(params)
    out = h.run_until(UnmaskRequest)
    bad_holder = 0  # its shares sit at x = 1, the first ones any reconstruction uses
    for i, m in out.items():
        (reply,) = h.clients[i].receive(m.encode())
        if i == bad_holder:  # the malicious hospital alters one self-mask-seed share, then tags it itself
            e = reply.entries[0]
            forged = e._replace(share=bytes([e.share[0] ^ 1]) + e.share[1:])
            reply = replace(reply, entries=(forged,) + reply.entries[1:])
            key = getattr(h.clients[i], "_bind", None)
            if key is not None:
                from fedvault.protocols.secagg.binding import seal

                reply = seal(reply, key)
            try:
                h.server.receive(reply.encode())
            except PE:
                pass
            continue
        h.server.receive(reply.encode())
    h.server.advance()
    expect = sum(h.inputs[i] for i in h.server.survivors)
    got = h.params.encoder.decode_sum(h.server.result, len(h.server.survivors))
    np.testing.assert_allclose(got, expect, atol=h.params.encoder.error_bound(7) + 1e-9)
    assert bad_holder in h.server.blame and "does not open its commitment" in h.server.blame[bad_holder][0]


# -- one hospital vetoes every round with garbage share ciphertexts ------------------------------
class _GarbageSharer:
    """A malicious hospital whose share ciphertexts are garbage (but whose messages are its own)."""

    def __init__(self, client: Client) -> None:
        self.c = client

    stage = property(lambda self: self.c.stage)
    done = property(lambda self: self.c.done)

    def start(self):
        return self.c.start()

    def receive(self, data):
        out = self.c.receive(data)
        from fedvault.protocols.secagg.binding import seal
        from fedvault.protocols.secagg.messages import ShareKeys

        if out and isinstance(out[0], ShareKeys):
            m = out[0]
            junk = tuple(e._replace(ciphertext=bytes(len(e.ciphertext))) for e in m.entries)
            out = [seal(replace(m, entries=junk), self.c._bind)]
        return out


def test_garbage_share_ciphertexts_are_attributed_to_their_sender():
    from fedvault.protocols.errors import AbortError

    params = SecAggParams(b"veto", 1, tuple(range(8))).with_dim(3)
    ids = simulation_identities(b"v" * 32, params.clients)
    pub = {i: K.public_bytes(k) for i, k in ids.items()}
    root = DeterministicRandom(b"w" * 32)
    clients = {i: Client(params, i, ids[i], pub, root.child(b"%d" % i)) for i in params.clients}
    for c in clients.values():
        c.set_input(np.full(3, 0.125))
    parties = dict(clients)
    parties[7] = _GarbageSharer(clients[7])
    server = Server(params, pub)
    with pytest.raises(AbortError, match=r"-> 7"):
        run_in_memory(server, parties)
    accusers = {a for a, b in server.disputes if b == 7}
    assert accusers == set(range(7)), server.disputes  # every honest neighbour named hospital 7


# -- attack 12 (residual, documented): a malicious hospital moves the SecAgg sum ----------------
def test_malicious_hospital_shifts_the_sum_beyond_its_clip_and_every_guarantee_line_says_so():
    """No range proofs in SecAgg: a hospital submits any ring element (``set_input`` takes an already-encoded
    vector), so the decoded sum moves by anything mod 2^b — here 4 x its clip in every coordinate — undetected.
    SPEC section 1.3 states the residual; every guarantee line a run prints must state it too."""
    from fedvault.protocols.secagg import simulate_round

    params = SecAggParams(b"attack-12", 1, (1, 2, 3, 4), clip=1.0, bits=32).with_dim(3)
    enc = params.encoder
    rng = np.random.default_rng(3)
    xs = {i: rng.uniform(-1, 1, 3) for i in params.clients}
    honest = simulate_round(params, xs)
    np.testing.assert_allclose(honest.total, sum(xs.values()), atol=1e-6)
    top = 2.0 ** (params.bits - 1 - enc.fractional_bits)  # decodable range [-top, top)
    assert 4 * params.clip <= top <= 2 * 4 * params.clip + 1  # with the automatic f: between n clip and ~2n clip
    shift = 1 << (params.bits - 2)  # a quarter of the ring: top / 2 once decoded
    evil = dict(xs)
    evil[1] = ((enc.encode(xs[1]).astype(np.uint64) + shift) % (1 << params.bits)).astype(enc.dtype)
    moved = simulate_round(params, evil).total - honest.total
    np.testing.assert_allclose(moved, top / 2, atol=1e-9)  # accepted, and 4 x clip in every coordinate
    assert np.all(moved > 2 * params.clip)  # beyond anything an honest hospital (in [-clip, clip]) can do
    for p in (params, SecAggParams(b"attack-12", 1, tuple(range(1, 31)), graph="sparse")):
        line = p.guarantee().line()
        assert "a malicious hospital cannot read any update but can shift each coordinate of the sum by any " \
               "value mod 2^bits (not bounded by its clip; no range proofs) or abort the round" in line
