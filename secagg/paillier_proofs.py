"""Batched zero-knowledge proof of plaintext knowledge for DJN/Paillier ciphertexts (Fiat–Shamir).

**Statement.** Ciphertexts ``c_1..c_k``, units of ``Z*_(n^2)``, and a *context* (the
caller binds session, round, sender and key into it).  **Witness**: plaintexts ``m_j``
and DJN exponents ``a_j`` with ``c_j = (1 + n)^(m_j) * h_s^(a_j) mod n^2``
(``h_s = h^n``, :func:`~secagg.paillier.djn_base`).  The proof shows that the prover
*knows* every ``m_j``; it reveals nothing about them.  It is what stops a colluding
hospital from uploading a function of honest ciphertexts (e.g. the inverse of two
honest uploads' product, which would cancel them in the sum): such a hospital does not
know the plaintext of what it uploads.

**Protocol** (g = n + 1; ``ℓ = 128``-bit coefficients and challenge)::

    ρ_j  = SHAKE-256("fedvault/paillier/popk-rho/v1" || context || SHA-256(c_1..c_k))_j   (ℓ bits each)
    C    = prod c_j^ρ_j mod n^2,  M = sum ρ_j m_j mod n,  α = sum ρ_j a_j     (integer)
    prover:  x uniform in Z_n,  β uniform in [0, 2^(bits(α) + ℓ + 128)),
             A = (1 + x n) h_s^β mod n^2
    e    = SHA-256("fedvault/paillier/popk-challenge/v1" || context || SHA-256(c_1..c_k) || C || A) mod 2^ℓ
    z_m  = x + e M mod n,   z_a = β + e α
    verify:  0 < A < n^2, gcd(A, n) = 1, 0 <= z_m < n, 0 <= z_a < 2^ZA_BITS and
             (1 + z_m n) h_s^(z_a) = A C^e  mod n^2

**Completeness**: ``(1+n)^z_m = (1+n)^x (1+n)^(eM)`` because ``1+n`` has order ``n``
mod ``n^2``, and ``h_s^(z_a) = h_s^β (h_s^α)^e``.

**Soundness (knowledge of every m_j).** Every unit of ``Z*_(n^2)`` is uniquely
``(1+n)^m r^n`` (``Z*_(n^2) ≅ Z_n × Z*_n``).  Two accepting answers ``(e, z), (e', z')``
to one ``A`` give ``(1+n)^(Δz_m) (h^(Δz_a))^n = C^(Δe)``, so ``Δz_m = Δe M mod n`` and,
as ``0 < |Δe| < 2^128 < p, q``, ``M = Δz_m / Δe mod n``: the prover knows the plaintext
of ``C``.  Rewinding the choice of ``ρ`` ``k`` times gives ``k`` combinations
``sum ρ^(i)_j m_j``; random ``ℓ``-bit vectors are linearly independent modulo ``p`` and
``q`` except with probability ``<= k 2^-128`` (Schwartz–Zippel on the determinant), so
the extractor solves for every ``m_j``: the batch is a proof of knowledge of each
plaintext (Bellare–Garay–Rabin-style batching of a Σ-protocol; cf. Peng, Boyd, Dawson,
"Batch zero-knowledge proof and verification", 2007).  Directly against the
cancellation attack: to pass, a prover that knows all plaintexts but ``m_1`` (which it
derived from others' ciphertexts) must hit ``ρ_1 = 0 mod p`` — probability ``2^-128``
per hash evaluation.  Non-units are refused (the decomposition needs them).

**Zero knowledge** (honest verifier, hence NIZK in the random-oracle model): ``z_m`` is
uniform in ``Z_n``; ``z_a`` is within statistical distance ``2^-128`` of uniform on
``[0, 2^bits(β))``; ``A`` is then fixed by the verification equation.

**Binding.** ``e`` hashes the context, all ciphertexts, ``C`` and ``A``: a proof is
valid for one sender, session, round and key only, and copying or re-randomising an
honest ciphertext changes ``e``.

**Cost.** Prover and verifier each compute ``C`` (a multi-exponentiation with 128-bit
exponents, Pippenger buckets: about ``128 / w`` multiplications mod ``n^2`` per
ciphertext, ``w ≈ log2(k) - 3``) plus a constant number of full exponentiations per
upload: a small fraction of a DJN encryption (one multiplication per exponent byte,
128 for a 2048-bit key).

This is *not* a range proof: a hospital that knows its plaintext may still choose any
``m_j`` in ``Z_n`` (see SECURITY.md for what that lets it do).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import gmpy2
from cryptography.hazmat.primitives import hashes
from gmpy2 import mpz, powmod

from fedvault.secagg.errors import IntegrityError, ParameterError
from fedvault.secagg.paillier import (EncryptedVector, FastEncryptor, PackingLayout, RandomBytes, map_chunks, split_chunks,
                                      uniform_below, djn_base)

__all__ = ["PlaintextProof", "ProofError", "RHO_BITS", "CHALLENGE_BITS", "prove_plaintexts", "verify_plaintexts",
           "multi_exp", "proof_bytes", "encrypt_and_prove", "verify_vector", "djn_hs", "verifier_exponent_bits"]

RHO_BITS = 128
CHALLENGE_BITS = 128
_STAT_BITS = 128
ZA_SLACK_BITS = RHO_BITS + CHALLENGE_BITS + _STAT_BITS + 32  # beyond the exponent bits (32: up to 2^32 ciphertexts)


class ProofError(IntegrityError):
    """A proof of plaintext knowledge does not verify (or a ciphertext is not a unit mod n^2)."""


@dataclass(frozen=True)
class PlaintextProof:
    """``(A, z_m, z_a)``: the commitment and the two responses (see the module docstring)."""

    commitment: int
    z_m: int
    z_a: int


def proof_bytes(key_bits: int) -> int:
    """Bytes of a serialised proof: three elements of ``ceil(2|n|/8)`` bytes each."""
    return 3 * ((2 * key_bits + 7) // 8)


def _digest(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    for p in parts:
        h.update(p)
    return h.finalize()


def _int(x: Any, width: int) -> bytes:
    return int(x).to_bytes(width, "big")


def _rhos(context: bytes, cts_digest: bytes, k: int) -> list[int]:
    xof = hashes.Hash(hashes.SHAKE256(k * RHO_BITS // 8))
    xof.update(b"fedvault/paillier/popk-rho/v1\x00" + len(context).to_bytes(4, "big") + context + cts_digest)
    raw = xof.finalize()
    w = RHO_BITS // 8
    return [int.from_bytes(raw[j * w:(j + 1) * w], "big") for j in range(k)]


def _challenge(context: bytes, cts_digest: bytes, big_c: Any, a: Any, width: int) -> int:
    d = _digest(b"fedvault/paillier/popk-challenge/v1\x00", len(context).to_bytes(4, "big"), context, cts_digest,
                _int(big_c, width), _int(a, width))
    return int.from_bytes(d, "big") >> (256 - CHALLENGE_BITS)


def _window(k: int, bits: int) -> int:
    return min(range(1, 17), key=lambda w: math.ceil(bits / w) * (k + (2 << w)))


def _pippenger(state: dict, chunk: tuple[list[Any], list[int]]) -> list[Any]:
    bases, exps = chunk
    mod, bits = state["mod"], state["bits"]
    w = _window(len(bases), bits)
    mask = (1 << w) - 1
    result = mpz(1)
    for win in reversed(range(math.ceil(bits / w))):
        if result != 1:
            for _ in range(w):
                result = result * result % mod
        buckets: list[Any] = [None] * (1 << w)
        shift = win * w
        for b, e in zip(bases, exps):
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % mod
        run, acc = None, None
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                run = bd if run is None else run * bd % mod
            if run is not None:
                acc = run if acc is None else acc * run % mod
        if acc is not None:
            result = result * acc % mod
    return [result]


def multi_exp(bases: Sequence[Any], exponents: Sequence[int], modulus: Any, bits: int,
              workers: int | None = None) -> Any:
    """``prod bases[j]^exponents[j] mod modulus`` (exponents < 2^bits), Pippenger's bucket method."""
    bases = [mpz(b) for b in bases]
    exps = list(exponents)
    chunks = [(bases[lo:hi], exps[lo:hi]) for lo, hi in split_chunks(len(bases), workers)]
    acc = mpz(1)
    for part in map_chunks(_pippenger, chunks, {"mod": mpz(modulus), "bits": bits}, workers):
        acc = acc * part % modulus
    return acc


def _cts_digest(ciphertexts: Sequence[Any], width: int) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(b"fedvault/paillier/popk-cts/v1\x00" + len(ciphertexts).to_bytes(4, "big"))
    for c in ciphertexts:
        h.update(_int(c, width))
    return h.finalize()


def za_bits(exponent_bits: int) -> int:
    """Upper bound (bits) on an honest ``z_a``: the verifier refuses larger ones."""
    return exponent_bits + ZA_SLACK_BITS + 1


def prove_plaintexts(n: int, h_s: Any, exponent_bits: int, ciphertexts: Sequence[Any], plaintexts: Sequence[int],
                     exponents: Sequence[int], *, context: bytes, rng: RandomBytes = os.urandom,
                     workers: int | None = None) -> PlaintextProof:
    """Prove knowledge of ``plaintexts`` (and DJN ``exponents`` < 2^exponent_bits) of ``ciphertexts``.

    Args:
        n: the Paillier modulus; ``h_s``: the DJN base ``h^n mod n^2`` the ciphertexts used.
        context: bytes bound into ``ρ`` and ``e`` (sender, session, round, key...).
        rng: secret randomness for ``x`` and ``β`` (``os.urandom`` in deployments).

    Raises:
        ParameterError: lengths differ or nothing to prove.
    """
    k = len(ciphertexts)
    if not k or len(plaintexts) != k or len(exponents) != k:
        raise ParameterError("need one plaintext and one exponent per ciphertext")
    n = mpz(n)
    n2 = n * n
    width = (2 * n.bit_length() + 7) // 8
    digest = _cts_digest(ciphertexts, width)
    rhos = _rhos(context, digest, k)
    big_c = multi_exp(ciphertexts, rhos, n2, RHO_BITS, workers)
    big_m = sum(r * int(m) for r, m in zip(rhos, plaintexts)) % n
    alpha = sum(r * int(a) for r, a in zip(rhos, exponents))
    x = mpz(uniform_below(int(n), rng))
    beta_bits = exponent_bits + RHO_BITS + (k - 1).bit_length() + CHALLENGE_BITS + _STAT_BITS
    beta = int.from_bytes(rng((beta_bits + 7) // 8), "big") >> (8 * ((beta_bits + 7) // 8) - beta_bits)
    a = (1 + x * n) * powmod(h_s, beta, n2) % n2
    e = _challenge(context, digest, big_c, a, width)
    return PlaintextProof(int(a), int((x + e * big_m) % n), beta + e * alpha)


def verify_plaintexts(n: int, h_s: Any, exponent_bits: int, ciphertexts: Sequence[Any], proof: PlaintextProof, *,
                      context: bytes, workers: int | None = None) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows knowledge of every ciphertext's plaintext.

    Also refuses ciphertexts that are not units of ``Z*_(n^2)``.
    """
    k = len(ciphertexts)
    if not k:
        raise ProofError("no ciphertexts")
    n = mpz(n)
    n2 = n * n
    for j, c in enumerate(ciphertexts):
        if not 0 < c < n2 or gmpy2.gcd(c, n) != 1:
            raise ProofError(f"ciphertext {j} is not a unit of Z*_(n^2)")
    a, z_m, z_a = mpz(proof.commitment), mpz(proof.z_m), mpz(proof.z_a)
    if not 0 < a < n2 or gmpy2.gcd(a, n) != 1:
        raise ProofError("proof commitment is not a unit of Z*_(n^2)")
    if not 0 <= z_m < n or not 0 <= z_a < (mpz(1) << za_bits(exponent_bits)):
        raise ProofError("proof response out of range")
    width = (2 * n.bit_length() + 7) // 8
    digest = _cts_digest(ciphertexts, width)
    rhos = _rhos(context, digest, k)
    big_c = multi_exp(ciphertexts, rhos, n2, RHO_BITS, workers)
    e = _challenge(context, digest, big_c, a, width)
    lhs = (1 + z_m * n) * powmod(h_s, z_a, n2) % n2
    if lhs != a * powmod(big_c, e, n2) % n2:
        raise ProofError("proof of plaintext knowledge does not verify: the sender does not know "
                         "what it encrypted (e.g. it combined other hospitals' ciphertexts)")


# -- packed vectors ------------------------------------------------------------------------
def verifier_exponent_bits(key_bits: int) -> int:
    """Largest DJN exponent (bits) any encryptor under a ``key_bits`` key uses (the default one)."""
    return 8 * (((key_bits + 1) // 2 + 7) // 8)


def encrypt_and_prove(encryptor: FastEncryptor, layout: PackingLayout, x: Any, *, context: bytes,
                      rng: RandomBytes = os.urandom, workers: int | None = None
                      ) -> tuple[EncryptedVector, PlaintextProof]:
    """Clip, quantise, pack and encrypt ``x`` (as :func:`~secagg.paillier.encrypt_vector`) and prove
    knowledge of every plaintext, bound to ``context``."""
    if layout.key_bits != encryptor.key_bits:
        raise ParameterError("layout was made for another key size")
    plaintexts = layout.pack(layout.quantise(x))
    cts, exps = encryptor.encrypt_ints_with_exponents(plaintexts, rng=rng, workers=workers)
    vec = EncryptedVector(encryptor.public_key, layout, int(len(x)), 1, tuple(cts))
    proof = prove_plaintexts(encryptor.n, encryptor.h_s, 8 * encryptor.exponent_bytes, cts, plaintexts, exps,
                             context=context, rng=rng, workers=workers)
    return vec, proof


def verify_vector(h_s: Any, vector: EncryptedVector, proof: PlaintextProof, *, context: bytes,
                  workers: int | None = None) -> None:
    """Raise :class:`ProofError` unless ``proof`` is a valid proof for ``vector`` and ``context``."""
    n = vector.public_key.n
    verify_plaintexts(n, h_s, verifier_exponent_bits(n.bit_length()), vector.ciphertexts, proof,
                      context=context, workers=workers)


def djn_hs(n: int) -> Any:
    """``h_s = h^n mod n^2`` for the public DJN base ``h`` of ``n`` (what verifiers need)."""
    n = mpz(n)
    return powmod(djn_base(n), n, n * n)
