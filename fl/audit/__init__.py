"""``fedvault audit CONFIG.toml``: measure ε on the trained federation and compare it with the claim.

The package, one concern per module:

- :mod:`.settings` — the ``[audit]`` table (:class:`AuditSettings`, :func:`load`); light.
- :mod:`.canaries` — record canaries, canary clients, the global-model recorder.
- :mod:`.run`      — the federation runs with canaries, bounds and attacks (:func:`run_audit`).
- :mod:`.report`   — :class:`AuditReport` (audit.json schema, strict JSON), markdown, figures.
- :mod:`.cli`      — ``fedvault audit`` (argparse only at import: the CLI stays fast).

Importing this package loads nothing heavy; the names below are resolved on first use.

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
multiplier* — the kind of implementation bug the audit exists to catch. It is the named,
test/audit-only hook :class:`fedvault.dp.faults.Fault` passed to each hospital's
``PrivateTrainer``; a faulty run's history carries ``not_private``.
``examples/audit_broken.toml`` uses it.

Simulation-only artefacts
-------------------------
The audit's canary runs, reruns and shadow models train on the same patients' records
and are charged to no ledger: their outputs are simulation-only artefacts of the study,
never patient-data releases.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "settings": ("AuditSettings", "FAULTS", "load", "settings_from_dict"),
    "canaries": ("CanaryClients", "GradientCanaries", "GradientCanaryHook", "RecordCanaries", "canary_host",
                 "canary_scores", "canary_slots", "design_canaries", "design_gradient_canaries",
                 "gradient_canary_scores", "gradient_directions", "insert_canaries", "logits",
                 "pooled_standardisation"),
    "run": ("RecordLevel", "client_audit", "federate_with", "gradient_candidates", "membership_attacks",
            "record_audit", "run_audit", "train_shadow"),
    "report": ("SIMULATION_ONLY", "AuditReport", "VERDICT_TEXT", "fmt_eps", "markdown", "plots", "strict_json",
               "write_report"),
    "cli": ("EXIT_VIOLATION", "cmd_audit", "register"),
}
_WHERE = {name: mod for mod, names in _HOMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'fedvault.fl.audit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fedvault.fl.audit.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
