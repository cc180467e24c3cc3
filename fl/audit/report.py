"""The audit's result (:class:`AuditReport`, whose ``to_dict`` is the audit.json schema),
its markdown report and its figures.

audit.json is strict JSON: every NaN or infinity becomes ``null`` (an infinite ε is
written as ``null`` with the markdown saying "∞"). Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, so writing a report never
changes the backend of a running notebook kernel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedvault.dp import audit as A
from fedvault.fl.errors import ConfigError


SIMULATION_ONLY = (
    "simulation-only artefact: the audit retrains on the same patients' records (canary runs, reruns, "
    "shadow models), charged to no ledger; neither its models nor its scores may be released as results "
    "about patients"
)


@dataclass
class AuditReport:
    """Everything ``fedvault audit`` measured (``to_dict`` is the audit.json schema).

    Record level: the same guesses tested by SNJ (``record``) and by the f-DP bound
    (``record_fdp``), each at confidence ``1 − (1 − c)/2`` so that the verdict — either
    bound above the claim — holds at ``confidence = c``. ``ceiling`` is the largest ε
    the design could certify (all feasible guesses right): below the claim, the audit is
    inconclusive whatever it measures.
    """

    config: dict[str, Any]
    settings: dict[str, Any]
    record: A.OneRunAudit
    record_scores: np.ndarray
    canary_hospital: str
    canary_slots: int
    claimed_epsilon: float | None
    delta: float
    record_fdp: A.FdpAudit | None = None
    canary_kind: str = "input"
    confidence: float | None = None
    design: dict[str, Any] = field(default_factory=dict)
    client: A.ClientLevelEstimate | None = None
    client_claimed_epsilon: float | None = None
    client_cosines: tuple[np.ndarray, np.ndarray] | None = None
    attacks: list[A.AttackResult] = field(default_factory=list)
    accuracy: float | None = None
    seconds: float = 0.0
    fault: str = "none"
    included: np.ndarray | None = None
    neighbouring: str = "add_remove"

    @property
    def epsilon_lower(self) -> float:
        """The larger of the two record-level lower bounds."""
        return max(self.record.epsilon_lower, self.record_fdp.epsilon_lower if self.record_fdp else 0.0)

    @property
    def ceiling(self) -> float:
        return max(self.record.ceiling, self.record_fdp.ceiling if self.record_fdp else 0.0)

    @property
    def violation(self) -> bool:
        """The empirical lower bound exceeds the accountant's ε (at the stated confidence)."""
        return self.claimed_epsilon is not None and self.epsilon_lower > self.claimed_epsilon

    @property
    def verdict(self) -> str:
        """``VIOLATION``, ``inconclusive`` (ceiling below the claim), ``pass`` or ``no claim``."""
        if self.claimed_epsilon is None:
            return "no claim"
        if self.violation:
            return "VIOLATION"
        if self.ceiling < self.claimed_epsilon:
            return "inconclusive"
        return "pass"

    def to_dict(self) -> dict[str, Any]:
        from fedvault.dp.faults import Fault

        return {
            "schema": 2,
            "release": audit_release().to_dict(),
            "verdict": self.verdict,
            "fault": self.fault,
            "not_private": Fault.parse(self.fault).not_private_reason(),
            "simulation_only": SIMULATION_ONLY,
            "record_level": {
                "claimed_epsilon": self.claimed_epsilon, "delta": self.delta, "neighbouring": self.neighbouring,
                "confidence": self.confidence if self.confidence is not None else self.record.confidence,
                "epsilon_lower": self.epsilon_lower, "ceiling": self.ceiling,
                "canary_kind": self.canary_kind, "canary_hospital": self.canary_hospital,
                "canaries": self.record.canaries, "canary_slots": self.canary_slots, "design": self.design,
                "steinke_nasr_jagielski": self.record.to_dict(),
                "f_dp": None if self.record_fdp is None else self.record_fdp.to_dict(),
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


def audit_release() -> Any:
    """The audit's row of the release inventory (:mod:`fedvault.dp.releases`)."""
    from fedvault.dp.releases import Release

    return Release("audit_artefacts", "audit.json, report.md, PNGs; canary runs, reruns, shadow models",
                   "simulation_only", None,
                   "retrain on the same patients' records, charged to no ledger; never released as results about "
                   "patients")


def fmt_eps(e: float | None) -> str:
    if e is None:
        return "none claimed"
    return "∞" if math.isinf(e) else f"{e:.3f}"


VERDICT_TEXT = {
    "VIOLATION": "VIOLATION — the measured lower bound exceeds the claimed ε",
    "inconclusive": "inconclusive — the largest ε this audit could certify is below the claim, so it could not "
                    "have caught a violation",
    "pass": "pass — no violation found (and the audit could have certified more than the claim)",
    "no claim": "no claim — privacy is off, there is no ε to test",
}


def markdown(report: AuditReport) -> str:
    r, f = report.record, report.record_fdp
    conf = f"{100 * (report.confidence or r.confidence):g}%"
    per = f"{100 * r.confidence:g}%"
    lines = ["# fedvault privacy audit", "", f"**Verdict: {VERDICT_TEXT[report.verdict]}**", ""]
    if report.fault != "none":
        lines += [f"> Fault injected on purpose: `{report.fault}` (the accountant still assumes the configured "
                  "mechanism). Not private: a test/audit artefact.", ""]
    lines += [f"> {SIMULATION_ONLY[0].upper() + SIMULATION_ONLY[1:]}.", ""]
    kind = ("white-box gradient canaries in the canary hospital's DP-SGD steps, scored on every global model it "
            "receives" if report.canary_kind == "gradient" else "canary records, scored on the first and final model")
    lines += [
        f"## Record level ({kind})",
        "",
        "| | value |", "|---|---|",
        f"| claimed ε (accountant, {report.canary_hospital}, {report.neighbouring}) | {fmt_eps(report.claimed_epsilon)} at δ = {report.delta:g} |",
        f"| **empirical ε lower bound ({conf} confidence)** | **{report.epsilon_lower:.3f}** |",
        f"| — Steinke, Nasr & Jagielski 2023 ({per}) | {r.epsilon_lower:.3f} ({r.correct}/{r.guesses} correct) |",
    ]
    if f is not None:
        lines += [
            f"| — f-DP, Mahloujifar et al. 2025 ({per}) | {f.epsilon_lower:.3f} ({f.correct}/{f.guesses} correct) |",
            f"| — rejected μ-GDP (its ε at δ) | μ ≥ {f.mu_lower:.3f} ({fmt_eps(f.gdp_epsilon)}) |",
        ]
    lines += [
        f"| **ceiling: largest ε this audit could certify** | **{report.ceiling:.3f}** |",
        f"| canaries (IN / total, slots) | {int(np.sum(report.included)) if report.included is not None else r.included} / {r.canaries} ({report.canary_slots} slots) |",
        f"| guess strategies tried (Bonferroni, both bounds) | {r.candidates} × 2 |",
        "",
        "The lower bound holds with the stated confidence over the canaries' inclusion coins. A bound below the "
        "claim means no violation was found; it does not prove the claim. When the ceiling is below the claim "
        "the verdict is *inconclusive*: no outcome of this audit could have falsified the claim.",
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
            f"| claimed client-level ε | {fmt_eps(report.client_claimed_epsilon)} |",
            f"| estimated ε (δ = {c.delta:g}) | {fmt_eps(c.epsilon)} |",
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
    acc = "-" if report.accuracy is None else f"{report.accuracy:.4f}"
    lines += [f"Final test accuracy of the audited run: {acc}. Audit time {report.seconds:.1f} s.", ""]
    return "\n".join(lines)


def plots(report: AuditReport, folder: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def subplots(nrows: int, ncols: int, figsize: tuple[float, float]):
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols)
        return fig, axes

    written = []
    # ε claimed vs empirical: record level (bounds, ceiling) and client level (estimate) on their own axes
    rl_labels = ["claimed\n(accountant)", "SNJ\nbound"]
    rl_vals = [report.claimed_epsilon, report.record.epsilon_lower]
    rl_cols = ["tab:blue", "tab:red" if report.violation else "tab:green"]
    if report.record_fdp is not None:
        rl_labels.append("f-DP\nbound")
        rl_vals.append(report.record_fdp.epsilon_lower)
        rl_cols.append("tab:red" if report.violation else "tab:green")
    rl_labels.append("ceiling")
    rl_vals.append(report.ceiling)
    rl_cols.append("tab:gray")
    panels = [(f"record level ({100 * (report.confidence or report.record.confidence):g}%): {report.verdict}",
               rl_labels, rl_vals, rl_cols)]
    if report.client is not None:
        panels.append(("client level", ["claimed", "one-shot\nestimate"],
                       [report.client_claimed_epsilon, report.client.epsilon], ["tab:blue", "tab:orange"]))
    fig, axes = subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4))
    for ax, (title, labels, vals, colors) in zip(np.atleast_1d(axes), panels):
        shown = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(vals)), shown, color=colors)
        for i, v in enumerate(vals):
            txt = "none" if v is None else ("∞" if not math.isfinite(v) else f"{v:.2f}")
            ax.text(i, shown[i], txt, ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(vals)), labels, fontsize=8)
        ax.set_ylabel("ε")
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.15)
    fig.suptitle("ε claimed vs empirical", fontsize=10)
    fig.tight_layout()
    p = folder / "epsilon.png"
    fig.savefig(p, dpi=110)
    written.append(p)
    # canary score histograms
    n = 2 if report.client_cosines is not None else 1
    fig, axes = subplots(1, n, figsize=(5 * n, 3.3))
    axes = np.atleast_1d(axes)
    inc = np.asarray(report.included, dtype=bool)
    s = report.record_scores
    bins = np.histogram_bin_edges(s, bins=20)
    axes[0].hist(s[inc], bins=bins, alpha=0.6, label="IN canaries")
    axes[0].hist(s[~inc], bins=bins, alpha=0.6, label="OUT canaries")
    axes[0].set_yscale("log")
    axes[0].set_title(f"{report.canary_kind} canaries: score")
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
    written.append(p)
    if report.attacks:
        fig, ax = subplots(1, 1, figsize=(4.5, 4))
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
        written.append(p)
    return written


def write_report(report: AuditReport, folder: str | Path) -> Path:
    """Write report.md, audit.json and the PNGs into ``folder`` (created); returns report.md."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder} is a file; give a folder name such as audit-report")
    folder.mkdir(parents=True, exist_ok=True)
    plots(report, folder)
    (folder / "audit.json").write_text(json.dumps(strict_json(report.to_dict()), indent=2, allow_nan=False), encoding="utf-8")
    md = folder / "report.md"
    md.write_text(markdown(report), encoding="utf-8")
    return md


def strict_json(o: Any) -> Any:
    """``o`` with numpy values made plain and every NaN / infinity replaced by ``None``."""
    if isinstance(o, dict):
        return {str(k): strict_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [strict_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return strict_json(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if o is None or isinstance(o, (str, int, bool)):
        return o
    raise TypeError(f"cannot write {type(o).__name__} to audit.json")
