"""The README's Flower snippet, exactly as printed, in a plain Flower app: the user supplies only what the
README says they supply (``load_site``, ``model``); the ServerApp and ClientApp it defines run a secure round
through Flower's public Grid interface (fedvault's InProcessGrid)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from tests._flower_helpers import app_task  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def snippet() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- flower-snippet -->\n```python\n(.*?)```", text, re.S)
    assert m, "README lost its Flower snippet marker"
    return m.group(1)


def test_readme_flower_snippet_runs_as_printed(tmp_path):
    from flwr.app import Context, RecordDict

    from fedvault.fl.integrations.flower import InProcessGrid, NodeDir, provision
    from fedvault.fl.integrations.flower.site import HospitalSite

    task = app_task()
    provision(tmp_path, [f"hospital_{k}" for k in range(3)])
    rc = {"num-hospitals": 3, "fedvault-registry": str(tmp_path / "registry.json")}
    cfg = task.config(rc)

    def load_site(context):  # noqa: ANN001, ANN202 - what the README says the user writes
        node = NodeDir(context.node_config["fedvault-dir"])
        return HospitalSite(task.hospital(cfg, node.client - 1), node.ledger_path, dp_seed=node.client)

    model = task.make_model(cfg)
    before = np.concatenate([p.detach().numpy().ravel() for p in model.state_dict().values()])
    ns = {"load_site": load_site, "model": model}
    exec(compile(snippet(), str(README), "exec"), ns)  # noqa: S102 - the README's own code

    grid = InProcessGrid(ns["app"], {10 + k: {"fedvault-dir": str(tmp_path / f"hospital_{k}")} for k in range(3)},
                         run_config=rc)
    ns["server"](grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc))
    # Every hospital trained once through fedvault (its ledger holds the round), nothing was refused.
    for k in range(3):
        import json

        doc = json.loads((tmp_path / f"hospital_{k}" / "ledger.json").read_text())
        assert len(doc["ledger"]["events"]) == 2 and not doc["ledger"]["refused"]  # 2 rounds
    assert before.size > 0
