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
    chunk-major over all masks being applied, so a mask never materialises in full
    memory and the accumulator crosses the memory bus once (:class:`MaskExpander`).

Injected randomness
    Protocol objects never call a global RNG.  They take a :data:`RandomSource`
    (``n -> n random bytes``): :func:`system_random` (``os.urandom``) in deployments,
    :class:`DeterministicRandom` (AES-CTR DRBG from a seed) to replay a run
    byte-for-byte in tests and simulations.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
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
_CHUNK_BYTES = 1 << 17  # 128 KiB: a chunk of the accumulator and of keystream stay in L2


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


MaskTerm = tuple  # (seed: bytes, domain: bytes, sign: +1 | -1)


class MaskExpander:
    """Expands seeds into masks of ``dim`` elements of Z_(2^bits), reusing buffers.

    ``add(acc, seed, domain, sign)`` computes ``acc += sign * PRG(seed, domain)``
    (mod the word size; call :func:`~secagg.encoding.ring_reduce` at the end, or use
    :meth:`finish`).  :meth:`add_many` applies many masks at once, splitting the
    vector into ``threads`` contiguous ranges (AES-CTR is seekable: a range starting
    at byte ``o`` starts at counter block ``o / 16``); the cipher and numpy release
    the GIL, so the ranges run in parallel.  Results do not depend on ``threads``.
    """

    def __init__(self, dim: int, bits: int, threads: int = 1) -> None:
        if dim < 0:
            raise ParameterError(f"dim must be >= 0, got {dim}")
        if threads < 1:
            raise ParameterError(f"threads must be >= 1, got {threads}")
        self.dim = dim
        self.bits = bits
        self.threads = threads
        self.dtype = ring_dtype(bits)
        self._words = max(1, min(dim, _CHUNK_BYTES // self.dtype.itemsize))
        self._zeros = memoryview(bytes(self._words * self.dtype.itemsize))
        self._bufs: list[np.ndarray] = []

    def _buffer(self, k: int) -> np.ndarray:
        while len(self._bufs) <= k:
            self._bufs.append(np.empty(self._words, dtype=self.dtype))
        return self._bufs[k]

    def _check(self, acc: np.ndarray) -> None:
        if acc.dtype != self.dtype or acc.shape != (self.dim,):
            raise ParameterError(f"accumulator must be a ({self.dim},) {self.dtype} array")

    def add(self, acc: np.ndarray, seed: bytes, domain: bytes, sign: int = 1) -> None:
        """``acc += sign * mask(seed, domain)`` in place (``sign`` is +1 or -1)."""
        self.add_many(acc, [(seed, domain, sign)])

    def add_many(self, acc: np.ndarray, terms: "list[MaskTerm]") -> None:
        """``acc += sum(sign * mask(seed, domain) for seed, domain, sign in terms)`` in place."""
        self._check(acc)
        keyed = []
        for seed, domain, sign in terms:
            if sign not in (1, -1):
                raise ParameterError("sign must be +1 or -1")
            keyed.append((derive_key(seed, domain), np.add if sign == 1 else np.subtract))
        if not keyed or self.dim == 0:
            return
        item = self.dtype.itemsize
        per_block = 16 // item
        parts = max(1, min(self.threads, self.dim // (per_block * 1024) or 1))
        # Range boundaries on AES block boundaries.
        step = -(-self.dim // parts)
        step += (-step) % per_block
        ranges = [(lo, min(self.dim, lo + step)) for lo in range(0, self.dim, step)]
        if len(ranges) == 1:
            self._run(acc, keyed, 0, self.dim, self._buffer(0))
            return
        bufs = [self._buffer(k) for k in range(len(ranges))]
        with ThreadPoolExecutor(len(ranges)) as pool:
            futures = [pool.submit(self._run, acc, keyed, lo, hi, bufs[k]) for k, (lo, hi) in enumerate(ranges)]
            for f in futures:
                f.result()

    def _run(self, acc: np.ndarray, keyed: list, lo: int, hi: int, buf: np.ndarray) -> None:
        # Chunk-major: every term's keystream for one chunk is added while the chunk of
        # ``acc`` is in cache, so ``acc`` crosses the memory bus once, not once per term.
        item = self.dtype.itemsize
        bb = memoryview(buf).cast("B")
        zz = self._zeros
        step = buf.shape[0]
        iv = (lo * item // 16).to_bytes(16, "big")
        streams = [(Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor(), op) for key, op in keyed]
        for start in range(lo, hi, step):
            m = min(step, hi - start)
            seg, src, zm, bm = acc[start : start + m], buf[:m], zz[: m * item], bb[: m * item]
            for enc, op in streams:
                enc.update_into(zm, bm)
                op(seg, src, out=seg)

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
