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
    from fedvault.dp.faults import Fault
    from fedvault.fl.audit.report import VERDICT_TEXT, fmt_eps, write_report
    from fedvault.fl.audit.run import run_audit
    from fedvault.fl.audit.settings import load

    cfg, settings = load(args.config)
    settings = settings.replace(
        confidence=args.confidence, canaries=args.canaries, seed=args.seed,
        canary_clients=0 if args.no_client_level else None, membership=False if args.no_membership else None,
        shadow_models=args.shadow_models, fault=args.fault,
    )
    say = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    report = run_audit(cfg, settings, log=say, quiet=args.quiet)
    md = write_report(report, args.output)
    r, f = report.record, report.record_fdp
    claimed = fmt_eps(report.claimed_epsilon)
    conf = f"{100 * settings.confidence:g}%"
    print(
        f"record level ({report.canary_kind} canaries, {r.canaries}): claimed ε = {claimed} (δ = {report.delta:g}), "
        f"empirical lower bound ε ≥ {report.epsilon_lower:.3f} at {conf} confidence "
        f"(SNJ {r.epsilon_lower:.3f}" + (f", f-DP {f.epsilon_lower:.3f}" if f is not None else "") + ")"
        f"; ceiling {report.ceiling:.3f}"
    )
    if report.client is not None:
        print(f"client level: claimed ε = {fmt_eps(report.client_claimed_epsilon)}, one-shot estimate ε ≈ {fmt_eps(report.client.epsilon)}")
    for a in report.attacks:
        print(f"membership inference, {a.name}: AUC {a.auc:.3f}, TPR@1%FPR {a.tpr_at_1pct_fpr:.3f}, TPR@0.1%FPR {a.tpr_at_01pct_fpr:.3f}")
    print(f"verdict: {VERDICT_TEXT[report.verdict]}")
    if report.verdict == "inconclusive":
        print(
            f"note: this audit can certify at most ε ≈ {report.ceiling:.2f} (< claimed {claimed}); more canaries "
            "(audit.canaries), gradient canaries (audit.canary_kind) or a smaller claimed ε make it conclusive"
        )
    if report.fault != "none":
        print(f"note: {Fault.parse(report.fault).not_private_reason()}")
    print(f"report written to {md} (simulation-only artefact: the audit retrains on the same records, uncharged)")
    if report.violation:
        print(
            f"fedvault: audit FAILED: the empirical lower bound {report.epsilon_lower:.3f} exceeds the claimed ε {claimed} "
            f"at {conf} confidence — the privacy claim does not hold for this configuration",
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
    a.add_argument("--fault", choices=("none", "no_noise", "no_clipping"), default=None,
                   help="TEST ONLY: break DP-SGD on purpose to show the audit catches it")
    a.add_argument("--no-client-level", action="store_true", help="skip the canary-client run")
    a.add_argument("--no-membership", action="store_true", help="skip the membership-inference attacks")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_audit)
    return a
