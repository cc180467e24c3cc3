"""Audit canaries: gradient canaries (the default, white box), input canaries and canary clients.

Gradient canaries
-----------------
See :func:`gradient_directions`, :class:`GradientCanaries`, :class:`GradientCanaryHook`
and :func:`gradient_canary_scores` (and the package docstring): per-example gradients in
directions no patient's gradient uses, one (round, direction) each, clipped and noised by
an honest trainer like any record, scored on every global model the canary hospital
receives.

Input canaries
--------------
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
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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


# --------------------------------------------------------------------------- gradient canaries

MAX_GRADIENT_PARAMS = 4000


def gradient_directions(model: torch.nn.Module, X: np.ndarray, y: np.ndarray, *, null_tol: float = 1e-5) -> tuple[np.ndarray, int]:
    """Orthonormal parameter-space directions that real records' gradients barely use.

    The per-example gradients of cross-entropy at the model's current parameters are
    stacked into ``G`` (n × P); its right singular vectors with the smallest singular
    values are the directions real records move the model in least. Returns
    ``(directions (D, P), null)``: the directions with ``s ≤ null_tol · s_max`` (``null``
    of them — e.g. the softmax's redundant direction per input: a 2-class logistic
    regression on d features has d + 1) or, when there are none, the lowest-energy
    quarter of the parameter space.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    if P > MAX_GRADIENT_PARAMS:
        raise ConfigError(
            f"gradient canaries need the SVD of a {P}-parameter gradient matrix; they support models up to "
            f"{MAX_GRADIENT_PARAMS} parameters: use audit.canary_kind = \"input\" for this model"
        )
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    rows = np.empty((len(Xt), P))
    for i in range(len(Xt)):
        loss = torch.nn.functional.cross_entropy(model(Xt[i : i + 1]), yt[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        rows[i] = torch.cat([g.reshape(-1) for g in grads]).double().numpy()
    # right singular vectors of G, smallest singular value first (rank-deficient G: zeros)
    _, s, vt = np.linalg.svd(rows, full_matrices=True)
    s_full = np.zeros(P)
    s_full[: len(s)] = s
    order = np.argsort(s_full, kind="stable")
    smax = float(s_full.max()) if P else 0.0
    null = int(np.sum(s_full <= null_tol * max(smax, 1e-300)))
    D = null if null >= 1 else max(1, P // 4)
    return vt[order[:D]], null


@dataclass
class GradientCanaries:
    """White-box gradient canaries (Dirac canaries in a rotated basis; Nasr et al. 2023).

    Canary ``i`` is the per-example gradient ``g_i = norm · sign_i · u_{slot_i}`` in
    round ``round_of[i]`` only (zero in every other round): a record whose gradient an
    adversary chose, which honest DP-SGD clips to ``max_grad_norm`` and noises like any
    other. IN canaries (``included``) join the canary hospital's data for their round and
    are Poisson-sampled at the trainer's rate in each step; OUT canaries never exist.
    Canaries of one round use distinct orthonormal directions, so they do not interfere.

    Attributes:
        directions: (D, P) orthonormal directions (see :func:`gradient_directions`).
        round_of, slot_of, sign: each canary's round (1-based), direction and sign.
        included: the inclusion coins (seeded by the audit seed; never used by guesses).
        norm: ``gradient_norm × max_grad_norm`` — far above the clip, so a missing clip shows.
        hospital: the hospital whose trainer carries the canaries.
        null: how many directions were exact null directions of the real gradients.
        detect: the design's chance that an IN canary is sampled in at least one step
            of its round, ``1 − (1 − q)^T`` (sets the number of guesses; no coins used).
    """

    directions: np.ndarray
    round_of: np.ndarray
    slot_of: np.ndarray
    sign: np.ndarray
    included: np.ndarray
    norm: float
    hospital: str
    null: int
    detect: float

    @property
    def m(self) -> int:
        return len(self.included)

    @property
    def slots(self) -> int:
        return len(self.directions) * int(self.round_of.max(initial=0))


def design_gradient_canaries(
    cfg: Any, fd: data_mod.FederatedData, settings: AuditSettings, initial_model: torch.nn.Module
) -> GradientCanaries:
    """Directions from the real records at the initial model; ``min(canaries, D·rounds)``
    canaries spread over the rounds; seeded coins and signs."""
    mean, std = pooled_standardisation(fd)
    X = np.concatenate([(h.X - mean) / std for h in fd.hospitals])
    y = np.concatenate([h.y for h in fd.hospitals])
    dirs, null = gradient_directions(initial_model, X, y)
    D, R = len(dirs), cfg.training.rounds
    m = min(settings.canaries, D * R)
    rng = np.random.default_rng([settings.seed, 0x96AD])
    slots = rng.permutation(D * R)[:m]  # (round, direction) pairs, each used once
    host = canary_host(fd, settings)
    n = next(h.n for h in fd.hospitals if h.name == host)
    k = max(1, -(-n // cfg.training.batch_size))
    q, T = 1.0 / k, cfg.training.local_epochs * k
    return GradientCanaries(
        directions=dirs, round_of=slots // D + 1, slot_of=slots % D, sign=rng.choice([-1.0, 1.0], size=m),
        included=rng.random(m) < 0.5, norm=settings.gradient_norm * cfg.privacy.max_grad_norm, hospital=host,
        null=null, detect=1.0 - (1.0 - q) ** T,
    )


class GradientCanaryHook:
    """The :class:`fedvault.dp.faults.GradientCanaryHook` of the canary hospital's trainer.

    In each DP-SGD step of round ``r`` every IN canary of round ``r`` joins the batch with
    probability ``sample_rate`` (coins from the OS CSPRNG, like a record's Poisson
    sampling; the auditor never sees them). At step 0 it also keeps the global model the
    hospital received for round ``r`` (``received``): the auditor's view, the model every
    participant of the round sees.
    """

    def __init__(self, canaries: GradientCanaries) -> None:
        self.c = canaries
        self._rng = np.random.default_rng(int.from_bytes(os.urandom(16), "big"))
        self._by_round: dict[int, np.ndarray] = {}
        self.received: dict[int, np.ndarray] = {}
        for r in np.unique(canaries.round_of):
            idx = np.flatnonzero((canaries.round_of == r) & canaries.included)
            self._by_round[int(r)] = (
                canaries.norm * canaries.sign[idx, None] * canaries.directions[canaries.slot_of[idx]]
            )

    def __call__(self, round: int, step: int, sample_rate: float, params: Sequence[torch.Tensor]) -> np.ndarray | None:
        if step == 0:
            self.received[int(round)] = torch.cat([p.detach().reshape(-1) for p in params]).double().numpy().copy()
        g = self._by_round.get(int(round))
        if g is None or len(g) == 0:
            return None
        return g[self._rng.random(len(g)) < sample_rate].astype(np.float32)


def gradient_canary_scores(canaries: GradientCanaries, global_models: Mapping[int, np.ndarray], final: np.ndarray) -> np.ndarray:
    """Score of each canary from the global models every hospital receives.

    ``Δ_r = w_{r'} − w_r`` is the change of the global model from round ``r`` to the next
    round ``r'`` the canary hospital received a model in (the final model after the last);
    SGD moves the model *against* a gradient, so canary ``i``'s score is
    ``−sign_i · ⟨u_i, Δ_{r_i}⟩``. Canaries of rounds the hospital did not train in score 0.
    """
    rounds = sorted(global_models)
    nxt = {r: (global_models[rounds[j + 1]] if j + 1 < len(rounds) else final) for j, r in enumerate(rounds)}
    scores = np.zeros(canaries.m)
    for i in range(canaries.m):
        r = int(canaries.round_of[i])
        if r in global_models:
            delta = nxt[r] - global_models[r]
            scores[i] = -canaries.sign[i] * float(canaries.directions[canaries.slot_of[i]] @ delta)
    return scores
