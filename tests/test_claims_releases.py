"""SECURITY.md release inventory: "global model, test metrics | ... | post-processing of the DP
aggregate (the test set is the server's own)"; README: every value that depends on patient data
is DP and charged, simulation-only (labelled), or not released.

CSV hospitals without a ``test_csv`` have their held-out records pooled at the server as the test set
(fl/data.py); the exact accuracy, ROC-AUC and loss on those patients, released every round, are then
not post-processing of anything DP: the inventory must label them simulation-only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _entry(history: dict) -> dict:
    (e,) = [r for r in history["releases"] if r["value"] == "global_model_and_test_metrics"]
    return e


def test_the_inventory_labels_metrics_on_pooled_held_out_records_simulation_only():
    from fedvault.dp.releases import run_inventory

    kw = dict(private=True, standardise="dp", site_metrics="off", client_level=False, personalization=False,
              baseline=False)
    own = {r.value: r for r in run_inventory(**kw)}["global_model_and_test_metrics"]
    pooled = {r.value: r for r in run_inventory(**kw, test_set="pooled_holdout")}["global_model_and_test_metrics"]
    assert own.protection == "dp_post" and pooled.protection == "simulation_only"


def _csv_study(tmp_path: Path, with_test: bool) -> dict:
    from fedvault.fl.config import load
    from fedvault.fl.simulation import federate

    shutil.copytree(ROOT / "examples" / "csv", tmp_path / "csv")
    text = (ROOT / "examples" / "csv_hospitals.toml").read_text()
    if not with_test:
        text = text.replace('test_csv = "csv/test.csv"', "test_fraction = 0.2")
    text = text.replace("rounds = 20", "rounds = 1")
    (tmp_path / "study.toml").write_text(text)
    return federate(load(tmp_path / "study.toml"), baseline=False).history


def test_a_csv_study_without_a_test_csv_labels_its_test_metrics_simulation_only(tmp_path):
    history = _csv_study(tmp_path, with_test=False)
    assert _entry(history)["protection"] == "simulation_only"


def test_a_csv_study_with_its_own_test_csv_keeps_dp_post(tmp_path):
    assert _entry(_csv_study(tmp_path, with_test=True))["protection"] == "dp_post"
