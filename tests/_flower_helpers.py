"""Shared by the Flower integration tests: recompute the survivors' plaintext sum independently."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parent.parent / "examples" / "flower_mod"  # the FedVaultMod/SecureFedAvg app


def app_task():  # noqa: ANN201 - the example app's task module
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    from fedvault_flower_app import task

    return task


def plaintext_sum(rc: dict, survivors: list[str], initial: list[float], round: int, tmp: Path) -> np.ndarray:
    """Each survivor's weighted update ``[n_k delta_k, n_k]`` recomputed in this process (same DP seeds,
    fresh ledgers), summed in float64: what the secure aggregate must equal."""
    import torch

    from fedvault.fl.integrations.flower.site import HospitalSite

    torch.set_num_threads(1)
    task = app_task()
    cfg = task.config(rc, rc)
    w = np.asarray(initial, dtype=np.float64)
    total = np.zeros(w.shape[0] + 1)
    for name in survivors:
        k = int(name.rsplit("_", 1)[1])
        site = HospitalSite(task.hospital(cfg, k), tmp / f"{name}-ledger.json", dp_seed=task.dp_seed(rc, k))
        # rc holds the run config and the nodes' own keys (fedvault-dp-seed ...) alike here
        total += site.fit(w, round)
    return total


class VectorSite:
    """A torch-free hospital for protocol tests: a fixed update vector, a count of trainings."""

    def __init__(self, k: int, dim: int, records: int = 10):
        self.name, self.records, self.model_size = f"hospital_{k}", records, dim - 1
        self.vector = np.random.default_rng(k).uniform(-1, 1, dim)
        self.vector[-1] = records
        self.trained: list[int] = []

    def max_abs(self) -> float:
        return float(np.max(np.abs(self.vector)))

    def refusal(self, round: int) -> None:
        return None

    def fit(self, weights: np.ndarray, round: int, config=None) -> np.ndarray:  # noqa: ANN001
        self.trained.append(round)
        return self.vector


def vector_federation(root: Path, n: int, dim: int, node_config: dict | None = None, **grid_kw):  # noqa: ANN003, ANN201
    """``n`` provisioned hospitals with :class:`VectorSite`s behind a plain ClientApp on an InProcessGrid:
    ``(grid, registry, sites)``. ``node_config``: extra keys of every node's OWN config (e.g. its threat
    model, ``fedvault-colluders``)."""
    from flwr.clientapp import ClientApp

    from fedvault.fl.integrations.flower import FedVaultMod, InProcessGrid, provision

    reg = provision(root, [f"hospital_{k}" for k in range(n)])
    sites = {k: VectorSite(k, dim) for k in range(n)}
    app = ClientApp()
    FedVaultMod(lambda ctx: sites[int(ctx.node_config["k"])]).register(app)
    nodes = {10 + k: {"fedvault-dir": str(root / f"hospital_{k}"), "k": k, **(node_config or {})} for k in range(n)}
    return InProcessGrid(app, nodes, **grid_kw), reg, sites
