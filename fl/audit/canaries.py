"""Audit canaries: record canaries (input space) and canary clients (update space).

Record canaries
---------------
A canary's effect must stand out from what the real records do to the model. The canary
features lie along the *lowest-variance principal directions* of the standardised
training data, ``z = s·u`` (``s = canary_norm`` standard deviations) — directions real
records barely move the model in — and each (direction, label) pair is used once; with
two classes the two labels of a direction would cancel, so one label per direction. The
number of canaries is therefore capped at ``d`` (two classes) or ``d·C`` (C ≥ 3 classes).
All canaries go into one hospital (default: the largest, whose update weighs most in
FedAvg).

The score of canary ``(z, y)`` is white-box and bias-free:
``f(w) = φ_y(z; w) − φ_y(−z; w)`` with ``φ_y = log p_y − log(1 − p_y)``, and
``score = f(w_final) − f(w_0)``: how much training moved the model towards the canary's
label *along the canary's direction*. The round-0 model is public (the server sent it),
and guesses depend only on the scores, never on the coins, so the SNJ bound applies.

Canary clients
--------------
Fixed random directions submitted every round with the largest norm the protocol
accepts (Andrew et al., ICLR 2024); see :class:`CanaryClients`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from fedvault.dp import audit as A
from fedvault.fl import data as data_mod
from fedvault.fl import models
from fedvault.fl.audit.settings import AuditSettings
from fedvault.fl.errors import ConfigError


@dataclass
class RecordCanaries:
    """Canary records: standardised-space design ``z`` (m, d), labels, raw features, coins."""

    z: np.ndarray
    y: np.ndarray
    raw: np.ndarray
    included: np.ndarray
    hospital: str
    slots: int


def pooled_standardisation(fd: data_mod.FederatedData) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of all hospitals' features pooled (std floored at 1 for constant columns)."""
    X = np.concatenate([h.X for h in fd.hospitals]).astype(np.float64)
    mean = X.mean(0)
    std = X.std(0)
    std[std < 1e-8] = 1.0
    return mean, std


def canary_slots(n_features: int, n_classes: int) -> int:
    """How many record canaries fit without cancelling each other (see module doc)."""
    return n_features * (n_classes if n_classes >= 3 else 1)


def canary_host(fd: data_mod.FederatedData, settings: AuditSettings) -> str:
    """The hospital that holds the canaries: the largest, or the one named in the settings."""
    if settings.canary_hospital == "largest":
        return max(fd.hospitals, key=lambda h: h.n).name
    names = [h.name for h in fd.hospitals]
    if settings.canary_hospital not in names:
        raise ConfigError(f"audit.canary_hospital = {settings.canary_hospital!r} is not a hospital; use one of: {', '.join(names)} or \"largest\"")
    return settings.canary_hospital


def design_canaries(fd: data_mod.FederatedData, settings: AuditSettings) -> RecordCanaries:
    """Build canaries along the lowest-variance principal directions and flip their coins."""
    rng = np.random.default_rng([settings.seed, 0xA0D17])
    mean, std = pooled_standardisation(fd)
    Z = (np.concatenate([h.X for h in fd.hospitals]) - mean) / std
    evals, evecs = np.linalg.eigh(np.cov(Z.T) if Z.shape[1] > 1 else np.eye(1))
    d, C = Z.shape[1], fd.n_classes
    slots = canary_slots(d, C)
    m = min(settings.canaries, slots)
    if C >= 3:
        pairs = [(j, c) for j in range(d) for c in range(C)][:m]  # lowest-variance directions first
        dirs = np.array([evecs[:, j] for j, _ in pairs])
        y = np.array([c for _, c in pairs], dtype=np.int64)
        y = (y + rng.integers(0, C)) % C
    else:
        dirs = evecs[:, :m].T.copy()
        y = rng.integers(0, C, m).astype(np.int64)
    dirs *= rng.choice([-1.0, 1.0], size=(m, 1))
    z = settings.canary_norm * dirs
    raw = mean + std * z
    included = rng.random(m) < 0.5
    return RecordCanaries(z=z, y=y, raw=raw, included=included, hospital=canary_host(fd, settings), slots=slots)


def insert_canaries(fd: data_mod.FederatedData, can: RecordCanaries) -> data_mod.FederatedData:
    """A deep copy of ``fd`` with the IN canaries appended to the canary hospital's records."""
    out = copy.deepcopy(fd)
    h = next(h for h in out.hospitals if h.name == can.hospital)
    h.X = np.vstack([h.X, can.raw[can.included].astype(h.X.dtype)])
    h.y = np.concatenate([h.y, can.y[can.included].astype(h.y.dtype)])
    return out


class GlobalModels:
    """An extra-participants hook that adds nobody and keeps every global model a hospital
    receives (round r's model is the one sent at the start of round r)."""

    names: list[str] = []

    def __init__(self) -> None:
        self.models: dict[int, np.ndarray] = {}

    @property
    def initial(self) -> np.ndarray | None:
        return self.models[min(self.models)] if self.models else None

    def __call__(self, round: int, weights: np.ndarray) -> dict[str, np.ndarray]:
        self.models[round] = np.array(weights, copy=True)
        return {}


def logits(model: torch.nn.Module, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The model's logits at parameter vector ``w`` on ``X`` (float64)."""
    m = copy.deepcopy(model)
    models.set_vector(m, w)
    m.eval()
    with torch.no_grad():
        return m(torch.as_tensor(X, dtype=torch.float32)).double().numpy()


def canary_scores(model: torch.nn.Module, w0: np.ndarray, w1: np.ndarray, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``f(w1) − f(w0)`` with ``f(w) = φ_y(z; w) − φ_y(−z; w)`` (bias-free white-box score)."""
    def f(w: np.ndarray) -> np.ndarray:
        return A.logit_confidence(logits(model, w, z), y) - A.logit_confidence(logits(model, w, -z), y)

    return f(w1) - f(w0)


class CanaryClients:
    """Canary clients for the client-level estimate: fixed random directions every round.

    Each submits ``[n·C·c_i, n]`` (``n`` the median hospital size, ``C`` the update clip) —
    or ``[C·c_i, 1]`` when client-level DP weighs every participant equally — i.e. the
    largest update the protocol accepts from an honest-looking client.
    """

    def __init__(self, directions: np.ndarray, clip: float, weight: float, client_level: bool):
        self.directions = directions
        self.names = [f"canary_client_{i:03d}" for i in range(len(directions))]
        self.clip = clip
        self.weight = 1.0 if client_level else weight
        self.initial: np.ndarray | None = None

    def __call__(self, round: int, weights: np.ndarray) -> dict[str, np.ndarray]:
        if self.initial is None:
            self.initial = np.array(weights, copy=True)
        return {
            n: np.concatenate([self.weight * self.clip * c, [self.weight]])
            for n, c in zip(self.names, self.directions)
        }
