"""Commands of the Flower plug-in: enrolment, the roster, and ``flwr run`` with an honest exit status.

    fedvault enrol --hospital NAME --out DIR            (each hospital, on its own machine)
    fedvault roster build ENROLMENT.json... --out roster.json   (the coordinator: public keys only)
    fedvault roster install roster.json --node DIR --fingerprint HEX   (each hospital)
    fedvault flower-run [APP] [-- flwr run options]    (``flwr run APP --stream``, exit 1 unless it completed)

Also ``python -m fedvault.fl.integrations.flower ...``.  This module imports neither
Flower nor torch at import time (``fedvault --help`` stays fast): :func:`add_parsers`
only declares the arguments, the handlers import what they need.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

EXIT_ERROR = 2


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Declare ``enrol``, ``roster`` and ``flower-run`` on a subparsers object (sets ``func``)."""
    e = sub.add_parser("enrol", help="create this hospital's identity key (private key stays here; prints the public part)")
    e.add_argument("--hospital", required=True, help="the hospital's name in the consortium")
    e.add_argument("--out", required=True, help="node directory to create (mode 0700)")
    e.set_defaults(func=cmd_enrol)

    r = sub.add_parser("roster", help="build (coordinator) or install (hospital) the consortium roster")
    rs = r.add_subparsers(dest="roster_cmd", required=True)
    b = rs.add_parser("build", help="the roster from the hospitals' enrolment.json files (public keys only)")
    b.add_argument("enrolments", nargs="+", help="each hospital's enrolment.json")
    b.add_argument("--out", required=True, help="roster file to write")
    b.set_defaults(func=cmd_roster_build)
    i = rs.add_parser("install", help="check the roster's fingerprint and install it in this hospital's node")
    i.add_argument("roster", help="the roster file received from the coordinator")
    i.add_argument("--node", required=True, help="this hospital's node directory")
    i.add_argument("--fingerprint", required=True, help="the fingerprint the coordinator announced out of band")
    i.set_defaults(func=cmd_roster_install)

    f = sub.add_parser("flower-run", help="`flwr run APP --stream`, exiting non-zero unless the run completed")
    f.add_argument("app", nargs="?", default=".", help="Flower app directory (default: .)")
    f.add_argument("flwr_args", nargs=argparse.REMAINDER, help="further `flwr run` options")
    f.set_defaults(func=cmd_flower_run)


def cmd_enrol(a: argparse.Namespace) -> int:
    from .node import enrol

    doc = enrol(a.hospital, a.out)
    out = Path(a.out) / "enrolment.json"
    print(f"enrolled {doc['name']}: identity fingerprint {doc['fingerprint']}")
    print(f"send {out} (public key only) to the coordinator; {Path(a.out) / 'identity.pem'} never leaves this machine")
    return 0


def cmd_roster_build(a: argparse.Namespace) -> int:
    from .node import build_roster

    reg = build_roster(a.enrolments)
    Path(a.out).write_text(reg.to_json(), encoding="utf-8")
    for i, m in sorted(reg.members.items()):
        print(f"{i:>4}  {m.name}")
    print(f"roster fingerprint {reg.fingerprint()}")
    print("announce the fingerprint to every hospital out of band; each runs `fedvault roster install`")
    return 0


def cmd_roster_install(a: argparse.Namespace) -> int:
    from .node import install_roster

    node = install_roster(a.node, a.roster, a.fingerprint)
    print(f"installed roster {node.registry.fingerprint()[:16]}... in {node.path}: this hospital is client "
          f"{node.client} ({node.name}) of {len(node.registry.members)}")
    return 0


def cmd_flower_run(a: argparse.Namespace) -> int:
    """``flwr run APP --stream``, then the run's final status from ``flwr ls`` (Flower's CLI itself exits 0
    whatever the run's outcome)."""
    flwr = shutil.which("flwr") or str(Path(sys.executable).parent / "flwr")
    args = [x for x in a.flwr_args if x != "--"]
    proc = subprocess.Popen([flwr, "run", a.app, "--stream", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run_id = None
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        m = re.search(r"started run (\d+)", line)
        if m and run_id is None:
            run_id = m.group(1)
    rc = proc.wait()
    if rc != 0 or run_id is None:
        print(f"fedvault: error: `flwr run` failed (exit {rc})", file=sys.stderr)
        return rc or 1
    status = _run_status(flwr, run_id, args)
    print(f"fedvault: run {run_id}: {status}")
    return 0 if status == "finished:completed" else 1


def _run_status(flwr: str, run_id: str, args: Sequence[str]) -> str:
    # a SuperLink connection given to `flwr run` (a positional after the app) applies to `flwr ls` too
    conn = [x for x in args[:1] if not x.startswith("-")]
    out = subprocess.run([flwr, "ls", *conn, "--run-id", run_id, "--format", "json"], capture_output=True, text=True)
    try:
        runs = json.loads(out.stdout)["runs"]
        return str(runs[0]["status"])
    except (ValueError, KeyError, IndexError):
        return f"unknown ({out.stdout.strip()[:200]} {out.stderr.strip()[:200]})"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fedvault.fl.integrations.flower", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parsers(ap.add_subparsers(dest="cmd", required=True))
    a = ap.parse_args(argv)
    from .node import NodeSetupError

    try:
        return int(a.func(a))
    except (NodeSetupError, OSError) as e:
        print(f"fedvault: error: {e}", file=sys.stderr)
        return EXIT_ERROR
