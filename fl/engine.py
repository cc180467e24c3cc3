"""The one round engine: select → send the model → aggregate through a protocol → strategy → record.

Server side only. A round, in :meth:`RoundEngine.run_round`::

    1. select      Poisson client sampling with secret coins (os.urandom; seeded only with
                   privacy.reproducible = true)
    2. ask         each selected hospital may decline (its privacy budget); refusals are recorded
    3. send model  a RoundSetup: the global model, its SHA-256, the protocol and its public
                   parameters (threshold etc. from the protocol's threat model), the clip and
                   the client-level noise parameters
    4. aggregate   the transport hands the setup to each hospital (Hospital.join: train, clip,
                   weight, encode, noise, mask/encrypt on the hospital's side) and moves protocol
                   messages between the hospitals' client roles and this engine's server role
    5. strategy    FedAvg/FedAdam/... on the aggregate (robust strategies: plaintext only)
    6. record      one RoundRecord (the history.json row; schema extended, never broken)
    7. early stop  target accuracy or plateau

:meth:`RoundEngine.run_study` runs the rounds, the optional personalisation, and writes
history (with every hospital's ledger) **whenever the study stops**: after the last round,
on early stopping, when refusals leave too few hospitals, and on an error (then re-raised).

Transport
---------
A transport moves a round between this engine and the hospitals; it never computes
anything a hospital adds for privacy. The in-process simulation
(:mod:`fl.transports.memory`) is one; the Flower integration is another. A transport
implements :class:`Transport`:

``roster() -> list[str]``
    every party name of the study (hospitals and extra participants, not key holders).
``ask(round, names) -> {name: reason}``
    each named hospital decides whether it takes part (``Hospital.refusal``); returns the
    refusals (the hospital records them in its own ledger).
``run_session(setup, server) -> SessionOutcome``
    deliver ``setup`` to every party in ``setup.parties`` (each calls ``join(setup)`` and gets
    its protocol client role), then move protocol messages between ``server`` (a server role:
    ``receive(bytes)``, ``advance() -> {party: bytes}``, ``done``, ``result()``) and the client
    roles (``start() -> [msg]``, ``receive(bytes) -> [msg]``, ``done``) until ``server.done``.
    Returns who contributed, who dropped at which stage, bytes and seconds; an
    ``AbortError`` of the protocol is returned as ``SessionOutcome.aborted`` (nothing revealed).
``personalise(weights, round) -> {name: dict}``
    each hospital fine-tunes the final model locally and reports its own metrics.

Parties are named by strings in history; protocol ids are ``setup.parties[name]``.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from fedvault.fl import models, strategies
from fedvault.fl.config import Config, to_dict
from fedvault.fl.errors import ConfigError, FederationError
from fedvault.fl.hospital import ClientNoise, model_digest, noise_threshold, plan_client_noise, site_metric_keys
from fedvault.fl.metrics import evaluate
from fedvault.protocols.session import ServerRole

__all__ = [
    "SCHEMA_VERSION", "NOT_PRIVATE", "RoundSetup", "SessionOutcome", "RoundRecord", "Transport", "RoundEngine",
    "EarlyStopping", "Coins", "AggregationMode", "make_mode", "open_session", "write_history",
]

SCHEMA_VERSION = 1
NOT_PRIVATE = "not private: noise reproducible from the config"


# -- what travels ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RoundSetup:
    """What the server sends every party of a session (all of it public).

    ``purpose``: ``"update"`` (train and contribute), ``"eval"`` (site metrics), ``"stats"``
    (standardisation statistics). ``parties`` maps names to protocol ids of everyone who
    takes part in the session (contributors plus, for threshold Paillier, key-share
    holders); ``contributors`` are the ids whose vectors enter the sum.
    """

    round: int
    purpose: str
    protocol: str
    params: Any
    parties: Mapping[str, int]
    contributors: frozenset[int]
    weights: np.ndarray
    model_sha256: str
    update_clip: float
    round_seed: bytes  # public per-round label; secrets derive from it only in reproducible mode
    identity_keys: Mapping[int, bytes] = field(default_factory=dict)
    public: Any = None  # Paillier: the study's public key setup
    client_noise: ClientNoise | None = None
    prox_mu: float = 0.0
    guarantee: dict[str, Any] | None = None


@dataclass
class SessionOutcome:
    """What the transport reports after one protocol session."""

    total: np.ndarray | None
    contributors: list[str]
    refused: dict[str, str] = field(default_factory=dict)  # parties that could not join
    dropped: dict[str, list[str]] = field(default_factory=dict)
    upload_bytes: dict[str, int] = field(default_factory=dict)
    download_bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # train (slowest party), server, wall
    aborted: str | None = None
    individual: dict[str, np.ndarray] | None = None  # plaintext only: the server saw every vector
    guarantee: dict[str, Any] | None = None
    blamed: dict[str, list[str]] = field(default_factory=dict)  # refused messages / misbehaviour, by sender


class Transport(Protocol):
    """Moves rounds between the engine and the hospitals (see the module docstring)."""

    def roster(self) -> list[str]: ...

    def ask(self, round: int, names: Sequence[str]) -> dict[str, str]: ...

    def run_session(self, setup: RoundSetup, server: ServerRole) -> SessionOutcome: ...

    def personalise(self, weights: np.ndarray, round: int) -> dict[str, dict[str, Any]]: ...


# -- the history row --------------------------------------------------------------------------
@dataclass
class RoundRecord:
    """One round of history.json. :meth:`to_dict` is the row (schema 1, extended only)."""

    round: int
    participants: list[str]
    selected: list[str]
    metrics: dict[str, float]
    epsilon: dict[str, float | None]
    delta: float | None
    upload_bytes: dict[str, int]
    refused: dict[str, str]
    dropped: dict[str, list[str]]
    seconds: dict[str, float]
    protocol: str
    model_sha256: str
    site_metrics: dict[str, Any] | None = None
    protocol_seconds: dict[str, float] | None = None
    aborted: str | None = None
    client_level: dict[str, float] | None = None  # client_epsilon, client_epsilon_vs_server, wraparound_probability
    guarantee: dict[str, Any] | None = None
    blamed: dict[str, list[str]] | None = None  # messages the server refused, attributed to their sender
    weight_check: dict[str, Any] | None = None  # the decoded weight was not the contributors' (see _weight_check)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"round": self.round, "participants": self.participants, "selected": self.selected}
        if self.aborted is not None:
            row["aborted"] = self.aborted
        row["metrics"] = self.metrics
        if self.site_metrics is not None:
            row["site_metrics"] = self.site_metrics
        row.update(epsilon=self.epsilon, delta=self.delta, upload_bytes=self.upload_bytes, refused=self.refused,
                   dropped=self.dropped)
        if self.protocol_seconds is not None:
            row["protocol_seconds"] = self.protocol_seconds
        if self.client_level:
            row.update(self.client_level)
        row["seconds"] = self.seconds
        row["protocol"] = self.protocol
        row["model_sha256"] = self.model_sha256
        if self.guarantee is not None:
            row["guarantee"] = self.guarantee
        if self.blamed:
            row["blamed"] = self.blamed
        if self.weight_check:
            row["weight_check"] = self.weight_check
        return row


# -- stopping and sampling ----------------------------------------------------------------------
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


class Coins:
    """Client-sampling coins: secret (OS CSPRNG) unless ``reproducible`` (then seeded from the config)."""

    def __init__(self, seed: int, reproducible: bool) -> None:
        self._seeded = np.random.default_rng([seed, 0xC11E]) if reproducible else None
        self._os = secrets.SystemRandom()

    def take(self, rate: float) -> bool:
        u = self._seeded.random() if self._seeded is not None else self._os.random()
        return u < rate


# -- protocols, server side -----------------------------------------------------------------------
def session_id(cfg: Config, label: str) -> bytes:
    """A study's session id per purpose: random, or derived from the seed in reproducible mode."""
    if cfg.privacy.reproducible:
        import hashlib

        return hashlib.sha256(f"fedvault/session/{label}/{cfg.seed}".encode()).digest()[:16]
    return os.urandom(16)


class AggregationMode:
    """Server-side half of one aggregation protocol: public parameters and the server role."""

    name = "plaintext"

    def __init__(self, cfg: Config, ids: Mapping[str, int]) -> None:
        self.cfg, self.ids = cfg, dict(ids)
        self._sessions: dict[str, bytes] = {}

    def session(self, purpose: str) -> bytes:
        if purpose not in self._sessions:
            self._sessions[purpose] = session_id(self.cfg, f"{self.label}/{purpose}")
        return self._sessions[purpose]

    label = "plaintext"

    def round_seed(self, purpose: str, round: int) -> bytes:
        import hashlib

        return hashlib.sha256(self.session(purpose) + round.to_bytes(8, "big")).digest()

    def params(self, purpose: str, round: int, ids: tuple[int, ...], clip: float, bits: int | None, dim: int,
               z: float | None) -> tuple[Any, ClientNoise | None]:
        from fedvault.protocols.plaintext import PlaintextParams

        return PlaintextParams(self.session(purpose), round, ids, float(clip)), None

    def decryptors(self) -> dict[str, int]:
        """Parties other than the contributors that every session needs (key holders)."""
        return {}

    def server(self, params: Any, identity_keys: Mapping[int, bytes]) -> ServerRole:
        from fedvault.protocols.plaintext import PlaintextServer

        return PlaintextServer(params)

    def public(self) -> Any:
        return None

    def guarantee(self, params: Any) -> dict[str, Any] | None:
        """What a session with ``params`` guarantees (recorded in every history row)."""
        from fedvault.protocols.plaintext import GUARANTEE

        return {"protocol": "plaintext", "line": GUARANTEE}


class SecAggMode(AggregationMode):
    name = label = "secagg"

    def params(self, purpose, round, ids, clip, bits, dim, z):
        from fedvault.protocols.secagg import SecAggParams
        from fedvault.secagg.errors import ParameterError

        a = self.cfg.aggregation
        if len(ids) < 2:
            raise FederationError(
                "secure aggregation needs at least 2 hospitals in a round (a sum of one is that hospital's update); "
                "lower the number refusing or raise their privacy budgets")
        t = None if a.threshold is None else min(a.threshold, len(ids))
        bits = bits or a.bits
        tm = self.cfg.threat_model.protocol()  # protocol parameters from the declared threat model
        noise, frac_bits = None, None
        try:
            if z is not None:
                probe = SecAggParams(session_id=self.session(purpose), round=round, clients=ids, threshold=t,
                                     graph=a.graph, bits=bits, clip=max(float(clip), 1.0), threat_model=tm)
                noise = plan_client_noise(z, float(clip), bits, len(ids), noise_threshold(probe), dim - 1)
                frac_bits, clip = noise.frac_bits, max(float(clip), 1.0)
            p = SecAggParams(session_id=self.session(purpose), round=round, clients=ids, threshold=t, graph=a.graph,
                             bits=bits, clip=float(clip), frac_bits=frac_bits, threat_model=tm)
        except ParameterError as e:
            raise ConfigError(f"aggregation: {e}; adjust aggregation.threshold / graph / bits") from None
        return p.with_dim(dim), noise

    def server(self, params, identity_keys):
        from fedvault.fl import roles

        return roles.secagg_server(params, identity_keys)

    def guarantee(self, params: Any) -> dict[str, Any] | None:
        from fedvault.fl import roles

        return roles.secagg_guarantee(params)


class PaillierMode(AggregationMode):
    name = label = "paillier"

    def __init__(self, cfg: Config, ids: Mapping[str, int], setup: Any) -> None:
        super().__init__(cfg, ids)
        self.setup_public = setup

    def params(self, purpose, round, ids, clip, bits, dim, z):
        from fedvault.protocols.paillier import PaillierParams

        if len(ids) < 2:
            raise FederationError("Paillier aggregation needs at least 2 hospitals in a round; "
                                  "a decryptor never opens a single hospital's update")
        a = self.cfg.aggregation
        headroom = (len(ids) - 1).bit_length()
        value_bits = (63 - headroom) if bits and bits > 32 else a.slot_bits
        p = PaillierParams(session_id=self.session(purpose), round=round, clients=ids,
                           min_clients=min(max(2, self.cfg.training.min_clients), len(ids)), keys=a.keys,
                           key_bits=a.key_bits, slot_bits=value_bits, clip=float(clip), threshold=a.threshold,
                           short_exponent=a.short_exponent)
        return p, None

    def decryptors(self) -> dict[str, int]:
        if self.setup_public.mode == "holder":
            return {"key_holder": int(self.setup_public.holder)}
        return {name: i for name, i in self.ids.items() if i in self.setup_public.parties}

    def server(self, params, identity_keys):
        from fedvault.fl import roles

        return roles.paillier_server(params, self.setup_public, identity_keys)

    def public(self) -> Any:
        return self.setup_public

    def guarantee(self, params: Any) -> dict[str, Any] | None:
        return self.setup_public.guarantee(params).as_dict()


def make_mode(cfg: Config, ids: Mapping[str, int], paillier_public: Any = None) -> AggregationMode:
    mode = cfg.aggregation.mode
    if mode == "plaintext":
        return AggregationMode(cfg, ids)
    if mode in ("masked", "secagg"):
        return SecAggMode(cfg, ids)
    if mode == "paillier":
        return PaillierMode(cfg, ids, paillier_public)
    raise FederationError(f"unknown aggregation mode {mode!r}")


def open_session(cfg: Config, mode: AggregationMode, round: int, purpose: str, contributors: Sequence[str], *,
                 weights: np.ndarray, clip: float, bits: int | None = None, dim: int | None = None,
                 identity_keys: Mapping[int, bytes] | None = None) -> tuple[RoundSetup, ServerRole]:
    """One protocol session: the :class:`RoundSetup` every party receives and the server role.

    ``contributors``: names whose vectors enter the sum; ``dim``: vector length (default
    ``len(weights) + 1``, an update with its weight); ``clip``/``bits``: per-coordinate bound
    and ring/slot width of the encoding. Client-level noise parameters are planned for
    ``"update"`` sessions when ``privacy.client_noise_multiplier`` is set.
    """
    ids = mode.ids
    cids = tuple(sorted(ids[n] for n in contributors))
    dim = dim if dim is not None else len(weights) + 1
    z = cfg.privacy.client_noise_multiplier if purpose == "update" else None
    params, noise = mode.params(purpose, round, cids, clip, bits, dim, z)
    digest = model_digest(weights)
    if getattr(params, "session_id", None) is not None:  # bind the model into every protocol message (redteam)
        import dataclasses

        params = dataclasses.replace(params, session_id=bound_session_id(params.session_id, digest))
    parties = {n: ids[n] for n in contributors}
    parties.update(mode.decryptors())
    t = cfg.training
    keys = dict(identity_keys or {})
    setup = RoundSetup(
        round=round, purpose=purpose, protocol=mode.name, params=params, parties=parties,
        contributors=frozenset(cids), weights=np.array(weights, dtype=np.float64), model_sha256=digest,
        update_clip=cfg.aggregation.update_clip, round_seed=mode.round_seed(purpose, round),
        identity_keys=keys, public=mode.public(), client_noise=noise,
        prox_mu=t.prox_mu if t.strategy == "fedprox" else 0.0, guarantee=mode.guarantee(params),
    )
    return setup, mode.server(params, keys)


class BoundedUpdateServer:
    """Plaintext server role that refuses any upload that is not a clipped, weighted update.

    Threat model: a malicious hospital in ``plaintext`` mode. The server role sums what arrives;
    the strategy divides by the summed weights. Without this check a participant could send an
    unclipped delta, or a weight that cancels the honest ones (Σ weights = 1, every honest
    delta multiplied by Σn_k), and move the global model arbitrarily. An upload ``[w·Δ, w]`` is
    accepted only if ``1 ≤ w ≤ weight_cap`` (the public bound on record counts) and
    ``‖w·Δ‖₂ ≤ w · update_clip``; anything else raises :class:`~fedvault.protocols.errors.InputError`
    (the transport names the sender in the round's ``blamed`` and the round goes on without it),
    so the weighted mean moves by at most ``update_clip`` in L2 whatever one hospital sends.
    """

    def __init__(self, inner: Any, *, update_clip: float, weight_cap: float) -> None:
        self.inner, self.update_clip, self.weight_cap = inner, float(update_clip), float(weight_cap)

    stage = property(lambda self: self.inner.stage)
    done = property(lambda self: self.inner.done)
    params = property(lambda self: self.inner.params)

    def receive(self, data: Any) -> None:
        from fedvault.protocols.errors import InputError
        from fedvault.protocols.plaintext import Upload, decode

        msg = data if isinstance(data, Upload) else decode(data)
        if isinstance(msg, Upload):
            v = np.asarray(msg.vector, dtype=np.float64)
            if v.size >= 2 and np.all(np.isfinite(v)):
                w, norm = float(v[-1]), float(np.linalg.norm(v[:-1]))
                if not 1.0 <= w <= self.weight_cap:
                    raise InputError(f"client {msg.sender} claims weight {w:g}; a weighted update's record count "
                                     f"must lie in [1, {self.weight_cap:g}]")
                if norm > w * self.update_clip * (1 + 1e-9):
                    raise InputError(f"client {msg.sender} sent an update of L2 norm {norm:g} for weight {w:g}; "
                                     f"a clipped update has at most {w * self.update_clip:g} (update_clip = "
                                     f"{self.update_clip:g})")
        self.inner.receive(msg)

    def advance(self) -> Any:
        return self.inner.advance()

    def result(self) -> Any:
        return self.inner.result()

    def individual_vectors(self) -> dict[int, np.ndarray]:
        return self.inner.individual_vectors()


def bound_session_id(session: bytes, model_sha256: str) -> bytes:
    """The protocol session id of a round: the study's session id followed by the SHA-256 of the
    global model sent for it. Every protocol binds its session id into the session tag (hence into
    every signature, AEAD and proof), so hospitals shown different models cannot complete a round
    together; each hospital checks the suffix against the model it received
    (:meth:`fl.hospital.Hospital.check_setup`)."""
    return bytes(session) + bytes.fromhex(model_sha256)


def write_history(path: "os.PathLike[str] | str", history: dict[str, Any]) -> None:
    """Write history.json all at once (temp file + rename): never half-written."""
    from fedvault.fl.files import write_json_atomic

    write_json_atomic(path, history)


# -- the engine ---------------------------------------------------------------------------------------
class RoundEngine:
    """Drives a study over a :class:`Transport` (see the module docstring).

    Args:
        cfg: the study config.
        transport: moves setups and protocol messages to and from the hospitals.
        mode: the aggregation protocol's server side (:func:`make_mode`).
        model: the global model (updated in place).
        hospitals: names of the hospitals (extra participants are added with ``extra``).
        records: public per-hospital record counts (history's ``hospitals`` section).
        test: the server's test set ``(X, y)`` (may be empty).
        identity_keys: the study's roster of identity public keys (party id -> raw bytes).
        extra: names of extra participants that contribute every round (e.g. canaries).
        on_round: called with each history row as it is recorded.
        epsilon: ``{hospital: ε}`` now (from the hospitals' ledgers, as far as the server knows them).
        before_round: called with ``(round, global weights)`` when a round is not skipped
            (extra participants such as audit canaries prepare their vectors).
        loss: the training objective (metrics follow it: accuracy/ROC-AUC or MSE/MAE).
    """

    def __init__(self, cfg: Config, transport: Transport, mode: AggregationMode, model: Any, *,
                 hospitals: Sequence[str], hospital_info: Mapping[str, dict[str, Any]], test: tuple[np.ndarray, np.ndarray],
                 weight_cap: float, eval_clip: float, identity_keys: Mapping[int, bytes] | None = None,
                 extra: Sequence[str] = (), on_round: Callable[[dict[str, Any]], None] | None = None,
                 epsilon: Callable[[], dict[str, float | None]] | None = None,
                 before_round: Callable[[int, np.ndarray], None] | None = None,
                 loss: Any = None,
                 client_epsilon: Callable[[], dict[str, float | None]] | None = None) -> None:
        self.cfg, self.transport, self.mode, self.model = cfg, transport, mode, model
        loss = cfg.training.loss if loss is None else loss
        self.hospitals, self.extra = list(hospitals), list(extra)
        self.test = test
        self.identity_keys = dict(identity_keys or {})
        self.on_round = on_round
        self._epsilon = epsilon or (lambda: {})
        self._client_epsilon = client_epsilon  # each hospital's client-level ε from its own ledger
        self.before_round = before_round
        self.loss = loss
        self.site_keys = site_metric_keys(loss)
        self.weights = models.get_vector(model)
        self.strategy = strategies.make(cfg.training)
        self.coins = Coins(cfg.seed, cfg.privacy.reproducible)
        self.excluded: dict[str, dict[str, Any]] = {}  # blamed hospitals left out of later rounds
        self.stopper = EarlyStopping(cfg.training.target_accuracy, cfg.training.patience, cfg.training.min_delta)
        if "accuracy" not in self.site_keys:  # training.target_accuracy needs accuracy; patience watches the loss
            self.stopper.target = None
        self.client_level = cfg.privacy.client_noise_multiplier is not None
        # Per-coordinate bound of an update: [n_k delta_k, n_k], or [delta_k, 1] with client-level DP.
        self.clip = cfg.aggregation.update_clip if self.client_level else weight_cap * cfg.aggregation.update_clip
        self.eval_clip = eval_clip
        self.ddg_model: list = []  # public client-level events of the rounds run (each hospital's ledger has its own)
        self.last_round = 0  # the last round started (hospitals may have trained in it)
        self.aggregates: dict[int, np.ndarray] = {}  # round -> the decoded update sum the server learned
        self.history: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "config": to_dict(cfg),
            "reproducible": bool(cfg.privacy.reproducible),
            "hospitals": {k: dict(v) for k, v in hospital_info.items()},
            "rounds": [],
        }
        if cfg.privacy.reproducible:
            self.history["not_private"] = [NOT_PRIVATE]
        self.stop_reason = f"completed {cfg.training.rounds} rounds"

    def evaluate(self) -> dict[str, float]:
        """The global model's metrics on the server's test set."""
        return evaluate(self.model, *self.test, loss=self.loss)

    # -- one session -------------------------------------------------------------------------------
    def setup(self, round: int, purpose: str, contributors: Sequence[str], *, clip: float, bits: int | None = None,
              dim: int | None = None) -> tuple[RoundSetup, ServerRole]:
        """The round setup for ``contributors`` and the matching server role."""
        setup, server = open_session(self.cfg, self.mode, round, purpose, contributors, weights=self.weights,
                                     clip=clip, bits=bits, dim=dim, identity_keys=self.identity_keys)
        if setup.protocol == "plaintext" and purpose == "update" and not self.client_level:
            # The server sees every update in plaintext mode, so it holds each one to the bound an
            # honest hospital's has (SECURITY.md: a malicious hospital's influence is its clipped update).
            server = BoundedUpdateServer(server, update_clip=self.cfg.aggregation.update_clip,
                                         weight_cap=float(clip) / self.cfg.aggregation.update_clip)
        return setup, server

    def session(self, round: int, purpose: str, contributors: Sequence[str], **kw: Any) -> tuple[RoundSetup, SessionOutcome]:
        setup, server = self.setup(round, purpose, contributors, **kw)
        out = self.transport.run_session(setup, server)
        if out.guarantee is None:
            out.guarantee = setup.guarantee
        return setup, out

    # -- one round ---------------------------------------------------------------------------------
    def _emit(self, rec: RoundRecord) -> dict[str, Any]:
        row = rec.to_dict()
        if self.cfg.privacy.enabled:
            row["epsilon_relation"] = self.cfg.privacy.relation  # every ε names its relation (helper D)
        self.history["rounds"].append(row)
        if self.on_round is not None:
            self.on_round(row)
        return row

    def _exclude(self, r: int, blamed: Mapping[str, Sequence[str]] | None) -> None:
        """Leave hospitals blamed in round ``r`` out of later rounds (``aggregation.exclude_blamed``).

        Blame is attributed by the server's own checks on messages bound to their sender
        (signature or GMAC), so a hospital cannot get another excluded; the exclusion and its
        first reason go to ``history["excluded"]``."""
        if not blamed or not self.cfg.aggregation.exclude_blamed:
            return
        for name, reasons in blamed.items():
            if name in self.hospitals and name not in self.excluded:
                self.excluded[name] = {"round": r, "reason": str(reasons[0]) if reasons else "blamed"}
                self.history.setdefault("excluded", {})[name] = dict(self.excluded[name])

    def run_round(self, r: int) -> str | None:
        """Run round ``r``; return the reason to stop the study, or None to go on."""
        t_round = time.perf_counter()
        cfg = self.cfg
        self.last_round = r
        # 1. Poisson client sampling with secret coins (every hospital's coin is drawn, so an
        # exclusion does not shift the others' coins).
        selected = [n for n in self.hospitals if self.coins.take(cfg.training.client_fraction)]
        # A hospital whose messages the server refused and attributed to it in an earlier round
        # (aggregation.exclude_blamed) is left out, so it cannot veto every round.
        selected = [n for n in selected if n not in self.excluded]
        if len(selected) < cfg.training.min_clients:
            self.history.setdefault("skipped_rounds", []).append(r)  # nobody trains, nothing is spent
            return None
        # 2. Each selected hospital may decline (privacy budget).
        refused = self.transport.ask(r, selected)
        if self.before_round is not None:
            self.before_round(r, self.weights)
        ready = [n for n in selected if n not in refused] + self.extra
        if len(ready) < cfg.training.min_clients:
            reason = (f"only {len(ready)} hospitals could take part in round {r} "
                      f"(training.min_clients = {cfg.training.min_clients}); refused: {', '.join(sorted(refused))}")
            self.history["stopped"] = {"round": r, "reason": reason, "refused": refused}
            return reason
        # 3-4. Send the model and aggregate through the protocol.
        setup, out = self.session(r, "update", ready, clip=self.clip)
        refused = {**refused, **out.refused}
        self._exclude(r, out.blamed)
        common = dict(round=r, selected=sorted(selected), delta=cfg.privacy.delta if cfg.privacy.enabled else None,
                      upload_bytes=out.upload_bytes, refused=refused, protocol=setup.protocol,
                      model_sha256=setup.model_sha256, guarantee=out.guarantee, blamed=out.blamed or None)
        if out.aborted is not None:
            # Too many hospitals vanished for the protocol to finish: it revealed nothing and the
            # model stays as it was. The ε of hospitals that trained stays charged (conservative).
            self._emit(RoundRecord(
                participants=[], metrics=self.evaluate(), epsilon=self._epsilon(),
                dropped=out.dropped, aborted=out.aborted,
                seconds={"train": out.seconds.get("train", 0.0), "aggregate": out.seconds.get("wall", 0.0),
                         "total": time.perf_counter() - t_round}, **common))
            return None
        weight_check = self._weight_check(setup, out)
        if weight_check is not None:  # never divide by a tampered weight: use the released counts
            out.total = np.array(out.total, dtype=np.float64)
            out.total[-1] = weight_check["expected"]
        self.aggregates[r] = out.total
        # 5. Strategy step.
        if self.strategy.needs_individual_updates:  # plaintext only (enforced by the config)
            if out.individual is None:
                raise FederationError(f"strategy {cfg.training.strategy!r} needs individual updates, which "
                                      f"{setup.protocol!r} aggregation does not reveal")
            self.weights = self.strategy.step_individual(self.weights, [out.individual[c] for c in sorted(out.contributors)])
        else:
            self.weights = self.strategy.step(self.weights, out.total)
        models.set_vector(self.model, self.weights)
        metrics = self.evaluate()
        # Site metrics: each hospital evaluates the new model on its held-out split; only the sum leaves.
        # Exact sums, not DP: computed only with privacy.site_metrics = "simulation" (or without
        # privacy), labelled simulation-only in the release inventory (helper D, issue 13).
        site_metrics: dict[str, Any] | None = None
        if cfg.privacy.site_metrics == "simulation" or not cfg.privacy.enabled:
            _, ev = self.session(r, "eval", self.hospitals, clip=self.eval_clip, bits=64, dim=len(self.site_keys) + 1)
            site = ev.total
            site_metrics = {}
            if site is not None and site[-1] > 0:
                site_metrics = {k: float(site[i] / site[-1]) for i, k in enumerate(self.site_keys)}
                site_metrics["records"] = int(round(site[-1]))
        client_level = None
        if setup.client_noise is not None:
            client_level = self._client_level_row(setup.client_noise, r)
        self._emit(RoundRecord(
            participants=sorted(out.contributors), metrics=metrics, site_metrics=site_metrics,
            epsilon=self._epsilon(), dropped=out.dropped, protocol_seconds={k: v for k, v in out.seconds.items()
                                                                            if k != "train"},
            client_level=client_level, weight_check=weight_check,
            seconds={"train": out.seconds.get("train", 0.0), "aggregate": out.seconds.get("wall", 0.0),
                     "total": time.perf_counter() - t_round}, **common))
        # 7. Early stop.
        key = "accuracy" if "accuracy" in self.site_keys else "loss"
        watched = metrics.get(key, math.nan) if len(self.test[1]) else (site_metrics or {}).get(key, math.nan)
        if key == "loss":  # no accuracy (regression, custom loss): watch the loss, lower is better
            watched = -watched
        why = self.stopper.update(r, watched)
        if why is not None:
            self.history["stopped"] = {"round": r, "reason": why}
        return why

    def _weight_check(self, setup: RoundSetup, out: SessionOutcome) -> dict[str, Any] | None:
        """``{"decoded", "expected", "reason"}`` when the decoded weight coordinate of an update sum is
        not the contributors' (then the engine divides by ``expected``), else None.

        Threat model: a malicious hospital under secure aggregation. The strategy divides the
        decoded sum by its last coordinate Σn_k; a contributor that encodes a weight of
        ``1 − Σ(others' n_k)`` would make that divisor 1 and multiply every honest update by Σn_k
        (every decoded coordinate still in range). Record counts are released exactly (history
        ``hospitals``), so the server knows Σn_k of the contributors (with client-level DP every
        weight is 1: the count coordinate is not noised) and compares, up to the encoding's
        rounding (``K`` quanta). On a mismatch it divides by the known total, so a malicious
        hospital keeps only what it can do to the vector part (SECURITY.md), and cannot make the
        round abort unattributed either. Skipped when a contributor's count is unknown (audit
        canary participants without client-level DP).
        """
        if setup.purpose != "update" or out.total is None or setup.protocol == "plaintext":
            return None
        info = self.history.get("hospitals", {})
        if self.client_level:  # unweighted [Δ_k, 1]; the count coordinate carries no noise
            counts = [1] * len(out.contributors)
        else:
            counts = [info.get(c, {}).get("records") for c in out.contributors]
        if not counts or any(not isinstance(n, (int, float)) for n in counts):
            return None
        expected, got, k = float(sum(counts)), float(out.total[-1]), len(counts)
        params = setup.params
        if setup.protocol == "secagg":
            quantum = 2.0 ** -params.encoder.fractional_bits
        else:
            quantum = float(params.layout.step)
        if abs(got - expected) <= k * quantum + 1e-9 * expected:
            return None
        return {"decoded": got, "expected": expected,
                "reason": (f"the decoded weight {got:.6g} differs from the contributors' record counts {expected:g}: "
                           "a participant altered its weight coordinate (secure aggregation cannot say who); the "
                           "update was divided by the released counts")}

    def _client_level_row(self, noise: ClientNoise, r: int) -> dict[str, float]:
        """Client-level ε after round ``r``: the largest over hospitals, each from its own ledger
        (replace one hospital, no client-sampling credit: participants are listed in history)."""
        dim = len(self.weights)
        self.ddg_model.append(noise.event(r, self.clip, dim, 1.0))
        eps = self.client_epsilons()
        worst = max((v for v in eps.values() if v is not None), default=0.0)
        return {"client_epsilon": float(worst), "client_epsilon_vs_server": float(worst),
                "client_relation": "replace_one", "wraparound_probability": noise.wraparound_probability}

    def client_epsilons(self) -> dict[str, float | None]:
        if self._client_epsilon is not None:
            return self._client_epsilon()
        from fedvault.dp.accounting import client_epsilon  # no ledgers (e.g. privacy off): the public events

        evs = [e for e in self.ddg_model]
        return {"any hospital": client_epsilon(evs, self.cfg.privacy.delta, "replace_one") if evs else 0.0}

    def client_level_summary(self) -> dict[str, Any]:
        cfg = self.cfg
        eps = self.client_epsilons()
        worst = float(max((v for v in eps.values() if v is not None), default=0.0))
        events = [dict(e.to_dict(), relation="replace_one") for e in self.ddg_model]
        return {
            "mechanism": "distributed discrete Gaussian (Kairouz et al. 2021) under SecAgg",
            "noise_multiplier": cfg.privacy.client_noise_multiplier,
            "clip_norm": cfg.aggregation.update_clip,
            "delta": cfg.privacy.delta,
            "sample_rate": cfg.training.client_fraction,
            "relation": "replace_one",
            "amplification": ("none: participants are listed in history, so client sampling gives no credit "
                              "(dp.events.client_sample_rate); skipped rounds release nothing and cost nothing"),
            "skipped_rounds": list(self.history.get("skipped_rounds", [])),
            "epsilon": worst,
            "epsilon_vs_server": worst,
            "per_hospital": eps,
            "events": events,
            "events_vs_server": events,
        }

    # -- the study --------------------------------------------------------------------------------------
    def run_study(self, *, ledgers: Callable[[], dict[str, Any]],
                  prepare: Callable[[], None] | None = None,
                  finish: Callable[[dict[str, Any]], None] | None = None,
                  write: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run every round, personalise, and return the history.

        ``ledgers()`` returns ``{hospital: ledger dict}`` (history's ``privacy`` section);
        ``prepare()`` runs first (e.g. federated standardisation, round 0); ``finish(history)``
        adds final sections (e.g. the pooled baseline); ``write(history)`` persists it.
        History (with the ledgers) is completed and written whenever the study stops — also
        when an exception stops it, which is then re-raised.
        """
        error: BaseException | None = None
        try:
            if prepare is not None:
                prepare()
            for r in range(1, self.cfg.training.rounds + 1):
                why = self.run_round(r)
                if why is not None:
                    self.stop_reason = why
                    break
            if self.cfg.personalization.enabled:
                self.history["personalization"] = self.transport.personalise(self.weights, self.last_round + 1)
        except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
            error = e
            self.stop_reason = f"error in round {self.last_round}: {type(e).__name__}: {e}"
            self.history["stopped"] = {"round": self.last_round, "reason": self.stop_reason}
        self.history["privacy"] = ledgers()
        if self.client_level:
            self.history["client_level"] = self.client_level_summary()
        self.history["final"] = {"metrics": self.evaluate(), "stop_reason": self.stop_reason}
        if error is None and finish is not None:
            finish(self.history)
        eps = [v for v in self._epsilon().values() if v is not None]
        self.history["final"]["max_epsilon"] = max(eps, default=None) if self.cfg.privacy.enabled else None
        if write is not None:
            write(self.history)
        if error is not None:
            raise error
        return self.history
