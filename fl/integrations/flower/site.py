"""A hospital's local step behind the Flower mod: DP-SGD charged to a persistent ledger.

:class:`Site` is what :class:`~fl.integrations.flower.mod.FedVaultMod` asks of the
hospital: a refusal check before the round (privacy budget) and the weighted update
``[n_k * delta_k, n_k]`` (``delta_k`` clipped to L2 norm ``update_clip``), exactly
:meth:`fl.client.Hospital.fit`.  :class:`HospitalSite` runs it with the hospital's
ledger loaded from and saved back to its node directory after every round, so the
accountant spans every Flower run the hospital ever takes part in.

Ledger rounds: a ledger's rounds strictly increase over the hospital's whole life,
while each Flower run counts from 1; a server round not after the last recorded one
is recorded as ``last + 1`` (``ledger_round``).  Every training is charged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from fedvault.dp.errors import BudgetExceeded
from fedvault.fl.client import Hospital


class Site(Protocol):
    """The hospital side of a secure-aggregation round."""

    name: str
    records: int

    def refusal(self, round: int) -> str | None:
        """Why this hospital declines ``round`` (e.g. its budget is spent), or None."""
        ...

    def fit(self, weights: np.ndarray, round: int, config: Mapping[str, Any] | None = None) -> np.ndarray:
        """Train from ``weights``; the weighted update vector (length ``len(weights) + 1``).
        ``config`` is the strategy's train config (``server-round`` included)."""
        ...

    # Optional, checked when a round is advertised, before anything is trained (see ``mod.check_proposal``):
    # ``model_size: int`` (number of model values) and ``max_abs() -> float`` (largest
    # absolute value the update vector may hold).


class HospitalSite:
    """:class:`fl.client.Hospital` with its ledger persisted in ``ledger_path``.

    dp_seed
        Seed of DP-SGD's batch sampling and noise.  ``None`` (the default, and the
        only safe choice in a deployment) draws it from ``os.urandom``: anyone who
        knows the seed can recompute the noise.  Tests and demos pass one to replay.
    ledger_key
        Optional HMAC key of the ledger file (detects deliberate edits, not only
        corruption; see :mod:`dp.ledger`).
    """

    def __init__(self, hospital: Hospital, ledger_path: str | Path, *, dp_seed: int | None = None,
                 ledger_key: bytes | None = None):
        self.hospital = hospital
        self.name = hospital.name
        self.records = hospital.data.n
        self.ledger_path = Path(ledger_path)
        self.ledger_key = ledger_key
        if hospital.trainer is not None:
            from fedvault.dp.ledger import PrivacyLedger
            from fedvault.dp.training import PrivateTrainer

            if self.ledger_path.exists():
                ledger = PrivacyLedger.load(self.ledger_path, key=ledger_key)
            else:
                ledger = hospital.ledger
                ledger.save(self.ledger_path, key=ledger_key)
            old = hospital.trainer
            hospital.ledger = ledger
            hospital.trainer = PrivateTrainer(
                ledger=ledger, noise_multiplier=old.noise_multiplier, max_grad_norm=old.max_grad_norm,
                batch_size=old.batch_size, epochs=old.epochs, lr=old.lr, reproducible_seed=dp_seed, optimizer=old.optimizer,
            )

    @property
    def ledger(self):  # noqa: ANN201 - dp.ledger.PrivacyLedger | None
        return self.hospital.ledger

    def ledger_round(self, round: int) -> int:
        ledger = self.hospital.ledger
        if ledger is None or not ledger.events:
            return round
        last = ledger.events[-1].round
        return round if round > last else last + 1

    def refusal(self, round: int) -> str | None:
        trainer = self.hospital.trainer
        if trainer is None:
            return None
        r = self.ledger_round(round)
        reason = trainer.check(self.records, r)
        if reason is not None:
            self.hospital.ledger.refuse(r, reason)
            self.hospital.ledger.save(self.ledger_path, key=self.ledger_key)
        return reason

    @property
    def model_size(self) -> int:
        return sum(int(p.numel()) for p in self.hospital.model_factory().state_dict().values())

    def max_abs(self) -> float:
        """Largest value of ``[n delta, n]`` with ``||delta|| <= update_clip``: ``n * max(update_clip, 1)``."""
        return float(self.records) * max(float(self.hospital.cfg.aggregation.update_clip), 1.0)

    def fit(self, weights: np.ndarray, round: int, config: Mapping[str, Any] | None = None) -> np.ndarray:
        try:
            return self.hospital.fit(weights, self.ledger_round(round)).vector
        finally:
            if self.hospital.ledger is not None:  # events are recorded even if training failed midway
                self.hospital.ledger.save(self.ledger_path, key=self.ledger_key)


__all__ = ["Site", "HospitalSite", "BudgetExceeded"]
