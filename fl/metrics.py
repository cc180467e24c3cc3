"""Evaluation of a model on held-out records: accuracy, ROC-AUC, cross-entropy loss."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``{accuracy, roc_auc, loss}``; ROC-AUC is one-vs-rest macro for more than two classes
    and ``nan`` when the records hold a single class."""
    if len(y) == 0:
        return {"accuracy": math.nan, "roc_auc": math.nan, "loss": math.nan}
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(X, dtype=torch.float32))
        loss = nn.functional.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long)).item()
        prob = torch.softmax(logits, dim=1).double().numpy()
    acc = float((prob.argmax(1) == y).mean())
    if len(np.unique(y)) < 2:
        return {"accuracy": acc, "roc_auc": math.nan, "loss": float(loss)}
    try:
        warnings.filterwarnings("ignore", message="Only one class is present", module="sklearn")
        if prob.shape[1] == 2:
            auc = float(roc_auc_score(y, prob[:, 1]))
        else:
            auc = float(roc_auc_score(y, prob, multi_class="ovr", labels=list(range(prob.shape[1]))))
    except ValueError:
        auc = math.nan
    return {"accuracy": acc, "roc_auc": auc, "loss": float(loss)}
