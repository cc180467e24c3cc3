"""Packed Paillier: phe-compatible keys and ciphertexts, DJN fast encryption, CRT decryption.

Paillier (with ``g = n + 1``, as in :mod:`phe`)::

    Enc(m; r) = (1 + m n) * r^n  mod n^2          m in [0, n)
    Dec(c)    = L(c^lambda mod n^2) * mu mod n,   L(u) = (u - 1) / n
    Enc(a) * Enc(b) mod n^2 = Enc(a + b mod n)    (homomorphic sum)

Keys are :class:`phe.PaillierPublicKey` / :class:`phe.PaillierPrivateKey`, and every
ciphertext made here is an ordinary Paillier ciphertext: :func:`to_phe` wraps one as a
:class:`phe.EncryptedNumber` that phe decrypts, :func:`decrypt_number` opens one made
by phe.

**Fast encryption (Damgård–Jurik–Nielsen 2010, §4.2).** ``r^n`` costs a full
``|n|``-bit exponentiation mod ``n^2`` per ciphertext. Instead fix a public base
``h = -x^2 mod n`` and ``h_s = h^n mod n^2`` once and encrypt with ``r^n = h_s^a`` for a
fresh random exponent ``a``; ``h_s^a`` comes from a fixed-base table
(``T[i][j] = h_s^(j * 256^i)``), so it costs one multiplication per exponent byte. ``x`` is
derived from ``n`` by SHAKE-256 (:func:`djn_base`), so nobody, not even the key holder,
chooses ``h``: a key holder who picked ``h`` of small order could make the randomness
guessable by the server.

Security of the randomness (state this in SECURITY.md):

* default, ``a`` uniform in ``[0, 2^ceil(|n|/2))``: the exponent length proposed by
  Damgård–Jurik–Nielsen. Semantic security rests on DCR and on ``h^a`` with such an
  ``a`` being computationally indistinguishable from a uniform element of ``<h>``
  (generic attacks on a ``|n|/2``-bit exponent — van Oorschot–Wiener, Pollard's
  lambda — cost about ``2^(|n|/4)``, far above factoring ``n`` with the number field sieve).
* ``short_exponent=True``, ``a`` of ``2λ`` bits (224 for 2048-bit keys, 256 for 3072):
  a **stronger, non-standard** assumption — that ``h^a`` with a ``2λ``-bit ``a`` is
  indistinguishable from ``h^a`` with a full-length one. The best known attacks
  (van Oorschot–Wiener, Pollard's lambda) cost about ``2^λ``; no reduction to factoring
  or DCR is known. It is about four times faster than the default.

**Decryption** uses the CRT: ``m_p = L_p(c^(p-1) mod p^2) h_p mod p``, likewise mod ``q``,
recombined (two half-size exponentiations instead of one full one; this is the floor
phe also reaches).

**Both cores.** Encryption and decryption of long vectors are split over a
process pool (``workers``, default ``os.cpu_count()``); fewer than ``PARALLEL_MIN``
ciphertexts stay in-process, where a pool would cost more than it saves.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
import multiprocessing
from typing import Any, Callable, Sequence

import gmpy2
import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmpy2 import mpz, powmod
from phe import paillier as phe_paillier
from phe.paillier import EncodedNumber, EncryptedNumber, PaillierPrivateKey, PaillierPublicKey

from fedvault.secagg.errors import EncodingError, IntegrityError, ParameterError
from fedvault.secagg.paillier_packing import CapacityError, PackingLayout

__all__ = [
    "PARALLEL_MIN", "RandomBytes", "CapacityError", "PackingLayout", "KeyMismatchError",
    "CiphertextError", "generate_keypair", "keypair_from_primes", "seeded_random",
    "djn_base", "short_exponent_bits", "FastEncryptor", "CrtDecryptor", "EncryptedVector",
    "encrypt_vector", "decrypt_vector", "to_phe", "decrypt_number", "ciphertext_bytes",
]

RandomBytes = Callable[[int], bytes]
"""A source of uniformly random bytes: ``rng(k)`` returns ``k`` bytes (e.g. ``os.urandom``)."""

PARALLEL_MIN = 256
"""Vectors with fewer ciphertexts than this are processed in-process."""

MIN_KEY_BITS = 512  # for tests only; use >= 2048 in deployments


class KeyMismatchError(ParameterError):
    """Ciphertexts under different keys or layouts were combined."""


class CiphertextError(IntegrityError):
    """A ciphertext is not an element of ``Z*_{n^2}`` of the expected size."""


# -- randomness -----------------------------------------------------------------------
class _CtrStream:
    """AES-256-CTR keystream as a :data:`RandomBytes` (a cryptographic PRG; deterministic for a seed)."""

    def __init__(self, seed: bytes) -> None:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(b"fedvault/paillier/prg/v1\x00" + bytes(seed))
        self._enc = Cipher(algorithms.AES(digest.finalize()), modes.CTR(b"\x00" * 16)).encryptor()

    def __call__(self, k: int) -> bytes:
        return self._enc.update(b"\x00" * k)


def seeded_random(seed: bytes) -> RandomBytes:
    """A deterministic cryptographic byte stream for ``seed`` (AES-256-CTR keyed by SHA-256(seed)).

    Secure as long as ``seed`` is secret and has >= 128 bits of entropy; use it to replay
    a simulated round byte for byte. Production callers pass ``os.urandom``.
    """
    if not isinstance(seed, (bytes, bytearray)):
        raise ParameterError("seed must be bytes")
    return _CtrStream(bytes(seed))


def uniform_below(bound: int, rng: RandomBytes) -> int:
    """Uniform integer in ``[0, bound)`` (64 extra bits: statistical distance < 2^-64)."""
    k = (bound.bit_length() + 64 + 7) // 8
    return int.from_bytes(rng(k), "big") % bound


# -- keys -----------------------------------------------------------------------------
def generate_keypair(key_bits: int = 2048) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh phe key pair with an ``n`` of exactly ``key_bits`` bits (phe's own generator, OS randomness)."""
    if key_bits < MIN_KEY_BITS or key_bits % 2:
        raise ParameterError(f"key_bits must be an even number >= {MIN_KEY_BITS}; use 2048 or 3072")
    return phe_paillier.generate_paillier_keypair(n_length=key_bits)


def keypair_from_primes(p: int, q: int) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """phe key pair for given distinct primes ``p, q`` (e.g. precomputed or from a dealer)."""
    p, q = int(p), int(q)
    if p == q or not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
        raise ParameterError("p and q must be distinct primes")
    pk = PaillierPublicKey(p * q)
    return pk, PaillierPrivateKey(pk, p, q)


def short_exponent_bits(key_bits: int) -> int:
    """``2λ`` for the security level ``λ`` of a ``key_bits`` modulus (NIST SP 800-57): 224/256/384."""
    if key_bits < 3072:
        return 224
    if key_bits < 7680:
        return 256
    return 384


def djn_base(n: int) -> int:
    """``h = -x^2 mod n`` with ``x = SHAKE-256("fedvault/paillier/djn-base/v1" || n) mod n``.

    Derived from ``n`` alone, so every encryptor under one key uses the same table and no
    party chooses ``h``.
    """
    n = int(n)
    nb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    xof = hashes.Hash(hashes.SHAKE256((n.bit_length() + 128 + 7) // 8))
    xof.update(b"fedvault/paillier/djn-base/v1\x00" + nb)
    x = int.from_bytes(xof.finalize(), "big") % n
    if gmpy2.gcd(x, n) != 1:  # probability ~2^-|p|; it would factor n
        raise ParameterError("degenerate modulus")
    return int((-mpz(x) * x) % n)


# -- encryption -----------------------------------------------------------------------
class FastEncryptor:
    """DJN encryption ``Enc(m) = (1 + m n) * h_s^a mod n^2`` with a fixed-base table.

    Args:
        public_key: a :class:`phe.PaillierPublicKey`.
        short_exponent: use a ``2λ``-bit exponent ``a`` (stronger assumption, see the module
            docstring) instead of the default ``ceil(|n|/2)`` bits.
        base: override ``h`` (default :func:`djn_base`); only for tests and test vectors.

    The table holds ``ceil(bits(a)/8) * 256`` elements of ``Z*_{n^2}`` (16 MiB for a
    2048-bit key with the default exponent); build it once per key and reuse it.
    """

    def __init__(self, public_key: PaillierPublicKey, *, short_exponent: bool = False,
                 base: int | None = None) -> None:
        if not isinstance(public_key, PaillierPublicKey):
            raise ParameterError("public_key must be a phe.PaillierPublicKey")
        self.public_key = public_key
        self.n = mpz(public_key.n)
        self.n2 = self.n * self.n
        self.key_bits = int(self.n.bit_length())
        self.short_exponent = bool(short_exponent)
        self.exponent_bits = (short_exponent_bits(self.key_bits) if short_exponent
                              else (self.key_bits + 1) // 2)
        self.exponent_bytes = (self.exponent_bits + 7) // 8
        self.h = mpz(djn_base(self.n) if base is None else base)
        self.h_s = powmod(self.h, self.n, self.n2)
        self._table = self._build_table()

    def _build_table(self) -> list[list[Any]]:
        n2, table, b = self.n2, [], self.h_s
        for _ in range(self.exponent_bytes):
            row = [mpz(1), b]
            for _ in range(254):
                row.append(row[-1] * b % n2)
            table.append(row)
            b = row[-1] * b % n2  # b^256
        return table

    def __getstate__(self) -> dict:  # ship without the table; rebuilt on arrival
        state = dict(self.__dict__)
        state.pop("_table")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._table = self._build_table()

    def randomizer(self, exponent: bytes) -> Any:
        """``h_s^a mod n^2`` for the big-endian exponent bytes ``a`` (length ``exponent_bytes``)."""
        acc = mpz(1)
        n2 = self.n2
        for row, digit in zip(self._table, reversed(exponent)):
            if digit:
                acc = acc * row[digit] % n2
        return acc

    def _encrypt_with(self, plaintexts: Sequence[int], exponents: bytes) -> list[Any]:
        n, n2, table, k = self.n, self.n2, self._table, self.exponent_bytes
        out = []
        for i, m in enumerate(plaintexts):
            acc = 1 + mpz(m) * n  # (1+n)^m mod n^2, < n^2 because m < n
            e = exponents[i * k:(i + 1) * k]
            for row, digit in zip(table, reversed(e)):
                if digit:
                    acc = acc * row[digit] % n2
            out.append(acc)
        return out

    def _check_plaintexts(self, plaintexts: Sequence[int]) -> None:
        for m in plaintexts:
            if not 0 <= m < self.n:
                raise EncodingError("plaintext outside [0, n)")

    def encrypt_int(self, m: int, rng: RandomBytes = os.urandom) -> Any:
        """Raw encryption of an integer ``m in [0, n)``; returns the ciphertext (an mpz)."""
        self._check_plaintexts([m])
        return self._encrypt_with([m], rng(self.exponent_bytes))[0]

    def encrypt_ints(self, plaintexts: Sequence[int], rng: RandomBytes = os.urandom,
                     workers: int | None = None) -> list[Any]:
        """Raw encryption of many plaintexts; long lists are split over ``workers`` processes.

        All exponents are drawn from ``rng`` here, in order, so the result depends only on
        ``rng`` and not on the number of workers.
        """
        return self.encrypt_ints_with_exponents(plaintexts, rng, workers)[0]

    def encrypt_ints_with_exponents(self, plaintexts: Sequence[int], rng: RandomBytes = os.urandom,
                                    workers: int | None = None) -> tuple[list[Any], list[int]]:
        """:meth:`encrypt_ints`, also returning the DJN exponents ``a_j`` (the witness a proof of
        plaintext knowledge needs; secret: whoever knows ``a_j`` can open ``c_j``)."""
        self._check_plaintexts(plaintexts)
        exps = rng(self.exponent_bytes * len(plaintexts))
        k = self.exponent_bytes
        chunks = [(list(plaintexts[lo:hi]), exps[lo * k:hi * k])
                  for lo, hi in split_chunks(len(plaintexts), workers)]
        cts = map_chunks(_encrypt_chunk, chunks, {"encryptor": self}, workers)
        return cts, [int.from_bytes(exps[j * k:(j + 1) * k], "big") for j in range(len(plaintexts))]

    def encrypt_number(self, value: int | float, rng: RandomBytes = os.urandom) -> EncryptedNumber:
        """Encrypt one int/float with phe's :class:`EncodedNumber` encoding; phe can decrypt it."""
        enc = EncodedNumber.encode(self.public_key, value)
        return EncryptedNumber(self.public_key, int(self.encrypt_int(enc.encoding, rng)), enc.exponent)


def _encrypt_chunk(state: dict, chunk: tuple[list[int], bytes]) -> list[Any]:
    return state["encryptor"]._encrypt_with(*chunk)


# -- decryption -----------------------------------------------------------------------
class CrtDecryptor:
    """CRT decryption with a :class:`phe.PaillierPrivateKey` (``p < q``, ``h_p``, ``h_q`` from phe)."""

    def __init__(self, private_key: PaillierPrivateKey) -> None:
        if not isinstance(private_key, PaillierPrivateKey):
            raise ParameterError("private_key must be a phe.PaillierPrivateKey")
        self.public_key = private_key.public_key
        self._p, self._q = mpz(private_key.p), mpz(private_key.q)
        self._p2, self._q2 = self._p * self._p, self._q * self._q
        self._hp, self._hq = mpz(private_key.hp), mpz(private_key.hq)
        self._pinv = mpz(private_key.p_inverse)
        self.n = self._p * self._q
        self.n2 = self.n * self.n

    def __repr__(self) -> str:  # never print the factors
        return f"<CrtDecryptor for n of {self.n.bit_length()} bits>"

    def decrypt_int(self, c: Any) -> int:
        """``m`` such that ``c = Enc(m)``: ``m_p = L_p(c^(p-1) mod p^2) h_p mod p``, same for q, CRT."""
        p, q = self._p, self._q
        mp = (powmod(c, p - 1, self._p2) - 1) // p * self._hp % p
        mq = (powmod(c, q - 1, self._q2) - 1) // q * self._hq % q
        return int(mp + ((mq - mp) * self._pinv % q) * p)

    def decrypt_ints(self, ciphertexts: Sequence[Any], workers: int | None = None) -> list[int]:
        """Decrypt many ciphertexts; long lists are split over ``workers`` processes."""
        chunks = [[tuple([c]) for c in ciphertexts[lo:hi]] for lo, hi in split_chunks(len(ciphertexts), workers)]
        return map_chunks(_sum_decrypt_chunk, chunks, {"decryptor": self}, workers)

    def sum_decrypt_ints(self, columns: Sequence[Sequence[Any]], workers: int | None = None) -> list[int]:
        """Decrypt ``prod_k columns[k][i] mod n^2`` for every ``i``: the homomorphic sum, then CRT.

        Summing inside the workers parallelises the sum as well as the decryption.
        """
        rows = list(zip(*columns))
        chunks = [rows[lo:hi] for lo, hi in split_chunks(len(rows), workers)]
        return map_chunks(_sum_decrypt_chunk, chunks, {"decryptor": self}, workers)


def _sum_decrypt_chunk(state: dict, rows: list[tuple[Any, ...]]) -> list[int]:
    dec: CrtDecryptor = state["decryptor"]
    n2 = dec.n2
    out = []
    for row in rows:
        acc = mpz(row[0])
        for c in row[1:]:
            acc = acc * c % n2
        out.append(dec.decrypt_int(acc))
    return out


def to_phe(public_key: PaillierPublicKey, ciphertext: int, exponent: int = 0) -> EncryptedNumber:
    """Wrap a raw ciphertext as a phe :class:`EncryptedNumber` (``exponent`` as in phe's encoding)."""
    return EncryptedNumber(public_key, int(ciphertext), exponent)


def decrypt_number(private_key: PaillierPrivateKey | CrtDecryptor, number: EncryptedNumber) -> int | float:
    """Decrypt a phe :class:`EncryptedNumber` (made by phe or by :meth:`FastEncryptor.encrypt_number`)."""
    dec = private_key if isinstance(private_key, CrtDecryptor) else CrtDecryptor(private_key)
    if number.public_key.n != dec.n:
        raise KeyMismatchError("the number was encrypted under another key")
    m = dec.decrypt_int(mpz(number.ciphertext(be_secure=False)))
    return EncodedNumber(number.public_key, m, number.exponent).decode()


# -- packed vectors -------------------------------------------------------------------
def ciphertext_bytes(key_bits: int) -> int:
    """Bytes of one serialised ciphertext: ``ceil(2 |n| / 8)`` (an element of ``Z_{n^2}``)."""
    return (2 * key_bits + 7) // 8


@dataclass(frozen=True, eq=False)
class EncryptedVector:
    """A packed, encrypted vector: ``length`` values in ``ceil(length / slots)`` ciphertexts.

    ``summands`` counts the encoded vectors added into it; :meth:`__add__` refuses to
    exceed ``layout.max_summands`` (a slot could overflow).
    """

    public_key: PaillierPublicKey
    layout: PackingLayout
    length: int
    summands: int
    ciphertexts: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.ciphertexts) != self.layout.ciphertexts_for(self.length):
            raise EncodingError(f"{len(self.ciphertexts)} ciphertexts do not hold {self.length} values")
        if not 1 <= self.summands <= self.layout.max_summands:
            raise CapacityError(f"{self.summands} summands; this layout allows at most "
                                f"{self.layout.max_summands} (raise max_summands, i.e. headroom bits)")
        if self.layout.key_bits != self.public_key.n.bit_length():
            raise KeyMismatchError("layout was made for another key size")

    def _check_compatible(self, other: "EncryptedVector") -> None:
        if not isinstance(other, EncryptedVector):
            raise TypeError("can only add EncryptedVector")
        if other.public_key.n != self.public_key.n or other.layout != self.layout or other.length != self.length:
            raise KeyMismatchError("vectors differ in key, layout or length")

    def __add__(self, other: "EncryptedVector") -> "EncryptedVector":
        return EncryptedVector.sum([self, other])

    @staticmethod
    def sum(vectors: Sequence["EncryptedVector"]) -> "EncryptedVector":
        """Homomorphic sum ``prod_k c_k,i mod n^2``; refuses if the summands exceed ``max_summands``."""
        if not vectors:
            raise ParameterError("nothing to sum")
        first = vectors[0]
        for v in vectors[1:]:
            first._check_compatible(v)
        total = sum(v.summands for v in vectors)
        if total > first.layout.max_summands:
            raise CapacityError(f"sum of {total} summands would exceed max_summands="
                                f"{first.layout.max_summands}; slots could overflow")
        n2 = mpz(first.public_key.nsquare)
        out = []
        for cols in zip(*(v.ciphertexts for v in vectors)):
            acc = mpz(cols[0])
            for c in cols[1:]:
                acc = acc * c % n2
            out.append(acc)
        return EncryptedVector(first.public_key, first.layout, first.length, total, tuple(out))

    @property
    def nbytes(self) -> int:
        """Serialised ciphertext bytes (what an upload costs, without headers)."""
        return len(self.ciphertexts) * ciphertext_bytes(self.layout.key_bits)

    def to_bytes(self) -> bytes:
        """Ciphertexts, each big-endian in :func:`ciphertext_bytes` bytes, concatenated."""
        w = ciphertext_bytes(self.layout.key_bits)
        return b"".join(int(c).to_bytes(w, "big") for c in self.ciphertexts)

    @classmethod
    def from_bytes(cls, public_key: PaillierPublicKey, layout: PackingLayout, length: int,
                   summands: int, data: bytes) -> "EncryptedVector":
        """Parse :meth:`to_bytes` output; every ciphertext must be a unit of ``Z*_(n^2)``
        (``0 < c < n^2`` and ``gcd(c, n) = 1``; a non-unit is no encryption at all and would
        make every honest threshold share of the sum fail its proof)."""
        w = ciphertext_bytes(layout.key_bits)
        count = layout.ciphertexts_for(length)
        if len(data) != w * count:
            raise CiphertextError(f"expected {w * count} ciphertext bytes, got {len(data)}")
        n2 = public_key.nsquare
        n = mpz(public_key.n)
        cts = []
        for i in range(count):
            c = mpz(int.from_bytes(data[i * w:(i + 1) * w], "big"))
            if not 0 < c < n2:
                raise CiphertextError(f"ciphertext {i} is not in [1, n^2)")
            if gmpy2.gcd(c, n) != 1:
                raise CiphertextError(f"ciphertext {i} is not a unit mod n^2 (gcd(c, n) != 1)")
            cts.append(c)
        return cls(public_key, layout, length, summands, tuple(cts))


def encrypt_vector(encryptor: FastEncryptor, layout: PackingLayout, x: np.ndarray, *,
                   rng: RandomBytes = os.urandom, workers: int | None = None) -> EncryptedVector:
    """Clip, quantise, pack and encrypt a float vector (one summand)."""
    if layout.key_bits != encryptor.key_bits:
        raise KeyMismatchError("layout was made for another key size")
    plaintexts = layout.pack(layout.quantise(x))
    cts = encryptor.encrypt_ints(plaintexts, rng=rng, workers=workers)
    return EncryptedVector(encryptor.public_key, layout, int(np.asarray(x).size), 1, tuple(cts))


def decrypt_vector(decryptor: CrtDecryptor, vectors: EncryptedVector | Sequence[EncryptedVector], *,
                   workers: int | None = None) -> tuple[np.ndarray, int]:
    """Exact slot sums (uint64) and summand count of one vector or of the homomorphic sum of several.

    Decode to floats with ``layout.dequantise_sum(sums, summands)``.
    """
    vecs = [vectors] if isinstance(vectors, EncryptedVector) else list(vectors)
    if not vecs:
        raise ParameterError("nothing to decrypt")
    first = vecs[0]
    for v in vecs[1:]:
        first._check_compatible(v)
    if first.public_key.n != decryptor.n:
        raise KeyMismatchError("vectors were encrypted under another key")
    summands = sum(v.summands for v in vecs)
    if summands > first.layout.max_summands:
        raise CapacityError(f"{summands} summands exceed max_summands={first.layout.max_summands}")
    plain = decryptor.sum_decrypt_ints([v.ciphertexts for v in vecs], workers=workers)
    return first.layout.unpack(plain, first.length), summands


# -- process pool ---------------------------------------------------------------------
_STATE: dict = {}


def _init_worker(state: dict) -> None:
    _STATE.clear()
    _STATE.update(state)


def _run_chunk(fn: Callable[[dict, Any], list], chunk: Any) -> list:
    return fn(_STATE, chunk)


def _resolve_workers(workers: int | None) -> int:
    return max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))


def split_chunks(count: int, workers: int | None) -> list[tuple[int, int]]:
    """Chunk bounds: one chunk in-process, else ~4 chunks per worker for load balance."""
    w = _resolve_workers(workers)
    if w <= 1 or count < PARALLEL_MIN:
        return [(0, count)]
    parts = min(count, 4 * w)
    bounds = [count * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def map_chunks(fn: Callable[[dict, Any], list], chunks: list, state: dict, workers: int | None) -> list:
    """``concat(fn(state, chunk) for chunk in chunks)``, over a process pool when there are several chunks.

    The pool uses ``fork`` where available so ``state`` (tables, keys) is inherited rather
    than sent; it is created per call and shut down before returning.
    """
    if len(chunks) <= 1:
        return fn(state, chunks[0]) if chunks else []
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    out: list = []
    with ProcessPoolExecutor(max_workers=_resolve_workers(workers), mp_context=ctx,
                             initializer=_init_worker, initargs=(state,)) as pool:
        for part in pool.map(_run_chunk, [fn] * len(chunks), chunks):
            out.extend(part)
    return out

