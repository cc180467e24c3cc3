"""The decrypting roles: the key holder, and the threshold share-holders.

Stages (each decryptor)::

    WAITING --AggregateRequest (every check passes, round claimed)--> ANSWERED
    WAITING --refusal--> ABORTED (terminal)

On an :class:`AggregateRequest` a decryptor, in this order, and before anything that
uses its key:

1. checks the header (session tag, round) and that the request carries at least
   ``min_clients`` uploads from *distinct* clients of this round;
2. verifies every upload as the server did (:class:`UploadVerifier`: signature, key,
   sizes, units, proof of plaintext knowledge) -- so no contribution is a function of
   another hospital's ciphertexts;
3. computes the homomorphic sum itself;
4. claims ``(session_id, round)`` in its :class:`DecryptLog` with the contributor set
   and the sum's digest (:class:`AlreadyAnsweredError` if it answered a different set
   before -- also after a restart, when the log is durable);
5. answers: the holder the plaintexts of the sum (:class:`AggregatePlaintext`; it does
   not unpack them, so no check that depends on the decrypted value can fail after the
   claim), a share-holder its decryption share with proof (:class:`DecryptionShare`).

What a decryptor learns: the contributor set and ciphertexts (semantically secure), and
the holder the sum.  A refusal reveals nothing about any plaintext.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from typing import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from phe.paillier import PaillierPrivateKey

from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier import CrtDecryptor, EncryptedVector, RandomBytes, ciphertext_bytes
from fedvault.secagg.paillier_threshold import ThresholdKeyShare, decryption_share

from ..codec import SERVER_ID, Message
from ..errors import (CiphertextError, DuplicateClientError, InconsistentError, ProtocolError, ReplayError,
                      StageError, ThresholdError)
from .decrypt_log import DecryptLog, record_bytes
from .messages import AggregatePlaintext, AggregateRequest, DecryptionShare, decode, pack_elements, signed
from .params import PaillierParams, PublicSetup
from .verify import UploadVerifier

__all__ = ["DecryptorStage", "HolderDecryptor", "ThresholdParty", "share_context"]


class DecryptorStage(enum.Enum):
    WAITING = "waiting"
    ANSWERED = "answered"
    ABORTED = "aborted"


def share_context(params: PaillierParams, contributors: tuple[int, ...]) -> bytes:
    """What a decryption share's proof is bound to: session tag, round and the contributor set."""
    return (b"fedvault/paillier/share-context/v2\x00" + params.session_tag + struct.pack(">I", params.round)
            + b"".join(struct.pack(">I", c) for c in contributors))


def aggregate_digest(total: EncryptedVector) -> bytes:
    return hashlib.sha256(total.to_bytes()).digest()


class _Decryptor:
    """Checks and decrypt-once logic shared by both decryptor kinds."""

    def __init__(self, params: PaillierParams, public: PublicSetup, party: int, identity: Ed25519PrivateKey,
                 identities: Mapping[int, Ed25519PublicKey | bytes], log: DecryptLog,
                 workers: int | None) -> None:
        if not isinstance(log, DecryptLog):
            raise ProtocolError("a decryptor needs a DecryptLog (its decrypt-once record)")
        self.params, self.public, self.party = params, public, party
        self._identity = identity
        self.verifier = UploadVerifier(params, public, identities, workers=workers)
        self.log = log
        self.workers = workers
        self.stage = DecryptorStage.WAITING
        self.contributors: tuple[int, ...] = ()

    @property
    def done(self) -> bool:
        return self.stage is not DecryptorStage.WAITING

    def start(self) -> list[Message]:
        """A decryptor speaks only when asked."""
        return []

    def receive(self, data: bytes | Message) -> list[Message]:
        if self.stage is not DecryptorStage.WAITING:
            raise StageError(f"decryptor {self.party} is {self.stage.value}; it answers once per round")
        try:
            req = decode(data) if not isinstance(data, Message) else data
            if not isinstance(req, AggregateRequest):
                raise StageError(f"a decryptor only answers AggregateRequest, got {type(req).__name__}")
            contributors, total = self._checked_sum(req)
            self.log.claim(self.params.session_id, self.params.round, record_bytes(contributors, aggregate_digest(total)))
            out = signed(self._answer(contributors, total), self._identity)
        except ProtocolError:
            self.stage = DecryptorStage.ABORTED
            raise
        self.contributors = contributors
        self.stage = DecryptorStage.ANSWERED
        return [out]

    def _checked_sum(self, req: AggregateRequest) -> tuple[tuple[int, ...], EncryptedVector]:
        p = self.params
        if req.session != p.session_tag or req.round != p.round:
            raise ReplayError("request is for another session, parameter set or round")
        if req.sender != SERVER_ID:
            raise InconsistentError("aggregate requests come from the server")
        senders = [u.sender for u in req.uploads]
        if len(set(senders)) != len(senders):
            raise DuplicateClientError("the request carries two uploads of one client: contributions must be distinct")
        if len(senders) < p.min_clients:
            raise ThresholdError(f"request carries {len(senders)} contribution(s); at least {p.min_clients} "
                                 "distinct proven contributions are required")
        length = req.uploads[0].length
        vecs = [self.verifier.check(u, length) for u in req.uploads]
        try:
            total = EncryptedVector.sum(vecs)
        except SecAggError as exc:  # cannot happen after the checks; typed anyway
            raise CiphertextError(f"cannot sum the uploads: {exc}") from exc
        order = sorted(range(len(senders)), key=senders.__getitem__)
        return tuple(senders[k] for k in order), total

    def _answer(self, contributors: tuple[int, ...], total: EncryptedVector) -> Message:  # overridden
        raise NotImplementedError


class HolderDecryptor(_Decryptor):
    """The key holder: opens only the sum of >= ``min_clients`` verified, proven contributions, once per round."""

    def __init__(self, params: PaillierParams, public: PublicSetup, private_key: PaillierPrivateKey | CrtDecryptor,
                 identity: Ed25519PrivateKey, identities: Mapping[int, Ed25519PublicKey | bytes], *,
                 log: DecryptLog, workers: int | None = None) -> None:
        if public.mode != "holder" or public.holder is None:
            raise ProtocolError("a holder decryptor needs a holder-mode setup")
        super().__init__(params, public, int(public.holder), identity, identities, log, workers)
        self._dec = private_key if isinstance(private_key, CrtDecryptor) else CrtDecryptor(private_key)
        if self._dec.n != public.public_key.n:
            raise ProtocolError("private key does not match the study key")

    def _answer(self, contributors: tuple[int, ...], total: EncryptedVector) -> Message:
        plain = self._dec.decrypt_ints(total.ciphertexts, workers=self.workers)
        v = (self.public.public_key.n.bit_length() + 7) // 8
        p = self.params
        return AggregatePlaintext(p.session_tag, p.round, self.party, contributors, v, pack_elements(plain, v),
                                  bytes(64))


class ThresholdParty(_Decryptor):
    """One of the ``l`` hospitals holding a key share: answers with a proven share of a verified sum."""

    def __init__(self, params: PaillierParams, public: PublicSetup, party: int, share: ThresholdKeyShare,
                 identity: Ed25519PrivateKey, identities: Mapping[int, Ed25519PublicKey | bytes], rng: RandomBytes,
                 *, log: DecryptLog, workers: int | None = None) -> None:
        if public.mode != "threshold" or party not in public.parties or public.share_index(party) != share.index:
            raise ProtocolError(f"party {party} does not hold share {share.index} of this key")
        super().__init__(params, public, party, identity, identities, log, workers)
        self._share, self._rng = share, rng

    def _answer(self, contributors: tuple[int, ...], total: EncryptedVector) -> Message:
        ds = decryption_share(self._share, total.ciphertexts, context=share_context(self.params, contributors),
                              rng=self._rng, workers=self.workers)
        w = ciphertext_bytes(self.public.public_key.n.bit_length())
        p = self.params
        return DecryptionShare(p.session_tag, p.round, self.party, contributors, w, pack_elements(ds.values, w),
                               int(ds.e).to_bytes(32, "big"), int(ds.z), bytes(64))
