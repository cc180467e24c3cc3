"""Bring your own model, loss, optimiser and data (issue 14, item 4; trainer side)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedvault.dp.ledger import PrivacyLedger
from fedvault.dp.objective import ObjectiveError, UnsupportedModelError, as_inputs, as_targets
from fedvault.dp.training import PrivateTrainer
from fedvault.fl import plain
from fedvault.fl.data import FederatedData
from fedvault.fl.errors import DataError
from fedvault.fl.metrics import evaluate

VOCAB, LEN = 20, 4


class BagOfTokens(nn.Module):
    """Embedding + MLP on integer token ids (n, LEN)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.emb(x).mean(1))


def tokens(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 iff token 0 occurs: learnable from the embedding of token 0."""
    rng = np.random.default_rng(seed)
    X = rng.integers(1, VOCAB, size=(n, LEN))
    y = rng.integers(0, 2, size=n)
    X[y == 1, 0] = 0
    return X.astype(np.int64), y.astype(np.int64)


def regression(n: int, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)


def test_integer_inputs_stay_long_and_real_targets_stay_real():
    X, _ = tokens(5)
    assert as_inputs(X).dtype == torch.int64 and as_inputs(torch.from_numpy(X)).dtype == torch.int64
    assert as_inputs(X.astype(np.float64)).dtype == torch.float32
    assert as_targets(np.array([0.5, 1.5]), "mse").dtype == torch.float32
    with pytest.raises(ObjectiveError, match="mse"):  # the fix is named
        as_targets(np.array([0.5, 1.5]), "cross_entropy")
    with pytest.raises(ObjectiveError, match="NaN"):
        as_inputs(np.array([[np.nan]]))


def test_embedding_model_trains_privately_on_token_ids():
    X, y = tokens(128)
    torch.manual_seed(0)
    m = BagOfTokens()
    led = PrivacyLedger("h", 1e-5)
    before = evaluate(m, X, y)["loss"]
    rep = PrivateTrainer(led, 0.8, 1.0, batch_size=32, epochs=8, lr=0.05, optimizer="adam").train(m, X, y, round=1)
    assert rep.steps == 32 and led.events[0].steps == 32 and 0 < rep.epsilon < math.inf
    after = evaluate(m, X, y)  # 12 of 12 fresh-noise runs: loss 0.72 -> <= 0.23, accuracy >= 0.9
    assert after["loss"] < 0.6 * before and after["accuracy"] > 0.75


def test_regression_with_mse_and_an_optimizer_factory():
    X, y = regression(80)
    torch.manual_seed(0)
    m = nn.Linear(3, 1)
    led = PrivacyLedger("h", 1e-5)
    used = []

    def factory(params):
        used.append(len(params))
        return torch.optim.SGD(params, lr=0.2, momentum=0.5)

    before = evaluate(m, X, y, loss="mse")
    assert set(before) == {"mse", "mae", "loss"}  # no accuracy for a regression
    tr = PrivateTrainer(led, 0.5, 5.0, batch_size=16, epochs=10, loss="mse", optimizer=factory)
    tr.train(m, X, y, round=1)
    after = evaluate(m, X, y, loss="mse")
    assert used == [2] and after["mse"] < 0.25 * before["mse"] and led.epsilon() > 0


def test_custom_loss_callable_and_wrongly_reduced_loss_is_refused():
    X, y = regression(20)
    yb = (y > 0).astype(np.float32)
    m = nn.Linear(3, 1)

    def bce(out, t):
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t)

    PrivateTrainer(PrivacyLedger("h", 1e-5), 1.0, 1.0, batch_size=10, loss=bce).train(m, X, yb, round=1)
    assert "loss" in evaluate(m, X, yb, loss=bce)
    led = PrivacyLedger("h", 1e-5)
    with pytest.raises(ObjectiveError, match="scalar"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=10, loss=lambda o, t: (o.squeeze(1) - t) ** 2).train(
            nn.Linear(3, 1), X, y, round=1
        )


def test_unknown_names_and_bad_factories_are_refused_with_the_fix():
    led = PrivacyLedger("h", 1e-5)
    with pytest.raises(ObjectiveError, match="cross_entropy"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=4, loss="hinge")
    with pytest.raises(ObjectiveError, match="sgd"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=4, optimizer="lbfgs")
    X, y = regression(8)
    with pytest.raises(ObjectiveError, match="torch.optim.Optimizer"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=4, loss="mse", optimizer=lambda ps: None).train(
            nn.Linear(3, 1), X, y, round=1
        )
    assert led.events == ()


def test_batchnorm_model_is_refused_before_anything_is_charged_and_the_fix_works():
    from opacus.validators import ModuleValidator

    X, y = regression(16)
    X = np.repeat(X, 2, axis=1)  # (n, 6): a tiny 1-d "signal"
    bn = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(16, 1))
    led = PrivacyLedger("h", 1e-5)
    tr = PrivateTrainer(led, 1.0, 1.0, batch_size=4, loss="mse")
    with pytest.raises(UnsupportedModelError, match="ModuleValidator.fix"):
        tr.train(bn, X, y, round=1)
    assert led.events == ()
    tr.train(ModuleValidator.fix(bn), X, y, round=1)  # the suggested fix: BatchNorm -> GroupNorm
    assert len(led.events) == 1


def test_plain_training_takes_the_same_loss_optimizer_and_dtypes():
    X, y = tokens(48)
    torch.manual_seed(0)
    m = BagOfTokens()
    plain.train(m, X, y, epochs=30, batch_size=16, lr=0.05, seed=0, optimizer="adam")
    assert evaluate(m, X, y)["accuracy"] > 0.9
    Xr, yr = regression(48)
    r = nn.Linear(3, 1)
    plain.train(r, Xr, yr, epochs=40, batch_size=8, lr=0.05, seed=0, loss="mse")
    assert evaluate(r, Xr, yr, loss="mse")["mse"] < 0.05


def test_federated_data_from_user_tensors():
    a, b = tokens(30, seed=1), tokens(20, seed=2)
    fd = FederatedData.from_arrays(
        {"north": (torch.from_numpy(a[0]), torch.from_numpy(a[1])), "south": b},
        test=tokens(10, seed=3), holdout_fraction=0.2, seed=0,
    )
    assert [h.name for h in fd.hospitals] == ["north", "south"]
    assert fd.hospitals[0].X.dtype == np.int64 and fd.hospitals[0].n == 24 and len(fd.hospitals[0].y_val) == 6
    assert fd.n_classes == 2 and not fd.standardise and len(fd.y_test) == 10
    reg = FederatedData.from_arrays({"a": regression(10), "b": regression(12, seed=1)})
    assert reg.n_classes == 0 and reg.hospitals[1].y.dtype == np.float32 and len(reg.y_test) == 0
    with pytest.raises(DataError, match="records"):
        FederatedData.from_arrays({"a": (a[0], a[1][:-1])})
    with pytest.raises(DataError, match="agree"):
        FederatedData.from_arrays({"a": a, "b": regression(5)})
    with pytest.raises(DataError, match="NaN"):
        FederatedData.from_arrays({"a": (np.array([[np.nan]]), np.array([0]))})


# --------------------------------------------------------------------------- through the public API


def _cfg(**training):
    from fedvault.fl.config import from_dict

    return from_dict({
        "seed": 0,
        "training": {"rounds": 2, "batch_size": 16, "min_clients": 2, **training},
        # site_metrics = "simulation": the regression site metrics are checked below (off by default: not DP)
        "privacy": {"noise_multiplier": 1.0, "delta": 1e-4, "site_metrics": "simulation"},
        "aggregation": {"mode": "secagg", "update_clip": 5.0},
    })


def _ledgers_match_history(run):
    h = run.history
    for hs in run.hospitals:
        led = h["privacy"][hs.name]
        assert len(led["events"]) == len(h["rounds"]) and led["epsilon"] == pytest.approx(hs.ledger.epsilon())
        assert 0 < led["epsilon"] < math.inf


def test_embedding_model_federates_with_dp_and_secagg_through_the_public_api():
    from fedvault.fl import federate

    data = FederatedData.from_arrays({"a": tokens(48, 1), "b": tokens(40, 2)}, test=tokens(40, 3))
    run = federate(_cfg(lr=0.05, optimizer="adam"), model=BagOfTokens, data=data, baseline=False)
    h = run.history
    assert [r["participants"] for r in h["rounds"]] == [["a", "b"], ["a", "b"]]
    assert set(h["final"]["metrics"]) >= {"accuracy", "roc_auc", "loss"}
    assert run.standardisation is None  # the user's integer inputs were used as given
    assert run.hospitals[0].data.X.dtype == np.int64
    _ledgers_match_history(run)


def test_regression_model_federates_with_a_callable_loss_and_optimizer_factory():
    from fedvault.fl import federate

    data = FederatedData.from_arrays({"a": regression(48, seed=1), "b": regression(40, seed=2)},
                                     test=regression(40, seed=3), holdout_fraction=0.25)
    made = []

    def factory(params):
        made.append(1)
        return torch.optim.SGD(params, lr=0.1)

    def sq(out, t):
        return ((out.squeeze(1) - t) ** 2).mean()

    run = federate(_cfg(loss="mse"), model=lambda: nn.Linear(3, 1), data=data, baseline=False,
                   loss=sq, optimizer=factory)
    h = run.history
    final = h["final"]["metrics"]
    assert set(final) == {"mse", "mae", "loss"} and "accuracy" not in final  # no accuracy for a regression
    assert "accuracy" not in h["rounds"][-1]["site_metrics"] and "loss" in h["rounds"][-1]["site_metrics"]
    assert len(made) == 4  # a fresh optimiser per hospital and round
    _ledgers_match_history(run)
    # training.loss = "mse" by name (no kwargs): the same kind of metrics, MSE site metrics too
    run2 = federate(_cfg(loss="mse", lr=0.1), model=lambda: nn.Linear(3, 1), data=data, baseline=False)
    assert set(run2.history["final"]["metrics"]) == {"mse", "mae", "loss"}
    assert {"mse", "mae"} <= set(run2.history["rounds"][-1]["site_metrics"])


def test_batchnorm_model_is_refused_by_federate_before_any_round():
    from fedvault.fl import federate

    data = FederatedData.from_arrays({"a": regression(20), "b": regression(20, seed=1)})
    with pytest.raises(UnsupportedModelError, match="LayerNorm"):
        federate(_cfg(loss="mse"), model=lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)),
                 data=data, baseline=False)


def test_loss_and_optimizer_config_keys_are_validated():
    from fedvault.fl.config import from_dict
    from fedvault.fl.errors import ConfigError

    with pytest.raises(ConfigError, match="training.loss"):
        from_dict({"training": {"loss": "mae"}})
    with pytest.raises(ConfigError, match="training.optimizer"):
        from_dict({"training": {"optimizer": "rmsprop"}})
    with pytest.raises(ConfigError, match="target_accuracy"):
        from_dict({"training": {"loss": "mse", "target_accuracy": 0.9}})
    assert from_dict({"training": {"loss": "mse", "optimizer": "adam"}}).training.loss == "mse"


def test_byo_example_runs_small():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "byo_model.py"
    spec = importlib.util.spec_from_file_location("byo_model_example", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    for task, score in (("codes", "accuracy"), ("stay", "mse")):
        out = ex.run(task, hospitals=2, records=40, rounds=1, baseline=False)
        assert score in out["metrics"] and out["aggregation"] == "secagg"
        assert all(0 < e <= 3.0 + 1e-6 for e in out["epsilon"].values())  # target ε = 3, in each ledger
