"""In-process federation: hospitals, a server and an aggregation protocol in one process.

``run_federation(cfg)`` is the engine behind ``fedvault demo`` and ``fedvault run``; it
returns the history dict whose schema the README documents (``history.json``).
Hospitals train one after another here, so ``seconds.train`` reports the slowest
hospital (what a round would wait for if they trained in parallel).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

from fedvault.dp.errors import BudgetExceeded
from fedvault.protocols.errors import AbortError
from fedvault.fl import aggregation, data as data_mod, models, plain, strategies
from fedvault.fl.client import Hospital
from fedvault.fl.config import Config, to_dict
from fedvault.fl.errors import FederationError
from fedvault.fl.metrics import evaluate
from fedvault.fl.stats import federated_standardise

SCHEMA_VERSION = 1


def _model_factory(cfg: Config, fd: data_mod.FederatedData) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        return models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)

    return make


def _batches_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def calibrated_noise(cfg: Config, n_records: int) -> float | None:
    """Noise multiplier for one hospital: given, or calibrated so that the planned rounds land at target ε."""
    p = cfg.privacy
    if not p.enabled:
        return None
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    from fedvault.dp.calibrate import noise_multiplier_for

    k = _batches_per_epoch(n_records, cfg.training.batch_size)
    # Planned participation: with client sampling a hospital expects client_fraction of
    # the rounds, but calibrating for every round keeps the budget safe in all cases.
    epochs = cfg.training.rounds * cfg.training.local_epochs
    if cfg.personalization.enabled:  # the fine-tuning is paid from the same budget
        epochs += cfg.personalization.epochs
    steps = epochs * k
    return float(noise_multiplier_for(p.target_epsilon, p.delta, 1.0 / k, steps, accountant=p.accountant))


def pooled_baseline(cfg: Config, fd: data_mod.FederatedData, make_model: Callable[[], torch.nn.Module]) -> dict[str, float]:
    """The same model trained without privacy on all hospitals' records pooled in one place."""
    X = np.concatenate([h.X for h in fd.hospitals])
    y = np.concatenate([h.y for h in fd.hospitals])
    torch.manual_seed(cfg.seed)
    model = make_model()
    epochs = min(cfg.training.rounds * cfg.training.local_epochs, 50)
    plain.train(model, X, y, epochs=epochs, batch_size=cfg.training.batch_size, lr=cfg.training.lr, seed=cfg.seed)
    return evaluate(model, fd.X_test, fd.y_test)


@dataclass
class EarlyStopping:
    """Stop on a target metric or a plateau; ``update`` returns the reason to stop, or None.

    ``target``: stop as soon as the watched metric (test accuracy) reaches it.
    ``patience``: stop when the best value has not improved by more than ``min_delta``
    for ``patience`` consecutive rounds.
    """

    def __init__(self, target: float | None, patience: int | None, min_delta: float = 0.0):
        self.target, self.patience, self.min_delta = target, patience, min_delta
        self.best = -math.inf
        self.since = 0

    def update(self, round: int, value: float) -> str | None:
        if math.isnan(value):
            return None
        if self.target is not None and value >= self.target:
            return f"target accuracy {self.target:g} reached in round {round} ({value:.4f})"
        if value > self.best + self.min_delta:
            self.best, self.since = value, 0
        else:
            self.since += 1
        if self.patience is not None and self.since >= self.patience:
            return (
                f"plateau: accuracy did not improve by more than {self.min_delta:g} for {self.patience} rounds "
                f"(best {self.best:.4f}); stopped after round {round}"
            )
        return None


def _client_level_row(cfg: Config, plan, r: int, clip: float, dim: int, ev_model: list, ev_server: list) -> dict:
    from fedvault.dp.noise import ddg_epsilon

    ev_model.append(plan.event(r, clip, dim, cfg.training.client_fraction))
    ev_server.append(plan.event(r, clip, dim, 1.0, replace_one=True))
    return {
        "client_epsilon": float(ddg_epsilon(ev_model, cfg.privacy.delta)),
        "client_epsilon_vs_server": float(ddg_epsilon(ev_server, cfg.privacy.delta)),
        "wraparound_probability": plan.wraparound_probability,
    }


def _client_level_summary(cfg: Config, ev_model: list, ev_server: list) -> dict:
    from fedvault.dp.noise import ddg_epsilon

    return {
        "mechanism": "distributed discrete Gaussian (Kairouz et al. 2021) under SecAgg",
        "noise_multiplier": cfg.privacy.client_noise_multiplier,
        "clip_norm": cfg.aggregation.update_clip,
        "delta": cfg.privacy.delta,
        "sample_rate": cfg.training.client_fraction,
        "epsilon": float(ddg_epsilon(ev_model, cfg.privacy.delta)) if ev_model else 0.0,
        "epsilon_vs_server": float(ddg_epsilon(ev_server, cfg.privacy.delta)) if ev_server else 0.0,
        "events": [e.to_dict() for e in ev_model],
        "events_vs_server": [e.to_dict() for e in ev_server],
    }


@dataclass
class FederationRun:
    """Everything a finished study leaves: its history, the global model, the data and hospitals."""

    history: dict[str, Any]
    model: torch.nn.Module
    data: data_mod.FederatedData
    hospitals: list[Hospital]
    standardisation: tuple[np.ndarray, np.ndarray] | None = None  # federated (mean, std)


class ExtraUpdates(Protocol):
    """Extra participants injected into every round (e.g. an audit's canary clients)."""

    names: list[str]

    def __call__(self, round: int, weights: np.ndarray) -> Mapping[str, np.ndarray]: ...


def run_federation(
    cfg: Config,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    baseline: bool = True,
) -> dict[str, Any]:
    """Run the whole study described by ``cfg`` and return its history (the history.json dict)."""
    return federate(cfg, on_round=on_round, baseline=baseline).history


def federate(
    cfg: Config,
    *,
    data: data_mod.FederatedData | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    baseline: bool = True,
    extra_updates: ExtraUpdates | None = None,
    trainer_options: Callable[[str], Mapping[str, Any]] | None = None,
) -> FederationRun:
    """Run a study and keep the objects (model, data, hospitals) for further analysis.

    ``data`` replaces the data set the config names (e.g. with audit canaries inserted);
    ``extra_updates(round, weights)`` returns additional weighted update vectors that take
    part in the aggregation like any hospital's (e.g. canary clients of a privacy audit).
    ``trainer_options(hospital_name)`` (audit only) returns extra ``PrivateTrainer``
    arguments (``fault``, ``gradient_canaries``, see ``dp.faults``); a run with a fault is
    marked ``not_private`` in its history.
    """
    fd = data if data is not None else data_mod.load(cfg)
    names = [h.name for h in fd.hospitals]
    if extra_updates is not None:
        names = names + list(extra_updates.names)
    agg = aggregation.make(cfg, names)
    mean_std = federated_standardise(fd, agg)

    make_model = _model_factory(cfg, fd)
    torch.manual_seed(cfg.seed)
    global_model = make_model()
    weights = models.get_vector(global_model)
    strategy = strategies.make(cfg.training)
    hospitals = [
        Hospital(h, cfg, make_model, i, calibrated_noise(cfg, h.n),
                 trainer_options=trainer_options(h.name) if trainer_options is not None else None)
        for i, h in enumerate(fd.hospitals)
    ]
    # A public bound on any hospital's record count: the last coordinate n_k of an update.
    weight_cap = float(2 ** math.ceil(math.log2(max(h.n for h in fd.hospitals) + 1)))
    client_level = cfg.privacy.client_noise_multiplier is not None
    # Per-coordinate bound of an update: [n_k delta_k, n_k], or [delta_k, 1] with client-level DP.
    clip = cfg.aggregation.update_clip if client_level else weight_cap * cfg.aggregation.update_clip
    ddg_model: list = []  # client-level events vs model consumers (with client sampling)
    ddg_server: list = []  # vs the aggregation server (sees participation; replace-one)
    eval_clip = 100.0 * float(2 ** math.ceil(math.log2(max(len(h.y_val) for h in fd.hospitals) + 1)))
    stopper = EarlyStopping(cfg.training.target_accuracy, cfg.training.patience, cfg.training.min_delta)

    history: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "config": to_dict(cfg),
        "hospitals": {h.name: {"records": h.n, "holdout": int(len(h.y_val)),
                               "noise_multiplier": hs.noise_multiplier}
                      for h, hs in zip(fd.hospitals, hospitals)},
        "rounds": [],
    }
    faulty = sorted({hs.trainer.fault.not_private_reason() for hs in hospitals
                     if hs.trainer is not None and not hs.trainer.fault.private})
    if faulty:
        history["not_private"] = faulty
    stop_reason = f"completed {cfg.training.rounds} rounds"
    sampler = np.random.default_rng([cfg.seed, 0xC11E])  # client sampling (public, seeded)
    for r in range(1, cfg.training.rounds + 1):
        t_round = time.perf_counter()
        inputs: dict[str, np.ndarray] = {}
        refused: dict[str, str] = {}
        train_s: dict[str, float] = {}
        # Poisson client sampling: each hospital takes part with probability client_fraction.
        selected = [hs for hs in hospitals if sampler.random() < cfg.training.client_fraction]
        if len(selected) < cfg.training.min_clients:
            # Too few sampled: the round is skipped (nobody trains, nothing is spent).
            history.setdefault("skipped_rounds", []).append(r)
            continue
        for hs in selected:
            t0 = time.perf_counter()
            try:
                res = hs.fit(weights, r)
            except BudgetExceeded as e:
                refused[hs.name] = str(e)
                if hs.ledger is not None:
                    hs.ledger.refuse(r, str(e))  # the hospital's own ledger keeps the reason too
                continue
            train_s[hs.name] = time.perf_counter() - t0
            inputs[hs.name] = res.vector
        if extra_updates is not None:
            inputs.update(extra_updates(r, weights))
        if len(inputs) < cfg.training.min_clients:
            stop_reason = (
                f"only {len(inputs)} hospitals could take part in round {r} "
                f"(training.min_clients = {cfg.training.min_clients}); refused: {', '.join(sorted(refused))}"
            )
            history["stopped"] = {"round": r, "reason": stop_reason, "refused": refused}
            break
        t_agg = time.perf_counter()
        try:
            result = agg.aggregate(r, inputs, clip=clip)
        except AbortError as e:
            # Too many hospitals vanished for the protocol to unmask: it revealed nothing,
            # the model stays as it was, and the study goes on with the next round. The
            # ε of the hospitals that trained stays charged (conservative: their update
            # was never revealed).
            row = {"round": r, "participants": [], "selected": sorted(hs.name for hs in selected),
                   "aborted": str(e), "metrics": evaluate(global_model, fd.X_test, fd.y_test),
                   "epsilon": {hs.name: hs.epsilon() for hs in hospitals if hs.ledger is not None},
                   "delta": cfg.privacy.delta if cfg.privacy.enabled else None,
                   "upload_bytes": {}, "refused": refused, "dropped": {},
                   "seconds": {"train": max(train_s.values()) if train_s else 0.0,
                               "aggregate": time.perf_counter() - t_agg,
                               "total": time.perf_counter() - t_round}}
            history["rounds"].append(row)
            if on_round is not None:
                on_round(row)
            continue
        agg_s = time.perf_counter() - t_agg
        if strategy.needs_individual_updates:  # plaintext only (enforced by the config)
            ups = [np.clip(inputs[c], -clip, clip) for c in sorted(result.contributors)]
            weights = strategy.step_individual(weights, ups)
        else:
            weights = strategy.step(weights, result.total)
        models.set_vector(global_model, weights)
        metrics = evaluate(global_model, fd.X_test, fd.y_test)
        site = agg.aggregate(
            r, {hs.name: hs.evaluate(weights) for hs in hospitals}, clip=eval_clip, bits=64, purpose="eval"
        ).total
        row: dict[str, Any] = {
            "round": r,
            "participants": sorted(result.contributors),
            "selected": sorted(hs.name for hs in selected),
            "metrics": metrics,
            "site_metrics": {"accuracy": float(site[0] / site[2]), "loss": float(site[1] / site[2]),
                             "records": int(round(site[2]))} if site[2] > 0 else {},
            "epsilon": {hs.name: hs.epsilon() for hs in hospitals if hs.ledger is not None},
            "delta": cfg.privacy.delta if cfg.privacy.enabled else None,
            "upload_bytes": result.upload_bytes,
            "refused": refused,
            "dropped": result.dropped,
            "protocol_seconds": result.seconds,
            **(_client_level_row(cfg, result.noise, r, clip, len(weights), ddg_model, ddg_server)
               if result.noise is not None else {}),
            "seconds": {
                "train": max(train_s.values()) if train_s else 0.0,
                "aggregate": agg_s,
                "total": time.perf_counter() - t_round,
            },
        }
        history["rounds"].append(row)
        if on_round is not None:
            on_round(row)
        watched = metrics["accuracy"] if len(fd.y_test) else row["site_metrics"].get("accuracy", math.nan)
        why = stopper.update(r, watched)
        if why is not None:
            stop_reason = why
            history["stopped"] = {"round": r, "reason": why}
            break

    if cfg.personalization.enabled:
        last = history["rounds"][-1]["round"] if history["rounds"] else 0
        history["personalization"] = {hs.name: hs.personalize(weights, last + 1) for hs in hospitals}
    history["privacy"] = {hs.name: hs.ledger.to_dict() for hs in hospitals if hs.ledger is not None}
    if client_level:
        history["client_level"] = _client_level_summary(cfg, ddg_model, ddg_server)
    history["final"] = {"metrics": evaluate(global_model, fd.X_test, fd.y_test), "stop_reason": stop_reason}
    if baseline:
        history["final"]["baseline_pooled"] = {"metrics": pooled_baseline(cfg, fd, make_model)}
    history["final"]["max_epsilon"] = max(
        (hs.epsilon() or 0.0 for hs in hospitals if hs.ledger is not None), default=None
    )
    return FederationRun(history, global_model, fd, hospitals, mean_std)
