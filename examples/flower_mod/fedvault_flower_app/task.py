"""The federation's task, built from fedvault's own pieces (fl.config, fl.data, fl.models, fl.client).

Every hospital loads the same seeded non-IID split of scikit-learn's Wisconsin
breast-cancer data (``fl.data``) and keeps its own part: hospital ``k`` is fedvault
client ``k + 1``.  Features are standardised with the hospital's *own* statistics
(``fedvault run`` does it with federated statistics; this app keeps the Flower side
minimal).
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from fedvault.fl import data as data_mod
from fedvault.fl import models
from fedvault.fl.client import Hospital
from fedvault.fl.config import Config, from_dict
from fedvault.fl.simulation import calibrated_noise

DEMO_MIN_COHORT = 2  # Flower's default local simulation has 2 SuperNodes


def config(rc: Mapping[str, Any], node: Mapping[str, Any] | None = None) -> Config:
    """The study config.  The hospital's privacy settings (ε target and budget) come from the
    node's OWN config (``fedvault-target-epsilon``, ``fedvault-budget-epsilon``), never from the
    server's run config: the server operator must not choose a hospital's privacy."""
    node = node or {}
    budget = float(node.get("fedvault-budget-epsilon", 0.0))
    privacy = {"enabled": True, "target_epsilon": float(node.get("fedvault-target-epsilon", 3.0)), "delta": 1e-5}
    if budget > 0:
        privacy["budget_epsilon"] = budget
    return from_dict({
        "seed": int(rc.get("seed", 7)),
        "data": {"dataset": "breast_cancer", "hospitals": int(rc.get("num-hospitals", 4)), "min_records": 40},
        "model": {"kind": "logreg"},
        "training": {"rounds": int(rc.get("num-server-rounds", 2)), "batch_size": 8, "lr": 0.5, "min_clients": 2},
        "privacy": privacy,
        "aggregation": {"mode": "secagg", "update_clip": float(rc.get("update-clip", 10.0))},
        "threat_model": ({"colluders": int(rc["colluders"])} if int(rc.get("colluders", -1)) >= 0 else {}),
    })


@lru_cache(maxsize=4)
def _data(cfg: Config) -> data_mod.FederatedData:
    fd = data_mod.load(cfg)
    for h in fd.hospitals:  # local standardisation (see the module docstring)
        mu, sd = h.X.mean(axis=0), h.X.std(axis=0)
        sd[sd < 1e-9] = 1.0
        h.X, h.X_val = (h.X - mu) / sd, (h.X_val - mu) / sd
    mu, sd = fd.X_test.mean(axis=0), fd.X_test.std(axis=0)
    sd[sd < 1e-9] = 1.0
    fd.X_test = (fd.X_test - mu) / sd
    return fd


def make_model(cfg: Config) -> torch.nn.Module:
    fd = _data(cfg)
    torch.manual_seed(cfg.seed)
    return models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)


def hospital(cfg: Config, index: int) -> Hospital:
    fd = _data(cfg)
    h = fd.hospitals[index]

    def factory() -> torch.nn.Module:
        return models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)

    return Hospital(h, cfg, factory, index, calibrated_noise(cfg, h.n))


def test_set(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    fd = _data(cfg)
    return fd.X_test, fd.y_test


def dp_seed(node: Mapping[str, Any], index: int) -> int | None:
    """DP-SGD seed from the node's OWN config (``fedvault-dp-seed``, tests and demos only); None
    (OS randomness) otherwise.  Never from the server's run config: a seed the server chose would
    make the hospital's noise replayable."""
    s = int(node.get("fedvault-dp-seed", -1))
    return None if s < 0 else s * 1_000_003 + index


# -- where each hospital's node directory is ---------------------------------------------------
def is_demo(rc: Mapping[str, Any], node_config: Mapping[str, Any] | None = None) -> bool:
    """No consortium given: a throwaway demo consortium (simulation only)."""
    return not rc.get("fedvault-root") and not rc.get("fedvault-registry") and "fedvault-dir" not in (node_config or {})


def demo_root(run_id: int) -> Path:
    """The demo consortium of one run, in the machine's temp folder (every simulated node is local)."""
    return Path(tempfile.gettempdir()) / f"fedvault-flower-demo-{os.getuid()}-{run_id}"


def node_dir(context: Any) -> Path:
    """``node_config["fedvault-dir"]`` (deployments), else ``<root>/node-<partition-id>``."""
    nc, rc = context.node_config, context.run_config
    if "fedvault-dir" in nc:
        return Path(str(nc["fedvault-dir"]))
    root = Path(str(rc["fedvault-root"])) if rc.get("fedvault-root") else demo_root(context.run_id)
    return root / f"node-{int(nc['partition-id'])}"


def min_cohort(context: Any) -> int:
    """The smallest cohort this hospital accepts: 3 (or node_config ``fedvault-min-cohort``); 2 in a demo."""
    if is_demo(context.run_config, context.node_config):
        return DEMO_MIN_COHORT
    return int(context.node_config.get("fedvault-min-cohort", 3))
