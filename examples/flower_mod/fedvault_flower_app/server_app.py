"""ServerApp: ``SecureFedAvg`` instead of Flower's ``FedAvg``; everything else is Flower."""

from __future__ import annotations

import json
import time
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedvault.fl import models
from fedvault.fl.integrations.flower import Registry, SecAggConfig, SecureFedAvg, provision, wire
from fedvault.fl.metrics import evaluate

from . import task

torch.set_num_threads(1)
app = ServerApp()


def wait_for_nodes(grid: Grid, n: int, timeout: float = 120.0) -> list[int]:
    t0 = time.monotonic()
    while True:
        ids = list(grid.get_node_ids())
        if len(ids) >= n or time.monotonic() - t0 > timeout:
            return ids
        time.sleep(0.5)


def registry(grid: Grid, context: Context) -> tuple[Registry, int]:
    """The operator's roster; in a demo (no consortium given) a throwaway one for the simulated nodes."""
    rc = context.run_config
    if rc.get("fedvault-registry"):
        return Registry.load(Path(str(rc["fedvault-registry"]))), int(rc.get("min-clients", 3))
    if rc.get("fedvault-root"):
        return Registry.load(Path(str(rc["fedvault-root"])) / "registry.json"), int(rc.get("min-clients", 3))
    n = len(wait_for_nodes(grid, 2, timeout=60.0))
    root = task.demo_root(context.run_id)
    log(WARNING, "fedvault demo: no consortium given; enrolling %d simulated hospitals in %s (every key on this "
        "machine: a demo, not a deployment)", n, root)
    reg = provision(root, [f"hospital_{k}" for k in range(n)], dirs=[f"node-{k}" for k in range(n)])
    return reg, min(int(rc.get("min-clients", 3)), max(task.DEMO_MIN_COHORT, n))


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    cfg = task.config(rc)
    reg, min_clients = registry(grid, context)
    progress = str(rc.get("progress-file", ""))

    def on_stage(rnd: int, stage: str) -> None:
        if progress:
            with open(progress, "a", encoding="utf-8") as f:
                f.write(f"{rnd} {stage}\n")

    X_test, y_test = task.test_set(cfg)

    def central_eval(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        model = task.make_model(cfg)
        models.set_vector(model, wire.flatten(arrays))
        return MetricRecord(evaluate(model, X_test, y_test))

    nodes = wait_for_nodes(grid, min(int(rc.get("num-hospitals", 4)), len(reg.members)))
    secagg = SecAggConfig(
        clip=float(rc.get("max-records", 256)) * max(cfg.aggregation.update_clip, 1.0),
        graph=str(rc.get("graph", "complete")),
        stage_timeout=float(rc.get("stage-timeout", 60.0)), enrol_timeout=float(rc.get("enrol-timeout", 120.0)),
        train_timeout=float(rc.get("train-timeout", 90.0)), min_clients=min_clients,
        threat_model=cfg.threat_model.protocol(),
    )
    strategy = SecureFedAvg(reg, secagg, on_stage=on_stage, fraction_train=float(rc.get("fraction-train", 1.0)),
                            fraction_evaluate=float(rc.get("fraction-evaluate", 0.0)),
                            min_evaluate_nodes=min_clients, min_available_nodes=min_clients)
    initial = ArrayRecord(task.make_model(cfg).state_dict())
    rounds = int(rc.get("num-server-rounds", 2))
    result = strategy.start(grid, initial, num_rounds=rounds, timeout=float(rc.get("stage-timeout", 60.0)),
                            train_config=ConfigRecord({"lr": float(cfg.training.lr)}), evaluate_fn=central_eval)
    out = str(rc.get("result-file", ""))
    if out:
        Path(out).write_text(json.dumps({
            "nodes": len(nodes),
            "initial": wire.flatten(initial).tolist(),
            "rounds": strategy.history,
            "metrics": {str(k): dict(v) for k, v in result.evaluate_metrics_serverapp.items()},
            "federated_metrics": {str(k): dict(v) for k, v in result.evaluate_metrics_clientapp.items()},
        }, default=str), encoding="utf-8")
    done = [r for r in strategy.history if "aborted" not in r]
    log(INFO, "fedvault: %d of %d rounds completed through secure aggregation", len(done), rounds)
    if not done:  # Flower then records the run as failed
        raise RuntimeError(f"fedvault: every round aborted: {[r.get('aborted') for r in strategy.history]}")
