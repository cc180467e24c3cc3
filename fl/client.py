"""A hospital: its records, its private trainer and ledger, and the update it sends.

The hospital trains a copy of the global model on its own records (Opacus DP-SGD
when privacy is on), then sends the weighted update ``[n_k * delta_k, n_k]`` where
``delta_k`` is clipped to L2 norm ``aggregation.update_clip``. Its privacy ledger
lives as long as the hospital object — one accountant for the whole study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from torch import nn

from fedvault.fl import plain
from fedvault.fl.config import Config
from fedvault.fl.data import HospitalData
from fedvault.fl.metrics import evaluate
from fedvault.fl.models import get_vector, set_vector


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
        trainer_options: Mapping[str, Any] | None = None,
    ):
        self.data = data
        self.cfg = cfg
        self.model_factory = model_factory
        self.index = index
        self.ledger = None
        self.trainer = None
        self.noise_multiplier = noise_multiplier
        if cfg.privacy.enabled:
            from fedvault.dp.ledger import PrivacyLedger
            from fedvault.dp.training import PrivateTrainer

            p = cfg.privacy
            self.ledger = PrivacyLedger(
                client=data.name, delta=p.delta, accountant=p.accountant, budget_epsilon=p.budget
            )
            self.trainer = PrivateTrainer(
                ledger=self.ledger,
                noise_multiplier=float(noise_multiplier if noise_multiplier is not None else p.noise_multiplier),
                max_grad_norm=p.max_grad_norm,
                batch_size=cfg.training.batch_size,
                epochs=cfg.training.local_epochs,
                lr=cfg.training.lr,
                optimizer=cfg.training.optimizer,
                loss=cfg.training.loss,
                reproducible_seed=cfg.seed if p.reproducible else None,  # not private: tests/papers
                **(trainer_options or {}),  # audit only: dp.faults fault / gradient canaries
            )

    @property
    def name(self) -> str:
        return self.data.name

    def fit(self, global_vec: np.ndarray, round: int) -> LocalResult:
        """Train on local records from ``global_vec``; raise ``dp.errors.BudgetExceeded`` to decline."""
        model = self.model_factory()
        set_vector(model, global_vec)
        h = self.data
        t = self.cfg.training
        mu = t.prox_mu if t.strategy == "fedprox" else 0.0
        if self.trainer is not None:
            rep = self.trainer.train(model, h.X, h.y, round=round, prox_mu=mu)
            steps, eps, loss = rep.steps, rep.epsilon, rep.loss
        else:
            steps = plain.train(
                model, h.X, h.y, epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr,
                seed=(self.cfg.seed * 1_000_003 + self.index) * 100_003 + round, prox_mu=mu,
                loss=t.loss, optimizer=t.optimizer,
            )
            eps, loss = None, None
        delta = clip_l2(get_vector(model) - global_vec, self.cfg.aggregation.update_clip)
        if self.cfg.privacy.client_noise_multiplier is not None:
            # Client-level DP: every hospital weighs the same (see fl.distributed_dp).
            vec = np.concatenate([delta, [1.0]])
        else:
            vec = np.concatenate([h.n * delta, [float(h.n)]])
        return LocalResult(vector=vec, steps=steps, epsilon=eps, loss=loss)

    def evaluate(self, global_vec: np.ndarray) -> np.ndarray:
        """Site evaluation of the global model on the own held-out split, as the summable
        vector ``[n_val * accuracy, n_val * loss, n_val]`` (only its federation sum is revealed)."""
        model = self.model_factory()
        set_vector(model, global_vec)
        n_val = len(self.data.y_val)
        if n_val == 0:
            return np.zeros(3)
        m = evaluate(model, self.data.X_val, self.data.y_val, loss=self.cfg.training.loss)
        score = m["accuracy"] if "accuracy" in m else min(m.get("mse", float("nan")), 100.0)  # regression: MSE
        return np.array([n_val * score, n_val * min(m["loss"], 100.0), float(n_val)])

    def personalize(self, global_vec: np.ndarray, round: int) -> dict:
        """Fine-tune the global model on local records (DP, charged to this hospital's ledger).

        With ``personalization.head_only`` only the last layer is trained. Returns the
        global and personalised model's metrics on the hospital's own held-out split, and
        ε before/after; a fine-tuning that would exceed the budget is declined (the
        personalised model is then the global one).
        """
        pc = self.cfg.personalization
        h = self.data
        model = self.model_factory()
        set_vector(model, global_vec)
        before = evaluate(model, h.X_val, h.y_val, loss=self.cfg.training.loss)
        if pc.head_only:
            params = list(model.parameters())
            for p in params[:-2]:  # everything but the last layer's weight and bias
                p.requires_grad_(False)
        model.train()  # evaluate() left it in eval mode
        eps_before = self.epsilon()
        out: dict = {"global": before, "epsilon_before": eps_before}
        lr = pc.lr if pc.lr is not None else self.cfg.training.lr
        if self.ledger is not None:
            from fedvault.dp.errors import BudgetExceeded
            from fedvault.dp.training import PrivateTrainer

            # A second trainer on the same ledger continues the same accountant.
            ft = PrivateTrainer(
                ledger=self.ledger, noise_multiplier=self.trainer.noise_multiplier,
                max_grad_norm=self.cfg.privacy.max_grad_norm, batch_size=self.cfg.training.batch_size,
                epochs=pc.epochs, lr=lr, reproducible_seed=self.trainer.reproducible_seed,
                optimizer=self.cfg.training.optimizer, loss=self.cfg.training.loss,
            )
            try:
                ft.train(model, h.X, h.y, round=round)
            except BudgetExceeded as e:
                out["refused"] = str(e)
        else:
            plain.train(model, h.X, h.y, epochs=pc.epochs, batch_size=self.cfg.training.batch_size, lr=lr,
                        loss=self.cfg.training.loss, optimizer=self.cfg.training.optimizer,
                        seed=self.cfg.seed + self.index + round)
        for p in model.parameters():
            p.requires_grad_(True)
        out["personalized"] = evaluate(model, h.X_val, h.y_val, loss=self.cfg.training.loss)
        out["epsilon_after"] = self.epsilon()
        self.personal_model = model
        return out

    def epsilon(self) -> float | None:
        return None if self.ledger is None else float(self.ledger.epsilon())

