"""Wire messages of the packed Paillier protocol (version 1): explicit layouts, no pickle.

Every message is ``"FVPA" | version u8 (=1) | type u8 | fields``; ``u32`` is a 4-byte
big-endian integer and ``blob`` is ``length u32 | bytes``::

    1 UPLOAD            session blob | round u32 | sender u32 | key_fingerprint blob | length u32 |
                        ciphertexts blob | signature blob
    2 AGGREGATE_REQUEST session blob | round u32 | n u32 | [upload blob]*n | aggregate blob
    3 AGGREGATE_PLAIN   session blob | round u32 | n u32 | [contributor u32]*n | sums blob
    4 DECRYPTION_SHARE  session blob | round u32 | party u32 | n u32 | [contributor u32]*n |
                        values blob | e blob | z blob

Ciphertexts (and share values) are concatenated big-endian elements of ``Z_(n^2)``,
``ceil(2|n|/8)`` bytes each; slot sums are little-endian uint64. The signature is Ed25519
over :meth:`Upload.signed_bytes`. Decoding checks magic, version, type, lengths and
trailing bytes and raises only :class:`~protocols.errors.DecodeError`; semantic checks
(who, which round, signatures, sums) belong to the state machines in
:mod:`protocols.paillier`, which refuse with a precise error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedvault.protocols.errors import DecodeError, RefusedError

__all__ = ["Upload", "AggregateRequest", "AggregatePlaintext", "DecryptionShareMessage", "int_blob", "sha256_digest"]


_MAGIC = b"FVPA"
_VERSION = 1
_T_UPLOAD, _T_REQUEST, _T_PLAIN, _T_SHARE = 1, 2, 3, 4
_MAX_FIELD = 1 << 31


class _Writer:
    def __init__(self, kind: int) -> None:
        self.parts = [_MAGIC, bytes([_VERSION, kind])]

    def u32(self, x: int) -> "_Writer":
        self.parts.append(struct.pack(">I", x))
        return self

    def blob(self, b: bytes) -> "_Writer":
        self.parts.append(struct.pack(">I", len(b)))
        self.parts.append(bytes(b))
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes, kind: int) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError("message must be bytes")
        self.data, self.pos = memoryview(bytes(data)), 6
        if len(self.data) < 6 or bytes(self.data[:4]) != _MAGIC:
            raise DecodeError("not a fedvault Paillier message")
        if self.data[4] != _VERSION:
            raise DecodeError(f"unsupported message version {self.data[4]} (this code speaks {_VERSION})")
        if self.data[5] != kind:
            raise DecodeError(f"expected message type {kind}, got {self.data[5]}")

    def _take(self, k: int) -> bytes:
        if k < 0 or self.pos + k > len(self.data):
            raise DecodeError("message truncated")
        out = bytes(self.data[self.pos:self.pos + k])
        self.pos += k
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def blob(self) -> bytes:
        return self._take(self.u32())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError("trailing bytes after message")


def sha256_digest(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    for p in parts:
        h.update(p)
    return h.finalize()


@dataclass(frozen=True)
class Upload:
    """Client -> server: one client's packed ciphertexts, signed (see the module docstring)."""

    session_id: bytes
    round: int
    sender: int
    key_fingerprint: bytes
    length: int
    ciphertexts: bytes
    signature: bytes

    @staticmethod
    def signed_bytes(session_id: bytes, round: int, sender: int, key_fingerprint: bytes, length: int,
                     ciphertexts: bytes) -> bytes:
        return (b"fedvault/paillier/upload/v1\x00" + struct.pack(">B", len(session_id)) + session_id
                + struct.pack(">III", round, sender, length) + key_fingerprint + sha256_digest(ciphertexts))

    def to_bytes(self) -> bytes:
        return (_Writer(_T_UPLOAD).blob(self.session_id).u32(self.round).u32(self.sender)
                .blob(self.key_fingerprint).u32(self.length).blob(self.ciphertexts).blob(self.signature).bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Upload":
        r = _Reader(data, _T_UPLOAD)
        msg = cls(r.blob(), r.u32(), r.u32(), r.blob(), r.u32(), r.blob(), r.blob())
        r.end()
        return msg

    def verify(self, identity: Ed25519PublicKey) -> None:
        """Raise :class:`RefusedError` unless ``identity`` signed this upload."""
        try:
            identity.verify(self.signature, self.signed_bytes(self.session_id, self.round, self.sender,
                                                              self.key_fingerprint, self.length, self.ciphertexts))
        except InvalidSignature:
            raise RefusedError(f"upload of client {self.sender} is not signed by that client") from None


@dataclass(frozen=True)
class AggregateRequest:
    """Server -> decryptor(s): the signed uploads it summed and its claimed sum."""

    session_id: bytes
    round: int
    uploads: tuple[bytes, ...]
    aggregate: bytes

    def to_bytes(self) -> bytes:
        w = _Writer(_T_REQUEST).blob(self.session_id).u32(self.round).u32(len(self.uploads))
        for u in self.uploads:
            w.blob(u)
        return w.blob(self.aggregate).bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "AggregateRequest":
        r = _Reader(data, _T_REQUEST)
        sid, rnd, count = r.blob(), r.u32(), r.u32()
        if count > 1 << 20:
            raise DecodeError("too many uploads")
        ups = tuple(r.blob() for _ in range(count))
        msg = cls(sid, rnd, ups, r.blob())
        r.end()
        return msg


@dataclass(frozen=True)
class AggregatePlaintext:
    """Key holder -> server: exact slot sums (uint64, little-endian) of the named contributors."""

    session_id: bytes
    round: int
    contributors: tuple[int, ...]
    sums: bytes

    def to_bytes(self) -> bytes:
        w = _Writer(_T_PLAIN).blob(self.session_id).u32(self.round).u32(len(self.contributors))
        for c in self.contributors:
            w.u32(c)
        return w.blob(self.sums).bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "AggregatePlaintext":
        r = _Reader(data, _T_PLAIN)
        sid, rnd, count = r.blob(), r.u32(), r.u32()
        if count > 1 << 20:
            raise DecodeError("too many contributors")
        contributors = tuple(r.u32() for _ in range(count))
        msg = cls(sid, rnd, contributors, r.blob())
        r.end()
        return msg


@dataclass(frozen=True)
class DecryptionShareMessage:
    """Threshold party -> server: its decryption share of the aggregate and the proof."""

    session_id: bytes
    round: int
    party: int
    contributors: tuple[int, ...]
    values: bytes
    e: bytes
    z: bytes

    def to_bytes(self) -> bytes:
        w = _Writer(_T_SHARE).blob(self.session_id).u32(self.round).u32(self.party).u32(len(self.contributors))
        for c in self.contributors:
            w.u32(c)
        return w.blob(self.values).blob(self.e).blob(self.z).bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "DecryptionShareMessage":
        r = _Reader(data, _T_SHARE)
        sid, rnd, party, count = r.blob(), r.u32(), r.u32(), r.u32()
        if count > 1 << 20:
            raise DecodeError("too many contributors")
        contributors = tuple(r.u32() for _ in range(count))
        msg = cls(sid, rnd, party, contributors, r.blob(), r.blob(), r.blob())
        r.end()
        return msg


def int_blob(x: int) -> bytes:
    return x.to_bytes((x.bit_length() + 7) // 8 or 1, "big")
