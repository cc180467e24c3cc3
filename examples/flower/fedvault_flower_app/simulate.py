"""Run the app in Flower's simulation engine (Ray), one virtual SuperNode per hospital.

    python -m fedvault_flower_app.simulate --hospitals 4 --rounds 2 [--crash 3]

Provisions a throwaway consortium (registry + node-<k>/ directories with identity
keys and ledgers) and runs the ServerApp and ClientApp of this package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent.parent


def simulate(hospitals: int = 4, rounds: int = 2, root: str | Path | None = None,
             **overrides: Any) -> dict[str, Any]:
    """Run the federation; returns the server's history (the ``result-file`` JSON).

    ``overrides`` are run-config keys with ``_`` for ``-`` (e.g. ``simulate_crash="3"``).
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.app import Context, RecordDict
    from flwr.common.config import get_fused_config_from_dir
    import importlib

    rs = importlib.import_module("flwr.simulation.run_simulation")
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.supercore.telemetry import EventType
    from flwr.supercore.run import Run

    from fedvault.fl.integrations.flower import provision

    from .client_app import app as client_app
    from .server_app import app as server_app

    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedvault-flower-")
        root = tmp.name
    root = Path(root)
    provision(root, [f"hospital_{k}" for k in range(hospitals)], dirs=[f"node-{k}" for k in range(hospitals)])
    result = root / "result.json"
    cfg = {"num-hospitals": hospitals, "num-server-rounds": rounds, "fedvault-root": str(root),
           "result-file": str(result)}
    cfg.update({k.replace("_", "-"): v for k, v in overrides.items()})
    run = Run.create_empty(generate_rand_int_from_bytes(8))
    run.override_config = cfg
    run.primary_task_id = generate_rand_int_from_bytes(8)
    run.federation_id = rs.NOOP_FEDERATION_ID
    rs.TaskIdentity.task_id, rs.TaskIdentity.run_id, rs.TaskIdentity.node_id = 1, run.run_id, rs.SUPERLINK_NODE_ID
    fused = get_fused_config_from_dir(APP_DIR, cfg)
    ctx = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=fused)
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(APP_DIR) not in paths:  # Ray's workers import this package by name
        os.environ["PYTHONPATH"] = os.pathsep.join([str(APP_DIR)] + [p for p in paths if p])
    try:
        rs._run_simulation(
            num_supernodes=hospitals, exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app, server_app=server_app, app_dir=str(APP_DIR), is_app=True, run=run,
            server_app_context=ctx,
            backend_config={"client_resources": {"num_cpus": 1}},
        )
        if not result.exists():
            raise RuntimeError("the ServerApp did not finish (see the log above)")
        return json.loads(result.read_text(encoding="utf-8"))
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hospitals", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--crash", default="", help="client ids whose training crashes (dropout recovery demo)")
    ap.add_argument("--graph", default="complete", choices=["complete", "sparse"])
    a = ap.parse_args(argv)
    hist = simulate(a.hospitals, a.rounds, simulate_crash=a.crash, graph=a.graph, dp_seed=0)
    for r in hist["rounds"]:
        r.pop("total", None)
        print(json.dumps(r))
    print(json.dumps(hist["metrics"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
