"""Evaluation on held-out records: accuracy, ROC-AUC, cross-entropy loss, and their uncertainty.

Test sets in hospital studies are small (~100 patients), so a point estimate alone
misleads: :func:`bootstrap_ci` gives percentile bootstrap intervals (resampling test
patients with replacement) and :func:`paired_difference_ci` the interval of a difference
between two models scored on the *same* patients (paired resampling), which is what a
"gap" between the federated model and a baseline needs.

Regression (``evaluate(..., loss="mse")``, bring-your-own models): MSE, MAE and the
training loss — no accuracy. A custom loss callable reports its own value as ``loss``,
plus accuracy for integer class targets or MSE/MAE for real-valued ones.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fedvault.dp.objective import ArrayLike, LossSpec, as_inputs, as_targets, resolve_loss

CI_LEVEL = 0.95
CI_RESAMPLES = 1000


def predict_proba(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """Class probabilities (softmax of the logits), float64, shape (n, classes)."""
    model.eval()
    with torch.no_grad():
        logits = model(as_inputs(X))  # real features -> float32; integer ids stay int64
        return torch.softmax(logits, dim=1).double().numpy()


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    if len(y) == 0 or len(np.unique(y)) < 2:
        return math.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if prob.shape[1] == 2:
                return float(roc_auc_score(y, prob[:, 1]))
            return float(roc_auc_score(y, prob, multi_class="ovr", labels=list(range(prob.shape[1]))))
    except ValueError:
        return math.nan


def _binary_auc_rows(pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row (Mann-Whitney with average ranks for ties); nan where a row has one class."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    n1 = pos.sum(axis=1).astype(np.float64)
    n0 = pos.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * pos).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    auc[(n1 == 0) | (n0 == 0)] = np.nan
    return auc


def _auc_rows(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """ROC-AUC (binary, or one-vs-rest macro as sklearn's) of each resample row: y (B, n), prob (B, n, C)."""
    if prob.shape[-1] == 2:
        return _binary_auc_rows(y == 1, prob[..., 1])
    per_class = [_binary_auc_rows(y == c, prob[..., c]) for c in range(prob.shape[-1])]
    return np.mean(per_class, axis=0)  # nan if any class is absent from a resample (as sklearn refuses)


def metrics_from_proba(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """``{accuracy, roc_auc, loss}`` from predicted probabilities (the one place they are defined)."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return {"accuracy": math.nan, "roc_auc": math.nan, "loss": math.nan}
    acc = float((prob.argmax(1) == y).mean())
    loss = float(-np.mean(np.log(np.clip(prob[np.arange(len(y)), y], 1e-12, 1.0))))
    return {"accuracy": acc, "roc_auc": _auc(y, prob), "loss": loss}


def evaluate(model: nn.Module, X: ArrayLike, y: ArrayLike, *, loss: LossSpec = "cross_entropy") -> dict[str, float]:
    """Metrics of ``model`` on ``(X, y)`` for the training ``loss``.

    ``"cross_entropy"``: ``{accuracy, roc_auc, loss}``; ROC-AUC is one-vs-rest macro for
    more than two classes and ``nan`` when the records hold a single class. Otherwise see
    :func:`evaluate_loss`. Empty ``y``: the same keys, all ``nan``.
    """
    if loss != "cross_entropy":
        return evaluate_loss(model, X, y, loss)
    if len(y) == 0:
        return {"accuracy": math.nan, "roc_auc": math.nan, "loss": math.nan}
    return metrics_from_proba(np.asarray(y), predict_proba(model, X))


REGRESSION_METRICS = ("mse", "mae", "loss")


def evaluate_loss(model: nn.Module, X: ArrayLike, y: ArrayLike, loss: LossSpec) -> dict[str, float]:
    """Regression or a custom loss: ``{mse, mae, loss}`` for real-valued targets (mean over
    all target values; ``loss`` = the training objective), ``{accuracy, roc_auc, loss}`` for
    integer class targets of a custom loss on logits, else ``{loss}``."""
    if len(y) == 0:
        return dict.fromkeys(REGRESSION_METRICS, math.nan)
    yt = as_targets(y, loss)
    _, fn = resolve_loss(loss)
    model.eval()
    with torch.no_grad():
        out = model(as_inputs(X))
        value = float(fn(out, yt))
    if yt.is_floating_point():
        if out.numel() != yt.numel():
            return {"loss": value}
        err = out.double().reshape(len(yt), -1) - yt.double().reshape(len(yt), -1)
        return {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean()), "loss": value}
    if out.ndim == 2 and out.shape[1] >= 2 and yt.ndim == 1:  # integer classes, logits
        m = metrics_from_proba(yt.numpy(), torch.softmax(out, dim=1).double().numpy())
        return {**m, "loss": value}
    return {"loss": value}


def _resamples(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 0xB007]).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    y: np.ndarray, prob: np.ndarray, *, level: float = CI_LEVEL, resamples: int = CI_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Percentile bootstrap intervals of accuracy and ROC-AUC over the test patients.

    Returns ``{"accuracy": [lo, hi], "roc_auc": [lo, hi], "level": level, "resamples": B,
    "records": n}``; an interval is ``None`` when the metric is undefined (e.g. one class).
    The resampling is seeded (public randomness over public test predictions).
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    out: dict[str, Any] = {"level": level, "resamples": resamples, "records": n, "accuracy": None, "roc_auc": None}
    if n < 2:
        return out
    idx = _resamples(n, resamples, seed)
    correct = (prob.argmax(1) == y).astype(np.float64)
    accs = correct[idx].mean(axis=1)
    a = (1 - level) / 2
    out["accuracy"] = [float(np.quantile(accs, a)), float(np.quantile(accs, 1 - a))]
    aucs = _auc_rows(y[idx], prob[idx])
    aucs = aucs[np.isfinite(aucs)]
    if len(aucs) >= resamples // 2:
        out["roc_auc"] = [float(np.quantile(aucs, a)), float(np.quantile(aucs, 1 - a))]
    return out


def paired_difference_ci(
    y: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, *, level: float = CI_LEVEL,
    resamples: int = CI_RESAMPLES, seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of model A minus model B on the same patients, with a paired bootstrap interval.

    ``{"difference": d, "ci": [lo, hi], "level": level}`` in accuracy units (×100 for points).
    """
    y = np.asarray(y, dtype=np.int64)
    ca = (prob_a.argmax(1) == y).astype(np.float64)
    cb = (prob_b.argmax(1) == y).astype(np.float64)
    d = float(ca.mean() - cb.mean()) if len(y) else math.nan
    if len(y) < 2:
        return {"difference": d, "ci": None, "level": level}
    idx = _resamples(len(y), resamples, seed + 1)
    diffs = ca[idx].mean(axis=1) - cb[idx].mean(axis=1)
    a = (1 - level) / 2
    return {"difference": d, "ci": [float(np.quantile(diffs, a)), float(np.quantile(diffs, 1 - a))], "level": level}
