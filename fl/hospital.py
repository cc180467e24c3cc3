"""Everything a hospital does to its update before it leaves the hospital.

A :class:`Hospital` is the one object a hospital owns for a study: its records, the
model factory, its DP trainer and privacy ledger (one accountant for the whole study),
its identity key, and its own secret randomness. The server (:mod:`fl.engine`) never
calls into it directly: a transport hands it a :class:`~fl.engine.RoundSetup` and gets
back a protocol client role (:meth:`Hospital.join`); from then on only protocol
messages leave the hospital.

What ``join`` does, in order, on the hospital's side::

    check the setup       the model's SHA-256, the protocol, the clip, the client-level
                          noise the server announces (recomputed from its own config)
    train                 DP-SGD (dp.training.PrivateTrainer, charged to the ledger)
    delta, clip           delta_k = w_local - w_global, scaled to L2 norm <= update_clip
    weight                [n_k delta_k, n_k]; [delta_k, 1] with client-level DP
    encode + DDG noise    client-level DP only: fixed point, then N_Z(0, sigma_c^2) added to
                          the integer encoding with the hospital's own secret randomness
    mask / encrypt        the protocol client role (SecAgg masks, Paillier encryption)

Secret randomness (:class:`SecretRandomness`): DP-SGD's Poisson sampling and noise, the
client-level noise and the protocol's secrets (mask seeds, ephemeral keys, Paillier
nonces) come from the OS CSPRNG. Only with ``privacy.reproducible = true`` are they
derived from the public config seed (tests, papers) — the run is then **not private**.
``seed`` always fixes the data split, the model initialisation, non-private training
order and the simulated identity keys.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
from torch import nn

from fedvault.fl import plain
from fedvault.fl.config import Config
from fedvault.fl.data import HospitalData
from fedvault.fl.errors import FederationError
from fedvault.fl.metrics import evaluate as evaluate_model
from fedvault.fl.models import get_vector, set_vector

if TYPE_CHECKING:  # the engine imports this module; the types only
    from fedvault.fl.engine import RoundSetup
    from fedvault.protocols.session import ClientRole

__all__ = [
    "Hospital", "KeyHolder", "VectorParticipant", "LocalResult", "SecretRandomness", "SetupRejected",
    "ClientNoise", "plan_client_noise", "clip_l2", "model_digest", "site_metric_keys", "StreamGenerator",
]


class SetupRejected(FederationError):
    """A hospital refuses a round setup (wrong model hash, protocol, clip or noise)."""


def check_model_bound(setup: "RoundSetup", who: str) -> None:
    """Refuse a setup whose protocol session id does not end with the model's SHA-256
    (:func:`fl.engine.bound_session_id`): without it a server could show each hospital a
    different model in one round (redteam, issue 12 item 7 over the engine path)."""
    sid = getattr(setup.params, "session_id", None)
    if setup.params is None or sid is None:
        return
    if not bytes(sid).endswith(bytes.fromhex(setup.model_sha256)):
        raise SetupRejected(f"{who}: the round's protocol session is not bound to the model it received "
                            f"(round {setup.round}); hospitals may have been shown different models")


def model_digest(weights: np.ndarray) -> str:
    """SHA-256 (hex) of the global model as sent: its float64 little-endian parameter bytes."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype="<f8").tobytes()).hexdigest()


def site_metric_keys(loss: Any = "cross_entropy") -> tuple[str, ...]:
    """The summable site metrics for a training ``loss`` (their order in the evaluation vector)."""
    if loss == "cross_entropy":
        return ("accuracy", "loss")
    if loss == "mse":
        return ("mse", "mae", "loss")
    return ("loss",)


SITE_METRIC_CAP = 100.0  # a site metric above it is reported as 100 (public bound of the eval session)


def clip_l2(v: np.ndarray, bound: float) -> np.ndarray:
    """Scale ``v`` down to L2 norm ``bound`` if it is longer."""
    norm = float(np.linalg.norm(v))
    return v * (bound / norm) if norm > bound else v


# -- client-level DP: the distributed discrete Gaussian (Kairouz et al. 2021) ----------------
@dataclass(frozen=True)
class ClientNoise:
    """Public client-level noise parameters of one round (every party can recompute them).

    Each hospital clips its delta to L2 norm ``C``, sends the unweighted ``[delta_k, 1]``,
    encodes it with scale ``2^frac_bits`` and adds ``N_Z(0, sigma_client^2)`` to the delta
    coordinates; ``sigma_client`` is chosen (:func:`dp.noise.client_sigma`) so that any
    ``threshold`` survivors together add variance ``>= (z C 2^frac_bits)^2``. ``frac_bits``
    keeps the signal plus 12 standard deviations of the noise inside the ring.
    """

    frac_bits: int
    sigma_client: float  # integer units
    threshold: int
    wraparound_probability: float

    def event(self, round: int, clip: float, dimension: int, sample_rate: float, replace_one: bool = False):
        from fedvault.dp import noise as ddg

        return ddg.DDGEvent(
            round=round, sigma_client=self.sigma_client, threshold=self.threshold,
            clip_norm=(2.0 if replace_one else 1.0) * clip, scale=math.ldexp(1.0, self.frac_bits),
            dimension=dimension, sample_rate=sample_rate, coord_error=0.5,
        )


def noise_threshold(params: Any) -> int:
    """Fewest HONEST hospitals whose client-level noise is in any sum the server can unmask:
    the SecAgg threshold ``t``, or fewer when the declared threat model lets the server
    collude with ``C`` hospitals (they subtract their own noise): the guarantee's ``min_sum``
    (``t - C + 1`` in the complete graph). Redteam: calibrating for ``t`` overstated the
    client-level noise against the declared adversary (n = 10 complete: 7 vs 5)."""
    t = int(params.t)
    g = params.guarantee() if callable(getattr(params, "guarantee", None)) else None
    m = getattr(g, "min_sum", None)
    return max(1, min(t, int(m))) if m is not None else t


def plan_client_noise(z: float, clip: float, bits: int, n: int, threshold: int, dimension: int) -> ClientNoise:
    """Fixed-point scale and per-client σ for ``n`` clients with secure-aggregation threshold ``t``."""
    from fedvault.dp import noise as ddg

    head = n + 12.0 * z * math.sqrt(n / threshold)
    f = math.floor(math.log2(((1 << (bits - 1)) - 1) / (max(clip, 1.0) * head)))
    if f < 0:
        raise SetupRejected(f"a {bits}-bit ring is too small for client-level noise; raise aggregation.bits")
    sigma_c = ddg.client_sigma(z * clip * math.ldexp(1.0, f), threshold)
    p_wrap = ddg.wraparound_probability(bits, n, dimension, sigma_c, n * max(clip, 1.0) * math.ldexp(1.0, f))
    return ClientNoise(f, sigma_c, threshold, p_wrap)


def add_client_noise(vector: np.ndarray, encoder: Any, noise: ClientNoise, noised: int,
                     rng: Any) -> np.ndarray:
    """Encode ``vector`` and add ``N_Z(0, sigma_c^2)`` to its first ``noised`` coordinates in Z_(2^b)."""
    from fedvault.dp import noise as ddg

    enc = encoder.encode(vector).astype(np.uint64)
    enc[:noised] += ddg.noise_mod(noised, noise.sigma_client, 64, rng)  # wraps mod 2^64
    mask = np.uint64((1 << encoder.bits) - 1) if encoder.bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    return (enc & mask).astype(encoder.dtype)


def state_dir() -> Path:
    """fedvault's per-user state directory: ``$FEDVAULT_STATE_DIR``, else ``$XDG_STATE_HOME/fedvault``,
    else ``~/.local/state/fedvault``."""
    explicit = os.environ.get("FEDVAULT_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state") / "fedvault"


def key_fingerprint(key: Any) -> str:
    """Hex SHA-256 naming a Paillier decryption key: the modulus (holder key), or the threshold
    public key and the share's index (key share). Public values only; keys are fresh per study."""
    h = hashlib.sha256()
    if hasattr(key, "index") and hasattr(key, "public"):  # ThresholdKeyShare
        h.update(b"fedvault/decrypt-log/share/v1\0" + key.public.fingerprint() + int(key.index).to_bytes(4, "big"))
    else:  # phe PaillierPrivateKey
        n = int(key.public_key.n)
        h.update(b"fedvault/decrypt-log/holder/v1\0" + n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return h.hexdigest()


def key_decrypt_log(key: Any, state: "str | os.PathLike[str] | None" = None) -> Any:
    """The durable decrypt-once log bound to a decryption ``key`` (not to the process): a
    :class:`~protocols.paillier.DirectoryDecryptLog` in ``<state>/decrypt-log/<key fingerprint>/``
    (mode 0700; ``state`` defaults to :func:`state_dir`). A restarted decryptor holding the same key
    finds its earlier answers there and refuses a second contributor set for a round."""
    from fedvault.protocols.paillier import DirectoryDecryptLog

    base = Path(state).expanduser() if state is not None else state_dir()
    d = base / "decrypt-log" / key_fingerprint(key)
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    except OSError as e:
        raise FederationError(f"cannot create the decrypt-once log directory {d} ({e}); set FEDVAULT_STATE_DIR "
                              "(or pass state_dir=/decrypt_log=) to a writable private directory") from e
    return DirectoryDecryptLog(d)


class _DecryptLogOwner:
    """``decrypt_log``: the explicit log if one was given, else the durable log of the key held now."""

    key_share: Any = None
    _decrypt_log: Any = None
    _state_dir: Any = None

    def _decryption_key(self) -> Any:
        return self.key_share

    @property
    def decrypt_log(self) -> Any:
        if self._decrypt_log is not None:
            return self._decrypt_log
        key = self._decryption_key()
        if key is None:  # decrypts nothing (no Paillier key share): nothing to record
            from fedvault.protocols.paillier import MemoryDecryptLog

            return MemoryDecryptLog()
        return key_decrypt_log(key, self._state_dir)

    @decrypt_log.setter
    def decrypt_log(self, log: Any) -> None:
        self._decrypt_log = log


class StreamGenerator:
    """The two draws :func:`dp.noise.discrete_gaussian` needs (``random``, ``geometric``), taken from
    an AES-256-CTR :class:`~dp.randomness.RandomStream` keyed by ``os.urandom`` — the same CSPRNG as
    DP-SGD's noise, instead of a PCG64 generator merely seeded from the OS.

    ``geometric(p, m)``: inverse transform ``floor(log(1 - U) / log(1 - p)) + 1`` of 53-bit
    uniforms, i.e. ``P(k) = (1 - p)^(k-1) p`` on ``k >= 1`` (numpy's convention).
    """

    def __init__(self, stream: Any) -> None:
        self._s = stream

    def random(self, m: int) -> np.ndarray:
        return self._s.uniform(int(m))

    def geometric(self, p: float, m: int) -> np.ndarray:
        u = self._s.uniform(int(m))
        return np.floor(np.log1p(-u) / math.log1p(-p)).astype(np.int64) + 1


# -- secret randomness ----------------------------------------------------------------------
class SecretRandomness:
    """Where a hospital's secret random choices come from.

    Default: the OS CSPRNG (``os.urandom`` via :mod:`secrets`), fresh for every use.
    ``reproducible=True`` (``privacy.reproducible``) derives everything from the public
    config seed exactly as fedvault <= b8a9b93 did — anyone with the config can then
    replay the noise: **not private**, for tests and papers only.
    """

    def __init__(self, seed: int, index: int, *, reproducible: bool = False) -> None:
        self.seed, self.index, self.reproducible = int(seed), int(index), bool(reproducible)

    def trainer_seed(self) -> int | None:
        """``reproducible_seed`` of DP-SGD (``dp.training``); ``None`` = sampling and noise from the OS CSPRNG."""
        return self.seed if self.reproducible else None

    def ddg_generator(self, round_seed: bytes, party: int) -> Any:
        """Generator of this hospital's client-level noise in one round: AES-256-CTR keyed from
        ``os.urandom`` (:class:`StreamGenerator`); reproducible mode: the seeded numpy generator
        of fedvault <= b8a9b93 (replayable from the config, as labelled)."""
        if not self.reproducible:
            from fedvault.dp.randomness import RandomStream

            return StreamGenerator(RandomStream.from_os())
        from fedvault.dp.noise import secure_generator

        return secure_generator(hashlib.sha256(round_seed + party.to_bytes(4, "big")).digest())

    def protocol_random(self, round_seed: bytes, label: bytes, party: int) -> Callable[[int], bytes]:
        """Byte source of the protocol's secrets (mask seeds, ephemeral keys, encryption nonces)."""
        if not self.reproducible:
            return secrets.token_bytes
        if label == b"paillier":
            from fedvault.secagg.paillier import seeded_random

            return seeded_random(b"fedvault/paillier/sim/v2\x00" + round_seed + b"\x00client" + party.to_bytes(4, "big"))
        from fedvault.secagg.prg import DeterministicRandom

        return DeterministicRandom(round_seed, b"simulate_round").child(b"client/%d" % party)


@dataclass
class LocalResult:
    """What local training produced (the vector leaves only through a protocol role)."""

    vector: np.ndarray  # [n_k * delta_k, n_k], or [delta_k, 1] with client-level DP
    steps: int
    epsilon: float | None
    loss: float | None


# -- protocol client roles (hospital side) -----------------------------------------------------
def client_role(setup: "RoundSetup", party: int, vector: np.ndarray | None, rand: SecretRandomness | None,
                identity: Any = None, key_share: Any = None, log: Any = None) -> "ClientRole":
    """The protocol client role holding this party's contribution (``vector``; None = no upload).

    Encoding, client-level noise, masking and encryption all happen here, on the party's side.
    """
    from fedvault.fl import roles

    proto = setup.protocol
    if proto == "plaintext":
        from fedvault.protocols.plaintext import PlaintextClient

        return PlaintextClient(setup.params, party, vector)
    round_seed = setup.round_seed
    if proto == "secagg":
        if setup.client_noise is not None and vector is not None:
            if rand is not None:
                gen = rand.ddg_generator(round_seed, party)
            else:
                from fedvault.dp.randomness import RandomStream

                gen = StreamGenerator(RandomStream.from_os())
            vector = add_client_noise(vector, setup.params.encoder, setup.client_noise, len(vector) - 1, gen)
        rng = rand.protocol_random(round_seed, b"secagg", party) if rand is not None else secrets.token_bytes
        return roles.secagg_client(setup.params, party, identity, setup.identity_keys, rng, vector)
    if proto == "paillier":
        rng = rand.protocol_random(round_seed, b"paillier", party) if rand is not None else secrets.token_bytes
        return roles.paillier_party(setup.params, setup.public, party, identity, setup.identity_keys, rng,
                                    vector, key_share, log)
    raise SetupRejected(f"unknown aggregation protocol {proto!r}")


class Hospital(_DecryptLogOwner):
    """One federation participant. Create once per study; it lives on the hospital's side.

    Args:
        data: the hospital's records and held-out split.
        cfg: the study's config as the hospital holds it (checked against every setup).
        model_factory: builds a fresh model of the federation's architecture.
        index: the hospital's position in the roster (used only in reproducible mode).
        party: the hospital's protocol id.
        noise_multiplier: DP-SGD σ (calibrated for this hospital), or None to use the config's.
        party: the hospital's protocol id (default ``index + 1``).
        identity: the hospital's long-term Ed25519 identity key (simulated: derived from the seed).
        key_share: threshold Paillier only: the hospital's share of the study key.
        decrypt_log, state_dir: threshold Paillier: where the share's decrypt-once record lives; default
            a durable log under the per-user state directory keyed by the share (:func:`key_decrypt_log`).
        trainer_options: AUDIT ONLY — extra ``PrivateTrainer`` arguments (``dp.faults``).
        loss, optimizer: the training objective and optimiser (``dp.objective``: names or callables).
        paillier_public: the study's Paillier ``PublicSetup`` as this hospital pinned it (key ceremony).
            A setup carrying another key is refused before training: in holder mode a server that made
            hospitals encrypt under its own key would decrypt every upload. Threshold mode pins the key
            of ``key_share`` without it. Unpinned holder mode trusts the transport (the Flower engine
            node substitutes the public setup from its own node directory).
        roster_keys: ``{party: Ed25519 public key}`` of the consortium as this hospital pinned it (its
            roster). A setup naming another identity key for any of its parties is refused before
            training: a server that swapped the other hospitals' keys for its own (sybils) would run the
            protocol with the victim alone. Unpinned, the setup's keys are trusted (the Flower engine
            node substitutes the keys of its own pinned roster).
    """

    def __init__(self, data: HospitalData, cfg: Config, model_factory: Callable[[], nn.Module], index: int,
                 noise_multiplier: float | None = None, *, party: int | None = None, identity: Any = None,
                 key_share: Any = None, trainer_options: Mapping[str, Any] | None = None,
                 loss: Any = None, optimizer: Any = None, decrypt_log: Any = None,
                 state_dir: "str | os.PathLike[str] | None" = None, paillier_public: Any = None,
                 roster_keys: "Mapping[int, bytes] | None" = None) -> None:
        self.data = data
        self.roster_keys = None if roster_keys is None else {int(k): bytes(v) for k, v in roster_keys.items()}
        self.paillier_public = paillier_public  # the study's Paillier public setup as this hospital pinned it
        self.loss = cfg.training.loss if loss is None else loss
        self.optimizer = cfg.training.optimizer if optimizer is None else optimizer
        self.cfg = cfg
        self.model_factory = model_factory
        self.index = index
        self.party = party if party is not None else index + 1
        self.identity = identity
        self.key_share = key_share  # threshold Paillier: this hospital's share of the study key
        # Paillier: what its key share decrypted (once per session and round), durable per key
        self._decrypt_log, self._state_dir = decrypt_log, state_dir
        self.random = SecretRandomness(cfg.seed, index, reproducible=cfg.privacy.reproducible)
        self.ledger = None
        self.trainer = None
        self.noise_multiplier = noise_multiplier
        self.personal_model: nn.Module | None = None
        self._trainer_options = dict(trainer_options or {})  # audit only: dp.faults fault / gradient canaries
        if cfg.privacy.enabled:
            from fedvault.dp.ledger import PrivacyLedger

            p = cfg.privacy
            self.ledger = PrivacyLedger(client=data.name, delta=p.delta, accountant=p.accountant,
                                        budget_epsilon=p.budget, relation=p.relation)
            self.trainer = self._trainer(cfg.training.local_epochs, cfg.training.lr, "train", **self._trainer_options)

    def _trainer(self, epochs: int, lr: float, purpose: str, **options: Any):
        from fedvault.dp.training import PrivateTrainer

        p = self.cfg.privacy
        sigma = self.noise_multiplier if self.noise_multiplier is not None else p.noise_multiplier
        return PrivateTrainer(ledger=self.ledger, noise_multiplier=float(sigma), max_grad_norm=p.max_grad_norm,
                              batch_size=self.cfg.training.batch_size, epochs=epochs, lr=lr,
                              optimizer=self.optimizer, loss=self.loss,
                              reproducible_seed=self.random.trainer_seed(), **options)

    @property
    def name(self) -> str:
        return self.data.name

    # -- before a round ------------------------------------------------------------------
    def refusal(self, round: int) -> str | None:
        """Why this hospital declines ``round`` (its budget would be exceeded), else None.

        A refusal is recorded in the hospital's own ledger.
        """
        if self.trainer is None:
            return None
        reason = self.trainer.check(self.data.n, round)
        if reason is not None:
            self.ledger.refuse(round, reason)
        return reason

    def check_setup(self, setup: "RoundSetup") -> None:
        """Refuse a setup that does not match what this hospital was told to run.

        Raises:
            SetupRejected: the model bytes do not hash to ``setup.model_sha256``; the
                protocol, the update clip or the client-level noise differ from this
                hospital's config; or this hospital is not a party of the round.
        """
        if model_digest(setup.weights) != setup.model_sha256:
            raise SetupRejected(f"{self.name}: the model received in round {setup.round} does not match its "
                                "announced SHA-256; the round setup was altered in transit")
        check_model_bound(setup, self.name)
        self._check_paillier_key(setup)
        self._check_roster(setup)
        a = self.cfg.aggregation
        mine = "secagg" if a.mode in ("masked", "secagg") else a.mode
        if setup.protocol != mine:
            raise SetupRejected(f"{self.name}: the server runs {setup.protocol!r} aggregation but this hospital is "
                                f"configured for {mine!r}; use the consortium's config file")
        self._check_protocol_policy(setup)
        if setup.purpose == "update":
            if setup.update_clip != a.update_clip:
                raise SetupRejected(f"{self.name}: the server asks for update_clip = {setup.update_clip:g}, this "
                                    f"hospital's config says {a.update_clip:g}; use the consortium's config file")
            z = self.cfg.privacy.client_noise_multiplier
            # The encoding refuses values outside the protocol's per-coordinate clip; a clip too small
            # for this hospital's [n·Δ, n] (or [Δ, 1]) would fail only after training, with ε spent.
            weight = 1.0 if z is not None else float(self.data.n)
            need = max(weight * a.update_clip, weight)
            have = getattr(setup.params, "clip", None)
            if setup.protocol in ("secagg", "paillier") and isinstance(have, (int, float)) and have < need * (1 - 1e-12):
                raise SetupRejected(f"{self.name}: the server's per-coordinate clip {have:g} is below this hospital's "
                                    f"bound {need:g} (records × update_clip): its update could not be encoded; "
                                    "refused before training, nothing spent")
            if (z is None) != (setup.client_noise is None):
                raise SetupRejected(f"{self.name}: client-level noise {'missing from' if z else 'not expected in'} "
                                    "the round setup; use the consortium's config file")
            if z is not None:
                n, t = len(setup.params.clients), noise_threshold(setup.params)
                want = plan_client_noise(z, setup.update_clip, setup.params.bits, n, t, len(setup.weights))
                if want != setup.client_noise:
                    raise SetupRejected(f"{self.name}: the server announced client-level noise {setup.client_noise} "
                                        f"but client_noise_multiplier = {z:g} needs {want}")

    def _check_roster(self, setup: "RoundSetup") -> None:
        """Refuse identity keys that differ from this hospital's pinned roster (see ``roster_keys``)."""
        check_roster(self.name, self.roster_keys, setup)

    def _check_paillier_key(self, setup: "RoundSetup") -> None:
        """Refuse a Paillier setup whose public key is not the study key this hospital holds (its pinned
        public setup, or the key its threshold share belongs to), before anything is trained."""
        if setup.protocol != "paillier":
            return
        got = setup.public
        if self.paillier_public is not None:
            if got is None or got.fingerprint() != self.paillier_public.fingerprint():
                raise SetupRejected(f"{self.name}: the server's Paillier public key is not the study key this "
                                    "hospital pinned; refusing to encrypt under it (nothing trained)")
        if self.key_share is not None:
            tk = getattr(got, "threshold_key", None)
            if tk is None or tk.fingerprint() != self.key_share.public.fingerprint() or \
                    int(got.public_key.n) != int(self.key_share.public.public_key.n):
                raise SetupRejected(f"{self.name}: the server's Paillier public key is not the key this hospital's "
                                    "threshold share belongs to; refusing to encrypt under it (nothing trained)")

    def _check_protocol_policy(self, setup: "RoundSetup") -> None:
        """Judge the protocol parameters against this hospital's own config (redteam fix).

        Over Flower the parameters are rebuilt from the server's record, so the threat model,
        threshold, graph and cohort in them are the *server's* claim: recompute what this
        hospital's ``[threat_model]`` / ``aggregation`` / ``training.min_clients`` demand for
        the proposed cohort and refuse anything weaker (a lower threshold re-opens the split
        view with colluders; a cohort of two with a colluder opens one update).
        """
        params = setup.params
        clients = tuple(getattr(params, "clients", ()) or ())
        if setup.protocol not in ("secagg", "paillier") or not clients:
            return
        least = max(2, int(self.cfg.training.min_clients))
        if len(clients) < least:
            raise SetupRejected(f"{self.name}: the server proposes a cohort of {len(clients)} hospitals but this "
                                f"hospital's config needs at least {least} (training.min_clients); a sum over too "
                                "few hospitals says too much about each")
        a = self.cfg.aggregation
        if setup.protocol == "secagg":
            from fedvault.protocols.secagg import SecAggParams
            from fedvault.secagg.errors import ParameterError

            t = None if a.threshold is None else min(a.threshold, len(clients))
            try:
                own = SecAggParams(session_id=params.session_id, round=params.round, clients=clients, threshold=t,
                                   graph=a.graph, bits=params.bits, clip=params.clip,
                                   threat_model=self.cfg.threat_model.protocol())
            except ParameterError as e:
                raise SetupRejected(f"{self.name}: a cohort of {len(clients)} cannot meet this hospital's threat "
                                    f"model: {e}") from None
            if (params.graph, params.effective_degree) != (own.graph, own.effective_degree) or params.t < own.t:
                raise SetupRejected(
                    f"{self.name}: the server proposes SecAgg ({params.graph} graph, degree {params.effective_degree}, "
                    f"t = {params.t}) but this hospital's threat model needs ({own.graph} graph, degree "
                    f"{own.effective_degree}, t >= {own.t}); use the consortium's config file")
            claimed, mine = params.guarantee(), own.guarantee()
            # The parameters' threat model sets min_sum, hence the client-level noise each hospital adds
            # (noise_threshold): a server claiming fewer colluders, or test-only parameters, would shrink it.
            if claimed.insecure or claimed.colluders < mine.colluders:
                raise SetupRejected(
                    f"{self.name}: the server's SecAgg parameters assume {claimed.colluders} colluders"
                    f"{' (INSECURE test-only parameters)' if claimed.insecure else ''} but this hospital's threat "
                    f"model declares {mine.colluders}; use the consortium's config file")
        else:
            want = min(least, len(clients))
            if int(params.min_clients) < want or params.keys != a.keys:
                raise SetupRejected(f"{self.name}: the server proposes Paillier with keys = {params.keys!r}, "
                                    f"min_clients = {params.min_clients} but this hospital's config needs "
                                    f"keys = {a.keys!r}, min_clients >= {want}")

    # -- the round ----------------------------------------------------------------------
    def join(self, setup: "RoundSetup") -> "ClientRole":
        """Check the setup, compute this hospital's contribution, return the protocol client role.

        ``setup.purpose``: ``"update"`` (train and contribute the update), ``"eval"`` (site
        metrics of the global model), ``"stats"`` (standardisation statistics), or
        A party that is not among ``setup.contributors`` (a threshold key-share holder that
        does not contribute this round) only gets its decryption role.

        Raises:
            SetupRejected: see :meth:`check_setup`.
            dp.errors.BudgetExceeded: the round would exceed the privacy budget (nothing spent).
        """
        self.check_setup(setup)
        if self.party not in setup.parties.values():
            raise SetupRejected(f"{self.name} (party {self.party}) is not a party of round {setup.round}")
        vector = None
        if self.party in setup.contributors:  # else: only a key-share holder in this session
            if setup.purpose == "update":
                from fedvault.dp.errors import BudgetExceeded

                try:
                    vector = self.fit(setup.weights, setup.round, prox_mu=setup.prox_mu).vector
                except BudgetExceeded as e:
                    if self.ledger is not None and not any(r.get("round") == setup.round for r in self.ledger.refused):
                        self.ledger.refuse(setup.round, str(e))
                    raise
                if setup.client_noise is not None and self.ledger is not None:
                    self.ledger.record(self.client_level_event(setup))  # the DDG noise it is about to add
            elif setup.purpose == "eval":
                p = self.cfg.privacy  # exact, uncharged: only when this hospital's own config releases them
                if p.enabled and p.site_metrics != "simulation":
                    raise SetupRejected(f"{self.name}: the server asks for site metrics but this hospital's config "
                                        f"says privacy.site_metrics = {p.site_metrics!r} (exact held-out metrics are "
                                        "not DP; they are not released)")
                vector = self.evaluate(setup.weights)
            elif setup.purpose == "stats":
                p = self.cfg.privacy  # the exact sums are released only without privacy
                if p.enabled and p.standardise != "dp":
                    raise SetupRejected(f"{self.name}: the server asks for feature statistics but this hospital's "
                                        f"config says privacy.standardise = {p.standardise!r} (nothing released)")
                vector = self.statistics(setup.round)
            else:
                raise SetupRejected(f"unknown round purpose {setup.purpose!r}")
        return client_role(setup, self.party, vector, self.random, self.identity, self.key_share, self.decrypt_log)

    def statistics(self, round: int = 0) -> np.ndarray:
        """This hospital's contribution to feature standardisation (helper D, issue 13).

        ``privacy.standardise = "dp"`` with privacy on: ``[n_k, Σu + noise, Σu² + noise]`` of
        its range-clipped features with its own secret noise, the release charged to its
        ledger first (:mod:`fl.stats`). Without privacy: the exact ``[n_k, Σx, Σx²]``.

        Raises:
            dp.errors.BudgetExceeded: the release would exceed the budget (nothing released).
        """
        from fedvault.fl import stats

        p = self.cfg.privacy
        if not p.enabled or p.standardise != "dp":
            return stats.local_statistics(self.data)
        lo, hi = stats.public_ranges(self.cfg, self.data.X.shape[1])
        self.ledger.record(stats.statistics_event(self.data.X.shape[1], p.stats_noise_multiplier, round))
        rng = stats.stats_generator(p.reproducible, self.cfg.seed, self.index)
        return stats.private_statistics(stats.to_unit(self.data.X, lo, hi), p.stats_noise_multiplier, rng)

    def client_level_event(self, setup: Any) -> Any:
        """The client-level event of the distributed discrete Gaussian noise this hospital adds.

        No client-sampling credit: participants are listed in history, so participation is
        not hidden (:func:`dp.events.client_sample_rate`)."""
        from fedvault.dp.events import DistributedDiscreteGaussian, client_sample_rate

        noise = setup.client_noise
        q = client_sample_rate(self.cfg.training.client_fraction, coins_secret=not self.cfg.privacy.reproducible,
                               participation_hidden=False)
        return DistributedDiscreteGaussian(
            round=setup.round, sigma_client=noise.sigma_client, threshold=noise.threshold,
            clip_norm=setup.update_clip, scale=math.ldexp(1.0, noise.frac_bits), dimension=len(setup.weights),
            sample_rate=q, coord_error=0.5)

    def client_epsilon(self) -> float | None:
        return None if self.ledger is None else self.ledger.client_epsilon()

    def fit(self, global_vec: np.ndarray, round: int, *, prox_mu: float | None = None) -> LocalResult:
        """Train from ``global_vec`` and return the clipped, weighted update (stays local).

        Raises ``dp.errors.BudgetExceeded`` (nothing trained, nothing spent) to decline.
        """
        model = self.model_factory()
        set_vector(model, global_vec)
        h, t = self.data, self.cfg.training
        mu = (t.prox_mu if t.strategy == "fedprox" else 0.0) if prox_mu is None else prox_mu
        if self.trainer is not None:
            rep = self.trainer.train(model, h.X, h.y, round=round, prox_mu=mu)
            steps, eps, loss = rep.steps, rep.epsilon, rep.loss
        else:  # no privacy: shuffling is not a privacy value, the seed keeps runs reproducible
            steps = plain.train(model, h.X, h.y, epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr,
                                seed=(self.cfg.seed * 1_000_003 + self.index) * 100_003 + round, prox_mu=mu,
                                loss=self.loss, optimizer=self.optimizer)
            eps, loss = None, None
        delta = clip_l2(get_vector(model) - global_vec, self.cfg.aggregation.update_clip)
        if self.cfg.privacy.client_noise_multiplier is not None:
            vec = np.concatenate([delta, [1.0]])  # client-level DP: every hospital weighs the same
        else:
            vec = np.concatenate([h.n * delta, [float(h.n)]])
        return LocalResult(vector=vec, steps=steps, epsilon=eps, loss=loss)

    def evaluate(self, global_vec: np.ndarray) -> np.ndarray:
        """Site evaluation on the own held-out split as ``[n_val m_1, ..., n_val m_k, n_val]`` for the
        metrics :func:`site_metric_keys` (each capped at 100); only the federation's sum leaves."""
        keys = site_metric_keys(self.loss)
        model = self.model_factory()
        set_vector(model, global_vec)
        n_val = len(self.data.y_val)
        if n_val == 0:
            return np.zeros(len(keys) + 1)
        m = evaluate_model(model, self.data.X_val, self.data.y_val, loss=self.loss)
        vals = [n_val * min(float(m[k]), SITE_METRIC_CAP) for k in keys]
        return np.array(vals + [float(n_val)])

    def personalize(self, global_vec: np.ndarray, round: int) -> dict[str, Any]:
        """Fine-tune the global model on local records (DP, charged to this hospital's ledger).

        ``round`` is the ledger round of the fine-tuning; it is moved past the last round
        the ledger recorded (a study that stopped mid-round has events in that round).
        With ``personalization.head_only`` only the last layer trains. Returns the global
        and personalised metrics on the hospital's held-out split and ε before/after; a
        fine-tuning that would exceed the budget is declined (the model stays the global one).
        """
        pc = self.cfg.personalization
        if self.ledger is not None and (not pc.enabled or self.personal_model is not None):
            # its held-out metrics are exact (not DP): answered once per study, and only when configured
            raise SetupRejected(f"{self.name}: personalisation is {'already done' if pc.enabled else 'off'} in this "
                                "hospital's config; a server asking (again) gets no held-out metrics")
        h = self.data
        model = self.model_factory()
        set_vector(model, global_vec)
        before = evaluate_model(model, h.X_val, h.y_val, loss=self.loss)
        if pc.head_only:
            for p in list(model.parameters())[:-2]:  # all but the last layer's weight and bias
                p.requires_grad_(False)
        model.train()
        eps_before = self.epsilon()
        out: dict[str, Any] = {"global": before, "epsilon_before": eps_before}
        lr = pc.lr if pc.lr is not None else self.cfg.training.lr
        if self.ledger is not None:
            from fedvault.dp.errors import BudgetExceeded

            if self.ledger.events:
                round = max(round, self.ledger.events[-1].round + 1)
            for r in self.ledger.refused:
                round = max(round, int(r.get("round", 0)) + 1)
            ft = self._trainer(pc.epochs, lr, "personalise")  # same ledger: the same accountant continues
            try:
                ft.train(model, h.X, h.y, round=round)
            except BudgetExceeded as e:
                out["refused"] = str(e)
        else:
            plain.train(model, h.X, h.y, epochs=pc.epochs, batch_size=self.cfg.training.batch_size, lr=lr,
                        seed=self.cfg.seed + self.index + round, loss=self.loss, optimizer=self.optimizer)
        for p in model.parameters():
            p.requires_grad_(True)
        out["personalized"] = evaluate_model(model, h.X_val, h.y_val, loss=self.loss)
        out["epsilon_after"] = self.epsilon()
        self.personal_model = model
        return out

    def epsilon(self) -> float | None:
        return None if self.ledger is None else float(self.ledger.epsilon())


def check_roster(who: str, roster_keys: "Mapping[int, bytes] | None", setup: "RoundSetup") -> None:
    """Refuse a setup whose identity keys differ from ``who``'s pinned roster (``None``: not pinned).

    Threat model: a server that supplies the identity keys could list sybil "hospitals" whose keys it
    made, sign uploads in their names and make a sum of one honest update look like ``min_clients``
    distinct contributions. A party that pinned its roster (enrolment, ``fedvault roster install``)
    refuses every key it does not hold, and every party of the round missing from it.
    """
    if roster_keys is None:
        return
    for party, key in dict(setup.identity_keys or {}).items():
        if roster_keys.get(int(party)) != bytes(key):
            raise SetupRejected(f"{who}: the round's identity key of party {party} is not the one in its roster; "
                                "refusing the round (nothing trained or decrypted)")
    missing = sorted(set(setup.parties.values()) - set(roster_keys))
    if missing:
        raise SetupRejected(f"{who}: parties {missing[:5]} of the round are not in its roster")


class KeyHolder(_DecryptLogOwner):
    """Paillier ``keys = "holder"``: the party outside the hospitals (e.g. a privacy officer)
    holding the study's decryption key. It decrypts only verified aggregates, once per round
    (see :mod:`protocols.paillier`), and never contributes."""

    name = "key_holder"

    def __init__(self, party: int, private_key: Any, identity: Any, *, decrypt_log: Any = None,
                 state_dir: "str | os.PathLike[str] | None" = None, min_clients: int = 2,
                 roster_keys: "Mapping[int, bytes] | None" = None) -> None:
        """``min_clients``: the fewest contributions this holder ever opens, from its own copy of the
        study config (``max(2, training.min_clients)``; default 2, the config default). A setup
        proposing a smaller cohort or a smaller ``min_clients`` is refused (:meth:`join`).
        ``roster_keys``: ``{party: Ed25519 public key}`` as this holder pinned it; a setup naming other
        identity keys (sybils the server made) is refused (:func:`check_roster`)."""
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 2:
            raise SetupRejected(f"key holder: min_clients must be an integer >= 2, got {min_clients!r} "
                                "(a decryptor never opens a single hospital's update)")
        self.party, self._key, self.identity = party, private_key, identity
        self.min_clients = min_clients
        self.roster_keys = None if roster_keys is None else {int(k): bytes(v) for k, v in roster_keys.items()}
        self._decrypt_log, self._state_dir = decrypt_log, state_dir  # default: durable, per key

    def _decryption_key(self) -> Any:
        return self._key

    def refusal(self, round: int) -> str | None:
        return None

    def check_setup(self, setup: "RoundSetup") -> None:
        """Refuse a setup this holder's own policy does not accept, before any decryption role exists.

        Threat model: over Flower the setup is rebuilt from the *server's* record, so its cohort and
        ``min_clients`` are the server's claim; a server lowering them could have the holder open a
        sum of two contributions (the victim's and a colluder's). The holder judges them against its
        own ``min_clients`` as :meth:`Hospital._check_protocol_policy` does for the hospitals.

        Raises:
            SetupRejected: the model does not hash to ``setup.model_sha256``, the session is not bound
                to it, the protocol is not Paillier, the cohort or ``min_clients`` is below this
                holder's ``min_clients``, or an identity key is not the pinned roster's.
        """
        if model_digest(setup.weights) != setup.model_sha256:
            raise SetupRejected("key holder: the round setup's model does not match its SHA-256")
        check_model_bound(setup, "key holder")
        if setup.protocol != "paillier":
            raise SetupRejected(f"key holder: the server runs {setup.protocol!r} aggregation; a Paillier key holder "
                                "only takes part in Paillier rounds")
        clients = tuple(getattr(setup.params, "clients", ()) or ())
        if len(clients) < self.min_clients:
            raise SetupRejected(f"key holder: the server proposes a cohort of {len(clients)} hospitals but this "
                                f"holder's config needs at least {self.min_clients} (training.min_clients); a sum "
                                "over too few hospitals says too much about each")
        if int(setup.params.min_clients) < self.min_clients:
            raise SetupRejected(f"key holder: the server proposes min_clients = {setup.params.min_clients} but this "
                                f"holder's config needs min_clients >= {self.min_clients} (training.min_clients); "
                                "use the consortium's config file")
        check_roster("key holder", self.roster_keys, setup)

    def join(self, setup: "RoundSetup") -> "ClientRole":
        from fedvault.fl import roles

        self.check_setup(setup)
        return roles.paillier_holder(setup.params, setup.public, self._key, self.identity, setup.identity_keys,
                                     self.decrypt_log)


class VectorParticipant(_DecryptLogOwner):
    """An extra participant contributing a given vector each round (e.g. an audit's canary client).

    ``make(round, weights) -> vector`` returns the weighted update (``[n delta, n]``, or
    ``[delta, 1]`` with client-level DP); it goes through the same encoding, client-level
    noise and masking as a hospital's (:func:`client_role`).
    """

    def __init__(self, name: str, party: int, make: Callable[[int, np.ndarray], np.ndarray], cfg: Config,
                 index: int, identity: Any = None) -> None:
        self.name, self.party, self._make, self.identity = name, party, make, identity
        self.random = SecretRandomness(cfg.seed, index, reproducible=cfg.privacy.reproducible)
        self.key_share = None
        self._decrypt_log = self._state_dir = None  # durable per key share, once one is given

    def refusal(self, round: int) -> str | None:
        return None

    def join(self, setup: "RoundSetup") -> "ClientRole":
        vector = self._make(setup.round, setup.weights) if self.party in setup.contributors else None
        return client_role(setup, self.party, vector, self.random, self.identity, self.key_share, self.decrypt_log)
