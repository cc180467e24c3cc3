"""Client-level DP under secure aggregation: the distributed discrete Gaussian (DDG).

Enabled by ``[privacy] client_noise_multiplier = z`` (``aggregation.mode`` secagg/masked).
Each round every participating hospital

1. clips its model delta to L2 norm ``C = aggregation.update_clip`` and sends the
   *unweighted* vector ``[delta_k, 1]`` (client-level DP needs every hospital to weigh
   the same; the sum's last coordinate counts the survivors);
2. encodes it in fixed point with scale ``2^f`` (mod ``2^b``);
3. adds its own integer noise ``N_Z(0, sigma_c^2)`` to the delta coordinates, with
   ``sigma_c`` chosen (:func:`dp.noise.client_sigma`) so that any ``t`` survivors — the
   protocol's threshold, below which the round aborts — together add variance at least
   ``(z · C · 2^f)^2``;
4. masks the result (SecAgg). The server only ever sees the noised sum.

``f`` is chosen so that the signal ``n·C·2^f`` plus 12 standard deviations of the total
noise fit in the signed half of the ring; the resulting wrap-around probability
(:func:`dp.noise.wraparound_probability`, a union bound over coordinates) is recorded
per round in history.json.

Accounting (:mod:`dp.noise`, Kairouz et al. 2021): one :class:`~dp.noise.DDGEvent` per
round. history.json's ``client_level`` section reports two numbers:

* ``epsilon``: against whoever sees the released models only, with Poisson client
  sampling at ``training.client_fraction`` (amplification), add/remove one hospital;
* ``epsilon_vs_server``: against the aggregation server, which sees who took part, so
  no amplification (sample rate 1) and replace-one-hospital sensitivity ``2C``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from fedvault.dp import noise as ddg


@dataclass(frozen=True)
class RoundNoise:
    """The public noise parameters of one round."""

    frac_bits: int
    sigma_client: float  # integer units
    threshold: int
    wraparound_probability: float

    def event(self, round: int, clip: float, dimension: int, sample_rate: float, replace_one: bool = False) -> ddg.DDGEvent:
        return ddg.DDGEvent(
            round=round,
            sigma_client=self.sigma_client,
            threshold=self.threshold,
            clip_norm=(2.0 if replace_one else 1.0) * clip,
            scale=math.ldexp(1.0, self.frac_bits),
            dimension=dimension,
            sample_rate=sample_rate,
            coord_error=0.5,
        )


def plan_round(z: float, clip: float, bits: int, n: int, threshold: int, dimension: int) -> RoundNoise:
    """Choose the fixed-point scale and per-client σ for ``n`` clients, threshold ``t``."""
    head = n + 12.0 * z * math.sqrt(n / threshold)
    f = math.floor(math.log2(((1 << (bits - 1)) - 1) / (max(clip, 1.0) * head)))
    if f < 0:
        raise ValueError(f"{bits}-bit ring too small for client-level noise; raise aggregation.bits")
    sigma_c = ddg.client_sigma(z * clip * math.ldexp(1.0, f), threshold)
    p_wrap = ddg.wraparound_probability(bits, n, dimension, sigma_c, n * max(clip, 1.0) * math.ldexp(1.0, f))
    return RoundNoise(f, sigma_c, threshold, p_wrap)


def noised_encoding(
    vector: np.ndarray, encoder, plan: RoundNoise, seed: bytes, noised: int
) -> np.ndarray:
    """Encode ``vector`` and add discrete Gaussian noise to its first ``noised`` coordinates
    in Z_(2^b); ``seed`` (the hospital's own randomness) drives the noise."""
    enc = encoder.encode(vector).astype(np.uint64)
    rng = ddg.secure_generator(hashlib.sha256(seed).digest())
    z = ddg.noise_mod(noised, plan.sigma_client, 64, rng)
    enc[:noised] += z  # wraps mod 2^64; reduced mod 2^b below
    mask = np.uint64((1 << encoder.bits) - 1) if encoder.bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    return (enc & mask).astype(encoder.dtype)
