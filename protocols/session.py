"""The role interfaces every aggregation protocol implements (sans-IO, in the style of h11).

A protocol is a set of *roles*: one :class:`ServerRole` (the aggregator) and any number
of :class:`ClientRole` s (hospitals, and for Paillier the decryptor(s): the key holder or
the threshold parties).  Roles never touch a socket, a clock or a global RNG: they take
messages (wire bytes or decoded :class:`~protocols.codec.Message` objects) and return the
messages to send.  Randomness and identities are injected at construction, so a round
replays byte for byte.  A transport -- :func:`protocols.driver.run_in_memory`, the
``fl`` simulation, Flower -- only moves the bytes and decides when a stage's deadline
has passed (:meth:`ServerRole.advance`).

Each role has its own stage enum (``role.stage``); a message or call that its current
stage does not allow raises :class:`~protocols.errors.StageError`.  Every error a peer
can cause is a :class:`~protocols.errors.ProtocolError`; an honest role that refuses a
request moves to a terminal ``ABORTED`` stage (clients) or ignores the message and
carries on (servers).

The server's stage values double as the transport's stage names: ``drop={"share":
{3}}`` in the driver means "client 3 vanishes when the server enters its ``share``
stage" (before it receives that stage's messages).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from .codec import Message

__all__ = ["ServerRole", "ClientRole", "SessionResult", "Outbox"]

Outbox = Mapping[int, "bytes | Message"]
"""``{party id: message}``: what a server sends when a stage closes."""


@runtime_checkable
class ServerRole(Protocol):
    """The aggregator's side of one round.

    ``receive`` takes one party's message; a refusal raises a ``ProtocolError`` and
    leaves the state unchanged (the transport records it against the sender and goes
    on).  ``advance`` closes the current stage (its deadline passed) and returns the
    messages to send, keyed by party id; it raises ``AbortError`` when the round can no
    longer complete (nothing private was revealed).  Once ``done``, ``result()``
    returns the :class:`SessionResult`.
    """

    stage: enum.Enum

    def receive(self, data: bytes | Message) -> None: ...

    def advance(self) -> Outbox: ...

    @property
    def done(self) -> bool: ...

    def result(self) -> "SessionResult": ...


@runtime_checkable
class ClientRole(Protocol):
    """One party's side of one round (a hospital, or a decryptor).

    ``start`` returns the party's first messages (possibly none: e.g. a decryptor waits
    for a request); ``receive`` takes one server message and returns the replies.  A
    refusal raises a ``ProtocolError`` and moves the role to its terminal aborted stage.
    """

    stage: enum.Enum

    def start(self) -> list[Message]: ...

    def receive(self, data: bytes | Message) -> list[Message]: ...

    @property
    def done(self) -> bool: ...


@dataclass(frozen=True)
class SessionResult:
    """What a server obtains from one completed round.

    total
        Decoded float64 sum of the contributors' (clipped, encoded) inputs.
    encoded_total
        The raw integer sum the protocol produced (ring elements for SecAgg, slot sums
        for Paillier), before decoding.
    contributors
        Ids whose inputs are in the sum, sorted.
    dropped
        ``{stage: [ids]}``: parties the server lost at each stage.
    refused
        ``{id: [reason, ...]}``: messages the server refused, attributed to their sender
        (malformed bytes, bad signatures or proofs, wrong stage...).
    guarantee
        The protocol's guarantee for this run (a plain dict, same shape across protocols).
    """

    total: np.ndarray
    encoded_total: Any
    contributors: tuple[int, ...]
    dropped: dict[str, list[int]] = field(default_factory=dict)
    refused: dict[int, list[str]] = field(default_factory=dict)
    guarantee: dict[str, Any] = field(default_factory=dict)
