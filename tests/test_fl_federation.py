"""End-to-end federations: masked == plaintext up to quantisation, ε matches Opacus,
budgets are enforced, runs replay, dropouts are recovered, personalisation is charged."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from fedvault.fl.config import from_dict
from fedvault.fl.models import get_vector
from fedvault.fl.simulation import federate

BASE = {
    "seed": 3,
    "data": {"hospitals": 4},
    "training": {"rounds": 1, "batch_size": 16},
    "privacy": {"noise_multiplier": 1.0},
}


def cfg_with(**sections):
    d = copy.deepcopy(BASE)
    for k, v in sections.items():
        if isinstance(v, dict):
            sec = d.setdefault(k, {})
            sec.update(v)
            for key in [key for key, val in sec.items() if val is None]:
                del sec[key]  # None = leave the key out
        else:
            d[k] = v
    return from_dict(d)


def strip_timings(obj):
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if not k.endswith("seconds")}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def test_masked_sum_equals_plaintext_sum_up_to_the_quantisation_bound():
    """Real hospital updates of a DP round, summed by the plaintext and the masked aggregator."""
    from fedvault.fl.aggregation import PlaintextAggregator, SecAggAggregator

    cfg = cfg_with(aggregation={"mode": "masked"})
    run = federate(cfg, baseline=False)
    w = get_vector(run.model)
    inputs = {hs.name: hs.fit(w, 2).vector for hs in run.hospitals}
    weight_cap = 2 ** math.ceil(math.log2(max(hs.data.n for hs in run.hospitals) + 1))
    clip = weight_cap * cfg.aggregation.update_clip
    plain = PlaintextAggregator().aggregate(2, inputs, clip=clip).total
    masked_agg = SecAggAggregator(cfg, sorted(inputs))
    masked = masked_agg.aggregate(2, inputs, clip=clip).total
    from fedvault.secagg.encoding import FixedPointEncoder

    e = FixedPointEncoder(clip=clip, bits=32, max_summands=len(inputs)).error_bound(len(inputs))
    diff = np.abs(plain - masked)
    assert diff.max() <= e, (diff.max(), e)
    assert diff.max() > 0  # the masked path really went through fixed point
    assert masked[-1] == pytest.approx(sum(hs.data.n for hs in run.hospitals), abs=e)


def test_masked_and_plaintext_stay_close_over_rounds():
    ws = [get_vector(federate(cfg_with(aggregation={"mode": m}, training={"rounds": 3},
                                       privacy={"reproducible": True}), baseline=False).model)
          for m in ("plaintext", "masked")]
    # Quantisation errors of ~1e-8 per round are amplified by later local training; they stay tiny.
    assert np.abs(ws[0] - ws[1]).max() < 1e-4


def test_same_seed_same_history_only_with_reproducible_noise():
    cfg = cfg_with(training={"rounds": 2}, aggregation={"mode": "masked"}, privacy={"reproducible": True})
    a = federate(cfg).history
    b = federate(cfg).history
    assert strip_timings(a) == strip_timings(b)
    c = federate(cfg.replace(seed=4)).history
    assert strip_timings(a) != strip_timings(c)
    # the default: DP noise from the OS CSPRNG, so the public seed does not replay the model
    private = cfg_with(training={"rounds": 1}, aggregation={"mode": "plaintext"})
    w1, w2 = (get_vector(federate(private, baseline=False).model) for _ in range(2))
    assert not np.array_equal(w1, w2)


def test_epsilon_matches_dp_accounting_and_grows_with_participation():
    """ε is stated for replace-one (exact counts are released): dp_accounting's PLD over every
    event of the hospital — the DP feature statistics and one DP-SGD event per round."""
    import dp_accounting as dpa
    from dp_accounting import NeighboringRelation
    from dp_accounting.pld import PLDAccountant

    run = federate(cfg_with(training={"rounds": 3}, aggregation={"mode": "plaintext"}), baseline=False)
    h = run.history
    assert h["privacy_relation"]["record"] == "replace_one"
    for client, led in h["privacy"].items():
        assert led["relation"] == "replace_one" and [e["kind"] for e in led["events"]] == (
            ["gaussian_release"] + ["poisson_sampled_gaussian"] * 3)
        stats_ev, *sgd = led["events"]
        parts = [dpa.GaussianDpEvent(2 * stats_ev["std"] / stats_ev["sensitivity_replace_one"])]
        parts += [dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(e["sample_rate"],
                                                                    dpa.GaussianDpEvent(e["noise_multiplier"])),
                                          e["steps"]) for e in sgd]
        acc = PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-3)
        eps = acc.compose(dpa.ComposedDpEvent(parts)).get_epsilon(led["delta"])
        led = dict(led, events=sgd)
        assert led["epsilon"] == pytest.approx(eps, rel=1e-3)
        assert h["rounds"][-1]["epsilon"][client] == pytest.approx(eps, rel=1e-3)
        per_round = [r["epsilon"][client] for r in h["rounds"]]
        assert all(b > a for a, b in zip(per_round, per_round[1:]))
        # steps recorded are the steps taken: ceil(n/B) per epoch with q = 1/ceil(n/B)
        n = h["hospitals"][client]["records"]
        k = math.ceil(n / 16)
        assert all(e["steps"] == k and e["sample_rate"] == pytest.approx(1 / k) for e in led["events"])


def test_budget_refusal_is_recorded_and_the_study_stops_cleanly():
    cfg = cfg_with(
        training={"rounds": 20, "batch_size": 16},
        privacy={"noise_multiplier": 1.0, "budget_epsilon": 2.0},
        aggregation={"mode": "plaintext"},
    )
    h = federate(cfg, baseline=False).history
    for client, led in h["privacy"].items():
        assert led["epsilon"] <= 2.0
    refusing = [r for r in h["rounds"] if r["refused"]]
    assert refusing or "stopped" in h
    assert "stopped" in h and "min_clients" in h["stopped"]["reason"]
    for r in h["rounds"]:
        assert set(r["participants"]).isdisjoint(r["refused"])
    # every refusal is in the refusing hospital's own ledger as well
    from_rounds = {(c, r["round"]) for r in h["rounds"] for c in r["refused"]}
    from_rounds |= {(c, h["stopped"]["round"]) for c in h["stopped"].get("refused", {})}
    from_ledgers = {(c, x["round"]) for c, led in h["privacy"].items() for x in led["refused"]}
    assert from_rounds == from_ledgers and from_ledgers


def test_secagg_dropouts_are_recovered_in_a_federation():
    cfg = cfg_with(
        data={"hospitals": 6, "min_records": 30},
        training={"rounds": 3},
        aggregation={"mode": "secagg", "dropout": 0.15, "threshold": 3},
        threat_model={"colluders": 0},  # t = 3 of 5 neighbours is safe only without colluders
    )
    h = federate(cfg, baseline=False).history
    dropped_any = False
    for r in h["rounds"]:
        gone = {c for v in r["dropped"].values() for c in v}
        dropped_any |= bool(gone)
        assert set(r["participants"]).isdisjoint(gone - set(r["participants"]))
        assert len(r["participants"]) >= 3
    assert dropped_any, "the seeded dropout simulation should lose someone in 3 rounds"


def test_personalisation_is_charged_to_the_ledger_and_within_budget():
    cfg = cfg_with(
        training={"rounds": 2},
        privacy={"noise_multiplier": None, "target_epsilon": 3.0},
        personalization={"enabled": True, "epochs": 2},
        aggregation={"mode": "plaintext"},
    )
    h = federate(cfg, baseline=False).history
    for client, p in h["personalization"].items():
        assert "refused" not in p
        assert p["epsilon_after"] > p["epsilon_before"]
        assert p["epsilon_after"] <= 3.0 + 1e-9
        assert h["privacy"][client]["epsilon"] == pytest.approx(p["epsilon_after"])
        assert set(p["global"]) == set(p["personalized"]) == {"accuracy", "roc_auc", "loss"}
