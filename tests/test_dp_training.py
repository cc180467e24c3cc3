"""PrivateTrainer: real DP-SGD via Opacus, persistent accounting, budget refusal."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedvault.dp.errors import BudgetExceeded
from fedvault.dp.ledger import PrivacyLedger
from fedvault.dp.training import PrivateTrainer, UnsupportedModelError, plan_round


def data(n=40, d=5, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) * scale).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def linear(d=5, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, 2)


def flat(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def stepwise_opacus_eps(events, delta):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for e in events:
        for _ in range(e.steps):
            acc.step(noise_multiplier=e.noise_multiplier, sample_rate=e.sample_rate)
    return acc.get_epsilon(delta=delta)


class StepCounter:
    """Counts every real torch optimizer step (global post-step hook)."""

    def __enter__(self):
        self.n = 0

        def hook(opt, args, kwargs):
            self.n += 1

        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.h = register_optimizer_step_post_hook(hook)
        return self

    def __exit__(self, *exc):
        self.h.remove()


def test_steps_recorded_equal_actual_optimizer_steps_and_epsilon_matches_opacus():
    X, y = data(n=37)
    led = PrivacyLedger("h0", 1e-5)
    tr = PrivateTrainer(led, noise_multiplier=1.0, max_grad_norm=1.0, batch_size=8, epochs=2, lr=0.1)
    q, T = plan_round(37, 8, 2)
    assert (q, T) == (1 / 5, 10)
    with StepCounter() as c:
        rep = tr.train(linear(), X, y, round=0)
    assert c.n == rep.steps == T == led.events[0].steps
    assert rep.sample_rate == led.events[0].sample_rate == 1 / 5
    assert rep.epsilon == led.epsilon() == pytest.approx(stepwise_opacus_eps(led.events, 1e-5), rel=1e-12)
    # the live accountant is the ledger: same history
    assert [tuple(h) for h in tr.accountant.history] == [(1.0, 0.2, 10)]


def test_epsilon_grows_only_with_rounds_taken_part_in():
    X, y = data(n=24)
    led = PrivacyLedger("h", 1e-5)
    tr = PrivateTrainer(led, 1.1, 1.0, batch_size=6, epochs=1)
    g = linear()
    eps = []
    for r in (0, 3, 4):  # sat out rounds 1 and 2
        m = copy.deepcopy(g)
        eps.append(tr.train(m, X, y, round=r).epsilon)
    assert eps[0] < eps[1] < eps[2]
    assert led.rounds == [0, 3, 4]
    other = PrivacyLedger("o", 1e-5)
    tr2 = PrivateTrainer(other, 1.1, 1.0, batch_size=6, epochs=1)
    for r in (0, 1, 2):
        tr2.train(copy.deepcopy(g), X, y, round=r)
    assert other.epsilon() == led.epsilon()  # same participation count, same cost
    assert led.epsilon() == pytest.approx(stepwise_opacus_eps(led.events, 1e-5), rel=1e-12)


def test_dp_sgd_clips_per_example_gradients():
    # huge features -> huge raw gradients; q = 1 (batch >= n), one step, negligible noise
    X, y = data(n=20, scale=1e3)
    C, lr = 1e-3, 1.0
    m = linear()
    w0 = flat(m)
    tr = PrivateTrainer(PrivacyLedger("h", 1e-5), 1e-6, C, batch_size=20, epochs=1, lr=lr)
    rep = tr.train(m, X, y, round=0)
    assert rep.steps == 1 and rep.sample_rate == 1.0
    step = (flat(m) - w0).norm().item()
    # the averaged clipped gradient has norm <= C (every example is in the batch)
    assert step <= lr * C * (1 + 1e-3)
    # and the unclipped step would have been far larger, so clipping really happened
    ref = linear()
    nn.functional.cross_entropy(ref(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    raw = torch.cat([p.grad.flatten() for p in ref.parameters()]).norm().item()
    assert raw > 100 * C
    assert step > 0.1 * lr * C


def test_noise_scale_is_sigma_c_over_expected_batch():
    X, y = data(n=20)
    C, sigma, lr = 0.01, 5.0, 1.0
    finals = []
    for s in (1e-6, sigma):
        m = linear()
        PrivateTrainer(PrivacyLedger("h", 1e-5), s, C, batch_size=20, lr=lr, reproducible_seed=3).train(
            m, X, y, round=0
        )
        finals.append(flat(m))
    # q = 1: both runs see the same batch, so the difference is the noise alone, N(0, (σC/n)^2) per coordinate
    diff = (finals[1] - finals[0]).norm().item()
    expected = lr * sigma * C / 20 * np.sqrt(12)
    assert 0.4 * expected < diff < 1.8 * expected


def test_default_noise_is_fresh_with_the_configured_scale():
    """Secure default: noise from the OS CSPRNG has std σC/(nq) per coordinate (2000 coordinates)."""
    d, n, C, sigma, lr = 999, 10, 0.1, 3.0, 1.0
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    outs = []
    for _ in range(2):
        m = linear(d)
        w0 = flat(m)
        rep = PrivateTrainer(PrivacyLedger("h", 1e-5), sigma, C, batch_size=n, lr=lr).train(m, X, y, round=0)
        assert rep.reproducible is False and rep.sample_rate == 1.0
        outs.append(flat(m) - w0)
    # the clipped gradient sum is the same in both runs (q = 1); the difference is two noises
    noise_diff = (outs[1] - outs[0]).double()
    per_coord = noise_diff.std().item() / np.sqrt(2)
    assert per_coord == pytest.approx(lr * sigma * C / n, rel=0.1)  # sd of the estimate ~ 1.6%
    assert not torch.equal(outs[0], outs[1])


def test_reproducible_seed_replays_and_default_does_not_and_no_hooks_left():
    X, y = data(n=30)
    outs = []
    for seed in (7, 7, 8, None, None):
        m = linear()
        rep = PrivateTrainer(
            PrivacyLedger("h", 1e-5), 1.0, 1.0, batch_size=5, epochs=2, reproducible_seed=seed
        ).train(m, X, y, round=2)
        assert rep.reproducible is (seed is not None)
        outs.append(flat(m))
        for mod in m.modules():
            assert not mod._forward_hooks and not mod._backward_hooks and not mod._forward_pre_hooks
            assert not getattr(mod, "_backward_pre_hooks", None)
        for p in m.parameters():
            assert p.grad is None
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                assert not hasattr(p, attr)
        # plain training still works on the returned module
        nn.functional.cross_entropy(m(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        assert all(p.grad is not None and not hasattr(p, "grad_sample") for p in m.parameters())
        assert set(m.state_dict()) == {"weight", "bias"}
    assert torch.equal(outs[0], outs[1])  # opt-in replay
    assert not torch.equal(outs[0], outs[2])
    assert not torch.equal(outs[3], outs[4])  # the default never repeats


def test_poisson_sampling_is_fresh_by_default_and_replayable_on_request():
    """Noise negligible (σ = 1e-6), q = 1/6: runs differ only through which records each step samples."""
    X, y = data(n=30)
    runs = {}
    for key, seed in (("os1", None), ("os2", None), ("rep1", 5), ("rep2", 5)):
        m = linear()
        PrivateTrainer(PrivacyLedger("h", 1e-5), 1e-6, 1.0, batch_size=5, lr=0.5, reproducible_seed=seed).train(
            m, X, y, round=1
        )
        runs[key] = flat(m)
    assert not torch.allclose(runs["os1"], runs["os2"], atol=1e-4)  # different batches
    assert torch.allclose(runs["rep1"], runs["rep2"], atol=1e-4)


def test_config_seed_is_not_a_trainer_parameter():
    """The public config seed can no longer fix the noise (only reproducible_seed= can)."""
    with pytest.raises(TypeError):
        PrivateTrainer(PrivacyLedger("h", 1e-5), 1.0, 1.0, batch_size=5, seed=0)  # type: ignore[call-arg]


def test_empty_poisson_batches_are_still_accounted():
    X, y = data(n=6)
    led = PrivacyLedger("h", 1e-5)
    with StepCounter() as c:
        rep = PrivateTrainer(led, 1.0, 1.0, batch_size=1, epochs=3).train(linear(), X, y, round=0)
    assert rep.steps == c.n == 18  # q = 1/6: many steps sample no example
    assert np.isfinite(flat(linear()).numpy()).all()


def test_groupnorm_mlp_trains_and_batchnorm_is_refused():
    X, y = data(n=32, d=6)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 2))
    rep = PrivateTrainer(PrivacyLedger("h", 1e-5), 1.0, 1.0, batch_size=8).train(mlp, X, y, round=0)
    assert rep.steps == 4
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    led = PrivacyLedger("h", 1e-5)
    with pytest.raises(UnsupportedModelError, match="GroupNorm"):
        PrivateTrainer(led, 1.0, 1.0, batch_size=8).train(bn, X, y, round=0)
    assert led.events == ()


def test_fedprox_term_pulls_towards_reference():
    X, y = data(n=40)
    dist = {}
    for mu in (0.0, 5.0):
        m = linear()
        ref = [p.detach().clone() for p in m.parameters()]
        PrivateTrainer(PrivacyLedger("h", 1e-5), 0.5, 1.0, batch_size=8, epochs=3, lr=0.2).train(
            m, X, y, round=0, prox_mu=mu, reference_params=ref
        )
        dist[mu] = (flat(m) - torch.cat([r.flatten() for r in ref])).norm().item()
    assert dist[5.0] < 0.7 * dist[0.0]


def test_refused_round_leaves_model_and_ledger_untouched():
    X, y = data(n=40)
    led = PrivacyLedger("h", 1e-5, budget_epsilon=1.0)
    tr = PrivateTrainer(led, 0.8, 1.0, batch_size=4, epochs=3)
    m = linear()
    w0 = flat(m)
    with pytest.raises(BudgetExceeded) as info:
        tr.train(m, X, y, round=0)
    assert "budget" in info.value.reason
    assert torch.equal(flat(m), w0) and led.events == ()
    assert tr.check(40, 0) is not None


@settings(max_examples=8, deadline=None)
@given(
    sigma=st.floats(0.7, 2.0),
    budget=st.floats(0.8, 6.0),
    pattern=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_trainer_never_exceeds_budget_and_refuses_exactly_the_first_round_that_would(sigma, budget, pattern):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    X, y = data(n=12)
    q, T = plan_round(12, 4, 1)  # q = 1/3, 3 steps a round
    orders = RDPAccountant.DEFAULT_ALPHAS
    one = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)

    def eps(k):  # Opacus ε after k rounds taken part in
        return analysis.get_privacy_spent(orders=orders, rdp=one * (k * T), delta=1e-5)[0]

    led = PrivacyLedger("h", 1e-5, budget_epsilon=budget)
    tr = PrivateTrainer(led, sigma, 1.0, batch_size=4)
    taken, first_refusal = 0, None
    for r, takes_part in enumerate(pattern):
        if not takes_part:
            continue
        try:
            tr.train(linear(), X, y, round=r)
            taken += 1
        except BudgetExceeded:
            if first_refusal is None:
                first_refusal = taken
            led.refuse(r, "budget")
    assert led.epsilon() <= budget
    participations = sum(pattern)
    expected_taken = next((k for k in range(participations) if eps(k + 1) > budget), participations)
    assert taken == expected_taken
    assert first_refusal == (expected_taken if expected_taken < participations else None)
