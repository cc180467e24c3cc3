"""The library Flower app (fl.integrations.flower.app) runs the study a fedvault config describes on the one
round engine: through it, each hospital a ClientApp on its own node directory (enrolled key, installed roster,
persistent ledger) and the coordinator a ServerApp that never sees a record, the study gives the same aggregates
as ``fedvault run``'s simulation for the same contributions (reproducible mode: identical DP noise), and writes
the same history schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402

CONFIG = """
seed = 3
[data]
hospitals = 4
[model]
kind = "logreg"
[training]
rounds = 2
batch_size = 16
min_clients = 2
[privacy]
noise_multiplier = 1.0
reproducible = true
standardise = "{standardise}"
[aggregation]
mode = "{mode}"
graph = "{graph}"
"""


def _study(tmp_path, mode="secagg", graph="complete", standardise="dp", **rc):  # noqa: ANN001, ANN003, ANN202
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    cfg = tmp_path / "study.toml"
    cfg.write_text(CONFIG.format(mode=mode, graph=graph, standardise=standardise))
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(4)], dirs=[f"node-{k}" for k in range(4)])
    run_config = {"fedvault-root": str(root), "fedvault-history": str(tmp_path / "history.json"), **rc}
    grid = InProcessGrid(client_app(cfg), {10 + k: {"partition-id": k} for k in range(4)}, run_config=run_config)
    hist = server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config),
                       config=cfg)
    return cfg, root, grid, hist


@pytest.mark.parametrize("mode,graph,standardise", [("secagg", "complete", "dp"), ("plaintext", "complete", "public")])
def test_the_app_runs_the_same_study_as_the_simulation(tmp_path, mode, graph, standardise):
    from fedvault.fl import config, simulation

    cfg_path, root, grid, hist = _study(tmp_path, mode, graph, standardise)
    sim = simulation.federate(config.load(cfg_path), baseline=False)
    a, b = sim.history, hist
    assert [r["participants"] for r in b["rounds"]] == [r["participants"] for r in a["rounds"]] != [[]] * 2
    assert [r["model_sha256"] for r in b["rounds"]] == [r["model_sha256"] for r in a["rounds"]]  # same global models
    assert b["final"]["metrics"] == a["final"]["metrics"]
    assert [r["epsilon"] for r in b["rounds"]] == [r["epsilon"] for r in a["rounds"]]
    assert b["hospitals"] == a["hospitals"]  # records, held-out counts, noise multipliers: what hospitals release
    assert set(b["privacy"]) == set(a["privacy"]) and b["final"]["max_epsilon"] == a["final"]["max_epsilon"]
    assert json.loads((tmp_path / "history.json").read_text())["rounds"] == b["rounds"]
    # each hospital's ledger persisted in its own node directory, the same ε the history reports
    from fedvault.dp.ledger import PrivacyLedger

    for k in range(4):
        led = PrivacyLedger.load(root / f"node-{k}" / "ledger.json")
        assert led.epsilon() == pytest.approx(b["privacy"][f"hospital_{k}"]["epsilon"]) and len(led.events) >= 2


def test_a_second_study_continues_each_hospitals_ledger(tmp_path):
    """The node's ledger spans studies: a second run on the same node directories records its rounds after
    the first run's and the hospitals' ε grows."""
    from fedvault.fl.integrations.flower import InProcessGrid
    from fedvault.fl.integrations.flower.app import client_app, server_main

    cfg, root, _, first = _study(tmp_path, standardise="public")
    rc = {"fedvault-root": str(root)}
    grid = InProcessGrid(client_app(cfg), {10 + k: {"partition-id": k} for k in range(4)}, run_config=rc, run_id=2)
    second = server_main(grid, Context(run_id=2, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                         config=cfg)
    for name, led in second["privacy"].items():
        assert led["epsilon"] > first["privacy"][name]["epsilon"]
        assert [e["round"] for e in led["events"]] == [1, 2, 4, 5]  # study 2 starts after round 2 (its round 0 = 3)


def test_site_metrics_early_stop_personalisation_and_budget_refusals_through_the_app(tmp_path):
    """Per-site evaluation through secure aggregation, early stopping, personalisation (charged to the node's
    ledger) and budget refusals are the engine's, over the deployed app as in the simulation."""
    from fedvault.dp.ledger import PrivacyLedger

    extra = "\n[personalization]\nenabled = true\nepochs = 1\n"
    cfg_text = CONFIG.format(mode="secagg", graph="complete", standardise="public").replace(
        "reproducible = true", 'reproducible = true\nsite_metrics = "simulation"').replace(
        "rounds = 2", "rounds = 3\ntarget_accuracy = 0.5") + extra
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    cfg = tmp_path / "study.toml"
    cfg.write_text(cfg_text)
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(4)], dirs=[f"node-{k}" for k in range(4)])
    rc = {"fedvault-root": str(root)}
    grid = InProcessGrid(client_app(cfg), {10 + k: {"partition-id": k} for k in range(4)}, run_config=rc)
    hist = server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                       config=cfg)
    (r1,) = hist["rounds"]  # target accuracy reached in round 1: early stop
    assert "target accuracy" in hist["stopped"]["reason"]
    assert r1["site_metrics"]["records"] == sum(h["holdout"] for h in hist["hospitals"].values())
    assert set(hist["personalization"]) == {f"hospital_{k}" for k in range(4)}
    for k in range(4):  # the fine-tuning is charged to the node's own ledger
        led = PrivacyLedger.load(root / f"node-{k}" / "ledger.json")
        assert len(led.events) == 2 and hist["privacy"][f"hospital_{k}"]["epsilon"] == pytest.approx(led.epsilon())

    # A budget below what one more round costs: every hospital refuses, the study stops, nothing is charged.
    cfg.write_text(cfg_text.replace("reproducible = true", "reproducible = true\nbudget_epsilon = 0.01"))
    grid = InProcessGrid(client_app(cfg), {10 + k: {"partition-id": k} for k in range(4)}, run_config=rc, run_id=2)
    with pytest.raises(Exception, match="no round completed"):
        server_main(grid, Context(run_id=2, node_id=0, node_config={}, state=RecordDict(), run_config=rc), config=cfg)
    for k in range(4):
        led = PrivacyLedger.load(root / f"node-{k}" / "ledger.json")
        assert len(led.events) == 2 and led.refused
