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

# Audit power at reduced size: the breast-cancer model of the default config (logistic
# regression, 62 parameters: 31 null gradient directions), fewer rounds and hospitals, a
# claim of ε = 1. Gradient canaries: 31 directions x 8 rounds = 248 canaries.
POWER = """
seed = 7
[data]
dataset = "breast_cancer"
hospitals = 3
dirichlet_alpha = 1.0
min_records = 40
[model]
kind = "logreg"
[training]
rounds = 8
batch_size = 8
lr = 0.5
[privacy]
target_epsilon = 1.0
delta = 1e-5
[aggregation]
mode = "plaintext"
update_clip = 10.0
[audit]
confidence = 0.95
canary_clients = 0
shadow_models = 0
seed = {seed}
fault = "{fault}"
"""


def _write(tmp_path: Path, fault: str, seed: int = 0) -> Path:
    p = tmp_path / f"audit_{fault}_{seed}.toml"
    p.write_text(POWER.format(fault=fault, seed=seed), encoding="utf-8")
    return p


@pytest.mark.parametrize("fault, flagged", [("none", False), ("no_noise", True), ("no_clipping", True)])
def test_audit_power_reduced_size(tmp_path, fault, flagged):
    """Noise removed or clipping removed: flagged at 95%; the honest run is not (and could
    have been: its ceiling is above the claim, so "pass" is a real pass)."""
    cfg, settings = FA.load(_write(tmp_path, fault))
    rec = FA.record_audit(cfg, settings)
    assert rec.kind == "gradient" and rec.canaries.null == 31 and rec.canaries.m == 248
    assert rec.claimed == pytest.approx(1.0, abs=0.01)
    assert rec.ceiling > rec.claimed
    assert (rec.epsilon_lower > rec.claimed) is flagged, (rec.snj, rec.fdp)
    if flagged:  # both bounds see it
        assert rec.snj.epsilon_lower > rec.claimed and rec.fdp.epsilon_lower > rec.claimed
    else:
        assert rec.epsilon_lower < 0.5 * rec.claimed


def test_broken_configuration_is_caught_by_the_cli(tmp_path):
    """fedvault audit: exit 1, strict-JSON audit.json with the verdict, report and figures."""
    from fedvault.fl.cli import main

    out = tmp_path / "report"
    rc = main(["audit", str(_write(tmp_path, "none")), "--fault", "no_noise", "--output", str(out), "--quiet"])

    def no_constants(name):
        raise AssertionError(f"audit.json is not strict JSON: {name}")

    res = json.loads((out / "audit.json").read_text(), parse_constant=no_constants)
    rl = res["record_level"]
    assert res["verdict"] == "VIOLATION" and rc == FA.EXIT_VIOLATION
    assert rl["epsilon_lower"] > rl["claimed_epsilon"] and rl["ceiling"] >= rl["epsilon_lower"]
    assert rl["confidence"] == 0.95 and rl["steinke_nasr_jagielski"]["confidence"] == 0.975
    assert rl["f_dp"]["epsilon_lower"] > 0 and rl["canary_kind"] == "gradient"
    assert "not private" in res["not_private"] and "simulation-only" in res["simulation_only"]
    assert res["release"]["value"] == "audit_artefacts" and res["release"]["protection"] == "simulation_only"
    for f in ("report.md", "epsilon.png", "canary_scores.png", "roc.png"):
        assert (out / f).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "VIOLATION" in md and "ceiling" in md and "Mahloujifar" in md and "Simulation-only" in md
    mia = res["membership_inference"][0]
    assert 0 <= mia["auc"] <= 1 and mia["members"] > 0 and mia["nonmembers"] > 0


def test_input_canaries_still_work(tmp_path):
    cfg, settings = FA.load(_write(tmp_path, "none"))
    rec = FA.record_audit(cfg, settings.replace(canary_kind="input", canaries=30))
    assert rec.kind == "input" and rec.snj.canaries == 30 and len(rec.scores) == 30
    assert rec.epsilon_lower < rec.claimed
    assert rec.ceiling < rec.claimed * 2  # 30 input canaries are weak: the report says so


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


def test_gradient_directions_are_the_softmax_null_space():
    """For 2-class logistic regression on d features the d + 1 'same change to both rows'
    directions carry no record's gradient: exactly those are found."""
    import torch

    cfg = from_dict({"seed": 0, "data": {"dataset": "breast_cancer", "hospitals": 3},
                     "privacy": {"target_epsilon": 1.0}})
    fd = data_mod.load(cfg)
    torch.manual_seed(0)
    from fedvault.fl import models

    model = models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)
    mean, std = FA.pooled_standardisation(fd)
    X = np.concatenate([(h.X - mean) / std for h in fd.hospitals])
    y = np.concatenate([h.y for h in fd.hospitals])
    dirs, null = FA.gradient_directions(model, X, y)
    assert null == 31 and dirs.shape == (31, 62)
    assert np.allclose(dirs @ dirs.T, np.eye(31), atol=1e-8)
    W = dirs[:, :60].reshape(31, 2, 30)  # weight rows, then the two biases
    assert np.allclose(W[:, 0], W[:, 1], atol=1e-6) and np.allclose(dirs[:, 60], dirs[:, 61], atol=1e-6)


def test_canary_design_and_standardisation_recovery():
    cfg = from_dict({"seed": 0, "data": {"dataset": "breast_cancer", "hospitals": 3},
                     "privacy": {"enabled": False, "target_epsilon": 1.0}})
    fd = data_mod.load(cfg)
    settings = FA.AuditSettings(canaries=100, canary_kind="input").check()
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


def test_fault_and_gradient_canaries_need_private_training(tmp_path):
    p = tmp_path / "nodp.toml"
    p.write_text(
        '[data]\nhospitals = 2\n[training]\nrounds = 1\nbatch_size = 64\n[privacy]\nenabled = false\n'
        '[aggregation]\nmode = "plaintext"\n[audit]\nfault = "no_noise"\ncanary_clients = 0\nmembership = false\n',
        encoding="utf-8",
    )
    cfg, settings = FA.load(p)
    with pytest.raises(AuditError, match="privacy.enabled = false"):
        FA.record_audit(cfg, settings)
    with pytest.raises(AuditError, match="privacy.enabled = false"):
        FA.record_audit(cfg, settings.replace(canary_kind="input"))
    assert math.isfinite(settings.confidence)


def test_report_files_verdict_and_strict_json(tmp_path):
    """The report is written from a typed result; the verdict follows bound, ceiling and claim;
    NaN and infinity become null in audit.json; writing it never switches matplotlib's backend."""
    import matplotlib

    from fedvault.dp import audit as A

    backend = matplotlib.get_backend()

    rng = np.random.default_rng(0)
    inc = rng.random(60) < 0.5
    scores = inc * 10.0 + rng.standard_normal(60) * 0.01  # a perfect attack
    rec = A.audit_scores(scores, inc, delta=1e-5, confidence=0.975)
    fdp = A.audit_scores_fdp(scores, inc, delta=1e-5, confidence=0.975)
    assert rec.epsilon_lower > 0.5 and rec.ceiling >= rec.epsilon_lower and fdp.ceiling >= fdp.epsilon_lower
    cos_in, cos_out = np.array([0.30, 0.35, 0.40]), rng.normal(0, 0.05, 100)
    est = A.one_shot_estimate(cos_in, cos_out, delta=1e-5, dimension=100)
    ceiling = max(rec.ceiling, fdp.ceiling)
    for claimed, verdict in ((0.2, "VIOLATION"), (0.99 * ceiling, "pass"), (ceiling + 1, "inconclusive")):
        r = FA.AuditReport(
            config={"x": float("nan")}, settings={}, record=rec, record_fdp=fdp, record_scores=scores,
            canary_hospital="h", canary_slots=60, claimed_epsilon=claimed, delta=1e-5, client=est,
            client_cosines=(cos_in, cos_out), included=inc, accuracy=0.9, confidence=0.95,
        )
        if verdict == "pass":  # measured below the claim, ceiling above it
            r.record = rec.__class__(**{**rec.__dict__, "epsilon_lower": 0.0})
            r.record_fdp = fdp.__class__(**{**fdp.__dict__, "epsilon_lower": 0.0})
        out = tmp_path / verdict
        FA.write_report(r, out)
        text = (out / "audit.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        res = json.loads(text)
        assert res["verdict"] == verdict and res["config"]["x"] is None
        assert res["record_level"]["ceiling"] == pytest.approx(ceiling)
        assert verdict in (out / "report.md").read_text()
        assert (out / "epsilon.png").stat().st_size > 0 and (out / "canary_scores.png").stat().st_size > 0
        assert not (out / "roc.png").exists()  # no attacks were run
    with pytest.raises(ConfigError, match="is a file"):
        FA.write_report(r, out / "report.md")
    assert matplotlib.get_backend() == backend



def test_audit_shows_progress_over_its_rounds(tmp_path, monkeypatch, capsys):
    """fedvault audit draws a bar (stderr) counting the federation's rounds; --quiet hides it."""
    cfg, settings = FA.load(_write(tmp_path, "none"))
    settings = settings.replace(membership=False)
    monkeypatch.setenv("FEDVAULT_PROGRESS", "1")
    FA.run_audit(cfg, settings)
    err = capsys.readouterr().err
    assert "auditing" in err and f"1/{cfg.training.rounds} " in err  # the total is the planned rounds
    FA.run_audit(cfg, settings, quiet=True)
    assert "auditing" not in capsys.readouterr().err
