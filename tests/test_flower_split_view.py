"""Issue 12, attack 1 end to end through the Flower Mod: a malicious ServerApp shows the hospitals different
survivor sets at the consistency/unmask stages and tries to open one hospital's masked input.

Honest ClientApps run ``FedVaultMod`` (vector sites, no torch) on fedvault's ``InProcessGrid``; the attacker is
a grid driver that speaks fedvault's Flower mapping (``wire``), runs the honest ``Server`` as a relay up to the
consistency stage, then deviates with everything the server legitimately knows (the graph, every advertised
key, every masked vector). Two split views on a 20-hospital SecAgg+ round (degree 6, t = 4):

* **two regions** (the classic attack): region A is shown a survivor set with the victim (its neighbours there
  would reveal its self-mask-seed shares), region B one without it (its neighbours there would reveal its
  mask-key shares);
* **the victim's neighbourhood** (the one the consistency rule is load-bearing for): every holder is shown a
  survivor set that keeps the victim and drops at most ``k - t`` of its own neighbours, chosen so that every
  neighbour ``u`` of the victim is "dropped" for ``t`` of ``u``'s holders. Without the rule each holder reveals
  the victim's self-mask-seed share and those neighbours' mask keys, which give every pairwise mask of the
  victim: its input is recovered exactly (``test_control_...`` runs the same server against nodes whose rule is
  switched off). With it, no decision is backed by ``t`` of the owner's neighbours, so every honest node refuses.

The threshold alone (``2t > k + C``) already stops the two-region attack on the victim's own two secrets; the
neighbourhood split is what needs the rule that a decision about ``j`` carries the signatures of ``t`` of
``j``'s own neighbours on one survivor set (SPEC section 1.2).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord  # noqa: E402

from fedvault.fl.integrations.flower import wire  # noqa: E402
from fedvault.fl.integrations.flower.workflow import discover  # noqa: E402
from fedvault.protocols.secagg import Client, SecAggParams, Server  # noqa: E402
from fedvault.protocols.secagg.messages import (  # noqa: E402
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardedShares,
    MaskedInput,
    SignatureEntry,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from fedvault.secagg import keys as K  # noqa: E402
from fedvault.secagg import shamir  # noqa: E402
from fedvault.secagg.masking import pair_domain, pair_seed, pairwise_sign, self_domain  # noqa: E402
from fedvault.secagg.prg import MaskExpander  # noqa: E402
from tests._flower_helpers import vector_federation  # noqa: E402

N, DIM, SERVER = 20, 5, 0xFFFFFFFF


class MaliciousServer:
    """A ServerApp body that drives fedvault's Flower mapping by hand (no ``secure_round``)."""

    def __init__(self, grid, registry) -> None:  # noqa: ANN001
        self.grid, self.registry = grid, registry
        self.weights = ArrayRecord({"w": Array(np.zeros(DIM - 1, np.float32))})
        self.node_of = discover(grid, registry)
        self.client_of = {n: c for c, n in self.node_of.items()}
        session, model, roster = os.urandom(16), wire.model_hash(self.weights), registry.fingerprint()
        self.params = SecAggParams(session_id=wire.bound_session(session, model, roster), round=1,
                                   clients=tuple(sorted(self.node_of)), graph="sparse", clip=20.0, dim=DIM)
        self.advertise = wire.params_record(self.params, session, model, roster)
        self.server = Server(self.params, {i: registry.members[i].identity for i in self.params.clients})
        self.masked: dict[int, np.ndarray] = {}
        self.mask_pk: dict[int, bytes] = {}
        self.refusals: dict[int, str] = {}

    def send(self, stage: str, wires: dict[int, bytes | None], *, fields: dict | None = None,
             train: bool = False) -> dict[int, bytes]:
        """One stage: a request per client; returns the protocol bytes each answered (refusals recorded)."""
        msgs = [wire.instruction(wire.request(stage, 1, wire=w, fields=fields, weights=self.weights if train else None,
                                              config=ConfigRecord({"server-round": 1}) if train else None),
                                 self.node_of[c], wire.MESSAGE_TYPE, "1") for c, w in wires.items()]
        out = {}
        for r in self.grid.send_and_receive(msgs, timeout=30.0):
            c = self.client_of[r.metadata.src_node_id]
            if r.has_error():
                self.refusals[c] = str(r.error.reason)
            else:
                out[c] = bytes(r.content.config_records[wire.RECORD]["wire"])
        return out

    def relay_until_consistency(self) -> tuple[int, ...]:
        """The honest protocol up to the consistency stage; returns the true survivor set U3."""
        replies = self.send("advertise", {c: None for c in self.params.clients}, fields=self.advertise)
        while True:
            for c, data in replies.items():
                m = decode(data)
                if isinstance(m, AdvertiseKeys):
                    self.mask_pk[c] = m.mask_pk
                if isinstance(m, MaskedInput):
                    self.masked[c] = np.array(m.vector)
                self.server.receive(data)
            nxt = self.server.advance()
            if any(isinstance(m, ConsistencyRequest) for m in nxt.values()):
                return next(iter(nxt.values())).survivors
            train = any(isinstance(m, ForwardedShares) for m in nxt.values())
            replies = self.send(wire.TRAIN if train else self.server.stage.value,
                                {c: m.encode() for c, m in nxt.items()}, train=train)

    def split(self, views: dict[int, tuple[int, ...]], victim: int) -> tuple[dict, dict]:
        """Show each holder its own survivor set, then ask each for the shares that set implies, with every
        signature on that same set. Returns the victim's self-mask-seed shares and every mask-key share,
        ``{owner: {x: share}}``, that the nodes handed over."""
        p, nbrs = self.params, self.server.graph.neighbours
        hdr = (p.session_tag, p.round, SERVER)
        signed = self.send("consistency", {c: ConsistencyRequest(*hdr, views[c]).encode() for c in p.clients})
        sigs = {c: decode(d).signature for c, d in signed.items() if isinstance(decode(d), ConsistencySignature)}
        requests = {}
        for c in sigs:
            view = set(views[c])
            backing = tuple(SignatureEntry(j, s) for j, s in sorted(sigs.items()) if views[j] == views[c])
            requests[c] = UnmaskRequest(*hdr, tuple(sorted(nbrs[c] & view)), tuple(sorted(nbrs[c] - view)),
                                        backing).encode()
        self_seed: dict[int, bytes] = {}
        mask_keys: dict[int, dict[int, bytes]] = {}
        for c, data in self.send("unmask", requests).items():
            m = decode(data)
            assert isinstance(m, UnmaskShares)
            for e in m.entries:
                if int(e.kind) == 0 and e.owner == victim:
                    self_seed[c + 1] = e.share
                elif int(e.kind) == 1:
                    mask_keys.setdefault(e.owner, {})[c + 1] = e.share
        return self_seed, mask_keys

    def recover(self, victim: int, self_seed: dict, mask_keys: dict) -> np.ndarray | None:
        """The victim's input from its masked vector, its self-mask seed and the pairwise masks with every
        neighbour (from the neighbours' mask keys, or the victim's own): what a successful attack yields."""
        p, t = self.params, self.params.t
        nbrs = self.server.graph.neighbours[victim]
        if len(self_seed) < t:
            return None
        if len(mask_keys.get(victim, {})) >= t:
            own = K.x25519_from_private_bytes(shamir.combine(mask_keys[victim], t))
            keys = {u: (own, self.mask_pk[u]) for u in nbrs}
        elif all(len(mask_keys.get(u, {})) >= t for u in nbrs):
            keys = {u: (K.x25519_from_private_bytes(shamir.combine(mask_keys[u], t)), self.mask_pk[victim])
                    for u in nbrs}
        else:
            return None
        y = self.masked[victim].astype(p.encoder.dtype).copy()
        terms = [(shamir.combine(self_seed, t), self_domain(victim), -1)]
        for u, (key, peer) in sorted(keys.items()):
            terms.append((pair_seed(key, peer, p.mask_context(), victim, u), pair_domain(victim, u),
                          -pairwise_sign(victim, u)))
        ex = MaskExpander(p.require_dim(), p.bits)
        ex.add_many(y, terms)
        return p.encoder.decode(ex.finish(y))


def neighbourhood_split(nbrs: dict, victim: int, t: int, k: int) -> dict[int, set[int]] | None:
    """Which neighbours each holder is shown as dropped: every neighbour ``u`` of the victim dropped for ``t``
    of its holders, no holder dropping more than ``k - t`` (so it still sees ``t`` live neighbours and
    signs), the victim never dropped. A b-matching by augmenting paths; None if the graph allows none."""
    cap = k - t
    drops: dict[int, set[int]] = {w: set() for w in nbrs}
    dropped_by: dict[int, set[int]] = {u: set() for u in nbrs[victim]}

    def place(u: int, seen: set[int]) -> bool:
        for w in sorted(nbrs[u]):
            if w in seen or w in dropped_by[u]:
                continue
            seen.add(w)
            if len(drops[w]) < cap:
                drops[w].add(u), dropped_by[u].add(w)
                return True
            for other in sorted(drops[w]):  # move one of w's drops to another holder of that neighbour
                if place(other, seen):
                    drops[w].discard(other), dropped_by[other].discard(w)
                    drops[w].add(u), dropped_by[u].add(w)
                    return True
        return False

    for u in sorted(nbrs[victim]):
        for _ in range(t):
            if not place(u, set()):
                return None
    return drops


def _attack_neighbourhood(tmp_path):  # noqa: ANN001, ANN202
    grid, reg, sites = vector_federation(tmp_path, N, DIM)
    srv = MaliciousServer(grid, reg)
    u3 = srv.relay_until_consistency()
    p, nbrs = srv.params, srv.server.graph.neighbours
    assert p.guarantee().graph == "sparse" and (p.effective_degree, p.t) == (6, 4)
    plans = {v: neighbourhood_split(nbrs, v, p.t, p.effective_degree) for v in p.clients}
    victim = next((v for v, plan in plans.items() if plan is not None), None)  # the graph: hospitals' randomness
    assert victim is not None, "no hospital's neighbourhood admits the split in this graph"
    views = {c: tuple(i for i in u3 if i not in plans[victim][c]) for c in p.clients}
    self_seed, mask_keys = srv.split(views, victim)
    truth = sites[victim - 1].vector
    return srv, victim, truth, self_seed, mask_keys


def test_neighbourhood_split_view_through_the_flower_mod_opens_nothing(tmp_path):
    srv, victim, truth, self_seed, mask_keys = _attack_neighbourhood(tmp_path)
    t, nbrs = srv.params.t, srv.server.graph.neighbours[victim]
    assert srv.recover(victim, self_seed, mask_keys) is None
    assert len(self_seed) < t or not all(len(mask_keys.get(u, {})) >= t for u in nbrs)
    assert len(mask_keys.get(victim, {})) < t
    # the honest nodes refused at unmask: no decision carried t signatures of the owner's own neighbours
    refused = [r for r in srv.refusals.values() if "fedvault/refused" in r and "confirmed the survivor set" in r]
    assert len(refused) >= len(srv.params.clients) - 1, srv.refusals


def test_control_the_same_server_opens_the_victim_when_the_consistency_rule_is_off(tmp_path, monkeypatch):
    """The attack is real: against nodes whose unmask skips the consistency rule (threshold 0 while it answers
    the unmask request; everything else honest), the server recovers the victim's exact update."""
    real = Client._on_unmask

    def without_rule(self, msg):  # noqa: ANN001, ANN202
        t, self._t = self._t, 0  # _t is only read by the consistency rule in _on_unmask
        try:
            return real(self, msg)
        finally:
            self._t = t

    monkeypatch.setattr(Client, "_on_unmask", without_rule)
    srv, victim, truth, self_seed, mask_keys = _attack_neighbourhood(tmp_path)
    got = srv.recover(victim, self_seed, mask_keys)
    assert got is not None
    np.testing.assert_allclose(got, truth, atol=1e-6)


def test_two_region_split_view_through_the_flower_mod_never_yields_both_shares(tmp_path):
    grid, reg, sites = vector_federation(tmp_path, N, DIM)
    srv = MaliciousServer(grid, reg)
    u3 = srv.relay_until_consistency()
    p, nbrs = srv.params, srv.server.graph.neighbours
    victim = p.clients[0]
    around = sorted(nbrs[victim])
    region_b = set(around[len(around) // 2:])  # half the victim's neighbours are told it dropped
    without = tuple(i for i in u3 if i != victim)
    views = {c: (without if c in region_b else u3) for c in p.clients}
    self_seed, mask_keys = srv.split(views, victim)
    t = p.t
    assert not (len(self_seed) >= t and len(mask_keys.get(victim, {})) >= t)
    assert srv.recover(victim, self_seed, mask_keys) is None
    assert any("confirmed the survivor set" in r for r in srv.refusals.values()), srv.refusals
