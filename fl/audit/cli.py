"""``fedvault audit CONFIG.toml``: the audit's command-line registration and command.

Importing this module is cheap (argparse only): ``fedvault --help`` and argument errors
load no torch, scipy or matplotlib. :func:`cmd_audit` imports the audit when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_VIOLATION = 1


def cmd_audit(args: argparse.Namespace) -> int:
    from fedvault.fl.audit.report import fmt_eps, write_report
    from fedvault.fl.audit.run import run_audit
    from fedvault.fl.audit.settings import load

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
    claimed = fmt_eps(report.claimed_epsilon)
    print(
        f"record level: claimed ε = {claimed} (δ = {report.delta:g}), empirical lower bound "
        f"ε ≥ {r.epsilon_lower:.3f} at {100 * r.confidence:g}% confidence ({r.correct}/{r.guesses} correct guesses, "
        f"{r.canaries} canaries)"
    )
    if report.client is not None:
        print(f"client level: claimed ε = {fmt_eps(report.client_claimed_epsilon)}, one-shot estimate ε ≈ {fmt_eps(report.client.epsilon)}")
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
