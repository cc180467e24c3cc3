"""Fixed-point encoding of real vectors into the ring Z_(2^b).

Secure aggregation adds vectors modulo ``2^b``; this module maps clipped reals to
that ring and maps a *sum* back to reals.

Encoding (``bits = b``, ``frac_bits = f``, clip ``C``)::

    encode(x) = round(x * 2^f)  mod 2^b        for x in [-C, C], x finite

``round`` is round-half-to-even (``numpy.rint``).  Negative values wrap to the top of
the ring (two's complement).  The sum of ``n`` encodings is decoded as the signed
integer ``s`` in ``[-2^(b-1), 2^(b-1))`` congruent to it, times ``2^-f``.

Range and overflow condition
    Each encoded summand has magnitude at most ``ceil(C * 2^f)``.  The signed sum of
    ``n <= max_summands`` of them never wraps iff
    ``max_summands * ceil(C * 2^f) <= 2^(b-1) - 1``; the constructor enforces it
    (and, when ``frac_bits`` is ``None``, picks the largest ``f >= 0`` satisfying it).

Error bound
    Each value is rounded by at most ``2^-(f+1)``, so a decoded sum of ``n`` values
    differs from the exact real sum by at most ``n * 2^-(f+1)`` (:meth:`error_bound`).
    When ``|s| > 2^53`` (only possible for ``b > 53``) the final conversion to
    float64 adds a relative error of at most ``2^-53``.

Values outside ``[-C, C]`` or not finite raise :class:`~secagg.errors.EncodingError`:
the caller clips beforehand, so an out-of-range value is a bug or an attack, never
something to clip silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import EncodingError, ParameterError

MIN_BITS = 16
MAX_BITS = 64


def ring_dtype(bits: int) -> np.dtype:
    """The unsigned word that holds elements of Z_(2^bits): uint32 up to 32 bits, else uint64."""
    if not (MIN_BITS <= bits <= MAX_BITS):
        raise ParameterError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def ring_reduce(a: np.ndarray, bits: int) -> np.ndarray:
    """Reduce ``a`` (the ring's dtype) modulo ``2^bits`` in place and return it.

    Arithmetic in the word (mod 2^32 or 2^64) is consistent with arithmetic mod
    ``2^bits`` because ``2^bits`` divides the word modulus; only the final value
    needs masking when ``bits`` is not the full word.
    """
    width = a.dtype.itemsize * 8
    if bits < width:
        np.bitwise_and(a, a.dtype.type((1 << bits) - 1), out=a)
    return a


def _max_frac_bits(clip: float, bits: int, max_summands: int) -> int:
    limit = (1 << (bits - 1)) - 1
    f = -1
    # Largest f with max_summands * ceil(clip * 2^f) <= limit; at most ~64 + 1074 steps.
    while f < 1100 and max_summands * math.ceil(math.ldexp(clip, f + 1)) <= limit:
        f += 1
    return f


@dataclass(frozen=True)
class FixedPointEncoder:
    """Encode reals in ``[-clip, clip]`` into Z_(2^bits) so that sums of up to
    ``max_summands`` encodings decode exactly (see the module docstring for the maths).

    Parameters
    ----------
    clip:
        Largest magnitude accepted by :meth:`encode` (finite, > 0).
    bits:
        Ring size ``b`` in [16, 64].  Words are uint32 for ``b <= 32`` else uint64.
    max_summands:
        Largest number of encodings that will be added (the cohort size).
    frac_bits:
        Fractional bits ``f``; ``None`` picks the largest ``f >= 0`` with no overflow.
        Raises :class:`ParameterError` if no ``f >= 0`` (or the given ``f``) fits.
    """

    clip: float
    bits: int
    max_summands: int
    frac_bits: int | None = None
    _f: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ParameterError(f"clip must be a finite number > 0, got {self.clip!r}")
        if not isinstance(self.bits, int) or not (MIN_BITS <= self.bits <= MAX_BITS):
            raise ParameterError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {self.bits!r}")
        if not isinstance(self.max_summands, int) or self.max_summands < 1:
            raise ParameterError(f"max_summands must be an integer >= 1, got {self.max_summands!r}")
        best = _max_frac_bits(float(self.clip), self.bits, self.max_summands)
        if self.frac_bits is None:
            if best < 0:
                raise ParameterError(
                    f"{self.max_summands} summands of magnitude {self.clip} overflow a {self.bits}-bit ring "
                    f"even with 0 fractional bits: raise bits or lower clip/max_summands"
                )
            f = best
        else:
            f = self.frac_bits
            if not isinstance(f, int) or f < 0 or f > best:
                raise ParameterError(
                    f"frac_bits={f!r} overflows: {self.max_summands} * ceil({self.clip} * 2^f) must be "
                    f"< 2^{self.bits - 1}; the largest admissible frac_bits is {best}"
                )
        object.__setattr__(self, "_f", f)

    # -- derived parameters -------------------------------------------------------------
    @property
    def fractional_bits(self) -> int:
        """The fractional bits ``f`` actually used (chosen automatically if not given)."""
        return self._f

    @property
    def dtype(self) -> np.dtype:
        """The unsigned word holding ring elements (uint32 or uint64)."""
        return ring_dtype(self.bits)

    @property
    def modulus(self) -> int:
        """The ring modulus ``2^bits``."""
        return 1 << self.bits

    @property
    def quantum(self) -> float:
        """Spacing of representable values, ``2^-f``."""
        return math.ldexp(1.0, -self._f)

    def error_bound(self, n: int) -> float:
        """Largest |decoded sum - exact sum| for ``n`` summands: ``n * 2^-(f+1)``."""
        return n * math.ldexp(1.0, -(self._f + 1))

    # -- encode / decode ----------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """``round(x * 2^f) mod 2^bits`` elementwise; same shape, dtype :attr:`dtype`.

        Raises :class:`EncodingError` if any value is NaN, infinite or outside
        ``[-clip, clip]``.
        """
        a = np.asarray(x, dtype=np.float64)
        if a.size:
            lo, hi = float(np.min(a)), float(np.max(a))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise EncodingError("input contains NaN or infinite values; clean the data before encoding")
            if lo < -self.clip or hi > self.clip:
                raise EncodingError(
                    f"input range [{lo:g}, {hi:g}] exceeds the clipping range [-{self.clip:g}, {self.clip:g}]; "
                    f"clip values before encoding"
                )
        scaled = np.multiply(a, math.ldexp(1.0, self._f))
        np.rint(scaled, out=scaled)
        if self.bits <= 32:
            # |q| < 2^31 by the overflow condition: exact in int32; the view is two's complement.
            out = scaled.astype(np.int32).view(np.uint32)
        else:
            out = scaled.astype(np.int64).view(np.uint64)
        return ring_reduce(out, self.bits)

    def check_encoded(self, e: np.ndarray) -> np.ndarray:
        """Validate an already-encoded vector (dtype :attr:`dtype`, every value < 2^bits)."""
        a = np.asarray(e)
        if a.dtype != self.dtype:
            raise EncodingError(f"encoded input must have dtype {self.dtype}, got {a.dtype}")
        if a.size and self.bits < a.dtype.itemsize * 8 and int(a.max()) >> self.bits:
            raise EncodingError(f"encoded input has values >= 2^{self.bits}")
        return a

    def decode_sum(self, s: np.ndarray, n_summands: int) -> np.ndarray:
        """Decode a sum of ``n_summands`` encodings (mod 2^bits) to float64.

        The ring element is read as the signed integer in ``[-2^(b-1), 2^(b-1))``
        and scaled by ``2^-f``.  ``n_summands`` must not exceed ``max_summands``
        (otherwise the sum may have wrapped and the result would be garbage).
        """
        if not isinstance(n_summands, int) or not (0 <= n_summands <= self.max_summands):
            raise ParameterError(
                f"n_summands must be in [0, {self.max_summands}] (the encoder's max_summands), got {n_summands!r}"
            )
        a = np.asarray(s)
        if a.dtype != self.dtype:
            raise EncodingError(f"sum must have dtype {self.dtype}, got {a.dtype}")
        if self.bits > 32:  # sign-extend bit (b-1) of a uint64 word: shift up, arithmetic shift down
            shift = np.uint64(64 - self.bits)
            signed = np.left_shift(a, shift).view(np.int64) >> np.int64(64 - self.bits)
        else:
            signed = a.astype(np.int64)
            signed[signed >= (1 << (self.bits - 1))] -= 1 << self.bits
        return np.ldexp(signed.astype(np.float64), -self._f)

    def decode(self, e: np.ndarray) -> np.ndarray:
        """Decode a single encoding (``decode_sum(e, 1)``)."""
        return self.decode_sum(e, 1)
