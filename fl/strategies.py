"""Server-side strategies: how the aggregated update moves the global model.

Every strategy here is a function of the *sum* ``[sum_k n_k delta_k, sum_k n_k]`` only,
so it works unchanged under secure aggregation (the server never needs an
individual update).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fl.errors import FederationError


def weighted_mean_delta(total: np.ndarray) -> np.ndarray:
    """``sum_k n_k delta_k / sum_k n_k`` from the aggregated ``[sum n_k delta_k, sum n_k]``."""
    weight = float(total[-1])
    if not weight > 0:
        raise FederationError("the aggregated record count is zero; no hospital contributed to this round")
    return total[:-1] / weight


@dataclass
class FedAvg:
    """FedAvg with a server learning rate: ``w <- w + server_lr * mean_delta``."""

    server_lr: float = 1.0

    def step(self, weights: np.ndarray, total: np.ndarray) -> np.ndarray:
        return weights + self.server_lr * weighted_mean_delta(total)


def make(name: str, server_lr: float) -> FedAvg:
    if name == "fedavg":
        return FedAvg(server_lr)
    raise FederationError(f"unknown strategy {name!r}")
