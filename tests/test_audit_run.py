"""fedvault audit end to end: a broken DP configuration is caught, a correct one is not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedvault.dp.audit import AuditError
from fedvault.fl import audit as FA
from fedvault.fl import data as data_mod
from fedvault.fl.config import from_dict
from fedvault.fl.errors import ConfigError

# Digits + logistic regression: 64 features x 10 labels of canary slots; small and fast.
SMALL = """
seed = 3
[data]
dataset = "digits"
hospitals = 3
dirichlet_alpha = 5.0
min_records = 100
[model]
kind = "logreg"
[training]
rounds = 3
batch_size = 32
lr = 2.0
[privacy]
noise_multiplier = 4.0
delta = 1e-5
[aggregation]
mode = "plaintext"
[audit]
canaries = 300
confidence = 0.95
canary_clients = 0
shadow_models = 0
fault = "{fault}"
"""


def _write(tmp_path: Path, fault: str) -> Path:
    p = tmp_path / f"audit_{fault}.toml"
    p.write_text(SMALL.format(fault=fault), encoding="utf-8")
    return p


def test_broken_configuration_is_caught(tmp_path):
    """No noise while the ledger claims σ = 4: the lower bound exceeds the (small) claimed ε,
    the CLI exits 1 and writes the report."""
    from fedvault.fl.cli import main

    out = tmp_path / "report"
    rc = main(["audit", str(_write(tmp_path, "no_noise")), "--output", str(out), "--quiet"])
    res = json.loads((out / "audit.json").read_text())
    rl = res["record_level"]
    assert rl["claimed_epsilon"] < 1.0  # a small claim ...
    assert rl["epsilon_lower"] > rl["claimed_epsilon"]  # ... falsified at 95% confidence
    assert res["verdict"] == "VIOLATION" and rc == FA.EXIT_VIOLATION
    assert rl["confidence"] == 0.95 and rl["canaries"] == 300
    for f in ("report.md", "epsilon.png", "canary_scores.png", "roc.png"):
        assert (out / f).stat().st_size > 0
    assert "VIOLATION" in (out / "report.md").read_text()
    # membership inference ran (loss attack) and its metrics are probabilities
    mia = res["membership_inference"][0]
    assert 0 <= mia["auc"] <= 1 and mia["members"] > 0 and mia["nonmembers"] > 0


def test_correct_dp_run_stays_below_claim(tmp_path):
    cfg, settings = FA.load(_write(tmp_path, "none"))
    rec, scores, can, run, claimed = FA.record_audit(cfg, settings)
    assert claimed < 1.0
    assert rec.epsilon_lower < claimed
    assert rec.canaries == 300 and 100 < can.included.sum() < 200
    # the bound is computed from these scores and coins (not a constant)
    assert rec.correct <= rec.guesses and len(scores) == 300


def test_canary_clients_visible_without_client_level_dp():
    """Without client-level noise, inserted canary clients stand out of the null: large estimate."""
    cfg = from_dict({
        "seed": 1, "data": {"dataset": "breast_cancer", "hospitals": 3, "min_records": 40},
        "training": {"rounds": 2, "batch_size": 32}, "privacy": {"enabled": False, "target_epsilon": 1.0},
        "aggregation": {"mode": "plaintext"},
    })
    settings = FA.AuditSettings(canary_clients=6, unobserved_canaries=200, seed=2).check()
    fd = data_mod.load(cfg)
    est, claimed, (obs, un) = FA.client_audit(cfg, settings, fd)
    assert claimed is None
    assert obs.mean() > un.mean() + 2.5 * un.std()
    assert est.epsilon > 5


def test_canary_design_and_standardisation_recovery():
    cfg = from_dict({"seed": 0, "data": {"dataset": "breast_cancer", "hospitals": 3},
                     "privacy": {"enabled": False, "target_epsilon": 1.0}})
    fd = data_mod.load(cfg)
    settings = FA.AuditSettings(canaries=100).check()
    can = FA.design_canaries(fd, settings)
    # two classes: one canary per principal direction, orthogonal, norm s
    assert can.z.shape == (30, 30) and can.slots == 30
    G = can.z @ can.z.T
    assert np.allclose(G, settings.canary_norm**2 * np.eye(30), atol=1e-8)
    data_in = FA.insert_canaries(fd, can)
    host = next(h for h in data_in.hospitals if h.name == can.hospital)
    assert host.n == max(h.n for h in fd.hospitals) + can.included.sum()
    # the federation hands back the (mean, std) it standardised with; canaries map through it
    from fedvault.fl.simulation import federate

    pooled = np.concatenate([h.X for h in data_in.hospitals]).astype(np.float64)
    run = federate(cfg.replace(training={"rounds": 1}, aggregation={"mode": "plaintext"}), data=data_in, baseline=False)
    mean, std = run.standardisation
    assert np.allclose(mean, pooled.mean(0), rtol=1e-9)
    assert np.allclose(std, pooled.std(0), rtol=1e-6)


def test_audit_settings_are_validated(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[audit]\ncanaries = 2\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="audit.canaries"):
        FA.load(p)
    p.write_text('[audit]\nfault = "sometimes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="audit.fault"):
        FA.load(p)
    p.write_text('[audit]\ncanary = 10\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'canary'"):
        FA.load(p)


def test_fault_needs_private_training(tmp_path):
    p = tmp_path / "nodp.toml"
    p.write_text(
        '[data]\nhospitals = 2\n[training]\nrounds = 1\nbatch_size = 64\n[privacy]\nenabled = false\n'
        '[aggregation]\nmode = "plaintext"\n[audit]\nfault = "no_noise"\ncanary_clients = 0\nmembership = false\n',
        encoding="utf-8",
    )
    cfg, settings = FA.load(p)
    with pytest.raises(AuditError, match="privacy.enabled = false"):
        FA.record_audit(cfg, settings)
    assert math.isfinite(settings.confidence)


def test_report_files_and_verdict(tmp_path):
    """The report is written from a typed result; the verdict follows lower bound vs claim."""
    from fedvault.dp import audit as A

    rng = np.random.default_rng(0)
    inc = rng.random(60) < 0.5
    scores = inc * 10.0 + rng.standard_normal(60) * 0.01  # a perfect attack
    rec = A.audit_scores(scores, inc, delta=1e-5, confidence=0.95)
    assert rec.epsilon_lower > 0.5 and rec.ceiling >= rec.epsilon_lower
    cos_in, cos_out = np.array([0.30, 0.35, 0.40]), rng.normal(0, 0.05, 100)
    est = A.one_shot_estimate(cos_in, cos_out, delta=1e-5, dimension=100)
    for claimed, verdict in ((0.2, "VIOLATION"), (5.0, "pass")):
        r = FA.AuditReport(
            config={}, settings={}, record=rec, record_scores=scores, canary_hospital="h", canary_slots=60,
            claimed_epsilon=claimed, delta=1e-5, client=est, client_cosines=(cos_in, cos_out), included=inc,
            accuracy=0.9,
        )
        out = tmp_path / verdict
        FA.write_report(r, out)
        assert json.loads((out / "audit.json").read_text())["verdict"] == verdict
        assert (out / "epsilon.png").stat().st_size > 0 and (out / "canary_scores.png").stat().st_size > 0
        assert not (out / "roc.png").exists()  # no attacks were run
    with pytest.raises(ConfigError, match="is a file"):
        FA.write_report(r, out / "report.md")
