"""The SecAgg/SecAgg+ client: a pure state machine (messages in, messages out).

Stages and transitions (anything else raises :class:`~protocols.errors.StageError`)::

    ADVERTISE --advertise()--> AWAIT_KEYS --KeyBroadcast--> AWAIT_SHARES
      --ForwardedShares (needs set_input)--> AWAIT_CONSISTENCY --ConsistencyRequest-->
      AWAIT_UNMASK --UnmaskRequest--> DONE
    any stage --refusal / bad message--> ABORTED (terminal; every later call raises StageError)

Threat model: the server and any number of other clients may be malicious; the
client reveals nothing about its input beyond the aggregate as long as fewer than
``t`` of its neighbours collude with the server.  It therefore refuses (raises a
:class:`~protocols.errors.RefusedError` subclass and aborts) whenever answering
could help the server learn both ``b_i`` and ``s_i`` of any neighbour, or its own
unmasked input:

* messages of another session or round (:class:`ReplayError`);
* keys that are unsigned, wrongly signed, duplicated, or of non-neighbours
  (:class:`SignatureError`, :class:`DuplicateClientError`, :class:`InconsistentError`);
* fewer than ``t`` live neighbours at any stage (:class:`ThresholdError`);
* ciphertexts that fail AES-GCM or name the wrong parties (:class:`TamperedError`);
* a survivor set that is not signed by ``t`` neighbours, or an unmask request
  asking for both shares of one neighbour or disagreeing with the signed survivor
  set (:class:`DoubleRevealError`, :class:`InconsistentError`);
* an input of the wrong length, NaN/inf or outside the clipping range (:class:`InputError`).

What the client learns: its neighbours' public keys, which of them survived each
stage, and the survivor set U3.  It never learns another client's input.
"""

from __future__ import annotations

import enum
import struct
from typing import Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedvault.secagg import keys as K
from fedvault.secagg import shamir
from fedvault.secagg.errors import EncodingError, IntegrityError
from fedvault.secagg.masking import mask_input, pair_domain, pair_seed, pairwise_sign
from fedvault.secagg.prg import MaskExpander, RandomSource, system_random

from ..errors import (
    DecodeError,
    DoubleRevealError,
    DuplicateClientError,
    InconsistentError,
    InputError,
    InvalidKeyError,
    ProtocolError,
    ReplayError,
    SignatureError,
    StageError,
    TamperedError,
    ThresholdError,
)
from .messages import (
    SERVER_ID,
    SALT_BYTES,
    AdvertiseKeys,
    Cohort,
    Complaint,
    GraphReveal,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardedShares,
    KeyBroadcast,
    MaskedInput,
    Message,
    ShareEntry,
    ShareKind,
    ShareKeys,
    UnmaskEntry,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from .binding import binding_key, seal
from .params import SecAggParams, share_commitment

_NONCE = bytes(12)  # each AES-GCM key encrypts exactly one message (directional, per round)


class ClientStage(enum.Enum):
    ADVERTISE = "advertise"
    AWAIT_COHORT = "await_cohort"
    AWAIT_KEYS = "await_keys"
    AWAIT_SHARES = "await_shares"
    AWAIT_CONSISTENCY = "await_consistency"
    AWAIT_UNMASK = "await_unmask"
    DONE = "done"
    ABORTED = "aborted"


def share_key_context(params: SecAggParams, sender: int, recipient: int, graph_seed: bytes = b"") -> bytes:
    """KDF context of the directional AES-256-GCM key for the shares ``sender -> recipient``."""
    return b"share-key/" + params.share_context(sender, recipient, graph_seed)


def share_key(params: SecAggParams, own: "K.X25519PrivateKey", peer_pk: bytes, sender: int, recipient: int) -> bytes:
    """Directional AES-256-GCM key for the shares ``sender -> recipient``."""
    return K.agree(own, peer_pk, share_key_context(params, sender, recipient))


def new_self_seed(rng: RandomSource) -> bytes:
    """A 255-bit self-mask seed (top bit cleared so it is a Shamir field element)."""
    b = bytearray(rng(32))
    b[0] &= 0x7F
    return bytes(b)


class Client:
    """One client's side of a SecAgg/SecAgg+ round.

    Parameters
    ----------
    params:
        The round's public parameters, with ``dim`` set.
    client_id:
        This client's id (must be in ``params.clients``).
    identity:
        Long-term Ed25519 key; its public half is in everyone's ``identity_keys``.
    identity_keys:
        Raw Ed25519 public keys of the whole cohort (the PKI).
    rng:
        Injected randomness (``os.urandom`` by default; a seeded
        :class:`~secagg.prg.DeterministicRandom` replays a round byte-for-byte).
    threads:
        Worker threads for mask expansion (the output does not depend on it).
    """

    def __init__(
        self,
        params: SecAggParams,
        client_id: int,
        identity: Ed25519PrivateKey,
        identity_keys: Mapping[int, bytes],
        rng: RandomSource = system_random,
        *,
        threads: int = 2,
    ) -> None:
        self.params = params
        self.threads = threads
        self.dim = params.require_dim()
        if client_id not in params.clients:
            raise InconsistentError(f"client {client_id} is not in the round's cohort")
        missing = set(params.clients) - set(identity_keys)
        if missing:
            raise SignatureError(f"no identity key for clients {sorted(missing)[:5]}")
        self.id = client_id
        self._identity = identity
        self._identity_keys = dict(identity_keys)
        self._rng = rng
        self._t = params.t
        self._neighbours: frozenset[int] = frozenset()  # known once the graph is revealed
        self.graph = None  # the round's graph (secagg.graph.Graph), from the hospitals' committed randomness
        self._seed = b""
        self.stage = ClientStage.ADVERTISE
        self._input: np.ndarray | None = None
        self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self._received: dict[int, tuple[bytes, bytes]] = {}  # sender -> (mask-key share, self-seed share)
        self._survivors: tuple[int, ...] | None = None
        self._revealed: dict[int, ShareKind] = {}
        self.abort_reason: str | None = None

    # -- public API -------------------------------------------------------------------
    def set_input(self, x: np.ndarray) -> None:
        """Provide this round's input: float64 values in ``[-clip, clip]`` (encoded here)
        or an already-encoded unsigned vector of the encoder's dtype (values < 2^bits).

        Raises :class:`InputError` for a wrong length, NaN/inf or out-of-range values.
        """
        if self.stage not in (ClientStage.ADVERTISE, ClientStage.AWAIT_COHORT, ClientStage.AWAIT_KEYS,
                              ClientStage.AWAIT_SHARES):
            raise StageError(f"input must be set before the masked-input stage (now {self.stage.value})")
        a = np.asarray(x)
        if a.ndim != 1 or a.shape[0] != self.dim:
            raise InputError(f"input must be a vector of length {self.dim}, got shape {a.shape}")
        enc = self.params.encoder
        try:
            if a.dtype.kind == "u":
                self._input = enc.check_encoded(a).copy()
            elif a.dtype.kind in "fi":
                self._input = enc.encode(a)
            else:
                raise InputError(f"input must be float or unsigned integers, got dtype {a.dtype}")
        except EncodingError as e:
            raise InputError(str(e)) from e

    def advertise(self) -> AdvertiseKeys:
        """Start the round: fresh X25519 keys for the share channel and for masks, signed."""
        self._expect(ClientStage.ADVERTISE)
        self._c_sk = K.generate_x25519(self._rng)
        self._s_sk = K.generate_x25519(self._rng)
        c_pk, s_pk = K.public_bytes(self._c_sk), K.public_bytes(self._s_sk)
        self._own_keys = (c_pk, s_pk)
        self._rho = self._rng(32)  # this hospital's contribution to the graph (commit now, open later)
        commit = self.params.graph_commitment(self.id, self._rho)
        self._commit = commit
        sig = K.sign(self._identity, self.params.advertise_message(self.id, c_pk, s_pk, commit))
        self.stage = ClientStage.AWAIT_COHORT
        return AdvertiseKeys(self.params.session_tag, self.params.round, self.id, c_pk, s_pk, commit, sig)

    def start(self) -> list[Message]:
        """:class:`~protocols.session.ClientRole` entry point: ``[advertise()]``."""
        return [self.advertise()]

    @property
    def done(self) -> bool:
        """True once the client has answered the unmask request (or aborted)."""
        return self.stage in (ClientStage.DONE, ClientStage.ABORTED)

    def receive(self, message: Message | bytes) -> list[Message]:
        """Handle one server message; return the messages to send back.

        Any :class:`ProtocolError` (including a refusal) moves the client to ABORTED.
        """
        if self.stage in (ClientStage.DONE, ClientStage.ABORTED):
            raise StageError(f"client {self.id} is {self.stage.value}; it accepts no more messages")
        try:
            msg = decode(message) if not isinstance(message, Message) else message
            self._check_header(msg)
            handler = {
                Cohort: (ClientStage.AWAIT_COHORT, self._on_cohort),
                KeyBroadcast: (ClientStage.AWAIT_KEYS, self._on_keys),
                ForwardedShares: (ClientStage.AWAIT_SHARES, self._on_shares),
                ConsistencyRequest: (ClientStage.AWAIT_CONSISTENCY, self._on_consistency),
                UnmaskRequest: (ClientStage.AWAIT_UNMASK, self._on_unmask),
            }.get(type(msg))
            if handler is None:
                raise StageError(f"a client never receives {type(msg).__name__}")
            self._expect(handler[0], type(msg).__name__)
            return handler[1](msg)
        except ProtocolError:
            self._abort()
            raise

    # -- internals ----------------------------------------------------------------------
    def _abort(self) -> None:
        self.stage = ClientStage.ABORTED
        self._input = None
        self._received.clear()

    def _expect(self, stage: ClientStage, what: str = "this call") -> None:
        if self.stage is not stage:
            raise StageError(f"client {self.id} got {what} in stage {self.stage.value} (expected {stage.value})")

    def _check_header(self, msg: Message) -> None:
        if msg.session != self.params.session_tag:
            raise ReplayError("message belongs to another session or parameter set")
        if msg.round != self.params.round:
            raise ReplayError(f"message is for round {msg.round}, this is round {self.params.round}")
        if msg.sender != SERVER_ID:
            raise InconsistentError("clients only accept messages from the server")

    def _on_cohort(self, msg: Cohort) -> list[Message]:
        """The list L is fixed before anyone's graph randomness is open: check it, then open ours."""
        ids = [e.client for e in msg.entries]
        if ids != sorted(set(ids)):
            raise DuplicateClientError("the round's list must be ascending without duplicates")
        unknown = set(ids) - set(self.params.clients)
        if unknown:
            raise InconsistentError(f"the round's list names clients outside the cohort: {sorted(unknown)[:5]}")
        commits = {e.client: e.commit for e in msg.entries}
        if commits.get(self.id) != self._commit:
            raise InconsistentError("the round's list omits or replaces this client's graph commitment")
        if len(ids) < self.params.min_members:
            raise ThresholdError(f"the round's list has {len(ids)} hospitals; the threat model needs at least "
                                 f"{self.params.min_members} (a smaller list concentrates colluders)")
        try:
            K.check_x25519_public(msg.server_pk)
        except IntegrityError as err:
            raise InvalidKeyError(f"the server's round key is unusable: {err}") from err
        self._bind = binding_key(self._c_sk, msg.server_pk, self.params, self.id)
        self._commits = commits
        self.stage = ClientStage.AWAIT_KEYS
        return [seal(GraphReveal(self.params.session_tag, self.params.round, self.id, self._rho), self._bind)]

    def _on_keys(self, msg: KeyBroadcast) -> list[Message]:
        reveals = {e.client: e.value for e in msg.reveals}
        if len(reveals) != len(msg.reveals) or set(reveals) != set(self._commits):
            raise InconsistentError("the graph reveals must open exactly the commitments of the round's list")
        for j, rho in reveals.items():
            if self.params.graph_commitment(j, rho) != self._commits[j]:
                raise TamperedError(f"client {j}'s graph reveal does not open its commitment")
        self._seed = self.params.graph_seed(reveals)
        self.graph = self.params.round_graph(sorted(reveals), self._seed)
        self._neighbours = self.graph.neighbours[self.id]
        ids = [e.client for e in msg.entries]
        if len(set(ids)) != len(ids):
            raise DuplicateClientError("key broadcast lists a client twice")
        allowed = self._neighbours | {self.id}
        stray = set(ids) - allowed
        if stray:
            raise InconsistentError(f"key broadcast includes non-neighbours {sorted(stray)[:5]} (graph is fixed by the parameters)")
        seen_keys: set[bytes] = set()
        peers: dict[int, tuple[bytes, bytes]] = {}
        own_seen = False
        for e in msg.entries:
            try:
                K.verify(self._identity_keys[e.client], e.signature,
                         self.params.advertise_message(e.client, e.channel_pk, e.mask_pk, e.graph_commit))
            except IntegrityError as err:
                raise SignatureError(f"keys of client {e.client} are not signed by its identity key") from err
            if e.graph_commit != self._commits.get(e.client):
                raise InconsistentError(f"client {e.client}'s keys carry another graph commitment than the list")
            for name, k in (("channel", e.channel_pk), ("mask", e.mask_pk)):
                try:
                    K.check_x25519_public(k)
                except IntegrityError as err:
                    raise InvalidKeyError(f"client {e.client} advertised an unusable {name} key: {err}") from err
                if k in seen_keys:
                    raise DuplicateClientError(f"client {e.client} reuses a public key already in the broadcast")
                seen_keys.add(k)
            if e.client == self.id:
                if (e.channel_pk, e.mask_pk) != self._own_keys:
                    raise InconsistentError("the broadcast replaced this client's own keys")
                own_seen = True
            else:
                peers[e.client] = (e.channel_pk, e.mask_pk)
        if not own_seen:
            raise InconsistentError("the broadcast omits this client's own keys")
        if len(peers) < self._t:
            raise ThresholdError(f"only {len(peers)} neighbours advertised keys; threshold is {self._t}")
        self._peer_keys = peers
        # Shamir shares of the mask key and the self-mask seed, x = recipient id + 1.
        self._b = new_self_seed(self._rng)
        xs = [j + 1 for j in sorted(peers)]
        s_shares = shamir.split(K.x25519_private_bytes(self._s_sk), self._t, xs, self._rng)
        b_shares = shamir.split(self._b, self._t, xs, self._rng)
        entries = []
        self._inbound_keys: dict[int, bytes] = {}
        for j in sorted(peers):
            salt_s, salt_b = self._rng(SALT_BYTES), self._rng(SALT_BYTES)
            pt = struct.pack(">II", self.id, j) + s_shares[j + 1] + b_shares[j + 1] + salt_s + salt_b
            cs = share_commitment(self.params, self._seed, ShareKind.MASK_KEY, self.id, j, s_shares[j + 1], salt_s)
            cb = share_commitment(self.params, self._seed, ShareKind.SELF_MASK_SEED, self.id, j, b_shares[j + 1], salt_b)
            out_key, in_key = K.agree_many(
                self._c_sk, peers[j][0],
                [share_key_context(self.params, self.id, j, self._seed), share_key_context(self.params, j, self.id, self._seed)],
            )
            self._inbound_keys[j] = in_key
            ct = AESGCM(out_key).encrypt(_NONCE, pt, self.params.share_context(self.id, j, self._seed))
            entries.append(ShareEntry(j, ct, cs, cb))
        self.stage = ClientStage.AWAIT_SHARES
        return [seal(ShareKeys(self.params.session_tag, self.params.round, self.id, tuple(entries)), self._bind)]

    def _on_shares(self, msg: ForwardedShares) -> list[Message]:
        if self._input is None:
            raise StageError("call set_input() before the masked-input stage")
        ids = [e.peer for e in msg.entries]
        if len(set(ids)) != len(ids):
            raise DuplicateClientError("forwarded shares list a sender twice")
        stray = set(ids) - set(self._peer_keys)
        if stray:
            raise InconsistentError(f"shares forwarded from clients that did not advertise to us: {sorted(stray)[:5]}")
        received = {}
        bad: dict[int, str] = {}
        for e in msg.entries:
            j = e.peer
            key = self._inbound_keys[j]
            try:
                pt = AESGCM(key).decrypt(_NONCE, e.ciphertext, self.params.share_context(j, self.id, self._seed))
            except InvalidTag:
                bad[j] = "its shares fail authentication"
                continue
            if struct.unpack(">II", pt[:8]) != (j, self.id):
                bad[j] = "its shares name the wrong sender or recipient"
                continue
            s_share, b_share, salt_s, salt_b = pt[8:40], pt[40:72], pt[72:88], pt[88:104]
            if (share_commitment(self.params, self._seed, ShareKind.MASK_KEY, j, self.id, s_share, salt_s) != e.commit_s
                    or share_commitment(self.params, self._seed, ShareKind.SELF_MASK_SEED, j, self.id, b_share, salt_b)
                    != e.commit_b):
                bad[j] = "its shares do not open its commitments"
                continue
            received[j] = (s_share, b_share, salt_s, salt_b)
        if bad:
            # Garbage from a neighbour: leave the round, but say whom it came from, so the
            # server can name it (attribution) and the next round can exclude it.
            self._abort()
            self.abort_reason = "; ".join(f"client {j}: {why}" for j, why in sorted(bad.items()))
            return [seal(Complaint(self.params.session_tag, self.params.round, self.id, tuple(sorted(bad))),
                         self._bind)]
        if len(received) < self._t:
            raise ThresholdError(f"only {len(received)} neighbours sent shares; threshold is {self._t}")
        self._received = received
        ctx = self.params.mask_context()
        seeds = {j: pair_seed(self._s_sk, self._peer_keys[j][1], ctx, self.id, j) for j in received}
        expander = MaskExpander(self.dim, self.params.bits, self.threads)
        y = mask_input(self._input, self.id, self._b, seeds, expander, in_place=True)  # the client owns _input
        self._input = None
        self.stage = ClientStage.AWAIT_CONSISTENCY
        return [seal(MaskedInput(self.params.session_tag, self.params.round, self.id, self.params.bits, y), self._bind)]

    def _on_consistency(self, msg: ConsistencyRequest) -> list[Message]:
        u3 = msg.survivors
        if len(set(u3)) != len(u3):
            raise DuplicateClientError("survivor set lists a client twice")
        if list(u3) != sorted(u3):
            raise InconsistentError("survivor set must be sorted")
        if self.id not in u3:
            raise InconsistentError("asked to confirm a survivor set that excludes this client")
        unknown = set(u3) - set(self.params.clients)
        if unknown:
            raise InconsistentError(f"survivor set names clients outside the cohort: {sorted(unknown)[:5]}")
        live = (set(u3) & self._neighbours)
        bad = live - set(self._received)
        if bad:
            raise InconsistentError(f"survivors {sorted(bad)[:5]} never sent this client their shares")
        if len(u3) < self._t or len(live) < self._t:
            raise ThresholdError(f"survivor set has {len(live)} of this client's neighbours; threshold is {self._t}")
        self._survivors = tuple(u3)
        sig = K.sign(self._identity, self.params.consistency_message(self.id, u3, self._seed))
        self.stage = ClientStage.AWAIT_UNMASK
        return [seal(ConsistencySignature(self.params.session_tag, self.params.round, self.id, sig), self._bind)]

    def _on_unmask(self, msg: UnmaskRequest) -> list[Message]:
        assert self._survivors is not None
        alive, dropped = set(msg.alive), set(msg.dropped)
        both = alive & dropped
        if both:
            raise DoubleRevealError(f"asked for both shares of clients {sorted(both)[:5]}")
        if len(alive) != len(msg.alive) or len(dropped) != len(msg.dropped):
            raise DuplicateClientError("unmask request lists a client twice")
        for j in alive | dropped:
            if j in self._revealed:
                raise DoubleRevealError(f"shares of client {j} were already revealed")
        u3 = set(self._survivors)
        expect_alive = u3 & set(self._received)
        expect_dropped = set(self._received) - u3
        if alive != expect_alive or dropped != expect_dropped:
            raise InconsistentError("the unmask request disagrees with the survivor set this client signed")
        # The neighbours' signatures on the same survivor set.
        signers = set()
        for e in msg.signatures:
            if e.client in signers:
                raise DuplicateClientError(f"signature of client {e.client} given twice")
            if e.client not in u3:
                raise InconsistentError(f"signature from client {e.client}, which is not a survivor")
            try:
                K.verify(self._identity_keys[e.client], e.signature, self.params.consistency_message(e.client, self._survivors, self._seed))
            except IntegrityError as err:
                raise SignatureError(f"client {e.client} did not sign this survivor set") from err
            signers.add(e.client)
        # The consistency rule (SPEC 1.2): a share about neighbour j is revealed only if the
        # decision about j (survived or dropped) carries the signatures of t of j's OWN
        # neighbours on this survivor set.  Honest hospitals sign one survivor set, so with
        # 2t > k + C two conflicting decisions about j cannot both carry t signatures.
        for j in sorted(alive | dropped):
            backing = len(signers & self.graph.neighbours[j])
            if backing < self._t:
                raise ThresholdError(
                    f"only {backing} of client {j}'s neighbours confirmed the survivor set; threshold is {self._t}"
                )
        entries = []
        for j in sorted(alive | dropped):
            kind = ShareKind.SELF_MASK_SEED if j in alive else ShareKind.MASK_KEY
            s_share, b_share, salt_s, salt_b = self._received[j]
            entries.append(UnmaskEntry(j, kind, b_share, salt_b) if j in alive else UnmaskEntry(j, kind, s_share, salt_s))
            self._revealed[j] = kind
        self._received.clear()
        # Dropout correction: the pairwise masks this client added for its dropped neighbours.
        # The server could compute each of them from the dropped neighbour's mask key (which the
        # shares above let it reconstruct), so this reveals nothing new; it spares the server
        # regenerating deg x dropped masks.
        corr = None
        if dropped:
            ctx = self.params.mask_context()
            terms = [(pair_seed(self._s_sk, self._peer_keys[j][1], ctx, self.id, j), pair_domain(self.id, j),
                      pairwise_sign(self.id, j)) for j in sorted(dropped)]
            ex = MaskExpander(self.dim, self.params.bits, self.threads)
            corr = np.zeros(self.dim, dtype=ex.dtype)
            ex.add_many(corr, terms)
            corr = ex.finish(corr)
        self.stage = ClientStage.DONE
        return [seal(UnmaskShares(self.params.session_tag, self.params.round, self.id, tuple(entries), corr,
                                  self.params.bits), self._bind)]


__all__ = ["Client", "ClientStage", "share_key", "share_key_context"]
