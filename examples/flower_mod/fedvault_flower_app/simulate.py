"""Run the app in this process, one node per hospital, through fedvault's InProcessGrid (no Ray).

    python -m fedvault_flower_app.simulate --hospitals 4 --rounds 2 [--crash 3]

Provisions a throwaway consortium (each hospital enrolled with its own key, roster
built from the public keys, node-<k>/ directories with ledgers) and runs this
package's ServerApp and ClientApp unchanged.  ``flwr run .`` runs the same two apps
in Flower's simulation runtime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

from flwr.app import Context, Message, RecordDict

APP_DIR = Path(__file__).resolve().parent.parent


def run_config(**overrides: Any) -> dict[str, Any]:
    """The app's run config (``[tool.flwr.app.config]`` of its pyproject) with ``overrides`` applied."""
    with open(APP_DIR / "pyproject.toml", "rb") as f:
        cfg = dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    cfg.update(overrides)
    return cfg


def simulate(hospitals: int = 4, rounds: int = 2, root: str | Path | None = None,
             on_push: Callable[[Any, list[Message]], None] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the federation; returns the server's history (the ``result-file`` JSON).

    ``overrides`` are run-config keys with ``_`` for ``-`` (e.g. ``simulate_crash="3"``), except
    ``dp_seed``, ``target_epsilon`` and ``budget_epsilon``: hospital settings, put in every node's
    own config (``fedvault-dp-seed`` ...), never in the server's run config;
    ``on_push(grid, messages)`` sees every push (tests kill nodes with it).
    """
    from fedvault.fl.integrations.flower import InProcessGrid, provision

    from .client_app import app as client_app
    from .server_app import app as server_app

    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedvault-flower-")
        root = tmp.name
    root = Path(root)
    try:
        provision(root, [f"hospital_{k}" for k in range(hospitals)], dirs=[f"node-{k}" for k in range(hospitals)])
        result = root / "result.json"
        rc = run_config(**{"num-hospitals": hospitals, "num-server-rounds": rounds, "fedvault-root": str(root),
                           "result-file": str(result)})
        own = {f"fedvault-{k.replace('_', '-')}": overrides.pop(k) for k in ("dp_seed", "target_epsilon",
                                                                              "budget_epsilon") if k in overrides}
        rc.update({k.replace("_", "-"): v for k, v in overrides.items()})
        nodes = {10 + k: {"partition-id": k, "num-partitions": hospitals, "fedvault-simulation": True, **own}
                 for k in range(hospitals)}  # the nodes' own config: simulated hospitals (demo data)
        grid = InProcessGrid(client_app, nodes, run_config=rc, on_push=on_push)
        server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))
        return json.loads(result.read_text(encoding="utf-8"))
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
