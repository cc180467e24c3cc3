"""t-of-n Shamir secret sharing of 32-byte secrets over GF(p), p = 2^256 - 189.

Sharing picks a uniformly random polynomial ``f`` of degree ``t - 1`` over GF(p)
with ``f(0) = secret`` and gives party ``x`` the share ``f(x)``.  Any ``t`` shares
determine ``f(0) = sum_i f(x_i) * L_i``, ``L_i = prod_{j != i} x_j / (x_j - x_i)``
(Lagrange at zero); any ``t - 1`` shares are jointly uniform and independent of the
secret (information-theoretic hiding).

* Secrets and shares are 32-byte big-endian field elements; a secret must be < p
  (the protocol shares clamped X25519 scalars and 255-bit seeds, always < 2^255 < p).
* x-coordinates are integers in [1, p); the protocol uses ``client_id + 1``.
* Lagrange coefficients for a given tuple of x's are cached (:func:`lagrange_at_zero`),
  so a server reconstructing many secrets from the same holders inverts once.
* Coefficients come from the injected :data:`~secagg.prg.RandomSource` by rejection
  sampling (uniform in GF(p)).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

import gmpy2

from .errors import ParameterError
from .prg import RandomSource

PRIME = (1 << 256) - 189
"""The field modulus, the largest prime below 2^256."""
ELEMENT_BYTES = 32

_P = gmpy2.mpz(PRIME)


def _to_int(b: bytes) -> int:
    if len(b) != ELEMENT_BYTES:
        raise ParameterError(f"field elements are {ELEMENT_BYTES} bytes, got {len(b)}")
    return int.from_bytes(b, "big")


def _to_bytes(v) -> bytes:
    return int(v).to_bytes(ELEMENT_BYTES, "big")


def _random_element(rng: RandomSource) -> gmpy2.mpz:
    while True:  # rejection sampling; rejects with probability 189 / 2^256
        v = int.from_bytes(rng(ELEMENT_BYTES), "big")
        if v < PRIME:
            return gmpy2.mpz(v)


def split(secret: bytes, threshold: int, xs: Sequence[int], rng: RandomSource) -> dict[int, bytes]:
    """Shares ``{x: f(x)}`` of ``secret`` such that any ``threshold`` of them recover it.

    Raises :class:`ParameterError` if ``secret >= p``, if ``threshold`` is not in
    ``[1, len(xs)]``, or if the x's are not distinct integers in ``[1, p)``.
    """
    s = _to_int(secret)
    if s >= PRIME:
        raise ParameterError("secret must be a field element (< 2^256 - 189)")
    xs = list(xs)
    if len(set(xs)) != len(xs) or any(not (0 < x < PRIME) for x in xs):
        raise ParameterError("share x-coordinates must be distinct integers in [1, p)")
    if not (1 <= threshold <= len(xs)):
        raise ParameterError(f"threshold must be in [1, {len(xs)}] (number of shares), got {threshold}")
    coeffs = [gmpy2.mpz(s)] + [_random_element(rng) for _ in range(threshold - 1)]
    out: dict[int, bytes] = {}
    for x in xs:
        acc = gmpy2.mpz(0)
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % _P
        out[x] = _to_bytes(acc)
    return out


@lru_cache(maxsize=8192)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients ``L_i`` with ``f(0) = sum_i L_i f(x_i)`` for distinct ``xs`` (cached)."""
    if len(set(xs)) != len(xs) or any(not (0 < x < PRIME) for x in xs):
        raise ParameterError("share x-coordinates must be distinct integers in [1, p)")
    mx = [gmpy2.mpz(x) for x in xs]
    k = len(mx)
    # numerators prod_{j != i} x_j from prefix and suffix products (O(k)); denominators O(k^2)
    pre = [gmpy2.mpz(1)] * (k + 1)
    suf = [gmpy2.mpz(1)] * (k + 1)
    for i in range(k):
        pre[i + 1] = pre[i] * mx[i] % _P
        suf[k - 1 - i] = suf[k - i] * mx[k - 1 - i] % _P
    nums = [pre[i] * suf[i + 1] % _P for i in range(k)]
    dens = []
    for i, xi in enumerate(mx):
        den = gmpy2.mpz(1)
        for j, xj in enumerate(mx):
            if i != j:
                den = den * (xj - xi)
        dens.append(den % _P)
    # One inversion for all denominators (Montgomery's trick).
    prefix = [gmpy2.mpz(1)]
    for d in dens:
        prefix.append(prefix[-1] * d % _P)
    inv = gmpy2.invert(prefix[-1], _P)
    out = [0] * len(mx)
    for i in range(len(mx) - 1, -1, -1):
        out[i] = int(nums[i] * (inv * prefix[i] % _P) % _P)
        inv = inv * dens[i] % _P
    return tuple(out)


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares ``{x: share}``.

    Uses the ``threshold`` shares with the smallest x's (a canonical choice, so the
    Lagrange cache hits).  With fewer shares, raises :class:`ParameterError`.
    Shares from a *different* polynomial give a wrong secret, not an error: the
    protocol authenticates shares (AEAD) before they get here.
    """
    if threshold < 1 or len(shares) < threshold:
        raise ParameterError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    coeffs = lagrange_at_zero(xs)
    acc = gmpy2.mpz(0)
    for x, c in zip(xs, coeffs):
        acc += c * gmpy2.mpz(_to_int(shares[x]))
    return _to_bytes(acc % _P)
