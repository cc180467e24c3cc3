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
           "pooled_baseline", "EarlyStopping", "SCHEMA_VERSION", "initial_model", "make_hospital", "hospital_info",
           "public_bounds", "StudyRoster", "coordinator", "Standardisation", "standardisation"]


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


# -- the two halves of a study -------------------------------------------------------------------
# ``federate`` runs both in one process; a deployment (fl.integrations.flower.app) runs the
# hospital half on every hospital's machine and the server half on the coordinator's.


def initial_model(cfg: Config, make_model: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The study's initial global model: ``make_model()`` after seeding torch with ``cfg.seed`` (the
    simulation and a deployment of the same config start from the same weights). With privacy on, a
    model Opacus cannot train (e.g. BatchNorm) is refused here, before any hospital is charged."""
    torch.manual_seed(cfg.seed)
    model = make_model()
    if cfg.privacy.enabled:
        from fedvault.dp.objective import check_model

        check_model(model)
    return model


def make_hospital(cfg: Config, data: data_mod.HospitalData, index: int, make_model: Callable[[], torch.nn.Module],
                  *, n_features: int | None, party: int, identity: Any, key_share: Any = None,
                  trainer_options: Mapping[str, Any] | None = None, loss: Any = None, optimizer: Any = None,
                  state_dir: str | Path | None = None, noise_multiplier: float | None = None,
                  roster_keys: Mapping[int, bytes] | None = None) -> Hospital:
    """The hospital half: one hospital's :class:`~fl.hospital.Hospital` from its own records.

    Runs where the records are. ``n_features`` is given when the features are standardised
    (the DP feature statistics are then composed into the noise calibration); ``identity`` is
    the hospital's Ed25519 identity key, ``key_share`` its threshold-Paillier share if any,
    ``state_dir`` where its decrypt-once log lives (default: the per-user state directory).
    The DP-SGD noise multiplier is calibrated here, from the hospital's own record count
    (``noise_multiplier``: the value :func:`calibrated_noise` gave for the same inputs, e.g. cached).
    ``roster_keys``: the consortium's identity keys as the hospital pinned them (a round naming other
    keys, e.g. sybils a server made, is refused before training; see :func:`fl.hospital.check_roster`).
    """
    if noise_multiplier is None:
        noise_multiplier = calibrated_noise(cfg, data.n, n_features)
    return Hospital(data, cfg, make_model, index, noise_multiplier, party=party,
                    identity=identity, key_share=key_share, trainer_options=trainer_options, loss=loss,
                    optimizer=optimizer, state_dir=state_dir, roster_keys=roster_keys)


def hospital_info(hospital: Hospital) -> dict[str, Any]:
    """What a hospital releases about itself before the study (history's ``hospitals`` section): its
    exact record and held-out counts (allowed under replace-one, the stated relation) and its DP-SGD
    noise multiplier (a function of its record count and the public config)."""
    return {"records": int(hospital.data.n), "holdout": int(len(hospital.data.y_val)),
            "noise_multiplier": hospital.noise_multiplier}


def public_bounds(info: Mapping[str, Mapping[str, Any]]) -> tuple[float, float]:
    """``(weight_cap, eval_clip)``: the encoders' public bounds, from the counts the hospitals released.

    ``weight_cap`` bounds any hospital's record count (the last coordinate ``n_k`` of an update), as
    the next power of two above the largest; ``eval_clip`` bounds a site-evaluation vector
    (``n_val`` times a metric capped at 100)."""
    most = max((int(v["records"]) for v in info.values()), default=0)
    held = max((int(v.get("holdout", 0)) for v in info.values()), default=0)
    weight_cap = float(2 ** math.ceil(math.log2(most + 1)))
    eval_clip = 100.0 * float(2 ** math.ceil(math.log2(held + 1)))
    return weight_cap, eval_clip


@dataclass(frozen=True)
class StudyRoster:
    """The public roster the coordinator runs a study with.

    ``hospitals``: contributing hospitals' names; ``ids``: every party's protocol id (hospitals,
    extra participants, key holders); ``identity_keys``: party id -> raw Ed25519 public key
    (enrolled, or simulated); ``extra``: extra participants contributing every round.
    """

    hospitals: list[str]
    ids: Mapping[str, int]
    identity_keys: Mapping[int, bytes]
    extra: list[str] = field(default_factory=list)


def coordinator(cfg: Config, transport: Any, model: torch.nn.Module, *, roster: StudyRoster,
                hospital_info: Mapping[str, Mapping[str, Any]], test: tuple[np.ndarray, np.ndarray],
                paillier_public: Any = None, on_round: Callable[[dict[str, Any]], None] | None = None,
                epsilon: Callable[[], dict[str, float | None]] | None = None,
                client_epsilon: Callable[[], dict[str, float | None]] | None = None,
                before_round: Callable[[int, np.ndarray], None] | None = None, loss: Any = None,
                baseline: bool = False, audit: bool = False, test_set: str | None = None) -> RoundEngine:
    """The server half: the :class:`~fl.engine.RoundEngine` of a study over ``transport``.

    ``test_set``: what ``test`` is, for the release inventory: ``"server"`` (the coordinator's own
    records) or ``"pooled_holdout"`` (the hospitals' held-out records pooled: simulation only);
    default: pooled for CSV hospitals without ``data.test_csv`` (what :func:`fl.data.load` does).

    Everything it uses is public: the config, the roster (names, ids, identity public keys),
    Paillier's public key setup, the counts the hospitals released (``hospital_info``, from
    which :func:`public_bounds` sets the encoders' bounds), the coordinator's own test set (may be
    empty) and the hospitals' ε as their ledgers report it (``epsilon``/``client_epsilon``). It never
    sees a hospital's records. Run the study with ``engine.run_study(...)``.
    """
    weight_cap, eval_clip = public_bounds(hospital_info)
    mode = make_mode(cfg, roster.ids, paillier_public)
    engine = RoundEngine(cfg, transport, mode, model, hospitals=list(roster.hospitals),
                         hospital_info=hospital_info, test=test, weight_cap=weight_cap, eval_clip=eval_clip,
                         identity_keys=roster.identity_keys, extra=list(roster.extra), on_round=on_round,
                         epsilon=epsilon, client_epsilon=client_epsilon, before_round=before_round, loss=loss)
    # The release inventory, the stated relation and where the randomness came from (helper D).
    if test_set is None:
        test_set = "pooled_holdout" if cfg.data.dataset == "csv" and not cfg.data.test_csv else "server"
    _record_privacy_facts(cfg, engine.history, client_level=cfg.privacy.client_noise_multiplier is not None,
                          baseline=baseline, audit=audit, test_set=test_set)
    return engine


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
    global_model = initial_model(cfg, make_model)
    loss = cfg.training.loss if loss is None else loss
    optimizer = cfg.training.optimizer if optimizer is None else optimizer

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

    # The hospital half: one Hospital per hospital (in a deployment, each on its own machine).
    n_features = fd.n_features if getattr(fd, "standardise", True) else None
    hospitals = [
        make_hospital(cfg, h, i, make_model, n_features=n_features, party=ids[h.name],
                      identity=identities[ids[h.name]], key_share=shares.get(ids[h.name]),
                      trainer_options=trainer_options(h.name) if trainer_options is not None else None,
                      loss=loss, optimizer=optimizer, roster_keys=identity_keys)
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
                                          min_clients=max(2, cfg.training.min_clients), roster_keys=identity_keys)

    if transport is None:
        transport = InMemoryTransport(parties, roster=names, dropout=cfg.aggregation.dropout, seed=cfg.seed,
                                      transcript=transcript)
    else:
        transport = transport(parties, roster=names, dropout=cfg.aggregation.dropout, seed=cfg.seed)

    def epsilons() -> dict[str, float | None]:
        return {hs.name: hs.epsilon() for hs in hospitals if hs.ledger is not None}

    # The server half: what the coordinator learns is public (roster, keys, released counts).
    engine = coordinator(
        cfg, transport, global_model,
        roster=StudyRoster(hospitals=hospital_names, ids=ids, identity_keys=identity_keys,
                           extra=list(extra.names) if extra is not None else []),
        hospital_info={hs.name: hospital_info(hs) for hs in hospitals}, test=(fd.X_test, fd.y_test),
        paillier_public=paillier_public, on_round=on_round, epsilon=epsilons,
        client_epsilon=(lambda: {hs.name: hs.client_epsilon() for hs in hospitals
                                 if hs.ledger is not None}) if cfg.privacy.enabled else None,
        before_round=group.prepare if group is not None else None, loss=loss, baseline=baseline,
        audit=trainer_options is not None)

    faulty = sorted({hs.trainer.fault.not_private_reason() for hs in hospitals
                     if hs.trainer is not None and not hs.trainer.fault.private})
    if faulty:
        engine.history["not_private"] = engine.history.get("not_private", []) + faulty

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


@dataclass(frozen=True)
class Standardisation:
    """The feature transform a study's round 0 decided (public: from public ranges and DP sums).

    With ``lo``/``hi`` (privacy on): ``x' = (to_unit(x) - mean)/std`` in unit-box coordinates
    (:func:`fl.stats.apply_standardisation`); without (privacy off): ``x' = (x - mean)/std`` from the
    exact federated sums. The coordinator computes it (:func:`standardisation`); every hospital applies
    it to its own records and the coordinator to its test set (:meth:`apply`).
    """

    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def apply(self, fd: data_mod.FederatedData) -> tuple[np.ndarray, np.ndarray]:
        """Standardise ``fd`` in place (hospitals' records, held-out splits, test set); returns the
        raw-space ``(mean, std)``."""
        from fedvault.fl import stats

        if self.lo is not None:
            return stats.apply_standardisation(fd, self.lo, self.hi, self.mean, self.std)
        mean, std = self.mean, self.std
        for h in fd.hospitals:
            h.X = ((h.X - mean) / std).astype(np.float32)
            h.X_val = ((h.X_val - mean) / std).astype(np.float32)
        fd.X_test = ((fd.X_test - mean) / std).astype(np.float32)
        return mean, std

    def to_dict(self) -> dict[str, list[float]]:
        d = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.lo is not None:
            d.update(lo=self.lo.tolist(), hi=self.hi.tolist())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Standardisation":
        """Read (and sanity-check) a transform received from the coordinator."""
        from fedvault.fl.errors import FederationError

        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("mean", "std", "lo", "hi") if k in d}
        n = len(arr.get("mean", ()))
        if not n or any(len(v) != n for v in arr.values()) or not all(np.isfinite(v).all() for v in arr.values()) \
                or not (arr["std"] > 0).all():
            raise FederationError("the coordinator's feature standardisation is malformed (lengths, non-finite "
                                  "values or a non-positive std); refusing to apply it")
        return cls(arr["mean"], arr["std"], arr.get("lo"), arr.get("hi"))


def standardisation(cfg: Config, engine: RoundEngine, hospital_names: list[str],
                    n_features: int) -> Standardisation | None:
    """The server half of round 0: the feature transform ``privacy.standardise`` asks for.

    ``"dp"`` (with privacy on): a round-0 "stats" session in which every hospital contributes
    its noised, charged sums (``Hospital.statistics``); ``"public"``: min-max from public
    ranges, no session; ``"none"``: nothing (None). Without privacy: the exact federated sums.
    """
    from fedvault.fl import stats

    p = cfg.privacy
    if p.enabled and p.standardise == "none":
        return None
    lo = hi = None
    if p.enabled:
        lo, hi = stats.public_ranges(cfg, n_features) or (None, None)
        if lo is None:
            from fedvault.fl.errors import ConfigError

            raise ConfigError("; ".join(stats.range_problems(cfg, n_features)))
        if p.standardise == "public":
            half = np.full(len(lo), 0.5)
            return Standardisation(half, half, lo, hi)
    _, st = engine.session(0, "stats", hospital_names, clip=stats.STATS_CLIP, bits=stats.STATS_BITS,
                           dim=1 + 2 * n_features)
    if st.total is None:
        from fedvault.fl.errors import FederationError

        raise FederationError(f"federated standardisation did not complete: {st.aborted or st.refused}")
    if not p.enabled:  # exact sums [N, Σx, Σx²] (not private; privacy is off)
        tot, d = st.total, n_features
        mean = tot[1: 1 + d] / tot[0]
        std = np.sqrt(np.maximum(tot[1 + d:] / tot[0] - mean**2, 0.0))
        std[std < 1e-8] = 1.0
        return Standardisation(mean, std)
    mean, std = stats.standardisation_from_total(st.total, n_features)
    return Standardisation(mean, std, lo, hi)


def _standardise(cfg: Config, fd: data_mod.FederatedData, engine: RoundEngine,
                 hospital_names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Feature standardisation as ``privacy.standardise`` says (see :func:`standardisation`), applied to
    every hospital's data and the test set in this process."""
    plan = standardisation(cfg, engine, hospital_names, fd.n_features)
    return plan.apply(fd) if plan is not None else None


def _record_privacy_facts(cfg: Config, history: dict[str, Any], *, client_level: bool, baseline: bool,
                          audit: bool, test_set: str = "server") -> None:
    """history ``releases`` (the inventory), ``privacy_relation`` and ``randomness``."""
    from fedvault.dp.events import RELATION_TEXT
    from fedvault.dp.releases import run_inventory

    p = cfg.privacy
    history["releases"] = [r.to_dict() for r in run_inventory(
        private=p.enabled, standardise=p.standardise if p.enabled else "exact",
        site_metrics="simulation" if (p.site_metrics == "simulation" or not p.enabled) else "off",
        client_level=client_level, personalization=cfg.personalization.enabled, baseline=baseline, audit=audit,
        test_set=test_set)]
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
