"""Who masks with whom: the complete graph (SecAgg) or a sparse random graph (SecAgg+).

Bell et al. 2020 (SecAgg+) replace the complete graph of Bonawitz et al. 2017 by a
random graph of degree ``k = O(log n)``: every client masks with, and shares its
secrets among, only its ``k`` neighbours, cutting client cost from O(n) to O(log n).
The security argument needs the graph to be *random and not chosen by the server*.

Construction (every client recomputes it and refuses a different one)
    ``seed = SHA-256("fedvault/secagg/graph/v1" || len(session) || session || round
    || n || sorted ids)`` (integers as 4-byte big-endian).  The graph is the union of
    ``r = ceil(log2 n)`` Hamiltonian cycles, each through a uniformly random
    permutation of the ids drawn from an AES-256-CTR stream keyed by ``seed``
    (Fisher-Yates with rejection sampling, no modulo bias).  Each client has degree
    at most ``2r ~ 2 log2 n`` (slightly less when cycles share an edge) and at least 2;
    unions of random Hamiltonian cycles are contiguous to random regular graphs
    (Kim & Wormald 2001).  If ``2r >= n - 1`` the complete graph is used.

The seed depends only on public values fixed *before* the round (the registered
cohort, not the set of clients that show up), so the server cannot grind it by
choosing who participates.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import ParameterError
from .prg import DeterministicRandom

_GRAPH_DOMAIN = b"fedvault/secagg/graph/v1"
MAX_ID = 0xFFFFFFFE  # 0xFFFFFFFF is reserved for the server on the wire


@dataclass(frozen=True)
class Graph:
    """An undirected graph on the cohort; ``neighbours[i]`` excludes ``i``."""

    kind: str
    neighbours: Mapping[int, frozenset[int]]

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(sorted(self.neighbours))

    def min_degree(self) -> int:
        return min((len(v) for v in self.neighbours.values()), default=0)

    def max_degree(self) -> int:
        return max((len(v) for v in self.neighbours.values()), default=0)


def check_ids(ids: Sequence[int]) -> tuple[int, ...]:
    """Sorted tuple of distinct client ids in [0, 2^32 - 2]; raises ParameterError otherwise."""
    out = tuple(sorted(ids))
    if len(set(out)) != len(out):
        raise ParameterError("client ids must be distinct")
    for i in out:
        if not isinstance(i, int) or not (0 <= i <= MAX_ID):
            raise ParameterError(f"client ids must be integers in [0, {MAX_ID}], got {i!r}")
    return out


def graph_seed(session_id: bytes, round_: int, ids: Sequence[int]) -> bytes:
    """The public 32-byte seed the sparse graph is derived from."""
    ids = check_ids(ids)
    h = hashlib.sha256(_GRAPH_DOMAIN)
    h.update(struct.pack(">I", len(session_id)) + session_id)
    h.update(struct.pack(">II", round_, len(ids)))
    h.update(b"".join(struct.pack(">I", i) for i in ids))
    return h.digest()


def sparse_cycles(n: int) -> int:
    """Number of random Hamiltonian cycles, ``ceil(log2 n)`` (degree about ``2 log2 n``)."""
    return max(1, math.ceil(math.log2(max(n, 2))))


def complete_graph(ids: Sequence[int]) -> Graph:
    ids = check_ids(ids)
    everyone = frozenset(ids)
    return Graph("complete", {i: everyone - {i} for i in ids})


def _uniform_below(rng: DeterministicRandom, m: int) -> int:
    limit = (1 << 32) - ((1 << 32) % m)
    while True:
        v = int.from_bytes(rng(4), "big")
        if v < limit:
            return v % m


def sparse_graph(ids: Sequence[int], seed: bytes) -> Graph:
    """Union of ``ceil(log2 n)`` random Hamiltonian cycles drawn from ``seed`` (see module doc)."""
    ids = check_ids(ids)
    n = len(ids)
    r = sparse_cycles(n)
    if 2 * r >= n - 1:
        return Graph("sparse", complete_graph(ids).neighbours)
    rng = DeterministicRandom(seed, b"graph")
    adj: dict[int, set[int]] = {i: set() for i in ids}
    for _ in range(r):
        perm = list(ids)
        for k in range(n - 1, 0, -1):
            j = _uniform_below(rng, k + 1)
            perm[k], perm[j] = perm[j], perm[k]
        for k in range(n):
            a, b = perm[k], perm[(k + 1) % n]
            adj[a].add(b)
            adj[b].add(a)
    return Graph("sparse", {i: frozenset(v) for i, v in adj.items()})


def harary_graph(ids: Sequence[int], degree: int, seed: bytes) -> Graph:
    """Random Harary graph (Bell et al. 2020): the ids in a uniformly random order drawn
    from ``seed`` (Fisher-Yates, rejection sampling), each joined to the ``degree / 2``
    ids before and after it on the cycle.  Every id has exactly ``degree`` neighbours,
    and for a fixed id its neighbour set is a uniformly random ``degree``-subset of the
    others (the order is uniform), which is what the threshold derivation in
    :mod:`protocols.secagg.threat` needs.  ``degree >= n - 1`` gives the complete graph.
    """
    ids = check_ids(ids)
    n = len(ids)
    if not isinstance(degree, int) or degree < 2 or degree % 2:
        raise ParameterError(f"Harary degree must be an even integer >= 2, got {degree!r}")
    if degree >= n - 1:
        return Graph("sparse", complete_graph(ids).neighbours)
    rng = DeterministicRandom(seed, b"harary")
    perm = list(ids)
    for k in range(n - 1, 0, -1):
        j = _uniform_below(rng, k + 1)
        perm[k], perm[j] = perm[j], perm[k]
    half = degree // 2
    adj: dict[int, frozenset[int]] = {}
    for p, i in enumerate(perm):
        adj[i] = frozenset(perm[(p + o) % n] for o in range(-half, half + 1) if o)
    return Graph("sparse", adj)


def build_graph(kind: str, session_id: bytes, round_: int, ids: Sequence[int], degree: int | None = None,
                seed: bytes | None = None) -> Graph:
    """The round's graph: ``"complete"``, or ``"sparse"``: a random Harary graph of
    ``degree`` from ``seed`` (default: the public :func:`graph_seed`, for tests and
    vectors; rounds use the hospitals' committed randomness, see protocols/SPEC.md)."""
    if kind == "complete":
        return complete_graph(ids)
    if kind == "sparse":
        s = graph_seed(session_id, round_, ids) if seed is None else seed
        if degree is None:
            return sparse_graph(ids, s)
        return harary_graph(ids, degree, s)
    raise ParameterError(f"graph must be 'complete' or 'sparse', got {kind!r}")
