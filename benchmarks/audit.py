"""Audit power on the default config: fault × seed → flagged or not (issue 13, item 6).

    python -m benchmarks audit                    # 3 faults × 5 seeds on fl/configs/demo.toml
    python -m benchmarks audit --seeds 2 --faults no_noise

For each fault (``none``: honest DP-SGD; ``no_noise``; ``no_clipping`` — the named,
test-only hooks of ``fedvault.dp.faults``) and each audit seed (canary design and
inclusion coins; DP-SGD's own coins come from the OS), the record-level audit of
``fedvault audit`` runs once on the config: white-box gradient canaries in the largest
hospital, scored on every global model it receives, bounds of Steinke–Nasr–Jagielski and
of Mahloujifar et al. (f-DP), each at 97.5% so the verdict holds at 95%. *Flagged* means
the larger lower bound exceeds the hospital's claimed ε. Writes
``benchmarks/results/audit.{json,md}``. Every run is a simulation-only artefact.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

FAULTS = ("none", "no_noise", "no_clipping")


def run(config: Path | None, faults: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(int(os.environ.get("FEDVAULT_TORCH_THREADS", "1")))
    from fedvault.fl import audit as FA
    from fedvault.fl.config import demo_config

    if config is None:
        cfg, base = demo_config(), FA.AuditSettings()
    else:
        cfg, base = FA.load(config)
    rows = []
    for fault in faults:
        for seed in seeds:
            s = base.replace(fault=fault, seed=seed, canary_clients=0, membership=False)
            t0 = time.perf_counter()
            rec = FA.record_audit(cfg, s)
            row = {
                "fault": fault, "seed": seed, "flagged": bool(rec.claimed is not None and rec.epsilon_lower > rec.claimed),
                "claimed_epsilon": rec.claimed, "epsilon_lower": rec.epsilon_lower,
                "snj": rec.snj.epsilon_lower, "f_dp": rec.fdp.epsilon_lower, "ceiling": rec.ceiling,
                "correct": rec.fdp.correct, "guesses": rec.fdp.guesses, "canaries": rec.canaries.m,
                "accuracy": rec.run.history["final"]["metrics"]["accuracy"], "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(f"{fault:11s} seed {seed}: claimed {row['claimed_epsilon']:.3f}  bound {row['epsilon_lower']:.3f} "
                  f"(SNJ {row['snj']:.3f}, f-DP {row['f_dp']:.3f})  ceiling {row['ceiling']:.3f}  "
                  f"-> {'FLAGGED' if row['flagged'] else 'not flagged'}  ({row['seconds']:.0f} s)", flush=True)
    return rows


def render(rows: list[dict[str, Any]], config: str, seeds: list[int], command: str = "", seconds: float | None = None) -> str:
    faults = list(dict.fromkeys(r["fault"] for r in rows))
    lines = [
        "# Audit power: fault × seed → flagged at 95% confidence",
        "",
        f"Command: `{command or 'python -m benchmarks audit'}`"
        + (f" ({seconds / 60:.1f} min on this machine, one torch thread)" if seconds is not None else ""),
        "",
        f"Config: `{config}` (record level: white-box gradient canaries; bound = max(SNJ, f-DP), each at 97.5%).",
        "Flagged = the empirical ε lower bound exceeds the canary hospital's claimed ε. "
        "Honest runs must never be flagged; `no_noise` and `no_clipping` must be flagged in every seed.",
        "",
        "| fault | " + " | ".join(f"seed {s}" for s in seeds) + " | flagged |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for f in faults:
        cells = []
        for s in seeds:
            r = next(r for r in rows if r["fault"] == f and r["seed"] == s)
            cells.append(f"{'**yes**' if r['flagged'] else 'no'} ({r['epsilon_lower']:.2f})")
        n = sum(r["flagged"] for r in rows if r["fault"] == f)
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {n}/{len(seeds)} |")
    lines += ["", "(in brackets: the empirical lower bound)", ""]
    from benchmarks._report import markdown_table

    lines.append(markdown_table(rows, ["fault", "seed", "claimed_epsilon", "snj", "f_dp", "ceiling", "correct",
                                       "guesses", "canaries", "accuracy", "seconds", "flagged"]))
    lines.append("Every run is a simulation-only artefact (it retrains on the same records, uncharged).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks audit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=None, help="a config with an optional [audit] table (default: the demo)")
    ap.add_argument("--seeds", type=int, default=5, help="audit seeds 0..N-1 (default 5)")
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated (default: none,no_noise,no_clipping)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        ap.error(f"unknown fault(s) {bad}; use {', '.join(FAULTS)}")
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    rows = run(args.config, faults, seeds)
    from benchmarks._report import write

    config = str(args.config) if args.config else "fl/configs/demo.toml (fedvault demo)"
    summary = {f: sum(r["flagged"] for r in rows if r["fault"] == f) for f in faults}
    command = "python -m benchmarks audit" + (f" {' '.join(argv)}" if argv else "")
    seconds = time.perf_counter() - t0
    jp, mp = write("audit", {"command": command, "config": config, "seeds": seeds, "faults": faults,
                             "flagged": summary, "rows": rows, "seconds": seconds},
                   render(rows, config, seeds, command, seconds), args.out)
    print(f"flagged per fault (of {len(seeds)} seeds): {summary}\nwritten {jp} and {mp}")
    ok = summary.get("none", 0) == 0 and all(summary.get(f, len(seeds)) == len(seeds) for f in ("no_noise", "no_clipping"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
