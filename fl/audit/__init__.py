"""``fedvault audit CONFIG.toml``: measure ε on the trained federation and compare it with the claim.

The package, one concern per module:

- :mod:`.settings` — the ``[audit]`` table (:class:`AuditSettings`, :func:`load`); light.
- :mod:`.canaries` — gradient canaries (+ their trainer hook), input canaries, canary clients.
- :mod:`.run`      — the federation runs with canaries, bounds and attacks (:func:`run_audit`).
- :mod:`.report`   — :class:`AuditReport` (audit.json schema, strict JSON), markdown, figures.
- :mod:`.cli`      — ``fedvault audit`` (argparse only at import: the CLI stays fast).

Importing this package loads nothing heavy; the names below are resolved on first use.

The accountant's ε is an *upper* bound that holds only if the code does what the
accountant assumes. The audit runs the configured federation again with audit
instruments and measures what an adversary who sees the released models can learn:

1. **Record-level one-run audit** (Steinke, Nasr & Jagielski 2023, :mod:`dp.audit.one_run`;
   Mahloujifar, Melis & Chaudhuri 2025, :mod:`dp.audit.fdp`). ``m`` canaries, each IN with
   probability 1/2 (seeded coins); every canary is scored, the auditor guesses IN for the
   highest scores (guess counts fixed by the design, Bonferroni over them and over the two
   bounds), and the correct guesses give ε lower bounds at the stated confidence. If one
   exceeds the accountant's ε for that hospital, the claim is falsified (exit code 1). The
   *ceiling* — the bound if every feasible guess were right — says whether the audit could
   have falsified the claim at all ("inconclusive" when it is below the claim).
2. **Client-level one-shot estimate** (Andrew et al., ICLR 2024; :mod:`dp.audit.gaussian`).
   A second run adds canary *clients* whose updates are fixed random directions of the
   largest norm the protocol accepts; their cosines with the final model change are
   compared with never-inserted directions. An estimate, not a bound; reported next to
   the client-level ε (if configured) and never decides the exit code.
3. **Membership inference** against the final global model of run 1: loss threshold
   (Yeom et al. 2018) and LiRA (Carlini et al. 2022) with shadow models, on held-in
   (training) versus held-out (site hold-out + test) patients: ROC-AUC, TPR at 1% and
   0.1% FPR.

Gradient canaries (the default, white box)
------------------------------------------
The adversary of DP-SGD may choose a record's gradient. The auditor inserts canary
per-example gradients into the canary hospital's DP-SGD steps through the trainer's named,
audit-only hook (:class:`fedvault.dp.faults.GradientCanaryHook`): canary ``i`` is
``g_i = gradient_norm·max_grad_norm·(±u_i)`` in one round only, Poisson-sampled at the
trainer's rate in each step of that round if IN. ``u_i`` are orthonormal directions that no
patient's gradient has a component in (the null space of the per-example gradients at the
initial model — for a C-class softmax the "same change to every row" directions: 31 of them
for the demo's 30-feature logistic regression), one (round, direction) pair per canary, so
canaries interfere neither with each other nor with the patients: 31 × 30 rounds = 930
canaries on the demo. Honest DP-SGD clips each canary to ``max_grad_norm`` and noises it like
any record, so it leaks no more than a record. The score of canary ``i`` is how far the
global model moved along ``−(±u_i)`` between the model the canary hospital received in the
canary's round and the next one — every intermediate global model is used, i.e. the
adversary is any participant of the study. Guesses use the scores only, never the coins or
the sampling, so both bounds apply.

Input canaries (``canary_kind = "input"``)
------------------------------------------
Canary records along the lowest-variance principal directions of the standardised
features (one label per direction; capped at ``d`` or ``d·C``), scored as
``f(w_final) − f(w_0)`` with ``f(w) = φ_y(z; w) − φ_y(−z; w)``. Few slots: on the demo their
ceiling is below 1, so they cannot falsify ε ≈ 3 (the report says "inconclusive").

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
