"""End-of-run account, intervals and the pooled baseline."""

from __future__ import annotations

import numpy as np

from fedvault.fl.metrics import bootstrap_ci, metrics_from_proba, paired_difference_ci
from fedvault.fl.summary import RoundTable, summary


def _history():
    led = {"delta": 1e-5, "accountant": "rdp", "epsilon": 2.5, "budget_epsilon": 3.0,
           "events": [{"round": r, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 10} for r in (1, 2, 3, 4)]}
    return {
        "config": {"training": {"rounds": 4}, "aggregation": {"dropout": 0.2}, "privacy": {"delta": 1e-5}},
        "rounds": [
            {"round": 1, "participants": ["hospital_0", "hospital_1"], "metrics": {"accuracy": 0.8, "roc_auc": 0.9},
             "epsilon": {"hospital_0": 1.0}, "refused": {}, "dropped": {"share": ["hospital_2"]}, "seconds": {"total": 1.0}},
            {"round": 2, "participants": [], "aborted": "only 1 masked input arrived", "metrics": {"accuracy": 0.8},
             "epsilon": {"hospital_0": 1.5}, "refused": {"hospital_2": "budget"}, "dropped": {}, "seconds": {"total": 1.0}},
            {"round": 3, "participants": [], "aborted": "only 1 masked input arrived", "metrics": {"accuracy": 0.8},
             "epsilon": {"hospital_0": 2.0}, "refused": {}, "dropped": {}, "seconds": {"total": 1.0}},
        ],
        "personalization": {"hospital_0": {"epsilon_before": 2.0, "epsilon_after": 2.5}},
        "privacy": {"hospital_0": led},
        "client_level": {"mechanism": "ddg", "epsilon": 170.0, "epsilon_vs_server": 677.0, "delta": 1e-5},
        "final": {"metrics": {"accuracy": 0.8, "roc_auc": 0.9}, "max_epsilon": 2.5},
    }


def test_summary_accounts_for_every_round_and_every_epsilon():
    text = summary(_history())
    assert "4 planned, 3 run: 1 completed, 2 aborted" in text
    assert "most common reason (2x): only 1 masked input arrived" in text
    assert "hospital_2 declined 1 round" in text
    assert "hospital_2: share ×1" in text
    assert "for 3 DP-SGD rounds (2 of them in aborted rounds) + personalisation" in text
    assert "add/remove one patient record" in text
    assert "WARNING: client-level ε = 677 is too large to mean anything" in text


def test_round_table_names_hospitals_and_stages(capsys):
    t = RoundTable(total_rounds=4, quiet_bar=True)
    for r in _history()["rounds"]:
        t(r)
    t.close()
    out = capsys.readouterr().out
    assert "dropped: hospital_2 at share" in out and "ABORTED" in out and "refused (budget): hospital_2" in out


def test_bootstrap_intervals_cover_the_estimate_and_paired_difference_of_a_model_with_itself_is_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p1 = np.clip(y + rng.normal(0, 0.6, 120), 0.01, 0.99)
    prob = np.stack([1 - p1, p1], axis=1)
    m = metrics_from_proba(y, prob)
    ci = bootstrap_ci(y, prob)
    assert ci["accuracy"][0] <= m["accuracy"] <= ci["accuracy"][1]
    assert ci["roc_auc"][0] <= m["roc_auc"] <= ci["roc_auc"][1]
    assert 0.05 < ci["accuracy"][1] - ci["accuracy"][0] < 0.3  # ~120 patients: several points wide
    d = paired_difference_ci(y, prob, prob)
    assert d["difference"] == 0 and d["ci"] == [0.0, 0.0]


def test_pooled_baseline_converges_and_does_not_depend_on_the_seed():
    from fedvault.fl import baseline, data as data_mod, models
    from fedvault.fl.aggregation import PlaintextAggregator
    from fedvault.fl.config import from_dict
    from fedvault.fl.stats import federated_standardise

    cfg = from_dict({"seed": 4})
    fd = data_mod.load(cfg)
    federated_standardise(fd, PlaintextAggregator())

    def make():
        return models.build(cfg.model, fd.n_features, fd.n_classes)

    a = baseline.pooled_baseline("logreg", fd, make, seed=0)
    b = baseline.pooled_baseline("logreg", fd, make, seed=123)
    assert a.metrics == b.metrics and a.metrics["accuracy"] > 0.93
    assert "convergence" in a.method


def test_protocol_party_ids_are_shown_as_hospital_names():
    from fedvault.fl.summary import name_parties

    names = {1: "hospital_0", 2: "hospital_1", 10: "hospital_9"}
    assert name_parties("client 2 has only 3 live neighbours; threshold is 4", names) == \
        "hospital_1 has only 3 live neighbours; threshold is 4"
    assert name_parties("no input for clients [1, 10]", names) == "no input for hospital_0, hospital_9"
    assert name_parties("client 7 left", names) == "client 7 left"
