"""What a hospital trains: the loss, the optimiser, input/target tensors, a model check.

Shared by the private trainer (:mod:`dp.training`), non-private local training
(``fl.plain``) and evaluation (``fl.metrics``), so that a user's own model, loss and
data behave the same on every path.

Losses
------
A loss maps ``(outputs, targets)`` of a batch to the **mean over the batch of the
per-example losses** — DP-SGD clips per-example gradients and Opacus undoes the mean
(``loss_reduction="mean"``), so a loss reduced any other way would be mis-scaled.

- ``"cross_entropy"`` — classification; outputs are logits ``(n, classes)``, targets
  integer class ids ``(n,)``.
- ``"mse"`` — regression; an example's loss is its squared error *summed* over output
  dimensions; targets are real numbers of the outputs' shape (``(n,)`` for an ``(n, 1)``
  output is accepted).
- a callable ``loss(outputs, targets) -> scalar`` reduced as above (e.g.
  ``torch.nn.functional.binary_cross_entropy_with_logits``). Targets keep their kind:
  integer targets are passed as int64, real ones as float32.

Inputs
------
Real-valued features become float32; integer inputs (token ids, category codes) stay
integers (int64), so ``nn.Embedding`` works; booleans become float32. Non-finite
real inputs are refused.
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch
from torch import nn

from fedvault.dp.errors import PrivacyError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
LossSpec = Union[str, LossFn]
OptimizerSpec = Union[str, OptimizerFactory]
ArrayLike = Union[np.ndarray, torch.Tensor]

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam")


class ObjectiveError(PrivacyError, ValueError):
    """Data, loss or optimiser that cannot be trained as given (the message says what to change)."""


class UnsupportedModelError(PrivacyError, ValueError):
    """The model has layers Opacus cannot compute per-sample gradients for (e.g. BatchNorm)."""


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if out.numel() != y.numel():
        raise ObjectiveError(
            f"loss 'mse': model outputs have shape {tuple(out.shape)} but targets {tuple(y.shape)}; "
            "make the model output one value per target"
        )
    return (out - y.view_as(out)).pow(2).reshape(len(out), -1).sum(1).mean()


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y)


def resolve_loss(loss: LossSpec) -> tuple[str, LossFn]:
    """``(name, fn)`` for a loss name in :data:`LOSSES` or a callable (name ``"custom"``)."""
    if callable(loss):
        return "custom", loss
    if loss == "cross_entropy":
        return "cross_entropy", _cross_entropy
    if loss == "mse":
        return "mse", _mse
    raise ObjectiveError(f"loss {loss!r} unknown: use one of {LOSSES} or a callable loss(outputs, targets)")


def is_classification(loss: LossSpec) -> bool:
    """Whether accuracy is a meaningful metric for ``loss`` (cross-entropy only)."""
    return loss == "cross_entropy"


def _tensor(a: ArrayLike, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise ObjectiveError(f"{what} must be numbers, got dtype {arr.dtype}")
    return torch.as_tensor(arr)


def as_inputs(X: ArrayLike) -> torch.Tensor:
    """Model inputs of shape ``(n, ...)``: reals → float32, integers stay int64, bool → float32."""
    t = _tensor(X, "inputs")
    if t.ndim < 1:
        raise ObjectiveError(f"inputs need a leading record dimension, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool:
        return t.float()
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ObjectiveError("inputs contain NaN or infinity")
        return t.float()
    if t.is_complex():
        raise ObjectiveError("complex inputs are not supported")
    return t.long()


def as_targets(y: ArrayLike, loss: LossSpec) -> torch.Tensor:
    """Targets of shape ``(n, ...)`` in the dtype ``loss`` expects (see module doc)."""
    t = _tensor(y, "targets")
    if t.ndim < 1:
        raise ObjectiveError(f"targets need a leading record dimension, got shape {tuple(t.shape)}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ObjectiveError("targets contain NaN or infinity")
    if loss == "cross_entropy":
        if t.is_floating_point() or t.dtype == torch.bool or t.ndim != 1:
            raise ObjectiveError(
                f"loss 'cross_entropy' needs integer class ids of shape (n,), got {t.dtype} {tuple(t.shape)}; "
                "for real-valued targets use loss = \"mse\" (regression) or pass your own loss"
            )
        return t.long()
    if loss == "mse" or t.is_floating_point() or t.dtype == torch.bool:
        return t.float()
    return t.long()


def make_optimizer(spec: OptimizerSpec, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """A fresh optimiser: ``"sgd"``/``"adam"`` at ``lr``, or ``spec(params)`` for a factory
    (the factory sets its own learning rate)."""
    if callable(spec):
        opt = spec(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ObjectiveError(
                f"optimizer factory returned {type(opt).__name__}; it must return a torch.optim.Optimizer "
                "over the parameters it is given, e.g. lambda ps: torch.optim.AdamW(ps, lr=1e-3)"
            )
        return opt
    if spec == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if spec == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ObjectiveError(f"optimizer {spec!r} unknown: use one of {OPTIMIZERS} or a factory params -> Optimizer")


def check_optimizer_spec(spec: OptimizerSpec) -> None:
    """Refuse an unknown optimiser name early (a factory is checked when it is called)."""
    if not callable(spec) and spec not in OPTIMIZERS:
        raise ObjectiveError(f"optimizer {spec!r} unknown: use one of {OPTIMIZERS} or a factory params -> Optimizer")


def check_model(model: nn.Module) -> None:
    """Refuse a model DP-SGD cannot train, saying how to fix it (before anything is charged).

    Uses Opacus' ``ModuleValidator`` (BatchNorm, in-place/unsupported layers, ...).

    Raises:
        UnsupportedModelError: with every problem found and the fix.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"the model factory must return a torch.nn.Module, got {type(model).__name__}")
    from opacus.validators import ModuleValidator

    was_training = model.training
    model.train()  # the check is about layers; DP-SGD trains in training mode anyway
    try:
        errors = ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if errors:
        raise UnsupportedModelError(
            "model cannot be trained with DP-SGD: "
            + "; ".join(str(e) for e in errors)
            + ". Fix: normalise per example — LayerNorm for feature vectors (n, C), GroupNorm for "
            "(n, C, ...) maps — instead of BatchNorm (per-example gradients cannot mix examples); for "
            "convolutional models return opacus.validators.ModuleValidator.fix(model) from your model factory"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise UnsupportedModelError("the model has no trainable parameters")


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser updates (``requires_grad``), in ``model.parameters()`` order."""
    return [p for p in model.parameters() if p.requires_grad]


def check_per_example_mean(fn: LossFn | None, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse a model or callable loss that mixes the examples of a batch (before any step).

    DP-SGD's guarantee rests on it: per-example clipping bounds one record's influence only if
    example ``i``'s gradient depends on example ``i`` alone. A layer that uses batch statistics
    (a hand-written centring, a custom normalisation Opacus' validator cannot see) or a loss that
    couples the examples (batch statistics, contrastive terms) leaks other records into every
    "per-example" gradient; a sum (or other) reduction mis-scales the loss. The probe runs the
    model (eval mode, no gradient) on the first four records together and one by one, and the
    loss ``fn`` (a user's callable; None for the built-ins) on the four and on its two halves: the
    mean of per-example losses satisfies ``L(a ∪ b) = (|a| L(a) + |b| L(b)) / (|a| + |b|)``.
    """
    if len(X) < 4:
        return
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(X[:4])
            alone = torch.cat([model(X[i : i + 1]) for i in range(4)])
            losses = None if fn is None else (fn(out, y[:4]), fn(out[:2], y[:2]), fn(out[2:4], y[2:4]))
    except Exception:  # noqa: BLE001 - the probe only refuses what it can evaluate; training reports errors
        return
    finally:
        model.train(was)
    if alone.shape == out.shape and not torch.allclose(out, alone, rtol=1e-4, atol=1e-5):
        raise ObjectiveError(
            "the model's output for a record depends on the other records of its batch (it differs when the "
            "record is run alone): a layer uses batch statistics, so DP-SGD's per-example clipping would not "
            "bound one record's influence; use per-example layers (LayerNorm/GroupNorm, no batch centring)"
        )
    if losses is None or not all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in losses):
        return  # batch_loss names the problem (not a scalar) at the first step
    whole, halves = float(losses[0]), (float(losses[1]) + float(losses[2])) / 2
    if not np.isclose(whole, halves, rtol=1e-4, atol=1e-6):
        raise ObjectiveError(
            f"the loss is not the batch mean of per-example losses (on 4 records it gives {whole:.6g}, the mean "
            f"of its two halves {halves:.6g}): it couples the examples of a batch or is reduced otherwise, so "
            "DP-SGD's per-example clipping would not bound one record's influence; compute each example's loss "
            "on its own and return their mean"
        )


def batch_loss(fn: LossFn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``fn(out, y)``, checked to be a finite-shaped scalar (the batch mean)."""
    loss = fn(out, y)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ObjectiveError(
            "the loss must return a scalar tensor: the mean over the batch of the per-example losses"
        )
    return loss
