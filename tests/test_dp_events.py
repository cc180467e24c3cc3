"""One event vocabulary, one ledger per hospital, both relations, verify, refusals."""

from __future__ import annotations

import dataclasses
import json
import math

import dp_accounting as dpa
import pytest
from dp_accounting import NeighboringRelation as NR
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from fedvault.dp import events as E
from fedvault.dp.calibrate import noise_multiplier_for
from fedvault.dp.checks import check_delta, check_plan, suggest_delta
from fedvault.dp.errors import AccountingError, BudgetExceeded, LedgerIntegrityError
from fedvault.dp.ledger import PrivacyLedger
from fedvault.dp.verify import REPRODUCIBLE_REFUSAL, verify

DELTA = 1e-5


def stats_release(d=30, z=8.0):
    s = math.sqrt(2 * d)
    return E.GaussianRelease(round=0, std=z * s, sensitivity_add_remove=math.inf, sensitivity_replace_one=s,
                             purpose="feature_statistics")


def ddg(r, q=1.0):
    return E.DistributedDiscreteGaussian(round=r, sigma_client=300.0, threshold=4, clip_norm=0.5, scale=2.0**10,
                                         dimension=31, sample_rate=q, coord_error=0.5)


def independent_dpa(events, relation, method="pld"):
    """The test's own mapping of events to dp_accounting (one event per round, no merging)."""
    parts = []
    for e in events:
        if e.kind == "poisson_sampled_gaussian":
            parts.append(dpa.SelfComposedDpEvent(
                dpa.PoissonSampledDpEvent(e.sample_rate, dpa.GaussianDpEvent(e.noise_multiplier)), e.steps))
        elif e.kind == "gaussian_release":
            sens = e.sensitivity_add_remove if relation == "add_remove" else e.sensitivity_replace_one
            z = e.std / sens
            parts.append(dpa.GaussianDpEvent(2 * z if relation == "replace_one" else z))
    rel = NR.ADD_OR_REMOVE_ONE if relation == "add_remove" else NR.REPLACE_ONE
    acc = RdpAccountant(neighboring_relation=rel) if method == "rdp" else PLDAccountant(rel, value_discretization_interval=1e-3)
    return acc.compose(dpa.ComposedDpEvent(parts)).get_epsilon(DELTA)


def test_replace_one_gaussian_convention():
    """dp_accounting's REPLACE_ONE doubles a unit shift: Gaussian(2z) replace == Gaussian(z) add/remove."""
    a = PLDAccountant(NR.REPLACE_ONE, value_discretization_interval=1e-4).compose(dpa.GaussianDpEvent(6.0))
    b = PLDAccountant(NR.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4).compose(dpa.GaussianDpEvent(3.0))
    assert a.get_epsilon(DELTA) == pytest.approx(b.get_epsilon(DELTA), rel=1e-3)


def test_event_json_round_trip_and_version_1_events():
    evs = [E.PoissonSampledGaussian(1, 1.2, 0.1, 30, relation="replace_one"), stats_release(), ddg(2)]
    for ev in evs:
        d = json.loads(json.dumps(E.to_dict(ev), allow_nan=False))
        assert d["kind"] == ev.kind and d["level"] in ("record", "client")
        assert E.from_dict(d) == ev
    old = {"round": 3, "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 40, "sampling": "poisson"}
    assert E.from_dict(old) == E.PoissonSampledGaussian(3, 1.1, 0.05, 40)
    with pytest.raises(AccountingError, match="unknown event kind"):
        E.from_dict({"kind": "laplace", "round": 0})
    with pytest.raises(AccountingError, match="schema"):
        E.from_dict({**E.to_dict(ddg(1)), "extra": 1})


def test_one_ledger_holds_every_event_and_states_one_relation(tmp_path):
    led = PrivacyLedger("h", DELTA, relation="replace_one")
    led.record(stats_release())
    led.record(E.PoissonSampledGaussian(1, 3.0, 0.1, 30))
    led.record(ddg(1))
    led.record(E.PoissonSampledGaussian(2, 3.0, 0.1, 30))
    led.record(ddg(2))
    led.record(E.PoissonSampledGaussian(2, 3.0, 0.1, 20, purpose="personalisation"))
    assert [e.relation for e in led.events] == ["replace_one"] * 6
    assert led.rounds == [1, 2] and led.epsilon_accountant == "dp_accounting-pld"
    rec = [e for e in led.events if e.level == "record"]
    assert led.epsilon() == pytest.approx(independent_dpa(rec, "replace_one"), rel=1e-9)
    assert led.client_epsilon() > 0
    with pytest.raises(AccountingError, match="states"):
        led.record(E.PoissonSampledGaussian(3, 3.0, 0.1, 30, relation="add_remove"))
    with pytest.raises(AccountingError, match="at most once"):
        led.record(E.PoissonSampledGaussian(2, 3.0, 0.1, 30))
    p = tmp_path / "l.json"
    led.save(p)
    back = PrivacyLedger.load(p)
    assert back == led and back.to_dict() == led.to_dict()
    d = led.to_dict()
    d["client_epsilon"] *= 0.9
    with pytest.raises(LedgerIntegrityError, match="client_epsilon"):
        PrivacyLedger.from_dict(d)


def test_exact_count_release_is_not_private_under_add_remove():
    led = PrivacyLedger("h", DELTA, relation="add_remove")
    led.record(stats_release())
    assert led.epsilon() == math.inf
    led2 = PrivacyLedger("h", DELTA, relation="replace_one")
    led2.record(stats_release())
    assert 0 < led2.epsilon() < 1


def test_budget_applies_under_the_stated_relation():
    ev = E.PoissonSampledGaussian(1, 2.0, 0.1, 100)
    ar = PrivacyLedger("h", DELTA, budget_epsilon=3.0, relation="add_remove")
    ro = PrivacyLedger("h", DELTA, budget_epsilon=3.0, relation="replace_one")
    assert ar.epsilon_if(ev) < 3.0 < ro.epsilon_if(ev)
    ar.record(ev)
    with pytest.raises(BudgetExceeded, match="replace one record"):
        ro.record(ev)


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(20, 400),
    batch=st.integers(4, 64),
    sigma=st.floats(0.8, 6.0),
    rounds=st.integers(1, 8),
    relation=st.sampled_from(E.RELATIONS),
    with_stats=st.booleans(),
)
def test_claim_matches_dp_accounting_from_all_events(n, batch, sigma, rounds, relation, with_stats):
    """The ledger's ε equals dp_accounting's, recomputed from all of a hospital's events, within 1%."""
    k = math.ceil(n / batch)
    led = PrivacyLedger("h", DELTA, relation=relation)
    if with_stats:
        # add/remove: a count-free statistic (finite sensitivity under both relations)
        led.record(dataclasses.replace(stats_release(), sensitivity_add_remove=math.sqrt(60)))
    for r in range(1, rounds + 1):
        led.record(E.PoissonSampledGaussian(r, sigma, 1 / k, k))
    rec = list(led.events)
    claim = led.epsilon()
    if relation == "add_remove":  # claim by Opacus RDP; dp_accounting RDP and PLD recompute it
        assert claim == pytest.approx(independent_dpa(rec, relation, "rdp"), rel=0.01)
        assert independent_dpa(rec, relation, "pld") <= claim * 1.01 + 0.01
    else:  # claim by dp_accounting PLD (REPLACE_ONE); the test maps the events itself
        assert claim == pytest.approx(independent_dpa(rec, relation, "pld"), rel=0.01)
    rep = verify(led)
    assert rep.ok, rep.problems


def _history(ledgers, **extra):
    h = {"schema": 2, "config": {"privacy": {"reproducible": False}},
         "privacy": {led.client: led.to_dict() for led in ledgers},
         "releases": [{"value": "record_counts", "where": "", "protection": "exact_count", "event": None, "note": ""}],
         "rounds": [{"round": 1, "participants": ["h"]}],
         "randomness": {"client_sampling": "secret", "reproducible": False}}
    h.update(extra)
    return h


def test_verify_checks_the_relation_against_the_releases():
    ev = E.PoissonSampledGaussian(1, 2.0, 0.1, 100)
    ro = PrivacyLedger("h", DELTA, relation="replace_one")
    ro.record(ev)
    ar = PrivacyLedger("h", DELTA, relation="add_remove")
    ar.record(ev)
    ok = verify(_history([ro]))
    assert ok.ok, ok.problems
    c = ok.clients[0]
    assert c.relation == "replace_one" and c.replace_one_epsilon > c.pld_epsilon
    bad = verify(_history([ar]))
    assert not bad.ok
    assert any("exact counts" in p and f"ε={c.replace_one_epsilon:.4f}" in p for p in bad.problems)
    # the same add/remove ledger without count releases is fine
    assert verify(_history([ar], releases=[], rounds=[])).ok


def test_verify_reads_version_1_histories_and_flags_them():
    old = {"schema": 1, "config": {"privacy": {}}, "hospitals": {"h": {"records": 150, "holdout": 38}},
           "rounds": [{"round": 1, "participants": ["h"]}],
           "privacy": {"h": {"client": "h", "delta": DELTA, "accountant": "rdp", "budget_epsilon": None,
                             "epsilon": None, "refused": [],
                             "events": [{"round": 1, "noise_multiplier": 2.0, "sample_rate": 0.1, "steps": 100,
                                         "sampling": "poisson"}]}}}
    old["privacy"]["h"]["epsilon"] = PrivacyLedger.from_dict(old["privacy"]["h"], check_epsilon=False).epsilon()
    rep = verify(old)
    assert not rep.ok and rep.facts.source == "schema-1 history"
    assert any("add/remove" in p and "replace-one" in p for p in rep.problems)
    assert "exact counts released" in str(rep)


def test_verify_refuses_reproducible_runs():
    ro = PrivacyLedger("h", DELTA, relation="replace_one")
    ro.record(E.PoissonSampledGaussian(1, 2.0, 0.1, 100))
    h = _history([ro], config={"privacy": {"reproducible": True}})
    rep = verify(h)
    assert not rep.ok and rep.refusal == REPRODUCIBLE_REFUSAL
    assert str(rep).startswith("REFUSED: not private")


def test_verify_recomputes_client_level_and_refuses_void_credit():
    led = PrivacyLedger("h", DELTA, relation="replace_one")
    for r in range(1, 6):
        led.record(E.PoissonSampledGaussian(r, 3.0, 0.1, 10))
        led.record(ddg(r))
    rep = verify(_history([led]))
    assert rep.ok, rep.problems
    c = rep.clients[0]
    assert c.client_epsilon == pytest.approx(led.client_epsilon())
    # dp_accounting (ZCDp events, finer RDP orders) is an independent bound just below fedvault's
    assert c.client_epsilon_dpa <= c.client_epsilon <= 1.03 * c.client_epsilon_dpa
    tampered = _history([led])
    tampered["privacy"]["h"]["client_epsilon"] *= 0.5
    assert any("client-level" in p for p in verify(tampered).problems)
    credited = PrivacyLedger("h", DELTA, relation="replace_one")
    for r in range(1, 6):
        credited.record(ddg(r, q=0.5))
    rep = verify(_history([credited]))
    assert any("client-sampling credit" in p and "lists who took part" in p for p in rep.problems)
    assert verify(_history([credited], rounds=[])).ok
    no_coins = _history([credited], rounds=[], randomness={"client_sampling": "config-seeded"})
    assert any("secret" in p for p in verify(no_coins).problems)


def test_client_sample_rate_needs_secret_coins_and_hidden_participation():
    assert E.client_sample_rate(0.5, coins_secret=True, participation_hidden=True) == 0.5
    assert E.client_sample_rate(0.5, coins_secret=False, participation_hidden=True) == 1.0
    assert E.client_sample_rate(0.5, coins_secret=True, participation_hidden=False) == 1.0


def test_refusals_before_training():
    errs = check_delta(0.5, {"small": 25, "big": 150})
    assert len(errs) == 2 and any("0.04" in e and "small" in e for e in errs)
    assert all(f"delta = {suggest_delta(150):g}" in e for e in errs)
    assert check_delta(1e-5, {"a": 25, "b": 150}) == []
    common = dict(delta=1e-5, batch_size=8, epochs=1, rounds=30)
    assert check_plan({"a": 150, "b": 40}, target_epsilon=3.0, **common) == []
    unreachable = check_plan({"a": 150}, target_epsilon=0.01, **common)
    assert unreachable and "unreachable" in unreachable[0]
    over = check_plan({"a": 150}, noise_multiplier=1.0, budget_epsilon=3.0, **common)
    assert over and "only 1 round(s) fit" in over[0]
    stats_too_costly = check_plan({"a": 150}, target_epsilon=0.05, extra_events=[stats_release(z=1.0)], **common)
    assert stats_too_costly and "before training already cost" in stats_too_costly[0]
    assert "privacy.relation" in check_plan({"a": 150}, relation="swap", target_epsilon=3.0, **common)[0]


@pytest.mark.parametrize("extra", [(), (stats_release(),)])
def test_replace_one_calibration_lands_just_below_target(extra):
    q, steps = 1 / 19, 570
    sigma = noise_multiplier_for(3.0, DELTA, q, steps, relation="replace_one", extra_events=extra)

    def eps(s):
        return PrivacyLedger("h", DELTA, relation="replace_one")._eps(
            tuple(E.with_relation(e, "replace_one") for e in extra) + (E.PoissonSampledGaussian(1, s, q, steps, relation="replace_one"),))

    assert eps(sigma) <= 3.0 < eps(sigma * 0.99)
