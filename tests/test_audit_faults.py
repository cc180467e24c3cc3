"""dp.faults: the audit's named DP-SGD faults and gradient-canary hook (no monkeypatching)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedvault.dp.errors import AccountingError
from fedvault.dp.faults import Fault
from fedvault.dp.ledger import PrivacyLedger
from fedvault.dp.training import PrivateTrainer

N, D, B, LR = 40, 5, 8, 0.5
NORM = 100.0  # the canary gradient's norm: 100 x max_grad_norm


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _null_direction():
    """A direction of nn.Linear(D, 2) no record's cross-entropy gradient has a component in:
    the same vector added to both rows (and both biases) leaves the softmax unchanged."""
    u = np.concatenate([np.ones(D), np.ones(D), [1.0, 1.0]])
    return u / np.linalg.norm(u)


class EveryStep:
    """A gradient-canary hook that puts one canary (norm NORM, along u) in every step."""

    def __init__(self, u):
        self.u, self.calls, self.first = u, 0, None

    def __call__(self, round, step, sample_rate, params):
        self.calls += 1
        if self.first is None:
            self.first = torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy()
        return (NORM * self.u)[None, :].astype(np.float32)


def _train(fault):
    torch.manual_seed(0)
    model = nn.Linear(D, 2)
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()
    u = _null_direction()
    hook = EveryStep(u)
    tr = PrivateTrainer(PrivacyLedger(client="h", delta=1e-5), noise_multiplier=1.0, max_grad_norm=1.0,
                        batch_size=B, lr=LR, fault=fault, gradient_canaries=hook)
    X, y = _data()
    rep = tr.train(model, X, y, round=1)
    w1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    return float(-(w1 - w0) @ u), rep, hook, w0


def test_no_noise_clips_the_canary_and_adds_no_noise():
    """Along a null direction only the canary moves the model: without noise the move is
    exactly T steps of lr * clip / expected batch size (the canary clipped to norm 1)."""
    move, rep, hook, w0 = _train(Fault.NO_NOISE)
    T, expected_batch = rep.steps, N * rep.sample_rate
    assert move == pytest.approx(T * LR * 1.0 / expected_batch, rel=1e-4)
    assert hook.calls == T and np.allclose(hook.first, w0)  # the hook saw the received model at step 0
    assert rep.fault == "no_noise" and rep.epsilon > 0  # the ledger still charges the claimed mechanism


def test_no_clipping_lets_the_canary_through():
    move, rep, _, _ = _train(Fault.NO_CLIPPING)
    T, expected_batch = rep.steps, N * rep.sample_rate
    clipped = T * LR / expected_batch
    assert move > 20 * clipped  # 100x the clip, noise std ~ sqrt(T) x clip: far beyond any honest move
    assert rep.fault == "no_clipping"


def test_honest_trainer_clips_and_noises_the_canary():
    move, rep, _, _ = _train(Fault.NONE)
    T, expected_batch = rep.steps, N * rep.sample_rate
    clipped = T * LR / expected_batch
    assert move != pytest.approx(clipped, rel=1e-3)  # noise is there
    assert abs(move - clipped) < 8 * np.sqrt(T) * LR / expected_batch  # ... at the clip's scale, not 100x
    assert rep.fault == "none"


def test_a_faulty_trainer_marks_its_ledger_and_verify_refuses_it(tmp_path):
    from fedvault.dp.verify import verify

    torch.manual_seed(0)
    ledger = PrivacyLedger(client="h", delta=1e-5)
    tr = PrivateTrainer(ledger, noise_multiplier=1.0, max_grad_norm=1.0, batch_size=B, lr=LR, fault=Fault.NO_CLIPPING)
    X, y = _data()
    tr.train(nn.Linear(D, 2), X, y, round=1)
    assert ledger.not_private and "no_clipping" in ledger.not_private[0]["reason"]
    path = tmp_path / "ledger.json"
    ledger.save(path)
    again = PrivacyLedger.load(path)  # the mark survives the file
    assert again == ledger and again.not_private == ledger.not_private
    report = verify(again)
    assert not report.ok and "audit fault" in report.refusal
    honest = PrivacyLedger(client="h", delta=1e-5)
    PrivateTrainer(honest, noise_multiplier=1.0, max_grad_norm=1.0, batch_size=B, lr=LR).train(nn.Linear(D, 2), X, y,
                                                                                               round=1)
    assert honest.not_private == () and "not_private" not in honest.to_dict() and verify(honest).refusal is None


def test_fault_names_and_reasons():
    assert [f.value for f in Fault] == ["none", "no_noise", "no_clipping"]
    assert Fault.parse(None) is Fault.NONE and Fault.NONE.not_private_reason() is None
    assert "not private" in Fault.NO_NOISE.not_private_reason()
    with pytest.raises(AccountingError, match="no_noise"):
        Fault.parse("sometimes")


def test_faulty_federation_is_marked_not_private():
    from fedvault.fl.config import from_dict
    from fedvault.fl.simulation import federate

    cfg = from_dict({"seed": 0, "data": {"dataset": "breast_cancer", "hospitals": 2},
                     "training": {"rounds": 1, "batch_size": 64}, "privacy": {"noise_multiplier": 1.0},
                     "aggregation": {"mode": "plaintext"}})
    run = federate(cfg, baseline=False, trainer_options=lambda name: {"fault": "no_noise"})
    assert any("not private" in s for s in run.history["not_private"])
    honest = federate(cfg, baseline=False).history
    assert "not_private" not in honest
    # fedvault verify refuses to certify the faulty run (and still certifies the honest one)
    from fedvault.dp.verify import verify

    report = verify(run.history)
    assert not report.ok and "audit fault" in report.refusal
    assert verify(honest).refusal is None
