"""One-run audit against an f-DP hypothesis (Mahloujifar, Melis & Chaudhuri, ICML 2025,
"Auditing f-Differential Privacy in One Run").

Setting
-------
The one-run game of :mod:`dp.audit.one_run`: ``m`` canaries, each IN with probability
1/2; the auditor makes ``r`` guesses (abstaining on the rest), ``v`` of them correct.
The null hypothesis is now "training is f-DP with respect to each canary" for a
trade-off function ``f`` (type-II error as a function of type-I error), which carries
more information than one ``(ε, δ)`` pair.

The test (the paper's guessing-game bound, k = 2 for IN/OUT)
------------------------------------------------------------
Write ``B⁻¹`` for the inverse *blow-up* of ``f``: if an event has probability ``y``
under one neighbour, it has probability at least ``B⁻¹(y)`` under the other
(``B(x) = 1 − f(x)``). Suppose ``P[W ≥ v] ≥ p``. Start from

    r_v = p·v/m,   h_v = p·(r − v)/m

and recurse for ``i = v − 1, …, 0``:

    h_i = max(h_{i+1}, (k − 1)·B⁻¹(r_{i+1}))
    r_i = r_{i+1} + i/(r − i) · (h_i − h_{i+1})

Mahloujifar et al. show that an f-DP mechanism must then satisfy ``r_0 + h_0 ≤ r/m``.
Every quantity increases with ``p``, so if the inequality fails at ``p = α`` the
observation has probability below ``α`` under the null: the hypothesis is rejected at
confidence ``1 − α`` (:func:`rejects`).

Families
--------
* ``(ε, δ)``-DP: ``f(x) = max(0, 1 − δ − e^ε x, e^{−ε}(1 − δ − x))`` —
  :func:`epsilon_lower_bound` is the largest ε whose ``(ε, δ)`` hypothesis is rejected
  (a lower bound on the true ε at that δ, directly comparable with the accountant's
  claim, next to SNJ's).
* μ-Gaussian DP: ``B⁻¹(y) = Φ(Φ⁻¹(y) − μ)`` — :func:`gdp_mu_lower_bound` (the paper's
  "empirical privacy"; DP-SGD is close to μ-GDP). Its ε at δ
  (:func:`gdp_epsilon`) describes the rejected GDP curve; "not μ-GDP" does not by itself
  falsify one ``(ε, δ)`` pair, so the verdict uses the ``(ε, δ)`` family.

Both searches bisect on a monotone family (weaker privacy ⇒ smaller ``B⁻¹`` ⇒ easier to
satisfy the inequality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from fedvault.dp.audit.errors import AuditError
from fedvault.dp.audit.gaussian import smallest_epsilon

InverseBlowUp = Callable[[float], float]
_norm = stats.norm


def epsdelta_inverse_blowup(epsilon: float, delta: float) -> InverseBlowUp:
    """``B⁻¹`` of ``(ε, δ)``-DP: ``max(0, (y − δ)e^{−ε}, 1 − δ − e^ε(1 − y))``."""
    e = math.exp(epsilon)

    def inv(y: float) -> float:
        return max(0.0, (y - delta) / e, 1.0 - delta - e * (1.0 - y))

    return inv


def gdp_inverse_blowup(mu: float) -> InverseBlowUp:
    """``B⁻¹`` of μ-GDP: ``Φ(Φ⁻¹(y) − μ)``."""

    def inv(y: float) -> float:
        if y <= 0.0:
            return 0.0
        if y >= 1.0:
            return 1.0
        return float(_norm.cdf(_norm.ppf(y) - mu))

    return inv


def _check(m: int, r: int, v: int, confidence: float) -> None:
    for name, x in (("m", m), ("r", r), ("v", v)):
        if isinstance(x, bool) or not isinstance(x, int):
            raise AuditError(f"{name} must be an integer, got {x!r}")
    if not 0 <= v <= r <= m or m < 1:
        raise AuditError(f"need 0 <= correct guesses v <= guesses r <= canaries m (m >= 1), got v={v}, r={r}, m={m}")
    if not 0 < confidence < 1:
        raise AuditError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")


def rejects(inv_blowup: InverseBlowUp, m: int, r: int, v: int, confidence: float, *, k: int = 2) -> bool:
    """Whether ``v`` correct of ``r`` guesses on ``m`` canaries rejects f-DP at ``confidence``."""
    _check(m, r, v, confidence)
    if v == 0:
        return False
    p = 1.0 - confidence
    r_i, h_i = p * v / m, p * (r - v) / m
    for i in range(v - 1, -1, -1):
        h_next = max(h_i, (k - 1) * inv_blowup(r_i))
        r_i = r_i + (i / (r - i)) * (h_next - h_i)
        h_i = h_next
        if r_i + h_i > r / m:  # only grows from here: rejected
            return True
    return r_i + h_i > r / m


def _largest_rejected(rejected: Callable[[float], bool], hi_cap: float, tol: float) -> float:
    """Largest x in [0, hi_cap] with ``rejected(x)`` (monotone: true below a threshold)."""
    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, 2.0 * hi
        if hi > hi_cap:
            return lo
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float, *, tol: float = 1e-4) -> float:
    """Largest ε such that ``(ε, δ)``-DP is rejected at ``confidence`` (0 if none)."""
    _check(m, r, v, confidence)
    if not 0 <= delta < 1:
        raise AuditError(f"delta must be in [0, 1), got {delta!r}")
    return _largest_rejected(lambda e: rejects(epsdelta_inverse_blowup(e, delta), m, r, v, confidence), 200.0, tol)


def gdp_mu_lower_bound(m: int, r: int, v: int, confidence: float, *, tol: float = 1e-4) -> float:
    """Largest μ such that μ-GDP is rejected at ``confidence`` (0 if none)."""
    _check(m, r, v, confidence)
    return _largest_rejected(lambda mu: rejects(gdp_inverse_blowup(mu), m, r, v, confidence), 50.0, tol)


def gdp_epsilon(mu: float, delta: float, *, tol: float = 1e-6) -> float:
    """ε at δ of μ-GDP: ``δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)`` solved for ε (Dong et al. 2022)."""
    if mu <= 0:
        return 0.0
    if not 0 < delta < 1:
        raise AuditError(f"delta must be in (0, 1), got {delta!r}")

    def d(e: float) -> float:
        return float(_norm.cdf(-e / mu + mu / 2) - math.exp(e) * _norm.cdf(-e / mu - mu / 2))

    return smallest_epsilon(d, delta, cap=1e4, tol=tol)


@dataclass(frozen=True)
class FdpAudit:
    """Result of the f-DP one-run test (Mahloujifar et al. 2025) on canary scores.

    Attributes:
        epsilon_lower: largest ε whose ``(ε, δ)``-DP is rejected at ``confidence`` (the
            number compared with the accountant's claim).
        mu_lower: largest μ whose μ-GDP is rejected (the paper's empirical privacy).
        gdp_epsilon: ε at δ of ``mu_lower``-GDP (describes the rejected curve only).
        confidence, delta, canaries, guesses, correct, k_plus, k_minus, candidates: as in
            :class:`~dp.audit.one_run.OneRunAudit` (same candidates, Bonferroni).
        ceiling: the ``(ε, δ)`` bound of the largest candidate the design can fill with
            correct guesses (see ``max_guesses`` of :func:`audit_scores_fdp`).
    """

    epsilon_lower: float
    mu_lower: float
    gdp_epsilon: float
    confidence: float
    delta: float
    canaries: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    candidates: int
    ceiling: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def audit_scores_fdp(
    scores: Sequence[float],
    included: Sequence[bool],
    *,
    delta: float,
    confidence: float = 0.95,
    candidates: Sequence[tuple[int, int]] | None = None,
    max_guesses: int | None = None,
) -> FdpAudit:
    """The f-DP test on every ``(k+, k−)`` candidate (Bonferroni), best bound kept.

    ``max_guesses`` bounds the candidates used for the ceiling (the number of canaries
    whose bit the output can reveal at all, e.g. IN canaries that can be sampled).
    """
    from fedvault.dp.audit.one_run import checked_scores, default_candidates, guesses_from_scores

    s, b = checked_scores(scores, included)
    m = len(s)
    cands = list(candidates) if candidates is not None else default_candidates(m)
    per_test = 1.0 - (1.0 - confidence) / len(cands)
    truth = np.where(b, 1, -1)
    best = (0.0, cands[0][0], cands[0][1], 0)
    best_acc = (-1.0, 0, cands[0][0], cands[0][1], 0)
    for kp, km in cands:
        g = guesses_from_scores(s, kp, km)
        r = int(np.count_nonzero(g))
        v = int(np.count_nonzero(g == truth))
        acc = (v / max(r, 1), r, kp, km, v)
        best_acc = max(best_acc, acc)
        if rejects(epsdelta_inverse_blowup(best[0], delta), m, r, v, per_test):
            eps = epsilon_lower_bound(m, r, v, delta, per_test)
            if eps > best[0]:
                best = (eps, kp, km, v)
    eps, kp, km, v = best
    if eps == 0.0:  # nothing rejected: report the most accurate candidate
        _, _, kp, km, v = best_acc
    r_best = kp + km
    mu = gdp_mu_lower_bound(m, r_best, v, per_test) if v else 0.0
    cap = m if max_guesses is None else max(1, int(max_guesses))
    fill = [a + c for a, c in cands if a + c <= cap] or [min(a + c for a, c in cands)]
    ceiling = epsilon_lower_bound(m, max(fill), max(fill), delta, per_test)
    return FdpAudit(
        epsilon_lower=eps, mu_lower=mu, gdp_epsilon=gdp_epsilon(mu, delta) if mu > 0 and 0 < delta < 1 else 0.0,
        confidence=confidence, delta=delta, canaries=m, guesses=r_best, correct=v, k_plus=kp, k_minus=km,
        candidates=len(cands), ceiling=ceiling,
    )
