"""Wire format: round trips, strict decoding, and fuzzing (only DecodeError / ProtocolError escape)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedvault.protocols.errors import DecodeError, ProtocolError
from fedvault.protocols.secagg.messages import HEADER_BYTES, MAGIC, MaskedInput, MessageType, decode
from fedvault.protocols.secagg import SecAggParams, simulate_round
from fedvault.protocols.secagg.messages import Complaint
from fedvault.protocols.secagg.threat import ThreatModel

from test_protocol_secagg_refusals import Round


def _transcript() -> list[bytes]:
    params = SecAggParams(b"fuzz", 2, (1, 2, 3, 4, 5), threshold=3, bits=24, threat_model=ThreatModel(colluders=0))
    t: list = []
    x = {i: np.linspace(-1, 1, 3) for i in params.clients}
    simulate_round(params, x, transcript=t, drop={"masked_input": [5]}, seed=b"f" * 32)
    complaint = Complaint(params.with_dim(3).session_tag, 2, 1, (2, 3), bytes(range(16)))
    return [d for _, _, d in t] + [complaint.encode()]


WIRE = _transcript()


def test_every_message_type_round_trips():
    seen = set()
    for data in WIRE:
        m = decode(data)
        seen.add(m.TYPE)
        assert m.encode() == data
        assert data[:4] == MAGIC and data[4] == 1
    assert seen == set(MessageType)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\0",  # trailing byte
        lambda d: b"XXXX" + d[4:],  # magic
        lambda d: d[:4] + b"\x02" + d[5:],  # version
        lambda d: d[:5] + b"\x63" + d[6:],  # type
        lambda d: d[:6] + b"\x00\x01" + d[8:],  # reserved flags
        lambda d: d[:HEADER_BYTES - 1],  # short header
    ],
)
def test_strict_decoding(mutate):
    for data in WIRE:
        with pytest.raises(DecodeError):
            decode(mutate(data))


def test_masked_input_words_must_fit_the_ring():
    m = next(decode(d) for d in WIRE if decode(d).TYPE == MessageType.MASKED_INPUT)
    assert m.bits == 24
    raw = bytearray(m.encode())
    raw[-1 - 16] = 0xFF  # top byte of the last little-endian word (before the 16-byte tag): value >= 2^24
    with pytest.raises(DecodeError):
        decode(bytes(raw))
    with pytest.raises(DecodeError):
        MaskedInput(m.session, 0, 1, 24, np.zeros((2, 2), np.uint32))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_decode_error(data):
    try:
        m = decode(data)
    except DecodeError:
        return
    assert m.encode() == data


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(WIRE), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(-8, 8))
def test_mutated_messages_raise_only_decode_error(data, flips, resize):
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    if resize < 0:
        b = b[:resize]
    elif resize > 0:
        b += bytes(resize)
    try:
        m = decode(bytes(b))
    except DecodeError:
        return
    assert m.encode() == bytes(b)  # whatever decodes is canonical


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from(["keys", "shares", "consistency", "unmask"]))
def test_state_machines_accept_no_mutated_message(pos, val, stage):
    """A mutated message must be refused: an honest party that accepts it (no error, and for a
    client no complaint naming the sender) fails the test -- bytes that differ never decode
    to the same message, since encodings are canonical."""
    rnd = Round()
    out = rnd.to_stage(stage)
    b = bytearray(out[0].encode())
    p = pos % len(b)
    if b[p] == val:
        return
    b[p] = val
    assert decode_or_none(bytes(b)) != out[0]
    try:
        replies = rnd.clients[0].receive(bytes(b))
    except ProtocolError:
        pass
    else:
        assert replies and all(isinstance(r, Complaint) for r in replies), "a mutated server message was accepted"
    # the same mutation on a client's reply to the server
    reply = rnd.clients[1].receive(out[1].encode())[0]
    c = bytearray(reply.encode())
    q = pos % len(c)
    if c[q] == val:
        return
    c[q] = val
    with pytest.raises(ProtocolError):
        rnd.server.receive(bytes(c))


def decode_or_none(data: bytes):
    try:
        return decode(data)
    except DecodeError:
        return None
