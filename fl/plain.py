"""Non-private training: local training when ``privacy.enabled = false`` and the pooled baseline.

Same loss (cross-entropy on logits) and optimiser as the private path, without
clipping or noise, so a user compares like with like.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    prox_mu: float = 0.0,
) -> int:
    """Mini-batch SGD in place; returns the number of optimiser steps taken.

    ``prox_mu > 0`` adds FedProx's ``(mu/2)·||w - w_start||^2`` to the objective.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    ref = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(seed)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.SGD(params, lr=lr)
    model.train()
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            if prox_mu > 0:
                with torch.no_grad():
                    for p, r in zip(params, ref):
                        p.grad.add_(p.detach() - r, alpha=prox_mu)
            opt.step()
            steps += 1
    return steps
