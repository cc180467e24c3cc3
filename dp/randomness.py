"""Secret randomness for DP: an AES-256-CTR keystream keyed from the OS CSPRNG.

Differential privacy holds only if the adversary cannot predict the mechanism's coins.
DP-SGD has two sets of coins: which records a step samples (Poisson sampling) and the
Gaussian noise added to the clipped sum. :class:`RandomStream` draws both from a
cryptographic pseudo-random generator:

- **Key.** :meth:`RandomStream.from_os` takes a fresh 256-bit key from ``os.urandom``
  (the OS CSPRNG) for every stream; the key never leaves the object and is never logged
  or derived from anything in the config. :meth:`RandomStream.reproducible` derives the
  key with HKDF-SHA256 from an integer seed and a context string instead — *anyone who
  knows the seed replays every draw*; such a stream is marked ``reproducible = True`` and
  is for tests and papers only ("not private: noise reproducible from the config").
- **Bits.** AES-256 in counter mode (``cryptography``; zero nonce — every key is used for
  one stream only) is the PRG: its output is computationally indistinguishable from
  uniform bytes as long as AES is a PRF (the standard assumption behind AES-CTR). This is
  the only computational assumption; it replaces "an attacker cannot guess the seed of a
  Mersenne Twister", which fails because MT19937 is *not* a CSPRNG (its state is
  recoverable from its outputs) and a config seed is public.
- **Uniforms.** 8 keystream bytes (a little-endian word w) → ``u = ⌊w / 2^11⌋ · 2^-53``,
  uniform on the 53-bit grid in [0, 1) (every value exact in float64, as numpy's
  ``random()``).
- **Bernoulli(q).** ``u < q``: probability ``⌈q·2^53⌉ / 2^53`` — exactly 1 for q = 1, 0 for
  q = 0, within 2^-53 of q otherwise.
- **Gaussians.** Box–Muller on pairs of uniforms, ``√(−2 ln(1 − u1)) · (cos, sin)(2π u2)``
  (``1 − u1`` ∈ (0, 1], so the logarithm is finite), gives N(0, 1) in float64; each returned
  value is ``(z1 + z2 + z3 + z4) / 2`` of four independent such draws (still exactly
  N(0, 1) in real arithmetic). Summing several Gaussians is the mitigation against
  floating-point attacks on sampled noise that Opacus' ``secure_mode`` uses (Holohan &
  Braghin 2021, §5.1, n = 2): a single Box–Muller output's low-order bits reveal
  information about the value it was added to (Jin et al. 2021), a sum of four does not
  at any practical cost to an attacker. Results are rounded to the parameters' dtype
  (float32) after the noise is added in float64 arithmetic.

Residual assumptions (stated so that a reviewer can check them): AES is a PRF; the OS
CSPRNG (``os.urandom``: getrandom(2) on Linux) is seeded; the floating-point mitigation
above is heuristic (as in Opacus), not a proof that the float64 → float32 mechanism is
exactly the Gaussian mechanism that the accountant analyses.

Why not Opacus ``secure_mode``: it needs ``torchcsprng``, whose last release (0.2.1,
2021) has no build for torch 2.13 (Opacus' own secure-mode tests are skipped for that
reason). This module does not import torch; the trainer converts the float64 arrays.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedvault.dp.errors import PrivacyError

KEY_BYTES = 32
_HKDF_INFO = b"fedvault/dp/reproducible-noise/v1|"
_MAX_DRAW = 1 << 31  # values per call; callers chunk larger draws


class RandomStream:
    """A stream of uniforms, Bernoulli coins and Gaussians from AES-256-CTR.

    Create one per use (per trainer round and purpose); never share a stream between two
    mechanisms whose coins must be independent.

    Attributes:
        reproducible: ``True`` when the key was derived from a seed (not private).
    """

    __slots__ = ("_enc", "reproducible", "bytes_drawn")

    def __init__(self, key: bytes, *, reproducible: bool) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise PrivacyError(f"a RandomStream key is {KEY_BYTES} bytes")
        self._enc = Cipher(algorithms.AES(bytes(key)), modes.CTR(b"\x00" * 16)).encryptor()
        self.reproducible = bool(reproducible)
        self.bytes_drawn = 0

    @classmethod
    def from_os(cls) -> "RandomStream":
        """A stream keyed by 256 fresh bits from ``os.urandom`` (the private default)."""
        return cls(os.urandom(KEY_BYTES), reproducible=False)

    @classmethod
    def reproducible_from(cls, seed: int, context: str) -> "RandomStream":
        """A stream everyone who knows ``(seed, context)`` can replay — NOT private.

        Args:
            seed: integer in [0, 2^256).
            context: separates streams of one seed (e.g. ``"h0|round 3|noise"``).
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 256:
            raise PrivacyError(f"reproducible seed must be an integer in [0, 2^256), got {seed!r}")
        key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                   info=_HKDF_INFO + context.encode()).derive(seed.to_bytes(32, "big"))
        return cls(key, reproducible=True)

    def __repr__(self) -> str:  # never shows the key
        return f"RandomStream(reproducible={self.reproducible}, bytes_drawn={self.bytes_drawn})"

    def random_bytes(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        if n < 0:
            raise PrivacyError("cannot draw a negative number of bytes")
        self.bytes_drawn += n
        return self._enc.update(b"\x00" * n)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms on the 53-bit grid ``{k · 2^-53}`` in [0, 1)."""
        if not 0 <= n <= _MAX_DRAW:
            raise PrivacyError(f"draw between 0 and {_MAX_DRAW} values at a time, got {n}")
        words = np.frombuffer(self.random_bytes(8 * n), dtype="<u8")
        return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def bernoulli(self, n: int, p: float) -> np.ndarray:
        """``n`` independent Bernoulli(p) coins as a bool array."""
        if not (0.0 <= p <= 1.0):
            raise PrivacyError(f"probability must be in [0, 1], got {p!r}")
        return self.uniform(n) < p

    def _box_muller(self, n: int) -> np.ndarray:
        m = (n + 1) // 2
        u = self.uniform(2 * m)
        r = np.sqrt(-2.0 * np.log1p(-u[:m]))  # ln(1 - u1), 1 - u1 in (0, 1]
        t = 2.0 * math.pi * u[m:]
        return np.concatenate([r * np.cos(t), r * np.sin(t)])[:n]

    def normal(self, n: int, std: float = 1.0) -> np.ndarray:
        """``n`` independent N(0, std²) values (float64), each the scaled sum of four draws."""
        if not (std >= 0.0 and math.isfinite(std)):
            raise PrivacyError(f"standard deviation must be finite and >= 0, got {std!r}")
        if n == 0:
            return np.zeros(0)
        z = self._box_muller(4 * n).reshape(4, n).sum(axis=0) * 0.5
        return z * std if std != 1.0 else z
