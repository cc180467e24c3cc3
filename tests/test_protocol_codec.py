"""The one wire codec (protocols/codec.py): header, dispatch, caps and typed decode errors."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import pytest

from fedvault.protocols import codec
from fedvault.protocols.errors import (DecodeError, FieldError, HeaderError, SizeLimitError, TrailingBytesError,
                                       TruncatedError, UnknownTypeError)
from fedvault.protocols.secagg import messages as sm

TAG = bytes(range(16))


def _secagg_sig() -> bytes:
    return sm.ConsistencySignature(TAG, 3, 7, bytes(64)).encode()


def test_header_layout_is_common():
    data = _secagg_sig()
    magic, version, mtype, flags, session, rnd, sender = codec.HEADER.unpack(data[: codec.HEADER_BYTES])
    assert (magic, version, mtype, flags, session, rnd, sender) == (b"FVSA", 1, 7, 0, TAG, 3, 7)
    assert codec.HEADER_BYTES == 32


def test_generic_decode_dispatches_and_protocol_decoders_refuse_other_protocols():
    data = _secagg_sig()
    assert codec.decode(data) == sm.decode(data)
    with pytest.raises(HeaderError, match="Paillier"):
        codec.decode(data, protocol=b"FVPA")


@pytest.mark.parametrize("mutate, error", [
    (lambda d: d[:10], TruncatedError),
    (lambda d: d[:-1], TruncatedError),
    (lambda d: d + b"\0", TrailingBytesError),
    (lambda d: b"ABCD" + d[4:], HeaderError),
    (lambda d: d[:4] + b"\x09" + d[5:], HeaderError),
    (lambda d: d[:5] + b"\xee" + d[6:], UnknownTypeError),
    (lambda d: d[:7] + b"\x01" + d[8:], HeaderError),
])
def test_typed_decode_errors(mutate, error):
    with pytest.raises(error):
        codec.decode(mutate(_secagg_sig()))
    assert issubclass(error, DecodeError)


def test_counts_are_capped_before_allocation():
    hdr = codec.HEADER.pack(b"FVSA", 1, int(sm.MessageType.CONSISTENCY_REQUEST), 0, TAG, 0, codec.SERVER_ID)
    with pytest.raises(SizeLimitError):
        codec.decode(hdr + struct.pack(">I", codec.MAX_ENTRIES + 1))
    with pytest.raises(TruncatedError):
        codec.decode(hdr + struct.pack(">I", 1000))


def test_constructors_validate_like_the_decoder():
    with pytest.raises(FieldError):
        sm.ConsistencySignature(TAG[:15], 0, 1, bytes(64))
    with pytest.raises(FieldError):
        sm.ConsistencySignature(TAG, -1, 1, bytes(64))
    with pytest.raises(FieldError):
        sm.ConsistencyRequest(TAG, 0, 1, (1, 2**32))


def test_writer_reader_round_trip():
    w = codec.Writer().u8(7).u16(513).u32(70000).u64(2**40).blob(b"abc").ids((1, 2, 3)).raw(b"zz")
    r = codec.Reader(memoryview(w.getvalue()))
    assert (r.u8(), r.u16(), r.u32(), r.u64(), r.blob(), r.ids(), r.fixed(2)) == (7, 513, 70000, 2**40, b"abc", (1, 2, 3), b"zz")
    r.end()
    r = codec.Reader(memoryview(codec.Writer().blob(b"abcdef").getvalue()))
    with pytest.raises(SizeLimitError):
        r.blob(max_len=5)


def test_a_message_type_cannot_be_registered_twice():
    @dataclass(frozen=True)
    class Clash(codec.Message):
        PROTOCOL: ClassVar[bytes] = b"FVSA"
        TYPE: ClassVar[int] = int(sm.MessageType.ADVERTISE_KEYS)

    with pytest.raises(TypeError):
        codec.register(Clash)
