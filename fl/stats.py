"""Federated feature standardisation through secure aggregation.

Each hospital contributes the vector ``[n_k, sum_i x_i, sum_i x_i^2]`` (per feature)
through the configured aggregator, so with ``masked``/``secagg``/``paillier`` no hospital
reveals its own count, mean or variance — only the federation's totals, from which
every hospital computes the same mean and standard deviation.

The statistics are aggregated once, in round 0, with a 64-bit encoding and a public
bound of 2^40 per coordinate (so ``|x| * sqrt(n_k)`` must stay below about 10^6); a
value beyond it is refused with an error asking to rescale the data. They are not
DP-noised (see SECURITY.md).
"""

from __future__ import annotations

import numpy as np

from typing import Any

from fedvault.fl.data import FederatedData, HospitalData
from fedvault.fl.errors import DataError

STATS_CLIP = float(2**40)
STATS_BITS = 64


def local_statistics(h: HospitalData) -> np.ndarray:
    """A hospital's contribution ``[n_k, sum_i x_i, sum_i x_i^2]`` (computed on its side)."""
    v = np.concatenate([[h.n], h.X.sum(axis=0), (h.X**2).sum(axis=0)])
    if np.abs(v).max() >= STATS_CLIP:
        raise DataError(
            f"{h.name}: feature sums exceed the secure-statistics bound 2^40; rescale the features "
            "(e.g. to units where values are below 10^4)"
        )
    return v


def standardise_from_total(data: FederatedData, tot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise every hospital's records (and the test set) in place from the federation's sums.

    Returns ``(mean, std)``; features with (near) zero variance keep std 1.
    """
    d = data.n_features
    n = tot[0]
    mean = tot[1 : 1 + d] / n
    var = np.maximum(tot[1 + d :] / n - mean**2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-8] = 1.0
    for h in data.hospitals:
        h.X = ((h.X - mean) / std).astype(np.float32)
        h.X_val = ((h.X_val - mean) / std).astype(np.float32)
    data.X_test = ((data.X_test - mean) / std).astype(np.float32)
    return mean, std


def federated_standardise(data: FederatedData, aggregator: Any) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with an object offering ``aggregate(round, inputs, *, clip, bits, purpose)``
    (kept for callers outside the round engine; the engine runs a "stats" session instead)."""
    inputs = {h.name: local_statistics(h) for h in data.hospitals}
    res = aggregator.aggregate(0, inputs, clip=STATS_CLIP, bits=STATS_BITS, purpose="stats")
    return standardise_from_total(data, res.total)
