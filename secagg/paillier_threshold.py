"""t-of-l threshold Paillier (Shoup 2000 / Damgård–Jurik 2001, s = 1) with verified shares.

**Dealer** (:func:`deal`; trusted once, at setup, then forgets everything)::

    p = 2p' + 1, q = 2q' + 1 safe primes,  n = pq,  m = p'q'
    d = 0 mod m,  d = 1 mod n                          (d = m * (m^-1 mod n))
    f(X) = d + a_1 X + ... + a_(t-1) X^(t-1) mod nm,   a_k uniform in [0, nm)
    s_i = f(i)                                          party i's secret share, i = 1..l
    v = r^2 mod n^2 (a random square),  v_i = v^(Δ s_i) mod n^2,  Δ = l!

The public key is phe's ``PaillierPublicKey(n)``: clients encrypt exactly as for a
single key holder.

**Decryption share** of a ciphertext ``c``: ``c_i = c^(2Δ s_i) mod n^2``.

**Combination** of shares from any set ``S`` of ``t`` parties, with the integer Lagrange
coefficients ``μ_i = Δ prod_{j in S, j != i} j / (j - i)``::

    c' = prod_{i in S} c_i^(2 μ_i) = c^(4 Δ^2 d) = (1 + n)^(4 Δ^2 M)  mod n^2
    M  = L(c') * (4 Δ^2)^-1 mod n

(the ``r^n`` part vanishes because ``4m`` divides ``4d`` and ``r^n`` has order dividing
``4m = φ(n)``; ``d = 1 mod n`` leaves ``M``). Fewer than ``t`` shares determine nothing
about ``d`` (Shamir over ``Z_nm``, with ``Δ`` clearing denominators).

**Share verification.** A share vector ``(c_i,1..c_i,k)`` for ciphertexts
``(c_1..c_k)`` is checked by one Fiat–Shamir proof of equality of discrete logs
(Chaum–Pedersen, as in Shoup's scheme) on a random linear combination::

    ρ_j = SHAKE-256(transcript)_j  (128 bits each)
    C = prod c_j^ρ_j,  C_i = prod c_i,j^ρ_j
    prove  log_(C^4)(C_i^2) = log_v(v_i)  (= Δ s_i)

Prover: ``r`` uniform of ``bits(Δ s_i) + 256 + 128`` bits, ``a = C^(4r)``, ``b = v^r``,
``e = SHA-256(..., a, b)``, ``z = r + e Δ s_i``; verifier recomputes ``a = C^(4z) C_i^(-2e)``,
``b = v^z v_i^(-e)`` and the hash. A wrong ``c_i,j`` makes ``C_i^2`` differ from
``C^(4Δ s_i)`` except with probability about ``2^-128`` over ``ρ`` (the errors live in
the group of squares, whose order has only large prime factors ``p', q', p, q``), and the
proof is sound except with probability about ``2^-256``. Squaring removes the elements
of order 2, as in Shoup's proof.

Cost: a share is a ``|nm| + bits(Δ)``-bit exponentiation mod ``n^2`` per ciphertext (about
eight times a CRT decryption); shareholders do not know the factors, so no CRT.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import gmpy2
from cryptography.hazmat.primitives import hashes
from gmpy2 import mpz, powmod
from phe.paillier import PaillierPublicKey

from fedvault.secagg.errors import IntegrityError, ParameterError
from fedvault.secagg.paillier import RandomBytes, map_chunks, split_chunks, uniform_below, ciphertext_bytes

__all__ = ["ShareVerificationError", "ThresholdPublicKey", "ThresholdKeyShare", "DecryptionShare",
           "generate_safe_prime", "deal", "decryption_share", "verify_share", "combine"]

_RHO_BITS = 128
_E_BITS = 256


class ShareVerificationError(IntegrityError):
    """A decryption share failed its proof: the party that sent it is faulty or malicious."""


def generate_safe_prime(bits: int, rng: RandomBytes = os.urandom) -> int:
    """A safe prime ``p = 2p' + 1`` of exactly ``bits`` bits with its top two bits set.

    Searches primes ``p'`` upwards from a random start (``gmpy2.next_prime``) until
    ``2p' + 1`` is prime too (both checked with 50 Miller–Rabin rounds). Slow for large
    sizes (a 1024-bit safe prime takes tens of seconds); :func:`deal` accepts
    precomputed ones.
    """
    if bits < 16:
        raise ParameterError("safe primes need at least 16 bits")
    while True:
        start = int.from_bytes(rng((bits + 7) // 8), "big") % (1 << (bits - 1))
        start |= 3 << (bits - 3)  # p' >= 3 * 2^(bits-3): p has its top two bits set
        qp = gmpy2.next_prime(start)
        while qp.bit_length() == bits - 1:
            p = 2 * qp + 1
            if gmpy2.is_prime(p, 50) and gmpy2.is_prime(qp, 50):
                return int(p)
            qp = gmpy2.next_prime(qp)


def _is_safe_prime(p: int) -> bool:
    return p > 7 and gmpy2.is_prime(p, 50) and gmpy2.is_prime((p - 1) // 2, 50)


@dataclass(frozen=True)
class ThresholdPublicKey:
    """What every party knows: ``n`` (as a phe key), ``t``, ``l``, ``v`` and the verification keys ``v_i``."""

    public_key: PaillierPublicKey
    threshold: int
    parties: int
    v: int
    verification_keys: Mapping[int, int]

    @property
    def delta(self) -> int:
        return math.factorial(self.parties)

    def fingerprint(self) -> bytes:
        """SHA-256 over ``n, t, l, v, v_1..v_l``: binds proofs to this key."""
        h = hashes.Hash(hashes.SHA256())
        h.update(b"fedvault/paillier/threshold-key/v1\x00")
        for x in [self.public_key.n, self.threshold, self.parties, self.v,
                  *(self.verification_keys[i] for i in range(1, self.parties + 1))]:
            h.update(_int_bytes(x))
        return h.finalize()


@dataclass(frozen=True, repr=False)
class ThresholdKeyShare:
    """Party ``index``'s secret share ``s_index`` (deliver it over a confidential, authenticated channel)."""

    index: int
    secret: int
    public: ThresholdPublicKey = field(compare=False)

    def __repr__(self) -> str:  # never print the share
        return f"<ThresholdKeyShare {self.index} of {self.public.parties}>"


@dataclass(frozen=True)
class DecryptionShare:
    """``c_i,j = c_j^(2Δ s_i)`` for every ciphertext, with the batched proof ``(e, z)``."""

    index: int
    values: tuple[Any, ...]
    e: int
    z: int


def deal(parties: int, threshold: int, key_bits: int = 2048, *, rng: RandomBytes = os.urandom,
         safe_primes: tuple[int, int] | None = None) -> tuple[ThresholdPublicKey, list[ThresholdKeyShare]]:
    """Trusted-dealer setup: a safe-prime modulus, ``l = parties`` shares, any ``t = threshold`` decrypt.

    ``safe_primes`` skips the slow prime search (both are checked to be safe primes).
    The dealer must erase ``p, q, d`` and the polynomial afterwards; this function keeps
    none of them.
    """
    if not 2 <= threshold <= parties:
        raise ParameterError(f"threshold must be in 2..parties ({parties}), got {threshold}")
    if safe_primes is None:
        half = key_bits // 2
        p = generate_safe_prime(half, rng)
        q = generate_safe_prime(half, rng)
        while q == p:
            q = generate_safe_prime(half, rng)
    else:
        p, q = (int(x) for x in safe_primes)
        if p == q or not (_is_safe_prime(p) and _is_safe_prime(q)):
            raise ParameterError("safe_primes must be two distinct safe primes (p = 2p'+1, p' prime)")
    n = mpz(p) * q
    if n.bit_length() != key_bits and safe_primes is None:
        raise ParameterError("modulus of unexpected size")  # cannot happen with top bits set
    if n <= math.factorial(parties):
        raise ParameterError("too many parties for this modulus")
    m = mpz((p - 1) // 2) * ((q - 1) // 2)
    nm = n * m
    n2 = n * n
    d = m * gmpy2.invert(m, n)  # 0 mod m, 1 mod n
    coeffs = [d] + [mpz(uniform_below(int(nm), rng)) for _ in range(threshold - 1)]
    delta = math.factorial(parties)
    while True:
        r = mpz(uniform_below(int(n2), rng))
        if gmpy2.gcd(r, n) == 1:
            break
    v = r * r % n2
    secrets = {}
    for i in range(1, parties + 1):
        acc = mpz(0)
        for a in reversed(coeffs):
            acc = (acc * i + a) % nm
        secrets[i] = acc
    vks = {i: int(powmod(v, delta * s, n2)) for i, s in secrets.items()}
    pub = ThresholdPublicKey(PaillierPublicKey(int(n)), threshold, parties, int(v), vks)
    return pub, [ThresholdKeyShare(i, int(s), pub) for i, s in secrets.items()]


# -- shares and proofs ----------------------------------------------------------------
def _int_bytes(x: int) -> bytes:
    x = int(x)
    b = x.to_bytes((x.bit_length() + 7) // 8 or 1, "big")
    return len(b).to_bytes(4, "big") + b


def _cts_bytes(pub: ThresholdPublicKey, values: Sequence[Any]) -> bytes:
    w = ciphertext_bytes(pub.public_key.n.bit_length())
    return b"".join(int(c).to_bytes(w, "big") for c in values)


def _rhos(pub: ThresholdPublicKey, index: int, ciphertexts: Sequence[Any], values: Sequence[Any],
          context: bytes) -> list[int]:
    xof = hashes.Hash(hashes.SHAKE256(len(ciphertexts) * _RHO_BITS // 8))
    xof.update(b"fedvault/paillier/share-batch/v1\x00" + pub.fingerprint() + _int_bytes(len(context)) + context
               + index.to_bytes(4, "big") + _cts_bytes(pub, ciphertexts) + _cts_bytes(pub, values))
    raw = xof.finalize()
    k = _RHO_BITS // 8
    return [int.from_bytes(raw[j * k:(j + 1) * k], "big") for j in range(len(ciphertexts))]


def _multi_exp(state: dict, chunk: tuple[list[Any], list[int]]) -> list[Any]:
    n2 = state["n2"]
    acc = mpz(1)
    for c, rho in zip(*chunk):
        acc = acc * powmod(c, rho, n2) % n2
    return [acc]


def _combine_powers(pub: ThresholdPublicKey, bases: Sequence[Any], rhos: list[int], workers: int | None) -> Any:
    n2 = mpz(pub.public_key.nsquare)
    bases = list(bases)
    chunks = [(bases[lo:hi], rhos[lo:hi]) for lo, hi in split_chunks(len(bases), workers)]
    acc = mpz(1)
    for part in map_chunks(_multi_exp, chunks, {"n2": n2}, workers):
        acc = acc * part % n2
    return acc


def _challenge(pub: ThresholdPublicKey, index: int, big_c4: Any, big_ci2: Any, a: Any, b: Any) -> int:
    h = hashes.Hash(hashes.SHA256())
    h.update(b"fedvault/paillier/share-proof/v1\x00" + pub.fingerprint() + index.to_bytes(4, "big"))
    for x in (big_c4, big_ci2, a, b):
        h.update(_int_bytes(x))
    return int.from_bytes(h.finalize(), "big")


def _share_chunk(state: dict, cts: list[Any]) -> list[Any]:
    n2, exp = state["n2"], state["exp"]
    return [powmod(c, exp, n2) for c in cts]


def decryption_share(share: ThresholdKeyShare, ciphertexts: Sequence[Any], *, context: bytes = b"",
                     rng: RandomBytes = os.urandom, workers: int | None = None) -> DecryptionShare:
    """Party ``share.index``'s share ``c^(2Δ s_i)`` of every ciphertext, with its batched proof.

    ``context`` (e.g. session id and round) is bound into the proof's challenge.
    """
    pub = share.public
    n2 = mpz(pub.public_key.nsquare)
    x = pub.delta * share.secret  # Δ s_i
    cts = [mpz(c) for c in ciphertexts]
    chunks = [cts[lo:hi] for lo, hi in split_chunks(len(cts), workers)]
    values = tuple(map_chunks(_share_chunk, chunks, {"n2": n2, "exp": 2 * x}, workers))
    rhos = _rhos(pub, share.index, cts, values, context)
    big_c = _combine_powers(pub, cts, rhos, workers)
    big_ci = _combine_powers(pub, values, rhos, workers)
    c4, ci2 = powmod(big_c, 4, n2), powmod(big_ci, 2, n2)
    r = int.from_bytes(rng((x.bit_length() + _E_BITS + 128 + 7) // 8), "big")
    a, b = powmod(c4, r, n2), powmod(pub.v, r, n2)
    e = _challenge(pub, share.index, c4, ci2, a, b)
    return DecryptionShare(share.index, values, e, r + e * x)


def verify_share(pub: ThresholdPublicKey, ciphertexts: Sequence[Any], share: DecryptionShare, *,
                 context: bytes = b"", workers: int | None = None) -> None:
    """Raise :class:`ShareVerificationError` unless ``share`` is party ``share.index``'s correct share."""
    if share.index not in pub.verification_keys:
        raise ShareVerificationError(f"unknown party index {share.index}")
    if len(share.values) != len(ciphertexts):
        raise ShareVerificationError(f"party {share.index}: {len(share.values)} share values "
                                     f"for {len(ciphertexts)} ciphertexts")
    n2 = mpz(pub.public_key.nsquare)
    if any(not 0 < v < n2 or gmpy2.gcd(v, pub.public_key.n) != 1 for v in share.values):
        raise ShareVerificationError(f"party {share.index}: share value outside Z*_(n^2)")
    if not 0 <= share.e < (1 << _E_BITS) or share.z < 0:
        raise ShareVerificationError(f"party {share.index}: malformed proof")
    cts = [mpz(c) for c in ciphertexts]
    rhos = _rhos(pub, share.index, cts, share.values, context)
    c4 = powmod(_combine_powers(pub, cts, rhos, workers), 4, n2)
    ci2 = powmod(_combine_powers(pub, share.values, rhos, workers), 2, n2)
    vi = mpz(pub.verification_keys[share.index])
    a = powmod(c4, share.z, n2) * powmod(ci2, -share.e, n2) % n2
    b = powmod(pub.v, share.z, n2) * powmod(vi, -share.e, n2) % n2
    if _challenge(pub, share.index, c4, ci2, a, b) != share.e:
        raise ShareVerificationError(f"party {share.index}: decryption share fails its proof "
                                     "(forged or computed on other ciphertexts)")


def _lagrange_at_zero(indices: Sequence[int], i: int, delta: int) -> int:
    num, den = delta, 1
    for j in indices:
        if j != i:
            num *= j
            den *= j - i
    if num % den:
        raise ParameterError("internal: Lagrange coefficient not integral")  # Δ = l! guarantees it
    return num // den


def combine(pub: ThresholdPublicKey, shares: Sequence[DecryptionShare]) -> list[int]:
    """Plaintexts from ``t`` (already verified) shares: ``M = L(prod c_i^(2μ_i)) (4Δ^2)^-1 mod n``.

    Raises :class:`ParameterError` with fewer than ``t`` distinct parties (only the first
    ``t`` distinct ones are used).
    """
    chosen: dict[int, DecryptionShare] = {}
    for s in shares:
        chosen.setdefault(s.index, s)
    if len(chosen) < pub.threshold:
        raise ParameterError(f"{len(chosen)} distinct decryption shares; {pub.threshold} are needed")
    use = sorted(chosen)[: pub.threshold]
    n = mpz(pub.public_key.n)
    n2 = n * n
    delta = pub.delta
    mus = {i: 2 * _lagrange_at_zero(use, i, delta) for i in use}
    length = len(chosen[use[0]].values)
    if any(len(chosen[i].values) != length for i in use):
        raise ParameterError("shares cover different numbers of ciphertexts")
    inv = gmpy2.invert(4 * delta * delta, n)
    out = []
    for j in range(length):
        acc = mpz(1)
        for i in use:
            acc = acc * powmod(chosen[i].values[j], mus[i], n2) % n2
        out.append(int((acc - 1) // n * inv % n))
    return out
