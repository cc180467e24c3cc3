"""SecAgg parameters from a declared threat model, audited from the published bounds.

Claims (SECURITY.md SecAgg bullet; protocols/SPEC.md §1.1):
* complete graph: ``t = ⌊(n−1+C)/2⌋ + 1`` (i.e. ``2t > n − 1 + C``), refused unless
  ``t ≤ n − 1 − D``; default ``C = ⌊(n−1)/3⌋``; guarantee ``min_sum = t − C + 1``, failure 0;
* sparse graph: the smallest even ``k`` and threshold ``t`` with
  ``n·P[Hyp(n−D−1, C, k) ≥ 2t−k] ≤ 2^-σ`` and ``n·P[Hyp(n−1, D, k) ≥ k−t+1] ≤ 2^-η``; defaults
  5% colluders, 10% dropouts; example n = 1000, C = 50, D = 100 → k = 78, t = 52, ≤ 2^-44;
* an unsafe explicit threshold is refused; ``insecure_test_only`` says "INSECURE".

The auditor here recomputes the hypergeometric tails with scipy (not fedvault's own
``hypergeom_tail``) and searches the smallest parameters itself.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import hypergeom

from fedvault.protocols.secagg import SecAggParams, ThreatModel
from fedvault.secagg.errors import ParameterError


def tail(population: int, marked: int, draws: int, x: int) -> float:
    """P[X ≥ x], X ~ Hyp(population, marked, draws), by scipy."""
    if x <= 0:
        return 1.0
    return float(hypergeom(population, min(marked, population), min(draws, population)).sf(x - 1))


def params(n: int, tm: ThreatModel | None, graph: str, **kw) -> SecAggParams:
    return SecAggParams(b"claims", 1, tuple(range(1, n + 1)), graph=graph, dim=1, threat_model=tm, **kw)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 60), c=st.integers(0, 60), d=st.integers(0, 60))
def test_complete_graph_threshold_is_the_published_bound_or_refused(n, c, d):
    c, d = c % (n - 1), d % n
    t_min = (n - 1 + c) // 2 + 1
    feasible = t_min <= n - 1 - d
    try:
        p = params(n, ThreatModel(colluders=c, dropouts=d), "complete")
    except ParameterError as e:
        assert not feasible, (n, c, d, str(e))
        assert "achievable" in str(e) or "no threshold" in str(e), str(e)  # the error says what is achievable
        return
    assert feasible, (n, c, d)
    g = p.guarantee()
    assert 2 * p.t > n - 1 + c and p.t <= n - 1 - d  # privacy against C colluders, liveness with D dropouts
    assert p.t == t_min  # the smallest safe threshold (most dropout tolerance)
    assert (g.min_sum, g.colluders, g.failure_log2) == (p.t - c + 1, c, None)
    assert f"sums of >= {p.t - c + 1} honest" in g.line() and f"colludes with >= {c + 1}" in g.line()
    # An explicit threshold one below the bound is refused (never silently accepted).
    if t_min - 1 >= 1:
        with pytest.raises(ParameterError, match="unsafe"):
            params(n, ThreatModel(colluders=c, dropouts=d), "complete", threshold=t_min - 1)


@pytest.mark.parametrize("n", [4, 7, 10, 31])
def test_complete_graph_default_adversary_is_a_third(n):
    p = params(n, None, "complete")
    c = (n - 1) // 3
    assert p.guarantee().colluders == c and 2 * p.t > n - 1 + c


def _auditor_sparse(n: int, c: int, d: int, sigma: int, eta: int) -> tuple[int, int] | None:
    """The smallest even k < n−D−1 and then smallest t meeting both published bounds, or None."""
    eps, eps_live = 2.0 ** -sigma, 2.0 ** -eta
    for k in range(2, n - d - 1, 2):
        for t in range(k // 2 + 1, k + 1):
            if n * tail(n - d - 1, c, k, 2 * t - k) <= eps and n * tail(n - 1, d, k, k - t + 1) <= eps_live:
                return k, t
    return None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(20, 160), gamma=st.sampled_from([0.0, 0.02, 0.05, 0.1]),
       delta=st.sampled_from([0.0, 0.05, 0.1]), sigma=st.sampled_from([20, 40]))
def test_sparse_parameters_meet_the_hypergeometric_bound_recomputed_with_scipy(n, gamma, delta, sigma):
    tm = ThreatModel(colluder_fraction=gamma, dropout_fraction=delta, security_bits=sigma)
    c, d = math.floor(gamma * n), math.floor(delta * n)
    try:
        p = params(n, tm, "sparse")
    except ParameterError:
        assert _auditor_sparse(n, c, d, sigma, 20) is None
        assert (n - 1 + c) // 2 + 1 > n - 1 - d  # and the complete fallback is infeasible too
        return
    g = p.guarantee()
    want = _auditor_sparse(n, c, d, sigma, 20)
    if g.graph == "complete":  # no sparse degree works: the complete graph's deterministic bound
        assert want is None and 2 * p.t > n - 1 + c
        return
    k, t = g.degree, p.t
    assert k % 2 == 0 and k < n - d - 1
    fail = n * tail(n - d - 1, c, k, 2 * t - k)
    assert fail <= 2.0 ** -sigma, (n, c, d, k, t, fail)  # privacy: no neighbourhood holds 2t − k colluders
    assert n * tail(n - 1, d, k, k - t + 1) <= 2.0 ** -20  # liveness with D random dropouts
    assert (k, t) == want, ((k, t), want)  # the smallest degree, then the smallest threshold
    # The recorded failure probability is the scipy one (within rounding of log2).
    if g.failure_log2 is not None:
        assert g.failure_log2 == pytest.approx(math.log2(fail), abs=0.01)
    _assert_line_bounds(g.line(), fail, n * tail(n - 1, d, k, k - t + 1))
    # min_sum: the largest neighbourhood collusion not excluded at 2^-σ is c_v; t − c_v + 1 honest.
    c_v = next(x for x in range(0, min(c, k) + 1) if n * tail(n - d - 1, c, k, x + 1) <= 2.0 ** -sigma)
    assert g.min_sum == t - c_v + 1


def _assert_line_bounds(line: str, fail: float, abort: float) -> None:
    """The printed "failure probability <= 2^e" (and abort bound) must be true bounds: a line that
    rounds log2 down promises up to one bit more than the parameters give."""
    import re

    m = re.search(r"failure probability <= 2\^(-?\d+)", line)
    if m:
        assert fail <= 2.0 ** int(m.group(1)), (line, math.log2(fail))
    m = re.search(r"abort probability <= 2\^(-?\d+)", line)
    if m:
        assert abort <= 2.0 ** int(m.group(1)), (line, math.log2(abort))


def test_the_worked_example_of_the_spec():
    """SPEC §1.1: n = 1000, C = 50, D = 100 → k = 78, t = 52; the printed failure bound is true.

    (The computed failure probability is 2^-43.3: a line saying "<= 2^-44" overstated it.)"""
    p = params(1000, ThreatModel(colluders=50, dropouts=100), "sparse")
    g = p.guarantee()
    assert (g.degree, p.t) == (78, 52)
    fail = 1000 * tail(899, 50, 78, 2 * 52 - 78)
    assert fail <= 2.0 ** -43
    _assert_line_bounds(g.line(), fail, 1000 * tail(999, 100, 78, 78 - 52 + 1))
    assert "failure probability <= 2^-43" in g.line()


def test_sparse_defaults_are_five_and_ten_percent():
    g = params(100, None, "sparse").guarantee()
    assert (g.colluders, g.dropouts) == (5, 10)


def test_unsafe_sparse_threshold_is_refused_and_insecure_says_so():
    p = params(100, None, "sparse")
    with pytest.raises(ParameterError):
        params(100, None, "sparse", degree=p.guarantee().degree, threshold=p.guarantee().degree // 2)
    weak = params(100, None, "sparse", degree=p.guarantee().degree, threshold=p.guarantee().degree // 2,
                  insecure_test_only=True)
    assert weak.guarantee().line().startswith("INSECURE")


def test_the_spec_states_the_worked_examples_failure_bound_truly():
    import re
    from pathlib import Path

    spec = (Path(__file__).resolve().parent.parent / "protocols" / "SPEC.md").read_text()
    m = re.search(r"`n = 1000`.*?privacy failure `≤ 2\^-(\d+)", spec, re.S)
    assert m, "the worked example is no longer in SPEC §1.1"
    fail = 1000 * tail(899, 50, 78, 2 * 52 - 78)
    assert fail <= 2.0 ** -int(m.group(1)), (m.group(0)[-40:], math.log2(fail))
