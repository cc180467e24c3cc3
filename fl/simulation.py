"""In-process federation: ``federate(cfg)`` — the public API behind ``fedvault demo`` / ``fedvault run``.

This module only *wires* a study: it loads (or takes) the data, builds the parties
(:class:`~fl.hospital.Hospital` per hospital, a :class:`~fl.hospital.KeyHolder` for
Paillier's holder mode, extra participants such as audit canaries), the study's keys,
the in-process transport (:mod:`fl.transports.memory`) and the round engine
(:mod:`fl.engine`), then runs it. The round itself lives in :class:`fl.engine.RoundEngine`;
everything a hospital does to its update lives in :mod:`fl.hospital`.

Bring your own model and data::

    from fedvault.fl import federate
    run = federate(cfg, model=lambda: MyNet(), data=my_federated_data)
    run.history["final"]["metrics"], run.model

``model`` is a factory of an Opacus-compatible ``torch.nn.Module`` (every call a fresh
instance of the same architecture); ``data`` a :class:`~fl.data.FederatedData`.

Hospitals train one after another here, so ``seconds.train`` reports the slowest
hospital (what a round would wait for if they trained in parallel).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

from fedvault.fl import data as data_mod, models, plain
from fedvault.fl.config import Config
from fedvault.fl.engine import SCHEMA_VERSION, EarlyStopping, RoundEngine, make_mode  # noqa: F401 (re-exported)
from fedvault.fl.hospital import Hospital, KeyHolder, VectorParticipant
from fedvault.fl.metrics import evaluate
from fedvault.fl.transports.memory import InMemoryTransport

__all__ = ["federate", "run_federation", "FederationRun", "ExtraParticipants", "calibrated_noise",
           "pooled_baseline", "EarlyStopping", "SCHEMA_VERSION"]


def _model_factory(cfg: Config, fd: data_mod.FederatedData) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        return models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)

    return make


def _batches_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def calibrated_noise(cfg: Config, n_records: int, n_features: int | None = None) -> float | None:
    """Noise multiplier for one hospital: given, or calibrated so that the planned rounds land at target ε.

    Calibrated under the stated relation (``privacy.relation``) together with the releases
    charged before training (``n_features`` given: the DP feature statistics)."""
    p = cfg.privacy
    if not p.enabled:
        return None
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    from fedvault.dp.calibrate import noise_multiplier_for
    from fedvault.fl.stats import planned_releases as _planned_releases

    k = _batches_per_epoch(n_records, cfg.training.batch_size)
    # Planned participation: with client sampling a hospital expects client_fraction of
    # the rounds, but calibrating for every round keeps the budget safe in all cases.
    epochs = cfg.training.rounds * cfg.training.local_epochs
    if cfg.personalization.enabled:  # the fine-tuning is paid from the same budget
        epochs += cfg.personalization.epochs
    steps = epochs * k
    return float(noise_multiplier_for(p.target_epsilon, p.delta, 1.0 / k, steps, accountant=p.accountant,
                                      relation=p.relation, extra_events=_planned_releases(cfg, n_features)))


def pooled_baseline(cfg: Config, fd: data_mod.FederatedData, make_model: Callable[[], torch.nn.Module],
                    loss: Any = "cross_entropy", optimizer: Any = "sgd") -> dict[str, float]:
    """The same model trained without privacy on all hospitals' records pooled in one place (simulation only)."""
    X = np.concatenate([h.X for h in fd.hospitals])
    y = np.concatenate([h.y for h in fd.hospitals])
    torch.manual_seed(cfg.seed)
    model = make_model()
    epochs = min(cfg.training.rounds * cfg.training.local_epochs, 50)
    plain.train(model, X, y, epochs=epochs, batch_size=cfg.training.batch_size, lr=cfg.training.lr, seed=cfg.seed,
                loss=loss, optimizer=optimizer)
    return evaluate(model, fd.X_test, fd.y_test, loss=loss)


@dataclass
class FederationRun:
    """Everything a finished study leaves: its history, the global model, the data and hospitals."""

    history: dict[str, Any]
    model: torch.nn.Module
    data: data_mod.FederatedData
    hospitals: list[Hospital]
    standardisation: tuple[np.ndarray, np.ndarray] | None = None  # federated (mean, std)
    aggregates: dict[int, np.ndarray] = field(default_factory=dict)  # round -> decoded update sum (server's view)


class ExtraParticipants(Protocol):
    """Extra participants in every round (e.g. an audit's canary clients).

    ``names``: their names; ``__call__(round, weights) -> {name: vector}``: each one's
    weighted update for the round (``[n delta, n]``, or ``[delta, 1]`` with client-level DP).
    Their vectors go through the same encoding, client-level noise and protocol as a hospital's.
    """

    names: list[str]

    def __call__(self, round: int, weights: np.ndarray) -> Mapping[str, np.ndarray]: ...


ExtraUpdates = ExtraParticipants  # the name before the round engine


class _ExtraGroup:
    """Calls the extra participants' function once per round; each participant takes its vector."""

    def __init__(self, fn: ExtraParticipants) -> None:
        self.fn, self._round, self._cache = fn, None, {}

    def prepare(self, round: int, weights: np.ndarray) -> None:
        if self._round != round:
            self._cache, self._round = dict(self.fn(round, weights)), round

    def vector(self, name: str, round: int, weights: np.ndarray) -> np.ndarray:
        self.prepare(round, weights)
        return np.asarray(self._cache[name], dtype=np.float64)


def simulation_identities(cfg: Config, ids: Mapping[str, int]) -> dict[int, Any]:
    """Simulated long-term Ed25519 identity keys, fixed by the seed (a deployment enrols real ones)."""
    from fedvault.protocols.secagg import simulation_identities as sim

    return sim(hashlib.sha256(b"fedvault/simulation-identities/v1" + cfg.seed.to_bytes(8, "big")).digest(),
               sorted(ids.values()))


def run_federation(
    cfg: Config,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    baseline: bool = True,
    history_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run the whole study described by ``cfg`` and return its history (the history.json dict)."""
    return federate(cfg, on_round=on_round, baseline=baseline, history_path=history_path).history


def federate(
    cfg: Config,
    *,
    model: Callable[[], torch.nn.Module] | None = None,
    data: data_mod.FederatedData | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    baseline: bool = True,
    extra_participants: ExtraParticipants | None = None,
    extra_updates: ExtraParticipants | None = None,
    history_path: str | Path | None = None,
    trainer_options: Callable[[str], Mapping[str, Any]] | None = None,
    loss: Any = None,
    optimizer: Any = None,
    transcript: list | None = None,
    transport: Callable[..., Any] | None = None,
) -> FederationRun:
    """Run a study in this process and keep its objects (model, data, hospitals).

    Args:
        cfg: the study config (:func:`fl.config.load`).
        model: factory of the model every hospital trains (default: ``cfg.model``): every call
            returns a fresh, Opacus-compatible ``nn.Module`` of the same architecture.
        data: the hospitals' data (default: the data set ``cfg.data`` names), e.g.
            :meth:`fl.data.FederatedData.from_arrays` for your own tensors.
        loss: ``"cross_entropy"`` (classification), ``"mse"`` (regression) or a callable
            ``loss(outputs, targets)`` returning the batch mean (see :mod:`dp.objective`);
            default ``training.loss``.
        optimizer: ``"sgd"``, ``"adam"`` or a factory (see :mod:`dp.objective`); default
            ``training.optimizer``.
        on_round: called with each history row as it is recorded (progress display).
        baseline: also train the pooled non-private baseline (simulation only).
        extra_participants: extra contributors in every round (e.g. audit canary clients);
            ``extra_updates`` is the old name.
        history_path: write history.json here whenever the study stops (also on an error).
        trainer_options: AUDIT ONLY — ``trainer_options(hospital_name)`` returns extra
            ``PrivateTrainer`` arguments (``fault``, ``gradient_canaries``, see ``dp.faults``);
            a run with a fault is marked ``not_private`` in its history.
        transcript: if a list, every protocol message is appended as ``(direction, party, bytes)``.
        transport: factory of the transport, called like :class:`~fl.transports.memory.InMemoryTransport`
            (``(parties, roster=, dropout=, seed=)``); e.g. ``fl.integrations.flower.local.flower_in_process``
            runs the same study through Flower messages (``transcript`` applies to the default transport).

    Returns:
        :class:`FederationRun`: history (the history.json dict), final global model, data,
        hospitals (with their ledgers and personalised models), federated (mean, std).
    """
    fd = data if data is not None else data_mod.load(cfg)
    extra = extra_participants if extra_participants is not None else extra_updates
    hospital_names = [h.name for h in fd.hospitals]
    names = hospital_names + (list(extra.names) if extra is not None else [])
    ids = {name: i + 1 for i, name in enumerate(sorted(names))}
    holder_id = 0  # Paillier's key holder (keys = "holder"): a party outside the hospitals
    identities = simulation_identities(cfg, {**ids, "key_holder": holder_id})
    from fedvault.secagg import keys as K

    identity_keys = {i: K.public_bytes(k) for i, k in identities.items()}

    make_model = model if model is not None else _model_factory(cfg, fd)
    torch.manual_seed(cfg.seed)
    global_model = make_model()
    loss = cfg.training.loss if loss is None else loss
    optimizer = cfg.training.optimizer if optimizer is None else optimizer
    if cfg.privacy.enabled:  # e.g. BatchNorm refused with the fix before any hospital is charged
        from fedvault.dp.objective import check_model

        check_model(global_model)

    # Paillier: the study's keys (generated once; secrets stay with their owners).
    paillier_public, holder_key, shares = None, None, {}
    if cfg.aggregation.mode == "paillier":
        import os

        from fedvault.protocols.paillier import PaillierParams, setup_keys

        a = cfg.aggregation
        p0 = PaillierParams(session_id=b"fedvault/paillier/setup", round=0, clients=tuple(sorted(ids.values())),
                            min_clients=min(max(2, cfg.training.min_clients), len(ids)), keys=a.keys,
                            key_bits=a.key_bits, slot_bits=a.slot_bits, clip=1.0, threshold=a.threshold,
                            short_exponent=a.short_exponent)
        ks = setup_keys(p0, rng=os.urandom, holder=holder_id)
        paillier_public, holder_key, shares = ks.public, ks.holder_key, dict(ks.shares)

    hospitals = [
        Hospital(h, cfg, make_model, i, calibrated_noise(cfg, h.n, fd.n_features if getattr(fd, "standardise", True) else None), party=ids[h.name], identity=identities[ids[h.name]],
                 key_share=shares.get(ids[h.name]),
                 trainer_options=trainer_options(h.name) if trainer_options is not None else None,
                 loss=loss, optimizer=optimizer)
        for i, h in enumerate(fd.hospitals)
    ]
    parties: dict[str, Any] = {hs.name: hs for hs in hospitals}
    group = _ExtraGroup(extra) if extra is not None else None
    if extra is not None:
        for j, name in enumerate(extra.names):
            vp = VectorParticipant(name, ids[name], lambda r, w, _n=name: group.vector(_n, r, w), cfg,
                                   len(hospitals) + j, identity=identities[ids[name]])
            vp.key_share = shares.get(ids[name])
            parties[name] = vp
    if holder_key is not None and paillier_public.mode == "holder":
        parties["key_holder"] = KeyHolder(holder_id, holder_key, identities[holder_id],
                                          min_clients=max(2, cfg.training.min_clients))

    mode = make_mode(cfg, ids, paillier_public)
    if transport is None:
        transport = InMemoryTransport(parties, roster=names, dropout=cfg.aggregation.dropout, seed=cfg.seed,
                                      transcript=transcript)
    else:
        transport = transport(parties, roster=names, dropout=cfg.aggregation.dropout, seed=cfg.seed)
    # A public bound on any hospital's record count: the last coordinate n_k of an update.
    weight_cap = float(2 ** math.ceil(math.log2(max(h.n for h in fd.hospitals) + 1)))
    eval_clip = 100.0 * float(2 ** math.ceil(math.log2(max(len(h.y_val) for h in fd.hospitals) + 1)))
    info = {h.name: {"records": h.n, "holdout": int(len(h.y_val)), "noise_multiplier": hs.noise_multiplier}
            for h, hs in zip(fd.hospitals, hospitals)}

    def epsilons() -> dict[str, float | None]:
        return {hs.name: hs.epsilon() for hs in hospitals if hs.ledger is not None}

    engine = RoundEngine(cfg, transport, mode, global_model, hospitals=hospital_names, hospital_info=info,
                         test=(fd.X_test, fd.y_test), weight_cap=weight_cap, eval_clip=eval_clip,
                         identity_keys=identity_keys, extra=list(extra.names) if extra is not None else [],
                         on_round=on_round, epsilon=epsilons,
                         client_epsilon=(lambda: {hs.name: hs.client_epsilon() for hs in hospitals
                                                  if hs.ledger is not None}) if cfg.privacy.enabled else None,
                         before_round=group.prepare if group is not None else None, loss=loss)

    faulty = sorted({hs.trainer.fault.not_private_reason() for hs in hospitals
                     if hs.trainer is not None and not hs.trainer.fault.private})
    if faulty:
        engine.history["not_private"] = engine.history.get("not_private", []) + faulty

    # The release inventory, the stated relation and where the randomness came from (helper D).
    _record_privacy_facts(cfg, engine.history, client_level=cfg.privacy.client_noise_multiplier is not None,
                          baseline=baseline, audit=trainer_options is not None)
    # Feature standardisation (round 0) as privacy.standardise says (fl.stats; helper D).
    mean_std: list = []

    def standardise() -> None:
        if not getattr(fd, "standardise", True):  # the user's own tensors (from_arrays) are used as given
            return
        result = _standardise(cfg, fd, engine, hospital_names)
        if result is not None:
            mean_std.append(result)
        engine.test = (fd.X_test, fd.y_test)

    def finish(history: dict[str, Any]) -> None:
        if baseline and model is None and len(fd.y_test) and loss == "cross_entropy":
            # The config's model: the pooled baseline trained to convergence (fl.baseline).
            from fedvault.fl.baseline import pooled_baseline as converged_baseline

            history["final"]["baseline_pooled"] = converged_baseline(cfg.model.kind, fd, make_model,
                                                                     seed=cfg.seed).to_dict()
        elif baseline:
            history["final"]["baseline_pooled"] = {"metrics": pooled_baseline(cfg, fd, make_model, loss, optimizer)}
        if baseline and "baseline_pooled" in history["final"]:
            from fedvault.dp.releases import SIMULATION_ONLY

            history["final"]["baseline_pooled"]["release"] = SIMULATION_ONLY

    write = None
    if history_path is not None:
        from fedvault.fl.engine import write_history

        def write(history: dict[str, Any]) -> None:
            write_history(Path(history_path), history)

    history = engine.run_study(
        ledgers=lambda: {hs.name: hs.ledger.to_dict() for hs in hospitals if hs.ledger is not None},
        prepare=standardise, finish=finish, write=write)
    return FederationRun(history, global_model, fd, hospitals, mean_std[0] if mean_std else None,
                         aggregates=dict(engine.aggregates))


def _standardise(cfg: Config, fd: data_mod.FederatedData, engine: RoundEngine,
                 hospital_names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Feature standardisation as ``privacy.standardise`` says (see :mod:`fl.stats`).

    ``"dp"`` (with privacy on): a round-0 "stats" session in which every hospital contributes
    its noised, charged sums (``Hospital.statistics``); ``"public"``: min-max from public
    ranges, no session; ``"none"``: nothing. Without privacy: the exact federated sums.
    """
    from fedvault.fl import stats

    p = cfg.privacy
    if p.enabled and p.standardise == "none":
        return None
    if p.enabled:
        lo, hi = stats.public_ranges(cfg, fd.n_features) or (None, None)
        if lo is None:
            from fedvault.fl.errors import ConfigError

            raise ConfigError("; ".join(stats.range_problems(cfg, fd.n_features)))
        if p.standardise == "public":
            return stats.standardise_public(fd, lo, hi)
    _, st = engine.session(0, "stats", hospital_names, clip=stats.STATS_CLIP, bits=stats.STATS_BITS,
                           dim=1 + 2 * fd.n_features)
    if st.total is None:
        from fedvault.fl.errors import FederationError

        raise FederationError(f"federated standardisation did not complete: {st.aborted or st.refused}")
    if not p.enabled:
        return stats.standardise_from_total(fd, st.total)
    mean, std = stats.standardisation_from_total(st.total, fd.n_features)
    return stats.apply_standardisation(fd, lo, hi, mean, std)


def _record_privacy_facts(cfg: Config, history: dict[str, Any], *, client_level: bool, baseline: bool,
                          audit: bool) -> None:
    """history ``releases`` (the inventory), ``privacy_relation`` and ``randomness``."""
    from fedvault.dp.events import RELATION_TEXT
    from fedvault.dp.releases import run_inventory

    p = cfg.privacy
    history["releases"] = [r.to_dict() for r in run_inventory(
        private=p.enabled, standardise=p.standardise if p.enabled else "exact",
        site_metrics="simulation" if (p.site_metrics == "simulation" or not p.enabled) else "off",
        client_level=client_level, personalization=cfg.personalization.enabled, baseline=baseline, audit=audit)]
    history["privacy_relation"] = {
        "record": p.relation, "client": "replace_one" if client_level else None,
        "text": f"every record-level ε: {RELATION_TEXT[p.relation]} (exact counts are released)"
                + ("; client-level ε: replace one hospital, no client-sampling credit" if client_level else ""),
    }
    history["randomness"] = {
        "reproducible": bool(p.reproducible),
        "client_sampling": "config-seeded" if p.reproducible else "secret",
        "dp_noise": "config-seeded (not private)" if p.reproducible else "OS CSPRNG",
    }
