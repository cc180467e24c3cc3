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


def test_each_hospital_reads_only_its_own_csv_and_the_study_matches_the_simulation(tmp_path):
    """A CSV study: the consortium config lists each hospital's file by name, each node reads only its own
    (one of them from its node config ``fedvault-csv``, elsewhere on its disk), the coordinator only its test
    CSV (its records are shuffled with its own seeded generator, so the study is not bit-identical to
    ``fedvault run``'s, which shuffles every file with one generator)."""
    from fedvault.fl import config, simulation
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    rng = np.random.default_rng(0)

    def write(path, n):  # noqa: ANN001, ANN202
        X = rng.normal(size=(n, 3))
        y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "malignant", "benign")
        X[:, 0] += np.where(y == "malignant", 1.5, -1.5)  # well separated: a wrong class mapping shows
        path.write_text("a,b,c,diagnosis\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{v}\n" for r, v in zip(X, y)))

    for name, n in (("north", 80), ("south", 60), ("east", 70), ("test", 50)):
        write(tmp_path / f"{name}.csv", n)
    # south holds no malignant patient: with the declared data.classes it still takes part, and its schema
    # (what it tells the coordinator) is the study's, not its own class set
    south = (tmp_path / "south.csv").read_text().splitlines()
    (tmp_path / "south.csv").write_text("\n".join([south[0]] + [r for r in south[1:] if r.endswith("benign")]) + "\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "east.csv").rename(tmp_path / "elsewhere" / "east.csv")
    study = tmp_path / "study.toml"
    study.write_text(CONFIG.format(mode="secagg", graph="complete", standardise="public").replace(
        "hospitals = 4", 'dataset = "csv"\nlabel = "diagnosis"\ncsv = ["north.csv", "south.csv", "east.csv"]\n'
        'test_csv = "test.csv"\nclasses = ["benign", "malignant"]').replace(
        "standardise =", "feature_low = [-5.0, -5.0, -5.0]\nfeature_high = [5.0, 5.0, 5.0]\nstandardise ="))
    root = tmp_path / "nodes"
    names = ["east", "north", "south"]
    provision(root, names, dirs=[f"node-{k}" for k in range(3)])
    rc = {"fedvault-root": str(root)}
    nodes = {10 + k: {"partition-id": k} for k in range(3)}
    nodes[10]["fedvault-csv"] = str(tmp_path / "elsewhere" / "east.csv")  # east's file is on east's disk only
    grid = InProcessGrid(client_app(study), nodes, run_config=rc)
    hist = server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                       config=study)
    south_n = len((tmp_path / "south.csv").read_text().splitlines()) - 1
    assert 0 < south_n < 60
    assert {n: h["records"] for n, h in hist["hospitals"].items()} == {"north": 80, "south": south_n, "east": 70}
    assert [r["participants"] for r in hist["rounds"]] == [names, names]
    m = hist["final"]["metrics"]  # evaluated on the coordinator's own test CSV, classes mapped by name
    assert m["accuracy"] > 0.75 and hist["rounds"][-1]["metrics"] == m
    with pytest.raises(Exception, match="north.csv"):  # a hospital whose file is missing says which file
        (tmp_path / "north.csv").unlink()
        grid = InProcessGrid(client_app(study), {11: {"partition-id": 1}}, run_config=rc, run_id=2)
        from fedvault.fl.integrations.flower.app import load_party

        load_party(grid.contexts[11], study).party.public_info()
    undeclared = tmp_path / "undeclared.toml"  # without data.classes a deployed hospital refuses to map its file
    undeclared.write_text(study.read_text().replace('classes = ["benign", "malignant"]', ""))
    grid = InProcessGrid(client_app(undeclared), {12: {"partition-id": 2}}, run_config=rc, run_id=3)
    from fedvault.fl.integrations.flower.app import load_party

    with pytest.raises(Exception, match="data.classes"):
        load_party(grid.contexts[12], undeclared).party.public_info()


def test_a_fresh_clientapp_process_per_message(tmp_path):
    """As a SuperNode may do: every message reaches a new ClientApp in a process with no fedvault state; the
    node restores the session's role from its vault, its ledger from its directory and the study's
    standardisation and ledger offset from Flower's Context.state (secret randomness: nothing replayed)."""
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    cfg = tmp_path / "study.toml"
    cfg.write_text(CONFIG.format(mode="secagg", graph="complete", standardise="dp").replace(
        "reproducible = true", "reproducible = false"))
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(4)], dirs=[f"node-{k}" for k in range(4)])
    rc = {"fedvault-root": str(root)}
    apps = []

    def fresh(msg, ctx):  # noqa: ANN001, ANN202 - a new ClientApp (no cached party) for every message
        apps.append(client_app(cfg))
        return apps[-1](msg, ctx)

    grid = InProcessGrid(fresh, {10 + k: {"partition-id": k} for k in range(4)}, run_config=rc, fresh_process=True)
    hist = server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                       config=cfg)
    assert [r["participants"] for r in hist["rounds"]] == [[f"hospital_{k}" for k in range(4)]] * 2
    # standardised records in every process (fresh DP noise: 0.79-0.95 in 8 runs; unstandardised ~0.63)
    assert len(apps) > 40 and hist["final"]["metrics"]["accuracy"] > 0.7
    for k in range(4):
        ev = hist["privacy"][f"hospital_{k}"]["events"]
        assert [e["round"] for e in ev] == [0, 1, 2]  # statistics (round 0), then two DP-SGD rounds
        assert not list((root / f"node-{k}" / "vault").glob("*.state"))  # every session's role forgotten


def test_personalisation_metrics_are_answered_once_per_trained_study_even_across_processes(tmp_path):
    """Held-out metrics of personalisation are exact (not DP): a node answers them once per study it trained
    in. A server asking again — from a fresh ClientApp process, which has no memory of the first answer — or in
    a study the hospital never trained in is refused (the node directory keeps the marker)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord

    from fedvault.fl.integrations.flower.app import client_app
    from fedvault.fl.integrations.flower.transport import ACTION, MODEL, RECORD
    from fedvault.fl.integrations.flower import wire

    cfg, root, grid, hist = _study(tmp_path, standardise="public")
    cfg.write_text(cfg.read_text() + "\n[personalization]\nenabled = true\nepochs = 1\n")
    w = np.zeros(30 * 2 + 2)  # logreg on 30 features, 2 classes
    ctx = grid.contexts[10]

    def ask(run_state_ctx):  # noqa: ANN001, ANN202 - a personalise message to a fresh ClientApp
        rd = RecordDict({RECORD: ConfigRecord({"stage": "personalise", "round": 3}),
                         MODEL: ArrayRecord({"w": Array(np.asarray(w, dtype=np.float64))})})
        msg = wire.instruction(rd, 10, f"train.{ACTION}", "")
        return client_app(cfg)(msg, run_state_ctx)

    first = ask(ctx)
    assert not first.has_error(), first.error
    again = ask(ctx)  # a new process: nothing in memory
    assert again.has_error() and "already answered" in again.error.reason
    other = Context(run_id=99, node_id=10, node_config=ctx.node_config, state=RecordDict(),
                    run_config=ctx.run_config)
    never = ask(other)  # a new study in which this hospital never trained
    assert never.has_error() and "trained" in never.error.reason


def test_client_level_dp_and_client_sampling_through_the_app_match_the_simulation(tmp_path):
    """Client-level DP (each hospital adds its distributed discrete Gaussian share) and client sampling (the
    engine's coins) over the deployed app: the same study as the simulation, client-level ε from the nodes'
    own ledgers."""
    from fedvault.fl import config, simulation
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    study = tmp_path / "study.toml"
    study.write_text(CONFIG.format(mode="secagg", graph="complete", standardise="public").replace(
        "reproducible = true", "reproducible = true\nclient_noise_multiplier = 0.5").replace(
        "min_clients = 2", "min_clients = 2\nclient_fraction = 0.8"))
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(4)], dirs=[f"node-{k}" for k in range(4)])
    rc = {"fedvault-root": str(root)}
    grid = InProcessGrid(client_app(study), {10 + k: {"partition-id": k} for k in range(4)}, run_config=rc)
    hist = server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                       config=study)
    sim = simulation.federate(config.load(study), baseline=False).history
    assert [r["selected"] for r in hist["rounds"]] == [r["selected"] for r in sim["rounds"]]
    assert [r["model_sha256"] for r in hist["rounds"]] == [r["model_sha256"] for r in sim["rounds"]]
    assert hist["final"]["metrics"] == sim["final"]["metrics"]
    assert [r["client_epsilon"] for r in hist["rounds"]] == [r["client_epsilon"] for r in sim["rounds"]]
    assert hist["client_level"]["per_hospital"] == sim["client_level"]["per_hospital"]
    assert all(r["client_epsilon"] > 0 for r in hist["rounds"]) and any(len(r["selected"]) < 4 for r in hist["rounds"])


def test_secagg_plus_through_the_app_recovers_a_node_killed_mid_round(tmp_path):
    """SecAgg+ (sparse graph) at 8 hospitals through the app, one node vanishing when the server opens the
    masked-input stage: the round completes through dropout recovery, the node listed dropped, the seven
    others the contributors."""
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    study = tmp_path / "study.toml"
    study.write_text(CONFIG.format(mode="secagg", graph="sparse", standardise="public").replace(
        "hospitals = 4", "hospitals = 8").replace("rounds = 2", "rounds = 1")
        + "\n[threat_model]\ncolluders = 0\ndropouts = 1\n")
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(8)], dirs=[f"node-{k}" for k in range(8)])
    progress = tmp_path / "progress.txt"
    rc = {"fedvault-root": str(root), "stage-timeout": 2.0, "progress-file": str(progress)}

    def kill(grid, msgs):  # noqa: ANN001, ANN202 - hospital_2's node vanishes once masked_input opens
        if progress.exists() and "1 masked_input" in progress.read_text().split("\n"):
            grid.kill(12)

    grid = InProcessGrid(client_app(study), {10 + k: {"partition-id": k} for k in range(8)}, run_config=rc,
                         on_push=kill)
    hist = server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                       config=study)
    (r1,) = hist["rounds"]
    assert "aborted" not in r1 and r1["guarantee"]["graph"] == "sparse" and r1["guarantee"]["degree"] < 7
    assert r1["dropped"] == {"masked_input": ["hospital_2"]}
    assert r1["participants"] == [f"hospital_{k}" for k in (0, 1, 3, 4, 5, 6, 7)]


def test_a_hospital_with_another_copy_of_the_consortium_config_is_caught_before_anyone_trains(tmp_path):
    """Issue 14: a misconfiguration (here update_clip) is caught at enrolment: the coordinator compares every
    hospital's per-section config digests with its own and refuses to start, naming the hospital and the
    section; nobody trained or was charged. A hospital's own privacy budget may differ."""
    from fedvault.dp.ledger import PrivacyLedger
    from fedvault.fl.errors import FederationError
    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    text = CONFIG.format(mode="secagg", graph="complete", standardise="dp")
    study = tmp_path / "study.toml"
    study.write_text(text)
    other = tmp_path / "other.toml"
    other.write_text(text.replace('graph = "complete"', 'graph = "complete"\nupdate_clip = 0.5'))
    own_budget = tmp_path / "own_budget.toml"
    own_budget.write_text(text.replace("reproducible = true", "reproducible = true\nbudget_epsilon = 50.0"))
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(4)], dirs=[f"node-{k}" for k in range(4)])
    rc = {"fedvault-root": str(root)}
    nodes = {10 + k: {"partition-id": k} for k in range(4)}
    nodes[12]["fedvault-config"] = str(other)
    nodes[13]["fedvault-config"] = str(own_budget)
    grid = InProcessGrid(client_app(study), nodes, run_config=rc)
    with pytest.raises(FederationError, match=r"hospital_2: \[aggregation\]") as e:
        server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                    config=study)
    assert "hospital_3" not in str(e.value)  # its own budget is its own business
    for k in range(4):
        assert not (root / f"node-{k}" / "ledger.json").exists() or not PrivacyLedger.load(
            root / f"node-{k}" / "ledger.json").events
