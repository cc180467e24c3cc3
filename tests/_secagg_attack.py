"""Attack drivers for SecAgg/SecAgg+: a malicious server (optionally with colluding
hospitals) speaking the wire format to honest ``Client`` state machines.

The drivers only use what every version of the protocol has: ``Client.start/receive``,
the honest ``Server`` as a relay for the stages before the attack, and the message
classes.  Stages the protocol adds later (e.g. a graph reveal) are relayed honestly.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import numpy as np

from fedvault.protocols.errors import ProtocolError
from fedvault.protocols.secagg import Client, SecAggParams, Server, simulation_identities
from fedvault.protocols.secagg.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    SignatureEntry,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from fedvault.secagg import keys as K
from fedvault.secagg import shamir
from fedvault.secagg.masking import pair_domain, pair_seed, pairwise_sign, self_domain
from fedvault.secagg.prg import DeterministicRandom, MaskExpander

SERVER = 0xFFFFFFFF


class Harness:
    """Honest clients; an honest server used as a relay until the attack starts."""

    def __init__(self, params: SecAggParams, dim: int = 4, seed: bytes = b"h" * 32) -> None:
        self.params = params.with_dim(dim)
        self.ids = simulation_identities(seed, self.params.clients)
        self.pub = {i: K.public_bytes(k) for i, k in self.ids.items()}
        root = DeterministicRandom(seed, b"attack")
        self.clients = {i: Client(self.params, i, self.ids[i], self.pub, root.child(b"%d" % i))
                        for i in self.params.clients}
        rng = np.random.default_rng(7)  # test data only
        self.inputs = {i: rng.uniform(-1, 1, dim) for i in self.params.clients}
        for i, c in self.clients.items():
            c.set_input(self.inputs[i])
        self.server = Server(self.params, self.pub)
        self.masked: dict[int, np.ndarray] = {}
        self.adverts: dict[int, object] = {}

    def _up(self, i: int, msgs) -> None:
        for m in msgs:
            m = decode(m.encode())
            if isinstance(m, MaskedInput):
                self.masked[i] = np.array(m.vector)
            if type(m).__name__ == "AdvertiseKeys":  # (the server sees every advertisement)
                self.adverts[i] = m
            self.server.receive(m.encode())

    def run_until(self, kind: type) -> dict:
        """Run honestly until the server's outbox holds ``kind`` messages; return that outbox."""
        for i, c in self.clients.items():
            self._up(i, c.start())
        while True:
            out = self.server.advance()
            if any(isinstance(m, kind) for m in out.values()):
                return out
            for i, m in out.items():
                self._up(i, self.clients[i].receive(m.encode()))


def _try(client: Client, msg):
    try:
        return client.receive(decode(msg.encode()))
    except ProtocolError:
        return None


def _old_rule_ok(nbrs, u, signers, t) -> bool:
    """The acceptance rule of the pre-fix client: t of u's OWN neighbours signed."""
    return len((signers - {u}) & nbrs[u]) >= t


def graph_of(h: Harness):
    """The round's graph as the (relaying) server knows it."""
    g = getattr(h.server, "graph", None)
    return (g if g is not None else h.params.neighbourhood).neighbours


def find_split(params: SecAggParams, victim: int, colluders: set[int], rng: random.Random, nbrs):
    """A partition (A, B) of the honest non-victims for the split view, chosen so that an
    honest neighbour checking only its own neighbours' signatures would accept."""
    t = params.t
    honest = [i for i in params.clients if i != victim and i not in colluders]
    cands = (itertools.product((0, 1), repeat=len(honest)) if len(honest) <= 12
             else ([rng.randrange(2) for _ in honest] for _ in range(3000)))
    best, fallback = None, None
    for bits in cands:
        A = {h for h, b in zip(honest, bits) if b == 0} | {victim}
        B = {h for h, b in zip(honest, bits) if b == 1}
        if fallback is None and len(A & nbrs[victim]) >= 1 and len(B & nbrs[victim]) >= 1:
            fallback = (A, B)
        sa, sb = A | colluders, B | colluders
        ra = [u for u in nbrs[victim] & A if _old_rule_ok(nbrs, u, sa, t)]
        rb = [u for u in nbrs[victim] & B if _old_rule_ok(nbrs, u, sb, t)]
        c = len(colluders & nbrs[victim])
        if len(ra) + c >= t and len(rb) + c >= t:
            best = (A, B)
            break
    return best or fallback


def split_view_attack(h: Harness, victim: int, colluders: set[int] = frozenset(), seed: int = 0, partition=None):
    """The malicious server of issue 12 attacks 1/2: shows region A a survivor set with the
    victim and region B one without it, so that A reveals the victim's self-mask-seed share
    and B its mask-key share; colluders sign both and hand over both shares.

    Returns ``(self_seed_shares, mask_key_shares, recovered_input_or_None)``.
    """
    params = h.params
    out = h.run_until(ConsistencyRequest)
    u3 = next(iter(out.values())).survivors
    assert victim in u3
    nbrs = graph_of(h)
    A, B = partition if partition is not None else find_split(params, victim, set(colluders), random.Random(seed), nbrs)
    A = set(A) | {victim}
    gseed = getattr(h.server, "_seed", b"")
    u3_without = tuple(i for i in u3 if i != victim)
    hdr = (params.session_tag, params.round, SERVER)
    sig_a: dict[int, bytes] = {}
    sig_b: dict[int, bytes] = {}
    for i in params.clients:
        if i in colluders:  # colluders sign both views with their identity keys
            sig_a[i] = K.sign(h.ids[i], _consistency(params, i, u3, gseed))
            sig_b[i] = K.sign(h.ids[i], _consistency(params, i, u3_without, gseed))
            continue
        view = u3 if i in A else u3_without
        r = _try(h.clients[i], ConsistencyRequest(*hdr, view))
        if r:
            (sig_a if i in A else sig_b)[i] = next(m for m in r if isinstance(m, ConsistencySignature)).signature
    b_shares: dict[int, bytes] = {}
    s_shares: dict[int, bytes] = {}
    for i in params.clients:
        if victim not in nbrs[i]:
            continue
        if i in colluders:
            s_share, b_share = h.clients[i]._received[victim][:2]
            b_shares[i + 1], s_shares[i + 1] = b_share, s_share
            continue
        if i not in sig_a and i not in sig_b:
            continue
        view, sigs = (set(u3), sig_a) if i in A else (set(u3_without), sig_b)
        holders = set(h.clients[i]._received)
        alive = tuple(sorted(holders & view))
        dropped = tuple(sorted(holders - view))
        entries = tuple(SignatureEntry(j, s) for j, s in sorted(sigs.items()))
        r = _try(h.clients[i], UnmaskRequest(*hdr, alive, dropped, entries))
        for m in r or ():
            if isinstance(m, UnmaskShares):
                for e in m.entries:
                    if e.owner == victim:
                        (b_shares if int(e.kind) == 0 else s_shares)[i + 1] = e.share
    recovered = None
    t = params.t
    if len(b_shares) >= t and len(s_shares) >= t:
        recovered = recover_input(h, victim, shamir.combine(b_shares, t), shamir.combine(s_shares, t))
    return b_shares, s_shares, recovered


def _consistency(params, i, u3, gseed):
    try:
        return params.consistency_message(i, u3, gseed)
    except TypeError:  # the protocol before the graph commit-reveal
        return params.consistency_message(i, u3)


def recover_input(h: Harness, v: int, b_seed: bytes, s_sk: bytes) -> np.ndarray:
    """x_v from y_v, the self-mask seed and the mask key (what a successful attack yields)."""
    p = h.params
    key = K.x25519_from_private_bytes(s_sk)
    assert K.public_bytes(key) == h.adverts[v].mask_pk, "reconstructed mask key is wrong"
    ex = MaskExpander(p.require_dim(), p.bits)
    y = h.masked[v].astype(p.encoder.dtype).copy()
    terms = [(b_seed, self_domain(v), -1)]
    for j in sorted(h.clients[v]._received):
        seed = pair_seed(key, h.adverts[j].mask_pk, p.mask_context(), v, j)
        terms.append((seed, pair_domain(v, j), -pairwise_sign(v, j)))
    ex.add_many(y, terms)
    return p.encoder.decode(ex.finish(y))
