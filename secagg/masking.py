"""Pairwise and self masks (Bonawitz et al. 2017, section 4).

Client ``i`` with encoded input ``x_i``, self-mask seed ``b_i`` and pairwise seeds
``s_ij`` (agreed by X25519 with each neighbour ``j`` in ``N(i)``) sends::

    y_i = x_i + PRG(b_i, "self"||i) + sum_{j in N(i)} sign(i, j) * PRG(s_ij, "pair"||min||max)
    sign(i, j) = +1 if i < j else -1                              (all mod 2^bits)

Pairwise masks cancel in ``sum_{i in S} y_i`` for every edge with both ends in the
survivor set ``S``; for an edge to a dropped client ``j`` the server rebuilds
``s_kj`` from ``j``'s reconstructed key and removes it (:func:`remove_dropped_pair_masks`).
The self mask hides ``y_i`` even if the server learns ``i``'s pairwise seeds (a late
client wrongly declared dropped); the server removes it with the reconstructed
``b_i`` (:func:`remove_self_masks`).  A single ``y_i`` is uniform mod ``2^bits`` to
anyone without ``b_i`` (computationally, through the PRG).
"""

from __future__ import annotations

import struct
from typing import Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .errors import ParameterError
from .keys import agree
from .prg import MaskExpander


def self_domain(i: int) -> bytes:
    return b"self" + struct.pack(">I", i)


def pair_domain(i: int, j: int) -> bytes:
    lo, hi = (i, j) if i < j else (j, i)
    return b"pair" + struct.pack(">II", lo, hi)


def pairwise_sign(i: int, j: int) -> int:
    """+1 if ``i < j`` else -1: the sign with which ``i`` adds the mask shared with ``j``."""
    if i == j:
        raise ParameterError("a client has no pairwise mask with itself")
    return 1 if i < j else -1


def pair_seed(private: X25519PrivateKey, peer_public: bytes, context: bytes, i: int, j: int) -> bytes:
    """``s_ij``: ECDH of ``i``'s mask key with ``j``'s, bound to ``context`` and the sorted pair."""
    lo, hi = (i, j) if i < j else (j, i)
    return agree(private, peer_public, b"mask/" + context + struct.pack(">II", lo, hi))


def input_mask_terms(client_id: int, self_seed: bytes, pair_seeds: Mapping[int, bytes]) -> list[tuple[bytes, bytes, int]]:
    """The ``(seed, domain, sign)`` terms client ``i`` adds to its encoded input."""
    terms = [(self_seed, self_domain(client_id), 1)]
    for j in sorted(pair_seeds):
        terms.append((pair_seeds[j], pair_domain(client_id, j), pairwise_sign(client_id, j)))
    return terms


def mask_input(
    encoded: np.ndarray,
    client_id: int,
    self_seed: bytes,
    pair_seeds: Mapping[int, bytes],
    expander: MaskExpander,
    *,
    in_place: bool = False,
) -> np.ndarray:
    """``y_i`` as in the module docstring: a new array, or ``encoded`` itself masked in
    place when ``in_place`` (it must then have the expander's dtype)."""
    if in_place:
        if encoded.dtype != expander.dtype:
            raise ParameterError(f"in-place masking needs a {expander.dtype} array")
        y = encoded
    else:
        y = np.array(encoded, dtype=expander.dtype, copy=True)
    expander.add_many(y, input_mask_terms(client_id, self_seed, pair_seeds))
    return expander.finish(y)


def self_mask_removal_terms(self_seeds: Mapping[int, bytes]) -> list[tuple[bytes, bytes, int]]:
    """Terms that subtract the self masks ``PRG(b_i)`` of the survivors."""
    return [(self_seeds[i], self_domain(i), -1) for i in sorted(self_seeds)]


def dropped_pair_removal_terms(dropped: int, seeds_with_survivors: Mapping[int, bytes]) -> list[tuple[bytes, bytes, int]]:
    """Terms that cancel the masks survivors ``k`` added for their edge to ``dropped``:
    survivor ``k`` added ``sign(k, dropped) * PRG(s_k,dropped)``; these subtract it."""
    return [
        (seeds_with_survivors[k], pair_domain(k, dropped), -pairwise_sign(k, dropped))
        for k in sorted(seeds_with_survivors)
    ]


def remove_self_masks(acc: np.ndarray, self_seeds: Mapping[int, bytes], expander: MaskExpander) -> None:
    """``acc -= sum_i PRG(b_i)`` in place (not reduced; call ``expander.finish``)."""
    expander.add_many(acc, self_mask_removal_terms(self_seeds))


def remove_dropped_pair_masks(
    acc: np.ndarray,
    dropped: int,
    seeds_with_survivors: Mapping[int, bytes],
    expander: MaskExpander,
) -> None:
    """Cancel the masks survivors added for their edges to ``dropped`` (in place)."""
    expander.add_many(acc, dropped_pair_removal_terms(dropped, seeds_with_survivors))


def plain_sum(vectors: Iterable[np.ndarray], dim: int, bits: int) -> np.ndarray:
    """Sum of encoded vectors mod ``2^bits`` (reference for tests)."""
    from .encoding import ring_dtype, ring_reduce

    acc = np.zeros(dim, dtype=ring_dtype(bits))
    for v in vectors:
        np.add(acc, v, out=acc)
    return ring_reduce(acc, bits)
