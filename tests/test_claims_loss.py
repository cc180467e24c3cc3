"""README "Bring your own model": a callable loss must return "the batch mean of per-example losses";
SECURITY.md DP-SGD: "the guarantee is per record" — per-example clipping bounds one record's influence
only when example i's gradient depends on example i alone.

A user loss that couples the examples of a batch (here: squared error against the batch's own mean
prediction, a batch statistic) puts other records into every "per-example" gradient, and the ledger's
ε would silently not hold; a sum-reduced loss is mis-scaled. Both must be refused before anything is
trained or charged; per-example means (BCE, a hand-written MSE) are accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedvault.dp.ledger import PrivacyLedger
from fedvault.dp.objective import ObjectiveError
from fedvault.dp.training import PrivateTrainer


def _data(n: int = 24):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, (X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)).astype(np.float32)


def coupled(out, t):  # each example's loss depends on the whole batch's mean prediction
    o = out.squeeze(1)
    return ((o - o.mean()) - (t - t.mean())).pow(2).mean()


def summed(out, t):
    return (out.squeeze(1) - t).pow(2).sum()


def per_example(out, t):
    return (out.squeeze(1) - t).pow(2).mean()


@pytest.mark.parametrize("loss", [coupled, summed], ids=["couples_examples", "sum_reduced"])
def test_a_loss_that_is_not_a_per_example_mean_is_refused_before_anything_is_charged(loss):
    X, y = _data()
    led = PrivacyLedger("h", 1e-5)
    with pytest.raises(ObjectiveError, match="per-example"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=8, loss=loss).train(nn.Linear(3, 1), X, y, round=1)
    assert led.events == ()


@pytest.mark.parametrize("loss", [per_example, lambda o, t: nn.functional.binary_cross_entropy_with_logits(
    o.squeeze(1), (t > 0).float())], ids=["mse_mean", "bce"])
def test_per_example_means_are_accepted(loss):
    X, y = _data()
    led = PrivacyLedger("h", 1e-5)
    torch.manual_seed(0)
    PrivateTrainer(led, 1.0, 1.0, batch_size=8, loss=loss).train(nn.Linear(3, 1), X, y, round=1)
    assert [e.round for e in led.events] == [1]


class Centre(nn.Module):
    """A parameter-free layer Opacus' validator accepts, but that subtracts the batch mean."""

    def forward(self, x):
        return x - x.mean(dim=0, keepdim=True)


def test_a_model_that_mixes_the_records_of_a_batch_is_refused_before_anything_is_charged():
    X, y = _data()
    led = PrivacyLedger("h", 1e-5)
    model = nn.Sequential(nn.Linear(3, 4), Centre(), nn.Linear(4, 1))
    with pytest.raises(ObjectiveError, match="other records of its batch"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=8, loss="mse").train(model, X, y, round=1)
    assert led.events == ()
    ok = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    PrivateTrainer(led, 1.0, 1.0, batch_size=8, loss="mse").train(ok, X, y, round=1)
    assert [e.round for e in led.events] == [1]
