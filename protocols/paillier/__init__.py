"""Packed Paillier aggregation as sans-IO state machines, and an in-process round simulation.

Parties and messages (all bytes on the wire; nothing here opens a socket, reads a clock
or draws from a global RNG — randomness comes in as :data:`~secagg.paillier.RandomBytes`)::

    client k --Upload------------------> server     Enc(pack(x_k)), signed by k (Ed25519)
    server   --AggregateRequest--------> decryptor  all signed uploads + the claimed sum
    holder   --AggregatePlaintext------> server     slot sums of the aggregate      (keys="holder")
    party i  --DecryptionShareMessage--> server     share + proof of the aggregate  (keys="threshold")

**Signed uploads.** Client ``k`` signs
``"fedvault/paillier/upload/v1" || session_id || round || k || key fingerprint || length || SHA-256(ciphertexts)``
with its long-term Ed25519 identity key.

**What each party learns.** Clients: nothing from others. Server: ciphertexts (semantically
secure under DCR, plus the DJN assumption of :mod:`secagg.paillier`), then the aggregate.
Decryptor(s): the aggregate only. A decryptor (the holder, or each threshold party)
**refuses** (:class:`~protocols.errors.RefusedError`) unless the request carries at least
``min_clients`` uploads from distinct clients of this round, each correctly signed for this
session, round and key; it then recomputes their homomorphic sum itself and refuses if the
server's claimed sum differs. It answers at most once per ``(session_id, round)``, so a
server cannot difference two aggregates that differ by one hospital. Hence a server that
forwards one hospital's ciphertext "as the aggregate" is refused. In ``threshold`` mode no
single party holds the key: ``t`` verified shares are needed, and a forged share is
detected by its proof and discarded (:class:`~secagg.paillier_threshold.ShareVerificationError`).

Trust assumptions: the key setup (holder key generation or the threshold dealer) is
honest and the dealer forgets the factorisation; identity public keys are distributed
authentically; at least ``min_clients`` of the summed contributions come from honest
hospitals (colluding hospitals can subtract their own inputs from the aggregate).
"""

from __future__ import annotations

import enum
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from fedvault.protocols.errors import AbortError, DecodeError, ProtocolError, RefusedError, StageError
from fedvault.protocols.paillier.messages import (AggregatePlaintext, AggregateRequest, DecryptionShareMessage, Upload,
                                         int_blob, sha256_digest)
from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier import (CrtDecryptor, EncryptedVector, FastEncryptor, PackingLayout, RandomBytes,
                             ciphertext_bytes, encrypt_vector, generate_keypair, keypair_from_primes,
                             seeded_random)
from fedvault.secagg.paillier_threshold import (DecryptionShare, ShareVerificationError, ThresholdKeyShare,
                                       ThresholdPublicKey, combine, deal, decryption_share, verify_share)

__all__ = [
    "PaillierParams", "PublicSetup", "KeySetup", "setup_keys", "HOLDER_ID", "PaillierClient", "PaillierServer", "HolderDecryptor",
    "ThresholdDecryptor", "Upload", "AggregateRequest", "AggregatePlaintext", "DecryptionShareMessage",
    "RoundResult", "simulate_round", "Stage", "DEFAULT_VALUE_BITS",
]

DEFAULT_VALUE_BITS = 16
HOLDER_ID = 0
"""Party id of a key holder that is not one of the clients (a privacy officer)."""


# -- parameters -------------------------------------------------------------------------
@dataclass(frozen=True)
class PaillierParams:
    """One round's public parameters (every party must hold the same values).

    Args:
        session_id: unique per study (bound into every signature).
        round: round number (bound into every signature).
        clients: ids of the hospitals that may contribute (distinct, 1..2^32-1).
        min_clients: fewest contributions a decryptor will open (>= 2).
        keys: ``"holder"`` (one key holder decrypts) or ``"threshold"`` (t of the clients).
        key_bits: Paillier modulus size (2048 or 3072 in deployments).
        slot_bits: bits per quantised value (default 16); headroom for ``len(clients)``
            summands is added on top (see :class:`~secagg.paillier_packing.PackingLayout`).
        clip: values are clipped to ``[-clip, clip]`` before encoding.
        threshold: ``t`` for ``keys="threshold"`` (default a strict majority of the clients).
        short_exponent: DJN short-exponent encryption (a stronger assumption; see
            :mod:`secagg.paillier`).
    """

    session_id: bytes
    round: int
    clients: tuple[int, ...]
    min_clients: int
    keys: Literal["holder", "threshold"]
    key_bits: int = 2048
    slot_bits: int | None = None
    clip: float = 1.0
    threshold: int | None = None
    short_exponent: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", tuple(int(c) for c in self.clients))
        if not isinstance(self.session_id, (bytes, bytearray)) or not 1 <= len(self.session_id) <= 255:
            raise ProtocolError("session_id must be 1..255 bytes")
        if not 0 <= int(self.round) < 2 ** 32:
            raise ProtocolError("round must be in 0..2^32-1")
        if len(set(self.clients)) != len(self.clients) or not self.clients:
            raise ProtocolError("clients must be a non-empty tuple of distinct ids")
        if any(not 0 < c < 2 ** 32 for c in self.clients):
            raise ProtocolError("client ids must be in 1..2^32-1 (0 is the key holder)")
        if not 2 <= self.min_clients <= len(self.clients):
            raise ProtocolError(f"min_clients must be in 2..{len(self.clients)}: decrypting fewer than two "
                                "contributions would reveal one hospital's update")
        if self.keys not in ("holder", "threshold"):
            raise ProtocolError(f"keys must be 'holder' or 'threshold', got {self.keys!r}")
        if self.keys == "threshold" and not 2 <= self.t <= len(self.clients):
            raise ProtocolError(f"threshold must be in 2..{len(self.clients)}")
        self.layout  # validates key_bits / slot_bits / clip

    @property
    def t(self) -> int:
        """Threshold in ``threshold`` mode (default ``floor(n/2) + 1``)."""
        return self.threshold if self.threshold is not None else len(self.clients) // 2 + 1

    @property
    def layout(self) -> PackingLayout:
        """Packing with headroom for every client's contribution."""
        try:
            return PackingLayout(self.key_bits, self.slot_bits or DEFAULT_VALUE_BITS, len(self.clients),
                                 float(self.clip))
        except SecAggError as exc:
            raise ProtocolError(f"bad packing parameters: {exc}") from exc


# -- key setup (once per study) --------------------------------------------------------
@dataclass(frozen=True)
class PublicSetup:
    """What every party knows about the keys."""

    mode: Literal["holder", "threshold"]
    public_key: PaillierPublicKey
    holder: int | None = None
    parties: tuple[int, ...] = ()
    threshold_key: ThresholdPublicKey | None = None

    def fingerprint(self) -> bytes:
        """SHA-256 of the modulus (and of the threshold verification keys), bound into signatures."""
        h = hashes.Hash(hashes.SHA256())
        n = self.public_key.n
        h.update(b"fedvault/paillier/key/v1\x00" + n.to_bytes((n.bit_length() + 7) // 8, "big"))
        if self.threshold_key is not None:
            h.update(self.threshold_key.fingerprint())
        return h.finalize()

    def share_index(self, party: int) -> int:
        """Shamir index (1-based) of a threshold party."""
        return self.parties.index(party) + 1


@dataclass(eq=False)
class KeySetup:
    """The study's keys: the public part plus, for simulation, every party's secret part.

    In a deployment each secret lives with its owner only: ``holder_key`` with the key
    holder, ``shares[i]`` with hospital ``i``. ``answered`` records the rounds each
    decrypting party has already answered (a party decrypts once per round).
    """

    public: PublicSetup
    holder_key: PaillierPrivateKey | None = field(default=None, repr=False)
    shares: dict[int, ThresholdKeyShare] = field(default_factory=dict, repr=False)
    answered: dict[int, set[tuple[bytes, int]]] = field(default_factory=dict, repr=False)
    identity_seed: bytes = field(default=b"", repr=False)
    _encryptors: dict[bool, FastEncryptor] = field(default_factory=dict, repr=False)
    _decryptor: CrtDecryptor | None = field(default=None, repr=False)

    def encryptor(self, short_exponent: bool = False) -> FastEncryptor:
        """The (cached) DJN encryptor: its base is derived from ``n``, so all clients share one table."""
        if short_exponent not in self._encryptors:
            self._encryptors[short_exponent] = FastEncryptor(self.public.public_key, short_exponent=short_exponent)
        return self._encryptors[short_exponent]

    def crt_decryptor(self) -> CrtDecryptor:
        if self.holder_key is None:
            raise ProtocolError("this setup has no key holder")
        if self._decryptor is None:
            self._decryptor = CrtDecryptor(self.holder_key)
        return self._decryptor

    def simulated_identities(self, ids: Sequence[int]) -> dict[int, Ed25519PrivateKey]:
        """Deterministic Ed25519 identities for a simulation (derived from a seed drawn at setup)."""
        out = {}
        for i in ids:
            h = hashes.Hash(hashes.SHA256())
            h.update(b"fedvault/paillier/sim-identity/v1\x00" + self.identity_seed + struct.pack(">I", i))
            out[i] = Ed25519PrivateKey.from_private_bytes(h.finalize())
        return out


def setup_keys(params: PaillierParams, *, rng: RandomBytes = os.urandom, holder: int | None = None,
               keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None,
               primes: tuple[int, int] | None = None) -> KeySetup:
    """Generate the study's keys once (expensive); reuse the result for every round.

    ``holder`` mode: a fresh phe key pair (or ``keypair``, or one built from ``primes``),
    held by ``holder`` (default :data:`HOLDER_ID`, a party outside the clients).
    ``threshold`` mode: a dealer deals ``params.t``-of-``len(clients)`` shares over a
    safe-prime modulus; ``primes`` supplies precomputed safe primes (generating two
    1024-bit ones takes a while).

    Pass the study's full client list in ``params.clients``: threshold shares go to those
    hospitals, and later rounds may use any subset of them as contributors (each round's
    ``params.clients`` sets that round's slot headroom).
    """
    ident = rng(32)
    if params.keys == "holder":
        if keypair is None:
            keypair = keypair_from_primes(*primes) if primes else generate_keypair(params.key_bits)
        pk, sk = keypair
        if pk.n.bit_length() != params.key_bits:
            raise ProtocolError(f"key has {pk.n.bit_length()} bits, params say {params.key_bits}")
        who = HOLDER_ID if holder is None else int(holder)
        return KeySetup(PublicSetup("holder", pk, holder=who), holder_key=sk, identity_seed=ident)
    pub, shares = deal(len(params.clients), params.t, params.key_bits, rng=rng, safe_primes=primes)
    parties = tuple(params.clients)
    return KeySetup(PublicSetup("threshold", pub.public_key, parties=parties, threshold_key=pub),
                    shares={parties[s.index - 1]: s for s in shares}, identity_seed=ident)


# -- state machines --------------------------------------------------------------------
class Stage(enum.Enum):
    READY = "ready"            # client / decryptor before acting
    UPLOADED = "uploaded"      # client after its upload
    COLLECTING = "collecting"  # server accepting uploads
    DECRYPTING = "decrypting"  # server waiting for the plaintext or the shares
    DONE = "done"              # server has the total / decryptor has answered


def _expect(actual: Stage, *allowed: Stage) -> None:
    if actual not in allowed:
        raise StageError(f"not allowed in stage {actual.value!r} (needs {', '.join(s.value for s in allowed)})")


class PaillierClient:
    """A hospital: encrypts and signs its vector once per round."""

    def __init__(self, params: PaillierParams, public: PublicSetup, client_id: int,
                 identity: Ed25519PrivateKey, encryptor: FastEncryptor, rng: RandomBytes) -> None:
        if client_id not in params.clients:
            raise ProtocolError(f"client {client_id} is not in this round's clients")
        if encryptor.public_key.n != public.public_key.n or encryptor.short_exponent != params.short_exponent:
            raise ProtocolError("encryptor does not match the study key / exponent setting")
        self.params, self.public, self.client_id = params, public, client_id
        self._identity, self._encryptor, self._rng = identity, encryptor, rng
        self.stage = Stage.READY

    def upload(self, x: np.ndarray, *, workers: int | None = None) -> bytes:
        """Clip, pack, encrypt and sign ``x``; returns the :class:`Upload` bytes."""
        _expect(self.stage, Stage.READY)
        try:
            vec = encrypt_vector(self._encryptor, self.params.layout, np.asarray(x, dtype=np.float64),
                                 rng=self._rng, workers=workers)
        except SecAggError as exc:
            raise ProtocolError(f"client {self.client_id} cannot encrypt its update: {exc}") from exc
        cts = vec.to_bytes()
        fp = self.public.fingerprint()
        p = self.params
        sig = self._identity.sign(Upload.signed_bytes(p.session_id, p.round, self.client_id, fp, vec.length, cts))
        self.stage = Stage.UPLOADED
        return Upload(p.session_id, p.round, self.client_id, fp, vec.length, cts, sig).to_bytes()


def _verified_contributions(params: PaillierParams, public: PublicSetup, identities: Mapping[int, Ed25519PublicKey],
                            uploads: Sequence[bytes], length: int | None = None) -> tuple[list[Upload], list[EncryptedVector]]:
    """Parse and check uploads: session, round, key, membership, distinct senders, signatures, length."""
    fp = public.fingerprint()
    seen: set[int] = set()
    ups, vecs = [], []
    for raw in uploads:
        up = Upload.from_bytes(raw)
        if up.session_id != params.session_id or up.round != params.round:
            raise RefusedError(f"upload of client {up.sender} is for another session or round (replay?)")
        if up.sender not in params.clients:
            raise RefusedError(f"upload from {up.sender}, who is not a client of this round")
        if up.sender in seen:
            raise RefusedError(f"two uploads from client {up.sender}: contributions must be distinct")
        if up.key_fingerprint != fp:
            raise RefusedError(f"upload of client {up.sender} is under another key")
        if up.sender not in identities:
            raise RefusedError(f"no identity key known for client {up.sender}")
        up.verify(identities[up.sender])
        if length is not None and up.length != length:
            raise RefusedError(f"upload of client {up.sender} has {up.length} values, expected {length}")
        length = up.length
        try:
            vecs.append(EncryptedVector.from_bytes(public.public_key, params.layout, up.length, 1, up.ciphertexts))
        except SecAggError as exc:
            raise RefusedError(f"upload of client {up.sender}: {exc}") from exc
        seen.add(up.sender)
        ups.append(up)
    return ups, vecs


class PaillierServer:
    """Collects signed uploads, sums them homomorphically, and obtains the decrypted aggregate."""

    def __init__(self, params: PaillierParams, public: PublicSetup,
                 identities: Mapping[int, Ed25519PublicKey], *, workers: int | None = None) -> None:
        self.params, self.public, self.identities = params, public, dict(identities)
        self.stage = Stage.COLLECTING
        self.workers = workers
        self._uploads: dict[int, bytes] = {}
        self._vectors: dict[int, EncryptedVector] = {}
        self._length: int | None = None
        self._aggregate: EncryptedVector | None = None
        self._shares: dict[int, DecryptionShare] = {}
        self.rejected_shares: dict[int, str] = {}
        self.total: np.ndarray | None = None

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(sorted(self._uploads))

    def receive_upload(self, data: bytes) -> None:
        """Accept one client's upload (checked as a decryptor would check it)."""
        _expect(self.stage, Stage.COLLECTING)
        up = Upload.from_bytes(data)
        if up.sender in self._uploads:
            raise RefusedError(f"client {up.sender} already uploaded this round")
        _, (vec,) = _verified_contributions(self.params, self.public, self.identities, [data], self._length)
        self._length = up.length
        self._uploads[up.sender] = bytes(data)
        self._vectors[up.sender] = vec

    def aggregate(self) -> bytes:
        """Sum the uploads (``prod c_k mod n^2``) and return the :class:`AggregateRequest` for the decryptor(s)."""
        _expect(self.stage, Stage.COLLECTING)
        if len(self._uploads) < self.params.min_clients:
            raise AbortError(f"{len(self._uploads)} uploads; at least {self.params.min_clients} are needed")
        ids = self.contributors
        self._aggregate = EncryptedVector.sum([self._vectors[i] for i in ids])
        self.stage = Stage.DECRYPTING
        return AggregateRequest(self.params.session_id, self.params.round, tuple(self._uploads[i] for i in ids),
                                self._aggregate.to_bytes()).to_bytes()

    def receive_plaintext(self, data: bytes) -> np.ndarray:
        """Holder mode: decode the holder's slot sums into the float total."""
        _expect(self.stage, Stage.DECRYPTING)
        if self.public.mode != "holder":
            raise StageError("plaintext answers exist only in holder mode")
        msg = AggregatePlaintext.from_bytes(data)
        if (msg.session_id, msg.round) != (self.params.session_id, self.params.round) or \
                msg.contributors != self.contributors:
            raise ProtocolError("the holder answered for another round or another set of contributors")
        sums = np.frombuffer(msg.sums, dtype="<u8")
        if sums.size != self._length:
            raise DecodeError(f"{sums.size} sums for a vector of {self._length}")
        self.total = self.params.layout.dequantise_sum(sums.astype(np.uint64), len(self.contributors))
        self.stage = Stage.DONE
        return self.total

    def receive_share(self, data: bytes) -> np.ndarray | None:
        """Threshold mode: verify one party's share; with ``t`` valid shares, combine and return the total.

        A share that fails its proof is recorded in :attr:`rejected_shares` and ignored.
        """
        _expect(self.stage, Stage.DECRYPTING)
        if self.public.mode != "threshold" or self.public.threshold_key is None:
            raise StageError("decryption shares exist only in threshold mode")
        msg = DecryptionShareMessage.from_bytes(data)
        if (msg.session_id, msg.round) != (self.params.session_id, self.params.round) or \
                msg.contributors != self.contributors:
            raise ProtocolError(f"party {msg.party} answered for another round or another set of contributors")
        if msg.party not in self.public.parties:
            raise ProtocolError(f"{msg.party} is not a threshold party")
        assert self._aggregate is not None
        share = _share_from_message(self.public, msg, len(self._aggregate.ciphertexts))
        try:
            verify_share(self.public.threshold_key, self._aggregate.ciphertexts, share,
                         context=_share_context(self.params, self.contributors), workers=self.workers)
        except ShareVerificationError as exc:
            self.rejected_shares[msg.party] = str(exc)
            return None
        self._shares[share.index] = share
        if len(self._shares) < self.public.threshold_key.threshold:
            return None
        plain = combine(self.public.threshold_key, list(self._shares.values()))
        sums = self.params.layout.unpack(plain, self._aggregate.length)
        self.total = self.params.layout.dequantise_sum(sums, len(self.contributors))
        self.stage = Stage.DONE
        return self.total


def _share_context(params: PaillierParams, contributors: Sequence[int]) -> bytes:
    return (b"fedvault/paillier/share-context/v1\x00" + struct.pack(">B", len(params.session_id)) + params.session_id
            + struct.pack(">I", params.round) + b"".join(struct.pack(">I", c) for c in contributors))


def _share_from_message(public: PublicSetup, msg: DecryptionShareMessage, count: int) -> DecryptionShare:
    w = ciphertext_bytes(public.public_key.n.bit_length())
    if len(msg.values) != w * count:
        raise DecodeError(f"share of party {msg.party} has the wrong length")
    values = tuple(int.from_bytes(msg.values[i * w:(i + 1) * w], "big") for i in range(count))
    return DecryptionShare(public.share_index(msg.party), values, int.from_bytes(msg.e, "big"),
                           int.from_bytes(msg.z, "big"))


class _Decryptor:
    """Shared refusal logic of both decryptor kinds."""

    def __init__(self, params: PaillierParams, public: PublicSetup, identities: Mapping[int, Ed25519PublicKey],
                 answered: set[tuple[bytes, int]] | None, workers: int | None) -> None:
        self.params, self.public, self.identities = params, public, dict(identities)
        self.answered = answered if answered is not None else set()
        self.workers = workers
        self.stage = Stage.READY

    def _checked_sum(self, data: bytes) -> tuple[tuple[int, ...], EncryptedVector]:
        _expect(self.stage, Stage.READY)
        req = AggregateRequest.from_bytes(data)
        p = self.params
        if (req.session_id, req.round) != (p.session_id, p.round):
            raise RefusedError("request is for another session or round")
        if (p.session_id, p.round) in self.answered:
            raise RefusedError(f"already decrypted an aggregate for round {p.round}; "
                               "a second one could be differenced against the first")
        if len(req.uploads) < p.min_clients:
            raise RefusedError(f"request carries {len(req.uploads)} contribution(s); at least "
                               f"{p.min_clients} distinct signed contributions are required")
        ups, vecs = _verified_contributions(p, self.public, self.identities, req.uploads)
        total = EncryptedVector.sum(vecs)
        if total.to_bytes() != req.aggregate:
            raise RefusedError("the server's claimed aggregate is not the sum of the contributions it sent")
        self.answered.add((p.session_id, p.round))
        self.stage = Stage.DONE
        return tuple(sorted(u.sender for u in ups)), total


class HolderDecryptor(_Decryptor):
    """The key holder: opens only a verified aggregate of >= ``min_clients`` signed contributions."""

    def __init__(self, params: PaillierParams, public: PublicSetup, private_key: PaillierPrivateKey | CrtDecryptor,
                 identities: Mapping[int, Ed25519PublicKey], *, answered: set[tuple[bytes, int]] | None = None,
                 workers: int | None = None) -> None:
        super().__init__(params, public, identities, answered, workers)
        self._dec = private_key if isinstance(private_key, CrtDecryptor) else CrtDecryptor(private_key)
        if self._dec.n != public.public_key.n:
            raise ProtocolError("private key does not match the study key")

    def decrypt(self, request: bytes) -> bytes:
        """Check the request (see the module docstring), decrypt the sum; returns :class:`AggregatePlaintext`."""
        contributors, total = self._checked_sum(request)
        plain = self._dec.decrypt_ints(total.ciphertexts, workers=self.workers)
        sums = self.params.layout.unpack(plain, total.length)
        return AggregatePlaintext(self.params.session_id, self.params.round, contributors,
                                  sums.astype("<u8").tobytes()).to_bytes()


class ThresholdDecryptor(_Decryptor):
    """One of the ``l`` hospitals holding a key share; answers with a share of a verified aggregate."""

    def __init__(self, params: PaillierParams, public: PublicSetup, party: int, share: ThresholdKeyShare,
                 identities: Mapping[int, Ed25519PublicKey], rng: RandomBytes, *,
                 answered: set[tuple[bytes, int]] | None = None, workers: int | None = None) -> None:
        super().__init__(params, public, identities, answered, workers)
        if public.mode != "threshold" or party not in public.parties or public.share_index(party) != share.index:
            raise ProtocolError(f"party {party} does not hold share {share.index} of this key")
        self.party, self._share, self._rng = party, share, rng

    def decrypt(self, request: bytes) -> bytes:
        """Check the request, then return this party's :class:`DecryptionShareMessage` of the sum."""
        contributors, total = self._checked_sum(request)
        ds = decryption_share(self._share, total.ciphertexts, context=_share_context(self.params, contributors),
                              rng=self._rng, workers=self.workers)
        w = ciphertext_bytes(self.public.public_key.n.bit_length())
        return DecryptionShareMessage(self.params.session_id, self.params.round, self.party, contributors,
                                      b"".join(int(v).to_bytes(w, "big") for v in ds.values),
                                      int_blob(ds.e), int_blob(ds.z)).to_bytes()


# -- in-process simulation -----------------------------------------------------------------
@dataclass(frozen=True)
class RoundResult:
    """Outcome of :func:`simulate_round`.

    ``total``: decoded float sum of the contributors' clipped vectors (error at most
    ``layout.error_bound(len(contributors))`` per coordinate); ``upload_bytes``: ciphertext
    bytes each client sent; ``seconds``: ``encrypt`` (slowest client), ``sum`` (server),
    ``decrypt`` (holder, or slowest share plus the server's verification and combination).
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    upload_bytes: dict[int, int]
    seconds: dict[str, float]
    rejected_shares: dict[int, str] = field(default_factory=dict)


def _derive(seed: bytes, label: bytes, who: int) -> RandomBytes:
    return seeded_random(sha256_digest(b"fedvault/paillier/sim/v1\x00", seed, label, struct.pack(">I", who)))


def simulate_round(params: PaillierParams, setup: KeySetup, inputs: Mapping[int, np.ndarray], *, seed: bytes,
                   identities: Mapping[int, Ed25519PrivateKey] | None = None,
                   workers: int | None = None) -> RoundResult:
    """Run one encrypted round in memory, moving the wire bytes between the state machines.

    ``inputs`` maps each contributing client to its float64 vector (clients missing from
    it simply did not upload). ``setup`` comes from :func:`setup_keys` and is reused across
    rounds. Randomness derives from ``seed``, so a round replays byte for byte.
    """
    if setup.public.mode != params.keys:
        raise ProtocolError(f"setup is for keys={setup.public.mode!r}, params say {params.keys!r}")
    if len(inputs) < params.min_clients:
        raise AbortError(f"{len(inputs)} clients provided inputs; at least {params.min_clients} are needed")
    ids = identities if identities is not None else setup.simulated_identities(params.clients)
    pubs = {i: k.public_key() for i, k in ids.items()}
    enc = setup.encryptor(params.short_exponent)
    server = PaillierServer(params, setup.public, pubs, workers=workers)
    t_enc: dict[int, float] = {}
    upload_bytes: dict[int, int] = {}
    for cid in sorted(inputs):
        client = PaillierClient(params, setup.public, cid, ids[cid], enc, _derive(seed, b"client", cid))
        t0 = time.perf_counter()
        msg = client.upload(inputs[cid], workers=workers)
        t_enc[cid] = time.perf_counter() - t0
        upload_bytes[cid] = len(Upload.from_bytes(msg).ciphertexts)
        server.receive_upload(msg)
    t0 = time.perf_counter()
    request = server.aggregate()
    t_sum = time.perf_counter() - t0
    if params.keys == "holder":
        holder = setup.public.holder if setup.public.holder is not None else HOLDER_ID
        dec = HolderDecryptor(params, setup.public, setup.crt_decryptor(), pubs,
                              answered=setup.answered.setdefault(holder, set()), workers=workers)
        t0 = time.perf_counter()
        answer = dec.decrypt(request)
        t_dec = time.perf_counter() - t0
        total = server.receive_plaintext(answer)
        seconds = {"encrypt": max(t_enc.values()), "sum": t_sum, "decrypt": t_dec}
    else:
        share_times, total = [], None
        t_combine = 0.0
        for party in setup.public.parties:
            dec = ThresholdDecryptor(params, setup.public, party, setup.shares[party], pubs,
                                     _derive(seed, b"party", party),
                                     answered=setup.answered.setdefault(party, set()), workers=workers)
            t0 = time.perf_counter()
            answer = dec.decrypt(request)
            share_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            total = server.receive_share(answer)
            t_combine += time.perf_counter() - t0
            if total is not None:
                break
        if total is None:
            raise AbortError(f"fewer than {params.t} valid decryption shares: {server.rejected_shares}")
        seconds = {"encrypt": max(t_enc.values()), "sum": t_sum, "decrypt": max(share_times) + t_combine,
                   "share": max(share_times), "combine": t_combine}
    return RoundResult(np.asarray(total, dtype=np.float64), server.contributors, upload_bytes, seconds,
                       dict(server.rejected_shares))
