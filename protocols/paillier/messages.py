"""Wire messages of the packed Paillier protocol (version 1) on the common codec.

Every message is ``HEADER || PAYLOAD`` in the format of :mod:`protocols.codec` (magic
``FVPA``; session tag = :attr:`PaillierParams.session_tag`; ``sender`` = the client, the
key holder (0), the threshold party, or ``0xFFFFFFFF`` for the server).  ``w`` is the
width of one element of ``Z_(n^2)`` (``ceil(2|n|/8)`` bytes), ``v`` that of one element
of ``Z_n`` (``ceil(|n|/8)``); elements are big-endian, fixed width::

    1 UPLOAD             key_fingerprint 32 | length u32 | w u16 | count u32 | ciphertexts count*w |
                         proof 3*w (A, z_m, z_a) | signature 64                          client -> server
    2 AGGREGATE_REQUEST  n u32 | [upload blob]*n  (each a complete UPLOAD message)        server -> decryptor(s)
    3 AGGREGATE_PLAIN    contributors ids | v u16 | count u32 | plaintexts count*v | signature 64
                                                                                          holder -> server
    4 DECRYPTION_SHARE   contributors ids | w u16 | count u32 | values count*w | e 32 | z blob |
                         signature 64  (z minimal big-endian: no leading zero byte)     party -> server

Every message a party sends to the server (types 1, 3, 4) ends with an Ed25519 signature
by the sender's identity key over ``"fedvault/paillier/<type name>/v1" || <the encoded
message without its last 64 bytes>`` -- header included, so session, round, sender and
stage (the type) are signed.  Constructors check every
field's size and range (raising :class:`~protocols.errors.FieldError`); decoding checks
those and the exact layout, and raises only :class:`~protocols.errors.DecodeError`
subclasses.  Which key, which round, signatures, proofs, unit checks and sums belong to
the roles, which refuse with a precise, attributed error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from ..codec import MAX_ENTRIES, Message, Reader, Writer, check_bytes, check_ids, check_u32, decoder, register
from ..errors import DecodeError, FieldError

__all__ = ["MAGIC", "MessageType", "PaillierMessage", "Upload", "AggregateRequest", "AggregatePlaintext",
           "DecryptionShare", "SignedMessage", "signed", "decode", "elements", "pack_elements", "SIG_BYTES", "FINGERPRINT_BYTES", "MAX_WIDTH"]

MAGIC = b"FVPA"
SIG_BYTES = 64
FINGERPRINT_BYTES = 32
E_BYTES = 32
MAX_WIDTH = 2048  # bytes of one element: up to 8192-bit n^2


class MessageType(enum.IntEnum):
    UPLOAD = 1
    AGGREGATE_REQUEST = 2
    AGGREGATE_PLAINTEXT = 3
    DECRYPTION_SHARE = 4


def _check_width(w: int) -> None:
    if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= MAX_WIDTH:
        raise FieldError(f"element width must be in 1..{MAX_WIDTH} bytes, got {w!r}")


def _check_elements(name: str, data: bytes, width: int) -> None:
    check_bytes(name, data)
    if len(data) % width:
        raise FieldError(f"{name} is not a whole number of {width}-byte elements")
    if len(data) // width > MAX_ENTRIES:
        raise FieldError(f"{name} has more than {MAX_ENTRIES} elements")


def _read_elements(r: Reader) -> tuple[int, bytes]:
    w = r.u16()
    _check_width(w)
    count = r.count(w)
    return w, r.fixed(count * w)


def _write_elements(wr: Writer, width: int, data: bytes) -> Writer:
    return wr.u16(width).u32(len(data) // width).raw(data)


def elements(data: bytes, width: int) -> list[int]:
    """Split concatenated fixed-width big-endian elements into integers."""
    return [int.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]


def pack_elements(values, width: int) -> bytes:
    """Inverse of :func:`elements` (values must fit in ``width`` bytes)."""
    try:
        return b"".join(int(v).to_bytes(width, "big") for v in values)
    except OverflowError as e:
        raise FieldError(f"an element does not fit in {width} bytes") from e


@dataclass(frozen=True)
class PaillierMessage(Message):
    """A Paillier message: the common header (magic ``FVPA``); subclasses add the payload."""

    PROTOCOL: ClassVar[bytes] = MAGIC
    TYPE: ClassVar[MessageType]


@dataclass(frozen=True)
class SignedMessage(PaillierMessage):
    """A party -> server message whose last field is the sender's Ed25519 signature."""

    def _unsigned(self) -> bytes:  # overridden: the payload without the signature
        raise NotImplementedError

    def _payload(self) -> bytes:
        return self._unsigned() + bytes(self.signature)  # type: ignore[attr-defined]

    def signed_bytes(self) -> bytes:
        """What the sender's identity key signs: domain || header || payload without the signature."""
        return b"fedvault/paillier/" + self.TYPE.name.lower().encode() + b"/v1\x00" + self.header() + self._unsigned()


@register
@dataclass(frozen=True)
class Upload(SignedMessage):
    """Client -> server: one client's packed ciphertexts, its proof of plaintext knowledge, signed."""

    key_fingerprint: bytes
    length: int
    width: int
    ciphertexts: bytes
    proof: bytes
    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.UPLOAD
    STAGE: ClassVar[str] = "upload"

    def _validate(self) -> None:
        check_bytes("key_fingerprint", self.key_fingerprint, FINGERPRINT_BYTES)
        check_u32("length", self.length)
        _check_width(self.width)
        _check_elements("ciphertexts", self.ciphertexts, self.width)
        if not self.ciphertexts:
            raise FieldError("an upload holds at least one ciphertext")
        check_bytes("proof", self.proof, 3 * self.width)
        check_bytes("signature", self.signature, SIG_BYTES)

    @property
    def count(self) -> int:
        return len(self.ciphertexts) // self.width

    def _unsigned(self) -> bytes:
        w = Writer().raw(self.key_fingerprint).u32(self.length)
        return _write_elements(w, self.width, self.ciphertexts).raw(self.proof).getvalue()

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "Upload":
        fp, length = r.fixed(FINGERPRINT_BYTES), r.u32()
        w, cts = _read_elements(r)
        return cls(*h, fp, length, w, cts, r.fixed(3 * w), r.fixed(SIG_BYTES))


@register
@dataclass(frozen=True)
class AggregateRequest(PaillierMessage):
    """Server -> decryptor(s): the uploads to sum (each verified again by the decryptor)."""

    uploads: tuple[Upload, ...]
    TYPE: ClassVar[MessageType] = MessageType.AGGREGATE_REQUEST
    STAGE: ClassVar[str] = "decrypt"
    CACHE_WIRE: ClassVar[bool] = False

    def _validate(self) -> None:
        if not isinstance(self.uploads, tuple) or any(not isinstance(u, Upload) for u in self.uploads):
            raise FieldError("uploads must be a tuple of Upload messages")
        if len(self.uploads) > MAX_ENTRIES:
            raise FieldError(f"more than {MAX_ENTRIES} uploads")

    def _payload(self) -> bytes:
        w = Writer().u32(len(self.uploads))
        for u in self.uploads:
            w.blob(u.encode())
        return w.getvalue()

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "AggregateRequest":
        n = r.count(4)
        ups = []
        for _ in range(n):
            try:
                m = decode(r.blob())
            except DecodeError as e:
                raise FieldError(f"upload {len(ups)} in the request is malformed: {e}") from e
            if not isinstance(m, Upload):
                raise FieldError(f"entry {len(ups)} of the request is a {type(m).__name__}, not an Upload")
            ups.append(m)
        return cls(*h, tuple(ups))


@register
@dataclass(frozen=True)
class AggregatePlaintext(SignedMessage):
    """Key holder -> server: the decrypted plaintexts of the homomorphic sum of the named contributors."""

    contributors: tuple[int, ...]
    width: int
    plaintexts: bytes
    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.AGGREGATE_PLAINTEXT
    STAGE: ClassVar[str] = "decrypt"

    def _validate(self) -> None:
        check_ids("contributors", self.contributors)
        _check_width(self.width)
        _check_elements("plaintexts", self.plaintexts, self.width)
        check_bytes("signature", self.signature, SIG_BYTES)

    def _unsigned(self) -> bytes:
        return _write_elements(Writer().ids(self.contributors), self.width, self.plaintexts).getvalue()

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "AggregatePlaintext":
        ids = r.ids()
        w, data = _read_elements(r)
        return cls(*h, ids, w, data, r.fixed(SIG_BYTES))


@register
@dataclass(frozen=True)
class DecryptionShare(SignedMessage):
    """Threshold party -> server: its decryption share of every summed ciphertext, with the batched proof."""

    contributors: tuple[int, ...]
    width: int
    values: bytes
    e: bytes
    z: int
    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.DECRYPTION_SHARE
    STAGE: ClassVar[str] = "decrypt"

    def _validate(self) -> None:
        check_ids("contributors", self.contributors)
        _check_width(self.width)
        _check_elements("values", self.values, self.width)
        check_bytes("e", self.e, E_BYTES)
        if not isinstance(self.z, int) or isinstance(self.z, bool) or self.z < 0 or self.z.bit_length() > 8 * 65536:
            raise FieldError("z must be a non-negative integer of at most 64 KiB")
        check_bytes("signature", self.signature, SIG_BYTES)

    def _unsigned(self) -> bytes:
        zb = self.z.to_bytes((self.z.bit_length() + 7) // 8, "big")
        return _write_elements(Writer().ids(self.contributors), self.width, self.values).raw(self.e).blob(zb).getvalue()

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "DecryptionShare":
        ids = r.ids()
        w, data = _read_elements(r)
        e = r.fixed(E_BYTES)
        zb = r.blob(max_len=65536)
        if zb[:1] == b"\0":
            raise FieldError("z is not minimally encoded (leading zero byte)")
        return cls(*h, ids, w, data, e, int.from_bytes(zb, "big"), r.fixed(SIG_BYTES))


def signed(msg: SignedMessage, identity) -> SignedMessage:
    """``msg`` with its signature field set by ``identity`` (an Ed25519 private key) over :meth:`signed_bytes`."""
    import dataclasses

    return dataclasses.replace(msg, signature=identity.sign(msg.signed_bytes()))


decode = decoder(MAGIC)
"""Parse wire bytes into a Paillier message; raises :class:`DecodeError` (only) if they are not one."""
