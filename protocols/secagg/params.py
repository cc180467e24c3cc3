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
from typing import Mapping, Sequence

from fedvault.secagg.encoding import FixedPointEncoder
from fedvault.secagg.errors import ParameterError
from fedvault.secagg.graph import Graph, build_graph, check_ids

from .messages import SESSION_TAG_BYTES
from .threat import Derived, Guarantee, ThreatModel, derive, insecure

_TAG_DOMAIN = b"fedvault/secagg/session/v2"
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
    threat_model
        The adversary the round must withstand (:class:`~protocols.secagg.threat.ThreatModel`:
        colluding hospitals, dropouts, security parameter).  ``None``: the default model.
        The graph degree and the threshold are derived from it
        (:func:`~protocols.secagg.threat.derive`); :meth:`guarantee` says what the round
        then guarantees.
    threshold
        Shamir threshold ``t``.  ``None`` (recommended): derived from the threat model.
        An explicit value is checked against it (``2t > k + C`` in the complete graph,
        the tail bound in the sparse one) and refused if unsafe.
    graph
        ``"complete"`` (Bonawitz et al. 2017) or ``"sparse"`` (Bell et al. 2020: a random
        Harary graph of degree ``degree``; see :mod:`secagg.graph`).
    degree
        Sparse graph degree ``k`` (even).  ``None``: the smallest degree the threat model allows.
    bits, clip, frac_bits
        Fixed-point encoding (see :class:`secagg.encoding.FixedPointEncoder`, with
        ``max_summands = len(clients)``).
    dim
        Vector length; must be set before building clients/servers (``with_dim``).
    insecure_test_only
        ``True`` takes ``threshold`` (and ``degree``) as given without any security
        check: for tests that need a weak configuration.  Never a default; the
        guarantee line then starts with "INSECURE".
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
    threat_model: ThreatModel | None = None
    degree: int | None = None
    insecure_test_only: bool = False
    _t: int = field(init=False, repr=False, compare=False)
    _derived: Derived = field(init=False, repr=False, compare=False)

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
        if self.threshold is not None and (not isinstance(self.threshold, int) or isinstance(self.threshold, bool)):
            raise ParameterError(f"threshold must be an integer, got {self.threshold!r}")
        if self.threat_model is not None and not isinstance(self.threat_model, ThreatModel):
            raise ParameterError("threat_model must be a protocols.secagg.ThreatModel")
        self.encoder  # validates bits / clip / frac_bits
        n = len(ids)
        if self.insecure_test_only:
            if self.threshold is None:
                raise ParameterError("insecure_test_only needs an explicit threshold")
            k = n - 1 if self.graph == "complete" else (self.degree or min(n - 1, 2 * math.ceil(math.log2(n))))
            d = insecure(self.graph, n, min(k, n - 1), self.threshold)
        else:
            d = derive(self.graph, n, self.threat_model or ThreatModel(), threshold=self.threshold,
                       degree=self.degree)
        object.__setattr__(self, "_derived", d)
        object.__setattr__(self, "_t", d.threshold)
        if self.neighbourhood.min_degree() < d.threshold:
            raise ParameterError(f"threshold {d.threshold} exceeds the smallest neighbourhood "
                                 f"({self.neighbourhood.min_degree()}) of the {self.graph} graph on {n} clients")

    @classmethod
    def from_threat_model(cls, session_id: bytes, round: int, clients: Sequence[int], threat_model: ThreatModel,
                          *, graph: str = "complete", **encoding) -> "SecAggParams":
        """Parameters whose degree and threshold are derived from ``threat_model``
        (raises :class:`ParameterError` saying what is achievable if it cannot be met)."""
        return cls(session_id, round, tuple(clients), graph=graph, threat_model=threat_model, **encoding)

    def to_record(self) -> dict:
        """Every parameter as plain values (ints, floats, str, bytes, int lists) for a transport
        to carry to the hospitals; :meth:`from_record` rebuilds the same parameters (same
        session tag).  A hospital must still judge ``guarantee()`` against its own policy:
        the threat model in a record is the *server's* claim."""
        tm = self.threat_model or ThreatModel()
        g = self.guarantee()
        return {
            "session": self.session_id, "round": self.round, "clients": list(self.clients), "threshold": self.t,
            "graph": self.graph, "degree": self.effective_degree if self.graph == "sparse" else 0,
            "bits": self.bits, "clip": float(self.clip), "frac_bits": self.encoder.fractional_bits,
            "dim": self.require_dim(), "colluders": g.colluders,
            "dropouts": -1 if tm.max_dropouts(len(self.clients), self.graph) is None else g.dropouts,
            "security_bits": tm.security_bits, "correctness_bits": tm.correctness_bits,
        }

    @classmethod
    def from_record(cls, rec: Mapping) -> "SecAggParams":
        """The parameters :meth:`to_record` wrote (raises :class:`ParameterError` if unsafe)."""
        try:
            drop = int(rec["dropouts"])
            tm = ThreatModel(colluders=int(rec["colluders"]), dropouts=None if drop < 0 else drop,
                             security_bits=int(rec["security_bits"]), correctness_bits=int(rec["correctness_bits"]))
            graph = str(rec["graph"])
            return cls(session_id=bytes(rec["session"]), round=int(rec["round"]),
                       clients=tuple(int(c) for c in rec["clients"]), threshold=int(rec["threshold"]),
                       graph=graph, degree=(int(rec["degree"]) if graph == "sparse" and int(rec["degree"]) < len(
                           rec["clients"]) - 1 else None),
                       bits=int(rec["bits"]), clip=float(rec["clip"]), frac_bits=int(rec["frac_bits"]),
                       dim=int(rec["dim"]), threat_model=tm)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ParameterError):
                raise
            raise ParameterError(f"incomplete or malformed SecAgg parameter record: {e!r}") from None

    def guarantee(self) -> Guarantee:
        """What this round guarantees (printable ``.line()``, recordable ``.as_dict()``)."""
        return self._derived.guarantee

    @property
    def t(self) -> int:
        """The effective threshold."""
        return self._t

    @cached_property
    def encoder(self) -> FixedPointEncoder:
        return FixedPointEncoder(float(self.clip), self.bits, len(self.clients), self.frac_bits)

    @property
    def effective_degree(self) -> int:
        """The degree ``k`` of the masking graph (``n - 1`` for the complete graph)."""
        return self._derived.degree

    @cached_property
    def neighbourhood(self) -> Graph:
        """The round's graph (``neighbours[i]`` excludes ``i``)."""
        d = self._derived
        if d.graph == "complete" or d.degree >= len(self.clients) - 1:
            return build_graph("complete", self.session_id, self.round, self.clients)
        return build_graph("sparse", self.session_id, self.round, self.clients, degree=d.degree)

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
        g = self._derived.guarantee
        h.update(struct.pack(">IIIB", self._derived.degree, g.colluders, g.dropouts, int(g.insecure)))
        return h.digest()[:SESSION_TAG_BYTES]

    # -- the byte strings signatures, AEAD and KDFs bind to --------------------------
    def _prefix(self, label: bytes) -> bytes:
        return b"fedvault/secagg/v2/" + label + b"/" + self.session_tag + struct.pack(">I", self.round)

    def advertise_message(self, client: int, channel_pk: bytes, mask_pk: bytes, graph_commit: bytes) -> bytes:
        """What a client signs to advertise its round keys and its graph commitment."""
        return self._prefix(b"advertise") + struct.pack(">I", client) + channel_pk + mask_pk + graph_commit

    def graph_commitment(self, client: int, rho: bytes) -> bytes:
        """``SHA-256(P("graph-commit") || u32 client || rho)``: binds a hospital to its graph randomness."""
        return hashlib.sha256(self._prefix(b"graph-commit") + struct.pack(">I", client) + rho).digest()

    def graph_seed(self, reveals: Mapping[int, bytes]) -> bytes:
        """``SHA-256(P("graph") || u32 |L| || [u32 id || rho]`` over L ascending): the seed of
        the round's graph, fixed only once every member of L has opened its commitment."""
        h = hashlib.sha256(self._prefix(b"graph") + struct.pack(">I", len(reveals)))
        for i in sorted(reveals):
            h.update(struct.pack(">I", i) + reveals[i])
        return h.digest()

    def round_graph(self, members: Sequence[int], seed: bytes) -> Graph:
        """The round's graph over the list ``members`` (L): complete, or the random Harary
        graph of degree :attr:`effective_degree` drawn from ``seed`` (complete if L is small)."""
        d = self._derived
        if d.graph == "complete" or d.degree >= len(members) - 1:
            return build_graph("complete", self.session_id, self.round, members)
        return build_graph("sparse", self.session_id, self.round, members, degree=d.degree, seed=seed)

    @property
    def min_members(self) -> int:
        """Fewest hospitals the list L may hold: ``n - D`` (the declared dropouts), at least ``t + 1``.
        A smaller list would concentrate the colluders the threshold was derived for."""
        g = self._derived.guarantee
        return max(self._t + 1, len(self.clients) - g.dropouts) if not g.insecure else self._t + 1

    def consistency_message(self, client: int, survivors: Sequence[int], graph_seed: bytes = b"") -> bytes:
        """What a client signs to confirm the survivor set U3 it was shown (in the graph ``graph_seed``)."""
        return (self._prefix(b"consistency") + graph_seed + struct.pack(">I", client)
                + _ids_bytes(tuple(survivors)))

    def share_context(self, sender: int, recipient: int, graph_seed: bytes = b"") -> bytes:
        """KDF context of the directional share-encryption key and the AEAD associated data."""
        return self._prefix(b"share") + graph_seed + struct.pack(">II", sender, recipient)

    def mask_context(self) -> bytes:
        """KDF context of pairwise mask seeds (the pair's sorted ids are appended)."""
        return self._prefix(b"mask")


def share_commitment(params: "SecAggParams", graph_seed: bytes, kind: int, owner: int, holder: int, share: bytes,
                     salt: bytes) -> bytes:
    """``SHA-256(P("share-commit") || graph seed || u8 kind || u32 owner || u32 holder || share || salt)``:
    the owner's commitment to the share it gives the holder (kind 0 self-mask seed, 1 mask key).
    The holder checks it on receipt; the server checks a revealed share against it."""
    return hashlib.sha256(params._prefix(b"share-commit") + graph_seed
                          + struct.pack(">BII", int(kind), owner, holder) + share + salt).digest()


@lru_cache(maxsize=16)
def _ids_bytes(ids: tuple[int, ...]) -> bytes:
    """``u32 count || u32 ids`` (cached: every signature over U3 shares it)."""
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def expected_degree(n: int) -> float:
    """``2 log2 n``: the sparse graph's nominal degree."""
    return 2 * math.log2(max(n, 2))
