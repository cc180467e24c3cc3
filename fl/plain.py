"""Non-private training: local training when ``privacy.enabled = false`` and the pooled baseline.

Same loss, optimiser and input handling as the private path (:mod:`dp.objective`), without
clipping or noise, so a user compares like with like. Nothing here is released as private:
the shuffling seed may be public.
"""

from __future__ import annotations

import torch
from torch import nn

from fedvault.dp.objective import (
    ArrayLike,
    LossSpec,
    OptimizerSpec,
    as_inputs,
    as_targets,
    batch_loss,
    make_optimizer,
    resolve_loss,
    trainable,
)


def train(
    model: nn.Module,
    X: ArrayLike,
    y: ArrayLike,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    prox_mu: float = 0.0,
    loss: LossSpec = "cross_entropy",
    optimizer: OptimizerSpec = "sgd",
) -> int:
    """Mini-batch training in place; returns the number of optimiser steps taken.

    ``loss``/``optimizer`` as for :class:`dp.training.PrivateTrainer` (names or callables);
    integer inputs stay int64. ``prox_mu > 0`` adds FedProx's ``(mu/2)·||w - w_start||^2``
    to the objective.
    """
    params = trainable(model)
    ref = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(seed)
    Xt = as_inputs(X)
    yt = as_targets(y, loss)
    _, loss_fn = resolve_loss(loss)
    opt = make_optimizer(optimizer, params, lr)
    model.train()
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            batch_loss(loss_fn, model(Xt[idx]), yt[idx]).backward()
            if prox_mu > 0:
                with torch.no_grad():
                    for p, r in zip(params, ref):
                        p.grad.add_(p.detach() - r, alpha=prox_mu)
            opt.step()
            steps += 1
    return steps
