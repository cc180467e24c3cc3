"""Calibrate the noise multiplier to a target ε ("target ε mode").

``noise_multiplier_for(ε*, δ, q, T)`` returns (to relative precision ``rtol``) the
*smallest* σ such that ``T`` steps of the Poisson-subsampled Gaussian with rate ``q`` and
noise multiplier σ cost at most ε* at δ under the chosen Opacus accountant — the exact
function the ledger uses (:func:`dp.accounting.opacus_epsilon`). So a hospital that plans
``T`` steps in total (rounds × local epochs × batches per epoch) and takes them all lands
just below its budget, and its ledger never refuses a planned round.

Guarantee: ``ε(σ) ≤ ε*`` always (checked with the full accountant); and
``ε(σ·(1 − rtol)) > ε*`` (σ is tight within ``rtol``), unless σ is clamped at
``sigma_min``.

Relation and other releases: with ``relation="replace_one"`` the ε is dp_accounting's PLD
under ``REPLACE_ONE`` (fast: PLD self-composition is an FFT), bisected directly; with
``extra_events`` (e.g. the Gaussian release of feature statistics that precedes
training) σ is calibrated so that the DP-SGD steps *and* those releases together cost
at most ε*.

Speed: Opacus' RDP curve costs ~0.1 s per σ in pure Python (90 fractional orders). The
search first bisects using only the integer orders of ``RDPAccountant.DEFAULT_ALPHAS`` —
ε over a subset of orders is an upper bound of ε over all orders, so that σ is already
valid — then tightens it with a few full evaluations. ``prv`` starts from the RDP
answer (PRV is the tighter accountant, so the RDP σ is valid for it) and bisects down.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from fedvault.dp.accounting import quiet_warnings, check_accountant, opacus_epsilon, record_epsilon
from fedvault.dp.errors import AccountingError
from fedvault.dp.events import check_relation
from fedvault.dp.ledger import PrivacyEvent

SIGMA_MIN = 0.05
SIGMA_MAX = 1000.0


def _eps_full(delta: float, q: float, steps: int, accountant: str) -> Callable[[float], float]:
    def f(sigma: float) -> float:
        ev = PrivacyEvent(round=0, noise_multiplier=sigma, sample_rate=q, steps=steps)
        return opacus_epsilon([ev], delta, accountant)

    return f


def _eps_integer_orders(delta: float, q: float, steps: int) -> Callable[[float], float]:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    orders = [a for a in RDPAccountant.DEFAULT_ALPHAS if float(a).is_integer()]

    def f(sigma: float) -> float:
        with quiet_warnings():
            rdp = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
            return float(analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])

    return f


def geometric_bisect(f: Callable[[float], float], target: float, lo: float, hi: float, rtol: float) -> float:
    """Smallest σ in (lo, hi] with f(σ) <= target, given f(lo) > target >= f(hi), f decreasing."""
    while hi - lo > rtol * hi:
        mid = math.sqrt(lo * hi)
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


_CACHE: dict[tuple, float] = {}
_CACHE_MAX = 256


def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    *,
    rtol: float = 1e-3,
    sigma_min: float = SIGMA_MIN,
    relation: str = "add_remove",
    extra_events: Sequence[Any] = (),
) -> float:
    """Smallest σ (within ``rtol``) with ε(σ; q=sample_rate, T=steps, δ) ≤ target_epsilon.

    ``relation`` and ``extra_events``: see the module docstring.  The answer is a pure
    function of the arguments and is remembered (per process), so the preflight check and
    the study calibrate each hospital once.

    Raises:
        AccountingError: invalid arguments, or even σ = 1000 cannot reach the target.
    """
    events = tuple(extra_events)
    key: tuple | None = (target_epsilon, delta, sample_rate, steps, accountant, rtol, sigma_min, relation, events)
    try:
        return _CACHE[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable argument: calibrate without remembering
        key = None
    sigma = calibrate_noise_multiplier(target_epsilon, delta, sample_rate, steps, accountant, rtol=rtol,
                                       sigma_min=sigma_min, relation=relation, extra_events=events)
    if key is not None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = sigma
    return sigma


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    *,
    rtol: float = 1e-3,
    sigma_min: float = SIGMA_MIN,
    relation: str = "add_remove",
    extra_events: Sequence[Any] = (),
) -> float:
    """:func:`noise_multiplier_for` without the memory: always searches.

    Raises:
        AccountingError: invalid arguments, or even σ = 1000 cannot reach the target.
    """
    check_accountant(accountant)
    check_relation(relation)
    if relation == "replace_one" or extra_events:
        return _calibrate_generic(target_epsilon, delta, sample_rate, steps, accountant, rtol, sigma_min,
                                  relation, tuple(extra_events))
    if not (isinstance(target_epsilon, (int, float)) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise AccountingError(f"target ε must be a positive number, got {target_epsilon!r}")
    if not 0 < delta < 1:
        raise AccountingError(f"delta must lie in (0, 1), got {delta!r}")
    if not 0 < sample_rate <= 1:
        raise AccountingError(f"sample_rate must lie in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AccountingError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0 < rtol < 0.5:
        raise AccountingError("rtol must lie in (0, 0.5)")

    full = _eps_full(delta, sample_rate, steps, "rdp")
    fast = _eps_integer_orders(delta, sample_rate, steps)
    if fast(SIGMA_MAX) > target_epsilon and full(SIGMA_MAX) > target_epsilon:
        raise AccountingError(
            f"target ε={target_epsilon:g} at δ={delta:g} is unreachable with {steps} steps at "
            f"q={sample_rate:.4g} even with σ={SIGMA_MAX:g}: raise the target, or use fewer "
            "rounds/epochs or larger batches"
        )
    if full(sigma_min) <= target_epsilon:
        sigma = sigma_min
    else:
        # phase 1: integer orders only (cheap, ε upper bound, so the answer is valid)
        hi = SIGMA_MAX if fast(SIGMA_MAX) <= target_epsilon else None
        if hi is None:  # only fractional orders reach the target: bisect on the full curve
            sigma = geometric_bisect(full, target_epsilon, sigma_min, SIGMA_MAX, rtol)
        else:
            sigma = geometric_bisect(fast, target_epsilon, sigma_min, hi, rtol / 4)
            # phase 2: tighten with the full accountant (fractional orders may allow less noise)
            if full(sigma * (1 - rtol)) <= target_epsilon:
                hi, lo = sigma * (1 - rtol), sigma_min
                for f in (0.97, 0.9, 0.7, 0.5, 0.25):  # bracket the answer closely
                    cand = max(sigma_min, sigma * f)
                    if full(cand) > target_epsilon:
                        lo = cand
                        break
                    hi = cand
                sigma = hi if full(lo) <= target_epsilon else geometric_bisect(full, target_epsilon, lo, hi, rtol)
        assert full(sigma) <= target_epsilon
    if accountant == "prv":
        prv = _eps_full(delta, sample_rate, steps, "prv")
        hi = sigma
        while prv(hi) > target_epsilon:  # PRV is normally tighter; guard anyway
            hi *= 1.25
            if hi > SIGMA_MAX:
                raise AccountingError(f"target ε={target_epsilon:g} is unreachable with the PRV accountant")
        lo = max(sigma_min, hi * 0.7)
        while lo > sigma_min and prv(lo) <= target_epsilon:
            lo = max(sigma_min, lo * 0.7)
        sigma = sigma_min if prv(lo) <= target_epsilon else geometric_bisect(prv, target_epsilon, lo, hi, max(rtol, 2e-3))
    return float(sigma)


def _calibrate_generic(
    target: float, delta: float, q: float, steps: int, accountant: str, rtol: float, sigma_min: float,
    relation: str, extra: tuple[Any, ...],
) -> float:
    """Bisection on the ledger's own ε function (:func:`dp.accounting.record_epsilon`)."""
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise AccountingError(f"target ε must be a positive number, got {target!r}")
    if not 0 < delta < 1:
        raise AccountingError(f"delta must lie in (0, 1), got {delta!r}")
    if not 0 < q <= 1:
        raise AccountingError(f"sample_rate must lie in (0, 1], got {q!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AccountingError(f"steps must be an integer >= 1, got {steps!r}")

    def f(sigma: float) -> float:
        ev = PrivacyEvent(round=1, noise_multiplier=sigma, sample_rate=q, steps=steps)
        return record_epsilon(list(extra) + [ev], delta, relation, accountant)

    floor = record_epsilon(list(extra), delta, relation, accountant) if extra else 0.0
    if floor >= target:
        raise AccountingError(
            f"target ε={target:g} at δ={delta:g} ({relation}) is unreachable: the releases before training "
            f"already cost ε={floor:.4g}; raise the target or add less of them (e.g. privacy.standardise = \"public\")"
        )
    # Bracket by doubling/halving from σ = 2: PLD at tiny σ is slow, so never evaluate far
    # below the answer.
    lo, hi = 1.0, 2.0
    while f(hi) > target:
        if hi >= SIGMA_MAX:
            raise AccountingError(
                f"target ε={target:g} at δ={delta:g} ({relation}) is unreachable with {steps} steps at q={q:.4g} "
                f"even with σ={SIGMA_MAX:g}: raise the target, or use fewer rounds/epochs or larger batches"
            )
        lo, hi = hi, min(SIGMA_MAX, hi * 2)
    while f(lo) <= target:
        if lo <= sigma_min:
            return float(sigma_min)
        hi, lo = lo, max(sigma_min, lo / 2)
    return float(geometric_bisect(f, target, lo, hi, rtol))
