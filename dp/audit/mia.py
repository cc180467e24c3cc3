"""Membership-inference metrics and attack scores (numpy only; no model code).

Convention: a *score* is higher when the attacker believes the record was a member.

* :func:`roc` — the ROC curve of a score over members vs non-members: for each
  threshold t (every distinct score, descending), ``TPR(t) = |{members ≥ t}| / n_in`` and
  ``FPR(t) = |{non-members ≥ t}| / n_out``, starting at (0, 0) and ending at (1, 1).
* :func:`auc` — the area under it, equal to the Mann–Whitney statistic
  ``P[s_in > s_out] + ½ P[s_in = s_out]``.
* :func:`tpr_at_fpr` — the largest TPR among thresholds whose FPR ≤ the target (no
  interpolation, so it never overstates the attack). With ``n_out`` non-members an FPR
  below ``1 / n_out`` can only be met by flagging no non-member at all; the report says
  how many non-members there were.
* :func:`loss_scores` — the loss-threshold attack (Yeom et al. 2018): ``−loss``.
* :func:`lira_scores` — the likelihood-ratio attack (Carlini et al. 2022, "LiRA"): the
  logit-scaled confidence ``φ = log p_y − log(1 − p_y)`` of the target model is compared
  with its distribution under shadow models trained with (IN) and without (OUT) the
  record, each modelled as a Gaussian; the score is
  ``log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)``. With few shadow models a global
  (pooled) variance is used, as the paper recommends; a record never OUT (or never IN) in
  the shadows falls back to the one-sided offline score ``(φ − μ_out) / σ_out``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from fedvault.dp.audit.errors import AuditError


def _pair(members, nonmembers) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(members, dtype=np.float64).ravel()
    b = np.asarray(nonmembers, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise AuditError("need at least one member and one non-member score")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise AuditError("attack scores contain NaN or infinity")
    return a, b


def roc(members, nonmembers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``; thresholds descending, first point (0, 0) at +inf."""
    a, b = _pair(members, nonmembers)
    thr = np.unique(np.concatenate([a, b]))[::-1]
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    tp = a.size - np.searchsorted(a_sorted, thr, side="left")
    fp = b.size - np.searchsorted(b_sorted, thr, side="left")
    fpr = np.concatenate([[0.0], fp / b.size])
    tpr = np.concatenate([[0.0], tp / a.size])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def auc(members, nonmembers) -> float:
    """``P[s_in > s_out] + ½ P[s_in = s_out]`` (Mann–Whitney, via ranks)."""
    a, b = _pair(members, nonmembers)
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))
    u = ranks[: a.size].sum() - a.size * (a.size + 1) / 2
    return float(u / (a.size * b.size))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR over ROC points with FPR ≤ ``target``."""
    ok = np.asarray(fpr) <= target + 1e-12
    return float(np.max(np.asarray(tpr)[ok])) if ok.any() else 0.0


@dataclass(frozen=True)
class AttackResult:
    """One membership-inference attack evaluated on members vs non-members."""

    name: str
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    members: int
    nonmembers: int
    fpr: np.ndarray = field(repr=False, compare=False)
    tpr: np.ndarray = field(repr=False, compare=False)
    member_scores: np.ndarray = field(repr=False, compare=False)
    nonmember_scores: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "auc": self.auc, "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "tpr_at_0.1pct_fpr": self.tpr_at_01pct_fpr, "members": self.members, "nonmembers": self.nonmembers,
        }


def evaluate_attack(name: str, member_scores, nonmember_scores) -> AttackResult:
    """ROC-AUC and TPR at 1% and 0.1% FPR of one attack's scores."""
    a, b = _pair(member_scores, nonmember_scores)
    fpr, tpr, _ = roc(a, b)
    return AttackResult(
        name=name, auc=auc(a, b), tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.01),
        tpr_at_01pct_fpr=tpr_at_fpr(fpr, tpr, 0.001), members=int(a.size), nonmembers=int(b.size),
        fpr=fpr, tpr=tpr, member_scores=a, nonmember_scores=b,
    )


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-record cross-entropy ``logsumexp(z) − z_y``."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    return special.logsumexp(z, axis=1) - z[np.arange(len(y)), y]


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Loss-threshold attack score: ``−cross_entropy`` (low loss ⇒ member)."""
    return -cross_entropy(logits, labels)


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``φ = log p_y − log(1 − p_y) = z_y − logsumexp_{k≠y} z_k`` (stable for any logits)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    idx = np.arange(len(y))
    zy = z[idx, y]
    others = z.copy()
    others[idx, y] = -np.inf
    return zy - special.logsumexp(others, axis=1)


def lira_scores(phi_target: np.ndarray, phi_shadow: np.ndarray, in_mask: np.ndarray, *, global_variance: bool = True) -> np.ndarray:
    """LiRA scores from the target's ``φ`` (n,) and shadow models' ``φ`` (n, K) with IN mask (n, K)."""
    t = np.asarray(phi_target, dtype=np.float64)
    S = np.asarray(phi_shadow, dtype=np.float64)
    M = np.asarray(in_mask, dtype=bool)
    if S.ndim != 2 or S.shape != M.shape or S.shape[0] != t.shape[0]:
        raise AuditError(f"shadow statistics must be (n, K) matching the mask and target, got {S.shape}, {M.shape}, {t.shape}")
    n_in = M.sum(1)
    n_out = (~M).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = np.where(n_in > 0, np.where(M, S, 0).sum(1) / np.maximum(n_in, 1), np.nan)
        mu_out = np.where(n_out > 0, np.where(~M, S, 0).sum(1) / np.maximum(n_out, 1), np.nan)
    if global_variance:
        r_in = (S - mu_in[:, None])[M & (n_in[:, None] > 1)]
        r_out = (S - mu_out[:, None])[~M & (n_out[:, None] > 1)]
        s_in = float(np.std(r_in)) if r_in.size > 1 else 1.0
        s_out = float(np.std(r_out)) if r_out.size > 1 else 1.0
        s_in_v = np.full(len(t), max(s_in, 1e-6))
        s_out_v = np.full(len(t), max(s_out, 1e-6))
    else:
        s_in_v = np.maximum(np.nanstd(np.where(M, S, np.nan), axis=1), 1e-6)
        s_out_v = np.maximum(np.nanstd(np.where(~M, S, np.nan), axis=1), 1e-6)

    def logpdf(x, mu, s):
        return -0.5 * ((x - mu) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)

    both = (n_in > 0) & (n_out > 0)
    out = np.empty(len(t))
    out[both] = logpdf(t[both], mu_in[both], s_in_v[both]) - logpdf(t[both], mu_out[both], s_out_v[both])
    only_out = (n_in == 0) & (n_out > 0)
    out[only_out] = (t[only_out] - mu_out[only_out]) / s_out_v[only_out]
    only_in = (n_out == 0) & (n_in > 0)
    out[only_in] = (t[only_in] - mu_in[only_in]) / s_in_v[only_in]
    neither = (n_in == 0) & (n_out == 0)
    out[neither] = t[neither]
    return out
