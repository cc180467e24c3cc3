"""Plaintext aggregation — NO PROTECTION: the server sees every hospital's float vector.

The reference point for accuracy and cost, and the only mode in which robust
strategies (median, trimmed mean) can run, because they need every individual update.
It has the same sans-IO role shape as SecAgg and Paillier (:mod:`protocols.session`), so
the one round engine drives every mode the same way::

    client k --Upload(float64[d])--> server      (one message per round; nothing comes back)

What each party learns: the server learns **every contributor's vector exactly**;
clients learn nothing. Use it only where the server is trusted with the updates.

Wire format: the common header of :mod:`protocols.codec` (magic ``b"FVPT"``, type 1,
the session tag of :attr:`PlaintextParams.session_tag`, round, sender), then
``d u32 || d × float64 (little-endian)``; ``d`` is capped by the codec's size limits.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from fedvault.protocols.codec import SESSION_TAG_BYTES, Message, Reader, Writer, check_u32, decoder, register
from fedvault.protocols.errors import (AbortError, FieldError, InputError, ProtocolError, ReplayError, StageError)
from fedvault.protocols.session import SessionResult

__all__ = ["GUARANTEE", "MAGIC", "PlaintextParams", "Upload", "decode", "PlaintextClient", "PlaintextServer",
           "ClientStage", "ServerStage", "STAGES"]

MAGIC = b"FVPT"
STAGES = ("upload",)
GUARANTEE = "none: the server sees every hospital's vector in the clear (plaintext aggregation)"


@dataclass(frozen=True)
class PlaintextParams:
    """One round's public parameters.

    Args:
        session_id: 1..255 bytes, unique per study and purpose.
        round: round number (0..2^32-1).
        clients: ids of the parties that may upload (distinct, 1..2^32-2).
        clip: the server clips every coordinate to ``[-clip, clip]`` before summing.
        min_clients: fewest uploads the server sums (fewer: :class:`AbortError`).
    """

    session_id: bytes
    round: int
    clients: tuple[int, ...]
    clip: float
    min_clients: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", tuple(int(c) for c in self.clients))
        if not isinstance(self.session_id, (bytes, bytearray)) or not 1 <= len(self.session_id) <= 255:
            raise ProtocolError("session_id must be 1..255 bytes")
        if not 0 <= int(self.round) < 2**32:
            raise ProtocolError("round must be in 0..2^32-1")
        if not self.clients or len(set(self.clients)) != len(self.clients) or any(not 0 < c < 2**32 - 1 for c in self.clients):
            raise ProtocolError("clients must be a non-empty tuple of distinct ids in 1..2^32-2")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ProtocolError(f"clip must be a positive finite number, got {self.clip!r}")
        if not 1 <= self.min_clients <= len(self.clients):
            raise ProtocolError(f"min_clients must be in 1..{len(self.clients)}")

    @property
    def session_tag(self) -> bytes:
        """16-byte tag in every message header: SHA-256 of the session id and every parameter."""
        h = hashlib.sha256(b"fedvault/plaintext/session/v1\x00" + struct.pack(">B", len(self.session_id))
                           + bytes(self.session_id))
        h.update(struct.pack(">II", self.round, len(self.clients)) + b"".join(struct.pack(">I", c) for c in self.clients))
        h.update(struct.pack(">dI", float(self.clip), self.min_clients))
        return h.digest()[:SESSION_TAG_BYTES]

    @property
    def guarantee(self) -> str:
        return GUARANTEE


@register
@dataclass(frozen=True, eq=False)
class Upload(Message):
    """A client's vector, in the clear (``vector``: float64, 1-D)."""

    vector: np.ndarray = field(default_factory=lambda: np.zeros(0))

    PROTOCOL = MAGIC
    TYPE = 1
    STAGE = "upload"
    CACHE_WIRE = False

    def _validate(self) -> None:
        v = np.asarray(self.vector)
        if v.ndim != 1 or v.dtype.kind != "f":
            raise FieldError("vector must be a 1-D float array")
        check_u32("dimension", int(v.size))

    def _payload(self) -> bytes:
        v = np.ascontiguousarray(self.vector, dtype="<f8")
        return Writer().u32(v.size).raw(v.tobytes()).getvalue()

    @classmethod
    def _parse(cls, header: tuple[bytes, int, int], r: Reader) -> "Upload":
        n = r.count(8)
        vec = np.frombuffer(r.fixed(8 * n), dtype="<f8").astype(np.float64)
        return cls(*header, vector=vec)


decode = decoder(MAGIC)


class ClientStage(enum.Enum):
    READY = "ready"
    DONE = "done"


class ServerStage(enum.Enum):
    COLLECTING = "collecting"
    DONE = "done"


class PlaintextClient:
    """A client's side: sends its vector once (``start``); expects nothing back."""

    def __init__(self, params: PlaintextParams, client_id: int, vector: np.ndarray) -> None:
        if client_id not in params.clients:
            raise ProtocolError(f"client {client_id} is not in this round's clients")
        v = np.asarray(vector, dtype=np.float64)
        if v.ndim != 1 or not np.all(np.isfinite(v)):
            raise InputError("the vector must be 1-D and finite")
        self.params, self.id, self._vector = params, client_id, v
        self.stage = ClientStage.READY

    @property
    def done(self) -> bool:
        return self.stage is ClientStage.DONE

    def start(self) -> list[Upload]:
        """The upload (one message)."""
        if self.stage is not ClientStage.READY:
            raise StageError("the plaintext client uploads exactly once")
        self.stage = ClientStage.DONE
        return [Upload(self.params.session_tag, self.params.round, self.id, self._vector)]

    def receive(self, data: bytes | Upload) -> list[Upload]:
        raise StageError("the plaintext protocol sends nothing to clients")


@dataclass
class PlaintextResult:
    """``total``: sum of the contributors' clipped vectors; ``vectors``: each one (the server saw them)."""

    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: dict[str, list[int]] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    guarantee: str = GUARANTEE


class PlaintextServer:
    """Collects uploads (one per client, this session and round), clips and sums them."""

    def __init__(self, params: PlaintextParams) -> None:
        self.params = params
        self.stage = ServerStage.COLLECTING
        self._vectors: dict[int, np.ndarray] = {}
        self._dim: int | None = None
        self._result: PlaintextResult | None = None

    @property
    def done(self) -> bool:
        return self.stage is ServerStage.DONE

    def receive(self, data: bytes | Upload) -> None:
        if self.stage is not ServerStage.COLLECTING:
            raise StageError("uploads are closed for this round")
        msg = data if isinstance(data, Upload) else decode(data)
        if not isinstance(msg, Upload):
            raise ProtocolError(f"expected a plaintext upload, got {type(msg).__name__}")
        p = self.params
        if (msg.session, msg.round) != (p.session_tag, p.round):
            raise ReplayError(f"upload of client {msg.sender} is for another session or round")
        if msg.sender not in p.clients:
            raise ProtocolError(f"upload from {msg.sender}, who is not a client of this round")
        if msg.sender in self._vectors:
            raise ProtocolError(f"client {msg.sender} already uploaded this round")
        v = np.asarray(msg.vector, dtype=np.float64)
        if self._dim is not None and v.shape != (self._dim,):
            raise InputError(f"client {msg.sender} sent {v.size} entries; others sent {self._dim}")
        if not np.all(np.isfinite(v)):
            raise InputError(f"client {msg.sender} sent NaN or infinity")
        self._dim = v.size
        self._vectors[msg.sender] = np.clip(v, -p.clip, p.clip)

    def advance(self) -> dict[int, Upload]:
        """Close the collection and sum; nothing is sent back."""
        if self.stage is not ServerStage.COLLECTING:
            raise StageError("the plaintext round is already closed")
        ids = tuple(sorted(self._vectors))
        self.stage = ServerStage.DONE
        if len(ids) < self.params.min_clients:
            raise AbortError(f"{len(ids)} uploads arrived; at least {self.params.min_clients} are needed")
        missing = sorted(set(self.params.clients) - set(ids))
        total = np.sum([self._vectors[i] for i in ids], axis=0)
        self._result = PlaintextResult(total, ids, {"upload": missing} if missing else {},
                                       {i: self._vectors[i] for i in ids})
        return {}

    def result(self) -> SessionResult:
        if self._result is None:
            raise StageError("the plaintext round has not been closed")
        r = self._result
        return SessionResult(total=r.total, encoded_total=r.total, contributors=r.contributors, dropped=r.dropped,
                             guarantee={"protocol": "plaintext", "line": GUARANTEE})

    def individual_vectors(self) -> dict[int, np.ndarray]:
        """Every contributor's clipped vector — the server sees them all (robust strategies use them)."""
        if self._result is None:
            raise StageError("the plaintext round has not been closed")
        return dict(self._result.vectors)
