"""Feature standardisation without releasing exact statistics (``privacy.standardise``).

Three ways, chosen in the config (default ``"dp"``):

``"dp"`` — federated, differentially private (default)
    Each hospital maps its records into the unit box with the *public* per-feature ranges
    ``[lo_j, hi_j]`` (clipping outside values): ``u = clip((x − lo)/(hi − lo), 0, 1)``, then
    contributes ``[n_k, Σu + N(0, s²I), Σu² + N(0, s²I)]`` through the configured secure
    aggregation, with ``s = z_stats · √(2d)`` and its own secret randomness. One record
    moves ``[Σu, Σu²]`` by at most ``√(2d)`` in L2 when replaced (every coordinate lies
    in [0, 1]), so the release is the Gaussian mechanism with noise multiplier
    ``z_stats`` under replace-one; it is charged to the hospital's ledger as a
    :class:`~dp.events.GaussianRelease` (``purpose = "feature_statistics"``, round 0)
    and composed with DP-SGD (the DP-SGD noise is calibrated so that both together meet
    the target ε). ``n_k`` is exact: free under replace-one, and the reason add/remove
    cannot be stated (its add/remove sensitivity is recorded as unbounded).
    Every hospital then standardises with ``mean = clip(ΣΣu/N, 0, 1)`` and
    ``std = sqrt(clip(ΣΣu²/N − mean², STD_MIN², 1/4))`` — post-processing of DP values.
    Each hospital adds the full noise itself, so the guarantee holds against whoever
    sees its contribution (the server under plaintext aggregation, too); the sum carries
    ``K`` times the variance. On small studies the noise dominates (error of the mean
    ≈ ``√K · z · √(2d) / N`` in range units); the clamps keep features within
    ``±1/STD_MIN``.

``"public"`` — from declared ranges only
    ``x' = 2u − 1`` (min-max into [−1, 1]) with the public ranges; no patient data is
    used, nothing is released, nothing is charged.

``"none"``
    Features are used as they are.

Public ranges come from ``privacy.feature_low`` / ``privacy.feature_high`` (one number
per feature, in column order), or for the built-in data sets from their published
documentation (:data:`PUBLIC_RANGES`: scikit-learn's description of the Wisconsin data
lists each feature's min and max; digits' pixels are 0..16).

The exact ``[n_k, Σx, Σx²]`` of earlier versions (:func:`local_statistics`) is no longer
released by the engine.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from fedvault.fl.data import FederatedData, HospitalData
from fedvault.fl.errors import DataError

STATS_CLIP = float(2**40)
STATS_BITS = 64
STANDARDISE = ("dp", "public", "none")
STD_MIN = 0.1

#: Published feature ranges of the built-in data sets (column order of fl.data).
PUBLIC_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    # scikit-learn load_breast_cancer().DESCR, "Summary Statistics" (min, max) — public documentation
    "breast_cancer": (
        (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.053, 0.163),
        (0.019, 0.345), (0.0, 0.427), (0.0, 0.201), (0.106, 0.304), (0.05, 0.097),
        (0.112, 2.873), (0.36, 4.885), (0.757, 21.98), (6.802, 542.2), (0.002, 0.031),
        (0.002, 0.135), (0.0, 0.396), (0.0, 0.053), (0.008, 0.079), (0.001, 0.03),
        (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.071, 0.223),
        (0.027, 1.058), (0.0, 1.252), (0.0, 0.291), (0.156, 0.664), (0.055, 0.208),
    ),
    "digits": tuple((0.0, 16.0) for _ in range(64)),  # 4-bit pixel counts, by construction
}


def public_ranges(cfg: Any, n_features: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lo, hi)`` per feature: declared in the config, else published for a built-in data set."""
    p = cfg.privacy
    low, high = getattr(p, "feature_low", ()), getattr(p, "feature_high", ())
    if low or high:
        lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    elif cfg.data.dataset in PUBLIC_RANGES:
        r = np.asarray(PUBLIC_RANGES[cfg.data.dataset], dtype=np.float64)
        lo, hi = r[:, 0], r[:, 1]
    else:
        return None
    if len(lo) != n_features or len(hi) != n_features:
        raise DataError(f"privacy.feature_low/feature_high give {len(lo)}/{len(hi)} values for {n_features} "
                        "features; give one public lower and upper bound per feature, in column order")
    if not np.all(hi > lo):
        bad = [int(i) for i in np.nonzero(~(hi > lo))[0]]
        raise DataError(f"privacy.feature_high must exceed feature_low for every feature (not for columns {bad})")
    return lo, hi


def range_problems(cfg: Any, n_features: int) -> list[str]:
    """What to fix before a run whose ``standardise`` mode needs public ranges (empty: fine)."""
    mode = getattr(cfg.privacy, "standardise", "dp")
    if mode == "none":
        return []
    try:
        r = public_ranges(cfg, n_features)
    except DataError as e:
        return [str(e)]
    if r is None:
        return [f"privacy.standardise = {mode!r} needs public feature ranges: declare privacy.feature_low and "
                f"privacy.feature_high ({n_features} numbers each, in column order, from a data dictionary — not "
                "from the records), or set standardise = \"none\""]
    return []


def to_unit(X: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``clip((X − lo)/(hi − lo), 0, 1)`` per feature (a public transform)."""
    return np.clip((np.asarray(X, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def statistics_event(n_features: int, noise_multiplier: float, round: int = 0) -> Any:
    """The ledger event of one hospital's DP statistics release (see the module docstring)."""
    from fedvault.dp.events import GaussianRelease

    s = math.sqrt(2 * n_features)
    return GaussianRelease(round=round, std=noise_multiplier * s, sensitivity_add_remove=math.inf,
                           sensitivity_replace_one=s, purpose="feature_statistics")


def planned_releases(cfg: Any, n_features: int | None) -> list[Any]:
    """The events a hospital is charged before training (the DP feature statistics, if any);
    noise calibration and the pre-flight plan check compose them with DP-SGD."""
    p = cfg.privacy
    if not p.enabled or getattr(p, "standardise", "dp") != "dp" or n_features is None:
        return []
    return [statistics_event(n_features, p.stats_noise_multiplier)]


def private_statistics(U: np.ndarray, noise_multiplier: float, rng: Any) -> np.ndarray:
    """A hospital's DP contribution ``[n_k, Σu + N(0, s²), Σu² + N(0, s²)]`` (``U`` in [0, 1]).

    ``rng`` is the hospital's own secret generator (OS-seeded). Computed on its side.
    """
    U = np.asarray(U, dtype=np.float64)
    if U.size and (U.min() < 0 or U.max() > 1):
        raise DataError("private_statistics expects features mapped into [0, 1] with public ranges")
    d = U.shape[1]
    s = noise_multiplier * math.sqrt(2 * d)
    return np.concatenate([[float(len(U))], U.sum(axis=0) + rng.normal(0.0, s, d),
                           (U**2).sum(axis=0) + rng.normal(0.0, s, d)])


class StreamNormal:
    """``normal(loc, scale, size)`` from an AES-256-CTR :class:`~dp.randomness.RandomStream` keyed by
    ``os.urandom``: the statistics noise comes from the same CSPRNG as DP-SGD's, not from a PCG64
    generator merely seeded from the OS (whose state its outputs could reveal)."""

    def __init__(self, stream: Any) -> None:
        self._s = stream

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: int = 1) -> np.ndarray:
        return loc + self._s.normal(int(size), float(scale))


def stats_generator(reproducible: bool, seed: int, index: int) -> Any:
    """The hospital's generator of statistics noise (``.normal(loc, scale, size)``): an AES-CTR stream
    keyed by the OS CSPRNG, or — only with ``privacy.reproducible = true`` (not private) — a numpy
    generator seeded from the config."""
    from fedvault.dp.noise import secure_generator
    from fedvault.dp.randomness import RandomStream

    if not reproducible:
        return StreamNormal(RandomStream.from_os())
    return secure_generator(hashlib.sha256(f"fedvault/stats/{seed}/{index}".encode()).digest())


def standardisation_from_total(tot: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` in unit-box coordinates from the federation's noised sums (post-processing)."""
    d = n_features
    n = max(float(tot[0]), 1.0)
    mean = np.clip(tot[1 : 1 + d] / n, 0.0, 1.0)
    var = np.clip(tot[1 + d : 1 + 2 * d] / n - mean**2, STD_MIN**2, 0.25)
    return mean, np.sqrt(var)


def apply_standardisation(data: FederatedData, lo: np.ndarray, hi: np.ndarray, mean: np.ndarray,
                          std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x' = (to_unit(x) − mean)/std`` for every hospital's records, held-out split and the test set.

    Returns the equivalent raw-space ``(mean, std)`` — ``x' = (x − mean)/std`` for values inside
    the public ranges — as the exact standardisation used to return."""
    for h in data.hospitals:
        h.X = ((to_unit(h.X, lo, hi) - mean) / std).astype(np.float32)
        h.X_val = ((to_unit(h.X_val, lo, hi) - mean) / std).astype(np.float32)
    if len(data.X_test):
        data.X_test = ((to_unit(data.X_test, lo, hi) - mean) / std).astype(np.float32)
    return lo + mean * (hi - lo), std * (hi - lo)


def standardise_public(data: FederatedData, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max into [−1, 1] with the public ranges (no data used). Returns raw-space ``(mean, std)``."""
    return apply_standardisation(data, lo, hi, np.full(len(lo), 0.5), np.full(len(lo), 0.5))


# -- the exact statistics of earlier versions (no longer released by the engine) --------------
def local_statistics(h: HospitalData) -> np.ndarray:
    """Exact ``[n_k, Σx, Σx²]`` (NOT private; kept for callers outside the engine)."""
    v = np.concatenate([[h.n], h.X.sum(axis=0), (h.X**2).sum(axis=0)])
    if np.abs(v).max() >= STATS_CLIP:
        raise DataError(
            f"{h.name}: feature sums exceed the secure-statistics bound 2^40; rescale the features "
            "(e.g. to units where values are below 10^4)"
        )
    return v


def standardise_from_total(data: FederatedData, tot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise in place from exact sums ``[N, Σx, Σx²]`` (NOT private; see :func:`local_statistics`)."""
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
    """Exact federated standardisation over ``aggregator.aggregate`` (NOT private; legacy callers)."""
    inputs = {h.name: local_statistics(h) for h in data.hospitals}
    res = aggregator.aggregate(0, inputs, clip=STATS_CLIP, bits=STATS_BITS, purpose="stats")
    return standardise_from_total(data, res.total)
