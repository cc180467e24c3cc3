"""Run the app in this process, one node per hospital, through fedvault's InProcessGrid (no Ray).

    python -m fedvault_study.simulate [--config fedvault.toml] [--hospitals 4]

Enrols a throwaway consortium (each hospital its own key, the roster built from the
public keys, ``node-<k>/`` directories with ledgers) and runs this package's ServerApp and
ClientApp unchanged; prints each round as history.json records it.  ``flwr run .`` runs
the same two apps in Flower's simulation runtime; ``scripts/flower_deploy.py`` on real
SuperNodes over TLS.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from . import CONFIG


def simulate(hospitals: int = 4, config: str | Path = CONFIG, root: str | Path | None = None,
             **run_config: Any) -> dict[str, Any]:
    """The study's history (same schema as ``fedvault run``); ``run_config`` keys with ``_`` for ``-``."""
    from flwr.app import Context, RecordDict

    from fedvault.fl.integrations.flower import InProcessGrid, provision
    from fedvault.fl.integrations.flower.app import client_app, server_main

    with tempfile.TemporaryDirectory(prefix="fedvault-flower-") as tmp:
        root = Path(root or tmp)
        provision(root, [f"hospital_{k}" for k in range(hospitals)], dirs=[f"node-{k}" for k in range(hospitals)])
        rc = {"fedvault-root": str(root), **{k.replace("_", "-"): v for k, v in run_config.items()}}
        grid = InProcessGrid(client_app(config), {10 + k: {"partition-id": k} for k in range(hospitals)},
                             run_config=rc)
        return server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc),
                           config)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--hospitals", type=int, default=4)
    a = ap.parse_args(argv)
    hist = simulate(a.hospitals, a.config)
    for r in hist["rounds"]:
        print(json.dumps({k: r.get(k) for k in ("round", "participants", "dropped", "refused", "metrics", "epsilon")}))
    print(json.dumps(hist["final"]["metrics"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
