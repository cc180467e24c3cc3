"""Running the audit: the federation with canaries, the bounds, the attacks.

:func:`run_audit` is the whole audit as a typed :class:`~fedvault.fl.audit.report.AuditReport`:

1. :func:`record_audit` — record-level one-run audit (SNJ 2023; :mod:`fedvault.dp.audit.one_run`).
2. :func:`client_audit` — client-level one-shot estimate (Andrew et al. 2024).
3. :func:`membership_attacks` — loss-threshold and LiRA on the final global model.

Every run here is a **simulation-only artefact**: it trains again on the same patients'
records, and neither the reruns nor the shadow models are charged to any ledger; their
outputs (scores, models, reports) must not leave the study as patient-data releases.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fedvault.dp import audit as A
from fedvault.dp.faults import Fault
from fedvault.fl import data as data_mod
from fedvault.fl import models, plain
from fedvault.fl.audit.canaries import (
    CanaryClients,
    GradientCanaryHook,
    RecordCanaries,
    canary_scores,
    design_canaries,
    design_gradient_canaries,
    gradient_canary_scores,
    insert_canaries,
    logits,
)
from fedvault.fl.audit.report import AuditReport
from fedvault.fl.audit.settings import AuditSettings
from fedvault.fl.config import Config

def federate_with(cfg: Config, data: data_mod.FederatedData, extra: Any, fault: Fault | str,
                  trainer_options: Callable[[str], Mapping[str, Any]] | None = None, *,
                  on_round: Callable[[dict[str, Any]], None] | None = None):
    """One federation run of the audit (no pooled baseline) with the fault in every trainer.

    ``on_round`` is called with each history row (progress display)."""
    from fedvault.fl.simulation import federate

    fault = Fault.parse(fault)
    if not fault.private and not cfg.privacy.enabled:
        raise A.AuditError(
            f"audit.fault = {fault.value!r} breaks DP-SGD, but privacy.enabled = false (there is no DP "
            "optimizer to break); remove audit.fault or enable privacy"
        )

    def options(name: str) -> dict[str, Any]:
        o = dict(trainer_options(name)) if trainer_options is not None else {}
        if not fault.private:
            o["fault"] = fault
        return o

    return federate(cfg, data=data, baseline=False, extra_participants=extra, trainer_options=options,
                    on_round=on_round)


@dataclass
class RecordLevel:
    """Run 1 of the audit: the federation with record-level canaries, and its bounds.

    ``snj`` (Steinke, Nasr & Jagielski 2023) and ``fdp`` (Mahloujifar et al. 2025) test the
    same guesses; each is computed at confidence ``1 − (1 − c)/2`` so that the verdict
    "either bound exceeds the claim" holds at the configured confidence ``c``.
    """

    kind: str
    snj: A.OneRunAudit
    fdp: A.FdpAudit
    scores: np.ndarray
    included: np.ndarray
    canaries: Any  # RecordCanaries | GradientCanaries
    run: Any  # the FederationRun
    claimed: float | None
    confidence: float

    @property
    def epsilon_lower(self) -> float:
        return max(self.snj.epsilon_lower, self.fdp.epsilon_lower)

    @property
    def ceiling(self) -> float:
        return max(self.snj.ceiling, self.fdp.ceiling)

    def design(self) -> dict[str, Any]:
        """What the canaries were (for the report; never the coins' effect on guesses)."""
        c = self.canaries
        if self.kind == "gradient":
            return {"directions": int(len(c.directions)), "null_directions": int(c.null),
                    "rounds": int(c.round_of.max(initial=0)), "gradient_norm": float(c.norm),
                    "detect_probability": float(c.detect)}
        return {"canary_norm_std": float(np.linalg.norm(c.z[0])) if len(c.z) else 0.0}

    @property
    def slots(self) -> int:
        return int(self.canaries.slots)


def gradient_candidates(m: int, detect: float) -> list[tuple[int, int]]:
    """Guess counts fixed by the design before any score is seen: IN-guesses for a share
    of the ``detect·m/2`` IN canaries the output can reveal, plus the generic grid."""
    expected = detect * m / 2
    out: list[tuple[int, int]] = []
    for f in (0.3, 0.6, 0.75, 0.85, 0.92):
        c = (max(1, int(f * expected)), 0)
        if c not in out:
            out.append(c)
    return out


def record_audit(cfg: Config, settings: AuditSettings, fd: data_mod.FederatedData | None = None, *,
                 on_round: Callable[[dict[str, Any]], None] | None = None) -> RecordLevel:
    """Run 1: the federation with record-level canaries (``settings.canary_kind``)."""
    base = fd if fd is not None else data_mod.load(cfg)
    per_method = 1.0 - (1.0 - settings.confidence) / 2  # SNJ and f-DP, Bonferroni
    delta = cfg.privacy.delta
    if settings.canary_kind == "gradient":
        if not cfg.privacy.enabled:
            raise A.AuditError(
                "gradient canaries live in DP-SGD's per-example gradients, but privacy.enabled = false; "
                "enable privacy, or use audit.canary_kind = \"input\""
            )
        torch.manual_seed(cfg.seed)  # the federation's initial model (same seed, same factory)
        init = models.build(cfg.model, base.n_features, base.n_classes, base.image_shape)
        can = design_gradient_canaries(cfg, base, settings, init)
        hook = GradientCanaryHook(can)
        run = federate_with(cfg, copy.deepcopy(base), None, settings.fault,
                            lambda name: {"gradient_canaries": hook} if name == can.hospital else {},
                            on_round=on_round)
        scores = gradient_canary_scores(can, hook.received, models.get_vector(run.model))
        cands = gradient_candidates(can.m, can.detect)
        reveal = int(can.detect * can.m / 2)
        included = can.included
    else:
        can = design_canaries(base, settings)
        torch.manual_seed(cfg.seed)  # the federation's initial model (same seed, same factory)
        w0 = models.get_vector(models.build(cfg.model, base.n_features, base.n_classes, base.image_shape))
        run = federate_with(cfg, insert_canaries(base, can), None, settings.fault, on_round=on_round)
        mean, std = run.standardisation  # the federation's own (mean, std)
        z_model = (can.raw - mean) / std
        scores = canary_scores(run.model, w0, models.get_vector(run.model), z_model, can.y)
        cands, reveal, included = None, None, can.included
    snj = A.audit_scores(scores, included, delta=delta, confidence=per_method, candidates=cands, max_guesses=reveal)
    fdp = A.audit_scores_fdp(scores, included, delta=delta, confidence=per_method, candidates=cands,
                             max_guesses=reveal)
    host = next(h for h in run.hospitals if h.name == can.hospital)
    claimed = host.epsilon() if cfg.privacy.enabled else None
    return RecordLevel(kind=settings.canary_kind, snj=snj, fdp=fdp, scores=scores, included=np.asarray(included),
                       canaries=can, run=run, claimed=claimed, confidence=settings.confidence)


def client_audit(cfg: Config, settings: AuditSettings, fd: data_mod.FederatedData, *,
                 on_round: Callable[[dict[str, Any]], None] | None = None):
    """Run 2: the federation with canary clients; Andrew et al.'s one-shot estimate."""
    rng = np.random.default_rng([settings.seed, 0xC11E])
    make = models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)
    d = models.n_params(make)
    k = settings.canary_clients
    dirs = A.random_directions(rng, k + settings.unobserved_canaries, d)
    client_level = getattr(cfg.privacy, "client_noise_multiplier", None) is not None
    weight = float(np.median([h.n for h in fd.hospitals]))
    clients = CanaryClients(dirs[:k], cfg.aggregation.update_clip, weight, client_level)
    run = federate_with(cfg, copy.deepcopy(fd), clients, settings.fault, on_round=on_round)
    delta_vec = models.get_vector(run.model) - clients.initial
    cos = A.cosines(delta_vec, dirs)
    est = A.one_shot_estimate(cos[:k], cos[k:], delta=cfg.privacy.delta, dimension=d)
    claimed = None
    cl = run.history.get("client_level")
    if isinstance(cl, Mapping) and cl.get("epsilon") is not None:
        claimed = float(cl["epsilon"])
    return est, claimed, (cos[:k], cos[k:])


def train_shadow(cfg: Config, fd: data_mod.FederatedData, X: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    """A LiRA shadow model: the same model trained without privacy on ``(X, y)``."""
    torch.manual_seed(seed)
    model = models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)
    epochs = max(1, min(cfg.training.rounds * cfg.training.local_epochs, 20))
    plain.train(model, X, y, epochs=epochs, batch_size=cfg.training.batch_size, lr=cfg.training.lr, seed=seed)
    return model


def membership_attacks(cfg: Config, settings: AuditSettings, run, canaries: Any, *,
                       on_shadow: Callable[[], None] | None = None) -> list[A.AttackResult]:
    """Loss-threshold and LiRA attacks on the final global model: training vs held-out patients."""
    fd = run.data
    # input canaries (IN ones) were appended after the canary hospital's records: they are not patients
    n_canaries = int(canaries.included.sum()) if isinstance(canaries, RecordCanaries) else 0
    Xin, yin = [], []
    for h in fd.hospitals:
        k = h.n - (n_canaries if h.name == canaries.hospital else 0)
        Xin.append(h.X[:k])
        yin.append(h.y[:k])
    Xi, yi = np.concatenate(Xin), np.concatenate(yin)
    Xo = np.concatenate([h.X_val for h in fd.hospitals] + [fd.X_test])
    yo = np.concatenate([h.y_val for h in fd.hospitals] + [fd.y_test])
    w = models.get_vector(run.model)
    zi, zo = logits(run.model, w, Xi), logits(run.model, w, Xo)
    out = [A.evaluate_attack("loss threshold", A.loss_scores(zi, yi), A.loss_scores(zo, yo))]
    K = settings.shadow_models
    if K >= 2:
        Xall, yall = np.concatenate([Xi, Xo]), np.concatenate([yi, yo])
        n = len(yall)
        rng = np.random.default_rng([settings.seed, 0x5AD0])
        mask = rng.random((n, K)) < 0.5
        phi = np.empty((n, K))
        for k in range(K):
            sm = train_shadow(cfg, fd, Xall[mask[:, k]], yall[mask[:, k]], seed=settings.seed * 1000 + k)
            phi[:, k] = A.logit_confidence(logits(sm, models.get_vector(sm), Xall), yall)
            if on_shadow is not None:
                on_shadow()
        target = A.logit_confidence(np.concatenate([zi, zo]), yall)
        s = A.lira_scores(target, phi, mask)
        out.append(A.evaluate_attack(f"LiRA ({K} shadow models)", s[: len(yi)], s[len(yi) :]))
    return out


def run_audit(cfg: Config, settings: AuditSettings, *, log: Callable[[str], None] | None = None,
              quiet: bool = False) -> AuditReport:
    """The whole audit (record level, client level, membership inference) as a typed report.

    A progress bar (stderr, only on a terminal; see :mod:`fl.progress`) counts the planned
    federation rounds of both runs and the LiRA shadow models; ``quiet=True`` hides it.
    """
    from fedvault.fl.config import to_dict
    from fedvault.fl.progress import progress

    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    fd = data_mod.load(cfg)
    shadows = settings.shadow_models if settings.membership and settings.shadow_models >= 2 else 0
    runs = 1 + (1 if settings.canary_clients else 0)
    total = runs * int(cfg.training.rounds) + shadows
    with progress(total=total, desc="auditing", unit="step", quiet=quiet) as bar:
        def on_round(row: dict[str, Any]) -> None:
            bar.update(1)

        def on_shadow() -> None:
            bar.update(1)

        say(f"run 1/2: federation with {settings.canary_kind} canaries (up to {settings.canaries}) ...")
        rec = record_audit(cfg, settings, fd, on_round=on_round)
        run, can = rec.run, rec.canaries
        report = AuditReport(
            config=to_dict(cfg), settings=settings.to_dict(), record=rec.snj, record_fdp=rec.fdp,
            record_scores=rec.scores, included=rec.included, canary_hospital=can.hospital, canary_slots=rec.slots,
            claimed_epsilon=rec.claimed, delta=cfg.privacy.delta, canary_kind=rec.kind,
            confidence=settings.confidence, design=rec.design(),
            accuracy=run.history["final"]["metrics"]["accuracy"], fault=settings.fault,
        )
        if settings.membership:
            say("membership inference: loss threshold" + (f" + LiRA ({settings.shadow_models} shadow models)"
                                                          if settings.shadow_models >= 2 else "") + " ...")
            report.attacks = membership_attacks(cfg, settings, run, can, on_shadow=on_shadow)
        if settings.canary_clients:
            say(f"run 2/2: federation with {settings.canary_clients} canary clients ...")
            report.client, report.client_claimed_epsilon, report.client_cosines = client_audit(
                cfg, settings, fd, on_round=on_round)
    report.seconds = time.perf_counter() - t0
    return report
