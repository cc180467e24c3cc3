"""Server-side strategies: how the aggregated update moves the global model.

Sum-based strategies (FedAvg, FedAvgM, FedAdam, FedYogi; FedProx is FedAvg on the
server with a proximal term on the clients) are functions of the *sum*
``[sum_k n_k delta_k, sum_k n_k]`` only, so they work unchanged under secure
aggregation and Paillier: the server never needs an individual update.

Robust strategies (FedMedian, trimmed mean) need every individual update and are
therefore only allowed with ``aggregation.mode = "plaintext"``; under secure
aggregation the robust option is per-client update-norm bounding
(``aggregation.update_clip``), which every client applies before encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fedvault.fl.errors import FederationError

SUM_BASED = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi")
ROBUST = ("fedmedian", "trimmed_mean")


def weighted_mean_delta(total: np.ndarray) -> np.ndarray:
    """``sum_k n_k delta_k / sum_k n_k`` from the aggregated ``[sum n_k delta_k, sum n_k]``."""
    weight = float(total[-1])
    if not weight > 0:
        raise FederationError("the aggregated record count is zero; no hospital contributed to this round")
    return total[:-1] / weight


def _deltas(updates: Sequence[np.ndarray]) -> np.ndarray:
    """Unweighted per-client deltas ``delta_k`` from each ``[n_k delta_k, n_k]``."""
    return np.stack([u[:-1] / u[-1] for u in updates])


@dataclass
class FedAvg:
    """FedAvg: ``w <- w + eta * mean_delta`` (eta = server learning rate)."""

    server_lr: float = 1.0
    needs_individual_updates = False

    def step(self, weights: np.ndarray, total: np.ndarray) -> np.ndarray:
        return weights + self.server_lr * weighted_mean_delta(total)


@dataclass
class FedAvgM:
    """FedAvg with server momentum (Hsu et al. 2019): ``v <- beta v + delta; w <- w + eta v``."""

    server_lr: float = 1.0
    momentum: float = 0.9
    velocity: np.ndarray | None = field(default=None, repr=False)
    needs_individual_updates = False

    def step(self, weights: np.ndarray, total: np.ndarray) -> np.ndarray:
        d = weighted_mean_delta(total)
        self.velocity = d if self.velocity is None else self.momentum * self.velocity + d
        return weights + self.server_lr * self.velocity


@dataclass
class FedAdam:
    """FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization"), pseudo-gradient = mean delta:

    ``m <- b1 m + (1-b1) d``;  ``v <- b2 v + (1-b2) d^2``;  ``w <- w + eta m / (sqrt(v) + tau)``
    (no bias correction, as in the paper). ``yogi=True`` gives FedYogi:
    ``v <- v - (1-b2) d^2 sign(v - d^2)``.
    """

    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    yogi: bool = False
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)
    needs_individual_updates = False

    def step(self, weights: np.ndarray, total: np.ndarray) -> np.ndarray:
        d = weighted_mean_delta(total)
        if self.m is None:
            self.m = np.zeros_like(d)
            self.v = np.full_like(d, self.tau**2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * d
        d2 = d * d
        if self.yogi:
            self.v = self.v - (1 - self.beta2) * d2 * np.sign(self.v - d2)
        else:
            self.v = self.beta2 * self.v + (1 - self.beta2) * d2
        return weights + self.server_lr * self.m / (np.sqrt(self.v) + self.tau)


@dataclass
class FedMedian:
    """Coordinate-wise median of the clients' deltas (Yin et al. 2018). Plaintext only."""

    server_lr: float = 1.0
    needs_individual_updates = True

    def step_individual(self, weights: np.ndarray, updates: Sequence[np.ndarray]) -> np.ndarray:
        return weights + self.server_lr * np.median(_deltas(updates), axis=0)


@dataclass
class TrimmedMean:
    """Coordinate-wise trimmed mean: drop the ``trim`` fraction largest and smallest per coordinate."""

    server_lr: float = 1.0
    trim: float = 0.1
    needs_individual_updates = True

    def step_individual(self, weights: np.ndarray, updates: Sequence[np.ndarray]) -> np.ndarray:
        D = np.sort(_deltas(updates), axis=0)
        k = int(np.floor(self.trim * D.shape[0]))
        if 2 * k >= D.shape[0]:
            raise FederationError(
                f"trimmed mean with trim_fraction={self.trim} removes all {D.shape[0]} updates; lower trim_fraction"
            )
        return weights + self.server_lr * D[k : D.shape[0] - k].mean(axis=0)


def make(tc) -> FedAvg | FedAvgM | FedAdam | FedMedian | TrimmedMean:
    """Build the strategy named by a :class:`~fl.config.TrainingConfig`."""
    name = tc.strategy
    if name in ("fedavg", "fedprox"):
        return FedAvg(tc.server_lr)
    if name == "fedavgm":
        return FedAvgM(tc.server_lr, tc.server_momentum)
    if name in ("fedadam", "fedyogi"):
        return FedAdam(tc.server_lr, tc.beta1, tc.beta2, tc.tau, yogi=name == "fedyogi")
    if name == "fedmedian":
        return FedMedian(tc.server_lr)
    if name == "trimmed_mean":
        return TrimmedMean(tc.server_lr, tc.trim_fraction)
    raise FederationError(f"unknown strategy {name!r}")
