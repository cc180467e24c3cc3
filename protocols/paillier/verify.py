"""Checks every party applies to an upload (the server on arrival, each decryptor again).

In order, cheapest first; each failure is a typed refusal naming the sender:
header (session tag and round: :class:`ReplayError`), membership and key fingerprint
(:class:`InconsistentError`), Ed25519 signature by the sender's identity key
(:class:`SignatureError`), sizes (:class:`InputError`), every ciphertext a unit of
``Z*_(n^2)`` (:class:`CiphertextError`), the proof of plaintext knowledge bound to
session, round, sender and key (:class:`ProofError`).
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier import EncryptedVector, ciphertext_bytes
from fedvault.secagg.paillier_proofs import PlaintextProof, ProofError as _PrimitiveProofError
from fedvault.secagg.paillier_proofs import djn_hs, verify_vector

from ..errors import CiphertextError, InconsistentError, InputError, ProofError, ReplayError, SignatureError
from .messages import SignedMessage, Upload, elements
from .params import PaillierParams, PublicSetup

__all__ = ["UploadVerifier", "proof_context", "identity_keys"]


def proof_context(params: PaillierParams, sender: int, fingerprint: bytes, length: int) -> bytes:
    """What a proof of plaintext knowledge is bound to: session tag, round, sender, key, vector length."""
    return (b"fedvault/paillier/upload-proof/v1\x00" + params.session_tag
            + struct.pack(">III", params.round, sender, length) + fingerprint)


@functools.lru_cache(maxsize=8)
def _hs(n: int) -> Any:
    return djn_hs(n)


def identity_keys(identities: Mapping[int, Ed25519PublicKey | bytes]) -> dict[int, Ed25519PublicKey]:
    """Normalise ``{id: Ed25519 public key or its 32 raw bytes}``."""
    return {int(i): (k if isinstance(k, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(bytes(k)))
            for i, k in identities.items()}


class UploadVerifier:
    """Verifies uploads for one round under one key."""

    def __init__(self, params: PaillierParams, public: PublicSetup,
                 identities: Mapping[int, Ed25519PublicKey | bytes], *, workers: int | None = None) -> None:
        self.params, self.public = params, public
        self.identities = identity_keys(identities)
        self.workers = workers
        self.fingerprint = public.fingerprint()
        self.tag = params.session_tag
        self.width = ciphertext_bytes(public.public_key.n.bit_length())
        self.h_s = _hs(public.public_key.n)
        if params.key_bits != public.public_key.n.bit_length():
            raise InconsistentError(f"params say {params.key_bits}-bit keys, the study key has "
                                    f"{public.public_key.n.bit_length()} bits")

    def check_signature(self, msg: SignedMessage, what: str) -> None:
        """:class:`SignatureError` unless the sender's identity key signed ``msg``."""
        key = self.identities.get(msg.sender)
        if key is None:
            raise SignatureError(f"no identity key known for {what} {msg.sender}")
        try:
            key.verify(msg.signature, msg.signed_bytes())
        except InvalidSignature:
            raise SignatureError(f"{type(msg).__name__} of {what} {msg.sender} is not signed by it") from None

    def check_header(self, up: Upload) -> None:
        if up.session != self.tag:
            raise ReplayError(f"upload of client {up.sender} belongs to another session or parameter set")
        if up.round != self.params.round:
            raise ReplayError(f"upload of client {up.sender} is for round {up.round}, this is round {self.params.round}")

    def check(self, up: Upload, length: int | None = None) -> EncryptedVector:
        """Every check of the module docstring; returns the parsed ciphertexts."""
        p, i = self.params, up.sender
        self.check_header(up)
        if i not in p.clients:
            raise InconsistentError(f"upload from {i}, who is not a client of this round")
        if up.key_fingerprint != self.fingerprint:
            raise InconsistentError(f"upload of client {i} is under another key")
        self.check_signature(up, "client")
        if length is not None and up.length != length:
            raise InputError(f"upload of client {i} has {up.length} values, expected {length}")
        if up.width != self.width or up.count != p.layout.ciphertexts_for(up.length) or up.length == 0:
            raise InputError(f"upload of client {i}: {up.count} ciphertexts of {up.width} bytes do not hold "
                             f"{up.length} values under this key and layout")
        try:
            vec = EncryptedVector.from_bytes(self.public.public_key, p.layout, up.length, 1, up.ciphertexts)
        except SecAggError as exc:
            raise CiphertextError(f"upload of client {i}: {exc}") from exc
        a, zm, za = elements(up.proof, self.width)
        try:
            verify_vector(self.h_s, vec, PlaintextProof(a, zm, za),
                          context=proof_context(p, i, self.fingerprint, up.length), workers=self.workers)
        except _PrimitiveProofError as exc:
            raise ProofError(f"upload of client {i}: {exc}") from exc
        return vec
