"""Commands of the Flower plug-in: enrolment, the roster, and ``flwr run`` with an honest exit status.

    fedvault enrol --hospital NAME --out DIR            (each hospital, on its own machine)
    fedvault roster build ENROLMENT.json... --out roster.json   (the coordinator: public keys only)
    fedvault roster install roster.json --node DIR --fingerprint HEX   (each hospital)
    fedvault flower-run [APP] [-- flwr run options]    (``flwr run APP --stream``, exit 1 unless it completed)

Paillier's key ceremony (:mod:`.ceremony`; each party on its own machine):

    fedvault paillier keygen NODE_DIR --bits 2048 --out paillier-public.json     (the key holder)
    fedvault paillier share-key NODE_DIR                (each hospital, threshold mode: where its share is sealed)
    fedvault paillier deal --roster roster.json --threshold T --bits 2048 --share-keys F... --out DIR  (dealer)
    fedvault paillier install NODE_DIR --public paillier-public.json --fingerprint HEX [--share FILE]  (every node)
    fedvault paillier show paillier-public.json --roster roster.json --fingerprint HEX  (the coordinator)

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

    _add_paillier(sub)

    f = sub.add_parser("flower-run", help="`flwr run APP --stream`, exiting non-zero unless the run completed")
    f.add_argument("app", nargs="?", default=".", help="Flower app directory (default: .)")
    f.add_argument("flwr_args", nargs=argparse.REMAINDER, help="further `flwr run` options")
    f.set_defaults(func=cmd_flower_run)


_DEALER_TRUST = ("The dealer is TRUSTED: it sees the factorisation and every share while it deals. Run it on a "
                 "machine the consortium trusts, and delete its output directory once every share is delivered.")


def _add_paillier(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    pa = sub.add_parser("paillier", help="Paillier key ceremony for a deployment (keygen, share-key, deal, install, show)")
    ps = pa.add_subparsers(dest="paillier_cmd", required=True)
    small = dict(action="store_true", help="allow a key below 2048 bits (TEST-ONLY: < 112-bit security)")
    k = ps.add_parser("keygen", help="the key holder: create the Paillier key pair in its own node directory "
                                     "(private key stays there) and write the signed public setup file")
    k.add_argument("node", help="the key holder's node directory (enrolled, roster installed)")
    k.add_argument("--bits", type=int, default=2048, help="modulus size (default 2048; 3072 for long-lived studies)")
    k.add_argument("--out", required=True, help="public setup file to write (send it to every node and the coordinator)")
    k.add_argument("--insecure-test-key", **small)
    k.set_defaults(func=cmd_paillier_keygen)
    s = ps.add_parser("share-key", help="a hospital (threshold mode): make the one-time key its share is sealed to")
    s.add_argument("node", help="this hospital's node directory")
    s.set_defaults(func=cmd_paillier_share_key)
    d = ps.add_parser("deal", help="the dealer (threshold mode): t-of-l shares for the roster's hospitals. "
                                   + _DEALER_TRUST, description=_DEALER_TRUST)
    d.add_argument("--roster", required=True, help="the consortium roster (roster.json)")
    d.add_argument("--threshold", type=int, required=True, help="t: shares needed to decrypt (2t > l is required)")
    d.add_argument("--bits", type=int, default=2048, help="modulus size (default 2048)")
    d.add_argument("--out", required=True, help="directory for the public file and one share file per hospital")
    d.add_argument("--share-keys", nargs="+", default=None, help="each hospital's paillier-share-key.json")
    d.add_argument("--hospitals", nargs="+", default=None,
                   help="share-holders by name (default: every roster member except key_holder)")
    d.add_argument("--plaintext-shares", action="store_true",
                   help="write unsealed shares (then deliver each over a confidential, authenticated channel)")
    d.add_argument("--insecure-test-key", **small)
    d.set_defaults(func=cmd_paillier_deal)
    i = ps.add_parser("install", help="a node: check and install the public setup (and its share)")
    i.add_argument("node", help="this node's directory")
    i.add_argument("--public", required=True, help="the Paillier public setup file")
    i.add_argument("--fingerprint", required=True, help="the fingerprint the key holder / dealer announced out of band")
    i.add_argument("--share", default=None, help="threshold mode: this hospital's share file from the dealer")
    i.set_defaults(func=cmd_paillier_install)
    w = ps.add_parser("show", help="the coordinator: check a public setup file against the roster and print it")
    w.add_argument("public", help="the Paillier public setup file")
    w.add_argument("--roster", required=True, help="the coordinator's roster")
    w.add_argument("--fingerprint", default=None, help="the fingerprint announced out of band (checked if given)")
    w.set_defaults(func=cmd_paillier_show)


def cmd_paillier_keygen(a: argparse.Namespace) -> int:
    from .ceremony import keygen

    pub = keygen(a.node, a.bits, a.out, allow_small=a.insecure_test_key)
    print(f"created {pub.describe()}")
    print(f"the private key stays in {Path(a.node) / 'paillier-key.json'}; send {a.out} to every node and the "
          "coordinator and announce the fingerprint out of band")
    return 0


def cmd_paillier_share_key(a: argparse.Namespace) -> int:
    from .ceremony import SHARE_REQUEST_FILE, share_key

    doc = share_key(a.node)
    print(f"{doc['name']}: share key {doc['x25519'][:16]}...; send {Path(a.node) / SHARE_REQUEST_FILE} (public) to "
          "the dealer; its private half stays in this node until the share is installed")
    return 0


def cmd_paillier_deal(a: argparse.Namespace) -> int:
    from .ceremony import deal

    res = deal(a.roster, a.threshold, a.bits, a.out, share_keys=a.share_keys, hospitals=a.hospitals,
               plaintext=a.plaintext_shares, allow_small=a.insecure_test_key)
    print(f"dealt {res.public.describe()}")
    print(f"public setup: {res.public_path} (send it to every node and the coordinator)")
    how = ("UNSEALED: deliver each over a confidential, authenticated channel" if a.plaintext_shares
           else "each sealed to its hospital's share key")
    for c, p in sorted(res.shares.items()):
        print(f"  share for client {c}: {p}")
    print(f"shares {how}. {_DEALER_TRUST}")
    return 0


def cmd_paillier_install(a: argparse.Namespace) -> int:
    from .ceremony import install

    pub = install(a.node, a.public, a.fingerprint, a.share)
    print(f"installed {pub.describe()}" + (" with this hospital's share" if a.share else ""))
    return 0


def cmd_paillier_show(a: argparse.Namespace) -> int:
    from .ceremony import load_public
    from .node import Registry

    pub = load_public(a.public, Registry.load(a.roster), a.fingerprint)
    print(pub.describe())
    return 0


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
