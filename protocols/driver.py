"""The one in-memory transport: moves encoded bytes between a server role and its parties.

:func:`run_in_memory` is the loop every in-process run uses (``simulate_round`` of each
protocol, the ``fl`` simulation transport, tests); Flower moves the same bytes over its
own messages.  It knows nothing about any protocol beyond :mod:`protocols.session`::

    parties start()            -> messages up to the server      (stage = server.stage)
    repeat until server.done:
        server.advance()       -> {party: message}               (a stage deadline passed)
        drop the parties scheduled to vanish at the server's new stage
        deliver each message   -> the party's replies go up to the server

Everything crosses as bytes (``encode`` then the receiver decodes), so a run measures
real wire sizes and exercises the decoders.  A message the server refuses is recorded
against its sender (:attr:`DriverStats.refused`) and the round goes on; a party that
refuses a server message drops out (:attr:`DriverStats.aborted`), as an honest party
would.  ``AbortError`` from the server (the round cannot complete) propagates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

from .codec import HEADER, HEADER_BYTES, Message
from .errors import ProtocolError, UsageError
from .session import ClientRole, ServerRole

__all__ = ["DriverStats", "Transcript", "impersonation", "run_in_memory"]

Transcript = list[tuple[str, int, bytes]]
"""``("up" | "down", party id, wire bytes)`` in the order sent."""


@dataclass
class DriverStats:
    """What the transport observed in one run.

    upload_bytes / download_bytes
        Wire bytes each party sent / was sent (a message to a party that has vanished
        still counts as sent to it).
    party_seconds
        Seconds each party spent inside its role (``start``/``receive``), by ``clock``.
    server_seconds
        Seconds the server spent inside ``receive``/``advance`` (encoding its replies included).
    dropped
        ``{stage: [ids]}``: parties the simulation made vanish at each server stage.
    aborted
        ``{id: reason}``: parties that refused a server message and left the round.
    refused
        ``{id: [reason, ...]}``: messages the server refused, attributed to the sender.
    stages
        The server stages the run went through, in order.
    """

    upload_bytes: dict[int, int] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    party_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    dropped: dict[str, list[int]] = field(default_factory=dict)
    aborted: dict[int, str] = field(default_factory=dict)
    refused: dict[int, list[str]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)


def _wire(m: bytes | Message) -> bytes:
    return m.encode() if isinstance(m, Message) else bytes(m)


def impersonation(data: bytes, party: int) -> str | None:
    """Why a message that arrived on ``party``'s channel must be refused, or None.

    Every transport knows who sent each message (its channel); a message whose header names
    another sender is refused and blamed on the channel's party.  Plaintext uploads carry no
    cryptographic sender binding, so without this a hospital could upload in another's name
    and get the victim's own upload refused as a duplicate (the victim blamed, then excluded).
    """
    if len(data) >= HEADER_BYTES:
        named = HEADER.unpack_from(data)[6]
        if named != party:
            return f"ImpersonationError: party {party} sent a message in the name of party {named}"
    return None


def run_in_memory(
    server: ServerRole,
    parties: Mapping[int, ClientRole],
    *,
    drop: Mapping[str, Collection[int]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    transcript: Transcript | None = None,
    stats: DriverStats | None = None,
) -> DriverStats:
    """Run one round between ``server`` and ``parties`` (``{id: role}``) in memory.

    drop
        ``{server stage value: ids}``: parties that vanish when the server enters that
        stage (they send nothing from then on).  The names are the server's stage enum
        values (e.g. SecAgg's ``"share"``); an unknown name raises :class:`UsageError`.
    clock
        Timer for the reported seconds (measurement only; roles never see it).
    transcript
        If given, every wire message is appended as ``("up"|"down", id, bytes)``.
    stats
        An existing :class:`DriverStats` to add to (e.g. with set-up times already in it).

    Returns the :class:`DriverStats`; raises :class:`~protocols.errors.AbortError` when the
    server aborts the round.
    """
    names = {s.value for s in type(server.stage)}
    drops = {str(k): set(v) for k, v in (drop or {}).items()}
    unknown = set(drops) - names
    if unknown:
        raise UsageError(f"unknown stage name(s) {sorted(unknown)} for dropout; the server's stages are {sorted(names)}")
    st = stats if stats is not None else DriverStats()
    for i in parties:
        st.upload_bytes.setdefault(i, 0)
        st.download_bytes.setdefault(i, 0)
        st.party_seconds.setdefault(i, 0.0)
    gone: set[int] = set()

    def enter_stage() -> None:
        name = server.stage.value
        st.stages.append(name)
        vanish = sorted((drops.get(name, set()) & set(parties)) - gone)
        if vanish:
            st.dropped.setdefault(name, []).extend(vanish)
        gone.update(vanish)

    def up(i: int, msgs: list[Message] | list[bytes]) -> None:
        for m in msgs:
            data = _wire(m)
            st.upload_bytes[i] += len(data)
            if transcript is not None:
                transcript.append(("up", i, data))
            forged = impersonation(data, i)
            if forged is not None:
                st.refused.setdefault(i, []).append(forged)
                continue
            t = clock()
            try:
                server.receive(data)
            except ProtocolError as e:
                st.refused.setdefault(i, []).append(f"{type(e).__name__}: {e}")
            finally:
                st.server_seconds += clock() - t

    def party_call(i: int, fn: Callable[[], list]) -> list | None:
        t = clock()
        try:
            return fn()
        except ProtocolError as e:  # an honest party refused: it leaves the round
            st.aborted[i] = f"{type(e).__name__}: {e}"
            gone.add(i)
            return None
        finally:
            st.party_seconds[i] += clock() - t

    enter_stage()
    for i, role in parties.items():
        if i in gone:
            continue
        out = party_call(i, role.start)
        if out:
            up(i, out)

    while not server.done:
        t = clock()
        try:
            outbox = {i: _wire(m) for i, m in server.advance().items()}
        finally:
            st.server_seconds += clock() - t
        enter_stage()
        for i, data in outbox.items():
            if i not in parties:
                raise UsageError(f"the server addressed party {i}, which this run does not have")
            st.download_bytes[i] += len(data)
            if transcript is not None:
                transcript.append(("down", i, data))
            if i in gone:
                continue
            role = parties[i]
            replies = party_call(i, lambda role=role, data=data: role.receive(data))
            if replies and not server.done:
                up(i, replies)
    return st
