"""Cryptographic pseudo-random generators: mask expansion and injected randomness.

Mask expansion
    A 32-byte seed and a *domain* label (what the mask is for: ``b"self" || id``,
    ``b"pair" || lo || hi``, ...) give the AES-256 key
    ``K = HKDF-SHA256(seed, salt=None, info="fedvault/secagg/prg/v1" || domain)``;
    the mask is the AES-256-CTR keystream under ``K`` from counter 0, read as
    little-endian words (uint32 for ``bits <= 32``, else uint64) and reduced mod
    ``2^bits``.  Taking the low ``bits`` of a uniform word is exactly uniform mod
    ``2^bits``; distinct domains give independent keys, so one seed never yields
    the same keystream twice.  Security rests on AES being a PRF: a mask is
    computationally indistinguishable from uniform to anyone without the seed.

    The keystream is produced in cache-sized chunks with ``update_into`` into one
    reused buffer and immediately added to (or subtracted from) the accumulator,
    so a mask never materialises in full memory (:class:`MaskExpander`).

Injected randomness
    Protocol objects never call a global RNG.  They take a :data:`RandomSource`
    (``n -> n random bytes``): :func:`system_random` (``os.urandom``) in deployments,
    :class:`DeterministicRandom` (AES-CTR DRBG from a seed) to replay a run
    byte-for-byte in tests and simulations.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .encoding import ring_dtype, ring_reduce
from .errors import ParameterError

RandomSource = Callable[[int], bytes]
"""A source of randomness: called with ``n``, returns ``n`` uniformly random bytes."""

SEED_BYTES = 32
_PRG_INFO = b"fedvault/secagg/prg/v1"
_ZERO_IV = bytes(16)
_CHUNK_BYTES = 1 << 18  # 256 KiB: keystream chunk stays in L2 while it is added


def system_random(n: int) -> bytes:
    """Operating-system randomness (``os.urandom``): the source for real deployments."""
    return os.urandom(n)


def derive_key(seed: bytes, domain: bytes, length: int = 32) -> bytes:
    """``HKDF-SHA256(seed, info="fedvault/secagg/prg/v1" || domain)`` truncated to ``length``."""
    if len(seed) != SEED_BYTES:
        raise ParameterError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_PRG_INFO + domain).derive(seed)


def _keystream(seed: bytes, domain: bytes):
    return Cipher(algorithms.AES(derive_key(seed, domain)), modes.CTR(_ZERO_IV)).encryptor()


class MaskExpander:
    """Expands seeds into masks of ``dim`` elements of Z_(2^bits), reusing one buffer.

    ``add(acc, seed, domain, sign)`` computes ``acc += sign * PRG(seed, domain)``
    (mod the word size; call :func:`~secagg.encoding.ring_reduce` at the end, or use
    :meth:`finish`).  Not thread-safe: one expander per thread.
    """

    def __init__(self, dim: int, bits: int) -> None:
        if dim < 0:
            raise ParameterError(f"dim must be >= 0, got {dim}")
        self.dim = dim
        self.bits = bits
        self.dtype = ring_dtype(bits)
        words = max(1, min(dim, _CHUNK_BYTES // self.dtype.itemsize))
        self._buf = np.empty(words, dtype=self.dtype)
        self._buf_bytes = memoryview(self._buf).cast("B")
        self._zeros = memoryview(bytes(words * self.dtype.itemsize))

    def add(self, acc: np.ndarray, seed: bytes, domain: bytes, sign: int = 1) -> None:
        """``acc += sign * mask(seed, domain)`` in place (``sign`` is +1 or -1)."""
        if acc.dtype != self.dtype or acc.shape != (self.dim,):
            raise ParameterError(f"accumulator must be a ({self.dim},) {self.dtype} array")
        if sign not in (1, -1):
            raise ParameterError("sign must be +1 or -1")
        op = np.add if sign == 1 else np.subtract
        enc = _keystream(seed, domain)
        step = self._buf.shape[0]
        item = self.dtype.itemsize
        buf, bb, zz = self._buf, self._buf_bytes, self._zeros
        for start in range(0, self.dim, step):
            m = min(step, self.dim - start)
            enc.update_into(zz[: m * item], bb[: m * item])
            seg = acc[start : start + m]
            op(seg, buf[:m], out=seg)

    def expand(self, seed: bytes, domain: bytes) -> np.ndarray:
        """A fresh array holding ``mask(seed, domain)`` reduced mod ``2^bits``."""
        out = np.zeros(self.dim, dtype=self.dtype)
        self.add(out, seed, domain)
        return self.finish(out)

    def finish(self, acc: np.ndarray) -> np.ndarray:
        """Reduce an accumulator mod ``2^bits`` in place and return it."""
        return ring_reduce(acc, self.bits)


class DeterministicRandom:
    """A seeded AES-256-CTR DRBG implementing :data:`RandomSource`.

    For reproducible simulations and test vectors only: anyone who knows the seed
    knows every "random" value.  Child sources for named parties are derived with
    :meth:`child` (HKDF with the label), so parties never share a stream.
    """

    def __init__(self, seed: bytes, label: bytes = b"") -> None:
        if len(seed) != SEED_BYTES:
            raise ParameterError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._seed = seed
        self._label = label
        self._enc = _keystream(seed, b"drbg/" + label)

    def __call__(self, n: int) -> bytes:
        if n < 0:
            raise ParameterError("n must be >= 0")
        return self._enc.update(bytes(n))

    def child(self, label: bytes) -> "DeterministicRandom":
        """An independent source for ``label`` (e.g. ``b"client/7"``)."""
        return DeterministicRandom(derive_key(self._seed, b"drbg-child/" + self._label + b"/" + label), label)
