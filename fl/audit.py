"""``fedvault audit CONFIG.toml``: measure ε on the trained federation and compare it with the claim.

The accountant's ε is an *upper* bound that holds only if the code does what the
accountant assumes. This module runs the configured federation again with audit
instruments and measures what an adversary who sees the released models can learn:

1. **Record-level one-run audit** (Steinke, Nasr & Jagielski 2023; statistics in
   :mod:`dp.audit.one_run`). ``m`` canary records are built and each is inserted into the
   canary hospital's data with probability 1/2 (seeded coins). After training, every
   canary is scored from the round-0 and final global models, the auditor guesses IN/OUT
   for the most extreme scores, and the number of correct guesses becomes an ε lower
   bound at the stated confidence. If it exceeds the accountant's ε for that hospital,
   the claim is falsified (exit code 1).
2. **Client-level one-shot estimate** (Andrew et al., ICLR 2024; :mod:`dp.audit.gaussian`).
   A second run adds canary *clients* whose updates are fixed random directions of the
   largest norm the protocol accepts; their cosines with the final model change are
   compared with never-inserted directions. This is an estimate, not a bound; it is
   reported next to the client-level ε of the run (if client-level DP is configured)
   and never decides the exit code.
3. **Membership inference** against the final global model of run 1: loss threshold
   (Yeom et al. 2018) and LiRA (Carlini et al. 2022) with shadow models, on held-in
   (training) versus held-out (site hold-out + test) patients: ROC-AUC, TPR at 1% and
   0.1% FPR.

Canary design (record level)
----------------------------
A canary's effect must stand out from what the real records do to the model. The canary
features lie along the *lowest-variance principal directions* of the standardised
training data, ``z = s·u`` (``s = canary_norm`` standard deviations) — directions real
records barely move the model in — and each (direction, label) pair is used once; with
two classes the two labels of a direction would cancel, so one label per direction. The
number of canaries is therefore capped at ``d`` (two classes) or ``d·C`` (C ≥ 3 classes):
a 30-feature logistic regression supports at most 30 canaries, which caps the
certifiable lower bound near ε ≈ 1.6 at 95% (see :mod:`dp.audit.one_run`). All canaries
go into one hospital (default: the largest, whose update weighs most in FedAvg).

The score of canary ``(z, y)`` is white-box and bias-free:
``f(w) = φ_y(z; w) − φ_y(−z; w)`` with ``φ_y = log p_y − log(1 − p_y)``, and
``score = f(w_final) − f(w_0)``: how much training moved the model towards the canary's
label *along the canary's direction*. The round-0 model is public (the server sent it),
and guesses depend only on the scores, never on the coins, so the SNJ bound applies.

Threat model of the audit: the adversary sees the initial and the final global model
(what every participating hospital and the server see). Intermediate rounds are not
used, so the bound is for the final model only (a weaker adversary than DP assumes: a
low lower bound is "no violation found", not a proof of privacy).

Fault injection (auditing the auditor)
--------------------------------------
``[audit] fault = "no_noise" | "no_clipping"`` makes the DP optimizer skip its noise (or
its per-sample clipping) *while the accountant still records the configured noise
multiplier* — the kind of implementation bug the audit exists to catch. It patches
``opacus.optimizers.DPOptimizer`` for the duration of the audit runs only and checks
that the patched optimizer was actually used. ``examples/audit_broken.toml`` uses it.
"""


from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from fedvault.dp import audit as A
from fedvault.fl import data as data_mod
from fedvault.fl import models, plain
from fedvault.fl.config import Config, from_dict
from fedvault.fl.errors import ConfigError

EXIT_VIOLATION = 1
FAULTS = ("none", "no_noise", "no_clipping")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AuditSettings:
    """The ``[audit]`` table of a config file (all keys optional).

    Attributes:
        canaries: record canaries requested (capped by the model's canary slots).
        canary_norm: canary feature norm ``s`` in standard deviations.
        canary_hospital: ``"largest"`` or a hospital name.
        confidence: confidence of the ε lower bound (e.g. 0.95).
        seed: seed of canary design and inclusion coins (independent of training).
        canary_clients: inserted canary clients of the client-level estimate (0: skip).
        unobserved_canaries: never-inserted directions for its null distribution.
        shadow_models: LiRA shadow models (0: loss attack only).
        membership: run the membership-inference report.
        fault: ``"none"``, ``"no_noise"`` or ``"no_clipping"`` (deliberate bug, see module doc).
    """

    canaries: int = 200
    canary_norm: float = 8.0
    canary_hospital: str = "largest"
    confidence: float = 0.95
    seed: int = 0
    canary_clients: int = 16
    unobserved_canaries: int = 500
    shadow_models: int = 4
    membership: bool = True
    fault: str = "none"

    def check(self) -> "AuditSettings":
        if isinstance(self.canaries, bool) or not isinstance(self.canaries, int) or self.canaries < 4:
            raise ConfigError(f"audit.canaries = {self.canaries!r}: use a whole number >= 4, e.g. 100")
        if not (isinstance(self.canary_norm, (int, float)) and 0 < self.canary_norm < 1e4):
            raise ConfigError(f"audit.canary_norm = {self.canary_norm!r}: use a positive number of standard deviations, e.g. 8")
        if not (isinstance(self.confidence, float) and 0.5 <= self.confidence < 1):
            raise ConfigError(f"audit.confidence = {self.confidence!r}: use a number in [0.5, 1), e.g. 0.95")
        for k in ("seed", "canary_clients", "unobserved_canaries", "shadow_models"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"audit.{k} = {v!r}: use a whole number >= 0")
        if self.canary_clients == 1 or (self.canary_clients and self.unobserved_canaries < 2):
            raise ConfigError("audit.canary_clients needs >= 2 canary clients and >= 2 unobserved_canaries (or 0 to skip)")
        if self.shadow_models == 1:
            raise ConfigError("audit.shadow_models: use 0 (loss attack only) or >= 2")
        if self.fault not in FAULTS:
            raise ConfigError(f"audit.fault = {self.fault!r}: use one of {', '.join(FAULTS)}")
        if not isinstance(self.membership, bool):
            raise ConfigError("audit.membership must be true or false")
        if not isinstance(self.canary_hospital, str) or not self.canary_hospital:
            raise ConfigError("audit.canary_hospital: use \"largest\" or a hospital name")
        return self

    def replace(self, **kw: Any) -> "AuditSettings":
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update({k: v for k, v in kw.items() if v is not None})
        return AuditSettings(**d).check()


def settings_from_dict(raw: Mapping[str, Any]) -> AuditSettings:
    known = {f.name: f for f in fields(AuditSettings)}
    kw = {}
    for k, v in raw.items():
        if k not in known:
            raise ConfigError(f"unknown key {k!r} in [audit]; known keys: {', '.join(sorted(known))}")
        if known[k].type == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kw[k] = v
    return AuditSettings(**kw).check()


def load(path: str | Path) -> tuple[Config, AuditSettings]:
    """A fedvault config file plus its optional ``[audit]`` table."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; pass the path of a .toml file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e}); fix the syntax at that line") from None
    audit_raw = raw.pop("audit", {})
    if not isinstance(audit_raw, Mapping):
        raise ConfigError("[audit] must be a table of keys")
    return from_dict(raw, base_dir=p.resolve().parent), settings_from_dict(audit_raw)


# --------------------------------------------------------------------------- fault injection


@contextlib.contextmanager
def inject_fault(kind: str) -> Iterator[dict[str, int]]:
    """Patch Opacus' DPOptimizer to skip noise or clipping; yields a call counter.

    The accountant hook still sees the configured noise multiplier, so the ledger's ε is
    unchanged — exactly the silent bug an audit must catch. Test/demo use only.
    """
    counter = {"calls": 0}
    if kind == "none":
        yield counter
        return
    import opacus.optimizers as oo
    from opacus.optimizers.optimizer import _mark_as_processed

    base = oo.DPOptimizer

    class _NoNoise(base):  # type: ignore[misc, valid-type]
        def add_noise(self) -> None:
            counter["calls"] += 1
            for p in self.params:
                p.grad = p.summed_grad.view_as(p).clone()
                _mark_as_processed(p.summed_grad)

    class _NoClipping(base):  # type: ignore[misc, valid-type]
        def clip_and_accumulate(self) -> None:
            counter["calls"] += 1
            for p in self.params:
                g = self._get_flat_grad_sample(p).to(p.dtype).sum(0)
                p.summed_grad = g if p.summed_grad is None else p.summed_grad + g
                _mark_as_processed(p.grad_sample)

    oo.DPOptimizer = _NoNoise if kind == "no_noise" else _NoClipping
    try:
        yield counter
    finally:
        oo.DPOptimizer = base


# --------------------------------------------------------------------------- canaries


@dataclass
class RecordCanaries:
    """Canary records: standardised-space design ``z`` (m, d), labels, raw features, coins."""

    z: np.ndarray
    y: np.ndarray
    raw: np.ndarray
    included: np.ndarray
    hospital: str
    slots: int


def _standardisation(fd: data_mod.FederatedData) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([h.X for h in fd.hospitals]).astype(np.float64)
    mean = X.mean(0)
    std = X.std(0)
    std[std < 1e-8] = 1.0
    return mean, std


def canary_slots(n_features: int, n_classes: int) -> int:
    """How many canaries fit without cancelling each other (see module doc)."""
    return n_features * (n_classes if n_classes >= 3 else 1)


def design_canaries(fd: data_mod.FederatedData, settings: AuditSettings) -> RecordCanaries:
    """Build canaries along the lowest-variance principal directions and flip their coins."""
    rng = np.random.default_rng([settings.seed, 0xA0D17])
    mean, std = _standardisation(fd)
    Z = (np.concatenate([h.X for h in fd.hospitals]) - mean) / std
    evals, evecs = np.linalg.eigh(np.cov(Z.T) if Z.shape[1] > 1 else np.eye(1))
    d, C = Z.shape[1], fd.n_classes
    slots = canary_slots(d, C)
    m = min(settings.canaries, slots)
    if C >= 3:
        pairs = [(j, c) for j in range(d) for c in range(C)][:m]  # lowest-variance directions first
        dirs = np.array([evecs[:, j] for j, _ in pairs])
        y = np.array([c for _, c in pairs], dtype=np.int64)
        y = (y + rng.integers(0, C)) % C
    else:
        dirs = evecs[:, :m].T.copy()
        y = rng.integers(0, C, m).astype(np.int64)
    dirs *= rng.choice([-1.0, 1.0], size=(m, 1))
    z = settings.canary_norm * dirs
    raw = mean + std * z
    included = rng.random(m) < 0.5
    if settings.canary_hospital == "largest":
        host = max(fd.hospitals, key=lambda h: h.n).name
    else:
        names = [h.name for h in fd.hospitals]
        if settings.canary_hospital not in names:
            raise ConfigError(f"audit.canary_hospital = {settings.canary_hospital!r} is not a hospital; use one of: {', '.join(names)} or \"largest\"")
        host = settings.canary_hospital
    return RecordCanaries(z=z, y=y, raw=raw, included=included, hospital=host, slots=slots)


def insert_canaries(fd: data_mod.FederatedData, can: RecordCanaries) -> data_mod.FederatedData:
    """A deep copy of ``fd`` with the IN canaries appended to the canary hospital's records."""
    out = copy.deepcopy(fd)
    h = next(h for h in out.hospitals if h.name == can.hospital)
    h.X = np.vstack([h.X, can.raw[can.included].astype(h.X.dtype)])
    h.y = np.concatenate([h.y, can.y[can.included].astype(h.y.dtype)])
    return out


class _Recorder:
    """An ``extra_updates`` hook that adds nobody and remembers the round-0 global weights."""

    names: list[str] = []

    def __init__(self) -> None:
        self.initial: np.ndarray | None = None

    def __call__(self, round: int, weights: np.ndarray) -> dict[str, np.ndarray]:
        if self.initial is None:
            self.initial = np.array(weights, copy=True)
        return {}


def _logits(model: torch.nn.Module, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    m = copy.deepcopy(model)
    models.set_vector(m, w)
    m.eval()
    with torch.no_grad():
        return m(torch.as_tensor(X, dtype=torch.float32)).double().numpy()


def canary_scores(model: torch.nn.Module, w0: np.ndarray, w1: np.ndarray, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``f(w1) − f(w0)`` with ``f(w) = φ_y(z; w) − φ_y(−z; w)`` (bias-free white-box score)."""
    def f(w: np.ndarray) -> np.ndarray:
        return A.logit_confidence(_logits(model, w, z), y) - A.logit_confidence(_logits(model, w, -z), y)

    return f(w1) - f(w0)


# --------------------------------------------------------------------------- canary clients


class CanaryClients:
    """Canary clients for the client-level estimate: fixed random directions every round.

    Each submits ``[n·C·c_i, n]`` (``n`` the median hospital size, ``C`` the update clip) —
    or ``[C·c_i, 1]`` when client-level DP weighs every participant equally — i.e. the
    largest update the protocol accepts from an honest-looking client.
    """

    def __init__(self, directions: np.ndarray, clip: float, weight: float, client_level: bool):
        self.directions = directions
        self.names = [f"canary_client_{i:03d}" for i in range(len(directions))]
        self.clip = clip
        self.weight = 1.0 if client_level else weight
        self.initial: np.ndarray | None = None

    def __call__(self, round: int, weights: np.ndarray) -> dict[str, np.ndarray]:
        if self.initial is None:
            self.initial = np.array(weights, copy=True)
        return {
            n: np.concatenate([self.weight * self.clip * c, [self.weight]])
            for n, c in zip(self.names, self.directions)
        }


# --------------------------------------------------------------------------- results


@dataclass
class AuditReport:
    """Everything ``fedvault audit`` measured (``to_dict`` is the audit.json schema)."""

    config: dict[str, Any]
    settings: dict[str, Any]
    record: A.OneRunAudit
    record_scores: np.ndarray
    canary_hospital: str
    canary_slots: int
    claimed_epsilon: float | None
    delta: float
    client: A.ClientLevelEstimate | None = None
    client_claimed_epsilon: float | None = None
    client_cosines: tuple[np.ndarray, np.ndarray] | None = None
    attacks: list[A.AttackResult] = field(default_factory=list)
    accuracy: float | None = None
    seconds: float = 0.0
    fault: str = "none"
    included: np.ndarray | None = None

    @property
    def violation(self) -> bool:
        """The empirical lower bound exceeds the accountant's ε (at the stated confidence)."""
        return self.claimed_epsilon is not None and self.record.epsilon_lower > self.claimed_epsilon

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "verdict": "VIOLATION" if self.violation else "pass",
            "fault": self.fault,
            "record_level": {
                "claimed_epsilon": self.claimed_epsilon, "delta": self.delta,
                "canary_hospital": self.canary_hospital, "canary_slots": self.canary_slots,
                **self.record.to_dict(),
            },
            "client_level": None if self.client is None else {
                "claimed_epsilon": self.client_claimed_epsilon, **self.client.to_dict(),
            },
            "membership_inference": [a.to_dict() for a in self.attacks],
            "final_accuracy": self.accuracy,
            "seconds": self.seconds,
            "settings": self.settings,
            "config": self.config,
        }


# --------------------------------------------------------------------------- the audit


def _federate(cfg: Config, data: data_mod.FederatedData, extra: Any, fault: str):
    from fedvault.fl.simulation import federate

    with inject_fault(fault) as counter:
        run = federate(cfg, data=data, baseline=False, extra_updates=extra)
    if fault != "none" and counter["calls"] == 0:
        raise A.AuditError(
            f"fault {fault!r} was requested but the DP optimizer was never called "
            "(is privacy.enabled = false?); remove audit.fault or enable privacy"
        )
    return run


def record_audit(cfg: Config, settings: AuditSettings, fd: data_mod.FederatedData | None = None):
    """Run 1: the federation with record canaries. Returns (OneRunAudit, scores, canaries, run, claimed ε)."""
    base = fd if fd is not None else data_mod.load(cfg)
    can = design_canaries(base, settings)
    data_in = insert_canaries(base, can)
    rec = _Recorder()
    run = _federate(cfg, data_in, rec, settings.fault)
    mean, std = run.standardisation  # the federation's own (mean, std)
    z_model = (can.raw - mean) / std
    w1 = models.get_vector(run.model)
    scores = canary_scores(run.model, rec.initial, w1, z_model, can.y)
    delta = cfg.privacy.delta
    result = A.audit_scores(scores, can.included, delta=delta, confidence=settings.confidence)
    host = next(h for h in run.hospitals if h.name == can.hospital)
    claimed = host.epsilon() if cfg.privacy.enabled else None
    return result, scores, can, run, claimed


def client_audit(cfg: Config, settings: AuditSettings, fd: data_mod.FederatedData):
    """Run 2: the federation with canary clients; Andrew et al.'s one-shot estimate."""
    rng = np.random.default_rng([settings.seed, 0xC11E])
    make = models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)
    d = models.n_params(make)
    k = settings.canary_clients
    dirs = A.random_directions(rng, k + settings.unobserved_canaries, d)
    client_level = getattr(cfg.privacy, "client_noise_multiplier", None) is not None
    weight = float(np.median([h.n for h in fd.hospitals]))
    clients = CanaryClients(dirs[:k], cfg.aggregation.update_clip, weight, client_level)
    run = _federate(cfg, copy.deepcopy(fd), clients, settings.fault)
    delta_vec = models.get_vector(run.model) - clients.initial
    cos = A.cosines(delta_vec, dirs)
    est = A.one_shot_estimate(cos[:k], cos[k:], delta=cfg.privacy.delta, dimension=d)
    claimed = None
    cl = run.history.get("client_level")
    if isinstance(cl, Mapping) and cl.get("epsilon") is not None:
        claimed = float(cl["epsilon"])
    return est, claimed, (cos[:k], cos[k:])


def _train_shadow(cfg: Config, fd: data_mod.FederatedData, X: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)
    epochs = max(1, min(cfg.training.rounds * cfg.training.local_epochs, 20))
    plain.train(model, X, y, epochs=epochs, batch_size=cfg.training.batch_size, lr=cfg.training.lr, seed=seed)
    return model


def membership_attacks(cfg: Config, settings: AuditSettings, run, canaries: RecordCanaries) -> list[A.AttackResult]:
    """Loss-threshold and LiRA attacks on the final global model: training vs held-out patients."""
    fd = run.data
    # the canary hospital's IN canaries were appended after its records: they are not patients
    n_canaries = int(canaries.included.sum())
    Xin, yin = [], []
    for h in fd.hospitals:
        k = h.n - (n_canaries if h.name == canaries.hospital else 0)
        Xin.append(h.X[:k])
        yin.append(h.y[:k])
    Xi, yi = np.concatenate(Xin), np.concatenate(yin)
    Xo = np.concatenate([h.X_val for h in fd.hospitals] + [fd.X_test])
    yo = np.concatenate([h.y_val for h in fd.hospitals] + [fd.y_test])
    w = models.get_vector(run.model)
    zi, zo = _logits(run.model, w, Xi), _logits(run.model, w, Xo)
    out = [A.evaluate_attack("loss threshold", A.loss_scores(zi, yi), A.loss_scores(zo, yo))]
    K = settings.shadow_models
    if K >= 2:
        Xall, yall = np.concatenate([Xi, Xo]), np.concatenate([yi, yo])
        n = len(yall)
        rng = np.random.default_rng([settings.seed, 0x5AD0])
        mask = rng.random((n, K)) < 0.5
        phi = np.empty((n, K))
        for k in range(K):
            sm = _train_shadow(cfg, fd, Xall[mask[:, k]], yall[mask[:, k]], seed=settings.seed * 1000 + k)
            phi[:, k] = A.logit_confidence(_logits(sm, models.get_vector(sm), Xall), yall)
        target = A.logit_confidence(np.concatenate([zi, zo]), yall)
        s = A.lira_scores(target, phi, mask)
        out.append(A.evaluate_attack(f"LiRA ({K} shadow models)", s[: len(yi)], s[len(yi) :]))
    return out


def run_audit(cfg: Config, settings: AuditSettings, *, log=None) -> AuditReport:
    """The whole audit (record level, client level, membership inference) as a typed report."""
    from fedvault.fl.config import to_dict

    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    fd = data_mod.load(cfg)
    say(f"run 1/2: federation with record canaries ({min(settings.canaries, canary_slots(fd.n_features, fd.n_classes))} canaries) ...")
    rec, scores, can, run, claimed = record_audit(cfg, settings, fd)
    report = AuditReport(
        config=to_dict(cfg), settings={f.name: getattr(settings, f.name) for f in fields(settings)},
        record=rec, record_scores=scores, canary_hospital=can.hospital, canary_slots=can.slots,
        claimed_epsilon=claimed, delta=cfg.privacy.delta, accuracy=run.history["final"]["metrics"]["accuracy"],
        fault=settings.fault, included=can.included,
    )
    if settings.membership:
        say("membership inference: loss threshold" + (f" + LiRA ({settings.shadow_models} shadow models)" if settings.shadow_models >= 2 else "") + " ...")
        report.attacks = membership_attacks(cfg, settings, run, can)
    if settings.canary_clients:
        say(f"run 2/2: federation with {settings.canary_clients} canary clients ...")
        report.client, report.client_claimed_epsilon, report.client_cosines = client_audit(cfg, settings, fd)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- report


def _fmt_eps(e: float | None) -> str:
    if e is None:
        return "none claimed"
    return "∞" if math.isinf(e) else f"{e:.3f}"


def markdown(report: AuditReport) -> str:
    r = report.record
    conf = f"{100 * r.confidence:g}%"
    lines = [
        "# fedvault privacy audit",
        "",
        f"**Verdict: {'VIOLATION — the measured lower bound exceeds the claimed ε' if report.violation else 'pass — no violation found'}**",
        "",
    ]
    if report.fault != "none":
        lines += [f"> Fault injected on purpose: `{report.fault}` (the accountant still assumes the configured mechanism).", ""]
    lines += [
        "## Record level (Steinke, Nasr & Jagielski 2023, one training run)",
        "",
        "| | value |", "|---|---|",
        f"| claimed ε (accountant, {report.canary_hospital}) | {_fmt_eps(report.claimed_epsilon)} at δ = {report.delta:g} |",
        f"| empirical ε lower bound ({conf} confidence) | {r.epsilon_lower:.3f} |",
        f"| canaries (IN / total, slots) | {r.included} / {r.canaries} (model supports {report.canary_slots}) |",
        f"| guesses: correct / made (IN-guesses k+, OUT-guesses k−) | {r.correct} / {r.guesses} ({r.k_plus}, {r.k_minus}) |",
        f"| guess strategies tried (Bonferroni) | {r.candidates} |",
        f"| largest bound these canaries can certify (all guesses right) | {r.ceiling:.3f} |",
        "",
        "The lower bound holds with the stated confidence over the canaries' inclusion coins. "
        "A bound below the claim means the audit found no violation; it does not prove the claim, "
        f"and claims above {r.ceiling:.2f} cannot be falsified with {r.canaries} canaries on this model.",
        "",
        "![ε claimed vs empirical](epsilon.png)",
        "",
        "![canary scores](canary_scores.png)",
        "",
    ]
    if report.client is not None:
        c = report.client
        lines += [
            "## Client level (Andrew et al. ICLR 2024, one-shot estimate)",
            "",
            "| | value |", "|---|---|",
            f"| claimed client-level ε | {_fmt_eps(report.client_claimed_epsilon)} |",
            f"| estimated ε (δ = {c.delta:g}) | {_fmt_eps(c.epsilon)} |",
            f"| inserted canary cosines: mean, std | {c.mu:.4f}, {c.sigma:.4f} ({c.observed} clients) |",
            f"| unobserved canary cosines: mean, std | {c.mu0:.4f}, {c.sigma0:.4f} ({c.unobserved} directions, d = {c.dimension}) |",
            "",
            "An estimate for a worst-case client (maximal-norm update in a random direction), not a bound; "
            "without client-level DP (privacy.client_noise_multiplier) it is expected to be large.",
            "",
        ]
    if report.attacks:
        lines += [
            "## Membership inference (final global model, training vs held-out patients)",
            "",
            "| attack | ROC-AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | members / non-members |",
            "|---|---|---|---|---|",
        ]
        for a in report.attacks:
            lines.append(f"| {a.name} | {a.auc:.3f} | {a.tpr_at_1pct_fpr:.3f} | {a.tpr_at_01pct_fpr:.3f} | {a.members} / {a.nonmembers} |")
        lines += [
            "",
            f"With {report.attacks[0].nonmembers} non-members, FPR below {1 / report.attacks[0].nonmembers:.2%} means no non-member flagged.",
            "",
            "![ROC](roc.png)",
            "",
        ]
    lines += [f"Final test accuracy of the audited run: {report.accuracy:.4f}. Audit time {report.seconds:.1f} s.", ""]
    return "\n".join(lines)


def plots(report: AuditReport, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # ε claimed vs empirical: record level (bound) and client level (estimate) on their own axes
    panels = [("record level", ["claimed\n(accountant)", f"lower bound\n({100 * report.record.confidence:g}%)"],
               [report.claimed_epsilon, report.record.epsilon_lower],
               ["tab:blue", "tab:red" if report.violation else "tab:green"])]
    if report.client is not None:
        panels.append(("client level", ["claimed", "one-shot\nestimate"],
                       [report.client_claimed_epsilon, report.client.epsilon], ["tab:blue", "tab:orange"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4))
    for ax, (title, labels, vals, colors) in zip(np.atleast_1d(axes), panels):
        shown = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(vals)), shown, color=colors)
        for i, v in enumerate(vals):
            txt = "none" if v is None else ("∞" if not math.isfinite(v) else f"{v:.2f}")
            ax.text(i, shown[i], txt, ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(vals)), labels, fontsize=8)
        ax.set_ylabel("ε")
        ax.set_title(title)
        ax.margins(y=0.15)
    fig.suptitle("ε claimed vs empirical", fontsize=10)
    fig.tight_layout()
    p = folder / "epsilon.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    # canary score histograms
    n = 2 if report.client_cosines is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.3))
    axes = np.atleast_1d(axes)
    inc = np.asarray(report.included, dtype=bool)
    s = report.record_scores
    bins = np.histogram_bin_edges(s, bins=20)
    axes[0].hist(s[inc], bins=bins, alpha=0.6, label="IN canaries")
    axes[0].hist(s[~inc], bins=bins, alpha=0.6, label="OUT canaries")
    axes[0].set_title("record canaries: score")
    axes[0].legend(fontsize=8)
    if report.client_cosines is not None:
        obs, un = report.client_cosines
        bins = np.histogram_bin_edges(np.concatenate([obs, un]), bins=30)
        axes[1].hist(un, bins=bins, alpha=0.6, density=True, label="unobserved")
        axes[1].hist(obs, bins=bins, alpha=0.6, density=True, label="inserted")
        axes[1].set_title("canary clients: cos(Δ, c)")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    p = folder / "canary_scores.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    if report.attacks:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for a in report.attacks:
            ax.plot(np.maximum(a.fpr, 1e-4), np.maximum(a.tpr, 1e-4), label=f"{a.name} (AUC {a.auc:.3f})")
        ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("membership inference ROC")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = folder / "roc.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def write_report(report: AuditReport, folder: str | Path) -> Path:
    """Write report.md, audit.json and the PNGs into ``folder`` (created); returns report.md."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder} is a file; give a folder name such as audit-report")
    folder.mkdir(parents=True, exist_ok=True)
    plots(report, folder)
    (folder / "audit.json").write_text(json.dumps(report.to_dict(), indent=2, default=_json_default), encoding="utf-8")
    md = folder / "report.md"
    md.write_text(markdown(report), encoding="utf-8")
    return md


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


# --------------------------------------------------------------------------- CLI


def cmd_audit(args: argparse.Namespace) -> int:
    cfg, settings = load(args.config)
    settings = settings.replace(
        confidence=args.confidence, canaries=args.canaries, seed=args.seed,
        canary_clients=0 if args.no_client_level else None, membership=False if args.no_membership else None,
        shadow_models=args.shadow_models,
    )
    say = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    report = run_audit(cfg, settings, log=say)
    md = write_report(report, args.output)
    r = report.record
    claimed = _fmt_eps(report.claimed_epsilon)
    print(
        f"record level: claimed ε = {claimed} (δ = {report.delta:g}), empirical lower bound "
        f"ε ≥ {r.epsilon_lower:.3f} at {100 * r.confidence:g}% confidence ({r.correct}/{r.guesses} correct guesses, "
        f"{r.canaries} canaries)"
    )
    if report.client is not None:
        print(f"client level: claimed ε = {_fmt_eps(report.client_claimed_epsilon)}, one-shot estimate ε ≈ {_fmt_eps(report.client.epsilon)}")
    for a in report.attacks:
        print(f"membership inference, {a.name}: AUC {a.auc:.3f}, TPR@1%FPR {a.tpr_at_1pct_fpr:.3f}, TPR@0.1%FPR {a.tpr_at_01pct_fpr:.3f}")
    if report.claimed_epsilon is not None and r.ceiling < report.claimed_epsilon:
        print(
            f"note: with {r.canaries} canaries on this model the audit can certify at most ε ≈ {r.ceiling:.2f} "
            f"(< claimed {claimed}): it could not catch a violation of this claim. Models with more inputs or "
            "classes hold more canaries (audit.canaries); a smaller claimed ε is easier to falsify."
        )
    print(f"report written to {md}")
    if report.violation:
        print(
            f"fedvault: audit FAILED: the empirical lower bound {r.epsilon_lower:.3f} exceeds the claimed ε {claimed} "
            f"at {100 * r.confidence:g}% confidence — the privacy claim does not hold for this configuration",
            file=sys.stderr,
        )
        return EXIT_VIOLATION
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fedvault audit CONFIG.toml`` to the CLI's subparsers."""
    a = subparsers.add_parser(
        "audit",
        help="measure an empirical ε lower bound (canaries, membership inference) and compare it with the claim",
        description="Run the federation with privacy canaries and write an audit report. Exit code 1 when the "
        "empirical ε lower bound exceeds the accountant's ε at the stated confidence.",
    )
    a.add_argument("config", type=Path, help="a fedvault TOML config, optionally with an [audit] table")
    a.add_argument("--output", "-o", type=Path, default=Path("audit-report"), help="report folder (default: audit-report)")
    a.add_argument("--confidence", type=float, default=None, help="confidence of the lower bound (default 0.95)")
    a.add_argument("--canaries", type=int, default=None, help="record canaries (capped by the model's slots)")
    a.add_argument("--shadow-models", type=int, default=None, help="LiRA shadow models (0: loss attack only)")
    a.add_argument("--seed", type=int, default=None, help="seed of canary design and inclusion coins")
    a.add_argument("--no-client-level", action="store_true", help="skip the canary-client run")
    a.add_argument("--no-membership", action="store_true", help="skip the membership-inference attacks")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_audit)
    return a
