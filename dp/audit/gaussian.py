"""Client-level one-shot privacy estimate (Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar,
"One-shot Empirical Privacy Estimation for Federated Learning", ICLR 2024).

Method
------
Canary clients are added to the federation. Canary ``i`` owns a random direction
``c_i`` (uniform on the unit sphere of the model's ``d`` parameters) and, in every round
it takes part in, submits the update ``C · c_i`` — as large as the protocol allows, and
in a direction no real client pushes. Further canaries ``c'_j`` are drawn the same way
but never inserted (the *unobserved* canaries). After training, with
``Δ = θ_final − θ_0``, the auditor computes

    ρ_i  = cos(Δ, c_i)    for inserted canaries     ~  N(μ, σ²)   (fitted)
    ρ'_j = cos(Δ, c'_j)   for unobserved canaries   ~  N(μ0, σ0²) (≈ N(0, 1/d) for large d)

and reports the ε, at the study's δ, of distinguishing the two fitted Gaussians (the ε
of a one-dimensional mechanism whose output is ``N(μ0, σ0²)`` without the canary and
``N(μ, σ²)`` with it). Andrew et al. prove this is exact for the Gaussian mechanism in
high dimension; in general it is an *estimate* of the ε an adversary who sees the final
model achieves against a worst-case (maximal-norm, random-direction) client — not a
bound with a confidence level. With few parameters (``d`` small) random canaries
interfere with each other and with the real signal, which inflates ``σ`` and biases the
estimate *down*.

ε of two Gaussians
------------------
For ``P = N(μ0, s0²)``, ``Q = N(μ1, s1²)`` and ``a = e^ε`` the hockey-stick divergence is
``H_a(P‖Q) = P[L > ε] − a·Q[L > ε]`` with ``L(x) = log p(x) − log q(x)``, a quadratic
in ``x``: the set ``{L > ε}`` is an interval, the complement of one, or a half-line,
found in closed form, and both probabilities are normal CDF differences.
``ε(δ) = inf{ε ≥ 0 : max(H_{e^ε}(P‖Q), H_{e^ε}(Q‖P)) ≤ δ}`` by bisection (H decreases
in ε).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from fedvault.dp.audit.errors import AuditError

_norm = stats.norm


def _interval_mass(intervals: list[tuple[float, float]], mu: float, s: float) -> float:
    """Normal mass of disjoint intervals, using the upper tail above the mean (no 1 − 1 cancellation)."""
    total = 0.0
    for a, b in intervals:
        if a >= mu:
            total += _norm.sf(a, mu, s) - _norm.sf(b, mu, s)
        else:
            total += _norm.cdf(b, mu, s) - _norm.cdf(a, mu, s)
    return float(total)


def _loss_region(mu0: float, s0: float, mu1: float, s1: float, eps: float) -> list[tuple[float, float]]:
    """Intervals where ``log N(x; mu0, s0) − log N(x; mu1, s1) > eps``."""
    # L(x) = A x^2 + B x + C
    A = 1.0 / (2 * s1**2) - 1.0 / (2 * s0**2)
    B = mu0 / s0**2 - mu1 / s1**2
    C = mu1**2 / (2 * s1**2) - mu0**2 / (2 * s0**2) + math.log(s1 / s0) - eps
    inf = math.inf
    if abs(A) < 1e-12 * max(1.0 / s0**2, 1.0 / s1**2):
        if B == 0:
            return [(-inf, inf)] if C > 0 else []
        root = -C / B
        return [(root, inf)] if B > 0 else [(-inf, root)]
    disc = B * B - 4 * A * C
    if disc <= 0:
        return [(-inf, inf)] if A > 0 else []
    sq = math.sqrt(disc)
    r1, r2 = sorted(((-B - sq) / (2 * A), (-B + sq) / (2 * A)))
    if A > 0:
        return [(-inf, r1), (r2, inf)]
    return [(r1, r2)]


def hockey_stick(mu0: float, s0: float, mu1: float, s1: float, epsilon: float) -> float:
    """``H_{e^ε}(N(mu0, s0²) ‖ N(mu1, s1²)) = sup_S P(S) − e^ε Q(S)`` (≥ 0)."""
    if s0 <= 0 or s1 <= 0:
        raise AuditError(f"standard deviations must be > 0, got {s0!r}, {s1!r}")
    region = _loss_region(mu0, s0, mu1, s1, epsilon)
    h = _interval_mass(region, mu0, s0) - math.exp(epsilon) * _interval_mass(region, mu1, s1)
    return max(0.0, h)


def epsilon_between_gaussians(mu0: float, s0: float, mu1: float, s1: float, delta: float, *, tol: float = 1e-6) -> float:
    """Smallest ε ≥ 0 with ``H_{e^ε}`` ≤ δ in both directions between two 1-d Gaussians.

    For equal variances this is the ε of the Gaussian mechanism with sensitivity/σ
    ``|mu1 − mu0| / s`` (Balle & Wang 2018's analytic formula). Returns ``inf`` when no
    ε ≤ 1000 reaches δ.
    """
    if not 0 < delta < 1:
        raise AuditError(f"delta must be in (0, 1), got {delta!r}")

    def worst(e: float) -> float:
        return max(hockey_stick(mu0, s0, mu1, s1, e), hockey_stick(mu1, s1, mu0, s0, e))

    return smallest_epsilon(worst, delta, cap=1000.0, tol=tol)


def smallest_epsilon(excess: Callable[[float], float], delta: float, *, cap: float, tol: float = 1e-6) -> float:
    """Smallest ε ≥ 0 with ``excess(ε) <= delta``, for ``excess`` non-increasing in ε.

    ``excess`` is a privacy curve δ(ε) (a hockey-stick divergence, a GDP trade-off...).
    Doubling then bisection to within ``tol``; 0 when ``excess(0) <= delta``; ``inf`` when
    no ε up to ``cap`` reaches δ.
    """
    if excess(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > delta:
        lo, hi = hi, 2 * hi
        if hi > cap:
            return math.inf
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if excess(mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def random_directions(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """``k`` independent directions uniform on the unit sphere of R^d (rows)."""
    if k < 0 or d < 1:
        raise AuditError(f"need k >= 0 directions in d >= 1 dimensions, got k={k}, d={d}")
    g = rng.standard_normal((k, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def cosines(delta_vec: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``cos(Δ, c_i)`` for each row ``c_i`` (0 when Δ = 0)."""
    v = np.asarray(delta_vec, dtype=np.float64)
    D = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    nv = float(np.linalg.norm(v))
    if nv == 0:
        return np.zeros(len(D))
    return (D @ v) / (np.linalg.norm(D, axis=1) * nv)


@dataclass(frozen=True)
class ClientLevelEstimate:
    """Andrew et al. (2024) one-shot client-level ε estimate.

    Attributes:
        epsilon: estimated ε at ``delta`` (an estimate, not a bound).
        delta: δ used.
        mu, sigma: mean and std of the inserted canaries' cosines.
        mu0, sigma0: mean and std of the null (unobserved canaries, or N(0, 1/d)).
        observed, unobserved: canary counts.
        dimension: d (model parameters).
        null: "empirical" or "theoretical".
    """

    epsilon: float
    delta: float
    mu: float
    sigma: float
    mu0: float
    sigma0: float
    observed: int
    unobserved: int
    dimension: int
    null: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def one_shot_estimate(
    observed_cosines: Sequence[float],
    unobserved_cosines: Sequence[float] | None,
    *,
    delta: float,
    dimension: int,
    null: str = "empirical",
) -> ClientLevelEstimate:
    """Fit ``N(μ, σ²)`` to the inserted canaries' cosines and compare with the null.

    ``null="empirical"`` fits ``N(μ0, σ0²)`` to ``unobserved_cosines``;
    ``null="theoretical"`` uses ``N(0, 1/d)`` (Andrew et al.'s high-dimensional limit).
    """
    obs = np.asarray(observed_cosines, dtype=np.float64)
    if obs.size < 2:
        raise AuditError("need at least 2 inserted canaries to fit their cosine distribution")
    mu, sigma = float(obs.mean()), float(obs.std(ddof=1))
    if null == "empirical":
        un = np.asarray(unobserved_cosines if unobserved_cosines is not None else [], dtype=np.float64)
        if un.size < 2:
            raise AuditError("need at least 2 unobserved canaries for an empirical null")
        mu0, sigma0 = float(un.mean()), float(un.std(ddof=1))
        n_un = int(un.size)
    elif null == "theoretical":
        mu0, sigma0, n_un = 0.0, 1.0 / math.sqrt(dimension), 0
    else:
        raise AuditError(f"null must be 'empirical' or 'theoretical', got {null!r}")
    floor = 1e-6 / math.sqrt(dimension)  # a perfectly repeatable statistic: avoid 0 std
    eps = epsilon_between_gaussians(mu0, max(sigma0, floor), mu, max(sigma, floor), delta)
    return ClientLevelEstimate(eps, delta, mu, sigma, mu0, sigma0, int(obs.size), n_un, int(dimension), null)
