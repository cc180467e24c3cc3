"""Threat model -> (graph degree, threshold), and the guarantee a round gives.

A deployment declares its adversary (:class:`ThreatModel`): the most hospitals that
may collude with the server (``C``, or a fraction ``gamma`` of the cohort), the most
hospitals that may drop out (``D``, or a fraction ``delta``), and the statistical
security parameter ``sigma`` (privacy fails with probability at most ``2^-sigma``,
default 40).  :func:`derive` turns it into the degree ``k`` of the masking graph and
the Shamir threshold ``t`` from the published bounds, or raises
:class:`~secagg.errors.ParameterError` saying what is achievable.  The result carries
a :class:`Guarantee`: a printable line and a dict that a run records.

Why these bounds (the argument is in ``protocols/SPEC.md`` section 1.2)
    A hospital ``v`` gives Shamir shares of its self-mask seed and of its mask key to
    its ``k`` neighbours ``N(v)``, and an honest neighbour reveals a share about ``v``
    only when the decision "v survived" / "v dropped" carries the signatures of ``t``
    members of ``N(v)`` on one survivor set.  An honest hospital signs one survivor set
    per round, so two conflicting decisions about ``v`` both carry ``t`` signatures only
    if ``2t <= k + C_v`` (``C_v`` colluders in ``N(v)``).  Privacy therefore needs
    ``2t > k + C_v`` for every honest ``v``; liveness needs ``t <= k - D_v`` (``D_v``
    dropped neighbours).

    * complete graph (Bonawitz et al. 2017): ``k = n - 1``, ``C_v <= C``, ``D_v <= D``:
      ``t = floor((n - 1 + C) / 2) + 1`` and it must hold that ``t <= n - 1 - D``.
    * sparse graph (Bell et al. 2020, random Harary graph): ``N(v)`` is a uniformly
      random ``k``-subset of the other members of the round's list ``L`` (at least
      ``n - D`` members), fixed by randomness nobody controls, so ``C_v`` is
      hypergeometric ``Hyp(n - D - 1, C, k)``.  ``k`` is the smallest even degree
      and ``t`` the smallest threshold with
      ``n * P[Hyp(n-D-1, C, k) >= 2t - k] <= 2^-sigma`` (union bound over hospitals)
      and ``n * P[Hyp(n-1, D, k) > k - t] <= 2^-eta`` (a round with ``D`` random
      dropouts completes except with probability ``2^-eta``, default ``eta = 20``;
      an adversary can always make a round abort, never make it leak).
      If no ``k < n - 1`` satisfies both, the complete graph is used.

What the server learns (for the guarantee line)
    An accepted "v survived" decision carries ``t`` signatures of ``v``'s neighbours
    that are themselves survivors, at least ``t - C_v`` of them honest; their pairwise
    masks with ``v`` are never revealed, so any sum the server can unmask that contains
    ``x_v`` contains at least ``m = t - c + 1`` honest updates, where ``c`` is the most
    colluders a neighbourhood holds (``C`` in the complete graph; in the sparse graph
    the largest ``c`` not excluded by the ``2^-sigma`` bound).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

from fedvault.secagg.errors import ParameterError

DEFAULT_SECURITY_BITS = 40
DEFAULT_CORRECTNESS_BITS = 20
#: Default adversary when nothing is declared: complete graph C = floor((n-1)/3)
#: colluders (Bonawitz et al.'s active-security regime); sparse graph 5% colluders and
#: 10% dropouts (Bell et al.'s running example).
DEFAULT_SPARSE_COLLUDER_FRACTION = 0.05
DEFAULT_SPARSE_DROPOUT_FRACTION = 0.10


@dataclass(frozen=True)
class ThreatModel:
    """The adversary a round must withstand.

    colluders / colluder_fraction
        Most hospitals colluding with the server (``C``), absolute or as a fraction of
        the cohort (``floor(gamma * n)``).  At most one of the two.  ``None`` for both:
        the default (module docstring).
    dropouts / dropout_fraction
        Most hospitals that may drop out in a round (``D``).  ``None`` for both: the
        complete graph tolerates whatever the threshold leaves (``n - 1 - t``); the
        sparse graph assumes 10%.
    security_bits
        ``sigma``: privacy fails with probability at most ``2^-sigma`` (sparse graph;
        the complete graph's guarantee is deterministic).  At least 20.
    correctness_bits
        ``eta``: with ``D`` random dropouts a sparse round aborts with probability at
        most ``2^-eta``.
    """

    colluders: int | None = None
    colluder_fraction: float | None = None
    dropouts: int | None = None
    dropout_fraction: float | None = None
    security_bits: int = DEFAULT_SECURITY_BITS
    correctness_bits: int = DEFAULT_CORRECTNESS_BITS

    def __post_init__(self) -> None:
        if self.colluders is not None and self.colluder_fraction is not None:
            raise ParameterError("declare either threat_model.colluders or threat_model.colluder_fraction, not both")
        if self.dropouts is not None and self.dropout_fraction is not None:
            raise ParameterError("declare either threat_model.dropouts or threat_model.dropout_fraction, not both")
        for name in ("colluders", "dropouts"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ParameterError(f"threat_model.{name} must be an integer >= 0, got {v!r}")
        for name in ("colluder_fraction", "dropout_fraction"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ParameterError(f"threat_model.{name} must be in [0, 1), got {v!r}")
        if not isinstance(self.security_bits, int) or not (20 <= self.security_bits <= 128):
            raise ParameterError(f"threat_model.security_bits must be in [20, 128], got {self.security_bits!r}")
        if not isinstance(self.correctness_bits, int) or not (1 <= self.correctness_bits <= 128):
            raise ParameterError(f"threat_model.correctness_bits must be in [1, 128], got {self.correctness_bits!r}")

    def max_colluders(self, n: int, graph: str) -> int:
        if self.colluders is not None:
            return self.colluders
        if self.colluder_fraction is not None:
            return math.floor(self.colluder_fraction * n)
        if graph == "complete":
            return (n - 1) // 3
        return math.floor(DEFAULT_SPARSE_COLLUDER_FRACTION * n)

    def max_dropouts(self, n: int, graph: str) -> int | None:
        if self.dropouts is not None:
            return self.dropouts
        if self.dropout_fraction is not None:
            return math.floor(self.dropout_fraction * n)
        if graph == "complete":
            return None  # whatever the threshold leaves
        return math.floor(DEFAULT_SPARSE_DROPOUT_FRACTION * n)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Guarantee:
    """What one round guarantees, derived from its parameters and threat model.

    ``line()`` is what a run prints; ``as_dict()`` what it records.  The line also names
    the residual power of a malicious hospital (SPEC section 1.3): SecAgg has no range
    proofs, so it can move each coordinate of the sum by any value mod ``2^bits`` (the
    decoded sum then lands anywhere in the encoder's range, not bounded by its clip), or
    make the round abort; it cannot read any update.
    """

    graph: str
    cohort: int
    degree: int
    threshold: int
    colluders: int
    dropouts: int
    min_sum: int
    failure_log2: float | None  # log2 of the privacy failure probability (None: 0, deterministic)
    abort_log2: float | None  # sparse: log2 P[abort with `dropouts` random dropouts]
    insecure: bool = False

    def line(self) -> str:
        if self.insecure:
            return (f"INSECURE test-only parameters ({self.graph} graph, t = {self.threshold} of {self.degree}): "
                    f"the server may learn individual updates")
        fail = "0 (deterministic)" if self.failure_log2 is None else f"<= 2^{math.ceil(self.failure_log2)}"
        live = ""
        if self.graph == "sparse":
            live = (" (random ones; abort probability 0)" if self.abort_log2 is None
                    else f" (random ones; abort probability <= 2^{math.ceil(self.abort_log2)})")
        return (f"secagg ({self.graph} graph, {self.cohort} hospitals, degree {self.degree}, t = {self.threshold}): "
                f"the server learns only sums of >= {self.min_sum} honest hospitals' updates unless it colludes with "
                f">= {self.colluders + 1} hospitals; tolerates {self.dropouts} dropout{'' if self.dropouts == 1 else 's'}{live}; "
                f"failure probability {fail}; a malicious hospital cannot read any update but can shift each "
                f"coordinate of the sum by any value mod 2^bits (not bounded by its clip; no range proofs) or abort "
                f"the round")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["line"] = self.line()
        return d


# --------------------------------------------------------------------------- the bounds
@lru_cache(maxsize=4096)
def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_tail(population: int, marked: int, draws: int, x: int) -> float:
    """``P[X >= x]`` for ``X ~ Hyp(population, marked, draws)`` (marked items among ``draws``
    drawn without replacement), computed in log space (relative error ~1e-12)."""
    if x <= 0:
        return 1.0
    marked = min(marked, population)
    draws = min(draws, population)
    hi = min(marked, draws)
    lo = max(x, draws - (population - marked))
    if lo > hi:
        return 0.0
    total = _log_comb(population, draws)
    return math.fsum(math.exp(_log_comb(marked, i) + _log_comb(population - marked, draws - i) - total)
                     for i in range(lo, hi + 1))


def _log2(p: float) -> float | None:
    return None if p <= 0.0 else math.log2(p)


@dataclass(frozen=True)
class Derived:
    graph: str  # "complete" or "sparse" (sparse may fall back to complete)
    degree: int
    threshold: int
    guarantee: Guarantee


def _complete(n: int, C: int, D: int | None, t: int | None, sigma: int) -> Derived:
    d = n - 1
    if C >= d:
        raise ParameterError(f"{C} colluders among {n} hospitals leave no honest neighbour: no threshold is safe")
    t_min = (d + C) // 2 + 1
    if t is None:
        t = t_min
    elif t < t_min:
        raise ParameterError(
            f"threshold {t} is unsafe against a malicious server colluding with {C} of {n} hospitals: the complete graph "
            f"needs 2t > n - 1 + C, i.e. t >= {t_min}"
            + (f" (or declare at most {2 * t - d - 1} colluders)" if 2 * t - d - 1 >= 0 else
               f" (t = {t} is unsafe even against a server without colluders)")
        )
    if t > d:
        raise ParameterError(f"threshold {t} exceeds the {d} neighbours each hospital has")
    if D is not None and t > d - D:
        best_c = d - 2 * D - 1
        raise ParameterError(
            f"cannot tolerate {D} dropouts and {C} colluders with {n} hospitals (complete graph needs "
            f"t >= {t_min} for privacy and t <= {d - D} for liveness); achievable: "
            + (f"{D} dropouts with at most {best_c} colluders, or " if best_c >= 0 else "")
            + f"{C} colluders with at most {max(d - t_min, 0)} dropouts"
        )
    g = Guarantee("complete", n, d, t, C, d - t, t - C + 1, None, None)
    return Derived("complete", d, t, g)


@lru_cache(maxsize=256)
def _sparse(n: int, C: int, D: int, sigma: int, eta: int, k_fixed: int | None, t_fixed: int | None) -> Derived:
    eps, eps_live = 2.0 ** -sigma, 2.0 ** -eta
    m = n - D  # the server must keep at least n - D hospitals in the round's list
    if m < 2:
        raise ParameterError(f"{D} dropouts of {n} hospitals leave fewer than 2 in the round")
    ks = [k_fixed] if k_fixed is not None else list(range(2, n - 2, 2))
    for k in ks:
        if k >= m - 1:
            break
        # smallest x with n * P[C_v >= x] <= eps: then 2t - k >= x keeps every neighbourhood safe
        x = next((x for x in range(0, min(C, k) + 2) if n * hypergeom_tail(m - 1, C, k, x) <= eps), None)
        if x is None:
            continue
        t = max(k // 2 + 1, -(-(k + x) // 2))
        if t_fixed is not None:
            if t_fixed < t:
                if k_fixed is not None:
                    raise ParameterError(
                        f"threshold {t_fixed} is unsafe for degree {k} against {C} colluders of {n} at 2^-{sigma}: "
                        f"need t >= {t}")
                continue
            t = t_fixed
        if t > k:
            continue
        p_fail = n * hypergeom_tail(m - 1, C, k, 2 * t - k)
        p_abort = n * hypergeom_tail(n - 1, D, k, k - t + 1)
        if p_abort > eps_live and k_fixed is None:
            continue
        c = next(c for c in range(0, min(C, k) + 1) if n * hypergeom_tail(m - 1, C, k, c + 1) <= eps)
        g = Guarantee("sparse", n, k, t, C, D, t - c + 1, _log2(min(p_fail, 1.0)), _log2(min(p_abort, 1.0)))
        return Derived("sparse", k, t, g)
    if k_fixed is not None:
        raise ParameterError(f"degree {k_fixed} cannot meet the threat model ({C} colluders, {D} dropouts of {n}, "
                             f"2^-{sigma}); leave degree unset to derive it")
    d = _complete(n, C, D, t_fixed, sigma)
    return d


def derive(graph: str, n: int, tm: ThreatModel, *, threshold: int | None = None,
           degree: int | None = None) -> Derived:
    """Graph degree and threshold for ``n`` hospitals against ``tm`` (see the module doc).

    ``threshold`` / ``degree`` given explicitly are checked instead of derived.
    Raises :class:`ParameterError` with what is achievable when the model cannot be met.
    """
    if n < 2:
        raise ParameterError("secure aggregation needs at least 2 hospitals")
    C = tm.max_colluders(n, graph)
    D = tm.max_dropouts(n, graph)
    if C >= n - 1:
        raise ParameterError(f"{C} colluders among {n} hospitals leave at most one honest hospital")
    if graph == "complete" or n <= 4:
        if degree is not None and degree != n - 1:
            raise ParameterError(f"the complete graph on {n} hospitals has degree {n - 1}, not {degree}")
        return _complete(n, C, D, threshold, tm.security_bits)
    if degree is not None and (not isinstance(degree, int) or degree < 2 or degree % 2):
        raise ParameterError(f"sparse degree must be an even integer >= 2, got {degree!r}")
    return _sparse(n, C, D if D is not None else 0, tm.security_bits, tm.correctness_bits, degree, threshold)


def insecure(graph: str, n: int, degree: int, threshold: int) -> Derived:
    """Parameters taken as given, for tests only: the guarantee says so."""
    if not (1 <= threshold <= degree):
        raise ParameterError(f"threshold must be in [1, {degree}], got {threshold}")
    return Derived(graph, degree, threshold, Guarantee(graph, n, degree, threshold, 0, degree - threshold, 0,
                                                       0.0, None, insecure=True))
