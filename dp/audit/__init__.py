"""Empirical privacy audit: measured ε lower bounds next to the accountant's ε.

A claimed ε is only as good as the code that enforces it — a missing clip, noise that
is never added, or a leaky aggregation leave the accountant's number unchanged. This
package holds the statistics (numpy/scipy only; no model or federation code):

- :mod:`dp.audit.one_run`  — record-level ε lower bound from one training run with
  canaries (Steinke, Nasr & Jagielski 2023): :func:`epsilon_lower_bound`,
  :func:`audit_scores` → :class:`OneRunAudit`.
- :mod:`dp.audit.fdp`      — the same game tested against an f-DP hypothesis (Mahloujifar,
  Melis & Chaudhuri, ICML 2025): ``(ε, δ)`` and μ-GDP lower bounds → :class:`FdpAudit`.
- :mod:`dp.audit.gaussian` — client-level one-shot ε estimate from canary-client cosines
  (Andrew et al., ICLR 2024): :func:`one_shot_estimate` → :class:`ClientLevelEstimate`.
- :mod:`dp.audit.mia`      — membership-inference metrics (ROC-AUC, TPR at 1% / 0.1% FPR),
  loss-threshold and LiRA scores → :class:`AttackResult`.

Running a federation with canaries and writing the report is the orchestration layer's
job (``fl.audit``, ``fedvault audit CONFIG.toml``).
"""

from fedvault.dp.audit.errors import AuditError
from fedvault.dp.audit.fdp import FdpAudit, audit_scores_fdp, gdp_epsilon, gdp_mu_lower_bound
from fedvault.dp.audit.gaussian import (
    ClientLevelEstimate,
    cosines,
    epsilon_between_gaussians,
    hockey_stick,
    one_shot_estimate,
    random_directions,
)
from fedvault.dp.audit.mia import (
    AttackResult,
    auc,
    cross_entropy,
    evaluate_attack,
    lira_scores,
    logit_confidence,
    loss_scores,
    roc,
    tpr_at_fpr,
)
from fedvault.dp.audit.one_run import (
    OneRunAudit,
    audit_scores,
    default_candidates,
    epsilon_lower_bound,
    guesses_from_scores,
    p_value,
)

__all__ = [
    "AuditError", "AttackResult", "ClientLevelEstimate", "FdpAudit", "OneRunAudit", "audit_scores_fdp",
    "gdp_epsilon", "gdp_mu_lower_bound", "audit_scores", "auc", "cosines",
    "cross_entropy", "default_candidates", "epsilon_between_gaussians", "epsilon_lower_bound",
    "evaluate_attack", "guesses_from_scores", "hockey_stick", "lira_scores", "logit_confidence",
    "loss_scores", "one_shot_estimate", "p_value", "random_directions", "roc", "tpr_at_fpr",
]
