"""Shared by the Flower integration tests: recompute the survivors' plaintext sum independently."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parent.parent / "examples" / "flower"


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
    cfg = task.config(rc)
    w = np.asarray(initial, dtype=np.float64)
    total = np.zeros(w.shape[0] + 1)
    for name in survivors:
        k = int(name.rsplit("_", 1)[1])
        site = HospitalSite(task.hospital(cfg, k), tmp / f"{name}-ledger.json", dp_seed=task.dp_seed(rc, k))
        total += site.fit(w, round)
    return total
