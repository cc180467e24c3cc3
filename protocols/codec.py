"""The one wire codec of fedvault's aggregation protocols (version 1): explicit layouts, no pickle.

Every message of every protocol is ``HEADER || PAYLOAD``.  The header is 32 bytes,
``struct`` format ``>4sBBH16sII``, all integers unsigned big-endian::

    protocol 4  magic naming the protocol: b"FVSA" SecAgg/SecAgg+, b"FVPA" packed Paillier,
                b"FVPT" plaintext (no protection)
    version  1  1
    type     1  message type, unique within the protocol (it also fixes the stage:
                every message type belongs to exactly one stage of its protocol)
    flags    2  0 (reserved, must be zero)
    session 16  session tag: SHA-256 (truncated) of the session id and every round parameter,
                so a message of another session or parameter set is recognised at once
    round    4  round number
    sender   4  party id, or 0xFFFFFFFF (:data:`SERVER_ID`) for the server

Payload conventions (each protocol's ``messages`` module documents its layouts):
``u8``/``u16``/``u32``/``u64`` unsigned big-endian; ``blob`` = ``length u32 || bytes``;
``ids`` = ``n u32 || [id u32]*n``; fixed-width fields have no length prefix.

Decoding (:func:`decode`) checks the exact length, the magic, the version, the type,
the reserved bits, each count against the bytes left and against a cap, and each
field's range; whatever it accepts re-encodes to the same bytes (canonical form).  It
raises a :class:`~protocols.errors.DecodeError` subclass and nothing else.  Message
constructors run the same field checks, so a message object in memory is always one
that could have come off the wire.  Semantic checks (who may send what, duplicates,
signatures, proofs) belong to the protocols' roles, which refuse with a precise error.

Naming, the same for every protocol: ``msg.encode() -> bytes`` and the module-level
:func:`decode` ``(data) -> Message``, dispatching on the protocol magic and type byte.
"""

from __future__ import annotations

import importlib
import struct
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, TypeVar

from .errors import (DecodeError, FieldError, HeaderError, SizeLimitError, TrailingBytesError, TruncatedError,
                     UnknownTypeError)

__all__ = [
    "VERSION", "HEADER", "HEADER_BYTES", "SESSION_TAG_BYTES", "SERVER_ID", "MAX_U32", "MAX_MESSAGE_BYTES",
    "MAX_ENTRIES", "MAX_BLOB_BYTES", "PROTOCOLS", "Message", "Writer", "Reader", "register", "decode",
    "check_u32", "check_ids", "check_bytes",
]

VERSION = 1
HEADER = struct.Struct(">4sBBH16sII")
HEADER_BYTES = HEADER.size  # 32
SESSION_TAG_BYTES = 16
SERVER_ID = 0xFFFFFFFF
MAX_U32 = 0xFFFFFFFF

MAX_MESSAGE_BYTES = 1 << 31
"""Largest message any decoder accepts (2 GiB): bounds memory before anything is parsed."""
MAX_ENTRIES = 1 << 24
"""Largest count of repeated entries (ids, keys, shares, uploads) in one message."""
MAX_BLOB_BYTES = MAX_MESSAGE_BYTES - HEADER_BYTES
"""Largest single length-prefixed field."""

PROTOCOLS: dict[bytes, tuple[str, str]] = {
    b"FVSA": ("SecAgg", "fedvault.protocols.secagg.messages"),
    b"FVPA": ("Paillier", "fedvault.protocols.paillier.messages"),
    b"FVPT": ("Plaintext", "fedvault.protocols.plaintext"),
}
"""Protocol magic -> (name, module registering its messages).  A new protocol adds a row."""

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


# --------------------------------------------------------------------------- field checks
def check_u32(name: str, v: int) -> None:
    """Raise :class:`FieldError` unless ``v`` is an ``int`` in ``[0, 2^32)``."""
    if not isinstance(v, int) or isinstance(v, bool) or not (0 <= v <= MAX_U32):
        raise FieldError(f"{name} must be an integer in [0, 2^32), got {v!r}")


def check_ids(name: str, ids: tuple[int, ...]) -> None:
    """Raise :class:`FieldError` unless ``ids`` is a tuple of ints in ``[0, 2^32)`` (at most :data:`MAX_ENTRIES`)."""
    if not isinstance(ids, tuple):
        raise FieldError(f"{name} must be a tuple of ids")
    if len(ids) > MAX_ENTRIES:
        raise SizeLimitError(f"{name} has {len(ids)} entries; at most {MAX_ENTRIES} are allowed")
    if ids:
        if any(type(i) is not int for i in ids):
            raise FieldError(f"{name} must contain integers")
        if min(ids) < 0 or max(ids) > MAX_U32:
            raise FieldError(f"{name} must be integers in [0, 2^32)")


def check_bytes(name: str, v: bytes, n: int | None = None, *, max_len: int = MAX_BLOB_BYTES) -> None:
    """Raise :class:`FieldError` unless ``v`` is bytes of length ``n`` (or at most ``max_len`` if ``n`` is None)."""
    if not isinstance(v, (bytes, bytearray)):
        raise FieldError(f"{name} must be bytes, got {type(v).__name__}")
    if n is not None and len(v) != n:
        raise FieldError(f"{name} must be {n} bytes, got {len(v)}")
    if n is None and len(v) > max_len:
        raise SizeLimitError(f"{name} has {len(v)} bytes; at most {max_len} are allowed")


# --------------------------------------------------------------------------- writer / reader
class Writer:
    """Appends fields in wire order; :meth:`getvalue` returns the bytes."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, b: bytes) -> "Writer":
        self._parts.append(bytes(b))
        return self

    def u8(self, x: int) -> "Writer":
        self._parts.append(bytes((x,)))
        return self

    def u16(self, x: int) -> "Writer":
        self._parts.append(_U16.pack(x))
        return self

    def u32(self, x: int) -> "Writer":
        self._parts.append(_U32.pack(x))
        return self

    def u64(self, x: int) -> "Writer":
        self._parts.append(_U64.pack(x))
        return self

    def blob(self, b: bytes) -> "Writer":
        """``length u32 || bytes``."""
        self._parts.append(_U32.pack(len(b)))
        self._parts.append(bytes(b))
        return self

    def ids(self, ids: Iterable[int]) -> "Writer":
        """``n u32 || [id u32]*n``."""
        ids = tuple(ids)
        self._parts.append(_U32.pack(len(ids)) + (struct.pack(f">{len(ids)}I", *ids) if ids else b""))
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields from a memoryview; every read past the end raises :class:`TruncatedError`."""

    __slots__ = ("data", "pos")

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise TruncatedError("message is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def fixed(self, n: int) -> bytes:
        return bytes(self.take(n))

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def count(self, entry_size: int, cap: int = MAX_ENTRIES) -> int:
        """A ``u32`` count of entries of at least ``entry_size`` bytes each, checked against the bytes left and ``cap``."""
        n = self.u32()
        if n > cap:
            raise SizeLimitError(f"{n} entries; at most {cap} are allowed")
        if n * entry_size > self.remaining:
            raise TruncatedError("entry count exceeds the message length")
        return n

    def blob(self, max_len: int = MAX_BLOB_BYTES) -> bytes:
        n = self.u32()
        if n > max_len:
            raise SizeLimitError(f"field of {n} bytes; at most {max_len} are allowed")
        return bytes(self.take(n))

    def ids(self, cap: int = MAX_ENTRIES) -> tuple[int, ...]:
        n = self.count(4, cap)
        return struct.unpack(f">{n}I", self.take(4 * n)) if n else ()

    def end(self) -> None:
        if self.pos != len(self.data):
            raise TrailingBytesError(f"{len(self.data) - self.pos} trailing bytes after the message")


# --------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    """Common header fields of every protocol message; subclasses add the payload.

    A subclass sets ``PROTOCOL`` (magic), ``TYPE`` (type byte) and ``STAGE`` (the stage
    name it belongs to), validates its fields in ``_validate`` (raising
    :class:`FieldError`), writes them in ``_payload() -> bytes`` and reads them in
    ``_parse(header, reader)``; :func:`register` adds it to the dispatch table.
    """

    session: bytes
    round: int
    sender: int

    PROTOCOL: ClassVar[bytes]
    TYPE: ClassVar[int]
    STAGE: ClassVar[str] = ""
    CACHE_WIRE: ClassVar[bool] = True  # False for large messages: do not keep a second copy alive

    def __post_init__(self) -> None:
        check_bytes("session", self.session, SESSION_TAG_BYTES)
        check_u32("round", self.round)
        check_u32("sender", self.sender)
        self._validate()

    def _validate(self) -> None:  # overridden
        pass

    def _payload(self) -> bytes:  # overridden
        raise NotImplementedError

    @classmethod
    def _parse(cls, header: tuple[bytes, int, int], r: Reader) -> "Message":  # overridden
        raise NotImplementedError

    def header(self) -> bytes:
        return HEADER.pack(self.PROTOCOL, VERSION, int(self.TYPE), 0, bytes(self.session), self.round, self.sender)

    def encode(self) -> bytes:
        """The wire bytes of this message (computed once for small messages; messages are immutable)."""
        cached = self.__dict__.get("_wire")
        if cached is None:
            cached = self.header() + self._payload()
            if len(cached) > MAX_MESSAGE_BYTES:
                raise SizeLimitError(f"message of {len(cached)} bytes exceeds {MAX_MESSAGE_BYTES}")
            if self.CACHE_WIRE:
                object.__setattr__(self, "_wire", cached)
        return cached


M = TypeVar("M", bound=type[Message])
_REGISTRY: dict[tuple[bytes, int], type[Message]] = {}


def register(cls: M) -> M:
    """Class decorator: make :func:`decode` dispatch ``(cls.PROTOCOL, cls.TYPE)`` to ``cls``."""
    key = (cls.PROTOCOL, int(cls.TYPE))
    if cls.PROTOCOL not in PROTOCOLS:
        raise TypeError(f"unknown protocol magic {cls.PROTOCOL!r}; add it to codec.PROTOCOLS")
    other = _REGISTRY.get(key)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"message type {key} is taken by {other.__name__}")
    _REGISTRY[key] = cls
    return cls


def _load(magic: bytes) -> None:
    if not any(k[0] == magic for k in _REGISTRY):
        importlib.import_module(PROTOCOLS[magic][1])


def decode(data: bytes | bytearray | memoryview, *, protocol: bytes | None = None) -> Message:
    """Parse wire bytes into a message of any registered protocol (or only of ``protocol``).

    Raises a :class:`~protocols.errors.DecodeError` subclass (only) if the bytes are not
    exactly one valid message: :class:`HeaderError` (magic, version, flags, wrong
    protocol), :class:`UnknownTypeError`, :class:`TruncatedError`,
    :class:`TrailingBytesError`, :class:`SizeLimitError`, :class:`FieldError`.
    """
    try:
        mv = memoryview(data).cast("B")
    except (TypeError, ValueError) as e:
        raise DecodeError("message must be a bytes-like object") from e
    if len(mv) < HEADER_BYTES:
        raise TruncatedError(f"message shorter than the {HEADER_BYTES}-byte header")
    if len(mv) > MAX_MESSAGE_BYTES:
        raise SizeLimitError(f"message of {len(mv)} bytes exceeds {MAX_MESSAGE_BYTES}")
    magic, version, mtype, flags, session, round_, sender = HEADER.unpack(mv[:HEADER_BYTES])
    if protocol is not None and magic != protocol:
        name = PROTOCOLS.get(protocol, (repr(protocol),))[0]
        raise HeaderError(f"not a fedvault {name} message (bad magic)")
    if magic not in PROTOCOLS:
        raise HeaderError("not a fedvault protocol message (bad magic)")
    if version != VERSION:
        raise HeaderError(f"unsupported message version {version} (this implementation speaks {VERSION})")
    if flags != 0:
        raise HeaderError("reserved header bits are set")
    _load(magic)
    cls = _REGISTRY.get((magic, mtype))
    if cls is None:
        raise UnknownTypeError(f"unknown {PROTOCOLS[magic][0]} message type {mtype}")
    r = Reader(mv[HEADER_BYTES:])
    msg = cls._parse((session, round_, sender), r)
    r.end()
    return msg


def decoder(protocol: bytes) -> Callable[[bytes | bytearray | memoryview], Message]:
    """``decode`` restricted to one protocol (what a protocol's ``messages.decode`` is)."""

    def _decode(data: bytes | bytearray | memoryview) -> Message:
        return decode(data, protocol=protocol)

    _decode.__doc__ = f"Parse wire bytes into a {PROTOCOLS[protocol][0]} message; raises DecodeError only."
    return _decode
