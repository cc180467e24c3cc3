"""Private local training: Opacus DP-SGD with one persistent accountant per hospital.

:class:`PrivateTrainer` is the thin façade the federation calls once per round a
hospital takes part in. It wires Opacus' pieces explicitly — ``GradSampleModule``
(per-sample gradients), ``DPOptimizer`` (per-sample clipping to ``max_grad_norm`` and
Gaussian noise) and an Opacus accountant that lives as long as the trainer — and records
one :class:`~dp.ledger.PrivacyEvent` per round in the hospital's
:class:`~dp.ledger.PrivacyLedger`.

Mechanism
---------
For ``n`` local examples and expected batch size ``B`` a round takes
``T = epochs · k`` steps with ``k = ceil(n / B)`` and Poisson sampling rate ``q = 1 / k``
(as Opacus' ``DPDataLoader``: ``sample_rate = 1 / len(data_loader)``). Each step includes
every example independently with probability ``q`` (possibly none: the step still adds
noise and is accounted), clips each per-example gradient to L2 norm ``C =
max_grad_norm``, sums, adds ``N(0, (σC)^2 I)`` and divides by the expected batch size
``n·q``. Only such steps touch the data, so the round is ``T`` compositions of the
Poisson-subsampled Gaussian mechanism, which is what the ledger records.

Budget guarantee
----------------
Before any step the planned event ``(σ, q, T)`` is checked against the ledger's budget
(:class:`~dp.errors.BudgetExceeded` if ``ε(events + planned) > budget``). The loop never
takes more than ``T`` steps and the event records the steps *actually* taken (counted by
the accountant's step hook, also when training stops early on an error); ε is
non-decreasing in steps, so the recorded ε never exceeds the budget.

Randomness
----------
Poisson sampling and DP noise come from two ``torch.Generator`` seeded from
``SHA-256(seed, client, round)``, so a run is reproducible from its seed. A seeded
Mersenne-Twister generator is *not* a cryptographic RNG: this is right for simulation
and tests; ``seed=None`` draws the master seed from ``os.urandom`` (not reproducible).
A deployment facing a real adversary should use Opacus' ``secure_mode`` (torchcsprng),
which is not available in this environment.

Loss in :class:`TrainReport` is the mean *non-private* training loss — a local
diagnostic only; do not send it to the server.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from fedvault.dp.accounting import make_accountant, opacus_history
from fedvault.dp.errors import AccountingError, BudgetExceeded, PrivacyError
from fedvault.dp.faults import Fault, GradientCanaryHook, append_per_sample_gradients, dp_optimizer_class
from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger

OPTIMIZERS = ("sgd", "adam")


class UnsupportedModelError(PrivacyError, ValueError):
    """The model has layers Opacus cannot compute per-sample gradients for (e.g. BatchNorm)."""


@dataclass(frozen=True)
class TrainReport:
    """What one private training round did.

    Attributes:
        round: federation round.
        steps: optimizer steps actually taken (= the event recorded in the ledger).
        sample_rate: Poisson sampling rate q.
        noise_multiplier: σ.
        epsilon: the hospital's total ε after this round at the ledger's δ.
        loss: mean training loss over non-empty batches (local, non-private diagnostic).
        examples: number of local examples n.
        fault: the audit fault this round ran with (``"none"`` unless auditing; any
            other value means the recorded ε is not a guarantee, see :mod:`dp.faults`).
    """

    round: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    epsilon: float
    loss: float
    examples: int
    fault: str = "none"


def plan_round(n: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(q, T)`` for ``n`` examples: ``k = ceil(n / batch_size)``, ``q = 1/k``, ``T = epochs·k``."""
    if n < 1:
        raise AccountingError("cannot train on zero examples")
    k = math.ceil(n / batch_size)
    return 1.0 / k, epochs * k


def _derive_seed(master: int, client: str, round: int, purpose: str) -> int:
    h = hashlib.sha256(f"fedvault-dp|{master}|{client}|{round}|{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "big") & ((1 << 63) - 1)


class PrivateTrainer:
    """DP-SGD for one hospital over a whole study (create once, call :meth:`train` per round).

    Args:
        ledger: the hospital's ledger; its events must be the whole history (a trainer
            built on a loaded ledger continues its accountant).
        noise_multiplier: σ > 0 (may be changed between rounds through the attribute).
        max_grad_norm: per-example clipping norm C > 0.
        batch_size: expected Poisson batch size B (sets q = 1/ceil(n/B)).
        epochs: local epochs per round (T = epochs · ceil(n/B) steps).
        lr: learning rate of the local optimizer.
        seed: master seed of sampling and noise (None: from os.urandom).
        optimizer: ``"sgd"`` or ``"adam"`` (fresh state each round).
        fault: TEST/AUDIT ONLY — a deliberate bug (:class:`dp.faults.Fault`) that
            skips noise or clipping while the accountant records the configured σ.
        gradient_canaries: AUDIT ONLY — a :class:`dp.faults.GradientCanaryHook`
            adding canary per-sample gradients before clipping (clipped and noised
            like any record's).
    """

    def __init__(
        self,
        ledger: PrivacyLedger,
        noise_multiplier: float,
        max_grad_norm: float,
        batch_size: int,
        epochs: int = 1,
        lr: float = 0.1,
        seed: int | None = 0,
        optimizer: str = "sgd",
        fault: Fault | str = Fault.NONE,
        gradient_canaries: GradientCanaryHook | None = None,
    ) -> None:
        if not isinstance(ledger, PrivacyLedger):
            raise AccountingError("ledger must be a dp.ledger.PrivacyLedger")
        if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier > 0):
            raise AccountingError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
        if not (isinstance(max_grad_norm, (int, float)) and 0 < max_grad_norm < math.inf):
            raise AccountingError(f"max_grad_norm must be a positive number, got {max_grad_norm!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise AccountingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise AccountingError(f"epochs must be an integer >= 1, got {epochs!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise AccountingError(f"lr must be > 0, got {lr!r}")
        if optimizer not in OPTIMIZERS:
            raise AccountingError(f"optimizer {optimizer!r} unknown: use one of {OPTIMIZERS}")
        self.ledger = ledger
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = float(lr)
        self.optimizer = optimizer
        self.seed = int.from_bytes(os.urandom(8), "big") if seed is None else int(seed)
        self._accountant = make_accountant(ledger.accountant, opacus_history(ledger.events))
        self.fault = Fault.parse(fault)
        self.gradient_canaries = gradient_canaries

    @property
    def accountant(self):  # noqa: ANN201 - an Opacus IAccountant
        """The persistent Opacus accountant (its history equals the ledger's events)."""
        return self._accountant

    def planned_event(self, n: int, round: int) -> PrivacyEvent:
        """The event a round on ``n`` examples would record if all planned steps run."""
        q, steps = plan_round(n, self.batch_size, self.epochs)
        return PrivacyEvent(round=round, noise_multiplier=self.noise_multiplier, sample_rate=q, steps=steps)

    def check(self, n: int, round: int) -> str | None:
        """Reason why a round on ``n`` examples would exceed the budget, else None."""
        return self.ledger.would_exceed(self.planned_event(n, round))

    def train(
        self,
        model: nn.Module,
        X: np.ndarray,
        y: np.ndarray,
        round: int,
        *,
        prox_mu: float = 0.0,
        reference_params: Iterable[torch.Tensor] | None = None,
    ) -> TrainReport:
        """Train ``model`` in place with DP-SGD on ``(X, y)`` for one round.

        Cross-entropy on the model's logits. With ``prox_mu > 0`` the FedProx term
        ``(μ/2)·||w − w_ref||²`` is added to the objective; its gradient ``μ(w − w_ref)``
        involves no data, so it is added *after* clipping and noise (post-processing, no
        privacy cost). ``reference_params`` defaults to the model's parameters on entry.

        Raises:
            BudgetExceeded: the planned round would exceed the budget (model untouched,
                nothing recorded; the caller records the refusal).
            UnsupportedModelError: the model has layers Opacus cannot handle.
        """
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim < 2 or y.ndim != 1 or len(X) != len(y):
            raise AccountingError(f"want X of shape (n, ...) and y of shape (n,), got {X.shape}, {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise AccountingError(f"labels must be integers, got dtype {y.dtype}")
        if not np.all(np.isfinite(X)):
            raise AccountingError("features contain NaN or infinity")
        n = len(X)
        planned = self.planned_event(n, round)
        reason = self.ledger.would_exceed(planned)
        if reason is not None:
            raise BudgetExceeded(reason, client=self.ledger.client, round=round)
        if opacus_history(self.ledger.events) != [tuple(h) for h in self._accountant.history]:
            # another trainer on the same ledger (e.g. personalisation) recorded events: the
            # ledger is the source of truth, so the accountant continues from its events
            self._accountant = make_accountant(self.ledger.accountant, opacus_history(self.ledger.events))
        if prox_mu < 0 or not math.isfinite(prox_mu):
            raise AccountingError(f"prox_mu must be >= 0, got {prox_mu!r}")

        from opacus.grad_sample import GradSampleModule
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise UnsupportedModelError(
                "model cannot be trained with DP-SGD: "
                + "; ".join(str(e) for e in errors)
                + " (use GroupNorm/LayerNorm instead of BatchNorm)"
            )

        q, T = planned.sample_rate, planned.steps
        params = [p for p in model.parameters() if p.requires_grad]
        if prox_mu > 0:
            ref: Sequence[torch.Tensor] = [
                r.detach().clone() for r in (reference_params if reference_params is not None else params)
            ]
            if len(ref) != len(params) or any(r.shape != p.shape for r, p in zip(ref, params)):
                raise AccountingError("reference_params do not match the model's trainable parameters")
        Xt = torch.as_tensor(X, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.int64)
        g_sample = torch.Generator().manual_seed(_derive_seed(self.seed, self.ledger.client, round, "sample"))
        g_noise = torch.Generator().manual_seed(_derive_seed(self.seed, self.ledger.client, round, "noise"))

        base: torch.optim.Optimizer
        if self.optimizer == "sgd":
            base = torch.optim.SGD(params, lr=self.lr)
        else:
            base = torch.optim.Adam(params, lr=self.lr)
        was_training = model.training
        model.train()
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        dpo = dp_optimizer_class(self.fault)(
            base,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=n * q,
            loss_reduction="mean",
            generator=g_noise,
        )
        taken = 0
        acc = self._accountant

        def on_step(opt) -> None:  # noqa: ANN001 - an Opacus DPOptimizer
            nonlocal taken
            acc.step(noise_multiplier=opt.noise_multiplier, sample_rate=q)
            taken += 1

        dpo.attach_step_hook(on_step)
        losses: list[float] = []
        quiet = warnings.catch_warnings()
        quiet.__enter__()
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        try:
            for step in range(T):
                idx = torch.nonzero(torch.rand(n, generator=g_sample) < q).squeeze(1)
                xb, yb = Xt[idx], yt[idx]
                dpo.zero_grad(set_to_none=True)
                logits = gsm(xb)
                if len(idx) > 0:
                    loss = nn.functional.cross_entropy(logits, yb)
                    losses.append(float(loss.detach()))
                else:  # empty Poisson batch: zero per-sample grads, the step still adds noise
                    loss = logits.sum() * 0.0
                loss.backward()
                if self.gradient_canaries is not None:  # audit only: canary per-sample gradients
                    append_per_sample_gradients(params, self.gradient_canaries(round, step, q))
                if not dpo.pre_step():  # clip, noise, scale, accountant hook
                    raise AccountingError("Opacus skipped a step unexpectedly")
                if prox_mu > 0:
                    with torch.no_grad():
                        for p, r in zip(params, ref):
                            p.grad.add_(p.detach() - r, alpha=prox_mu)
                base.step()
        finally:
            quiet.__exit__(None, None, None)
            gsm._close()  # removes hooks and grad_sample attributes from the caller's model
            for p in model.parameters():
                p.grad = None
                if hasattr(p, "summed_grad"):
                    del p.summed_grad
            model.train(was_training)
            if taken:
                self.ledger.record(
                    PrivacyEvent(round=round, noise_multiplier=self.noise_multiplier, sample_rate=q, steps=taken)
                )
        if [tuple(h) for h in acc.history] != opacus_history(self.ledger.events):
            raise AccountingError("the ledger's events differ from the live accountant's history")
        eps = self.ledger.epsilon()
        return TrainReport(
            round=round,
            steps=taken,
            sample_rate=q,
            noise_multiplier=self.noise_multiplier,
            epsilon=eps,
            loss=float(np.mean(losses)) if losses else float("nan"),
            examples=n,
            fault=self.fault.value,
        )
