"""The pooled baseline: what the same kind of model reaches with everyone's data in one place.

It answers "how much do federation and privacy cost?" only if the baseline itself is
trained well; a baseline trained with the federated run's learning rate and batch size
for a fixed number of epochs swings with the seed. So the baseline is trained *to
convergence*, with no privacy and no federation, on the union of all hospitals'
training records (never their held-out records, never the test set):

* ``logreg``: scikit-learn's ``LogisticRegression`` (L-BFGS, L2 penalty C = 1, up to
  5000 iterations): a convex problem solved to its optimum, the same answer for every
  seed.
* ``mlp`` / ``cnn``: the same torch architecture trained with Adam, learning rate picked
  from {1e-3, 3e-3, 1e-2} on a seeded 20 % validation split of the pooled records, with
  early stopping on validation loss (patience 10 epochs) and the best epoch restored.

``describe`` says this in one sentence for the CLI and history.json.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fedvault.fl.metrics import metrics_from_proba, predict_proba

LR_GRID = (1e-3, 3e-3, 1e-2)
PATIENCE = 10


@dataclass
class Baseline:
    """A fitted pooled baseline: its test metrics, test probabilities and how it was trained."""

    metrics: dict[str, float]
    proba: np.ndarray
    method: str
    records: int

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "method": self.method, "records": self.records}


def _pooled(fd: Any) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([np.asarray(h.X, dtype=np.float64) for h in fd.hospitals])
    y = np.concatenate([h.y for h in fd.hospitals]).astype(np.int64)
    return X, y


def _fit_logreg(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, n_classes: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=5000)
    clf.fit(X, y)
    prob = np.zeros((len(X_test), n_classes))
    prob[:, clf.classes_] = clf.predict_proba(X_test)  # classes absent from training get 0
    return prob


def _train_early_stopped(make_model: Callable[[], nn.Module], X: np.ndarray, y: np.ndarray, lr: float, seed: int,
                         max_epochs: int) -> tuple[nn.Module, float]:
    rng = np.random.default_rng([seed, 0xBA5E])
    perm = rng.permutation(len(y))
    k = max(1, len(y) // 5)
    va, tr = perm[:k], perm[k:]
    Xt, yt = torch.as_tensor(X[tr], dtype=torch.float32), torch.as_tensor(y[tr])
    Xv, yv = torch.as_tensor(X[va], dtype=torch.float32), torch.as_tensor(y[va])
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    best, best_state, since = math.inf, copy.deepcopy(model.state_dict()), 0
    for _ in range(max_epochs):
        model.train()
        order = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            v = nn.functional.cross_entropy(model(Xv), yv).item()
        if v < best - 1e-4:
            best, best_state, since = v, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    model.load_state_dict(best_state)
    return model, best


def pooled_baseline(kind: str, fd: Any, make_model: Callable[[], nn.Module], *, seed: int = 0) -> Baseline:
    """Fit the pooled baseline for model ``kind`` on ``fd``'s training records; score it on ``fd``'s test set."""
    X, y = _pooled(fd)
    X_test, y_test = np.asarray(fd.X_test, dtype=np.float64), np.asarray(fd.y_test)
    if kind == "logreg":
        prob = _fit_logreg(X, y, X_test, fd.n_classes)
        method = ("logistic regression fitted to convergence (scikit-learn LogisticRegression, L-BFGS, L2 C=1) "
                  f"on all {len(y)} training records pooled, no privacy, no federation")
    else:
        max_epochs = 200 if kind == "mlp" else 60
        best = None
        for lr in LR_GRID:
            model, v = _train_early_stopped(make_model, X, y, lr, seed, max_epochs)
            if best is None or v < best[1]:
                best = (model, v, lr)
        model, _, lr = best
        prob = predict_proba(model, X_test)
        method = (f"the same {kind} trained on all {len(y)} training records pooled, no privacy, no federation "
                  f"(Adam, lr {lr:g} chosen on a 20% validation split, early stopping on validation loss)")
    return Baseline(metrics_from_proba(y_test, prob), prob, method, int(len(y)))
