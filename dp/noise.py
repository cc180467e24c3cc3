"""Distributed discrete Gaussian noise for client-level DP under secure aggregation.

Approach: Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation" (ICML 2021) — DDG below.

Pipeline per round (client side, before masking)::

    x      = clip(update, C)                        # L2 norm <= C (real units)
    x_int  = round(scale * x)                       # the fixed-point encoder, |error| <= e per coordinate
    y      = x_int + discrete_gaussian(d, sigma_c)  # integer noise, survives encoding exactly
    upload = (y mod 2^b) + pairwise masks           # the server only ever sees the noised sum

The server decodes ``Σ y_k`` (centred representative in ``[-2^(b-1), 2^(b-1))``) and
divides by ``scale``. It never sees noise-free data, and no trusted party adds noise.

Sampling
--------
:func:`discrete_gaussian` is the rejection sampler of Canonne, Kamath and Steinke (2020,
Algorithm 3), vectorised with numpy: with ``t = floor(σ) + 1`` draw a discrete Laplace
``Y = G1 − G2`` (``G_i`` geometric with ``P(G = k) ∝ e^{−k/t}``) and accept with
probability ``exp(−(|Y| − σ²/t)² / (2σ²))``; accepted values are exactly
``N_Z(0, σ²)``, ``P(x) ∝ exp(−x²/(2σ²))`` on the integers, *up to double-precision
rounding* of the geometric and acceptance probabilities (relative error ~1e-16; the
bit-exact rational version of CKS is ~100× slower in pure Python). ``d = 1e5`` takes a
few milliseconds.

Randomness: the default generator is ``numpy.random.Generator(PCG64DXSM)`` seeded with
256 bits from ``os.urandom`` (cryptographically seeded; PCG64 itself is not a CSPRNG, but
a client's raw noise is never revealed — it is added to its update and masked). Tests
inject a seeded generator.

Noise scale with dropouts
-------------------------
:func:`client_sigma` gives the per-client σ_c such that any ``threshold`` survivors
together add variance ``threshold · Var(N_Z(0, σ_c²)) ≥ σ_target²``
(``Var(N_Z(0, σ²)) ≤ σ²``, equal to within 1e-8 for σ ≥ 1; computed exactly by
summation for small σ). More survivors only add noise.

Wrap-around
-----------
The sum is taken mod ``M = 2^b``. With ``S`` a bound on ``|Σ_k x_int,k,j|`` per
coordinate and ``n`` clients adding noise, the noise sum is ``nσ_c²``-sub-Gaussian
(the discrete Gaussian is σ²-sub-Gaussian, CKS), so by a union bound over the ``d``
coordinates::

    P(any coordinate wraps) <= 2 d exp(−(M/2 − 1 − S)² / (2 n σ_c²))

(:func:`wraparound_probability`; 1 if ``M/2 − 1 ≤ S``). :func:`min_bits` picks ``b``
for a target probability (default 1e-9).

Client-level accounting
-----------------------
DDG Theorem 1 / Prop. 14 (the "simplified" bound without the L1 term, as in Google's
reference accounting): if ``n`` clients each add ``N_Z(0, σ_c²)`` and one client's
integer vector has L2 norm ``Δ₂ ≤ scale·C + e·√d`` (add/remove one client), the
noised sum satisfies, per round and RDP order α,

    ε(α) = min( α Δ₂²/(2nσ_c²) + τ d ,  (α/2) (Δ₂/(√n σ_c) + τ √d)² ),
    τ    = 10 Σ_{k=1}^{n−1} exp(−2π² σ_c² k/(k+1)),

with ``n = threshold`` (the fewest clients whose noise is guaranteed). Client sampling
with rate ``q`` (Poisson) is accounted with the general subsampled-RDP upper bound of
Zhu & Wang (ICML 2019, Thm. 5) at integer orders 2..256 (min with the unsampled ε);
rounds compose by adding RDP; RDP → (ε, δ) uses the conversion of CKS Prop. 12 as in
``dp_accounting.rdp.compute_epsilon``. This is a rigorous upper bound (looser than the
tight subsampled-Gaussian analysis, which does not apply verbatim to a sum of discrete
Gaussians).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np

from fedvault.dp.errors import AccountingError
from fedvault.dp.events import DistributedDiscreteGaussian

DDG_ORDERS: tuple[int, ...] = tuple(range(2, 65)) + (80, 96, 128, 160, 192, 256)


# -- randomness and sampling --------------------------------------------------------
def secure_generator(seed: bytes | int | None = None) -> np.random.Generator:
    """A numpy Generator seeded with 256 bits of ``os.urandom`` (or ``seed`` for tests)."""
    if seed is None:
        seed = os.urandom(32)
    if isinstance(seed, bytes):
        seed = int.from_bytes(seed, "big")
    return np.random.Generator(np.random.PCG64DXSM(seed))


def discrete_gaussian(shape: int | Sequence[int], sigma: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Samples of the discrete Gaussian ``N_Z(0, σ²)`` (int64 array of ``shape``).

    ``σ = 0`` gives zeros. See the module docstring for the algorithm and its precision.
    """
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise AccountingError(f"sigma must be a finite number >= 0, got {sigma!r}")
    size = int(np.prod(shape))
    if sigma == 0 or size == 0:
        return np.zeros(shape, dtype=np.int64)
    if sigma > 2.0**40:
        raise AccountingError(f"sigma={sigma:g} is too large for int64 noise")
    rng = rng if rng is not None else secure_generator()
    sigma = float(sigma)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)  # success probability of the geometric: 1 − e^{−1/t}
    s2 = sigma * sigma
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        m = int((size - filled) * 1.6) + 64
        y = rng.geometric(p, m) - rng.geometric(p, m)  # discrete Laplace(t)
        a = np.abs(y) - s2 / t
        keep = y[rng.random(m) < np.exp(-(a * a) / (2.0 * s2))]
        k = min(len(keep), size - filled)
        out[filled : filled + k] = keep[:k]
        filled += k
    return out.reshape(shape)


def discrete_gaussian_variance(sigma: float) -> float:
    """Exact variance of ``N_Z(0, σ²)`` (≤ σ²; by summation for σ < 50, else σ²)."""
    if sigma <= 0:
        return 0.0
    if sigma >= 50:
        return float(sigma) ** 2  # relative deficit < exp(−2π²σ²)·4π²σ² ≈ 0
    k = np.arange(-int(40 * sigma) - 10, int(40 * sigma) + 11, dtype=np.float64)
    w = np.exp(-(k * k) / (2 * sigma * sigma))
    return float((k * k * w).sum() / w.sum())


def client_sigma(target_sigma: float, threshold: int) -> float:
    """Per-client σ_c so that any ``threshold`` clients' noise has variance ≥ target_sigma²."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise AccountingError(f"threshold must be an integer >= 1, got {threshold!r}")
    if not target_sigma >= 0:
        raise AccountingError(f"target sigma must be >= 0, got {target_sigma!r}")
    want = target_sigma**2 / threshold
    lo = math.sqrt(want)
    if discrete_gaussian_variance(lo) >= want:
        return lo
    hi = lo + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if discrete_gaussian_variance(mid) >= want:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12 * hi:
            break
    return hi


def noise_mod(shape: int | Sequence[int], sigma: float, bits: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Discrete Gaussian noise reduced into ``Z_(2^bits)`` (uint64), ready to add to an encoding."""
    if not 1 <= bits <= 64:
        raise AccountingError(f"bits must lie in 1..64, got {bits}")
    z = discrete_gaussian(shape, sigma, rng)
    u = z.astype(np.uint64)  # two's complement: −k ↦ 2^64 − k, correct mod 2^bits
    return u if bits == 64 else u & np.uint64((1 << bits) - 1)


# -- wrap-around ------------------------------------------------------------------
def wraparound_probability(bits: int, n_clients: int, dimension: int, sigma_client: float, max_abs_signal: float) -> float:
    """Upper bound on P(some coordinate of the noised sum leaves [−2^(b−1), 2^(b−1))).

    ``max_abs_signal``: bound ``S`` on the noise-free sum's absolute value per coordinate
    in integer units (e.g. ``n · (scale·C + e)``). See the module docstring.
    """
    half = 2.0 ** (bits - 1)
    room = half - 1 - max_abs_signal
    if room <= 0:
        return 1.0
    var = n_clients * sigma_client**2
    if var == 0:
        return 0.0
    return float(min(1.0, 2 * dimension * math.exp(-(room * room) / (2 * var))))


def min_bits(n_clients: int, dimension: int, sigma_client: float, max_abs_signal: float, target: float = 1e-9) -> int:
    """Smallest ``b`` (≤ 64) with :func:`wraparound_probability` ≤ ``target``."""
    for b in range(2, 65):
        if wraparound_probability(b, n_clients, dimension, sigma_client, max_abs_signal) <= target:
            return b
    raise AccountingError("no bit width up to 64 keeps the wrap-around probability below the target")


# -- client-level accounting --------------------------------------------------------
# One round of the mechanism at client level is a :class:`dp.events.DistributedDiscreteGaussian`
# event (``DDGEvent`` is its historical name); its ``l2_sensitivity`` follows the relation
# it states (Δ for add/remove one hospital, 2Δ for replace-one).
DDGEvent = DistributedDiscreteGaussian


def ddg_tau(sigma_c: float, n: int) -> float:
    """``τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1))``: the slack of a sum of ``n`` discrete
    Gaussians of scale ``σ = sigma_c`` against one continuous Gaussian (Kairouz et al. 2021)."""
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.exp(-2 * math.pi**2 * sigma_c**2 * k / (k + 1)).sum()) if n > 1 else 0.0


def ddg_rdp(event: DDGEvent, orders: Sequence[int] = DDG_ORDERS) -> np.ndarray:
    """Per-round RDP of the (client-sampled) distributed discrete Gaussian at integer ``orders``."""
    n, s = event.threshold, event.sigma_client
    scale = event.l2_sensitivity / (math.sqrt(n) * s)
    tau, d = ddg_tau(s, n), event.dimension

    def eps(a: np.ndarray | float) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return np.minimum(a * scale**2 / 2 + tau * d, (a / 2) * (scale + math.sqrt(d) * tau) ** 2)

    orders_arr = np.asarray(orders, dtype=np.int64)
    base = eps(orders_arr)
    q = event.sample_rate
    if q >= 1.0:
        return base
    from scipy.special import gammaln, logsumexp

    out = np.empty(len(orders_arr))
    lq, l1q = math.log(q), math.log1p(-q)
    for i, a in enumerate(orders_arr):
        a = int(a)
        ls = np.arange(3, a + 1)
        log_comb = gammaln(a + 1) - gammaln(ls + 1) - gammaln(a - ls + 1)
        terms = [(a - 1) * l1q + math.log(a * q - q + 1),
                 math.log(a * (a - 1) / 2) + 2 * lq + (a - 2) * l1q + float(eps(2))]
        logs = np.concatenate([terms, (ls - 1) * eps(ls) + log_comb + (a - ls) * l1q + ls * lq + math.log(3)])
        out[i] = min(float(logsumexp(logs)) / (a - 1), float(base[i]))
    return out


@lru_cache(maxsize=1024)
def _ddg_rdp_cached(event: DDGEvent, orders: tuple[int, ...]) -> np.ndarray:
    return ddg_rdp(event, orders)


def rdp_to_epsilon(orders: Sequence[float], rdp: Sequence[float], delta: float) -> float:
    """(ε, δ) from RDP: min over α of ``rdp + log(1 − 1/α) − log(δα)/(α − 1)`` (CKS Prop. 12)."""
    best = math.inf
    for a, r in zip(orders, rdp):
        if not math.isfinite(r):
            continue
        best = min(best, r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    return max(0.0, best)


def ddg_epsilon(events: Iterable[DDGEvent], delta: float, orders: Sequence[int] = DDG_ORDERS) -> float:
    """Client-level ε at ``delta`` after composing the rounds in ``events``."""
    events = list(events)
    if not events:
        return 0.0
    total = np.sum([_ddg_rdp_cached(e, tuple(orders)) for e in events], axis=0)
    return rdp_to_epsilon(orders, total, delta)


def ddg_sigma_for(target_epsilon: float, delta: float, rounds: int, template: DDGEvent, rtol: float = 1e-3) -> float:
    """Smallest per-client σ_c (within ``rtol``) with ``rounds`` rounds like ``template`` costing ≤ target ε."""

    def eps(s: float) -> float:
        ev = replace(template, sigma_client=s)
        return ddg_epsilon([ev] * rounds, delta)

    lo, hi = 1e-3, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e12:
            raise AccountingError(f"client-level target ε={target_epsilon:g} is unreachable")
    from fedvault.dp.calibrate import geometric_bisect  # the same geometric bisection as DP-SGD's calibration

    return geometric_bisect(eps, target_epsilon, lo, hi, rtol)
