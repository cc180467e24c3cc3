"""The validation framework: every problem at once, "did you mean", pluggable checks, preflight."""

from __future__ import annotations

import pytest

from fedvault.fl import config as C
from fedvault.fl import preflight as P
from fedvault.fl.errors import ConfigError


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        C.from_dict(raw)
    return e.value.problems


def test_all_problems_are_collected_with_suggestions():
    probs = problems_of({
        "data": {"datset": "x", "dataset": "breast-cancer", "rounds": 3},
        "training": {"rounds": "ten", "lr": -1.0, "strategy": "fedadm"},
        "privcy": {},
    })
    text = "\n".join(probs)
    assert len(probs) == 7, text
    assert "did you mean 'dataset'" in text
    assert "'rounds' in [data]; it belongs in [training]" in text
    assert "did you mean 'breast_cancer'" in text and "did you mean 'fedadam'" in text
    assert "did you mean 'privacy'" in text
    assert "training.rounds must be a whole number" in text and "training.lr = -1.0" in text


def test_a_single_problem_reads_as_one_line():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"training": {"lr": 0.0}})
    assert "\n" not in str(e.value) and str(e.value).startswith("training.lr")


def test_registered_config_check_runs_and_sections_may_still_raise(monkeypatch):
    def no_more_than_ten_rounds(cfg):
        if cfg.training.rounds > 10:
            yield "training.rounds: at most 10 here"

    monkeypatch.setattr(C, "CONFIG_CHECKS", C.CONFIG_CHECKS + [no_more_than_ten_rounds])
    probs = problems_of({"training": {"rounds": 11, "lr": 0.0}})
    assert "training.rounds: at most 10 here" in probs and any("training.lr" in p for p in probs)


def test_threshold_above_hospital_count_is_refused():
    probs = problems_of({"data": {"hospitals": 4}, "aggregation": {"mode": "secagg", "threshold": 5}})
    assert any("only 4 hospitals" in p for p in probs)


def test_audit_table_is_accepted():
    cfg = C.from_dict({"audit": {"canaries": 50}, "training": {"rounds": 2}})
    assert cfg.training.rounds == 2


def test_test_csv_means_no_withholding_by_default_and_zero_is_allowed():
    base = {"dataset": "csv", "csv": ["a.csv", "b.csv"], "label": "y", "test_csv": "t.csv"}
    assert C.from_dict({"data": base}).data.test_fraction == 0.0
    assert C.from_dict({"data": {**base, "test_fraction": 0.0}}).data.test_fraction == 0.0
    assert C.from_dict({"data": {**base, "test_fraction": 0.1}}).data.test_fraction == 0.1
    assert any("test_fraction" in p for p in problems_of({"data": {"test_fraction": 0.0}}))  # built-in: needs a test set


def test_preflight_check_registration_and_warnings(monkeypatch):
    calls = []

    def my_check(cfg, data):
        calls.append(len(data.hospitals))
        yield C.warning("just so you know")

    monkeypatch.setattr(P, "PREFLIGHT_CHECKS", P.PREFLIGHT_CHECKS + [my_check])
    cfg = C.from_dict({"data": {"hospitals": 3}, "privacy": {"enabled": False}})
    ready = P.prepare(cfg)
    assert calls == [3] and "just so you know" in ready.warnings


def test_ring_too_small_is_refused_before_training():
    cfg = C.from_dict({"data": {"hospitals": 3}, "privacy": {"enabled": False},
                       "aggregation": {"mode": "secagg", "bits": 16, "update_clip": 1000.0}})
    with pytest.raises(ConfigError, match="aggregation.bits = 16 is too small"):
        P.prepare(cfg)


def test_output_problems(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert P.output_problems(tmp_path / "ok" / "deeper" / "h.json") == []
    assert "is a directory" in P.output_problems(tmp_path)[0]
    assert "is a file" in P.output_problems(f / "h.json")[0]
    assert "is a file" in P.output_problems(f, kind="dir")[0]


def test_privacy_plan_checks_run_before_training():
    cfg = C.from_dict({"data": {"hospitals": 3}, "privacy": {"target_epsilon": 3.0, "delta": 0.05}})
    with pytest.raises(ConfigError, match="privacy.delta = 0.05 is not below 1/n"):
        P.prepare(cfg)
