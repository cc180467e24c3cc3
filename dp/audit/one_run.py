"""Record-level ε lower bound from one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

Setting
-------
``m`` canaries; each is included in the training data independently with probability
1/2 (``S_i ∈ {IN, OUT}``). After training, an auditor looks at the output (model,
transcript), scores every canary, and guesses IN for some canaries, OUT for others and
abstains on the rest: ``r`` guesses, of which ``v`` are correct.

Theorem (SNJ 2023, Thm. 3 / Prop. 5, (ε, δ) version)
----------------------------------------------------
If training is (ε, δ)-DP with respect to each canary, then for every ``v``

    P[W ≥ v] ≤ β + 2·m·δ·α,   q = e^ε / (1 + e^ε)
    β = P[Binomial(r, q) ≥ v]
    α = max_{1 ≤ i ≤ v} (1/i) · P[v − i ≤ Binomial(r, q) < v]

where ``W`` is the number of correct guesses. The right-hand side is the *p-value* of
the observation ``v`` under the null hypothesis "the algorithm is (ε, δ)-DP"
(:func:`p_value`, clipped to 1). It increases with ε, so

    ε_lower(confidence) = sup { ε ≥ 0 : p_value(m, r, v, ε, δ) ≤ 1 − confidence }

is a lower bound on the true ε that holds with probability ≥ ``confidence`` over the
inclusion coins (:func:`epsilon_lower_bound`; 0 when even ε = 0 is not rejected).
For δ = 0 and a perfect guesser (v = r) this is ``logit((1 − confidence)^(1/r))``: the
bound grows only like log r, so a one-run audit with few canaries cannot certify large
ε — it is a *lower* bound and says nothing when it is small except "no violation found".

Choosing the guesses
--------------------
Guessing IN for the ``k+`` highest scores and OUT for the ``k−`` lowest is the paper's
strategy. Trying several ``(k+, k−)`` and keeping the best is a multiple test:
:func:`audit_scores` applies a Bonferroni correction (each candidate is tested at
``(1 − confidence) / #candidates``), so the reported bound keeps its confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import special, stats

from fedvault.dp.audit.errors import AuditError


def _check_counts(m: int, r: int, v: int) -> None:
    for name, x in (("m", m), ("r", r), ("v", v)):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise AuditError(f"{name} must be an integer, got {x!r}")
    if not 0 <= v <= r <= m:
        raise AuditError(f"need 0 <= correct guesses v <= guesses r <= canaries m, got v={v}, r={r}, m={m}")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of ``v`` correct out of ``r`` guesses on ``m`` canaries under (ε, δ)-DP.

    ``min(1, β + 2·m·δ·α)`` with β, α as in the module docstring (SNJ 2023).
    """
    _check_counts(m, r, v)
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise AuditError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if not 0 <= delta <= 1:
        raise AuditError(f"delta must be in [0, 1], got {delta!r}")
    if v == 0:
        return 1.0
    q = float(special.expit(epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0:
        return min(1.0, beta)
    i = np.arange(1, v + 1)
    # P[v - i <= B < v] = P[B >= v - i] - P[B >= v]
    window = stats.binom.sf(v - i - 1, r, q) - beta
    alpha = float(np.max(window / i))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float, *, tol: float = 1e-6) -> float:
    """Largest ε that ``v`` correct of ``r`` guesses on ``m`` canaries rejects at ``confidence``.

    Returns 0.0 when the observation is compatible with ε = 0 at that confidence.
    Accurate to ``tol`` (bisection on the monotone p-value).
    """
    if not 0 < confidence < 1:
        raise AuditError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    alpha = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) > alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= alpha:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:  # v = r with r huge and delta = 0: rejects every ε we can represent
            return lo
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def guesses_from_scores(scores: Sequence[float], k_plus: int, k_minus: int) -> np.ndarray:
    """+1 (IN) for the ``k_plus`` highest scores, −1 (OUT) for the ``k_minus`` lowest, 0 otherwise.

    Ties are broken by canary index (stable sort), never by the truth.
    """
    s = np.asarray(scores, dtype=np.float64)
    m = len(s)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise AuditError(f"need k_plus + k_minus <= m = {m}, got {k_plus} + {k_minus}")
    order = np.argsort(s, kind="stable")
    g = np.zeros(m, dtype=np.int8)
    if k_minus:
        g[order[:k_minus]] = -1
    if k_plus:
        g[order[m - k_plus :]] = 1
    return g


def default_candidates(m: int) -> list[tuple[int, int]]:
    """A fixed, data-independent grid of ``(k+, k−)`` pairs: 5%…50% of the canaries, IN-only
    and balanced IN/OUT guesses (at most 10 candidates, so the Bonferroni cost is small)."""
    out: list[tuple[int, int]] = []
    for frac in (0.05, 0.1, 0.2, 0.3, 0.5):
        r = max(1, int(round(frac * m)))
        for pair in ((r, 0), (r - r // 2, r // 2)):
            if sum(pair) <= m and pair not in out:
                out.append(pair)
    return out


@dataclass(frozen=True)
class OneRunAudit:
    """Result of a one-run audit (SNJ 2023).

    Attributes:
        epsilon_lower: ε lower bound holding with probability ≥ ``confidence``.
        confidence: e.g. 0.95.
        delta: the δ of the null hypothesis (the accountant's δ).
        canaries: m.
        guesses: r of the chosen candidate.
        correct: v of the chosen candidate.
        k_plus, k_minus: the chosen candidate's IN / OUT guess counts.
        candidates: how many (k+, k−) pairs were tried (Bonferroni factor).
        included: how many canaries were actually IN.
        ceiling: the largest bound any guesser could certify with these m canaries and
            candidates (all guesses correct) — a small ceiling means the audit is weak.
    """

    epsilon_lower: float
    confidence: float
    delta: float
    canaries: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    candidates: int
    included: int
    tried: tuple[tuple[int, int, int, float], ...] = field(default=(), repr=False)  # (k+, k−, v, ε or nan: not better)
    ceiling: float = math.nan  # the bound a perfect guesser would reach with these canaries

    @property
    def accuracy(self) -> float:
        return self.correct / self.guesses if self.guesses else math.nan

    def to_dict(self) -> dict:
        return {
            "epsilon_lower": self.epsilon_lower, "confidence": self.confidence, "delta": self.delta,
            "canaries": self.canaries, "included": self.included, "guesses": self.guesses,
            "correct": self.correct, "k_plus": self.k_plus, "k_minus": self.k_minus,
            "candidates": self.candidates, "ceiling": self.ceiling,
            "tried": [{"k_plus": a, "k_minus": b, "correct": c, "epsilon_lower": e} for a, b, c, e in self.tried],
        }


def checked_scores(scores: Sequence[float], included: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Canary scores as float64 and inclusion bits as bool, checked: 1-d, the same non-zero
    length, every score finite (else :class:`AuditError` saying which)."""
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(included, dtype=bool)
    if s.ndim != 1 or s.shape != b.shape or len(s) == 0:
        raise AuditError(f"scores and included must be 1-d of the same non-zero length, got {s.shape} and {b.shape}")
    if not np.all(np.isfinite(s)):
        raise AuditError("canary scores contain NaN or infinity")
    return s, b


def audit_scores(
    scores: Sequence[float],
    included: Sequence[bool],
    *,
    delta: float,
    confidence: float = 0.95,
    candidates: Sequence[tuple[int, int]] | None = None,
    max_guesses: int | None = None,
) -> OneRunAudit:
    """ε lower bound from canary scores (higher = more likely IN) and the true inclusion bits.

    Every ``(k+, k−)`` in ``candidates`` (default :func:`default_candidates`) is tested at
    significance ``(1 − confidence) / len(candidates)``; the largest bound is returned,
    which then holds with probability ≥ ``confidence`` (union bound). The ceiling is the
    bound of the largest candidate with at most ``max_guesses`` guesses (default ``m``:
    the canaries whose bit the output can reveal at all), all correct.
    """
    s, b = checked_scores(scores, included)
    m = len(s)
    cands = list(candidates) if candidates is not None else default_candidates(m)
    if not cands:
        raise AuditError("no (k_plus, k_minus) candidates to test")
    per_test = 1.0 - (1.0 - confidence) / len(cands)
    truth = np.where(b, 1, -1)
    best: tuple[float, int, int, int] | None = None
    tried = []
    for kp, km in cands:
        g = guesses_from_scores(s, kp, km)
        r = int(np.count_nonzero(g))
        v = int(np.count_nonzero(g == truth))
        best_eps = best[0] if best is not None and not math.isnan(best[0]) else 0.0
        # only search when this candidate can beat the best bound so far (p-value rises with ε)
        if p_value(m, r, v, best_eps, delta) <= 1.0 - per_test:
            eps = epsilon_lower_bound(m, r, v, delta, per_test)
        else:  # cannot beat the current best: its bound is below it (not computed)
            eps = math.nan
        tried.append((kp, km, v, eps))
        if best is None or (not math.isnan(eps) and (math.isnan(best[0]) or eps > best[0])):
            best = (eps, kp, km, v)
    eps, kp, km, v = best  # type: ignore[misc]
    if math.isnan(eps) or eps == 0.0:  # nothing rejected: report the most accurate candidate
        kp, km, v, _ = max(tried, key=lambda t: (t[2] / max(t[0] + t[1], 1), t[0] + t[1]))
        eps = 0.0
    cap = m if max_guesses is None else max(1, int(max_guesses))
    fill = [a + c for a, c in cands if a + c <= cap] or [min(a + c for a, c in cands)]
    ceiling = epsilon_lower_bound(m, max(fill), max(fill), delta, per_test)
    return OneRunAudit(
        epsilon_lower=eps, confidence=confidence, delta=delta, canaries=m, guesses=kp + km, correct=v,
        k_plus=kp, k_minus=km, candidates=len(cands), included=int(b.sum()), tried=tuple(tried),
        ceiling=ceiling,
    )
