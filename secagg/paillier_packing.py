"""Packing real vectors into Paillier plaintexts: clip, quantise, offset, pack, unpack.

One Paillier plaintext is an integer ``M < n`` of about ``|n|`` bits; one value needs
far fewer. This module fits many quantised values (*slots*) into one plaintext so that
adding ciphertexts adds every slot at once, and no slot ever carries into its neighbour.

Encoding of one value (``b = value_bits``, ``c = clip``)::

    x' = min(max(x, -c), c)                       # clip (NaN/inf refused)
    u  = round((x' + c) / step),  step = 2c / (2^b - 1)     # offset: u in [0, 2^b - 1]

``u`` is non-negative, so negatives need no two's complement: the offset ``c`` is
removed after summation. Decoding a slot that holds the sum of ``k`` encoded values::

    sum_x ~= step * sum_u - k * c

**Quantisation error bound.** Each value is off by at most ``step / 2`` after rounding
(``|x' - (u*step - c)| <= step/2``), so the decoded sum of ``k`` values is off by at
most ``k * step / 2 = k * c / (2^b - 1)`` per coordinate, plus clipping of values
outside ``[-c, c]`` (which the caller chooses). For ``b > 52`` float64 rounding of
``(x' + c) / step`` adds up to ``k * 2^(b-52) * step`` (about ``k`` ulps of ``2c``). The integer slot sums themselves are
exact: ``unpack(sum of packed) == sum of u`` bit for bit.

**Slot layout** (little-endian inside the plaintext)::

    M = sum_{j=0}^{s-1} u_j * 2^(w*j),   w = b + h,   h = bitlen(K - 1),   s = floor((|n| - 1) / w)

``K = max_summands`` is the number of encoded vectors that may ever be added. Since
``K <= 2^h``, a slot sum is at most ``K (2^b - 1) <= 2^w - 2^h < 2^w``: it never
carries into the next slot. ``s*w <= |n| - 1`` keeps ``M < 2^(|n|-1) < n``, so the
plaintext never wraps modulo ``n``. **Overflow condition:** more than ``K`` summands;
the code counts summands and refuses the ``K+1``-th (:class:`CapacityError`) instead of
letting a slot overflow silently. Example: ``|n| = 2048, b = 16, K = 10`` gives
``w = 20`` and ``s = 102`` slots per plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedvault.secagg.errors import EncodingError, ParameterError

__all__ = ["CapacityError", "PackingLayout"]

_MAX_SLOT_BITS = 63  # slot sums are handled as uint64 by numpy


class CapacityError(EncodingError):
    """Adding one more summand could overflow a slot: the layout's ``max_summands`` is reached."""


@dataclass(frozen=True)
class PackingLayout:
    """How values are quantised and where they sit inside one Paillier plaintext.

    Args:
        key_bits: bit length of the Paillier modulus ``n`` (``n.bit_length()``).
        value_bits: ``b``, bits of one quantised value (``2 <= b``); more bits, smaller
            quantisation error (``c / (2^b - 1)`` per summand).
        max_summands: ``K``, the most encoded vectors that may be added together.
        clip: ``c > 0``; values are clipped to ``[-c, c]`` before encoding.
    """

    key_bits: int
    value_bits: int
    max_summands: int
    clip: float

    def __post_init__(self) -> None:
        if not isinstance(self.max_summands, int) or self.max_summands < 1:
            raise ParameterError(f"max_summands must be a positive int, got {self.max_summands!r}")
        if not isinstance(self.value_bits, int) or self.value_bits < 2:
            raise ParameterError(f"value_bits must be an int >= 2, got {self.value_bits!r}")
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ParameterError(f"clip must be a finite positive number, got {self.clip!r}")
        if self.slot_bits > _MAX_SLOT_BITS:
            raise ParameterError(
                f"slot width {self.slot_bits} bits (value_bits {self.value_bits} + headroom "
                f"{self.headroom_bits} for {self.max_summands} summands) exceeds {_MAX_SLOT_BITS}; "
                "lower value_bits or max_summands")
        if self.slots < 1:
            raise ParameterError(f"a {self.key_bits}-bit key cannot hold one {self.slot_bits}-bit slot")

    # -- layout -------------------------------------------------------------------------
    @property
    def headroom_bits(self) -> int:
        """``h = bitlen(K - 1)``: bits reserved above each value for carries of ``K`` summands."""
        return (self.max_summands - 1).bit_length()

    @property
    def slot_bits(self) -> int:
        """``w = b + h``: width of one slot in the plaintext."""
        return self.value_bits + self.headroom_bits

    @property
    def slots(self) -> int:
        """``s = floor((|n| - 1) / w)``: values per plaintext (so that ``M < 2^(|n|-1) < n``)."""
        return (self.key_bits - 1) // self.slot_bits

    @property
    def step(self) -> float:
        """Quantisation step ``2c / (2^b - 1)``."""
        return 2.0 * self.clip / ((1 << self.value_bits) - 1)

    def error_bound(self, summands: int) -> float:
        """Largest per-coordinate decoding error of a sum of ``summands`` clipped values."""
        return summands * self.step / 2.0

    def ciphertexts_for(self, length: int) -> int:
        """Number of plaintexts (hence ciphertexts) holding a vector of ``length`` values."""
        return -(-length // self.slots)

    def describe(self) -> dict[str, float | int]:
        """The layout as plain numbers (for logs, notebooks and benchmark reports)."""
        return {"key_bits": self.key_bits, "value_bits": self.value_bits,
                "headroom_bits": self.headroom_bits, "slot_bits": self.slot_bits,
                "slots_per_plaintext": self.slots, "max_summands": self.max_summands,
                "clip": self.clip, "step": self.step}

    # -- values <-> slot integers -------------------------------------------------------
    def quantise(self, x: np.ndarray) -> np.ndarray:
        """Clip to ``[-c, c]`` and map to integers ``u in [0, 2^b - 1]`` (uint64).

        Raises :class:`EncodingError` on NaN or infinity (clipping them would hide a bug).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise EncodingError(f"expected a 1-D vector, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise EncodingError("vector contains NaN or infinity; fix the update before encrypting")
        u = np.rint((np.clip(x, -self.clip, self.clip) + self.clip) / self.step)
        # clamp in the integer domain: for b > 53, float(2^b - 1) rounds up to 2^b
        return np.minimum(np.maximum(u, 0).astype(np.uint64), np.uint64((1 << self.value_bits) - 1))

    def dequantise_sum(self, sums: np.ndarray, summands: int) -> np.ndarray:
        """Decode slot sums of ``summands`` encoded vectors: ``step * sum_u - summands * c``."""
        if not 1 <= summands <= self.max_summands:
            raise CapacityError(f"{summands} summands outside 1..{self.max_summands}")
        return np.asarray(sums, dtype=np.float64) * self.step - summands * self.clip

    # -- slot integers <-> plaintexts ---------------------------------------------------
    def pack(self, u: np.ndarray) -> list[int]:
        """Pack slot integers ``u`` (each ``< 2^w``) into plaintexts, ``s`` slots each, slot 0 lowest."""
        u = np.ascontiguousarray(u, dtype=np.uint64)
        if u.size and int(u.max()) >> self.slot_bits:
            raise EncodingError(f"slot value does not fit in {self.slot_bits} bits")
        w, s = self.slot_bits, self.slots
        count = self.ciphertexts_for(u.size)
        padded = np.zeros(count * s, dtype=np.uint64)
        padded[: u.size] = u
        out: list[int] = []
        chunk = max(1, 4096 // s + 1) * s  # bound the bit array's memory
        for lo in range(0, padded.size, chunk):
            block = padded[lo:lo + chunk].astype("<u8")
            bits = np.unpackbits(block.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :w]
            bits = bits.reshape(-1, s * w)
            pad = (-bits.shape[1]) % 8
            if pad:
                bits = np.concatenate([bits, np.zeros((bits.shape[0], pad), np.uint8)], axis=1)
            raw = np.packbits(bits, axis=1, bitorder="little")
            out.extend(int.from_bytes(row.tobytes(), "little") for row in raw)
        return out

    def unpack(self, plaintexts: list[int], length: int) -> np.ndarray:
        """Inverse of :meth:`pack`: the first ``length`` slot integers (uint64), exactly."""
        w, s = self.slot_bits, self.slots
        if len(plaintexts) != self.ciphertexts_for(length):
            raise EncodingError(f"{len(plaintexts)} plaintexts cannot hold exactly {length} values")
        nbytes = -(-s * w // 8)
        weights = (np.uint64(1) << np.arange(w, dtype=np.uint64))
        out = np.empty(len(plaintexts) * s, dtype=np.uint64)
        chunk = max(1, 4096 // s + 1)
        for lo in range(0, len(plaintexts), chunk):
            part = plaintexts[lo:lo + chunk]
            if any(int(m) >> (s * w) or m < 0 for m in part):
                raise EncodingError("plaintext larger than the layout allows (wrong key or corrupted sum)")
            raw = b"".join(int(m).to_bytes(nbytes, "little") for m in part)
            bits = np.unpackbits(np.frombuffer(raw, np.uint8).reshape(len(part), nbytes), axis=1,
                                 bitorder="little")[:, : s * w].reshape(-1, w)
            out[lo * s:(lo + len(part)) * s] = bits.astype(np.uint64) @ weights
        return out[:length]
