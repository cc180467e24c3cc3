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
Poisson sampling and the Gaussian noise are the coins DP rests on; by default both come
from a fresh :class:`~dp.randomness.RandomStream` per round and purpose — AES-256-CTR
keyed with 256 bits from ``os.urandom`` (the OS CSPRNG), Gaussians hardened against
floating-point attacks as in Opacus' ``secure_mode`` (see :mod:`dp.randomness` for the
assumptions: AES is a PRF, the OS CSPRNG is seeded). Nothing the trainer draws depends
on the config's seed, which is public (history.json): the seed fixes the data split and
the model initialisation only. A seeded Mersenne Twister (``torch.Generator``, the old
behaviour) is *not* acceptable for this: anyone knowing the seed replays the noise and
removes it. Opacus' own ``secure_mode`` needs ``torchcsprng``, which has no build for
torch 2.13.

``reproducible_seed=`` (only when the user sets ``privacy.reproducible = true``) derives
the streams from that seed instead; then every draw is replayable by whoever knows the
seed, the report says ``reproducible = True`` and the run is **not private** — for tests
and papers only.

Model, loss, optimiser, data
----------------------------
Any ``nn.Module`` Opacus can compute per-sample gradients for (checked with Opacus'
``ModuleValidator`` before anything is charged; BatchNorm is refused with the fix), a
loss by name (``"cross_entropy"``, ``"mse"``) or a callable, an optimiser by name
(``"sgd"``, ``"adam"``) or a factory, and inputs of any numeric dtype (integer token
ids stay int64). See :mod:`dp.objective`.

Loss in :class:`TrainReport` is the mean *non-private* training loss — a local
diagnostic only; do not send it to the server.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from fedvault.dp.accounting import make_accountant, opacus_history
from fedvault.dp.errors import AccountingError, BudgetExceeded
from fedvault.dp.faults import Fault, GradientCanaryHook, append_per_sample_gradients, dp_optimizer_class
from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger
from fedvault.dp.objective import (
    OPTIMIZERS,
    ArrayLike,
    LossSpec,
    OptimizerSpec,
    UnsupportedModelError,
    as_inputs,
    as_targets,
    batch_loss,
    check_model,
    check_per_example_mean,
    check_optimizer_spec,
    make_optimizer,
    resolve_loss,
    trainable,
)
from fedvault.dp.randomness import RandomStream

__all__ = ["OPTIMIZERS", "PrivateTrainer", "TrainReport", "UnsupportedModelError", "stream_noise_optimizer_class", "plan_round"]


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
        reproducible: True when sampling and noise were derived from ``reproducible_seed``
            (replayable by anyone who knows it: **not private**).
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
    reproducible: bool = False
    fault: str = "none"


def plan_round(n: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(q, T)`` for ``n`` examples: ``k = ceil(n / batch_size)``, ``q = 1/k``, ``T = epochs·k``."""
    if n < 1:
        raise AccountingError("cannot train on zero examples")
    k = math.ceil(n / batch_size)
    return 1.0 / k, epochs * k


_DP_OPTIMIZER: type | None = None


def stream_noise_optimizer_class() -> type:
    """Opacus' ``DPOptimizer`` with its Gaussian noise drawn from a :class:`RandomStream`.

    Everything else — per-sample clipping, scaling by the expected batch size, the step
    hook — is Opacus' own. Built on first use so that importing this module loads no
    Opacus.
    """
    global _DP_OPTIMIZER
    if _DP_OPTIMIZER is None:
        from opacus.optimizers import DPOptimizer
        from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

        class StreamNoiseDPOptimizer(DPOptimizer):
            """``DPOptimizer`` whose noise ``N(0, (σC)^2 I)`` comes from ``noise_stream``."""

            def __init__(self, optimizer: torch.optim.Optimizer, *, noise_stream: RandomStream, **kwargs: Any):
                super().__init__(optimizer, **kwargs)
                self.noise_stream = noise_stream

            def add_noise(self) -> None:
                std = self.noise_multiplier * self.max_grad_norm
                for p in self.params:
                    _check_processed_flag(p.summed_grad)
                    s = p.summed_grad
                    z = torch.from_numpy(self.noise_stream.normal(s.numel(), std)).view(s.shape)
                    p.grad = (s.double() + z).to(s.dtype).view_as(p)  # add in float64, round once
                    _mark_as_processed(p.summed_grad)

        _DP_OPTIMIZER = StreamNoiseDPOptimizer
    return _DP_OPTIMIZER


class PrivateTrainer:
    """DP-SGD for one hospital over a whole study (create once, call :meth:`train` per round).

    Args:
        ledger: the hospital's ledger; its events must be the whole history (a trainer
            built on a loaded ledger continues its accountant).
        noise_multiplier: σ > 0 (may be changed between rounds through the attribute).
        max_grad_norm: per-example clipping norm C > 0.
        batch_size: expected Poisson batch size B (sets q = 1/ceil(n/B)).
        epochs: local epochs per round (T = epochs · ceil(n/B) steps).
        lr: learning rate of a named optimiser (a factory sets its own).
        optimizer: ``"sgd"``, ``"adam"`` or a factory ``params -> torch.optim.Optimizer``
            (fresh state each round).
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``(outputs, targets) -> batch
            mean`` (see :mod:`dp.objective`).
        reproducible_seed: None (default): sampling and noise from the OS CSPRNG. An
            integer makes them replayable from it — **not private**; pass it only when
            the user asked for ``privacy.reproducible = true``.
        fault: TEST/AUDIT ONLY — a deliberate bug (:class:`dp.faults.Fault`) that
            skips noise or clipping while the accountant records the configured σ.
        gradient_canaries: AUDIT ONLY — a :class:`dp.faults.GradientCanaryHook`
            adding canary per-sample gradients before clipping (clipped and noised
            like any record's).

    Raises:
        AccountingError: invalid privacy parameters.
        ObjectiveError: unknown loss or optimiser name.
    """

    def __init__(
        self,
        ledger: PrivacyLedger,
        noise_multiplier: float,
        max_grad_norm: float,
        batch_size: int,
        epochs: int = 1,
        lr: float = 0.1,
        optimizer: OptimizerSpec = "sgd",
        *,
        loss: LossSpec = "cross_entropy",
        reproducible_seed: int | None = None,
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
        check_optimizer_spec(optimizer)
        resolve_loss(loss)
        if reproducible_seed is not None:
            RandomStream.reproducible_from(reproducible_seed, "check")  # validates the seed
        self.ledger = ledger
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = float(lr)
        self.optimizer = optimizer
        self.loss = loss
        self.reproducible_seed = reproducible_seed
        self._accountant = make_accountant(ledger.accountant, opacus_history(ledger.events))
        self.fault = Fault.parse(fault)
        self.gradient_canaries = gradient_canaries

    @property
    def reproducible(self) -> bool:
        """True when sampling and noise are replayable from ``reproducible_seed`` (not private)."""
        return self.reproducible_seed is not None

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

    def _stream(self, round: int, purpose: str) -> RandomStream:
        if self.reproducible_seed is None:
            return RandomStream.from_os()
        return RandomStream.reproducible_from(self.reproducible_seed, f"dp-sgd|{self.ledger.client}|{round}|{purpose}")

    def train(
        self,
        model: nn.Module,
        X: ArrayLike,
        y: ArrayLike,
        round: int,
        *,
        prox_mu: float = 0.0,
        reference_params: Iterable[torch.Tensor] | None = None,
    ) -> TrainReport:
        """Train ``model`` in place with DP-SGD on ``(X, y)`` for one round.

        ``X``: arrays or tensors of shape ``(n, ...)`` (reals → float32, integers stay
        int64); ``y``: targets of shape ``(n, ...)`` for the trainer's loss. With
        ``prox_mu > 0`` the FedProx term ``(μ/2)·||w − w_ref||²`` is added to the
        objective; its gradient ``μ(w − w_ref)`` involves no data, so it is added *after*
        clipping and noise (post-processing, no privacy cost). ``reference_params``
        defaults to the model's parameters on entry.

        Raises:
            BudgetExceeded: the planned round would exceed the budget (model untouched,
                nothing recorded; the caller records the refusal).
            UnsupportedModelError: the model has layers Opacus cannot handle (nothing
                recorded).
            ObjectiveError: inputs/targets that do not fit the loss (nothing recorded).
        """
        Xt = as_inputs(X)
        yt = as_targets(y, self.loss)
        if len(Xt) != len(yt):
            raise AccountingError(f"inputs hold {len(Xt)} records but targets {len(yt)}")
        _, loss_fn = resolve_loss(self.loss)
        n = len(Xt)
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
        check_model(model)
        # per-example model and (a user's) loss: what DP-SGD's per-example clipping assumes
        check_per_example_mean(loss_fn if resolve_loss(self.loss)[0] == "custom" else None, model, Xt, yt)

        from opacus.grad_sample import GradSampleModule

        q, T = planned.sample_rate, planned.steps
        params = trainable(model)
        if prox_mu > 0:
            ref: Sequence[torch.Tensor] = [
                r.detach().clone() for r in (reference_params if reference_params is not None else params)
            ]
            if len(ref) != len(params) or any(r.shape != p.shape for r, p in zip(ref, params)):
                raise AccountingError("reference_params do not match the model's trainable parameters")
        sampling = self._stream(round, "sample")
        base = make_optimizer(self.optimizer, params, self.lr)
        was_training = model.training
        model.train()
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        dpo = dp_optimizer_class(self.fault, stream_noise_optimizer_class())(
            base,
            noise_stream=self._stream(round, "noise"),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=n * q,
            loss_reduction="mean",
        )
        taken = 0
        acc = self._accountant

        def on_step(opt: Any) -> None:
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
                idx = torch.from_numpy(np.flatnonzero(sampling.bernoulli(n, q)))
                xb, yb = Xt[idx], yt[idx]
                dpo.zero_grad(set_to_none=True)
                out = gsm(xb)
                if len(idx) > 0:
                    loss = batch_loss(loss_fn, out, yb)
                    losses.append(float(loss.detach()))
                else:  # empty Poisson batch: zero per-sample grads, the step still adds noise
                    loss = out.sum() * 0.0
                loss.backward()
                if self.gradient_canaries is not None:  # audit only: canary per-sample gradients
                    append_per_sample_gradients(params, self.gradient_canaries(round, step, q, params))
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
                if not self.fault.private:  # audit only: the ledger itself says it is no guarantee
                    self.ledger.mark_not_private(round, self.fault.not_private_reason())
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
            reproducible=self.reproducible,
            fault=self.fault.value,
        )
