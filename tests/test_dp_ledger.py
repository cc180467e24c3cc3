"""Privacy ledger: ε = an independent Opacus replay, budgets, JSON, integrity checks."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedvault.dp.errors import AccountingError, BudgetExceeded, LedgerIntegrityError
from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger


def stepwise_opacus_eps(events, delta, accountant="rdp"):
    """Independent replay: one accountant.step() per DP-SGD step, as during training."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    for ev in events:
        for _ in range(ev.steps):
            acc.step(noise_multiplier=ev.noise_multiplier, sample_rate=ev.sample_rate)
    return acc.get_epsilon(delta=delta) if events else 0.0


def ev(r, sigma=1.1, q=0.05, steps=40):
    return PrivacyEvent(round=r, noise_multiplier=sigma, sample_rate=q, steps=steps)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_equals_stepwise_opacus_replay(accountant):
    events = [ev(0, 1.1, 0.05, 40), ev(2, 1.1, 0.05, 40), ev(3, 0.9, 0.1, 25), ev(7, 0.9, 0.1, 25)]
    led = PrivacyLedger("h", 1e-5, accountant)
    for e in events:
        led.record(e)
    assert led.epsilon() == pytest.approx(stepwise_opacus_eps(events, 1e-5, accountant), rel=1e-9)


def test_epsilon_grows_with_rounds_and_sat_out_rounds_cost_nothing():
    a = PrivacyLedger("a", 1e-5)
    b = PrivacyLedger("b", 1e-5)
    eps_a = [a.epsilon()]
    for r in range(4):
        a.record(ev(r))
        eps_a.append(a.epsilon())
    assert eps_a[0] == 0.0
    assert all(x < y for x, y in zip(eps_a, eps_a[1:]))
    for r in (0, 5, 6, 11):  # took part in 4 rounds out of 12
        b.record(ev(r))
    assert b.epsilon() == a.epsilon()


def test_record_refuses_over_budget_and_keeps_ledger_unchanged():
    led = PrivacyLedger("h", 1e-5, budget_epsilon=3.0)
    led.record(ev(0))
    before = led.epsilon()
    reason = led.would_exceed(ev(1))
    assert reason is not None and "budget" in reason and "round 1" in reason
    assert led.epsilon_if(ev(1)) > 3.0
    with pytest.raises(BudgetExceeded) as info:
        led.record(ev(1))
    assert info.value.round == 1 and info.value.client == "h"
    assert led.epsilon() == before and len(led.events) == 1
    assert led.remaining() == pytest.approx(3.0 - before)


def test_rounds_must_increase_and_events_validate():
    led = PrivacyLedger("h", 1e-5)
    led.record(ev(3))
    with pytest.raises(AccountingError):
        led.record(ev(3))
    for bad in (
        dict(round=-1, noise_multiplier=1.0, sample_rate=0.1, steps=1),
        dict(round=0, noise_multiplier=0.0, sample_rate=0.1, steps=1),
        dict(round=0, noise_multiplier=1.0, sample_rate=0.0, steps=1),
        dict(round=0, noise_multiplier=1.0, sample_rate=1.5, steps=1),
        dict(round=0, noise_multiplier=1.0, sample_rate=0.1, steps=0),
        dict(round=0, noise_multiplier=float("nan"), sample_rate=0.1, steps=1),
        dict(round=0, noise_multiplier=1.0, sample_rate=0.1, steps=1, sampling="shuffle"),
    ):
        with pytest.raises(AccountingError):
            PrivacyEvent(**bad)
    for bad_args in (("", 1e-5), ("h", 0.0), ("h", 1.0), ("h", 1e-5, "gdp"), ("h", 1e-5, "rdp", -1.0)):
        with pytest.raises(AccountingError):
            PrivacyLedger(*bad_args)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_json_round_trip(tmp_path, accountant):
    led = PrivacyLedger("hospital_0", 1e-5, accountant, budget_epsilon=8.0)
    for r in (0, 1, 4) if accountant == "rdp" else (0,):
        led.record(ev(r, q=0.05 + 0.01 * r))
    led.refuse(5, "too expensive")
    d = json.loads(json.dumps(led.to_dict()))
    assert set(d) >= {"epsilon", "delta", "accountant", "events"}
    assert d["events"][0] == {"kind": "poisson_sampled_gaussian", "level": "record", "round": 0,
                              "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 40, "sampling": "poisson",
                              "relation": "add_remove", "purpose": "dp-sgd"}
    assert d["relation"] == "add_remove" and d["epsilon_accountant"] == f"opacus-{accountant}"
    back = PrivacyLedger.from_dict(d)
    assert back == led and back.epsilon() == led.epsilon()
    p = tmp_path / "ledger.json"
    led.save(p)
    again = PrivacyLedger.load(p)
    assert again == led and again.refused == ({"round": 5, "reason": "too expensive"},)
    key = b"k" * 32
    led.save(p, key=key)
    assert PrivacyLedger.load(p, key=key) == led


def _saved(tmp_path, key=None):
    led = PrivacyLedger("h", 1e-5, budget_epsilon=10.0)
    for r in (0, 1, 2):
        led.record(ev(r))
    p = tmp_path / "ledger.json"
    led.save(p, key=key)
    return led, p


def test_corrupted_file_detected(tmp_path):
    _, p = _saved(tmp_path)
    raw = p.read_bytes()
    i = raw.index(b'"steps": 40')
    p.write_bytes(raw[:i] + b'"steps": 4 ' + raw[i + 11 :])  # steps 40 -> 4, digest untouched
    with pytest.raises(LedgerIntegrityError, match="digest"):
        PrivacyLedger.load(p)
    p.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(LedgerIntegrityError):
        PrivacyLedger.load(p)
    p.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(LedgerIntegrityError):
        PrivacyLedger.load(p)


def _rewrite(p, mutate, *, fix_digest, key=None):
    from fedvault.dp.ledger import _digest

    doc = json.loads(p.read_text())
    mutate(doc["ledger"])
    if fix_digest:
        doc["digest"] = _digest(doc["ledger"], key)
    p.write_text(json.dumps(doc))


def test_hand_edited_ledger_detected_even_with_recomputed_digest(tmp_path):
    _, p = _saved(tmp_path)
    # an editor who recomputes the plain SHA-256 but forgets that ε is recomputed from events
    _rewrite(p, lambda L: L["events"].pop(), fix_digest=True)
    with pytest.raises(LedgerIntegrityError, match="claims"):
        PrivacyLedger.load(p)
    for mutate in (
        lambda L: L.update(extra=1),                         # unknown key
        lambda L: L.pop("delta"),                            # missing key
        lambda L: L["events"][1].update(round=0),            # rounds not increasing
        lambda L: L["events"][0].update(steps=-3),           # invalid value
        lambda L: L["events"][0].update(note="x"),           # unknown event key
        lambda L: L.update(epsilon="0.1"),                   # wrong type
    ):
        _saved(tmp_path)
        _rewrite(p, mutate, fix_digest=True)
        with pytest.raises(LedgerIntegrityError):
            PrivacyLedger.load(p)


def test_keyed_digest_detects_consistent_forgery(tmp_path):
    key = b"hospital-secret-key-0123456789ab"
    led, p = _saved(tmp_path, key=key)

    def forge(L):  # drop a round and fix ε consistently: only the key can catch this
        L["events"].pop()
        L["epsilon"] = PrivacyLedger.from_dict(L, check_epsilon=False).epsilon()

    _rewrite(p, forge, fix_digest=True)  # plain SHA-256 recomputed, key unknown to the forger
    with pytest.raises(LedgerIntegrityError, match="digest"):
        PrivacyLedger.load(p, key=key)
    _saved(tmp_path, key=key)
    with pytest.raises(LedgerIntegrityError):
        PrivacyLedger.load(p, key=b"wrong" * 8)


def opacus_analysis_eps(sigma, q, delta):
    """ε(total steps) from Opacus' RDP analysis functions called directly (what
    RDPAccountant does for a single-entry history)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    orders = RDPAccountant.DEFAULT_ALPHAS
    one = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
    return lambda total_steps: analysis.get_privacy_spent(orders=orders, rdp=one * total_steps, delta=delta)[0]


@settings(max_examples=10, deadline=None)
@given(
    sigma=st.floats(0.6, 3.0),
    k=st.integers(2, 40),
    epochs=st.integers(1, 3),
    budget=st.floats(0.5, 12.0),
    pattern=st.lists(st.booleans(), min_size=1, max_size=15),
)
def test_ledger_budget_property(sigma, k, epochs, budget, pattern):
    """Refuses exactly the rounds whose ε would exceed the budget; final ε ≤ budget."""
    led = PrivacyLedger("h", 1e-5, budget_epsilon=budget)
    eps_after = opacus_analysis_eps(sigma, 1 / k, 1e-5)
    accepted = []
    for r, takes_part in enumerate(pattern):
        if not takes_part:
            continue
        e = PrivacyEvent(round=r, noise_multiplier=sigma, sample_rate=1 / k, steps=epochs * k)
        independent = eps_after((len(accepted) + 1) * epochs * k)
        if independent > budget:
            with pytest.raises(BudgetExceeded):
                led.record(e)
        else:
            led.record(e)
            accepted.append(e)
    assert list(led.events) == [dataclasses.replace(e, relation="add_remove") for e in accepted]
    assert led.epsilon() <= budget
    if accepted:
        assert led.epsilon() == eps_after(len(accepted) * epochs * k)
