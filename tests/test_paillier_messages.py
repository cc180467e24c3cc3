"""The common codec across both protocols: every message round-trips; decoder and role fuzzers.

A mutated message that decodes counts as a failure unless it decodes to the same message
or the honest role it is addressed to refuses it (typed ``ProtocolError``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fedvault.protocols import codec
from fedvault.protocols.errors import DecodeError, ProtocolError
from fedvault.protocols.paillier import simulate_round
from fedvault.protocols.paillier.messages import MessageType as PT
from fedvault.protocols.secagg.messages import MessageType as ST
from test_protocol_secagg_messages import WIRE as SECAGG_WIRE

from _paillier_helpers import Round, inputs, params, setup


def _paillier_wire() -> list[tuple[str, int, bytes, str]]:
    out = []
    for mode in ("holder", "threshold"):
        t: list = []
        simulate_round(params(mode, 900), Round(mode, 900).s, inputs(5, (11, 12, 13)), seed=b"w", transcript=t)
        out += [(d, i, b, mode) for d, i, b in t]
    return out


PAILLIER = _paillier_wire()
SECAGG = list(SECAGG_WIRE)  # every SecAgg message type, from the SecAgg tests' own round


def test_every_message_of_both_protocols_round_trips():
    seen = set()
    for data in [b for _, _, b, _ in PAILLIER] + SECAGG:
        m = codec.decode(data)
        assert m.encode() == data
        if m.PROTOCOL == b"FVPA":  # (SecAgg's masked vector compares by identity)
            assert codec.decode(data) == m
        seen.add((m.PROTOCOL, int(m.TYPE)))
    assert seen == {(b"FVPA", int(t)) for t in PT} | {(b"FVSA", int(t)) for t in ST}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"FVPA", b"FVSA"]), st.integers(1, 9))
def test_random_bytes_raise_only_decode_errors(body, magic, mtype):
    for data in (body, codec.HEADER.pack(magic, 1, mtype, 0, bytes(16), 0, 0) + body):
        try:
            m = codec.decode(data)
        except DecodeError:
            continue
        assert m.encode() == data


def _mutate(data: bytes, flips, resize) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    if resize < 0:
        b = b[:resize]
    elif resize > 0:
        b += bytes(resize)
    return bytes(b)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SECAGG + [b for _, _, b, _ in PAILLIER]),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4), st.integers(-8, 8))
def test_mutated_messages_decode_canonically_or_raise_decode_error(data, flips, resize):
    b = _mutate(data, flips, resize)
    try:
        m = codec.decode(b)
    except DecodeError:
        return
    assert m.encode() == b


@settings(max_examples=120, deadline=None)
@given(st.integers(0, len(PAILLIER) - 1), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                   min_size=1, max_size=3))
def test_honest_paillier_roles_refuse_every_mutated_message(k, flips):
    direction, who, data, mode = PAILLIER[k]
    b = _mutate(data, flips, 0)
    if b == data:
        return
    try:
        m = codec.decode(b)
    except DecodeError:
        return
    original = codec.decode(data)
    if m == original:
        return
    # replay the round up to the point where this message is expected, then deliver the mutated one
    r = Round(mode, 900, who=(11, 12, 13), d=5)
    if direction == "down":
        role = r.holder() if mode == "holder" else r.party(who)
        with pytest.raises(ProtocolError):
            role.receive(b)
        return
    s = r.server()
    if m.TYPE == PT.UPLOAD:
        with pytest.raises(ProtocolError):
            s.receive(b)
        return
    for d, i, raw, md in PAILLIER:  # the same round's honest uploads, then the decrypt stage
        if md == mode and d == "up" and codec.decode(raw).TYPE == PT.UPLOAD:
            s.receive(raw)
    s.advance()
    with pytest.raises(ProtocolError):
        s.receive(b)
