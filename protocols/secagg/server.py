"""The SecAgg/SecAgg+ server: a pure state machine with an explicit stage deadline.

The transport calls :meth:`Server.receive` for every client message and
:meth:`Server.advance` when the current stage's deadline passes (the server has no
clock).  ``advance`` closes the stage, decides who survived it, and returns the
messages to send, keyed by client id::

    ADVERTISE --advance--> SHARE --advance--> MASKED_INPUT --advance--> CONSISTENCY
      --advance--> UNMASK --advance--> DONE (result available)
    any advance that cannot meet the threshold --> ABORTED (raises AbortError)

Survivor sets: U1 advertised keys, U2 sent shares, U3 sent masked inputs (their
inputs are in the sum), U4 confirmed U3, U5 sent unmask shares.  Clients lost
before U2 are pruned (a remaining client with fewer than ``t`` live neighbours is
removed too, repeatedly); from U3 on, the round aborts unless every secret it needs
has ``t`` live holders.

What the server learns: the sum over U3 of the encoded inputs (mod 2^bits), who
dropped when, and - for clients dropped after sharing - their mask keys (never their
self-mask seeds, so a late input stays hidden).  A single masked input is uniform
to it.  Malformed, replayed, unsigned, duplicate or out-of-stage client messages
are refused (the error is raised to the transport; the message is ignored and the
round goes on).
"""

from __future__ import annotations

import enum
from typing import Mapping

import numpy as np

from fedvault.secagg import keys as K
from fedvault.secagg import shamir
from fedvault.secagg.encoding import ring_reduce
from fedvault.secagg.errors import IntegrityError, ParameterError
from fedvault.secagg.masking import dropped_pair_removal_terms, pair_seed, self_mask_removal_terms
from fedvault.secagg.prg import MaskExpander, RandomSource, system_random

from ..errors import (
    AbortError,
    BindingError,
    DuplicateClientError,
    InconsistentError,
    InputError,
    InvalidKeyError,
    ReplayError,
    SignatureError,
    StageError,
    TamperedError,
)
from .messages import (
    SERVER_ID,
    AdvertiseKeys,
    Cohort,
    Complaint,
    CommitEntry,
    GraphReveal,
    RevealEntry,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardedShares,
    KeyBroadcast,
    KeyEntry,
    MaskedInput,
    Message,
    ShareEntry,
    ShareKeys,
    ShareKind,
    SignatureEntry,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from .binding import binding_key, verify
from .params import SecAggParams, share_commitment


class ServerStage(enum.Enum):
    ADVERTISE = "advertise"
    REVEAL = "reveal"
    SHARE = "share"
    MASKED_INPUT = "masked_input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


STAGES = ("advertise", "reveal", "share", "masked_input", "consistency", "unmask")

_EXPECTED = {
    ServerStage.ADVERTISE: AdvertiseKeys,
    ServerStage.REVEAL: GraphReveal,
    ServerStage.SHARE: ShareKeys,
    ServerStage.MASKED_INPUT: MaskedInput,
    ServerStage.CONSISTENCY: ConsistencySignature,
    ServerStage.UNMASK: UnmaskShares,
}


def _prune(alive: set[int], nbrs: Mapping[int, frozenset[int]], t: int) -> set[int]:
    """Largest subset where every member keeps >= t neighbours inside it (t-core)."""
    alive = set(alive)
    changed = True
    while changed:
        changed = False
        for i in sorted(alive):
            if len(nbrs[i] & alive) < t:
                alive.discard(i)
                changed = True
    return alive


class Server:
    """The aggregator's side of one round (honest-but-curious; robust to malicious clients)."""

    def __init__(self, params: SecAggParams, identity_keys: Mapping[int, bytes], *, threads: int = 2,
                 rng: RandomSource = system_random) -> None:
        """``threads``: worker threads for mask regeneration (results do not depend on it).
        ``rng``: randomness of the server's per-round binding key (``os.urandom`` by default)."""
        self.params = params
        self._sk = K.generate_x25519(rng)
        self._bind: dict[int, bytes] = {}
        self._share_commits: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self.blame: dict[int, list[str]] = {}
        """Misbehaviour proven against a client (its own authenticated messages): id -> reasons."""
        self.disputes: list[tuple[int, int]] = []
        """``(accuser, accused)``: a client refused a neighbour's shares (one of the two misbehaved)."""
        self.threads = threads
        self.dim = params.require_dim()
        missing = set(params.clients) - set(identity_keys)
        if missing:
            raise SignatureError(f"no identity key for clients {sorted(missing)[:5]}")
        self._identity_keys = dict(identity_keys)
        self._t = params.t
        self._cohort = frozenset(params.clients)
        self._nbrs: Mapping[int, frozenset[int]] = {}  # the round's graph, once every commitment is open
        self.graph = None
        self._seed = b""
        self._reveals: dict[int, bytes] = {}
        self._complained: set[int] = set()
        self.stage = ServerStage.ADVERTISE
        self._keys: dict[int, AdvertiseKeys] = {}
        self._pk_seen: set[bytes] = set()
        self._u1set: set[int] = set()
        self._u2set: set[int] = set()
        self._u3set: set[int] = set()
        self._u4set: set[int] = set()
        self._shares: dict[int, ShareKeys] = {}
        self._acc = np.zeros(self.dim, dtype=params.encoder.dtype)
        self._masked: set[int] = set()
        self._sigs: dict[int, bytes] = {}
        self._unmask: dict[int, UnmaskShares] = {}
        self.u1: tuple[int, ...] = ()
        self.u2: tuple[int, ...] = ()
        self.u3: tuple[int, ...] = ()
        self.u4: tuple[int, ...] = ()
        self.u5: tuple[int, ...] = ()
        self.dropped: dict[str, list[int]] = {}
        self.result: np.ndarray | None = None

    # -- receiving ---------------------------------------------------------------------
    def receive(self, message: Message | bytes) -> None:
        """Take one client message.  Refusals raise a :class:`ProtocolError` subclass and
        leave the server's state unchanged (the transport logs and carries on)."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            raise StageError(f"server is {self.stage.value}; it accepts no more messages")
        msg = decode(message) if not isinstance(message, Message) else message
        if msg.session != self.params.session_tag:
            raise ReplayError("message belongs to another session or parameter set")
        if msg.round != self.params.round:
            raise ReplayError(f"message is for round {msg.round}, this is round {self.params.round}")
        i = msg.sender
        if i not in self._cohort:
            raise InconsistentError(f"sender {i} is not in the cohort")
        expected = _EXPECTED[self.stage]
        if not isinstance(msg, expected) and not (self.stage is ServerStage.MASKED_INPUT and isinstance(msg, Complaint)):
            raise StageError(f"got {type(msg).__name__} in stage {self.stage.value} (expected {expected.__name__})")
        if not isinstance(msg, AdvertiseKeys):
            key = self._bind.get(i)
            if key is None:
                raise InconsistentError(f"client {i} is not in the round's list")
            data = message if not isinstance(message, Message) else message.encode()
            if not verify(data, msg.TYPE, key):
                raise BindingError(f"a {type(msg).__name__} claiming to come from client {i} is not bound to its "
                                   f"round key (forged sender, replayed from another round or stage, or altered)")
        if isinstance(msg, Complaint):
            return self._on_complaint(i, msg)
        {
            ServerStage.ADVERTISE: self._on_advertise,
            ServerStage.REVEAL: self._on_reveal,
            ServerStage.SHARE: self._on_shares,
            ServerStage.MASKED_INPUT: self._on_masked,
            ServerStage.CONSISTENCY: self._on_signature,
            ServerStage.UNMASK: self._on_unmask,
        }[self.stage](i, msg)

    def _on_advertise(self, i: int, msg: AdvertiseKeys) -> None:
        if i in self._keys:
            raise DuplicateClientError(f"client {i} already advertised keys")
        try:
            K.verify(self._identity_keys[i], msg.signature, self.params.advertise_message(i, msg.channel_pk, msg.mask_pk,
                                                                                   msg.graph_commit))
        except IntegrityError as e:
            raise SignatureError(f"keys of client {i} are not signed by its identity key") from e
        for name, pk in (("channel", msg.channel_pk), ("mask", msg.mask_pk)):
            try:
                K.check_x25519_public(pk)
            except IntegrityError as e:
                self._blame(i, f"advertised an unusable {name} key")
                raise InvalidKeyError(f"client {i} advertised an unusable {name} key: {e}") from e
        if msg.channel_pk in self._pk_seen or msg.mask_pk in self._pk_seen or msg.channel_pk == msg.mask_pk:
            raise DuplicateClientError(f"client {i} reuses public keys already advertised")
        self._pk_seen.update((msg.channel_pk, msg.mask_pk))
        self._keys[i] = msg

    def _blame(self, i: int, why: str) -> None:
        self.blame.setdefault(i, []).append(why)

    def _on_complaint(self, i: int, msg: Complaint) -> None:
        if i not in self._u2set or i in self._masked or i in self._complained:
            raise InconsistentError(f"client {i} cannot complain now")
        stray = set(msg.accused) - (self._nbrs[i] & self._u2set)
        if stray or not msg.accused:
            raise InconsistentError(f"client {i} accuses non-neighbours {sorted(stray)[:5]}")
        self._complained.add(i)
        self.disputes.extend((i, j) for j in msg.accused)

    def _on_reveal(self, i: int, msg: GraphReveal) -> None:
        if i not in self._u1set:
            raise InconsistentError(f"client {i} is not in the round's list")
        if i in self._reveals:
            raise DuplicateClientError(f"client {i} already opened its graph commitment")
        if self.params.graph_commitment(i, msg.value) != self._keys[i].graph_commit:
            self._blame(i, "its graph reveal does not open its commitment")
            raise TamperedError(f"client {i}'s graph reveal does not open its commitment")
        self._reveals[i] = msg.value

    def _on_shares(self, i: int, msg: ShareKeys) -> None:
        if i not in self._u1set:
            raise InconsistentError(f"client {i} sent shares but is not in U1")
        if i in self._shares:
            raise DuplicateClientError(f"client {i} already sent shares")
        recipients = [e.peer for e in msg.entries]
        if len(set(recipients)) != len(recipients):
            raise DuplicateClientError(f"client {i} sent two ciphertexts to one recipient")
        if set(recipients) != self._nbrs[i] & self._u1set:
            raise InconsistentError(f"client {i} must send exactly one ciphertext to each live neighbour")
        self._shares[i] = msg
        for e in msg.entries:
            self._share_commits[(i, e.peer)] = (e.commit_s, e.commit_b)

    def _on_masked(self, i: int, msg: MaskedInput) -> None:
        if i not in self._u2set:
            raise InconsistentError(f"client {i} sent a masked input but is not in U2")
        if i in self._masked:
            raise DuplicateClientError(f"client {i} already sent its masked input")
        if msg.bits != self.params.bits or msg.vector.shape != (self.dim,):
            raise InputError(f"masked input of client {i} must be {self.dim} words of {self.params.bits} bits")
        np.add(self._acc, msg.vector, out=self._acc)
        self._masked.add(i)

    def _on_signature(self, i: int, msg: ConsistencySignature) -> None:
        if i not in self._u3set:
            raise InconsistentError(f"client {i} is not a survivor")
        if i in self._sigs:
            raise DuplicateClientError(f"client {i} already confirmed")
        try:
            K.verify(self._identity_keys[i], msg.signature, self.params.consistency_message(i, self.u3, self._seed))
        except IntegrityError as e:
            raise SignatureError(f"client {i}'s signature does not cover the survivor set") from e
        self._sigs[i] = msg.signature

    def _on_unmask(self, i: int, msg: UnmaskShares) -> None:
        if i not in self._u4set:
            raise InconsistentError(f"client {i} was not asked to unmask")
        if i in self._unmask:
            raise DuplicateClientError(f"client {i} already sent unmask shares")
        alive, dropped = self._expected_reveal(i)
        got = {e.owner: e.kind for e in msg.entries}
        if len(got) != len(msg.entries):
            raise DuplicateClientError(f"client {i} sent two shares of one owner")
        want = {j: ShareKind.SELF_MASK_SEED for j in alive} | {j: ShareKind.MASK_KEY for j in dropped}
        if got != want:
            raise InconsistentError(f"client {i} revealed shares other than those requested")
        good, bad = [], []
        for e in msg.entries:  # verifiable shares: each must open the owner's commitment to this holder
            cs, cb = self._share_commits[(e.owner, i)]
            want_c = cb if e.kind is ShareKind.SELF_MASK_SEED else cs
            if share_commitment(self.params, self._seed, e.kind, e.owner, i, e.share, e.salt) != want_c:
                bad.append(f"revealed a {e.kind.name.lower().replace('_', '-')} share of client {e.owner} that does not open its commitment")
            else:
                good.append(e)
        c = msg.correction
        if dropped and (c is None or msg.bits != self.params.bits or c.shape != (self.dim,)):
            raise InputError(f"client {i} must send the correction for its dropped neighbours: {self.dim} words of "
                             f"{self.params.bits} bits")
        if not dropped and c is not None:
            raise InconsistentError(f"client {i} sent a correction but none of its neighbours dropped")
        if c is not None:
            np.subtract(self._acc, c, out=self._acc)  # its pairwise masks with dropped neighbours
        if not bad:
            self._unmask[i] = msg
            return
        # Each share is checked against its own (binding) commitment, so those that open are
        # correct: keep them (and the correction) and exclude only the bad ones (redteam:
        # refusing the whole message let one forged share veto a round in which some client
        # had exactly t surviving holders).
        import dataclasses

        self._unmask[i] = dataclasses.replace(msg, entries=tuple(good))
        for why in bad:
            self._blame(i, why)
        raise TamperedError(f"client {i} {bad[0]}; its {len(bad)} bad share(s) are excluded, its {len(good)} "
                            "valid share(s) kept")

    # -- stage deadline ----------------------------------------------------------------
    def advance(self) -> dict[int, Message]:
        """Close the current stage (its deadline passed); return ``{client: message}`` to send.

        Raises :class:`AbortError` (and moves to ABORTED) when the threshold can no
        longer be met; nothing private has been revealed at that point.
        """
        fn = {
            ServerStage.ADVERTISE: self._close_advertise,
            ServerStage.REVEAL: self._close_reveal,
            ServerStage.SHARE: self._close_share,
            ServerStage.MASKED_INPUT: self._close_masked,
            ServerStage.CONSISTENCY: self._close_consistency,
            ServerStage.UNMASK: self._close_unmask,
        }.get(self.stage)
        if fn is None:
            raise StageError(f"server is {self.stage.value}; nothing to advance")
        try:
            return fn()
        except (AbortError, ParameterError) as e:
            self.stage = ServerStage.ABORTED
            self._acc = None  # type: ignore[assignment]
            if isinstance(e, AbortError):
                raise
            raise AbortError(str(e)) from e

    def _hdr(self) -> tuple[bytes, int, int]:
        return (self.params.session_tag, self.params.round, SERVER_ID)

    def _abort_if(self, cond: bool, why: str) -> None:
        if cond:
            extra = ""
            if self.blame:
                extra += "; misbehaved: " + "; ".join(f"client {i}: {', '.join(r)}" for i, r in sorted(self.blame.items()))
            if self.disputes:
                extra += "; disputes (accuser -> accused): " + ", ".join(f"{a} -> {b}" for a, b in self.disputes)
            raise AbortError(f"round aborted, nothing was revealed: {why}{extra}")

    def _close_advertise(self) -> dict[int, Message]:
        # The list L is fixed here, before any graph randomness is open (commit-reveal).
        u1 = set(self._keys)
        need = self.params.min_members
        self._abort_if(len(u1) < need, f"only {len(u1)} clients advertised keys; the threat model needs {need}")
        self.u1 = tuple(sorted(u1))
        self._u1set = u1
        self.dropped["advertise"] = sorted(set(self.params.clients) - u1)
        server_pk = K.public_bytes(self._sk)
        for j in self.u1:
            self._bind[j] = binding_key(self._sk, self._keys[j].channel_pk, self.params, j)
        msg = Cohort(*self._hdr(), server_pk, tuple(CommitEntry(j, self._keys[j].graph_commit) for j in self.u1))
        self.stage = ServerStage.REVEAL
        return {i: msg for i in self.u1}

    def _close_reveal(self) -> dict[int, Message]:
        missing = sorted(self._u1set - set(self._reveals))
        # Any member of L that does not open its commitment stops the round (dropping it now
        # would let the server choose among graphs); it is named so the next round excludes it.
        self._abort_if(bool(missing), f"clients {missing[:10]} committed to graph randomness but did not open it; "
                                      f"exclude them from the next round")
        self._seed = self.params.graph_seed(self._reveals)
        self.graph = self.params.round_graph(self.u1, self._seed)
        self._nbrs = self.graph.neighbours
        u1 = _prune(set(self.u1), self._nbrs, self._t)
        self._abort_if(len(u1) < max(2, self._t), f"only {len(u1)} clients have {self._t} neighbours in the list")
        self.dropped["reveal"] = sorted(set(self.u1) - u1)
        reveals = tuple(RevealEntry(j, self._reveals[j]) for j in self.u1)
        out: dict[int, Message] = {}
        for i in sorted(u1):
            ids = sorted((self._nbrs[i] & u1) | {i})
            es = tuple(KeyEntry(j, self._keys[j].channel_pk, self._keys[j].mask_pk, self._keys[j].graph_commit,
                                self._keys[j].signature) for j in ids)
            out[i] = KeyBroadcast(*self._hdr(), es, reveals)
        self._u1set = u1
        self.stage = ServerStage.SHARE
        return out

    def _close_share(self) -> dict[int, Message]:
        u2 = _prune(set(self._shares), self._nbrs, self._t)
        self._abort_if(len(u2) < max(2, self._t), f"only {len(u2)} clients shared keys with {self._t} live neighbours")
        self.u2 = tuple(sorted(u2))
        self._u2set = u2
        self.dropped["share"] = sorted(set(self.u1) - u2)
        inbox: dict[int, list[ShareEntry]] = {i: [] for i in self.u2}
        for j in self.u2:
            for e in self._shares[j].entries:
                if e.peer in u2:
                    inbox[e.peer].append(ShareEntry(j, e.ciphertext, e.commit_s, e.commit_b))
        self.stage = ServerStage.MASKED_INPUT
        return {i: ForwardedShares(*self._hdr(), tuple(inbox[i])) for i in self.u2}

    def _close_masked(self) -> dict[int, Message]:
        u3 = set(self._masked)
        u2 = set(self.u2)
        self._abort_if(len(u3) < max(2, self._t), f"only {len(u3)} masked inputs arrived; threshold is {self._t}")
        for i in sorted(u2):
            live = len(self._nbrs[i] & u3)
            self._abort_if(live < self._t, f"client {i} has only {live} live neighbours holding its shares; threshold is {self._t}")
        self.u3 = tuple(sorted(u3))
        self._u3set = u3
        self.dropped["masked_input"] = sorted(u2 - u3)
        self.stage = ServerStage.CONSISTENCY
        request = ConsistencyRequest(*self._hdr(), self.u3)  # the same message for every survivor
        return {i: request for i in self.u3}

    def _expected_reveal(self, i: int) -> tuple[list[int], list[int]]:
        holders = self._nbrs[i] & self._u2set
        return sorted(holders & self._u3set), sorted(holders - self._u3set)

    def _close_consistency(self) -> dict[int, Message]:
        # A client reveals a share about j only if t of j's neighbours confirmed (SPEC 1.2).
        u4 = set(self._sigs)
        for j in self.u2:
            have = len(self._nbrs[j] & u4)
            self._abort_if(have < self._t, f"only {have} neighbours of client {j} confirmed the survivor set; threshold is {self._t}")
        self.u4 = tuple(sorted(u4))
        self._u4set = u4
        self.dropped["consistency"] = sorted(set(self.u3) - u4)
        out: dict[int, Message] = {}
        entries = {j: SignatureEntry(j, self._sigs[j]) for j in sorted(u4)}
        everyone = tuple(entries.values())  # one shared tuple (validated and encoded once)
        for i in self.u4:
            alive, dropped = self._expected_reveal(i)
            # the signatures of every neighbour of every client i reveals about (two hops);
            # when that is most of U4, everyone's (the same object for all, encoded once)
            backers = set(self._nbrs[i])
            for j in alive + dropped:
                backers |= self._nbrs[j]
            backers &= u4
            sigs = everyone if 2 * len(backers) > len(u4) else tuple(entries[j] for j in sorted(backers))
            out[i] = UnmaskRequest(*self._hdr(), tuple(alive), tuple(dropped), sigs)
        self.stage = ServerStage.UNMASK
        return out

    def _close_unmask(self) -> dict[int, Message]:
        u5 = set(self._unmask)
        self.u5 = tuple(sorted(u5))
        self.dropped["unmask"] = sorted(set(self.u4) - u5)
        u3 = set(self.u3)
        shares: dict[tuple[int, ShareKind], dict[int, bytes]] = {}
        for i in self.u5:
            for e in self._unmask[i].entries:
                shares.setdefault((e.owner, e.kind), {})[i + 1] = e.share
        t = self._t
        expander = MaskExpander(self.dim, self.params.bits, self.threads)
        self_seeds: dict[int, bytes] = {}
        for j in self.u3:
            got = shares.get((j, ShareKind.SELF_MASK_SEED), {})
            self._abort_if(len(got) < t, f"only {len(got)} shares of client {j}'s self mask arrived; threshold is {t}")
            self_seeds[j] = shamir.combine(got, t)
        dropped_keys: dict[int, bytes] = {}
        # Survivors that answered already removed their masks with dropped neighbours
        # (corrections); only pairs with survivors that vanished since need the mask key.
        missing: dict[int, list[int]] = {}
        for j in sorted(set(self.u2) - u3):
            missing[j] = sorted((self._nbrs[j] & u3) - u5)
            if not missing[j]:
                continue
            got = shares.get((j, ShareKind.MASK_KEY), {})
            self._abort_if(len(got) < t, f"only {len(got)} shares of dropped client {j}'s mask key arrived; threshold is {t}")
            sk = shamir.combine(got, t)
            try:
                key = K.x25519_from_private_bytes(sk)
                ok = K.public_bytes(key) == self._keys[j].mask_pk
            except (ValueError, ParameterError):
                ok = False
            self._abort_if(not ok, f"the reconstructed mask key of client {j} does not match its advertised key (bad shares)")
            dropped_keys[j] = sk
        acc = self._acc
        terms = self_mask_removal_terms(self_seeds)
        ctx = self.params.mask_context()
        for j, sk in dropped_keys.items():
            key = K.x25519_from_private_bytes(sk)
            seeds = {k: pair_seed(key, self._keys[k].mask_pk, ctx, j, k) for k in missing[j]}
            terms += dropped_pair_removal_terms(j, seeds)
        expander.add_many(acc, terms)
        self.result = ring_reduce(acc, self.params.bits)
        self.stage = ServerStage.DONE
        return {}

    # -- result ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the round is over (DONE with :attr:`result`, or ABORTED)."""
        return self.stage in (ServerStage.DONE, ServerStage.ABORTED)

    @property
    def survivors(self) -> tuple[int, ...]:
        """U3: the clients whose inputs are in :attr:`result`."""
        return self.u3
