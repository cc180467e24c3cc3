"""ServerApp: ``SecureFedAvg`` instead of Flower's ``FedAvg``; everything else is Flower."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedvault.fl import models
from fedvault.fl.integrations.flower import Registry, SecAggConfig, SecureFedAvg, wire
from fedvault.fl.metrics import evaluate

from . import task

torch.set_num_threads(1)
app = ServerApp()


def registry_path(rc) -> Path:  # noqa: ANN001
    if rc.get("fedvault-registry"):
        return Path(str(rc["fedvault-registry"]))
    return Path(str(rc["fedvault-root"])) / "registry.json"


def wait_for_nodes(grid: Grid, n: int, timeout: float = 120.0) -> list[int]:
    t0 = time.monotonic()
    while True:
        ids = list(grid.get_node_ids())
        if len(ids) >= n or time.monotonic() - t0 > timeout:
            return ids
        time.sleep(0.5)


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    logging.getLogger("fedvault.flower").setLevel(logging.INFO)
    cfg = task.config(rc)
    registry = Registry.load(registry_path(rc))
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

    nodes = wait_for_nodes(grid, int(rc.get("num-hospitals", 4)))
    secagg = SecAggConfig(
        clip=float(rc.get("max-records", 256)) * cfg.aggregation.update_clip, graph=str(rc.get("graph", "complete")),
        stage_timeout=float(rc.get("stage-timeout", 60.0)), enrol_timeout=float(rc.get("enrol-timeout", 120.0)),
        train_timeout=float(rc.get("train-timeout", 90.0)),
        min_clients=int(rc.get("min-clients", 3)),
        threat_model=cfg.threat_model.protocol(),
    )
    strategy = SecureFedAvg(registry, secagg, on_stage=on_stage)
    initial = ArrayRecord(task.make_model(cfg).state_dict())
    result = strategy.start(grid, initial, num_rounds=int(rc.get("num-server-rounds", 2)), evaluate_fn=central_eval)
    out = str(rc.get("result-file", ""))
    if out:
        Path(out).write_text(json.dumps({
            "nodes": len(nodes),
            "initial": wire.flatten(initial).tolist(),
            "rounds": strategy.history,
            "metrics": {str(k): dict(v) for k, v in result.evaluate_metrics_serverapp.items()},
        }, default=str), encoding="utf-8")
