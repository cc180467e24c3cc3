"""Target-ε calibration and independent verification with dp_accounting."""

from __future__ import annotations

import itertools

import pytest

from fedvault.dp.accounting import opacus_epsilon
from fedvault.dp.calibrate import noise_multiplier_for
from fedvault.dp.errors import AccountingError
from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger
from fedvault.dp.verify import rdp_epsilon, verify


@pytest.mark.parametrize(
    "target,q,steps,accountant",
    [(3.0, 1 / 18, 360, "rdp"), (1.0, 0.05, 200, "rdp"), (8.0, 0.25, 40, "rdp"), (2.0, 0.1, 30, "prv")],
)
def test_calibration_lands_just_below_target(target, q, steps, accountant):
    sigma = noise_multiplier_for(target, 1e-5, q, steps, accountant=accountant)

    def eps(s):
        return opacus_epsilon([PrivacyEvent(round=0, noise_multiplier=s, sample_rate=q, steps=steps)], 1e-5, accountant)

    assert eps(sigma) <= target
    rtol = 1e-3 if accountant == "rdp" else 2e-3
    assert eps(sigma * (1 - rtol)) > target  # no smaller σ (within rtol) would do
    assert eps(sigma) > target * 0.98


def test_calibrated_rounds_all_fit_the_budget():
    k, epochs, rounds, target = 10, 2, 6, 2.5
    sigma = noise_multiplier_for(target, 1e-5, 1 / k, rounds * epochs * k)
    led = PrivacyLedger("h", 1e-5, budget_epsilon=target)
    for r in range(rounds):
        led.record(PrivacyEvent(round=r, noise_multiplier=sigma, sample_rate=1 / k, steps=epochs * k))
    assert target * 0.98 < led.epsilon() <= target
    assert led.would_exceed(PrivacyEvent(round=rounds, noise_multiplier=sigma, sample_rate=1 / k, steps=1))


def test_calibration_rejects_bad_targets():
    with pytest.raises(AccountingError, match="unreachable"):
        noise_multiplier_for(1e-4, 1e-5, 1.0, 100_000)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(AccountingError):
            noise_multiplier_for(bad, 1e-5, 0.1, 10)


# -- verification --------------------------------------------------------------

GRID_SIGMA = (0.8, 2.5)
GRID_Q = (0.02, 0.3)
PATTERNS = ((True, False, False, True), (False, True, True, False, True))


def test_opacus_ledger_agrees_with_dp_accounting_rdp_within_1_percent():
    """Across σ, q, steps per round, rounds and participation patterns."""
    worst = 0.0
    for sigma, q, pattern in itertools.product(GRID_SIGMA, GRID_Q, PATTERNS):
        steps = max(1, round(1 / q)) * (1 + len(pattern) % 2)
        led = PrivacyLedger("h", 1e-5)
        for r, part in enumerate(pattern):
            if part:
                # heterogeneous rounds: σ changes from round 2 on, so not all events merge
                s = sigma if r < 2 else sigma * 1.1
                led.record(PrivacyEvent(round=r, noise_multiplier=s, sample_rate=q, steps=steps))
        ours, theirs = led.epsilon(), rdp_epsilon(led.events, 1e-5)
        worst = max(worst, abs(ours - theirs) / theirs)
    assert worst < 0.01


def _ledgers():
    out = []
    for i, (s, q, acc) in enumerate([(1.1, 0.05, "rdp"), (0.9, 0.1, "rdp"), (2.0, 0.05, "prv")]):
        led = PrivacyLedger(f"hospital_{i}", 1e-5, acc, budget_epsilon=20.0)
        for r in range(0, 4, i + 1):
            led.record(PrivacyEvent(round=r, noise_multiplier=s, sample_rate=q, steps=int(1 / q)))
        out.append(led)
    return out


def test_verify_accepts_honest_ledgers_in_every_input_form(tmp_path):
    from fedvault.dp.verify import _ledger_records

    leds = _ledgers()
    rep = verify(leds)
    assert rep.ok, str(rep)
    for c in rep.clients:
        assert c.pld_epsilon <= c.rdp_epsilon  # PLD is the tighter bound
    assert "all claims agree" in str(rep)
    # every accepted input form normalises to the same ledger records
    history = {"rounds": [], "privacy": {l.client: l.to_dict() for l in leds}}
    want = [l.to_dict() for l in leds]
    assert _ledger_records(history) == want == _ledger_records(history["privacy"])
    p = tmp_path / "led.json"
    leds[0].save(p)
    assert _ledger_records(p) == want[:1]
    assert verify(p).ok


def test_verify_flags_understated_or_inconsistent_claims():
    leds = _ledgers()
    privacy = {l.client: l.to_dict() for l in leds}
    privacy["hospital_0"]["epsilon"] *= 0.97  # 3 % understated
    privacy["hospital_2"]["epsilon"] *= 0.5  # prv claim far below PLD
    privacy["hospital_1"]["events"][0]["steps"] *= 3  # events edited, claim kept
    rep = verify(privacy)
    bad = {c.client for c in rep.clients if not c.ok}
    assert bad == {"hospital_0", "hospital_1", "hospital_2"}
    assert any("understates" in p for p in rep.problems)
    # a budget that the recomputed ε exceeds is reported
    d = leds[0].to_dict()
    d["budget_epsilon"] = d["epsilon"] / 2
    assert any("budget" in p for p in verify(d).problems)


def test_calibration_is_remembered_so_preflight_and_study_search_once(monkeypatch):
    """The preflight check and the study calibrate the same hospital: the second call must not search
    again, and must return exactly the first answer (including replace-one with a statistics release)."""
    from fedvault.dp import calibrate as C
    from fedvault.dp.events import GaussianRelease

    extra = (GaussianRelease(round=0, std=20.0, sensitivity_add_remove=1.0, sensitivity_replace_one=2.0),)
    args = dict(accountant="rdp", relation="replace_one", extra_events=extra)
    first = C.noise_multiplier_for(2.5, 1e-5, 0.05, 200, **args)
    calls = []
    real = C.calibrate_noise_multiplier
    monkeypatch.setattr(C, "calibrate_noise_multiplier", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert C.noise_multiplier_for(2.5, 1e-5, 0.05, 200, **args) == first and calls == []
    other = C.noise_multiplier_for(2.0, 1e-5, 0.05, 200, **args)  # a different plan is searched
    assert len(calls) == 1 and other > first
