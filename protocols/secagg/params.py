"""Round parameters of SecAgg/SecAgg+ and the byte strings every signature/key binds to.

All parties of a round hold the same :class:`SecAggParams` (fixed before the round
by whoever schedules it).  Its :attr:`~SecAggParams.session_tag` - a hash of the
session id and *every* parameter except the round number - goes into every message
header, every signature, every AEAD associated data and every key derivation, so a
message, key or share from another session, another parameter set, or (through the
round number next to it) another round is refused or simply useless.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Sequence

from fedvault.secagg.encoding import FixedPointEncoder
from fedvault.secagg.errors import ParameterError
from fedvault.secagg.graph import Graph, build_graph, check_ids

from .messages import SESSION_TAG_BYTES

_TAG_DOMAIN = b"fedvault/secagg/session/v1"
GRAPHS = ("complete", "sparse")


@dataclass(frozen=True)
class SecAggParams:
    """Public parameters of one secure-aggregation round.

    session_id
        1-255 bytes naming the federation/session (e.g. 16 random bytes).
    round
        Round number in [0, 2^32).  Keys are fresh every round.
    clients
        The registered cohort: distinct ids in [0, 2^32 - 2] (stored sorted).
    threshold
        Shamir threshold ``t``: a client's secrets need ``t`` of its neighbours to be
        reconstructed, and every remaining client needs ``t`` live neighbours.
        Privacy holds against a server colluding with fewer than ``t`` of a client's
        neighbours; the server cannot obtain both shares of a client unless it can
        make ``2t`` of its neighbours disagree, which the consistency round prevents
        when ``t`` exceeds half the neighbourhood.  ``None`` (recommended) picks
        ``floor(min_degree / 2) + 1``; must be in ``[1, min_degree]``.
    graph
        ``"complete"`` (Bonawitz et al. 2017) or ``"sparse"`` (Bell et al. 2020,
        degree about ``2 log2 n``, derived from public values; see :mod:`secagg.graph`).
    bits, clip, frac_bits
        Fixed-point encoding (see :class:`secagg.encoding.FixedPointEncoder`, with
        ``max_summands = len(clients)``).
    dim
        Vector length; must be set before building clients/servers (``with_dim``).
    """

    session_id: bytes
    round: int
    clients: tuple[int, ...]
    threshold: int | None = None
    graph: str = "complete"
    bits: int = 32
    clip: float = 1.0
    frac_bits: int | None = None
    dim: int | None = None
    _t: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, (bytes, bytearray)) or not (1 <= len(self.session_id) <= 255):
            raise ParameterError("session_id must be 1 to 255 bytes")
        if not isinstance(self.round, int) or not (0 <= self.round <= 0xFFFFFFFF):
            raise ParameterError(f"round must be an integer in [0, 2^32), got {self.round!r}")
        ids = check_ids(tuple(self.clients))
        if len(ids) < 2:
            raise ParameterError("secure aggregation needs at least 2 clients")
        object.__setattr__(self, "clients", ids)
        object.__setattr__(self, "session_id", bytes(self.session_id))
        if self.graph not in GRAPHS:
            raise ParameterError(f"graph must be one of {GRAPHS}, got {self.graph!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or not (0 < self.dim <= 0xFFFFFFFF)):
            raise ParameterError(f"dim must be a positive integer < 2^32, got {self.dim!r}")
        self.encoder  # validates bits / clip / frac_bits
        dmin = self.neighbourhood.min_degree()
        t = dmin // 2 + 1 if self.threshold is None else self.threshold
        if not isinstance(t, int) or not (1 <= t <= dmin):
            raise ParameterError(
                f"threshold must be in [1, {dmin}] (the smallest neighbourhood of the {self.graph} graph "
                f"on {len(ids)} clients), got {t!r}"
            )
        object.__setattr__(self, "_t", t)

    @property
    def t(self) -> int:
        """The effective threshold."""
        return self._t

    @cached_property
    def encoder(self) -> FixedPointEncoder:
        return FixedPointEncoder(float(self.clip), self.bits, len(self.clients), self.frac_bits)

    @cached_property
    def neighbourhood(self) -> Graph:
        """The round's public graph (``neighbours[i]`` excludes ``i``)."""
        return build_graph(self.graph, self.session_id, self.round, self.clients)

    def neighbours(self, i: int) -> frozenset[int]:
        return self.neighbourhood.neighbours[i]

    def with_dim(self, dim: int) -> "SecAggParams":
        return replace(self, dim=dim)

    def require_dim(self) -> int:
        if self.dim is None:
            raise ParameterError("SecAggParams.dim is not set: call params.with_dim(len(vector)) first")
        return self.dim

    @cached_property
    def session_tag(self) -> bytes:
        """16-byte hash of the session id and all parameters except ``round``."""
        h = hashlib.sha256(_TAG_DOMAIN)
        h.update(struct.pack(">B", len(self.session_id)) + self.session_id)
        h.update(struct.pack(">I", len(self.clients)) + b"".join(struct.pack(">I", i) for i in self.clients))
        h.update(struct.pack(">I8sBBdBI", self._t, self.graph.encode().ljust(8, b"\0"), self.bits,
                             0, float(self.clip), self.encoder.fractional_bits, self.dim or 0))
        return h.digest()[:SESSION_TAG_BYTES]

    # -- the byte strings signatures, AEAD and KDFs bind to --------------------------
    def _prefix(self, label: bytes) -> bytes:
        return b"fedvault/secagg/v1/" + label + b"/" + self.session_tag + struct.pack(">I", self.round)

    def advertise_message(self, client: int, channel_pk: bytes, mask_pk: bytes) -> bytes:
        """What a client signs to advertise its round keys."""
        return self._prefix(b"advertise") + struct.pack(">I", client) + channel_pk + mask_pk

    def consistency_message(self, client: int, survivors: Sequence[int]) -> bytes:
        """What a client signs to confirm the survivor set U3 it was shown."""
        return self._prefix(b"consistency") + struct.pack(">I", client) + _ids_bytes(tuple(survivors))

    def share_context(self, sender: int, recipient: int) -> bytes:
        """KDF context of the directional share-encryption key and the AEAD associated data."""
        return self._prefix(b"share") + struct.pack(">II", sender, recipient)

    def mask_context(self) -> bytes:
        """KDF context of pairwise mask seeds (the pair's sorted ids are appended)."""
        return self._prefix(b"mask")


@lru_cache(maxsize=16)
def _ids_bytes(ids: tuple[int, ...]) -> bytes:
    """``u32 count || u32 ids`` (cached: every signature over U3 shares it)."""
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def expected_degree(n: int) -> float:
    """``2 log2 n``: the sparse graph's nominal degree."""
    return 2 * math.log2(max(n, 2))
