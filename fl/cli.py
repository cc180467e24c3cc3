"""The ``fedvault`` command line.

    fedvault demo                              the breast-cancer federation, live table
    fedvault run CONFIG.toml --output H.json   any federation from a config file
    fedvault verify H.json                     recompute every ε independently (dp_accounting)
    fedvault privacy H.json                    per-hospital privacy table + ε-over-rounds PNG
    fedvault audit CONFIG.toml                 empirical privacy audit (see fl/audit/)

Every expected failure (bad config, bad CSV, exhausted budget, protocol abort) ends
with one line ``fedvault: error: ...`` naming the problem and the fix, exit code 2,
no traceback, and no half-written output file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from fedvault.fl.errors import FLError
from fedvault.fl.files import write_json_atomic

EXIT_ERROR = 2


def _expected_errors() -> tuple[type[BaseException], ...]:
    from fedvault.dp.errors import PrivacyError
    from fedvault.protocols.errors import ProtocolError
    from fedvault.secagg.errors import SecAggError

    return (FLError, PrivacyError, ProtocolError, SecAggError, OSError)


def __getattr__(name: str) -> Any:  # RoundTable / print_summary moved to fl.summary (old imports keep working)
    if name == "RoundTable":
        from fedvault.fl.summary import RoundTable

        return RoundTable
    if name == "print_summary":
        return print_summary
    raise AttributeError(name)


def print_summary(history: dict[str, Any], out=sys.stdout) -> None:
    """Print the end-of-run account (:func:`fl.summary.summary`)."""
    from fedvault.fl.summary import summary

    print(summary(history), file=out, flush=True)


def _print_warnings(warnings: Sequence[str], quiet: bool) -> None:
    for w in warnings:
        print(f"fedvault: warning: {w}", file=sys.stderr, flush=True)


def _run(ready, output: Path | None, quiet: bool) -> dict[str, Any]:
    from fedvault.fl.simulation import federate

    cfg = ready.cfg
    _print_warnings(ready.warnings, quiet)
    from fedvault.fl.evaluation import complete_history
    from fedvault.fl.summary import RoundTable

    table = None if quiet else RoundTable(total_rounds=cfg.training.rounds)
    t0 = time.perf_counter()

    def stamp() -> int | None:
        return Path(output).stat().st_mtime_ns if output is not None and Path(output).exists() else None

    before = stamp()
    try:
        # history_path: the engine writes history (with every ledger) whenever the study stops,
        # also on an error or Ctrl-C; the completed history below replaces it.
        run = federate(cfg, data=ready.data, on_round=table, baseline=False, history_path=output)
    except BaseException:
        if stamp() not in (None, before):
            print(f"fedvault: history up to the interruption (ledgers included) written to {output}",
                  file=sys.stderr, flush=True)
        raise
    finally:
        if table is not None:
            table.close()
    history = run.history
    history.setdefault("data", ready.data.describe())  # classes and how the raw labels were read
    complete_history(run, cfg)  # intervals, converged pooled baseline, per-hospital results
    history["final"]["seconds"] = time.perf_counter() - t0
    if not quiet:
        print_summary(history)
        print(f"  wall time {history['final']['seconds']:.1f} s", flush=True)
    if output is not None:
        write_json_atomic(output, history)
        if not quiet:
            print(f"history written to {output}")
    return history


def cmd_demo(args: argparse.Namespace) -> int:
    from fedvault.fl.config import demo_config
    from fedvault.fl.preflight import prepare

    cfg = demo_config()
    if args.rounds is not None:
        cfg = cfg.replace(training={"rounds": args.rounds})
    if args.seed is not None:
        cfg = cfg.replace(seed=args.seed)
    if not args.quiet:
        print(
            f"fedvault demo: {cfg.data.hospitals} hospitals, breast-cancer data (Dirichlet α={cfg.data.dirichlet_alpha}), "
            f"DP-SGD target ε={cfg.privacy.target_epsilon} at δ={cfg.privacy.delta:g}, "
            f"{cfg.aggregation.mode} aggregation, {cfg.training.rounds} rounds\n"
        )
    ready = prepare(cfg, outputs=[(args.output, "file", "--output")], quiet=args.quiet, what="the demo")
    _run(ready, args.output, args.quiet)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fedvault.fl.preflight import prepare_file

    # Config, --output, data and feasibility are all checked (and every problem reported)
    # before any hospital trains or spends privacy budget.
    ready = prepare_file(args.config, outputs=[(args.output, "file", "--output")], seed=args.seed, quiet=args.quiet)
    _run(ready, args.output, args.quiet)
    return 0


def _read_history(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FLError(f"history file {str(path)!r} not found; pass the file written by `fedvault run --output`")
    try:
        h = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FLError(f"{path}: not a JSON history file ({e}); pass the file written by `fedvault run`") from None
    if not isinstance(h, dict) or not isinstance(h.get("privacy"), dict):
        raise FLError(f"{path}: has no `privacy` section; was the run made with privacy enabled?")
    return h


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute every hospital's ε from its events with dp_accounting (no Opacus)."""
    from fedvault.dp.verify import verify

    from fedvault.fl.progress import progress

    h = _read_history(args.history)
    # The whole history: the release inventory decides which neighbouring relation can hold.
    with progress(total=len(h["privacy"]), desc="verifying ε (dp_accounting RDP + PLD)", unit="hospital") as bar:
        report = verify(h, tolerance=args.tolerance, on_client=lambda _name: bar.update(1))
    print(report)
    if args.json:
        write_json_atomic(args.json, report.to_dict())
    return 0 if report.ok else 1


def cmd_privacy(args: argparse.Namespace) -> int:
    """Per-hospital privacy table and a PNG of ε over rounds."""
    from fedvault.dp.report import ledger_table, plot_epsilon

    h = _read_history(args.history)
    print(ledger_table(h))
    cl = h.get("client_level")
    if cl and isinstance(cl.get("epsilon"), (int, float)):
        from fedvault.fl.summary import MEANINGLESS_EPSILON

        if cl.get("relation") == "replace_one":
            per = cl.get("per_hospital") or {}
            per_text = ", ".join(f"{k} {v:.1f}" for k, v in per.items() if isinstance(v, (int, float)))
            print(f"\nclient level ({cl.get('mechanism', 'distributed DP')}): ε = {cl['epsilon']:.3f} (largest over "
                  f"hospitals; per hospital: {per_text or '-'}), δ = {cl.get('delta', math.nan):g} (neighbouring: "
                  "replace one hospital's whole update; no client-sampling credit)")
        else:
            print(
                f"\nclient level ({cl.get('mechanism', 'distributed DP')}): ε = {cl['epsilon']:.3f} against model "
                f"consumers (client sampling q = {cl.get('sample_rate', 1.0):g}), ε = "
                f"{cl.get('epsilon_vs_server', math.nan):.3f} against the server, δ = {cl.get('delta', math.nan):g} "
                "(neighbouring: one hospital's whole update)"
            )
        worst = max(v for v in (cl["epsilon"], cl.get("epsilon_vs_server", 0.0)) if isinstance(v, (int, float)))
        if worst > MEANINGLESS_EPSILON:
            print(f"WARNING: client-level ε = {worst:.0f} is too large to mean anything; it protects no hospital's "
                  "data in practice (raise privacy.client_noise_multiplier or run fewer rounds)")
    png = args.plot or args.history.with_suffix(".epsilon.png")
    plot_epsilon(h, png)
    print(f"\nε over rounds written to {png}")
    return 0


def examples_dir() -> Path:
    """The example configs and CSVs: inside the installed package (wheel) or the checkout's examples/."""
    import fedvault

    here = Path(fedvault.__file__).resolve().parent
    for cand in (here / "examples", here.parent / "examples"):
        if (cand / "csv_hospitals.toml").is_file():
            return cand
    raise FLError("the example files are not installed with this fedvault; reinstall it from its wheel or a clone")


def cmd_init(args: argparse.Namespace) -> int:
    """Write the example configs and CSV hospitals into a folder, ready for ``fedvault run``."""
    from fedvault.fl.preflight import output_problems

    dest: Path = args.dir
    bad = output_problems(dest, kind="dir", option="DIR")
    if bad:
        raise FLError(bad[0])
    src = examples_dir()
    files = sorted(p.relative_to(src) for p in src.glob("*.toml")) + sorted(
        p.relative_to(src) for p in (src / "csv").glob("*.csv"))
    clash = [str(f) for f in files if (dest / f).exists()]
    if clash and not args.force:
        raise FLError(f"{dest} already has {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
                      "choose an empty folder or pass --force to overwrite")
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        (dest / f).write_bytes((src / f).read_bytes())
    print(f"wrote {len(files)} files to {dest}:")
    for f in files:
        if f.suffix == ".toml":
            print(f"  {dest / f}")
    print(f"  {dest / 'csv'}/ ({sum(1 for f in files if f.suffix == '.csv')} CSV files: three hospitals and a test set)")
    print(f"next: fedvault run {dest / 'csv_hospitals.toml'} --output history.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fedvault import __version__

    p = argparse.ArgumentParser(prog="fedvault", description="Privacy-hardened federated learning between hospitals.")
    p.add_argument("--version", action="version", version=f"fedvault {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the breast-cancer demo federation (no arguments needed)")
    d.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    d.add_argument("--output", type=Path, default=None, help="also write history.json here")
    d.add_argument("--seed", type=int, default=None,
                   help="override the demo's seed (data split, model initialisation, client sampling)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    r = sub.add_parser("run", help="run a federation from a TOML config")
    r.add_argument("config", type=Path)
    r.add_argument("--output", "-o", type=Path, default=Path("history.json"))
    r.add_argument("--seed", type=int, default=None,
                   help="override the config's seed (data split, model initialisation, client sampling)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("verify", help="recompute every hospital's ε from history.json with dp_accounting (RDP + PLD)")
    v.add_argument("history", type=Path)
    v.add_argument("--tolerance", type=float, default=0.01, help="relative tolerance (default 1%%)")
    v.add_argument("--json", type=Path, default=None, help="also write the verification report as JSON")
    v.set_defaults(func=cmd_verify)
    pr = sub.add_parser("privacy", help="per-hospital privacy table and a PNG of ε over rounds")
    pr.add_argument("history", type=Path)
    pr.add_argument("--plot", type=Path, default=None, help="PNG path (default: HISTORY.epsilon.png)")
    pr.set_defaults(func=cmd_privacy)
    it = sub.add_parser("init", help="write the example configs and CSV hospitals into a folder")
    it.add_argument("dir", type=Path, help="folder to create (e.g. fedvault-examples)")
    it.add_argument("--force", action="store_true", help="overwrite files that already exist there")
    it.set_defaults(func=cmd_init)
    from fedvault.fl.audit.cli import register as register_audit  # light: argparse only
    # enrol / roster / flower-run live with the Flower plug-in (that module imports neither Flower nor torch)
    from fedvault.fl.integrations.flower import cli as _flower_cli

    _flower_cli.add_parsers(sub)

    register_audit(sub)
    return p


def _torch_threads() -> None:
    """One intra-op thread: the models are small, and several threads only spin against
    each other (10x slower here on 2 busy cores). ``FEDVAULT_TORCH_THREADS`` overrides."""
    import torch

    torch.set_num_threads(int(os.environ.get("FEDVAULT_TORCH_THREADS", "1")))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("demo", "run"):
        _torch_threads()
    expected = _expected_errors()
    try:
        return int(args.func(args) or 0)
    except expected as e:
        msg = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename:
            msg = f"{e.filename}: {e.strerror}"
        print(f"fedvault: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fedvault: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
