"""A hospital: its records, its private trainer and ledger, and the update it sends.

The hospital trains a copy of the global model on its own records (Opacus DP-SGD
when privacy is on), then sends the weighted update ``[n_k * delta_k, n_k]`` where
``delta_k`` is clipped to L2 norm ``aggregation.update_clip``. Its privacy ledger
lives as long as the hospital object — one accountant for the whole study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from fl import plain
from fl.config import Config
from fl.data import HospitalData
from fl.models import get_vector, set_vector


@dataclass
class LocalResult:
    """What a hospital reports after local training (the vector goes through aggregation)."""

    vector: np.ndarray  # [n_k * delta_k, n_k]
    steps: int
    epsilon: float | None
    loss: float | None


def clip_l2(v: np.ndarray, bound: float) -> np.ndarray:
    """Scale ``v`` down to L2 norm ``bound`` if it is longer."""
    norm = float(np.linalg.norm(v))
    return v * (bound / norm) if norm > bound else v


class Hospital:
    """One federation participant. Create once per study and reuse across rounds."""

    def __init__(
        self,
        data: HospitalData,
        cfg: Config,
        model_factory: Callable[[], nn.Module],
        index: int,
        noise_multiplier: float | None = None,
    ):
        self.data = data
        self.cfg = cfg
        self.model_factory = model_factory
        self.index = index
        self.ledger = None
        self.trainer = None
        self.noise_multiplier = noise_multiplier
        if cfg.privacy.enabled:
            from dp.ledger import PrivacyLedger
            from dp.training import PrivateTrainer

            p = cfg.privacy
            self.ledger = PrivacyLedger(
                client=data.name, delta=p.delta, accountant=p.accountant, budget_epsilon=p.target_epsilon
            )
            self.trainer = PrivateTrainer(
                ledger=self.ledger,
                noise_multiplier=float(noise_multiplier if noise_multiplier is not None else p.noise_multiplier),
                max_grad_norm=p.max_grad_norm,
                batch_size=cfg.training.batch_size,
                epochs=cfg.training.local_epochs,
                lr=cfg.training.lr,
                seed=cfg.seed * 1_000_003 + index,
            )

    @property
    def name(self) -> str:
        return self.data.name

    def fit(self, global_vec: np.ndarray, round: int) -> LocalResult:
        """Train on local records from ``global_vec``; raise ``dp.errors.BudgetExceeded`` to decline."""
        model = self.model_factory()
        set_vector(model, global_vec)
        h = self.data
        if self.trainer is not None:
            rep = self.trainer.train(model, h.X, h.y, round=round)
            steps, eps, loss = rep.steps, rep.epsilon, rep.loss
        else:
            t = self.cfg.training
            steps = plain.train(
                model, h.X, h.y, epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr,
                seed=(self.cfg.seed * 1_000_003 + self.index) * 100_003 + round,
            )
            eps, loss = None, None
        delta = clip_l2(get_vector(model) - global_vec, self.cfg.aggregation.update_clip)
        vec = np.concatenate([h.n * delta, [float(h.n)]])
        return LocalResult(vector=vec, steps=steps, epsilon=eps, loss=loss)

    def epsilon(self) -> float | None:
        return None if self.ledger is None else float(self.ledger.epsilon())


def seed_torch(seed: int) -> None:
    torch.manual_seed(seed)
