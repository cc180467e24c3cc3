"""fedvault.dp.audit statistics checked against independent computations of the papers' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

from fedvault.dp import audit
from fedvault.dp.audit import AuditError


# ------------------------------------------------------------------ Steinke-Nasr-Jagielski


def _p_value_by_hand(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """SNJ 2023 p-value from the formula, with exact binomial sums (math.comb)."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
    beta = sum(pmf[v:])
    alpha = 0.0
    for i in range(1, v + 1):
        alpha = max(alpha, sum(pmf[v - i : v]) / i)
    return min(1.0, beta + 2 * m * delta * alpha)


def _eps_by_grid(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """Largest ε on a 1e-3 grid whose hand-computed p-value is <= 1 - confidence."""
    best = 0.0
    for k in range(0, 8001):
        eps = k / 1000
        if _p_value_by_hand(m, r, v, eps, delta) <= 1 - confidence:
            best = eps
    return best


@pytest.mark.parametrize(
    "m,r,v,delta,confidence",
    [
        (100, 20, 20, 0.0, 0.95),
        (100, 20, 18, 1e-5, 0.95),
        (1000, 100, 80, 1e-5, 0.95),
        (1000, 50, 45, 1e-3, 0.99),
        (50, 10, 9, 1e-5, 0.9),
    ],
)
def test_epsilon_bound_matches_formula(m, r, v, delta, confidence):
    for eps in (0.0, 0.5, 1.7):
        assert audit.p_value(m, r, v, eps, delta) == pytest.approx(_p_value_by_hand(m, r, v, eps, delta), rel=1e-9, abs=1e-12)
    got = audit.epsilon_lower_bound(m, r, v, delta, confidence)
    want = _eps_by_grid(m, r, v, delta, confidence)
    assert want <= got < want + 1e-3 + 1e-6


def test_binomial_tail_with_scipy():
    # beta alone (delta = 0) equals scipy's binomial survival function
    q = 1 / (1 + math.exp(-1.2))
    assert audit.p_value(200, 40, 31, 1.2, 0.0) == pytest.approx(stats.binom.sf(30, 40, q), rel=1e-12)


@pytest.mark.parametrize("r", [5, 10, 30, 100])
def test_perfect_guesses_closed_form(r):
    # delta = 0, v = r: q^r = 1 - confidence  =>  eps = logit((1 - c)^(1/r))
    q = 0.05 ** (1 / r)
    assert audit.epsilon_lower_bound(1000, r, r, 0.0, 0.95) == pytest.approx(math.log(q / (1 - q)), abs=1e-5)


def test_no_information_gives_zero():
    assert audit.epsilon_lower_bound(100, 20, 10, 1e-5, 0.95) == 0.0
    assert audit.epsilon_lower_bound(100, 0, 0, 1e-5, 0.95) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.data())
def test_bound_monotone_in_correct_guesses(r, data):
    v = data.draw(st.integers(0, r - 1))
    lo = audit.epsilon_lower_bound(200, r, v, 1e-5, 0.95)
    hi = audit.epsilon_lower_bound(200, r, v + 1, 1e-5, 0.95)
    assert hi >= lo - 1e-6


def test_bound_is_valid_for_randomized_response():
    """An ε-DP guesser (randomized response) must not be caught more than 5% of the time."""
    rng = np.random.default_rng(0)
    eps_true, m, trials = 1.0, 200, 200
    p_correct = math.exp(eps_true) / (1 + math.exp(eps_true))
    exceed = 0
    for _ in range(trials):
        included = rng.random(m) < 0.5
        truth = np.where(included, 1.0, -1.0)
        # score = truth flipped with prob 1 - p, plus tie-breaking noise: an eps-DP view of each bit
        noisy = np.where(rng.random(m) < p_correct, truth, -truth) + 0.01 * rng.standard_normal(m)
        res = audit.audit_scores(noisy, included, delta=0.0, confidence=0.95)
        exceed += res.epsilon_lower > eps_true
    assert exceed / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


def test_perfect_scores_are_caught_and_bonferroni_applied():
    rng = np.random.default_rng(1)
    included = rng.random(100) < 0.5
    res = audit.audit_scores(included.astype(float), included, delta=1e-5, confidence=0.95, candidates=[(10, 10)])
    assert res.correct == 20 and res.guesses == 20
    assert res.epsilon_lower == pytest.approx(audit.epsilon_lower_bound(100, 20, 20, 1e-5, 0.95), abs=1e-6)
    res2 = audit.audit_scores(included.astype(float), included, delta=1e-5, confidence=0.95, candidates=[(10, 10), (5, 5)])
    # two candidates: each tested at 2.5%
    assert res2.epsilon_lower == pytest.approx(audit.epsilon_lower_bound(100, 20, 20, 1e-5, 0.975), abs=1e-6)


def test_bad_inputs():
    with pytest.raises(AuditError):
        audit.p_value(10, 5, 6, 1.0, 1e-5)
    with pytest.raises(AuditError):
        audit.epsilon_lower_bound(10, 5, 5, 1e-5, 1.5)
    with pytest.raises(AuditError):
        audit.audit_scores([1.0, float("nan")], [True, False], delta=1e-5)


# ------------------------------------------------------------------ Andrew et al.


def _analytic_gaussian_delta(mu: float, eps: float) -> float:
    """Balle & Wang 2018: delta(eps) of the Gaussian mechanism with sensitivity/sigma = mu."""
    return stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu)


@pytest.mark.parametrize("mu,delta", [(0.5, 1e-5), (1.0, 1e-5), (2.0, 1e-3), (4.0, 1e-6)])
def test_equal_variance_matches_analytic_gaussian(mu, delta):
    eps = audit.epsilon_between_gaussians(0.0, 0.3, 0.3 * mu, 0.3, delta)
    assert _analytic_gaussian_delta(mu, eps) == pytest.approx(delta, rel=1e-3)


def test_hockey_stick_by_quadrature():
    x = np.linspace(-12, 12, 400_001)
    p = stats.norm.pdf(x, 0.0, 1.0)
    q = stats.norm.pdf(x, 0.7, 1.6)
    for eps in (0.0, 0.5, 2.0):
        want = np.trapezoid(np.maximum(p - math.exp(eps) * q, 0), x)
        assert audit.hockey_stick(0.0, 1.0, 0.7, 1.6, eps) == pytest.approx(want, abs=1e-6)
        want_rev = np.trapezoid(np.maximum(q - math.exp(eps) * p, 0), x)
        assert audit.hockey_stick(0.7, 1.6, 0.0, 1.0, eps) == pytest.approx(want_rev, abs=1e-6)


def test_one_shot_recovers_gaussian_mechanism():
    """Canary cosines from a simulated Gaussian mechanism give back its ε."""
    rng = np.random.default_rng(3)
    d, n_obs, n_un = 20_000, 2000, 2000
    # final delta = sum of inserted canaries (norm 1 each) + N(0, s^2 I); s chosen so mu = 1
    s = 1 / 1.0 * 1.0
    # cos(delta, c_i) ~ (1 + N(0, s^2)) / ||delta||, null ~ N(0, s^2) / ||delta||: ratio mu = 1/s
    norm = math.sqrt(d) * s
    obs = (1 + s * rng.standard_normal(n_obs)) / norm
    un = s * rng.standard_normal(n_un) / norm
    est = audit.one_shot_estimate(obs, un, delta=1e-5, dimension=d)
    truth = audit.epsilon_between_gaussians(0, 1, 1, 1, 1e-5)
    assert abs(est.epsilon - truth) < 0.25 * truth
    theo = audit.one_shot_estimate(obs, None, delta=1e-5, dimension=d, null="theoretical")
    assert theo.sigma0 == pytest.approx(1 / math.sqrt(d))


def test_random_directions_and_cosines():
    rng = np.random.default_rng(0)
    D = audit.random_directions(rng, 50, 30)
    assert np.allclose(np.linalg.norm(D, axis=1), 1)
    assert audit.cosines(D[3] * 5, D)[3] == pytest.approx(1.0)
    assert np.all(audit.cosines(np.zeros(30), D) == 0)


# ------------------------------------------------------------------ membership inference


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 40))
def test_auc_matches_sklearn(seed, n_in, n_out):
    rng = np.random.default_rng(seed)
    a = np.round(rng.standard_normal(n_in) + 0.5, 1)  # rounding creates ties
    b = np.round(rng.standard_normal(n_out), 1)
    want = roc_auc_score(np.r_[np.ones(n_in), np.zeros(n_out)], np.r_[a, b])
    assert audit.auc(a, b) == pytest.approx(want, abs=1e-12)
    fpr, tpr, _ = audit.roc(a, b)
    assert np.trapezoid(tpr, fpr) == pytest.approx(want, abs=1e-12)


def test_tpr_at_low_fpr_by_hand():
    members = np.array([10, 9, 8, -1, -2])
    nonmembers = np.array([9.5] + [0.0] * 99)
    res = audit.evaluate_attack("t", members, nonmembers)
    # FPR <= 1%: threshold 9.5 flags 1 non-member (1%) and member 10 -> TPR 0.2 at that point;
    # threshold 8 flags 3 members and still 1 non-member -> TPR 0.6
    assert res.tpr_at_1pct_fpr == pytest.approx(0.6)
    # FPR <= 0.1%: only threshold 10 (no non-member) -> TPR 0.2
    assert res.tpr_at_01pct_fpr == pytest.approx(0.2)


def test_lira_beats_loss_when_difficulty_varies():
    """Per-example difficulty hides membership from a global loss threshold; LiRA calibrates it."""
    rng = np.random.default_rng(5)
    n, K = 400, 16
    difficulty = rng.normal(0, 3, n)  # per-record baseline confidence
    member = rng.random(n) < 0.5
    in_mask = rng.random((n, K)) < 0.5
    shadow = difficulty[:, None] + 1.0 * in_mask + 0.3 * rng.standard_normal((n, K))
    target = difficulty + 1.0 * member + 0.3 * rng.standard_normal(n)
    lira = audit.lira_scores(target, shadow, in_mask)
    a_lira = audit.auc(lira[member], lira[~member])
    a_raw = audit.auc(target[member], target[~member])
    assert a_lira > 0.95 and a_raw < 0.7


def test_logit_confidence_stable():
    z = np.array([[1000.0, 0.0], [0.0, 0.0], [-5.0, 5.0]])
    y = np.array([0, 1, 0])
    phi = audit.logit_confidence(z, y)
    assert phi == pytest.approx([1000.0, 0.0, -10.0])
    assert audit.cross_entropy(z, y)[1] == pytest.approx(math.log(2))


# --------------------------------------------------------------------------- f-DP one-run bound


def test_fdp_bound_is_monotone_and_matches_snj_scale():
    from fedvault.dp.audit import fdp

    # more correct guesses -> larger bound; perfect guesses: close to (at least) SNJ's
    b = [fdp.epsilon_lower_bound(200, 60, v, 1e-5, 0.95) for v in (40, 50, 55, 60)]
    assert b == sorted(b) and b[0] < b[-1]
    for m, r in ((200, 60), (1000, 100)):
        f = fdp.epsilon_lower_bound(m, r, r, 1e-5, 0.95)
        s = audit.epsilon_lower_bound(m, r, r, 1e-5, 0.95)
        assert s - 0.05 <= f <= s + 0.5
    # rejection is monotone in the hypothesis: weaker privacy is never rejected when stronger is not
    inv = [fdp.rejects(fdp.epsdelta_inverse_blowup(e, 1e-5), 200, 60, 55, 0.95) for e in (0.5, 1, 2, 4, 8)]
    assert inv == sorted(inv, reverse=True)
    assert fdp.epsilon_lower_bound(200, 60, 30, 1e-5, 0.95) == 0.0  # chance level rejects nothing


def test_gdp_epsilon_inverts_the_gdp_privacy_profile():
    from fedvault.dp.audit import fdp

    for mu in (0.5, 1.0, 2.0):
        e = fdp.gdp_epsilon(mu, 1e-5)
        d = stats.norm.cdf(-e / mu + mu / 2) - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2)
        assert d == pytest.approx(1e-5, rel=1e-3)
    assert fdp.gdp_epsilon(0.0, 1e-5) == 0.0


def test_fdp_bound_is_valid_for_randomized_response():
    """Each canary's guess is right with probability e^ε0/(1+e^ε0) (ε0-DP randomized response,
    guessing on every canary): the 95% lower bound exceeds ε0 in at most ~5% of trials."""
    from fedvault.dp.audit import fdp

    eps0, m, trials = 1.0, 100, 200
    rng = np.random.default_rng(1)
    p = math.exp(eps0) / (1 + math.exp(eps0))
    over = 0
    for _ in range(trials):
        v = int(rng.binomial(m, p))
        over += fdp.epsilon_lower_bound(m, m, v, 0.0, 0.95, tol=1e-3) > eps0
    assert over <= 0.05 * trials + 3 * math.sqrt(0.05 * 0.95 * trials)


def test_fdp_audit_scores_uses_candidates_and_reports_ceiling():
    rng = np.random.default_rng(0)
    inc = rng.random(400) < 0.5
    scores = np.where(inc & (rng.random(400) < 0.6), 1.0, 0.0)  # detectable INs score 1, the rest 0
    cands = [(60, 0), (100, 0)]
    res = audit.audit_scores_fdp(scores, inc, delta=1e-5, confidence=0.95, candidates=cands, max_guesses=110)
    assert res.candidates == 2 and res.correct == res.guesses == 100 and res.epsilon_lower > 1
    assert res.ceiling == pytest.approx(audit.audit_scores_fdp(scores, inc, delta=1e-5, candidates=[(100, 0)] * 2,
                                                                max_guesses=110).ceiling, rel=1e-6)
    assert res.mu_lower > 0 and res.gdp_epsilon > 0
    with pytest.raises(AuditError):
        audit.audit_scores_fdp([1.0, float("nan")], [True, False], delta=1e-5)
