"""Wire messages of the SecAgg/SecAgg+ protocol (version 1): explicit layouts, no pickle.

Every message is ``HEADER || PAYLOAD`` in the common codec of :mod:`protocols.codec`
(the one for every protocol); integers are unsigned big-endian except the masked
vector's words, which are little-endian (so receivers can map them without
copying).  The header (32 bytes, ``struct`` format ``>4sBBH16sII``)::

    magic   4  b"FVSA"
    version 1  1
    type    1  MessageType
    flags   2  0 (reserved, must be zero)
    session 16 session tag: SHA-256 of the session id and every round parameter (see SecAggParams)
    round   4  round number
    sender  4  client id, or 0xFFFFFFFF for the server

Payloads (``u32`` = 4-byte count or id; ``[X]*n`` = n repetitions)::

    1 ADVERTISE_KEYS      channel_pk 32 | mask_pk 32 | graph_commit 32 | signature 64
   10 COHORT              n u32 | [client u32 | graph_commit 32]*n
   11 GRAPH_REVEAL        rho 32
    2 KEY_BROADCAST       n u32 | [client u32 | channel_pk 32 | mask_pk 32 | graph_commit 32 | signature 64]*n
                          | m u32 | [client u32 | rho 32]*m
    3 SHARE_KEYS          n u32 | [recipient u32 | ciphertext 88]*n
    4 FORWARDED_SHARES    n u32 | [sender u32 | ciphertext 88]*n
    5 MASKED_INPUT        bits u8 | pad 3 (zero) | dim u32 | words (dim * 4 if bits <= 32 else dim * 8,
                          little-endian; they start at byte 40, so a receiver maps them aligned)
    6 CONSISTENCY_REQUEST n u32 | [client u32]*n
    7 CONSISTENCY_SIG     signature 64
    8 UNMASK_REQUEST      na u32 | [alive u32]*na | nd u32 | [dropped u32]*nd | ns u32 | [client u32 | signature 64]*ns
    9 UNMASK_SHARES       n u32 | [owner u32 | kind u8 | share 32 | salt 16]*n   (kind 0: self-mask seed, 1: mask key)
                          | flag u8 | bits u8 | pad 2 | dim u32 | [word]*dim if flag   (dropout correction)

Decoding checks the exact length, magic, version, type, reserved bits, and each
field's range; anything else raises :class:`~protocols.errors.DecodeError` and
nothing else.  Semantic checks (who may send what, duplicates, signatures) belong to
the state machines, so that they can be refused with a precise error.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from ..codec import HEADER_BYTES, SERVER_ID, SESSION_TAG_BYTES, VERSION, Reader, decoder, register
from ..codec import Message as _WireMessage
from ..codec import check_bytes as _check_bytes
from ..codec import check_ids as _check_ids
from ..codec import check_u32 as _check_u32
from ..errors import DecodeError, FieldError

__all__ = [
    "MAGIC", "VERSION", "SERVER_ID", "HEADER_BYTES", "SESSION_TAG_BYTES", "MessageType", "ShareKind", "KeyEntry",
    "ShareEntry", "SignatureEntry", "CommitEntry", "RevealEntry", "Cohort", "GraphReveal", "Complaint", "TAG_BYTES", "SALT_BYTES", "UnmaskEntry", "Message", "AdvertiseKeys", "KeyBroadcast", "ShareKeys",
    "ForwardedShares", "MaskedInput", "ConsistencyRequest", "ConsistencySignature", "UnmaskRequest",
    "UnmaskShares", "decode", "word_dtype",
]

MAGIC = b"FVSA"
KEY_BYTES = 32
SIG_BYTES = 64
SHARE_BYTES = 32
SALT_BYTES = 16
TAG_BYTES = 16  # sender-binding tag (AES-GMAC under the sender's key with the server) on every client message
COMMIT_BYTES = 32
SHARE_PLAINTEXT_BYTES = 4 + 4 + SHARE_BYTES + SHARE_BYTES + SALT_BYTES + SALT_BYTES
CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + 16  # AES-GCM tag
_U32 = struct.Struct(">I")


class MessageType(enum.IntEnum):
    ADVERTISE_KEYS = 1
    KEY_BROADCAST = 2
    SHARE_KEYS = 3
    FORWARDED_SHARES = 4
    MASKED_INPUT = 5
    CONSISTENCY_REQUEST = 6
    CONSISTENCY_SIGNATURE = 7
    UNMASK_REQUEST = 8
    UNMASK_SHARES = 9
    COHORT = 10
    GRAPH_REVEAL = 11
    COMPLAINT = 12


class ShareKind(enum.IntEnum):
    SELF_MASK_SEED = 0
    MASK_KEY = 1


class KeyEntry(NamedTuple):
    client: int
    channel_pk: bytes
    mask_pk: bytes
    graph_commit: bytes
    signature: bytes


class CommitEntry(NamedTuple):
    client: int
    commit: bytes


class RevealEntry(NamedTuple):
    client: int
    value: bytes


class ShareEntry(NamedTuple):
    peer: int  # recipient in SHARE_KEYS, sender in FORWARDED_SHARES
    ciphertext: bytes
    commit_s: bytes  # commitment to the mask-key share inside (checked by the holder and at reconstruction)
    commit_b: bytes  # commitment to the self-mask-seed share inside


class SignatureEntry(NamedTuple):
    client: int
    signature: bytes


class UnmaskEntry(NamedTuple):
    owner: int
    kind: ShareKind
    share: bytes
    salt: bytes  # opens the owner's commitment to this share


class _SharedParts:
    """Validation and encoding of a large immutable entry tuple that the server puts into
    many messages (every hospital's reveals, the survivors' signatures) are done once per
    tuple object: the cache holds the tuple itself, so its id cannot be reused meanwhile."""

    def __init__(self, size: int = 4) -> None:
        self._items: list[tuple[tuple, bytes | None]] = []
        self._size = size

    def _find(self, t: tuple):
        for k, (obj, blob) in enumerate(self._items):
            if obj is t:
                return k
        return None

    def validated(self, t: tuple, check) -> None:
        if len(t) < 64:
            check(t)
            return
        if self._find(t) is None:
            check(t)
            self._items = (self._items + [(t, None)])[-self._size:]

    def payload(self, t: tuple, encode) -> bytes:
        if len(t) < 64:
            return encode(t)
        k = self._find(t)
        if k is not None and self._items[k][1] is not None:
            return self._items[k][1]
        blob = encode(t)
        if k is None:
            self._items = (self._items + [(t, blob)])[-self._size:]
        else:
            self._items[k] = (t, blob)
        return blob


_SHARED = _SharedParts()


def _ids(ids: tuple[int, ...]) -> bytes:
    return _U32.pack(len(ids)) + b"".join(_U32.pack(i) for i in ids)


def _read_ids(r: Reader) -> tuple[int, ...]:
    return r.ids()


# --------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message(_WireMessage):
    """A SecAgg message: the common header of :mod:`protocols.codec` (magic ``FVSA``); subclasses add the payload."""

    PROTOCOL: ClassVar[bytes] = MAGIC
    TYPE: ClassVar[MessageType]


@register
@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Client -> server: per-round X25519 public keys signed with the identity key."""

    channel_pk: bytes
    mask_pk: bytes
    graph_commit: bytes
    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_KEYS

    def _validate(self) -> None:
        _check_bytes("channel_pk", self.channel_pk, KEY_BYTES)
        _check_bytes("mask_pk", self.mask_pk, KEY_BYTES)
        _check_bytes("graph_commit", self.graph_commit, KEY_BYTES)
        _check_bytes("signature", self.signature, SIG_BYTES)

    def _payload(self) -> bytes:
        return bytes(self.channel_pk) + bytes(self.mask_pk) + bytes(self.graph_commit) + bytes(self.signature)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "AdvertiseKeys":
        return cls(*h, bytes(r.take(32)), bytes(r.take(32)), bytes(r.take(32)), bytes(r.take(64)))


@register
@dataclass(frozen=True)
class KeyBroadcast(Message):
    """Server -> client: the signed keys of the client's neighbours that advertised (and its own)."""

    entries: tuple[KeyEntry, ...]
    reveals: tuple[RevealEntry, ...]
    TYPE: ClassVar[MessageType] = MessageType.KEY_BROADCAST

    def _validate(self) -> None:
        for e in self.entries:
            _check_u32("client", e.client)
            _check_bytes("channel_pk", e.channel_pk, KEY_BYTES)
            _check_bytes("mask_pk", e.mask_pk, KEY_BYTES)
            _check_bytes("graph_commit", e.graph_commit, KEY_BYTES)
            _check_bytes("signature", e.signature, SIG_BYTES)
        _SHARED.validated(self.reveals, _check_reveals)

    def _payload(self) -> bytes:
        return (_U32.pack(len(self.entries)) + b"".join(
            _U32.pack(e.client) + bytes(e.channel_pk) + bytes(e.mask_pk) + bytes(e.graph_commit) + bytes(e.signature)
            for e in self.entries
        ) + _SHARED.payload(self.reveals, _encode_reveals))

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "KeyBroadcast":
        n = r.count(164)
        es = tuple(KeyEntry(r.u32(), bytes(r.take(32)), bytes(r.take(32)), bytes(r.take(32)), bytes(r.take(64)))
                   for _ in range(n))
        m = r.count(36)
        rs = tuple(RevealEntry(r.u32(), bytes(r.take(32))) for _ in range(m))
        return cls(*h, es, rs)


def _check_reveals(reveals: tuple) -> None:
    for e in reveals:
        _check_u32("client", e.client)
        _check_bytes("reveal", e.value, KEY_BYTES)


def _encode_reveals(reveals: tuple) -> bytes:
    return _U32.pack(len(reveals)) + b"".join(_U32.pack(e.client) + bytes(e.value) for e in reveals)


def _check_sigs(sigs: tuple) -> None:
    for e in sigs:
        _check_u32("client", e.client)
        _check_bytes("signature", e.signature, SIG_BYTES)


def _encode_sigs(sigs: tuple) -> bytes:
    return _U32.pack(len(sigs)) + b"".join(_U32.pack(e.client) + bytes(e.signature) for e in sigs)


@register
@dataclass(frozen=True)
class Cohort(Message):
    """Server -> client: the round's list L (every hospital whose advertisement it kept) with
    their graph commitments, and nothing else: fixed before any commitment is opened."""

    server_pk: bytes  # the server's X25519 key of this round: every later client message is bound to it
    entries: tuple[CommitEntry, ...]
    TYPE: ClassVar[MessageType] = MessageType.COHORT

    def _validate(self) -> None:
        _check_bytes("server_pk", self.server_pk, KEY_BYTES)
        for e in self.entries:
            _check_u32("client", e.client)
            _check_bytes("commit", e.commit, KEY_BYTES)

    def _payload(self) -> bytes:
        return bytes(self.server_pk) + _U32.pack(len(self.entries)) + b"".join(
            _U32.pack(e.client) + bytes(e.commit) for e in self.entries)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "Cohort":
        pk = bytes(r.take(32))
        n = r.count(36)
        return cls(*h, pk, tuple(CommitEntry(r.u32(), bytes(r.take(32))) for _ in range(n)))


@register
@dataclass(frozen=True)
class GraphReveal(Message):
    """Client -> server: the random value ``rho`` opening the client's graph commitment."""

    value: bytes
    tag: bytes = bytes(TAG_BYTES)
    TYPE: ClassVar[MessageType] = MessageType.GRAPH_REVEAL

    def _validate(self) -> None:
        _check_bytes("reveal", self.value, KEY_BYTES)
        _check_bytes("tag", self.tag, TAG_BYTES)

    def _payload(self) -> bytes:
        return bytes(self.value) + bytes(self.tag)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "GraphReveal":
        return cls(*h, bytes(r.take(32)), bytes(r.take(TAG_BYTES)))


def _share_entries_payload(entries: tuple[ShareEntry, ...]) -> bytes:
    return _U32.pack(len(entries)) + b"".join(
        _U32.pack(e.peer) + bytes(e.ciphertext) + bytes(e.commit_s) + bytes(e.commit_b) for e in entries)


_SHARE_ENTRY = 4 + CIPHERTEXT_BYTES + 2 * COMMIT_BYTES


def _parse_share_entries(r: Reader) -> tuple[ShareEntry, ...]:
    n = r.count(_SHARE_ENTRY)
    block = bytes(r.take(n * _SHARE_ENTRY))  # one read, then slices (hundreds of entries per message)
    c1, c2 = 4 + CIPHERTEXT_BYTES, 4 + CIPHERTEXT_BYTES + COMMIT_BYTES
    out = []
    for o in range(0, len(block), _SHARE_ENTRY):
        e = block[o:o + _SHARE_ENTRY]
        out.append(ShareEntry(int.from_bytes(e[:4], "big"), e[4:c1], e[c1:c2], e[c2:]))
    return tuple(out)


def _validate_share_entries(entries: tuple[ShareEntry, ...]) -> None:
    for e in entries:
        if not (type(e.peer) is int and 0 <= e.peer <= 0xFFFFFFFF and type(e.ciphertext) is bytes
                and len(e.ciphertext) == CIPHERTEXT_BYTES and type(e.commit_s) is bytes
                and len(e.commit_s) == COMMIT_BYTES and type(e.commit_b) is bytes and len(e.commit_b) == COMMIT_BYTES):
            _check_u32("peer", e.peer)  # the precise error
            _check_bytes("ciphertext", e.ciphertext, CIPHERTEXT_BYTES)
            _check_bytes("commit_s", e.commit_s, COMMIT_BYTES)
            _check_bytes("commit_b", e.commit_b, COMMIT_BYTES)


@register
@dataclass(frozen=True)
class ShareKeys(Message):
    """Client -> server: AES-GCM encrypted Shamir shares, one per neighbour (``peer`` = recipient)."""

    entries: tuple[ShareEntry, ...]
    tag: bytes = bytes(TAG_BYTES)
    TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS

    def _validate(self) -> None:
        _validate_share_entries(self.entries)
        _check_bytes("tag", self.tag, TAG_BYTES)

    def _payload(self) -> bytes:
        return _share_entries_payload(self.entries) + bytes(self.tag)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "ShareKeys":
        return cls(*h, _parse_share_entries(r), bytes(r.take(TAG_BYTES)))


@register
@dataclass(frozen=True)
class ForwardedShares(Message):
    """Server -> client: the ciphertexts addressed to the client (``peer`` = original sender)."""

    entries: tuple[ShareEntry, ...]
    TYPE: ClassVar[MessageType] = MessageType.FORWARDED_SHARES

    def _validate(self) -> None:
        _validate_share_entries(self.entries)

    def _payload(self) -> bytes:
        return _share_entries_payload(self.entries)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "ForwardedShares":
        return cls(*h, _parse_share_entries(r))


def word_dtype(bits: int) -> np.dtype:
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


@register
@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Client -> server: ``y_i`` in Z_(2^bits) (words little-endian; values < 2^bits)."""

    bits: int
    vector: np.ndarray
    tag: bytes = bytes(TAG_BYTES)
    TYPE: ClassVar[MessageType] = MessageType.MASKED_INPUT
    CACHE_WIRE: ClassVar[bool] = False

    def _validate(self) -> None:
        if not isinstance(self.bits, int) or not (16 <= self.bits <= 64):
            raise FieldError(f"bits must be in [16, 64], got {self.bits!r}")
        v = self.vector
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind != "u" or v.dtype.itemsize != word_dtype(self.bits).itemsize:
            raise FieldError(f"vector must be a 1-d array of {word_dtype(self.bits)} words")
        _check_u32("dim", v.shape[0])
        if v.size and self.bits not in (32, 64) and int(v.max()) >> self.bits:
            raise FieldError(f"vector has words >= 2^{self.bits}")
        _check_bytes("tag", self.tag, TAG_BYTES)

    def _payload(self) -> bytes:
        wd = word_dtype(self.bits)
        return (bytes([self.bits, 0, 0, 0]) + _U32.pack(self.vector.shape[0])
                + self.vector.astype(wd, copy=False).tobytes() + bytes(self.tag))

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "MaskedInput":
        bits = r.u8()
        if not (16 <= bits <= 64):
            raise FieldError(f"bits must be in [16, 64], got {bits}")
        if bytes(r.take(3)) != b"\0\0\0":
            raise FieldError("padding bytes of MASKED_INPUT must be zero")
        wd = word_dtype(bits)
        dim = r.u32()
        raw = r.take(dim * wd.itemsize)
        vec = np.frombuffer(raw, dtype=wd)
        if wd.byteorder not in ("=", "|") and not np.little_endian:  # pragma: no cover - big-endian hosts
            vec = vec.astype(wd.newbyteorder("="))
        return cls(*h, bits, vec, bytes(r.take(TAG_BYTES)))


@register
@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Server -> client: the survivor set U3 (clients whose masked input the server holds)."""

    survivors: tuple[int, ...]
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_REQUEST

    def _validate(self) -> None:
        _check_ids("survivors", self.survivors)

    def _payload(self) -> bytes:
        return _ids(self.survivors)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "ConsistencyRequest":
        return cls(*h, _read_ids(r))


@register
@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Client -> server: Ed25519 signature of the survivor set it was shown."""

    signature: bytes
    tag: bytes = bytes(TAG_BYTES)
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_SIGNATURE

    def _validate(self) -> None:
        _check_bytes("signature", self.signature, SIG_BYTES)
        _check_bytes("tag", self.tag, TAG_BYTES)

    def _payload(self) -> bytes:
        return bytes(self.signature) + bytes(self.tag)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "ConsistencySignature":
        return cls(*h, bytes(r.take(64)), bytes(r.take(TAG_BYTES)))


@register
@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Server -> client: which neighbours are alive (reveal self-mask seed share) or dropped
    (reveal mask-key share), with the neighbours' signatures on the survivor set."""

    alive: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[SignatureEntry, ...]
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_REQUEST

    def _validate(self) -> None:
        _check_ids("alive", self.alive)
        _check_ids("dropped", self.dropped)
        _SHARED.validated(self.signatures, _check_sigs)

    def _payload(self) -> bytes:
        return _ids(self.alive) + _ids(self.dropped) + _SHARED.payload(self.signatures, _encode_sigs)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "UnmaskRequest":
        alive = _read_ids(r)
        dropped = _read_ids(r)
        n = r.count(68)
        sigs = tuple(SignatureEntry(r.u32(), bytes(r.take(64))) for _ in range(n))
        return cls(*h, alive, dropped, sigs)


@register
@dataclass(frozen=True)
class UnmaskShares(Message):
    """Client -> server: one share per neighbour: self-mask seed share if alive, mask-key share if dropped."""

    entries: tuple[UnmaskEntry, ...]
    correction: np.ndarray | None = None  # sum of the sender's pairwise masks with its dropped neighbours
    bits: int = 32
    tag: bytes = bytes(TAG_BYTES)
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_SHARES
    CACHE_WIRE: ClassVar[bool] = False

    def _validate(self) -> None:
        if not isinstance(self.bits, int) or not (16 <= self.bits <= 64):
            raise FieldError(f"bits must be in [16, 64], got {self.bits!r}")
        v = self.correction
        if v is not None:
            if (not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind != "u"
                    or v.dtype.itemsize != word_dtype(self.bits).itemsize):
                raise FieldError(f"correction must be a 1-d array of {word_dtype(self.bits)} words")
            _check_u32("dim", v.shape[0])
            if v.size and self.bits not in (32, 64) and int(v.max()) >> self.bits:
                raise FieldError(f"correction has words >= 2^{self.bits}")
        for e in self.entries:
            _check_u32("owner", e.owner)
            if not isinstance(e.kind, ShareKind):
                raise FieldError(f"share kind must be a ShareKind, got {e.kind!r}")
            _check_bytes("share", e.share, SHARE_BYTES)
            _check_bytes("salt", e.salt, SALT_BYTES)
        _check_bytes("tag", self.tag, TAG_BYTES)

    def _payload(self) -> bytes:
        head = _U32.pack(len(self.entries)) + b"".join(
            _U32.pack(e.owner) + bytes([int(e.kind)]) + bytes(e.share) + bytes(e.salt) for e in self.entries
        )
        if self.correction is None:
            corr = bytes([0, self.bits, 0, 0]) + _U32.pack(0)
        else:
            wd = word_dtype(self.bits)
            corr = (bytes([1, self.bits, 0, 0]) + _U32.pack(self.correction.shape[0])
                    + self.correction.astype(wd, copy=False).tobytes())
        return head + corr + bytes(self.tag)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "UnmaskShares":
        n = r.count(37 + SALT_BYTES)
        out = []
        for _ in range(n):
            owner, k = r.u32(), r.u8()
            if k not in (0, 1):
                raise FieldError(f"share kind must be 0 or 1, got {k}")
            out.append(UnmaskEntry(owner, ShareKind(k), bytes(r.take(SHARE_BYTES)), bytes(r.take(SALT_BYTES))))
        flag, bits = r.u8(), r.u8()
        if flag not in (0, 1) or not (16 <= bits <= 64):
            raise FieldError(f"correction flag must be 0 or 1 and bits in [16, 64], got {flag}, {bits}")
        if bytes(r.take(2)) != b"\0\0":
            raise FieldError("padding bytes of UNMASK_SHARES must be zero")
        dim = r.u32()
        corr = None
        if flag:
            wd = word_dtype(bits)
            corr = np.frombuffer(r.take(dim * wd.itemsize), dtype=wd)
        elif dim:
            raise FieldError("a message without correction must have dim 0")
        return cls(*h, tuple(out), corr, bits, bytes(r.take(TAG_BYTES)))


@register
@dataclass(frozen=True)
class Complaint(Message):
    """Client -> server, instead of its masked input: the neighbours whose shares it could not
    accept (AEAD failure or a share that does not open its commitment).  The client leaves the
    round; the server names the accused and the accuser (a dispute) in its result or abort."""

    accused: tuple[int, ...]
    tag: bytes = bytes(TAG_BYTES)
    TYPE: ClassVar[MessageType] = MessageType.COMPLAINT

    def _validate(self) -> None:
        _check_ids("accused", self.accused)
        _check_bytes("tag", self.tag, TAG_BYTES)

    def _payload(self) -> bytes:
        return _ids(self.accused) + bytes(self.tag)

    @classmethod
    def _parse(cls, h: tuple, r: Reader) -> "Complaint":
        return cls(*h, _read_ids(r), bytes(r.take(TAG_BYTES)))


decode = decoder(MAGIC)
"""Parse wire bytes into a SecAgg message; raises :class:`DecodeError` (only) if they are not one."""
