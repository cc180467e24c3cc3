"""Every refusal of issue 3 (4), played by a malicious server or client against honest state machines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedvault.protocols.errors import (
    BindingError,
    DecodeError,
    DoubleRevealError,
    DuplicateClientError,
    InconsistentError,
    InputError,
    ReplayError,
    SignatureError,
    StageError,
    TamperedError,
    ThresholdError,
)
from fedvault.protocols.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ForwardedShares,
    KeyBroadcast,
    MaskedInput,
    ShareEntry,
    SignatureEntry,
    UnmaskEntry,
    UnmaskRequest,
    UnmaskShares,
)
from fedvault.protocols.secagg import Client, ClientStage, SecAggParams, Server, ServerStage, simulation_identities
from fedvault.protocols.secagg.binding import seal
from fedvault.protocols.secagg.messages import Complaint
from fedvault.protocols.secagg.threat import ThreatModel
from fedvault.secagg import keys as K
from fedvault.secagg.prg import DeterministicRandom


class Round:
    """Honest clients and server driven stage by stage, so a test can tamper in between."""

    def __init__(self, n=5, t=3, graph="complete", round_=1, session=b"session", dim=4):
        # Refusal tests need small thresholds: declare a server without colluders or dropouts.
        self.params = SecAggParams(session, round_, tuple(range(n)), threshold=t, graph=graph,
                                   threat_model=ThreatModel(colluders=0, dropouts=0)).with_dim(dim)
        self.identities = simulation_identities(b"i" * 32, self.params.clients)
        self.pub = {i: K.public_bytes(k) for i, k in self.identities.items()}
        root = DeterministicRandom(b"r" * 32).child(b"%d" % round_)
        self.clients = {
            i: Client(self.params, i, self.identities[i], self.pub, root.child(b"%d" % i)) for i in self.params.clients
        }
        for i, c in self.clients.items():
            c.set_input(np.full(dim, 0.125 * (i % 3)))
        self.server = Server(self.params, self.pub)

    def advertise(self):
        """Advertise keys and open the graph commitments; returns the key-broadcast outbox."""
        for c in self.clients.values():
            self.server.receive(c.advertise().encode())
        return self.deliver(self.server.advance())

    def deliver(self, outbox, skip=()):
        for i, msg in outbox.items():
            if i in skip:
                continue
            for reply in self.clients[i].receive(msg.encode()):
                self.server.receive(reply.encode())
        return self.server.advance()

    def to_stage(self, stage: str):
        """Run honestly until the server's outbox for ``stage`` (keys, shares, consistency, unmask)."""
        out = self.advertise()
        for s in ("keys", "shares", "consistency", "unmask"):
            if s == stage:
                return out
            out = self.deliver(out)
        raise AssertionError(stage)


VICTIM = 0


def _refused(rnd: Round, msg, err):
    with pytest.raises(err):
        rnd.clients[VICTIM].receive(msg.encode())
    assert rnd.clients[VICTIM].stage is ClientStage.ABORTED
    with pytest.raises(StageError):  # an aborted client stays silent
        rnd.clients[VICTIM].receive(msg.encode())


# -- 1. both shares of one neighbour ----------------------------------------------------
def test_refuses_request_for_both_shares_of_one_neighbour():
    rnd = Round()
    out = rnd.to_stage("unmask")
    m = out[VICTIM]
    bad = replace(m, dropped=m.dropped + (m.alive[-1],))  # 4 listed as alive and dropped
    _refused(rnd, bad, DoubleRevealError)


def test_refuses_to_call_a_signed_survivor_dropped():
    """The server tells the victim a survivor dropped (to get its mask key next to its self-mask seed)."""
    rnd = Round()
    out = rnd.to_stage("unmask")
    m = out[VICTIM]
    j = m.alive[-1]
    bad = replace(m, alive=tuple(a for a in m.alive if a != j), dropped=m.dropped + (j,))
    _refused(rnd, bad, InconsistentError)


def test_refuses_a_second_unmask_request():
    rnd = Round()
    out = rnd.to_stage("unmask")
    rnd.clients[VICTIM].receive(out[VICTIM].encode())
    m = out[VICTIM]
    with pytest.raises(StageError):
        rnd.clients[VICTIM].receive(replace(m, alive=(), dropped=m.alive).encode())


def test_server_refuses_a_client_revealing_the_wrong_share():
    rnd = Round()
    out = rnd.to_stage("unmask")
    reply = rnd.clients[1].receive(out[1].encode())[0]
    e = reply.entries[0]
    other = 1 - int(e.kind)
    from fedvault.protocols.secagg.messages import ShareKind

    bad = replace(reply, entries=(UnmaskEntry(e.owner, ShareKind(other), e.share, e.salt),) + reply.entries[1:])
    with pytest.raises(InconsistentError):
        rnd.server.receive(seal(bad, rnd.clients[1]._bind).encode())


# -- 2. survivor sets smaller than t -----------------------------------------------------
def test_refuses_survivor_set_smaller_than_threshold():
    rnd = Round(n=5, t=3)
    out = rnd.to_stage("consistency")
    _refused(rnd, replace(out[VICTIM], survivors=(0, 1)), ThresholdError)


def test_refuses_too_few_neighbour_keys():
    rnd = Round(n=5, t=3)
    out = rnd.to_stage("keys")
    m = out[VICTIM]
    _refused(rnd, replace(m, entries=m.entries[:2]), ThresholdError)  # itself + one neighbour


def test_refuses_unmask_with_too_few_confirmations():
    rnd = Round(n=5, t=3)
    out = rnd.to_stage("unmask")
    m = out[VICTIM]
    _refused(rnd, replace(m, signatures=m.signatures[:2]), ThresholdError)


def test_refuses_survivor_that_never_shared():
    rnd = Round(n=6, t=3)
    out = rnd.advertise()
    out = rnd.deliver(out, skip={5})  # 5 never sends shares
    out = rnd.deliver(out)
    m = out[VICTIM]
    _refused(rnd, replace(m, survivors=tuple(sorted(m.survivors + (5,)))), InconsistentError)


# -- 3. replays from another session or round ---------------------------------------------
def test_refuses_messages_from_another_round_or_session():
    old = Round(round_=1)
    old_keys = old.to_stage("keys")
    new = Round(round_=2)
    new.advertise()
    _refused(new, old_keys[VICTIM], ReplayError)

    other = Round(session=b"another")
    other.advertise()
    fresh = Round()
    fresh_keys = fresh.advertise()
    with pytest.raises(ReplayError):
        other.clients[VICTIM].receive(fresh_keys[VICTIM].encode())


def test_server_refuses_replayed_advertisement():
    old = Round(round_=1)
    stale = old.clients[3].advertise()
    new = Round(round_=2)
    with pytest.raises(ReplayError):
        new.server.receive(stale.encode())
    new.server.receive(new.clients[3].advertise().encode())  # the real one is still accepted


# -- 4. unsigned or wrongly signed keys -----------------------------------------------------
def test_refuses_unsigned_or_substituted_keys():
    rnd = Round()
    out = rnd.to_stage("keys")
    m = out[VICTIM]
    e = m.entries[2]
    forged = e._replace(mask_pk=K.public_bytes(K.generate_x25519(DeterministicRandom(b"m" * 32))))
    _refused(rnd, replace(m, entries=m.entries[:2] + (forged,) + m.entries[3:]), SignatureError)

    rnd = Round()
    m = rnd.to_stage("keys")[VICTIM]
    unsigned = m.entries[1]._replace(signature=bytes(64))
    _refused(rnd, replace(m, entries=(m.entries[0], unsigned) + m.entries[2:]), SignatureError)


def test_server_refuses_wrongly_signed_advertisement():
    rnd = Round()
    ad = rnd.clients[2].advertise()
    with pytest.raises(SignatureError):
        rnd.server.receive(replace(ad, sender=3).encode())  # 2's keys claimed by 3
    with pytest.raises(SignatureError):
        rnd.server.receive(replace(ad, signature=bytes(64)).encode())


def test_refuses_forged_consistency_signature():
    rnd = Round()
    out = rnd.to_stage("unmask")
    m = out[VICTIM]
    s = m.signatures[0]
    _refused(rnd, replace(m, signatures=(SignatureEntry(s.client, m.signatures[1].signature),) + m.signatures[1:]), SignatureError)


def test_refuses_non_neighbour_keys_in_sparse_graph():
    rnd = Round(n=20, t=3, graph="sparse")
    out = rnd.to_stage("keys")
    m = out[VICTIM]
    stranger = min(set(rnd.params.clients) - rnd.server.graph.neighbours[VICTIM] - {VICTIM})
    extra = out[stranger].entries
    ent = next(e for e in extra if e.client == stranger)
    _refused(rnd, replace(m, entries=m.entries + (ent,)), InconsistentError)


# -- 5. duplicate client ids ------------------------------------------------------------------
def test_refuses_duplicate_ids():
    rnd = Round()
    m = rnd.to_stage("keys")[VICTIM]
    _refused(rnd, replace(m, entries=m.entries + (m.entries[1],)), DuplicateClientError)

    rnd = Round()
    m = rnd.to_stage("consistency")[VICTIM]
    _refused(rnd, replace(m, survivors=(0, 1, 1, 2, 3)), DuplicateClientError)


def test_server_refuses_duplicate_client():
    rnd = Round()
    ad = rnd.clients[1].advertise()
    rnd.server.receive(ad.encode())
    with pytest.raises(DuplicateClientError):
        rnd.server.receive(ad.encode())


# -- 6. tampered ciphertexts --------------------------------------------------------------------
def _complains_about(rnd: Round, msg, accused):
    (reply,) = rnd.clients[VICTIM].receive(msg.encode())
    assert isinstance(reply, Complaint) and set(reply.accused) == set(accused)
    assert rnd.clients[VICTIM].stage is ClientStage.ABORTED
    rnd.server.receive(reply.encode())  # bound to the victim: the server records the dispute
    assert {(VICTIM, j) for j in accused} <= set(rnd.server.disputes)


def test_refuses_tampered_or_misattributed_ciphertexts():
    """A ciphertext that fails AES-GCM, or names another sender, is refused and its sender named."""
    rnd = Round()
    m = rnd.to_stage("shares")[VICTIM]
    e = m.entries[0]
    flipped = e._replace(ciphertext=bytes([e.ciphertext[0] ^ 1]) + e.ciphertext[1:])
    _complains_about(rnd, replace(m, entries=(flipped,) + m.entries[1:]), {e.peer})

    rnd = Round()
    m = rnd.to_stage("shares")[VICTIM]
    a, b = m.entries[0], m.entries[1]
    swapped = (a._replace(ciphertext=b.ciphertext), b._replace(ciphertext=a.ciphertext))
    _complains_about(rnd, replace(m, entries=swapped + m.entries[2:]), {a.peer, b.peer})


# -- 7. wrong length, NaN/inf, out of range ---------------------------------------------------------
@pytest.mark.parametrize("bad", [np.zeros(5), np.array([0, np.nan, 0, 0]), np.array([0, 0, np.inf, 0]),
                                 np.array([0, 0, 0, 1.01]), np.array([[0.0] * 4]), np.array(["a"] * 4)])
def test_client_refuses_bad_input(bad):
    rnd = Round()
    with pytest.raises(InputError):
        rnd.clients[VICTIM].set_input(bad)


def test_server_refuses_masked_vector_of_wrong_length():
    rnd = Round()
    out = rnd.to_stage("shares")
    reply = rnd.clients[1].receive(out[1].encode())[0]
    assert isinstance(reply, MaskedInput)
    with pytest.raises(BindingError):  # altered after sealing
        rnd.server.receive(replace(reply, vector=np.zeros(5, np.uint32)).encode())
    with pytest.raises(InputError):
        rnd.server.receive(seal(replace(reply, vector=np.zeros(5, np.uint32)), rnd.clients[1]._bind).encode())
    with pytest.raises(DecodeError):
        rnd.server.receive(reply.encode()[:-1])
    rnd.server.receive(reply.encode())


# -- stage discipline ---------------------------------------------------------------------------
def test_out_of_stage_messages_are_refused():
    rnd = Round()
    ads = {i: c.advertise() for i, c in rnd.clients.items()}
    for ad in ads.values():
        rnd.server.receive(ad.encode())
    rnd.server.advance()
    assert rnd.server.stage is ServerStage.REVEAL
    with pytest.raises(StageError):
        rnd.server.receive(ads[1].encode())  # an advertisement after the deadline
    with pytest.raises(StageError):
        rnd.clients[1].advertise()  # twice
    with pytest.raises(StageError):  # a consistency request while waiting for keys
        rnd.clients[2].receive(ConsistencyRequest(rnd.params.session_tag, 1, 0xFFFFFFFF, (0, 1, 2)).encode())


def test_client_refuses_messages_not_from_the_server():
    rnd = Round()
    m = rnd.advertise()[VICTIM]
    _refused(rnd, replace(m, sender=3), InconsistentError)


def test_split_view_attack_is_caught_by_the_consistency_round():
    """The server shows the victim a survivor set without client 4 (hoping to get 4's mask-key
    share while the others reveal 4's self-mask share); the others' signatures do not cover it."""
    rnd = Round(n=5, t=3)
    out = rnd.to_stage("consistency")
    lie = replace(out[VICTIM], survivors=(0, 1, 2, 3))
    rnd.clients[VICTIM].receive(lie.encode())  # victim signs the lie; the server discards it
    for i in (1, 2, 3, 4):
        for reply in rnd.clients[i].receive(out[i].encode()):
            rnd.server.receive(reply.encode())
    honest = rnd.server.advance()[1]
    attack = UnmaskRequest(rnd.params.session_tag, 1, 0xFFFFFFFF, (1, 2, 3), (4,), honest.signatures)
    _refused(rnd, attack, SignatureError)
